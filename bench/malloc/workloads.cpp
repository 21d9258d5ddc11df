// bench/malloc/workloads.cpp — the allocator stress patterns `mapheap bench
// malloc` times under each allocator. This program links nothing of mapheap:
// it calls malloc/free/realloc (and new/delete through the standard library),
// and the allocator under test comes in by LD_PRELOAD, or glibc's without it.
//
//   malloc_workloads WORKLOAD [--threads N] [--scale X] [--idle-ms N] [--result FILE]
//
// Every workload is deterministic (seeded), touches the memory it gets (an
// allocator that hands out memory it never has to produce would otherwise
// look fast), checks what it reads back, and writes "key value" lines of its
// own measurements to --result (the runner measures wall time and peak RSS
// from outside). A wrong byte read back exits with status 2.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/rng.hpp"

namespace {

struct Params {
  unsigned threads = 2;
  double scale = 1.0;
  unsigned idle_ms = 4000;
  const char* result = nullptr;
};

using mapheap::bench::Rng;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "malloc_workloads: %s\n", what);
  std::exit(2);
}

void* checked_malloc(std::size_t n) {
  void* p = std::malloc(n);
  if (p == nullptr) fail("malloc returned NULL");
  return p;
}

// Writes a tag at the first byte and at every 4 KiB of the object, so that
// every page is touched; check() reads them back.
void stamp(void* p, std::size_t n, std::uint8_t tag) {
  auto* b = static_cast<std::uint8_t*>(p);
  for (std::size_t i = 0; i < n; i += 4096) b[i] = tag;
  b[n - 1] = tag;
}
void check(const void* p, std::size_t n, std::uint8_t tag) {
  const auto* b = static_cast<const std::uint8_t*>(p);
  if (b[0] != tag || b[n - 1] != tag) fail("an object did not keep its contents");
}

std::size_t iterations(const Params& p, double base) {
  return static_cast<std::size_t>(std::max(1.0, base * p.scale));
}

template <class F>
void run_threads(unsigned n, F f) {
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < n; ++t) ts.emplace_back(f, t);
  for (auto& t : ts) t.join();
}

// Resident set size now, from /proc/self/statm (no allocation).
std::size_t rss_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0, resident = 0;
  const int got = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

// ---- the workloads

// Each thread allocates a batch of small objects (16-256 B), then frees them
// in a shuffled order, again and again: the thread-local fast path.
void threads_small(const Params& p) {
  const std::size_t rounds = iterations(p, 12000);
  run_threads(p.threads, [&](unsigned t) {
    Rng rng(t + 1);
    constexpr std::size_t kBatch = 1000;
    std::vector<void*> v(kBatch);
    std::vector<std::uint32_t> order(kBatch);
    for (std::uint32_t i = 0; i < kBatch; ++i) order[i] = i;
    for (std::size_t r = 0; r < rounds; ++r) {
      for (auto& q : v) {
        q = checked_malloc(rng.between(16, 256));
        *static_cast<std::uint8_t*>(q) = static_cast<std::uint8_t>(r);
      }
      for (std::size_t i = kBatch; i-- > 1;) std::swap(order[i], order[rng.below(i + 1)]);
      for (std::uint32_t i : order) {
        if (*static_cast<std::uint8_t*>(v[i]) != static_cast<std::uint8_t>(r)) fail("lost a byte");
        std::free(v[i]);
      }
    }
  });
}

// A producer allocates and fills objects; a consumer on another thread reads
// and frees them, through a single-producer single-consumer ring: every free
// is remote.
void producer_consumer(const Params& p) {
  const std::size_t total = iterations(p, 1'500'000);
  const unsigned pairs = std::max(1u, p.threads / 2);
  run_threads(pairs, [&](unsigned pair) {
    constexpr std::size_t kRing = 4096;
    std::vector<std::atomic<void*>> ring(kRing);
    for (auto& r : ring) r.store(nullptr, std::memory_order_relaxed);
    std::thread consumer([&] {
      for (std::size_t i = 0; i < total; ++i) {
        auto& slot = ring[i % kRing];
        void* q;
        while ((q = slot.load(std::memory_order_acquire)) == nullptr) std::this_thread::yield();
        slot.store(nullptr, std::memory_order_relaxed);
        auto* b = static_cast<std::uint8_t*>(q);
        if (b[0] != static_cast<std::uint8_t>(i)) fail("consumer read a wrong byte");
        std::free(q);
      }
    });
    Rng rng(pair + 7);
    for (std::size_t i = 0; i < total; ++i) {
      const std::size_t n = rng.between(16, 512);
      auto* q = static_cast<std::uint8_t*>(checked_malloc(n));
      std::memset(q, static_cast<int>(i & 0xff), std::min<std::size_t>(n, 64));
      auto& slot = ring[i % kRing];
      while (slot.load(std::memory_order_acquire) != nullptr) std::this_thread::yield();
      slot.store(q, std::memory_order_release);
    }
    consumer.join();
  });
}

// larson: a server's churn. Each thread replaces random objects of its slot
// array (16-1024 B); when its round is over it hands the array, objects and
// all, to a new thread and exits, so objects outlive the thread that made
// them and are freed by another.
void larson(const Params& p) {
  constexpr std::size_t kSlots = 2000;
  const std::size_t generations = 12;
  const std::size_t per_round = iterations(p, 1'200'000);
  struct Arena {
    std::vector<void*> slots;
    std::vector<std::uint16_t> sizes;
  };
  std::vector<Arena> arenas(p.threads);
  Rng init(99);
  for (auto& a : arenas) {
    a.slots.resize(kSlots);
    a.sizes.resize(kSlots);
    for (std::size_t i = 0; i < kSlots; ++i) {
      a.sizes[i] = static_cast<std::uint16_t>(init.between(16, 1024));
      a.slots[i] = checked_malloc(a.sizes[i]);
      stamp(a.slots[i], a.sizes[i], 0x5a);
    }
  }
  for (std::size_t g = 0; g < generations; ++g) {
    run_threads(p.threads, [&](unsigned t) {
      Arena& a = arenas[t];
      Rng rng(g * 131 + t + 1);
      for (std::size_t i = 0; i < per_round; ++i) {
        const std::size_t k = rng.below(kSlots);
        check(a.slots[k], a.sizes[k], 0x5a);
        std::free(a.slots[k]);
        a.sizes[k] = static_cast<std::uint16_t>(rng.between(16, 1024));
        a.slots[k] = checked_malloc(a.sizes[k]);
        stamp(a.slots[k], a.sizes[k], 0x5a);
      }
    });
    // The arrays change hands: thread t's objects go to thread t+1's successor.
    std::rotate(arenas.begin(), arenas.begin() + 1, arenas.end());
  }
  for (auto& a : arenas)
    for (void* q : a.slots) std::free(q);
}

// Cache-line ping-pong probes (after Hoard's cache-thrash and cache-scratch).
// thrash: each thread allocates an 8-byte object, writes it many times,
// frees it, repeats: an allocator that hands two threads neighbouring objects
// makes their writes fight over one cache line. scratch: the main thread
// allocates the objects first and hands one to each thread, which frees it
// and then works on its own: the same trap, set by remote frees.
void false_sharing(const Params& p) {
  const std::size_t rounds = iterations(p, 600'000);
  constexpr std::size_t kWrites = 500;
  auto work = [&](unsigned t, void* given) {
    if (given != nullptr) std::free(given);
    for (std::size_t r = 0; r < rounds; ++r) {
      auto* q = static_cast<volatile std::uint8_t*>(checked_malloc(8));
      for (std::size_t w = 0; w < kWrites; ++w) q[w & 7] = static_cast<std::uint8_t>(q[0] + t + 1);
      std::free(const_cast<std::uint8_t*>(q));
    }
  };
  run_threads(p.threads, [&](unsigned t) { work(t, nullptr); });  // thrash
  std::vector<void*> given(p.threads);
  for (auto& g : given) g = checked_malloc(8);
  run_threads(p.threads, [&](unsigned t) { work(t, given[t]); });  // scratch
}

// Sizes drawn from what real programs ask for: most objects small, a long
// tail to megabytes.
std::size_t real_size(Rng& rng) {
  const std::size_t r = rng.below(10000);
  if (r < 5500) return rng.between(8, 64);
  if (r < 8000) return rng.between(65, 256);
  if (r < 9200) return rng.between(257, 1024);
  if (r < 9800) return rng.between(1025, 8192);
  if (r < 9950) return rng.between(8193, 65536);
  if (r < 9995) return rng.between(65537, 1 << 20);
  return rng.between((1 << 20) + 1, 4 << 20);
}

// Each thread keeps a pool of live objects of real-program sizes and
// replaces random ones; every page of each object is touched.
void size_distribution(const Params& p) {
  const std::size_t steps = iterations(p, 1'500'000);
  run_threads(p.threads, [&](unsigned t) {
    constexpr std::size_t kLive = 20000;
    Rng rng(t + 1000);
    std::vector<void*> live(kLive, nullptr);
    std::vector<std::uint32_t> sizes(kLive, 0);
    for (std::size_t i = 0; i < steps; ++i) {
      const std::size_t k = rng.below(kLive);
      if (live[k] != nullptr) {
        check(live[k], sizes[k], static_cast<std::uint8_t>(k));
        std::free(live[k]);
      }
      sizes[k] = static_cast<std::uint32_t>(real_size(rng));
      live[k] = checked_malloc(sizes[k]);
      stamp(live[k], sizes[k], static_cast<std::uint8_t>(k));
    }
    for (void* q : live) std::free(q);
  });
}

// Growth by realloc: strings appended to in small steps up to 64 KiB, and
// vectors doubled up to 16 MiB, interleaved so that neighbours get in the way.
void realloc_growth(const Params& p) {
  const std::size_t steps = iterations(p, 1'000'000);
  run_threads(p.threads, [&](unsigned t) {
    Rng rng(t + 31);
    constexpr std::size_t kStrings = 1000;
    std::vector<std::uint8_t*> s(kStrings, nullptr);
    std::vector<std::size_t> len(kStrings, 0);
    for (std::size_t i = 0; i < steps; ++i) {
      const std::size_t k = rng.below(kStrings);
      const std::size_t add = rng.between(1, 64);
      if (len[k] + add > (64 << 10)) {
        std::free(s[k]);
        s[k] = nullptr;
        len[k] = 0;
        continue;
      }
      auto* q = static_cast<std::uint8_t*>(std::realloc(s[k], len[k] + add));
      if (q == nullptr) fail("realloc returned NULL");
      if (len[k] != 0 && q[len[k] - 1] != static_cast<std::uint8_t>(k)) fail("realloc lost bytes");
      std::memset(q + len[k], static_cast<int>(k & 0xff), add);
      s[k] = q;
      len[k] += add;
    }
    for (auto* q : s) std::free(q);
    const std::size_t vectors = iterations(p, 30);
    for (std::size_t v = 0; v < vectors; ++v) {
      std::size_t n = 64;
      auto* q = static_cast<std::uint8_t*>(checked_malloc(n));
      stamp(q, n, 0x77);
      while (n < (16 << 20)) {
        n *= 2;
        q = static_cast<std::uint8_t*>(std::realloc(q, n));
        if (q == nullptr) fail("realloc returned NULL");
        check(q, n / 2, 0x77);
        stamp(q, n, 0x77);
      }
      std::free(q);
    }
  });
}

// Large blocks, 256 KiB to 32 MiB (each power-of-two band equally likely), allocated, written page by
// page and freed in a loop, four alive at a time.
void large(const Params& p) {
  const std::size_t steps = iterations(p, 1500);
  run_threads(p.threads, [&](unsigned t) {
    Rng rng(t + 555);
    constexpr std::size_t kAlive = 4;
    void* ring[kAlive] = {};
    std::size_t sizes[kAlive] = {};
    for (std::size_t i = 0; i < steps; ++i) {
      const std::size_t k = i % kAlive;
      if (ring[k] != nullptr) {
        check(ring[k], sizes[k], static_cast<std::uint8_t>(k + 1));
        std::free(ring[k]);
      }
      const unsigned shift = static_cast<unsigned>(rng.between(18, 24));  // 256 KiB .. 16 MiB
      sizes[k] = (std::size_t{1} << shift) + rng.below(std::size_t{1} << shift);
      ring[k] = checked_malloc(sizes[k]);
      stamp(ring[k], sizes[k], static_cast<std::uint8_t>(k + 1));
    }
    for (void* q : ring) std::free(q);
  });
}

// A program that builds up ~256 MiB, frees 90% of it (scattered, so that
// free pages sit among live objects) and then idles: the RSS it keeps after
// the idle time is the measure.
void idle_decay(const Params& p) {
  Rng rng(4242);
  std::vector<void*> objs;
  std::size_t total = 0;
  const std::size_t target = static_cast<std::size_t>(256.0 * p.scale * (1 << 20));
  while (total < target) {
    std::size_t n = real_size(rng);
    if (n > (1 << 20)) n = 1 << 20;
    void* q = checked_malloc(n);
    stamp(q, n, 0x33);
    objs.push_back(q);
    total += n;
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < objs.size(); ++i) {
    if (rng.below(10) == 0) {
      kept++;
      continue;
    }
    std::free(objs[i]);
    objs[i] = nullptr;
  }
  const std::size_t after_free = rss_bytes();
  std::this_thread::sleep_for(std::chrono::milliseconds(p.idle_ms));
  const std::size_t after_idle = rss_bytes();
  if (p.result != nullptr) {
    FILE* f = std::fopen(p.result, "w");
    if (f == nullptr) fail("cannot write the result file");
    std::fprintf(f, "built_bytes %zu\nkept_objects %zu\nrss_after_free %zu\nrss_after_idle %zu\n",
                 total, kept, after_free, after_idle);
    std::fclose(f);
  }
  for (void* q : objs) std::free(q);
}

struct Workload {
  const char* name;
  void (*run)(const Params&);
};
constexpr Workload kWorkloads[] = {
    {"threads-small", threads_small}, {"producer-consumer", producer_consumer},
    {"larson", larson},               {"false-sharing", false_sharing},
    {"size-distribution", size_distribution}, {"realloc-growth", realloc_growth},
    {"large", large},                 {"idle-decay", idle_decay},
};

int usage() {
  std::fprintf(stderr,
               "usage: malloc_workloads WORKLOAD [--threads N] [--scale X] [--idle-ms N] "
               "[--result FILE]\nworkloads:");
  for (const auto& w : kWorkloads) std::fprintf(stderr, " %s", w.name);
  std::fprintf(stderr, "\n");
  return 64;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string_view name = argv[1];
  if (name == "--list") {
    for (const auto& w : kWorkloads) std::printf("%s\n", w.name);
    return 0;
  }
  Params p;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string_view opt = argv[i];
    char* end = nullptr;
    if (opt == "--threads") {
      p.threads = static_cast<unsigned>(std::strtoul(argv[i + 1], &end, 10));
    } else if (opt == "--scale") {
      p.scale = std::strtod(argv[i + 1], &end);
    } else if (opt == "--idle-ms") {
      p.idle_ms = static_cast<unsigned>(std::strtoul(argv[i + 1], &end, 10));
    } else if (opt == "--result") {
      p.result = argv[i + 1];
      end = argv[i + 1] + std::strlen(argv[i + 1]);
    } else {
      std::fprintf(stderr, "malloc_workloads: unknown option %s\n", argv[i]);
      return usage();
    }
    if (end == nullptr || *end != '\0') {
      std::fprintf(stderr, "malloc_workloads: bad value for %s: %s\n", argv[i], argv[i + 1]);
      return usage();
    }
  }
  if ((argc - 2) % 2 != 0 || p.threads == 0 || p.threads > 1024 || !(p.scale > 0)) return usage();
  for (const auto& w : kWorkloads) {
    if (name == w.name) {
      w.run(p);
      return 0;
    }
  }
  std::fprintf(stderr, "malloc_workloads: unknown workload %s\n", argv[1]);
  return usage();
}
