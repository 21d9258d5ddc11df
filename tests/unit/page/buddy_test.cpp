// The buddy page allocator against a reference model: random runs of any page
// count are allocated and freed; they never overlap, stay inside the arena,
// keep their contents, and the zone passes check() throughout; freeing
// everything coalesces back to the first tiling.
#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/journal.hpp"
#include "mapheap/mapping.hpp"
#include "page/buddy.hpp"
#include "pal/pal.hpp"
#include "support/journal.hpp"
#include "support/release.hpp"

namespace mapheap::page {
namespace {

std::size_t page() {
  return pal::page_size();
}

// A zone over a fresh anonymous mapping.
struct Zone {
  Mapping mapping;
  Buddy buddy;
  explicit Zone(std::size_t bytes, std::uint32_t align = 1)
      : mapping(Mapping::create(MappingOptions::anonymous(bytes))) {
    EXPECT_EQ(Buddy::format(mapping.data(), mapping.size(), page(), align, buddy),
              FormatError::none);
  }
};

void expect_valid(const Buddy& b) {
  const CheckReport r = b.check();
  ASSERT_TRUE(r.ok) << r.message;
}

bool same_info(const BuddyInfo& a, const BuddyInfo& b) {
  return std::memcmp(a.free_blocks, b.free_blocks, sizeof(a.free_blocks)) == 0 &&
         a.free_pages == b.free_pages && a.large_pages == b.large_pages &&
         a.slab_pages == b.slab_pages;
}

TEST(Buddy, FormatLaysOutHeaderMapAndArena) {
  Zone z(64 << 20, 512);
  const ZoneHeader& h = z.buddy.header();
  EXPECT_EQ(h.total_pages, (64u << 20) / page());
  EXPECT_EQ(h.first_page % 512, 0u);  // the arena starts 2 MiB aligned
  EXPECT_EQ(h.first_page + h.arena_pages, h.total_pages);
  EXPECT_GE(static_cast<std::uint64_t>(h.first_page) * page(),
            sizeof(ZoneHeader) + h.total_pages * sizeof(PageDesc));
  const BuddyInfo bi = z.buddy.info();
  EXPECT_EQ(bi.free_pages, h.arena_pages);
  EXPECT_EQ(bi.large_pages + bi.slab_pages, 0u);
  // Metadata pages are not the zone's to hand out or free.
  for (std::uint32_t i = 0; i < h.first_page; i += 97)
    ASSERT_EQ(z.buddy.free(PageIndex(i)), FreeResult::not_allocated);
  expect_valid(z.buddy);
}

TEST(Buddy, FormatRefusesBadRegions) {
  // 1 MiB at a 2 MiB-aligned address (a 4 MiB mapping's base): the arena,
  // aligned to 2 MiB in memory, cannot start inside it.
  Mapping m = Mapping::create(MappingOptions::anonymous(4 << 20));
  const std::size_t mib = 1 << 20;
  Buddy b;
  EXPECT_EQ(Buddy::format(m.data() + 1, mib - page(), page(), 1, b), FormatError::misaligned);
  EXPECT_EQ(Buddy::format(m.data(), mib - 1, page(), 1, b), FormatError::misaligned);
  EXPECT_EQ(Buddy::format(m.data(), mib, page(), 3, b), FormatError::misaligned);
  EXPECT_EQ(Buddy::format(m.data(), page(), page(), 1, b), FormatError::too_small);
  EXPECT_EQ(Buddy::format(m.data(), mib, page(), 512, b), FormatError::too_small);
}

TEST(Buddy, RunsOfAnyLengthAndTheirRemainder) {
  Zone z(8 << 20);
  const std::uint64_t arena = z.buddy.arena_pages();
  for (std::uint64_t n : {1u, 2u, 3u, 5u, 7u, 100u, 513u}) {
    const BuddyInfo before = z.buddy.info();
    const PageIndex p = z.buddy.alloc(Pages(n));
    ASSERT_TRUE(p.valid()) << n;
    EXPECT_EQ(z.buddy.desc(p).state, PageState::large);
    EXPECT_EQ(z.buddy.desc(p).run, n);
    // Exactly n pages left the free lists: the rest of the 2^k block came back.
    EXPECT_EQ(z.buddy.info().free_pages, before.free_pages - n) << n;
    expect_valid(z.buddy);
  }
  EXPECT_EQ(z.buddy.info().large_pages, 1u + 2 + 3 + 5 + 7 + 100 + 513);
  EXPECT_LE(z.buddy.info().large_pages, arena);
}

TEST(Buddy, TooLargeOrZeroRunsAreRefused) {
  Zone z(4 << 20);
  EXPECT_FALSE(z.buddy.alloc(Pages(0)).valid());
  EXPECT_FALSE(z.buddy.alloc(Pages(z.buddy.arena_pages() + 1)).valid());
  EXPECT_FALSE(z.buddy.alloc(Pages((std::uint64_t{1} << kMaxOrder) + 1)).valid());
  expect_valid(z.buddy);
}

TEST(Buddy, ExhaustionReturnsNoPageThenEverythingComesBack) {
  Zone z(4 << 20);
  const BuddyInfo fresh = z.buddy.info();
  std::vector<PageIndex> runs;
  std::mt19937 rng(7);
  for (;;) {
    const PageIndex p = z.buddy.alloc(Pages(1 + rng() % 9));
    if (!p.valid()) break;
    runs.push_back(p);
  }
  // Nothing larger than what is left can be had; single pages until empty.
  while (true) {
    const PageIndex p = z.buddy.alloc(Pages(1));
    if (!p.valid()) break;
    runs.push_back(p);
  }
  EXPECT_EQ(z.buddy.info().free_pages, 0u);
  EXPECT_EQ(z.buddy.fragmentation_index(Order(0)), 0.0);  // failure for lack of memory
  expect_valid(z.buddy);
  std::shuffle(runs.begin(), runs.end(), rng);
  for (PageIndex p : runs) ASSERT_EQ(z.buddy.free(p), FreeResult::ok);
  expect_valid(z.buddy);
  EXPECT_TRUE(same_info(z.buddy.info(), fresh));
}

TEST(Buddy, MisuseIsReportedAndChangesNothing) {
  Zone z(4 << 20);
  const PageIndex run = z.buddy.alloc(Pages(4));
  const PageIndex slab = z.buddy.alloc(Pages(3), PageState::slab);
  ASSERT_TRUE(run.valid() && slab.valid());
  const BuddyInfo before = z.buddy.info();
  EXPECT_EQ(z.buddy.free(run + Pages(1)), FreeResult::interior);
  EXPECT_EQ(z.buddy.free(slab + Pages(2)), FreeResult::interior);
  EXPECT_EQ(z.buddy.free(PageIndex(0)), FreeResult::not_allocated);
  EXPECT_EQ(z.buddy.free(core::kNoPage), FreeResult::out_of_range);
  EXPECT_EQ(z.buddy.free(PageIndex(z.buddy.header().total_pages)), FreeResult::out_of_range);
  EXPECT_TRUE(same_info(z.buddy.info(), before));
  ASSERT_EQ(z.buddy.free(run), FreeResult::ok);
  EXPECT_EQ(z.buddy.free(run), FreeResult::double_free);
  expect_valid(z.buddy);
  for (FreeResult r : {FreeResult::ok, FreeResult::out_of_range, FreeResult::double_free,
                       FreeResult::interior, FreeResult::not_allocated})
    EXPECT_STRNE(to_string(r), "?");
}

TEST(Buddy, AddressesAndHeads) {
  Zone z(4 << 20);
  const PageIndex slab = z.buddy.alloc(Pages(4), PageState::slab);
  const PageIndex large = z.buddy.alloc(Pages(4));
  for (std::uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(z.buddy.head_of(slab + Pages(i)), slab);
    EXPECT_EQ(z.buddy.index_of(z.buddy.address(slab + Pages(i)) + 100), slab + Pages(i));
  }
  EXPECT_EQ(z.buddy.head_of(large), large);
  EXPECT_FALSE(z.buddy.head_of(large + Pages(1)).valid());  // large tails do not know their head
  EXPECT_FALSE(z.buddy.index_of(z.mapping.data() + z.mapping.size()).valid());
  EXPECT_FALSE(z.buddy.index_of(z.mapping.data() - 1).valid());
  std::memset(z.buddy.address(large), 0xab, 4 * page());  // the run is usable memory
}

TEST(Buddy, FragmentationIndexFollowsTheKernelFormula) {
  Zone z(2 << 20);
  EXPECT_EQ(z.buddy.fragmentation_index(Order(0)), -1.0);  // would succeed
  std::vector<PageIndex> pages;
  for (PageIndex p; (p = z.buddy.alloc(Pages(1))).valid();) pages.push_back(p);
  // Free every other page: F single pages, no two of them buddies.
  std::uint64_t freed = 0;
  for (PageIndex p : pages)
    if ((p.i - z.buddy.first_page()) % 2 == 0) {
      ASSERT_EQ(z.buddy.free(p), FreeResult::ok);
      ++freed;
    }
  expect_valid(z.buddy);
  EXPECT_EQ(z.buddy.info().free_blocks[0], freed);
  EXPECT_EQ(z.buddy.fragmentation_index(Order(0)), -1.0);
  const double f = static_cast<double>(freed);
  EXPECT_DOUBLE_EQ(z.buddy.fragmentation_index(Order(1)), 1.0 - (1.0 + f / 2) / f);
  EXPECT_DOUBLE_EQ(z.buddy.fragmentation_index(Order(4)), 1.0 - (1.0 + f / 16) / f);
  EXPECT_GT(z.buddy.fragmentation_index(Order(4)), 0.9);  // free memory, all in shards
}

TEST(Buddy, RendersLikeProcBuddyinfo) {
  Zone z(4 << 20);
  char buf[512];
  const std::size_t n = z.buddy.render_buddyinfo(buf, sizeof(buf));
  ASSERT_LT(n, sizeof(buf));
  const std::string text(buf, n);
  EXPECT_EQ(text.rfind("Order", 0), 0u);
  EXPECT_NE(text.find("\nfree"), std::string::npos);
  char tiny[8];
  EXPECT_EQ(z.buddy.render_buddyinfo(tiny, sizeof(tiny)), n);  // snprintf-like
  EXPECT_EQ(std::strlen(tiny), sizeof(tiny) - 1);
}

// The reference-model test: what the allocator hands out is checked against a
// map of live runs, and every run carries a stamp that must survive.
TEST(Buddy, RandomRunsAgainstAReferenceModel) {
  Zone z(32 << 20, 512);
  const BuddyInfo fresh = z.buddy.info();
  const std::uint32_t first = z.buddy.first_page(), arena = z.buddy.arena_pages();
  std::map<std::uint32_t, std::uint32_t> live;  // head -> pages
  std::mt19937_64 rng(12345);
  auto stamp = [&](PageIndex p, std::uint32_t n) {
    const std::uint64_t s = p.i * 2654435761u + n;
    std::memcpy(z.buddy.address(p), &s, sizeof(s));
    std::memcpy(z.buddy.address(p + Pages(n - 1)) + page() - sizeof(s), &s, sizeof(s));
  };
  auto stamped = [&](PageIndex p, std::uint32_t n) {
    const std::uint64_t s = p.i * 2654435761u + n;
    std::uint64_t a = 0, b = 0;
    std::memcpy(&a, z.buddy.address(p), sizeof(a));
    std::memcpy(&b, z.buddy.address(p + Pages(n - 1)) + page() - sizeof(b), sizeof(b));
    return a == s && b == s;
  };
  std::uint64_t failures = 0;
  for (int op = 0; op < 400000; ++op) {
    const bool do_alloc = live.empty() || rng() % 100 < 55;
    if (do_alloc) {
      // Mostly small runs, a long tail to a few MiB.
      const std::uint32_t n = rng() % 10 < 8 ? 1 + rng() % 8 : 1 + rng() % 1024;
      const PageState st = rng() % 2 ? PageState::large : PageState::slab;
      const PageIndex p = z.buddy.alloc(Pages(n), st);
      if (!p.valid()) {
        ++failures;
        continue;
      }
      ASSERT_GE(p.i, first);
      ASSERT_LE(static_cast<std::uint64_t>(p.i) + n, static_cast<std::uint64_t>(first) + arena);
      auto next = live.lower_bound(p.i);
      if (next != live.end()) {
        ASSERT_LE(p.i + n, next->first) << "overlaps the next run";
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second, p.i) << "overlaps the previous run";
      }
      live.emplace(p.i, n);
      stamp(p, n);
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      ASSERT_TRUE(stamped(PageIndex(it->first), it->second)) << "contents lost";
      ASSERT_EQ(z.buddy.free(PageIndex(it->first)), FreeResult::ok);
      live.erase(it);
    }
    if (op % 20000 == 0) expect_valid(z.buddy);
  }
  expect_valid(z.buddy);
  std::uint64_t live_pages = 0;
  for (auto& [h, n] : live) live_pages += n;
  const BuddyInfo mid = z.buddy.info();
  EXPECT_EQ(mid.large_pages + mid.slab_pages, live_pages);
  for (auto& [h, n] : live) {
    ASSERT_TRUE(stamped(PageIndex(h), n));
    ASSERT_EQ(z.buddy.free(PageIndex(h)), FreeResult::ok);
  }
  expect_valid(z.buddy);
  EXPECT_TRUE(same_info(z.buddy.info(), fresh)) << "freeing everything must coalesce back";
  RecordProperty("alloc_failures", static_cast<int>(failures));
}

// Reclaim: what is released really leaves RAM, and the counters say so.
using test::release_through_mapping;

std::uint64_t resident_pages(const Zone& z, PageIndex p, std::uint64_t n) {
  return z.mapping
      .residency(static_cast<std::size_t>(z.buddy.address(p) - z.mapping.data()), n * page())
      .resident_pages;
}

// Buddy::free_entries bounds what one free journals: a batch of frees in
// one critical section makes room for that much before each
// (cache::Engine::free_batch), and the static bounds of crash.md add it up.
// Runs of every length a slab takes (and large ones), freed in random order
// so that their blocks merge in cascades, some up to the whole arena.
TEST(Buddy, AFreeJournalsAtMostFreeEntries) {
  Zone z(32 << 20);
  std::mt19937 rng(17);
  test::ScratchJournal journal(z.mapping.data(), z.mapping.size(), Buddy::free_entries(64));
  std::uint32_t most_merging = 0;  // the most entries a free wrote past its run's descriptors
  for (int round = 0; round < 6; ++round) {
    std::vector<std::pair<PageIndex, std::uint32_t>> runs;
    for (;;) {
      const auto n = static_cast<std::uint32_t>(1 + rng() % 64);
      const PageIndex p = z.buddy.alloc(Pages(n), rng() % 2 == 0 ? PageState::slab : PageState::large);
      if (!p.valid()) break;
      runs.emplace_back(p, n);
    }
    ASSERT_GT(runs.size(), 100u);
    std::shuffle(runs.begin(), runs.end(), rng);
    for (const auto& [p, n] : runs) {
      core::JournalScope in_section(&journal);
      ASSERT_EQ(z.buddy.free(p), FreeResult::ok);
      const std::uint32_t wrote = journal.pending();
      ASSERT_LE(wrote, Buddy::free_entries(n)) << "a free of " << n << " pages";
      most_merging = std::max(most_merging, wrote - std::min(wrote, n + 1));
      journal.commit();
    }
    expect_valid(z.buddy);
    EXPECT_EQ(z.buddy.info().free_pages, z.buddy.header().arena_pages);
  }
  // The last frees of a round merged up to the whole arena (2^13 pages).
  EXPECT_GE(most_merging, 8 * Buddy::kMergeStepEntries);
}

// The step costs free_entries is built from, counted on one free whose
// cascade is known: every page of the arena taken, pages 1 to 511 freed in
// order (one free block of each order 0 to 8 is left, each alone on its
// list), then page 0, which merges 9 times. Should a step write more than
// this, the bounds of free_entries, kMergeEntries and the crash contract
// must be checked again.
TEST(Buddy, AFreesCascadeJournalsWhatItsStepsCount) {
  Zone z(8 << 20, 512);
  std::vector<PageIndex> pages;
  for (PageIndex p; (p = z.buddy.alloc(Pages(1))).valid();) pages.push_back(p);
  ASSERT_GE(pages.size(), 512u);
  std::sort(pages.begin(), pages.end(), [](PageIndex a, PageIndex b) { return a.i < b.i; });
  ASSERT_EQ(pages[0].i % 512, 0u);
  for (std::size_t i = 1; i < 512; ++i) ASSERT_EQ(z.buddy.free(pages[i]), FreeResult::ok);
  for (unsigned k = 0; k < 9; ++k) ASSERT_EQ(z.buddy.info().free_blocks[k], 1u) << k;
  test::ScratchJournal journal(z.mapping.data(), z.mapping.size(), Buddy::free_entries(1));
  core::JournalScope in_section(&journal);
  ASSERT_EQ(z.buddy.free(pages[0]), FreeResult::ok);
  // The run's head and the large-page count (2); nine merges, each the
  // unlink of a buddy alone on its list (four counters and its descriptor:
  // Buddy::kUnlinkEntries less the two neighbours' links); the push of the
  // merged block onto an empty list (kPushEntries less the old head's link).
  constexpr std::uint32_t kUnlinkAlone = Buddy::kUnlinkEntries - 2, kPushOnEmpty = Buddy::kPushEntries - 1;
  EXPECT_EQ(journal.pending(), 2 + 9 * kUnlinkAlone + kPushOnEmpty);
  EXPECT_LE(journal.pending(), Buddy::free_entries(1));
  journal.commit();
  EXPECT_EQ(z.buddy.info().free_blocks[9], 1u);
  expect_valid(z.buddy);
}

TEST(BuddyReclaim, AFreshZoneHasNothingToRelease) {
  Zone z(8 << 20);
  EXPECT_EQ(z.buddy.info().released_pages, z.buddy.arena_pages());
  std::uint64_t calls = 0;
  auto count = [](void* ctx, std::byte*, std::size_t) {
    ++*static_cast<std::uint64_t*>(ctx);
    return true;
  };
  EXPECT_EQ(z.buddy.release_free(count, &calls), 0u);
  EXPECT_EQ(calls, 0u);
}

TEST(BuddyReclaim, ReleasingLowersResidentMemory) {
  Zone z(32 << 20, 512);
  const PageIndex run = z.buddy.alloc(Pages(2048));  // 8 MiB
  ASSERT_TRUE(run.valid());
  std::memset(z.buddy.address(run), 1, 2048 * page());
  EXPECT_EQ(resident_pages(z, run, 2048), 2048u);
  ASSERT_EQ(z.buddy.free(run), FreeResult::ok);
  const BuddyInfo freed = z.buddy.info();
  EXPECT_LT(freed.released_pages, freed.free_pages);  // the run came back dirty
  EXPECT_EQ(resident_pages(z, run, 2048), 2048u);     // freeing alone gives nothing back
  const std::uint64_t released = z.buddy.release_free(release_through_mapping, &z.mapping);
  EXPECT_EQ(released, freed.free_pages - freed.released_pages);
  EXPECT_EQ(z.buddy.info().released_pages, z.buddy.info().free_pages);
  EXPECT_EQ(resident_pages(z, run, 2048), 0u);
  expect_valid(z.buddy);
  // A failed release leaves the block dirty.
  const PageIndex again = z.buddy.alloc(Pages(16));
  std::memset(z.buddy.address(again), 1, 16 * page());
  ASSERT_EQ(z.buddy.free(again), FreeResult::ok);
  auto refuse = [](void*, std::byte*, std::size_t) { return false; };
  EXPECT_EQ(z.buddy.release_free(refuse, nullptr), 0u);
  EXPECT_LT(z.buddy.info().released_pages, z.buddy.info().free_pages);
  expect_valid(z.buddy);
}

TEST(BuddyReclaim, DecayReleasesOnlyOldFreeBlocks) {
  Zone z(16 << 20, 512);
  const PageIndex a = z.buddy.alloc(Pages(64));
  const PageIndex spacer1 = z.buddy.alloc(Pages(64));
  const PageIndex b = z.buddy.alloc(Pages(64));
  const PageIndex spacer2 = z.buddy.alloc(Pages(64));
  for (PageIndex p : {a, b}) std::memset(z.buddy.address(p), 1, 64 * page());
  z.buddy.set_clock(100);
  ASSERT_EQ(z.buddy.free(a), FreeResult::ok);
  z.buddy.set_clock(200);
  ASSERT_EQ(z.buddy.free(b), FreeResult::ok);
  z.buddy.set_clock(250);
  // Older than 100 ticks: a (freed at 100) goes, b (freed at 200) stays.
  EXPECT_GT(z.buddy.release_free(release_through_mapping, &z.mapping, 100), 0u);
  EXPECT_EQ(resident_pages(z, a, 64), 0u);
  EXPECT_EQ(resident_pages(z, b, 64), 64u);
  z.buddy.set_clock(300);
  EXPECT_GT(z.buddy.release_free(release_through_mapping, &z.mapping, 100), 0u);
  EXPECT_EQ(resident_pages(z, b, 64), 0u);
  expect_valid(z.buddy);
  (void)spacer1;
  (void)spacer2;
}

// A zone over a large reservation with a small committed prefix: the arena
// grows in place, its new pages free and released, merging with the old
// free blocks; pages past the committed end are not the zone's.
TEST(BuddyGrowth, ArenaGrowsIntoTheReservation) {
  Mapping m = Mapping::create(MappingOptions::anonymous(16 << 20));
  Buddy b;
  ASSERT_EQ(Buddy::format(m.data(), m.size(), page(), 1, b, 1 << 20), FormatError::none);
  expect_valid(b);
  EXPECT_EQ(b.committed_bytes(), std::size_t{1} << 20);
  EXPECT_EQ(b.region_bytes(), std::size_t{16} << 20);
  const std::uint32_t arena0 = b.arena_pages();
  std::vector<PageIndex> runs;
  for (PageIndex p; (p = b.alloc(Pages(7))).valid();) runs.push_back(p);
  EXPECT_FALSE(b.alloc(Pages(64)).valid());
  // Past the committed end: not a page of the zone.
  EXPECT_FALSE(b.index_of(m.data() + (2 << 20)).valid());
  EXPECT_FALSE(b.grow((4 << 20) + 100));  // not a page multiple
  EXPECT_FALSE(b.grow(32 << 20));         // beyond the reservation
  ASSERT_TRUE(b.grow(4 << 20));
  ASSERT_TRUE(b.grow(2 << 20));  // smaller: nothing to do
  expect_valid(b);
  EXPECT_EQ(b.committed_bytes(), std::size_t{4} << 20);
  EXPECT_EQ(b.arena_pages(), arena0 + (3u << 20) / page());
  const BuddyInfo grown = b.info();
  EXPECT_GE(grown.released_pages, (3u << 20) / page());  // the new pages were never touched
  const PageIndex big = b.alloc(Pages(256));
  ASSERT_TRUE(big.valid());
  runs.push_back(big);
  for (PageIndex p : runs) ASSERT_EQ(b.free(p), FreeResult::ok);
  expect_valid(b);
  EXPECT_EQ(b.info().free_pages, b.arena_pages());
  // The grown zone attaches as such.
  Buddy again;
  ASSERT_EQ(Buddy::attach(m.data(), m.size(), again), AttachError::none);
  EXPECT_EQ(again.committed_bytes(), std::size_t{4} << 20);
  expect_valid(again);
}

// Isolated blocks (being released outside the owner's lock) are off the free
// lists: never allocated, a free into one is a double free, check() counts
// them, and putting them back merges them with their buddies again.
TEST(BuddyReclaim, IsolatedBlocksAreOffLimitsUntilPutBack) {
  Zone z(8 << 20);
  const PageIndex a = z.buddy.alloc(Pages(64)), b = z.buddy.alloc(Pages(64));
  ASSERT_EQ(z.buddy.free(a), FreeResult::ok);
  ASSERT_EQ(z.buddy.free(b), FreeResult::ok);
  const BuddyInfo before = z.buddy.info();
  PageIndex iso[8];
  const std::size_t n = z.buddy.isolate_dirty(0, iso, 8);
  ASSERT_GE(n, 1u);
  std::uint64_t isolated = 0;
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_EQ(z.buddy.desc(iso[i]).state, PageState::isolated);
    isolated += z.buddy.block_bytes(iso[i]) / page();
    EXPECT_EQ(z.buddy.free(iso[i]), FreeResult::double_free);
    EXPECT_TRUE(z.buddy.in_free_block(iso[i] + Pages(1)));
  }
  expect_valid(z.buddy);
  EXPECT_EQ(z.buddy.info().isolated_pages, isolated);
  EXPECT_EQ(z.buddy.info().free_pages, before.free_pages - isolated);
  // Allocating everything that is left never lands in an isolated block.
  std::vector<PageIndex> taken;
  for (PageIndex p; (p = z.buddy.alloc(Pages(1))).valid();) {
    taken.push_back(p);
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_FALSE(p.i >= iso[i].i && p.i < iso[i].i + z.buddy.block_bytes(iso[i]) / page());
  }
  for (PageIndex p : taken) ASSERT_EQ(z.buddy.free(p), FreeResult::ok);
  for (std::size_t i = 0; i < n; ++i) z.buddy.put_back(iso[i], i % 2 == 0);
  expect_valid(z.buddy);
  const BuddyInfo after = z.buddy.info();
  EXPECT_EQ(after.isolated_pages, 0u);
  EXPECT_EQ(after.free_pages, before.free_pages);
  // Coalescing is canonical: the same free pages give the same blocks.
  for (unsigned k = 0; k < kOrders; ++k) EXPECT_EQ(after.free_blocks[k], before.free_blocks[k]) << k;
}

// Recovery puts back every block a dead process left isolated; a heap that
// lived long can have thousands, more than one section's journal takes.
// reclaim_isolated goes as far as the journal has room for, says where it
// stopped, and the next section goes on from there.
TEST(BuddyReclaim, ReclaimingIsolatedBlocksFitsTheJournal) {
  Zone z(8 << 20, 512);
  std::vector<PageIndex> pages;
  for (PageIndex p; (p = z.buddy.alloc(Pages(1))).valid();) pages.push_back(p);
  for (std::size_t i = 0; i < pages.size(); i += 2) ASSERT_EQ(z.buddy.free(pages[i]), FreeResult::ok);
  std::vector<PageIndex> iso(pages.size());
  const std::size_t n = z.buddy.isolate_dirty(0, iso.data(), iso.size());
  ASSERT_GT(n, 500u);
  ASSERT_EQ(z.buddy.info().isolated_pages, n);

  // Room for a few dozen blocks past one merge's worst case.
  constexpr std::uint32_t kCapacity = 2 * Buddy::kMergeEntries + 100;
  test::ScratchJournal journal(z.mapping.data(), z.mapping.size(), kCapacity);
  std::uint64_t back = 0;
  unsigned sections = 0;
  for (std::uint32_t from = 0; from < z.buddy.end_page();) {
    ASSERT_LT(sections, n) << "no progress";
    core::JournalScope scope(&journal);
    const std::uint32_t was = from;
    back += z.buddy.reclaim_isolated(from);
    EXPECT_GT(from, was);
    // It stops only when the journal could not take one more block.
    if (from < z.buddy.end_page()) {
      EXPECT_LT(journal.room(), Buddy::kMergeEntries);
    }
    journal.commit();
    ++sections;
    expect_valid(z.buddy);
  }
  EXPECT_GT(sections, 10u);
  EXPECT_EQ(back, n);
  EXPECT_EQ(z.buddy.info().isolated_pages, 0u);
  // Without a journal (or a large one) it is one call.
  for (std::size_t i = 1; i < pages.size(); i += 2) ASSERT_EQ(z.buddy.free(pages[i]), FreeResult::ok);
  const std::size_t m = z.buddy.isolate_dirty(0, iso.data(), iso.size());
  ASSERT_GE(m, 1u);
  std::uint32_t from = 0;
  EXPECT_GT(z.buddy.reclaim_isolated(from), 0u);
  EXPECT_EQ(from, z.buddy.end_page());
  EXPECT_EQ(z.buddy.info().isolated_pages, 0u);
  expect_valid(z.buddy);
}

TEST(BuddyReclaim, DecayIsRightAcrossAClockWrap) {
  Zone z(8 << 20);
  const PageIndex p = z.buddy.alloc(Pages(64));
  std::memset(z.buddy.address(p), 1, 64 * page());
  z.buddy.set_clock(0xFFFFFF00u);
  ASSERT_EQ(z.buddy.free(p), FreeResult::ok);
  z.buddy.set_clock(0x1000u);  // 0x1100 ticks later, past the wrap
  EXPECT_GT(z.buddy.release_free(release_through_mapping, &z.mapping, 1000), 0u);
  EXPECT_EQ(resident_pages(z, p, 64), 0u);
}

TEST(Buddy, AlignedRunsAreExactAndAlignedInMemory) {
  // A base that is page aligned but not 2 MiB aligned: alignment must come
  // from the addresses, not from offsets within the region.
  Mapping m = Mapping::create(MappingOptions::anonymous(32 << 20));
  Buddy b;
  ASSERT_EQ(Buddy::format(m.data() + page(), m.size() - page(), page(), 1, b), FormatError::none);
  for (std::uint64_t align_pages : {2u, 16u, 512u}) {
    for (std::uint64_t n : {1u, 3u, 33u}) {
      const BuddyInfo before = b.info();
      const PageIndex p = b.alloc_aligned(Pages(n), align_pages);
      ASSERT_TRUE(p.valid()) << n << " " << align_pages;
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.address(p)) % (align_pages * page()), 0u);
      EXPECT_EQ(b.desc(p).run, n);                            // exactly n pages
      EXPECT_EQ(b.info().free_pages, before.free_pages - n);  // lead and trail came back
      expect_valid(b);
      ASSERT_EQ(b.free(p), FreeResult::ok);
    }
  }
  EXPECT_FALSE(b.alloc_aligned(Pages(1), 3).valid());  // not a power of two
  expect_valid(b);
}

TEST(Buddy, CorruptStatesAndMergedRunsAreClassified) {
  Zone z(4 << 20);
  const PageIndex a = z.buddy.alloc(Pages(4));
  auto* map = reinterpret_cast<PageDesc*>(z.mapping.data() + sizeof(ZoneHeader));
  map[a.i + 1].state = static_cast<PageState>(7);  // a byte no zone writes
  map[a.i + 1].run = 2;
  EXPECT_EQ(z.buddy.free(a + Pages(1)), FreeResult::interior);
  map[a.i + 1].state = PageState::tail;
  map[a.i + 1].run = 0;
  map[1].state = PageState::large;  // metadata dressed up as a run
  EXPECT_EQ(z.buddy.free(PageIndex(1)), FreeResult::not_allocated);
  map[1].state = PageState::reserved;
  // A run freed and merged into its lower buddy: its head is now a tail, and
  // a second free is still a double free.
  const PageIndex b = z.buddy.alloc(Pages(16)), c = z.buddy.alloc(Pages(16));
  ASSERT_EQ(z.buddy.free(c), FreeResult::ok);
  ASSERT_EQ(z.buddy.free(b), FreeResult::ok);
  EXPECT_EQ(z.buddy.free(c), FreeResult::double_free);
  EXPECT_EQ(z.buddy.free(b), FreeResult::double_free);
  EXPECT_EQ(z.buddy.free(a + Pages(2)), FreeResult::interior);
  expect_valid(z.buddy);
}

// Attach validates the header; check() catches corruption of the rest.
TEST(Buddy, AttachAndCorruption) {
  Zone z(4 << 20);
  const PageIndex p = z.buddy.alloc(Pages(5));
  Buddy again;
  ASSERT_EQ(Buddy::attach(z.mapping.data(), z.mapping.size(), again), AttachError::none);
  EXPECT_TRUE(same_info(again.info(), z.buddy.info()));
  EXPECT_EQ(Buddy::attach(z.mapping.data(), 16, again), AttachError::too_small);
  EXPECT_EQ(Buddy::attach(z.mapping.data(), z.mapping.size() - page(), again),
            AttachError::bad_layout);
  auto* h = reinterpret_cast<ZoneHeader*>(z.mapping.data());
  h->version += 1;
  EXPECT_EQ(Buddy::attach(z.mapping.data(), z.mapping.size(), again), AttachError::bad_version);
  h->version -= 1;
  h->magic ^= 1;
  EXPECT_EQ(Buddy::attach(z.mapping.data(), z.mapping.size(), again), AttachError::bad_magic);
  h->magic ^= 1;

  h->released_pages += 1;
  CheckReport r = z.buddy.check();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string(r.message).find("released pages"), std::string::npos) << r.message;
  h->released_pages -= 1;

  h->free_pages += 1;
  r = z.buddy.check();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string(r.message).find("free pages"), std::string::npos) << r.message;
  h->free_pages -= 1;
  expect_valid(z.buddy);

  auto* map = reinterpret_cast<PageDesc*>(z.mapping.data() + sizeof(ZoneHeader));
  map[p.i + 2].state = PageState::free;  // a stray head inside a run
  r = z.buddy.check();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string(r.message).find("page " + std::to_string(p.i + 2)), std::string::npos)
      << r.message;
  map[p.i + 2].state = PageState::tail;
  const std::uint32_t head = h->free_head[0];
  if (head != PageIndex::kNone) {
    map[head].next = 0;  // a link into the metadata
    r = z.buddy.check();
    EXPECT_FALSE(r.ok);
    EXPECT_NE(std::string(r.message).find("outside the arena"), std::string::npos) << r.message;
  }
}

// Position independence: the zone lives in a memfd; a second mapping of the
// same object at another address attaches and sees, and makes, the same state.
TEST(Buddy, TheSameZoneFromTwoAddresses) {
  Mapping a = Mapping::create(MappingOptions::memfd("zone", 8 << 20));
  Buddy ba;
  ASSERT_EQ(Buddy::format(a.data(), a.size(), page(), 1, ba), FormatError::none);
  const PageIndex p = ba.alloc(Pages(17));
  std::memcpy(ba.address(p), "hello", 5);
  Mapping b = Mapping::create(MappingOptions::from_fd(a.fd()));
  ASSERT_NE(a.data(), b.data());
  Buddy bb;
  ASSERT_EQ(Buddy::attach(b.data(), b.size(), bb), AttachError::none);
  expect_valid(bb);
  EXPECT_EQ(std::memcmp(bb.address(p), "hello", 5), 0);  // same index, its own address
  ASSERT_EQ(bb.free(p), FreeResult::ok);
  EXPECT_EQ(ba.info().large_pages, 0u);
  expect_valid(ba);
}

// Free buddies coalesce only within one state: a dirty block next to a
// released one stays apart (the dirty count stays exact), allocations take
// the dirty memory first, and the two merge (as dirty) only when nothing
// else is large enough.
TEST(BuddyReclaim, DirtyAndReleasedBuddiesStayApartUntilNeeded) {
  Zone z(4 << 20, 512);
  const PageIndex a = z.buddy.alloc(Pages(256));
  const PageIndex b = z.buddy.alloc(Pages(256));
  ASSERT_TRUE(a.valid() && b.valid());
  const std::uint32_t first = z.buddy.header().first_page;
  ASSERT_EQ((a.i - first) ^ 256u, b.i - first) << "the two runs are buddies";
  std::vector<PageIndex> filler;  // everything else, so that only a and b come free
  for (PageIndex p; (p = z.buddy.alloc(Pages(1))).valid();) filler.push_back(p);
  ASSERT_EQ(z.buddy.free(b), FreeResult::ok);
  EXPECT_EQ(z.buddy.release_free(release_through_mapping, &z.mapping), 256u);
  ASSERT_EQ(z.buddy.free(a), FreeResult::ok);
  EXPECT_EQ(z.buddy.dirty_pages(), 256u);  // not 512: b's pages are not counted
  EXPECT_EQ(z.buddy.info().free_blocks[8], 2u);
  expect_valid(z.buddy);
  // A 256-page run takes the dirty block (a), not the released one.
  const PageIndex again = z.buddy.alloc(Pages(256));
  EXPECT_EQ(again.i, a.i);
  ASSERT_EQ(z.buddy.free(again), FreeResult::ok);
  // Nothing of 512 pages in one state: the two merge on demand.
  const PageIndex both = z.buddy.alloc(Pages(512));
  ASSERT_TRUE(both.valid());
  EXPECT_EQ(both.i, a.i);
  EXPECT_EQ(z.buddy.dirty_pages(), 0u);
  expect_valid(z.buddy);
  ASSERT_EQ(z.buddy.free(both), FreeResult::ok);
  EXPECT_EQ(z.buddy.dirty_pages(), 512u);  // freed as a run: dirty as a whole
  for (PageIndex p : filler) ASSERT_EQ(z.buddy.free(p), FreeResult::ok);
  expect_valid(z.buddy);
}

// release_free's page budget stops it early, and isolates no more than it needs.
TEST(BuddyReclaim, ReleaseStopsAtItsBudget) {
  Zone z(16 << 20, 512);
  std::vector<PageIndex> runs;
  for (int i = 0; i < 8; ++i) runs.push_back(z.buddy.alloc(Pages(64)));
  for (std::size_t i = 0; i < runs.size(); i += 2) ASSERT_EQ(z.buddy.free(runs[i]), FreeResult::ok);
  EXPECT_EQ(z.buddy.dirty_pages(), 256u);
  const std::uint64_t got = z.buddy.release_free(release_through_mapping, &z.mapping, 0, 100);
  EXPECT_GE(got, 100u);
  EXPECT_LT(got, 256u);
  EXPECT_EQ(z.buddy.dirty_pages(), 256u - got);
  expect_valid(z.buddy);
}


// A zone whose free pages alternate dirty and released has as many mixed
// pairs as pages: an allocation larger than any one block merges them all.
// In a shared heap every store of a merge is journaled; merge_mixed stops
// while its section's journal keeps Buddy::kMergeReserve entries, says so
// (merge_cut), and the next section goes on. (Before, one allocation on a
// 16 MiB shared heap in this state filled the 16,384-entry journal and
// aborted the process.)
struct MixedZone {
  Zone z{8 << 20, 512};
  std::vector<PageIndex> pages;
  MixedZone() {
    for (PageIndex p; (p = z.buddy.alloc(Pages(1))).valid();) pages.push_back(p);
    const std::uint32_t first = z.buddy.header().first_page;
    for (PageIndex p : pages) {
      if ((p.i - first) % 2 == 0) {
        EXPECT_EQ(z.buddy.free(p), FreeResult::ok);
      }
    }
    z.buddy.release_free(release_through_mapping, &z.mapping);
    for (PageIndex p : pages) {
      if ((p.i - first) % 2 == 1) {
        EXPECT_EQ(z.buddy.free(p), FreeResult::ok);
      }
    }
  }
};

TEST(BuddyReclaim, MergingMixedBuddiesStopsWhileTheJournalHasRoom) {
  MixedZone m;
  Buddy& b = m.z.buddy;
  ASSERT_GT(m.pages.size(), 1500u);
  ASSERT_EQ(b.info().free_blocks[0], m.pages.size()) << "every free page on its own";
  // A journal with room for a few dozen merges past the reserve.
  constexpr std::uint32_t kCapacity = Buddy::kMergeReserve + 1000;
  test::ScratchJournal journal(m.z.mapping.data(), m.z.mapping.size(), kCapacity);

  // A cut section rolled back leaves the zone as it was: each merge is whole.
  const BuddyInfo before = b.info();
  {
    core::JournalScope scope(&journal);
    b.clear_merge_cut();
    EXPECT_FALSE(b.alloc(Pages(256)).valid());
    EXPECT_TRUE(b.merge_cut());
    EXPECT_GT(journal.pending(), 0u);
    // The reserve is kept, and no more than one merge's worth above it.
    EXPECT_GE(journal.room(), Buddy::kMergeReserve);
    EXPECT_LT(journal.room(), Buddy::kMergeReserve + Buddy::kMergeEntries);
  }
  journal.rollback();
  EXPECT_TRUE(same_info(b.info(), before));
  expect_valid(b);

  // Committed section by section, the merges add up to the block.
  unsigned sections = 0;
  PageIndex run;
  while (!run.valid()) {
    ASSERT_LT(sections, m.pages.size()) << "no progress";
    core::JournalScope scope(&journal);
    b.clear_merge_cut();
    run = b.alloc(Pages(256));
    ++sections;
    if (!run.valid()) {
      EXPECT_TRUE(b.merge_cut()) << "it failed for want of pages, in section " << sections;
      EXPECT_GE(journal.room(), Buddy::kMergeReserve);
    }
    journal.commit();
    expect_valid(b);
  }
  EXPECT_GT(sections, 2u);
  EXPECT_EQ(b.free(run), FreeResult::ok);
  expect_valid(b);
}

// Outside a journaled section (the process heap) the merge is not cut.
TEST(BuddyReclaim, MergingMixedBuddiesWithoutAJournalIsWhole) {
  MixedZone m;
  m.z.buddy.clear_merge_cut();
  const PageIndex run = m.z.buddy.alloc(Pages(256));
  ASSERT_TRUE(run.valid());
  EXPECT_FALSE(m.z.buddy.merge_cut());
  expect_valid(m.z.buddy);
}

}  // namespace
}  // namespace mapheap::page
