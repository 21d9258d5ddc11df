// The engine behind its lock: many threads allocating and freeing each
// other's objects, misuse reported with the address, and trim that really
// gives memory back.
#include <atomic>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cache/engine.hpp"
#include "mapheap/mapping.hpp"
#include "support/death.hpp"
#include "support/release.hpp"

namespace mapheap::cache {
namespace {

using TestEngine = Engine<core::FutexLock>;

using test::release_through_mapping;

void expect_valid(TestEngine& e) {
  const page::CheckReport r = e.check();
  ASSERT_TRUE(r.ok) << r.message;
}

TEST(Engine, AllocatesFreesAndChecks) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size()));
  void* a = e.allocate(100);
  void* b = e.allocate(100000);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_GE(e.usable_size(a), 100u);
  e.deallocate(a);
  e.deallocate(b);
  e.deallocate(nullptr);
  expect_valid(e);
  EXPECT_EQ(e.allocate(std::size_t{1} << 40), nullptr);  // far beyond the region: null
}

TEST(Engine, InvalidFreeAbortsNamingTheAddress) {
  // Re-executes the binary for the death test: safe whatever threads exist.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Mapping m = Mapping::create(MappingOptions::anonymous(8 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size()));
  auto* p = static_cast<char*>(e.allocate(64));
  EXPECT_EQ(e.try_deallocate(p + 8), slab::FreeStatus::interior);
  EXPECT_DEATH(e.deallocate(p + 8),
               "invalid free of 0x[0-9a-f]+: not the start of an allocated object");
  e.deallocate(p);
  EXPECT_DEATH(e.deallocate(p), "invalid free of 0x[0-9a-f]+: double free");
}

// Threads share an array of slots; each step swaps a fresh allocation into a
// random slot and frees whatever was there, usually another thread's object.
TEST(Engine, ThreadsFreeEachOthersObjects) {
  Mapping m = Mapping::create(MappingOptions::anonymous(256 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size()));
  constexpr int kThreads = 4, kSteps = 100000, kSlots = 4096;
  std::vector<std::atomic<void*>> slots(kSlots);
  std::atomic<std::uint64_t> bad{0}, bad_free{0}, nulls{0};
  auto worker = [&](int id) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(id) * 7919);
    for (int i = 0; i < kSteps; ++i) {
      const std::size_t size = rng() % 16 == 0 ? 1 + rng() % 65536 : 1 + rng() % 256;
      auto* p = static_cast<unsigned char*>(e.allocate(size));
      if (p == nullptr) {
        nulls.fetch_add(1);
        continue;
      }
      // Objects of 16 bytes and more carry their size and two stamps that the
      // thread which frees them checks.
      if (size >= 16) {
        std::memcpy(p, &size, sizeof(size));
        p[8] = static_cast<unsigned char>(size);
        p[size - 1] = static_cast<unsigned char>(size >> 3);
      } else if (size >= sizeof(std::size_t)) {
        const std::size_t unstamped =
            0;  // a 16-byte slot from an earlier life must not look stamped
        std::memcpy(p, &unstamped, sizeof(unstamped));
      }
      void* old = slots[rng() % kSlots].exchange(p, std::memory_order_acq_rel);
      if (old != nullptr) {
        auto* o = static_cast<unsigned char*>(old);
        if (e.usable_size(o) >= 16) {
          std::size_t osize = 0;
          std::memcpy(&osize, o, sizeof(osize));
          if (osize >= 16 && (o[8] != static_cast<unsigned char>(osize) ||
                              o[osize - 1] != static_cast<unsigned char>(osize >> 3)))
            bad.fetch_add(1);
        }
        if (e.try_deallocate(o) != slab::FreeStatus::ok) bad_free.fetch_add(1);
      }
    }
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) ts.emplace_back(worker, t);
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0u) << "stamps lost";
  EXPECT_EQ(bad_free.load(), 0u) << "frees refused";
  EXPECT_EQ(nulls.load(), 0u);
  expect_valid(e);
  for (auto& s : slots)
    if (void* p = s.exchange(nullptr)) e.deallocate(p);
  expect_valid(e);
  const slab::SlabStats st = e.stats();
  for (unsigned c = 0; c < slab::kClassCount; ++c) ASSERT_EQ(st.inuse_objects[c], 0u) << c;
  EXPECT_EQ(st.large_runs, 0u);
}

TEST(Engine, CountersAndSlabinfo) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size()));
  std::vector<void*> v;
  for (int i = 0; i < 100; ++i) v.push_back(e.allocate(64));
  void* big = e.allocate(100000);
  EngineCounters c = e.counters();
  EXPECT_EQ(c.allocations, 101);
  EXPECT_EQ(c.frees, 0);
  EXPECT_EQ(c.bytes_in_use, 100 * 64 + static_cast<std::int64_t>(e.usable_size(big)));
  EXPECT_EQ(e.allocate(std::size_t{1} << 40), nullptr);
  EXPECT_EQ(e.counters().failed_allocations, 1);

  char text[4096];
  const std::size_t n = e.render_slabinfo(text, sizeof(text));
  ASSERT_LT(n, sizeof(text));
  const std::string info(text, n);
  EXPECT_EQ(info.rfind("# name", 0), 0u);
  const unsigned cls = slab::class_of(64);
  // "size-64  <active> <objects in its slabs> <size> <per slab> <pages> : slabdata ..."
  const std::string row = "size-64 ";
  const auto at = info.find(row);
  ASSERT_NE(at, std::string::npos) << info;
  std::istringstream line(info.substr(at + row.size()));
  unsigned long long active = 0, total = 0, objsize = 0, perslab = 0, pages = 0;
  line >> active >> total >> objsize >> perslab >> pages;
  EXPECT_EQ(active, 100u);
  const unsigned per = slab::class_objects(cls);
  EXPECT_EQ(total, (100u + per - 1) / per * per);  // whole slabs
  EXPECT_EQ(objsize, 64u);
  EXPECT_EQ(perslab, slab::class_objects(cls));
  EXPECT_EQ(pages, slab::class_pages(cls));

  for (void* p : v) e.deallocate(p);
  e.deallocate(big);
  c = e.counters();
  EXPECT_EQ(c.frees, 101);
  EXPECT_EQ(c.bytes_in_use, 0);
}

TEST(Engine, TrimGivesMemoryBack) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size()));
  std::vector<void*> v;
  for (int i = 0; i < 20000; ++i) {
    void* p = e.allocate(1000);
    ASSERT_NE(p, nullptr);
    std::memset(p, 1, 1000);
    v.push_back(p);
  }
  const std::uint64_t before = m.residency().resident_pages;
  EXPECT_GT(before, (20000u * 1000u) / pal::page_size());
  for (void* p : v) e.deallocate(p);
  EXPECT_GT(e.trim(release_through_mapping, &m), 0u);
  const std::uint64_t after = m.residency().resident_pages;
  // What stays resident is the page map and the slab root, not the objects.
  EXPECT_LT(after, before / 10) << "before " << before << " after " << after;
  const page::BuddyInfo bi = e.buddyinfo();
  EXPECT_EQ(bi.released_pages, bi.free_pages);
  expect_valid(e);
}

}  // namespace
}  // namespace mapheap::cache
