// The size-class table, checked exhaustively: every request size from 0 to
// kMaxSmallSize against class_of and the waste bound, every power-of-two
// alignment from 1 to 4096 against class_for, every class's slab run, and
// object_index against a real division over every offset of every slab.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "slab/size_class.hpp"

namespace mapheap::slab {
namespace {

// Usable in constant expressions: the engine may fold a known size's class.
static_assert(class_of(1) == 0 && class_of(8) == 0 && class_of(9) == 1);
static_assert(class_size(class_of(100)) == 112);
static_assert(class_for(100, 64) != kNoClass && class_size(class_for(100, 64)) == 128);

TEST(SizeClass, TableShape) {
  EXPECT_EQ(check_classes(), nullptr) << check_classes();
  EXPECT_EQ(check_runs(kRuns), nullptr) << check_runs(kRuns);
  EXPECT_EQ(kClassCount, 81u);
  EXPECT_EQ(class_size(0), 8u);
  EXPECT_EQ(class_size(kClassCount - 1), kMaxSmallSize);
  EXPECT_EQ(kMaxSmallSize, 64u * 1024);
  EXPECT_GE(kNoClass, kClassCount);
  EXPECT_EQ(kRuns.page_size, kPageSize);
}

TEST(SizeClass, SizesIncreaseAndAlign) {
  for (ClassIndex c = 0; c < kClassCount; ++c) {
    const std::size_t s = class_size(c);
    SCOPED_TRACE(testing::Message() << "class " << c << " size " << s);
    EXPECT_EQ(s % 8, 0u);
    if (c == 0) {
      EXPECT_EQ(s, 8u);  // the only 8-byte-aligned class
    } else {
      EXPECT_EQ(s % 16, 0u);
      EXPECT_GT(s, class_size(c - 1));
    }
    // Consecutive classes from 128 up differ by at most 1/8.
    if (c > 0 && class_size(c - 1) >= kGeometricStart) {
      EXPECT_LE(8 * s, 9 * class_size(c - 1));
    }
  }
}

// class_of for every size: a class that holds n, the smallest one, monotone,
// and within the waste bound.
TEST(SizeClass, ClassOfEverySize) {
  ClassIndex prev = 0;
  std::size_t worst_small = 0;  // largest waste for n < 128, bytes
  double worst_ratio = 0;       // largest waste / n for n >= 128
  for (std::size_t n = 0; n <= kMaxSmallSize; ++n) {
    const ClassIndex c = class_of(n);
    ASSERT_LT(c, kClassCount) << n;
    const std::size_t s = class_size(c);
    ASSERT_GE(s, n) << n;
    ASSERT_GE(s, 8u) << n;
    // The smallest class that holds n.
    if (c > 0) {
      ASSERT_LT(class_size(c - 1), n) << n;
    }
    ASSERT_GE(c, prev) << "class_of is not monotone at " << n;
    prev = c;
    if (n == 0) continue;
    // The stated bound: 8 * waste < max(n, 128) ...
    ASSERT_LT(8 * (s - n), std::max<std::size_t>(n, kGeometricStart)) << n;
    // ... which implies the brief's form: waste <= max(n/8, 16).
    ASSERT_LE(s - n, std::max<std::size_t>(n / 8, kQuantum)) << n;
    if (n < kGeometricStart) {
      worst_small = std::max(worst_small, s - n);
    } else {
      worst_ratio = std::max(worst_ratio, static_cast<double>(s - n) / static_cast<double>(n));
    }
  }
  EXPECT_EQ(worst_small, 15u);
  EXPECT_LT(worst_ratio, 0.125);
  EXPECT_GT(worst_ratio, 0.12);  // the bound is tight, not loose
}

TEST(SizeClass, OversizeRequestsMapPastTheTable) {
  for (std::size_t n = kMaxSmallSize + 1; n <= (std::size_t{1} << 22); ++n)
    ASSERT_GE(class_of(n), kClassCount) << n;
  for (unsigned b = 15; b < 64; ++b) {
    const std::size_t p = std::size_t{1} << b;
    for (std::size_t n : {p - 1, p, p + 1}) {
      if (n <= kMaxSmallSize) continue;
      EXPECT_GE(class_of(n), kClassCount) << n;
    }
  }
  EXPECT_GE(class_of(std::numeric_limits<std::size_t>::max()), kClassCount);
}

// class_for against a reference walk, for every power-of-two alignment up to
// a page and every size up to kMaxSmallSize.
TEST(SizeClass, ClassForEveryAlignment) {
  for (std::size_t align = 1; align <= kMaxClassAlign; align *= 2) {
    SCOPED_TRACE(testing::Message() << "align " << align);
    ClassIndex ref = 0;  // smallest class >= max(n, 1) whose size is a multiple of align
    for (std::size_t n = 0; n <= kMaxSmallSize; ++n) {
      while (class_size(ref) < std::max<std::size_t>(n, 1) || class_size(ref) % align != 0) {
        ++ref;
        ASSERT_LT(ref, kClassCount) << n;
      }
      const ClassIndex c = class_for(n, align);
      ASSERT_EQ(c, ref) << n;
      ASSERT_GE(class_size(c), n);
      ASSERT_EQ(class_size(c) % align, 0u) << n;
      if (align <= kQuantum) {
        ASSERT_EQ(c, class_of(std::max(n, align))) << n;
      }
    }
  }
}

TEST(SizeClass, ClassForRefusesWhatTheSlabLayerCannotServe) {
  EXPECT_EQ(class_for(kMaxSmallSize + 1, 16), kNoClass);
  EXPECT_EQ(class_for(std::numeric_limits<std::size_t>::max(), 16), kNoClass);
  EXPECT_EQ(class_for(8, kMaxClassAlign * 2), kNoClass);  // the page layer's
  EXPECT_EQ(class_for(8, std::size_t{1} << 40), kNoClass);
  for (std::size_t bad : {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{4095}})
    EXPECT_EQ(class_for(8, bad), kNoClass) << bad;
  EXPECT_EQ(class_size(class_for(1, kMaxClassAlign)), kMaxClassAlign);
  EXPECT_EQ(class_size(class_for(kMaxClassAlign + 1, kMaxClassAlign)), 8192u);
  EXPECT_EQ(class_size(class_for(kMaxSmallSize, kMaxClassAlign)), kMaxSmallSize);
  EXPECT_EQ(class_size(class_for(5, 16)), 16u);  // 8 would not be 16-aligned
  EXPECT_EQ(class_size(class_for(5, 8)), 8u);
}

// The rules a run table must follow, for any page size.
void expect_runs_follow_the_rules(const RunTable& r) {
  ASSERT_EQ(check_runs(r), nullptr) << check_runs(r);
  const std::uint64_t page = r.page_size;
  for (ClassIndex c = 0; c < kClassCount; ++c) {
    const std::uint64_t size = class_size(c);
    const std::uint64_t bytes = r.pages[c] * page;
    SCOPED_TRACE(testing::Message() << "page " << page << " class " << c << " size " << size);
    EXPECT_GE(r.pages[c], 1u);
    // Objects the short cap holds fewer than twice may take the long one.
    const std::uint64_t cap = 2 * size > kMaxRunPages * page ? kMaxLargeRunPages : kMaxRunPages;
    EXPECT_LE(r.pages[c], cap);
    EXPECT_EQ(r.objects[c], bytes / size);
    EXPECT_EQ(std::uint64_t{r.objects[c]} * size + r.tail[c], bytes);
    EXPECT_LE(std::uint64_t{r.tail[c]} * kTailDivisor, bytes);  // tail <= 1/8 of the run
    EXPECT_LE(r.objects[c], kMaxObjectsPerSlab);
    const std::uint64_t want =
        std::min<std::uint64_t>(kMinObjectsPerSlab, cap * page / size);
    EXPECT_GE(r.objects[c], want);
    EXPECT_GE(r.objects[c], 1u);
    // The shortest run that meets both rules.
    for (std::uint64_t p = 1; p < r.pages[c]; ++p) {
      const std::uint64_t b = p * page, o = b / size, t = b - o * size;
      EXPECT_TRUE(o < want || o == 0 || t * kTailDivisor > b) << "a " << p << "-page run would do";
    }
  }
}

TEST(SizeClass, SlabRunsFor4KiBPages) {
  expect_runs_follow_the_rules(kRuns);
  std::uint64_t worst_tail_pm = 0;
  for (ClassIndex c = 0; c < kClassCount; ++c) {
    EXPECT_EQ(class_pages(c), kRuns.pages[c]);
    EXPECT_EQ(class_objects(c), kRuns.objects[c]);
    EXPECT_EQ(class_tail(c), kRuns.tail[c]);
    worst_tail_pm =
        std::max<std::uint64_t>(worst_tail_pm, class_tail(c) * 1000 / (class_pages(c) * kPageSize));
  }
  EXPECT_EQ(worst_tail_pm, 100u);  // 10.0%: class 2304 in 5 pages
  // Small classes fit one page; up to 32 KiB a slab is at most 16 pages (the
  // 32 KiB class: two objects); above, the long runs: 36 KiB, 7 in 63 pages,
  // and 64 KiB, 4 in 64.
  EXPECT_EQ(class_pages(class_of(512)), 1u);
  for (ClassIndex c = 0; c < kClassCount; ++c) {
    if (class_size(c) <= 32768) {
      EXPECT_LE(class_pages(c), kMaxRunPages) << class_size(c);
    }
  }
  EXPECT_EQ(class_objects(class_of(32768)), 2u);
  EXPECT_EQ(class_pages(class_of(32768)), 16u);
  EXPECT_EQ(class_objects(class_of(36864)), 7u);
  EXPECT_EQ(class_pages(class_of(36864)), 63u);
  EXPECT_EQ(class_objects(kClassCount - 1), 4u);
  EXPECT_EQ(class_pages(kClassCount - 1), 64u);
}

TEST(SizeClass, SlabRunsForOtherPageSizes) {
  for (std::size_t page : {std::size_t{8192}, std::size_t{16384}, std::size_t{65536}}) {
    const RunTable r = make_runs(page);
    EXPECT_EQ(r.page_size, page);
    expect_runs_follow_the_rules(r);
  }
  for (std::size_t bad : {std::size_t{0}, std::size_t{3000}, std::size_t{1} << 25})
    EXPECT_NE(make_runs(bad).error, nullptr) << bad;
}

TEST(SizeClass, ObjectIndexDividesExactly) {
  for (ClassIndex c = 0; c < kClassCount; ++c) {
    const std::uint64_t size = class_size(c);
    const std::uint64_t run = class_pages(c) * kPageSize;
    for (std::uint64_t off = 0; off < run; ++off)
      ASSERT_EQ(object_index(c, off), off / size) << "class " << c << " offset " << off;
    // Up to the stated limit: each object's first and last byte.
    for (std::uint64_t start = 0; start < kDivExactBelow; start += size) {
      ASSERT_EQ(object_index(c, start), start / size) << "class " << c << " offset " << start;
      ASSERT_EQ(object_index(c, start + size - 1), start / size) << "class " << c;
    }
  }
}

TEST(SizeClass, FormatTable) {
  static char buf[16384];
  const std::size_t len = format_table(buf, sizeof buf);
  ASSERT_LT(len, sizeof buf);
  EXPECT_EQ(std::strlen(buf), len);
  const std::string text(buf);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2 + kClassCount);
  EXPECT_NE(text.find("     72  32768     16        2"), std::string::npos) << text;
  EXPECT_NE(text.find("     80  65536     64        4"), std::string::npos) << text;

  char small[32];
  std::memset(small, 'x', sizeof small);
  EXPECT_EQ(format_table(small, sizeof small), len);  // the length it needed
  EXPECT_EQ(small[sizeof small - 1], '\0');
  EXPECT_EQ(format_table(nullptr, 0), len);

  RunTable bad = make_runs(3000);
  format_table(buf, sizeof buf, bad);
  EXPECT_NE(std::string(buf).find("bad run table"), std::string::npos) << buf;
}

}  // namespace
}  // namespace mapheap::slab
