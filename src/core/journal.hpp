// core/journal.hpp — the undo journal: how a critical section cut short by a
// dead process is taken back.
//
// A lock in a shared heap may be held by a process that is killed at any
// instruction, halfway through relinking a free list. Whoever takes the lock
// next (pthread's EOWNERDEAD, or the next open when nobody is left) must find
// the metadata as it was before that critical section began. So, under a
// journaled lock, every store to allocator metadata is preceded by a copy of
// the bytes it overwrites (their *pre-image*) in a journal inside the
// mapping:
//
//   JournalArea (in the region)
//   | count | capacity | ... | entry 0 | entry 1 | ... | entry count-1 |
//     entry = offset from the region base | length | the old bytes (<= 48)
//
// * save(p, len) writes the entry, then publishes it by storing count + 1;
//   only then does the caller overwrite the bytes. A process dies at an
//   instruction boundary, and every store it made before is in the shared
//   memory in program order (the kernel drains a dead CPU's stores), so the
//   journal always holds the pre-image of every byte the section changed.
//   A compiler barrier keeps the compiler from moving the metadata store
//   above the publication.
// * commit() at unlock (a consistent point) empties the journal: count = 0.
// * rollback() copies the pre-images back, newest first, and empties the
//   journal. It is idempotent: a rollback cut short by another death is
//   simply run again (the oldest pre-image of each byte is written last).
//
// Which journal a thread writes to is a thread-local pointer set by the lock
// (JournalScope); with no journal (the process heap) save() is a load and a
// branch. The engine's layers call core::undo_save() before each store to
// metadata; a missed call shows up in the kill tests (tests/unit/heap).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace mapheap::core {

struct JournalEntry {
  std::uint64_t offset;  // from the region base
  std::uint32_t length;  // bytes in data, 1..48
  std::uint32_t reserved;
  std::byte data[48];
};
static_assert(sizeof(JournalEntry) == 64);

struct JournalArea {
  std::atomic<std::uint32_t> count;  // entries written by the critical section in progress
  std::uint32_t capacity;            // entries that fit
  std::uint64_t sections;            // critical sections committed (statistics)
  std::uint64_t rollbacks;           // critical sections taken back
  std::uint64_t high_water;          // the most entries one section needed
  std::uint64_t reserved[4];
  JournalEntry entries[1];  // capacity of them

  static constexpr std::size_t bytes_for(std::uint32_t capacity) noexcept {
    return offsetof(JournalArea, entries) + std::size_t{capacity} * sizeof(JournalEntry);
  }
};

class Journal {
 public:
  Journal() = default;
  // Binds to an area inside [base, base + region_bytes); format() empties it.
  void bind(std::byte* base, std::uint64_t region_bytes, JournalArea* area) noexcept {
    base_ = base;
    region_ = region_bytes;
    area_ = area;
  }
  void format(std::uint32_t capacity) noexcept {
    area_->capacity = capacity;
    area_->sections = 0;
    area_->rollbacks = 0;
    area_->high_water = 0;
    area_->count.store(0, std::memory_order_release);
  }
  bool bound() const noexcept { return area_ != nullptr; }
  JournalArea* area() const noexcept { return area_; }
  std::uint32_t pending() const noexcept { return area_->count.load(std::memory_order_acquire); }
  // Entries the section in progress may still write before the journal is full.
  std::uint32_t room() const noexcept {
    const std::uint32_t used = area_->count.load(std::memory_order_relaxed);
    return used < area_->capacity ? area_->capacity - used : 0;
  }

  void save(const void* p, std::size_t len) noexcept {
    if (fault_countdown_.load(std::memory_order_relaxed) >= 0) [[unlikely]]
      fault_tick();
    const auto* src = static_cast<const std::byte*>(p);
    while (len > 0) {
      const std::size_t n = len < sizeof(JournalEntry::data) ? len : sizeof(JournalEntry::data);
      const std::uint32_t i = area_->count.load(std::memory_order_relaxed);
      if (i >= area_->capacity) overflow();
      JournalEntry& e = area_->entries[i];
      e.offset = static_cast<std::uint64_t>(src - base_);
      e.length = static_cast<std::uint32_t>(n);
      std::memcpy(e.data, src, n);
      area_->count.store(i + 1, std::memory_order_release);
      // The caller's store to *p must not be moved above the publication.
      std::atomic_signal_fence(std::memory_order_seq_cst);
      src += n;
      len -= n;
    }
  }

  void commit() noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    const std::uint32_t n = area_->count.load(std::memory_order_relaxed);
    if (n == 0) return;
    area_->count.store(0, std::memory_order_release);
    area_->sections += 1;
    if (n > area_->high_water) area_->high_water = n;
  }

  // Entries of the section in the journal that do not lie inside the first
  // `bound` bytes of the region (or are malformed), plus the entries a count
  // above the capacity claims. A journal read from a file is untrusted: the
  // caller checks it whole before rolling back, since a store past the
  // file's end would be a SIGBUS and a partial rollback helps no one.
  std::uint32_t invalid_entries(std::uint64_t bound) const noexcept {
    const std::uint32_t n = area_->count.load(std::memory_order_acquire);
    const std::uint32_t cap = area_->capacity;
    std::uint32_t bad = n > cap ? n - cap : 0;
    for (std::uint32_t i = 0; i < n && i < cap; ++i)
      if (!valid(area_->entries[i], bound)) ++bad;
    return bad;
  }

  // Takes back the section in the journal: the pre-images, newest first.
  // Entries outside the region are skipped (invalid_entries() says whether
  // there are any). Returns the entries applied.
  std::uint32_t rollback() noexcept {
    std::uint32_t n = area_->count.load(std::memory_order_acquire);
    if (n > area_->capacity) n = area_->capacity;
    std::uint32_t applied = 0;
    for (std::uint32_t i = n; i-- > 0;) {
      const JournalEntry& e = area_->entries[i];
      if (!valid(e, region_)) continue;
      std::memcpy(base_ + e.offset, e.data, e.length);
      ++applied;
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    area_->count.store(0, std::memory_order_release);
    if (n != 0) area_->rollbacks += 1;
    return applied;
  }

  // Fault injection for the crash tests: the process dies (_exit) at the
  // n-th journaled store from now, as if killed there. -1: never.
  static void die_at_store(long n) noexcept { fault_countdown_.store(n, std::memory_order_relaxed); }

 private:
  static bool valid(const JournalEntry& e, std::uint64_t bound) noexcept {
    return e.length != 0 && e.length <= sizeof(e.data) && e.offset <= bound && bound - e.offset >= e.length;
  }
  [[noreturn]] static void overflow() noexcept;  // core/journal.cpp: reports and aborts
  static void fault_tick() noexcept;             // core/journal.cpp
  static inline std::atomic<long> fault_countdown_{-1};

  std::byte* base_ = nullptr;
  std::uint64_t region_ = 0;
  JournalArea* area_ = nullptr;
};

// The journal of the critical section this thread is in, if any.
inline thread_local Journal* t_journal __attribute__((tls_model("initial-exec"))) = nullptr;

// Before a store to allocator metadata: keep its pre-image.
inline void undo_save(const void* p, std::size_t len) noexcept {
  if (Journal* j = t_journal) [[unlikely]]
    j->save(p, len);
}
template <class T>
inline void undo_save(const T& obj) noexcept {
  undo_save(&obj, sizeof(T));
}
// Entries this thread's critical section may still journal; unbounded outside
// a journaled section (the process heap). For work whose size depends on the
// metadata (page::Buddy's merge of mixed-state buddies): it stops while there
// is room, where a full journal would abort the process.
inline std::uint32_t undo_room() noexcept {
  const Journal* j = t_journal;
  return j == nullptr ? UINT32_MAX : j->room();
}

// Journal entries one undo_save of `bytes` bytes takes (save() cuts a store
// into pieces of JournalEntry::data).
constexpr std::uint32_t entries_for(std::size_t bytes) noexcept {
  return static_cast<std::uint32_t>((bytes + sizeof(JournalEntry::data) - 1) / sizeof(JournalEntry::data));
}
// Commits this thread's critical section so far: a death after this point
// takes back only what follows. For a section whose work grows with its
// input (a batch of frees), between two whole steps, so that it goes on
// with an empty journal where it would have filled it and aborted.
// REQUIRES: the metadata is consistent here, as it must be at unlock, and
// the section holds nothing it took out of it (objects popped under the
// lock and not yet put anywhere would be lost to a death after the commit).
inline void undo_checkpoint() noexcept {
  if (Journal* j = t_journal) j->commit();
}

// Makes `j` this thread's journal for a scope (nested scopes restore the outer one).
class JournalScope {
 public:
  explicit JournalScope(Journal* j) noexcept : prev_(t_journal) { t_journal = j; }
  ~JournalScope() { t_journal = prev_; }
  JournalScope(const JournalScope&) = delete;
  JournalScope& operator=(const JournalScope&) = delete;

 private:
  Journal* prev_;
};

}  // namespace mapheap::core
