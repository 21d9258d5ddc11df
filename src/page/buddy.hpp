// page/buddy.hpp — the buddy page allocator and its page map.
//
// A zone manages one region of memory (a Mapping, or any page-aligned range)
// in OS pages, the way the kernel's buddy allocator manages a memory zone:
//
//   region base
//   | ZoneHeader | page map: one PageDesc per page of the region | arena ...   |
//   |<-------- metadata pages (their descriptors unused) --------->|<- buddy ->|
//
// Everything the zone stores lives inside the region and refers to pages by
// index from the region base, never by pointer: the same zone works in a
// private anonymous reservation and in a file that another process maps at
// another address (contract 1 of DESIGN.md). A Buddy object is only a view:
// the region's base address plus a pointer to its header.
//
// Blocks: a free block of order k is 2^k pages, aligned to 2^k pages from the
// arena's first page, and linked into free_head[k] through the `next`/`prev`
// page indices of its first page's descriptor. Allocation takes a block of the
// smallest sufficient order, splitting larger ones, and returns the part of
// it past the requested run to the free lists, so runs of any page count are
// served (not only powers of two). Freeing splits the run into maximal
// aligned blocks and coalesces each with its buddy while the buddy is free.
//
// Page map invariant: only the first page of a free block or of an allocated
// run has a "head" state (free, large, slab); every other arena page is
// `tail`. Merging clears the absorbed buddy's head; so a pointer into the
// middle of a run is recognised as such in O(1) (an interior free).
//
// Locking: a Buddy does no locking. REQUIRES: the caller serialises all calls
// on one zone (the engine's zone lock).
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "core/types.hpp"

namespace mapheap::page {

using core::Order;
using core::PageIndex;
using core::Pages;

inline constexpr unsigned kMaxOrder = 20;  // 2^20 pages: 4 GiB blocks of 4 KiB pages
inline constexpr unsigned kOrders = kMaxOrder + 1;

// What a page is, as its descriptor records it.
enum class PageState : std::uint8_t {
  tail = 0,       // not the first page of a block or run (or never part of one)
  free = 1,       // first page of a free block (order in `order`)
  large = 2,      // first page of a run allocated as one object (`run` pages)
  slab = 3,       // first page of a run holding slab objects (`run` pages)
  reserved = 4,   // zone metadata (no longer written: metadata descriptors are unused)
  slab_tail = 5,  // a later page of a slab run; `next` is the run's first page
  isolated = 6,   // first page of a free block taken off the free lists while its
                  // memory goes back to the OS outside the zone lock (order in `order`)
};
const char* to_string(PageState s) noexcept;

// Flags of a free block.
inline constexpr std::uint16_t kPageReleased = 1u << 0;  // every page went back to the OS

// One per page of the region: 32 bytes, 0.8% of a 4 KiB page. The second half
// belongs to the slab layer (meaningful on a slab run's first page only).
struct PageDesc {
  PageState state;
  std::uint8_t order;   // free: the block's order
  std::uint16_t flags;  // free: kPageReleased
  std::uint32_t next;   // free: next block of the order; slab: next slab of its list;
                        // slab_tail: the run's head
  std::uint32_t prev;   // free: previous block of the order; slab: previous slab of its list
  std::uint32_t run;    // large/slab: the run's length in pages
  // Slab layer (src/slab):
  std::uint16_t slab_class;   // size class of the objects
  std::uint16_t slab_inuse;   // objects handed out
  std::uint16_t slab_carved;  // objects ever carved from the run (the rest are untouched)
  std::uint16_t slab_list;    // which list of its class the slab is on
  std::uint32_t slab_free;    // byte offset in the run of the first free object, or none
  std::uint32_t freed_at;     // free: the zone clock when the block was last freed (decay)
};
static_assert(sizeof(PageDesc) == 32);

struct ZoneHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t page_size;
  std::uint32_t total_pages;  // pages in the region (the reservation: the page map covers all)
  std::uint32_t first_page;   // first arena page (after the header and page map)
  std::uint32_t arena_pages;  // pages the buddy system manages now (grows up to total - first)
  std::uint32_t root;         // the owner's root run (e.g. the slab layer's lists), or none
  std::uint32_t free_head[kOrders];
  std::uint64_t free_blocks[kOrders];
  std::uint64_t free_pages;
  std::uint64_t released_pages;  // free pages in blocks whose pages went back to the OS
  std::uint32_t clock;           // the owner's time, in its own ticks (set_clock)
  std::uint32_t isolated_pages;  // pages in isolated blocks (being released)
  std::uint64_t large_pages;  // pages in allocated large runs
  std::uint64_t slab_pages;   // pages in allocated slab runs
};

// /proc/buddyinfo for one zone: free blocks per order.
struct BuddyInfo {
  std::uint64_t free_blocks[kOrders] = {};
  std::uint64_t free_pages = 0;      // free-dirty + free-released
  std::uint64_t released_pages = 0;  // free-released: given back to the OS, no memory behind them
  std::uint64_t large_pages = 0;
  std::uint64_t slab_pages = 0;
  std::uint64_t arena_pages = 0;
  std::uint64_t isolated_pages = 0;  // free, off the lists while being released
};

enum class FreeResult : std::uint8_t {
  ok,
  out_of_range,   // not a page of this zone's arena
  double_free,    // the page heads a free block
  interior,       // inside a run or block, not its first page (or never allocated)
  not_allocated,  // zone metadata
};
const char* to_string(FreeResult r) noexcept;

// The first violation an invariant checker found; ok and an empty message if none.
struct CheckReport {
  bool ok = true;
  char message[256] = {};
  // Records a violation (printf-style, truncated to the buffer) and returns *this.
  __attribute__((format(printf, 2, 3))) CheckReport& fail(const char* fmt, ...) noexcept;
};

enum class FormatError : std::uint8_t { none, too_small, too_large, misaligned };
enum class AttachError : std::uint8_t {
  none,
  too_small,
  bad_magic,
  bad_version,
  bad_page_size,
  bad_layout,
};
const char* to_string(FormatError e) noexcept;
const char* to_string(AttachError e) noexcept;

class Buddy {
 public:
  Buddy() = default;

  // Lays out a new zone over [base, base + bytes): header, page map, arena.
  // `arena_align` (pages, a power of two) aligns the arena's first page, e.g.
  // 512 so that order-9 blocks are 2 MiB aligned in memory for huge pages.
  // The alignment is of the arena's address in memory, whatever `base` is.
  //
  // Growth: `bytes` is the whole reservation (the page map covers all of it)
  // and `committed` (0: all of it) the prefix usable now; the arena ends
  // there until grow(). Only the committed part of the page map is written,
  // so a large reservation costs address space, not memory.
  static FormatError format(void* base, std::size_t bytes, std::size_t page_size,
                            std::uint32_t arena_align, Buddy& out,
                            std::size_t committed = 0) noexcept;
  // Opens a zone formatted earlier (maybe by another process). Only the
  // header is checked here; check() verifies the whole structure.
  static AttachError attach(void* base, std::size_t bytes, Buddy& out) noexcept;

  // Extends the arena to the first `committed` bytes of the region, which
  // the owner has just made usable (Mapping::grow). The new pages are free
  // and released (never touched). True if the arena now reaches `committed`
  // (nothing to do if it already did); false if `committed` is not a page
  // multiple or lies beyond the region.
  bool grow(std::size_t committed) noexcept;
  // Bytes of the region the arena reaches now (header and page map included).
  // Read without the zone lock too (the engine's fast-path bound, a mapped
  // heap's bounds checks under its directory lock) while another thread or
  // process grows the arena: the arena's size is read atomically, and only
  // grows (grow() stores it atomically).
  std::size_t committed_bytes() const noexcept {
    const std::uint32_t arena = std::atomic_ref<std::uint32_t>(header_->arena_pages).load(std::memory_order_acquire);
    return (std::size_t{header_->first_page} + arena) * header_->page_size;
  }
  std::size_t region_bytes() const noexcept {
    return std::size_t{header_->total_pages} * header_->page_size;
  }

  // A run of `n` pages (any count from 1 to 2^kMaxOrder), as `state` (large or
  // slab). Returns kNoPage when no block is large enough.
  PageIndex alloc(Pages n, PageState state = PageState::large) noexcept;
  // A run of `n` pages whose first page is aligned in memory to `align_pages`
  // pages (a power of two): takes n + align_pages - 1 pages and returns the
  // lead and trail to the free lists.
  PageIndex alloc_aligned(Pages n, std::uint64_t align_pages,
                          PageState state = PageState::large) noexcept;
  // Frees the run headed by `head`. Never touches memory on a bad call: the
  // result says what was wrong (a page inside a free block is a double free).
  FreeResult free(PageIndex head) noexcept;
  // Whether page p lies inside a free block (probes one candidate per order).
  bool in_free_block(PageIndex p) const noexcept;

  std::byte* address(PageIndex p) const noexcept {
    return base_ + static_cast<std::size_t>(p.i) * header_->page_size;
  }
  // The page holding `addr`, or kNoPage if it is outside the arena's reach
  // (the region up to its committed end).
  PageIndex index_of(const void* addr) const noexcept;
  // The first page of the run holding page `p` (p itself for heads; the slab
  // head for slab pages); kNoPage for free/tail/reserved pages.
  PageIndex head_of(PageIndex p) const noexcept;
  const PageDesc& desc(PageIndex p) const noexcept { return map_[p.i]; }
  // The slab layer owns the list links and slab fields of a slab run's first
  // page. REQUIRES: head is the first page of a slab run.
  PageDesc& slab_desc(PageIndex head) noexcept { return map_[head.i]; }
  // Names the owner's root run (ZoneHeader::root), found again by attach.
  void set_root(PageIndex root) noexcept { header_->root = root.i; }

  BuddyInfo info() const noexcept;

  // ---- reclaim. Page states: in use (large, slab), free-dirty (free, may
  // hold memory), free-released (free, given back to the OS). A fresh zone's
  // arena is free-released: it was never touched. Merging a released block
  // with a dirty one gives a dirty block (conservative: releasing again is
  // harmless, forgetting memory is not).

  // The owner's clock (any monotonic tick, e.g. milliseconds), stamped on
  // blocks as they are freed; decay compares against it.
  void set_clock(std::uint32_t now) noexcept { header_->clock = now; }
  // After a crash: blocks left isolated by a release that never finished
  // (its process died) go back to the free lists, dirty. O(pages). Returns
  // the pages. From page `from` on, as many blocks as the critical
  // section's undo journal has room for (one at least: a long-lived heap
  // can gather thousands); `from` is left where it stopped, end_page() once
  // done, and the owner calls again in a new section until then.
  // REQUIRES: no release in progress (no other user).
  std::uint64_t reclaim_isolated(std::uint32_t& from) noexcept;
  // Gives back free-dirty blocks that were last freed at least `min_age`
  // ticks before the clock (0: all of them), largest first, by calling
  // `release(ctx, address, bytes)` — the owner picks the method (MADV_DONTNEED,
  // hole punching). A block whose release fails stays dirty. Returns the
  // pages released.
  //
  // Each block is isolated (taken off the free lists) before `release` is
  // called and put back after, so `release` may drop the owner's zone lock
  // around the system call and retake it: other threads allocate and free
  // meanwhile and never see a block whose memory is going away.
  // `max_pages` bounds the work: it stops once that many pages went back.
  using ReleaseFn = bool (*)(void* ctx, std::byte* addr, std::size_t bytes);
  std::uint64_t release_free(ReleaseFn release, void* ctx, std::uint32_t min_age = 0,
                             std::uint64_t max_pages = ~std::uint64_t{0}) noexcept;
  // Free pages that may hold memory (free-dirty, not isolated), and pages in
  // allocated runs (large and slab): the two sides of a dirty-memory bound.
  std::uint64_t dirty_pages() const noexcept {
    return header_->free_pages - header_->released_pages;
  }
  std::uint64_t used_pages() const noexcept { return header_->large_pages + header_->slab_pages; }
  // The two halves of release_free, for owners that batch differently:
  // isolate up to `max` free-dirty blocks of at least `min_age` (largest
  // first) into `out`, and put an isolated block back, released or still dirty.
  // (isolating stops too once the blocks hold `max_pages`).
  std::size_t isolate_dirty(std::uint32_t min_age, PageIndex* out, std::size_t max,
                            std::uint64_t max_pages = ~std::uint64_t{0}) noexcept;
  void put_back(PageIndex isolated, bool released) noexcept;
  std::size_t block_bytes(PageIndex head) const noexcept {  // a free or isolated block
    return (std::size_t{1} << map_[head.i].order) * header_->page_size;
  }
  // The kernel's extfrag index for an allocation of order k: -1 if it would
  // succeed now; otherwise in [0, 1], near 0 when it fails for lack of free
  // memory and near 1 when it fails because free memory is fragmented.
  double fragmentation_index(Order k) const noexcept;
  // Writes "Order 0 1 2 ...\nfree  n n n" like /proc/buddyinfo; returns length.
  std::size_t render_buddyinfo(char* buf, std::size_t cap) const noexcept;

  // Walks the whole structure (page map and free lists) and reports the first
  // violation: O(pages). Safe on a corrupt zone: every index is bounds-checked
  // before it is followed.
  CheckReport check() const noexcept;

  const ZoneHeader& header() const noexcept { return *header_; }
  std::uint32_t first_page() const noexcept { return header_->first_page; }
  // One past the arena's last page: the page map is valid below it.
  std::uint32_t end_page() const noexcept { return header_->first_page + header_->arena_pages; }
  std::uint32_t arena_pages() const noexcept { return header_->arena_pages; }

  // Whether merge_mixed stopped for want of undo-journal room, not for want
  // of pages: an allocation that then failed may succeed in a new critical
  // section (which goes on from the merges this one commits); each try
  // merges more, and the merges a zone can need are finite. Set when a
  // merge_mixed call stopped after merging at least one pair (one that could
  // not is out of room before it began: no retry would progress), also when
  // its merges still made the block (alloc() then succeeds: look at the flag
  // only after a failure); cleared by clear_merge_cut(); under the owner's lock.
  bool merge_cut() const noexcept { return merge_cut_; }
  void clear_merge_cut() noexcept { merge_cut_ = false; }
  // Journal entries merge_mixed leaves to the rest of the critical section
  // (the split, the run's marks, what the caller writes after it).
  static constexpr std::uint32_t kMergeReserve = 4096;
  // Journal entries of the zone's steps: unlinking a free block (four
  // counters, its descriptor, two neighbours' links), one merge of a
  // cascade (that unlink and the absorbed head's descriptor), pushing a
  // block (four counters, its descriptor, the old head's link).
  static constexpr std::uint32_t kUnlinkEntries = 7;
  static constexpr std::uint32_t kMergeStepEntries = kUnlinkEntries + 1;
  static constexpr std::uint32_t kPushEntries = 6;
  // The most entries one merge writes: two unlinks, then a cascade of up to
  // kMaxOrder merges with the next buddy up, and a push. It starts one only
  // with this much room above the reserve.
  static constexpr std::uint32_t kMergeEntries =
      2 * kUnlinkEntries + kMaxOrder * kMergeStepEntries + kPushEntries;
  // The most entries free() writes for a run of `pages` pages: the run's
  // descriptors (a slab's tails), its head's and a counter, and its pages
  // as free blocks (at most two of each order below the run's length), each
  // pushed after a cascade of up to kMaxOrder merges.
  static constexpr std::uint32_t free_entries(std::uint32_t pages) noexcept {
    return pages + 1 +
           2 * static_cast<std::uint32_t>(std::bit_width(pages)) * (kMaxOrder * kMergeStepEntries + kPushEntries);
  }
  // ... for a large run of any length (up to 2^kMaxOrder pages): only its
  // head's descriptor and a counter, then its blocks.
  static constexpr std::uint32_t kLargeFreeEntries =
      2 + 2 * (kMaxOrder + 1) * (kMaxOrder * kMergeStepEntries + kPushEntries);

 private:
  std::uint32_t take(std::uint64_t n) noexcept;
  bool merge_mixed(unsigned want) noexcept;
  unsigned first_order(unsigned want, bool dirty) const noexcept;
  void mark_run(std::uint32_t idx, std::uint64_t n, PageState state) noexcept;
  void push_free(std::uint32_t rel, unsigned k, std::uint16_t flags, std::uint32_t stamp) noexcept;
  void unlink_free(std::uint32_t rel, unsigned k) noexcept;
  // Pre-images of the header fields a free-list change of order k writes
  // (core/journal.hpp; a no-op outside a journaled critical section).
  void save_counters(unsigned k) const noexcept;
  void free_range(std::uint32_t rel, std::uint64_t n, std::uint16_t flags,
                  std::uint32_t stamp) noexcept;
  void insert_coalescing(std::uint32_t rel, unsigned k, std::uint16_t flags,
                         std::uint32_t stamp) noexcept;
  PageDesc& rel_desc(std::uint32_t rel) noexcept { return map_[header_->first_page + rel]; }

  std::byte* base_ = nullptr;
  ZoneHeader* header_ = nullptr;
  PageDesc* map_ = nullptr;
  bool merge_cut_ = false;  // merge_cut(): this process's, not the zone's
};

}  // namespace mapheap::page
