// Unit tests for what the platform layer reads from /proc and /sys: system
// info, huge page pools, pagemap residency, smaps totals (parser and real),
// I/O counters, block device statistics, page cache dropping.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
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
constexpr std::uint64_t kKiB = 1024;
constexpr std::size_t kMiB = std::size_t{1} << 20;

std::string temp_path(const char* tag) {
  static std::atomic<unsigned> counter{0};
  return "/var/tmp/mapheap-paltest-proc-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter++) + "-" + tag;
}

// Reads a whole small text file, independently of pal ("" if unreadable).
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string bracketed_word(const std::string& text) {
  const auto open = text.find('[');
  const auto close = text.find(']', open);
  if (open == std::string::npos || close == std::string::npos) return "";
  return text.substr(open + 1, close - open - 1);
}

std::uint64_t read_number(const std::string& path) {
  return std::stoull(slurp(path));
}

std::string formatted(const pal::Error& e) {
  char buf[512];
  (void)e.format(buf, sizeof(buf));
  return buf;
}

// An anonymous mapping that is exactly one VMA: it is placed inside a
// PROT_NONE reservation one page larger on each side, and its different
// protection keeps the kernel from merging it with the guards. THP is off so
// that touching one page makes exactly one page resident.
struct IsolatedMap {
  char* base = nullptr;  // the reservation
  char* addr = nullptr;
  std::size_t len = 0;
  IsolatedMap(std::size_t pages, std::uint32_t sharing) : len(pages * kPage) {
    auto r = pal::reserve(len + 2 * kPage, kPage);
    EXPECT_TRUE(r.ok());
    if (!r) return;
    base = static_cast<char*>(r.value());
    auto m = pal::map(base + kPage, len, pal::Prot::read_write,
                      sharing | pal::kMapAnonymous | pal::kMapFixed, -1, 0);
    EXPECT_TRUE(m.ok());
    if (!m) return;
    addr = static_cast<char*>(m.value());
    EXPECT_TRUE(pal::advise(addr, len, pal::Advice::nohugepage).ok());
  }
  ~IsolatedMap() {
    if (base != nullptr) (void)pal::unmap(base, len + 2 * kPage);
  }
  IsolatedMap(const IsolatedMap&) = delete;
  IsolatedMap& operator=(const IsolatedMap&) = delete;
  void touch(std::size_t page) { static_cast<volatile char*>(addr)[page * kPage] = 1; }
};

// Writes `len` bytes of a pattern to a new /var/tmp file and fdatasyncs it.
// Returns the descriptor (the file is already unlinked).
int write_synced_file(std::size_t len) {
  const std::string path = temp_path("io");
  auto fd = pal::open_file(path.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  EXPECT_TRUE(fd.ok());
  if (!fd) return -1;
  (void)pal::unlink_path(path.c_str());
  std::vector<char> data(len, 'w');
  EXPECT_TRUE(pal::pwrite_all(fd.value(), data.data(), len, 0).ok());
  EXPECT_TRUE(pal::datasync(fd.value()).ok());
  return fd.value();
}

// Feeds a whole text, line by line, to a parser.
pal::SmapsTotals parse(std::uintptr_t lo, std::uintptr_t hi, const std::string& text) {
  pal::SmapsParser parser(lo, hi);
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) parser.feed_line(line.data(), line.size());
  return parser.totals();
}

// One smaps VMA block whose fields all carry a distinct multiple of `unit` kB,
// so that a field summed into the wrong total shows.
std::string vma_block(const char* header, std::uint64_t unit, int thp_eligible) {
  std::ostringstream o;
  o << header << "\n"
    << "Size:               " << 999999 * unit << " kB\n"  // ignored: size comes from the header
    << "KernelPageSize:        4 kB\n"
    << "MMUPageSize:           4 kB\n"
    << "Rss:                " << 1 * unit << " kB\n"
    << "Pss:                " << 2 * unit << " kB\n"
    << "Pss_Dirty:          " << 77 * unit << " kB\n"  // a prefix of a known key is not it
    << "Shared_Clean:       " << 3 * unit << " kB\n"
    << "Shared_Dirty:       " << 4 * unit << " kB\n"
    << "Private_Clean:      " << 5 * unit << " kB\n"
    << "Private_Dirty:      " << 6 * unit << " kB\n"
    << "Referenced:         " << 88 * unit << " kB\n"
    << "Anonymous:          " << 7 * unit << " kB\n"
    << "KSM:                   0 kB\n"
    << "LazyFree:              0 kB\n"
    << "AnonHugePages:      " << 8 * unit << " kB\n"
    << "ShmemPmdMapped:     " << 9 * unit << " kB\n"
    << "FilePmdMapped:      " << 10 * unit << " kB\n"
    << "Shared_Hugetlb:        0 kB\n"
    << "Private_Hugetlb:       0 kB\n"
    << "Swap:               " << 11 * unit << " kB\n"
    << "SwapPss:            " << 66 * unit << " kB\n"
    << "Locked:             " << 12 * unit << " kB\n"
    << "THPeligible:    " << thp_eligible << "\n"
    << "ProtectionKey:         0\n"
    << "VmFlags: rd wr mr mw me ac sd\n";
  return o.str();
}

}  // namespace

// ---------------------------------------------------------------- system info

TEST(PalProc, SystemInfoMatchesIndependentReads) {
  const pal::SystemInfo info = pal::system_info();
  EXPECT_EQ(info.page_size, static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
  EXPECT_GE(info.cpus_online, 1u);
  EXPECT_EQ(info.cpus_online, static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));

  const std::string thp = bracketed_word(slurp("/sys/kernel/mm/transparent_hugepage/enabled"));
  if (thp.empty()) {
    EXPECT_EQ(info.thp_enabled, pal::ThpMode::unknown);
  } else {
    EXPECT_EQ(thp, pal::thp_mode_name(info.thp_enabled));
  }
  const std::string defrag = bracketed_word(slurp("/sys/kernel/mm/transparent_hugepage/defrag"));
  if (defrag == "always" || defrag == "madvise" || defrag == "never") {
    EXPECT_EQ(defrag, pal::thp_mode_name(info.thp_defrag));
  } else {
    EXPECT_EQ(info.thp_defrag, pal::ThpMode::unknown);  // defer, defer+madvise, or absent
  }
  EXPECT_EQ(bracketed_word(slurp("/sys/kernel/mm/transparent_hugepage/shmem_enabled")),
            info.thp_shmem);

  EXPECT_EQ(info.overcommit_memory,
            static_cast<int>(read_number("/proc/sys/vm/overcommit_memory")));
  EXPECT_EQ(info.overcommit_ratio, static_cast<int>(read_number("/proc/sys/vm/overcommit_ratio")));

  struct utsname u {};
  ASSERT_EQ(::uname(&u), 0);
  EXPECT_GT(std::strlen(info.kernel), 0u);
  EXPECT_EQ(std::string(u.release).substr(0, sizeof(info.kernel) - 1), info.kernel);

  EXPECT_EQ(info.rseq_registered, __rseq_size > 0);
  EXPECT_EQ(info.rseq_size, __rseq_size);
  EXPECT_TRUE(info.getcpu_available);
  EXPECT_TRUE(info.memfd_available);

  // MemTotal is fixed for the machine: sysinfo() reports the same total.
  struct sysinfo si {};
  ASSERT_EQ(::sysinfo(&si), 0);
  EXPECT_EQ(info.memory_total, static_cast<std::uint64_t>(si.totalram) * si.mem_unit);
  EXPECT_GT(info.memory_available, 0u);
  EXPECT_LE(info.memory_available, info.memory_total);
}

TEST(PalProc, ResourceUsageCountsFaultsAndPeakRss) {
  auto before = pal::resource_usage();
  ASSERT_TRUE(before.ok());
  // Touch 32 MiB of fresh memory: at least one minor fault per 2 MiB (THP) and
  // a peak RSS of at least that much.
  const std::size_t len = std::size_t{32} << 20;
  auto m =
      pal::map(nullptr, len, pal::Prot::read_write, pal::kMapPrivate | pal::kMapAnonymous, -1, 0);
  ASSERT_TRUE(m.ok());
  std::memset(m.value(), 1, len);
  auto after = pal::resource_usage();
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->minor_faults, before->minor_faults + len / pal::kHuge2M);
  EXPECT_GE(after->max_rss, len);
  EXPECT_GE(after->user_ns + after->system_ns, before->user_ns + before->system_ns);
  ASSERT_TRUE(pal::unmap(m.value(), len).ok());

  // A waited-for child's peak shows in RUSAGE_CHILDREN.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) ::_exit(1);
    std::memset(p, 1, len);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  auto kids = pal::resource_usage(true);
  ASSERT_TRUE(kids.ok());
  EXPECT_GE(kids->max_rss, len);
}

TEST(PalProc, ThpSettingsMatchSysfsAndSystemInfo) {
  const pal::ThpSettings thp = pal::thp_settings();
  const std::string enabled = bracketed_word(slurp("/sys/kernel/mm/transparent_hugepage/enabled"));
  if (enabled.empty()) {
    EXPECT_EQ(thp.enabled, pal::ThpMode::unknown);
  } else {
    EXPECT_EQ(enabled, pal::thp_mode_name(thp.enabled));
  }
  EXPECT_EQ(bracketed_word(slurp("/sys/kernel/mm/transparent_hugepage/shmem_enabled")), thp.shmem);
  const pal::SystemInfo info = pal::system_info();
  EXPECT_EQ(info.thp_enabled, thp.enabled);
  EXPECT_STREQ(info.thp_shmem, thp.shmem);
  // The 2 MiB switch overrides the top-level one unless it says "inherit".
  const std::string pmd =
      bracketed_word(slurp("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled"));
  if (pmd.empty() || pmd == "inherit") {
    EXPECT_EQ(thp.pmd_enabled, pal::ThpMode::unknown);
    EXPECT_EQ(thp.effective(), thp.enabled);
  } else {
    EXPECT_EQ(pmd, pal::thp_mode_name(thp.pmd_enabled));
    EXPECT_EQ(thp.effective(), thp.pmd_enabled);
  }
}

TEST(PalProc, HugePagesAvailableIsFreeMinusReserved) {
  for (std::size_t size : {pal::kHuge2M, pal::kHuge1G}) {
    const std::string dir =
        "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(size / 1024) + "kB/";
    if (slurp(dir + "free_hugepages").empty()) {
      EXPECT_EQ(pal::huge_pages_available(size), 0u);
      continue;
    }
    const std::uint64_t free = read_number(dir + "free_hugepages");
    const std::uint64_t resv = read_number(dir + "resv_hugepages");
    EXPECT_EQ(pal::huge_pages_available(size), free > resv ? free - resv : 0) << size;
    EXPECT_LE(pal::huge_pages_available(size), pal::huge_pages_free(size));
  }
  EXPECT_EQ(pal::huge_pages_available(12345), 0u);  // a size the kernel does not offer
}

TEST(PalProc, SystemInfoHugePools) {
  const pal::SystemInfo info = pal::system_info();
  bool has_2m = false;
  for (const pal::HugePagePool& pool : info.huge) {
    if (pool.page_size == 0) continue;
    const std::string dir =
        "/sys/kernel/mm/hugepages/hugepages-" + std::to_string(pool.page_size / 1024) + "kB/";
    EXPECT_EQ(pool.total, read_number(dir + "nr_hugepages")) << dir;
    EXPECT_EQ(pool.free, read_number(dir + "free_hugepages")) << dir;
    EXPECT_EQ(pool.reserved, read_number(dir + "resv_hugepages")) << dir;
    EXPECT_EQ(pool.free, pal::huge_pages_free(pool.page_size)) << dir;
    if (pool.page_size == pal::kHuge2M) has_2m = true;
  }
  if (::access("/sys/kernel/mm/hugepages/hugepages-2048kB", F_OK) == 0) {
    EXPECT_TRUE(has_2m) << "the 2 MiB pool is missing from system_info().huge";
  }
}

TEST(PalProc, HugePagesFreeOfUnofferedSizeIsZero) {
  EXPECT_EQ(pal::huge_pages_free(3 * kMiB), 0u);
  EXPECT_EQ(pal::huge_pages_free(0), 0u);
}

TEST(PalProc, ThpModeNames) {
  EXPECT_STREQ(pal::thp_mode_name(pal::ThpMode::always), "always");
  EXPECT_STREQ(pal::thp_mode_name(pal::ThpMode::madvise), "madvise");
  EXPECT_STREQ(pal::thp_mode_name(pal::ThpMode::never), "never");
  EXPECT_STREQ(pal::thp_mode_name(pal::ThpMode::unknown), "unknown");
}

// ---------------------------------------------------------------- pagemap

TEST(PalProc, PagemapResidencyFollowsTouches) {
  const std::size_t pages = 16;
  IsolatedMap m(pages, pal::kMapPrivate);
  ASSERT_NE(m.addr, nullptr);
  auto before = pal::pagemap_residency(m.addr, m.len);
  ASSERT_TRUE(before.ok()) << formatted(before.error());
  EXPECT_EQ(before->pages, pages);
  EXPECT_EQ(before->present, 0u);
  EXPECT_EQ(before->first_pfn, 0u);

  const std::size_t touched[] = {0, 3, 7, 15};
  for (std::size_t i : touched) m.touch(i);
  auto after = pal::pagemap_residency(m.addr, m.len);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->pages, pages);
  EXPECT_EQ(after->present, std::size(touched));
  EXPECT_EQ(after->exclusive, std::size(touched));
  EXPECT_EQ(after->swapped, 0u);
  EXPECT_EQ(after->file_or_shared, 0u);  // private anonymous
  // Page by page: exactly the touched ones.
  for (std::size_t i = 0; i < pages; ++i) {
    bool is_touched = false;
    for (std::size_t t : touched) is_touched = is_touched || t == i;
    auto one = pal::pagemap_residency(m.addr + i * kPage, kPage);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(one->pages, 1u);
    EXPECT_EQ(one->present, is_touched ? 1u : 0u) << "page " << i;
  }

  ASSERT_TRUE(pal::advise(m.addr, m.len, pal::Advice::dontneed).ok());
  auto dropped = pal::pagemap_residency(m.addr, m.len);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(dropped->present, 0u);
}

TEST(PalProc, PagemapResidencyRoundsToPages) {
  IsolatedMap m(4, pal::kMapPrivate);
  ASSERT_NE(m.addr, nullptr);
  // Two bytes straddling a page boundary cover two pages.
  auto r = pal::pagemap_residency(m.addr + kPage - 1, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pages, 2u);
  auto empty = pal::pagemap_residency(m.addr, 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->pages, 0u);
}

TEST(PalProc, PagemapSharedPagesAreMarked) {
  IsolatedMap m(4, pal::kMapShared);
  ASSERT_NE(m.addr, nullptr);
  m.touch(1);
  m.touch(2);
  auto r = pal::pagemap_residency(m.addr, m.len);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->present, 2u);
  EXPECT_EQ(r->file_or_shared, 2u);  // shmem pages carry the file/shared bit
}

TEST(PalProc, PhysicalFrame) {
  IsolatedMap m(3, pal::kMapPrivate);
  ASSERT_NE(m.addr, nullptr);
  m.touch(0);
  m.touch(2);
  auto f0 = pal::physical_frame(m.addr);
  auto f1 = pal::physical_frame(m.addr + kPage);  // never touched
  auto f2 = pal::physical_frame(m.addr + 2 * kPage);
  ASSERT_TRUE(f0.ok() && f1.ok() && f2.ok());
  EXPECT_EQ(f1.value(), 0u);
  if (pal::system_info().pagemap_pfn_readable) {
    EXPECT_NE(f0.value(), 0u);
    EXPECT_NE(f2.value(), 0u);
    EXPECT_NE(f0.value(), f2.value());  // two private pages, two frames
    auto r = pal::pagemap_residency(m.addr, m.len);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->first_pfn, f0.value());
  } else {
    EXPECT_EQ(f0.value(), 0u);  // frame numbers hidden without CAP_SYS_ADMIN
    EXPECT_EQ(f2.value(), 0u);
  }
}

// ---------------------------------------------------------------- smaps parser

TEST(PalSmapsParser, SumsExactlyTheIntersectingVmas) {
  // Range [0x10000, 0x20000).
  std::string text;
  text += vma_block("00001000-00002000 r-xp 00000000 08:01 123     /usr/bin/before", 1000, 1);
  text += vma_block("0000e000-00010000 rw-p 00000000 00:00 0 ", 10000, 1);  // ends at lo: outside
  text += vma_block("0000f000-00011000 rw-p 00000000 00:00 0 ", 1, 0);      // straddles lo
  text +=
      vma_block("00018000-00020000 rw-s 00000000 00:05 99      /dev/shm/x", 100, 1);  // ends at hi
  text += vma_block("00020000-00030000 rw-p 00000000 00:00 0 ", 10000, 1);  // starts at hi: outside
  text += vma_block("7ffff000-80000000 rw-p 00000000 00:00 0       [stack]", 100000, 1);
  const pal::SmapsTotals t = parse(0x10000, 0x20000, text);
  EXPECT_EQ(t.vmas, 2u);
  EXPECT_EQ(t.size, 0x2000u + 0x8000u);  // from the headers, not the Size: lines
  const std::uint64_t u = 101;           // 1 + 100: units of the two VMAs in range
  EXPECT_EQ(t.rss, 1 * u * kKiB);
  EXPECT_EQ(t.pss, 2 * u * kKiB);
  EXPECT_EQ(t.shared_clean, 3 * u * kKiB);
  EXPECT_EQ(t.shared_dirty, 4 * u * kKiB);
  EXPECT_EQ(t.private_clean, 5 * u * kKiB);
  EXPECT_EQ(t.private_dirty, 6 * u * kKiB);
  EXPECT_EQ(t.anonymous, 7 * u * kKiB);
  EXPECT_EQ(t.anon_huge, 8 * u * kKiB);
  EXPECT_EQ(t.shmem_huge, 9 * u * kKiB);
  EXPECT_EQ(t.file_huge, 10 * u * kKiB);
  EXPECT_EQ(t.swap, 11 * u * kKiB);
  EXPECT_EQ(t.locked, 12 * u * kKiB);
  EXPECT_TRUE(t.thp_eligible);  // the second in-range VMA says 1
}

TEST(PalSmapsParser, NothingInRange) {
  std::string text;
  text += vma_block("00001000-00002000 rw-p 00000000 00:00 0 ", 1, 1);
  text += vma_block("00030000-00040000 rw-p 00000000 00:00 0 ", 1, 1);
  const pal::SmapsTotals t = parse(0x10000, 0x20000, text);
  EXPECT_EQ(t.vmas, 0u);
  EXPECT_EQ(t.size, 0u);
  EXPECT_EQ(t.rss, 0u);
  EXPECT_FALSE(t.thp_eligible);
  // Fields before any header belong to no VMA.
  const pal::SmapsTotals u = parse(0, UINTPTR_MAX, "Rss: 4 kB\nTHPeligible: 1\n");
  EXPECT_EQ(u.rss, 0u);
  EXPECT_FALSE(u.thp_eligible);
}

TEST(PalSmapsParser, ThpEligibleOnlyFromVmasInRange) {
  EXPECT_FALSE(parse(0x10000, 0x20000, vma_block("10000-20000 rw-p 0 00:00 0", 1, 0)).thp_eligible);
  EXPECT_TRUE(parse(0x10000, 0x20000, vma_block("10000-20000 rw-p 0 00:00 0", 1, 1)).thp_eligible);
  EXPECT_FALSE(parse(0x10000, 0x20000, vma_block("20000-30000 rw-p 0 00:00 0", 1, 1)).thp_eligible);
}

namespace {

// Feeds `header` followed by fields to a parser whose range is everything:
// if the header were accepted, it would be counted.
void expect_header_ignored(const char* header) {
  const std::string text = std::string(header) + "\nRss:  4 kB\nTHPeligible: 1\n";
  const pal::SmapsTotals t = parse(0, UINTPTR_MAX, text);
  EXPECT_EQ(t.vmas, 0u) << header;
  EXPECT_EQ(t.size, 0u) << header;
  EXPECT_EQ(t.rss, 0u) << header;
  EXPECT_FALSE(t.thp_eligible) << header;
}

}  // namespace

// MADV_RANDOM shows as "rr" among the VmFlags; a flag that only contains
// the letters (or a VMA out of range) does not count.
TEST(PalSmapsParser, CountsVmasAdvisedRandom) {
  std::string text;
  text += "10000-11000 rw-s 0 00:00 0\nRss: 4 kB\nVmFlags: rd wr sh mr mw me ms rr nh\n";
  text += "11000-12000 rw-s 0 00:00 0\nVmFlags: rd wr sh mr mw me ms nh\n";
  text += "12000-13000 rw-s 0 00:00 0\nVmFlags: rd wr rrr xrr\n";
  text += "13000-14000 rw-s 0 00:00 0\nVmFlags: rr\n";
  text += "20000-21000 rw-s 0 00:00 0\nVmFlags: rd rr\n";  // out of range
  const pal::SmapsTotals t = parse(0x10000, 0x20000, text);
  EXPECT_EQ(t.vmas, 4u);
  EXPECT_EQ(t.random_read_vmas, 2u);
  EXPECT_EQ(t.rss, 4 * kKiB);
  EXPECT_EQ(parse(0x10000, 0x20000, vma_block("10000-20000 rw-p 0 00:00 0", 1, 0)).random_read_vmas, 0u);
}

TEST(PalSmapsParser, MalformedHeadersAreIgnored) {
  for (const char* header : {
           "10000-",                             // no end address
           "-20000 rw-p 00000000 00:00 0",       // no start address
           "20000-10000 rw-p 00000000 00:00 0",  // end before start
           "1g000-20000 rw-p 00000000 00:00 0",  // not hex
           "10000-2000x rw-p 00000000 00:00 0",  // junk after the end address
           "10000-20000",                        // nothing after the range
           "10000 20000 rw-p 00000000 00:00 0",  // no dash at all, a field-less line
       }) {
    expect_header_ignored(header);
  }
}

// Addresses are strictly hex: strtoull-style parsing would accept a sign
// ("-20000" becoming 2^64 - 0x20000) or saturate an overflow to 2^64 - 1 and
// so take these headers as huge VMAs.
TEST(PalSmapsParser, HeadersWithSignOrOverflowAreIgnored) {
  for (const char* header : {
           "10000--20000 rw-p 00000000 00:00 0",  // signed end address
           "10000-+20000 rw-p 00000000 00:00 0",
           "10000-1ffffffffffffffffffff rw-p 00000000 00:00 0",           // end overflows 64 bits
           "1ffffffffffffffffffff-fffffffffffffffffffff rw-p 0 00:00 0",  // both overflow
       }) {
    expect_header_ignored(header);
  }
}

// Fields after a malformed header belong to no VMA: they must not be added to
// the last good one.
TEST(PalSmapsParser, FieldsAfterAMalformedHeaderAreNotCounted) {
  const std::string text =
      "10000-20000 rw-p 00000000 00:00 0\n"
      "Rss: 4 kB\n"
      "zz000-yy000 rw-p 00000000 00:00 0\n"
      "Rss: 400 kB\n";
  const pal::SmapsTotals t = parse(0, UINTPTR_MAX, text);
  EXPECT_EQ(t.vmas, 1u);
  EXPECT_EQ(t.rss, 4096u);
}

// Each value fits, but their sum would not: totals saturate instead of wrapping.
TEST(PalSmapsParser, TotalsSaturate) {
  const std::string vma =
      "10000-20000 rw-p 00000000 00:00 0\n"
      "Rss: 18014398509481983 kB\n";
  const pal::SmapsTotals t = parse(0, UINTPTR_MAX, vma + vma + vma);
  EXPECT_EQ(t.vmas, 3u);
  EXPECT_EQ(t.rss, UINT64_MAX);
}

TEST(PalSmapsParser, MalformedFieldsAreIgnored) {
  const std::string text =
      "10000-20000 rw-p 00000000 00:00 0\n"
      "Rss: 4 MB\n"                        // wrong unit
      "Rss: 4\n"                           // no unit
      "Rss: abc kB\n"                      // not a number
      "Rss: -4 kB\n"                       // negative
      "Rss:\n"                             // no value
      "Rss 4 kB\n"                         // no colon
      "Rsss: 4 kB\n"                       // unknown key
      "Rs: 4 kB\n"                         // a prefix of a known key
      "rss: 4 kB\n"                        // keys are case sensitive
      "Rss: 18014398509481984 kB\n"        // * 1024 would overflow 64 bits
      "Rss: 99999999999999999999999 kB\n"  // does not fit 64 bits at all
      "Private_Dirty: 18446744073709551615 kB\n"
      "THPeligible: yes\n"  // not a number
      "Rss: 8 kB\n"         // the one good line
      "Locked:\t12 kB\n";   // tabs are whitespace too
  const pal::SmapsTotals t = parse(0x10000, 0x20000, text);
  EXPECT_EQ(t.vmas, 1u);
  EXPECT_EQ(t.rss, 8 * kKiB);
  EXPECT_EQ(t.private_dirty, 0u);
  EXPECT_EQ(t.locked, 12 * kKiB);
  EXPECT_FALSE(t.thp_eligible);
}

TEST(PalSmapsParser, LargestValueThatFitsIsKept) {
  // UINT64_MAX / 1024 kB is the largest value that converts to bytes.
  const std::uint64_t max_kb = UINT64_MAX / 1024;
  const std::string text =
      "10000-20000 rw-p 00000000 00:00 0\nSwap: " + std::to_string(max_kb) + " kB\n";
  EXPECT_EQ(parse(0x10000, 0x20000, text).swap, max_kb * 1024);
}

TEST(PalSmapsParser, LongAndUnterminatedLines) {
  // A header with a very long path is still a header; a line cut without a
  // newline (the parser takes explicit lengths) is parsed up to its length.
  const std::string header = "10000-20000 rw-p 00000000 08:01 42   /" + std::string(4000, 'p');
  pal::SmapsParser parser(0x10000, 0x20000);
  parser.feed_line(header.data(), header.size());
  const char field[] = "Rss: 16 kBXXXXXXXX";
  parser.feed_line(field, 10);  // "Rss: 16 kB"
  parser.feed_line("", 0);
  EXPECT_EQ(parser.totals().vmas, 1u);
  EXPECT_EQ(parser.totals().rss, 16 * kKiB);
}

// ---------------------------------------------------------------- smaps, real

TEST(PalProc, SmapsRangeOnTouchedMapping) {
  const std::size_t pages = 16;
  IsolatedMap m(pages, pal::kMapPrivate);
  ASSERT_NE(m.addr, nullptr);
  for (std::size_t i = 0; i < 5; ++i) m.touch(i * 3);
  auto r = pal::smaps_range(m.addr, m.len);
  ASSERT_TRUE(r.ok()) << formatted(r.error());
  // The mapping is exactly one VMA (see IsolatedMap), so the sums are exact.
  EXPECT_EQ(r->vmas, 1u);
  EXPECT_EQ(r->size, m.len);
  EXPECT_EQ(r->rss, 5 * kPage);
  EXPECT_EQ(r->anonymous, 5 * kPage);
  EXPECT_EQ(r->private_dirty, 5 * kPage);
  EXPECT_EQ(r->pss, 5 * kPage);
  EXPECT_EQ(r->shared_clean + r->shared_dirty, 0u);
  EXPECT_EQ(r->swap, 0u);
  EXPECT_FALSE(r->thp_eligible);  // MADV_NOHUGEPAGE

  // A range that covers the guards too sees three VMAs.
  auto wide = pal::smaps_range(m.base, m.len + 2 * kPage);
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(wide->vmas, 3u);
  EXPECT_EQ(wide->size, m.len + 2 * kPage);
  EXPECT_EQ(wide->rss, 5 * kPage);
}

TEST(PalProc, SmapsRangeOfSharedMapping) {
  IsolatedMap m(8, pal::kMapShared);
  ASSERT_NE(m.addr, nullptr);
  m.touch(0);
  m.touch(1);
  auto r = pal::smaps_range(m.addr, m.len);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->vmas, 1u);
  EXPECT_EQ(r->rss, 2 * kPage);
  EXPECT_EQ(r->anonymous, 0u);  // shmem pages are not "Anonymous" in smaps
  EXPECT_EQ(r->shared_dirty + r->private_dirty, 2 * kPage);
}

// ---------------------------------------------------------------- I/O counters

TEST(PalProc, ProcessIoCountsWritesAndReads) {
  auto before = pal::process_io();
  ASSERT_TRUE(before.ok()) << formatted(before.error());
  const int fd = write_synced_file(kMiB);
  ASSERT_GE(fd, 0);
  auto after_write = pal::process_io();
  ASSERT_TRUE(after_write.ok());
  EXPECT_GE(after_write->wchar - before->wchar, kMiB);
  EXPECT_GE(after_write->write_bytes - before->write_bytes, kMiB);

  // Evict the file, then read it: the bytes come from the device.
  ASSERT_TRUE(pal::drop_file_cache(fd).ok());
  std::vector<char> buf(kMiB);
  ASSERT_EQ(pal::pread_fd(fd, buf.data(), kMiB, 0).value_or(0), kMiB);
  auto after_read = pal::process_io();
  ASSERT_TRUE(after_read.ok());
  EXPECT_GE(after_read->rchar - after_write->rchar, kMiB);
  EXPECT_GE(after_read->read_bytes - after_write->read_bytes, kMiB);
  EXPECT_GE(after_read->cancelled_write_bytes, before->cancelled_write_bytes);
  EXPECT_TRUE(pal::close_fd(fd).ok());
}

// ---------------------------------------------------------------- block devices

TEST(PalProc, BlockDeviceStatsCountWrites) {
  const int fd = write_synced_file(4096);
  ASSERT_GE(fd, 0);
  auto info = pal::stat_fd(fd);
  ASSERT_TRUE(info.ok());
  auto before = pal::block_device_stats(info->dev);
  if (!before.ok()) {
    (void)pal::close_fd(fd);
    GTEST_SKIP() << "no block device statistics for /var/tmp: " << formatted(before.error());
  }
  std::vector<char> data(4 * kMiB, 'b');
  ASSERT_TRUE(pal::pwrite_all(fd, data.data(), data.size(), 0).ok());
  ASSERT_TRUE(pal::datasync(fd).ok());
  auto after = pal::block_device_stats(info->dev);
  ASSERT_TRUE(after.ok());
  // Other processes may write too, but at least our 4 MiB went to the device.
  EXPECT_GE(after->sectors_written - before->sectors_written, 4 * kMiB / 512);
  EXPECT_GE(after->sectors_read, before->sectors_read);
  EXPECT_TRUE(pal::close_fd(fd).ok());
}

TEST(PalProc, BlockDeviceStatsErrors) {
  // tmpfs has an anonymous device number with no /sys/dev/block entry.
  const std::string shm = "/dev/shm/mapheap-paltest-" + std::to_string(::getpid()) + "-blk";
  auto fd = pal::open_file(shm.c_str(), pal::kOpenReadWrite | pal::kOpenCreate);
  ASSERT_TRUE(fd.ok());
  (void)pal::unlink_path(shm.c_str());
  auto info = pal::stat_fd(fd.value());
  ASSERT_TRUE(info.ok());
  auto r = pal::block_device_stats(info->dev);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().detail, nullptr);
  EXPECT_TRUE(pal::close_fd(fd.value()).ok());

  // The device number is decoded the way glibc's major()/minor() do, including
  // the high bits of large numbers; the path in the error shows it.
  const dev_t dev = ::makedev(0x12345u, 0x678901u);
  auto big = pal::block_device_stats(static_cast<std::uint64_t>(dev));
  ASSERT_FALSE(big.ok());
  EXPECT_STREQ(big.error().path, "/sys/dev/block/74565:6785281/stat");
}

// ---------------------------------------------------------------- drop_page_cache

TEST(PalProc, DropPageCacheAsRoot) {
  if (::geteuid() != 0) {
    auto s = pal::drop_page_cache();
    ASSERT_FALSE(s.ok());
    EXPECT_TRUE(s.error().code == EACCES || s.error().code == EPERM || s.error().code == EROFS)
        << formatted(s.error());
    GTEST_SKIP() << "not root: checked the error only";
  }
  const int fd = write_synced_file(kMiB);
  ASSERT_GE(fd, 0);
  std::vector<char> buf(kMiB);
  ASSERT_EQ(pal::pread_fd(fd, buf.data(), kMiB, 0).value_or(0), kMiB);
  EXPECT_GT(cached_pages(fd, kMiB), 0u);
  auto s = pal::drop_page_cache();
  ASSERT_TRUE(s.ok()) << formatted(s.error());
  EXPECT_EQ(cached_pages(fd, kMiB), 0u);  // clean, unmapped pages are all dropped
  EXPECT_TRUE(pal::close_fd(fd).ok());
}

TEST(PalProc, DropPageCacheUnprivilegedFails) {
  if (::geteuid() != 0) GTEST_SKIP() << "covered by DropPageCacheAsRoot when not root";
  const int rc = run_as_nobody([] {
    pal::Status s = pal::drop_page_cache();
    if (s.ok()) return 1;
    const int c = s.error().code;
    if (c != EACCES && c != EPERM && c != EROFS) return 2;
    if (std::strcmp(s.error().path, "/proc/sys/vm/drop_caches") != 0) return 3;
    return 0;
  });
  EXPECT_EQ(rc, 0);
}
