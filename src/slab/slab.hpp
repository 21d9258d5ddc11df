// slab/slab.hpp — slab caches over a buddy zone: small objects by size class,
// large objects as page runs.
//
// A slab is a run of pages from the zone holding objects of one size class.
// Its bookkeeping lives in the page map (the slab fields of its first page's
// PageDesc), not in the run, so every byte of the run holds objects:
//
//   slab run:  | obj 0 | obj 1 | ... | obj carved-1 | never touched ...   |
//                  ^ free objects form a list through their first 4 bytes:
//                    byte offsets within the run (never pointers)
//
// Objects are carved lazily (`slab_carved` counts them), so a new slab costs
// no writes to its memory. Each class keeps three lists of slabs, as SLUB
// does: partial (some objects free: where allocation looks first), full, and
// empty (kept for reuse, stamped with the zone clock when they emptied; they
// go back to the buddy allocator once empty for a while: release_empty(),
// which the engine's decay calls, and trim() returns all of them).
//
// Objects larger than the largest class, or aligned to more than a page, are
// runs of whole pages straight from the buddy allocator.
//
// Locking: none here. REQUIRES: the caller serialises calls on one heap (the
// engine's zone lock); the front caches (src/cache) keep it off the fast path.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/journal.hpp"
#include "page/buddy.hpp"
#include "slab/size_class.hpp"

namespace mapheap::slab {

// Which list of its class a slab is on (PageDesc::slab_list).
enum class SlabList : std::uint16_t { partial = 1, full = 2, empty = 3 };

// Per-class lists and counters; an array of these is the slab layer's root,
// kept in a run of the zone named by ZoneHeader::root.
struct ClassLists {
  std::uint32_t head[4];  // by SlabList; [0] unused
  std::uint32_t count[4];
  std::uint64_t inuse_objects;
};

struct SlabRoot {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t class_count;
  ClassLists cls[kClassCount];
  std::uint64_t large_runs;
  std::uint64_t large_bytes;  // bytes asked for in large allocations, cumulative
  std::uint32_t cache_run;    // the front caches' run (cache/front_cache.hpp), or none
  std::uint32_t reserved;
};

enum class FreeStatus : std::uint8_t {
  ok,
  not_ours,     // not inside this heap's arena
  double_free,  // the object (or run) is already free
  interior,     // points inside an object or run, not at its start
  corrupt,      // the page map around it is inconsistent
};
const char* to_string(FreeStatus s) noexcept;

struct SlabStats {
  std::uint64_t slabs[kClassCount] = {};
  std::uint64_t inuse_objects[kClassCount] = {};
  std::uint64_t large_runs = 0;
  std::uint64_t large_pages = 0;
  std::uint64_t slab_pages = 0;
  std::uint64_t free_pages = 0;
};

// Empty slabs a class keeps for reuse (at least two); the rest go back to
// the zone as soon as they empty.
inline constexpr std::size_t kKeepEmptyBytes = 128 << 10;
// How many empty slabs of `slab_bytes` bytes that is.
constexpr std::uint64_t max_empty_slabs(std::uint64_t slab_bytes) noexcept {
  return std::max<std::uint64_t>(2, kKeepEmptyBytes / slab_bytes);
}
// Undo journal entries of a slab's unlink from its class's lists, or its
// push onto one: the class's lists, the slab's descriptor, two neighbours'
// links.
inline constexpr std::uint32_t kListStepEntries = core::entries_for(sizeof(ClassLists)) + 3;
// The most entries SlabHeap::free() writes for an object of a slab of
// `pages` pages: the object's link, the slab's descriptor and the class's
// count; the slab moved between lists (an unlink and a push); and the run
// back to the zone if that was its last object (page::Buddy::free_entries).
constexpr std::uint32_t free_entries(std::uint32_t pages) noexcept {
  return 3 + 2 * kListStepEntries + page::Buddy::free_entries(pages);
}
// The same for an object of any class: what a batch of frees in one
// critical section makes room for before each (cache::Engine::free_batch).
inline constexpr std::uint32_t kFreeEntries = free_entries(kMaxLargeRunPages);
// ... and for a large run (the run's free and the count of large runs).
inline constexpr std::uint32_t kLargeFreeEntries = page::Buddy::kLargeFreeEntries + 1;
// The most entries releasing one empty slab of `pages` pages writes: its
// unlink from the class's lists and its run freed to the zone.
constexpr std::uint32_t release_slab_entries(std::uint32_t pages) noexcept {
  return kListStepEntries + page::Buddy::free_entries(pages);
}
// The most entries SlabHeap::release_empty(cls, age) writes for class c of
// `runs`, in a heap where the class keeps no more empty slabs than its
// quota; and for any class of `runs`.
constexpr std::uint64_t release_entries(const RunTable& runs, unsigned c) noexcept {
  return max_empty_slabs(std::uint64_t{runs.pages[c]} * runs.page_size) * release_slab_entries(runs.pages[c]);
}
constexpr std::uint64_t release_entries(const RunTable& runs) noexcept {
  std::uint64_t most = 0;
  for (unsigned c = 0; c < kClassCount; ++c) most = std::max(most, release_entries(runs, c));
  return most;
}
// The most objects a slab holds (class 8 in 4 KiB pages: 512; larger pages
// hold no more, as runs cap the count in the page map's 16-bit fields).
inline constexpr std::uint32_t kMaxSlabObjects = 8192;

class SlabHeap {
 public:
  SlabHeap() = default;

  // Puts a slab layer on a freshly formatted zone (allocates its root run).
  // False if the zone is full or its page size has no compiled run table
  // (runs_for: 4, 8, 16 and 64 KiB pages).
  static bool format(page::Buddy& zone, SlabHeap& out) noexcept;
  // Opens the slab layer of a zone formatted earlier; false if it has none.
  static bool attach(page::Buddy& zone, SlabHeap& out) noexcept;

  // size bytes aligned to align (0 or a power of two). 0 means malloc's
  // alignment: 8 for sizes up to 8, 16 above. nullptr when the zone is
  // exhausted or the request cannot be met. size 0 is served as 1.
  // If `usable` is given, it receives the bytes usable at the result.
  void* alloc(std::size_t size, std::size_t align = 0, std::size_t* usable = nullptr) noexcept;
  // The class alloc(size, align) serves from, kNoClass if the page layer
  // serves it (a large block) or it cannot be met. Reads no memory.
  static unsigned request_class(std::size_t size, std::size_t align) noexcept {
    if (align <= kQuantum)
      return size <= kMaxSmallSize && (align & (align - 1)) == 0 ? small_request_class(size, align) : kNoClass;
    return class_for(size, align);
  }
  // The bytes alloc(size, align) promises: its class's object size, or
  // size itself for a large block (which may get more). Reads no memory.
  static std::size_t good_size(std::size_t size, std::size_t align) noexcept {
    const unsigned cls = request_class(size, align);
    return cls != kNoClass ? class_size(cls) : std::max<std::size_t>(size, 1);
  }
  // Frees what alloc returned; a bad pointer is reported and changes nothing.
  // In checked builds (MAPHEAP_CHECKED) a double free of a slab object is
  // always found (the slab's free list is searched); otherwise only when the
  // slab has no object in use or the object was never handed out.
  // If `freed` is given, it receives the usable bytes given back.
  FreeStatus free(void* p, std::size_t* freed = nullptr) noexcept;
  // The most journal entries free(p) can write: kLargeFreeEntries if p is
  // the start of a large run, else kFreeEntries (a slab object, or a bad
  // pointer, which writes nothing). Reads p's page descriptor.
  std::uint32_t free_entries_of(const void* p) const noexcept;
  // The bytes usable at p (its class size, or the run's length); 0 if p is not
  // an object of this heap, or its slab has nothing in use. (A freed object
  // in a slab that still has others in use is not told apart here.)
  std::size_t usable_size(const void* p) const noexcept;

  // Of objects carved for the first time (never handed out before), the
  // pages that hold their first bytes, each page once: what a caller about
  // to write a word at the start of every object of a batch (the front
  // cache's key) touches for the first time, which it may prefault in one
  // call a run instead of one page fault a page. The rest of a large
  // object is not listed: those pages are the program's to touch, or not.
  // Up to kSpans runs of contiguous pages; the rest is dropped (it faults
  // in as it would anyway). 16: a batch of objects larger than a page, one
  // run each, is at most 16 (half a class array of the big classes, whose
  // limit is 32), and smaller objects' pages run together.
  struct FreshPages {
    static constexpr unsigned kSpans = 16;
    std::byte* begin[kSpans];
    std::byte* end[kSpans];
    unsigned spans = 0;
    void add(std::byte* obj, std::size_t size, std::size_t page) noexcept;
  };
  // Up to n objects of class cls into out (fewer when the zone runs out):
  // the refill of a front cache. Returns how many. `fresh`, if given,
  // receives the pages where the carved ones start.
  unsigned alloc_batch(unsigned cls, void** out, unsigned n, FreshPages* fresh = nullptr) noexcept;
  // ok if p is an object of this heap that is allocated now (for a slab
  // object: carved and not on its slab's free list, which is searched); what
  // is wrong with it otherwise. Changes nothing.
  FreeStatus validate(const void* p) const noexcept;
  // The objects of the slab headed by `head` that are allocated (carved and
  // not on its free list; objects in front caches count as allocated here):
  // bit i of live[] for object i, kMaxSlabObjects bits. Returns how many.
  std::uint32_t live_objects(std::uint32_t head, std::uint64_t* live) const noexcept;

  // The front caches' run, kept in the root (kNone if none).
  std::uint32_t cache_run() const noexcept { return root_->cache_run; }
  void set_cache_run(std::uint32_t run) noexcept { root_->cache_run = run; }

  // Returns the slabs empty for at least `min_age` ticks of the zone clock
  // (0: all of them) to the buddy allocator; the pages freed.
  std::uint64_t release_empty(std::uint32_t min_age) noexcept;
  // The same for class `cls` alone (a caller that bounds its critical
  // sections takes one class at a time). A class keeps at most its quota of
  // empty slabs (release_entries bounds what that writes), but a heap file
  // may list more (a corrupt one, or one written before the quota): when
  // the section's journal has no room for one more slab, what was released
  // is committed (core::undo_checkpoint) and it goes on.
  // REQUIRES: the caller's critical section is consistent at the call.
  std::uint64_t release_empty(unsigned cls, std::uint32_t min_age) noexcept;
  // Returns every empty slab to the buddy allocator; the pages freed.
  std::uint64_t trim() noexcept { return release_empty(0); }
  // Whether any slab is empty (and so will go back to the zone by decay).
  bool has_empty() const noexcept;

  SlabStats stats() const noexcept;
  // One line per class with slabs, in /proc/slabinfo's shape:
  //   name <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : slabdata
  //   <active_slabs> <num_slabs>
  // (active slabs: partial and full). Objects sitting in front caches
  // (`cached[cls]`, if given) are not active. Returns the length the text needs.
  std::size_t render_slabinfo(char* buf, std::size_t cap,
                              const std::uint64_t* cached = nullptr) const noexcept;
  // The slab lists, their counts and every free list, then the zone.
  page::CheckReport check() const noexcept;

  page::Buddy& zone() noexcept { return *zone_; }
  // The slab runs for this zone's page size.
  const RunTable& runs() const noexcept { return *runs_; }
  unsigned pages_of(unsigned cls) const noexcept { return runs_->pages[cls]; }
  std::uint32_t objects_of(unsigned cls) const noexcept { return runs_->objects[cls]; }

 private:
  std::byte* run_base(std::uint32_t head) const noexcept;
  page::PageDesc& slab_desc(std::uint32_t head) noexcept {
    return zone_->slab_desc(page::PageIndex(head));
  }
  void push(unsigned cls, SlabList list, std::uint32_t head) noexcept;
  void unlink(unsigned cls, std::uint32_t head) noexcept;
  // `carved`: set when the object is new (never handed out before).
  void* alloc_small(unsigned cls, bool& carved) noexcept;
  void* alloc_large(std::size_t size, std::size_t align, std::size_t& usable) noexcept;
  // Where a pointer handed to free lies: a large run's head, or a slab
  // object (its run's head and byte offset in the run).
  struct Located {
    std::uint32_t head = 0;
    bool large = false;
    std::uint32_t off = 0;
  };
  // Every O(1) check free does; ok and `at` filled when p may be freed.
  FreeStatus locate(const void* p, Located& at) const noexcept;
  bool on_free_list(std::uint32_t head, std::uint32_t off) const noexcept;
  FreeStatus free_small(std::uint32_t head, std::uint32_t off, std::size_t& freed) noexcept;

  page::Buddy* zone_ = nullptr;
  SlabRoot* root_ = nullptr;
  const RunTable* runs_ = nullptr;
};

}  // namespace mapheap::slab
