// The engine with its front caches, in each cache mode: threads allocating
// and freeing each other's objects, misuse reported with the address,
// counters and renderings, trim and decay that really give memory back, and
// a checker that finds a corrupted cache.
#include "cache/engine.hpp"
#include "core/journal.hpp"
#include "heap/region_lock.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"
#include "support/cpu.hpp"
#include "support/death.hpp"
#include "support/engine_modes.hpp"
#include "support/journal.hpp"
#include "support/release.hpp"

namespace mapheap::cache {
namespace {

using TestEngine = Engine<core::FutexLock>;

template <class Lock>
void expect_valid(Engine<Lock>& e) {
  const page::CheckReport r = e.check();
  ASSERT_TRUE(r.ok) << r.message;
}

// A clock for the engine that moves only when the test says.
struct TestClock {
  std::atomic<std::uint32_t> ms{1000};
  void attach(EngineOptions& o) {
    o.clock = [](void* c) noexcept { return static_cast<TestClock*>(c)->ms.load(); };
    o.clock_ctx = this;
  }
  void advance(std::uint32_t by) { ms.fetch_add(by); }
};

EngineOptions options_for(Mapping& m, CacheMode mode, std::uint32_t decay_ms = 1000) {
  EngineOptions o;
  o.cache = mode;
  o.release = test::release_through_mapping;
  o.release_ctx = &m;
  o.decay_ms = decay_ms;
  return o;
}

class EngineModes : public ::testing::TestWithParam<CacheMode> {};

using test::OnOneCpu;

// The process heap's slow paths inside a shared heap's critical section
// (mapheap as malloc, called from a named object's constructor): a refill
// or drain batch of a small class writes hundreds of stores, which went to
// that heap's undo journal (256 entries for the directory's) until it was
// full and aborted the process. They journal nothing now (core::FutexLock).
TEST_P(EngineModes, SlowPathsInsideASharedHeapsSectionJournalNothing) {
  // 64 MiB: the front caches' run grows with the CPUs configured (up to 4 MiB).
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  Mapping other = Mapping::create(MappingOptions::anonymous(1 << 20));
  constexpr std::uint32_t kEntries = 256;
  test::ScratchJournal journal(other.data(), other.size(), kEntries);
  {
    core::JournalScope in_section(&journal);
    std::vector<void*> live;
    for (int i = 0; i < 20000; ++i) live.push_back(e.allocate(16 + (i % 8) * 16));
    for (int i = 0; i < 50; ++i) live.push_back(e.allocate(100000));
    for (void* p : live) {
      ASSERT_NE(p, nullptr);
      e.deallocate(p);
    }
    e.trim();
    EXPECT_EQ(core::t_journal, &journal);
  }
  EXPECT_EQ(journal.pending(), 0u);
  expect_valid(e);
}

// A shared heap's engine without a MappedHeap: its lock (a robust mutex)
// and undo journal in a shared anonymous mapping of their own, the engine's
// region in another, so that a fork()ed child works on both.
struct JournaledEngine {
  using SharedEngine = Engine<heap::RegionLock>;
  // Big enough for the front caches of a machine of hundreds of CPUs (an
  // eighth of the region), which a smaller one would do without.
  Mapping region = Mapping::create(MappingOptions::anonymous(std::size_t{256} << 20, Sharing::shared));
  Mapping side = Mapping::create(MappingOptions::anonymous(1 << 20, Sharing::shared));
  core::Journal journal;
  SharedEngine e;
  JournaledEngine(CacheMode mode, std::uint32_t entries) {
    auto* mutex = new (side.data()) pal::RobustMutex;
    EXPECT_TRUE(mutex->init().ok());
    journal.bind(region.data(), region.size(), reinterpret_cast<core::JournalArea*>(side.data() + 4096));
    journal.format(entries);
    e.lock_policy().bind(mutex, &journal);
    EXPECT_TRUE(e.format(region.data(), region.size(), options_for(region, mode)));
  }
  // One object of 16 B left in each of `slabs` one-page slabs, every other
  // object of them freed and the caches emptied: freeing the survivors
  // empties a slab each, past the 32 empty slabs the class keeps.
  std::vector<void*> survivors(std::size_t slabs) {
    std::vector<void*> kept, rest;
    std::set<std::uintptr_t> pages;
    while (kept.size() < slabs) {
      void* p = e.allocate(16);
      EXPECT_NE(p, nullptr);
      if (p == nullptr) break;
      (pages.insert(reinterpret_cast<std::uintptr_t>(p) / slab::kPageSize).second ? kept : rest).push_back(p);
    }
    for (void* p : rest) e.deallocate(p);
    e.trim();
    return kept;
  }
  std::uint64_t free_pages() const { return e.zone().info().free_pages; }
  // Runs `body` in a fork()ed child (with slots of its own, as the mapped
  // heap's fork handler gives it) that dies at its `store`-th journaled
  // store, inside a critical section, as a kill could stop it there; then a
  // section of this process finds the lock's owner dead and takes the dead
  // section back.
  template <class Body>
  ::testing::AssertionResult dies_at_store(long store, Body body) {
    const pid_t child = ::fork();
    if (child < 0) return ::testing::AssertionFailure() << "fork failed";
    if (child == 0) {
      e.forget_parent();
      core::Journal::die_at_store(store);
      body();
      ::_exit(0);
    }
    int status = 0;
    if (::waitpid(child, &status, 0) != child) return ::testing::AssertionFailure() << "waitpid failed";
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 86)
      return ::testing::AssertionFailure() << "the child was to die at its store " << store << "; status " << status;
    if (journal.pending() == 0) return ::testing::AssertionFailure() << "it died outside a critical section";
    void* p = e.allocate(100000);
    if (p == nullptr) return ::testing::AssertionFailure() << "no allocation after the death";
    e.deallocate(p);
    if (e.lock_policy().repairs() != 1)
      return ::testing::AssertionFailure() << e.lock_policy().repairs() << " sections taken back, not 1";
    return ::testing::AssertionSuccess();
  }
};

// A batch of frees in one critical section (trim's drain of a CPU's or a
// thread's array: up to 256 objects) in which every free empties its slab,
// so that each gives its run to the zone with its merges: thousands of undo
// journal entries in all. With a journal that holds a few frees' worst case,
// the process aborted ("undo journal full"); the batch commits as it goes
// now (Engine::free_batch), and the heap is whole after it.
TEST_P(EngineModes, ABatchOfFreesCommitsAsItGoes) {
  if (GetParam() == CacheMode::none) GTEST_SKIP() << "no front cache: every free is a section of its own";
  const test::OnOneCpu pin;  // every survivor in one array, drained in one batch
  JournaledEngine j(GetParam(), slab::kFreeEntries + 600);
  ASSERT_EQ(j.e.cache_mode(), GetParam());
  const std::vector<void*> kept = j.survivors(250);
  ASSERT_EQ(kept.size(), 250u);
  const std::uint64_t before = j.free_pages();
  for (void* p : kept) j.e.deallocate(p);
  j.e.trim();
  expect_valid(j.e);
  // The slabs came back (all but those the class keeps empty went to the
  // zone, and trim returned those too).
  EXPECT_GE(j.free_pages(), before + 250);
  EXPECT_EQ(j.journal.pending(), 0u);
}

// A death after a batch committed part of its frees: the next locker takes
// back only what followed the last commit, and the frees before it stay.
TEST_P(EngineModes, ADeathInABatchKeepsTheFreesItCommitted) {
  if (GetParam() == CacheMode::none) GTEST_SKIP() << "no front cache: every free is a section of its own";
  const test::OnOneCpu pin;
  JournaledEngine j(GetParam(), slab::kFreeEntries + 600);
  ASSERT_EQ(j.e.cache_mode(), GetParam());
  const std::vector<void*> kept = j.survivors(250);
  ASSERT_EQ(kept.size(), 250u);
  const std::uint64_t before = j.free_pages();
  // Past the first commit (at 600 entries), inside the batch (thousands).
  ASSERT_TRUE(j.dies_at_store(1500, [&] {
    for (void* p : kept) j.e.deallocate(p);
    j.e.trim();
  }));
  expect_valid(j.e);
  // The slabs freed before the commit stayed free.
  EXPECT_GE(j.free_pages(), before + 10);
}

// The transfer slot's objects are off the slot (a journaled pop) until
// freed: trim takes them in chunks whose frees fit the journal, so that a
// death after a commit takes back the chunk in hand with the rest, and
// loses none. Here 129 objects that each empty a slab wait in the transfer
// slot, and a child dies inside their drain.
TEST_P(EngineModes, ADeathInTheTransferSlotsDrainLosesNothing) {
  if (GetParam() == CacheMode::none) GTEST_SKIP() << "no front cache, no transfer slot";
  const test::OnOneCpu pin;
  JournaledEngine j(GetParam(), slab::kFreeEntries + 600);
  ASSERT_EQ(j.e.cache_mode(), GetParam());
  const unsigned cls = slab::class_of(16);
  ASSERT_EQ(slab::class_objects(cls), 256u);
  std::vector<void*> fillers;  // one slab's worth, first: a slab of their own
  for (int i = 0; i < 256; ++i) fillers.push_back(j.e.allocate(16));
  const std::vector<void*> kept = j.survivors(250);
  ASSERT_EQ(kept.size(), 250u);
  // 128 fillers and 128 survivors fill this CPU's (or thread's) array; the
  // next free sends itself and the 128 survivors on top to the transfer slot.
  for (int i = 0; i < 128; ++i) j.e.deallocate(fillers[i]);
  for (int i = 0; i <= 128; ++i) j.e.deallocate(kept[i]);
  const auto in_use = [&] { return j.e.stats().slabs.inuse_objects[cls]; };
  ASSERT_EQ(in_use(), 256u + 250u);  // cached objects count as in use in their slabs
  // Past the array's drain (a few hundred stores, per CPU only) and the
  // first commits of the transfer slot's (about 30 stores an object).
  ASSERT_TRUE(j.dies_at_store(2000, [&] { j.e.trim(); }));
  j.e.trim();
  expect_valid(j.e);
  // In use: the 128 fillers and 121 survivors never freed; every object
  // that went through the transfer slot is free.
  EXPECT_EQ(in_use(), 128u + 121u);
}

TEST_P(EngineModes, AllocatesFreesAndChecks) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  EXPECT_EQ(e.cache_mode(), GetParam());
  void* a = e.allocate(100);
  void* b = e.allocate(100000);
  void* c = e.allocate(24, 64);  // aligned beyond 16: the slab layer directly
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(c) % 64, 0u);
  EXPECT_GE(e.usable_size(a), 100u);
  EXPECT_GE(e.usable_size(b), 100000u);
  EXPECT_EQ(e.usable_size(static_cast<char*>(a) + 8), 0u);
  expect_valid(e);
  e.deallocate(a);
  e.deallocate(b);
  e.deallocate(c);
  e.deallocate(nullptr);
  expect_valid(e);
  EXPECT_EQ(e.allocate(std::size_t{1} << 40), nullptr);  // far beyond the region: null
  // An alignment that is not a power of two is refused on every path (the
  // slow path once served one from a cache refill).
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(e.allocate(10, 3), nullptr);
    EXPECT_EQ(e.allocate(10, 12), nullptr);
    EXPECT_EQ(e.allocate(100000, 3 << 12), nullptr);
  }
}

TEST_P(EngineModes, ReallocateKeepsContents) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  auto* p = static_cast<unsigned char*>(e.reallocate(nullptr, 10));
  ASSERT_NE(p, nullptr);
  for (int i = 0; i < 10; ++i) p[i] = static_cast<unsigned char>(i);
  for (std::size_t n : {std::size_t{100}, std::size_t{5000}, std::size_t{300000}, std::size_t{12}}) {
    p = static_cast<unsigned char*>(e.reallocate(p, n));
    ASSERT_NE(p, nullptr);
    for (int i = 0; i < 10; ++i) ASSERT_EQ(p[i], i) << "after growing to " << n;
  }
  // No memory: null, and the old object is untouched.
  EXPECT_EQ(e.reallocate(p, std::size_t{1} << 40), nullptr);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(p[i], i);
  e.deallocate(p);
  expect_valid(e);
}

TEST_P(EngineModes, MisuseIsReported) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  auto* p = static_cast<char*>(e.allocate(64));
  EXPECT_EQ(e.try_deallocate(p + 8), slab::FreeStatus::interior);
  int local = 0;
  EXPECT_EQ(e.try_deallocate(&local), slab::FreeStatus::not_ours);
  e.deallocate(p);
  // p sits in a cache now (or in its slab, without caches): a double free.
  EXPECT_EQ(e.try_deallocate(p), slab::FreeStatus::double_free);
  // Many frees push objects through the cache back to their slabs: a double
  // free of one of those is found too.
  std::vector<void*> v;
  for (int i = 0; i < 1000; ++i) v.push_back(e.allocate(64));
  for (void* q : v) e.deallocate(q);
  for (void* q : v) ASSERT_EQ(e.try_deallocate(q), slab::FreeStatus::double_free) << q;
  void* big = e.allocate(100000);
  e.deallocate(big);
  EXPECT_EQ(e.try_deallocate(big), slab::FreeStatus::double_free);
  expect_valid(e);
}

// Frees that overflow a front cache go whole to the transfer slot, and the
// next refill (here another thread's) takes them from there, not from the
// slabs; objects there count as cached, a double free of one is found, and
// trim() gives them back.
TEST_P(EngineModes, TransferSlotPassesBatchesBetweenCaches) {
  if (GetParam() == CacheMode::none) GTEST_SKIP() << "no front caches";
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  ASSERT_TRUE(e.front_cache().has_transfer());
  const unsigned cls = slab::class_of(64);
  std::vector<void*> v;
  for (int i = 0; i < 2000; ++i) v.push_back(e.allocate(64));
  std::thread([&] {
    const OnOneCpu pin;
    ASSERT_TRUE(pin.pinned());
    for (void* p : v) e.deallocate(p);
  }).join();
  EngineStats st = e.stats();
  // No object is live: every one the slabs handed out is cached somewhere
  // (a CPU's or thread's array, or the transfer slot, which took the first
  // overflowing batches until it filled; the rest went to their slabs).
  EXPECT_EQ(st.cached_objects[cls], st.slabs.inuse_objects[cls]);
  const ClassArray* t = e.front_cache().transfer(cls);
  // One overflow batch: the freed object and half the array; a second did
  // not fit in the class's limit and went to the slabs.
  EXPECT_EQ(t->word & 0xffff, cache::class_limit(cls, EngineOptions{}.cache_floor) / 2 + 1);
  // A double free of an object in any cache, the transfer slot included.
  const std::uint64_t base = reinterpret_cast<std::uintptr_t>(m.data());
  void* in_transfer = reinterpret_cast<void*>(base + t->items[0]);
  EXPECT_EQ(e.try_deallocate(in_transfer), slab::FreeStatus::double_free);
  expect_valid(e);
  // This thread's next refill comes from the transfer slot: no new slab object.
  const std::uint64_t before = e.stats().slabs.inuse_objects[cls];
  void* again = e.allocate(64);
  EXPECT_EQ(e.stats().slabs.inuse_objects[cls], before);
  e.deallocate(again);
  e.trim();
  st = e.stats();
  EXPECT_EQ(st.cached_objects[cls], 0u);
  EXPECT_EQ(st.slabs.inuse_objects[cls], 0u);
  expect_valid(e);
}

// How full an engine lets a class's arrays get is its own policy
// (EngineOptions::cache_floor), within the layout's capacity: for 8 KiB
// objects (8 of them make the 64 KiB an array aims at) the limit is the
// floor when it is above 8. Frees fill an array to the limit, not past it,
// and the first overflow batch, which the transfer slot takes, is the freed
// object and half the limit; a second does not fit there.
TEST_P(EngineModes, CacheFloorSetsHowFullArraysGet) {
  if (GetParam() == CacheMode::none) GTEST_SKIP() << "no front caches";
  const unsigned cls = slab::class_of(8192);
  ASSERT_EQ(slab::class_size(cls), 8192u);
  EXPECT_EQ(cache::class_limit(cls, 0), 8u);                   // clamped up to 2: 8 of them still
  EXPECT_EQ(cache::class_limit(cls, 1000), cache::kMinCapacity);  // clamped to the capacity
  for (const std::uint32_t floor : {4u, 16u, 32u}) {
    SCOPED_TRACE(floor);
    const std::uint32_t limit = cache::class_limit(cls, floor);
    ASSERT_EQ(limit, std::max(floor, 8u));
    ASSERT_LE(limit, cache::class_capacity(cls));
    Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
    TestEngine e;
    EngineOptions o = options_for(m, GetParam());
    o.cache_floor = floor;
    ASSERT_TRUE(e.format(m.data(), m.size(), o));
    EXPECT_EQ(e.stats().cache_floor, floor);
    std::vector<void*> v;
    {
      const OnOneCpu pin;
      ASSERT_TRUE(pin.pinned());
      for (int i = 0; i < 200; ++i) v.push_back(e.allocate(8192));
      for (void* p : v) e.deallocate(p);
    }
    const FrontCache& c = e.front_cache();
    EXPECT_EQ(c.transfer(cls)->word & 0xffff, limit / 2 + 1);
    std::uint64_t fullest = 0;
    for (std::uint32_t s = 0; s < c.slots(); ++s) fullest = std::max(fullest, c.array(s, cls)->word & 0xffff);
    EXPECT_GE(fullest, limit / 2);  // drained to half the limit at each overflow, then refilled
    EXPECT_LE(fullest, limit);
    expect_valid(e);
    e.trim();
    EXPECT_EQ(e.stats().cached_objects[cls], 0u);
  }
}

// A program that writes over a freed object (erasing the key that marks it
// as cached) hides a later double free from a release build's quick check;
// checked mode (EngineOptions::checked, MAPHEAP_OPTIONS checked=1) verifies
// every free and still finds it.
TEST_P(EngineModes, CheckedModeFindsADoubleFreeBehindAUseAfterFree) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  EngineOptions o = options_for(m, GetParam());
  o.checked = true;
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), o));
  auto* p = static_cast<char*>(e.allocate(64));
  e.deallocate(p);
  std::memset(p, 0, 64);  // the use after free
  EXPECT_EQ(e.try_deallocate(p), slab::FreeStatus::double_free);
  // The write itself damaged the heap's bookkeeping in the object (the
  // cache key, or the slab's free-list link): the checker names it.
  EXPECT_FALSE(e.check().ok);
}

// With huge pages asked for, the engine hands every large run of at least
// huge_min bytes to the hook, and no smaller one.
TEST(EngineHugePages, LargeRunsReachTheHook) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  EngineOptions o = options_for(m, CacheMode::automatic);
  static std::vector<std::pair<void*, std::size_t>> seen;
  seen.clear();
  o.huge = [](void*, void* addr, std::size_t bytes) noexcept { seen.emplace_back(addr, bytes); };
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), o));
  void* small = e.allocate(100);
  void* mid = e.allocate(1 << 20);
  void* big = e.allocate((3 << 20) + 5);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].first, big);
  EXPECT_EQ(seen[0].second, std::size_t{4} << 20);  // the whole block
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(big) % (2 << 20), 0u);
  for (void* q : {small, mid, big}) e.deallocate(q);
  expect_valid(e);
}

// A refill hands the pages where the objects it carved for the first time
// start to the populate hook, before it writes its key into them: the first
// page of every object handed out is in some span, no page is in two (none
// is populated twice: objects that come back from a free are not populated
// again), and the pages inside a multi-page object, which only the program
// writes, are in none.
TEST_P(EngineModes, FreshObjectsArePopulatedOnce) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  EngineOptions o = options_for(m, GetParam());
  static std::vector<std::pair<std::uintptr_t, std::uintptr_t>> spans;
  spans.clear();
  o.populate = [](void*, void* addr, std::size_t bytes) noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(addr);
    spans.emplace_back(a, a + bytes);
  };
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), o));
  const std::size_t page = pal::page_size();
  const auto populated = [&](std::uintptr_t pg) {
    return std::any_of(spans.begin(), spans.end(), [&](auto sp) { return pg >= sp.first && pg < sp.second; });
  };
  const auto expect_covered = [&](const std::vector<void*>& objs, std::size_t size) {
    for (void* q : objs) {
      const auto a = reinterpret_cast<std::uintptr_t>(q);
      ASSERT_TRUE(populated(a / page * page)) << "size " << size << ": the first page of object " << q
                                              << " was not populated";
      // Pages wholly inside the object hold no other object's start.
      const std::size_t usable = e.usable_size(q);
      for (std::uintptr_t pg = a / page * page + page; pg + page <= a + usable; pg += page)
        ASSERT_FALSE(populated(pg)) << "size " << size << ": page " << pg << " inside object " << q
                                    << " was populated";
    }
  };
  // 64 bytes: objects never straddle a page; 1,500: they do; 14,336 (3.5
  // pages of 4 KiB): each object has pages of its own past its first.
  for (std::size_t size : {std::size_t{64}, std::size_t{1500}, std::size_t{14336}}) {
    spans.clear();
    std::vector<void*> held;
    for (std::size_t i = 0; i < (size < 4096 ? 2000 : 300); ++i) {
      held.push_back(e.allocate(size));
      ASSERT_NE(held.back(), nullptr) << "size " << size;
    }
    // Every other one freed (no slab empties, so no page goes back to the
    // OS) and as many taken again: recycled objects, or the untouched tails
    // of partial slabs.
    for (std::size_t i = 0; i < held.size(); i += 2) e.deallocate(held[i]);
    for (std::size_t i = 0; i < held.size(); i += 2) held[i] = e.allocate(size);
    if (GetParam() == CacheMode::none) {
      EXPECT_TRUE(spans.empty()) << "no front cache, no refill: nothing to populate";
    } else {
      ASSERT_FALSE(spans.empty()) << "size " << size;
      expect_covered(held, size);
    }
    for (const auto& sp : spans) {
      EXPECT_EQ(sp.first % page, 0u);
      EXPECT_EQ(sp.second % page, 0u);
      EXPECT_LT(sp.first, sp.second);
    }
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i)
      EXPECT_LE(spans[i - 1].second, spans[i].first) << "size " << size << ": a page populated twice";
    // Freed: their slabs' pages may serve the next size, populated again
    // then (they may have gone back to the OS meanwhile).
    for (void* q : held) e.deallocate(q);
  }
  expect_valid(e);
}

TEST_P(EngineModes, InvalidFreeAbortsNamingTheAddress) {
  // Re-executes the binary for the death test: safe whatever threads exist.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  auto* p = static_cast<char*>(e.allocate(64));
  EXPECT_DEATH(e.deallocate(p + 8),
               "invalid free of 0x[0-9a-f]+: not the start of an allocated object");
  e.deallocate(p);
  EXPECT_DEATH(e.deallocate(p), "invalid free of 0x[0-9a-f]+: double free");
}

// Threads share an array of slots; each step swaps a fresh allocation into a
// random slot and frees whatever was there, usually another thread's object.
TEST_P(EngineModes, ThreadsFreeEachOthersObjects) {
  Mapping m = Mapping::create(MappingOptions::anonymous(256 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
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
      // thread which frees them checks; an 8..15-byte object (in a 16-byte
      // slot) is zeroed so that an earlier life's stamps do not show.
      if (size >= 16) {
        std::memcpy(p, &size, sizeof(size));
        p[8] = static_cast<unsigned char>(size);
        p[size - 1] = static_cast<unsigned char>(size >> 3);
      } else if (size >= sizeof(std::size_t)) {
        std::memset(p, 0, sizeof(std::size_t));
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
  const EngineCounters c = e.counters();
  EXPECT_EQ(c.bytes_in_use, 0);
  EXPECT_EQ(c.allocations, c.frees);
  EXPECT_EQ(c.allocations, std::int64_t{kThreads} * kSteps);
  if (GetParam() != CacheMode::none) {
    EXPECT_GT(c.alloc_hits, c.alloc_misses);
  }
  // trim() empties every cache (the workers are gone: their thread slots are
  // adopted) and the slabs: nothing stays in use.
  e.trim();
  expect_valid(e);
  const EngineStats st = e.stats();
  for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
    ASSERT_EQ(st.slabs.inuse_objects[cls], 0u) << cls;
    ASSERT_EQ(st.cached_objects[cls], 0u) << cls;
  }
  EXPECT_EQ(st.slabs.large_runs, 0u);
  EXPECT_EQ(st.zone.slab_pages, 0u);  // every slab went back to the zone
  EXPECT_EQ(st.zone.large_pages + st.zone.slab_pages + st.zone.free_pages, st.zone.arena_pages);
}

// One producer allocates, one consumer frees: every object crosses threads.
TEST_P(EngineModes, ProducerConsumer) {
  Mapping m = Mapping::create(MappingOptions::anonymous(128 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  constexpr int kObjects = 200000, kRing = 1024;
  std::vector<std::atomic<void*>> ring(kRing);
  std::atomic<int> bad{0};
  std::thread producer([&] {
    for (int i = 0; i < kObjects; ++i) {
      auto* p = static_cast<int*>(e.allocate(16 + static_cast<std::size_t>(i % 7) * 24));
      *p = i;
      std::atomic<void*>& s = ring[static_cast<std::size_t>(i) % kRing];
      while (s.load(std::memory_order_acquire) != nullptr) std::this_thread::yield();
      s.store(p, std::memory_order_release);
    }
  });
  std::thread consumer([&] {
    for (int i = 0; i < kObjects; ++i) {
      std::atomic<void*>& s = ring[static_cast<std::size_t>(i) % kRing];
      void* p;
      while ((p = s.load(std::memory_order_acquire)) == nullptr) std::this_thread::yield();
      s.store(nullptr, std::memory_order_release);
      if (*static_cast<int*>(p) != i) bad.fetch_add(1);
      if (e.try_deallocate(p) != slab::FreeStatus::ok) bad.fetch_add(1);
    }
  });
  producer.join();
  consumer.join();
  EXPECT_EQ(bad.load(), 0);
  expect_valid(e);
  EXPECT_EQ(e.counters().bytes_in_use, 0);
}

TEST_P(EngineModes, CountersSlabinfoAndJson) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
  std::vector<void*> v;
  for (int i = 0; i < 100; ++i) v.push_back(e.allocate(64));
  void* big = e.allocate(100000);
  EngineCounters c = e.counters();
  EXPECT_EQ(c.allocations, 101);
  EXPECT_EQ(c.frees, 0);
  EXPECT_EQ(c.bytes_in_use, 100 * 64 + static_cast<std::int64_t>(e.usable_size(big)));
  // Each small allocation is a hit or a miss; without a cache, neither.
  EXPECT_EQ(c.alloc_hits + c.alloc_misses, GetParam() == CacheMode::none ? 0 : 100);
  EXPECT_EQ(e.allocate(std::size_t{1} << 40), nullptr);
  EXPECT_EQ(e.counters().failed_allocations, 1);

  char text[8192];
  std::size_t n = e.render_slabinfo(text, sizeof(text));
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
  EXPECT_EQ(active, 100u);  // objects in front caches are not active
  const unsigned per = slab::class_objects(cls);
  EXPECT_EQ(total % per, 0u);  // whole slabs
  EXPECT_GE(total, 100u);
  EXPECT_EQ(objsize, 64u);
  EXPECT_EQ(perslab, slab::class_objects(cls));
  EXPECT_EQ(pages, slab::class_pages(cls));

  // JSON: parsed by a real parser, agreeing with the counters and the zone.
  static char json[65536];
  n = e.render_json(json, sizeof(json));
  ASSERT_LT(n, sizeof(json));
  const auto j = nlohmann::json::parse(std::string(json, n));
  EXPECT_EQ(j["cache"]["mode"], to_string(GetParam()));
  EXPECT_EQ(j["counters"]["allocations"], 101);
  EXPECT_EQ(j["counters"]["bytes_in_use"], e.counters().bytes_in_use);
  const page::BuddyInfo bi = e.buddyinfo();
  EXPECT_EQ(j["pages"]["free_dirty"].get<std::uint64_t>() +
                j["pages"]["free_released"].get<std::uint64_t>(),
            bi.free_pages);
  EXPECT_EQ(j["pages"]["in_use"].get<std::uint64_t>() + bi.free_pages, bi.arena_pages);
  EXPECT_EQ(j["buddyinfo"].size(), page::kOrders);
  bool found = false;
  for (const auto& k : j["classes"])
    if (k["size"] == 64) {
      found = true;
      EXPECT_EQ(k["in_use"], 100);
      EXPECT_EQ(k["objects_per_slab"], per);
    }
  EXPECT_TRUE(found) << j.dump();

  for (void* p : v) e.deallocate(p);
  e.deallocate(big);
  c = e.counters();
  EXPECT_EQ(c.frees, 101);
  EXPECT_EQ(c.bytes_in_use, 0);
  EXPECT_EQ(c.free_hits + c.free_misses, GetParam() == CacheMode::none ? 0 : 100);
}

TEST_P(EngineModes, TrimGivesMemoryBack) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, GetParam())));
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
  EXPECT_GT(e.trim(), 0u);
  const std::uint64_t after = m.residency().resident_pages;
  // What stays resident is the metadata (page map, slab root, the caches
  // touched), not the objects.
  EXPECT_LT(after, before / 10) << "before " << before << " after " << after;
  const page::BuddyInfo bi = e.buddyinfo();
  EXPECT_EQ(bi.released_pages, bi.free_pages);
  EXPECT_GT(e.counters().released_pages, 0);
  expect_valid(e);
}

INSTANTIATE_TEST_SUITE_P(Cache, EngineModes, ::testing::ValuesIn(test::cache_modes()),
                         test::CacheModeName());

// Decay releases what has been free longer than the decay time, and keeps
// what was freed recently.
TEST(EngineDecay, ReleasesOnlyOldRuns) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine slow, fast;
  ASSERT_TRUE(slow.format(m.data(), 32 << 20, options_for(m, CacheMode::automatic, 3600000)));
  ASSERT_TRUE(fast.format(m.data() + (32 << 20), 32 << 20, options_for(m, CacheMode::automatic, 1)));
  void* runs[2];
  for (TestEngine* e : {&slow, &fast}) {
    void* p = e->allocate(8 << 20);
    ASSERT_NE(p, nullptr);
    std::memset(p, 7, 8 << 20);
    runs[e == &fast] = p;
  }
  const auto before = m.residency().resident_pages;  // both runs resident
  slow.deallocate(runs[0]);
  fast.deallocate(runs[1]);
  // An hour of decay time: nothing is old enough.
  EXPECT_EQ(slow.decay(), 0u);
  const page::BuddyInfo kept = slow.buddyinfo();
  EXPECT_GE(kept.free_pages - kept.released_pages, (8u << 20) / pal::page_size());
  // A millisecond: once one has passed, the run goes back, by this decay
  // step or already by the one the free's slow path runs, if the clock
  // moved on between the free's stamp and that step (it did once in CI).
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  (void)fast.decay();
  const page::BuddyInfo bi = fast.buddyinfo();
  EXPECT_GE(bi.released_pages, (8u << 20) / pal::page_size());
  EXPECT_LT(m.residency().resident_pages, before - (6u << 20) / pal::page_size());
  EXPECT_EQ(bi.released_pages, bi.free_pages);
  EXPECT_EQ(bi.isolated_pages, 0u);
  expect_valid(slow);
  expect_valid(fast);
}

// Past the dirty bound, large frees give memory back at once, whatever the
// decay time: the free-dirty pages never stay far above the bound.
TEST(EngineDecay, DirtyMemoryIsBounded) {
  Mapping m = Mapping::create(MappingOptions::anonymous(128 << 20));
  EngineOptions o = options_for(m, CacheMode::automatic, 3600000);
  o.dirty_floor = 4 << 20;
  o.dirty_shift = 3;  // bound: max(4 MiB, an eighth of the pages in use) = 4 MiB here
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), o));
  std::vector<void*> v;
  for (int i = 0; i < 16; ++i) {
    v.push_back(e.allocate(1 << 20));
    ASSERT_NE(v.back(), nullptr);
    std::memset(v.back(), 3, 1 << 20);
  }
  const std::uint64_t bound = (4u << 20) / pal::page_size();
  for (void* p : v) {
    e.deallocate(p);
    const page::BuddyInfo bi = e.buddyinfo();
    // One freed run (256 pages) over the bound at most before it acts.
    EXPECT_LE(bi.free_pages - bi.released_pages, bound + (1u << 20) / pal::page_size());
  }
  EXPECT_GT(e.counters().released_pages, 0);
  EXPECT_EQ(e.counters().decays, 0);  // the bound, not decay, released them
  expect_valid(e);
}

// The decay helper hook is called from free slow paths, and decay_pending()
// says whether a later step has anything to do.
TEST(EngineDecay, HelperIsCalledAndPendingIsTold) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  EngineOptions o = options_for(m, CacheMode::automatic, 3600000);
  static std::atomic<int> calls{0};
  calls = 0;
  o.decay_wake = [](void* ctx) noexcept { static_cast<std::atomic<int>*>(ctx)->fetch_add(1); };
  o.decay_wake_ctx = &calls;
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), o));
  EXPECT_FALSE(e.decay_pending());
  void* p = e.allocate(1 << 20);
  std::memset(p, 1, 1 << 20);
  e.deallocate(p);
  EXPECT_GE(calls.load(), 1);
  EXPECT_TRUE(e.decay_pending());  // a dirty run, an hour from release
  e.trim();
  EXPECT_FALSE(e.decay_pending());
  expect_valid(e);
}

// Empty slabs beyond what a class keeps go back to the zone at once; the
// kept ones once empty for the decay time, and their pages to the OS at a
// later step once free that long.
TEST(EngineDecay, EmptySlabsThenTheirPagesGoBack) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine e;
  // The engine's clock is the test's: it stands still while the loops run
  // (however slowly, under a sanitizer on a loaded machine), so no slow
  // path's decay step releases anything before the test's own.
  constexpr std::uint32_t kDecayMs = 500;
  TestClock clock;
  EngineOptions o = options_for(m, CacheMode::automatic, kDecayMs);
  clock.attach(o);
  ASSERT_TRUE(e.format(m.data(), m.size(), o));
  std::vector<void*> v;
  for (int i = 0; i < 20000; ++i) {
    v.push_back(e.allocate(1000));
    std::memset(v.back(), 3, 1000);
  }
  const std::uint64_t total_pages = e.buddyinfo().slab_pages;
  EXPECT_GE(total_pages, (20000u * 1000u) / pal::page_size());
  for (void* p : v) e.deallocate(p);
  // Nearly all objects went back to their slabs (the caches keep at most a
  // few hundred). The class keeps kKeepEmptyBytes of empty slabs; the
  // others went back to the zone at once, free but still resident.
  const page::BuddyInfo freed = e.buddyinfo();
  const std::uint64_t keep_pages = slab::kKeepEmptyBytes / pal::page_size();
  EXPECT_LT(freed.slab_pages, total_pages / 10);
  EXPECT_GE(freed.slab_pages, keep_pages);  // the kept empty slabs (and cached objects' slabs)
  EXPECT_GT(freed.free_pages - freed.released_pages, total_pages * 8 / 10);
  EXPECT_EQ(e.decay(), 0u);  // nothing has been free that long yet
  EXPECT_EQ(e.buddyinfo().slab_pages, freed.slab_pages);
  const auto resident = m.residency().resident_pages;
  clock.advance(kDecayMs + 50);
  // First step: the zone's free pages go back to the OS, and the kept
  // empty slabs go back to the zone.
  EXPECT_GT(e.decay(), total_pages * 8 / 10);
  EXPECT_LT(m.residency().resident_pages, resident - total_pages * 8 / 10);
  EXPECT_LT(e.buddyinfo().slab_pages, freed.slab_pages);
  // Second step, a decay time later: their pages go back too.
  clock.advance(kDecayMs + 50);
  EXPECT_GT(e.decay(), 0u);
  const page::BuddyInfo after = e.buddyinfo();
  EXPECT_EQ(after.released_pages, after.free_pages);
  expect_valid(e);
}

// Releases drop the lock around the system call: threads keep allocating
// and freeing while others trim and decay, and the heap stays consistent.
TEST(EngineDecay, ReleaseWhileOthersAllocate) {
  Mapping m = Mapping::create(MappingOptions::anonymous(128 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, CacheMode::automatic, 0)));
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<std::uint64_t> ops{0};
  auto churn = [&](int id) {
    std::mt19937 rng(static_cast<unsigned>(id));
    std::vector<std::pair<unsigned char*, std::size_t>> live;
    while (!stop.load(std::memory_order_relaxed)) {
      ops.fetch_add(1, std::memory_order_relaxed);
      const std::size_t n = rng() % 4 == 0 ? 4096 * (1 + rng() % 64) : 1 + rng() % 2000;
      auto* p = static_cast<unsigned char*>(e.allocate(n));
      if (p == nullptr) continue;
      std::memset(p, id, n);
      live.emplace_back(p, n);
      if (live.size() > 64 || rng() % 2 == 0) {
        const auto [q, qn] = live[rng() % live.size()];
        for (std::size_t i = 0; i < qn; i += 511)
          if (q[i] != id) bad.fetch_add(1);
        e.deallocate(q);
        live.erase(std::find(live.begin(), live.end(), std::make_pair(q, qn)));
      }
    }
    for (auto [q, qn] : live) e.deallocate(q);
  };
  std::thread a(churn, 1), b(churn, 2);
  // Decay and trim over and over until the two threads made 30,000 steps.
  for (int i = 0; ops.load(std::memory_order_relaxed) < 30000; ++i) {
    e.decay();
    if (i % 20 == 0) e.trim();
  }
  stop = true;
  a.join();
  b.join();
  EXPECT_EQ(bad.load(), 0) << "an object's memory was released under it";
  EXPECT_GT(e.counters().decays, 0);
  expect_valid(e);
  EXPECT_EQ(e.counters().bytes_in_use, 0);
}

// More threads than thread slots, one after another: the slots of threads
// that exited are claimed again, with their cached objects.
TEST(EngineThreadSlots, DeadThreadsSlotsAreReused) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, CacheMode::per_thread)));
  ASSERT_GT(e.front_cache().thread_slots(), 0u);
  const unsigned threads = e.front_cache().thread_slots() + 8;
  for (unsigned t = 0; t < threads; ++t) {
    std::thread([&] {
      for (int i = 0; i < 1000; ++i) e.deallocate(e.allocate(48));
    }).join();
  }
  const EngineCounters c = e.counters();
  // Every thread got a slot: nearly all its allocations were hits.
  EXPECT_GT(c.alloc_hits, std::int64_t{threads} * 900);
  expect_valid(e);
}

// Everything the engine stores, the front caches included, is offsets in
// the region: a second view of the same memfd at another address attaches,
// finds the objects the first view cached, and allocates them at its own
// addresses with the contents the first view wrote.
TEST_P(EngineModes, AttachesThroughASecondMappingAtAnotherAddress) {
  // One CPU for the whole test: per-CPU caches hand back what was freed on
  // the CPU that allocates, so a migration in between would find another
  // CPU's (empty) cache.
  const OnOneCpu pin;
  ASSERT_TRUE(pin.pinned());
  Mapping a = Mapping::create(MappingOptions::memfd("engine-attach", 32 << 20));
  std::vector<std::uint64_t> offsets;
  {
    TestEngine e;
    ASSERT_TRUE(e.format(a.data(), a.size(), options_for(a, GetParam())));
    std::vector<void*> v;
    for (int i = 0; i < 40; ++i) v.push_back(e.allocate(96));
    for (void* p : v) {
      offsets.push_back(static_cast<std::uint64_t>(static_cast<std::byte*>(p) - a.data()));
      std::memset(static_cast<char*>(p) + 8, 0x5a, 88);
      e.deallocate(p);
    }
    expect_valid(e);
  }
  Mapping b = Mapping::create(MappingOptions::from_fd(a.fd()));
  ASSERT_NE(a.data(), b.data());
  TestEngine e;
  ASSERT_TRUE(e.attach(b.data(), b.size(), options_for(b, GetParam())));
  expect_valid(e);
  // The same thread on the same CPU (or the same thread slot, claimed
  // again): some allocations come back from the first view's cache.
  std::vector<void*> got;
  int reused = 0;
  for (int i = 0; i < 40; ++i) {
    auto* p = static_cast<std::byte*>(e.allocate(96));
    ASSERT_NE(p, nullptr);
    ASSERT_GE(p, b.data());
    ASSERT_LT(p, b.data() + b.size());
    const auto off = static_cast<std::uint64_t>(p - b.data());
    if (std::find(offsets.begin(), offsets.end(), off) != offsets.end()) {
      ++reused;
      EXPECT_EQ(static_cast<unsigned char>(p[50]), 0x5a);
    }
    got.push_back(p);
  }
  EXPECT_GT(reused, 0);
  for (void* p : got) e.deallocate(p);
  expect_valid(e);
  // A region that holds no engine is refused.
  Mapping c = Mapping::create(MappingOptions::anonymous(4 << 20));
  TestEngine none;
  EXPECT_FALSE(none.attach(c.data(), c.size()));
}

// Formatting over memory an earlier heap used: with a release method the
// cache run is zeroed by the OS, without one by writing; either way the new
// heap's caches start empty, and a cache run costs memory only where used.
TEST(EngineFormat, ReformatOverAUsedRegionStartsEmpty) {
  Mapping m = Mapping::create(MappingOptions::anonymous(64 << 20));
  for (bool with_release : {true, false}) {
    SCOPED_TRACE(with_release);
    {
      TestEngine old;
      ASSERT_TRUE(old.format(m.data(), m.size(), options_for(m, CacheMode::automatic)));
      std::vector<void*> v;
      for (int i = 0; i < 5000; ++i) v.push_back(old.allocate(static_cast<std::size_t>(8 + i % 900)));
      for (void* p : v) old.deallocate(p);
    }
    EngineOptions o = options_for(m, CacheMode::automatic);
    if (!with_release) o.release = nullptr;
    TestEngine e;
    ASSERT_TRUE(e.format(m.data(), m.size(), o));
    const EngineStats st = e.stats();
    for (unsigned cls = 0; cls < slab::kClassCount; ++cls) ASSERT_EQ(st.cached_objects[cls], 0u);
    EXPECT_EQ(e.counters().alloc_hits, 0);
    expect_valid(e);
    void* p = e.allocate(100);
    e.deallocate(p);
    expect_valid(e);
  }
  // Fresh and released: of the whole cache run only the header and the
  // slots this thread used are resident.
  Mapping fresh = Mapping::create(MappingOptions::anonymous(64 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(fresh.data(), fresh.size(), options_for(fresh, CacheMode::automatic)));
  const std::uint64_t cache_pages =
      (std::uint64_t{kSlot.bytes} * e.front_cache().slots()) / pal::page_size();
  EXPECT_LT(fresh.residency().resident_pages, 200u + cache_pages / 4)
      << "cache run pages: " << cache_pages;
}

// attach() hands each metadata page it reads past the zone header (the slab
// root's and the cache header's first pages, and their page-map entries) to
// the prefetch hook before reading it. Here the hook is what makes a page
// readable in a region otherwise PROT_NONE: a page read before it was handed
// over is a SIGSEGV. Without the hook the same attach dies, which shows the
// pages really are unreadable until then.
struct Prefetched {
  std::vector<std::pair<std::uintptr_t, std::size_t>> ranges;
  static void unprotect(void* ctx, const void* addr, std::size_t bytes) noexcept {
    static_cast<Prefetched*>(ctx)->ranges.emplace_back(reinterpret_cast<std::uintptr_t>(addr), bytes);
    const std::uintptr_t page = pal::page_size();
    const std::uintptr_t lo = reinterpret_cast<std::uintptr_t>(addr) & ~(page - 1);
    const std::uintptr_t hi = (reinterpret_cast<std::uintptr_t>(addr) + bytes + page - 1) & ~(page - 1);
    if (!pal::protect(reinterpret_cast<void*>(lo), hi - lo, pal::Prot::read)) std::abort();
  }
  bool covers(const void* p) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    return std::any_of(ranges.begin(), ranges.end(), [&](const auto& r) { return a >= r.first && a < r.first + r.second; });
  }
};

TEST(EngineAttach, ReadsNoMetadataPageBeforeItIsPrefetched) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  const void* root_page = nullptr;
  const void* cache_page = nullptr;
  {
    TestEngine e;
    ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, CacheMode::automatic)));
    e.deallocate(e.allocate(100));
    root_page = e.zone().address(page::PageIndex(e.zone().header().root));
    cache_page = e.zone().address(page::PageIndex(e.slabs().cache_run()));
  }
  const std::size_t page = pal::page_size();
  auto hide_all_but_the_zone_header = [&] {
    ASSERT_TRUE(pal::protect(m.data() + page, m.size() - page, pal::Prot::none));
  };
  hide_all_but_the_zone_header();
  EXPECT_EXIT(
      {
        TestEngine e;
        (void)e.attach(m.data(), m.size(), options_for(m, CacheMode::automatic));
        std::_Exit(0);
      },
      test::DiedOf{SIGSEGV}, test::fault_pattern(SIGSEGV));

  Prefetched seen;
  EngineOptions o = options_for(m, CacheMode::automatic);
  o.prefetch = Prefetched::unprotect;
  o.prefetch_ctx = &seen;
  TestEngine e;
  ASSERT_TRUE(e.attach(m.data(), m.size(), o));
  EXPECT_EQ(seen.ranges.size(), 4u);
  EXPECT_TRUE(seen.covers(root_page));
  EXPECT_TRUE(seen.covers(cache_page));
  // The engine works once the region is writable again.
  ASSERT_TRUE(pal::protect(m.data(), m.size(), pal::Prot::read_write));
  void* p = e.allocate(100);
  ASSERT_NE(p, nullptr);
  e.deallocate(p);
  expect_valid(e);

  // A slab root index past the arena (a corrupt zone header): attach refuses
  // it without handing the hook anything outside the zone.
  auto* zh = reinterpret_cast<page::ZoneHeader*>(m.data());
  const std::uint32_t root = zh->root;
  for (std::uint32_t bad : {zh->total_pages, ~std::uint32_t{0}, std::uint32_t{0}}) {
    zh->root = bad;
    Prefetched none;
    o.prefetch_ctx = &none;
    TestEngine corrupt;
    EXPECT_FALSE(corrupt.attach(m.data(), m.size(), o)) << bad;
    const auto lo = reinterpret_cast<std::uintptr_t>(m.data());
    for (const auto& [addr, bytes] : none.ranges)
      EXPECT_TRUE(addr >= lo && addr + bytes <= lo + m.size()) << bad;
    EXPECT_TRUE(none.ranges.empty()) << bad;
  }
  zh->root = root;
}

// The process heap's shape: a large reservation of which little is usable
// at first; the engine grows the Mapping as the arena runs out, in place,
// and never past the reservation (then: null).
std::size_t grow_mapping(void* ctx, std::size_t want) noexcept {
  auto* m = static_cast<Mapping*>(ctx);
  (void)m->try_grow(want);  // on failure the size stays, and the engine sees no growth
  return m->size();
}

// Options for an engine over all of m's reservation, usable as far as m is,
// growing m on demand.
EngineOptions growing_options(Mapping& m, CacheMode mode) {
  EngineOptions o = options_for(m, mode);
  o.committed = m.size();
  o.grow = grow_mapping;
  o.grow_ctx = &m;
  return o;
}

TEST_P(EngineModes, GrowsItsMappingOnDemand) {
  Mapping m = Mapping::create(
      MappingOptions::anonymous(std::size_t{16} << 20).with_reserve(std::size_t{256} << 20));
  const EngineOptions o = growing_options(m, GetParam());
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.reserved(), o));
  std::byte* const base = m.data();
  std::vector<std::pair<unsigned char*, std::size_t>> v;
  std::size_t total = 0;
  for (int i = 0; total < (std::size_t{160} << 20); ++i) {
    const std::size_t n = i % 50 == 0 ? 1 + (i * 7919) % (std::size_t{3} << 20) : 1 + (i * 31) % 3000;
    auto* p = static_cast<unsigned char*>(e.allocate(n));
    ASSERT_NE(p, nullptr) << "after " << total << " bytes";
    p[0] = static_cast<unsigned char>(i);
    p[n - 1] = static_cast<unsigned char>(i >> 3);
    v.emplace_back(p, n);
    total += n;
  }
  EXPECT_EQ(m.data(), base);  // in place
  EXPECT_GT(m.size(), std::size_t{160} << 20);
  EXPECT_GT(e.counters().grows, 0);
  EXPECT_EQ(e.stats().committed_bytes, m.size());
  expect_valid(e);
  // Past the reservation: null, the heap intact.
  EXPECT_EQ(e.allocate(std::size_t{200} << 20), nullptr);
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto [p, n] = v[i];
    ASSERT_EQ(p[0], static_cast<unsigned char>(i));
    ASSERT_EQ(p[n - 1], static_cast<unsigned char>(i >> 3));
    e.deallocate(p);
  }
  e.trim();
  expect_valid(e);
  EXPECT_EQ(e.counters().bytes_in_use, 0);
}

// Two threads run out of arena together: one grows it, the other finds it
// grown; both finish, and the heap checks.
TEST(EngineGrowth, ConcurrentGrowth) {
  Mapping m = Mapping::create(
      MappingOptions::anonymous(std::size_t{8} << 20).with_reserve(std::size_t{256} << 20));
  const EngineOptions o = growing_options(m, CacheMode::automatic);
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.reserved(), o));
  std::atomic<int> nulls{0};
  std::vector<std::vector<void*>> got(2);
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 1200; ++i) {
        void* p = e.allocate(i % 3 == 0 ? 65536 : 700);
        if (p == nullptr) {
          nulls.fetch_add(1);
          continue;
        }
        std::memset(p, t, 64);
        got[static_cast<std::size_t>(t)].push_back(p);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(nulls.load(), 0);
  EXPECT_GT(e.counters().grows, 0);
  expect_valid(e);
  for (auto& v : got)
    for (void* p : v) e.deallocate(p);
  expect_valid(e);
}

// A request the page layer could never serve (a run longer than the largest
// block, an alignment beyond it) fails at once: the heap does not grow into
// its whole reservation first.
TEST(EngineGrowth, ImpossibleRequestsDoNotGrow) {
  // 16 GiB of address space: its page map (128 MiB) is committed but never
  // touched beyond the arena.
  const std::size_t map_bytes = (std::size_t{16} << 30) / pal::page_size() * sizeof(page::PageDesc);
  Mapping m = Mapping::create(MappingOptions::anonymous(map_bytes + (std::size_t{8} << 20))
                                  .with_reserve(std::size_t{16} << 30));
  const EngineOptions o = growing_options(m, CacheMode::automatic);
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.reserved(), o));
  const std::size_t before = m.size();
  EXPECT_EQ(e.allocate(std::size_t{5} << 30), nullptr);       // > 2^20 pages
  EXPECT_EQ(e.allocate(64, std::size_t{8} << 30), nullptr);   // alignment beyond a block
  EXPECT_EQ(m.size(), before);
  EXPECT_EQ(e.counters().grows, 0);
  EXPECT_EQ(e.counters().failed_allocations, 2);
  void* p = e.allocate(std::size_t{64} << 20);  // this one grows
  ASSERT_NE(p, nullptr);
  EXPECT_GT(m.size(), before);
  e.deallocate(p);
  expect_valid(e);
}

// A corrupted cache is named by check().
TEST(EngineCheck, FindsAnObjectCachedTwice) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  TestEngine e;
  ASSERT_TRUE(e.format(m.data(), m.size(), options_for(m, CacheMode::per_thread)));
  void* p = e.allocate(32);
  void* q = e.allocate(32);
  e.deallocate(p);
  e.deallocate(q);
  expect_valid(e);
  // Find this thread's slot (the one holding p) and duplicate its top item.
  const FrontCache& fc = e.front_cache();
  const unsigned cls = slab::class_of(32);
  ClassArray* hit = nullptr;
  for (std::uint32_t s = 0; s < fc.slots(); ++s)
    if (count_of(fc.array(s, cls)->word) >= 2) hit = fc.array(s, cls);
  ASSERT_NE(hit, nullptr);
  const std::uint64_t n = count_of(hit->word);
  hit->items[n - 2] = hit->items[n - 1];
  page::CheckReport r = e.check();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string(r.message).find("in two caches"), std::string::npos) << r.message;
  // An offset that is not an object of the class.
  hit->items[0] = 12345;
  r = e.check();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string(r.message).find("not an object of the class"), std::string::npos)
      << r.message;
}

}  // namespace
}  // namespace mapheap::cache
