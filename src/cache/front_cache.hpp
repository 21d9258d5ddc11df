// cache/front_cache.hpp — the engine's front caches: small arrays of free
// objects per size class, one set per CPU (rseq) or per thread, that serve
// most allocations and frees without the zone lock.
//
// The caches live inside the region, in one run of the zone (named by the
// slab root's `cache_run`), and hold objects as byte offsets from the region
// base, never pointers: every process mapping a shared heap uses the same
// caches.
//
//   cache run:
//   | CacheHeader | pad | slot 0 | slot 1 | ... | slot cpu_slots-1 | thread slot 0 | ... |
//                        \_ per-CPU slots _______/ \_ per-thread slots ____________/
//   slot (kSlot.bytes, cache-line aligned):
//   | class 0: word items[cap(0)] | class 1: word items[cap(1)] | ... |
//     word = count (bits 0..15) | operations (bits 16..63), see cache/rseq.hpp
//
// Per-CPU slot c is used by whichever thread runs on CPU c, through the rseq
// operations of cache/rseq.hpp. A per-thread slot is claimed by one thread
// (its owner word holds pid:tid) when rseq is not available; a slot whose
// owner died is claimed again with its contents, which are still valid free
// objects. The two kinds never share a slot, so processes of one shared heap
// may use either.
//
// Every object in a cache carries the heap's key in its bytes [4, 8) (bytes
// [0, 4) are the slab free-list link when the object goes back to its slab):
// a free of an object that already carries the key is checked against every
// cache and its slab's free list before it is accepted (double-free
// detection at the cost of one load on the fast path, as glibc's tcache does).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "page/buddy.hpp"
#include "slab/size_class.hpp"

namespace mapheap::cache {

// Objects a class's array holds: about kCacheBytes of them, 32 to 256. This is
// the slots' layout, the same for every engine; how full an engine lets its
// arrays get is its own policy (class_limit, below).
//
// The floor: a class's count walks up and down with the program's frees and
// allocations, and an array refilled or drained to half its limit meets an
// end again after about (limit / 2)^2 operations, each end a locked batch of
// objects that went cold in the slabs. At 4 (engine v2) that was every 4th
// operation of a big class; at 16, every 64th; at 32, every 256th
// (docs/design/engine.md, "Capacity"). The price is memory: a CPU's arrays
// filled to their limits hold at most 26.2 MiB of free objects at a floor of
// 32, 14.2 MiB at 16 and 5.8 MiB at 4. A slot is 63.1 KiB (58 at 16).
inline constexpr std::size_t kCacheBytes = 64 * 1024;
inline constexpr std::uint32_t kMinCapacity = 32;
inline constexpr std::uint32_t kMaxCapacity = 256;
// The one rule for a class's array: about kCacheBytes of its objects, at
// least `floor`, at most kMaxCapacity. The layout holds it at the floor
// kMinCapacity (class_capacity); an engine fills it at its own floor, which
// is at most that (class_limit), so a limit never exceeds the capacity.
constexpr std::uint32_t cache_share(unsigned cls, std::uint32_t floor) noexcept {
  return static_cast<std::uint32_t>(
      std::clamp<std::size_t>(kCacheBytes / slab::class_size(cls), floor, kMaxCapacity));
}
// A table, so that the fast paths never divide.
inline constexpr auto kClassCapacity = [] {
  std::array<std::uint16_t, slab::kClassCount> t{};
  for (unsigned cls = 0; cls < slab::kClassCount; ++cls)
    t[cls] = static_cast<std::uint16_t>(cache_share(cls, kMinCapacity));
  return t;
}();
constexpr std::uint32_t class_capacity(unsigned cls) noexcept {
  return kClassCapacity[cls];
}

// How many objects an engine keeps in a class's array at most: about
// kCacheBytes of them, at least `floor` (2 to kMinCapacity), at most the
// capacity (EngineOptions::cache_floor). A miss costs the shared heap more
// than the process heap: its lock is in the mapping, and every slab operation
// under it is journaled for crash recovery. The shared heap fills its arrays
// to the capacity (floor 32: its alloc loop ran faster than at 16, by 1.1x
// in one process on a new heap up to 2x with two processes); the process heap
// keeps a floor of 16 (at 32 its workloads were no faster and held more
// memory). docs/design/engine.md, "Capacity and limit".
inline constexpr std::uint32_t kMinCacheFloor = 2;
constexpr std::uint32_t cache_floor_of(std::uint32_t asked) noexcept {
  return std::clamp(asked, kMinCacheFloor, kMinCapacity);
}
constexpr std::uint32_t class_limit(unsigned cls, std::uint32_t floor) noexcept {
  return cache_share(cls, cache_floor_of(floor));
}
static_assert(class_limit(slab::kClassCount - 1, kMinCapacity) == class_capacity(slab::kClassCount - 1));
static_assert(class_limit(0, 16) == class_capacity(0));

// One class's array in a slot. Its capacity is the compiled
// class_capacity(cls), never a number read from the mapping.
struct ClassArray {
  std::uint64_t word;      // count | operations << 16 (cache/rseq.hpp)
  std::uint64_t items[1];  // [capacity]: offsets of free objects from the region base
};
inline constexpr std::size_t array_bytes(unsigned cls) noexcept {
  return 8 + 8 * std::size_t{class_capacity(cls)};
}

// The slot layout, computed at compile time.
struct SlotLayout {
  std::uint32_t class_off[slab::kClassCount];  // byte offset of each class's array
  std::uint32_t bytes;                         // one slot, a multiple of 64
};
constexpr SlotLayout make_slot_layout() noexcept {
  SlotLayout l{};
  std::size_t at = 0;
  for (unsigned c = 0; c < slab::kClassCount; ++c) {
    l.class_off[c] = static_cast<std::uint32_t>(at);
    at += array_bytes(c);
  }
  l.bytes = static_cast<std::uint32_t>((at + 63) / 64 * 64);
  return l;
}
inline constexpr SlotLayout kSlot = make_slot_layout();

inline constexpr std::uint32_t kMaxThreadSlots = 32;

// Sets of class arrays in a run with `slots` CPU and thread slots: those,
// and the transfer slot after them when there are any.
constexpr std::uint32_t array_slots_for(std::uint32_t slots) noexcept {
  return slots + (slots > 0 ? 1 : 0);
}

struct CacheHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t cpu_slots;     // slots 0 .. cpu_slots-1, by CPU number
  std::uint32_t thread_slots;  // slots cpu_slots .. cpu_slots+thread_slots-1
  std::uint32_t slot_bytes;    // kSlot.bytes when written
  std::uint32_t slots_off;     // byte offset of slot 0 in the run
  std::uint32_t key;           // the in-cache mark (see above)
  std::uint32_t classes;       // kClassCount when written
  std::uint32_t reserved;
  std::atomic<std::uint64_t> owner[kMaxThreadSlots];  // pid << 32 | tid, 0 when unclaimed
};

enum class CacheMode : std::uint8_t {
  automatic,   // per-CPU when rseq is available, else per-thread
  per_cpu,     // rseq; a thread without it, or on a CPU beyond the slots, takes the lock
  per_thread,  // per-thread slots even where rseq is available
  none,        // no front cache: every call takes the zone lock
};
const char* to_string(CacheMode m) noexcept;

// A view of the cache run in one process.
class FrontCache {
 public:
  // Lays out the caches in a run of `zone` and returns its first page (kNoPage
  // if the zone has no room). `cpu_slots` is the number of CPUs; thread slots
  // are added up to kMaxThreadSlots while the run stays within 1/8 of the
  // region (the reservation) and fits in the arena now (fewer thread slots,
  // then none); with no room even for the CPU slots, the run has none.
  // `release` (may be null) gives the run's pages back to the OS first, so
  // that they read as zeros without being touched: then only the header is
  // written, and a slot costs memory only once a CPU or thread uses it.
  static page::PageIndex format(page::Buddy& zone, std::uint32_t cpu_slots, std::uint32_t key,
                                page::Buddy::ReleaseFn release, void* release_ctx,
                                FrontCache& out) noexcept;
  // Opens a cache run made by format; false if its header does not match
  // this build's layout or the run's length.
  static bool attach(page::Buddy& zone, page::PageIndex run, FrontCache& out) noexcept;

  std::uint32_t cpu_slots() const noexcept { return cpu_slots_; }
  std::uint32_t thread_slots() const noexcept { return thread_slots_; }
  std::uint32_t slots() const noexcept { return cpu_slots_ + thread_slots_; }
  // The transfer slot: one more set of arrays after the CPU and thread
  // slots (when there are any), used under the engine's lock to pass whole
  // batches between front caches without going through the slabs, as
  // tcmalloc's transfer cache does. array_slots() counts it.
  bool has_transfer() const noexcept { return slots() > 0; }
  std::uint32_t array_slots() const noexcept { return array_slots_for(slots()); }
  ClassArray* transfer(unsigned cls) const noexcept { return array(slots(), cls); }
  std::uint32_t key() const noexcept { return key_; }

  // Class `cls`'s array in slot 0: the rseq operations add slot * kSlot.bytes.
  std::byte* class_base(unsigned cls) const noexcept { return slots_ + kSlot.class_off[cls]; }
  ClassArray* array(std::uint32_t slot, unsigned cls) const noexcept {
    return reinterpret_cast<ClassArray*>(slots_ + std::size_t{slot} * kSlot.bytes +
                                         kSlot.class_off[cls]);
  }

  // Claims a per-thread slot for the calling thread: a free one, or one whose
  // owner is dead. Returns cpu_slots() + j, or kNoSlot if every one is taken.
  static constexpr std::uint32_t kNoSlot = ~0u;
  std::uint32_t claim_thread_slot() noexcept;
  // Takes over thread slot `slot` if its owner is dead (for draining it).
  bool adopt_if_dead(std::uint32_t slot) noexcept;
  // Gives up slot `slot` if this thread owns it.
  void release_thread_slot(std::uint32_t slot) noexcept;
  // The owner word of a thread slot; 0 when unclaimed.
  std::uint64_t owner(std::uint32_t slot) const noexcept {
    return header_->owner[slot - cpu_slots_].load(std::memory_order_acquire);
  }
  static std::uint64_t self_owner() noexcept;

 private:
  CacheHeader* header_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint32_t cpu_slots_ = 0, thread_slots_ = 0, key_ = 0;
};

}  // namespace mapheap::cache
