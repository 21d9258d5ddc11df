// override/malloc.cpp — the C library's allocation API and C++'s operator
// new/delete on the process heap. The only code in mapheap that exports
// libc symbols; built into libmapheap_preload.so (LD_PRELOAD) and
// libmapheap_malloc.a (static linking).
//
// Behaviour follows glibc where the standards leave room: malloc(0) returns
// a unique pointer; realloc(p, 0) frees p and returns NULL; memalign rounds
// an alignment that is not a power of two up to one; errno is ENOMEM on
// every allocation failure and EINVAL for a bad alignment.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <malloc.h>
#include <new>

#include "heap/process_heap.hpp"
#include "pal/pal.hpp"

#define MAPHEAP_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using mapheap::heap::ProcessEngine;
using mapheap::heap::process_engine;

void* allocate(std::size_t size, std::size_t align) noexcept {
  ProcessEngine* e = process_engine();
  void* p = e != nullptr ? e->allocate(size, align)
                         : mapheap::heap::bootstrap_allocate(size == 0 ? 1 : size, align);
  if (p == nullptr) errno = ENOMEM;
  return p;
}

void release(void* p) noexcept {
  if (p == nullptr || mapheap::heap::is_bootstrap(p)) return;  // bootstrap memory stays
  if (ProcessEngine* e = process_engine()) e->deallocate(p);
}

std::size_t usable(const void* p) noexcept {
  if (p == nullptr) return 0;
  if (mapheap::heap::is_bootstrap(p)) return mapheap::heap::bootstrap_usable_size(p);
  ProcessEngine* e = process_engine();
  return e != nullptr ? e->usable_size(p) : 0;
}

constexpr bool power_of_two(std::size_t a) noexcept {
  return a != 0 && (a & (a - 1)) == 0;
}

std::size_t page() noexcept {
  return mapheap::pal::page_size();
}

}  // namespace

MAPHEAP_EXPORT void* malloc(std::size_t size) noexcept {
  return allocate(size, 0);
}

MAPHEAP_EXPORT void free(void* p) noexcept {
  release(p);
}

MAPHEAP_EXPORT void cfree(void* p) noexcept {
  release(p);
}

MAPHEAP_EXPORT void* calloc(std::size_t n, std::size_t size) noexcept {
  std::size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  void* p = allocate(bytes, 0);
  if (p != nullptr) std::memset(p, 0, bytes);
  return p;
}

MAPHEAP_EXPORT void* realloc(void* p, std::size_t size) noexcept {
  if (p == nullptr) return allocate(size, 0);
  if (size == 0) {  // glibc: frees and returns NULL
    release(p);
    return nullptr;
  }
  if (mapheap::heap::is_bootstrap(p)) {
    void* q = allocate(size, 0);
    if (q != nullptr) {
      const std::size_t have = mapheap::heap::bootstrap_usable_size(p);
      std::memcpy(q, p, have < size ? have : size);
    }
    return q;
  }
  ProcessEngine* e = process_engine();
  void* q = e != nullptr ? e->reallocate(p, size) : nullptr;
  if (q == nullptr) errno = ENOMEM;
  return q;
}

MAPHEAP_EXPORT void* reallocarray(void* p, std::size_t n, std::size_t size) noexcept {
  std::size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, bytes);
}

MAPHEAP_EXPORT int posix_memalign(void** out, std::size_t align, std::size_t size) noexcept {
  if (!power_of_two(align) || align % sizeof(void*) != 0) return EINVAL;
  const int saved = errno;
  void* p = allocate(size, align);
  errno = saved;  // posix_memalign reports through its result, not errno
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}

MAPHEAP_EXPORT void* aligned_alloc(std::size_t align, std::size_t size) noexcept {
  if (!power_of_two(align)) {
    errno = EINVAL;
    return nullptr;
  }
  return allocate(size, align);
}

MAPHEAP_EXPORT void* memalign(std::size_t align, std::size_t size) noexcept {
  if (align == 0) align = 1;
  if (!power_of_two(align)) {  // glibc rounds up to a power of two
    if (align > (std::size_t{1} << (sizeof(std::size_t) * 8 - 2))) {
      errno = EINVAL;
      return nullptr;
    }
    std::size_t a = 1;
    while (a < align) a <<= 1;
    align = a;
  }
  return allocate(size, align);
}

MAPHEAP_EXPORT void* valloc(std::size_t size) noexcept {
  return allocate(size, page());
}

MAPHEAP_EXPORT void* pvalloc(std::size_t size) noexcept {
  const std::size_t pg = page();
  if (size > SIZE_MAX - pg) {
    errno = ENOMEM;
    return nullptr;
  }
  return allocate(size == 0 ? pg : (size + pg - 1) / pg * pg, pg);
}

MAPHEAP_EXPORT std::size_t malloc_usable_size(void* p) noexcept {
  return usable(p);
}

MAPHEAP_EXPORT int malloc_trim(std::size_t) noexcept {
  ProcessEngine* e = process_engine();
  return e != nullptr && e->trim() > 0 ? 1 : 0;
}

MAPHEAP_EXPORT struct mallinfo2 mallinfo2() noexcept {
  struct mallinfo2 mi {};
  ProcessEngine* e = process_engine();
  if (e == nullptr) return mi;
  const mapheap::cache::EngineStats s = e->stats();
  const std::size_t pg = s.runs != nullptr ? s.runs->page_size : page();
  mi.arena = s.committed_bytes;                            // bytes of the heap usable now
  mi.ordblks = s.zone.free_blocks[0];                      // free page blocks of one page
  mi.hblks = s.slabs.large_runs;                           // large objects (page runs)
  mi.hblkhd = s.zone.large_pages * pg;                     // their bytes
  mi.uordblks = static_cast<std::size_t>(s.counters.bytes_in_use);
  mi.fordblks = s.zone.free_pages * pg;                    // free pages
  mi.keepcost = (s.zone.free_pages - s.zone.released_pages) * pg;  // free-dirty: trim would release
  return mi;
}

// Statistics at exit, when MAPHEAP_OPTIONS asks for them.
__attribute__((destructor)) static void mapheap_report_at_exit() {
  mapheap::heap::report_statistics();
}

// ---- C++

namespace {

void* new_or_throw(std::size_t size, std::size_t align) {
  for (;;) {
    if (void* p = allocate(size, align)) return p;
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}

void* new_nothrow(std::size_t size, std::size_t align) noexcept {
  try {
    return new_or_throw(size, align);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

__attribute__((visibility("default"))) void* operator new(std::size_t n) {
  return new_or_throw(n, 0);
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n) {
  return new_or_throw(n, 0);
}
__attribute__((visibility("default"))) void* operator new(std::size_t n,
                                                          const std::nothrow_t&) noexcept {
  return new_nothrow(n, 0);
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n,
                                                            const std::nothrow_t&) noexcept {
  return new_nothrow(n, 0);
}
__attribute__((visibility("default"))) void* operator new(std::size_t n, std::align_val_t a) {
  return new_or_throw(n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, std::align_val_t a) {
  return new_or_throw(n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void* operator new(std::size_t n, std::align_val_t a,
                                                          const std::nothrow_t&) noexcept {
  return new_nothrow(n, static_cast<std::size_t>(a));
}
__attribute__((visibility("default"))) void* operator new[](std::size_t n, std::align_val_t a,
                                                            const std::nothrow_t&) noexcept {
  return new_nothrow(n, static_cast<std::size_t>(a));
}

__attribute__((visibility("default"))) void operator delete(void* p) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::size_t) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::size_t) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete(void* p,
                                                            const std::nothrow_t&) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p,
                                                              const std::nothrow_t&) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::align_val_t) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::align_val_t) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::size_t,
                                                            std::align_val_t) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::size_t,
                                                              std::align_val_t) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete(void* p, std::align_val_t,
                                                            const std::nothrow_t&) noexcept {
  release(p);
}
__attribute__((visibility("default"))) void operator delete[](void* p, std::align_val_t,
                                                              const std::nothrow_t&) noexcept {
  release(p);
}
