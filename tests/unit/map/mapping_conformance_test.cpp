// One Mapping suite, run against every backing: anonymous (private and
// shared), file (shared and private), POSIX shm and memfd. What a backing
// promises differs only in the traits each Backend declares.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "mapheap/mapping.hpp"
#include "pal/pal.hpp"

namespace mapheap {
namespace {

std::string unique(const char* stem) {
  static std::atomic<int> counter{0};
  return std::string(stem) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

struct Backend {
  const char* name;
  // Builds options for a fresh object of `size` bytes with `reserve` address space.
  std::function<MappingOptions(const std::string& id, std::size_t size, std::size_t reserve)> make;
  bool shared;      // stores are seen by fork()ed children and other mappers
  bool persistent;  // content survives unmapping (file, shm)
  std::function<void(const std::string& id)> cleanup;
};

void PrintTo(const Backend& b, std::ostream* os) {
  *os << b.name;
}

std::string file_path(const std::string& id) {
  return "/var/tmp/" + id + ".map";
}

const Backend kBackends[] = {
    {"anonymous_private",
     [](const std::string&, std::size_t s, std::size_t r) {
       return MappingOptions::anonymous(s).with_reserve(r);
     },
     false, false, [](const std::string&) {}},
    {"anonymous_shared",
     [](const std::string&, std::size_t s, std::size_t r) {
       return MappingOptions::anonymous(s, Sharing::shared).with_reserve(r);
     },
     true, false, [](const std::string&) {}},
    {"file_shared",
     [](const std::string& id, std::size_t s, std::size_t r) {
       return MappingOptions::file(file_path(id), s).with_reserve(r);
     },
     true, true, [](const std::string& id) { ::unlink(file_path(id).c_str()); }},
    {"file_private",
     // A copy-on-write view never creates its file: make one of `s` bytes first.
     [](const std::string& id, std::size_t s, std::size_t r) {
       if (s != 0) Mapping::create(MappingOptions::file(file_path(id), s));
       return MappingOptions::file(file_path(id), s, OpenMode::open_existing)
           .with_reserve(r)
           .with_sharing(Sharing::private_);
     },
     false, false, [](const std::string& id) { ::unlink(file_path(id).c_str()); }},
    {"shm",
     [](const std::string& id, std::size_t s, std::size_t r) {
       return MappingOptions::shm("/" + id, s).with_reserve(r);
     },
     true, true, [](const std::string& id) { ::shm_unlink(("/" + id).c_str()); }},
    {"memfd",
     [](const std::string& id, std::size_t s, std::size_t r) {
       return MappingOptions::memfd(id, s).with_reserve(r);
     },
     true, false, [](const std::string&) {}},
};

class MappingConformance : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { id_ = unique("mapheap-test"); }
  void TearDown() override { GetParam().cleanup(id_); }
  MappingOptions opts(std::size_t size, std::size_t reserve = 0) const {
    return GetParam().make(id_, size, reserve);
  }
  static std::size_t page() { return pal::page_size(); }
  std::string id_;
};

TEST_P(MappingConformance, CreatesZeroedWritableMemory) {
  Mapping m = Mapping::create(opts(3 * page() + 1));
  ASSERT_NE(m.data(), nullptr);
  EXPECT_EQ(m.size(), 4 * page());  // rounded up to whole pages
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(m.data()) % page(), 0u);
  EXPECT_EQ(m.backing(), GetParam().make(id_, 1, 0).backing);
  for (std::size_t i = 0; i < m.size(); ++i) ASSERT_EQ(m.data()[i], std::byte{0}) << i;
  std::memset(m.data(), 0x5a, m.size());
  EXPECT_EQ(m.data()[m.size() - 1], std::byte{0x5a});
}

TEST_P(MappingConformance, LargeReservationIsAlignedTo2MiB) {
  Mapping m = Mapping::create(opts(page(), std::size_t{8} << 20));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(m.data()) % (std::size_t{2} << 20), 0u);
  EXPECT_EQ(m.reserved(), std::size_t{8} << 20);
}

TEST_P(MappingConformance, GrowKeepsBaseAndContent) {
  Mapping m = Mapping::create(opts(page(), 64 * page()));
  std::byte* base = m.data();
  std::memcpy(m.data(), "hello", 5);
  m.grow(10 * page());
  EXPECT_EQ(m.data(), base);
  EXPECT_EQ(m.size(), 10 * page());
  EXPECT_EQ(std::memcmp(m.data(), "hello", 5), 0);
  for (std::size_t i = page(); i < m.size(); ++i) ASSERT_EQ(m.data()[i], std::byte{0});
  m.data()[m.size() - 1] = std::byte{7};  // newly usable pages are writable
  m.grow(64 * page());
  EXPECT_EQ(m.data(), base);
  EXPECT_EQ(m.data()[10 * page() - 1], std::byte{7});
  m.grow(3 * page());  // shrinking is a no-op
  EXPECT_EQ(m.size(), 64 * page());
}

TEST_P(MappingConformance, GrowBeyondReservationIsAClearError) {
  Mapping m = Mapping::create(opts(page(), 4 * page()));
  try {
    m.grow(5 * page());
    FAIL() << "grow beyond the reservation succeeded";
  } catch (const error& e) {
    EXPECT_EQ(e.code().value(), ERANGE);
    EXPECT_NE(std::string(e.what()).find("reservation"), std::string::npos) << e.what();
  }
  auto r = m.try_grow(5 * page());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err().code().value(), ERANGE);
  EXPECT_EQ(m.size(), page());  // a failed grow changes nothing
}

TEST_P(MappingConformance, ResidencyFollowsTouchAndRelease) {
  Mapping m = Mapping::create(opts(16 * page()));
  Residency before = m.residency();
  EXPECT_EQ(before.pages, 16u);
  EXPECT_EQ(before.resident_pages, 0u);
  for (std::size_t i = 0; i < 8; ++i) m.data()[i * page()] = std::byte{1};
  Residency touched = m.residency();
  EXPECT_EQ(touched.resident_pages, 8u);
  EXPECT_GE(touched.rss_bytes, 8 * page());
  m.release(0, 8 * page());
  Residency after = m.residency();
  EXPECT_EQ(after.resident_pages, 0u);
  EXPECT_EQ(m.data()[0], std::byte{0});  // released pages read back as zeros
}

TEST_P(MappingConformance, PrefaultMakesEveryPageResident) {
  Mapping m = Mapping::create(opts(32 * page()).with_prefault());
  EXPECT_EQ(m.residency().resident_pages, 32u);
}

TEST_P(MappingConformance, AdviceIsAccepted) {
  Mapping m = Mapping::create(opts(8 * page()));
  for (Advice a : {Advice::normal, Advice::sequential, Advice::random, Advice::willneed,
                   Advice::populate, Advice::hugepage, Advice::nohugepage, Advice::dontneed})
    EXPECT_NO_THROW(m.advise(a)) << static_cast<int>(a);
  EXPECT_THROW(m.advise(Advice::normal, 9 * page(), 0), error);  // beyond the size
}

TEST_P(MappingConformance, SyncSucceedsOrIsANoop) {
  Mapping m = Mapping::create(opts(4 * page()));
  std::memset(m.data(), 1, m.size());
  EXPECT_NO_THROW(m.sync());
  EXPECT_NO_THROW(m.sync(page(), page()));
  EXPECT_THROW(m.sync(0, 5 * page()), error);  // a range beyond the size is refused
}

// A fork()ed child writes; the parent sees it only if the backing is shared.
TEST_P(MappingConformance, ForkSharesOrCopiesOnWrite) {
  Mapping m = Mapping::create(opts(2 * page()));
  m.data()[0] = std::byte{1};
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    m.data()[0] = std::byte{42};
    ::_exit(m.data()[0] == std::byte{42} ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(m.data()[0], GetParam().shared ? std::byte{42} : std::byte{1});
}

// Growth by one process is seen by another without remapping: for shared
// backings the object itself grows.
TEST_P(MappingConformance, GrowthInAChildIsVisibleToTheParent) {
  if (!GetParam().shared) GTEST_SKIP() << "private mappings do not share growth";
  Mapping m = Mapping::create(opts(page(), 16 * page()));
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    m.grow(16 * page());
    m.data()[15 * page()] = std::byte{99};
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::byte* base = m.data();
  m.grow(16 * page());  // the object is already that large: no ftruncate, no remap
  EXPECT_EQ(m.data(), base);
  EXPECT_EQ(m.data()[15 * page()], std::byte{99});
}

TEST_P(MappingConformance, ContentSurvivesReopenWhenPersistent) {
  {
    Mapping m = Mapping::create(opts(2 * page()));
    std::memcpy(m.data() + page(), "persist", 7);
    m.sync();
  }
  if (!GetParam().persistent) GTEST_SKIP() << "the object dies with its last mapping";
  MappingOptions again = opts(0);
  again.open_mode = OpenMode::open_existing;
  Mapping m = Mapping::create(again);
  EXPECT_EQ(m.size(), 2 * page());
  EXPECT_EQ(std::memcmp(m.data() + page(), "persist", 7), 0);
}

TEST_P(MappingConformance, MoveTransfersOwnership) {
  Mapping a = Mapping::create(opts(page()));
  std::byte* base = a.data();
  Mapping b = std::move(a);
  EXPECT_EQ(b.data(), base);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  Mapping c;
  c = std::move(b);
  EXPECT_EQ(c.data(), base);
  c.close();
  EXPECT_TRUE(c.empty());
  EXPECT_THROW(c.sync(), error);
}

TEST_P(MappingConformance, HugePolicyIsReportedNeverSilent) {
  for (HugePolicy p : {HugePolicy::none, HugePolicy::transparent, HugePolicy::hugetlb_2m,
                       HugePolicy::hugetlb_1g, HugePolicy::automatic}) {
    Mapping m = Mapping::create(opts(std::size_t{2} << 20).with_huge(p));
    const HugeReport& r = m.huge_report();
    EXPECT_EQ(r.requested, p);
    const bool got_hugetlb =
        r.obtained == HugeOutcome::hugetlb_2m || r.obtained == HugeOutcome::hugetlb_1g;
    if (p == HugePolicy::hugetlb_2m || p == HugePolicy::hugetlb_1g) {
      // Either we got what we asked for, or the report says why not.
      if (!got_hugetlb || (p == HugePolicy::hugetlb_1g && r.obtained != HugeOutcome::hugetlb_1g)) {
        EXPECT_TRUE(r.fell_back) << to_string(p);
        EXPECT_FALSE(r.reason.empty()) << to_string(p);
      }
    }
    if (r.fell_back) {
      EXPECT_FALSE(r.reason.empty());
    }
    if (p == HugePolicy::none) {
      EXPECT_EQ(r.obtained, HugeOutcome::none);
    }
    std::memset(m.data(), 1, m.size());  // whatever was obtained is usable
  }
}

INSTANTIATE_TEST_SUITE_P(AllBackings, MappingConformance, ::testing::ValuesIn(kBackends),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace mapheap
