// Mapping options one by one, and every way of asking for something wrong:
// each must give a mapheap::error that names the path and the reason.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"
#include "support/death.hpp"
#include "support/process.hpp"

namespace mapheap {
namespace {

std::size_t page() {
  return pal::page_size();
}

class TempPath {
 public:
  explicit TempPath(const char* stem) {
    static std::atomic<int> n{0};
    path_ = "/var/tmp/mapheap-" + std::string(stem) + "-" + std::to_string(::getpid()) + "-" +
            std::to_string(n++);
  }
  ~TempPath() {
    ::unlink(path_.c_str());
    ::rmdir(path_.c_str());
  }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

// Runs fn, expects a mapheap::error with errno `code` whose message contains
// every one of `needles`.
template <class Fn>
void expect_error(Fn&& fn, int code, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const error& e) {
    EXPECT_EQ(e.code().value(), code) << e.what();
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "'" << n << "' missing from: " << e.what();
  }
}

TEST(MappingErrors, SizeZeroAnonymous) {
  expect_error([] { Mapping::create(MappingOptions::anonymous(0)); }, EINVAL, {"size 0"});
}

TEST(MappingErrors, SizeBeyondReservation) {
  expect_error([] { Mapping::create(MappingOptions::anonymous(8 * page()).with_reserve(page())); },
               EINVAL, {"beyond the reservation"});
}

TEST(MappingErrors, MissingFile) {
  TempPath p("missing");
  expect_error(
      [&] { Mapping::create(MappingOptions::file(p.str(), page(), OpenMode::open_existing)); },
      ENOENT, {p.str(), "does not exist", "ENOENT"});
}

TEST(MappingErrors, ExclusiveCreateOfExistingFile) {
  TempPath p("exists");
  Mapping a = Mapping::create(MappingOptions::file(p.str(), page()));
  expect_error(
      [&] { Mapping::create(MappingOptions::file(p.str(), page(), OpenMode::create_exclusive)); },
      EEXIST, {p.str(), "already exists"});
}

TEST(MappingErrors, Directory) {
  TempPath p("dir");
  ASSERT_EQ(::mkdir(p.str().c_str(), 0700), 0);
  expect_error([&] { Mapping::create(MappingOptions::file(p.str(), page())); }, EISDIR,
               {p.str(), "directory"});
  // A private mapping opens read-only, which a directory allows: the type check catches it.
  expect_error(
      [&] {
        Mapping::create(MappingOptions::file(p.str(), page()).with_sharing(Sharing::private_));
      },
      EISDIR, {p.str(), "directory"});
}

TEST(MappingErrors, NotARegularFile) {
  expect_error(
      [] {
        Mapping::create(MappingOptions::file("/dev/null", page(), OpenMode::open_existing)
                            .with_sharing(Sharing::private_));
      },
      ENODEV, {"/dev/null", "not a regular file"});
}

TEST(MappingErrors, SymlinkIsRefusedUnlessFollowed) {
  TempPath target("target");
  TempPath link("link");
  { Mapping m = Mapping::create(MappingOptions::file(target.str(), page())); }
  ASSERT_EQ(::symlink(target.str().c_str(), link.str().c_str()), 0);
  expect_error([&] { Mapping::create(MappingOptions::file(link.str(), page())); }, ELOOP,
               {link.str(), "symbolic link"});
  MappingOptions follow = MappingOptions::file(link.str(), page());
  follow.follow_symlinks = true;
  EXPECT_NO_THROW(Mapping::create(follow));
}

TEST(MappingErrors, FileWithoutPermission) {
  TempPath p("noperm");
  { Mapping m = Mapping::create(MappingOptions::file(p.str(), page())); }
  ASSERT_EQ(::chmod(p.str().c_str(), 0600), 0);
  // Root ignores file modes: test as an unprivileged user in a child.
  const int rc = test::run_as_nobody([&] {
    if (::geteuid() != 0 && ::access(p.str().c_str(), R_OK) == 0 &&
        ::chmod(p.str().c_str(), 0) != 0)
      return 11;
    auto r = Mapping::try_create(MappingOptions::file(p.str(), page(), OpenMode::open_existing));
    if (r.ok()) return 12;
    const std::string what = r.err().what();
    const bool good = r.err().code().value() == EACCES && what.find(p.str()) != std::string::npos &&
                      what.find("EACCES") != std::string::npos;
    return good ? 0 : 13;
  });
  EXPECT_EQ(rc, 0);
}

TEST(MappingErrors, EmptyFileWithoutSize) {
  TempPath p("empty");
  ::close(::open(p.str().c_str(), O_CREAT | O_WRONLY, 0600));
  expect_error([&] { Mapping::create(MappingOptions::file(p.str(), 0, OpenMode::open_existing)); },
               EINVAL, {p.str(), "empty"});
}

TEST(MappingErrors, MissingPath) {
  expect_error([] { Mapping::create(MappingOptions::file("", page())); }, EINVAL, {"no path"});
}

TEST(MappingErrors, BadShmName) {
  expect_error([] { Mapping::create(MappingOptions::shm("/a/b", page())); }, EINVAL,
               {"/a/b", "one leading slash"});
}

TEST(MappingErrors, ReadOnlyCannotExtend) {
  TempPath p("ro");
  { Mapping m = Mapping::create(MappingOptions::file(p.str(), page())); }
  expect_error(
      [&] {
        Mapping::create(MappingOptions::file(p.str(), 4 * page(), OpenMode::open_existing)
                            .with_access(Access::read_only));
      },
      EINVAL, {p.str(), "read-only"});
  Mapping ro = Mapping::create(
      MappingOptions::file(p.str(), 0, OpenMode::open_existing).with_access(Access::read_only));
  ro.grow(page());  // no-op
  ro.sync();        // nothing to write back
  expect_error([&] { ro.grow(2 * page()); }, ERANGE, {"reservation"});
}

// random_access advises MADV_RANDOM ("rr" in the kernel's VmFlags) over the
// whole reservation, so the part a growth makes usable has it too; without
// the option no mapping of the range has it.
TEST(MappingOptions, RandomAccessCoversTheReservation) {
  for (const bool random : {true, false}) {
    TempPath p("random");
    Mapping m = Mapping::create(
        MappingOptions::file(p.str(), 4 * page()).with_reserve(64 * page()).with_random_access(random));
    m.grow(32 * page());
    auto t = pal::smaps_range(m.data(), m.reserved());
    ASSERT_TRUE(t.ok());
    ASSERT_GT(t->vmas, 0u);
    EXPECT_EQ(t->random_read_vmas, random ? t->vmas : 0u) << "random_access " << random;
  }
}

TEST(MappingErrors, TryCreateReturnsTheError) {
  auto r = Mapping::try_create(MappingOptions::file("/nonexistent-dir/x", page()));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code().value(), ENOENT);
  EXPECT_EQ(r.err().path(), "/nonexistent-dir/x");
  EXPECT_EQ(r.err().operation(), "open");
  EXPECT_EQ(r.err().size(), page());
  EXPECT_THROW((void)std::move(r).value(), error);
}

TEST(MappingErrors, HugetlbStrictFailsWhenUnavailable) {
  if (pal::huge_pages_free(pal::kHuge2M) > 0) GTEST_SKIP() << "this machine has 2 MiB pages";
  expect_error(
      [] {
        Mapping::create(
            MappingOptions::anonymous(pal::kHuge2M).with_huge(HugePolicy::hugetlb_2m, true));
      },
      ENOMEM, {"hugetlb 2 MiB", "free"});
}

TEST(MappingHuge, HugetlbFallsBackToTransparentWithAReason) {
  Mapping m =
      Mapping::create(MappingOptions::anonymous(pal::kHuge2M).with_huge(HugePolicy::hugetlb_2m));
  const HugeReport& r = m.huge_report();
  if (pal::huge_pages_free(pal::kHuge2M) > 0) {
    EXPECT_EQ(r.obtained, HugeOutcome::hugetlb_2m);
    EXPECT_EQ(m.granule(), pal::kHuge2M);
    return;
  }
  EXPECT_TRUE(r.fell_back);
  EXPECT_NE(r.reason.find("0 free"), std::string::npos) << r.reason;
  const pal::SystemInfo sys = pal::system_info();
  EXPECT_EQ(r.obtained,
            sys.thp_enabled == pal::ThpMode::never ? HugeOutcome::none : HugeOutcome::transparent);
  EXPECT_EQ(m.granule(), page());
}

TEST(MappingHuge, TransparentHugePagesBackALargeTouchedRange) {
  const pal::SystemInfo sys = pal::system_info();
  if (sys.thp_enabled == pal::ThpMode::never) GTEST_SKIP() << "THP disabled";
  Mapping m = Mapping::create(
      MappingOptions::anonymous(std::size_t{8} << 20).with_huge(HugePolicy::transparent));
  EXPECT_EQ(m.huge_report().obtained, HugeOutcome::transparent);
  std::memset(m.data(), 1, m.size());
  // The kernel may lack free 2 MiB frames at this instant, so this is not an
  // equality; but an aligned, advised, fully touched 8 MiB run on an idle
  // machine with THP on is where the report must show huge pages if any.
  const Residency r = m.residency();
  EXPECT_EQ(r.resident_pages, m.size() / page());
  RecordProperty("huge_bytes", std::to_string(r.huge_bytes));
}

TEST(MappingFile, NewFileHasMode0600) {
  TempPath p("mode");
  Mapping m = Mapping::create(MappingOptions::file(p.str(), page()));
  struct stat st {};
  ASSERT_EQ(::stat(p.str().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), page());
}

TEST(MappingFile, ModeIsTheCallers) {
  TempPath p("mode640");
  MappingOptions o = MappingOptions::file(p.str(), page());
  o.mode = 0640;
  Mapping m = Mapping::create(o);
  struct stat st {};
  ASSERT_EQ(::stat(p.str().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  const std::string name = "/mapheap-mode-" + std::to_string(::getpid());
  Mapping s = Mapping::create(MappingOptions::shm(name, page()));
  ASSERT_EQ(::fstat(s.fd(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // shm objects default to 0600 too
  EXPECT_EQ(::shm_unlink(name.c_str()), 0);
}

TEST(MappingFile, GrowExtendsTheFile) {
  TempPath p("grow");
  Mapping m = Mapping::create(MappingOptions::file(p.str(), page()).with_reserve(1 << 20));
  m.grow(5 * page());
  struct stat st {};
  ASSERT_EQ(::stat(p.str().c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), 5 * page());
}

TEST(MappingFile, PrivateMappingNeverWritesBack) {
  TempPath p("cow");
  {
    Mapping m = Mapping::create(MappingOptions::file(p.str(), page()));
    std::memcpy(m.data(), "original", 8);
  }
  {
    Mapping cow = Mapping::create(MappingOptions::file(p.str(), 0, OpenMode::open_existing)
                                      .with_sharing(Sharing::private_)
                                      .with_reserve(4 * page()));
    EXPECT_EQ(std::memcmp(cow.data(), "original", 8), 0);
    std::memcpy(cow.data(), "changed!", 8);
    cow.grow(4 * page());  // past the file's end: anonymous zero pages
    cow.data()[3 * page()] = std::byte{1};
    cow.sync();  // a no-op for a private view
  }
  Mapping m = Mapping::create(MappingOptions::file(p.str(), 0, OpenMode::open_existing));
  EXPECT_EQ(m.size(), page());  // the file did not grow
  EXPECT_EQ(std::memcmp(m.data(), "original", 8), 0);
}

TEST(MappingFile, ExistingLargerFileIsMappedWhole) {
  TempPath p("larger");
  { Mapping m = Mapping::create(MappingOptions::file(p.str(), 8 * page())); }
  Mapping m = Mapping::create(MappingOptions::file(p.str(), page()));
  EXPECT_EQ(m.size(), 8 * page());
  expect_error(
      [&] { Mapping::create(MappingOptions::file(p.str(), page()).with_reserve(2 * page())); },
      EINVAL, {"larger than the reservation"});
}

TEST(MappingFile, ReadOnlyMappingFaultsOnStore) {
  TempPath p("rofault");
  { Mapping m = Mapping::create(MappingOptions::file(p.str(), page())); }
  Mapping ro = Mapping::create(
      MappingOptions::file(p.str(), 0, OpenMode::open_existing).with_access(Access::read_only));
  EXPECT_EQ(ro.data()[0], std::byte{0});
  EXPECT_EXIT(
      {
        *static_cast<volatile std::byte*>(ro.data()) = std::byte{1};
        ::_exit(0);
      },
      test::DiedOf{SIGSEGV}, test::fault_pattern(SIGSEGV));
}

TEST(MappingFile, StoresBeyondTheUsableSizeFault) {
  TempPath p("guard");
  Mapping m = Mapping::create(MappingOptions::file(p.str(), page()).with_reserve(4 * page()));
  // Past the file's end: the kernel raises SIGBUS, the contract that makes
  // out-of-bounds use loud rather than silent.
  EXPECT_EXIT(
      {
        *static_cast<volatile std::byte*>(m.data() + 2 * page()) = std::byte{1};
        ::_exit(0);
      },
      test::DiedOf{SIGBUS}, test::fault_pattern(SIGBUS));
  Mapping a = Mapping::create(MappingOptions::anonymous(page()).with_reserve(4 * page()));
  EXPECT_EXIT(
      {
        *static_cast<volatile std::byte*>(a.data() + 2 * page()) = std::byte{1};
        ::_exit(0);
      },
      test::DiedOf{SIGSEGV}, test::fault_pattern(SIGSEGV));
}

TEST(MappingMemfd, SharedByDescriptor) {
  Mapping a = Mapping::create(MappingOptions::memfd("share", 2 * page()));
  ASSERT_GE(a.fd(), 0);
  Mapping b = Mapping::create(MappingOptions::from_fd(a.fd()));
  EXPECT_EQ(b.size(), 2 * page());
  EXPECT_NE(a.data(), b.data());  // two views, two addresses, one object
  std::memcpy(a.data() + page(), "via fd", 6);
  EXPECT_EQ(std::memcmp(b.data() + page(), "via fd", 6), 0);
}

TEST(MappingShm, NameWithoutSlashIsNormalized) {
  const std::string name = "mapheap-norm-" + std::to_string(::getpid());
  Mapping m = Mapping::create(MappingOptions::shm(name, page()));
  EXPECT_EQ(m.path(), "/" + name);
  EXPECT_EQ(::shm_unlink(m.path().c_str()), 0);
}

TEST(MappingLock, LockedMappingIsResident) {
  if (test::kUnderSanitizer) GTEST_SKIP() << "ASan and TSan replace mlock() with a no-op";
  MappingOptions o = MappingOptions::anonymous(4 * page()).with_reserve(8 * page());
  o.lock_memory = true;
  auto r = Mapping::try_create(o);
  if (!r.ok()) {
    // Only a too-small RLIMIT_MEMLOCK may refuse it, and the error must say so.
    EXPECT_NE(std::string(r.err().what()).find("mlock"), std::string::npos) << r.err().what();
    GTEST_SKIP() << r.err().what();
  }
  Mapping m = std::move(r).value();
  EXPECT_EQ(m.residency().resident_pages, 4u);
  m.grow(8 * page());
  EXPECT_EQ(m.residency().resident_pages, 8u);
}

TEST(MappingRelease, MisalignedRangeIsRefused) {
  Mapping m = Mapping::create(MappingOptions::anonymous(4 * page()));
  expect_error([&] { m.release(1, page()); }, EINVAL, {"multiples"});
  expect_error([&] { m.release(0, 8 * page()); }, ERANGE, {"beyond"});
}

TEST(MappingStrings, EveryEnumHasAName) {
  for (auto b : {Backing::anonymous, Backing::file, Backing::shm, Backing::memfd})
    EXPECT_STRNE(to_string(b), "?");
  for (auto h : {HugePolicy::none, HugePolicy::transparent, HugePolicy::hugetlb_2m,
                 HugePolicy::hugetlb_1g, HugePolicy::automatic})
    EXPECT_STRNE(to_string(h), "?");
  for (auto h : {HugeOutcome::none, HugeOutcome::transparent, HugeOutcome::hugetlb_2m,
                 HugeOutcome::hugetlb_1g})
    EXPECT_STRNE(to_string(h), "?");
}

}  // namespace
}  // namespace mapheap
