// cache/engine.hpp — the allocator engine: a zone (buddy allocator) and its
// slab layer behind one lock, with reclaim. The front caches (per-CPU with
// rseq, per-thread otherwise) will sit in front of this object; until then
// every call takes the lock.
//
// Engine<Lock> is a policy over the lock kind: core::FutexLock for one
// process (the process heap); a robust process-shared mutex for a heap shared
// between processes (the mapped heap). The region is given, not owned.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#include "core/lock.hpp"
#include "core/percpu_counter.hpp"
#include "page/buddy.hpp"
#include "pal/pal.hpp"
#include "slab/slab.hpp"

namespace mapheap::cache {

// Counters kept per CPU (core::PerCpuCounter) and summed on demand.
struct EngineCounters {
  std::int64_t allocations = 0;
  std::int64_t frees = 0;
  std::int64_t bytes_in_use = 0;  // usable bytes of live objects
  std::int64_t failed_allocations = 0;
};

template <class Lock>
class Engine {
 public:
  Engine() = default;
  // The slab layer points at this object's zone: an engine stays put.
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Formats a new engine over [base, base + bytes) (page aligned). False if
  // the region cannot hold a zone. `arena_align` as for page::Buddy::format.
  bool format(void* base, std::size_t bytes, std::uint32_t arena_align = 512) noexcept {
    if (page::Buddy::format(base, bytes, pal::page_size(), arena_align, zone_) !=
        page::FormatError::none)
      return false;
    return slab::SlabHeap::format(zone_, slabs_);
  }

  // nullptr when the region is exhausted (never a crash).
  void* allocate(std::size_t size, std::size_t align = 0) noexcept {
    void* p;
    std::size_t usable = 0;
    {
      core::LockGuard<Lock> g(lock_);
      p = slabs_.alloc(size, align, &usable);
    }
    if (p == nullptr) {
      failed_.add(1);
      return nullptr;
    }
    allocations_.add(1);
    bytes_.add(static_cast<std::int64_t>(usable));
    return p;
  }

  // What deallocate would do, without aborting on a bad pointer.
  slab::FreeStatus try_deallocate(void* p) noexcept {
    if (p == nullptr) return slab::FreeStatus::ok;
    slab::FreeStatus s;
    std::size_t usable = 0;
    {
      core::LockGuard<Lock> g(lock_);
      s = slabs_.free(p, &usable);
    }
    if (s == slab::FreeStatus::ok) {
      frees_.add(1);
      bytes_.add(-static_cast<std::int64_t>(usable));
    }
    return s;
  }

  // Frees p; a pointer the engine did not hand out (or already freed) is a
  // bug in the program: report the address and the reason, then abort, as a
  // heap corrupted by continuing would be worse.
  void deallocate(void* p) noexcept {
    const slab::FreeStatus s = try_deallocate(p);
    if (s != slab::FreeStatus::ok) misuse(p, slab::to_string(s));
  }

  std::size_t usable_size(const void* p) noexcept {
    core::LockGuard<Lock> g(lock_);
    return slabs_.usable_size(p);
  }

  // Empty slabs back to the zone, then every free-dirty page back to the OS
  // through `release` (the region's method: Mapping::release); returns the
  // pages released.
  std::uint64_t trim(page::Buddy::ReleaseFn release, void* ctx) noexcept {
    core::LockGuard<Lock> g(lock_);
    slabs_.trim();
    return zone_.release_free(release, ctx, 0);
  }

  EngineCounters counters() const noexcept {
    return {allocations_.read(), frees_.read(), bytes_.read(), failed_.read()};
  }

  // /proc/slabinfo-style text of the slab caches; returns the length needed.
  std::size_t render_slabinfo(char* buf, std::size_t cap) noexcept {
    core::LockGuard<Lock> g(lock_);
    return slabs_.render_slabinfo(buf, cap);
  }

  slab::SlabStats stats() noexcept {
    core::LockGuard<Lock> g(lock_);
    return slabs_.stats();
  }
  page::BuddyInfo buddyinfo() noexcept {
    core::LockGuard<Lock> g(lock_);
    return zone_.info();
  }
  page::CheckReport check() noexcept {
    core::LockGuard<Lock> g(lock_);
    return slabs_.check();
  }

 private:
  [[noreturn]] static void misuse(const void* p, const char* why) noexcept {
    char msg[160];
    pal::TextOut out{msg, sizeof(msg)};
    out.printf("mapheap: invalid free of %p: %s\n", p, why);
    (void)pal::write_fd(2, msg, out.len < sizeof(msg) ? out.len : sizeof(msg) - 1);
    std::abort();
  }

  Lock lock_;
  core::PerCpuCounter<> allocations_, frees_, bytes_, failed_;
  page::Buddy zone_;
  slab::SlabHeap slabs_;
};

}  // namespace mapheap::cache
