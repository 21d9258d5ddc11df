// The slab layer against a reference model: random sizes and alignments,
// random frees, contents that must survive, check() after every batch; and
// every kind of bad free reported without harm.
#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/journal.hpp"
#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"
#include "slab/slab.hpp"
#include "support/journal.hpp"

namespace mapheap::slab {
namespace {

std::size_t os_page() {
  return pal::page_size();
}

struct Heap {
  Mapping mapping;
  page::Buddy zone;
  SlabHeap heap;
  explicit Heap(std::size_t bytes, std::uint32_t align = 512)
      : mapping(Mapping::create(MappingOptions::anonymous(bytes))) {
    EXPECT_EQ(page::Buddy::format(mapping.data(), mapping.size(), os_page(), align, zone),
              page::FormatError::none);
    EXPECT_TRUE(SlabHeap::format(zone, heap));
  }
};

void expect_valid(const SlabHeap& h) {
  const page::CheckReport r = h.check();
  ASSERT_TRUE(r.ok) << r.message;
}

TEST(Slab, SmallObjectsComeFromTheirClass) {
  Heap h(16 << 20);
  for (std::size_t size : {1u, 8u, 9u, 16u, 17u, 100u, 1000u, 4096u, 20000u}) {
    std::size_t reported = 0;
    void* p = h.heap.alloc(size, 0, &reported);
    ASSERT_NE(p, nullptr) << size;
    const std::size_t usable = h.heap.usable_size(p);
    EXPECT_EQ(reported, usable) << size;
    EXPECT_GE(usable, size);
    EXPECT_EQ(usable, class_size(class_of(size)));
    if (size >= 16) {
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 16, 0u) << size;
    }
    std::memset(p, 0x5a, usable);
    std::size_t freed = 0;
    EXPECT_EQ(h.heap.free(p, &freed), FreeStatus::ok);
    EXPECT_EQ(freed, usable) << size;
  }
  expect_valid(h.heap);
}

TEST(Slab, ObjectsFillASlabThenTheNext) {
  Heap h(16 << 20);
  const unsigned cls = class_of(64);
  std::vector<void*> objs;
  for (std::uint32_t i = 0; i < class_objects(cls) + 1; ++i) objs.push_back(h.heap.alloc(64));
  const SlabStats s = h.heap.stats();
  EXPECT_EQ(s.slabs[cls], 2u);  // one full, one partial
  EXPECT_EQ(s.inuse_objects[cls], class_objects(cls) + 1u);
  expect_valid(h.heap);
  // Distinct, non-overlapping, in carving order within the first slab.
  for (std::uint32_t i = 1; i < class_objects(cls); ++i)
    EXPECT_EQ(static_cast<std::byte*>(objs[i]) - static_cast<std::byte*>(objs[i - 1]),
              static_cast<std::ptrdiff_t>(class_size(cls)));
  for (void* p : objs) ASSERT_EQ(h.heap.free(p), FreeStatus::ok);
  expect_valid(h.heap);
  // Both slabs are empty now, kept for reuse; trim returns them.
  EXPECT_EQ(h.heap.stats().slabs[cls], 2u);
  EXPECT_EQ(h.heap.trim(), 2u * class_pages(cls));
  EXPECT_EQ(h.heap.stats().slabs[cls], 0u);
  expect_valid(h.heap);
}

// Empty slabs go back to the zone once they have stayed empty for the age
// given (the engine passes its decay time), and are reused before that.
TEST(Slab, EmptySlabsGoBackAfterADelay) {
  Heap h(16 << 20);
  const unsigned cls = class_of(256);
  h.zone.set_clock(1000);
  std::vector<void*> a, b;
  for (std::uint32_t i = 0; i < class_objects(cls); ++i) a.push_back(h.heap.alloc(256));
  for (std::uint32_t i = 0; i < class_objects(cls); ++i) b.push_back(h.heap.alloc(256));
  for (void* p : a) ASSERT_EQ(h.heap.free(p), FreeStatus::ok);  // slab A empty at 1000
  h.zone.set_clock(1500);
  for (void* p : b) ASSERT_EQ(h.heap.free(p), FreeStatus::ok);  // slab B empty at 1500
  EXPECT_EQ(h.heap.stats().slabs[cls], 2u);
  h.zone.set_clock(1900);
  EXPECT_EQ(h.heap.release_empty(1000), 0u);  // neither is that old
  EXPECT_EQ(h.heap.release_empty(600), class_pages(cls));  // A is (900), B is not (400)
  EXPECT_EQ(h.heap.stats().slabs[cls], 1u);
  expect_valid(h.heap);
  // The one left is reused: a new allocation takes no page from the zone.
  const std::uint64_t free_before = h.zone.info().free_pages;
  void* p = h.heap.alloc(256);
  EXPECT_EQ(h.zone.info().free_pages, free_before);
  ASSERT_EQ(h.heap.free(p), FreeStatus::ok);
  expect_valid(h.heap);
}

// A class keeps kKeepEmptyBytes of empty slabs (two at least); the slabs
// that empty past that go straight back to the zone.
TEST(Slab, AClassKeepsFewEmptySlabs) {
  Heap h(64 << 20);
  for (std::size_t size : {std::size_t{256}, std::size_t{32768}}) {
    const unsigned cls = class_of(size);
    const std::uint64_t slab_bytes = std::uint64_t{class_pages(cls)} * os_page();
    const std::uint64_t keep = std::max<std::uint64_t>(2, kKeepEmptyBytes / slab_bytes);
    std::vector<void*> v;
    for (std::uint32_t i = 0; i < class_objects(cls) * 40; ++i) v.push_back(h.heap.alloc(size));
    EXPECT_EQ(h.heap.stats().slabs[cls], 40u);
    const std::uint64_t free_before = h.zone.info().free_pages;
    for (void* p : v) ASSERT_EQ(h.heap.free(p), FreeStatus::ok);
    EXPECT_EQ(h.heap.stats().slabs[cls], keep) << size;
    EXPECT_EQ(h.zone.info().free_pages, free_before + (40 - keep) * class_pages(cls)) << size;
    EXPECT_TRUE(h.heap.has_empty());
    EXPECT_EQ(h.heap.trim(), keep * class_pages(cls));
    EXPECT_FALSE(h.heap.has_empty());
    expect_valid(h.heap);
  }
}

// slab::free_entries bounds what one free journals, and release_entries
// what giving a class's empty slabs back does: the bounds a batch of frees
// (cache::Engine::free_batch) and the static asserts of the mapped heap
// rest on. Objects of small and large classes freed in random order, every
// slab emptied, its run merged back into the zone.
TEST(Slab, FreesJournalAtMostTheirBound) {
  Heap h(64 << 20);
  // Room past both bounds: a section that broke one fails an assertion
  // below rather than aborting on a full journal.
  const auto room = static_cast<std::uint32_t>(std::max<std::uint64_t>(kFreeEntries, release_entries(kRuns)) + 1);
  test::ScratchJournal journal(h.mapping.data(), h.mapping.size(), room);
  std::mt19937 rng(5);
  for (std::size_t size : {std::size_t{16}, std::size_t{256}, std::size_t{3000}, std::size_t{36864}, kMaxSmallSize}) {
    const unsigned cls = class_of(size);
    std::vector<void*> v;
    for (std::uint32_t i = 0; i < class_objects(cls) * 60; ++i) v.push_back(h.heap.alloc(size));
    std::shuffle(v.begin(), v.end(), rng);
    std::uint32_t most = 0;
    for (void* p : v) {
      core::JournalScope in_section(&journal);
      ASSERT_EQ(h.heap.free(p), FreeStatus::ok);
      most = std::max(most, journal.pending());
      journal.commit();
    }
    EXPECT_LE(most, free_entries(class_pages(cls))) << size;
    // Some free gave its slab's run back to the zone.
    EXPECT_GT(most, class_pages(cls) + 8) << size;
    {
      core::JournalScope in_section(&journal);
      h.heap.release_empty(cls, 0);
      EXPECT_LE(journal.pending(), release_entries(kRuns, cls)) << size;
      journal.commit();
    }
    expect_valid(h.heap);
  }
  // What a batch makes room for before each free: a large run has its own,
  // larger bound (a wrong-size free can park one in a class's cache).
  void* small = h.heap.alloc(100);
  void* large = h.heap.alloc(3 * kMaxSmallSize);
  ASSERT_NE(small, nullptr);
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(h.heap.free_entries_of(small), kFreeEntries);
  EXPECT_EQ(h.heap.free_entries_of(large), kLargeFreeEntries);
  EXPECT_EQ(h.heap.free_entries_of(nullptr), kFreeEntries);
  core::JournalScope in_section(&journal);
  ASSERT_EQ(h.heap.free(large), FreeStatus::ok);
  EXPECT_LE(journal.pending(), kLargeFreeEntries);
  journal.commit();
  ASSERT_EQ(h.heap.free(small), FreeStatus::ok);
}

// A large run is its whole buddy block: the usable size is a power of two
// of pages, and the block comes back whole.
TEST(Slab, LargeRunsTakeTheirWholeBlock) {
  Heap h(64 << 20);
  const std::size_t page = os_page();
  const std::size_t block = std::bit_ceil(kMaxSmallSize / page + 1);  // pages of the smallest large run's block
  void* p = h.heap.alloc(kMaxSmallSize + 1);  // 17 pages at 4 KiB: a block of 32
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(h.heap.usable_size(p), block * page);
  const page::BuddyInfo in_use = h.zone.info();
  ASSERT_EQ(h.heap.free(p), FreeStatus::ok);
  EXPECT_EQ(h.zone.info().free_pages, in_use.free_pages + block);
  void* q = h.heap.alloc((block - 4) * page);  // the same order: the same block
  EXPECT_EQ(q, p);
  ASSERT_EQ(h.heap.free(q), FreeStatus::ok);
  expect_valid(h.heap);
}

TEST(Slab, LargeObjectsAreRunsAndHonourAlignment) {
  Heap h(64 << 20);
  void* big = h.heap.alloc(1 << 20);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(h.heap.usable_size(big), std::size_t{1} << 20);
  for (std::size_t align : {std::size_t{32}, std::size_t{256}, std::size_t{4096}, std::size_t{8192},
                            std::size_t{1} << 16, std::size_t{1} << 21}) {
    void* p = h.heap.alloc(100, align);
    ASSERT_NE(p, nullptr) << align;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << align;
    EXPECT_GE(h.heap.usable_size(p), 100u);
    ASSERT_EQ(h.heap.free(p), FreeStatus::ok);
  }
  EXPECT_EQ(h.heap.alloc(8, 3), nullptr);  // not a power of two
  void* small16 = h.heap.alloc(4, 16);     // a small request that needs 16
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(small16) % 16, 0u);
  void* small0 = h.heap.alloc(4);  // malloc's alignment for 4 bytes: 8
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(small0) % 8, 0u);
  EXPECT_EQ(h.heap.usable_size(small0), 8u);
  ASSERT_EQ(h.heap.free(small16), FreeStatus::ok);
  ASSERT_EQ(h.heap.free(small0), FreeStatus::ok);
  std::size_t freed = 0;
  ASSERT_EQ(h.heap.free(big, &freed), FreeStatus::ok);
  EXPECT_EQ(freed, std::size_t{1} << 20);
  EXPECT_EQ(h.heap.free(big, &freed), FreeStatus::double_free);
  EXPECT_EQ(freed, 0u);  // nothing was given back
  expect_valid(h.heap);
}

TEST(Slab, BadFreesAreReportedAndChangeNothing) {
  Heap h(16 << 20);
  auto* a = static_cast<std::byte*>(h.heap.alloc(48));
  auto* b = static_cast<std::byte*>(h.heap.alloc(48));
  auto* big = static_cast<std::byte*>(h.heap.alloc(100000));
  const SlabStats before = h.heap.stats();
  EXPECT_EQ(h.heap.free(a + 8), FreeStatus::interior);
  EXPECT_EQ(h.heap.free(big + os_page()), FreeStatus::interior);
  EXPECT_EQ(h.heap.free(big + 1), FreeStatus::interior);
  EXPECT_EQ(h.heap.free(b + 10 * class_size(class_of(48))), FreeStatus::interior);  // never carved
  int local = 0;
  EXPECT_EQ(h.heap.free(&local), FreeStatus::not_ours);
  EXPECT_EQ(h.heap.free(h.mapping.data()), FreeStatus::not_ours);  // the page map
  const SlabStats after = h.heap.stats();
  EXPECT_EQ(after.inuse_objects[class_of(48)], before.inuse_objects[class_of(48)]);
  EXPECT_EQ(after.large_runs, before.large_runs);
  expect_valid(h.heap);
  ASSERT_EQ(h.heap.free(a), FreeStatus::ok);
#if MAPHEAP_CHECKED
  EXPECT_EQ(h.heap.free(a), FreeStatus::double_free);  // found by searching the free list
#endif
  ASSERT_EQ(h.heap.free(b), FreeStatus::ok);
  EXPECT_EQ(h.heap.free(b), FreeStatus::double_free);  // the slab has nothing in use: cheap case
  ASSERT_EQ(h.heap.free(big), FreeStatus::ok);
  EXPECT_EQ(h.heap.free(big), FreeStatus::double_free);
  expect_valid(h.heap);
}

TEST(Slab, SlabinfoListsOnlyClassesWithSlabs) {
  Heap h(16 << 20);
  void* a = h.heap.alloc(100);
  char text[2048];
  const std::size_t n = h.heap.render_slabinfo(text, sizeof(text));
  ASSERT_LT(n, sizeof(text));
  const std::string info(text, n);
  EXPECT_NE(info.find("size-" + std::to_string(class_size(class_of(100))) + " "), std::string::npos)
      << info;
  EXPECT_EQ(std::count(info.begin(), info.end(), '\n'), 2);  // the header and one class
  char tiny[16];
  EXPECT_EQ(h.heap.render_slabinfo(tiny, sizeof(tiny)), n);  // the length it needs
  EXPECT_EQ(std::strlen(tiny), sizeof(tiny) - 1);
  ASSERT_EQ(h.heap.free(a), FreeStatus::ok);
}

// A free object's link lives in freed memory: a stray store there must not
// steer the allocator (DESIGN contract 2).
TEST(Slab, ACorruptFreeLinkFailsTheAllocationInsteadOfFollowingIt) {
  Heap h(16 << 20);
  auto* a = static_cast<std::byte*>(h.heap.alloc(64));
  auto* b = static_cast<std::byte*>(h.heap.alloc(64));
  ASSERT_EQ(h.heap.free(b), FreeStatus::ok);
  ASSERT_EQ(h.heap.free(a), FreeStatus::ok);
  for (std::uint32_t bad : {0x40000000u, 8u, 64u * 1000u}) {
    std::memcpy(a, &bad, sizeof(bad));  // a use-after-free store over a's link
    EXPECT_EQ(h.heap.alloc(64), nullptr) << bad;
    const page::CheckReport r = h.heap.check();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(std::string(r.message).find("free list"), std::string::npos) << r.message;
  }
}

TEST(Slab, PageAlignedAllocationsDoNotDependOnTheRegionsAddress) {
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  page::Buddy zone;
  ASSERT_EQ(page::Buddy::format(m.data() + os_page(), m.size() - os_page(), os_page(), 1, zone),
            page::FormatError::none);
  SlabHeap heap;
  ASSERT_TRUE(SlabHeap::format(zone, heap));
  for (std::size_t align : {std::size_t{8192}, std::size_t{65536}, std::size_t{2} << 20}) {
    void* p = heap.alloc(33 * os_page(), align);
    ASSERT_NE(p, nullptr) << align;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u);
    EXPECT_EQ(heap.usable_size(p), 33 * os_page());  // not rounded to a power of two
    ASSERT_EQ(heap.free(p), FreeStatus::ok);
  }
  const page::CheckReport r = heap.check();
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Slab, ExhaustionReturnsNull) {
  Heap h(4 << 20, 1);
  std::vector<void*> objs;
  for (void* p; (p = h.heap.alloc(3000)) != nullptr;) objs.push_back(p);
  EXPECT_FALSE(objs.empty());
  EXPECT_EQ(h.heap.alloc(1 << 20), nullptr);
  expect_valid(h.heap);
  for (void* p : objs) ASSERT_EQ(h.heap.free(p), FreeStatus::ok);
  expect_valid(h.heap);
}

// Millions of operations against a model: no overlap, contents kept,
// alignment honoured, check() clean after each batch, and everything comes
// back when all is freed.
TEST(Slab, RandomAllocFreeAgainstAReferenceModel) {
  Heap h(128 << 20);
  const page::BuddyInfo fresh = h.zone.info();
  std::map<std::uintptr_t, std::size_t> live;  // address -> usable size
  std::mt19937_64 rng(2026);
  auto stamp_of = [](std::uintptr_t a) { return static_cast<unsigned char>(a * 131 >> 7); };
  std::uint64_t nulls = 0;
  const int kOps = 1000000;
  for (int op = 0; op < kOps; ++op) {
    if (live.empty() || rng() % 100 < 52) {
      // Mostly small; a tail to half a megabyte; sometimes over-aligned.
      std::size_t size = rng() % 100 < 90 ? 1 + rng() % 512 : 1 + rng() % (512 << 10);
      std::size_t align = rng() % 8 == 0 ? std::size_t{1} << (rng() % 14) : 0;
      void* p = h.heap.alloc(size, align);
      if (p == nullptr) {
        ++nulls;
        continue;
      }
      const auto a = reinterpret_cast<std::uintptr_t>(p);
      const std::size_t want = align != 0 ? align : size <= 8 ? 8 : 16;
      ASSERT_EQ(a % want, 0u) << "size " << size << " align " << align;
      const std::size_t usable = h.heap.usable_size(p);
      ASSERT_GE(usable, size);
      auto next = live.lower_bound(a);
      if (next != live.end()) {
        ASSERT_LE(a + usable, next->first) << "overlaps the next object";
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second, a) << "overlaps the previous object";
      }
      live.emplace(a, usable);
      auto* bytes = static_cast<unsigned char*>(p);
      bytes[0] = stamp_of(a);
      bytes[usable - 1] = stamp_of(a + 1);
    } else {
      auto it = live.lower_bound(static_cast<std::uintptr_t>(rng()));
      if (it == live.end()) it = live.begin();
      auto* bytes = reinterpret_cast<unsigned char*>(it->first);
      ASSERT_EQ(bytes[0], stamp_of(it->first)) << "contents lost";
      ASSERT_EQ(bytes[it->second - 1], stamp_of(it->first + 1)) << "contents lost";
      ASSERT_EQ(h.heap.free(bytes), FreeStatus::ok);
      live.erase(it);
    }
    if (op % 100000 == 0) expect_valid(h.heap);
  }
  expect_valid(h.heap);
  for (auto& [a, n] : live) ASSERT_EQ(h.heap.free(reinterpret_cast<void*>(a)), FreeStatus::ok);
  h.heap.trim();
  expect_valid(h.heap);
  const page::BuddyInfo end = h.zone.info();
  EXPECT_EQ(end.free_pages, fresh.free_pages) << "pages leaked";
  EXPECT_EQ(end.slab_pages, 0u);
  RecordProperty("null_returns", static_cast<int>(nulls));
}

// A heap formatted by one view is attached by another at another address.
TEST(Slab, AttachFromASecondMapping) {
  Mapping a = Mapping::create(MappingOptions::memfd("slab", 16 << 20));
  page::Buddy za;
  ASSERT_EQ(page::Buddy::format(a.data(), a.size(), os_page(), 1, za), page::FormatError::none);
  SlabHeap ha;
  ASSERT_TRUE(SlabHeap::format(za, ha));
  auto* obj = static_cast<char*>(ha.alloc(200));
  std::memcpy(obj, "shared", 7);
  const std::ptrdiff_t off = reinterpret_cast<std::byte*>(obj) - a.data();

  Mapping b = Mapping::create(MappingOptions::from_fd(a.fd()));
  page::Buddy zb;
  ASSERT_EQ(page::Buddy::attach(b.data(), b.size(), zb), page::AttachError::none);
  SlabHeap hb;
  ASSERT_TRUE(SlabHeap::attach(zb, hb));
  expect_valid(hb);
  EXPECT_STREQ(reinterpret_cast<char*>(b.data() + off), "shared");
  EXPECT_EQ(hb.free(b.data() + off), FreeStatus::ok);
  EXPECT_EQ(ha.stats().inuse_objects[class_of(200)], 0u);

  Mapping c = Mapping::create(MappingOptions::anonymous(4 << 20));
  page::Buddy zc;
  ASSERT_EQ(page::Buddy::format(c.data(), c.size(), os_page(), 1, zc), page::FormatError::none);
  SlabHeap hc;
  EXPECT_FALSE(SlabHeap::attach(zc, hc));  // a zone without a slab layer
}

}  // namespace
}  // namespace mapheap::slab
