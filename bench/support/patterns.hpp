// bench/support/patterns.hpp — the allocation patterns every allocator
// benchmark here measures, over any allocator given as two callables, so that
// mapheap and glibc run the very same loop.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <vector>

#include <benchmark/benchmark.h>

namespace mapheap::bench {

// The C library's allocator, as the baseline callables.
inline void* libc_alloc(std::size_t n) {
  return std::malloc(n);
}
inline void libc_free(void* p) {
  std::free(p);
}

// Allocate one object of state.range(0) bytes, free it, repeat.
template <class Alloc, class Free>
void pair_loop(benchmark::State& state, Alloc alloc, Free release) {
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = alloc(size);
    benchmark::DoNotOptimize(p);
    release(p);
  }
}

// Allocate `batch` objects, then free them in allocation order, repeat.
template <class Alloc, class Free>
void batch_loop(benchmark::State& state, int batch, Alloc alloc, Free release) {
  const auto size = static_cast<std::size_t>(state.range(0));
  std::vector<void*> v(static_cast<std::size_t>(batch));
  for (auto _ : state) {
    for (auto& p : v) p = alloc(size);
    benchmark::DoNotOptimize(v.data());
    for (auto* p : v) release(p);
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

}  // namespace mapheap::bench
