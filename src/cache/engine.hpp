// cache/engine.hpp — the allocator engine: front caches (per-CPU with rseq,
// per-thread otherwise) in front of a zone (buddy allocator) and its slab
// layer behind one lock, with decay-based reclaim and statistics.
//
//   allocate(n) ── class_of(n) ── pop from this CPU's array ──► hit: return
//                                        │ empty
//                                        ▼
//                  lock: take a batch from the class's slabs, unlock,
//                  push the batch into the cache, return one
//   deallocate(p) ─ page map: slab? class? object boundary? key? ─ push ─► hit
//                                        │ full
//                                        ▼
//                  pop half the array, lock: free the batch to its slabs
//
// Fast path: no lock, no atomic read-modify-write, no syscall, and writes
// only to this CPU's (or thread's) slot and to the object itself. Large
// objects, aligned requests beyond 16 bytes and misses take the lock.
//
// Engine<Lock> is a policy over the lock kind: core::FutexLock for one
// process (the process heap); a robust process-shared mutex for a heap shared
// between processes (the mapped heap). The region is given, not owned; its
// release method (MADV_DONTNEED or hole punching) comes with the options.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cache/front_cache.hpp"
#include "cache/rseq.hpp"
#include "core/journal.hpp"
#include "core/lock.hpp"
#include "core/percpu_counter.hpp"
#include "page/buddy.hpp"
#include "pal/error.hpp"
#include "pal/pal.hpp"
#include "slab/slab.hpp"

#if defined(__SANITIZE_THREAD__)
#define MAPHEAP_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MAPHEAP_TSAN 1
#endif
#endif
#ifdef MAPHEAP_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace mapheap::cache {

struct EngineOptions {
  std::uint32_t arena_align = 512;  // as for page::Buddy::format
  // The zone's page size: 0 for the OS page size, else a multiple of it with
  // a compiled slab run table (slab::runs_for: 4, 8, 16 or 64 KiB).
  std::size_t page_size = 0;
  CacheMode cache = CacheMode::automatic;
  // How many objects a class's cache array keeps at most: about 64 KiB of
  // them, at least this many (2 to cache::kMinCapacity; cache::class_limit).
  // A higher floor means fewer misses of the big classes, each a locked
  // batch, for more memory parked in the arrays. The process heap keeps 16;
  // the mapped heap, whose misses take a lock in the mapping and journal
  // every slab operation, fills the arrays to their capacity.
  std::uint32_t cache_floor = 16;
  // How free pages go back to the OS: the region's method (Mapping::release,
  // which picks MADV_DONTNEED or hole punching). Null: pages are never released.
  page::Buddy::ReleaseFn release = nullptr;
  void* release_ctx = nullptr;
  // Growth: the engine is formatted over the whole reservation (`bytes`),
  // of which the first `committed` bytes are usable now (0: all). When the
  // arena runs out, the engine calls `grow(grow_ctx, want)` asking for the
  // first `want` bytes to become usable (Mapping::grow) and continues with
  // what it returns (the usable size after the call). Null: no growth.
  std::size_t committed = 0;
  using GrowFn = std::size_t (*)(void* ctx, std::size_t want) noexcept;
  GrowFn grow = nullptr;
  void* grow_ctx = nullptr;
  // A free page run unused for this long goes back to the OS (decay); 0
  // releases at every decay step. Decay runs from slow paths, at most four
  // times per decay period, and from decay() and trim().
  std::uint32_t decay_ms = 1000;
  // A bound on free-dirty memory, so that free pages the arena cannot reuse
  // (fragmented among live runs) do not stay resident until decay: past
  // max(dirty_floor, pages in use >> dirty_shift), the largest free blocks
  // go back at once, whatever their age, down to half the bound. Decay
  // handles the memory under it. A low bound costs page faults: a program
  // cycling through large blocks refaults what was released.
  std::size_t dirty_floor = std::size_t{256} << 20;
  unsigned dirty_shift = 0;
  // Decay by a helper (the process heap's decay thread), so that an idle
  // process still gets its memory back: called, without the engine's lock,
  // after each free slow path (where memory for decay comes from). It must
  // be cheap when it has nothing to do.
  using WakeFn = void (*)(void* ctx) noexcept;
  WakeFn decay_wake = nullptr;
  void* decay_wake_ctx = nullptr;
  // Every free fully verified, as in a checked build (MAPHEAP_CHECKED): the
  // object is looked up in its slab's free list and in every cache, so each
  // double free is caught, at the cost of a locked search per free.
  bool checked = false;
  // Huge pages: called, without the lock, with each large run of at least
  // huge_min bytes just allocated (the process heap advises MADV_HUGEPAGE:
  // such runs are whole buddy blocks, 2 MiB aligned when the arena is).
  using HugeFn = void (*)(void* ctx, void* addr, std::size_t bytes) noexcept;
  HugeFn huge = nullptr;
  void* huge_ctx = nullptr;
  std::size_t huge_min = std::size_t{2} << 20;
  // Prefaulting: called, without the lock, with the pages that hold the
  // first bytes of the slab objects a refill carved for the first time, just
  // before the cache writes its key into each of them (the mapped heap
  // populates them writable: one call a run of pages instead of a page fault
  // a page). The rest of a multi-page object is left to the program, which
  // may never touch it. Null: they fault in one by one.
  using PopulateFn = void (*)(void* ctx, void* addr, std::size_t bytes) noexcept;
  PopulateFn populate = nullptr;
  void* populate_ctx = nullptr;
  // Prefetching at attach: called with each metadata page attach() is about
  // to read (the slab root's and the cache header's first pages and their
  // page-map entries), before it reads it (the mapped heap populates them
  // readable: in a new process each is otherwise a page fault of its own).
  // The range is only bounds-checked against the zone; the hook must not
  // fail on a bad one (madvise reports it). Null: they fault in as read.
  using PrefetchFn = void (*)(void* ctx, const void* addr, std::size_t bytes) noexcept;
  PrefetchFn prefetch = nullptr;
  void* prefetch_ctx = nullptr;
  // The clock that free runs are stamped with and decay measures their age
  // by, in milliseconds (any origin; it may wrap). Null: CLOCK_MONOTONIC.
  // Tests drive decay with a clock of their own rather than by sleeping.
  using ClockFn = std::uint32_t (*)(void* ctx) noexcept;
  ClockFn clock = nullptr;
  void* clock_ctx = nullptr;
};

// Counts since format. Allocations and frees are exact once the threads
// counting them are done; hits are counted in each slot by its user without
// an atomic read-modify-write, so two threads on one CPU may (rarely) lose one.
struct EngineCounters {
  std::int64_t allocations = 0;
  std::int64_t frees = 0;
  std::int64_t bytes_in_use = 0;  // usable bytes of live objects (not counting cached ones)
  std::int64_t failed_allocations = 0;
  std::int64_t alloc_hits = 0;    // served by a front cache
  std::int64_t alloc_misses = 0;  // a cacheable size the cache could not serve
  std::int64_t free_hits = 0;
  std::int64_t free_misses = 0;  // the cache was full: a batch went back to the slabs
  std::int64_t decays = 0;       // decay steps run
  std::int64_t grows = 0;        // times the arena grew into more of the reservation
  std::int64_t released_pages = 0;
};

// A snapshot for renderings: counters, the slab layer, the zone, the caches.
struct EngineStats {
  EngineCounters counters;
  slab::SlabStats slabs;
  page::BuddyInfo zone;
  std::uint64_t cached_objects[slab::kClassCount] = {};
  std::uint64_t metadata_pages = 0;  // header, page map, slab root and cache run
  std::uint64_t committed_bytes = 0;  // the part of the region the arena reaches now
  std::uint64_t region_bytes = 0;     // the whole reservation
  const slab::RunTable* runs = nullptr;  // the slab runs (and page size) of the zone
  CacheMode cache_mode = CacheMode::none;
  std::uint32_t cpu_slots = 0;
  std::uint32_t thread_slots = 0;
  std::uint32_t cache_floor = 0;  // EngineOptions::cache_floor, as clamped
};

// JSON text of a snapshot (cache/front_cache.cpp); returns the length needed.
std::size_t render_stats_json(const EngineStats& s, char* buf, std::size_t cap) noexcept;

template <class Lock>
class Engine {
 public:
  Engine() = default;
  // The slab layer points at this object's zone: an engine stays put.
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Formats a new engine over [base, base + bytes) (page aligned). False if
  // the region cannot hold a zone, its slab root and its caches.
  bool format(void* base, std::size_t bytes, const EngineOptions& options = {}) noexcept {
    options_ = options;
    const std::size_t page = options.page_size != 0 ? options.page_size : pal::page_size();
    if (page % pal::page_size() != 0 ||
        page::Buddy::format(base, bytes, page, options.arena_align, zone_, options.committed) !=
            page::FormatError::none)
      return false;
    if (!slab::SlabHeap::format(zone_, slabs_)) return false;
    const std::uint32_t key = make_key(base);
    const page::PageIndex run = FrontCache::format(zone_, pal::cpus_configured(), key,
                                                   options.release, options.release_ctx, cache_);
    if (!run.valid()) return false;
    slabs_.set_cache_run(run.i);
    return open_view(base);
  }

  // Opens an engine formatted earlier over the same bytes, maybe by another
  // process at another address: zone header, slab root and cache header are
  // checked (check() verifies the rest). False if they do not match.
  // REQUIRES: with a lock whose state is in this object (FutexLock), no other
  // Engine object uses the region at the same time. The mapped heap's
  // RegionLock keeps its state in the region, and every process attaches.
  bool attach(void* base, std::size_t bytes, const EngineOptions& options = {}) noexcept {
    options_ = options;
    if (page::Buddy::attach(base, bytes, zone_) != page::AttachError::none) return false;
    prefetch_run(zone_.header().root);
    if (!slab::SlabHeap::attach(zone_, slabs_)) return false;
    prefetch_run(slabs_.cache_run());
    if (!FrontCache::attach(zone_, page::PageIndex(slabs_.cache_run()), cache_)) return false;
    return open_view(base);
  }

  // ---- the fast paths

  // size bytes aligned to align (0 or a power of two; 0 means malloc's 8 for
  // sizes up to 8, 16 above). nullptr when the region is exhausted or the
  // request cannot be met (never a crash).
  //
  // The fast paths (a hit in this CPU's array) make no call but tail calls,
  // so that they need no stack frame; everything else, per-thread caches
  // included, is in the noinline slow paths.
  void* allocate(std::size_t size, std::size_t align = 0) noexcept {
    if (mode_ == CacheMode::per_cpu && cacheable(size, align)) [[likely]] {
      const unsigned cls = cache_class(size, align);
      const std::uint64_t off = cpu_pop(cls);
      if (in_arena(off, cls)) [[likely]]  // false for 0, an empty array
        return take(off, cls);
      if (off != 0) return take_after_refresh(off, cls);
    }
    return allocate_slow(size, align);
  }

  // Frees p. A pointer the engine did not hand out, or already freed, is a
  // bug in the program: report the address and the reason, then abort, as
  // continuing on a corrupted heap would be worse. Checked builds
  // (MAPHEAP_CHECKED) verify every free fully; release builds verify the page
  // map, the object boundary and the in-cache key (which catches a double
  // free unless the program wrote over the freed object).
  void deallocate(void* p) noexcept {
    const std::uint64_t off = offset_of(p);  // null: far past the arena
    if (mode_ == CacheMode::per_cpu && off >= arena_off_ && off < limit()) [[likely]] {
      const unsigned cls = small_class(off);
      auto* obj = static_cast<std::byte*>(p);
      if (cls < slab::kClassCount && !verify_all_ && load_key(obj) != key_) [[likely]] {
        store_key(obj, key_);
#ifdef MAPHEAP_TSAN
        __tsan_release(cache_.class_base(cls));
#endif
        if (cpu_push(cls, off)) [[likely]]
          return;
        return drain_or_die(cls, obj);
      }
    }
    return deallocate_slow(p);
  }
  // What deallocate would do, without aborting on a bad pointer.
  slab::FreeStatus try_deallocate(void* p) noexcept { return free_or_status(p); }

  // Frees p, allocated by allocate(size, align), told that alignment and a
  // size from the request up to good_size(size, align) (what a C++
  // allocator's deallocate(p, n) guarantees): the class
  // comes from the size, so the free does not read the page map, which is far
  // from the object and costs the plain free its one likely cache miss. The
  // in-cache key is still checked (a double free takes the full path and is
  // reported); a wrong size is the caller's bug and is caught only by checked
  // engines, which verify every free in full, like the requests the caches
  // do not serve.
  void deallocate_sized(void* p, std::size_t size, std::size_t align) noexcept {
    if (p != nullptr && cacheable(size, align) && !verify_all_ && mode_ != CacheMode::none) [[likely]] {
      const unsigned cls = cache_class(size, align);
      auto* obj = static_cast<std::byte*>(p);
      const std::uint64_t off = offset_of(obj);
      if (off >= arena_off_ && off + slab::class_size(cls) <= limit() && (off & 7) == 0 &&
          load_key(obj) != key_) [[likely]] {
        const slab::FreeStatus s = cache_free(cls, obj, off);
        if (s != slab::FreeStatus::ok) misuse(p, slab::to_string(s));
        return;
      }
    }
    deallocate(p);
  }

  // Moves an object to a new size (realloc): in place when the new size fits
  // its usable bytes, otherwise allocate, copy, free. nullptr (p untouched) if
  // no memory; `p == nullptr` allocates.
  void* reallocate(void* p, std::size_t size) noexcept {
    if (p == nullptr) return allocate(size);
    const std::size_t have = usable_size(p);
    if (have == 0) misuse(p, "realloc of a pointer this heap did not hand out");
    // In place if it fits and does not waste more than half.
    if (size <= have && size >= have / 2) return p;
    void* q = allocate(size);
    if (q == nullptr) return nullptr;
    std::memcpy(q, p, std::min(have, size));
    deallocate(p);
    return q;
  }

  // The bytes allocate(size, align) promises to a caller that may use them
  // all (a container's allocate_at_least): its size class's, or size for a
  // large block. deallocate_sized takes any size from the request up to it.
  static std::size_t good_size(std::size_t size, std::size_t align) noexcept {
    return slab::SlabHeap::good_size(size, align);
  }

  // The bytes usable at p; 0 if p is not an object of this heap.
  std::size_t usable_size(const void* p) const noexcept {
    const std::uint64_t off = offset_of(p);
    // Past this process's last view: the zone's own bound (another process
    // sharing the region may have grown it and handed the object over).
    if (off < arena_off_ || (off >= limit() && off >= zone_.committed_bytes())) return 0;
    const page::PageDesc& d =
        zone_.desc(page::PageIndex(static_cast<std::uint32_t>(off >> shift_)));
    if (d.state == page::PageState::large)
      return (off & ((std::uint64_t{1} << shift_) - 1)) == 0 ? std::size_t{d.run} << shift_ : 0;
    const unsigned cls = small_class(off);
    return cls < slab::kClassCount ? slab::class_size(cls) : 0;
  }

  // ---- reclaim

  // One decay step now: stamps the zone clock and releases every free run
  // older than the decay time, with the lock dropped around each release.
  // Returns the pages released.
  std::uint64_t decay() noexcept { return release_older_than(options_.decay_ms); }
  // Whether later decay steps have anything to release: free pages that
  // still hold memory, or empty slabs.
  bool decay_pending() noexcept {
    core::LockGuard<Lock> g(lock_);
    return options_.release != nullptr && (zone_.dirty_pages() != 0 || slabs_.has_empty());
  }

  // Returns all it can now: the front caches (every CPU's, by running on
  // each CPU in turn; this thread's slot and those of dead threads), the empty
  // slabs, and then every free-dirty page to the OS. Returns the pages released.
  std::uint64_t trim() noexcept {
    reclaim_parked();
    return release_older_than(0);
  }

  // ---- statistics

  EngineCounters counters() noexcept {
    EngineCounters c;
    // Every push and pop is counted in its array's word; the slow paths'
    // own pushes (refills) and pops (drains) are counted apart.
    std::int64_t pushes = 0, pops = 0;
    for (std::uint32_t s = 0; s < cache_.slots(); ++s)
      for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
        const std::uint64_t w = load_relaxed(cache_.array(s, cls)->word);
        pushes += static_cast<std::int64_t>((ops_of(w) + count_of(w)) / 2);
        pops += static_cast<std::int64_t>((ops_of(w) - count_of(w)) / 2);
      }
    c.alloc_hits = pops - counts_.read(kInternalPops);
    c.free_hits = pushes - counts_.read(kInternalPushes);
    c.allocations = c.alloc_hits + counts_.read(kSlowAllocs);
    c.frees = c.free_hits + counts_.read(kSlowFrees);
    c.failed_allocations = counts_.read(kFailed);
    c.alloc_misses = counts_.read(kAllocMisses);
    c.free_misses = counts_.read(kFreeMisses);
    c.decays = counts_.read(kDecays);
    c.grows = counts_.read(kGrows);
    c.released_pages = counts_.read(kReleased);
    std::uint64_t cached[slab::kClassCount];
    cached_objects(cached);
    core::LockGuard<Lock> g(lock_);
    c.bytes_in_use = static_cast<std::int64_t>(live_bytes(slabs_.stats(), zone_.info(), cached));
    return c;
  }

  EngineStats stats() noexcept {
    EngineStats s;
    s.counters = counters();
    cached_objects(s.cached_objects);
    {
      core::LockGuard<Lock> g(lock_);
      s.slabs = slabs_.stats();
      s.zone = zone_.info();
    }
    s.metadata_pages = metadata_pages_;
    s.committed_bytes = limit();
    s.region_bytes = zone_.region_bytes();
    s.runs = &slabs_.runs();
    s.cache_mode = mode_;
    s.cpu_slots = cache_.cpu_slots();
    s.thread_slots = cache_.thread_slots();
    s.cache_floor = cache_floor_of(options_.cache_floor);
    return s;
  }

  // /proc/slabinfo-style text of the slab caches (objects in front caches
  // are not active); returns the length needed.
  std::size_t render_slabinfo(char* buf, std::size_t cap) noexcept {
    std::uint64_t cached[slab::kClassCount];
    cached_objects(cached);
    core::LockGuard<Lock> g(lock_);
    return slabs_.render_slabinfo(buf, cap, cached);
  }
  // The whole snapshot as one JSON object (cache, counters, pages by state,
  // buddyinfo, and the classes that have slabs); returns the length needed.
  std::size_t render_json(char* buf, std::size_t cap) noexcept {
    return render_stats_json(stats(), buf, cap);
  }
  std::size_t render_buddyinfo(char* buf, std::size_t cap) noexcept {
    core::LockGuard<Lock> g(lock_);
    return zone_.render_buddyinfo(buf, cap);
  }
  page::BuddyInfo buddyinfo() noexcept {
    core::LockGuard<Lock> g(lock_);
    return zone_.info();
  }

  // Walks the zone, the slab lists and every cache: each cached object must
  // be a carved object of a slab of its class, not on the slab's free list,
  // marked with the key, and in one cache only. REQUIRES: no allocation or
  // free runs meanwhile (caches are read without their users' consent).
  page::CheckReport check() noexcept {
    core::LockGuard<Lock> g(lock_);
    refresh_limit();  // the cache entries are checked against the zone's bound
    page::CheckReport r = slabs_.check();
    if (!r.ok) return r;
    return check_caches();
  }

  // fork(): the child has only the forking thread, so no lock may be held
  // there by another one. Call before_fork() before fork() and
  // after_fork() in both processes after it (the process heap registers
  // them with pthread_atfork).
  void before_fork() noexcept {
    lock_.lock();
    // A release in flight holds isolated blocks with the lock dropped; the
    // child would never put them back. Wait until none is.
    while (releasing_.load(std::memory_order_acquire) != 0) {
      lock_.unlock();
      pal::cpu_relax();
      lock_.lock();
    }
  }
  void after_fork(bool child) noexcept {
    if (child) forget_parent();
    lock_.unlock();
  }
  // In a fork()ed child: forgets what this engine's state in the child names
  // of its parent's threads. A decay run's flag (its runner is gone), and
  // this thread's slot references (per-thread mode): they name slots owned
  // by a thread of the parent, whose arrays have that one user, which goes
  // on using them; the child claims slots of its own at its next slow path.
  // after_fork(true) calls it; an owner whose lock is in shared memory (the
  // mapped heap, whose heaps fork()ed children go on using alongside their
  // parent) calls it alone, from a pthread_atfork child handler.
  void forget_parent() noexcept {
    decaying_.store(false, std::memory_order_relaxed);
    for (ThreadRef& r : t_refs)
      if (r.id == id_) r = ThreadRef{};
  }
  // The slot references of every engine of this type at once, for a child
  // handler that may not know every engine.
  static void forget_parents_slots() noexcept {
    for (ThreadRef& r : t_refs) r = ThreadRef{};
  }

  CacheMode cache_mode() const noexcept { return mode_; }
  // The lock object, for an owner that keeps the lock's state in the region
  // (the mapped heap binds its robust mutex and journal to it).
  Lock& lock_policy() noexcept { return lock_; }
  // After a crash: the objects in thread slots whose threads are gone go
  // back to their slabs. Returns how many there were.
  std::uint64_t reclaim_dead_threads() noexcept { return drain_thread_slots(false); }
  // After a crash: blocks a dead process had isolated for release go back
  // to the free lists. REQUIRES: no other user of the region.
  // A critical section per journal's worth of blocks (page::Buddy).
  std::uint64_t reclaim_isolated() noexcept {
    std::uint64_t pages = 0;
    std::uint32_t from = 0;
    for (bool done = false; !done;) {
      core::LockGuard<Lock> g(lock_);
      pages += zone_.reclaim_isolated(from);
      done = from >= zone_.end_page();
    }
    return pages;
  }
  page::Buddy& zone() noexcept { return zone_; }
  const page::Buddy& zone() const noexcept { return zone_; }
  slab::SlabHeap& slabs() noexcept { return slabs_; }
  const FrontCache& front_cache() const noexcept { return cache_; }

 private:
  static constexpr std::uint32_t kNoSlot = FrontCache::kNoSlot;

  // ---- setting up

  static std::uint32_t make_key(const void* base) noexcept {
    // Not a secret: it only needs to be unlikely in program data.
    std::uint64_t x = pal::monotonic_ns() ^ reinterpret_cast<std::uintptr_t>(base) ^
                      (static_cast<std::uint64_t>(pal::process_id()) << 40);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    const auto key = static_cast<std::uint32_t>(x);
    return key == 0 ? 0x6d617068u : key;
  }

  // Hands the page-map entry and the first page of the run at `index` to
  // options_.prefetch, before attach reads them. An index outside the arena
  // is skipped here and refused by the attach that follows.
  void prefetch_run(std::uint32_t index) noexcept {
    if (options_.prefetch == nullptr || index < zone_.first_page() || index >= zone_.end_page()) return;
    const page::PageIndex run(index);
    options_.prefetch(options_.prefetch_ctx, &zone_.desc(run), sizeof(page::PageDesc));
    options_.prefetch(options_.prefetch_ctx, zone_.address(run), zone_.header().page_size);
  }

  bool open_view(void* base) noexcept {
    base_ = static_cast<std::byte*>(base);
    shift_ = static_cast<unsigned>(std::countr_zero(zone_.header().page_size));
    arena_off_ = std::uint64_t{zone_.first_page()} << shift_;
    refresh_limit();
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls)
      cache_limit_[cls] = static_cast<std::uint16_t>(class_limit(cls, options_.cache_floor));
    key_ = cache_.key();
#if MAPHEAP_CHECKED
    verify_all_ = true;
#else
    verify_all_ = options_.checked;
#endif
    metadata_pages_ = zone_.first_page() + zone_.desc(page::PageIndex(zone_.header().root)).run +
                      zone_.desc(page::PageIndex(slabs_.cache_run())).run;
    id_ = next_id().fetch_add(1, std::memory_order_relaxed) + 1;
    mode_ = options_.cache;
    if (mode_ == CacheMode::automatic)
      mode_ = rseq_available() ? CacheMode::per_cpu : CacheMode::per_thread;
    if (mode_ == CacheMode::per_cpu && cache_.cpu_slots() == 0) mode_ = CacheMode::per_thread;
    if (mode_ == CacheMode::per_thread && cache_.thread_slots() == 0) mode_ = CacheMode::none;
    zone_.set_clock(now_ms());
    last_decay_.store(now_ms(), std::memory_order_relaxed);
    return true;
  }

  static std::atomic<std::uint64_t>& next_id() noexcept {
    static std::atomic<std::uint64_t> id{0};
    return id;
  }
  std::uint32_t now_ms() const noexcept {
    if (options_.clock != nullptr) [[unlikely]]
      return options_.clock(options_.clock_ctx);
    return static_cast<std::uint32_t>(pal::monotonic_ns() / 1000000u);
  }

  // ---- object helpers

  // Requests the front caches serve: small, aligned to at most 16 bytes (a
  // power of two), and their class (16-byte alignment below 16 bytes takes
  // the 16-byte class; the 8-byte class is only 8-aligned).
  static bool cacheable(std::size_t size, std::size_t align) noexcept {
    return align <= slab::kQuantum && size <= slab::kMaxSmallSize && (align & (align - 1)) == 0;
  }
  static unsigned cache_class(std::size_t size, std::size_t align) noexcept {
    return slab::small_request_class(size, align);  // the slab layer's own rule
  }

  // The zone lock, with the zone clock set to the time read just before
  // taking it: every run freed under it is stamped with its real free time,
  // which is what decay measures ages from.
  struct StampedLock {
    core::LockGuard<Lock> guard;
    StampedLock(Engine& e, std::uint32_t now) noexcept : guard(e.lock_) {
      e.zone_.set_clock(now);
      e.refresh_limit();
    }
  };
  StampedLock lock_stamped() noexcept { return StampedLock(*this, now_ms()); }
  static constexpr const char* kCacheCorrupt = "a front cache held an object its slab refuses";

  std::uint64_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }
  // Another process sharing the region may have grown it since this one
  // last looked (and cached objects of the grown part): the bound follows
  // the zone's committed size.
  void refresh_limit() noexcept {
    const std::uint64_t committed = zone_.committed_bytes();
    if (committed != limit()) limit_.store(committed, std::memory_order_relaxed);
  }
  std::uint64_t offset_of(const void* p) const noexcept {
    return reinterpret_cast<std::uintptr_t>(p) - reinterpret_cast<std::uintptr_t>(base_);
  }
  static std::uint32_t load_key(const std::byte* obj) noexcept {
    std::uint32_t v;
    std::memcpy(&v, obj + 4, sizeof(v));
    return v;
  }
  static void store_key(std::byte* obj, std::uint32_t v) noexcept {
    std::memcpy(obj + 4, &v, sizeof(v));
  }
  template <class T>
  static T load_relaxed(const T& v) noexcept {
    return std::atomic_ref<T>(const_cast<T&>(v)).load(std::memory_order_relaxed);
  }
  template <class T>
  static void store_relaxed(T& v, T x) noexcept {
    std::atomic_ref<T>(v).store(x, std::memory_order_relaxed);
  }

  // The class of the slab object starting at arena offset `off`, or
  // kClassCount if `off` is not the start of an object in a slab. Reads only
  // page-map fields that stay fixed while the slab holds a live object.
  unsigned small_class(std::uint64_t off) const noexcept {
    const auto page = static_cast<std::uint32_t>(off >> shift_);
    const page::PageDesc& d = zone_.desc(page::PageIndex(page));
    std::uint32_t head = page;
    if (d.state == page::PageState::slab_tail) {
      head = d.next;
      // A head comes before its tails, and within the arena.
      if (head >= page || head < zone_.first_page()) return slab::kClassCount;
    } else if (d.state != page::PageState::slab) {
      return slab::kClassCount;
    }
    const unsigned cls = zone_.desc(page::PageIndex(head)).slab_class;
    if (cls >= slab::kClassCount) return slab::kClassCount;
    const std::uint64_t rel = off - (std::uint64_t{head} << shift_);
    if (std::uint64_t{slab::object_index(cls, rel)} * slab::class_size(cls) != rel)
      return slab::kClassCount;
    return cls;
  }

  // ---- the caches

  // This thread's slot (per-thread mode): a lookup in a small thread-local
  // table keyed by engine id (ids are never reused, so a stale entry of a
  // destroyed engine is never matched).
  struct ThreadRef {
    std::uint64_t id = 0;
    std::uint32_t slot = kNoSlot;
    std::uint32_t retry = 0;
  };
  static constexpr unsigned kThreadRefs = 4;
  static inline thread_local ThreadRef t_refs[kThreadRefs];

  std::uint32_t thread_slot() noexcept {
    if (t_refs[0].id == id_) [[likely]]
      return t_refs[0].slot;
    return thread_slot_slow();
  }
  __attribute__((noinline)) std::uint32_t thread_slot_slow() noexcept {
    for (unsigned i = 1; i < kThreadRefs; ++i)
      if (t_refs[i].id == id_) {
        std::swap(t_refs[0], t_refs[i]);
        return t_refs[0].slot;
      }
    std::copy_backward(t_refs, t_refs + kThreadRefs - 1, t_refs + kThreadRefs);
    t_refs[0] = {id_, cache_.claim_thread_slot(), 0};
    return t_refs[0].slot;
  }
  // A thread that found every slot taken tries again now and then.
  void retry_thread_slot() noexcept {
    if (t_refs[0].id == id_ && t_refs[0].slot == kNoSlot && ++t_refs[0].retry % 256 == 0)
      t_refs[0].slot = cache_.claim_thread_slot();
  }

  // Pop and push on the calling CPU's array (rseq), by class. A pop is
  // bounded by the array's capacity (a count read from the region is checked
  // against what the layout holds), a push by this engine's limit.
  std::uint64_t cpu_pop(unsigned cls) noexcept {
    return rseq_pop<kSlot.bytes>(cache_.class_base(cls), cache_.cpu_slots(), class_capacity(cls));
  }
  bool cpu_push(unsigned cls, std::uint64_t off) noexcept {
    return rseq_push<kSlot.bytes>(cache_.class_base(cls), cache_.cpu_slots(), cache_limit_[cls], off);
  }
  // Raw pop and push on the calling CPU's (or thread's) array: offsets, no
  // key handling and no counting.
  std::uint64_t cache_take(unsigned cls) noexcept {
    if (mode_ == CacheMode::per_cpu)
      return cpu_pop(cls);
    if (mode_ != CacheMode::per_thread) return 0;
    const std::uint32_t slot = thread_slot();
    if (slot == kNoSlot) return 0;
    return array_pop(cache_.array(slot, cls), class_capacity(cls));
  }
  bool cache_put(unsigned cls, std::uint64_t off) noexcept {
    if (mode_ == CacheMode::per_cpu)
      return cpu_push(cls, off);
    if (mode_ != CacheMode::per_thread) return false;
    const std::uint32_t slot = thread_slot();
    if (slot == kNoSlot) return false;
    return array_push(cache_.array(slot, cls), cache_limit_[cls], off);
  }
  bool has_array() noexcept {
    if (mode_ == CacheMode::per_cpu) {
#if MAPHEAP_RSEQ
      return static_cast<volatile struct rseq*>(rseq_area())->cpu_id < cache_.cpu_slots();
#else
      return false;
#endif
    }
    return mode_ == CacheMode::per_thread && thread_slot() != kNoSlot;
  }

  // Arrays of per-thread slots (and of any slot being drained or checked) are
  // read and written with relaxed atomics: only the owner writes them, and
  // the checker may read them. The word changes as in cache/rseq.hpp.
  static std::uint64_t array_pop(ClassArray* a, std::uint32_t cap) noexcept {
    const std::uint64_t w = load_relaxed(a->word);
    const std::uint64_t n = count_of(w);
    if (n == 0 || n > cap) return 0;
    const std::uint64_t off = load_relaxed(a->items[n - 1]);
    store_relaxed(a->word, w + kPopDelta);
    return off;
  }
  static bool array_push(ClassArray* a, std::uint32_t cap, std::uint64_t off) noexcept {
    const std::uint64_t w = load_relaxed(a->word);
    const std::uint64_t n = count_of(w);
    if (n >= cap) return false;
    store_relaxed(a->items[n], off);
    store_relaxed(a->word, w + kPushDelta);
    return true;
  }
  static std::uint32_t cached_count(const ClassArray* a, unsigned cls) noexcept {
    return static_cast<std::uint32_t>(
        std::min<std::uint64_t>(count_of(load_relaxed(a->word)), class_capacity(cls)));
  }

  // Another process sharing the region may have grown it (and cached an
  // object there) since this one last looked: read the bound again.
  // Whether a class-cls object at `off`, popped from a cache, lies in the
  // arena as this process knows it (0 does not).
  bool in_arena(std::uint64_t off, unsigned cls) const noexcept {
    return off >= arena_off_ && off + slab::class_size(cls) <= limit() && (off & 7) == 0;
  }
  // The popped object, handed out: its key cleared.
  std::byte* take(std::uint64_t off, [[maybe_unused]] unsigned cls) noexcept {
#ifdef MAPHEAP_TSAN
    __tsan_acquire(cache_.class_base(cls));  // the push that published it happened before
#endif
    std::byte* p = base_ + off;
    store_key(p, 0);
    return p;
  }
  // Another process sharing the region may have grown it (and cached an
  // object there) since this one last looked: read the bound again.
  __attribute__((noinline)) std::byte* take_after_refresh(std::uint64_t off, unsigned cls) noexcept {
    refresh_limit();
    if (!in_arena(off, cls)) corrupt(base_ + off, "a front cache holds an offset outside the arena");
    return take(off, cls);
  }
  void* cache_pop(unsigned cls) noexcept {
    const std::uint64_t off = cache_take(cls);
    if (off == 0) return nullptr;
    if (!in_arena(off, cls)) [[unlikely]]
      return take_after_refresh(off, cls);
    return take(off, cls);
  }

  // ---- slow paths

  // Everything allocate's fast path does not serve: a miss in this CPU's
  // array, per-thread caches, no cache, requests the caches do not take.
  __attribute__((noinline)) void* allocate_slow(std::size_t size, std::size_t align) noexcept {
    if (mode_ == CacheMode::per_thread && cacheable(size, align))
      if (void* p = cache_pop(cache_class(size, align))) return p;
    bool reclaimed = false;
    for (;;) {
      const std::uint64_t seen = limit();
      bool merge_cut = false;
      if (void* p = allocate_once_slow(size, align, merge_cut)) return p;
      // The zone has the pages but stopped merging them into a block for
      // want of journal room (page::Buddy::merge_cut): the section that
      // ended committed its merges; the next one goes on from there.
      if (merge_cut) continue;
      if (grow_slow(size, align, seen)) continue;
      // The region cannot grow: before failing, take back what the caches
      // park (every CPU's arrays, the transfer slot, this thread's and dead
      // threads' slots) and the empty slabs, and try once more. The front
      // caches may hold 14 MiB a CPU of objects no other size can use (26 MiB
      // at the mapped heap's floor of 32: cache::class_limit). (Not
      // for a request larger than the whole region: nothing could serve it.)
      if (reclaimed || size > zone_.region_bytes()) break;
      reclaim_parked();
      reclaimed = true;
    }
    counts_.add(kFailed, 1);
    return nullptr;
  }
  // What trim() does before it releases memory: cached objects back to
  // their slabs and empty slabs back to the zone. A critical section per
  // class and batch, so that a shared heap's undo journal stays small.
  void reclaim_parked() noexcept {
    drain_caches();
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
      core::LockGuard<Lock> g(lock_);
      slabs_.release_empty(cls, 0);
    }
  }

  // merge_cut: set when it failed with pages free but not yet merged
  // (page::Buddy::merge_cut); the caller tries again.
  void* allocate_once_slow(std::size_t size, std::size_t align, bool& merge_cut) noexcept {
    if (cacheable(size, align) && mode_ != CacheMode::none) {
      if (mode_ == CacheMode::per_thread) retry_thread_slot();
      if (void* p = refill_slow(cache_class(size, align))) return p;
    }
    void* p;
    std::size_t usable = 0;
    {
      core::LockGuard<Lock> g(lock_);
      zone_.clear_merge_cut();
      p = slabs_.alloc(size, align, &usable);
      merge_cut = p == nullptr && zone_.merge_cut();
    }
    tick();
    if (p == nullptr) return nullptr;
    // A slab object may carry the key from a life in a cache: clear it, or
    // its free would take the slow check.
    if (usable <= slab::kMaxSmallSize) store_key(static_cast<std::byte*>(p), 0);
    if (options_.huge != nullptr && usable >= options_.huge_min)
      options_.huge(options_.huge_ctx, p, usable);
    counts_.add(kSlowAllocs, 1);
    return p;
  }

  // A batch of objects from the class's slabs: one returned, the rest pushed
  // into the cache (marked with the key), or back to the slabs if the cache
  // does not take them. nullptr when the slab layer has none: the caller
  // then tries the locked path, which reports the failure.
  void* refill_slow(unsigned cls) noexcept {
    // No array for this thread (its CPU is beyond the slots, or every thread
    // slot is taken): a batch would only go back; the locked path serves it.
    if (!has_array()) return nullptr;
    const std::uint32_t want = cache_limit_[cls] / 2u;
    void* batch[kMaxCapacity / 2];
    // Objects larger than a page have a limit of at most kMinCapacity: a
    // batch of them, a run of pages each, fits.
    static_assert(slab::SlabHeap::FreshPages::kSpans >= kMinCapacity / 2);
    slab::SlabHeap::FreshPages fresh;
    unsigned n;
    {
      core::LockGuard<Lock> g(lock_);
      n = transfer_take(cls, batch, want);
      if (n == 0) n = slabs_.alloc_batch(cls, batch, want, options_.populate != nullptr ? &fresh : nullptr);
    }
    if (n == 0) return nullptr;  // the locked path reports the failure
    for (unsigned i = 0; i < fresh.spans; ++i)
      options_.populate(options_.populate_ctx, fresh.begin[i],
                        static_cast<std::size_t>(fresh.end[i] - fresh.begin[i]));
    unsigned keep = 1;           // batch[1..keep) did not fit: back to the slabs
    for (unsigned i = n; i-- > 1;) {
      auto* obj = static_cast<std::byte*>(batch[i]);
      store_key(obj, key_);
#ifdef MAPHEAP_TSAN
      __tsan_release(cache_.class_base(cls));
#endif
      if (!cache_put(cls, offset_of(obj))) {
        keep = i + 1;
        break;
      }
    }
    counts_.add(kInternalPushes, n - keep);
    if (keep > 1) {
      const StampedLock g = lock_stamped();
      free_batch(batch + 1, keep - 1, [](void*, slab::FreeStatus) {});
    }
    tick();
    counts_.add(kAllocMisses, 1);
    counts_.add(kSlowAllocs, 1);
    store_key(static_cast<std::byte*>(batch[0]), 0);
    return batch[0];
  }

  slab::FreeStatus free_or_status(void* ptr) noexcept {
    if (ptr == nullptr) return slab::FreeStatus::ok;
    auto* p = static_cast<std::byte*>(ptr);
    const std::uint64_t off = offset_of(p);
    unsigned cls = slab::kClassCount;
    if (off >= arena_off_ && off < limit() && mode_ != CacheMode::none) [[likely]]
      cls = small_class(off);
    if (cls >= slab::kClassCount) [[unlikely]]
      return free_slow(p);
    if (verify_all_ || load_key(p) == key_) [[unlikely]] {
      const slab::FreeStatus s = verify_free_slow(p, cls, off);
      if (s != slab::FreeStatus::ok) return s;
    }
    return cache_free(cls, p, off);
  }

  // A free object of class cls at p (offset off) into this CPU's (or
  // thread's) cache, marked with the key; to the slabs through drain_slow
  // when the cache is full.
  slab::FreeStatus cache_free(unsigned cls, std::byte* p, std::uint64_t off) noexcept {
    store_key(p, key_);
#ifdef MAPHEAP_TSAN
    __tsan_release(cache_.class_base(cls));
#endif
    if (cache_put(cls, off)) [[likely]]
      return slab::FreeStatus::ok;
    return drain_slow(cls, p);
  }

  // ---- the transfer slot (FrontCache::transfer), under the lock

  // Up to `want` objects of class cls, most recently given first.
  unsigned transfer_take(unsigned cls, void** out, unsigned want) noexcept {
    if (!cache_.has_transfer()) return 0;
    ClassArray* t = cache_.transfer(cls);
    core::undo_save(t->word);  // items past the count are not read: the word is enough
    unsigned n = 0;
    std::uint64_t off;
    while (n < want && (off = array_pop(t, class_capacity(cls))) != 0) out[n++] = base_ + off;
    return n;
  }
  // All of batch[0..n), or nothing when they do not fit.
  bool transfer_give(unsigned cls, void* const* batch, unsigned n) noexcept {
    if (!cache_.has_transfer()) return false;
    ClassArray* t = cache_.transfer(cls);
    if (count_of(load_relaxed(t->word)) + n > cache_limit_[cls]) return false;
    core::undo_save(t->word);
    for (unsigned i = 0; i < n; ++i)
      (void)array_push(t, class_capacity(cls), offset_of(static_cast<const std::byte*>(batch[i])));
    return true;
  }

  // The object is live: allocated in its slab (not on the slab's free list)
  // and in no cache. Under the lock; the caches are read as they are.
  __attribute__((noinline)) slab::FreeStatus verify_free_slow(std::byte* p, unsigned cls,
                                                         std::uint64_t off) noexcept {
    core::LockGuard<Lock> g(lock_);
    const slab::FreeStatus s = slabs_.validate(p);
    if (s != slab::FreeStatus::ok) return s;
    for (std::uint32_t slot = 0; slot < cache_.array_slots(); ++slot) {
      const ClassArray* a = cache_.array(slot, cls);
      const std::uint32_t n = cached_count(a, cls);
      for (std::uint32_t i = 0; i < n; ++i)
        if (load_relaxed(a->items[i]) == off) return slab::FreeStatus::double_free;
    }
    return slab::FreeStatus::ok;
  }

  // What deallocate's fast path does not serve (per-thread caches, no
  // cache, large runs, keyed objects, checked engines, bad pointers).
  __attribute__((noinline)) void deallocate_slow(void* p) noexcept {
    const slab::FreeStatus s = free_or_status(p);
    if (s != slab::FreeStatus::ok) misuse(p, slab::to_string(s));
  }
  __attribute__((noinline)) void drain_or_die(unsigned cls, std::byte* p) noexcept {
    const slab::FreeStatus s = drain_slow(cls, p);
    if (s != slab::FreeStatus::ok) misuse(p, slab::to_string(s));
  }
  // The cache was full (or there is no slot): `p` and half the array go
  // back to their slabs under the lock.
  __attribute__((noinline)) slab::FreeStatus drain_slow(unsigned cls, std::byte* p) noexcept {
    if (mode_ == CacheMode::per_thread) retry_thread_slot();
    void* batch[kMaxCapacity / 2 + 1];
    unsigned n = 0;
    batch[n++] = p;
    for (std::uint32_t want = cache_limit_[cls] / 2u; n <= want;) {
      const std::uint64_t off = cache_take(cls);
      if (off == 0) break;
#ifdef MAPHEAP_TSAN
      __tsan_acquire(cache_.class_base(cls));
#endif
      batch[n++] = base_ + off;
    }
    counts_.add(kInternalPops, n - 1);
    slab::FreeStatus bad = slab::FreeStatus::ok;
    const std::uint32_t now = now_ms();  // one clock read for the stamp and the tick
    {
      const StampedLock g(*this, now);
      // The batch goes whole to the transfer slot for the next refill (of
      // any CPU or thread); to the slabs object by object only when full.
      if (!transfer_give(cls, batch, n)) {
        free_batch(batch, n, [&](void*, slab::FreeStatus s) {
          if (bad == slab::FreeStatus::ok) bad = s;
        });
      }
    }
    // The first object is the caller's; a cached one refused means the heap is corrupt.
    if (bad != slab::FreeStatus::ok && n > 1) corrupt(p, kCacheCorrupt);
    tick_after_free(now);
    counts_.add(kFreeMisses, 1);
    counts_.add(kSlowFrees, 1);
    return bad;
  }

  __attribute__((noinline)) slab::FreeStatus free_slow(void* p) noexcept {
    slab::FreeStatus s;
    const std::uint32_t now = now_ms();  // one clock read for the stamp and the tick
    {
      const StampedLock g(*this, now);
      s = slabs_.free(p);
      if (s == slab::FreeStatus::ok) bound_dirty();
    }
    if (s == slab::FreeStatus::ok) counts_.add(kSlowFrees, 1);
    tick_after_free(now);
    return s;
  }

  // ---- growth

  // The arena could not serve `size` bytes aligned to `align`: ask the owner
  // for more of the reservation, a quarter more than now at least (2 MiB
  // steps), so that growth is rare. Under the lock: one thread grows, the
  // others find the arena grown and retry. False if it cannot grow enough.
  __attribute__((noinline)) bool grow_slow(std::size_t size, std::size_t align,
                                           std::uint64_t seen) noexcept {
    if (options_.grow == nullptr) return false;
    const std::size_t page = std::size_t{1} << shift_;
    constexpr std::size_t kStep = std::size_t{2} << 20;
    // What the page layer can never serve, however large the arena: no growth.
    constexpr std::uint64_t kMaxRun = std::uint64_t{1} << page::kMaxOrder;
    const std::uint64_t pages = size / page + 1, align_pages = align > page ? align / page : 1;
    if (pages > kMaxRun || align_pages > kMaxRun || pages + align_pages - 1 > kMaxRun)
      return false;
    core::LockGuard<Lock> g(lock_);
    // Another thread grew the arena since this one failed: just retry.
    if (zone_.committed_bytes() > seen) return true;
    const std::size_t have = zone_.committed_bytes(), region = zone_.region_bytes();
    const std::size_t free_bytes = std::size_t{zone_.info().free_pages} * page;
    if (have >= region || size > region - have + free_bytes) return false;  // could never fit
    // Enough for the request as a fresh run (with its alignment), or a slab.
    // (The longest slab run is kMaxLargeRunPages pages.)
    const std::size_t need =
        std::max<std::size_t>({size, slab::kMaxSmallSize * 2, slab::kMaxLargeRunPages * page}) +
        std::max(align, page) + page;
    std::size_t want = have + std::max({need, have / 4, kStep});
    want = std::min((want + kStep - 1) / kStep * kStep, region);
    const std::size_t got = options_.grow(options_.grow_ctx, want);
    if (got <= have || got > region || !zone_.grow(got / page * page)) return false;
    refresh_limit();
    counts_.add(kGrows, 1);
    return true;
  }

  // ---- decay

  // From slow paths: a decay step when a quarter of the decay time passed
  // since the last one; one thread at a time runs it.
  void tick() noexcept { tick(now_ms()); }
  void tick(std::uint32_t now) noexcept {
    const std::uint32_t period = std::max<std::uint32_t>(options_.decay_ms / 4, 1);
    // Signed: `now` may have been read before another thread's step (a
    // slow path reads the clock once, before its locked section).
    const auto since = static_cast<std::int32_t>(now - last_decay_.load(std::memory_order_relaxed));
    if (since < static_cast<std::int32_t>(period)) return;  // period <= 2^30
    if (decaying_.exchange(true, std::memory_order_acquire)) return;
    last_decay_.store(now, std::memory_order_relaxed);
    (void)release_older_than(options_.decay_ms);
    decaying_.store(false, std::memory_order_release);
  }

  // After a free slow path, where memory for decay comes from: the decay
  // step, and a word to the owner's decay helper.
  void tick_after_free(std::uint32_t now) noexcept {
    tick(now);
    if (options_.decay_wake != nullptr) options_.decay_wake(options_.decay_wake_ctx);
  }

  std::uint64_t release_older_than(std::uint32_t age) noexcept {
    std::uint64_t pages = 0;
    // Slabs empty that long go back to the zone; their pages go back to
    // the OS at a later step, once free that long as pages. A critical
    // section per class: a class keeps up to 32 empty slabs, each freed
    // with its merges (11 to 180 journal entries), and all classes at once
    // could fill a shared heap's undo journal.
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
      const StampedLock g = lock_stamped();
      slabs_.release_empty(cls, age);
    }
    if (options_.release != nullptr) {
      const StampedLock g = lock_stamped();
      pages = zone_.release_free(release_unlocked, this, age);
    }
    counts_.add(kDecays, 1);
    counts_.add(kReleased, static_cast<std::int64_t>(pages));
    return pages;
  }
  // Under the lock: past the dirty bound (EngineOptions::dirty_floor), the
  // largest free-dirty blocks go back now, down to half the bound.
  void bound_dirty() noexcept {
    if (options_.release == nullptr) return;
    const std::uint64_t page = std::uint64_t{1} << shift_;
    const std::uint64_t bound =
        std::max<std::uint64_t>(options_.dirty_floor / page, zone_.used_pages() >> options_.dirty_shift);
    const std::uint64_t dirty = zone_.dirty_pages();
    if (dirty <= bound) return;
    const std::uint64_t pages =
        zone_.release_free(release_unlocked, this, 0, dirty - bound / 2);
    counts_.add(kReleased, static_cast<std::int64_t>(pages));
  }
  // The zone isolated the block: the lock is dropped around the system call.
  static bool release_unlocked(void* ctx, std::byte* addr, std::size_t bytes) noexcept {
    auto* e = static_cast<Engine*>(ctx);
    e->releasing_.fetch_add(1, std::memory_order_relaxed);
    e->lock_.unlock();
    const bool ok = e->options_.release(e->options_.release_ctx, addr, bytes);
    e->lock_.lock();
    e->releasing_.fetch_sub(1, std::memory_order_release);
    return ok;
  }

  // ---- draining the caches (trim)

  void drain_caches() noexcept {
    if (mode_ == CacheMode::per_cpu) {
      // A CPU's array can only be emptied from that CPU: run on each in turn.
      pal::CpuAffinity aff;
      if (aff.save().ok()) {
        for (std::uint32_t cpu = 0; cpu < cache_.cpu_slots(); ++cpu)
          if (aff.allowed(cpu) && aff.pin(cpu).ok()) drain_current();
        (void)aff.restore();
      }
    }
    (void)drain_thread_slots(true);
    // The transfer slot (its pops are not the front caches' own: not
    // counted), a critical section per class. Its objects are off the slot
    // (a journaled pop) until freed: taken in chunks whose frees fit the
    // journal's room, so that the section commits only between chunks,
    // with nothing in hand, and a death never loses them.
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
      const StampedLock g = lock_stamped();
      void* batch[kMaxCapacity];
      for (unsigned n; (n = transfer_take(cls, batch, frees_with_room())) != 0;)
        free_batch(batch, n, refused_from_cache);
    }
  }
  // Thread slots whose owner is gone (and this thread's, if `mine_too`),
  // back to the slabs; returns the objects they held.
  std::uint64_t drain_thread_slots(bool mine_too) noexcept {
    std::uint64_t objects = 0;
    for (std::uint32_t s = cache_.cpu_slots(); s < cache_.slots(); ++s) {
      const std::uint64_t owner = cache_.owner(s);
      const bool mine = owner == FrontCache::self_owner();
      if (mine ? !mine_too : !cache_.adopt_if_dead(s)) continue;
      for (unsigned cls = 0; cls < slab::kClassCount; ++cls)
        objects += cached_count(cache_.array(s, cls), cls);
      drain_slot(s);
      if (!mine) cache_.release_thread_slot(s);
    }
    return objects;
  }
  // Every array of this CPU (rseq) or of one thread slot, back to the slabs.
  void drain_current() noexcept {
    drain_with([&](unsigned cls) {
      return cpu_pop(cls);
    });
  }
  void drain_slot(std::uint32_t slot) noexcept {
    drain_with(
        [&](unsigned cls) { return array_pop(cache_.array(slot, cls), class_capacity(cls)); });
  }
  template <class Pop>
  void drain_with(Pop pop) noexcept {
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
      void* batch[kMaxCapacity];
      unsigned n = 0;
      std::uint64_t off;
      while (n < kMaxCapacity && (off = pop(cls)) != 0) {
#ifdef MAPHEAP_TSAN
        __tsan_acquire(cache_.class_base(cls));  // the push that cached it happened before
#endif
        batch[n++] = base_ + off;
      }
      give_back(batch, n);
    }
  }
  void give_back(void** batch, unsigned n) noexcept {
    if (n == 0) return;
    counts_.add(kInternalPops, n);
    const StampedLock g = lock_stamped();
    free_batch(batch, n, refused_from_cache);
  }
  // Frees a batch of cached objects to their slabs, in the critical section
  // the caller holds; `refused(p, status)` for each the slabs refuse. A free
  // can journal up to slab::kFreeEntries entries (its slab's last object
  // gives the run to the zone, with its merges) and a batch holds up to
  // kMaxCapacity objects: in the worst case, more than a shared heap's undo
  // journal holds. Between two frees the metadata is whole, so when the room
  // left is less than one free's worst case, the frees so far are committed
  // (core::undo_checkpoint) and the section goes on with the journal empty.
  // A death after that takes back only the frees since. The batch's objects
  // not yet freed are lost to the heap then, as at any point of the
  // section: every caller took them out of a cache before the section or in
  // a section of its own, except the transfer slot's drain, which takes
  // only what fits (frees_with_room). A large run in a batch (a sized free
  // told a wrong size, which only checked engines catch, parks a run in a
  // class's cache) has a bound of its own, slab::kLargeFreeEntries
  // (docs/design/crash.md).
  template <class Refused>
  void free_batch(void* const* batch, unsigned n, Refused&& refused) noexcept {
    for (unsigned i = 0; i < n; ++i) {
      // A large run here is a wrong-size free's (see above): its own bound.
      const std::uint32_t room = core::undo_room();
      if (room < slab::kLargeFreeEntries && room < slabs_.free_entries_of(batch[i])) core::undo_checkpoint();
      const slab::FreeStatus s = slabs_.free(batch[i]);
      if (s != slab::FreeStatus::ok) refused(batch[i], s);
    }
  }
  // How many objects the section can take from the transfer slot (one
  // journal entry) and free without a commit in between: after a commit if
  // the journal is short of one, at least one; kMaxCapacity with no journal.
  static unsigned frees_with_room() noexcept {
    constexpr std::uint32_t kTake = 1;
    if (core::undo_room() < kTake + slab::kFreeEntries) core::undo_checkpoint();
    const std::uint32_t fit = (core::undo_room() - kTake) / slab::kFreeEntries;
    return std::clamp<std::uint32_t>(fit, 1, kMaxCapacity);
  }
  // A cached object its slab refuses: the cache or the slab is corrupt.
  static void refused_from_cache(void* p, slab::FreeStatus) noexcept { corrupt(p, kCacheCorrupt); }

  // ---- statistics and checking

  void cached_objects(std::uint64_t* out) const noexcept {
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
      out[cls] = 0;
      for (std::uint32_t s = 0; s < cache_.array_slots(); ++s)
        out[cls] += cached_count(cache_.array(s, cls), cls);
    }
  }
  std::uint64_t live_bytes(const slab::SlabStats& st, const page::BuddyInfo& bi,
                           const std::uint64_t* cached) const noexcept {
    std::uint64_t bytes = (bi.large_pages - (metadata_pages_ - zone_.first_page())) << shift_;
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls)
      if (st.inuse_objects[cls] > cached[cls])
        bytes += (st.inuse_objects[cls] - cached[cls]) * slab::class_size(cls);
    return bytes;
  }

  page::CheckReport check_caches() const noexcept {
    page::CheckReport r;
    // Offsets of one class across all slots, sorted to find one object
    // cached twice. Scratch memory from the OS: the engine may be malloc.
    const std::size_t cap_items = std::size_t{cache_.array_slots()} * kMaxCapacity;
    if (cap_items == 0) return r;
    const std::size_t scratch_bytes = (cap_items * 8 + 4095) / 4096 * 4096;
    const auto mem = pal::map(nullptr, scratch_bytes, pal::Prot::read_write,
                              pal::kMapPrivate | pal::kMapAnonymous, -1, 0);
    if (!mem.ok()) return r.fail("check: no memory for the cache scan");
    auto* offs = static_cast<std::uint64_t*>(*mem);
    for (unsigned cls = 0; cls < slab::kClassCount && r.ok; ++cls) {
      std::size_t n = 0;
      for (std::uint32_t s = 0; s < cache_.array_slots() && r.ok; ++s) {
        const ClassArray* a = cache_.array(s, cls);
        const std::uint64_t count = count_of(a->word);
        if (count > class_capacity(cls)) {
          r.fail("cache slot %u class %u: %llu objects, capacity %u", s, cls,
                 static_cast<unsigned long long>(count), class_capacity(cls));
          break;
        }
        if (ops_of(a->word) < count || (ops_of(a->word) - count) % 2 != 0) {
          r.fail("cache slot %u class %u: %llu operations cannot leave %llu objects", s, cls,
                 static_cast<unsigned long long>(ops_of(a->word)),
                 static_cast<unsigned long long>(count));
          break;
        }
        for (std::uint32_t i = 0; i < count; ++i) {
          const std::uint64_t off = a->items[i];
          if (off < arena_off_ || off >= limit() || small_class(off) != cls) {
            r.fail("cache slot %u class %u item %u: offset %#llx is not an object of the class", s,
                   cls, i, static_cast<unsigned long long>(off));
            break;
          }
          const slab::FreeStatus st = slabs_.validate(base_ + off);
          if (st != slab::FreeStatus::ok) {
            r.fail("cache slot %u class %u: object at offset %#llx: %s", s, cls,
                   static_cast<unsigned long long>(off), slab::to_string(st));
            break;
          }
          if (load_key(base_ + off) != key_) {
            r.fail("cache slot %u class %u: object at offset %#llx lacks the cache key", s, cls,
                   static_cast<unsigned long long>(off));
            break;
          }
          offs[n++] = off;
        }
      }
      std::sort(offs, offs + n);
      const auto dup = std::adjacent_find(offs, offs + n);
      if (r.ok && dup != offs + n)
        r.fail("class %u: object at offset %#llx is in two caches", cls,
               static_cast<unsigned long long>(*dup));
    }
    (void)pal::unmap(offs, scratch_bytes);
    return r;
  }

  // ---- reporting

  [[noreturn]] static void report_and_abort(const char* what, const void* p,
                                            const char* why) noexcept {
    char msg[192];
    pal::TextOut out{msg, sizeof(msg)};
    out.printf("mapheap: %s %p: %s\n", what, p, why);
    (void)pal::write_fd(2, msg, out.len < sizeof(msg) ? out.len : sizeof(msg) - 1);
    std::abort();
  }
  [[noreturn]] static void misuse(const void* p, const char* why) noexcept {
    report_and_abort("invalid free of", p, why);
  }
  [[noreturn]] static void corrupt(const void* p, const char* why) noexcept {
    report_and_abort("heap corruption at", p, why);
  }

  EngineOptions options_;
  std::byte* base_ = nullptr;
  std::uint64_t arena_off_ = 0;                  // byte offset of the arena's start
  std::atomic<std::uint64_t> limit_{0};          // ... and of its committed end (grows)
  unsigned shift_ = 12;                      // log2 of the zone's page size
  std::uint32_t key_ = 0;
  bool verify_all_ = false;  // every free fully verified (checked build or EngineOptions::checked)
  CacheMode mode_ = CacheMode::none;
  std::uint64_t id_ = 0;
  std::uint64_t metadata_pages_ = 0;
  // Each class's cache limit (class_limit with options_.cache_floor): how
  // full a push, a refill and the transfer slot may fill its arrays.
  std::array<std::uint16_t, slab::kClassCount> cache_limit_{};
  alignas(64) Lock lock_;
  alignas(64) std::atomic<std::uint32_t> last_decay_{0};
  std::atomic<bool> decaying_{false};
  std::atomic<int> releasing_{0};  // releases running with the lock dropped
  // The engine's event counts, each CPU's together (core::PerCpuCounters).
  enum Count : unsigned {
    kSlowAllocs, kSlowFrees, kFailed, kAllocMisses, kFreeMisses, kDecays,
    kReleased, kInternalPushes, kInternalPops, kGrows, kCounts
  };
  core::PerCpuCounters<kCounts> counts_;
  page::Buddy zone_;
  slab::SlabHeap slabs_;
  FrontCache cache_;
};

}  // namespace mapheap::cache
