// Randomized model-based test of the engine: a million allocate / free /
// realloc operations with random sizes and alignments per cache mode,
// checked against a reference model (no overlap, contents preserved,
// alignment honoured), with check() after each batch. And exhaustion.
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "cache/engine.hpp"
#include "mapheap/mapping.hpp"
#include "support/engine_modes.hpp"
#include "support/release.hpp"

namespace mapheap::cache {
namespace {

using TestEngine = Engine<core::FutexLock>;

struct Live {
  std::size_t size;
  std::uint8_t seed;
};

// The byte at i of an object with this seed.
std::uint8_t pattern(std::uint8_t seed, std::size_t i) {
  return static_cast<std::uint8_t>(seed + i * 131 + (i >> 8));
}
// Writes and checks the first 64 bytes and every 61st after them. The probe
// positions do not depend on the size, so after a realloc the probes of the
// smaller size are all probes of the larger one.
template <class F>
void each_probe(std::size_t size, F f) {
  for (std::size_t i = 0; i < size && i < 64; ++i) f(i);
  for (std::size_t i = 64 + 3; i < size; i += 61) f(i);
}
void fill(unsigned char* p, const Live& l) {
  each_probe(l.size, [&](std::size_t i) { p[i] = pattern(l.seed, i); });
}
bool intact(const unsigned char* p, const Live& l, std::size_t n) {
  bool ok = true;
  each_probe(std::min(n, l.size), [&](std::size_t i) { ok = ok && p[i] == pattern(l.seed, i); });
  return ok;
}

// `ops` operations on an engine in `mode` with pages of `page_size` bytes.
void run_model(CacheMode mode, std::size_t page_size, int ops) {
  constexpr std::size_t kRegion = std::size_t{512} << 20;
  Mapping m = Mapping::create(MappingOptions::anonymous(kRegion + page_size));
  // The zone's base must be aligned to its page size.
  const std::size_t lead = (page_size - reinterpret_cast<std::uintptr_t>(m.data()) % page_size) %
                           page_size;
  TestEngine e;
  EngineOptions o;
  o.cache = mode;
  o.page_size = page_size;
  o.release = test::release_through_mapping;
  o.release_ctx = &m;
  o.decay_ms = 0;  // release at every decay step: reclaim runs all along
  ASSERT_TRUE(e.format(m.data() + lead, kRegion, o));
  ASSERT_EQ(e.stats().runs->page_size, page_size);
  std::mt19937_64 rng(42);
  std::map<std::uintptr_t, Live> live;  // address -> object
  auto random_size = [&]() -> std::size_t {
    const auto r = static_cast<unsigned>(rng() % 1000);
    if (r < 700) return rng() % 257;           // small
    if (r < 950) return 257 + rng() % 4000;    // medium
    if (r < 995) return 4096 + rng() % 70000;  // slab classes up to 64 KiB, some large
    return 70000 + rng() % 2000000;            // large runs
  };
  auto random_align = [&]() -> std::size_t {
    static constexpr std::size_t kAligns[] = {0, 0, 0, 0, 0, 0, 8, 16, 32, 64, 256, 4096, 65536};
    return kAligns[rng() % std::size(kAligns)];
  };
  auto admit = [&](void* ptr, std::size_t size, std::size_t align, std::uint8_t seed) {
    const auto a = reinterpret_cast<std::uintptr_t>(ptr);
    const std::size_t want = align == 0 ? (size > 8 ? 16 : 8) : align;
    ASSERT_EQ(a % want, 0u) << "size " << size << " align " << align;
    ASSERT_GE(e.usable_size(ptr), std::max<std::size_t>(size, 1));
    // No overlap with the neighbours on either side.
    const std::size_t span = std::max<std::size_t>(size, 1);
    auto next = live.lower_bound(a);
    if (next != live.end()) {
      ASSERT_LE(a + span, next->first) << "overlaps the next object";
    }
    if (next != live.begin()) {
      auto prev = std::prev(next);
      ASSERT_LE(prev->first + std::max<std::size_t>(prev->second.size, 1), a)
          << "overlaps the previous object";
    }
    const Live l{size, seed};
    fill(static_cast<unsigned char*>(ptr), l);
    live[a] = l;
  };
  constexpr int kBatch = 50000;
  for (int op = 1; op <= ops; ++op) {
    // Allocation leads while fewer than 3000 objects live, then frees do:
    // the live set wanders around that size (a few hundred MiB at most).
    const auto r = static_cast<unsigned>(rng() % 100);
    if (r < (live.size() < 3000 ? 45u : 35u) || live.empty()) {
      const std::size_t size = random_size(), align = random_align();
      void* p = e.allocate(size, align);
      ASSERT_NE(p, nullptr) << "size " << size << " align " << align;
      admit(p, size, align, static_cast<std::uint8_t>(op));
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % std::min<std::size_t>(live.size(), 64)));
      if (rng() % 2) it = std::prev(live.end(), static_cast<long>(1 + rng() % live.size()));
      auto* p = reinterpret_cast<unsigned char*>(it->first);
      const Live l = it->second;
      ASSERT_TRUE(intact(p, l, l.size)) << "contents lost";
      live.erase(it);
      if (r < 85) {
        e.deallocate(p);
      } else {
        const std::size_t size = random_size();
        auto* q = static_cast<unsigned char*>(e.reallocate(p, size));
        ASSERT_NE(q, nullptr);
        ASSERT_TRUE(intact(q, l, size)) << "realloc lost contents";
        admit(q, size, 0, static_cast<std::uint8_t>(op));
      }
    }
    if (op % kBatch == 0) {
      const page::CheckReport rep = e.check();
      ASSERT_TRUE(rep.ok) << "after " << op << " operations: " << rep.message;
      if (op % (4 * kBatch) == 0) e.decay();
    }
  }
  for (auto& [a, l] : live) {
    ASSERT_TRUE(intact(reinterpret_cast<unsigned char*>(a), l, l.size));
    e.deallocate(reinterpret_cast<void*>(a));
  }
  EXPECT_EQ(e.counters().bytes_in_use, 0);
  e.trim();
  const page::CheckReport rep = e.check();
  ASSERT_TRUE(rep.ok) << rep.message;
  const EngineStats st = e.stats();
  EXPECT_EQ(st.zone.slab_pages, 0u);
  EXPECT_EQ(st.zone.released_pages, st.zone.free_pages);
}

class EngineModel : public ::testing::TestWithParam<CacheMode> {};

TEST_P(EngineModel, MatchesReferenceModel) {
  run_model(GetParam(), pal::page_size(), 1000000);
}

// Zones of larger pages (arm64's 16 and 64 KiB), formatted on this machine's
// 4 KiB pages: the slab layer takes the run table of the zone's page size.
TEST(EngineModelPages, LargerPageSizes) {
  for (std::size_t page : {std::size_t{16384}, std::size_t{65536}}) {
    SCOPED_TRACE(page);
    run_model(CacheMode::automatic, page, 200000);
  }
}

TEST(EngineModelPages, PageSizeWithoutRunTableIsRefused) {
  Mapping m = Mapping::create(MappingOptions::anonymous(std::size_t{64} << 20));
  TestEngine e;
  EngineOptions o;
  o.page_size = 32768;  // no compiled run table
  EXPECT_FALSE(e.format(m.data(), std::size_t{32} << 20, o));
  o.page_size = 6144;  // not a multiple of the OS page
  EXPECT_FALSE(e.format(m.data(), std::size_t{32} << 20, o));
}

INSTANTIATE_TEST_SUITE_P(Cache, EngineModel, ::testing::ValuesIn(test::cache_modes()),
                         test::CacheModeName());

// Exhausting the region gives null, never a crash; everything freed, the
// zone is whole again.
TEST(EngineExhaustion, NullWhenFullThenWholeAgain) {
  Mapping m = Mapping::create(MappingOptions::anonymous(16 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size()));
  std::vector<void*> v;
  const page::BuddyInfo empty = e.buddyinfo();
  for (std::size_t size : {std::size_t{1000}, std::size_t{100000}, std::size_t{24}}) {
    for (;;) {
      void* p = e.allocate(size);
      if (p == nullptr) break;
      v.push_back(p);
    }
  }
  EXPECT_GT(e.counters().failed_allocations, 0);
  EXPECT_LT(e.buddyinfo().free_pages, 8u);  // nothing left worth a slab
  for (void* p : v) e.deallocate(p);
  e.trim();
  const page::CheckReport r = e.check();
  ASSERT_TRUE(r.ok) << r.message;
  const page::BuddyInfo full = e.buddyinfo();
  EXPECT_EQ(full.free_pages, empty.free_pages);
  EXPECT_EQ(full.large_pages, empty.large_pages);  // the metadata runs only
}

}  // namespace
}  // namespace mapheap::cache
