// slab/size_class.hpp — the slab layer's size classes: which class serves a
// request of n bytes (class_of, class_for), how big each class's objects are
// (class_size), and how long a slab of each class is (class_pages,
// class_objects, class_tail). Everything here is computed at compile time by
// the make_* functions below and checked by static_asserts; there is no
// hand-typed number in the table.
//
// THE CLASSES (81 of them, 8 B .. 64 KiB)
//
//   8 | 16 32 48 ... 128 | 144 160 ... 256 | 288 320 ... 512 | ... | 36864 ... 65536
//   ^   linear, step 16    8 per doubling: step 2^k/8 between 2^k and 2^(k+1)
//
// * 8 is the only class that is not a multiple of 16. A request of at most 8
//   bytes cannot hold an object that needs 16-byte alignment, so the C
//   guarantee (alignof(max_align_t) = 16 on x86-64) is kept by every class
//   that can be asked for it.
// * From 16 to 128 the step is 16, the alignment granule: no finer step keeps
//   16-byte alignment. Waste is at most 15 bytes here.
// * From 128 up there are 8 classes per power of two, evenly spaced: between
//   2^k and 2^(k+1) the step is 2^(k-3), always a multiple of 16 because
//   k >= 7. A request lands at most one step (minus a byte) below its class,
//   and it is larger than 2^k, so it wastes less than 1/8 of itself. 128 is
//   where the two rules meet: 1/8 of 128 is one granule.
//   jemalloc and mimalloc space 4 classes per doubling (up to 25% waste);
//   the issue asks for 12.5%, which costs twice the classes, i.e. twice the
//   partially filled slabs a program keeps. gperftools' tcmalloc and Go's
//   runtime step by size/8 from 128 too (and then cap the step at 256 above
//   2 KiB, for still more classes; we stay geometric: 81 classes in all).
// * The classes end at 64 KiB, not 32: requests of 32-64 KiB are common
//   (buffers, hash tables), and above the classes every request takes the
//   zone lock; in a shared heap that is a robust mutex and a journal. With
//   log-uniform sizes of 8 B-64 KiB, one request in 13 was such a block, and
//   capping the same workload at 32 KiB made a mapped heap 1.6x faster.
//
// THE WASTE BOUND (tested for every n, and implied by a static_assert)
//
//   for every n in [0, kMaxSmallSize]:  8 * (class_size(class_of(n)) - n) < max(n, 128)
//
// i.e. a request wastes less than n/8 bytes (12.5%) when n >= 128, and less
// than 16 bytes (one granule) below that. In the brief's form:
// class_size(class_of(n)) - n <= max(n/8, 16) holds a fortiori.
//
// SLABS
//
// A slab of class c is a run of class_pages(c) OS pages holding
// class_objects(c) objects back to back from the run's first byte; its
// bookkeeping is in the page map, outside the run, so no header is reserved.
// The run length is the smallest page count p in [1, max_run_pages(size)]
// such that
//   * the tail (run bytes not covered by objects) is at most 1/8 of the run,
//   * the slab holds at least kMinObjectsPerSlab objects, or as many as a
//     run of max_run_pages(size) holds if that is fewer (classes above 8 KiB).
// The first keeps memory efficiency (worst tail in the 4 KiB table: 10%,
// class 2304 in 5 pages); it is tcmalloc's and Go's span rule. The second
// amortizes taking a slab from the buddy allocator (under the zone lock) over
// several objects, as tcmalloc sizes spans for a transfer batch. The cap,
// kMaxRunPages, keeps a partly used slab from pinning much memory (at most
// 64 KiB at 4 KiB pages) and keeps object counts within the page map's 16
// bits. Objects that kMaxRunPages holds fewer than twice (above 32 KiB at
// 4 KiB pages) may take up to kMaxLargeRunPages (256 KiB): 16 pages would
// hold one 36 KiB object and waste 28 KiB, and a slab of one object saves
// nothing. Runs need not be powers of two: the buddy allocator serves any
// page count.
//
// PAGE SIZE. kPageSize (4096) is the page the static table is made for, the
// x86-64 base page. The page-dependent part (RunTable) is produced by
// make_runs(page_size), so a build or a zone with another page size (16 KiB or
// 64 KiB on arm64) computes its own; the engine must use runs made for the
// page size its zone records. The class sizes do not depend on the page.
//
// Dependencies: the C++ standard library only.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace mapheap::slab {

// ---------------------------------------------------------------- parameters

inline constexpr std::size_t kPageSize = 4096;            // page of the static run table
inline constexpr std::size_t kMinClassSize = 8;           // the only 8-byte-aligned class
inline constexpr std::size_t kQuantum = 16;               // alignment of every class >= 16
inline constexpr std::size_t kGeometricStart = 128;       // from here: 8 classes per doubling
inline constexpr unsigned kStepsLog2 = 3;                 // 2^3 classes per doubling: waste < 1/8
inline constexpr std::size_t kMaxSmallSize = 65536;       // the largest class
inline constexpr std::size_t kLookupMax = 1024;           // class_of by table up to here
inline constexpr unsigned kMaxRunPages = 16;              // longest slab run, in pages
inline constexpr unsigned kMaxLargeRunPages = 64;         // ... for objects it holds < 2 of
inline constexpr unsigned kMinObjectsPerSlab = 8;         // unless kMaxRunPages holds fewer
inline constexpr unsigned kTailDivisor = 8;               // slab tail <= run bytes / 8
inline constexpr std::size_t kMaxClassAlign = kPageSize;  // class_for: larger is the page layer's
// PageDesc counts a slab's objects in 16 bits (slab_inuse, slab_carved).
inline constexpr std::uint32_t kMaxObjectsPerSlab = 0xffff;

inline constexpr unsigned kClassesPerDoubling = 1u << kStepsLog2;

// 1 (the 8-byte class) + the linear classes 16..128 + 8 per doubling above.
inline constexpr unsigned kClassCount =
    1 + static_cast<unsigned>(kGeometricStart / kQuantum) +
    kClassesPerDoubling *
        static_cast<unsigned>(std::countr_zero(kMaxSmallSize) - std::countr_zero(kGeometricStart));

// A class's index: 0 .. kClassCount-1. Plain unsigned so that it stores into
// the page map's 16-bit field and indexes arrays without ceremony.
using ClassIndex = unsigned;
// "No class": class_for's answer when the slab layer cannot serve a request.
// Fits the 8- and 16-bit fields classes are stored in; >= kClassCount.
inline constexpr ClassIndex kNoClass = 0xff;

static_assert(std::has_single_bit(kPageSize) && std::has_single_bit(kMaxSmallSize) &&
              std::has_single_bit(kGeometricStart) && std::has_single_bit(kLookupMax));
static_assert(kGeometricStart >> kStepsLog2 == kQuantum,
              "the geometric steps start where a step equals the granule");
static_assert(kGeometricStart <= kLookupMax && kLookupMax <= kMaxSmallSize);
static_assert(kClassCount == 81 && kClassCount < kNoClass);

// ---------------------------------------------------------------- tables

// Bits of the fixed-point reciprocal used by object_index (see there).
inline constexpr unsigned kDivShift = 40;
// object_index is exact for every offset below this (16 MiB: any run).
inline constexpr std::uint64_t kDivExactBelow = std::uint64_t{1} << 24;

inline constexpr std::size_t kLookupEntries = (kLookupMax >> 3) + 1;
// Rows of ClassTable::aligned: alignments 32, 64, ..., kMaxClassAlign.
inline constexpr unsigned kAlignRows =
    static_cast<unsigned>(std::countr_zero(kMaxClassAlign) - std::countr_zero(kQuantum));

// The page-independent part: sizes and lookup tables. Struct of arrays, so
// each fast-path lookup touches only the array it needs.
struct ClassTable {
  std::uint32_t size[kClassCount] = {};
  // ceil(2^kDivShift / size): offset / size == (offset * div_magic) >> kDivShift.
  std::uint64_t div_magic[kClassCount] = {};
  // lookup[(n + 7) >> 3] == class_of(n) for n <= kLookupMax. Every class size
  // is a multiple of 8, so all n in one 8-byte bucket share a class.
  std::uint8_t lookup[kLookupEntries] = {};
  // aligned[r][c]: the smallest class >= c whose size is a multiple of
  // 32 << r, or kNoClass.
  std::uint8_t aligned[kAlignRows][kClassCount] = {};
};

// The page-dependent part: slab run lengths for one page size.
struct RunTable {
  std::uint32_t page_size = 0;
  std::uint16_t pages[kClassCount] = {};    // run length in pages
  std::uint16_t objects[kClassCount] = {};  // objects per slab
  std::uint32_t tail[kClassCount] = {};     // run bytes past the last object
  // Why no run length met the rules for some class; nullptr if all did.
  const char* error = nullptr;
};

constexpr ClassTable make_classes() noexcept {
  ClassTable t{};
  unsigned c = 0;
  t.size[c++] = static_cast<std::uint32_t>(kMinClassSize);
  for (std::size_t s = kQuantum; s <= kGeometricStart; s += kQuantum)
    t.size[c++] = static_cast<std::uint32_t>(s);
  for (std::size_t base = kGeometricStart; base < kMaxSmallSize; base *= 2) {
    const std::size_t step = base >> kStepsLog2;
    for (unsigned j = 1; j <= kClassesPerDoubling; ++j)
      t.size[c++] = static_cast<std::uint32_t>(base + j * step);
  }
  for (unsigned i = 0; i < kClassCount; ++i) {
    const std::uint64_t d = t.size[i];
    t.div_magic[i] = ((std::uint64_t{1} << kDivShift) + d - 1) / d;
  }
  // Bucket b holds sizes (8(b-1), 8b]: its class is the first one >= 8b.
  unsigned cls = 0;
  for (std::size_t b = 0; b < kLookupEntries; ++b) {
    while (t.size[cls] < b * 8) ++cls;
    t.lookup[b] = static_cast<std::uint8_t>(cls);
  }
  for (unsigned r = 0; r < kAlignRows; ++r) {
    const std::uint32_t align = static_cast<std::uint32_t>(kQuantum << (r + 1));
    std::uint8_t next = static_cast<std::uint8_t>(kNoClass);
    for (unsigned i = kClassCount; i-- > 0;) {
      if (t.size[i] % align == 0) next = static_cast<std::uint8_t>(i);
      t.aligned[r][i] = next;
    }
  }
  return t;
}

inline constexpr ClassTable kClasses = make_classes();

// The longest slab run of objects of `size` bytes, in pages of `page_size`.
constexpr unsigned max_run_pages(std::size_t size, std::size_t page_size) noexcept {
  return 2 * size > kMaxRunPages * page_size ? kMaxLargeRunPages : kMaxRunPages;
}

// The slab runs of every class for pages of `page_size` bytes (a power of two
// >= kMinClassSize). Callable at run time too, for a zone whose page size is
// not kPageSize. On failure, `error` says why and the table must not be used.
constexpr RunTable make_runs(std::size_t page_size) noexcept {
  RunTable t{};
  t.page_size = static_cast<std::uint32_t>(page_size);
  if (!std::has_single_bit(page_size) || page_size < kMinClassSize || page_size > (1u << 24)) {
    t.error = "page size is not a power of two in [8, 16 MiB]";
    return t;
  }
  for (unsigned c = 0; c < kClassCount; ++c) {
    const std::size_t size = kClasses.size[c];
    const unsigned max_pages = max_run_pages(size, page_size);
    const std::size_t cap_objects = max_pages * page_size / size;
    const std::size_t want = cap_objects < kMinObjectsPerSlab ? cap_objects : kMinObjectsPerSlab;
    bool found = false;
    for (unsigned p = 1; p <= max_pages && !found; ++p) {
      const std::size_t bytes = p * page_size;
      const std::size_t objects = bytes / size;
      const std::size_t tail = bytes - objects * size;
      if (objects == 0 || objects < want || tail * kTailDivisor > bytes) continue;
      if (objects > kMaxObjectsPerSlab) {
        t.error = "a one-page slab holds more objects than the page map counts (16 bits)";
        return t;
      }
      t.pages[c] = static_cast<std::uint16_t>(p);
      t.objects[c] = static_cast<std::uint16_t>(objects);
      t.tail[c] = static_cast<std::uint32_t>(tail);
      found = true;
    }
    if (!found) {
      t.error = "no run of at most max_run_pages pages keeps the tail within 1/8";
      return t;
    }
  }
  return t;
}

inline constexpr RunTable kRuns = make_runs(kPageSize);
// The other OS page sizes in use (arm64 16 KiB and 64 KiB, sparc64 8 KiB).
inline constexpr RunTable kRuns8K = make_runs(8192);
inline constexpr RunTable kRuns16K = make_runs(16384);
inline constexpr RunTable kRuns64K = make_runs(65536);

// The compiled run table for a page size, or nullptr if there is none.
constexpr const RunTable* runs_for(std::size_t page_size) noexcept {
  switch (page_size) {
    case 4096: return &kRuns;
    case 8192: return &kRuns8K;
    case 16384: return &kRuns16K;
    case 65536: return &kRuns64K;
    default: return nullptr;
  }
}

// ---------------------------------------------------------------- lookups

// class_of's constant for n > kLookupMax: it makes the formula agree with the
// table at the first geometric class (n = 129: w = 8, top bits 8, class 9).
inline constexpr unsigned kFormulaBias =
    static_cast<unsigned>(std::bit_width(kGeometricStart)) * kClassesPerDoubling +
    kClassesPerDoubling - (1 + static_cast<unsigned>(kGeometricStart / kQuantum));
static_assert(kFormulaBias == 63);

// The smallest class whose objects hold n bytes. class_of(0) is the 8-byte
// class (malloc(0) returns a unique object).
//
// Budget: no loop, no division, one branch, at most one memory load.
//  n <= 1024 (nearly every request): compare-and-branch, add, shift and a
//    one-byte load from a 129-byte table that stays in L1 (3 cache lines).
//  n > 1024: with w = bit_width(n - 1), so 2^(w-1) < n <= 2^w, the class is
//    8w + ((n - 1) >> (w - 4)) - 63: the shift keeps the leading one and the
//    3 bits below it (8..15: which of the 8 steps), 8w counts the doublings,
//    63 lines the sum up with the table. On baseline x86-64: bsr, a shift and
//    six cheap ALU ops, no memory.
// Measured (bench/slab/size_class_bench.cpp, 2.6 GHz EPYC, GCC 12 -O2):
// 0.8 ns per lookup over a mix of request sizes, ~1.7 ns of latency when the
// next step waits for the class.
//
// No precondition: any n > kMaxSmallSize gives an index >= kClassCount (the
// formula keeps growing), so a caller may test the result instead of n.
constexpr ClassIndex class_of(std::size_t n) noexcept {
  if (n <= kLookupMax) return kClasses.lookup[(n + 7) >> 3];
  const unsigned w = static_cast<unsigned>(std::bit_width(n - 1));
  return (w << kStepsLog2) + static_cast<unsigned>((n - 1) >> (w - 1 - kStepsLog2)) - kFormulaBias;
}

// Object size of class cls. REQUIRES: cls < kClassCount.
constexpr std::size_t class_size(ClassIndex cls) noexcept {
  return kClasses.size[cls];
}

// The class of a request of `size` bytes aligned to at most kQuantum (align
// 0 or a power of two up to it): the size's class, except that a request
// below 16 bytes that asks for 16-byte alignment takes the 16-byte class
// (the 8-byte class is only 8-aligned). Both the engine's caches and the
// slab layer pick a small request's class here, so that a sized free finds
// the class the allocation took. REQUIRES: size <= kMaxSmallSize.
constexpr ClassIndex small_request_class(std::size_t size, std::size_t align) noexcept {
  return class_of(align == kQuantum && size < kQuantum ? kQuantum : size);
}
static_assert(class_of(0) == class_of(1), "a request of 0 bytes is served as one of 1");

// A class whose objects hold `size` bytes and are all aligned to `align` (a
// power of two) inside a page-aligned slab run: the smallest class that is a
// multiple of align and >= size. kNoClass when size > kMaxSmallSize, when
// align > kMaxClassAlign (the page layer serves those) or align is not a
// power of two. Off the fast path (aligned allocation), but still loop-free.
//
// Why it works: objects sit at run_base + i * size, run_base is page
// aligned, so each object is align-aligned iff size is a multiple of align.
// For align <= 16 every class >= align is such a multiple (8 is a multiple of
// 1..8, the rest of 16), so class_of(max(size, align)) answers.
constexpr ClassIndex class_for(std::size_t size, std::size_t align) noexcept {
  // (The bit test, not std::has_single_bit: without -mpopcnt that is a call.)
  if (size > kMaxSmallSize || align > kMaxClassAlign || align == 0 || (align & (align - 1)) != 0)
    return kNoClass;
  const ClassIndex c = class_of(size > align ? size : align);
  if (align <= kQuantum) return c;
  const unsigned row =
      static_cast<unsigned>(std::countr_zero(align) - std::countr_zero(kQuantum) - 1);
  return kClasses.aligned[row][c];
}

// Slab run length of class cls, in pages of kPageSize. REQUIRES: cls < kClassCount.
constexpr unsigned class_pages(ClassIndex cls) noexcept {
  return kRuns.pages[cls];
}
// Objects in one slab of class cls.
constexpr std::uint32_t class_objects(ClassIndex cls) noexcept {
  return kRuns.objects[cls];
}
// Bytes at the end of a slab of class cls that hold no object.
constexpr std::size_t class_tail(ClassIndex cls) noexcept {
  return kRuns.tail[cls];
}

// offset / class_size(cls) without a division: a multiply and a shift by a
// fixed-point reciprocal (the free path uses it to find an object's index and
// to tell an interior pointer, offset != index * size). Exact for every
// offset < kDivExactBelow: with m = ceil(2^40 / s) and e = m*s - 2^40 < s,
// the result is exact while offset * e < 2^40, and 2^24 * 2^15 < 2^40.
// REQUIRES: cls < kClassCount, offset < kDivExactBelow.
constexpr std::uint32_t object_index(ClassIndex cls, std::uint64_t offset) noexcept {
  return static_cast<std::uint32_t>((offset * kClasses.div_magic[cls]) >> kDivShift);
}

// ---------------------------------------------------------------- invariants

// The first invariant kClasses and the lookups (class_of) break, or nullptr.
// O(classes): checking each class's boundaries covers every size, since the
// waste falls and its bound rises between them; the unit test checks every
// size anyway.
constexpr const char* check_classes() noexcept {
  const ClassTable& t = kClasses;
  for (unsigned c = 0; c < kClassCount; ++c) {
    const std::size_t s = t.size[c];
    if (c > 0 && s <= t.size[c - 1]) return "class sizes are not increasing";
    if (s % kMinClassSize != 0) return "a class size is not a multiple of 8";
    if (s >= kQuantum && s % kQuantum != 0) return "a class >= 16 is not a multiple of 16";
    // The worst request for class c is one byte more than the class below.
    const std::size_t n = c == 0 ? 1 : t.size[c - 1] + 1;
    if (8 * (s - n) >= (n > kGeometricStart ? n : kGeometricStart))
      return "a request wastes 1/8 or more of itself (or a granule below 128)";
    if (class_of(s) != c || class_of(n) != c) return "class_of misses a class boundary";
    const std::uint64_t e = t.div_magic[c] * s - (std::uint64_t{1} << kDivShift);
    if (e >= s || (kDivExactBelow - 1) * e >= (std::uint64_t{1} << kDivShift))
      return "object_index's reciprocal is not exact below kDivExactBelow";
  }
  if (t.size[0] != kMinClassSize || t.size[kClassCount - 1] != kMaxSmallSize)
    return "the classes do not span [8, kMaxSmallSize]";
  if (class_of(kMaxSmallSize + 1) < kClassCount) return "an oversize request maps into the table";
  return nullptr;
}

// The first invariant a run table breaks, or nullptr.
constexpr const char* check_runs(const RunTable& r) noexcept {
  if (r.error != nullptr) return r.error;
  for (unsigned c = 0; c < kClassCount; ++c) {
    const std::uint64_t bytes = std::uint64_t{r.pages[c]} * r.page_size;
    const std::uint64_t size = kClasses.size[c];
    if (r.pages[c] < 1 || r.pages[c] > max_run_pages(size, r.page_size))
      return "a run is 0 or too many pages";
    if (r.objects[c] != bytes / size || r.tail[c] != bytes - r.objects[c] * size)
      return "objects or tail do not match the run";
    if (std::uint64_t{r.tail[c]} * kTailDivisor > bytes) return "a slab's tail exceeds 1/8";
    if (r.objects[c] < 1) return "a slab holds no object";
  }
  return nullptr;
}

static_assert(check_classes() == nullptr, "size-class table invariant: see check_classes()");
static_assert(check_runs(kRuns) == nullptr, "slab run table invariant: see check_runs()");
static_assert(check_runs(kRuns8K) == nullptr, "8 KiB run table invariant: see check_runs()");
static_assert(check_runs(kRuns16K) == nullptr, "16 KiB run table invariant: see check_runs()");
static_assert(check_runs(kRuns64K) == nullptr, "64 KiB run table invariant: see check_runs()");

// ---------------------------------------------------------------- rendering

// Writes the table like /proc/slabinfo's columns: class, object size, pages
// per slab, objects per slab, tail bytes, worst internal waste (permille of
// the smallest request the class serves). Returns the length it needed (as
// snprintf); never allocates, so the process heap may call it.
std::size_t format_table(char* buf, std::size_t cap, const RunTable& runs = kRuns) noexcept;

}  // namespace mapheap::slab
