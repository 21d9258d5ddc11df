// The slab layer alone (no front cache, no lock) against glibc's malloc in the
// same binary: an allocate/free pair per size, and a batch pattern that keeps
// many objects live. This measures the core the front caches will sit on;
// the engine's fast-path target (issue 3) is for the cached path.
#include <cstdlib>
#include <vector>

#include <benchmark/benchmark.h>

#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"
#include "slab/slab.hpp"

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

void BM_PairSlab(benchmark::State& state) {
  Heap h;
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = h.heap.alloc(size);
    benchmark::DoNotOptimize(p);
    (void)h.heap.free(p);
  }
}
void BM_PairGlibc(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = std::malloc(size);
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
}
BENCHMARK(BM_PairSlab)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4096)->Arg(32768);
BENCHMARK(BM_PairGlibc)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Arg(4096)->Arg(32768);

// 1000 objects allocated, then freed in allocation order.
constexpr int kBatch = 1000;
void BM_BatchSlab(benchmark::State& state) {
  Heap h;
  const auto size = static_cast<std::size_t>(state.range(0));
  std::vector<void*> v(kBatch);
  for (auto _ : state) {
    for (auto& p : v) p = h.heap.alloc(size);
    for (auto* p : v) (void)h.heap.free(p);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
void BM_BatchGlibc(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  std::vector<void*> v(kBatch);
  for (auto _ : state) {
    for (auto& p : v) p = std::malloc(size);
    for (auto* p : v) std::free(p);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_BatchSlab)->Arg(16)->Arg(64)->Arg(256)->Arg(1024);
BENCHMARK(BM_BatchGlibc)->Arg(16)->Arg(64)->Arg(256)->Arg(1024);

}  // namespace

BENCHMARK_MAIN();
