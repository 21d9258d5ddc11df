// heap/mapped_heap_format.hpp — the bytes of a mapped heap, as they lie in
// the file (docs/design/mapped_heap.md draws them).
//
//  offset 0             4 KiB           8 KiB                                 engine_offset
//  | HeapHeader        | locks         | zone journal | directory journal | pad | engine region ...
//    magic, version,     zone mutex,                                            zone header, page
//    features, sizes,    directory                                              map, slab root,
//    UUID, checksum;     mutex                                                  caches, arena
//    clean flag,
//    directory, pids
//
// The header is plain data (copied whole by the tests and `snapshot`);
// its shared mutable words are accessed through std::atomic_ref.
// Everything past the header's checksummed part is mutable. Every offset is
// from the start of the heap (the mapping's base).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/journal.hpp"
#include "pal/pal.hpp"

namespace mapheap::heap {

inline constexpr std::uint64_t kHeapMagic = 0x3150414548504d41ull;  // "AMPHEAP1"
inline constexpr std::uint32_t kHeapVersion = 1;
// Feature bits. An unknown bit in `incompat` refuses the file; in
// `ro_compat`, a read-write open (reading it is safe); `compat` is advisory.
// The engine's layout in the mapping: exactly one of these is set. v1 had 73
// slab classes up to 32 KiB; v2 has 81 up to 64 KiB (the cache slots and the
// classes' slab runs differ); v3 holds at least 16 objects in each class's
// cache array, where v2 held 4 (the cache slots differ); v4 holds at least 32
// (the cache slots differ again). v4 is the only one this build opens.
inline constexpr std::uint64_t kIncompatEngineV1 = 1u << 0;  // buddy v1 + slab (to 32 KiB) + cache run v2
inline constexpr std::uint64_t kIncompatEngineV2 = 1u << 1;  // buddy v1 + slab (to 64 KiB) + cache run v2
inline constexpr std::uint64_t kIncompatEngineV3 = 1u << 2;  // v2 + cache arrays of 16 to 256 objects
inline constexpr std::uint64_t kIncompatEngineV4 = 1u << 4;  // v2 + cache arrays of 32 to 256 objects
// The user data's offset_ptrs: null is any word with the sign bit clear
// (mapheap/offset_ptr.hpp). Heaps without it stored null as the tagged
// distance 1, which this build would read as a pointer.
inline constexpr std::uint64_t kIncompatOffsetPtrV2 = 1u << 3;
inline constexpr std::uint64_t kIncompatKnown = kIncompatEngineV4 | kIncompatOffsetPtrV2;
// Engine layouts this build knows and refuses as older.
inline constexpr std::uint64_t kIncompatRetired = kIncompatEngineV1 | kIncompatEngineV2 | kIncompatEngineV3;
inline constexpr std::uint64_t kRoCompatKnown = 0;

inline constexpr std::uint32_t kZoneJournalEntries = 16384;  // 1 MiB
inline constexpr std::uint32_t kDirJournalEntries = 256;     // 16 KiB
inline constexpr std::uint32_t kMaxProcesses = 64;           // shown by `mapheap stat`

struct ProcessSlot {
  std::int32_t pid;  // 0: free (std::atomic_ref: several processes claim slots)
  std::uint32_t reserved;
  std::uint64_t opened_ns;  // CLOCK_REALTIME of the open
};

struct HeapHeader {
  // ---- written once at create, covered by `checksum`
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_bytes;  // sizeof(HeapHeader) when written
  std::uint64_t compat;
  std::uint64_t incompat;
  std::uint64_t ro_compat;
  std::uint32_t page_size;
  std::uint32_t zone_journal_entries;
  std::uint32_t dir_journal_entries;
  std::uint32_t reserved0;
  std::uint8_t uuid[16];
  std::uint64_t region_bytes;  // the reservation: the heap's maximum size
  std::uint64_t locks_offset;
  std::uint64_t zone_journal_offset;
  std::uint64_t dir_journal_offset;
  std::uint64_t engine_offset;
  std::uint64_t created_ns;  // CLOCK_REALTIME
  std::uint64_t checksum;    // FNV-1a 64 of every byte above
  // ---- mutable
  std::uint32_t clean;  // 1: the last user closed it; 0: in use, or crashed
  std::uint32_t reserved1;
  std::uint64_t opens;       // opens read-write, ever
  std::uint64_t recoveries;  // recoveries run, ever
  std::uint64_t directory;                // the named-object table's offset, 0 if none (dir lock)
  std::uint64_t reserved2[8];
  ProcessSlot processes[kMaxProcesses];
};
static_assert(sizeof(HeapHeader) <= 4096);

struct HeapLocks {
  alignas(64) pal::RobustMutex zone;
  alignas(64) pal::RobustMutex directory;
};

// The named-object table: open addressing, linear probing, a power of two
// of entries, in a block of the heap. Under the directory lock.
inline constexpr std::uint64_t kDirMagic = 0x5249444850414d41ull;  // "AMAPHDIR"
enum class DirState : std::uint32_t { empty = 0, live = 1, deleted = 2 };
struct DirEntry {
  DirState state;
  std::uint32_t name_len;
  std::uint64_t hash;
  std::uint64_t strings;  // offset of a block: the name, then the type name (NUL-terminated)
  std::uint64_t object;   // offset of the object
  std::uint64_t size;     // bytes
  std::uint64_t count;    // elements
  std::uint32_t type_len;
  std::uint32_t align;
  std::uint64_t reserved;
};
static_assert(sizeof(DirEntry) == 64);
struct DirTable {
  std::uint64_t magic;
  std::uint32_t capacity;  // entries, a power of two
  std::uint32_t live;
  std::uint32_t deleted;
  std::uint32_t reserved[9];
  DirEntry entries[1];  // capacity of them
  static constexpr std::size_t bytes_for(std::uint32_t capacity) noexcept {
    return offsetof(DirTable, entries) + std::size_t{capacity} * sizeof(DirEntry);
  }
};

inline std::uint64_t fnv1a(const void* p, std::size_t n,
                           std::uint64_t h = 0xcbf29ce484222325ull) noexcept {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
inline std::uint64_t header_checksum(const HeapHeader& h) noexcept {
  return fnv1a(&h, offsetof(HeapHeader, checksum));
}

// Checks a header against the bytes the file has, before anything else of
// the file is read. "" if it is a heap this build can open, else the reason.
// `writable`: a read-write open (refused by unknown ro_compat features).
std::string validate_header(const HeapHeader& h, std::uint64_t file_bytes, bool writable);

}  // namespace mapheap::heap
