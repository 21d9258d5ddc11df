// cache/stats.cpp — the engine's statistics as JSON (no allocation: the
// engine may be the process's malloc).
#include "cache/engine.hpp"

namespace mapheap::cache {

std::size_t render_stats_json(const EngineStats& s, char* buf, std::size_t cap) noexcept {
  pal::TextOut out{buf, cap};
  if (cap > 0) buf[0] = '\0';
  using ull = unsigned long long;
  const EngineCounters& c = s.counters;
  out.printf("{\"cache\":{\"mode\":\"%s\",\"cpu_slots\":%u,\"thread_slots\":%u,\"floor\":%u},",
             to_string(s.cache_mode), s.cpu_slots, s.thread_slots, s.cache_floor);
  out.printf("\"counters\":{\"allocations\":%lld,\"frees\":%lld,\"bytes_in_use\":%lld,",
             static_cast<long long>(c.allocations), static_cast<long long>(c.frees),
             static_cast<long long>(c.bytes_in_use));
  out.printf("\"failed_allocations\":%lld,\"alloc_hits\":%lld,\"alloc_misses\":%lld,",
             static_cast<long long>(c.failed_allocations), static_cast<long long>(c.alloc_hits),
             static_cast<long long>(c.alloc_misses));
  out.printf("\"free_hits\":%lld,\"free_misses\":%lld,\"decays\":%lld,\"released_pages\":%lld,",
             static_cast<long long>(c.free_hits), static_cast<long long>(c.free_misses),
             static_cast<long long>(c.decays), static_cast<long long>(c.released_pages));
  out.printf("\"grows\":%lld},", static_cast<long long>(c.grows));
  out.printf("\"region\":{\"committed_bytes\":%llu,\"reserved_bytes\":%llu},",
             static_cast<ull>(s.committed_bytes), static_cast<ull>(s.region_bytes));
  const page::BuddyInfo& z = s.zone;
  out.printf("\"pages\":{\"page_size\":%u,\"arena\":%llu,\"metadata\":%llu,", s.runs->page_size,
             static_cast<ull>(z.arena_pages), static_cast<ull>(s.metadata_pages));
  out.printf("\"in_use\":%llu,\"large\":%llu,\"slab\":%llu,",
             static_cast<ull>(z.large_pages + z.slab_pages), static_cast<ull>(z.large_pages),
             static_cast<ull>(z.slab_pages));
  out.printf("\"free_dirty\":%llu,\"free_released\":%llu,\"isolated\":%llu},",
             static_cast<ull>(z.free_pages - z.released_pages), static_cast<ull>(z.released_pages),
             static_cast<ull>(z.isolated_pages));
  out.put("\"buddyinfo\":[");
  for (unsigned k = 0; k < page::kOrders; ++k)
    out.printf("%s%llu", k ? "," : "", static_cast<ull>(z.free_blocks[k]));
  out.put("],\"classes\":[");
  bool first = true;
  for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
    if (s.slabs.slabs[cls] == 0 && s.cached_objects[cls] == 0) continue;
    const std::uint64_t inuse = s.slabs.inuse_objects[cls];
    const std::uint64_t cached = s.cached_objects[cls] < inuse ? s.cached_objects[cls] : inuse;
    out.printf("%s{\"size\":%zu,\"slabs\":%llu,\"pages_per_slab\":%u,\"objects_per_slab\":%u,",
               first ? "" : ",", slab::class_size(cls), static_cast<ull>(s.slabs.slabs[cls]),
               s.runs->pages[cls], s.runs->objects[cls]);
    out.printf("\"in_use\":%llu,\"cached\":%llu}", static_cast<ull>(inuse - cached),
               static_cast<ull>(cached));
    first = false;
  }
  out.put("]}");
  return out.len;
}

}  // namespace mapheap::cache
