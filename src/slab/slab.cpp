// slab/slab.cpp — carving, freeing and moving slabs between their lists.
#include "slab/slab.hpp"

#include <algorithm>

#include "core/journal.hpp"

#include <bit>
#include <cstdio>
#include <cstring>
#include <new>

#include "pal/error.hpp"

namespace mapheap::slab {

namespace {

constexpr std::uint64_t kSlabMagic = 0x4241534c50414d00ull;  // "\0MAPSLAB"
constexpr std::uint32_t kSlabVersion = 1;
constexpr std::uint32_t kNone = core::PageIndex::kNone;

using page::PageDesc;
using page::PageIndex;
using page::Pages;
using page::PageState;

// The next-free link stored in a free object's first four bytes.
std::uint32_t load_link(const std::byte* obj) noexcept {
  std::uint32_t v;
  std::memcpy(&v, obj, sizeof(v));
  return v;
}
void store_link(std::byte* obj, std::uint32_t v) noexcept {
  std::memcpy(obj, &v, sizeof(v));
}

// Whether `off` is the offset of an object this slab has carved.
bool valid_offset(const PageDesc& d, unsigned cls, std::uint32_t off) noexcept {
  const std::size_t size = class_size(cls);
  if (off >= static_cast<std::size_t>(d.slab_carved) * size) return false;
  return static_cast<std::size_t>(object_index(static_cast<ClassIndex>(cls), off)) * size == off;
}

}  // namespace

const char* to_string(FreeStatus s) noexcept {
  switch (s) {
    case FreeStatus::ok: return "ok";
    case FreeStatus::not_ours: return "not a pointer into this heap";
    case FreeStatus::double_free: return "double free";
    case FreeStatus::interior: return "not the start of an allocated object";
    case FreeStatus::corrupt: return "the heap's page map is inconsistent here";
  }
  return "?";
}

bool SlabHeap::format(page::Buddy& zone, SlabHeap& out) noexcept {
  const std::size_t page = zone.header().page_size;
  const RunTable* runs = runs_for(page);
  if (runs == nullptr) return false;
  const Pages pages((sizeof(SlabRoot) + page - 1) / page);
  const PageIndex root = zone.alloc(pages);
  if (!root.valid()) return false;
  auto* r = new (zone.address(root)) SlabRoot{};
  r->magic = kSlabMagic;
  r->version = kSlabVersion;
  r->class_count = kClassCount;
  for (auto& c : r->cls)
    for (auto& h : c.head) h = kNone;
  r->cache_run = kNone;
  zone.set_root(root);
  out.zone_ = &zone;
  out.root_ = r;
  out.runs_ = runs;
  return true;
}

bool SlabHeap::attach(page::Buddy& zone, SlabHeap& out) noexcept {
  const RunTable* runs = runs_for(zone.header().page_size);
  if (runs == nullptr) return false;
  const std::uint32_t root = zone.header().root;
  if (root == kNone || root < zone.first_page() || root >= zone.end_page() ||
      zone.desc(PageIndex(root)).state != PageState::large)
    return false;
  const std::size_t page = zone.header().page_size;
  if (static_cast<std::uint64_t>(zone.desc(PageIndex(root)).run) * page < sizeof(SlabRoot))
    return false;
  auto* r = reinterpret_cast<SlabRoot*>(zone.address(PageIndex(root)));
  if (r->magic != kSlabMagic || r->version != kSlabVersion || r->class_count != kClassCount)
    return false;
  out.zone_ = &zone;
  out.root_ = r;
  out.runs_ = runs;
  return true;
}

std::byte* SlabHeap::run_base(std::uint32_t head) const noexcept {
  return zone_->address(PageIndex(head));
}

void SlabHeap::push(unsigned cls, SlabList list, std::uint32_t head) noexcept {
  ClassLists& c = root_->cls[cls];
  auto& d = slab_desc(head);
  const auto l = static_cast<unsigned>(list);
  core::undo_save(c);
  core::undo_save(d);
  d.slab_list = static_cast<std::uint16_t>(list);
  d.prev = kNone;
  d.next = c.head[l];
  if (d.next != kNone) {
    core::undo_save(slab_desc(d.next).prev);
    slab_desc(d.next).prev = head;
  }
  c.head[l] = head;
  c.count[l] += 1;
}

void SlabHeap::unlink(unsigned cls, std::uint32_t head) noexcept {
  ClassLists& c = root_->cls[cls];
  auto& d = slab_desc(head);
  const unsigned l = d.slab_list;
  core::undo_save(c);
  core::undo_save(d);
  if (d.prev != kNone) {
    core::undo_save(slab_desc(d.prev).next);
    slab_desc(d.prev).next = d.next;
  } else {
    c.head[l] = d.next;
  }
  if (d.next != kNone) {
    core::undo_save(slab_desc(d.next).prev);
    slab_desc(d.next).prev = d.prev;
  }
  d.next = d.prev = kNone;
  d.slab_list = 0;
  c.count[l] -= 1;
}

void* SlabHeap::alloc(std::size_t size, std::size_t align, std::size_t* usable) noexcept {
  if (size == 0) size = 1;
  if ((align & (align - 1)) != 0) return nullptr;
  const unsigned cls = request_class(size, align);
  std::size_t bytes = 0;
  void* p;
  if (cls != kNoClass) {
    bool carved;
    p = alloc_small(cls, carved);
    bytes = class_size(cls);
  } else {
    p = alloc_large(size, align, bytes);
  }
  if (usable != nullptr) *usable = p != nullptr ? bytes : 0;
  return p;
}

void* SlabHeap::alloc_small(unsigned cls, bool& carved) noexcept {
  carved = false;
  ClassLists& c = root_->cls[cls];
  const auto partial = static_cast<unsigned>(SlabList::partial);
  const auto empty = static_cast<unsigned>(SlabList::empty);
  std::uint32_t head = c.head[partial];
  if (head == kNone) {
    head = c.head[empty];
    if (head != kNone) {
      unlink(cls, head);
    } else {
      const PageIndex run = zone_->alloc(Pages(pages_of(cls)), PageState::slab);
      if (!run.valid()) return nullptr;
      head = run.i;
      auto& d = slab_desc(run.i);
      core::undo_save(d);
      d.slab_class = static_cast<std::uint16_t>(cls);
      d.slab_inuse = 0;
      d.slab_carved = 0;
      d.slab_free = kNone;
    }
    push(cls, SlabList::partial, head);
  }
  auto& d = slab_desc(head);
  std::byte* base = run_base(head);
  std::byte* obj;
  core::undo_save(d);
  core::undo_save(c.inuse_objects);
  if (d.slab_free != kNone) {
    obj = base + d.slab_free;
    // The link was stored in freed memory: a use-after-free store or a peer
    // process may have changed it. Only an offset of a carved object of this
    // slab is followed; anything else fails the allocation (check() names it).
    const std::uint32_t next = load_link(obj);
    if (next != kNone && !valid_offset(d, cls, next)) {
      if (d.slab_inuse == 0) {  // taken from the empty list above: put it back
        unlink(cls, head);
        push(cls, SlabList::empty, head);
      }
      return nullptr;
    }
    d.slab_free = next;
  } else {  // carve the next untouched object
    obj = base + static_cast<std::size_t>(d.slab_carved) * class_size(cls);
    d.slab_carved += 1;
    carved = true;
  }
  d.slab_inuse += 1;
  c.inuse_objects += 1;
  if (d.slab_inuse == objects_of(cls)) {
    unlink(cls, head);
    push(cls, SlabList::full, head);
  }
  return obj;
}

void SlabHeap::FreshPages::add(std::byte* obj, std::size_t size, std::size_t page) noexcept {
  // Objects are laid from the run's first byte on, in order: if the object
  // before this one starts in the same page, that page was listed when it
  // was carved (a run starts on a page, so its first object always lists).
  const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(obj);
  const std::uintptr_t first = at - at % page;
  if (at - first >= size) return;
  std::byte* b = obj - (at - first);
  std::byte* e = b + page;
  if (spans != 0 && b == end[spans - 1]) {
    end[spans - 1] = e;
  } else if (spans < kSpans) {
    begin[spans] = b;
    end[spans] = e;
    ++spans;
  }
}

unsigned SlabHeap::alloc_batch(unsigned cls, void** out, unsigned n, FreshPages* fresh) noexcept {
  const std::size_t page = zone_->header().page_size;
  const std::size_t size = class_size(cls);
  unsigned got = 0;
  bool carved;
  while (got < n && (out[got] = alloc_small(cls, carved)) != nullptr) {
    if (carved && fresh != nullptr) fresh->add(static_cast<std::byte*>(out[got]), size, page);
    ++got;
  }
  return got;
}

void* SlabHeap::alloc_large(std::size_t size, std::size_t align, std::size_t& usable) noexcept {
  const std::size_t page = zone_->header().page_size;
  if (size > (std::size_t{1} << page::kMaxOrder) * page) return nullptr;
  std::uint64_t pages = (size + page - 1) / page;
  // A large run takes its whole buddy block (2^order pages). Freed, it comes
  // back as that block, whole, for the next large run of its order. An exact
  // run would give its remainder to other allocations, which then pin the
  // block: free memory splinters into pieces no later run fits, the arena
  // grows over fresh pages (page faults) and free pages pile up dirty. The
  // tail costs address space, not memory, until the program uses it (it is
  // in the usable size, so realloc grows into it). Measured on the malloc
  // benchmark's size-distribution workload: 4.0 s -> 0.67 s, peak RSS
  // 485 -> 377 MiB (docs/design/engine.md).
  //
  // Beyond a page, alignment comes from the buddy allocator: an aligned run
  // of exactly `pages` pages, the lead and trail given back.
  const std::uint64_t align_pages = align > page ? align / page : 1;
  if (align_pages <= 1) pages = std::bit_ceil(pages);
  const PageIndex run = zone_->alloc_aligned(Pages(pages), align_pages, PageState::large);
  if (!run.valid()) return nullptr;
  core::undo_save(root_->large_runs);
  core::undo_save(root_->large_bytes);
  root_->large_runs += 1;
  root_->large_bytes += size;
  usable = pages * page;
  return zone_->address(run);
}

FreeStatus SlabHeap::free(void* ptr, std::size_t* freed) noexcept {
  std::size_t bytes = 0;
  Located at;
  FreeStatus s = locate(ptr, at);
  if (s == FreeStatus::ok) {
    if (at.large) {
      const PageIndex head(at.head);
      bytes = static_cast<std::size_t>(zone_->desc(head).run) * zone_->header().page_size;
      if (zone_->free(head) != page::FreeResult::ok) {
        s = FreeStatus::corrupt;
      } else {
        core::undo_save(root_->large_runs);
        root_->large_runs -= 1;
      }
    } else {
      s = free_small(at.head, at.off, bytes);
    }
  }
  if (freed != nullptr) *freed = s == FreeStatus::ok ? bytes : 0;
  return s;
}

std::uint32_t SlabHeap::free_entries_of(const void* p) const noexcept {
  const PageIndex page = zone_->index_of(p);
  const bool large = page.valid() && page.i >= zone_->first_page() &&
                     zone_->desc(page).state == PageState::large;
  return large ? kLargeFreeEntries : kFreeEntries;
}

FreeStatus SlabHeap::locate(const void* ptr, Located& at) const noexcept {
  const auto* p = static_cast<const std::byte*>(ptr);
  const PageIndex page = zone_->index_of(p);
  if (!page.valid() || page.i < zone_->first_page()) return FreeStatus::not_ours;
  const PageDesc& d = zone_->desc(page);
  switch (d.state) {
    case PageState::free:
    case PageState::isolated: return FreeStatus::double_free;
    case PageState::tail:  // inside a run, or inside a free block (a run freed and merged)
      return zone_->in_free_block(page) ? FreeStatus::double_free : FreeStatus::interior;
    case PageState::reserved: return FreeStatus::not_ours;
    case PageState::large:
      if (p != zone_->address(page)) return FreeStatus::interior;
      // Our own metadata runs are not the program's to free.
      if (page.i == zone_->header().root || page.i == root_->cache_run) return FreeStatus::interior;
      at = {page.i, true, 0};
      return FreeStatus::ok;
    case PageState::slab:
    case PageState::slab_tail: {
      const PageIndex head = zone_->head_of(page);
      if (!head.valid()) return FreeStatus::corrupt;
      const PageDesc& h = zone_->desc(head);
      const unsigned cls = h.slab_class;
      if (cls >= kClassCount || h.slab_list == 0) return FreeStatus::corrupt;
      const std::size_t off = static_cast<std::size_t>(p - run_base(head.i));
      // A run is at most kMaxLargeRunPages pages, far below object_index's exact range.
      const std::uint32_t index = object_index(static_cast<ClassIndex>(cls), off);
      if (static_cast<std::size_t>(index) * class_size(cls) != off) return FreeStatus::interior;
      if (index >= h.slab_carved) return FreeStatus::interior;  // never handed out
      if (h.slab_inuse == 0) return FreeStatus::double_free;
      at = {head.i, false, static_cast<std::uint32_t>(off)};
      return FreeStatus::ok;
    }
  }
  return FreeStatus::corrupt;
}

bool SlabHeap::on_free_list(std::uint32_t head, std::uint32_t off) const noexcept {
  const PageDesc& d = zone_->desc(PageIndex(head));
  std::uint32_t steps = 0;
  for (std::uint32_t f = d.slab_free; f != kNone && steps <= d.slab_carved; ++steps) {
    if (f == off) return true;
    if (!valid_offset(d, d.slab_class, f)) return false;  // corrupt: check() names it
    f = load_link(run_base(head) + f);
  }
  return false;
}

std::uint32_t SlabHeap::live_objects(std::uint32_t head, std::uint64_t* live) const noexcept {
  const PageDesc& d = zone_->desc(PageIndex(head));
  if (d.state != PageState::slab || d.slab_class >= kClassCount) return 0;
  const unsigned cls = d.slab_class;
  const std::uint32_t carved =
      std::min<std::uint32_t>({d.slab_carved, objects_of(cls), kMaxSlabObjects});
  for (std::uint32_t w = 0; w < kMaxSlabObjects / 64; ++w) live[w] = 0;
  for (std::uint32_t i = 0; i < carved; ++i) live[i / 64] |= std::uint64_t{1} << (i % 64);
  std::uint32_t n = carved, steps = 0;
  for (std::uint32_t f = d.slab_free; f != kNone && steps < carved; ++steps) {
    if (!valid_offset(d, cls, f)) break;  // corrupt: check() names it
    const std::uint32_t i = object_index(static_cast<ClassIndex>(cls), f);
    const std::uint64_t bit = std::uint64_t{1} << (i % 64);
    if ((live[i / 64] & bit) != 0) {
      live[i / 64] &= ~bit;
      --n;
    }
    f = load_link(run_base(head) + f);
  }
  return n;
}

FreeStatus SlabHeap::validate(const void* p) const noexcept {
  Located at;
  const FreeStatus s = locate(p, at);
  if (s != FreeStatus::ok || at.large) return s;
  return on_free_list(at.head, at.off) ? FreeStatus::double_free : FreeStatus::ok;
}

FreeStatus SlabHeap::free_small(std::uint32_t head, std::uint32_t off, std::size_t& freed) noexcept {
  auto& d = slab_desc(head);
  const unsigned cls = d.slab_class;
#if MAPHEAP_CHECKED
  // Checked builds search the free list: every double free is found.
  if (on_free_list(head, off)) return FreeStatus::double_free;
#endif
  const bool was_full = d.slab_list == static_cast<std::uint16_t>(SlabList::full);
  freed = class_size(cls);
  core::undo_save(run_base(head) + off, sizeof(std::uint32_t));
  core::undo_save(d);
  core::undo_save(root_->cls[cls].inuse_objects);
  store_link(run_base(head) + off, d.slab_free);
  d.slab_free = off;
  d.slab_inuse -= 1;
  root_->cls[cls].inuse_objects -= 1;
  if (d.slab_inuse == 0) {
    unlink(cls, head);
    // Kept for reuse a while (a program that frees a slab's last object
    // often allocates again soon), as SLUB keeps min_partial slabs: up to
    // kKeepEmptyBytes of them per class (two slabs at least), which decay
    // returns when they stay empty. Past that the run goes back to the zone
    // now, where any class or large run can use its pages: a wave of
    // objects that moves through the classes (buffers growing by realloc)
    // would otherwise leave every class it passed full of empty slabs.
    const std::uint64_t kept = root_->cls[cls].count[static_cast<unsigned>(SlabList::empty)];
    const std::uint64_t slab_bytes = std::uint64_t{pages_of(cls)} * zone_->header().page_size;
    if (kept >= max_empty_slabs(slab_bytes)) {
      (void)zone_->free(PageIndex(head));
    } else {
      push(cls, SlabList::empty, head);
      d.freed_at = zone_->header().clock;  // its pre-image was saved by push
    }
  } else if (was_full) {
    unlink(cls, head);
    push(cls, SlabList::partial, head);
  }
  return FreeStatus::ok;
}

std::size_t SlabHeap::usable_size(const void* ptr) const noexcept {
  const auto* p = static_cast<const std::byte*>(ptr);
  const PageIndex page = zone_->index_of(p);
  if (!page.valid() || page.i < zone_->first_page()) return 0;
  const PageDesc& d = zone_->desc(page);
  if (d.state == PageState::large)
    return p == zone_->address(page) ? static_cast<std::size_t>(d.run) * zone_->header().page_size
                                     : 0;
  if (d.state != PageState::slab && d.state != PageState::slab_tail) return 0;
  const PageIndex head = zone_->head_of(page);
  if (!head.valid()) return 0;
  const PageDesc& h = zone_->desc(head);
  if (h.slab_class >= kClassCount || h.slab_inuse == 0) return 0;
  const std::size_t size = class_size(h.slab_class);
  const std::size_t off = static_cast<std::size_t>(p - run_base(head.i));
  return off % size == 0 && off / size < h.slab_carved ? size : 0;
}

std::uint64_t SlabHeap::release_empty(std::uint32_t min_age) noexcept {
  std::uint64_t pages = 0;
  for (unsigned cls = 0; cls < kClassCount; ++cls) pages += release_empty(cls, min_age);
  return pages;
}

std::uint64_t SlabHeap::release_empty(unsigned cls, std::uint32_t min_age) noexcept {
  std::uint64_t pages = 0;
  const std::uint32_t now = zone_->header().clock;
  for (std::uint32_t head = root_->cls[cls].head[static_cast<unsigned>(SlabList::empty)];
       head != kNone;) {
    const PageDesc& d = zone_->desc(PageIndex(head));
    const std::uint32_t next = d.next;
    // Unsigned difference: right across a wrap of the 32-bit clock.
    if (min_age == 0 || static_cast<std::uint32_t>(now - d.freed_at) >= min_age) {
      if (core::undo_room() < release_slab_entries(d.run)) core::undo_checkpoint();
      unlink(cls, head);
      pages += d.run;
      (void)zone_->free(PageIndex(head));
    }
    head = next;
  }
  return pages;
}

bool SlabHeap::has_empty() const noexcept {
  for (unsigned cls = 0; cls < kClassCount; ++cls)
    if (root_->cls[cls].count[static_cast<unsigned>(SlabList::empty)] != 0) return true;
  return false;
}

SlabStats SlabHeap::stats() const noexcept {
  SlabStats s;
  for (unsigned cls = 0; cls < kClassCount; ++cls) {
    const ClassLists& c = root_->cls[cls];
    s.slabs[cls] = c.count[1] + c.count[2] + c.count[3];
    s.inuse_objects[cls] = c.inuse_objects;
  }
  const page::BuddyInfo bi = zone_->info();
  s.large_runs = root_->large_runs;
  s.large_pages = bi.large_pages;
  s.slab_pages = bi.slab_pages;
  s.free_pages = bi.free_pages;
  return s;
}

std::size_t SlabHeap::render_slabinfo(char* buf, std::size_t cap,
                                      const std::uint64_t* cached) const noexcept {
  pal::TextOut out{buf, cap};
  if (cap > 0) buf[0] = '\0';
  out.put(
      "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
      " : slabdata <active_slabs> <num_slabs>\n");
  for (unsigned cls = 0; cls < kClassCount; ++cls) {
    const ClassLists& c = root_->cls[cls];
    const std::uint32_t slabs = c.count[1] + c.count[2] + c.count[3];
    if (slabs == 0) continue;
    out.printf("size-%-11zu %13llu %10llu %9zu %12u %14u : slabdata %14u %11u\n", class_size(cls),
               static_cast<unsigned long long>(c.inuse_objects - (cached ? cached[cls] : 0)),
               static_cast<unsigned long long>(slabs) * objects_of(cls), class_size(cls),
               objects_of(cls), pages_of(cls), c.count[1] + c.count[2], slabs);
  }
  return out.len;
}

page::CheckReport SlabHeap::check() const noexcept {
  page::CheckReport r = zone_->check();
  if (!r.ok) return r;
  const std::uint32_t total = zone_->end_page();
  std::uint64_t listed_slabs = 0;
  for (unsigned cls = 0; cls < kClassCount; ++cls) {
    const ClassLists& c = root_->cls[cls];
    const std::size_t size = class_size(cls);
    const std::uint32_t objects = objects_of(cls);
    std::uint64_t inuse = 0;
    for (unsigned l = 1; l <= 3; ++l) {
      std::uint32_t prev = kNone, count = 0;
      for (std::uint32_t h = c.head[l]; h != kNone;) {
        if (h >= total || h < zone_->first_page())
          return r.fail("class %u list %u: page %u out of range", cls, l, h);
        const PageDesc& d = zone_->desc(PageIndex(h));
        if (d.state != PageState::slab || d.slab_class != cls || d.slab_list != l)
          return r.fail("class %u list %u: page %u is %s of class %u on list %u", cls, l, h,
                        page::to_string(d.state), d.slab_class, d.slab_list);
        if (d.prev != prev) return r.fail("class %u list %u: page %u back link", cls, l, h);
        if (d.run != pages_of(cls))
          return r.fail("class %u: slab %u has %u pages, the class uses %u", cls, h, d.run,
                        pages_of(cls));
        if (d.slab_carved > objects || d.slab_inuse > d.slab_carved)
          return r.fail("class %u: slab %u has %u in use of %u carved of %u", cls, h, d.slab_inuse,
                        d.slab_carved, objects);
        const bool list_ok = (l == 1 && d.slab_inuse > 0 && d.slab_inuse < objects) ||
                             (l == 2 && d.slab_inuse == objects) || (l == 3 && d.slab_inuse == 0);
        if (!list_ok)
          return r.fail("class %u: slab %u with %u of %u in use is on list %u", cls, h,
                        d.slab_inuse, objects, l);
        // Its free list: in bounds, on object boundaries, acyclic, of the right length.
        std::uint32_t n = 0;
        for (std::uint32_t f = d.slab_free; f != kNone; ++n) {
          if (n > d.slab_carved) return r.fail("class %u: slab %u free list cycles", cls, h);
          if (f % size != 0 || f / size >= d.slab_carved)
            return r.fail("class %u: slab %u free list holds offset %u", cls, h, f);
          f = load_link(run_base(h) + f);
        }
        const std::uint32_t expected = static_cast<std::uint32_t>(d.slab_carved - d.slab_inuse);
        if (n != expected)
          return r.fail("class %u: slab %u free list has %u objects, expected %u", cls, h, n,
                        expected);
        inuse += d.slab_inuse;
        if (++count > total) return r.fail("class %u list %u: cycle", cls, l);
        prev = h;
        h = d.next;
      }
      if (count != c.count[l])
        return r.fail("class %u list %u: %u slabs listed, counter says %u", cls, l, count,
                      c.count[l]);
      listed_slabs += count;
    }
    if (inuse != c.inuse_objects)
      return r.fail("class %u: %llu objects in use in slabs, counter says %llu", cls,
                    static_cast<unsigned long long>(inuse),
                    static_cast<unsigned long long>(c.inuse_objects));
  }
  // Every slab run in the page map is on exactly one list.
  std::uint64_t mapped_slabs = 0;
  for (std::uint32_t i = zone_->first_page(); i < total; ++i)
    if (zone_->desc(PageIndex(i)).state == PageState::slab) ++mapped_slabs;
  if (mapped_slabs != listed_slabs)
    return r.fail("%llu slab runs in the page map, %llu on lists",
                  static_cast<unsigned long long>(mapped_slabs),
                  static_cast<unsigned long long>(listed_slabs));
  return r;
}

}  // namespace mapheap::slab
