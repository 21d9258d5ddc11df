// The slab layer alone (no front cache, no lock) against glibc's malloc in the
// same binary: an allocate/free pair per size, and a batch pattern that keeps
// many objects live. This measures the core the front caches will sit on;
// the engine's fast-path target (issue 3) is for the cached path.
#include <cstdlib>

#include <benchmark/benchmark.h>

#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"
#include "slab/slab.hpp"
#include "support/patterns.hpp"

namespace {

using mapheap::Mapping;
using mapheap::MappingOptions;

struct Heap {
  Mapping mapping = Mapping::create(MappingOptions::anonymous(std::size_t{256} << 20));
  mapheap::page::Buddy zone;
  mapheap::slab::SlabHeap heap;
  Heap() {
    (void)mapheap::page::Buddy::format(mapping.data(), mapping.size(), mapheap::pal::page_size(),
                                       512, zone);
    (void)mapheap::slab::SlabHeap::format(zone, heap);
  }
};

using mapheap::bench::libc_alloc;
using mapheap::bench::libc_free;

void BM_PairSlab(benchmark::State& state) {
  Heap h;
  mapheap::bench::pair_loop(
      state, [&](std::size_t n) { return h.heap.alloc(n); }, [&](void* p) { (void)h.heap.free(p); });
}
void BM_PairGlibc(benchmark::State& state) {
  mapheap::bench::pair_loop(state, libc_alloc, libc_free);
}
BENCHMARK(BM_PairSlab)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4096)->Arg(32768);
BENCHMARK(BM_PairGlibc)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4096)->Arg(32768);

// 1000 objects allocated, then freed in allocation order.
constexpr int kBatch = 1000;
void BM_BatchSlab(benchmark::State& state) {
  Heap h;
  mapheap::bench::batch_loop(
      state, kBatch, [&](std::size_t n) { return h.heap.alloc(n); },
      [&](void* p) { (void)h.heap.free(p); });
}
void BM_BatchGlibc(benchmark::State& state) {
  mapheap::bench::batch_loop(state, kBatch, libc_alloc, libc_free);
}
BENCHMARK(BM_BatchSlab)->Arg(16)->Arg(64)->Arg(256)->Arg(1024);
BENCHMARK(BM_BatchGlibc)->Arg(16)->Arg(64)->Arg(256)->Arg(1024);

}  // namespace

BENCHMARK_MAIN();
