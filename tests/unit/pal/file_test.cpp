// Unit tests for the file part of the platform layer: open/close/dup, stat,
// truncate/allocate/punch, datasync, cache dropping, read/write, unlink,
// memfd and POSIX shared memory.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pal/pal.hpp"
#include "support/page_cache.hpp"
#include "support/process.hpp"

namespace pal = mapheap::pal;

namespace {

using mapheap::test::cached_pages;
using mapheap::test::run_as_nobody;

const std::size_t kPage = pal::page_size();

std::string unique_suffix(const char* tag) {
  static std::atomic<unsigned> counter{0};
  return std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + tag;
}

// A path in /var/tmp (a disk filesystem), removed at scope exit whatever it became.
struct TempPath {
  std::string path;
  explicit TempPath(const char* tag)
      : path("/var/tmp/mapheap-paltest-file-" + unique_suffix(tag)) {}
  ~TempPath() {
    if (::unlink(path.c_str()) != 0) ::rmdir(path.c_str());
  }
  const char* c_str() const { return path.c_str(); }
};

// A POSIX shared memory name, removed at scope exit.
struct ShmName {
  std::string name;
  explicit ShmName(const char* tag) : name("/mapheap-paltest-" + unique_suffix(tag)) {}
  ~ShmName() { ::shm_unlink(name.c_str()); }
  const char* c_str() const { return name.c_str(); }
};

// An open descriptor, closed at scope exit.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

int create_file(const TempPath& p) {
  auto r = pal::open_file(p.c_str(), pal::kOpenReadWrite | pal::kOpenCreate | pal::kOpenExclusive);
  EXPECT_TRUE(r.ok());
  return r.value_or(-1);
}

std::string formatted(const pal::Error& e) {
  char buf[512];
  (void)e.format(buf, sizeof(buf));
  return buf;
}

}  // namespace

// ---------------------------------------------------------------- open

TEST(PalFile, OpenCreateGivesMode0600AndCloexec) {
  TempPath p("create");
  auto r = pal::open_file(p.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(r.ok()) << formatted(r.error());
  Fd fd(r.value());
  struct stat st {};
  ASSERT_EQ(::fstat(fd.fd, &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_NE(::fcntl(fd.fd, F_GETFD) & FD_CLOEXEC, 0);  // O_CLOEXEC always
  EXPECT_EQ(::fcntl(fd.fd, F_GETFL) & O_ACCMODE, O_RDWR);
  // Another mode is honoured (umask permitting: 0640 survives the usual 022/077 only
  // partly, so compare against what the umask allows).
  TempPath q("mode");
  auto r2 = pal::open_file(q.c_str(), pal::kOpenReadWrite | pal::kOpenCreate, 0640);
  ASSERT_TRUE(r2.ok());
  Fd fd2(r2.value());
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ASSERT_EQ(::fstat(fd2.fd, &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u & ~mask);
}

TEST(PalFile, OpenAccessModes) {
  TempPath p("modes");
  Fd created(create_file(p));
  ASSERT_GE(created.fd, 0);
  auto ro = pal::open_file(p.c_str(), pal::kOpenRead);
  ASSERT_TRUE(ro.ok());
  Fd rofd(ro.value());
  EXPECT_EQ(::fcntl(rofd.fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  auto wo = pal::open_file(p.c_str(), pal::kOpenWriteOnly);
  ASSERT_TRUE(wo.ok());
  Fd wofd(wo.value());
  EXPECT_EQ(::fcntl(wofd.fd, F_GETFL) & O_ACCMODE, O_WRONLY);
  char c;
  auto rd = pal::read_fd(wofd.fd, &c, 1);  // a write-only descriptor cannot read
  ASSERT_FALSE(rd.ok());
  EXPECT_EQ(rd.error().code, EBADF);
}

TEST(PalFile, OpenTruncate) {
  TempPath p("trunc");
  Fd fd(create_file(p));
  ASSERT_TRUE(pal::pwrite_all(fd.fd, "0123456789", 10, 0).ok());
  auto r = pal::open_file(p.c_str(), pal::kOpenReadWrite | pal::kOpenTruncate);
  ASSERT_TRUE(r.ok());
  Fd fd2(r.value());
  EXPECT_EQ(pal::stat_fd(fd2.fd)->size, 0u);
}

TEST(PalFile, OpenExclusiveExisting) {
  TempPath p("excl");
  Fd fd(create_file(p));
  ASSERT_GE(fd.fd, 0);
  auto r = pal::open_file(p.c_str(), pal::kOpenReadWrite | pal::kOpenCreate | pal::kOpenExclusive);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().op, pal::Op::open);
  EXPECT_EQ(r.error().code, EEXIST);
  EXPECT_STREQ(r.error().path, p.c_str());
  EXPECT_EQ(r.error().flags & O_EXCL, static_cast<std::uint64_t>(O_EXCL));
  EXPECT_EQ(r.error().extra, 0600u);
  EXPECT_NE(r.error().detail, nullptr);
  EXPECT_NE(formatted(r.error()).find("O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC|O_NOFOLLOW"),
            std::string::npos);
}

TEST(PalFile, OpenMissing) {
  TempPath p("missing");
  auto r = pal::open_file(p.c_str(), pal::kOpenRead);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().op, pal::Op::open);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_STREQ(r.error().path, p.c_str());
  EXPECT_NE(r.error().detail, nullptr);
}

TEST(PalFile, OpenSymlinkRefusedUnlessFollowed) {
  TempPath target("target");
  TempPath link("link");
  {
    Fd fd(create_file(target));
    ASSERT_TRUE(pal::pwrite_all(fd.fd, "abc", 3, 0).ok());
  }
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  auto refused = pal::open_file(link.c_str(), pal::kOpenRead);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().op, pal::Op::open);
  EXPECT_EQ(refused.error().code, ELOOP);
  EXPECT_STREQ(refused.error().path, link.c_str());
  ASSERT_NE(refused.error().detail, nullptr);
  EXPECT_NE(std::strstr(refused.error().detail, "symbolic link"), nullptr);

  auto followed = pal::open_file(link.c_str(), pal::kOpenRead | pal::kOpenFollow);
  ASSERT_TRUE(followed.ok()) << formatted(followed.error());
  Fd fd(followed.value());
  auto info = pal::stat_fd(fd.fd);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->type, pal::FileType::regular);
  EXPECT_EQ(info->size, 3u);
}

TEST(PalFile, OpenDirectoryReadWriteIsEisdir) {
  auto r = pal::open_file("/var/tmp", pal::kOpenReadWrite);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().op, pal::Op::open);
  EXPECT_EQ(r.error().code, EISDIR);
  EXPECT_STREQ(r.error().path, "/var/tmp");
  EXPECT_NE(r.error().detail, nullptr);
}

TEST(PalFile, OpenPermissionDenied) {
  TempPath p("perm");
  {
    Fd fd(create_file(p));  // 0600, owned by the caller
    ASSERT_GE(fd.fd, 0);
  }
  if (::geteuid() == 0) {
    // Root bypasses file modes: check as "nobody" in a child.
    const int rc = run_as_nobody([&] {
      auto r = pal::open_file(p.c_str(), pal::kOpenRead);
      if (r.ok()) return 1;
      if (r.error().op != pal::Op::open || r.error().code != EACCES) return 2;
      if (std::strcmp(r.error().path, p.c_str()) != 0 || r.error().detail == nullptr) return 3;
      return 0;
    });
    EXPECT_EQ(rc, 0);
  } else {
    ASSERT_EQ(::chmod(p.c_str(), 0), 0);
    auto r = pal::open_file(p.c_str(), pal::kOpenRead);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EACCES);
  }
}

TEST(PalFile, CloseAndDup) {
  TempPath p("dup");
  const int fd = create_file(p);
  ASSERT_GE(fd, 0);
  auto d = pal::dup_fd(fd);
  ASSERT_TRUE(d.ok());
  EXPECT_NE(d.value(), fd);
  EXPECT_NE(::fcntl(d.value(), F_GETFD) & FD_CLOEXEC, 0);  // F_DUPFD_CLOEXEC
  // The duplicate shares the open file description, hence the file offset.
  ASSERT_EQ(pal::write_fd(fd, "ab", 2).value_or(0), 2u);
  ASSERT_EQ(pal::write_fd(d.value(), "cd", 2).value_or(0), 2u);
  char buf[4];
  ASSERT_EQ(pal::pread_fd(fd, buf, 4, 0).value_or(0), 4u);
  EXPECT_EQ(std::memcmp(buf, "abcd", 4), 0);
  EXPECT_TRUE(pal::close_fd(d.value()).ok());
  EXPECT_TRUE(pal::close_fd(fd).ok());

  auto again = pal::close_fd(fd);  // already closed
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().op, pal::Op::close);
  EXPECT_EQ(again.error().code, EBADF);
  auto bad = pal::dup_fd(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, EBADF);
  EXPECT_EQ(bad.error().op, pal::Op::dup);
}

// ---------------------------------------------------------------- stat

TEST(PalFile, StatRegularFile) {
  TempPath p("stat");
  Fd fd(create_file(p));
  ASSERT_TRUE(pal::pwrite_all(fd.fd, "hello", 5, 100).ok());
  auto r = pal::stat_fd(fd.fd);
  ASSERT_TRUE(r.ok()) << formatted(r.error());
  struct stat st {};
  ASSERT_EQ(::fstat(fd.fd, &st), 0);
  EXPECT_EQ(r->type, pal::FileType::regular);
  EXPECT_EQ(r->size, 105u);
  EXPECT_EQ(r->mode, 0600u);
  EXPECT_EQ(r->dev, static_cast<std::uint64_t>(st.st_dev));
  EXPECT_EQ(r->block_size, static_cast<std::uint64_t>(st.st_blksize));
  EXPECT_NE(r->fs_magic, 0u);
  EXPECT_NE(r->fs_magic, static_cast<std::uint64_t>(TMPFS_MAGIC));  // /var/tmp is on disk here
  EXPECT_FALSE(r->on_tmpfs);
  EXPECT_FALSE(r->on_hugetlbfs);
}

TEST(PalFile, StatTypes) {
  auto dir = pal::open_file("/var/tmp", pal::kOpenRead);
  ASSERT_TRUE(dir.ok());
  Fd d(dir.value());
  auto di = pal::stat_fd(d.fd);
  ASSERT_TRUE(di.ok());
  EXPECT_EQ(di->type, pal::FileType::directory);

  auto null = pal::open_file("/dev/null", pal::kOpenRead);
  ASSERT_TRUE(null.ok());
  Fd n(null.value());
  auto ni = pal::stat_fd(n.fd);
  ASSERT_TRUE(ni.ok());
  EXPECT_EQ(ni->type, pal::FileType::other);  // a character device

  // A symlink itself, through an O_PATH descriptor.
  TempPath target("t");
  TempPath link("l");
  Fd t(create_file(target));
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  Fd l(::open(link.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  ASSERT_GE(l.fd, 0);
  auto li = pal::stat_fd(l.fd);
  ASSERT_TRUE(li.ok()) << formatted(li.error());
  EXPECT_EQ(li->type, pal::FileType::symlink);
}

TEST(PalFile, StatOnTmpfs) {
  const std::string path = "/dev/shm/mapheap-paltest-" + unique_suffix("tmpfs");
  auto r = pal::open_file(path.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(r.ok());
  Fd fd(r.value());
  ::unlink(path.c_str());
  auto info = pal::stat_fd(fd.fd);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->on_tmpfs);
  EXPECT_FALSE(info->on_hugetlbfs);
  EXPECT_EQ(info->fs_magic, static_cast<std::uint64_t>(TMPFS_MAGIC));
}

TEST(PalFile, StatBadFd) {
  auto r = pal::stat_fd(-1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().op, pal::Op::fstat);
  EXPECT_EQ(r.error().code, EBADF);
}

// ---------------------------------------------------------------- size and blocks

TEST(PalFile, TruncateGrowsAndShrinks) {
  TempPath p("truncate");
  Fd fd(create_file(p));
  ASSERT_TRUE(pal::truncate_fd(fd.fd, 1 << 20).ok());
  EXPECT_EQ(pal::stat_fd(fd.fd)->size, 1u << 20);
  char c = 'x';
  ASSERT_EQ(pal::pread_fd(fd.fd, &c, 1, (1 << 20) - 1).value_or(0), 1u);
  EXPECT_EQ(c, 0);  // grown part reads zeros
  ASSERT_TRUE(pal::truncate_fd(fd.fd, 10).ok());
  EXPECT_EQ(pal::stat_fd(fd.fd)->size, 10u);
}

TEST(PalFile, TruncateErrors) {
  TempPath p("truncerr");
  Fd fd(create_file(p));
  auto ro = pal::open_file(p.c_str(), pal::kOpenRead);
  ASSERT_TRUE(ro.ok());
  Fd rofd(ro.value());
  auto s = pal::truncate_fd(rofd.fd, 4096);  // not open for writing
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::ftruncate);
  EXPECT_EQ(s.error().code, EINVAL);
  EXPECT_EQ(s.error().size, 4096u);
  auto b = pal::truncate_fd(-1, 1);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, EBADF);
  // Beyond the largest file size the filesystem allows.
  auto big = pal::truncate_fd(fd.fd, std::uint64_t{1} << 62);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, EFBIG);
  EXPECT_NE(big.error().detail, nullptr);
}

TEST(PalFile, AllocateReservesBlocks) {
  TempPath p("alloc");
  Fd fd(create_file(p));
  auto s = pal::allocate_fd(fd.fd, 0, 1 << 20);
  ASSERT_TRUE(s.ok()) << formatted(s.error());
  struct stat st {};
  ASSERT_EQ(::fstat(fd.fd, &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);  // mode 0 extends the size
  EXPECT_GE(static_cast<std::uint64_t>(st.st_blocks) * 512, std::uint64_t{1} << 20);
}

TEST(PalFile, AllocateErrors) {
  TempPath p("allocerr");
  Fd fd(create_file(p));
  auto ro = pal::open_file(p.c_str(), pal::kOpenRead);
  ASSERT_TRUE(ro.ok());
  Fd rofd(ro.value());
  auto s = pal::allocate_fd(rofd.fd, 4096, 8192);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::fallocate);
  EXPECT_EQ(s.error().code, EBADF);
  EXPECT_EQ(s.error().offset, 4096u);
  EXPECT_EQ(s.error().size, 8192u);
  auto z = pal::allocate_fd(fd.fd, 0, 0);  // zero length
  ASSERT_FALSE(z.ok());
  EXPECT_EQ(z.error().code, EINVAL);
}

TEST(PalFile, PunchHoleReadsZerosAndKeepsSize) {
  TempPath p("punch");
  Fd fd(create_file(p));
  const std::size_t chunk = 64 * 1024;
  std::vector<char> data(3 * chunk, 'd');
  ASSERT_TRUE(pal::pwrite_all(fd.fd, data.data(), data.size(), 0).ok());
  ASSERT_TRUE(pal::datasync(fd.fd).ok());
  struct stat before {};
  ASSERT_EQ(::fstat(fd.fd, &before), 0);

  auto s = pal::punch_hole(fd.fd, chunk, chunk);
  ASSERT_TRUE(s.ok()) << formatted(s.error());
  struct stat after {};
  ASSERT_EQ(::fstat(fd.fd, &after), 0);
  EXPECT_EQ(after.st_size, before.st_size);      // KEEP_SIZE
  EXPECT_LT(after.st_blocks, before.st_blocks);  // blocks went back to the filesystem
  std::vector<char> back(data.size());
  ASSERT_EQ(pal::pread_fd(fd.fd, back.data(), back.size(), 0).value_or(0), back.size());
  for (std::size_t i = 0; i < back.size(); ++i) {
    const char want = (i >= chunk && i < 2 * chunk) ? '\0' : 'd';
    ASSERT_EQ(back[i], want) << "at " << i;
  }
}

TEST(PalFile, PunchHoleErrors) {
  TempPath p("puncherr");
  Fd fd(create_file(p));
  auto ro = pal::open_file(p.c_str(), pal::kOpenRead);
  ASSERT_TRUE(ro.ok());
  Fd rofd(ro.value());
  auto s = pal::punch_hole(rofd.fd, 0, 4096);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::punch_hole);
  EXPECT_EQ(s.error().code, EBADF);
  EXPECT_EQ(s.error().size, 4096u);
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  Fd r(pipefd[0]), w(pipefd[1]);
  auto sp = pal::punch_hole(w.fd, 0, 4096);  // a pipe has no blocks
  ASSERT_FALSE(sp.ok());
  EXPECT_EQ(sp.error().op, pal::Op::punch_hole);
  EXPECT_EQ(sp.error().code, ESPIPE);
}

// ---------------------------------------------------------------- sync and cache

TEST(PalFile, Datasync) {
  TempPath p("datasync");
  Fd fd(create_file(p));
  ASSERT_TRUE(pal::pwrite_all(fd.fd, "x", 1, 0).ok());
  EXPECT_TRUE(pal::datasync(fd.fd).ok());
  auto b = pal::datasync(-1);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().op, pal::Op::fdatasync);
  EXPECT_EQ(b.error().code, EBADF);
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  Fd r(pipefd[0]), w(pipefd[1]);
  auto sp = pal::datasync(w.fd);  // nothing to sync on a pipe
  ASSERT_FALSE(sp.ok());
  EXPECT_EQ(sp.error().code, EINVAL);
}

TEST(PalFile, SyncParentDirectory) {
  TempPath p("dirsync");
  Fd fd(create_file(p));
  EXPECT_TRUE(pal::sync_parent_directory(p.c_str()).ok());
  EXPECT_TRUE(pal::sync_parent_directory("relative-name-in-cwd").ok());  // the directory "."
  EXPECT_TRUE(pal::sync_parent_directory("/top-level").ok());            // the directory "/"
  auto missing = pal::sync_parent_directory("/nonexistent-mapheap-dir/file");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_STREQ(missing.error().path, "/nonexistent-mapheap-dir");
}

// OFD locks conflict between two open file descriptions of one file, which is
// what two processes (or two Mappings) each holding the file have.
TEST(PalFile, LockFileExcludesOtherOpenFileDescriptions) {
  TempPath p("ofdlock");
  Fd a(create_file(p));
  Fd b(::open(p.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(b.fd, 0);
  auto conflict = [&](int fd) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    EXPECT_EQ(::fcntl(fd, F_OFD_GETLK, &fl), 0);
    return fl.l_type != F_UNLCK;
  };
  EXPECT_FALSE(conflict(b.fd));
  ASSERT_TRUE(pal::lock_file(a.fd).ok());
  EXPECT_TRUE(conflict(b.fd));
  ASSERT_TRUE(pal::unlock_file(a.fd).ok());
  EXPECT_FALSE(conflict(b.fd));
  auto bad = pal::lock_file(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().op, pal::Op::lock_file);
  EXPECT_EQ(bad.error().code, EBADF);
  Fd ro(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  auto readonly = pal::lock_file(ro.fd);  // a write lock needs a writable description
  ASSERT_FALSE(readonly.ok());
  EXPECT_EQ(readonly.error().code, EBADF);
}

TEST(PalFile, NonBlockingOpenOfAFifoReturnsAtOnce) {
  TempPath p("fifo");
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
  // Without O_NONBLOCK this open would wait for a writer forever.
  auto r = pal::open_file(p.c_str(), pal::kOpenRead | pal::kOpenNonBlock);
  ASSERT_TRUE(r.ok());
  Fd fd(r.value());
  const int fl = ::fcntl(fd.fd, F_GETFL);
  EXPECT_NE(fl & O_NONBLOCK, 0);
  auto st = pal::stat_fd(fd.fd);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->type, pal::FileType::other);
}

TEST(PalFile, DropFileCacheEvictsPages) {
  TempPath p("dropcache");
  Fd fd(create_file(p));
  const std::size_t len = 1 << 20;
  std::vector<char> data(len, 'c');
  ASSERT_TRUE(pal::pwrite_all(fd.fd, data.data(), len, 0).ok());
  // Freshly written (dirty) pages are in the page cache.
  EXPECT_EQ(cached_pages(fd.fd, len), len / kPage);
  auto s = pal::drop_file_cache(fd.fd);  // writes back first, so even dirty pages go
  ASSERT_TRUE(s.ok()) << formatted(s.error());
  EXPECT_EQ(cached_pages(fd.fd, len), 0u);
  // The data is still there, read back from disk.
  std::vector<char> back(len);
  ASSERT_EQ(pal::pread_fd(fd.fd, back.data(), len, 0).value_or(0), len);
  EXPECT_EQ(back, data);
}

TEST(PalFile, DropFileCacheErrors) {
  auto b = pal::drop_file_cache(-1);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code, EBADF);
  // On a pipe fdatasync's EINVAL is tolerated, but posix_fadvise refuses.
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  Fd r(pipefd[0]), w(pipefd[1]);
  auto sp = pal::drop_file_cache(r.fd);
  ASSERT_FALSE(sp.ok());
  EXPECT_EQ(sp.error().op, pal::Op::fadvise);
  EXPECT_EQ(sp.error().code, ESPIPE);
}

// ---------------------------------------------------------------- read and write

TEST(PalFile, ReadWriteRoundTrips) {
  TempPath p("rw");
  Fd fd(create_file(p));
  auto w = pal::write_fd(fd.fd, "hello", 5);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w.value(), 5u);
  auto pw = pal::pwrite_fd(fd.fd, "world", 5, 1000);
  ASSERT_TRUE(pw.ok());
  EXPECT_EQ(pw.value(), 5u);
  EXPECT_EQ(pal::stat_fd(fd.fd)->size, 1005u);

  char buf[8] = {};
  ASSERT_EQ(::lseek(fd.fd, 0, SEEK_SET), 0);
  auto r = pal::read_fd(fd.fd, buf, 5);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value(), 5u);
  EXPECT_EQ(std::memcmp(buf, "hello", 5), 0);
  auto pr = pal::pread_fd(fd.fd, buf, sizeof(buf), 1000);  // short read at end of file
  ASSERT_TRUE(pr.ok());
  EXPECT_EQ(pr.value(), 5u);
  EXPECT_EQ(std::memcmp(buf, "world", 5), 0);
  auto eof = pal::pread_fd(fd.fd, buf, sizeof(buf), 5000);
  ASSERT_TRUE(eof.ok());
  EXPECT_EQ(eof.value(), 0u);
  ASSERT_EQ(::lseek(fd.fd, 0, SEEK_END), 1005);
  auto eof2 = pal::read_fd(fd.fd, buf, sizeof(buf));
  ASSERT_TRUE(eof2.ok());
  EXPECT_EQ(eof2.value(), 0u);
}

TEST(PalFile, PwriteAllLargeBuffer) {
  TempPath p("pwall");
  Fd fd(create_file(p));
  const std::size_t len = 8 << 20;
  std::vector<unsigned char> data(len);
  for (std::size_t i = 0; i < len; ++i) data[i] = static_cast<unsigned char>(i * 131 + 7);
  ASSERT_TRUE(pal::pwrite_all(fd.fd, data.data(), len, 4096).ok());
  EXPECT_EQ(pal::stat_fd(fd.fd)->size, len + 4096);
  std::vector<unsigned char> back(len);
  ASSERT_EQ(pal::pread_fd(fd.fd, back.data(), len, 4096).value_or(0), len);
  EXPECT_EQ(back, data);
  EXPECT_TRUE(pal::pwrite_all(fd.fd, data.data(), 0, 0).ok());  // nothing to write
}

TEST(PalFile, PwriteAllContinuesAfterShortWrite) {
  // RLIMIT_FSIZE makes the kernel write only up to the limit (a short write),
  // then fail with EFBIG: pwrite_all must have advanced past the first part
  // and report the second failure with the remaining size and offset. Done in
  // a child because the limit is process-wide.
  TempPath p("short");
  Fd fd(create_file(p));
  ASSERT_GE(fd.fd, 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{4096, RLIM_INFINITY};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(10);
    static char data[8192];
    std::memset(data, 's', sizeof(data));
    pal::Status s = pal::pwrite_all(fd.fd, data, sizeof(data), 0);
    if (s.ok()) ::_exit(11);
    if (s.error().op != pal::Op::write || s.error().code != EFBIG) ::_exit(12);
    if (s.error().offset != 4096 || s.error().size != 4096) ::_exit(13);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(pal::stat_fd(fd.fd)->size, 4096u);
}

TEST(PalFile, ReadWriteBadDescriptor) {
  char buf[4] = {};
  auto r = pal::read_fd(-1, buf, 4);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().op, pal::Op::read);
  EXPECT_EQ(r.error().code, EBADF);
  EXPECT_EQ(r.error().size, 4u);
  auto pr = pal::pread_fd(-1, buf, 4, 77);
  ASSERT_FALSE(pr.ok());
  EXPECT_EQ(pr.error().op, pal::Op::read);
  EXPECT_EQ(pr.error().code, EBADF);
  EXPECT_EQ(pr.error().offset, 77u);
  auto w = pal::write_fd(-1, buf, 4);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().op, pal::Op::write);
  EXPECT_EQ(w.error().code, EBADF);
  auto pw = pal::pwrite_fd(-1, buf, 4, 88);
  ASSERT_FALSE(pw.ok());
  EXPECT_EQ(pw.error().op, pal::Op::write);
  EXPECT_EQ(pw.error().code, EBADF);
  EXPECT_EQ(pw.error().offset, 88u);
  auto all = pal::pwrite_all(-1, buf, 4, 99);
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.error().op, pal::Op::write);
  EXPECT_EQ(all.error().code, EBADF);
  EXPECT_EQ(all.error().offset, 99u);
  EXPECT_EQ(all.error().size, 4u);
}

TEST(PalFile, PositionalIoOnPipeIsEspipe) {
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  Fd r(pipefd[0]), w(pipefd[1]);
  char buf[4] = {};
  auto pw = pal::pwrite_fd(w.fd, "abcd", 4, 0);
  ASSERT_FALSE(pw.ok());
  EXPECT_EQ(pw.error().code, ESPIPE);
  auto pr = pal::pread_fd(r.fd, buf, 4, 0);
  ASSERT_FALSE(pr.ok());
  EXPECT_EQ(pr.error().code, ESPIPE);
  // Plain read/write work on a pipe.
  ASSERT_EQ(pal::write_fd(w.fd, "abcd", 4).value_or(0), 4u);
  ASSERT_EQ(pal::read_fd(r.fd, buf, 4).value_or(0), 4u);
  EXPECT_EQ(std::memcmp(buf, "abcd", 4), 0);
}

namespace {

std::atomic<int> g_signals{0};
void count_signal(int) {
  g_signals.fetch_add(1);
}

// True while thread `tid` of this process is blocked in system call `nr`.
bool blocked_in_syscall(pid_t tid, long nr) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long current = -1;
  return static_cast<bool>(in >> current) && current == nr;
}

}  // namespace

TEST(PalFile, ReadRetriesAfterEintr) {
  // A handler without SA_RESTART makes a blocked read() fail with EINTR; the
  // contract says pal retries it. The thread's current system call
  // (/proc/.../syscall) shows when it is blocked in read, before the signal
  // and again after it, so no timing is involved.
  struct sigaction sa {};
  struct sigaction old {};
  sa.sa_handler = count_signal;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  g_signals.store(0);
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  Fd r(pipefd[0]), w(pipefd[1]);
  std::atomic<pid_t> tid{0};
  std::atomic<long> result{-100};
  std::thread reader([&] {
    tid.store(static_cast<pid_t>(::syscall(SYS_gettid)));
    char c = 0;
    auto got = pal::read_fd(r.fd, &c, 1);
    result.store(got.ok() ? static_cast<long>(got.value()) : -got.error().code);
  });
  constexpr long kMaxPolls = 10'000'000;
  while (tid.load() == 0) ::sched_yield();
  long polls = 0;
  while (!blocked_in_syscall(tid.load(), SYS_read) && ++polls < kMaxPolls) ::sched_yield();
  EXPECT_LT(polls, kMaxPolls) << "the reader never blocked in read()";
  ::pthread_kill(reader.native_handle(), SIGUSR2);
  while (g_signals.load() == 0) ::sched_yield();
  // Either pal went back into read() (correct) or the read returned (EINTR leaked).
  polls = 0;
  while (result.load() == -100 && !blocked_in_syscall(tid.load(), SYS_read) && ++polls < kMaxPolls)
    ::sched_yield();
  ASSERT_EQ(pal::write_fd(w.fd, "x", 1).value_or(0), 1u);
  reader.join();
  ASSERT_EQ(::sigaction(SIGUSR2, &old, nullptr), 0);
  EXPECT_EQ(result.load(), 1) << "read_fd returned -errno " << -result.load();
}

// ---------------------------------------------------------------- unlink

TEST(PalFile, UnlinkPath) {
  TempPath p("unlink");
  { Fd fd(create_file(p)); }
  ASSERT_TRUE(pal::unlink_path(p.c_str()).ok());
  struct stat st {};
  EXPECT_NE(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
  auto again = pal::unlink_path(p.c_str());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().op, pal::Op::unlink);
  EXPECT_EQ(again.error().code, ENOENT);
  EXPECT_STREQ(again.error().path, p.c_str());
}

// ---------------------------------------------------------------- memfd

TEST(PalFile, MemfdPlain) {
  auto r = pal::memfd("mapheap-paltest", 0);
  ASSERT_TRUE(r.ok()) << formatted(r.error());
  Fd fd(r.value());
  EXPECT_NE(::fcntl(fd.fd, F_GETFD) & FD_CLOEXEC, 0);
  ASSERT_TRUE(pal::truncate_fd(fd.fd, 1 << 20).ok());
  auto info = pal::stat_fd(fd.fd);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size, 1u << 20);
  EXPECT_TRUE(info->on_tmpfs);  // memfd lives on the internal shmem mount
  auto m = pal::map(nullptr, 1 << 20, pal::Prot::read_write, pal::kMapShared, fd.fd, 0);
  ASSERT_TRUE(m.ok());
  std::memcpy(static_cast<char*>(m.value()) + 4096, "memfd", 5);
  char back[5];
  ASSERT_EQ(pal::pread_fd(fd.fd, back, 5, 4096).value_or(0), 5u);
  EXPECT_EQ(std::memcmp(back, "memfd", 5), 0);
  EXPECT_TRUE(pal::unmap(m.value(), 1 << 20).ok());
  // Without kMemfdAllowSealing, seals cannot be added.
  EXPECT_NE(::fcntl(fd.fd, F_ADD_SEALS, F_SEAL_GROW), 0);
  EXPECT_EQ(errno, EPERM);
}

TEST(PalFile, MemfdAllowSealing) {
  auto r = pal::memfd("mapheap-paltest-seal", pal::kMemfdAllowSealing);
  ASSERT_TRUE(r.ok());
  Fd fd(r.value());
  ASSERT_EQ(::fcntl(fd.fd, F_ADD_SEALS, F_SEAL_GROW), 0);
  auto grow = pal::truncate_fd(fd.fd, 4096);  // sealed against growth
  ASSERT_FALSE(grow.ok());
  EXPECT_EQ(grow.error().code, EPERM);
}

TEST(PalFile, MemfdHugetlb) {
  const struct {
    std::uint32_t flag;
    std::size_t size;
  } kSizes[] = {{pal::kMemfdHuge2M, pal::kHuge2M}, {pal::kMemfdHuge1G, pal::kHuge1G}};
  for (const auto& hs : kSizes) {
    auto r = pal::memfd("mapheap-paltest-huge", hs.flag);
    if (!r.ok()) {
      // A kernel without hugetlb pages of this size refuses at creation.
      EXPECT_EQ(r.error().op, pal::Op::memfd_create);
      EXPECT_EQ(r.error().flags, static_cast<std::uint64_t>(hs.flag));
      EXPECT_NE(r.error().detail, nullptr);
      continue;
    }
    Fd fd(r.value());
    auto info = pal::stat_fd(fd.fd);
    ASSERT_TRUE(info.ok());
    EXPECT_TRUE(info->on_hugetlbfs);
    EXPECT_FALSE(info->on_tmpfs);
    EXPECT_EQ(info->block_size, hs.size);
    ASSERT_TRUE(pal::truncate_fd(fd.fd, hs.size).ok());
    auto m = pal::map(nullptr, hs.size, pal::Prot::read_write, pal::kMapShared, fd.fd, 0);
    if (pal::huge_pages_free(hs.size) == 0) {
      // Creation works without pages; a shared mapping reserves its pages
      // up front, so it must fail.
      ASSERT_FALSE(m.ok()) << hs.size;
      EXPECT_EQ(m.error().op, pal::Op::mmap);
      EXPECT_EQ(m.error().code, ENOMEM);
    } else {
      ASSERT_TRUE(m.ok()) << formatted(m.error());
      static_cast<volatile char*>(m.value())[0] = 1;
      EXPECT_TRUE(pal::unmap(m.value(), hs.size).ok());
    }
  }
}

TEST(PalFile, MemfdErrors) {
  // memfd_create accepts names of at most 249 bytes.
  const std::string long_name(300, 'n');
  auto r = pal::memfd(long_name.c_str(), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().op, pal::Op::memfd_create);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(r.error().path[0], '.');     // the name is kept, truncated
  ASSERT_NE(r.error().detail, nullptr);  // the name is blamed, not huge pages
  EXPECT_NE(std::string(r.error().detail).find("249"), std::string::npos);
  auto h = pal::memfd(long_name.c_str(), pal::kMemfdHuge2M);
  ASSERT_FALSE(h.ok());
  ASSERT_NE(h.error().detail, nullptr);
  EXPECT_EQ(std::string(h.error().detail).find("hugetlb"), std::string::npos) << h.error().detail;
}

// ---------------------------------------------------------------- POSIX shared memory

TEST(PalFile, ShmBadNames) {
  for (const char* name : {"noslash", "/a/b", "/", "", static_cast<const char*>(nullptr)}) {
    auto r = pal::shm_open_object(name, pal::kOpenReadWrite | pal::kOpenCreate);
    ASSERT_FALSE(r.ok()) << (name ? name : "(null)");
    EXPECT_EQ(r.error().op, pal::Op::shm_open);
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().detail, nullptr);
    EXPECT_STREQ(r.error().path, name ? name : "");
  }
}

TEST(PalFile, ShmCreateOpenExclusiveRemove) {
  ShmName name("shm");
  auto created = pal::shm_open_object(name.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(created.ok()) << formatted(created.error());
  Fd a(created.value());
  EXPECT_NE(::fcntl(a.fd, F_GETFD) & FD_CLOEXEC, 0);
  auto info = pal::stat_fd(a.fd);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->on_tmpfs);
  EXPECT_EQ(info->mode, 0600u);
  ASSERT_TRUE(pal::truncate_fd(a.fd, 4096).ok());
  ASSERT_TRUE(pal::pwrite_all(a.fd, "shm", 3, 0).ok());

  // Opening the existing object (no create) sees the same memory.
  auto existing = pal::shm_open_object(name.c_str(), pal::kOpenReadWrite);
  ASSERT_TRUE(existing.ok());
  Fd b(existing.value());
  char buf[3];
  ASSERT_EQ(pal::pread_fd(b.fd, buf, 3, 0).value_or(0), 3u);
  EXPECT_EQ(std::memcmp(buf, "shm", 3), 0);

  // Create without exclusive opens it too; exclusive refuses.
  auto again = pal::shm_open_object(name.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(again.ok());
  Fd c(again.value());
  EXPECT_EQ(pal::stat_fd(c.fd)->size, 4096u);
  auto excl = pal::shm_open_object(name.c_str(),
                                   pal::kOpenReadWrite | pal::kOpenCreate | pal::kOpenExclusive);
  ASSERT_FALSE(excl.ok());
  EXPECT_EQ(excl.error().op, pal::Op::shm_open);
  EXPECT_EQ(excl.error().code, EEXIST);
  EXPECT_STREQ(excl.error().path, name.c_str());
  EXPECT_NE(excl.error().detail, nullptr);

  ASSERT_TRUE(pal::shm_remove(name.c_str()).ok());
  auto gone = pal::shm_open_object(name.c_str(), pal::kOpenReadWrite);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, ENOENT);
  auto removed = pal::shm_remove(name.c_str());
  ASSERT_FALSE(removed.ok());
  EXPECT_EQ(removed.error().op, pal::Op::shm_unlink);
  EXPECT_EQ(removed.error().code, ENOENT);
  EXPECT_STREQ(removed.error().path, name.c_str());
  // The memory stays usable through the open descriptors after removal.
  ASSERT_EQ(pal::pread_fd(a.fd, buf, 3, 0).value_or(0), 3u);
  EXPECT_EQ(std::memcmp(buf, "shm", 3), 0);
}

TEST(PalFile, ShmExclusiveCreateAndMode) {
  ShmName name("excl");
  auto r = pal::shm_open_object(name.c_str(),
                                pal::kOpenReadWrite | pal::kOpenCreate | pal::kOpenExclusive, 0640);
  ASSERT_TRUE(r.ok()) << formatted(r.error());
  Fd fd(r.value());
  const mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(pal::stat_fd(fd.fd)->mode, 0640u & ~mask);
  EXPECT_TRUE(pal::shm_remove(name.c_str()).ok());
}
