// pal/error.cpp — turning a pal::Error into words, without allocating.
#include "pal/error.hpp"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <linux/mman.h>  // MAP_HUGE_2MB, MAP_HUGE_1GB
#include <sys/mman.h>

#include "pal/pal.hpp"

namespace mapheap::pal {

const char* op_name(Op op) noexcept {
  switch (op) {
    case Op::none: return "(none)";
    case Op::mmap: return "mmap";
    case Op::munmap: return "munmap";
    case Op::mprotect: return "mprotect";
    case Op::mremap: return "mremap";
    case Op::madvise: return "madvise";
    case Op::mlock: return "mlock";
    case Op::munlock: return "munlock";
    case Op::msync: return "msync";
    case Op::open: return "open";
    case Op::close: return "close";
    case Op::dup: return "fcntl(F_DUPFD_CLOEXEC)";
    case Op::fstat: return "fstat";
    case Op::fstatfs: return "fstatfs";
    case Op::ftruncate: return "ftruncate";
    case Op::fallocate: return "fallocate";
    case Op::punch_hole: return "fallocate(PUNCH_HOLE)";
    case Op::fdatasync: return "fdatasync";
    case Op::fsync: return "fsync";
    case Op::lock_file: return "fcntl(F_OFD_SETLKW)";
    case Op::fadvise: return "posix_fadvise";
    case Op::read: return "read";
    case Op::write: return "write";
    case Op::memfd_create: return "memfd_create";
    case Op::shm_open: return "shm_open";
    case Op::shm_unlink: return "shm_unlink";
    case Op::unlink: return "unlink";
    case Op::futex_wait: return "futex(WAIT)";
    case Op::futex_wake: return "futex(WAKE)";
    case Op::mutex_init: return "pthread_mutex_init";
    case Op::mutex_lock: return "pthread_mutex_lock";
    case Op::mutex_unlock: return "pthread_mutex_unlock";
    case Op::mutex_consistent: return "pthread_mutex_consistent";
    case Op::proc_read: return "read";
    case Op::spawn: return "posix_spawnp";
    case Op::sched_affinity: return "sched_setaffinity";
    case Op::check: return "check";
  }
  return "(unknown)";
}

void TextOut::put(const char* s) noexcept {
  for (; *s != '\0'; ++s, ++len)
    if (len + 1 < cap) buf[len] = *s;
  if (cap > 0) buf[len + 1 < cap ? len : cap - 1] = '\0';
}

void TextOut::printf(const char* fmt, ...) noexcept {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  put(tmp);
}

const char* errno_name(int code) noexcept {
  switch (code) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ERANGE: return "ERANGE";
    case EDEADLK: return "EDEADLK";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ELOOP: return "ELOOP";
    case EOVERFLOW: return "EOVERFLOW";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EOWNERDEAD: return "EOWNERDEAD";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    case ETXTBSY: return "ETXTBSY";
    case EDQUOT: return "EDQUOT";
    case ENXIO: return "ENXIO";
    case ENOEXEC: return "ENOEXEC";
    default: return "E?";
  }
}

Error Error::make(Op op, int code) noexcept {
  Error e;
  e.op = op;
  e.code = code;
  return e;
}

Error& Error::with_path(const char* p) noexcept {
  if (p == nullptr) {
    path[0] = '\0';
    return *this;
  }
  const std::size_t n = std::strlen(p);
  if (n < sizeof(path)) {
    std::memcpy(path, p, n + 1);
  } else {  // keep the tail: the file name matters more than the directory
    constexpr std::size_t keep = sizeof(path) - 4;
    std::memcpy(path, "...", 3);
    std::memcpy(path + 3, p + (n - keep), keep + 1);
  }
  return *this;
}

namespace {

struct FlagName {
  std::uint64_t bit;
  const char* name;
};

void put_bits(TextOut& o, std::uint64_t v, const FlagName* names, std::size_t n) noexcept {
  bool first = true;
  for (std::size_t i = 0; i < n; ++i) {
    if (names[i].bit != 0 && (v & names[i].bit) == names[i].bit) {
      if (!first) o.put("|");
      o.put(names[i].name);
      first = false;
      v &= ~names[i].bit;
    }
  }
  if (v != 0) {
    if (!first) o.put("|");
    o.printf("0x%llx", static_cast<unsigned long long>(v));
  } else if (first) {
    o.put("0");
  }
}

void put_open_flags(TextOut& o, std::uint64_t f) noexcept {
  const int acc = static_cast<int>(f & O_ACCMODE);
  o.put(acc == O_RDWR ? "O_RDWR" : acc == O_WRONLY ? "O_WRONLY" : "O_RDONLY");
  static constexpr FlagName kNames[] = {
      {O_CREAT, "O_CREAT"},       {O_EXCL, "O_EXCL"},           {O_TRUNC, "O_TRUNC"},
      {O_CLOEXEC, "O_CLOEXEC"},   {O_NOFOLLOW, "O_NOFOLLOW"},   {O_NOCTTY, "O_NOCTTY"},
      {O_NONBLOCK, "O_NONBLOCK"}, {O_DIRECTORY, "O_DIRECTORY"}, {O_APPEND, "O_APPEND"},
  };
  const std::uint64_t rest = f & ~static_cast<std::uint64_t>(O_ACCMODE);
  if (rest != 0) {
    o.put("|");
    put_bits(o, rest, kNames, sizeof(kNames) / sizeof(kNames[0]));
  }
}

void put_mmap_flags(TextOut& o, std::uint64_t f) noexcept {
  static constexpr FlagName kNames[] = {
      {MAP_SHARED, "MAP_SHARED"},
      {MAP_PRIVATE, "MAP_PRIVATE"},
      {MAP_ANONYMOUS, "MAP_ANONYMOUS"},
      {MAP_FIXED, "MAP_FIXED"},
      {MAP_NORESERVE, "MAP_NORESERVE"},
      {MAP_POPULATE, "MAP_POPULATE"},
      {static_cast<std::uint64_t>(MAP_HUGE_1GB), "MAP_HUGE_1GB"},
      {static_cast<std::uint64_t>(MAP_HUGE_2MB), "MAP_HUGE_2MB"},
      {MAP_HUGETLB, "MAP_HUGETLB"},
  };
  put_bits(o, f, kNames, sizeof(kNames) / sizeof(kNames[0]));
}

const char* prot_name(std::uint32_t p) noexcept {
  if (p == PROT_NONE) return "PROT_NONE";
  if (p == PROT_READ) return "PROT_READ";
  if (p == (PROT_READ | PROT_WRITE)) return "PROT_READ|PROT_WRITE";
  return "PROT_?";
}

}  // namespace

std::size_t Error::format(char* buf, std::size_t cap) const noexcept {
  TextOut o{buf, cap};
  if (cap > 0) buf[0] = '\0';
  o.put(op_name(op));
  o.put("(");
  bool sep = false;
  auto comma = [&] {
    if (sep) o.put(", ");
    sep = true;
  };
  if (path[0] != '\0') {
    comma();
    o.printf("path='%s'", path);
  }
  switch (op) {
    case Op::mmap:
      comma();
      o.printf("size=%llu, prot=%s, flags=", static_cast<unsigned long long>(size),
               prot_name(extra));
      put_mmap_flags(o, flags);
      if (offset != 0) o.printf(", offset=%llu", static_cast<unsigned long long>(offset));
      break;
    case Op::open:
    case Op::shm_open:
      comma();
      o.put("flags=");
      put_open_flags(o, flags);
      if ((flags & O_CREAT) != 0) o.printf(", mode=0%o", extra);
      break;
    case Op::mprotect:
      comma();
      o.printf("size=%llu, prot=%s", static_cast<unsigned long long>(size), prot_name(extra));
      break;
    case Op::madvise:
      comma();
      o.printf("size=%llu, advice=%s", static_cast<unsigned long long>(size),
               advice_name(static_cast<Advice>(flags)));
      break;
    case Op::memfd_create:
      comma();
      o.printf("flags=0x%llx%s", static_cast<unsigned long long>(flags),
               (flags & kMemfdHuge1G)   ? " (MFD_HUGETLB 1 GiB)"
               : (flags & kMemfdHuge2M) ? " (MFD_HUGETLB 2 MiB)"
                                        : "");
      break;
    default:
      if (size != 0 || offset != 0) {
        comma();
        o.printf("size=%llu", static_cast<unsigned long long>(size));
        if (offset != 0) o.printf(", offset=%llu", static_cast<unsigned long long>(offset));
      }
      break;
  }
  o.put(") failed: ");
  if (op == Op::check && detail != nullptr) {
    o.put(detail);
    return o.len;
  }
  char msg[128];
  const char* text = strerror_r(code, msg, sizeof(msg));  // GNU variant returns the text
  o.printf("%s (%s)", errno_name(code), text);
  if (detail != nullptr) {
    o.put(": ");
    o.put(detail);
  }
  return o.len;
}

}  // namespace mapheap::pal
