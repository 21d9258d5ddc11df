// heap/process_heap.cpp — creating the process heap without malloc.
#include "heap/process_heap.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>

#include <pthread.h>
#include <signal.h>

#include <cstdlib>

#include "core/journal.hpp"
#include "pal/pal.hpp"

namespace mapheap::heap {

namespace {

constexpr std::size_t kHuge = std::size_t{2} << 20;
// Tried in turn: an address-space limit (ulimit -v, a sanitizer) may refuse
// the larger ones.
constexpr std::size_t kReserveSizes[] = {std::size_t{64} << 30, std::size_t{16} << 30,
                                         std::size_t{4} << 30, std::size_t{1} << 30};
constexpr std::size_t kInitialArena = std::size_t{32} << 20;

enum State : int { kNone, kCreating, kReady, kFailed };
std::atomic<int> g_state{kNone};
std::atomic<int> g_creator{0};
alignas(64) std::byte g_engine[sizeof(ProcessEngine)];
HeapOptions g_options;
int g_stats_fd = 2;  // a copy of standard error: programs may close theirs before exit
std::byte* g_base = nullptr;
std::size_t g_reserved = 0;
std::size_t g_usable = 0;  // read-write prefix; changed only under the engine's lock

std::atomic<std::size_t> g_boot_used{0};

std::size_t grow_reservation(void*, std::size_t want) noexcept {
  if (want > g_reserved) want = g_reserved;
  if (want > g_usable &&
      pal::protect(g_base + g_usable, want - g_usable, pal::Prot::read_write).ok())
    g_usable = want;
  return g_usable;
}

bool release_pages(void*, std::byte* addr, std::size_t bytes) noexcept {
  return pal::advise(addr, bytes, pal::Advice::dontneed).ok();
}

// thp=large: a large run of 2 MiB or more is eligible for transparent huge
// pages (its 2 MiB-aligned part; runs that large are whole buddy blocks and
// the arena is 2 MiB aligned). The advice stays on the range after the run
// is freed; decay's MADV_DONTNEED splits a huge page it releases part of.
void advise_huge(void*, void* addr, std::size_t bytes) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const std::uintptr_t start = (a + kHuge - 1) & ~(kHuge - 1), end = (a + bytes) & ~(kHuge - 1);
  if (end > start)
    (void)pal::advise(reinterpret_cast<void*>(start), end - start, pal::Advice::hugepage);
}

ProcessEngine* engine() noexcept {
  return std::launder(reinterpret_cast<ProcessEngine*>(g_engine));
}

// ---- the decay thread
//
// Decay runs from the allocator's slow paths, so a program that stops
// allocating would keep its free memory resident for good. The engine calls
// decay_wake() after each free slow path, where memory for decay comes
// from. The first call starts a thread (outside any lock of the heap, with
// every signal blocked so that it never takes a signal meant for the
// program) that runs a decay step every half decay period while there is
// something to release. With nothing to release it parks on a futex until a
// free slow path wakes it (or eight decay periods pass); once woken it waits
// half a period before it looks, so wakes cost at most one system call per
// half period. A forked child starts its own thread.
enum DecayerState : std::uint32_t { kDecayerNone, kDecayerStarting, kDecayerRunning, kDecayerOff };
std::atomic<std::uint32_t> g_decayer{kDecayerNone};
std::atomic<std::uint32_t> g_decay_seq{0};  // bumped to wake the thread
std::atomic<bool> g_decayer_parked{false};

void* decay_main(void*) {
  (void)::pthread_setname_np(::pthread_self(), "mapheap-decay");
  const std::int64_t period_ns =
      static_cast<std::int64_t>(std::max<std::uint32_t>(g_options.decay_ms / 2, 1)) * 1000000;
  for (;;) {
    // Parked before looking: a free that the look misses sees the flag and
    // wakes the thread (its seq bump makes the wait return at once).
    g_decayer_parked.store(true, std::memory_order_seq_cst);
    const std::uint32_t seq = g_decay_seq.load(std::memory_order_seq_cst);
    if (!engine()->decay_pending())
      (void)pal::futex_wait(&g_decay_seq, seq, 16 * period_ns, false);
    g_decayer_parked.store(false, std::memory_order_seq_cst);
    const std::uint32_t awake = g_decay_seq.load(std::memory_order_relaxed);
    (void)pal::futex_wait(&g_decay_seq, awake, period_ns, false);  // half a period
    (void)engine()->decay();
  }
  return nullptr;
}

void decay_wake(void*) noexcept {
  std::uint32_t s = g_decayer.load(std::memory_order_acquire);
  if (s == kDecayerRunning) {
    if (g_decayer_parked.load(std::memory_order_seq_cst) &&
        g_decayer_parked.exchange(false, std::memory_order_seq_cst)) {
      g_decay_seq.fetch_add(1, std::memory_order_seq_cst);
      (void)pal::futex_wake(&g_decay_seq, 1, false);
    }
    return;
  }
  if (s != kDecayerNone ||
      !g_decayer.compare_exchange_strong(s, kDecayerStarting, std::memory_order_acq_rel))
    return;
  // pthread_create allocates (its bookkeeping): this heap serves it, with
  // no lock of ours held here.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  ::pthread_attr_init(&attr);
  ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  ::pthread_attr_setstacksize(&attr, 64 << 10);
  pthread_t t;
  const bool ok = ::pthread_create(&t, &attr, decay_main, nullptr) == 0;
  ::pthread_attr_destroy(&attr);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  g_decayer.store(ok ? kDecayerRunning : kDecayerOff, std::memory_order_release);
}

void before_fork() noexcept {
  engine()->before_fork();
}
void after_fork_parent() noexcept {
  engine()->after_fork(false);
}
void after_fork_child() noexcept {
  engine()->after_fork(true);
  // The thread did not come along; the child starts its own when needed.
  if (g_decayer.load(std::memory_order_relaxed) != kDecayerOff) {
    g_decayer.store(kDecayerNone, std::memory_order_relaxed);
    g_decayer_parked.store(false, std::memory_order_relaxed);
  }
}

void warn(const char* line) noexcept {
  (void)pal::write_fd(2, line, std::strlen(line));
  (void)pal::write_fd(2, "\n", 1);
}

bool create() noexcept {
  parse_options(std::getenv("MAPHEAP_OPTIONS"), g_options, warn);
  if (g_options.stats != StatsMode::off && g_options.stats_file[0] == '\0') {
    const auto fd = pal::dup_fd(2);
    if (fd.ok()) g_stats_fd = *fd;
  }
  for (std::size_t size : kReserveSizes) {
    const auto r = pal::reserve(size, kHuge);
    if (!r.ok()) continue;
    auto* base = static_cast<std::byte*>(*r);
    // Committed at first: the header and page map, then the first arena.
    const std::size_t map = (size / pal::page_size()) * sizeof(page::PageDesc) + (64 << 10);
    const std::size_t initial = std::min(size, (map + kInitialArena + kHuge - 1) / kHuge * kHuge);
    if (!pal::protect(base, initial, pal::Prot::read_write).ok()) {
      (void)pal::unmap(base, size);
      continue;
    }
    g_base = base;
    g_reserved = size;
    g_usable = initial;
    cache::EngineOptions o;
    o.committed = initial;
    o.grow = grow_reservation;
    o.release = release_pages;
    o.decay_ms = g_options.decay_ms;
    if (g_options.decay_thread) o.decay_wake = decay_wake;
    o.checked = g_options.checked;
    if (g_options.thp == ThpMode::large) o.huge = advise_huge;
    // always: the whole reservation; never: refused even under a system-wide
    // "always" setting. (Advice failures only cost speed.)
    if (g_options.thp != ThpMode::large)
      (void)pal::advise(base, size,
                        g_options.thp == ThpMode::always ? pal::Advice::hugepage
                                                         : pal::Advice::nohugepage);
    o.cache = g_options.cache;
    auto* e = new (g_engine) ProcessEngine;
    if (e->format(base, size, o)) {
      // (pthread_atfork may allocate: the bootstrap serves that.)
      (void)::pthread_atfork(before_fork, after_fork_parent, after_fork_child);
      if (g_options.verbose) {
        char line[160];
        pal::TextOut t{line, sizeof(line)};
        t.printf("mapheap: process heap of %zu GiB reserved, %s caches", size >> 30,
                 cache::to_string(e->cache_mode()));
        warn(line);
      }
      return true;
    }
    e->~ProcessEngine();
    (void)pal::unmap(base, size);
  }
  if (g_options.verbose) warn("mapheap: no process heap: every reservation size was refused");
  return false;
}

}  // namespace

const HeapOptions& process_heap_options() noexcept {
  return g_options;
}

void report_statistics() noexcept {
  if (g_options.stats == StatsMode::off || g_state.load(std::memory_order_acquire) != kReady) return;
  static char text[256 << 10];  // static: the report must not allocate
  ProcessEngine* e = engine();
  std::size_t n;
  if (g_options.stats == StatsMode::json) {
    n = e->render_json(text, sizeof(text) - 1);
    if (n < sizeof(text) - 1) text[n++] = '\n';
  } else {
    const cache::EngineCounters c = e->counters();
    pal::TextOut t{text, sizeof(text)};
    t.printf("mapheap: %lld allocations, %lld frees, %lld failed, %lld bytes in use\n",
             static_cast<long long>(c.allocations), static_cast<long long>(c.frees),
             static_cast<long long>(c.failed_allocations), static_cast<long long>(c.bytes_in_use));
    t.printf("mapheap: cache hits %lld/%lld (allocate/free), misses %lld/%lld; %lld decay steps, "
             "%lld pages released, %lld grows\n",
             static_cast<long long>(c.alloc_hits), static_cast<long long>(c.free_hits),
             static_cast<long long>(c.alloc_misses), static_cast<long long>(c.free_misses),
             static_cast<long long>(c.decays), static_cast<long long>(c.released_pages),
             static_cast<long long>(c.grows));
    n = t.len < sizeof(text) ? t.len : sizeof(text) - 1;
    n += e->render_buddyinfo(text + n, sizeof(text) - n);
    if (n < sizeof(text)) n += e->render_slabinfo(text + n, sizeof(text) - n);
    if (n > sizeof(text) - 1) n = sizeof(text) - 1;
  }
  int fd = g_stats_fd;
  if (g_options.stats_file[0] != '\0') {
    const auto r = pal::open_file(g_options.stats_file,
                                  pal::kOpenWriteOnly | pal::kOpenCreate | pal::kOpenTruncate, 0644);
    if (!r.ok()) {
      warn("mapheap: cannot open the stats file; statistics go to standard error");
    } else {
      fd = *r;
    }
  }
  (void)pal::write_fd(fd, text, n);
  if (fd != g_stats_fd) (void)pal::close_fd(fd);
}

namespace detail {

std::atomic<ProcessEngine*> g_ready{nullptr};
// Bootstrap: 256 KiB, each block preceded by its size.
alignas(64) std::byte g_boot[kBootBytes];

ProcessEngine* process_engine_slow() noexcept {
  int s = g_state.load(std::memory_order_acquire);
  if (s == kReady) return engine();
  if (s == kNone && g_state.compare_exchange_strong(s, kCreating, std::memory_order_acq_rel)) {
    g_creator.store(pal::thread_id(), std::memory_order_relaxed);
    // Its first use may come inside a shared heap's critical section (a
    // constructor there calling malloc): formatting it journals nothing.
    const core::JournalScope none(nullptr);
    const bool ok = create();
    g_state.store(ok ? kReady : kFailed, std::memory_order_release);
    if (ok) g_ready.store(engine(), std::memory_order_release);
    return ok ? engine() : nullptr;
  }
  if (s == kCreating && g_creator.load(std::memory_order_relaxed) == pal::thread_id())
    return nullptr;  // called from inside create(): the bootstrap serves it
  while ((s = g_state.load(std::memory_order_acquire)) == kCreating) pal::cpu_relax();
  return s == kReady ? engine() : nullptr;
}

}  // namespace detail

void* bootstrap_allocate(std::size_t size, std::size_t align) noexcept {
  if (align < 16) align = 16;
  std::size_t at = g_boot_used.load(std::memory_order_relaxed), start;
  do {
    start = (at + 16 + align - 1) / align * align;  // room for the size before it
    if (start + size > detail::kBootBytes || size > detail::kBootBytes) return nullptr;
  } while (!g_boot_used.compare_exchange_weak(at, start + size, std::memory_order_relaxed));
  std::memcpy(detail::g_boot + start - sizeof(std::size_t), &size, sizeof(size));
  return detail::g_boot + start;
}

std::size_t bootstrap_usable_size(const void* p) noexcept {
  std::size_t n;
  std::memcpy(&n, static_cast<const std::byte*>(p) - sizeof(n), sizeof(n));
  return n;
}

std::size_t process_heap_reserved() noexcept {
  return g_state.load(std::memory_order_acquire) == kReady ? g_reserved : 0;
}

}  // namespace mapheap::heap
