// pal/proc.cpp — what the kernel tells us through /proc and /sys: huge page
// pools, THP and overcommit modes, page residency (pagemap), per-VMA memory
// (smaps), I/O counters. Everything is read into stack buffers and parsed
// defensively: a line we do not understand is skipped.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "pal/pal.hpp"

namespace mapheap::pal {

namespace {

// Reads a whole small file (sysfs values, /proc/self/io) into buf, NUL-terminated.
Result<std::size_t> read_small(const char* path, char* buf, std::size_t cap) noexcept {
  auto fd = open_file(path, kOpenRead | kOpenFollow);  // /sys is full of symlinks
  if (!fd) return fd.error();
  std::size_t len = 0;
  while (len + 1 < cap) {
    auto r = read_fd(fd.value(), buf + len, cap - 1 - len);
    if (!r) {
      (void)close_fd(fd.value());
      return Error(r.error()).with_path(path);
    }
    if (r.value() == 0) break;
    len += r.value();
  }
  buf[len] = '\0';
  (void)close_fd(fd.value());
  return len;
}

bool parse_u64(const char* s, std::uint64_t& out, const char** end = nullptr) noexcept {
  while (*s == ' ' || *s == '\t') ++s;
  if (*s < '0' || *s > '9') return false;
  std::uint64_t v = 0;
  for (; *s >= '0' && *s <= '9'; ++s) {
    const auto d = static_cast<std::uint64_t>(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  if (end != nullptr) *end = s;
  return true;
}

// Totals come from untrusted text: they stop at the maximum rather than wrap.
void add_saturating(std::uint64_t& sum, std::uint64_t v) noexcept {
  sum = sum > UINT64_MAX - v ? UINT64_MAX : sum + v;
}

// Strict: hex digits only (strtoull would accept signs, spaces and "0x").
bool parse_hex(const char* s, std::uint64_t& out, const char** end) noexcept {
  std::uint64_t v = 0;
  const char* p = s;
  for (;; ++p) {
    unsigned d;
    if (*p >= '0' && *p <= '9')
      d = static_cast<unsigned>(*p - '0');
    else if (*p >= 'a' && *p <= 'f')
      d = static_cast<unsigned>(*p - 'a' + 10);
    else if (*p >= 'A' && *p <= 'F')
      d = static_cast<unsigned>(*p - 'A' + 10);
    else
      break;
    if (v >> 60) return false;  // would overflow 64 bits
    v = (v << 4) | d;
  }
  if (p == s) return false;
  out = v;
  *end = p;
  return true;
}

bool read_u64_file(const char* path, std::uint64_t& out) noexcept {
  char buf[64];
  auto r = read_small(path, buf, sizeof(buf));
  return r.ok() && parse_u64(buf, out);
}

// The bracketed choice of a sysfs mode file: "always [madvise] never" -> madvise.
bool bracketed(const char* text, char* out, std::size_t cap) noexcept {
  const char* open = std::strchr(text, '[');
  if (open == nullptr) return false;
  const char* close = std::strchr(open, ']');
  if (close == nullptr) return false;
  const std::size_t n = static_cast<std::size_t>(close - open - 1);
  if (n + 1 > cap) return false;
  std::memcpy(out, open + 1, n);
  out[n] = '\0';
  return true;
}

ThpMode thp_mode_from(const char* word) noexcept {
  if (std::strcmp(word, "always") == 0) return ThpMode::always;
  if (std::strcmp(word, "madvise") == 0) return ThpMode::madvise;
  if (std::strcmp(word, "never") == 0) return ThpMode::never;
  return ThpMode::unknown;
}

ThpMode read_thp_mode(const char* path) noexcept {
  char buf[128];
  char word[32];
  if (!read_small(path, buf, sizeof(buf)).ok() || !bracketed(buf, word, sizeof(word)))
    return ThpMode::unknown;
  return thp_mode_from(word);
}

// Reads a file line by line through a fixed buffer; lines longer than the
// buffer are cut (and so ignored by the strict parsers that follow).
template <class Fn>
Status for_each_line(const char* path, Fn&& fn) noexcept {
  auto fd = open_file(path, kOpenRead | kOpenFollow);
  if (!fd) return fd.error();
  char buf[8192];
  std::size_t have = 0;
  bool skipping = false;  // inside the tail of an overlong line, already passed on
  for (;;) {
    auto r = read_fd(fd.value(), buf + have, sizeof(buf) - have);
    if (!r) {
      (void)close_fd(fd.value());
      return Error(r.error()).with_path(path);
    }
    const std::size_t got = r.value();
    have += got;
    std::size_t start = 0;
    for (std::size_t i = 0; i < have; ++i) {
      if (buf[i] == '\n') {
        if (!skipping) fn(buf + start, i - start);
        skipping = false;
        start = i + 1;
      }
    }
    if (got == 0) {
      if (start < have && !skipping) fn(buf + start, have - start);
      break;
    }
    if (start == 0 && have == sizeof(buf)) {  // one overlong line: pass its head, drop the rest
      if (!skipping) fn(buf, have);
      skipping = true;
      have = 0;
      continue;
    }
    std::memmove(buf, buf + start, have - start);
    have -= start;
  }
  (void)close_fd(fd.value());
  return {};
}

}  // namespace

const char* thp_mode_name(ThpMode m) noexcept {
  switch (m) {
    case ThpMode::always: return "always";
    case ThpMode::madvise: return "madvise";
    case ThpMode::never: return "never";
    case ThpMode::unknown: return "unknown";
  }
  return "unknown";
}

SystemInfo system_info() noexcept {
  SystemInfo info;
  info.page_size = page_size();
  info.cpus_online = cpu_count();
  (void)for_each_line("/proc/meminfo", [&](const char* line, std::size_t n) {
    auto field = [&](const char* key, std::uint64_t& out) {
      const std::size_t k = std::strlen(key);
      std::uint64_t kb = 0;
      if (n > k && std::memcmp(line, key, k) == 0 && line[k] == ':') {
        char tmp[64];
        const std::size_t m = std::min(n - k - 1, sizeof(tmp) - 1);
        std::memcpy(tmp, line + k + 1, m);
        tmp[m] = '\0';
        if (parse_u64(tmp, kb) && kb <= UINT64_MAX / 1024) out = kb * 1024;
      }
    };
    field("MemTotal", info.memory_total);
    field("MemAvailable", info.memory_available);
  });

  // hugetlb pools: /sys/kernel/mm/hugepages/hugepages-<kB>kB/
  // opendir() would malloc its buffer: list the directory with getdents64
  // into the stack instead.
  if (auto dfd = open_file("/sys/kernel/mm/hugepages", kOpenRead | kOpenFollow)) {
    std::size_t slot = 0;
    alignas(8) char entries[2048];
    for (;;) {
      const long n = ::syscall(SYS_getdents64, dfd.value(), entries, sizeof(entries));
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        struct Dirent64 {
          std::uint64_t ino;
          std::int64_t off;
          unsigned short reclen;
          unsigned char type;
          char name[1];
        };
        const auto* e = reinterpret_cast<const Dirent64*>(entries + off);
        if (e->reclen == 0) break;
        off += e->reclen;
        std::uint64_t kb = 0;
        if (std::strncmp(e->name, "hugepages-", 10) != 0 || !parse_u64(e->name + 10, kb) ||
            kb > UINT64_MAX / 1024)
          continue;
        if (slot == sizeof(info.huge) / sizeof(info.huge[0])) break;
        HugePagePool& pool = info.huge[slot++];
        pool.page_size = static_cast<std::size_t>(kb) * 1024;
        char path[320];
        std::snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/%.64s/nr_hugepages", e->name);
        read_u64_file(path, pool.total);
        std::snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/%.64s/free_hugepages", e->name);
        read_u64_file(path, pool.free);
        std::snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/%.64s/resv_hugepages", e->name);
        read_u64_file(path, pool.reserved);
      }
    }
    (void)close_fd(dfd.value());
    // getdents order is the directory's; list pools smallest page first.
    for (std::size_t a = 0; a < slot; ++a)
      for (std::size_t b = a + 1; b < slot; ++b)
        if (info.huge[b].page_size < info.huge[a].page_size) std::swap(info.huge[a], info.huge[b]);
  }

  const ThpSettings thp = thp_settings();
  info.thp_enabled = thp.enabled;
  std::memcpy(info.thp_shmem, thp.shmem, sizeof(info.thp_shmem));
  info.thp_defrag = read_thp_mode("/sys/kernel/mm/transparent_hugepage/defrag");
  std::uint64_t v = 0;
  if (read_u64_file("/proc/sys/vm/overcommit_memory", v))
    info.overcommit_memory = static_cast<int>(v);
  if (read_u64_file("/proc/sys/vm/overcommit_ratio", v))
    info.overcommit_ratio = static_cast<int>(v);

  const RseqInfo rs = rseq_info();
  info.rseq_registered = rs.registered;
  info.rseq_size = rs.size;
  info.getcpu_available = true;  // vDSO getcpu exists on every Linux we support

  if (auto fd = memfd("mapheap-probe", 0)) {
    info.memfd_available = true;
    (void)close_fd(fd.value());
  }
  // Frame numbers in pagemap are zeroed without CAP_SYS_ADMIN: probe with a
  // page we know is present.
  {
    static thread_local volatile char probe = 1;
    probe = 2;
    auto pfn = physical_frame(const_cast<char*>(&probe));
    info.pagemap_pfn_readable = pfn.ok() && pfn.value() != 0;
  }
  struct utsname u {};
  if (::uname(&u) == 0) {
    const std::size_t n = std::min(std::strlen(u.release), sizeof(info.kernel) - 1);
    std::memcpy(info.kernel, u.release, n);
    info.kernel[n] = '\0';
  }
  return info;
}

ThpSettings thp_settings() noexcept {
  ThpSettings t;
  t.enabled = read_thp_mode("/sys/kernel/mm/transparent_hugepage/enabled");
  // "inherit" (or a kernel before 6.8 without the file) reads as unknown.
  t.pmd_enabled = read_thp_mode("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled");
  char buf[160];
  if (read_small("/sys/kernel/mm/transparent_hugepage/shmem_enabled", buf, sizeof(buf)).ok())
    bracketed(buf, t.shmem, sizeof(t.shmem));
  return t;
}

std::uint64_t huge_pages_available(std::size_t size) noexcept {
  char path[128];
  std::snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%zukB/resv_hugepages",
                size / 1024);
  std::uint64_t resv = 0;
  read_u64_file(path, resv);
  const std::uint64_t free = huge_pages_free(size);
  return free > resv ? free - resv : 0;
}

std::uint64_t huge_pages_free(std::size_t size) noexcept {
  char path[128];
  std::snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-%zukB/free_hugepages",
                size / 1024);
  std::uint64_t v = 0;
  return read_u64_file(path, v) ? v : 0;
}

// pagemap: one 64-bit entry per virtual page. Bit 63 present, 62 swapped,
// 61 file-page or shared-anon, 56 exclusively mapped, 0-54 the frame number
// (zero unless CAP_SYS_ADMIN).
Result<PageResidency> pagemap_residency(const void* addr, std::size_t len) noexcept {
  const std::size_t page = page_size();
  const auto start = reinterpret_cast<std::uintptr_t>(addr) / page;
  const auto end = (reinterpret_cast<std::uintptr_t>(addr) + len + page - 1) / page;
  auto fd = open_file("/proc/self/pagemap", kOpenRead);
  if (!fd) return fd.error();
  PageResidency res;
  std::uint64_t entries[512];
  for (std::uintptr_t vpn = start; vpn < end;) {
    const std::size_t want = static_cast<std::size_t>(end - vpn < 512 ? end - vpn : 512);
    auto r = pread_fd(fd.value(), entries, want * sizeof(std::uint64_t),
                      static_cast<std::uint64_t>(vpn) * sizeof(std::uint64_t));
    if (!r) {
      (void)close_fd(fd.value());
      return Error(r.error()).with_path("/proc/self/pagemap");
    }
    const std::size_t got = r.value() / sizeof(std::uint64_t);
    if (got == 0) break;
    for (std::size_t i = 0; i < got; ++i) {
      const std::uint64_t e = entries[i];
      ++res.pages;
      if (e & (1ull << 63)) {
        ++res.present;
        if (res.first_pfn == 0) res.first_pfn = e & ((1ull << 55) - 1);
      }
      if (e & (1ull << 62)) ++res.swapped;
      if (e & (1ull << 61)) ++res.file_or_shared;
      if (e & (1ull << 56)) ++res.exclusive;
    }
    vpn += got;
  }
  (void)close_fd(fd.value());
  return res;
}

Result<std::uint64_t> physical_frame(const void* addr) noexcept {
  auto r = pagemap_residency(addr, 1);
  if (!r) return r.error();
  return r.value().first_pfn;
}

void SmapsParser::feed_line(const char* line, std::size_t len) noexcept {
  // A VMA header looks like "7f12a000-7f12c000 rw-s 00000000 00:01 1234   /path".
  // A field line looks like "Rss:                 12 kB".
  char tmp[128];
  const std::size_t n = len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1;
  std::memcpy(tmp, line, n);
  tmp[n] = '\0';

  const char* dash = std::strchr(tmp, '-');
  const char* colon = std::strchr(tmp, ':');
  if (dash != nullptr && (colon == nullptr || dash < colon)) {
    // Whatever this line is, it ends the previous VMA's fields: a malformed
    // header must not let the next fields count against the last good VMA.
    in_range_ = false;
    // Header candidate: two hex numbers around the dash, then a space.
    std::uint64_t lo = 0, hi = 0;
    const char* end1 = nullptr;
    const char* end2 = nullptr;
    if (!parse_hex(tmp, lo, &end1) || end1 != dash) return;
    if (!parse_hex(dash + 1, hi, &end2) || *end2 != ' ' || hi < lo) return;
    in_range_ = lo_ < hi_ && lo < hi_ && hi > lo_;
    if (in_range_) {
      ++totals_.vmas;
      add_saturating(totals_.size, hi - lo);
    }
    return;
  }
  if (!in_range_ || colon == nullptr) return;
  const std::size_t key_len = static_cast<std::size_t>(colon - tmp);
  auto key_is = [&](const char* k) {
    return std::strlen(k) == key_len && std::memcmp(tmp, k, key_len) == 0;
  };
  if (key_is("VmFlags")) {  // two-letter flags separated by spaces
    for (const char* f = colon + 1; *f != '\0'; ++f)
      if (f[0] == 'r' && f[1] == 'r' && f[-1] == ' ' && (f[2] == ' ' || f[2] == '\0')) {
        ++totals_.random_read_vmas;
        break;
      }
    return;
  }
  std::uint64_t v = 0;
  const char* rest = nullptr;
  if (!parse_u64(colon + 1, v, &rest)) return;
  if (key_is("THPeligible")) {
    totals_.thp_eligible = totals_.thp_eligible || v != 0;
    return;
  }
  while (*rest == ' ') ++rest;
  if (std::strncmp(rest, "kB", 2) != 0) return;
  if (v > UINT64_MAX / 1024) return;
  const std::uint64_t bytes = v * 1024;
  struct Field {
    const char* key;
    std::uint64_t SmapsTotals::*member;
  };
  static constexpr Field kFields[] = {
      {"Rss", &SmapsTotals::rss},
      {"Pss", &SmapsTotals::pss},
      {"Shared_Clean", &SmapsTotals::shared_clean},
      {"Shared_Dirty", &SmapsTotals::shared_dirty},
      {"Private_Clean", &SmapsTotals::private_clean},
      {"Private_Dirty", &SmapsTotals::private_dirty},
      {"Anonymous", &SmapsTotals::anonymous},
      {"AnonHugePages", &SmapsTotals::anon_huge},
      {"ShmemPmdMapped", &SmapsTotals::shmem_huge},
      {"FilePmdMapped", &SmapsTotals::file_huge},
      {"Swap", &SmapsTotals::swap},
      {"Locked", &SmapsTotals::locked},
  };
  for (const Field& f : kFields) {
    if (key_is(f.key)) {
      add_saturating(totals_.*(f.member), bytes);
      return;
    }
  }
}

Result<SmapsTotals> smaps_range(const void* addr, std::size_t len) noexcept {
  const auto lo = reinterpret_cast<std::uintptr_t>(addr);
  SmapsParser parser(lo, lo + len);
  Status s = for_each_line("/proc/self/smaps",
                           [&](const char* line, std::size_t n) { parser.feed_line(line, n); });
  if (!s) return s.error();
  return parser.totals();
}

Result<IoCounters> process_io() noexcept {
  IoCounters io;
  Status s = for_each_line("/proc/self/io", [&](const char* line, std::size_t n) {
    char tmp[96];
    const std::size_t m = n < sizeof(tmp) - 1 ? n : sizeof(tmp) - 1;
    std::memcpy(tmp, line, m);
    tmp[m] = '\0';
    const char* colon = std::strchr(tmp, ':');
    std::uint64_t v = 0;
    if (colon == nullptr || !parse_u64(colon + 1, v)) return;
    const std::size_t k = static_cast<std::size_t>(colon - tmp);
    auto is = [&](const char* key) {
      return std::strlen(key) == k && std::memcmp(tmp, key, k) == 0;
    };
    if (is("rchar"))
      io.rchar = v;
    else if (is("wchar"))
      io.wchar = v;
    else if (is("read_bytes"))
      io.read_bytes = v;
    else if (is("write_bytes"))
      io.write_bytes = v;
    else if (is("cancelled_write_bytes"))
      io.cancelled_write_bytes = v;
  });
  if (!s) return s.error();
  return io;
}

Result<BlockStats> block_device_stats(std::uint64_t dev) noexcept {
  char path[96];
  const unsigned maj = static_cast<unsigned>(((dev >> 32) & 0xfffff000u) | ((dev >> 8) & 0xfffu));
  const unsigned min = static_cast<unsigned>(((dev >> 12) & 0xffffff00u) | (dev & 0xffu));
  std::snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/stat", maj, min);
  char buf[512];
  auto r = read_small(path, buf, sizeof(buf));
  if (!r)
    return Error(r.error()).with_detail(
        "no block device statistics (the file may be on tmpfs, overlay or a network fs)");
  // Fields: reads, reads merged, sectors read, ms reading, writes, writes merged,
  // sectors written, ...
  std::uint64_t f[7] = {};
  const char* p = buf;
  for (auto& x : f) {
    if (!parse_u64(p, x, &p))
      return Error::make(Op::proc_read, EINVAL).with_path(path).with_detail("unexpected format");
  }
  return BlockStats{f[2], f[6]};
}

Result<ResourceUsage> resource_usage(bool children) noexcept {
  struct rusage ru {};
  if (::getrusage(children ? RUSAGE_CHILDREN : RUSAGE_SELF, &ru) != 0)
    return Error::make(Op::proc_read, errno).with_detail("getrusage");
  auto ns = [](const timeval& tv) {
    return static_cast<std::uint64_t>(tv.tv_sec) * 1000000000u +
           static_cast<std::uint64_t>(tv.tv_usec) * 1000u;
  };
  ResourceUsage u;
  u.minor_faults = static_cast<std::uint64_t>(ru.ru_minflt);
  u.major_faults = static_cast<std::uint64_t>(ru.ru_majflt);
  u.max_rss = static_cast<std::uint64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
  u.user_ns = ns(ru.ru_utime);
  u.system_ns = ns(ru.ru_stime);
  return u;
}

Status drop_page_cache() noexcept {
  ::sync();
  auto fd = open_file("/proc/sys/vm/drop_caches", kOpenWriteOnly | kOpenFollow);
  if (!fd) return fd.error();
  auto w = write_fd(fd.value(), "1\n", 2);
  (void)close_fd(fd.value());
  if (!w) return Error(w.error()).with_path("/proc/sys/vm/drop_caches");
  return {};
}

}  // namespace mapheap::pal
