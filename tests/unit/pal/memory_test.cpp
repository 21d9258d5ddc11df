// Unit tests for the memory part of the platform layer: map/unmap, protect,
// remap, reserve, advise, lock/unlock, sync_memory.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <linux/mman.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pal/pal.hpp"

namespace pal = mapheap::pal;

namespace {

const std::size_t kPage = pal::page_size();

// ASan and TSan replace mlock/munlock with no-ops that return 0 (the shadow
// memory would make locking pointless), so the effects of pal::lock cannot be
// seen under them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kMlockIntercepted = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kMlockIntercepted = true;
#else
constexpr bool kMlockIntercepted = false;
#endif
#else
constexpr bool kMlockIntercepted = false;
#endif

std::string temp_path(const char* tag) {
  static std::atomic<unsigned> counter{0};
  return "/var/tmp/mapheap-paltest-mem-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter++) + "-" + tag;
}

// Maps anonymous memory (private read-write by default), unmapped at scope exit.
// Transparent huge pages are turned off for it so that touching one page
// makes exactly one page present (mTHP could otherwise fault in a larger folio).
struct AnonMap {
  void* addr = nullptr;
  std::size_t len = 0;
  explicit AnonMap(std::size_t n, std::uint32_t flags = pal::kMapPrivate | pal::kMapAnonymous,
                   pal::Prot prot = pal::Prot::read_write)
      : len(n) {
    auto r = pal::map(nullptr, n, prot, flags, -1, 0);
    EXPECT_TRUE(r.ok()) << "map failed";
    if (!r) return;
    addr = r.value();
    EXPECT_TRUE(pal::advise(addr, len, pal::Advice::nohugepage).ok());
  }
  ~AnonMap() {
    if (addr != nullptr) (void)pal::unmap(addr, len);
  }
  AnonMap(const AnonMap&) = delete;
  AnonMap& operator=(const AnonMap&) = delete;
  char* bytes() const { return static_cast<char*>(addr); }
};

std::uint64_t present_pages(const void* addr, std::size_t len) {
  auto r = pal::pagemap_residency(addr, len);
  EXPECT_TRUE(r.ok());
  return r ? r->present : ~std::uint64_t{0};
}

// Writes one byte in each page.
void touch_pages(void* addr, std::size_t pages) {
  auto* p = static_cast<volatile char*>(addr);
  for (std::size_t i = 0; i < pages; ++i) p[i * kPage] = 1;
}

// Runs `fn` in a forked child and reports whether the child died instead of
// returning normally: used to prove that an access faults. Under ASan the
// child may end with ASan's SEGV report (a non-zero exit) rather than the
// signal, so any end other than a clean exit counts as a fault.
template <class Fn>
bool child_faults(Fn fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Keep a sanitizer's report of the expected fault out of the test log.
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, 2);
    fn();
    ::_exit(0);
  }
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

std::string formatted(const pal::Error& e) {
  char buf[512];
  (void)e.format(buf, sizeof(buf));
  return buf;
}

}  // namespace

TEST(PalMemory, PageSizeMatchesSysconf) {
  EXPECT_EQ(pal::page_size(), static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
}

TEST(PalMemory, MapWriteReadUnmap) {
  const std::size_t len = 4 * kPage;
  auto r =
      pal::map(nullptr, len, pal::Prot::read_write, pal::kMapPrivate | pal::kMapAnonymous, -1, 0);
  ASSERT_TRUE(r.ok()) << formatted(r.error());
  auto* p = static_cast<unsigned char*>(r.value());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % kPage, 0u);
  for (std::size_t i = 0; i < len; ++i) ASSERT_EQ(p[i], 0u);  // fresh anonymous memory is zero
  std::memset(p, 0xab, len);
  EXPECT_EQ(p[len - 1], 0xab);
  ASSERT_TRUE(pal::unmap(p, len).ok());
  // The range is gone: an access faults.
  EXPECT_TRUE(child_faults([&] { *reinterpret_cast<volatile unsigned char*>(p) = 1; }));
}

TEST(PalMemory, MapReadOnlyFaultsOnWrite) {
  AnonMap m(kPage, pal::kMapPrivate | pal::kMapAnonymous, pal::Prot::read);
  ASSERT_NE(m.addr, nullptr);
  EXPECT_EQ(*reinterpret_cast<volatile char*>(m.bytes()), 0);  // reading is allowed
  EXPECT_TRUE(child_faults([&] { *reinterpret_cast<volatile char*>(m.bytes()) = 1; }));
}

TEST(PalMemory, MapSharedAnonymousIsSharedWithChild) {
  AnonMap m(kPage, pal::kMapShared | pal::kMapAnonymous);
  ASSERT_NE(m.addr, nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    m.bytes()[0] = 'S';
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(m.bytes()[0], 'S');  // the child's store is visible: MAP_SHARED was passed
}

TEST(PalMemory, MapPrivateIsCopyOnWriteInChild) {
  AnonMap m(kPage);
  ASSERT_NE(m.addr, nullptr);
  m.bytes()[0] = 'P';
  const pid_t pid = ::fork();
  if (pid == 0) {
    m.bytes()[0] = 'C';
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_EQ(m.bytes()[0], 'P');
}

TEST(PalMemory, MapPopulateMakesPagesPresent) {
  const std::size_t pages = 16;
  AnonMap plain(pages * kPage);
  ASSERT_NE(plain.addr, nullptr);
  EXPECT_EQ(present_pages(plain.addr, plain.len), 0u);
  AnonMap populated(pages * kPage, pal::kMapPrivate | pal::kMapAnonymous | pal::kMapPopulate);
  ASSERT_NE(populated.addr, nullptr);
  EXPECT_EQ(present_pages(populated.addr, populated.len), pages);
}

TEST(PalMemory, MapFileSharedAtOffset) {
  const std::string path = temp_path("mapfile");
  auto fd = pal::open_file(path.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(pal::truncate_fd(fd.value(), 2 * kPage).ok());
  ASSERT_TRUE(pal::pwrite_all(fd.value(), "second", 6, kPage).ok());
  auto r = pal::map(nullptr, kPage, pal::Prot::read_write, pal::kMapShared, fd.value(), kPage);
  ASSERT_TRUE(r.ok()) << formatted(r.error());
  auto* p = static_cast<char*>(r.value());
  EXPECT_EQ(std::memcmp(p, "second", 6), 0);  // the offset was passed through
  std::memcpy(p, "SECOND", 6);
  char back[6];
  ASSERT_EQ(pal::pread_fd(fd.value(), back, 6, kPage).value_or(0), 6u);
  EXPECT_EQ(std::memcmp(back, "SECOND", 6), 0);
  EXPECT_TRUE(pal::unmap(p, kPage).ok());
  EXPECT_TRUE(pal::close_fd(fd.value()).ok());
  EXPECT_TRUE(pal::unlink_path(path.c_str()).ok());
}

TEST(PalMemory, MapErrors) {
  // Length zero: refused before the kernel is asked.
  auto zero =
      pal::map(nullptr, 0, pal::Prot::read_write, pal::kMapPrivate | pal::kMapAnonymous, -1, 0);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().op, pal::Op::mmap);
  EXPECT_EQ(zero.error().code, EINVAL);
  EXPECT_NE(zero.error().detail, nullptr);

  // Neither or both of shared/private.
  auto neither = pal::map(nullptr, kPage, pal::Prot::read_write, pal::kMapAnonymous, -1, 0);
  ASSERT_FALSE(neither.ok());
  EXPECT_EQ(neither.error().code, EINVAL);
  EXPECT_EQ(neither.error().op, pal::Op::mmap);
  EXPECT_EQ(neither.error().size, kPage);
  EXPECT_NE(neither.error().detail, nullptr);
  auto both = pal::map(nullptr, kPage, pal::Prot::read_write,
                       pal::kMapShared | pal::kMapPrivate | pal::kMapAnonymous, -1, 0);
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.error().code, EINVAL);
  EXPECT_EQ(both.error().op, pal::Op::mmap);

  // A file mapping of a bad descriptor: the kernel's error, with the request.
  auto badfd = pal::map(nullptr, kPage, pal::Prot::read, pal::kMapShared, -1, 3 * kPage);
  ASSERT_FALSE(badfd.ok());
  EXPECT_EQ(badfd.error().code, EBADF);
  EXPECT_EQ(badfd.error().size, kPage);
  EXPECT_EQ(badfd.error().offset, 3 * kPage);
  EXPECT_EQ(badfd.error().flags, static_cast<std::uint64_t>(MAP_SHARED));
  EXPECT_EQ(badfd.error().extra, static_cast<std::uint32_t>(PROT_READ));
  const std::string s = formatted(badfd.error());
  EXPECT_NE(s.find("mmap(size=" + std::to_string(kPage) + ", prot=PROT_READ, flags=MAP_SHARED"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("EBADF"), std::string::npos) << s;
}

TEST(PalMemory, MapHuge2M) {
  const std::size_t len = pal::kHuge2M;
  auto r = pal::map(nullptr, len, pal::Prot::read_write,
                    pal::kMapPrivate | pal::kMapAnonymous | pal::kMapHuge2M, -1, 0);
  if (pal::huge_pages_free(pal::kHuge2M) == 0) {
    // No hugetlb pages reserved: the kernel must refuse, and the error must
    // point the user at the pool.
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().op, pal::Op::mmap);
    EXPECT_EQ(r.error().code, ENOMEM);
    EXPECT_EQ(r.error().size, len);
    EXPECT_EQ(r.error().flags & (MAP_HUGETLB | MAP_HUGE_2MB),
              static_cast<std::uint64_t>(MAP_HUGETLB | MAP_HUGE_2MB));
    ASSERT_NE(r.error().detail, nullptr);
    EXPECT_NE(std::strstr(r.error().detail, "HugePages"), nullptr) << r.error().detail;
    const std::string s = formatted(r.error());
    EXPECT_NE(s.find("MAP_HUGE_2MB|MAP_HUGETLB"), std::string::npos) << s;
  } else {
    ASSERT_TRUE(r.ok()) << formatted(r.error());
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(r.value()) % pal::kHuge2M, 0u);
    std::memset(r.value(), 1, len);
    EXPECT_TRUE(pal::unmap(r.value(), len).ok());
  }
}

TEST(PalMemory, MapHuge1G) {
  const std::size_t len = pal::kHuge1G;
  auto r = pal::map(nullptr, len, pal::Prot::read_write,
                    pal::kMapPrivate | pal::kMapAnonymous | pal::kMapHuge1G, -1, 0);
  if (pal::huge_pages_free(pal::kHuge1G) == 0) {
    ASSERT_FALSE(r.ok());
    // ENOMEM when the 1 GiB pool exists but is empty; EINVAL when the kernel
    // offers no 1 GiB pages at all.
    EXPECT_TRUE(r.error().code == ENOMEM || r.error().code == EINVAL) << r.error().code;
    EXPECT_EQ(r.error().op, pal::Op::mmap);
    if (r.error().code == ENOMEM) {
      ASSERT_NE(r.error().detail, nullptr);
      EXPECT_NE(std::strstr(r.error().detail, "HugePages"), nullptr);
    }
  } else {
    ASSERT_TRUE(r.ok()) << formatted(r.error());
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(r.value()) % pal::kHuge1G, 0u);
    static_cast<volatile char*>(r.value())[0] = 1;
    EXPECT_TRUE(pal::unmap(r.value(), len).ok());
  }
}

TEST(PalMemory, UnmapErrors) {
  AnonMap m(2 * kPage);
  ASSERT_NE(m.addr, nullptr);
  auto s = pal::unmap(m.bytes() + 1, kPage);  // munmap needs a page-aligned address
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::munmap);
  EXPECT_EQ(s.error().code, EINVAL);
  EXPECT_EQ(s.error().size, kPage);
  auto z = pal::unmap(m.addr, 0);
  ASSERT_FALSE(z.ok());
  EXPECT_EQ(z.error().code, EINVAL);
}

TEST(PalMemory, ReserveIsAlignedAndInaccessible) {
  for (std::size_t align : {std::size_t{4096}, pal::kHuge2M, pal::kHuge1G}) {
    const std::size_t len = 4 * pal::kHuge2M;
    auto r = pal::reserve(len, align);
    ASSERT_TRUE(r.ok()) << "align " << align << ": " << formatted(r.error());
    const auto addr = reinterpret_cast<std::uintptr_t>(r.value());
    EXPECT_EQ(addr % align, 0u) << "align " << align;
    EXPECT_EQ(present_pages(r.value(), len), 0u);  // nothing is committed
    // PROT_NONE: both ends of the reservation fault.
    auto* first = static_cast<volatile char*>(r.value());
    auto* last = first + len - 1;
    EXPECT_TRUE(child_faults([&] { (void)*first; })) << "align " << align;
    EXPECT_TRUE(child_faults([&] { (void)*last; })) << "align " << align;
    // reserve() over-reserves by align - page and must unmap the slack on
    // both sides. Slack left mapped would still belong to the reservation's
    // VMA (one mmap call), so the VMA must be exactly [addr, addr + len).
    // (An unrelated never-touched PROT_NONE MAP_NORESERVE neighbour could in
    // theory merge with it; nothing in this test binary leaves one behind.)
    auto vma = pal::smaps_range(r.value(), len);
    ASSERT_TRUE(vma.ok());
    EXPECT_EQ(vma->vmas, 1u) << "align " << align;
    EXPECT_EQ(vma->size, len) << "alignment slack left mapped, align " << align;
    EXPECT_EQ(vma->rss, 0u);
    EXPECT_TRUE(pal::unmap(r.value(), len).ok());
  }
}

TEST(PalMemory, ReserveBadArguments) {
  auto zero = pal::reserve(0, kPage);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().op, pal::Op::mmap);
  EXPECT_EQ(zero.error().code, EINVAL);

  auto odd_len = pal::reserve(kPage + 1, kPage);
  ASSERT_FALSE(odd_len.ok());
  EXPECT_EQ(odd_len.error().code, EINVAL);
  EXPECT_EQ(odd_len.error().size, kPage + 1);

  for (std::size_t align : {std::size_t{0}, std::size_t{3}, 3 * kPage, kPage / 2}) {
    auto bad_align = pal::reserve(4 * kPage, align);  // not a power of two of >= a page
    ASSERT_FALSE(bad_align.ok()) << align;
    EXPECT_EQ(bad_align.error().code, EINVAL) << align;
    ASSERT_NE(bad_align.error().detail, nullptr);
    EXPECT_NE(std::string(bad_align.error().detail).find("alignment"), std::string::npos);
  }

  // Length plus alignment slack overflows the address space.
  auto huge = pal::reserve(SIZE_MAX - kPage + 1, pal::kHuge2M);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().op, pal::Op::mmap);
  EXPECT_EQ(huge.error().code, ENOMEM);
}

TEST(PalMemory, ProtectThenWrite) {
  const std::size_t len = 4 * kPage;
  auto r = pal::reserve(len, kPage);
  ASSERT_TRUE(r.ok());
  auto* p = static_cast<char*>(r.value());
  ASSERT_TRUE(pal::protect(p, 2 * kPage, pal::Prot::read_write).ok());
  std::memset(p, 0x5a, 2 * kPage);
  EXPECT_EQ(p[2 * kPage - 1], 0x5a);
  // Only the protected part became accessible.
  EXPECT_TRUE(child_faults([&] { static_cast<volatile char*>(p)[2 * kPage] = 1; }));
  // Read-only: reads work, writes fault.
  ASSERT_TRUE(pal::protect(p, kPage, pal::Prot::read).ok());
  EXPECT_EQ(static_cast<volatile char*>(p)[0], 0x5a);
  EXPECT_TRUE(child_faults([&] { static_cast<volatile char*>(p)[0] = 1; }));
  ASSERT_TRUE(pal::protect(p, kPage, pal::Prot::none).ok());
  EXPECT_TRUE(child_faults([&] { (void)static_cast<volatile char*>(p)[0]; }));
  EXPECT_TRUE(pal::unmap(p, len).ok());
}

TEST(PalMemory, ProtectErrors) {
  AnonMap m(kPage);
  ASSERT_NE(m.addr, nullptr);
  auto s = pal::protect(m.bytes() + 1, kPage, pal::Prot::read);  // unaligned
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::mprotect);
  EXPECT_EQ(s.error().code, EINVAL);
  EXPECT_EQ(s.error().size, kPage);
  EXPECT_EQ(s.error().extra, static_cast<std::uint32_t>(PROT_READ));

  // Write access to a shared mapping of a file opened read-only: EACCES.
  const std::string path = temp_path("ro");
  auto wfd = pal::open_file(path.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(wfd.ok());
  ASSERT_TRUE(pal::truncate_fd(wfd.value(), kPage).ok());
  auto rfd = pal::open_file(path.c_str(), pal::kOpenRead);
  ASSERT_TRUE(rfd.ok());
  auto mr = pal::map(nullptr, kPage, pal::Prot::read, pal::kMapShared, rfd.value(), 0);
  ASSERT_TRUE(mr.ok());
  auto w = pal::protect(mr.value(), kPage, pal::Prot::read_write);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code, EACCES);
  EXPECT_NE(formatted(w.error()).find("prot=PROT_READ|PROT_WRITE"), std::string::npos);
  EXPECT_TRUE(pal::unmap(mr.value(), kPage).ok());
  for (int f : {wfd.value(), rfd.value()}) EXPECT_TRUE(pal::close_fd(f).ok());
  EXPECT_TRUE(pal::unlink_path(path.c_str()).ok());
}

TEST(PalMemory, RemapGrowsKeepingContents) {
  auto r =
      pal::map(nullptr, kPage, pal::Prot::read_write, pal::kMapPrivate | pal::kMapAnonymous, -1, 0);
  ASSERT_TRUE(r.ok());
  std::memcpy(r.value(), "remap", 5);
  auto g = pal::remap(r.value(), kPage, 8 * kPage, /*may_move=*/true);
  ASSERT_TRUE(g.ok()) << formatted(g.error());
  auto* p = static_cast<char*>(g.value());
  EXPECT_EQ(std::memcmp(p, "remap", 5), 0);
  p[8 * kPage - 1] = 'z';  // the grown part is accessible
  EXPECT_EQ(p[7 * kPage], 0);
  // Shrinking never moves.
  auto s = pal::remap(p, 8 * kPage, 2 * kPage, /*may_move=*/false);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.value(), static_cast<void*>(p));
  EXPECT_EQ(std::memcmp(p, "remap", 5), 0);
  EXPECT_TRUE(pal::unmap(p, 2 * kPage).ok());
}

TEST(PalMemory, RemapInPlaceGrowthBlockedFails) {
  // One page mapped (kMapFixed) at the start of our own 3-page reservation:
  // the rest of the reservation blocks growth in place, so without may_move
  // the kernel must refuse.
  auto res = pal::reserve(3 * kPage, kPage);
  ASSERT_TRUE(res.ok());
  auto m = pal::map(res.value(), kPage, pal::Prot::read_write,
                    pal::kMapPrivate | pal::kMapAnonymous | pal::kMapFixed, -1, 0);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m.value(), res.value());  // kMapFixed places it exactly
  auto g = pal::remap(m.value(), kPage, 2 * kPage, /*may_move=*/false);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.error().op, pal::Op::mremap);
  EXPECT_EQ(g.error().code, ENOMEM);
  EXPECT_EQ(g.error().size, 2 * kPage);
  // With may_move it succeeds, elsewhere.
  auto moved = pal::remap(m.value(), kPage, 2 * kPage, /*may_move=*/true);
  ASSERT_TRUE(moved.ok());
  EXPECT_NE(moved.value(), res.value());
  EXPECT_TRUE(pal::unmap(moved.value(), 2 * kPage).ok());
  EXPECT_TRUE(pal::unmap(static_cast<char*>(res.value()) + kPage, 2 * kPage).ok());
}

TEST(PalMemory, RemapUnmappedFails) {
  auto res = pal::reserve(kPage, kPage);
  ASSERT_TRUE(res.ok());
  ASSERT_TRUE(pal::unmap(res.value(), kPage).ok());
  auto g = pal::remap(res.value(), kPage, 2 * kPage, true);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.error().op, pal::Op::mremap);
  EXPECT_EQ(g.error().code, EFAULT);
}

TEST(PalMemory, AdviceNames) {
  const struct {
    pal::Advice a;
    const char* name;
  } kNames[] = {
      {pal::Advice::normal, "MADV_NORMAL"},
      {pal::Advice::random, "MADV_RANDOM"},
      {pal::Advice::sequential, "MADV_SEQUENTIAL"},
      {pal::Advice::willneed, "MADV_WILLNEED"},
      {pal::Advice::dontneed, "MADV_DONTNEED"},
      {pal::Advice::free_lazy, "MADV_FREE"},
      {pal::Advice::remove, "MADV_REMOVE"},
      {pal::Advice::hugepage, "MADV_HUGEPAGE"},
      {pal::Advice::nohugepage, "MADV_NOHUGEPAGE"},
      {pal::Advice::populate_read, "MADV_POPULATE_READ"},
      {pal::Advice::populate_write, "MADV_POPULATE_WRITE"},
      {pal::Advice::dontdump, "MADV_DONTDUMP"},
      {pal::Advice::cold, "MADV_COLD"},
      {pal::Advice::pageout, "MADV_PAGEOUT"},
  };
  for (const auto& n : kNames) EXPECT_STREQ(pal::advice_name(n.a), n.name);
  EXPECT_STREQ(pal::advice_name(static_cast<pal::Advice>(200)), "MADV_?");
}

TEST(PalMemory, AdviceHintsSucceedOnPrivateAnonymous) {
  // Hints with no effect a test can observe must at least be accepted by the
  // kernel (a wrong constant would give EINVAL) and keep the data.
  const std::size_t len = 16 * kPage;
  for (pal::Advice a : {pal::Advice::normal, pal::Advice::random, pal::Advice::sequential,
                        pal::Advice::willneed, pal::Advice::free_lazy, pal::Advice::dontdump,
                        pal::Advice::cold, pal::Advice::pageout, pal::Advice::nohugepage}) {
    AnonMap m(len);
    ASSERT_NE(m.addr, nullptr);
    touch_pages(m.addr, len / kPage);
    auto s = pal::advise(m.addr, len, a);
    EXPECT_TRUE(s.ok()) << pal::advice_name(a) << ": " << formatted(s.error());
    // MADV_FREE may drop the data once the kernel reclaims; the others never
    // (PAGEOUT swaps anonymous pages out or keeps them).
    if (a != pal::Advice::free_lazy) {
      EXPECT_EQ(m.bytes()[0], 1) << pal::advice_name(a);
    }
  }
}

TEST(PalMemory, AdviceHintsSucceedOnFileMapping) {
  const std::string path = temp_path("willneed");
  auto fd = pal::open_file(path.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(pal::truncate_fd(fd.value(), 16 * kPage).ok());
  auto r = pal::map(nullptr, 16 * kPage, pal::Prot::read, pal::kMapShared, fd.value(), 0);
  ASSERT_TRUE(r.ok());
  for (pal::Advice a : {pal::Advice::willneed, pal::Advice::random, pal::Advice::sequential,
                        pal::Advice::cold, pal::Advice::pageout, pal::Advice::normal}) {
    auto s = pal::advise(r.value(), 16 * kPage, a);
    EXPECT_TRUE(s.ok()) << pal::advice_name(a) << ": " << formatted(s.error());
  }
  EXPECT_TRUE(pal::unmap(r.value(), 16 * kPage).ok());
  EXPECT_TRUE(pal::close_fd(fd.value()).ok());
  EXPECT_TRUE(pal::unlink_path(path.c_str()).ok());
}

TEST(PalMemory, AdviceDontneedDropsPrivatePages) {
  const std::size_t pages = 8;
  AnonMap m(pages * kPage);
  ASSERT_NE(m.addr, nullptr);
  std::memset(m.addr, 0x77, m.len);
  EXPECT_EQ(present_pages(m.addr, m.len), pages);
  ASSERT_TRUE(pal::advise(m.addr, m.len, pal::Advice::dontneed).ok());
  EXPECT_EQ(present_pages(m.addr, m.len), 0u);
  EXPECT_EQ(m.bytes()[0], 0);  // the next touch reads zeros
  EXPECT_EQ(m.bytes()[m.len - 1], 0);
}

TEST(PalMemory, AdviceRemovePunchesSharedMemory) {
  const std::size_t pages = 4;
  AnonMap m(pages * kPage, pal::kMapShared | pal::kMapAnonymous);
  ASSERT_NE(m.addr, nullptr);
  std::memset(m.addr, 0x42, m.len);
  ASSERT_TRUE(pal::advise(m.addr, m.len, pal::Advice::remove).ok());
  EXPECT_EQ(present_pages(m.addr, m.len), 0u);
  EXPECT_EQ(m.bytes()[0], 0);  // the shmem backing store was punched, not just unmapped
}

TEST(PalMemory, AdviceRemoveOnPrivateMemoryFails) {
  AnonMap m(kPage);
  ASSERT_NE(m.addr, nullptr);
  auto s = pal::advise(m.addr, m.len, pal::Advice::remove);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::madvise);
  EXPECT_EQ(s.error().code, EINVAL);
  EXPECT_EQ(s.error().size, kPage);
  EXPECT_EQ(s.error().flags, static_cast<std::uint64_t>(pal::Advice::remove));
  EXPECT_NE(formatted(s.error()).find("advice=MADV_REMOVE"), std::string::npos);
}

TEST(PalMemory, AdvicePopulateMakesPagesPresent) {
  const std::size_t pages = 8;
  for (pal::Advice a : {pal::Advice::populate_read, pal::Advice::populate_write}) {
    AnonMap m(pages * kPage);
    ASSERT_NE(m.addr, nullptr);
    EXPECT_EQ(present_pages(m.addr, m.len), 0u);
    auto s = pal::advise(m.addr, m.len, a);
    ASSERT_TRUE(s.ok()) << formatted(s.error());
    // populate_read maps the shared zero page, populate_write private pages:
    // both are present in the page table.
    EXPECT_EQ(present_pages(m.addr, m.len), pages) << pal::advice_name(a);
    if (a == pal::Advice::populate_write) {
      auto r = pal::pagemap_residency(m.addr, m.len);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->exclusive, pages);  // private writable pages, not the zero page
    }
  }
}

TEST(PalMemory, AdvicePopulateWriteOnReadOnlyMappingFails) {
  AnonMap m(kPage, pal::kMapPrivate | pal::kMapAnonymous, pal::Prot::read);
  ASSERT_NE(m.addr, nullptr);
  auto s = pal::advise(m.addr, m.len, pal::Advice::populate_write);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::madvise);
  EXPECT_EQ(s.error().code, EINVAL);
  EXPECT_NE(s.error().detail, nullptr);
}

TEST(PalMemory, AdviceOnUnmappedRangeFails) {
  auto res = pal::reserve(kPage, kPage);
  ASSERT_TRUE(res.ok());
  ASSERT_TRUE(pal::unmap(res.value(), kPage).ok());
  auto s = pal::advise(res.value(), kPage, pal::Advice::willneed);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().op, pal::Op::madvise);
  EXPECT_EQ(s.error().code, ENOMEM);
  EXPECT_EQ(s.error().flags, static_cast<std::uint64_t>(pal::Advice::willneed));
}

TEST(PalMemory, AdviceHugepageMakesRangeThpEligible) {
  const pal::SystemInfo info = pal::system_info();
  if (info.thp_enabled == pal::ThpMode::never || info.thp_enabled == pal::ThpMode::unknown)
    GTEST_SKIP() << "transparent huge pages are " << pal::thp_mode_name(info.thp_enabled);
  const std::size_t len = 2 * pal::kHuge2M;
  auto r = pal::reserve(len, pal::kHuge2M);
  ASSERT_TRUE(r.ok());
  auto m = pal::map(r.value(), len, pal::Prot::read_write,
                    pal::kMapPrivate | pal::kMapAnonymous | pal::kMapFixed, -1, 0);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(pal::advise(m.value(), len, pal::Advice::hugepage).ok());
  auto on = pal::smaps_range(m.value(), len);
  ASSERT_TRUE(on.ok());
  EXPECT_TRUE(on->thp_eligible);
  ASSERT_TRUE(pal::advise(m.value(), len, pal::Advice::nohugepage).ok());
  auto off = pal::smaps_range(m.value(), len);
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->thp_eligible);
  EXPECT_TRUE(pal::unmap(m.value(), len).ok());
}

TEST(PalMemory, LockMakesPagesPresentAndLocked) {
  const std::size_t pages = 8;
  AnonMap m(pages * kPage);
  ASSERT_NE(m.addr, nullptr);
  EXPECT_EQ(present_pages(m.addr, m.len), 0u);
  auto s = pal::lock(m.addr, m.len);
  ASSERT_TRUE(s.ok()) << formatted(s.error());
  if (kMlockIntercepted) {
    EXPECT_TRUE(pal::unlock(m.addr, m.len).ok());
    GTEST_SKIP() << "the sanitizer turns mlock into a no-op";
  }
  EXPECT_EQ(present_pages(m.addr, m.len), pages);  // mlock faults everything in
  auto locked = pal::smaps_range(m.addr, m.len);
  ASSERT_TRUE(locked.ok());
  EXPECT_GE(locked->locked, m.len);
  ASSERT_TRUE(pal::unlock(m.addr, m.len).ok());
  auto unlocked = pal::smaps_range(m.addr, m.len);
  ASSERT_TRUE(unlocked.ok());
  EXPECT_EQ(unlocked->locked, 0u);
}

TEST(PalMemory, LockUnlockErrors) {
  if (kMlockIntercepted) GTEST_SKIP() << "the sanitizer turns mlock/munlock into no-ops";
  auto res = pal::reserve(2 * kPage, kPage);
  ASSERT_TRUE(res.ok());
  ASSERT_TRUE(pal::unmap(res.value(), 2 * kPage).ok());
  auto l = pal::lock(res.value(), 2 * kPage);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.error().op, pal::Op::mlock);
  EXPECT_EQ(l.error().code, ENOMEM);
  EXPECT_EQ(l.error().size, 2 * kPage);
  auto u = pal::unlock(res.value(), 2 * kPage);
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.error().op, pal::Op::munlock);
  EXPECT_EQ(u.error().code, ENOMEM);
  EXPECT_EQ(u.error().size, 2 * kPage);
}

TEST(PalMemory, SyncMemoryWritesBackSharedFileMapping) {
  const std::string path = temp_path("msync");
  const std::size_t len = 16 * kPage;
  auto fd = pal::open_file(path.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(pal::truncate_fd(fd.value(), len).ok());
  auto r = pal::map(nullptr, len, pal::Prot::read_write, pal::kMapShared, fd.value(), 0);
  ASSERT_TRUE(r.ok());
  std::memset(r.value(), 'm', len);
  EXPECT_TRUE(pal::sync_memory(r.value(), len, /*async=*/true).ok());
  ASSERT_TRUE(pal::sync_memory(r.value(), len).ok());
  ASSERT_TRUE(pal::unmap(r.value(), len).ok());
  // After MS_SYNC the pages are clean, so POSIX_FADV_DONTNEED (called raw,
  // without an fdatasync of its own) evicts them all. Dirty pages would stay.
  ASSERT_EQ(::posix_fadvise(fd.value(), 0, 0, POSIX_FADV_DONTNEED), 0);
  void* probe = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.value(), 0);
  ASSERT_NE(probe, MAP_FAILED);
  unsigned char vec[16] = {};
  ASSERT_EQ(::mincore(probe, len, vec), 0);
  int resident = 0;
  for (unsigned char v : vec) resident += v & 1;
  EXPECT_EQ(resident, 0) << "pages still cached: msync(MS_SYNC) did not write them back";
  EXPECT_EQ(static_cast<char*>(probe)[len - 1], 'm');  // and the data came back from disk
  ::munmap(probe, len);
  EXPECT_TRUE(pal::close_fd(fd.value()).ok());
  EXPECT_TRUE(pal::unlink_path(path.c_str()).ok());
}

TEST(PalMemory, SyncMemoryErrors) {
  AnonMap m(kPage, pal::kMapShared | pal::kMapAnonymous);
  ASSERT_NE(m.addr, nullptr);
  auto unaligned = pal::sync_memory(m.bytes() + 1, 16);
  ASSERT_FALSE(unaligned.ok());
  EXPECT_EQ(unaligned.error().op, pal::Op::msync);
  EXPECT_EQ(unaligned.error().code, EINVAL);
  EXPECT_EQ(unaligned.error().size, 16u);
  auto res = pal::reserve(kPage, kPage);
  ASSERT_TRUE(res.ok());
  ASSERT_TRUE(pal::unmap(res.value(), kPage).ok());
  auto unmapped = pal::sync_memory(res.value(), kPage, true);
  ASSERT_FALSE(unmapped.ok());
  EXPECT_EQ(unmapped.error().op, pal::Op::msync);
  EXPECT_EQ(unmapped.error().code, ENOMEM);
}
