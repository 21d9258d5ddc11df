// Unit tests for pal/error.hpp: how a failed OS call is described (Error::format,
// op_name, errno_name) and the Result/Status value semantics.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <linux/mman.h>  // MAP_HUGE_2MB, MAP_HUGE_1GB
#include <sys/mman.h>

#include "pal/error.hpp"
#include "pal/pal.hpp"

namespace pal = mapheap::pal;

namespace {

// Formats an Error into a std::string through a buffer large enough for any
// message, and checks that the returned length is the length written.
std::string formatted(const pal::Error& e) {
  char buf[1024];
  const std::size_t n = e.format(buf, sizeof(buf));
  EXPECT_LT(n, sizeof(buf));
  EXPECT_EQ(n, std::strlen(buf));
  return std::string(buf);
}

}  // namespace

TEST(PalError, FormatOpenDecodesFlagsModeErrnoAndPath) {
  const pal::Error e = pal::Error::make(pal::Op::open, ENOENT)
                           .with_path("/var/tmp/heap.mh")
                           .with_flags(O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  const std::string expected =
      std::string("open(path='/var/tmp/heap.mh', ") +
      "flags=O_RDWR|O_CREAT|O_CLOEXEC|O_NOFOLLOW, mode=0600) failed: " + "ENOENT (" +
      std::strerror(ENOENT) + ")";
  EXPECT_EQ(formatted(e), expected);
}

TEST(PalError, FormatOpenWithoutCreateOmitsMode) {
  // The mode only matters when O_CREAT is given; printing it otherwise would
  // suggest that it played a part.
  const pal::Error e = pal::Error::make(pal::Op::open, EACCES)
                           .with_path("/x")
                           .with_flags(O_RDONLY | O_CLOEXEC, 0600);
  const std::string s = formatted(e);
  EXPECT_NE(s.find("flags=O_RDONLY|O_CLOEXEC)"), std::string::npos) << s;
  EXPECT_EQ(s.find("mode="), std::string::npos) << s;
  EXPECT_NE(s.find("EACCES"), std::string::npos) << s;
}

TEST(PalError, FormatOpenFromRealFailureCarriesDetail) {
  // The same message as produced by pal::open_file itself: a missing parent
  // directory while creating.
  const char* path = "/nonexistent-mapheap-dir/sub/file";
  auto r = pal::open_file(path, pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_FALSE(r.ok());
  const std::string s = formatted(r.error());
  EXPECT_EQ(
      s.rfind("open(path='/nonexistent-mapheap-dir/sub/file', "
              "flags=O_RDWR|O_CREAT|O_CLOEXEC|O_NOFOLLOW|O_NOCTTY, mode=0600) failed: ENOENT (",
              0),
      0u)
      << s;
  EXPECT_NE(s.find(std::strerror(ENOENT)), std::string::npos) << s;
  ASSERT_NE(r.error().detail, nullptr);
  EXPECT_NE(s.find(std::string(": ") + r.error().detail), std::string::npos) << s;
}

TEST(PalError, FormatMmapDecodesSizeProtAndHugeFlags) {
  const std::uint64_t flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB;
  const pal::Error e = pal::Error::make(pal::Op::mmap, ENOMEM)
                           .with_size(std::uint64_t{2} << 20)
                           .with_flags(flags, PROT_READ | PROT_WRITE);
  const std::string expected = std::string("mmap(size=2097152, prot=PROT_READ|PROT_WRITE, ") +
                               "flags=MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGE_2MB|MAP_HUGETLB) " +
                               "failed: ENOMEM (" + std::strerror(ENOMEM) + ")";
  EXPECT_EQ(formatted(e), expected);
}

TEST(PalError, FormatMmapHuge1GAndOffsetAndUnknownBits) {
  // MAP_HUGE_1GB and MAP_HUGE_2MB share bits: the decoder must not report both.
  const std::uint64_t flags =
      MAP_SHARED | MAP_FIXED | MAP_NORESERVE | MAP_POPULATE | MAP_HUGETLB | MAP_HUGE_1GB;
  const pal::Error e = pal::Error::make(pal::Op::mmap, EINVAL)
                           .with_size(4096)
                           .with_offset(8192)
                           .with_flags(flags, PROT_NONE);
  const std::string s = formatted(e);
  EXPECT_NE(s.find("prot=PROT_NONE"), std::string::npos) << s;
  EXPECT_NE(
      s.find("flags=MAP_SHARED|MAP_FIXED|MAP_NORESERVE|MAP_POPULATE|MAP_HUGE_1GB|MAP_HUGETLB"),
      std::string::npos)
      << s;
  EXPECT_EQ(s.find("MAP_HUGE_2MB"), std::string::npos) << s;
  EXPECT_NE(s.find(", offset=8192)"), std::string::npos) << s;

  // A bit the decoder has no name for is still shown, in hex.
  const pal::Error odd = pal::Error::make(pal::Op::mmap, EINVAL)
                             .with_size(1)
                             .with_flags(MAP_PRIVATE | 0x40000000u, PROT_READ);
  const std::string t = formatted(odd);
  EXPECT_NE(t.find("flags=MAP_PRIVATE|0x40000000"), std::string::npos) << t;
  EXPECT_NE(t.find("prot=PROT_READ,"), std::string::npos) << t;
}

TEST(PalError, FormatMadviseNamesTheAdvice) {
  const pal::Error e = pal::Error::make(pal::Op::madvise, EINVAL)
                           .with_size(4096)
                           .with_flags(static_cast<std::uint64_t>(pal::Advice::remove));
  EXPECT_EQ(formatted(e), std::string("madvise(size=4096, advice=MADV_REMOVE) failed: EINVAL (") +
                              std::strerror(EINVAL) + ")");
  const pal::Error p = pal::Error::make(pal::Op::madvise, EINVAL)
                           .with_size(8192)
                           .with_flags(static_cast<std::uint64_t>(pal::Advice::populate_write));
  EXPECT_NE(formatted(p).find("advice=MADV_POPULATE_WRITE"), std::string::npos);
}

TEST(PalError, FormatCheckUsesDetailInsteadOfErrno) {
  const pal::Error e = pal::Error::make(pal::Op::check, EINVAL)
                           .with_path("/var/tmp/heap.mh")
                           .with_detail("bad magic: not a mapheap file");
  EXPECT_EQ(formatted(e), "check(path='/var/tmp/heap.mh') failed: bad magic: not a mapheap file");
}

TEST(PalError, FormatAppendsDetailAfterErrnoForOsCalls) {
  const pal::Error e = pal::Error::make(pal::Op::fallocate, ENOSPC)
                           .with_size(1 << 20)
                           .with_offset(4096)
                           .with_detail("the filesystem is full");
  EXPECT_EQ(formatted(e), std::string("fallocate(size=1048576, offset=4096) failed: ENOSPC (") +
                              std::strerror(ENOSPC) + "): the filesystem is full");
}

TEST(PalError, FormatOtherOps) {
  EXPECT_EQ(formatted(pal::Error::make(pal::Op::close, EBADF)),
            std::string("close() failed: EBADF (") + std::strerror(EBADF) + ")");
  const std::string mp = formatted(
      pal::Error::make(pal::Op::mprotect, EACCES).with_size(4096).with_flags(0, PROT_READ));
  EXPECT_EQ(mp.rfind("mprotect(size=4096, prot=PROT_READ) failed: EACCES", 0), 0u) << mp;
  const std::string mf = formatted(pal::Error::make(pal::Op::memfd_create, EINVAL)
                                       .with_path("heap")
                                       .with_flags(pal::kMemfdHuge2M));
  EXPECT_NE(mf.find("memfd_create(path='heap', flags=0x2 (MFD_HUGETLB 2 MiB))"), std::string::npos)
      << mf;
  const std::string sh = formatted(pal::Error::make(pal::Op::shm_open, EEXIST)
                                       .with_path("/seg")
                                       .with_flags(O_RDWR | O_CREAT | O_EXCL, 0640));
  EXPECT_NE(sh.find("shm_open(path='/seg', flags=O_RDWR|O_CREAT|O_EXCL, mode=0640)"),
            std::string::npos)
      << sh;
  const std::string pr =
      formatted(pal::Error::make(pal::Op::punch_hole, EOPNOTSUPP).with_size(10).with_offset(20));
  EXPECT_EQ(pr.rfind("fallocate(PUNCH_HOLE)(size=10, offset=20) failed: EOPNOTSUPP", 0), 0u) << pr;
}

TEST(PalError, LongPathKeepsTheTailAndStartsWithEllipsis) {
  std::string longp = "/";
  while (longp.size() < 400) longp += "directory-level/";
  longp += "the-file-name.mh";
  pal::Error e = pal::Error::make(pal::Op::open, ENOENT);
  e.with_path(longp.c_str());
  const std::string kept(e.path);
  EXPECT_EQ(kept.size(), sizeof(e.path) - 1);  // uses the whole buffer
  EXPECT_EQ(kept.rfind("...", 0), 0u) << kept;
  // Everything after "..." is the exact tail of the original path.
  const std::string tail = kept.substr(3);
  EXPECT_EQ(longp.substr(longp.size() - tail.size()), tail);
  EXPECT_NE(formatted(e).find("the-file-name.mh'"), std::string::npos);
}

TEST(PalError, PathLengthBoundary) {
  pal::Error e;
  // The longest path that fits is kept whole; one more character truncates it.
  const std::string fits(sizeof(e.path) - 1, 'a');
  e.with_path(fits.c_str());
  EXPECT_EQ(std::string(e.path), fits);
  const std::string over = std::string(sizeof(e.path), 'b') + "Z";
  e.with_path(over.c_str());
  EXPECT_EQ(std::string(e.path, 3), "...");
  EXPECT_EQ(e.path[sizeof(e.path) - 2], 'Z');
  EXPECT_EQ(e.path[sizeof(e.path) - 1], '\0');
  e.with_path(nullptr);
  EXPECT_EQ(e.path[0], '\0');
}

TEST(PalError, FormatWithSmallCapacityIsTruncatedTerminatedAndReportsFullLength) {
  const pal::Error e = pal::Error::make(pal::Op::open, ENOENT)
                           .with_path("/var/tmp/x")
                           .with_flags(O_RDWR | O_CLOEXEC, 0);
  const std::string full = formatted(e);
  ASSERT_GT(full.size(), 16u);

  for (std::size_t cap :
       {std::size_t{1}, std::size_t{2}, std::size_t{8}, full.size(), full.size() + 1}) {
    char buf[512];
    std::memset(buf, 'X', sizeof(buf));
    const std::size_t n = e.format(buf, cap);
    EXPECT_EQ(n, full.size()) << "cap " << cap;
    const std::size_t written = std::min(cap - 1, full.size());
    EXPECT_EQ(buf[written], '\0') << "cap " << cap;
    EXPECT_EQ(std::string(buf, written), full.substr(0, written)) << "cap " << cap;
    EXPECT_EQ(buf[cap], 'X') << "wrote past the capacity, cap " << cap;
  }
  // cap 0: nothing is written (buf may even be null), the length is still reported.
  EXPECT_EQ(e.format(nullptr, 0), full.size());
}

TEST(PalError, ErrnoNames) {
  const struct {
    int code;
    const char* name;
  } kCases[] = {
      {EPERM, "EPERM"},
      {ENOENT, "ENOENT"},
      {EINTR, "EINTR"},
      {EIO, "EIO"},
      {EBADF, "EBADF"},
      {EAGAIN, "EAGAIN"},
      {ENOMEM, "ENOMEM"},
      {EACCES, "EACCES"},
      {EFAULT, "EFAULT"},
      {EBUSY, "EBUSY"},
      {EEXIST, "EEXIST"},
      {ENODEV, "ENODEV"},
      {ENOTDIR, "ENOTDIR"},
      {EISDIR, "EISDIR"},
      {EINVAL, "EINVAL"},
      {ENFILE, "ENFILE"},
      {EMFILE, "EMFILE"},
      {EFBIG, "EFBIG"},
      {ENOSPC, "ENOSPC"},
      {ESPIPE, "ESPIPE"},
      {EROFS, "EROFS"},
      {ERANGE, "ERANGE"},
      {EDEADLK, "EDEADLK"},
      {ENAMETOOLONG, "ENAMETOOLONG"},
      {ENOSYS, "ENOSYS"},
      {ELOOP, "ELOOP"},
      {EOVERFLOW, "EOVERFLOW"},
      {EOPNOTSUPP, "EOPNOTSUPP"},
      {ETIMEDOUT, "ETIMEDOUT"},
      {EOWNERDEAD, "EOWNERDEAD"},
      {ENOTRECOVERABLE, "ENOTRECOVERABLE"},
      {ETXTBSY, "ETXTBSY"},
      {EDQUOT, "EDQUOT"},
      {ENXIO, "ENXIO"},
      {ENOEXEC, "ENOEXEC"},
  };
  for (const auto& c : kCases) EXPECT_STREQ(pal::errno_name(c.code), c.name);
  EXPECT_STREQ(pal::errno_name(0), "E?");
  EXPECT_STREQ(pal::errno_name(-1), "E?");
  EXPECT_STREQ(pal::errno_name(99999), "E?");
  // An unknown errno is still formatted, with the C library's text.
  const std::string s = formatted(pal::Error::make(pal::Op::read, 99999));
  EXPECT_NE(s.find("failed: E? ("), std::string::npos) << s;
}

TEST(PalError, OpNameIsNonEmptyForEveryOp) {
  for (int i = 0; i <= static_cast<int>(pal::Op::check); ++i) {
    const char* name = pal::op_name(static_cast<pal::Op>(i));
    ASSERT_NE(name, nullptr) << i;
    EXPECT_GT(std::strlen(name), 0u) << i;
    EXPECT_STRNE(name, "(unknown)") << "Op " << i << " has no name";
  }
  EXPECT_STREQ(pal::op_name(pal::Op::mmap), "mmap");
  EXPECT_STREQ(pal::op_name(pal::Op::punch_hole), "fallocate(PUNCH_HOLE)");
  EXPECT_STREQ(pal::op_name(pal::Op::futex_wait), "futex(WAIT)");
  EXPECT_STREQ(pal::op_name(pal::Op::spawn), "posix_spawnp");
  EXPECT_STREQ(pal::op_name(pal::Op::check), "check");
  // Out-of-range values (e.g. read from a corrupt file) still give a string.
  EXPECT_STREQ(pal::op_name(static_cast<pal::Op>(200)), "(unknown)");
}

TEST(PalError, MakeAndBuildersSetFields) {
  pal::Error e = pal::Error::make(pal::Op::fallocate, ENOSPC);
  e.with_size(10).with_offset(20).with_flags(30, 40).with_detail("d").with_path("/p");
  EXPECT_EQ(e.op, pal::Op::fallocate);
  EXPECT_EQ(e.code, ENOSPC);
  EXPECT_EQ(e.size, 10u);
  EXPECT_EQ(e.offset, 20u);
  EXPECT_EQ(e.flags, 30u);
  EXPECT_EQ(e.extra, 40u);
  EXPECT_STREQ(e.detail, "d");
  EXPECT_STREQ(e.path, "/p");
  const pal::Error d;  // a default Error names nothing
  EXPECT_EQ(d.op, pal::Op::none);
  EXPECT_EQ(d.code, 0);
  EXPECT_EQ(d.detail, nullptr);
  EXPECT_EQ(d.path[0], '\0');
}

TEST(PalResult, ValueSemantics) {
  pal::Result<int> ok = 42;
  EXPECT_TRUE(ok.ok());
  EXPECT_TRUE(static_cast<bool>(ok));
  EXPECT_EQ(ok.value(), 42);
  EXPECT_EQ(*ok, 42);
  EXPECT_EQ(ok.value_or(7), 42);

  pal::Result<int> bad = pal::Error::make(pal::Op::read, EIO).with_size(3);
  EXPECT_FALSE(bad.ok());
  EXPECT_FALSE(static_cast<bool>(bad));
  EXPECT_EQ(bad.error().op, pal::Op::read);
  EXPECT_EQ(bad.error().code, EIO);
  EXPECT_EQ(bad.error().size, 3u);
  EXPECT_EQ(bad.value_or(7), 7);

  struct Pair {
    int a;
    long b;
  };
  pal::Result<Pair> p = Pair{1, 2};
  EXPECT_EQ(p->a, 1);
  EXPECT_EQ(p->b, 2);
  pal::Result<Pair> copy = p;  // copies are plain values
  EXPECT_EQ(copy->b, 2);
  pal::Result<void*> ptr = static_cast<void*>(nullptr);  // a null value is still a value
  EXPECT_TRUE(ptr.ok());
  EXPECT_EQ(ptr.value(), nullptr);
}

TEST(PalResult, StatusSemantics) {
  pal::Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_TRUE(static_cast<bool>(s));
  EXPECT_TRUE(pal::Status::success().ok());
  pal::Status f = pal::Error::make(pal::Op::fdatasync, EIO).with_path("/f");
  EXPECT_FALSE(f.ok());
  EXPECT_FALSE(static_cast<bool>(f));
  EXPECT_EQ(f.error().op, pal::Op::fdatasync);
  EXPECT_EQ(f.error().code, EIO);
  EXPECT_STREQ(f.error().path, "/f");
  pal::Status g = f;
  EXPECT_FALSE(g.ok());
  EXPECT_EQ(g.error().code, EIO);
}
