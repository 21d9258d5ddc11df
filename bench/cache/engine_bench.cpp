// The engine's fast path against glibc's malloc in the same binary, per size
// class, on 1 and 2 threads:
//   Pair   — allocate then free one object: the cache's hit path both ways.
//   Batch  — allocate 256 objects, then free them: the array fills and
//            empties, so refills and drains (the lock) are part of the cost.
// The engine runs in each cache mode (per-CPU with rseq, per-thread, none)
// over one 1 GiB anonymous reservation shared by the threads, as a process
// heap would be. Compare rows of equal size and thread count; the ratio
// engine/glibc is what docs/BENCHMARKS.md records.
#include <cstdlib>

#include <benchmark/benchmark.h>

#include "cache/engine.hpp"
#include "mapheap/mapping.hpp"
#include "support/patterns.hpp"

namespace {

using mapheap::Mapping;
using mapheap::MappingOptions;
using mapheap::cache::CacheMode;
using Engine = mapheap::cache::Engine<mapheap::core::FutexLock>;

// One engine per mode for the whole run (threads of one benchmark share it).
Engine& engine(CacheMode mode) {
  struct Heap {
    Mapping mapping;
    Engine engine;
    explicit Heap(CacheMode m) : mapping(Mapping::create(MappingOptions::anonymous(std::size_t{1} << 30))) {
      mapheap::cache::EngineOptions o;
      o.cache = m;
      if (!engine.format(mapping.data(), mapping.size(), o)) std::abort();
    }
  };
  static Heap per_cpu(CacheMode::per_cpu), per_thread(CacheMode::per_thread),
      none(CacheMode::none);
  switch (mode) {
    case CacheMode::per_cpu: return per_cpu.engine;
    case CacheMode::per_thread: return per_thread.engine;
    default: return none.engine;
  }
}

using mapheap::bench::libc_alloc;
using mapheap::bench::libc_free;

template <CacheMode kMode>
void BM_PairEngine(benchmark::State& state) {
  Engine& e = engine(kMode);
  mapheap::bench::pair_loop(
      state, [&](std::size_t n) { return e.allocate(n); }, [&](void* p) { e.deallocate(p); });
  if (state.thread_index() == 0) state.SetLabel(mapheap::cache::to_string(e.cache_mode()));
}
void BM_PairGlibc(benchmark::State& state) {
  mapheap::bench::pair_loop(state, libc_alloc, libc_free);
}

constexpr int kBatch = 256;
template <CacheMode kMode>
void BM_BatchEngine(benchmark::State& state) {
  Engine& e = engine(kMode);
  mapheap::bench::batch_loop(
      state, kBatch, [&](std::size_t n) { return e.allocate(n); },
      [&](void* p) { e.deallocate(p); });
}
void BM_BatchGlibc(benchmark::State& state) {
  mapheap::bench::batch_loop(state, kBatch, libc_alloc, libc_free);
}

// One size per group of classes, from the 8-byte class to the largest.
void Sizes(benchmark::internal::Benchmark* b) {
  for (long n : {8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768}) b->Arg(n);
}

BENCHMARK(BM_PairGlibc)->Apply(Sizes)->Threads(1)->Threads(2);
BENCHMARK_TEMPLATE(BM_PairEngine, CacheMode::per_cpu)->Apply(Sizes)->Threads(1)->Threads(2);
BENCHMARK_TEMPLATE(BM_PairEngine, CacheMode::per_thread)->Apply(Sizes)->Threads(1)->Threads(2);
BENCHMARK_TEMPLATE(BM_PairEngine, CacheMode::none)->Arg(64)->Threads(1)->Threads(2);
BENCHMARK(BM_BatchGlibc)->Arg(16)->Arg(256)->Arg(4096)->Threads(1)->Threads(2);
BENCHMARK_TEMPLATE(BM_BatchEngine, CacheMode::per_cpu)
    ->Arg(16)
    ->Arg(256)
    ->Arg(4096)
    ->Threads(1)
    ->Threads(2);
BENCHMARK_TEMPLATE(BM_BatchEngine, CacheMode::per_thread)
    ->Arg(16)
    ->Arg(256)
    ->Arg(4096)
    ->Threads(1)
    ->Threads(2);

}  // namespace

BENCHMARK_MAIN();
