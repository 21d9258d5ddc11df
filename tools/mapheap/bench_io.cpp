// tools/mapheap/bench_io.cpp — `mapheap bench io`: the mmap-versus-read study.
//
// The seed material claims that reading a file with read() costs two to three
// times as much as reading it through mmap. This command measures it on the
// machine at hand: sequential and random block reads of one file, with a warm
// and a cold page cache, through read()/pread() and through mappings with
// different flags and advice; and writes through pwrite()+fdatasync() against
// stores into a MAP_SHARED mapping + msync(MS_SYNC).
//
// What keeps the comparison honest:
//  * Every method consumes every byte it reads the same way (the XOR of the
//    block's 64-bit words, folded in access order), and the checksums of all
//    methods must agree for each access pattern, or the run fails. A method
//    that skipped work would be caught here.
//  * Each timed mmap pass includes its own mmap() and munmap(): re-scanning a
//    mapping that is already faulted in measures memory bandwidth, not the cost
//    of getting file data into the process.
//  * Random passes use the same offsets (a fixed seed) for every method.
//  * A cold pass evicts the file's pages first (POSIX_FADV_DONTNEED), and is
//    only called cold if /proc/self/io shows that the bytes came from the disk.
//  * Writes report what the kernel actually wrote (the task's write_bytes and
//    the block device's sectors), not what the program asked for.
//  * Methods run interleaved, in an order rotated on every repetition, so that
//    drift (other load, CPU frequency) spreads over all of them; the figure
//    kept is the median of the repetitions.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/core.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "mapheap/error.hpp"
#include "pal/pal.hpp"
#include "measure.hpp"
#include "plot.hpp"

namespace mapheap::cli {

namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = kKiB * 1024;
constexpr std::uint64_t kGiB = kMiB * 1024;
constexpr double kGiBd = 1024.0 * 1024.0 * 1024.0;

// The file starts with this header so that the write study can never destroy a
// file that some other program owns: a file without it is refused.
constexpr char kMagic[16] = {'m', 'a', 'p', 'h', 'e', 'a', 'p', '-',
                             'b', 'e', 'n', 'c', 'h', '-', 'i', 'o'};
constexpr std::size_t kHeaderBytes = 64;
constexpr std::size_t kUpdateBytes = 64;  // one sparse update: a cache line
constexpr std::uint64_t kSeed = 0x6d61706865617031ull;

// ---------------------------------------------------------------- options

struct Options {
  std::string size_text = "1G";
  std::string blocks_text = "4K,16K,64K,256K,1M";
  std::string file = "/var/tmp/mapheap-bench-io.dat";
  bool keep = false;
  unsigned repeat = 3;
  std::uint64_t random_ops = 65536;
  std::uint64_t updates = 1024;
  bool cold_all = false;
  bool no_cold = false;
  bool drop_caches = false;
  bool json = false;
  std::string png;
  std::string json_file;
  bool quick = false;
  bool quiet = false;
};

// "4096", "4K", "4KiB", "16m", "1G" -> bytes. Suffixes are binary.
std::optional<std::uint64_t> parse_size(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  std::size_t i = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    const auto d = static_cast<std::uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  if (i == 0) return std::nullopt;
  std::string_view unit = s.substr(i);
  std::uint64_t mul = 1;
  if (!unit.empty()) {
    switch (unit[0]) {
      case 'k':
      case 'K': mul = kKiB; break;
      case 'm':
      case 'M': mul = kMiB; break;
      case 'g':
      case 'G': mul = kGiB; break;
      case 't':
      case 'T': mul = kGiB * 1024; break;
      default: return std::nullopt;
    }
    unit.remove_prefix(1);
    if (!(unit.empty() || unit == "B" || unit == "iB" || unit == "b")) return std::nullopt;
  }
  if (v != 0 && mul > UINT64_MAX / v) return std::nullopt;
  return v * mul;
}

bool is_power_of_two(std::uint64_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

// Exact binary label for block sizes: 4K, 64K, 1M.
std::string block_label(std::uint64_t b) {
  if (b % kGiB == 0) return fmt::format("{}G", b / kGiB);
  if (b % kMiB == 0) return fmt::format("{}M", b / kMiB);
  if (b % kKiB == 0) return fmt::format("{}K", b / kKiB);
  return fmt::format("{}", b);
}

std::string human_bytes(double b) {
  if (b >= static_cast<double>(kGiB)) return fmt::format("{:.2f} GiB", b / kGiBd);
  if (b >= static_cast<double>(kMiB))
    return fmt::format("{:.1f} MiB", b / static_cast<double>(kMiB));
  if (b >= static_cast<double>(kKiB))
    return fmt::format("{:.1f} KiB", b / static_cast<double>(kKiB));
  return fmt::format("{:.0f} B", b);
}

std::optional<std::vector<std::uint64_t>> parse_blocks(const std::string& text, std::string& why) {
  std::vector<std::uint64_t> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(start, comma - start);
    auto v = parse_size(item);
    if (!v) {
      why = fmt::format("'{}' is not a size (use e.g. 4K,64K,1M)", item);
      return std::nullopt;
    }
    if (!is_power_of_two(*v) || *v < 4 * kKiB || *v > kGiB) {
      why = fmt::format("block size '{}' must be a power of two from 4K to 1G", item);
      return std::nullopt;
    }
    out.push_back(*v);
    start = comma + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// ---------------------------------------------------------------- OS helpers

[[noreturn]] void fail(const pal::Error& e, std::string_view what) {
  char buf[600];
  e.format(buf, sizeof(buf));
  throw mapheap::error(e.code, fmt::format("mapheap bench io: {}: {}", what, buf),
                       std::string(e.path), e.size, pal::op_name(e.op));
}
template <class T>
T check(pal::Result<T> r, std::string_view what) {
  if (!r) fail(r.error(), what);
  return r.value();
}
void check(pal::Status s, std::string_view what) {
  if (!s) fail(s.error(), what);
}
std::string describe(const pal::Error& e) {
  char buf[600];
  e.format(buf, sizeof(buf));
  return buf;
}

class Fd {
 public:
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) (void)pal::close_fd(fd_);
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

// A mapping that is unmapped on the error paths; the timed paths unmap it
// themselves (release()) so that munmap stays inside the measurement.
class MapGuard {
 public:
  MapGuard(void* addr, std::size_t len) noexcept : addr_(addr), len_(len) {}
  MapGuard(const MapGuard&) = delete;
  MapGuard& operator=(const MapGuard&) = delete;
  ~MapGuard() {
    if (addr_ != nullptr) (void)pal::unmap(addr_, len_);
  }
  void unmap_now() {
    void* a = std::exchange(addr_, nullptr);
    check(pal::unmap(a, len_), "munmap of the file mapping");
  }

 private:
  void* addr_;
  std::size_t len_;
};

// Page-aligned, pre-touched buffer: a first-touch page fault inside a timed
// loop would be charged to read().
class Buffer {
 public:
  explicit Buffer(std::size_t bytes)
      : bytes_(bytes),
        p_(static_cast<unsigned char*>(::operator new (bytes, std::align_val_t{4096}))) {
    std::memset(p_, 0x5a, bytes_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { ::operator delete (p_, std::align_val_t{4096}); }
  unsigned char* data() noexcept { return p_; }
  std::size_t size() const noexcept { return bytes_; }

 private:
  std::size_t bytes_;
  unsigned char* p_;
};

// SplitMix64: tiny, fast, and the same stream on every platform (the standard
// distributions are not), so a --keep file and the offsets are reproducible.
struct SplitMix {
  std::uint64_t state;
  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Every byte non-zero: no zero pages for a filesystem or the kernel to elide.
void fill_random(unsigned char* p, std::size_t bytes, SplitMix& rng) {
  for (std::size_t i = 0; i + 8 <= bytes; i += 8) {
    const std::uint64_t w = rng.next() | 0x0101010101010101ull;
    std::memcpy(p + i, &w, 8);
  }
}

void put_header(unsigned char* p, std::uint64_t file_size) {
  std::memcpy(p, kMagic, sizeof(kMagic));
  const std::uint64_t version = 1;
  std::memcpy(p + 16, &version, 8);
  std::memcpy(p + 24, &file_size, 8);
}

// ---------------------------------------------------------------- consuming data

// XOR of the block's 64-bit words. Four independent accumulators keep several
// loads in flight (and let the compiler vectorize); memcpy is the portable way
// to load a word and compiles to a plain load.
inline std::uint64_t xor_block(const unsigned char* p, std::size_t bytes) noexcept {
  std::uint64_t a = 0, b = 0, c = 0, d = 0;
  std::size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    std::uint64_t w[4];
    std::memcpy(w, p + i, 32);
    a ^= w[0];
    b ^= w[1];
    c ^= w[2];
    d ^= w[3];
  }
  for (; i + 8 <= bytes; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    a ^= w;
  }
  return a ^ b ^ c ^ d;
}

// Order-dependent fold: a plain XOR over blocks would let a block that is read
// twice (random offsets repeat) cancel itself out.
inline std::uint64_t fold(std::uint64_t h, std::uint64_t block_xor) noexcept {
  return (h ^ block_xor) * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
}

// ---------------------------------------------------------------- the study's vocabulary

enum class Pattern : std::uint8_t { seq, rand };
enum class Cache : std::uint8_t { warm, cold };
enum class Method : std::uint8_t {
  read,
  pread,
  mmap,
  mmap_populate,
  mmap_seq,
  mmap_rand,
  mmap_huge,
  mmap_nohuge,
};
enum class WriteMethod : std::uint8_t { write, mmap };
enum class WritePattern : std::uint8_t { seq, sparse };

const char* name(Pattern p) {
  return p == Pattern::seq ? "seq" : "rand";
}
const char* name(Cache c) {
  return c == Cache::warm ? "warm" : "cold";
}
const char* name(WriteMethod m) {
  return m == WriteMethod::write ? "write" : "mmap";
}
const char* name(WritePattern p) {
  return p == WritePattern::seq ? "seq" : "sparse";
}
const char* name(Method m) {
  switch (m) {
    case Method::read: return "read";
    case Method::pread: return "pread";
    case Method::mmap: return "mmap";
    case Method::mmap_populate: return "mmap+populate";
    case Method::mmap_seq: return "mmap+seq";
    case Method::mmap_rand: return "mmap+rand";
    case Method::mmap_huge: return "mmap+huge";
    case Method::mmap_nohuge: return "mmap+nohuge";
  }
  return "?";
}
bool is_mmap(Method m) {
  return m != Method::read && m != Method::pread;
}
// A method keeps its colour in every panel of the plot.
const char* colour(Method m) {
  switch (m) {
    case Method::read: return "#404040";
    case Method::pread: return "#a0a0a0";
    case Method::mmap: return "#1f77b4";
    case Method::mmap_populate: return "#2ca02c";
    case Method::mmap_seq: return "#ff7f0e";
    case Method::mmap_rand: return "#ff7f0e";
    case Method::mmap_huge: return "#9467bd";
    case Method::mmap_nohuge: return "#8c564b";
  }
  return "#000000";
}

std::vector<Method> methods_for(Pattern p) {
  if (p == Pattern::seq)
    return {Method::read,     Method::pread,     Method::mmap,       Method::mmap_populate,
            Method::mmap_seq, Method::mmap_huge, Method::mmap_nohuge};
  return {Method::read,      Method::mmap,      Method::mmap_populate,
          Method::mmap_rand, Method::mmap_huge, Method::mmap_nohuge};
}
const std::vector<Method>& all_methods() {
  static const std::vector<Method> all = {
      Method::read,     Method::pread,     Method::mmap,      Method::mmap_populate,
      Method::mmap_seq, Method::mmap_rand, Method::mmap_huge, Method::mmap_nohuge};
  return all;
}

// The tables and the plot show one column per method, except that mmap+seq and
// mmap+rand share "mmap+madvise": each pattern has only one of them.
struct Column {
  const char* title;
  Method seq, rand;
};
constexpr Column kColumns[] = {
    {"read", Method::read, Method::read},
    {"pread", Method::pread, Method::pread},
    {"mmap", Method::mmap, Method::mmap},
    {"mmap+populate", Method::mmap_populate, Method::mmap_populate},
    {"mmap+madvise", Method::mmap_seq, Method::mmap_rand},
    {"mmap+huge", Method::mmap_huge, Method::mmap_huge},
    {"mmap+nohuge", Method::mmap_nohuge, Method::mmap_nohuge},
};
Method method_of(const Column& c, Pattern p) {
  return p == Pattern::seq ? c.seq : c.rand;
}


struct ReadPass {
  double seconds = 0;
  std::uint64_t checksum = 0;
  std::optional<std::uint64_t> disk_read;  // /proc/self/io read_bytes delta
  std::optional<std::uint64_t> file_pmd;   // smaps FilePmdMapped after the scan
  bool cold_verified = false;
};

struct ReadRow {
  Pattern pattern = Pattern::seq;
  Cache cache = Cache::warm;
  std::uint64_t block = 0;
  Method method = Method::read;
  std::uint64_t ops = 0;           // blocks read per pass
  std::uint64_t bytes = 0;         // bytes consumed per pass
  std::uint64_t unique_bytes = 0;  // distinct file bytes touched per pass
  std::vector<ReadPass> passes;
  // derived
  double median_seconds = 0, gibps = 0, ratio = 0;
  bool cold_verified = false;
};

struct WritePass {
  double seconds = 0;
  std::optional<std::uint64_t> task_written;    // /proc/self/io write_bytes delta
  std::optional<std::uint64_t> device_written;  // block device sectors written x 512
};

struct WriteRow {
  WritePattern pattern = WritePattern::seq;
  std::uint64_t block = 0;  // bytes per store/pwrite
  WriteMethod method = WriteMethod::write;
  std::uint64_t ops = 0;
  std::uint64_t changed = 0;  // bytes the program changed per pass
  std::vector<WritePass> passes;
  // derived
  double median_seconds = 0, rate = 0, ratio = 0;
  std::optional<std::uint64_t> task_written, device_written;
};

// ---------------------------------------------------------------- the study

class Study {
 public:
  Study(const Options& o, std::uint64_t size, std::vector<std::uint64_t> blocks)
      : opt_(o), size_(size), blocks_(std::move(blocks)) {}
  ~Study();
  int run();

 private:
  void progress(const std::string& what);
  void prepare_file();
  void warm_up();
  bool evict();

  std::vector<std::uint64_t> random_offsets(std::uint64_t block, std::uint64_t& unique) const;
  ReadPass read_pass(Method m, Pattern p, std::uint64_t bs,
                     const std::vector<std::uint64_t>& offsets, Buffer& buf);
  void run_read_case(Pattern p, Cache c, std::uint64_t bs);
  void verify_checksum(const ReadRow& row, const ReadPass& pass);

  void run_write_case(WritePattern p, std::uint64_t bs);
  WritePass write_pass(WritePattern p, WriteMethod m, std::uint64_t bs, unsigned salt,
                       const std::vector<std::uint64_t>& offsets);
  std::optional<std::uint64_t> device_sectors_written();

  void derive();
  std::vector<std::string> verdict() const;
  void print_text(const std::vector<std::string>& summary) const;
  nlohmann::json to_json(const std::vector<std::string>& summary) const;
  void plot(const std::string& png) const;

  const ReadRow* find(Pattern p, Cache c, std::uint64_t bs, Method m) const;

  const Options& opt_;
  std::uint64_t size_;
  std::vector<std::uint64_t> blocks_;
  std::uint64_t t_start_ = pal::monotonic_ns();

  int fd_ = -1;  // kept open for eviction and stat; passes open their own
  bool created_ = false;
  bool remove_at_exit_ = false;
  pal::FileInfo info_{};
  pal::SystemInfo sys_{};
  bool device_stats_ = false;
  bool drop_all_ = false;
  bool cold_possible_ = true;
  unsigned warm_retries_ = 0;
  std::vector<std::string> notes_;

  std::vector<ReadRow> reads_;
  std::vector<WriteRow> writes_;
  // First checksum seen for each (pattern, block): every later pass must match it.
  std::map<std::pair<Pattern, std::uint64_t>, std::pair<std::uint64_t, std::string>> reference_;
};

Study::~Study() {
  if (fd_ >= 0) (void)pal::close_fd(fd_);
  if (remove_at_exit_) (void)pal::unlink_path(opt_.file.c_str());
}

void Study::progress(const std::string& what) {
  if (opt_.quiet) return;
  const double t = static_cast<double>(pal::monotonic_ns() - t_start_) / 1e9;
  fmt::print(stderr, "bench io [{:6.1f}s] {}\n", t, what);
  std::fflush(stderr);
}

void Study::prepare_file() {
  const char* path = opt_.file.c_str();
  fd_ = check(pal::open_file(path, pal::kOpenReadWrite | pal::kOpenCreate),
              fmt::format("cannot open the test file '{}'", opt_.file));
  info_ = check(pal::stat_fd(fd_), fmt::format("cannot stat '{}'", opt_.file));
  if (info_.type != pal::FileType::regular)
    throw mapheap::error(
        EINVAL, fmt::format("mapheap bench io: '{}' is not a regular file", opt_.file), opt_.file);
  if (info_.size > 0) {
    unsigned char head[sizeof(kMagic)] = {};
    auto r = pal::pread_fd(fd_, head, sizeof(head), 0);
    if (!r || r.value() != sizeof(head) || std::memcmp(head, kMagic, sizeof(kMagic)) != 0)
      throw mapheap::error(
          EEXIST,
          fmt::format("mapheap bench io: refusing to use '{}': it exists ({} bytes) and is not a "
                      "mapheap bench file (no 'mapheap-bench-io' header), and the write study "
                      "would overwrite it; remove it or pass another --file",
                      opt_.file, info_.size),
          opt_.file, info_.size, "check");
  }
  remove_at_exit_ = !opt_.keep;
  if (info_.size == size_) return;

  progress(fmt::format("creating the {} test file {}", human_bytes(static_cast<double>(size_)),
                       opt_.file));
  check(pal::truncate_fd(fd_, 0), "cannot truncate the test file");
  // Reserve the blocks first, so that a full disk is reported before any
  // measuring, not as a failed write halfway through.
  if (auto s = pal::allocate_fd(fd_, 0, size_); !s) {
    if (s.error().code != EOPNOTSUPP) fail(s.error(), "cannot allocate the test file");
    check(pal::truncate_fd(fd_, size_), "cannot size the test file");
  }
  const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(size_, 4 * kMiB));
  Buffer buf(chunk);
  SplitMix rng{kSeed};
  for (std::uint64_t off = 0; off < size_; off += chunk) {
    fill_random(buf.data(), chunk, rng);
    if (off == 0) put_header(buf.data(), size_);
    check(pal::pwrite_all(fd_, buf.data(), chunk, off), "cannot write the test file");
  }
  check(pal::datasync(fd_), "cannot flush the test file");
  created_ = true;
  info_ = check(pal::stat_fd(fd_), "cannot stat the test file");
}

void Study::warm_up() {
  Buffer buf(static_cast<std::size_t>(std::min<std::uint64_t>(size_, kMiB)));
  for (std::uint64_t off = 0; off < size_;) {
    const auto n = check(pal::pread_fd(fd_, buf.data(), buf.size(), off), "warm-up read");
    if (n == 0) break;
    off += n;
  }
}

// Evicts the file's pages before a cold pass. False (with a note) if that
// cannot be done; --drop-caches additionally drops every clean page (root).
bool Study::evict() {
  if (drop_all_) {
    if (auto s = pal::drop_page_cache(); !s) {
      notes_.push_back("--drop-caches: " + describe(s.error()) +
                       "; using per-file eviction (POSIX_FADV_DONTNEED) only");
      drop_all_ = false;
    }
  }
  if (auto s = pal::drop_file_cache(fd_); !s) {
    notes_.push_back("cold passes skipped: cannot evict the file's pages: " + describe(s.error()));
    return false;
  }
  return true;
}

// Reading more than 0.1% of a pass's bytes from the disk (at least 256 KiB, to
// leave room for metadata) means the pass was not served by the page cache.
constexpr unsigned kWarmRetries = 3;
bool looks_warm(const ReadPass& pass, const ReadRow& row) {
  const double limit = std::max(0.001 * static_cast<double>(row.bytes), 256.0 * 1024);
  return !pass.disk_read || static_cast<double>(*pass.disk_read) <= limit;
}

std::vector<std::uint64_t> Study::random_offsets(std::uint64_t block, std::uint64_t& unique) const {
  const std::uint64_t nblocks = size_ / block;
  const std::uint64_t ops = std::min(nblocks, opt_.random_ops);
  SplitMix rng{kSeed ^ block};
  std::vector<std::uint64_t> out;
  out.reserve(static_cast<std::size_t>(ops));
  std::vector<bool> seen(static_cast<std::size_t>(nblocks));
  unique = 0;
  for (std::uint64_t i = 0; i < ops; ++i) {
    const std::uint64_t idx = rng.next() % nblocks;
    if (!seen[static_cast<std::size_t>(idx)]) {
      seen[static_cast<std::size_t>(idx)] = true;
      unique += block;
    }
    out.push_back(idx * block);
  }
  return out;
}

ReadPass Study::read_pass(Method m, Pattern p, std::uint64_t bs,
                          const std::vector<std::uint64_t>& offsets, Buffer& buf) {
  ReadPass pass;
  const std::size_t block = static_cast<std::size_t>(bs);
  const std::size_t len = static_cast<std::size_t>(size_);
  // A fresh descriptor per pass: readahead state lives in the open file, and
  // read() needs its offset at 0.
  Fd fd(check(pal::open_file(opt_.file.c_str(), pal::kOpenRead), "cannot open the test file"));
  const auto io0 = pal::process_io();
  std::uint64_t h = 0;
  std::uint64_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;

  if (!is_mmap(m)) {
    // read() may return less than asked; a block is consumed only when full, so
    // that the fold sees the same blocks as the mapped scans do.
    auto fill = [&](std::uint64_t off, bool positional) {
      std::size_t got = 0;
      while (got < block) {
        auto r = positional ? pal::pread_fd(fd.get(), buf.data() + got, block - got, off + got)
                            : pal::read_fd(fd.get(), buf.data() + got, block - got);
        const std::size_t n = check(r, "reading the test file");
        if (n == 0)
          throw mapheap::error(EIO,
                               fmt::format("mapheap bench io: '{}' ended early (at {} of {} "
                                           "bytes); did something truncate it?",
                                           opt_.file, off + got, size_),
                               opt_.file, size_, "read");
        got += n;
      }
    };
    t0 = pal::monotonic_ns();
    if (p == Pattern::seq) {
      const bool positional = m == Method::pread;
      for (std::uint64_t off = 0; off < size_; off += bs) {
        fill(off, positional);
        h = fold(h, xor_block(buf.data(), block));
      }
    } else {
      for (std::uint64_t off : offsets) {
        fill(off, true);
        h = fold(h, xor_block(buf.data(), block));
      }
    }
    t1 = t2 = t3 = pal::monotonic_ns();
  } else {
    t0 = pal::monotonic_ns();
    void* addr = nullptr;
    if (m == Method::mmap_huge) {
      // A PMD mapping needs a 2 MiB aligned virtual range; the kernel does not
      // promise one for a file mapping, so reserve an aligned range and map over it.
      void* range = check(pal::reserve(len, pal::kHuge2M), "reserving an aligned range");
      auto r = pal::map(range, len, pal::Prot::read, pal::kMapShared | pal::kMapFixed, fd.get(), 0);
      if (!r) {
        (void)pal::unmap(range, len);
        fail(r.error(), "mapping the test file");
      }
      addr = r.value();
    } else {
      const std::uint32_t flags =
          pal::kMapShared | (m == Method::mmap_populate ? pal::kMapPopulate : 0u);
      addr = check(pal::map(nullptr, len, pal::Prot::read, flags, fd.get(), 0),
                   "mapping the test file");
    }
    MapGuard guard(addr, len);
    std::optional<pal::Advice> advice;
    if (m == Method::mmap_seq) advice = pal::Advice::sequential;
    if (m == Method::mmap_rand) advice = pal::Advice::random;
    if (m == Method::mmap_huge) advice = pal::Advice::hugepage;
    if (m == Method::mmap_nohuge) advice = pal::Advice::nohugepage;
    if (advice) check(pal::advise(addr, len, *advice), "madvise on the file mapping");

    const auto* base = static_cast<const unsigned char*>(addr);
    if (p == Pattern::seq) {
      for (std::uint64_t off = 0; off < size_; off += bs) h = fold(h, xor_block(base + off, block));
    } else {
      for (std::uint64_t off : offsets) h = fold(h, xor_block(base + off, block));
    }
    t1 = pal::monotonic_ns();
    // What the kernel mapped with PMDs: read outside the timed region.
    if (auto sm = pal::smaps_range(addr, len)) pass.file_pmd = sm.value().file_huge;
    t2 = pal::monotonic_ns();
    guard.unmap_now();
    t3 = pal::monotonic_ns();
  }
  pass.seconds = static_cast<double>((t1 - t0) + (t3 - t2)) / 1e9;
  pass.checksum = h;
  const auto io1 = pal::process_io();
  if (io0 && io1) pass.disk_read = io1.value().read_bytes - io0.value().read_bytes;
  return pass;
}

void Study::verify_checksum(const ReadRow& row, const ReadPass& pass) {
  const std::string who = fmt::format("{} {} {} {}", name(row.pattern), name(row.cache),
                                      block_label(row.block), name(row.method));
  auto [it, inserted] = reference_.try_emplace({row.pattern, row.block}, pass.checksum, who);
  if (inserted || it->second.first == pass.checksum) return;
  throw mapheap::error(
      EIO,
      fmt::format("mapheap bench io: checksum mismatch: {} consumed data with checksum {:#018x}, "
                  "but {} saw {:#018x} for the same blocks; the methods did not read the same "
                  "bytes (was '{}' modified during the run?)",
                  who, pass.checksum, it->second.second, it->second.first, opt_.file),
      opt_.file, size_, "check");
}

void Study::run_read_case(Pattern p, Cache c, std::uint64_t bs) {
  std::uint64_t unique = size_;
  std::vector<std::uint64_t> offsets;
  if (p == Pattern::rand) offsets = random_offsets(bs, unique);
  const std::uint64_t ops = p == Pattern::seq ? size_ / bs : offsets.size();
  const std::vector<Method> methods = methods_for(p);
  progress(fmt::format("read {} {} {}: {} x {} methods", name(p), name(c), block_label(bs),
                       opt_.repeat, methods.size()));

  const std::size_t first = reads_.size();
  for (Method m : methods) {
    ReadRow row;
    row.pattern = p;
    row.cache = c;
    row.block = bs;
    row.method = m;
    row.ops = ops;
    row.bytes = ops * bs;
    row.unique_bytes = unique;
    reads_.push_back(std::move(row));
  }
  Buffer buf(static_cast<std::size_t>(bs));
  for (unsigned rep = 0; rep < opt_.repeat; ++rep) {
    for (std::size_t k = 0; k < methods.size(); ++k) {
      const std::size_t i = (k + rep) % methods.size();
      ReadRow& row = reads_[first + i];
      // Re-warm before every warm pass, not once per case: random passes leave
      // parts of the file untouched for a while, and proactive reclaim (DAMON
      // pageout, as on VMs that hand idle memory back to the host) evicts idle
      // page cache within tens of seconds.
      if (c == Cache::warm) warm_up();
      if (c == Cache::cold && !evict()) {
        cold_possible_ = false;
        reads_.erase(reads_.begin() + static_cast<std::ptrdiff_t>(first), reads_.end());
        return;
      }
      ReadPass pass = read_pass(row.method, p, bs, offsets, buf);
      // A warm pass that had to go to the disk is not a sample of the warm
      // case (something evicted the file meanwhile): re-warm and run it again,
      // a bounded number of times, and count it.
      for (unsigned retry = 0; c == Cache::warm && retry < kWarmRetries && !looks_warm(pass, row);
           ++retry) {
        ++warm_retries_;
        warm_up();
        pass = read_pass(row.method, p, bs, offsets, buf);
      }
      verify_checksum(row, pass);
      if (c == Cache::cold && pass.disk_read) {
        // Every distinct byte must have come from the disk; readahead may add more.
        pass.cold_verified =
            static_cast<double>(*pass.disk_read) >= 0.9 * static_cast<double>(row.unique_bytes);
      }
      row.passes.push_back(pass);
    }
  }
}

std::optional<std::uint64_t> Study::device_sectors_written() {
  if (!device_stats_) return std::nullopt;
  auto r = pal::block_device_stats(info_.dev);
  if (!r) return std::nullopt;
  return r.value().sectors_written;
}

WritePass Study::write_pass(WritePattern p, WriteMethod m, std::uint64_t bs, unsigned salt,
                            const std::vector<std::uint64_t>& offsets) {
  const std::size_t block = static_cast<std::size_t>(bs);
  const std::size_t len = static_cast<std::size_t>(size_);
  // Content differs on every pass, so that each pass really changes the bytes.
  SplitMix rng{kSeed + 0x1000 * salt + bs};
  std::vector<unsigned char> src;
  if (p == WritePattern::seq) {
    src.resize(block);
    fill_random(src.data(), block, rng);
    put_header(src.data(), size_);  // block 0 keeps the file recognisable as ours
  } else {
    src.resize(offsets.size() * kUpdateBytes);
    fill_random(src.data(), src.size(), rng);
  }
  // The last word of each sequential block carries its index, so that blocks differ.
  auto stamp = [salt](std::uint64_t i) { return (i << 8) | salt | 0x0101010101010101ull; };

  Fd fd(check(pal::open_file(opt_.file.c_str(), pal::kOpenReadWrite),
              "cannot open the test file for writing"));
  WritePass pass;
  const auto io0 = pal::process_io();
  const auto dev0 = device_sectors_written();
  const std::uint64_t t0 = pal::monotonic_ns();
  if (m == WriteMethod::write) {
    if (p == WritePattern::seq) {
      for (std::uint64_t off = 0, i = 0; off < size_; off += bs, ++i) {
        const std::uint64_t s = stamp(i);
        std::memcpy(src.data() + block - 8, &s, 8);
        check(pal::pwrite_all(fd.get(), src.data(), block, off), "writing the test file");
      }
    } else {
      for (std::size_t k = 0; k < offsets.size(); ++k)
        check(pal::pwrite_all(fd.get(), src.data() + k * kUpdateBytes, kUpdateBytes, offsets[k]),
              "writing the test file");
    }
    check(pal::datasync(fd.get()), "fdatasync of the test file");
  } else {
    void* addr = check(pal::map(nullptr, len, pal::Prot::read_write, pal::kMapShared, fd.get(), 0),
                       "mapping the test file for writing");
    MapGuard guard(addr, len);
    auto* base = static_cast<unsigned char*>(addr);
    if (p == WritePattern::seq) {
      for (std::uint64_t off = 0, i = 0; off < size_; off += bs, ++i) {
        const std::uint64_t s = stamp(i);
        std::memcpy(base + off, src.data(), block - 8);
        std::memcpy(base + off + block - 8, &s, 8);
      }
    } else {
      for (std::size_t k = 0; k < offsets.size(); ++k)
        std::memcpy(base + offsets[k], src.data() + k * kUpdateBytes, kUpdateBytes);
    }
    check(pal::sync_memory(addr, len), "msync(MS_SYNC) of the file mapping");
    guard.unmap_now();
  }
  const std::uint64_t t1 = pal::monotonic_ns();
  const auto io1 = pal::process_io();
  const auto dev1 = device_sectors_written();
  pass.seconds = static_cast<double>(t1 - t0) / 1e9;
  if (io0 && io1) pass.task_written = io1.value().write_bytes - io0.value().write_bytes;
  if (dev0 && dev1) pass.device_written = (*dev1 - *dev0) * 512;

  // Read back what was written: a write path that lost data would otherwise
  // look fast.
  Buffer check_buf(std::max<std::size_t>(block, kUpdateBytes));
  auto read_exact = [&](std::uint64_t off, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      const std::size_t r =
          check(pal::pread_fd(fd_, check_buf.data() + got, n - got, off + got), "reading back");
      if (r == 0) break;
      got += r;
    }
    return got == n;
  };
  auto mismatch = [&](std::uint64_t off) {
    return mapheap::error(EIO,
                          fmt::format("mapheap bench io: {} {} pass: the data read back at "
                                      "offset {} differs from what was written",
                                      name(p), name(m), off),
                          opt_.file, size_, "check");
  };
  if (p == WritePattern::seq) {
    for (std::uint64_t off = 0, i = 0; off < size_; off += bs, ++i) {
      const std::uint64_t s = stamp(i);
      std::memcpy(src.data() + block - 8, &s, 8);
      if (!read_exact(off, block) || std::memcmp(check_buf.data(), src.data(), block) != 0)
        throw mismatch(off);
    }
  } else {
    for (std::size_t k = 0; k < offsets.size(); ++k)
      if (!read_exact(offsets[k], kUpdateBytes) ||
          std::memcmp(check_buf.data(), src.data() + k * kUpdateBytes, kUpdateBytes) != 0)
        throw mismatch(offsets[k]);
  }
  return pass;
}

void Study::run_write_case(WritePattern p, std::uint64_t bs) {
  std::vector<std::uint64_t> offsets;
  if (p == WritePattern::sparse) {
    // Distinct cache-line slots, never slot 0 (the header).
    static_assert(kHeaderBytes <= kUpdateBytes, "slot 0 must cover the whole header");
    const std::uint64_t slots = size_ / kUpdateBytes;
    std::vector<bool> used(static_cast<std::size_t>(slots));
    used[0] = true;
    SplitMix rng{kSeed ^ 0x5a5a5a5aull};
    while (offsets.size() < opt_.updates) {
      const std::uint64_t s = rng.next() % slots;
      if (used[static_cast<std::size_t>(s)]) continue;
      used[static_cast<std::size_t>(s)] = true;
      offsets.push_back(s * kUpdateBytes);
    }
  }
  const std::uint64_t ops = p == WritePattern::seq ? size_ / bs : offsets.size();
  const std::uint64_t unit = p == WritePattern::seq ? bs : kUpdateBytes;
  progress(fmt::format(
      "write {} {}: {} x 2 methods", name(p),
      p == WritePattern::seq ? block_label(bs) : fmt::format("{} x 64B", offsets.size()),
      opt_.repeat));
  const std::size_t first = writes_.size();
  for (WriteMethod m : {WriteMethod::write, WriteMethod::mmap}) {
    WriteRow row;
    row.pattern = p;
    row.block = unit;
    row.method = m;
    row.ops = ops;
    row.changed = ops * unit;
    writes_.push_back(std::move(row));
  }
  for (unsigned rep = 0; rep < opt_.repeat; ++rep) {
    for (std::size_t k = 0; k < 2; ++k) {
      WriteRow& row = writes_[first + (k + rep) % 2];
      const unsigned salt = static_cast<unsigned>((writes_.size() * 16 + rep * 2 + k) & 0xff);
      row.passes.push_back(write_pass(p, row.method, unit, salt, offsets));
    }
  }
}

const ReadRow* Study::find(Pattern p, Cache c, std::uint64_t bs, Method m) const {
  for (const ReadRow& r : reads_)
    if (r.pattern == p && r.cache == c && r.block == bs && r.method == m) return &r;
  return nullptr;
}

void Study::derive() {
  for (ReadRow& r : reads_) {
    std::vector<double> s;
    for (const ReadPass& p : r.passes) s.push_back(p.seconds);
    r.median_seconds = median(s);
    r.gibps = static_cast<double>(r.bytes) / kGiBd / r.median_seconds;
    r.cold_verified = r.cache == Cache::cold && !r.passes.empty();
    for (const ReadPass& p : r.passes) r.cold_verified = r.cold_verified && p.cold_verified;
  }
  // A warm pass that still went to the disk after its retries was not warm:
  // say so rather than let it pass as a slow method (a file larger than the
  // free memory does this).
  if (warm_retries_ > 0)
    notes_.push_back(fmt::format(
        "{} warm pass{} read from the disk (the file's pages had been "
        "evicted meanwhile) and {} re-run after re-reading the file",
        warm_retries_, warm_retries_ == 1 ? "" : "es", warm_retries_ == 1 ? "was" : "were"));
  for (const ReadRow& r : reads_) {
    if (r.cache != Cache::warm) continue;
    std::uint64_t most = 0;
    bool cold_pass = false;
    for (const ReadPass& p : r.passes) {
      most = std::max(most, p.disk_read.value_or(0));
      cold_pass = cold_pass || !looks_warm(p, r);
    }
    if (cold_pass)
      notes_.push_back(
          fmt::format("{} {} {} {}: a warm pass read {} from the disk; the page "
                      "cache did not hold the whole file",
                      name(r.pattern), name(r.cache), block_label(r.block), name(r.method),
                      human_bytes(static_cast<double>(most))));
  }
  for (ReadRow& r : reads_) {
    const ReadRow* base = find(r.pattern, r.cache, r.block, Method::read);
    r.ratio = base != nullptr ? r.gibps / base->gibps : std::nan("");
  }
  for (WriteRow& w : writes_) {
    std::vector<double> s;
    std::vector<std::uint64_t> task, dev;
    for (const WritePass& p : w.passes) {
      s.push_back(p.seconds);
      if (p.task_written) task.push_back(*p.task_written);
      if (p.device_written) dev.push_back(*p.device_written);
    }
    w.median_seconds = median(s);
    w.rate = w.pattern == WritePattern::seq
                 ? static_cast<double>(w.changed) / kGiBd / w.median_seconds
                 : static_cast<double>(w.ops) / w.median_seconds;
    if (task.size() == w.passes.size()) w.task_written = median_u64(task);
    if (dev.size() == w.passes.size()) w.device_written = median_u64(dev);
  }
  for (WriteRow& w : writes_) {
    for (const WriteRow& b : writes_)
      if (b.pattern == w.pattern && b.block == w.block && b.method == WriteMethod::write)
        w.ratio = w.rate / b.rate;
  }
}

// ---------------------------------------------------------------- the verdict

// The seed's claim, "read() costs two to three times as much as mmap", is a
// claim about time per byte: it holds for a row when the best mmap variant
// moves at least twice read()'s throughput.
constexpr double kClaimLow = 2.0;
constexpr double kClaimHigh = 3.0;
// Passes of one method that differ by more than this make a 2x ratio shaky.
constexpr double kNoisySpread = 1.5;

std::vector<std::string> Study::verdict() const {
  std::vector<std::string> out;
  struct Case {
    Pattern p = Pattern::seq;
    Cache c = Cache::warm;
    std::uint64_t bs = 0;
    double best = 0;
    Method best_method = Method::mmap;
    double plain = 0;
    double spread = 1;  // slowest / fastest pass of read() or of the best mmap variant
  };
  auto spread_of = [](const ReadRow& r) {
    double lo = INFINITY, hi = 0;
    for (const ReadPass& p : r.passes) {
      lo = std::min(lo, p.seconds);
      hi = std::max(hi, p.seconds);
    }
    return lo > 0 && hi > 0 ? hi / lo : 1.0;
  };
  std::vector<Case> cases;
  for (const ReadRow& r : reads_) {
    if (r.method != Method::read) continue;
    Case cs;
    cs.p = r.pattern;
    cs.c = r.cache;
    cs.bs = r.block;
    const ReadRow* best_row = nullptr;
    for (const ReadRow& m : reads_) {
      if (m.pattern != r.pattern || m.cache != r.cache || m.block != r.block || !is_mmap(m.method))
        continue;
      if (m.ratio > cs.best) {
        cs.best = m.ratio;
        cs.best_method = m.method;
        best_row = &m;
      }
      if (m.method == Method::mmap) cs.plain = m.ratio;
    }
    cs.spread = std::max(spread_of(r), best_row != nullptr ? spread_of(*best_row) : 1.0);
    cases.push_back(cs);
  }
  if (cases.empty()) return out;
  auto label = [](const Case& cs) {
    return fmt::format("{} {} {}", name(cs.p), name(cs.c), block_label(cs.bs));
  };

  std::vector<std::string> holds, within, faster_read;
  std::size_t plain_wins = 0, shaky = 0;
  for (const Case& cs : cases) {
    if (cs.best >= kClaimLow) {
      // A ratio from passes that spread more than the margin it claims is
      // reported, but marked as not conclusive.
      const bool noisy = cs.spread > kNoisySpread;
      if (noisy) ++shaky;
      holds.push_back(fmt::format(
          "{} ({:.2f}x, {}{})", label(cs), cs.best, name(cs.best_method),
          noisy ? fmt::format(", inconclusive: passes varied {:.1f}x", cs.spread) : std::string()));
      if (cs.best <= kClaimHigh) within.push_back(label(cs));
    }
    if (cs.best < 1.0)
      faster_read.push_back(fmt::format("{} (best mmap {:.2f}x)", label(cs), cs.best));
    if (cs.plain > 1.0) ++plain_wins;
  }
  if (holds.empty()) {
    out.push_back(fmt::format(
        "Seed claim \"read() costs 2-3x as much as mmap\": does NOT hold in any of the {} read "
        "cases measured (no mmap variant reached 2x read()'s throughput).",
        cases.size()));
  } else {
    std::string list;
    for (const auto& h : holds) list += (list.empty() ? "" : "; ") + h;
    out.push_back(fmt::format(
        "Seed claim \"read() costs 2-3x as much as mmap\": holds in {} of {} read cases (best "
        "mmap variant >= 2x read()){}: {}.{}",
        holds.size(), cases.size(),
        shaky > 0 ? fmt::format(", {} of them inconclusive", shaky) : std::string(), list,
        within.size() < holds.size() ? " Where it holds by more than 3x, the claim understates it."
                                     : ""));
  }
  // Range of the best ratio per (pattern, cache).
  for (Pattern p : {Pattern::seq, Pattern::rand}) {
    for (Cache c : {Cache::warm, Cache::cold}) {
      double lo = INFINITY, hi = 0;
      std::string lo_at, hi_at;
      for (const Case& cs : cases) {
        if (cs.p != p || cs.c != c) continue;
        if (cs.best < lo) {
          lo = cs.best;
          lo_at = block_label(cs.bs);
        }
        if (cs.best > hi) {
          hi = cs.best;
          hi_at = block_label(cs.bs);
        }
      }
      if (hi == 0) continue;
      out.push_back(fmt::format("{} {}: best mmap variant / read() = {:.2f}x ({}) to {:.2f}x ({}).",
                                name(p), name(c), lo, lo_at, hi, hi_at));
    }
  }
  out.push_back(fmt::format("Plain mmap (no flags, no advice) beats read() in {} of {} cases.",
                            plain_wins, cases.size()));
  if (opt_.repeat > 1) {
    // How far the passes of one method spread: a ratio between methods that is
    // smaller than this spread is not a difference this run can show.
    std::string spread;
    for (Pattern p : {Pattern::seq, Pattern::rand}) {
      for (Cache c : {Cache::warm, Cache::cold}) {
        double worst = 0;
        for (const ReadRow& r : reads_) {
          if (r.pattern != p || r.cache != c || r.passes.empty()) continue;
          double lo = INFINITY, hi = 0;
          for (const ReadPass& ps : r.passes) {
            lo = std::min(lo, ps.seconds);
            hi = std::max(hi, ps.seconds);
          }
          if (lo > 0) worst = std::max(worst, hi / lo);
        }
        if (worst > 0)
          spread +=
              fmt::format("{}{} {} {:.2f}x", spread.empty() ? "" : ", ", name(p), name(c), worst);
      }
    }
    if (!spread.empty())
      out.push_back("Spread of one method's passes (slowest / fastest, worst row): " + spread +
                    "; differences between methods smaller than that are within the noise.");
  }
  {
    // mmap+nohuge maps with 4 KiB page-table entries only, as on a kernel or
    // filesystem without large folios: it shows how much of mmap's lead comes
    // from huge mappings (fewer faults, fewer TLB misses).
    double lo = INFINITY, hi = 0;
    std::uint64_t pmd_plain = 0;
    for (const ReadRow& r : reads_) {
      if (r.method == Method::mmap_nohuge && r.cache == Cache::warm) {
        lo = std::min(lo, r.ratio);
        hi = std::max(hi, r.ratio);
      }
      if (r.method == Method::mmap)
        for (const ReadPass& p : r.passes) pmd_plain = std::max(pmd_plain, p.file_pmd.value_or(0));
    }
    if (hi > 0)
      out.push_back(fmt::format(
          "Warm, with 4 KiB page-table entries only (mmap+nohuge): {:.2f}x to {:.2f}x read(); "
          "plain mmap had up to {} of the file mapped by 2 MiB entries.",
          lo, hi, human_bytes(static_cast<double>(pmd_plain))));
  }
  if (!faster_read.empty()) {
    std::string list;
    for (const auto& f : faster_read) list += (list.empty() ? "" : "; ") + f;
    out.push_back("read() beats every mmap variant in: " + list + ".");
  }

  for (const WriteRow& w : writes_) {
    if (w.method != WriteMethod::mmap) continue;
    const WriteRow* b = nullptr;
    for (const WriteRow& x : writes_)
      if (x.pattern == w.pattern && x.block == w.block && x.method == WriteMethod::write) b = &x;
    if (b == nullptr) continue;
    auto amp = [&](const WriteRow& r) {
      std::string s;
      if (r.task_written)
        s += fmt::format("task {:.1f}x",
                         static_cast<double>(*r.task_written) / static_cast<double>(r.changed));
      if (r.device_written)
        s += fmt::format("{}device {:.1f}x", s.empty() ? "" : ", ",
                         static_cast<double>(*r.device_written) / static_cast<double>(r.changed));
      return s.empty() ? std::string("not measurable here") : s;
    };
    if (w.pattern == WritePattern::seq)
      out.push_back(fmt::format(
          "Sequential overwrite in {} blocks + sync: mmap stores+msync run at {:.2f}x the "
          "throughput of pwrite+fdatasync; written/changed: write {}; mmap {}.",
          block_label(w.block), w.ratio, amp(*b), amp(w)));
    else
      out.push_back(fmt::format(
          "Sparse updates ({} x 64 B) + sync: bytes written per byte changed: pwrite+fdatasync "
          "{}; mmap stores+msync {}; mmap took {:.2f}x the time of pwrite.",
          w.ops, amp(*b), amp(w), w.median_seconds / b->median_seconds));
  }
  return out;
}

// ---------------------------------------------------------------- output

const char* fs_name(std::uint64_t magic) {
  switch (magic) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794c7630: return "overlayfs";
    case 0x6969: return "nfs";
    case 0x2fc12fc1: return "zfs";
    case 0xF2F52010: return "f2fs";
    case 0x958458f6: return "hugetlbfs";
    default: return "other";
  }
}

void Study::print_text(const std::vector<std::string>& summary) const {
  fmt::print("mapheap bench io: {} file {} ({}{}), {} run{} per cell, medians\n",
             human_bytes(static_cast<double>(size_)), opt_.file, fs_name(info_.fs_magic),
             created_ ? ", created for this run" : "", opt_.repeat, opt_.repeat == 1 ? "" : "s");
  fmt::print("kernel {}, {} CPUs, page size {}, THP enabled={}\n\n", sys_.kernel, sys_.cpus_online,
             sys_.page_size, pal::thp_mode_name(sys_.thp_enabled));

  if (!reads_.empty()) {
    fmt::print("Reads: median GiB/s, and in parentheses the ratio to read() of the same row\n");
    fmt::print(
        "(>1 = faster than read(); mmap+madvise = MADV_SEQUENTIAL for seq, MADV_RANDOM "
        "for rand;\n huge/nohuge = MADV_HUGEPAGE/MADV_NOHUGEPAGE)\n");
    fmt::print("{:<15}", "pattern cache");
    for (const Column& c : kColumns) fmt::print("{:>14}", c.title);
    fmt::print("\n");
    for (const ReadRow& r : reads_) {
      if (r.method != Method::read) continue;
      const bool not_cold = r.cache == Cache::cold && !r.cold_verified;
      fmt::print("{:<15}", fmt::format("{:<4} {}{} {}", name(r.pattern), name(r.cache),
                                       not_cold ? "!" : "", block_label(r.block)));
      for (const Column& c : kColumns) {
        const ReadRow* x = find(r.pattern, r.cache, r.block, method_of(c, r.pattern));
        if (x == nullptr)
          fmt::print("{:>14}", "-");
        else if (x->method == Method::read)
          fmt::print("{:>14.2f}", x->gibps);
        else
          fmt::print("{:>14}", fmt::format("{:.2f} ({:.2f}x)", x->gibps, x->ratio));
      }
      fmt::print("\n");
    }
    std::string ops;
    for (std::uint64_t bs : blocks_)
      if (const ReadRow* r = find(Pattern::rand, Cache::warm, bs, Method::read))
        ops += fmt::format("{}{}: {}", ops.empty() ? "" : ", ", block_label(bs), r->ops);
    if (!ops.empty())
      fmt::print(
          "rand: blocks read per pass (same offsets for every method, --random-ops "
          "caps them): {}\n",
          ops);
    std::size_t cold_rows = 0, not_cold_rows = 0;
    for (const ReadRow& r : reads_) {
      if (r.cache != Cache::cold) continue;
      ++cold_rows;
      if (!r.cold_verified) ++not_cold_rows;
    }
    if (not_cold_rows > 0)
      fmt::print(
          "cold!: in some pass of the row /proc/self/io did not show the bytes coming "
          "from the disk: it was not (entirely) cold\n");
    else if (cold_rows > 0)
      fmt::print(
          "cold: every cold pass read at least 90% of its distinct bytes from the disk "
          "(/proc/self/io read_bytes)\n");
    // What the kernel did with huge pages for the file: shown, not assumed.
    std::string pmd;
    for (Method m : all_methods()) {
      if (!is_mmap(m)) continue;
      std::optional<std::uint64_t> most;
      for (const ReadRow& r : reads_) {
        if (r.method != m) continue;
        for (const ReadPass& p : r.passes)
          if (p.file_pmd) most = std::max(most.value_or(0), *p.file_pmd);
      }
      if (most)
        pmd += fmt::format("{}{} {}", pmd.empty() ? "" : ", ", name(m),
                           human_bytes(static_cast<double>(*most)));
    }
    if (!pmd.empty())
      fmt::print(
          "smaps FilePmdMapped after a scan (file pages mapped by 2 MiB entries, most seen, "
          "of a {} mapping):\n  {}\n",
          human_bytes(static_cast<double>(size_)), pmd);
    fmt::print("\n");
  }

  if (!writes_.empty()) {
    fmt::print(
        "Writes: median of {} run{}; wrote = bytes the kernel wrote per pass, amp = wrote / "
        "changed\n(task: /proc/self/io write_bytes, counted as pages are dirtied; dev: "
        "the block device's sectors written, which include any other writer on it)\n",
        opt_.repeat, opt_.repeat == 1 ? "" : "s");
    fmt::print("{:<18}{:<8}{:>10}{:>17}{:>11}{:>13}{:>8}{:>13}{:>8}{:>8}\n", "pattern", "method",
               "time", "rate", "changed", "task wrote", "amp", "dev wrote", "amp", "ratio");
    for (const WriteRow& w : writes_) {
      const std::string pattern = w.pattern == WritePattern::seq
                                      ? fmt::format("seq {}", block_label(w.block))
                                      : fmt::format("sparse {}x64B", w.ops);
      const std::string rate = w.pattern == WritePattern::seq ? fmt::format("{:.2f} GiB/s", w.rate)
                                                              : fmt::format("{:.0f} upd/s", w.rate);
      auto bytes = [](const std::optional<std::uint64_t>& v) {
        return v ? human_bytes(static_cast<double>(*v)) : std::string("n/a");
      };
      auto amp = [&](const std::optional<std::uint64_t>& v) {
        return v ? fmt::format("{:.1f}", static_cast<double>(*v) / static_cast<double>(w.changed))
                 : std::string("-");
      };
      fmt::print("{:<18}{:<8}{:>10}{:>17}{:>11}{:>13}{:>8}{:>13}{:>8}{:>8}\n", pattern,
                 w.method == WriteMethod::write ? "write" : "mmap",
                 fmt::format("{:.3f} s", w.median_seconds), rate,
                 human_bytes(static_cast<double>(w.changed)), bytes(w.task_written),
                 amp(w.task_written), bytes(w.device_written), amp(w.device_written),
                 fmt::format("{:.2f}x", w.ratio));
    }
    fmt::print(
        "(write = pwrite + fdatasync; mmap = memcpy into a MAP_SHARED mapping + "
        "msync(MS_SYNC), mmap and munmap included; ratio = rate / write's rate)\n\n");
  }

  for (const auto& n : notes_) fmt::print("note: {}\n", n);
  if (!notes_.empty()) fmt::print("\n");
  fmt::print("Verdict (computed from this run):\n");
  for (const auto& s : summary) fmt::print("  * {}\n", s);
}

nlohmann::json Study::to_json(const std::vector<std::string>& summary) const {
  using nlohmann::json;
  json j;
  j["config"] = {{"file", opt_.file},
                 {"size", size_},
                 {"blocks", blocks_},
                 {"repeat", opt_.repeat},
                 {"random_ops_cap", opt_.random_ops},
                 {"updates", opt_.updates},
                 {"drop_caches", opt_.drop_caches},
                 {"created", created_}};
  j["machine"] = {{"kernel", sys_.kernel},
                  {"cpus", sys_.cpus_online},
                  {"page_size", sys_.page_size},
                  {"thp_enabled", pal::thp_mode_name(sys_.thp_enabled)},
                  {"filesystem", fs_name(info_.fs_magic)},
                  {"fs_magic", fmt::format("{:#x}", info_.fs_magic)}};
  json reads = json::array();
  for (const ReadRow& r : reads_) {
    json passes = json::array();
    for (const ReadPass& p : r.passes) {
      json jp = {{"seconds", p.seconds}};
      jp["disk_read_bytes"] = p.disk_read ? json(*p.disk_read) : json(nullptr);
      if (is_mmap(r.method)) jp["file_pmd_mapped"] = p.file_pmd ? json(*p.file_pmd) : json(nullptr);
      passes.push_back(jp);
    }
    json row = {{"pattern", name(r.pattern)},
                {"cache", name(r.cache)},
                {"block", r.block},
                {"method", name(r.method)},
                {"ops", r.ops},
                {"bytes_per_pass", r.bytes},
                {"median_seconds", r.median_seconds},
                {"median_gibps", r.gibps},
                {"ratio_to_read", r.ratio},
                {"checksum", fmt::format("{:#018x}", r.passes.empty() ? 0 : r.passes[0].checksum)},
                {"checksum_match", true},
                {"passes", passes}};
    if (r.cache == Cache::cold) row["cold_verified"] = r.cold_verified;
    reads.push_back(row);
  }
  j["reads"] = reads;
  json writes = json::array();
  for (const WriteRow& w : writes_) {
    json passes = json::array();
    for (const WritePass& p : w.passes)
      passes.push_back(
          {{"seconds", p.seconds},
           {"task_write_bytes", p.task_written ? json(*p.task_written) : json(nullptr)},
           {"device_write_bytes", p.device_written ? json(*p.device_written) : json(nullptr)}});
    auto opt = [](const std::optional<std::uint64_t>& v) { return v ? json(*v) : json(nullptr); };
    auto amp = [&](const std::optional<std::uint64_t>& v) {
      return v ? json(static_cast<double>(*v) / static_cast<double>(w.changed)) : json(nullptr);
    };
    writes.push_back(
        {{"pattern", name(w.pattern)},
         {"block", w.block},
         {"method", name(w.method)},
         {"ops", w.ops},
         {"bytes_changed", w.changed},
         {"median_seconds", w.median_seconds},
         {w.pattern == WritePattern::seq ? "median_gibps" : "updates_per_second", w.rate},
         {"ratio_to_write", w.ratio},
         {"task_write_bytes", opt(w.task_written)},
         {"device_write_bytes", opt(w.device_written)},
         {"task_amplification", amp(w.task_written)},
         {"device_amplification", amp(w.device_written)},
         {"verified", true},
         {"passes", passes}});
  }
  j["writes"] = writes;
  // Reaching the output means every pass matched its reference (a mismatch
  // fails the run), so this is a statement, not a computed flag.
  j["checksums_match"] = true;
  j["warm_retries"] = warm_retries_;
  j["notes"] = notes_;
  j["summary"] = summary;
  return j;
}

void Study::plot(const std::string& png) const {
  std::vector<BarChart> panels;
  auto read_panel = [&](Pattern p, const std::string& title) {
    BarChart c;
    c.title = title;
    c.ylabel = "GiB/s (median)";
    for (std::uint64_t bs : blocks_)
      if (find(p, Cache::warm, bs, Method::read) != nullptr) c.groups.push_back(block_label(bs));
    for (Method m : methods_for(p)) {
      c.series.push_back(name(m));
      c.colors.push_back(colour(m));
      std::vector<double> v;
      for (std::uint64_t bs : blocks_)
        if (find(p, Cache::warm, bs, Method::read) != nullptr) {
          const ReadRow* r = find(p, Cache::warm, bs, m);
          v.push_back(r != nullptr ? r->gibps : std::nan(""));
        }
      c.values.push_back(v);
    }
    if (!c.groups.empty()) panels.push_back(c);
  };
  read_panel(Pattern::seq, "Sequential read, warm page cache");
  read_panel(Pattern::rand, "Random read, warm page cache");

  {  // The claim, directly: mmap throughput / read() throughput, warm.
    BarChart c;
    c.title = "mmap / read() throughput, warm (claim: 2-3; dashed: 1, 2, 3)";
    c.ylabel = "ratio to read()";
    c.reference_lines = {1.0, 2.0, 3.0};
    std::vector<const ReadRow*> bases;
    for (const ReadRow& r : reads_)
      if (r.method == Method::read && r.cache == Cache::warm) {
        bases.push_back(&r);
        c.groups.push_back(fmt::format("{} {}", name(r.pattern), block_label(r.block)));
      }
    for (const Column& col : kColumns) {
      if (!is_mmap(col.seq)) continue;
      c.series.push_back(col.title);
      c.colors.push_back(colour(col.seq));
      std::vector<double> v;
      for (const ReadRow* b : bases) {
        const ReadRow* r = find(b->pattern, b->cache, b->block, method_of(col, b->pattern));
        v.push_back(r != nullptr ? r->ratio : std::nan(""));
      }
      c.values.push_back(v);
    }
    if (!c.groups.empty()) panels.push_back(c);
  }

  {  // Cold reads.
    BarChart c;
    c.title = "Cold page cache (file evicted before each pass)";
    c.ylabel = "GiB/s (median)";
    std::vector<const ReadRow*> bases;
    for (const ReadRow& r : reads_)
      if (r.method == Method::read && r.cache == Cache::cold) {
        bases.push_back(&r);
        c.groups.push_back(fmt::format("{} {}{}", name(r.pattern), block_label(r.block),
                                       r.cold_verified ? "" : " (not cold!)"));
      }
    for (Method m : all_methods()) {
      std::vector<double> v;
      bool any = false;
      for (const ReadRow* b : bases) {
        const ReadRow* r = find(b->pattern, Cache::cold, b->block, m);
        v.push_back(r != nullptr ? r->gibps : std::nan(""));
        any = any || r != nullptr;
      }
      if (!any) continue;
      c.series.push_back(name(m));
      c.colors.push_back(colour(m));
      c.values.push_back(v);
    }
    if (!c.groups.empty()) panels.push_back(c);
  }

  {  // Sequential overwrite.
    BarChart c;
    c.title = "Sequential overwrite + sync";
    c.ylabel = "GiB/s (median)";
    std::vector<double> w, m;
    for (const WriteRow& r : writes_) {
      if (r.pattern != WritePattern::seq) continue;
      if (r.method == WriteMethod::write) {
        c.groups.push_back(block_label(r.block));
        w.push_back(r.rate);
      } else {
        m.push_back(r.rate);
      }
    }
    c.series = {"write+fdatasync", "mmap+msync"};
    c.colors = {colour(Method::read), colour(Method::mmap)};
    c.values = {w, m};
    if (!c.groups.empty() && w.size() == m.size()) panels.push_back(c);
  }

  {  // Sparse updates: what the kernel wrote per byte the program changed.
    BarChart c;
    c.ylabel = "bytes written / bytes changed (log)";
    c.log_y = true;
    std::vector<double> task, dev;
    for (const WriteRow& r : writes_) {
      if (r.pattern != WritePattern::sparse) continue;
      c.title = fmt::format("Write amplification, {} sparse 64-byte updates + sync", r.ops);
      c.groups.push_back(r.method == WriteMethod::write ? "write+fdatasync" : "mmap+msync");
      const double changed = static_cast<double>(r.changed);
      task.push_back(r.task_written ? static_cast<double>(*r.task_written) / changed
                                    : std::nan(""));
      dev.push_back(r.device_written ? static_cast<double>(*r.device_written) / changed
                                     : std::nan(""));
    }
    c.series = {"task write_bytes", "device sectors"};
    c.colors = {"#d62728", "#17becf"};
    c.values = {task, dev};
    if (!c.groups.empty()) panels.push_back(c);
  }

  write_png(panels, png,
            fmt::format("mapheap bench io: {} file on {}, kernel {}, {} CPUs, medians of {}",
                        human_bytes(static_cast<double>(size_)), fs_name(info_.fs_magic),
                        sys_.kernel, sys_.cpus_online, opt_.repeat));
}

int Study::run() {
  sys_ = pal::system_info();
  if (!opt_.png.empty()) {
    try {
      check_gnuplot();
    } catch (const mapheap::error& e) {
      fmt::print(stderr, "{}\n", e.what());
      return kUnavailable;
    }
  }
  // Opened before measuring, so that a bad path fails in a second, not after minutes.
  std::ofstream json_out;
  if (!opt_.json_file.empty()) {
    json_out.open(opt_.json_file, std::ios::trunc);
    if (!json_out)
      throw mapheap::error(
          EACCES, fmt::format("mapheap bench io: cannot write --json-file '{}'", opt_.json_file),
          opt_.json_file);
  }
  prepare_file();

  if (!pal::process_io().ok())
    notes_.push_back(
        "/proc/self/io is not readable: cold passes cannot be verified and the "
        "task's write_bytes are not reported");
  if (auto d = pal::block_device_stats(info_.dev); d) {
    device_stats_ = true;
  } else {
    notes_.push_back("device bytes written are not reported: " + describe(d.error()));
  }
  drop_all_ = opt_.drop_caches;

  // Which cold cases: by default sequential only, at the smallest and largest
  // block (the two ends of the curve), so a default run stays within minutes
  // on a slow disk; --cold runs every case cold.
  std::vector<std::uint64_t> edge = {blocks_.front()};
  if (blocks_.back() != blocks_.front()) edge.push_back(blocks_.back());
  std::vector<std::pair<Pattern, std::uint64_t>> cold;
  if (!opt_.no_cold) {
    if (opt_.cold_all) {
      for (Pattern p : {Pattern::seq, Pattern::rand})
        for (std::uint64_t bs : blocks_) cold.emplace_back(p, bs);
    } else {
      for (std::uint64_t bs : edge) cold.emplace_back(Pattern::seq, bs);
    }
  }
  if (!cold.empty() && info_.on_tmpfs) {
    notes_.push_back(
        "cold passes skipped: the file is on tmpfs, whose pages are the file itself "
        "and cannot be evicted");
    cold.clear();
  }

  for (Pattern p : {Pattern::seq, Pattern::rand})
    for (std::uint64_t bs : blocks_) run_read_case(p, Cache::warm, bs);
  for (auto [p, bs] : cold) {
    if (!cold_possible_) break;
    run_read_case(p, Cache::cold, bs);
  }

  // Writes last: they change the file's contents, which the read checksums
  // compare. Warm first, so that no store or partial pwrite waits for a read.
  warm_up();
  for (std::uint64_t bs : edge) run_write_case(WritePattern::seq, bs);
  run_write_case(WritePattern::sparse, kUpdateBytes);

  derive();
  const std::vector<std::string> summary = verdict();
  if (opt_.json)
    fmt::print("{}\n", to_json(summary).dump(2));
  else
    print_text(summary);
  if (json_out.is_open()) {
    json_out << to_json(summary).dump(2) << '\n';
    json_out.close();
    if (!json_out)
      throw mapheap::error(
          EIO, fmt::format("mapheap bench io: writing --json-file '{}' failed", opt_.json_file),
          opt_.json_file);
  }
  if (!opt_.png.empty()) {
    progress("drawing " + opt_.png);
    plot(opt_.png);
    if (!opt_.json) fmt::print("plot: {}\n", opt_.png);
  }
  progress("done");
  return kOk;
}

}  // namespace

void add_bench_io(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* io = bench.add_subcommand(
      "io",
      "mmap versus read() on a file: sequential and random reads, warm and cold, and writes, "
      "every method checksummed; says whether \"read() costs 2-3x as much as mmap\" holds here");
  const CLI::Validator size_check(
      [](std::string& s) -> std::string {
        auto v = parse_size(s);
        if (!v) return "'" + s + "' is not a size (use e.g. 1G, 256M, 8M)";
        if (*v == 0) return "the size must be greater than zero";
        return {};
      },
      "SIZE");
  io->add_option("--size", o->size_text,
                 "File size, with an optional K/M/G suffix (binary); a multiple of the largest "
                 "block")
      ->capture_default_str()
      ->check(size_check);
  io->add_option("--blocks", o->blocks_text,
                 "Comma-separated block sizes, powers of two from 4K to 1G")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            std::string why;
            return parse_blocks(s, why) ? std::string() : why;
          },
          "LIST"));
  io->add_option("--file", o->file,
                 "Test file; created (filled with pseudo-random bytes) if missing or of another "
                 "size. An existing file that this command did not create is refused")
      ->capture_default_str();
  io->add_flag("--keep", o->keep, "Keep the test file afterwards (default: remove it)");
  io->add_option("--repeat", o->repeat, "Passes per method and case; the median is reported")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  io->add_option("--random-ops", o->random_ops,
                 "Cap on the blocks read per random pass (a pass reads min(size/block, this))")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 32));
  io->add_option("--updates", o->updates,
                 "Number of scattered 64-byte updates in the sparse write study")
      ->capture_default_str()
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 32));
  auto* cold = io->add_flag("--cold", o->cold_all,
                            "Run every read case cold as well (sequential and random, all "
                            "blocks); random cold reads wait on the disk and can take long. "
                            "Default: sequential cold at the smallest and largest block");
  auto* no_cold = io->add_flag("--no-cold", o->no_cold, "Skip the cold-cache reads");
  cold->excludes(no_cold);
  io->add_flag("--drop-caches", o->drop_caches,
               "Before each cold pass also drop the whole page cache (needs root); the file's "
               "own pages are always evicted with POSIX_FADV_DONTNEED");
  io->add_flag("--json", o->json, "Print the results as JSON instead of tables");
  io->add_option("--json-file", o->json_file,
                 "Also write the results as JSON to this file (the report still goes to stdout)");
  io->add_option("--png", o->png, "Also draw the results into this PNG file (needs gnuplot)");
  io->add_flag("--quick", o->quick,
               "A short run (256M file, blocks 4K,64K,1M, 16384 random reads; cold sequential "
               "only); explicit options still win");
  io->add_flag("-q,--quiet", o->quiet, "No progress lines on stderr");

  io->callback([o, io, &exit_code] {
    Options opt = *o;
    if (opt.quick) {
      if (io->count("--size") == 0) opt.size_text = "256M";
      if (io->count("--blocks") == 0) opt.blocks_text = "4K,64K,1M";
      if (io->count("--random-ops") == 0) opt.random_ops = 16384;
    }
    const std::uint64_t size = *parse_size(opt.size_text);
    std::string why;
    std::vector<std::uint64_t> blocks = *parse_blocks(opt.blocks_text, why);
    if (size % blocks.back() != 0)
      throw CLI::ValidationError(
          "--size", fmt::format("{} is not a multiple of the largest block ({})", opt.size_text,
                                block_label(blocks.back())));
    if (opt.updates > size / (2 * kUpdateBytes))
      throw CLI::ValidationError(
          "--updates", fmt::format("{} updates do not fit a {} file (at most {})", opt.updates,
                                   opt.size_text, size / (2 * kUpdateBytes)));
    if (size > std::uint64_t{SIZE_MAX} / 2)
      throw CLI::ValidationError("--size", "too large for this address space");
    Study study(opt, size, std::move(blocks));
    exit_code = study.run();
  });
}

}  // namespace mapheap::cli
