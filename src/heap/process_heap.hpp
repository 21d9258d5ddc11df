// heap/process_heap.hpp — the process's heap: one engine over one large
// private anonymous reservation, made on first use without calling malloc,
// grown on demand, giving memory back by decay. src/override/ puts the libc
// allocation API on top of it.
//
//   reservation (64 GiB of address space, PROT_NONE until used)
//   | zone header | page map (covers the reservation; touched as used) | arena ... | not yet usable ... |
//   |<------------------ committed: read-write ------------------------------->|
//
// Untouched pages cost nothing, so the page map of the whole reservation
// (0.8% of it) and the slack of the committed part are free until used.
#pragma once

#include <atomic>
#include <cstddef>

#include "cache/engine.hpp"
#include "heap/options.hpp"

namespace mapheap::heap {

using ProcessEngine = cache::Engine<core::FutexLock>;

namespace detail {
// The heap once it is ready (null before): one load on every call.
extern std::atomic<ProcessEngine*> g_ready;
ProcessEngine* process_engine_slow() noexcept;
inline constexpr std::size_t kBootBytes = 256 << 10;
extern std::byte g_boot[kBootBytes];
}  // namespace detail

// The heap; created by the first call (any thread; the others wait). nullptr
// while the calling thread is itself creating it (the C library may
// allocate inside the system calls that set it up), or if the OS refused
// every reservation size.
inline ProcessEngine* process_engine() noexcept {
  if (ProcessEngine* e = detail::g_ready.load(std::memory_order_acquire)) [[likely]]
    return e;
  return detail::process_engine_slow();
}

// Memory for the allocations made while the heap creates itself: a bump
// allocator over static storage, never freed. nullptr when it is used up.
void* bootstrap_allocate(std::size_t size, std::size_t align) noexcept;
inline bool is_bootstrap(const void* p) noexcept {
  const auto* b = static_cast<const std::byte*>(p);
  return b >= detail::g_boot && b < detail::g_boot + detail::kBootBytes;
}
std::size_t bootstrap_usable_size(const void* p) noexcept;

// The reservation the heap lives in (0 before it exists).
std::size_t process_heap_reserved() noexcept;

// The options the heap was created with (MAPHEAP_OPTIONS).
const HeapOptions& process_heap_options() noexcept;

// Writes the statistics (MAPHEAP_OPTIONS stats=) to standard error or the
// stats file; nothing if they were not asked for. Called at exit.
void report_statistics() noexcept;

}  // namespace mapheap::heap
