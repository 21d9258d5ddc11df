// The engine's own metadata is untrusted input too (DESIGN contract 2): the
// slab root, the front caches' header and arrays, and the free objects'
// links and keys may hold anything another process or a file wrote. This
// fuzzer patches a lived-in engine's slab root, cache run and first slab
// pages with the input, then: attach() must refuse or accept without
// crashing; check() must not crash whatever the bytes; and if check()
// accepts, allocating and freeing (the tail of the input) must keep it
// passing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cache/engine.hpp"

namespace {
constexpr std::size_t kPage = 4096;
constexpr std::size_t kBytes = std::size_t{8} << 20;
using Engine = mapheap::cache::Engine<mapheap::core::FutexLock>;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mapheap;
  alignas(kPage) static std::byte region[kBytes];
  std::memset(region, 0, sizeof(region));
  cache::EngineOptions o;
  o.cache = cache::CacheMode::per_thread;  // the same slot whichever CPU runs the input
  o.arena_align = 1;
  {
    static Engine fresh;
    if (!fresh.format(region, sizeof(region), o)) std::abort();
    // A lived-in heap: objects in slabs, in the cache, freed back to slabs.
    void* keep[64];
    for (int i = 0; i < 64; ++i) keep[i] = fresh.allocate(static_cast<std::size_t>(16 + (i % 8) * 40));
    for (int i = 0; i < 64; i += 2) fresh.deallocate(keep[i]);
  }
  // The windows the input patches: slab root, cache header and first slot,
  // and the first 16 pages of the arena after them (slabs and their objects).
  const auto* zh = reinterpret_cast<const page::ZoneHeader*>(region);
  std::byte* root = region + std::size_t{zh->root} * kPage;
  const auto* sr = reinterpret_cast<const slab::SlabRoot*>(root);
  std::byte* cache = region + std::size_t{sr->cache_run} * kPage;
  struct Window {
    std::byte* at;
    std::size_t len;
  } windows[3] = {{root, sizeof(slab::SlabRoot)},
                  {cache, 64 * 5 + cache::kSlot.bytes},
                  {region + std::size_t{zh->first_page} * kPage, 16 * kPage}};
  std::size_t i = 0;
  for (; i + 4 <= size && data[i] != 0xff; i += 4) {
    const Window& w = windows[data[i] % 3];
    const std::size_t off = (static_cast<std::size_t>(data[i + 1]) << 8 | data[i + 2]) % w.len;
    reinterpret_cast<std::uint8_t*>(w.at)[off] = data[i + 3];
  }
  ++i;

  static Engine* e = nullptr;
  delete e;
  e = new Engine;
  if (!e->attach(region, sizeof(region), o)) return 0;
  if (!e->check().ok) return 0;
  std::vector<void*> live;
  for (; i < size; ++i) {
    const std::uint8_t op = data[i];
    if (op & 1) {
      void* p = e->allocate(static_cast<std::size_t>(1 + (op >> 1) * 37));
      if (p != nullptr) live.push_back(p);
    } else if (!live.empty()) {
      const std::size_t k = (op >> 1) % live.size();
      if (e->try_deallocate(live[k]) != slab::FreeStatus::ok) std::abort();  // it was ours
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
    if (!e->check().ok) std::abort();  // a trusted heap must stay consistent
  }
  return 0;
}
