// cache/front_cache.cpp — laying out the cache run and claiming thread slots.
#include "cache/front_cache.hpp"

#include <cstring>
#include <new>

#include "pal/pal.hpp"

namespace mapheap::cache {

namespace {

constexpr std::uint64_t kCacheMagic = 0x4548434143504d00ull;  // "\0MPCACHE"
constexpr std::uint32_t kCacheVersion = 3;  // 2: the transfer slot; 3: arrays of 32 objects or more

constexpr std::size_t slots_offset() noexcept {
  return (sizeof(CacheHeader) + 63) / 64 * 64;
}

// The run for `slots` CPU and thread slots (and the transfer slot).
std::uint64_t run_bytes(std::uint32_t slots) noexcept {
  return slots_offset() + std::uint64_t{array_slots_for(slots)} * kSlot.bytes;
}

}  // namespace

const char* to_string(CacheMode m) noexcept {
  switch (m) {
    case CacheMode::automatic: return "automatic";
    case CacheMode::per_cpu: return "per-cpu";
    case CacheMode::per_thread: return "per-thread";
    case CacheMode::none: return "none";
  }
  return "?";
}

page::PageIndex FrontCache::format(page::Buddy& zone, std::uint32_t cpu_slots, std::uint32_t key,
                                   page::Buddy::ReleaseFn release, void* release_ctx,
                                   FrontCache& out) noexcept {
  const std::uint64_t page = zone.header().page_size;
  // The budget is an eighth of the region (the reservation, which the arena
  // grows into), not of the arena now: slots are released at format and cost
  // memory only once used.
  const std::uint64_t budget = zone.region_bytes() / 8;
  std::uint32_t threads = kMaxThreadSlots;
  while (threads > 0 && run_bytes(cpu_slots + threads) > budget) --threads;
  if (run_bytes(cpu_slots + threads) > budget) cpu_slots = 0;  // too small a heap for caches
  // The run must fit in the arena as it is now: fewer thread slots, then none.
  page::PageIndex run;
  std::uint64_t pages;
  for (;;) {
    pages = (run_bytes(cpu_slots + threads) + page - 1) / page;
    run = zone.alloc(page::Pages(pages));
    if (run.valid() || (cpu_slots == 0 && threads == 0)) break;
    if (threads > 0)
      threads = 0;
    else
      cpu_slots = 0;
  }
  if (!run.valid()) return run;
  std::byte* base = zone.address(run);
  const bool zeroed = release != nullptr && release(release_ctx, base, pages * page);
  auto* h = new (base) CacheHeader{};
  h->magic = kCacheMagic;
  h->version = kCacheVersion;
  h->cpu_slots = cpu_slots;
  h->thread_slots = threads;
  h->slot_bytes = kSlot.bytes;
  h->slots_off = static_cast<std::uint32_t>(slots_offset());
  h->key = key;
  h->classes = slab::kClassCount;
  // The run came from the free lists: unless released just now, its pages
  // may hold an old life's bytes. Only the words matter; items above a count
  // are never read.
  for (std::uint32_t s = 0; s < array_slots_for(cpu_slots + threads) && !zeroed; ++s) {
    std::byte* slot = base + slots_offset() + std::size_t{s} * kSlot.bytes;
    for (unsigned c = 0; c < slab::kClassCount; ++c)
      reinterpret_cast<ClassArray*>(slot + kSlot.class_off[c])->word = 0;
  }
  return attach(zone, run, out) ? run : core::kNoPage;
}

bool FrontCache::attach(page::Buddy& zone, page::PageIndex run, FrontCache& out) noexcept {
  if (!run.valid() || run.i < zone.first_page() || run.i >= zone.end_page())
    return false;
  const page::PageDesc& d = zone.desc(run);
  if (d.state != page::PageState::large || std::uint64_t{run.i} + d.run > zone.end_page())
    return false;
  const std::uint64_t have = std::uint64_t{d.run} * zone.header().page_size;
  if (have < sizeof(CacheHeader)) return false;
  auto* h = reinterpret_cast<CacheHeader*>(zone.address(run));
  if (h->magic != kCacheMagic || h->version != kCacheVersion || h->slot_bytes != kSlot.bytes ||
      h->slots_off != slots_offset() || h->classes != slab::kClassCount ||
      h->thread_slots > kMaxThreadSlots || h->cpu_slots > 65536 ||
      run_bytes(h->cpu_slots + h->thread_slots) > have)
    return false;
  out.header_ = h;
  out.slots_ = zone.address(run) + h->slots_off;
  out.cpu_slots_ = h->cpu_slots;
  out.thread_slots_ = h->thread_slots;
  out.key_ = h->key;
  return true;
}

std::uint64_t FrontCache::self_owner() noexcept {
  return static_cast<std::uint64_t>(pal::process_id()) << 32 |
         static_cast<std::uint32_t>(pal::thread_id());
}

std::uint32_t FrontCache::claim_thread_slot() noexcept {
  const std::uint64_t me = self_owner();
  // First an unclaimed slot, then one whose owner is gone.
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t j = 0; j < thread_slots_; ++j) {
      std::uint64_t cur = header_->owner[j].load(std::memory_order_acquire);
      if (cur == me) return cpu_slots_ + j;
      if (pass == 0 && cur != 0) continue;
      if (pass == 1 && (cur == 0 || pal::thread_alive(static_cast<int>(cur >> 32),
                                                      static_cast<int>(cur & 0xffffffffu))))
        continue;
      if (header_->owner[j].compare_exchange_strong(cur, me, std::memory_order_acq_rel))
        return cpu_slots_ + j;
    }
  }
  return kNoSlot;
}

bool FrontCache::adopt_if_dead(std::uint32_t slot) noexcept {
  if (slot < cpu_slots_ || slot >= cpu_slots_ + thread_slots_) return false;
  std::uint64_t cur = header_->owner[slot - cpu_slots_].load(std::memory_order_acquire);
  if (cur == 0 ||
      pal::thread_alive(static_cast<int>(cur >> 32), static_cast<int>(cur & 0xffffffffu)))
    return false;
  return header_->owner[slot - cpu_slots_].compare_exchange_strong(cur, self_owner(),
                                                                  std::memory_order_acq_rel);
}

void FrontCache::release_thread_slot(std::uint32_t slot) noexcept {
  if (slot < cpu_slots_ || slot >= cpu_slots_ + thread_slots_) return;
  std::uint64_t me = self_owner();
  header_->owner[slot - cpu_slots_].compare_exchange_strong(me, 0, std::memory_order_acq_rel);
}

}  // namespace mapheap::cache
