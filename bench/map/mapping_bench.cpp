// What a Mapping costs: creating one per backing, faulting its pages in (with
// and without transparent huge pages), growing it, and giving pages back.
// These are the fixed costs every heap built on a Mapping pays.
#include <unistd.h>

#include <cstring>
#include <string>

#include <benchmark/benchmark.h>

#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"

namespace {

using mapheap::Backing;
using mapheap::HugePolicy;
using mapheap::Mapping;
using mapheap::MappingOptions;
using mapheap::Sharing;

// Built by appending: GCC 12 at -O3 gives a false -Wrestrict on
// `"literal" + std::string` (GCC bug 105651).
std::string scratch(const char* prefix, const char* suffix = "") {
  std::string s(prefix);
  s.append("mapheap-bench-").append(std::to_string(::getpid())).append(suffix);
  return s;
}

MappingOptions options_for(int backing, std::size_t size) {
  switch (backing) {
    case 0: return MappingOptions::anonymous(size);
    case 1: return MappingOptions::anonymous(size, Sharing::shared);
    case 2: return MappingOptions::file(scratch("/var/tmp/", ".map"), size);
    case 3: return MappingOptions::shm(scratch("/"), size);
    default: return MappingOptions::memfd("bench", size);
  }
}

void cleanup(int backing) {
  if (backing == 2) ::unlink(scratch("/var/tmp/", ".map").c_str());
  if (backing == 3) (void)mapheap::pal::shm_remove(scratch("/").c_str());
}

const char* kBackingNames[] = {"anon_private", "anon_shared", "file", "shm", "memfd"};

// Create + destroy of a 1 MiB mapping with 1 GiB reserved.
void BM_CreateDestroy(benchmark::State& state) {
  const int backing = static_cast<int>(state.range(0));
  state.SetLabel(kBackingNames[backing]);
  for (auto _ : state) {
    Mapping m = Mapping::create(options_for(backing, 1 << 20).with_reserve(std::size_t{1} << 30));
    benchmark::DoNotOptimize(m.data());
  }
  cleanup(backing);
}
BENCHMARK(BM_CreateDestroy)->DenseRange(0, 4);

// First touch of every page of 64 MiB: the page-fault cost, 4 KiB at a time or
// 2 MiB at a time when THP backs the range.
void BM_FaultIn(benchmark::State& state) {
  const int backing = static_cast<int>(state.range(0));
  const auto huge = state.range(1) != 0 ? HugePolicy::transparent : HugePolicy::none;
  const std::size_t size = std::size_t{64} << 20;
  state.SetLabel(std::string(kBackingNames[backing]) + (state.range(1) ? "/thp" : "/4k"));
  std::uint64_t huge_bytes = 0;
  for (auto _ : state) {
    Mapping m = Mapping::create(options_for(backing, size).with_huge(huge));
    const std::size_t page = mapheap::pal::page_size();
    for (std::size_t off = 0; off < size; off += page) m.data()[off] = std::byte{1};
    state.PauseTiming();
    huge_bytes = m.residency().huge_bytes;
    m.close();
    cleanup(backing);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  state.counters["huge_MiB"] = static_cast<double>(huge_bytes >> 20);
}
BENCHMARK(BM_FaultIn)
    ->Args({0, 0})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({2, 0})
    ->Args({3, 0})
    ->Unit(benchmark::kMillisecond);

// Growing 1 MiB at a time up to 256 MiB: mprotect (anonymous) or ftruncate (file).
void BM_Grow(benchmark::State& state) {
  const int backing = static_cast<int>(state.range(0));
  state.SetLabel(kBackingNames[backing]);
  const std::size_t step = 1 << 20, top = std::size_t{256} << 20;
  for (auto _ : state) {
    Mapping m = Mapping::create(options_for(backing, step).with_reserve(top));
    for (std::size_t s = 2 * step; s <= top; s += step) m.grow(s);
    state.PauseTiming();
    m.close();
    cleanup(backing);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * (top / step - 1)));
}
BENCHMARK(BM_Grow)->Arg(0)->Arg(2)->Arg(3)->Unit(benchmark::kMicrosecond);

// Touch 16 MiB then give it back: MADV_DONTNEED (private) vs PUNCH_HOLE (shared).
void BM_TouchRelease(benchmark::State& state) {
  const int backing = static_cast<int>(state.range(0));
  state.SetLabel(kBackingNames[backing]);
  const std::size_t size = std::size_t{16} << 20;
  Mapping m = Mapping::create(options_for(backing, size));
  for (auto _ : state) {
    std::memset(m.data(), 1, size);
    m.release(0, size);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  m.close();
  cleanup(backing);
}
BENCHMARK(BM_TouchRelease)->Arg(0)->Arg(1)->Arg(2)->Arg(3)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
