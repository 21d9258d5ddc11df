// Edge cases a review of Mapping turned up: overflowing sizes, concurrent
// growth, full filesystems, creation side effects, FIFOs, hugetlb memfds,
// private views and borrowed descriptors. Each test reproduces the situation
// and checks the outcome a user is promised.
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"
#include "support/process.hpp"

namespace mapheap {
namespace {

using test::in_child;

std::size_t page() {
  return pal::page_size();
}

std::string temp_path(const char* stem) {
  static std::atomic<int> n{0};
  return "/var/tmp/mapheap-edge-" + std::string(stem) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(n++);
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

std::uint64_t file_size(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

TEST(MappingEdge, SizesNearTheTopOfTheAddressSpaceAreRefused) {
  for (std::size_t size : {SIZE_MAX, SIZE_MAX - 10, SIZE_MAX / 2 + 4096}) {
    auto r = Mapping::try_create(MappingOptions::anonymous(size));
    ASSERT_FALSE(r.ok()) << size;
    EXPECT_EQ(r.err().code().value(), ERANGE) << r.err().what();
    EXPECT_NE(std::string(r.err().what()).find("largest mapping"), std::string::npos);
  }
  auto big_reserve = Mapping::try_create(MappingOptions::anonymous(page()).with_reserve(SIZE_MAX));
  ASSERT_FALSE(big_reserve.ok());
  EXPECT_EQ(big_reserve.err().code().value(), ERANGE);

  Mapping m = Mapping::create(MappingOptions::anonymous(page()).with_reserve(4 * page()));
  for (std::size_t size : {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - page()}) {
    auto g = m.try_grow(size);
    ASSERT_FALSE(g.ok()) << size;
    EXPECT_EQ(g.err().code().value(), ERANGE);
  }
  EXPECT_EQ(m.size(), page());
}

// Two mappings of one file (two descriptors, as two processes would have)
// grow it concurrently: the file must never end up smaller than what a
// finished grow() promised, whichever way the object is extended.
TEST(MappingEdge, ConcurrentGrowthNeverShrinksTheFile) {
  for (bool preallocate : {false, true}) {
    const std::string path = temp_path("race");
    const std::size_t top = 1024 * page();
    MappingOptions o = MappingOptions::file(path, page()).with_reserve(top);
    o.preallocate = preallocate;
    Mapping a = Mapping::create(o);
    Mapping b = Mapping::create(o);
    std::atomic<int> violations{0};
    auto grower = [&](Mapping& m, std::size_t phase) {
      for (std::size_t s = 2 * page() + phase; s <= top; s += 2 * page()) {
        m.grow(s);
        if (file_size(path) < s) violations.fetch_add(1);
        m.data()[s - 1] = std::byte{1};  // must not SIGBUS: the file covers it
      }
    };
    std::thread ta(grower, std::ref(a), 0);
    std::thread tb(grower, std::ref(b), page());
    ta.join();
    tb.join();
    EXPECT_EQ(violations.load(), 0) << "preallocate=" << preallocate;
    EXPECT_EQ(file_size(path), top);
    ::unlink(path.c_str());
  }
}

// A full filesystem must be an error at create or grow, never a SIGBUS on a
// later store. Needs root (a private mount namespace with a 1 MiB tmpfs).
TEST(MappingEdge, FullFilesystemIsAnErrorNotASigbus) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a private tmpfs mount";
  const std::string dir = temp_path("tmpfs");
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  const int rc = in_child([&] {
    if (::unshare(CLONE_NEWNS) != 0) return 77;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1m") != 0) return 77;
    const std::string path = dir + "/heap";
    // Creation asks for 4 MiB on a 1 MiB filesystem: refused, no file left behind.
    auto r = Mapping::try_create(MappingOptions::file(path, 4 << 20));
    if (r.ok()) return 1;
    if (r.err().code().value() != ENOSPC) return 2;
    if (std::string(r.err().what()).find(path) == std::string::npos) return 3;
    if (exists(path)) return 4;
    // Growth past the space: refused, size unchanged, the old range usable.
    Mapping m = Mapping::create(MappingOptions::file(path, 256 << 10).with_reserve(8 << 20));
    auto g = m.try_grow(4 << 20);
    if (g.ok() || g.err().code().value() != ENOSPC) return 5;
    if (m.size() != (256u << 10)) return 6;
    std::memset(m.data(), 1, m.size());
    // A sparse shm-like object prefaulted for writing: the failure comes back
    // as an error naming the cause, not an exception from try_create.
    MappingOptions sparse = MappingOptions::file(dir + "/sparse", 4 << 20).with_prefault();
    sparse.preallocate = false;
    auto p = Mapping::try_create(sparse);
    if (p.ok()) return 7;
    return 0;
  });
  ::rmdir(dir.c_str());
  if (rc == 77) GTEST_SKIP() << "cannot create a mount namespace here";
  EXPECT_EQ(rc, 0);
}

TEST(MappingEdge, ViewsThatMayNotCreateDoNotCreate) {
  const std::string path = temp_path("nocreate");
  for (auto o : {MappingOptions::file(path, page()).with_access(Access::read_only),
                 MappingOptions::file(path, page()).with_sharing(Sharing::private_)}) {
    auto r = Mapping::try_create(o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code().value(), ENOENT) << r.err().what();
    EXPECT_FALSE(exists(path));
  }
  auto excl = Mapping::try_create(MappingOptions::file(path, page(), OpenMode::create_exclusive)
                                      .with_sharing(Sharing::private_));
  ASSERT_FALSE(excl.ok());
  EXPECT_EQ(excl.err().code().value(), EINVAL);
  EXPECT_NE(std::string(excl.err().what()).find("shared, read-write"), std::string::npos);
  EXPECT_FALSE(exists(path));
}

TEST(MappingEdge, AFailedCreationRemovesWhatItCreated) {
  const std::string path = temp_path("strict");
  // A file on ext4 cannot have hugetlb pages: strict fails, and the file it
  // created for the attempt is gone, so a retry with create_exclusive works.
  auto r = Mapping::try_create(MappingOptions::file(path, page(), OpenMode::create_exclusive)
                                   .with_huge(HugePolicy::hugetlb_2m, true));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code().value(), ENOMEM);
  EXPECT_FALSE(exists(path));
  EXPECT_NO_THROW(Mapping::create(MappingOptions::file(path, page(), OpenMode::create_exclusive)));
  ::unlink(path.c_str());

  const std::string name = "/mapheap-edge-strict-" + std::to_string(::getpid());
  auto s = Mapping::try_create(
      MappingOptions::shm(name, page()).with_huge(HugePolicy::hugetlb_2m, true));
  ASSERT_FALSE(s.ok());
  const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  EXPECT_LT(fd, 0) << "the shm object created for the failed attempt is still there";
  if (fd >= 0) {
    ::close(fd);
    ::shm_unlink(name.c_str());
  }
}

// O_RDONLY on a FIFO blocks until a writer comes: the open must not, and the
// type check must refuse it.
TEST(MappingEdge, AFifoIsRefusedWithoutHanging) {
  const std::string path = temp_path("fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  const int rc = in_child([&] {
    ::alarm(10);  // a regression hangs; the alarm turns it into a failure
    for (auto o :
         {MappingOptions::file(path, 0, OpenMode::open_existing).with_access(Access::read_only),
          MappingOptions::file(path, 0, OpenMode::open_existing).with_sharing(Sharing::private_),
          MappingOptions::file(path, page(), OpenMode::open_existing)}) {
      auto r = Mapping::try_create(o);
      if (r.ok() || r.err().code().value() != ENODEV) return 1;
    }
    return 0;
  });
  ::unlink(path.c_str());
  EXPECT_EQ(rc, 0);
}

// A hugetlb memfd is on hugetlbfs: nothing to fall back to, so with no pages
// available the mapping fails before touching the object.
TEST(MappingEdge, HugetlbMemfdWithoutPagesFailsCleanly) {
  const int fd = ::memfd_create("edge-huge", MFD_CLOEXEC | MFD_HUGETLB);
  if (fd < 0) GTEST_SKIP() << "no hugetlb memfd on this kernel";
  if (pal::huge_pages_available(pal::kHuge2M) > 0) {
    ::close(fd);
    GTEST_SKIP() << "this machine has 2 MiB pages available";
  }
  auto r = Mapping::try_create(MappingOptions::from_fd(fd, pal::kHuge2M));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code().value(), ENOMEM);
  EXPECT_NE(std::string(r.err().what()).find("available"), std::string::npos) << r.err().what();
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 0) << "the object was resized by a failed mapping";
  ::close(fd);
}

TEST(MappingEdge, ReadOnlyGrowsToWhatAPeerWrote) {
  const std::string path = temp_path("rogrow");
  Mapping writer = Mapping::create(MappingOptions::file(path, page()).with_reserve(16 * page()));
  Mapping reader = Mapping::create(MappingOptions::file(path, 0, OpenMode::open_existing)
                                       .with_access(Access::read_only)
                                       .with_reserve(16 * page()));
  writer.grow(3 * page());
  writer.data()[3 * page() - 1] = std::byte{42};
  const std::size_t odd = 3 * page() + 100;  // the peer's size need not be page-aligned
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(odd)), 0);
  reader.grow(odd);
  EXPECT_GE(reader.size(), odd);
  EXPECT_EQ(reader.data()[3 * page() - 1], std::byte{42});
  auto beyond = reader.try_grow(reader.size() + 1);  // past the object's end
  ASSERT_FALSE(beyond.ok());
  EXPECT_EQ(beyond.err().code().value(), EINVAL);
  ::unlink(path.c_str());
}

// release() promises zeros; on a private view of a file MADV_DONTNEED would
// bring back the file's bytes instead.
TEST(MappingEdge, ReleaseOfAPrivateFileViewReadsZeros) {
  const std::string path = temp_path("cowrel");
  {
    Mapping m = Mapping::create(MappingOptions::file(path, 4 * page()));
    std::memset(m.data(), 'F', m.size());
  }
  Mapping cow = Mapping::create(MappingOptions::file(path, 0, OpenMode::open_existing)
                                    .with_sharing(Sharing::private_)
                                    .with_reserve(8 * page()));
  cow.grow(8 * page());
  std::memset(cow.data(), 'P', cow.size());
  cow.release(0, 6 * page());  // four pages from the file, two anonymous
  for (std::size_t i = 0; i < 6 * page(); ++i) ASSERT_EQ(cow.data()[i], std::byte{0}) << i;
  EXPECT_EQ(cow.data()[6 * page()], std::byte{'P'});
  cow.data()[0] = std::byte{1};  // still writable
  Mapping again = Mapping::create(MappingOptions::file(path, 0, OpenMode::open_existing));
  EXPECT_EQ(again.data()[0], std::byte{'F'});  // and the file is untouched
  ::unlink(path.c_str());
}

// Prefaulting a shared file for reading must not dirty or allocate it.
TEST(MappingEdge, PrefaultOfASparseFileAllocatesNothing) {
  const std::string path = temp_path("sparse");
  MappingOptions o = MappingOptions::file(path, 16 << 20).with_prefault();
  o.preallocate = false;
  Mapping m = Mapping::create(o);
  EXPECT_EQ(m.residency().resident_pages, (16u << 20) / page());
  m.sync();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, std::uint64_t{1} << 20)
      << "a read prefault allocated the file's blocks";
  ::unlink(path.c_str());
}

TEST(MappingEdge, ABorrowedReadOnlyDescriptorIsNamedInTheError) {
  const std::string path = temp_path("rofd");
  { Mapping m = Mapping::create(MappingOptions::file(path, page())); }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto r = Mapping::try_create(MappingOptions::from_fd(fd, 4 * page()));
  ASSERT_FALSE(r.ok());
  const std::string what = r.err().what();
  EXPECT_NE(what.find("(fd "), std::string::npos) << what;
  EXPECT_NE(what.find("read-write"), std::string::npos) << what;
  ::close(fd);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace mapheap
