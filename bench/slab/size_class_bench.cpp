// What a size-class lookup costs: class_of over a mix of request sizes
// (throughput, and latency when each lookup waits for the one before),
// class_of for single sizes on each of its two paths, class_for for aligned
// requests, and object_index against the division it replaces.
//
// The mix: 4096 sizes drawn once with a fixed seed, 40% in [1, 64],
// 30% in [65, 256], 20% in [257, 1024], 8% in [1025, 8192] and 2% in
// [8193, 32768] (uniform within each band). Small requests dominate real
// programs; the 10% above 1 KiB keep the branch between the table and the
// formula unpredictable. 4096 sizes fit L1 with room, so the figure is the
// lookup and not the memory under it.
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "slab/size_class.hpp"

namespace {

using mapheap::slab::class_for;
using mapheap::slab::class_of;
using mapheap::slab::class_size;
using mapheap::slab::ClassIndex;
using mapheap::slab::object_index;

constexpr std::size_t kMix = 4096;  // a power of two: the loops index with a mask

std::vector<std::uint32_t> make_mix() {
  std::mt19937 rng(20240601);
  struct Band {
    unsigned percent;
    std::uint32_t lo, hi;
  };
  const Band bands[] = {
      {40, 1, 64}, {30, 65, 256}, {20, 257, 1024}, {8, 1025, 8192}, {2, 8193, 32768}};
  std::uniform_int_distribution<unsigned> pick(0, 99);
  std::vector<std::uint32_t> sizes(kMix);
  for (auto& s : sizes) {
    unsigned r = pick(rng);
    for (const Band& b : bands) {
      if (r < b.percent) {
        s = std::uniform_int_distribution<std::uint32_t>(b.lo, b.hi)(rng);
        break;
      }
      r -= b.percent;
    }
  }
  return sizes;
}

std::vector<std::uint32_t> make_uniform() {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> d(1, 32768);
  std::vector<std::uint32_t> sizes(kMix);
  for (auto& s : sizes) s = d(rng);
  return sizes;
}

// The loop alone: read a size and fold it in. Subtract from the others.
void BM_LoopBaseline(benchmark::State& state) {
  const auto sizes = make_mix();
  std::size_t i = 0;
  unsigned sum = 0;
  for (auto _ : state) {
    sum += sizes[i++ & (kMix - 1)];
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LoopBaseline);

// Independent lookups: how many the core retires per second.
void run_throughput(benchmark::State& state, const std::vector<std::uint32_t>& sizes) {
  std::size_t i = 0;
  unsigned sum = 0;
  for (auto _ : state) {
    sum += class_of(sizes[i++ & (kMix - 1)]);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations());
}
void BM_ClassOfMix(benchmark::State& state) {
  run_throughput(state, make_mix());
}
BENCHMARK(BM_ClassOfMix);
void BM_ClassOfUniform(benchmark::State& state) {
  run_throughput(state, make_uniform());
}
BENCHMARK(BM_ClassOfUniform);

// Dependent lookups: the next size's index comes from this lookup's class, so
// each one waits for the last (what malloc's fast path sees: class_of sits on
// the path from the size to the cache slot).
void BM_ClassOfMixLatency(benchmark::State& state) {
  const auto sizes = make_mix();
  std::size_t i = 0;
  for (auto _ : state) {
    const ClassIndex c = class_of(sizes[i & (kMix - 1)]);
    i += c + 1;
    benchmark::DoNotOptimize(i);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ClassOfMixLatency);

// The dependent chain without the lookup (a load and two adds): subtract it
// from BM_ClassOfMixLatency for class_of's own latency.
void BM_LoopBaselineLatency(benchmark::State& state) {
  const auto sizes = make_mix();
  std::size_t i = 0;
  for (auto _ : state) {
    i += (sizes[i & (kMix - 1)] & 63) + 1;
    benchmark::DoNotOptimize(i);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LoopBaselineLatency);

// One size over and over: each path with a perfectly predicted branch.
void BM_ClassOfFixed(benchmark::State& state) {
  std::size_t n = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(n);
    ClassIndex c = class_of(n);
    benchmark::DoNotOptimize(c);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ClassOfFixed)->Arg(24)->Arg(200)->Arg(1000)->Arg(5000)->Arg(30000);

// Aligned requests (posix_memalign, aligned new): the mix at 64-byte alignment.
void BM_ClassForMixAlign64(benchmark::State& state) {
  const auto sizes = make_mix();
  std::size_t i = 0;
  unsigned sum = 0;
  for (auto _ : state) {
    sum += class_for(sizes[i++ & (kMix - 1)], 64);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ClassForMixAlign64);

// Finding an object's index in its slab (free path): reciprocal multiply
// versus the hardware divide it replaces, over the mix's classes.
template <bool kDivide>
void BM_ObjectIndex(benchmark::State& state) {
  const auto sizes = make_mix();
  std::vector<ClassIndex> cls(kMix);
  std::vector<std::uint32_t> off(kMix);
  std::mt19937 rng(3);
  for (std::size_t k = 0; k < kMix; ++k) {
    cls[k] = class_of(sizes[k]);
    off[k] = static_cast<std::uint32_t>(class_size(cls[k]) * (rng() % 8));
  }
  std::size_t i = 0;
  std::uint64_t sum = 0;
  for (auto _ : state) {
    const std::size_t k = i++ & (kMix - 1);
    if constexpr (kDivide) {
      sum += off[k] / class_size(cls[k]);
    } else {
      sum += object_index(cls[k], off[k]);
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ObjectIndex<false>)->Name("BM_ObjectIndexReciprocal");
BENCHMARK(BM_ObjectIndex<true>)->Name("BM_ObjectIndexDivide");

}  // namespace

BENCHMARK_MAIN();
