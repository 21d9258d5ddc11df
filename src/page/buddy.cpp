// page/buddy.cpp — split, coalesce, and the zone's invariant checker.
#include "page/buddy.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>

#include "core/journal.hpp"
#include "pal/error.hpp"

namespace mapheap::page {

namespace {

constexpr std::uint64_t kZoneMagic = 0x454e4f5a5048414dull;  // "MAPHZONE" little-endian
constexpr std::uint32_t kZoneVersion = 1;
constexpr std::uint32_t kNone = PageIndex::kNone;

constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) {
  return (v + a - 1) / a * a;
}

// A descriptor with the given buddy fields and the slab fields cleared.
constexpr PageDesc desc_of(PageState s, std::uint32_t next = kNone, std::uint32_t run = 0,
                           unsigned order = 0, std::uint16_t flags = 0) {
  return PageDesc{s, static_cast<std::uint8_t>(order), flags, next, kNone, run, 0, 0, 0, 0, 0, 0};
}

}  // namespace

const char* to_string(PageState s) noexcept {
  switch (s) {
    case PageState::tail: return "tail";
    case PageState::free: return "free";
    case PageState::large: return "large";
    case PageState::slab: return "slab";
    case PageState::reserved: return "reserved";
    case PageState::slab_tail: return "slab-tail";
    case PageState::isolated: return "isolated";
  }
  return "?";
}

const char* to_string(FreeResult r) noexcept {
  switch (r) {
    case FreeResult::ok: return "ok";
    case FreeResult::out_of_range: return "not a page of this zone";
    case FreeResult::double_free: return "double free: the page is already free";
    case FreeResult::interior: return "not the first page of an allocated run";
    case FreeResult::not_allocated: return "zone metadata, never allocated";
  }
  return "?";
}

const char* to_string(FormatError e) noexcept {
  switch (e) {
    case FormatError::none: return "ok";
    case FormatError::too_small: return "region too small for the zone header and page map";
    case FormatError::too_large: return "region has more than 2^32 - 1 pages";
    case FormatError::misaligned: return "base or size is not page aligned, or bad arena alignment";
  }
  return "?";
}

const char* to_string(AttachError e) noexcept {
  switch (e) {
    case AttachError::none: return "ok";
    case AttachError::too_small: return "region smaller than a zone header";
    case AttachError::bad_magic: return "no zone here (bad magic)";
    case AttachError::bad_version: return "zone format version not supported";
    case AttachError::bad_page_size: return "zone was made with another page size";
    case AttachError::bad_layout: return "zone header sizes are inconsistent with the region";
  }
  return "?";
}

FormatError Buddy::format(void* base, std::size_t bytes, std::size_t page_size,
                          std::uint32_t arena_align, Buddy& out, std::size_t committed) noexcept {
  if (committed == 0) committed = bytes;
  if (page_size == 0 || (page_size & (page_size - 1)) != 0 || arena_align == 0 ||
      (arena_align & (arena_align - 1)) != 0 ||
      reinterpret_cast<std::uintptr_t>(base) % page_size != 0 || bytes % page_size != 0 ||
      committed % page_size != 0 || committed > bytes)
    return FormatError::misaligned;
  const std::uint64_t total = bytes / page_size;
  if (total >= kNone) return FormatError::too_large;
  const std::uint64_t meta_bytes = sizeof(ZoneHeader) + total * sizeof(PageDesc);
  const std::uint64_t meta_pages = round_up(meta_bytes, page_size) / page_size;
  // Align the arena's first page in memory (not just relative to base): a
  // block's alignment in memory is then min(its length, arena_align pages).
  const std::uint64_t base_page = reinterpret_cast<std::uintptr_t>(base) / page_size;
  const std::uint64_t first = round_up(base_page + meta_pages, arena_align) - base_page;
  const std::uint64_t end = committed / page_size;
  if (first >= end) return FormatError::too_small;

  auto* h = new (base) ZoneHeader{};
  h->magic = kZoneMagic;
  h->version = kZoneVersion;
  h->page_size = static_cast<std::uint32_t>(page_size);
  h->total_pages = static_cast<std::uint32_t>(total);
  h->first_page = static_cast<std::uint32_t>(first);
  h->arena_pages = static_cast<std::uint32_t>(end - first);
  for (auto& f : h->free_head) f = kNone;
  h->root = kNone;

  Buddy b;
  b.base_ = static_cast<std::byte*>(base);
  b.header_ = h;
  b.map_ = reinterpret_cast<PageDesc*>(b.base_ + sizeof(ZoneHeader));
  // Descriptors are written for the arena only. Those of the metadata pages
  // are never read (every lookup refuses indices below first_page first), so
  // a reservation's page map costs memory only as far as the arena reaches:
  // 64 GiB of address space has a 512 MiB page map, almost all untouched.
  for (std::uint64_t i = first; i < end; ++i) new (&b.map_[i]) PageDesc(desc_of(PageState::tail));
  // The arena need not be a power of two: carve it into maximal aligned blocks.
  // Never touched, so free-released: reclaim has nothing to give back yet.
  b.free_range(0, h->arena_pages, kPageReleased, 0);
  out = b;
  return FormatError::none;
}

AttachError Buddy::attach(void* base, std::size_t bytes, Buddy& out) noexcept {
  if (bytes < sizeof(ZoneHeader)) return AttachError::too_small;
  auto* h = static_cast<ZoneHeader*>(base);
  if (h->magic != kZoneMagic) return AttachError::bad_magic;
  if (h->version != kZoneVersion) return AttachError::bad_version;
  if (h->page_size == 0 || (h->page_size & (h->page_size - 1)) != 0 || bytes % h->page_size != 0)
    return AttachError::bad_page_size;
  const std::uint64_t total = bytes / h->page_size;
  const std::uint64_t meta_bytes = sizeof(ZoneHeader) + total * sizeof(PageDesc);
  if (h->total_pages != total || h->first_page >= total ||
      static_cast<std::uint64_t>(h->first_page) * h->page_size < meta_bytes ||
      h->arena_pages == 0 || h->arena_pages > total - h->first_page)
    return AttachError::bad_layout;
  out.base_ = static_cast<std::byte*>(base);
  out.header_ = h;
  out.map_ = reinterpret_cast<PageDesc*>(out.base_ + sizeof(ZoneHeader));
  return AttachError::none;
}

bool Buddy::grow(std::size_t committed) noexcept {
  const std::size_t page = header_->page_size;
  if (committed % page != 0 || committed / page > header_->total_pages) return false;
  const auto new_end = static_cast<std::uint32_t>(committed / page);
  const std::uint32_t old_end = end_page();
  if (new_end <= old_end) return true;
  // The page map past the old end was never part of the arena: whatever it
  // holds (an earlier life's bytes, or zeros) is overwritten first.
  for (std::uint32_t i = old_end; i < new_end; ++i) map_[i] = desc_of(PageState::tail);
  const std::uint32_t old_arena = header_->arena_pages;
  core::undo_save(header_->arena_pages);
  // After the page map past the old end is written: a reader that sees the
  // new size (committed_bytes(), without the lock) sees those descriptors.
  std::atomic_ref<std::uint32_t>(header_->arena_pages).store(new_end - header_->first_page, std::memory_order_release);
  // Never touched, so free-released; they merge with free buddies below.
  free_range(old_arena, new_end - old_end, kPageReleased, header_->clock);
  return true;
}

void Buddy::save_counters(unsigned k) const noexcept {
  if (core::t_journal == nullptr) return;
  core::undo_save(header_->free_head[k]);
  core::undo_save(header_->free_blocks[k]);
  core::undo_save(header_->free_pages);
  core::undo_save(header_->released_pages);
}

void Buddy::push_free(std::uint32_t rel, unsigned k, std::uint16_t flags,
                      std::uint32_t stamp) noexcept {
  const std::uint32_t idx = header_->first_page + rel;
  PageDesc& d = map_[idx];
  const std::uint32_t old = header_->free_head[k];
  save_counters(k);
  core::undo_save(d);
  d = desc_of(PageState::free, old, 0, k, flags);
  d.freed_at = stamp;
  if (old != kNone) {
    core::undo_save(map_[old].prev);
    map_[old].prev = idx;
  }
  header_->free_head[k] = idx;
  header_->free_blocks[k] += 1;
  header_->free_pages += std::uint64_t{1} << k;
  if (flags & kPageReleased) header_->released_pages += std::uint64_t{1} << k;
}

void Buddy::unlink_free(std::uint32_t rel, unsigned k) noexcept {
  const std::uint32_t idx = header_->first_page + rel;
  PageDesc& d = map_[idx];
  save_counters(k);
  core::undo_save(d);
  if (d.prev != kNone) {
    core::undo_save(map_[d.prev].next);
    map_[d.prev].next = d.next;
  } else {
    header_->free_head[k] = d.next;
  }
  if (d.next != kNone) {
    core::undo_save(map_[d.next].prev);
    map_[d.next].prev = d.prev;
  }
  if (d.flags & kPageReleased) header_->released_pages -= std::uint64_t{1} << k;
  d = desc_of(PageState::tail);
  header_->free_blocks[k] -= 1;
  header_->free_pages -= std::uint64_t{1} << k;
}

// Inserts the free block [rel, rel + 2^k) and merges it with its buddy for as
// long as the buddy is a free block of the same order and the same state
// (dirty or released), so that a block's state stays exact: were a dirty
// block to absorb a released buddy, the released half would count as memory
// held, and be released again for nothing. The merged block carries the later
// free time. Buddies of mixed states merge only on demand (merge_mixed).
void Buddy::insert_coalescing(std::uint32_t rel, unsigned k, std::uint16_t flags,
                              std::uint32_t stamp) noexcept {
  while (k < kMaxOrder) {
    const std::uint32_t buddy = rel ^ (std::uint32_t{1} << k);
    if (static_cast<std::uint64_t>(buddy) + (std::uint64_t{1} << k) > header_->arena_pages) break;
    const PageDesc& b = rel_desc(buddy);
    if (b.state != PageState::free || b.order != k || b.flags != flags) break;
    if (static_cast<std::int32_t>(b.freed_at - stamp) > 0) stamp = b.freed_at;  // later, mod 2^32
    unlink_free(buddy, k);  // its head becomes a tail of the merged block
    if (buddy < rel) {
      core::undo_save(rel_desc(rel));
      rel_desc(rel) = desc_of(PageState::tail);
      rel = buddy;
    }
    ++k;
  }
  push_free(rel, k, flags, stamp);
}

// Returns [rel, rel + n) to the free lists as maximal aligned blocks.
void Buddy::free_range(std::uint32_t rel, std::uint64_t n, std::uint16_t flags,
                       std::uint32_t stamp) noexcept {
  std::uint64_t at = rel;
  const std::uint64_t end = at + n;
  while (at < end) {
    // The largest order that is aligned at `at` and fits before `end`.
    unsigned k = at == 0 ? kMaxOrder : static_cast<unsigned>(__builtin_ctzll(at));
    if (k > kMaxOrder) k = kMaxOrder;
    while ((std::uint64_t{1} << k) > end - at) --k;
    insert_coalescing(static_cast<std::uint32_t>(at), k, flags, stamp);
    at += std::uint64_t{1} << k;
  }
}

PageIndex Buddy::alloc(Pages n, PageState state) noexcept {
  if (n.n == 0 || n.n > (std::uint64_t{1} << kMaxOrder)) return core::kNoPage;
  const std::uint32_t idx = take(n.n);
  if (idx == kNone) return core::kNoPage;
  mark_run(idx, n.n, state);
  return PageIndex(idx);
}

// Takes n pages off the free lists: a block of the smallest sufficient order,
// split down, its pages past n given back. Returns the first page, still
// unmarked (tail), or kNone. REQUIRES: 1 <= n <= 2^kMaxOrder.
std::uint32_t Buddy::take(std::uint64_t n) noexcept {
  const unsigned want = core::order_for(Pages(n)).k;
  // Memory that is still resident first: the smallest order whose list
  // starts with a dirty block (freed lately: lists are last in, first out),
  // so that a program's frees feed its next allocations instead of piling
  // up until decay while fresh pages get touched. Then any block.
  unsigned k = first_order(want, true);
  if (k > kMaxOrder) k = first_order(want, false);
  // Nothing large enough among same-state blocks: merge across states.
  if (k > kMaxOrder && merge_mixed(want)) k = first_order(want, false);
  if (k > kMaxOrder) return kNone;

  const std::uint32_t idx = header_->free_head[k];
  const std::uint32_t rel = idx - header_->first_page;
  const std::uint16_t flags = map_[idx].flags;  // the pieces keep the block's state
  const std::uint32_t stamp = map_[idx].freed_at;
  unlink_free(rel, k);
  // Split down to the order asked for; the upper halves go back, unmerged
  // (their buddies are the halves we keep).
  while (k > want) {
    --k;
    push_free(rel + (std::uint32_t{1} << k), k, flags, stamp);
  }
  // Past the run: return the remainder of the 2^want block.
  const std::uint64_t block = std::uint64_t{1} << want;
  if (n < block) free_range(static_cast<std::uint32_t>(rel + n), block - n, flags, stamp);
  return idx;
}

// Merges free buddies of the same order whose states differ (one dirty, one
// released) into dirty blocks, from order 0 up, stopping once a block of
// order `want` exists. True if a block of that order exists now.
//
// How many merges that takes depends on the zone, not on the request: a
// heap whose free pages alternate dirty and released (freed, part of it
// released, the rest freed later) has thousands of mixed pairs, and a
// shared heap journals every store of each merge (14 to kMergeEntries
// entries). It stops while the section's journal keeps kMergeReserve
// entries, and says so (merge_cut); every merge is whole, so the zone is
// consistent there.
bool Buddy::merge_mixed(unsigned want) noexcept {
  bool merged = false;
  for (unsigned k = 0; k < want && k < kMaxOrder; ++k) {
    for (std::uint32_t idx = header_->free_head[k]; idx != kNone;) {
      std::uint32_t next = map_[idx].next;
      const std::uint32_t rel = idx - header_->first_page;
      const std::uint32_t buddy = rel ^ (std::uint32_t{1} << k);
      if (static_cast<std::uint64_t>(buddy) + (std::uint64_t{1} << k) <= header_->arena_pages) {
        const PageDesc& b = rel_desc(buddy);
        if (b.state == PageState::free && b.order == k) {
          if (core::undo_room() < kMergeReserve + kMergeEntries) {
            // A retry in a section of its own goes on from here; a call that
            // could not merge a single pair is no cut (it would not progress).
            if (merged) merge_cut_ = true;
            return first_order(want, false) <= kMaxOrder;
          }
          if (next == header_->first_page + buddy) next = b.next;
          std::uint32_t stamp = map_[idx].freed_at;
          if (static_cast<std::int32_t>(b.freed_at - stamp) > 0) stamp = b.freed_at;
          unlink_free(buddy, k);
          unlink_free(rel, k);
          // Dirty: part of it may hold memory. It goes on list k + 1, which
          // the next round of the outer loop walks.
          insert_coalescing(rel < buddy ? rel : buddy, k + 1, 0, stamp);
          merged = true;
        }
      }
      idx = next;
    }
  }
  return first_order(want, false) <= kMaxOrder;
}

// The smallest order from `want` up with a free block (heading its list
// with a dirty one, if `dirty`); above kMaxOrder if none.
unsigned Buddy::first_order(unsigned want, bool dirty) const noexcept {
  unsigned k = want;
  while (k <= kMaxOrder &&
         (header_->free_head[k] == kNone ||
          (dirty && (map_[header_->free_head[k]].flags & kPageReleased) != 0)))
    ++k;
  return k;
}

// Marks [idx, idx + n) as one allocated run of `state` and counts it.
void Buddy::mark_run(std::uint32_t idx, std::uint64_t n, PageState state) noexcept {
  core::undo_save(map_[idx]);
  map_[idx] = desc_of(state, kNone, static_cast<std::uint32_t>(n));
  if (state == PageState::slab) {
    for (std::uint64_t i = 1; i < n; ++i) {
      core::undo_save(map_[idx + i]);
      map_[idx + i] = desc_of(PageState::slab_tail, idx);
    }
    core::undo_save(header_->slab_pages);
    header_->slab_pages += n;
  } else {
    core::undo_save(header_->large_pages);
    header_->large_pages += n;
  }
}

FreeResult Buddy::free(PageIndex head) noexcept {
  if (!head.valid() || head.i >= end_page()) return FreeResult::out_of_range;
  if (head.i < header_->first_page) return FreeResult::not_allocated;
  PageDesc& d = map_[head.i];
  switch (d.state) {
    case PageState::free:
    case PageState::isolated: return FreeResult::double_free;
    case PageState::tail:
      return in_free_block(head) ? FreeResult::double_free : FreeResult::interior;
    case PageState::slab_tail: return FreeResult::interior;
    case PageState::reserved: return FreeResult::not_allocated;
    case PageState::large:
    case PageState::slab: break;
    default: return FreeResult::interior;  // a state byte no zone writes: corrupt, refuse
  }
  const std::uint32_t run = d.run;
  if (run == 0 || static_cast<std::uint64_t>(head.i) + run >
                      static_cast<std::uint64_t>(header_->first_page) + header_->arena_pages)
    return FreeResult::interior;  // a corrupt descriptor: refuse rather than trust it
  if (d.state == PageState::slab) {
    for (std::uint32_t i = 1; i < run; ++i) {
      core::undo_save(map_[head.i + i]);
      map_[head.i + i] = desc_of(PageState::tail);
    }
    core::undo_save(header_->slab_pages);
    header_->slab_pages -= run;
  } else {
    core::undo_save(header_->large_pages);
    header_->large_pages -= run;
  }
  core::undo_save(d);
  d = desc_of(PageState::tail);
  free_range(head.i - header_->first_page, run, 0, header_->clock);  // dirty: it was in use
  return FreeResult::ok;
}

bool Buddy::in_free_block(PageIndex p) const noexcept {
  if (!p.valid() || p.i < header_->first_page || p.i >= end_page()) return false;
  const std::uint32_t rel = p.i - header_->first_page;
  // A free block holding p starts at p rounded down to its order: probe each.
  for (unsigned k = 0; k < kOrders; ++k) {
    const std::uint32_t start = rel & ~((std::uint32_t{1} << k) - 1);
    const PageDesc& d = map_[header_->first_page + start];
    if ((d.state == PageState::free || d.state == PageState::isolated) && d.order == k) return true;
  }
  return false;
}

PageIndex Buddy::alloc_aligned(Pages n, std::uint64_t align_pages, PageState state) noexcept {
  if (align_pages <= 1) return alloc(n, state);
  constexpr std::uint64_t kMaxRun = std::uint64_t{1} << kMaxOrder;
  if ((align_pages & (align_pages - 1)) != 0 || align_pages > kMaxRun || n.n == 0 ||
      n.n > kMaxRun - (align_pages - 1))
    return core::kNoPage;
  // Take enough to hold an aligned run wherever the block lands, then give
  // back the pages before and after it.
  const std::uint64_t total = n.n + align_pages - 1;
  const std::uint32_t first = take(total);
  if (first == kNone) return core::kNoPage;
  const std::uint64_t mem_page =
      reinterpret_cast<std::uintptr_t>(address(PageIndex(first))) / header_->page_size;
  const std::uint64_t lead = (align_pages - mem_page % align_pages) % align_pages;
  const std::uint32_t head = first + static_cast<std::uint32_t>(lead);
  const std::uint64_t trail = total - lead - n.n;
  mark_run(head, n.n, state);
  const std::uint32_t rel = first - header_->first_page;
  if (lead != 0) free_range(rel, lead, 0, header_->clock);
  if (trail != 0)
    free_range(static_cast<std::uint32_t>(rel + lead + n.n), trail, 0, header_->clock);
  return PageIndex(head);
}

PageIndex Buddy::index_of(const void* addr) const noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  const auto b = reinterpret_cast<std::uintptr_t>(base_);
  if (a < b) return core::kNoPage;
  const std::uint64_t page = (a - b) / header_->page_size;
  if (page >= end_page()) return core::kNoPage;
  return PageIndex(static_cast<std::uint32_t>(page));
}

PageIndex Buddy::head_of(PageIndex p) const noexcept {
  if (!p.valid() || p.i >= end_page()) return core::kNoPage;
  const PageDesc& d = map_[p.i];
  if (d.state == PageState::large || d.state == PageState::slab) return p;
  if (d.state == PageState::slab_tail && d.next >= header_->first_page && d.next < end_page())
    return PageIndex(d.next);
  return core::kNoPage;
}

BuddyInfo Buddy::info() const noexcept {
  BuddyInfo bi;
  for (unsigned k = 0; k < kOrders; ++k) bi.free_blocks[k] = header_->free_blocks[k];
  bi.free_pages = header_->free_pages;
  bi.released_pages = header_->released_pages;
  bi.large_pages = header_->large_pages;
  bi.slab_pages = header_->slab_pages;
  bi.arena_pages = header_->arena_pages;
  bi.isolated_pages = header_->isolated_pages;
  return bi;
}

std::size_t Buddy::isolate_dirty(std::uint32_t min_age, PageIndex* out, std::size_t max,
                                 std::uint64_t max_pages) noexcept {
  std::size_t n = 0;
  std::uint64_t pages = 0;
  const std::uint32_t now = header_->clock;
  for (unsigned k = kOrders; k-- > 0 && n < max && pages < max_pages;) {
    for (std::uint32_t idx = header_->free_head[k]; idx != kNone && n < max && pages < max_pages;) {
      const PageDesc& d = map_[idx];
      const std::uint32_t next = d.next, stamp = d.freed_at;
      // Unsigned difference: right across a wrap of the 32-bit clock.
      if (!(d.flags & kPageReleased) &&
          (min_age == 0 || static_cast<std::uint32_t>(now - stamp) >= min_age)) {
        unlink_free(idx - header_->first_page, k);
        core::undo_save(map_[idx]);
        map_[idx] = desc_of(PageState::isolated, kNone, 0, k);
        map_[idx].freed_at = stamp;
        core::undo_save(header_->isolated_pages);
        header_->isolated_pages += std::uint32_t{1} << k;
        pages += std::uint64_t{1} << k;
        out[n++] = PageIndex(idx);
      }
      idx = next;
    }
  }
  return n;
}

void Buddy::put_back(PageIndex head, bool released) noexcept {
  PageDesc& d = map_[head.i];
  const unsigned k = d.order;
  const std::uint32_t stamp = d.freed_at;
  core::undo_save(header_->isolated_pages);
  header_->isolated_pages -= std::uint32_t{1} << k;
  core::undo_save(d);
  d = desc_of(PageState::tail);
  insert_coalescing(head.i - header_->first_page, k, released ? kPageReleased : 0, stamp);
}

std::uint64_t Buddy::reclaim_isolated(std::uint32_t& from) noexcept {
  std::uint64_t pages = 0;
  bool first = true;
  std::uint32_t i = from < header_->first_page ? header_->first_page : from;
  for (; i < end_page(); ++i) {
    const PageDesc& d = map_[i];
    if (d.state != PageState::isolated || d.order > kMaxOrder) continue;
    const std::uint32_t rel = i - header_->first_page;
    if ((rel & ((std::uint32_t{1} << d.order) - 1)) != 0 ||
        static_cast<std::uint64_t>(rel) + (std::uint64_t{1} << d.order) > header_->arena_pages)
      continue;  // not a block head: check() reports it
    // A block costs a descriptor, a counter and its merges (fewer than
    // kMergeEntries): one at least per call, then as many as the section's
    // journal has room for.
    if (!first && core::undo_room() < kMergeEntries) break;
    first = false;
    pages += std::uint64_t{1} << d.order;
    put_back(PageIndex(i), false);
  }
  from = i;
  return pages;
}

std::uint64_t Buddy::release_free(ReleaseFn release, void* ctx, std::uint32_t min_age,
                                  std::uint64_t max_pages) noexcept {
  std::uint64_t pages = 0;
  constexpr std::size_t kBatch = 16;
  PageIndex batch[kBatch];
  // Rounds of a batch go on until one finds fewer than a batch, or the page
  // budget is spent; a failed release ends them (it would fail again).
  for (bool more = true; more && pages < max_pages;) {
    const std::size_t n = isolate_dirty(min_age, batch, kBatch, max_pages - pages);
    more = n == kBatch;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t bytes = block_bytes(batch[i]);
      const bool ok = release(ctx, address(batch[i]), bytes);
      put_back(batch[i], ok);
      if (ok)
        pages += bytes / header_->page_size;
      else
        more = false;
    }
  }
  return pages;
}

double Buddy::fragmentation_index(Order order) const noexcept {
  const unsigned k = order.k > kMaxOrder ? kMaxOrder : order.k;
  std::uint64_t blocks = 0;
  for (unsigned j = 0; j < kOrders; ++j) {
    if (j >= k && header_->free_blocks[j] > 0) return -1.0;  // the allocation would succeed
    blocks += header_->free_blocks[j];
  }
  if (blocks == 0) return 0.0;  // nothing free at all: lack of memory, not fragmentation
  // As the kernel's fragmentation_index(): 1 - (1 + free/requested) / blocks.
  const double requested = static_cast<double>(std::uint64_t{1} << k);
  return 1.0 -
         (1.0 + static_cast<double>(header_->free_pages) / requested) / static_cast<double>(blocks);
}

std::size_t Buddy::render_buddyinfo(char* buf, std::size_t cap) const noexcept {
  pal::TextOut out{buf, cap};
  if (cap > 0) buf[0] = '\0';
  out.printf("%-6s", "Order");
  for (unsigned k = 0; k < kOrders; ++k) out.printf(" %6u", k);
  out.printf("\n%-6s", "free");
  for (unsigned k = 0; k < kOrders; ++k)
    out.printf(" %6llu", static_cast<unsigned long long>(header_->free_blocks[k]));
  out.put("\n");
  return out.len;
}

CheckReport& CheckReport::fail(const char* fmt, ...) noexcept {
  ok = false;
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(message, sizeof(message), fmt, ap);
  va_end(ap);
  return *this;
}

CheckReport Buddy::check() const noexcept {
  CheckReport r;
  const ZoneHeader& h = *header_;
  const std::uint32_t first = h.first_page, arena = h.arena_pages;
  if (arena == 0 || static_cast<std::uint64_t>(first) + arena > h.total_pages)
    return r.fail("zone header: first page %u + arena %u outside the region's %u pages", first,
                  arena, h.total_pages);
  const std::uint32_t end = first + arena;

  // 1. Free lists: every entry a well-formed free block of its order.
  std::uint64_t listed_pages = 0, released = 0;
  for (unsigned k = 0; k < kOrders; ++k) {
    std::uint64_t count = 0;
    std::uint32_t prev = kNone;
    for (std::uint32_t idx = h.free_head[k]; idx != kNone;) {
      if (idx < first || idx >= end)
        return r.fail("free list %u: page %u is outside the arena", k, idx);
      const PageDesc& d = map_[idx];
      const std::uint32_t rel = idx - first;
      if (d.state != PageState::free || d.order != k)
        return r.fail("free list %u: page %u is %s of order %u", k, idx, to_string(d.state),
                      d.order);
      if ((rel & ((std::uint32_t{1} << k) - 1)) != 0)
        return r.fail("free list %u: page %u is not aligned to its order", k, idx);
      if (static_cast<std::uint64_t>(rel) + (std::uint64_t{1} << k) > arena)
        return r.fail("free list %u: block at page %u runs past the arena", k, idx);
      if (d.prev != prev) return r.fail("free list %u: page %u has a wrong back link", k, idx);
      if (++count > arena) return r.fail("free list %u: cycle", k);
      prev = idx;
      idx = d.next;
    }
    if (count != h.free_blocks[k])
      return r.fail("free list %u: %llu blocks listed, header counts %llu", k,
                    static_cast<unsigned long long>(count),
                    static_cast<unsigned long long>(h.free_blocks[k]));
    listed_pages += count << k;
    for (std::uint32_t idx = h.free_head[k]; idx != kNone; idx = map_[idx].next)
      if (map_[idx].flags & kPageReleased) released += std::uint64_t{1} << k;
  }
  if (released != h.released_pages)
    return r.fail("released pages: blocks hold %llu, header counts %llu",
                  static_cast<unsigned long long>(released),
                  static_cast<unsigned long long>(h.released_pages));
  if (listed_pages != h.free_pages)
    return r.fail("free pages: lists hold %llu, header counts %llu",
                  static_cast<unsigned long long>(listed_pages),
                  static_cast<unsigned long long>(h.free_pages));

  // 2. The page map: blocks and runs tiling the arena (the metadata pages'
  // descriptors are not used).
  std::uint64_t large = 0, slab = 0, isolated = 0;
  for (std::uint64_t rel = 0; rel < arena;) {
    const std::uint32_t idx = static_cast<std::uint32_t>(first + rel);
    const PageDesc& d = map_[idx];
    std::uint64_t len = 0;
    switch (d.state) {
      case PageState::free: {
        if (d.order > kMaxOrder) return r.fail("page %u: free block of order %u", idx, d.order);
        len = std::uint64_t{1} << d.order;
        // Coalescing is complete: a free block's buddy is not a free block
        // of the same order and state.
        const std::uint64_t buddy = rel ^ len;
        if (d.order < kMaxOrder && buddy + len <= arena) {
          const PageDesc& b = map_[first + buddy];
          if (b.state == PageState::free && b.order == d.order && b.flags == d.flags)
            return r.fail("page %u: free block of order %u has a free buddy", idx, d.order);
        }
        break;
      }
      case PageState::isolated:
        if (d.order > kMaxOrder) return r.fail("page %u: isolated block of order %u", idx, d.order);
        len = std::uint64_t{1} << d.order;
        isolated += len;
        break;
      case PageState::large:
      case PageState::slab:
        len = d.run;
        if (len == 0) return r.fail("page %u: %s run of length 0", idx, to_string(d.state));
        (d.state == PageState::large ? large : slab) += len;
        break;
      default:
        return r.fail("page %u: %s where a block or run should start", idx, to_string(d.state));
    }
    if (rel + len > arena)
      return r.fail("page %u: run of %llu pages passes the arena", idx,
                    static_cast<unsigned long long>(len));
    for (std::uint64_t j = 1; j < len; ++j) {
      const PageDesc& t = map_[idx + j];
      const bool ok = d.state == PageState::slab
                          ? (t.state == PageState::slab_tail && t.next == idx)
                          : t.state == PageState::tail;
      if (!ok)
        return r.fail("page %llu: %s inside the %s run starting at page %u",
                      static_cast<unsigned long long>(idx + j), to_string(t.state),
                      to_string(d.state), idx);
    }
    rel += len;
  }
  if (large != h.large_pages || slab != h.slab_pages)
    return r.fail(
        "allocated pages: map holds %llu large and %llu slab, header counts %llu and %llu",
        static_cast<unsigned long long>(large), static_cast<unsigned long long>(slab),
        static_cast<unsigned long long>(h.large_pages),
        static_cast<unsigned long long>(h.slab_pages));
  if (isolated != h.isolated_pages)
    return r.fail("isolated pages: map holds %llu, header counts %u",
                  static_cast<unsigned long long>(isolated), h.isolated_pages);
  if (large + slab + isolated + h.free_pages != arena)
    return r.fail("pages: %llu allocated + %llu isolated + %llu free != arena %u",
                  static_cast<unsigned long long>(large + slab),
                  static_cast<unsigned long long>(isolated),
                  static_cast<unsigned long long>(h.free_pages), arena);
  return r;
}

}  // namespace mapheap::page
