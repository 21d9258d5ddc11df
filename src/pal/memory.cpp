// pal/memory.cpp — address space: mmap, munmap, mprotect, mremap, madvise,
// mlock, msync, and aligned reservations.
#include <cerrno>
#include <cstdint>

#include <linux/mman.h>  // MAP_HUGE_2MB, MAP_HUGE_1GB
#include <sys/mman.h>
#include <unistd.h>

#include "pal/pal.hpp"

namespace mapheap::pal {

namespace {

int to_os_prot(Prot p) noexcept {
  switch (p) {
    case Prot::none: return PROT_NONE;
    case Prot::read: return PROT_READ;
    case Prot::read_write: return PROT_READ | PROT_WRITE;
  }
  return PROT_NONE;
}

int to_os_map_flags(std::uint32_t f) noexcept {
  int os = 0;
  if (f & kMapShared) os |= MAP_SHARED;
  if (f & kMapPrivate) os |= MAP_PRIVATE;
  if (f & kMapAnonymous) os |= MAP_ANONYMOUS;
  if (f & kMapFixed) os |= MAP_FIXED;
  if (f & kMapNoReserve) os |= MAP_NORESERVE;
  if (f & kMapPopulate) os |= MAP_POPULATE;
  if (f & kMapHuge2M) os |= MAP_HUGETLB | MAP_HUGE_2MB;
  if (f & kMapHuge1G) os |= MAP_HUGETLB | MAP_HUGE_1GB;
  return os;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

int to_os_advice(Advice a) noexcept {
  switch (a) {
    case Advice::normal: return MADV_NORMAL;
    case Advice::random: return MADV_RANDOM;
    case Advice::sequential: return MADV_SEQUENTIAL;
    case Advice::willneed: return MADV_WILLNEED;
    case Advice::dontneed: return MADV_DONTNEED;
    case Advice::free_lazy: return MADV_FREE;
    case Advice::remove: return MADV_REMOVE;
    case Advice::hugepage: return MADV_HUGEPAGE;
    case Advice::nohugepage: return MADV_NOHUGEPAGE;
    case Advice::populate_read: return MADV_POPULATE_READ;
    case Advice::populate_write: return MADV_POPULATE_WRITE;
    case Advice::dontdump: return MADV_DONTDUMP;
    case Advice::cold: return MADV_COLD;
    case Advice::pageout: return MADV_PAGEOUT;
  }
  return MADV_NORMAL;
}

bool is_power_of_two(std::size_t v) noexcept {
  return v != 0 && (v & (v - 1)) == 0;
}

}  // namespace

std::size_t page_size() noexcept {
  static const std::size_t size = [] {
    const long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<std::size_t>(v) : std::size_t{4096};
  }();
  return size;
}

const char* advice_name(Advice a) noexcept {
  switch (a) {
    case Advice::normal: return "MADV_NORMAL";
    case Advice::random: return "MADV_RANDOM";
    case Advice::sequential: return "MADV_SEQUENTIAL";
    case Advice::willneed: return "MADV_WILLNEED";
    case Advice::dontneed: return "MADV_DONTNEED";
    case Advice::free_lazy: return "MADV_FREE";
    case Advice::remove: return "MADV_REMOVE";
    case Advice::hugepage: return "MADV_HUGEPAGE";
    case Advice::nohugepage: return "MADV_NOHUGEPAGE";
    case Advice::populate_read: return "MADV_POPULATE_READ";
    case Advice::populate_write: return "MADV_POPULATE_WRITE";
    case Advice::dontdump: return "MADV_DONTDUMP";
    case Advice::cold: return "MADV_COLD";
    case Advice::pageout: return "MADV_PAGEOUT";
  }
  return "MADV_?";
}

Result<void*> map(void* addr, std::size_t len, Prot prot, std::uint32_t flags, int fd,
                  std::uint64_t offset) noexcept {
  const int os_flags = to_os_map_flags(flags);
  const int os_prot = to_os_prot(prot);
  auto fail = [&](int code, const char* detail) {
    return Error::make(Op::mmap, code)
        .with_size(len)
        .with_offset(offset)
        .with_flags(static_cast<std::uint32_t>(os_flags), static_cast<std::uint32_t>(os_prot))
        .with_detail(detail);
  };
  if (len == 0) return fail(EINVAL, "length is zero");
  if (((flags & kMapShared) != 0) == ((flags & kMapPrivate) != 0))
    return fail(EINVAL, "exactly one of shared and private must be given");
  void* p = ::mmap(addr, len, os_prot, os_flags, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) {
    const int err = errno;
    const char* detail = nullptr;
    if (err == ENOMEM && (flags & (kMapHuge2M | kMapHuge1G)))
      detail = "no free hugetlb pages of that size (see /proc/meminfo HugePages_Free)";
    else if (err == ENOMEM)
      detail = "out of address space or commit limit (vm.overcommit_memory)";
    return fail(err, detail);
  }
  return p;
}

Status unmap(void* addr, std::size_t len) noexcept {
  if (::munmap(addr, len) != 0) return Error::make(Op::munmap, errno).with_size(len);
  return {};
}

Status protect(void* addr, std::size_t len, Prot prot) noexcept {
  if (::mprotect(addr, len, to_os_prot(prot)) != 0)
    return Error::make(Op::mprotect, errno)
        .with_size(len)
        .with_flags(0, static_cast<std::uint32_t>(to_os_prot(prot)));
  return {};
}

Result<void*> remap(void* addr, std::size_t old_len, std::size_t new_len, bool may_move) noexcept {
  void* p = ::mremap(addr, old_len, new_len, may_move ? MREMAP_MAYMOVE : 0);
  if (p == MAP_FAILED) return Error::make(Op::mremap, errno).with_size(new_len);
  return p;
}

Result<void*> reserve(std::size_t len, std::size_t align) noexcept {
  const std::size_t page = page_size();
  if (!is_power_of_two(align) || align < page)
    return Error::make(Op::mmap, EINVAL)
        .with_size(len)
        .with_detail("reservation alignment must be a power of two of at least the page size");
  if (len == 0 || len % page != 0)
    return Error::make(Op::mmap, EINVAL)
        .with_size(len)
        .with_detail("reservation length must be a non-zero multiple of the page size");
  // Over-reserve by align - page, then trim both ends: the kernel only promises
  // page alignment, and huge pages (and our 2 MiB layouts) need more.
  const std::size_t extra = align - page;
  if (len > SIZE_MAX - extra)
    return Error::make(Op::mmap, ENOMEM).with_size(len).with_detail("reservation too large");
  auto r =
      map(nullptr, len + extra, Prot::none, kMapPrivate | kMapAnonymous | kMapNoReserve, -1, 0);
  if (!r) return r;
  const auto start = reinterpret_cast<std::uintptr_t>(r.value());
  const std::uintptr_t aligned = (start + align - 1) & ~(static_cast<std::uintptr_t>(align) - 1);
  const std::size_t head = aligned - start;
  const std::size_t tail = extra - head;
  if (head != 0) (void)unmap(r.value(), head);
  if (tail != 0) (void)unmap(reinterpret_cast<void*>(aligned + len), tail);
  return reinterpret_cast<void*>(aligned);
}

Status advise(void* addr, std::size_t len, Advice advice) noexcept {
  if (::madvise(addr, len, to_os_advice(advice)) != 0) {
    const int err = errno;
    const char* detail = nullptr;
    if (err == EINVAL && (advice == Advice::hugepage || advice == Advice::nohugepage))
      detail = "transparent huge pages are not available for this range";
    else if (err == EINVAL && (advice == Advice::populate_read || advice == Advice::populate_write))
      detail =
          "MADV_POPULATE needs Linux 5.14+ and a protection that allows the access "
          "(populate_write needs PROT_WRITE)";
    return Error::make(Op::madvise, err)
        .with_size(len)
        .with_flags(static_cast<std::uint64_t>(advice))
        .with_detail(detail);
  }
  return {};
}

Status lock(void* addr, std::size_t len) noexcept {
  if (::mlock(addr, len) != 0)
    return Error::make(Op::mlock, errno)
        .with_size(len)
        .with_detail(errno == ENOMEM || errno == EPERM
                         ? "RLIMIT_MEMLOCK too low, or part of the range is not mapped"
                         : nullptr);
  return {};
}

Status unlock(void* addr, std::size_t len) noexcept {
  if (::munlock(addr, len) != 0) return Error::make(Op::munlock, errno).with_size(len);
  return {};
}

Status sync_memory(void* addr, std::size_t len, bool async) noexcept {
  if (::msync(addr, len, async ? MS_ASYNC : MS_SYNC) != 0)
    return Error::make(Op::msync, errno).with_size(len);
  return {};
}

}  // namespace mapheap::pal
