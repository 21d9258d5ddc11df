// pal/file.cpp — descriptors: open, stat, truncate, fallocate, fdatasync,
// fadvise, read/write, memfd_create and POSIX shared memory.
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <linux/magic.h>
#include <linux/memfd.h>  // MFD_HUGE_2MB, MFD_HUGE_1GB
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "pal/pal.hpp"

namespace mapheap::pal {

namespace {

int to_os_open_flags(std::uint32_t f) noexcept {
  int os = O_CLOEXEC | O_NOCTTY;
  if (f & kOpenReadWrite)
    os |= O_RDWR;
  else if (f & kOpenWriteOnly)
    os |= O_WRONLY;
  else
    os |= O_RDONLY;
  if (f & kOpenCreate) os |= O_CREAT;
  if (f & kOpenExclusive) os |= O_EXCL;
  if (f & kOpenTruncate) os |= O_TRUNC;
  if (!(f & kOpenFollow)) os |= O_NOFOLLOW;
  if (f & kOpenNonBlock) os |= O_NONBLOCK;
  return os;
}

const char* open_detail(int err, std::uint32_t flags) noexcept {
  switch (err) {
    case ELOOP:
      return (flags & kOpenFollow) ? "too many levels of symbolic links"
                                   : "the path is a symbolic link, and symlinks are not followed";
    case EEXIST: return "it already exists and exclusive creation was asked";
    case ENOENT:
      return (flags & kOpenCreate) ? "a directory in the path does not exist" : "it does not exist";
    case EISDIR: return "the path is a directory";
    case EACCES: return "permission denied by the file's mode or a directory's";
    default: return nullptr;
  }
}

}  // namespace

Result<int> open_file(const char* path, std::uint32_t flags, unsigned mode) noexcept {
  const int os = to_os_open_flags(flags);
  int fd;
  do {
    fd = ::open(path, os, static_cast<mode_t>(mode));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    return Error::make(Op::open, err)
        .with_path(path)
        .with_flags(static_cast<std::uint32_t>(os), mode)
        .with_detail(open_detail(err, flags));
  }
  return fd;
}

Status close_fd(int fd) noexcept {
  // Never retry close on EINTR: on Linux the descriptor is already gone.
  if (::close(fd) != 0 && errno != EINTR) return Error::make(Op::close, errno);
  return {};
}

Result<int> dup_fd(int fd) noexcept {
  const int r = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) return Error::make(Op::dup, errno);
  return r;
}

Result<FileInfo> stat_fd(int fd) noexcept {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Error::make(Op::fstat, errno);
  FileInfo info;
  info.size = static_cast<std::uint64_t>(st.st_size);
  info.mode = st.st_mode & 07777;
  info.dev = st.st_dev;
  info.block_size = static_cast<std::uint64_t>(st.st_blksize);
  if (S_ISREG(st.st_mode))
    info.type = FileType::regular;
  else if (S_ISDIR(st.st_mode))
    info.type = FileType::directory;
  else if (S_ISLNK(st.st_mode))
    info.type = FileType::symlink;
  else
    info.type = FileType::other;
  struct statfs sfs {};
  if (::fstatfs(fd, &sfs) != 0) return Error::make(Op::fstatfs, errno);
  info.fs_magic = static_cast<std::uint64_t>(sfs.f_type);
  info.on_hugetlbfs = sfs.f_type == HUGETLBFS_MAGIC;
  info.on_tmpfs = sfs.f_type == TMPFS_MAGIC;
  return info;
}

Status truncate_fd(int fd, std::uint64_t size) noexcept {
  int r;
  do {
    r = ::ftruncate(fd, static_cast<off_t>(size));
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    const int err = errno;
    return Error::make(Op::ftruncate, err)
        .with_size(size)
        .with_detail(err == EFBIG    ? "larger than the filesystem allows"
                     : err == ENOSPC ? "the filesystem is full"
                                     : nullptr);
  }
  return {};
}

Status allocate_fd(int fd, std::uint64_t offset, std::uint64_t len) noexcept {
  int r;
  do {
    r = ::fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(len));
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    const int err = errno;
    return Error::make(Op::fallocate, err)
        .with_size(len)
        .with_offset(offset)
        .with_detail(err == ENOSPC ? "the filesystem is full" : nullptr);
  }
  return {};
}

Status punch_hole(int fd, std::uint64_t offset, std::uint64_t len) noexcept {
  int r;
  do {
    r = ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(len));
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    const int err = errno;
    return Error::make(Op::punch_hole, err)
        .with_size(len)
        .with_offset(offset)
        .with_detail(err == EOPNOTSUPP ? "the filesystem cannot punch holes" : nullptr);
  }
  return {};
}

Status datasync(int fd) noexcept {
  // An fdatasync error is never retried: after a failed writeback the kernel
  // may already have dropped the dirty pages, so a retry could report success
  // for data that is lost (the 2018 "fsyncgate" lesson).
  if (::fdatasync(fd) != 0) return Error::make(Op::fdatasync, errno);
  return {};
}

Status sync_parent_directory(const char* path) noexcept {
  char dir[4096];
  const char* slash = std::strrchr(path, '/');
  if (slash == nullptr) {
    dir[0] = '.';
    dir[1] = '\0';
  } else {
    const std::size_t n = slash == path ? 1 : static_cast<std::size_t>(slash - path);
    if (n >= sizeof(dir)) return Error::make(Op::fsync, ENAMETOOLONG).with_path(path);
    std::memcpy(dir, path, n);
    dir[n] = '\0';
  }
  const int fd = ::open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return Error::make(Op::open, errno).with_path(dir).with_detail("the parent directory");
  const int r = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (r != 0) return Error::make(Op::fsync, err).with_path(dir);
  return {};
}

Result<bool> lock_range(int fd, std::uint64_t start, std::uint64_t len, RangeLock kind,
                        bool wait) noexcept {
  struct flock fl {};
  fl.l_type = static_cast<short>(kind == RangeLock::shared      ? F_RDLCK
                                 : kind == RangeLock::exclusive ? F_WRLCK
                                                                : F_UNLCK);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(start);
  fl.l_len = static_cast<off_t>(len);
  int r;
  do {
    r = ::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return true;
  if (!wait && (errno == EAGAIN || errno == EACCES)) return false;
  return Error::make(Op::lock_file, errno);
}

Result<bool> range_locked_by_others(int fd, std::uint64_t start, std::uint64_t len) noexcept {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(start);
  fl.l_len = static_cast<off_t>(len);
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return Error::make(Op::lock_file, errno);
  return fl.l_type != F_UNLCK;
}

Status lock_file(int fd) noexcept {
  const Result<bool> r = lock_range(fd, 0, 0, RangeLock::exclusive, true);
  if (!r.ok()) return r.error();
  return {};
}
Status unlock_file(int fd) noexcept {
  const Result<bool> r = lock_range(fd, 0, 0, RangeLock::unlock, true);
  if (!r.ok()) return r.error();
  return {};
}

Result<bool> clone_file(int src, int dst) noexcept {
  if (::ioctl(dst, FICLONE, src) == 0) return true;
  const int err = errno;
  // Not a reflink filesystem, or two filesystems: the caller copies.
  if (err == EOPNOTSUPP || err == EXDEV || err == EINVAL || err == ENOTTY || err == EPERM)
    return false;
  return Error::make(Op::write, err).with_detail("ioctl(FICLONE)");
}

Status copy_sparse(int src, int dst, std::uint64_t len) noexcept {
  if (::ftruncate(dst, static_cast<off_t>(len)) != 0) return Error::make(Op::ftruncate, errno);
  off_t at = 0;
  const auto end = static_cast<off_t>(len);
  while (at < end) {
    off_t data = ::lseek(src, at, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      return Error::make(Op::read, errno).with_detail("lseek(SEEK_DATA)");
    }
    if (data >= end) break;
    off_t hole = ::lseek(src, data, SEEK_HOLE);
    if (hole < 0) return Error::make(Op::read, errno).with_detail("lseek(SEEK_HOLE)");
    if (hole > end) hole = end;
    off_t in = data, out = data;
    while (in < hole) {
      const ssize_t n =
          ::copy_file_range(src, &in, dst, &out, static_cast<std::size_t>(hole - in), 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Error::make(Op::write, errno).with_detail("copy_file_range");
      }
      if (n == 0) return Error::make(Op::read, EIO).with_detail("copy_file_range: source ended early");
    }
    at = hole;
  }
  return {};
}

Status drop_file_cache(int fd) noexcept {
  if (::fdatasync(fd) != 0 && errno != EINVAL && errno != EROFS)
    return Error::make(Op::fdatasync, errno);
  const int r = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  if (r != 0) return Error::make(Op::fadvise, r).with_detail("POSIX_FADV_DONTNEED");
  return {};
}

Result<std::size_t> read_fd(int fd, void* buf, std::size_t n) noexcept {
  ssize_t r;
  do {
    r = ::read(fd, buf, n);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Error::make(Op::read, errno).with_size(n);
  return static_cast<std::size_t>(r);
}

Result<std::size_t> pread_fd(int fd, void* buf, std::size_t n, std::uint64_t off) noexcept {
  ssize_t r;
  do {
    r = ::pread(fd, buf, n, static_cast<off_t>(off));
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Error::make(Op::read, errno).with_size(n).with_offset(off);
  return static_cast<std::size_t>(r);
}

Result<std::size_t> write_fd(int fd, const void* buf, std::size_t n) noexcept {
  ssize_t r;
  do {
    r = ::write(fd, buf, n);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    const int err = errno;
    return Error::make(Op::write, err)
        .with_size(n)
        .with_detail(err == ENOSPC ? "the filesystem is full" : nullptr);
  }
  return static_cast<std::size_t>(r);
}

Result<std::size_t> pwrite_fd(int fd, const void* buf, std::size_t n, std::uint64_t off) noexcept {
  ssize_t r;
  do {
    r = ::pwrite(fd, buf, n, static_cast<off_t>(off));
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    const int err = errno;
    return Error::make(Op::write, err)
        .with_size(n)
        .with_offset(off)
        .with_detail(err == ENOSPC ? "the filesystem is full" : nullptr);
  }
  return static_cast<std::size_t>(r);
}

Status pwrite_all(int fd, const void* buf, std::size_t n, std::uint64_t off) noexcept {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    auto r = pwrite_fd(fd, p, n, off);
    if (!r) return r.error();
    if (r.value() == 0)
      return Error::make(Op::write, EIO)
          .with_size(n)
          .with_offset(off)
          .with_detail("wrote zero bytes");
    p += r.value();
    off += r.value();
    n -= r.value();
  }
  return {};
}

Status unlink_path(const char* path) noexcept {
  if (::unlink(path) != 0) return Error::make(Op::unlink, errno).with_path(path);
  return {};
}

Result<int> memfd(const char* name, std::uint32_t flags) noexcept {
  unsigned os = MFD_CLOEXEC;
  if (flags & kMemfdAllowSealing) os |= MFD_ALLOW_SEALING;
  if (flags & kMemfdHuge2M) os |= MFD_HUGETLB | MFD_HUGE_2MB;
  if (flags & kMemfdHuge1G) os |= MFD_HUGETLB | MFD_HUGE_1GB;
  const int fd = ::memfd_create(name, os);
  if (fd < 0) {
    const int err = errno;
    return Error::make(Op::memfd_create, err)
        .with_path(name)
        .with_flags(flags)
        .with_detail(err == EINVAL && std::strlen(name) > 249 ? "the name is longer than 249 bytes"
                     : (err == EINVAL || err == ENODEV) && (flags & (kMemfdHuge2M | kMemfdHuge1G))
                         // EINVAL: no hugetlb support; ENODEV: none of that size
                         ? "the kernel offers no hugetlb pages of that size"
                         : nullptr);
  }
  return fd;
}

Result<int> shm_open_object(const char* name, std::uint32_t open_flags, unsigned mode) noexcept {
  int os = to_os_open_flags(open_flags) & ~O_NOFOLLOW;  // shm_open adds O_NOFOLLOW itself
  if (name == nullptr || name[0] != '/' || std::strchr(name + 1, '/') != nullptr || name[1] == '\0')
    return Error::make(Op::shm_open, EINVAL)
        .with_path(name)
        .with_flags(static_cast<std::uint32_t>(os), mode)
        .with_detail("a shared memory name is '/name': one leading slash and no other");
  const int fd = ::shm_open(name, os, static_cast<mode_t>(mode));
  if (fd < 0) {
    const int err = errno;
    return Error::make(Op::shm_open, err)
        .with_path(name)
        .with_flags(static_cast<std::uint32_t>(os), mode)
        .with_detail(open_detail(err, open_flags));
  }
  return fd;
}

Status shm_remove(const char* name) noexcept {
  if (::shm_unlink(name) != 0) return Error::make(Op::shm_unlink, errno).with_path(name);
  return {};
}

}  // namespace mapheap::pal
