// bench/heap/heap_bench.cpp — the shared and persistent heap against its
// peers, side by side in one run: mapheap::MappedHeap on a file and on shm,
// Boost.Interprocess managed_mapped_file and managed_shared_memory, and glibc
// malloc as the in-memory reference.
//
//   heap_bench [--reps N] [--scale X] [--only alloc,graph,reopen] [--dir DIR] [--json FILE]
//
// The workloads:
//   alloc   allocate/free throughput: a window of live blocks of 8 B-64 KiB
//           (log-uniform), replaced at random, by 1 process, and by 2 processes
//           allocating in the same heap at once (glibc: each in its own malloc);
//           two passes, timed apart: on a new heap, then on the heap the first
//           pass left (steady state: no page touched for the first time).
//   graph   the adjacency lists of a random graph (2^20 vertices, 2^24 edges):
//           a vector of 2^20 vectors of uint32_t, built by push_back in the heap.
//   reopen  a 1 GiB and a 4 GiB heap filled with blocks and named objects and
//           closed cleanly: the time a new process takes to open it and find
//           one named object, and the page faults it takes meanwhile; the new
//           process is a new program (this one, exec()ed again) or a fork()ed
//           child. All contenders' heaps of a size are filled first, then
//           reopened in passes, each pass reopening every one of them.
//
// Every measurement runs in fork()ed processes of its own, so that each starts
// from a fresh address space and a fresh malloc, worker w pinned to the w-th
// CPU the program may use (pin_worker). Within a repetition every
// contender runs once, in an order that rotates from one repetition to the
// next, so that drift spreads over all of them. Before each measurement the
// dirty pages the previous ones left (a file heap's, Boost's mapped file) are
// written back (sync), so that no contender pays for another's writeback.
// The tables show the median pass and the ratio to mapheap (file) in the same
// row; --json keeps every pass. Each workload checks what it reads back (block
// tags, a checksum of the graph, the id of the named object found) and
// reports a failure instead of a figure when the check fails.
//
// The graph is built twice: with the same container class for every
// contender, std::vector (libstdc++ takes an allocator's offset_ptr as its
// pointer) with each contender's allocator, which measures the allocators
// and not vector implementations with different growth factors; and with
// each library's own vector, what its users write: std::vector on glibc
// (doubling from one element), mapheap::vector (doubling from four, whole
// size classes), boost::interprocess::vector (boost::container::vector,
// which grows by 1.6x). Two references that are not contenders: a
// floor for alloc (FloorArena: next to no allocator) and, for the graph,
// mapheap's shm heap through plain pointers (RawMapheapArena).
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <limits.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <boost/version.hpp>
#include <nlohmann/json.hpp>

#include "mapheap/allocator.hpp"
#include "support/page_faults.hpp"
#include "support/rng.hpp"
#include "mapheap/heap.hpp"

namespace {

namespace bip = boost::interprocess;

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;
constexpr std::uint64_t kSeed = 20261201;

// ---- small tools

std::uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // one clock for every process: spans compare
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// The same sequence under every contender, and the sizes it draws.
struct Rng : mapheap::bench::Rng {
  using mapheap::bench::Rng::Rng;
  std::uint32_t below(std::uint64_t n) { return static_cast<std::uint32_t>(next() % n); }
  // 8 B to 64 KiB, log-uniform: as many blocks of 8-16 B as of 32-64 KiB.
  std::uint32_t block_size() { return static_cast<std::uint32_t>(std::exp2(3.0 + 13.0 * unit())); }
};

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

// Three significant digits, never in exponent form.
std::string fmt_num(double x) {
  char buf[64];
  const double a = std::fabs(x);
  if (a >= 100)
    std::snprintf(buf, sizeof buf, "%.0f", x);
  else if (a >= 10)
    std::snprintf(buf, sizeof buf, "%.1f", x);
  else if (a >= 1)
    std::snprintf(buf, sizeof buf, "%.2f", x);
  else
    std::snprintf(buf, sizeof buf, "%.3f", x);
  return buf;
}

std::string fmt_bytes(std::size_t n) {
  char buf[64];
  if (n >= GiB && n % GiB == 0)
    std::snprintf(buf, sizeof buf, "%zu GiB", n / GiB);
  else if (n >= GiB)
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(n) / static_cast<double>(GiB));
  else if (n >= MiB)
    std::snprintf(buf, sizeof buf, "%zu MiB", n / MiB);
  else
    std::snprintf(buf, sizeof buf, "%zu KiB", n / KiB);
  return buf;
}

std::string fmt_count(std::uint64_t n) {  // 16777216 -> 16,777,216
  const std::string digits = std::to_string(n);
  std::string s;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

// ---- contenders

// floor is not a contender: the alloc workload with next to no allocator
// (FloorArena), what the workload itself costs.
// raw_shm is not a contender either: mapheap's shm heap through plain
// pointers (RawMapheapArena), for the graph only.
enum class Kind : std::uint8_t { mapheap_file, mapheap_shm, raw_shm, boost_file, boost_shm, glibc, floor };
constexpr std::array<Kind, 6> kAllocKinds{Kind::mapheap_file, Kind::mapheap_shm, Kind::boost_file,
                                          Kind::boost_shm,    Kind::glibc,       Kind::floor};
constexpr std::array<Kind, 6> kGraphKinds{Kind::mapheap_file, Kind::mapheap_shm, Kind::raw_shm,
                                          Kind::boost_file,   Kind::boost_shm,   Kind::glibc};
constexpr std::array<Kind, 4> kMappedKinds{Kind::mapheap_file, Kind::mapheap_shm, Kind::boost_file,
                                           Kind::boost_shm};

const char* label(Kind k) {
  switch (k) {
    case Kind::mapheap_file: return "mapheap (file)";
    case Kind::mapheap_shm: return "mapheap (shm)";
    case Kind::raw_shm: return "mapheap (shm), plain pointers";
    case Kind::boost_file: return "Boost mapped_file";
    case Kind::boost_shm: return "Boost shm";
    case Kind::glibc: return "glibc malloc";
    case Kind::floor: return "floor: bare free lists";
  }
  return "?";
}
bool on_file(Kind k) {
  return k == Kind::mapheap_file || k == Kind::boost_file;
}

// Where a heap lives: a file path, or a shm object's name ("" for glibc).
struct Place {
  Kind kind;
  std::string name;
};

Place make_place(Kind k, const std::string& dir, const char* what) {
  static unsigned seq = 0;
  const std::string stem = "heap_bench-" + std::to_string(::getpid()) + "-" + std::to_string(++seq) + "-" + what;
  switch (k) {
    case Kind::mapheap_file:
    case Kind::boost_file: return {k, dir + "/" + stem + ".heap"};
    case Kind::mapheap_shm:
    case Kind::raw_shm: return {k, "/" + stem};
    case Kind::boost_shm: return {k, stem};  // Boost adds the leading slash itself
    case Kind::glibc:
    case Kind::floor: break;
  }
  return {k, ""};
}

void remove_place(const Place& p) {
  switch (p.kind) {
    case Kind::mapheap_file:
    case Kind::boost_file: ::unlink(p.name.c_str()); break;
    case Kind::mapheap_shm:
    case Kind::raw_shm: ::shm_unlink(p.name.c_str()); break;
    case Kind::boost_shm: bip::shared_memory_object::remove(p.name.c_str()); break;
    case Kind::glibc:
    case Kind::floor: break;
  }
}

// Removes the heap's file or shm object when the measurement ends, however it ends.
class PlaceGuard {
 public:
  explicit PlaceGuard(Place p) : place_(std::move(p)) { remove_place(place_); }
  ~PlaceGuard() { remove_place(place_); }
  PlaceGuard(const PlaceGuard&) = delete;
  PlaceGuard& operator=(const PlaceGuard&) = delete;
  const Place& place() const { return place_; }

 private:
  Place place_;
};

// A heap's size at creation and the most it may grow to. Boost's segments
// are created at `max` (they cannot grow while mapped); mapheap starts at
// `initial` and grows online up to `max`.
struct Sizing {
  std::size_t initial;
  std::size_t max;
};

// The arenas: one open heap of each kind, with the same small interface, so
// that one template runs each workload on all of them.
class MapheapArena {
 public:

  static MapheapArena create(const Place& p, Sizing s) {
    return MapheapArena(mapheap::MappedHeap::open(options(p, mapheap::HeapMode::create).with_size(s.initial, s.max)));
  }
  static MapheapArena open(const Place& p) {
    return MapheapArena(mapheap::MappedHeap::open(options(p, mapheap::HeapMode::open)));
  }
  void* allocate(std::size_t n) noexcept { return heap_.allocate(n); }
  // The alloc workload passes every block's size; only the floor uses it
  // (Boost has no sized free, so mapheap's contender does not use its own).
  void deallocate(void* p, std::size_t /*size*/) noexcept { heap_.deallocate(p); }
  template <class T, class... Args>
  T* construct(const char* name, Args&&... args) {
    return heap_.find_or_construct<T>(name)(std::forward<Args>(args)...);
  }
  template <class T>
  T* find(const char* name) {
    return heap_.find<T>(name);
  }
  template <class T>
  using allocator = mapheap::allocator<T>;
  template <class T>
  using vector = mapheap::vector<T>;
  template <class T>
  allocator<T> make_allocator() {
    return allocator<T>(heap_);
  }
  void close() { heap_.close(); }
  mapheap::MappedHeap& heap() { return heap_; }

 private:
  explicit MapheapArena(mapheap::MappedHeap h) : heap_(std::move(h)) {}
  static mapheap::HeapOptions options(const Place& p, mapheap::HeapMode m) {
    return p.kind == Kind::mapheap_file ? mapheap::HeapOptions::file(p.name, m) : mapheap::HeapOptions::shm(p.name, m);
  }
  mapheap::MappedHeap heap_;
};

// Not a contender: mapheap's heap through plain pointers, with a stateless
// allocator over the one heap this process has open, as a program that never
// shares its containers could use it (the vectors' pointers are this
// process's addresses). The graph built with it and with offset_ptr tells
// the allocator's cost from the fancy pointer's and the stateful allocator's
// (an offset_ptr allocator makes each inner vector 32 bytes, not 24).
mapheap::MappedHeap* g_raw_heap = nullptr;
template <class T>
struct RawHeapAllocator {
  using value_type = T;
  RawHeapAllocator() = default;
  template <class U>
  RawHeapAllocator(const RawHeapAllocator<U>&) noexcept {}  // NOLINT: rebinding
  T* allocate(std::size_t n) {
    void* p = g_raw_heap->allocate(n * sizeof(T), alignof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept { g_raw_heap->deallocate(p, n * sizeof(T), alignof(T)); }
  template <class U>
  bool operator==(const RawHeapAllocator<U>&) const noexcept {
    return true;
  }
};
class RawMapheapArena {
 public:
  static RawMapheapArena create(const Place& p, Sizing s) { return RawMapheapArena(MapheapArena::create(p, s)); }
  static RawMapheapArena open(const Place& p) { return RawMapheapArena(MapheapArena::open(p)); }
  void* allocate(std::size_t n) noexcept { return inner_.allocate(n); }
  void deallocate(void* p, std::size_t n) noexcept { inner_.deallocate(p, n); }
  template <class T, class... Args>
  T* construct(const char* name, Args&&... args) {
    g_raw_heap = &inner_.heap();
    return inner_.template construct<T>(name, std::forward<Args>(args)...);
  }
  template <class T>
  T* find(const char* name) {
    return inner_.template find<T>(name);
  }
  template <class T>
  using allocator = RawHeapAllocator<T>;
  template <class T>
  using vector = std::vector<T, allocator<T>>;
  template <class T>
  allocator<T> make_allocator() {
    g_raw_heap = &inner_.heap();  // where this arena lives now
    return {};
  }
  void close() {
    g_raw_heap = nullptr;
    inner_.close();
  }

 private:
  explicit RawMapheapArena(MapheapArena a) : inner_(std::move(a)) {}
  MapheapArena inner_;
};

template <class Segment>  // bip::managed_mapped_file or bip::managed_shared_memory
class BoostArena {
 public:

  static BoostArena create(const Place& p, Sizing s) { return BoostArena(Segment(bip::create_only, p.name.c_str(), s.max)); }
  static BoostArena open(const Place& p) { return BoostArena(Segment(bip::open_only, p.name.c_str())); }
  void* allocate(std::size_t n) noexcept { return segment_.allocate(n, std::nothrow); }
  void deallocate(void* p, std::size_t /*size*/) noexcept { segment_.deallocate(p); }
  template <class T, class... Args>
  T* construct(const char* name, Args&&... args) {
    return segment_.template construct<T>(name)(std::forward<Args>(args)...);
  }
  template <class T>
  T* find(const char* name) {
    return segment_.template find<T>(name).first;
  }
  template <class T>
  using allocator = bip::allocator<T, typename Segment::segment_manager>;
  template <class T>
  using vector = bip::vector<T, allocator<T>>;
  template <class T>
  allocator<T> make_allocator() {
    return allocator<T>(segment_.get_segment_manager());
  }
  void close() { segment_ = Segment(); }  // unmaps; Boost writes nothing back itself

 private:
  explicit BoostArena(Segment s) : segment_(std::move(s)) {}
  Segment segment_;
};

// glibc malloc: nothing to create or open. Objects "constructed" here are
// never freed: the worker process exits right after.
class MallocArena {
 public:

  static MallocArena create(const Place&, Sizing) { return {}; }
  static MallocArena open(const Place&) { return {}; }
  void* allocate(std::size_t n) noexcept { return std::malloc(n); }
  void deallocate(void* p, std::size_t /*size*/) noexcept { std::free(p); }
  template <class T, class... Args>
  T* construct(const char*, Args&&... args) {
    return new T(std::forward<Args>(args)...);
  }
  template <class T>
  using allocator = std::allocator<T>;
  template <class T>
  using vector = std::vector<T>;
  template <class T>
  allocator<T> make_allocator() {
    return {};
  }
  void close() {}
};

// The floor of the alloc workload, not a contender: a LIFO free list per size
// class (8 per doubling, as mapheap's, so the working set is the same size),
// carved from one private mapping; no metadata, no lock, no sharing, no
// check, and the block's size handed to it at free (the contenders are not
// told it). What the workload costs when the allocator costs next to nothing:
// no contender can be faster than this on this machine.
class FloorArena {
 public:
  static FloorArena create(const Place&, Sizing) { return FloorArena(nullptr); }
  static FloorArena open(const Place&) {
    void* m = ::mmap(nullptr, kReserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) fail(std::string("mmap: ") + std::strerror(errno));
    return FloorArena(static_cast<char*>(m));
  }
  FloorArena(FloorArena&& o) noexcept : base_(std::exchange(o.base_, nullptr)), used_(o.used_) {
    std::copy(std::begin(o.free_), std::end(o.free_), std::begin(free_));
  }
  FloorArena& operator=(FloorArena&&) = delete;
  ~FloorArena() { close(); }
  void* allocate(std::size_t n) noexcept {
    const auto [cls, bytes] = size_class(n);
    if (void* p = free_[cls]) {
      free_[cls] = *static_cast<void**>(p);
      return p;
    }
    if (used_ + bytes > kReserve) return nullptr;
    void* p = base_ + used_;
    used_ += bytes;
    return p;
  }
  void deallocate(void* p, std::size_t n) noexcept {
    const unsigned cls = size_class(n).first;
    *static_cast<void**>(p) = free_[cls];
    free_[cls] = p;
  }
  void close() {
    if (base_ != nullptr) ::munmap(base_, kReserve);
    base_ = nullptr;
  }

 private:
  static constexpr std::size_t kReserve = std::size_t{16} << 30;
  explicit FloorArena(char* base) : base_(base) {}
  // 8, then steps of 16 to 128, then 8 classes per doubling: (index, bytes).
  static std::pair<unsigned, std::size_t> size_class(std::size_t n) {
    if (n <= 8) return {0, 8};
    if (n <= 128) return {static_cast<unsigned>((n + 15) / 16), (n + 15) / 16 * 16};
    const auto w = static_cast<unsigned>(std::bit_width(n - 1));  // 2^(w-1) < n <= 2^w
    const std::size_t step = std::size_t{1} << (w - 4);
    const std::size_t k = (n + step - 1) / step;  // 9..16
    return {static_cast<unsigned>(9 + (w - 8) * 8 + (k - 9)), k * step};
  }
  char* base_ = nullptr;
  std::size_t used_ = 0;
  void* free_[128] = {};
};

// Calls f(std::type_identity<Arena>{}) with the arena type of kind k.
// REQUIRES: k is not glibc (a mapping to map).
template <class F>
decltype(auto) with_mapped_arena(Kind k, F&& f) {
  switch (k) {
    case Kind::boost_file: return f(std::type_identity<BoostArena<bip::managed_mapped_file>>{});
    case Kind::boost_shm: return f(std::type_identity<BoostArena<bip::managed_shared_memory>>{});
    case Kind::raw_shm: return f(std::type_identity<RawMapheapArena>{});
    default: break;
  }
  return f(std::type_identity<MapheapArena>{});
}
template <class F>
decltype(auto) with_arena(Kind k, F&& f) {
  if (k == Kind::glibc) return f(std::type_identity<MallocArena>{});
  return with_mapped_arena(k, std::forward<F>(f));
}

// ---- worker processes

// What a worker process sends back: one write, smaller than PIPE_BUF, so that
// the reports of several workers never interleave.
struct Report {
  int ok = 0;
  char message[240] = {};
  std::uint64_t start_ns = 0;  // the timed phase, on CLOCK_MONOTONIC
  std::uint64_t end_ns = 0;
  std::uint64_t checksum = 0;
  std::uint64_t values[8] = {};  // the workload's own counts
};
static_assert(sizeof(Report) <= PIPE_BUF);

// The start line of workers that must run their timed phase at the same time.
class Gate {
 public:
  Gate(int ready_fd, int go_fd) : ready_fd_(ready_fd), go_fd_(go_fd) {}
  // Tells the parent this worker is ready; returns when every worker is.
  void arrive_and_wait() {
    const char c = 1;
    if (::write(ready_fd_, &c, 1) != 1) fail("cannot signal readiness");
    leave();
    char d;
    while (::read(go_fd_, &d, 1) < 0 && errno == EINTR) {
    }
  }
  // Closing our end is what the parent waits for: a worker that arrived, or
  // failed, or died, no longer holds the parent back.
  void leave() {
    if (ready_fd_ >= 0) ::close(ready_fd_);
    ready_fd_ = -1;
  }

 private:
  int ready_fd_;
  int go_fd_;
};

void write_all(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    b += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Worker w runs on the w-th CPU this program may use (wrapping around), so
// that a one-process measurement runs on the same CPU whatever the
// contender, and the two of a two-process one on different CPUs. The VM
// this was written on has two vCPUs that are at times not equally fast (the
// graph took 1.5 s on one and 2.4 s on the other, minutes apart, 2026-12-01):
// unpinned, a figure depended on where the scheduler put the worker.
void pin_worker(unsigned w) {
  cpu_set_t allowed;
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
    std::fprintf(stderr, "heap_bench: worker %u not pinned: sched_getaffinity: %s\n", w, std::strerror(errno));
    return;
  }
  const int count = CPU_COUNT(&allowed);
  if (count <= 0) return;
  int k = static_cast<int>(w % static_cast<unsigned>(count));
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &allowed) || k-- != 0) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(c, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0)
      std::fprintf(stderr, "heap_bench: worker %u not pinned to CPU %d: %s\n", w, c, std::strerror(errno));
    return;
  }
}

// Runs body(worker, gate) in n fork()ed processes and returns their reports;
// on failure (a worker threw, or died) returns {} and sets `error`. The body
// returns a Report or throws; its process then exits without running
// destructors or atexit handlers (_exit), like a process that is done.
// Each worker is pinned first (pin_worker).
template <class Body>
std::vector<Report> run_workers(unsigned n, Body body, std::string& error) {
  int ready[2], go[2], reports[2];
  if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(reports, O_CLOEXEC) != 0)
    fail(std::string("pipe2: ") + std::strerror(errno));
  std::fflush(nullptr);
  std::vector<pid_t> pids;
  for (unsigned w = 0; w < n; ++w) {
    const pid_t pid = ::fork();
    if (pid < 0) fail(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::close(ready[0]);
      ::close(go[1]);
      ::close(reports[0]);
      pin_worker(w);
      Gate gate(ready[1], go[0]);
      Report r;
      try {
        r = body(w, gate);
        r.ok = 1;
      } catch (const std::exception& e) {
        r = Report{};
        std::snprintf(r.message, sizeof r.message, "%s", e.what());
      }
      gate.leave();
      write_all(reports[1], &r, sizeof r);
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  ::close(ready[1]);
  ::close(go[0]);
  ::close(reports[1]);
  // Every worker closes its end of `ready` when it arrives (or ends): EOF
  // means all are at the start line, or gone.
  for (char c;;) {
    const ssize_t got = ::read(ready[0], &c, 1);
    if (got == 0 || (got < 0 && errno != EINTR)) break;
  }
  ::close(ready[0]);
  ::close(go[1]);  // go
  std::vector<Report> out;
  Report r;
  for (;;) {
    const ssize_t got = ::read(reports[0], &r, sizeof r);
    if (got < 0 && errno == EINTR) continue;
    if (got != static_cast<ssize_t>(sizeof r)) break;
    out.push_back(r);
  }
  ::close(reports[0]);
  for (pid_t pid : pids) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(status) && error.empty())
      error = std::string("a worker died of signal ") + std::to_string(WTERMSIG(status)) + " (" +
              strsignal(WTERMSIG(status)) + ")";
  }
  for (const Report& rep : out)
    if (rep.ok == 0 && error.empty()) error = rep.message;
  if (error.empty() && out.size() != n) error = "a worker ended without a report";
  if (!error.empty()) out.clear();
  return out;
}

// One measurement of one contender: a figure, or why there is none.
struct Pass {
  double value = 0;
  std::string error;
  static Pass failed(std::string why) { return {0, std::move(why)}; }
};

// ---- workload alloc: allocate/free throughput

constexpr const char* kFirstPass = ", first pass (new heap)";
constexpr const char* kSecondPass = ", second pass";

struct AllocParams {
  std::uint32_t window;  // live blocks per process
  std::uint32_t rounds;  // replacements per process (each one free and one allocate)
  Sizing sizing;
};

// The block's tag in its first 8 bytes and, from 16 bytes on, its
// complement in the last 8: a block that overlaps another, or is handed out
// twice, loses one of them.
void stamp(void* p, std::uint32_t size, std::uint64_t tag) {
  std::memcpy(p, &tag, 8);
  if (size >= 16) {
    const std::uint64_t tail = ~tag;
    std::memcpy(static_cast<char*>(p) + size - 8, &tail, 8);
  }
}
bool intact(const void* p, std::uint32_t size, std::uint64_t tag) {
  std::uint64_t head, tail = ~tag;
  std::memcpy(&head, p, 8);
  if (size >= 16) std::memcpy(&tail, static_cast<const char*>(p) + size - 8, 8);
  return head == tag && tail == ~tag;
}

// The workers of one measurement wait here between their two passes, so that
// the second pass of each runs alongside the second pass of the others. In a
// shared anonymous page made before fork().
class SpinBarrier {
 public:
  explicit SpinBarrier(unsigned parties) : parties_(parties) {
    void* m = ::mmap(nullptr, sizeof(std::atomic<unsigned>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail(std::string("mmap: ") + std::strerror(errno));
    arrived_ = new (m) std::atomic<unsigned>(0);
  }
  ~SpinBarrier() { ::munmap(arrived_, sizeof(std::atomic<unsigned>)); }
  SpinBarrier(const SpinBarrier&) = delete;
  SpinBarrier& operator=(const SpinBarrier&) = delete;
  // Throws if the others do not all arrive within a minute (one died).
  void arrive_and_wait() {
    arrived_->fetch_add(1);
    const std::uint64_t deadline = now_ns() + 60'000'000'000ull;
    while (arrived_->load() < parties_) {
      if (now_ns() > deadline) fail("a worker never reached the second pass");
      ::sched_yield();
    }
  }

 private:
  unsigned parties_;
  std::atomic<unsigned>* arrived_;
};

// values[0]: operations of each pass; values[1], values[2]: the second
// pass's start and end (start_ns and end_ns are the first pass's).
template <class Arena>
Report alloc_worker(const Place& place, const AllocParams& ap, unsigned worker, Gate& gate, SpinBarrier& between) {
  // Every random choice is made before the clock starts.
  Rng rng(kSeed + worker);
  std::vector<std::uint32_t> live_size(ap.window), next_slot(ap.rounds), next_size(ap.rounds);
  for (auto& s : live_size) s = rng.block_size();
  for (std::uint32_t r = 0; r < ap.rounds; ++r) {
    next_slot[r] = rng.below(ap.window);
    next_size[r] = rng.block_size();
  }
  std::vector<void*> live(ap.window);
  std::vector<std::uint64_t> live_tag(ap.window);
  const std::uint64_t tag_base = (std::uint64_t{worker} + 1) << 40;

  Arena arena = Arena::open(place);
  for (std::uint32_t i = 0; i < ap.window; ++i) {
    live[i] = arena.allocate(live_size[i]);
    if (live[i] == nullptr) fail("the heap is full after " + std::to_string(i) + " blocks of the first window");
    live_tag[i] = tag_base + i;
    stamp(live[i], live_size[i], live_tag[i]);
  }
  gate.arrive_and_wait();

  Report rep;
  std::uint64_t bad = 0;
  std::uint32_t done = 0;
  // Two passes of the same replacements: the first on a new heap (its pages
  // touched for the first time: page faults, and for a file, blocks
  // allocated on the disk), the second on the heap the first left behind.
  bool full = false;
  unsigned pass = 0;
  for (; pass < 2 && !full; ++pass) {
    if (pass == 1) between.arrive_and_wait();
    const std::uint64_t t0 = now_ns();
    for (done = 0; done < ap.rounds; ++done) {
      const std::uint32_t j = next_slot[done];
      bad += !intact(live[j], live_size[j], live_tag[j]);
      arena.deallocate(live[j], live_size[j]);
      void* p = arena.allocate(next_size[done]);
      live[j] = p;  // null when full: the cleanup below skips it (it is freed)
      if (p == nullptr) break;
      live_size[j] = next_size[done];
      live_tag[j] = tag_base + ap.window + std::uint64_t{pass} * ap.rounds + done;
      stamp(p, live_size[j], live_tag[j]);
    }
    const std::uint64_t t1 = now_ns();
    full = done < ap.rounds;
    if (pass == 0) {
      rep.start_ns = t0;
      rep.end_ns = t1;
    } else {
      rep.values[1] = t0;
      rep.values[2] = t1;
    }
  }
  if (full && pass == 1) between.arrive_and_wait();  // the others wait for a second pass that will not come
  for (std::uint32_t i = 0; i < ap.window; ++i) {
    if (full && live[i] == nullptr) continue;
    bad += !intact(live[i], live_size[i], live_tag[i]);
    arena.deallocate(live[i], live_size[i]);
  }
  arena.close();
  if (full)
    fail("the heap ran out of memory after " + std::to_string(done) + " replacements of pass " + std::to_string(pass));
  if (bad != 0) fail(std::to_string(bad) + " blocks did not keep their tags");
  rep.values[0] = 2 * std::uint64_t{done};  // operations: one free and one allocate per round
  return rep;
}

// Both passes' figures: first (new heap) and second (steady state).
struct AllocPasses {
  Pass first, second;
};

AllocPasses measure_alloc(Kind k, unsigned processes, const AllocParams& ap, const std::string& dir) {
  const auto measure = [&]<class Arena>(std::type_identity<Arena>) -> AllocPasses {
    PlaceGuard guard(make_place(k, dir, "alloc"));
    std::string error;
    try {
      Arena::create(guard.place(), ap.sizing).close();
      SpinBarrier between(processes);
      const auto reps = run_workers(
          processes,
          [&](unsigned w, Gate& gate) { return alloc_worker<Arena>(guard.place(), ap, w, gate, between); },
          error);
      if (!error.empty()) return {Pass::failed(error), Pass::failed(error)};
      // Million operations per second, over the span in which all ran.
      const auto rate = [&](auto start_of, auto end_of) -> Pass {
        std::uint64_t start = UINT64_MAX, end = 0, ops = 0;
        for (const Report& r : reps) {
          start = std::min(start, start_of(r));
          end = std::max(end, end_of(r));
          ops += r.values[0];
        }
        return {static_cast<double>(ops) / static_cast<double>(end - start) * 1e3, {}};
      };
      return {rate([](const Report& r) { return r.start_ns; }, [](const Report& r) { return r.end_ns; }),
              rate([](const Report& r) { return r.values[1]; }, [](const Report& r) { return r.values[2]; })};
    } catch (const std::exception& e) {
      return {Pass::failed(e.what()), Pass::failed(e.what())};
    }
  };
  if (k == Kind::floor) return measure(std::type_identity<FloorArena>{});
  return with_arena(k, measure);
}

// ---- workload graph: adjacency lists in the heap

struct Graph {
  std::uint32_t vertices = 0;
  std::vector<std::uint32_t> from, to;  // the edges, in push_back order
};

Graph make_graph(std::uint32_t vertices, std::uint64_t edges) {
  Graph g;
  g.vertices = vertices;
  g.from.resize(edges);
  g.to.resize(edges);
  Rng rng(kSeed);
  for (std::uint64_t e = 0; e < edges; ++e) {
    g.from[e] = rng.below(vertices);
    g.to[e] = rng.below(vertices);
  }
  return g;
}

// Which vector the graph is built with.
enum class GraphVector : std::uint8_t {
  std_vector,  // std::vector with the contender's allocator, for every contender
  own,         // the contender's own vector (Arena::vector)
};
const char* graph_row(GraphVector v) {
  return v == GraphVector::std_vector ? "std::vector for all" : "each library's own vector";
}

template <class Arena, GraphVector V>
struct GraphTypes {
  using Inner = std::vector<std::uint32_t, typename Arena::template allocator<std::uint32_t>>;
  using Outer = std::vector<Inner, typename Arena::template allocator<Inner>>;
};
template <class Arena>
struct GraphTypes<Arena, GraphVector::own> {
  using Inner = typename Arena::template vector<std::uint32_t>;
  using Outer = typename Arena::template vector<Inner>;
};

template <class Arena, GraphVector V>
Report graph_worker(const Place& place, Sizing sizing, const Graph& g) {
  using Inner = typename GraphTypes<Arena, V>::Inner;
  using Outer = typename GraphTypes<Arena, V>::Outer;
  Arena arena = Arena::create(place, sizing);
  const auto alloc = arena.template make_allocator<std::uint32_t>();
  Report rep;
  rep.start_ns = now_ns();
  Outer* adj = arena.template construct<Outer>("graph", typename Outer::allocator_type(alloc));
  if (adj == nullptr) fail("cannot construct the graph's vector");
  adj->reserve(g.vertices);
  for (std::uint32_t v = 0; v < g.vertices; ++v) adj->emplace_back(alloc);
  const std::size_t edges = g.from.size();
  for (std::size_t e = 0; e < edges; ++e) (*adj)[g.from[e]].push_back(g.to[e]);
  rep.end_ns = now_ns();
  // FNV-1a over every list, lengths included: the same under every allocator.
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const Inner& row : *adj) {
    h = (h ^ row.size()) * 0x100000001b3ull;
    for (std::uint32_t x : row) h = (h ^ x) * 0x100000001b3ull;
  }
  rep.checksum = h;
  arena.close();
  return rep;
}

Pass measure_graph(Kind k, GraphVector v, Sizing sizing, const Graph& g, const std::string& dir,
                   std::uint64_t& checksum) {
  return with_arena(k, [&]<class Arena>(std::type_identity<Arena>) -> Pass {
    PlaceGuard guard(make_place(k, dir, "graph"));
    std::string error;
    try {
      const auto reps = run_workers(
          1,
          [&](unsigned, Gate&) {
            return v == GraphVector::own ? graph_worker<Arena, GraphVector::own>(guard.place(), sizing, g)
                                         : graph_worker<Arena, GraphVector::std_vector>(guard.place(), sizing, g);
          },
          error);
      if (!error.empty()) return Pass::failed(error);
      checksum = reps[0].checksum;
      return {static_cast<double>(reps[0].end_ns - reps[0].start_ns) * 1e-9, {}};
    } catch (const std::exception& e) {
      return Pass::failed(e.what());
    }
  });
}

// ---- workload reopen: open a full-ish heap and find a named object

struct Named {
  std::uint64_t id;
  std::uint64_t check;
};
constexpr std::uint64_t kNamedCheck = 0x6d61706865617021ull;
constexpr std::uint32_t kNamedEvery = 256;  // one named object per this many blocks

std::string object_name(std::uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "object-%07llu", static_cast<unsigned long long>(i));
  return buf;
}

// Fills the heap to 85% of its size with blocks of 8 B-64 KiB (each one's
// first bytes written) and a named object every kNamedEvery blocks, or until
// it is full, then closes it cleanly. values: blocks, named objects, bytes.
template <class Arena>
Report fill_worker(const Place& place, std::size_t bytes) {
  Arena arena = Arena::create(place, Sizing{bytes, bytes});
  Rng rng(kSeed);
  const auto target = static_cast<std::uint64_t>(0.85 * static_cast<double>(bytes));
  std::uint64_t used = 0, blocks = 0, named = 0;
  try {
    while (used < target) {
      if (blocks % kNamedEvery == 0) {
        if (arena.template construct<Named>(object_name(named).c_str(), Named{named, kNamedCheck}) == nullptr)
          break;
        ++named;
        used += sizeof(Named);
      }
      const std::uint32_t size = rng.block_size();
      void* p = arena.allocate(size);
      if (p == nullptr) break;
      stamp(p, size, blocks);
      used += size;
      ++blocks;
    }
  } catch (const std::bad_alloc&) {
    // full while constructing a named object: as full as it gets
  }
  if (named == 0) fail("the heap is too small for one named object");
  arena.close();
  Report rep;
  rep.values[0] = blocks;
  rep.values[1] = named;
  rep.values[2] = used;
  return rep;
}

// Writes the file's dirty pages back, then drops its pages from the page
// cache: the next open reads them from the disk.
void drop_page_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open " + path + ": " + std::strerror(errno));
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

using FaultCounter = mapheap::bench::PageFaultCounter;
constexpr std::uint64_t kNoFaultCount = ~std::uint64_t{0};

// One reopen: open + find, timed, with the page faults it took; the close
// is not timed. In the process that is to be measured.
template <class Arena>
Report timed_reopen(const Place& place, const std::string& name, std::uint64_t id) {
  Report rep;
  const FaultCounter faults;
  rep.start_ns = now_ns();
  Arena arena = Arena::open(place);
  const Named* obj = arena.template find<Named>(name.c_str());
  rep.end_ns = now_ns();
  const std::int64_t took = faults.read();
  rep.values[0] = took < 0 ? kNoFaultCount : static_cast<std::uint64_t>(took);
  if (obj == nullptr) fail("reopened, but '" + name + "' is not there");
  if (obj->id != id || obj->check != kNamedCheck) fail("reopened, but '" + name + "' holds another value");
  arena.close();
  return rep;
}

// A reopen in a new program: this one, executed again with the internal
// option kReopenProgram (reopen_program_main runs it), its report read from
// a pipe. The forked worker that calls this waits for it; the clock starts
// in the new program, after exec.
constexpr const char* kReopenProgram = "--internal-reopen";
Report reopen_in_new_program(const Place& place, const std::string& name, std::uint64_t id) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) fail(std::string("pipe2: ") + std::strerror(errno));
  const std::string kind = std::to_string(static_cast<int>(place.kind));
  const std::string ident = std::to_string(id);
  const std::string fd = std::to_string(pipe_fds[1]);
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    fail(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    // Only the write end crosses exec.
    if (::fcntl(pipe_fds[1], F_SETFD, 0) != 0) ::_exit(127);
    const char* args[] = {"heap_bench", kReopenProgram, kind.c_str(), place.name.c_str(), name.c_str(),
                          ident.c_str(), fd.c_str(), nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(args));
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  Report rep;
  ssize_t got;
  while ((got = ::read(pipe_fds[0], &rep, sizeof rep)) < 0 && errno == EINTR) {
  }
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got != static_cast<ssize_t>(sizeof rep)) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) fail("cannot execute /proc/self/exe for a reopen");
    if (WIFSIGNALED(status))
      fail(std::string("the reopening program died of signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")");
    fail("the reopening program ended without a report");
  }
  if (rep.ok == 0) fail(rep.message);
  return rep;
}

// The new program's side: argv = {_, kReopenProgram, kind, place, name, id, fd}.
int reopen_program_main(int argc, char** argv) {
  const int kind = argc == 7 ? std::atoi(argv[2]) : -1;
  if (kind < 0 || std::find(kMappedKinds.begin(), kMappedKinds.end(), static_cast<Kind>(kind)) == kMappedKinds.end()) {
    std::fprintf(stderr, "heap_bench %s: internal option, used by the reopen workload\n", kReopenProgram);
    return 2;
  }
  const Place place{static_cast<Kind>(kind), argv[3]};
  Report rep;
  try {
    rep = with_mapped_arena(place.kind, [&]<class Arena>(std::type_identity<Arena>) {
      return timed_reopen<Arena>(place, argv[4], std::strtoull(argv[5], nullptr, 10));
    });
    rep.ok = 1;
  } catch (const std::exception& e) {
    rep = Report{};
    std::snprintf(rep.message, sizeof rep.message, "%s", e.what());
  }
  const int fd = std::atoi(argv[6]);
  write_all(fd, &rep, sizeof rep);
  ::close(fd);
  return 0;
}

// How a reopen's process comes to be: a new program (exec: what a program
// that starts and opens its heap pays), or a fork()ed child of this one,
// which also pays for copying on write what it touches of this process's
// own memory (its malloc arena, stack and data pages).
enum class ReopenBy : std::uint8_t { exec, fork };

// One reopen in a new process. The worker waits at the gate first, so that
// the parent is done forking (and about to sleep) when the clock starts.
template <class Arena>
Report reopen_worker(ReopenBy by, const Place& place, const std::string& name, std::uint64_t id, Gate& gate) {
  gate.arrive_and_wait();
  return by == ReopenBy::exec ? reopen_in_new_program(place, name, id) : timed_reopen<Arena>(place, name, id);
}

struct ReopenResult {
  std::vector<double> warm_us, cold_us;  // in a new program; cold: files only
  std::vector<double> forked_us;         // warm, in a fork()ed child
  std::vector<double> warm_faults, forked_faults;  // page faults of each warm reopen (if counted)
  std::string error;
  std::uint64_t blocks = 0, named = 0, bytes = 0;
};

// One contender's heap for the reopen workload: filled once, then reopened
// pass after pass, its passes interleaved with the other contenders' so that
// a slow spell of the machine falls on all of them alike.
struct ReopenSubject {
  Kind kind;
  std::unique_ptr<PlaceGuard> guard;  // the heap, removed with the subject
  std::string name;                   // the named object each reopen finds
  std::uint64_t id = 0;               // and the id it holds
  ReopenResult result;
};

// Creates and fills k's heap of `size` bytes, closed cleanly. On failure
// result.error says why. REQUIRES: k is not glibc.
ReopenSubject fill_for_reopen(Kind k, std::size_t size, const std::string& dir) {
  ReopenSubject s{k, std::make_unique<PlaceGuard>(make_place(k, dir, "reopen")), {}, 0, {}};
  with_mapped_arena(k, [&]<class Arena>(std::type_identity<Arena>) {
    try {
      const auto filled = run_workers(
          1, [&](unsigned, Gate&) { return fill_worker<Arena>(s.guard->place(), size); }, s.result.error);
      if (!s.result.error.empty()) return;
      s.result.blocks = filled[0].values[0];
      s.result.named = filled[0].values[1];
      s.result.bytes = filled[0].values[2];
      s.id = s.result.named / 2;
      s.name = object_name(s.id);
      // Written back now: the fill's dirty pages are not flushed while other
      // contenders are timed.
      if (on_file(k)) drop_page_cache(s.guard->place().name);
    } catch (const std::exception& e) {
      s.result.error = e.what();
    }
  });
  return s;
}

// Whether `bytes` more fit in the file system holding `path`, with a tenth
// to spare (statvfs; false if it cannot tell).
bool room_for(const std::string& path, std::uint64_t bytes) {
  struct statvfs v {};
  if (::statvfs(path.c_str(), &v) != 0) return false;
  return static_cast<double>(v.f_bavail) * static_cast<double>(v.f_frsize) >= 1.1 * static_cast<double>(bytes);
}

// One pass over a filled heap: for a file, a reopen with its pages dropped
// from the page cache first; then a reopen with them warm; each in a new
// program; then a warm one in a fork()ed child.
void reopen_pass(ReopenSubject& s) {
  if (!s.result.error.empty()) return;
  with_mapped_arena(s.kind, [&]<class Arena>(std::type_identity<Arena>) {
    ReopenResult& out = s.result;
    auto once = [&](ReopenBy by, std::vector<double>& into, std::vector<double>* faults) {
      const auto rep = run_workers(
          1, [&](unsigned, Gate& gate) { return reopen_worker<Arena>(by, s.guard->place(), s.name, s.id, gate); },
          out.error);
      if (!out.error.empty()) return;
      into.push_back(static_cast<double>(rep[0].end_ns - rep[0].start_ns) * 1e-3);
      if (faults != nullptr && rep[0].values[0] != kNoFaultCount)
        faults->push_back(static_cast<double>(rep[0].values[0]));
    };
    try {
      if (on_file(s.kind)) {
        drop_page_cache(s.guard->place().name);
        once(ReopenBy::exec, out.cold_us, nullptr);
      }
      if (out.error.empty()) once(ReopenBy::exec, out.warm_us, &out.warm_faults);
      if (out.error.empty()) once(ReopenBy::fork, out.forked_us, &out.forked_faults);
    } catch (const std::exception& e) {
      out.error = e.what();
    }
  });
}

// ---- results and tables

struct Cell {
  std::string workload;  // "alloc", "graph", "reopen"
  std::string row;
  Kind kind;
  std::vector<double> passes;
  std::string error;  // the first failure; no figure then
  bool ok() const { return error.empty() && !passes.empty(); }
  double value() const { return median(passes); }
};

struct Results {
  std::vector<Cell> cells;
  Cell& at(const std::string& workload, const std::string& row, Kind k) {
    for (Cell& c : cells)
      if (c.workload == workload && c.row == row && c.kind == k) return c;
    cells.push_back(Cell{workload, row, k, {}, {}});
    return cells.back();
  }
  const Cell* find(const std::string& workload, const std::string& row, Kind k) const {
    for (const Cell& c : cells)
      if (c.workload == workload && c.row == row && c.kind == k) return &c;
    return nullptr;
  }
  void add(const std::string& workload, const std::string& row, Kind k, const Pass& p) {
    Cell& c = at(workload, row, k);
    if (!p.error.empty()) {
      if (c.error.empty()) c.error = p.error;
    } else {
      c.passes.push_back(p.value);
    }
  }
};

// One markdown table: a row per case, a column per contender, each cell the
// median with its ratio to mapheap (file) as time ratio (contender's time /
// mapheap's: above 1, mapheap (file) is faster).
void print_table(const Results& res, const std::string& workload, const char* first_column,
                 const char* unit, bool higher_is_better) {
  std::vector<std::string> rows;
  std::vector<Kind> kinds;
  for (const Cell& c : res.cells) {
    if (c.workload != workload) continue;
    if (std::find(rows.begin(), rows.end(), c.row) == rows.end()) rows.push_back(c.row);
    if (std::find(kinds.begin(), kinds.end(), c.kind) == kinds.end()) kinds.push_back(c.kind);
  }
  std::sort(kinds.begin(), kinds.end());
  std::printf("| %s |", first_column);
  for (Kind k : kinds) std::printf(" %s |", label(k));
  std::printf("\n|---|");
  for (std::size_t i = 0; i < kinds.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (const std::string& row : rows) {
    std::printf("| %s |", row.c_str());
    const Cell* base = res.find(workload, row, Kind::mapheap_file);
    for (Kind k : kinds) {
      const Cell* c = res.find(workload, row, k);
      if (c == nullptr) {
        std::printf(" n/a |");
      } else if (!c->ok()) {
        std::printf(" failed* |");
      } else {
        std::printf(" %s%s%s", fmt_num(c->value()).c_str(), *unit != '\0' ? " " : "", unit);
        if (k != Kind::mapheap_file && base != nullptr && base->ok() && base->value() > 0 && c->value() > 0) {
          const double ratio = higher_is_better ? base->value() / c->value() : c->value() / base->value();
          std::printf(" (%sx)", fmt_num(ratio).c_str());
        }
        std::printf(" |");
      }
    }
    std::printf("\n");
  }
  for (const Cell& c : res.cells)
    if (c.workload == workload && !c.error.empty())
      std::printf("\n\\* %s, %s: %s", label(c.kind), c.row.c_str(), c.error.c_str());
  std::printf("\n");
}

struct Headline {
  std::string what;
  double value;
  std::string unit;  // "x" or "us"
  std::string target;
  bool met;
};

// ---- the run

struct Options {
  unsigned reps = 3;
  double scale = 1.0;
  std::string json_path;
  std::vector<std::string> only{"alloc", "graph", "reopen"};
  std::string dir;
};

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--reps N] [--scale X] [--only alloc,graph,reopen] [--dir DIR] [--json FILE]\n"
               "  --reps N     passes per contender and case (default 3; reopen: max(N, 5) reopens)\n"
               "  --scale X    fraction of the full sizes (0.01: a smoke run of a few seconds)\n"
               "  --only LIST  workloads to run, comma-separated (default all)\n"
               "  --dir DIR    directory for the heap files, on a disk (default a new /var/tmp/heap_bench.*)\n"
               "  --json FILE  also write every pass to FILE\n",
               argv0);
  return 2;
}

bool wants(const Options& o, std::string_view w) {
  return std::find(o.only.begin(), o.only.end(), w) != o.only.end();
}

std::string filesystem_of(const std::string& dir) {
  struct statfs st{};
  if (::statfs(dir.c_str(), &st) != 0) return "unknown filesystem";
  switch (st.f_type) {
    case TMPFS_MAGIC: return "tmpfs: NOT on a disk";
    case EXT4_SUPER_MAGIC: return "ext4";
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    default: break;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "filesystem 0x%lx", static_cast<unsigned long>(st.f_type));
  return buf;
}

// Before a measurement: the dirty pages the previous ones left are written
// back now, not during this one.
void settle() { ::sync(); }

// The name of a warm reopen's row.
std::string reopen_case(std::size_t size, ReopenBy by) {
  return fmt_bytes(size) + (by == ReopenBy::exec ? ", page cache warm, new program" : ", page cache warm, fork()ed child");
}

// The reopen workload at one heap size: every contender's heap is filled
// first; then each pass reopens all of them, in an order that rotates from
// pass to pass. That needs room for two heaps in /dev/shm and two in `dir`
// at once; with less, each contender is filled, reopened and removed in turn.
// Results go to `res` and what each heap held to `fill`.
void measure_reopen(std::size_t size, unsigned reopens, const std::string& dir, Results& res,
                    nlohmann::json& fill) {
  std::vector<ReopenSubject> subjects;
  auto passes = [&](std::size_t first) {
    const std::size_t n = subjects.size() - first;
    for (unsigned i = 0; i < reopens; ++i)
      for (std::size_t j = 0; j < n; ++j) reopen_pass(subjects[first + (i + j) % n]);
  };
  if (room_for("/dev/shm", 2 * std::uint64_t{size}) && room_for(dir, 2 * std::uint64_t{size})) {
    for (Kind k : kMappedKinds) subjects.push_back(fill_for_reopen(k, size, dir));
    passes(0);
  } else {
    std::printf("(reopen, %s: no room for every contender's heap at once; each is measured alone)\n",
                fmt_bytes(size).c_str());
    for (Kind k : kMappedKinds) {
      subjects.push_back(fill_for_reopen(k, size, dir));
      passes(subjects.size() - 1);
      subjects.back().guard.reset();  // the heap, removed
    }
  }
  const std::string warm = reopen_case(size, ReopenBy::exec);
  const std::string forked = reopen_case(size, ReopenBy::fork);
  const std::string cold = fmt_bytes(size) + ", page cache dropped, new program";
  for (const ReopenSubject& subject : subjects) {
    const Kind k = subject.kind;
    const ReopenResult& rr = subject.result;
    if (!rr.error.empty()) {
      res.add("reopen", warm, k, Pass::failed(rr.error));
      continue;
    }
    for (double us : rr.warm_us) res.add("reopen", warm, k, Pass{us, {}});
    for (double us : rr.forked_us) res.add("reopen", forked, k, Pass{us, {}});
    for (double us : rr.cold_us) res.add("reopen", cold, k, Pass{us, {}});
    for (double n : rr.warm_faults) res.add("reopen-faults", warm, k, Pass{n, {}});
    for (double n : rr.forked_faults) res.add("reopen-faults", forked, k, Pass{n, {}});
    fill.push_back({{"contender", label(k)}, {"heap_bytes", size}, {"blocks", rr.blocks},
                    {"named", rr.named}, {"bytes", rr.bytes}});
  }
}

template <std::size_t N>
std::array<Kind, N> rotated(const std::array<Kind, N>& kinds, unsigned by) {
  std::array<Kind, N> out;
  for (std::size_t i = 0; i < N; ++i) out[i] = kinds[(i + by) % N];
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == kReopenProgram) return reopen_program_main(argc, argv);
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(argv[0]);
      return 0;
    }
    if (i + 1 >= argc) return usage(argv[0]);
    const char* v = argv[++i];
    char* end = nullptr;
    if (a == "--reps") {
      o.reps = static_cast<unsigned>(std::strtoul(v, &end, 10));
      if (*end != '\0' || o.reps == 0 || o.reps > 100) return usage(argv[0]);
    } else if (a == "--scale") {
      o.scale = std::strtod(v, &end);
      if (*end != '\0' || !(o.scale > 0) || o.scale > 4) return usage(argv[0]);
    } else if (a == "--json") {
      o.json_path = v;
    } else if (a == "--dir") {
      o.dir = v;
    } else if (a == "--only") {
      o.only.clear();
      for (std::string_view s = v; !s.empty();) {
        const std::size_t comma = s.find(',');
        const std::string_view w = s.substr(0, comma);
        if (w != "alloc" && w != "graph" && w != "reopen") return usage(argv[0]);
        o.only.emplace_back(w);
        s = comma == std::string_view::npos ? std::string_view{} : s.substr(comma + 1);
      }
    } else {
      return usage(argv[0]);
    }
  }
  bool own_dir = false;
  if (o.dir.empty()) {
    // /var/tmp rather than $TMPDIR or /tmp, which may be tmpfs: the file heaps belong on a disk.
    char tmpl[] = "/var/tmp/heap_bench.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      std::fprintf(stderr, "heap_bench: mkdtemp %s: %s\n", tmpl, std::strerror(errno));
      return 1;
    }
    o.dir = tmpl;
    own_dir = true;
  }

  const auto scaled = [&](double full, double least) { return std::max(least, std::round(full * o.scale)); };
  // Sizes, from the scale. Boost's segments are created at their full size
  // (managed_mapped_file::grow() works only while nobody maps the segment), so
  // each is large enough for its workload; mapheap starts at 64 MiB and grows
  // online to the same size.
  const auto scaled_bytes = [&](std::size_t full, std::size_t least) {  // whole MiB
    return std::max(least, static_cast<std::size_t>(std::round(static_cast<double>(full / MiB) * o.scale)) * MiB);
  };
  const std::size_t heap_size = scaled_bytes(GiB, 64 * MiB);
  const Sizing sizing{std::min(heap_size, 64 * MiB), heap_size};
  const AllocParams ap{static_cast<std::uint32_t>(scaled(4096, 256)),
                       static_cast<std::uint32_t>(scaled(1 << 20, 10000)), sizing};
  const auto vertices = static_cast<std::uint32_t>(scaled(1 << 20, 1024));
  const std::uint64_t edges = std::uint64_t{16} * vertices;
  const std::array<std::size_t, 2> reopen_sizes{scaled_bytes(GiB, 16 * MiB), scaled_bytes(4 * GiB, 16 * MiB)};
  const unsigned reopens = std::max(o.reps, 5u);

  std::printf("## Shared and persistent heaps: mapheap against Boost.Interprocess and glibc malloc\n\n");
  std::printf("heap_bench --reps %u --scale %g: files in %s (%s), shm in /dev/shm; Boost %d.%d, glibc %s, %ld CPUs\n\n",
              o.reps, o.scale, o.dir.c_str(), filesystem_of(o.dir).c_str(), BOOST_VERSION / 100000,
              BOOST_VERSION / 100 % 1000, gnu_get_libc_version(), ::sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("Each measuring process is pinned: a lone one to the first CPU the benchmark may use, the\n"
              "two of a two-process run one to each of the first two.\n\n");
  std::printf("Heaps are sized up front for Boost: a managed segment cannot grow while it is mapped\n"
              "(grow() works only offline), so each Boost segment is created at its full size: %s for\n"
              "alloc and graph, where mapheap starts at %s and grows online up to the same size;\n"
              "%s and %s for reopen, both created at that size.\n\n",
              fmt_bytes(heap_size).c_str(), fmt_bytes(sizing.initial).c_str(), fmt_bytes(reopen_sizes[0]).c_str(),
              fmt_bytes(reopen_sizes[1]).c_str());

  Results res;
  nlohmann::json reopen_fill = nlohmann::json::array();
  std::vector<Headline> headlines;

  // Reopen is measured first and printed in its place below, so that its
  // workers are forked from the same parent state as in a reopen-only run:
  // after alloc and graph this process's malloc heap is large and
  // fragmented, and a worker's first malloc copies some of its pages on
  // write (docs/BENCHMARKS.md, runs G-I).
  if (wants(o, "reopen"))
    for (std::size_t size : reopen_sizes) measure_reopen(size, reopens, o.dir, res, reopen_fill);

  if (wants(o, "alloc")) {
    for (unsigned procs : {1u, 2u}) {
      const std::string row = procs == 1 ? "1 process" : "2 processes, one heap";
      for (unsigned r = 0; r < o.reps; ++r)
        for (Kind k : rotated(kAllocKinds, r)) {
          settle();
          const AllocPasses p = measure_alloc(k, procs, ap, o.dir);
          res.add("alloc", row + kFirstPass, k, p.first);
          res.add("alloc", row + kSecondPass, k, p.second);
        }
    }
    std::printf("### Allocate/free throughput, million ops/s (median of %u; ratio = time / mapheap (file)'s: above 1, "
                "mapheap (file) faster)\n\n",
                o.reps);
    std::printf("Each process keeps a window of %s live blocks of 8 B-64 KiB (log-uniform, seed %llu) and replaces\n"
                "a random one %s times; an op is one allocate or one deallocate; each block's first and last\n"
                "8 bytes are written and checked. With 2 processes, two fork()ed processes allocate in the\n"
                "same heap at once; glibc's processes each have their own malloc (nothing is shared).\n"
                "Each process makes the same replacements twice, timed apart: the first pass runs on a new\n"
                "heap, whose pages it touches for the first time (page faults; for a file, disk blocks\n"
                "allocated), the second on the heap the first left, where only the allocator works.\n\n",
                fmt_count(ap.window).c_str(), static_cast<unsigned long long>(kSeed), fmt_count(ap.rounds).c_str());
    print_table(res, "alloc", "processes", "", true);
    std::printf("\n");
  }

  if (wants(o, "graph")) {
    const Graph g = make_graph(vertices, edges);
    std::uint64_t reference = 0;
    struct Sum {
      GraphVector v;
      Kind k;
      std::uint64_t sum;
    };
    std::vector<Sum> sums;
    // Each repetition builds the graph with both kinds of vector, every
    // contender in a rotating order.
    for (unsigned r = 0; r < o.reps; ++r) {
      for (GraphVector v : {GraphVector::own, GraphVector::std_vector}) {
        for (Kind k : rotated(kGraphKinds, r)) {
          std::uint64_t sum = 0;
          settle();
          Pass p = measure_graph(k, v, sizing, g, o.dir, sum);
          if (p.error.empty()) sums.push_back({v, k, sum});
          if (p.error.empty() && k == Kind::glibc) reference = sum;
          res.add("graph", graph_row(v), k, p);
        }
      }
    }
    for (const auto& [v, k, sum] : sums)
      if (reference != 0 && sum != reference)
        res.at("graph", graph_row(v), k).error = "the lists differ from glibc's (checksum)";
    std::printf("### Graph build, seconds (median of %u; ratio = time / mapheap (file)'s)\n\n", o.reps);
    std::printf("A vector of %s vectors of uint32_t in the heap, then push_back of %s random edges; timed\n"
                "from the outer vector's construction to the last push_back (not the heap's creation or\n"
                "close). Every contender's lists are checked against glibc's. Two rows: std::vector with each\n"
                "contender's allocator (boost::interprocess::allocator, mapheap::allocator, std::allocator),\n"
                "the same class for all; and each library's own vector: std::vector (which doubles from one\n"
                "element), mapheap::vector (which doubles from four and takes whole size classes, what\n"
                "allocate_at_least reports) and boost::interprocess::vector (which grows by 1.6x).\n"
                "\"mapheap (shm), plain pointers\" is not a contender: the same shm heap through a stateless\n"
                "allocator of plain pointers and std::vector, valid in this process only, which tells what the\n"
                "allocator costs from what offset_ptr and a stateful allocator (32-byte inner vectors) cost.\n\n",
                fmt_count(vertices).c_str(), fmt_count(edges).c_str());
    print_table(res, "graph", "graph", "s", false);
    std::printf("\n");
  }

  if (wants(o, "reopen")) {
    std::printf("### Reopen: open + find one named object, microseconds (median of %u reopens, each in a new "
                "process; ratio = time / mapheap (file)'s)\n\n",
                reopens);
    std::printf("Each heap is filled to 85%% (or until full) with blocks of 8 B-64 KiB and a named object every\n"
                "%u blocks, closed cleanly, then opened again by a new process that finds the middle named\n"
                "object. \"New program\": this benchmark executed again (exec), as a program that starts and opens\n"
                "its heap; the clock starts in it, after exec. \"fork()ed child\": a child of this benchmark, which\n"
                "also pays for copying on write whatever it touches of the benchmark's own memory (its malloc\n"
                "arena, stack and data pages); the clock starts once the parent is done forking. The contenders'\n"
                "reopens alternate, in an order that rotates from pass to pass. \"Page cache dropped\": the file's\n"
                "pages written back and evicted (posix_fadvise) first.\n\n",
                kNamedEvery);
    print_table(res, "reopen", "heap", "us", false);
    if (std::none_of(res.cells.begin(), res.cells.end(), [](const Cell& c) { return c.workload == "reopen-faults"; }))
      std::printf("\n(Page faults not counted: perf_event_open is not allowed here; see\n"
                  "/proc/sys/kernel/perf_event_paranoid, which must be 2 or less.)\n");
    else {
      std::printf("\nPage faults taken during the same open + find (median; from the kernel's software event, so\n"
                  "pages mapped by a MADV_POPULATE_* call are not among them; ratio = faults / mapheap (file)'s):\n\n");
      print_table(res, "reopen-faults", "heap", "", false);
    }
    std::printf("\nWhat the heaps held when closed:\n\n");
    for (const auto& f : reopen_fill)
      std::printf("- %s, %s: %s blocks and %s named objects, %s requested\n",
                  f["contender"].get<std::string>().c_str(), fmt_bytes(f["heap_bytes"].get<std::size_t>()).c_str(),
                  fmt_count(f["blocks"].get<std::uint64_t>()).c_str(),
                  fmt_count(f["named"].get<std::uint64_t>()).c_str(),
                  fmt_bytes(f["bytes"].get<std::size_t>()).c_str());
    std::printf("\n");
  }

  // The targets, computed from this run.
  auto ratio = [&](const char* w, const std::string& row, Kind a, Kind b) -> double {
    const Cell* x = res.find(w, row, a);
    const Cell* y = res.find(w, row, b);
    if (x == nullptr || y == nullptr || !x->ok() || !y->ok()) return std::nan("");
    return x->value() / y->value();
  };
  if (wants(o, "alloc")) {
    for (const char* procs : {"1 process", "2 processes, one heap"})
      for (const char* pass : {kFirstPass, kSecondPass}) {
        const std::string row = std::string(procs) + pass;
        const double f = ratio("alloc", row, Kind::mapheap_file, Kind::boost_file);
        const double s = ratio("alloc", row, Kind::mapheap_shm, Kind::boost_shm);
        headlines.push_back({"throughput mapheap (file) / Boost mapped_file, " + row, f, "x", ">= 10x", f >= 10});
        headlines.push_back({"throughput mapheap (shm) / Boost shm, " + row, s, "x", ">= 10x", s >= 10});
      }
  }
  if (wants(o, "graph")) {
    // The target is for each library's own vector; std::vector over
    // offset_ptr is shown beside it, without one.
    for (GraphVector v : {GraphVector::own, GraphVector::std_vector}) {
      const bool target = v == GraphVector::own;
      for (Kind k : {Kind::mapheap_file, Kind::mapheap_shm}) {
        const double x = ratio("graph", graph_row(v), k, Kind::glibc);
        headlines.push_back({std::string("graph time ") + label(k) + " / glibc malloc, " + graph_row(v), x, "x",
                             target ? "<= 1.1x" : "", target ? x <= 1.1 : true});
      }
    }
  }
  if (wants(o, "reopen")) {
    // With the page cache warm: a cold open waits for the disk (the table
    // shows it). Both kinds of new process are shown against the goal.
    for (std::size_t size : reopen_sizes)
      for (ReopenBy by : {ReopenBy::exec, ReopenBy::fork})
        for (Kind k : {Kind::mapheap_file, Kind::mapheap_shm}) {
          const std::string row = reopen_case(size, by);
          const Cell* c = res.find("reopen", row, k);
          const double us = c != nullptr && c->ok() ? c->value() : std::nan("");
          headlines.push_back({std::string("reopen ") + label(k) + ", " + row, us, "us", "< 1000 us", us < 1000});
        }
  }
  if (!headlines.empty()) {
    std::printf("### The issue's targets\n\n| target | measured | goal | |\n|---|---|---|---|\n");
    for (const Headline& h : headlines) {
      if (std::isnan(h.value))
        std::printf("| %s | no figure | %s | not measured |\n", h.what.c_str(), h.target.c_str());
      else
        std::printf("| %s | %s%s | %s | %s |\n", h.what.c_str(), fmt_num(h.value).c_str(),
                    h.unit == "x" ? "x" : " us", h.target.empty() ? "none" : h.target.c_str(),
                    h.target.empty() ? "for comparison" : h.met ? "met" : "NOT met");
    }
    std::printf("\n");
  }

  // How far the passes of one cell spread: a difference smaller than that is noise.
  std::string spread;
  for (const Cell& c : res.cells) {
    if (!c.ok() || c.passes.size() < 2) continue;
    const auto [lo, hi] = std::minmax_element(c.passes.begin(), c.passes.end());
    if (*lo > 0 && *hi / *lo > 1.2)
      spread += std::string(spread.empty() ? "" : "; ") + c.workload + " " + c.row + " " + label(c.kind) + " " +
                fmt_num(*hi / *lo) + "x";
  }
  std::printf("Spread of the passes (slowest / fastest) above 20%%: %s\n", spread.empty() ? "none" : spread.c_str());

  if (!o.json_path.empty()) {
    nlohmann::json j;
    j["benchmark"] = "heap_bench";
    j["reps"] = o.reps;
    j["scale"] = o.scale;
    j["dir"] = o.dir;
    j["filesystem"] = filesystem_of(o.dir);
    j["boost"] = BOOST_LIB_VERSION;
    j["glibc"] = gnu_get_libc_version();
    j["heap_bytes"] = heap_size;
    j["mapheap_initial_bytes"] = sizing.initial;
    j["alloc"] = {{"window", ap.window}, {"rounds", ap.rounds}, {"seed", kSeed}};
    j["graph"] = {{"vertices", vertices}, {"edges", edges}};
    j["reopen"] = {{"reopens", reopens}, {"named_every", kNamedEvery}, {"filled", reopen_fill}};
    const std::array<const char*, 4> units{"Mops/s", "s", "us", "faults"};
    for (const Cell& c : res.cells) {
      const std::size_t u = c.workload == "alloc"           ? 0
                            : c.workload == "graph"         ? 1
                            : c.workload == "reopen-faults" ? 3
                                                            : 2;
      nlohmann::json cell = {{"workload", c.workload}, {"case", c.row},     {"contender", label(c.kind)},
                             {"unit", units[u]},       {"passes", c.passes}};
      if (c.ok()) cell["median"] = c.value();
      if (!c.error.empty()) cell["error"] = c.error;
      j["results"].push_back(cell);
    }
    for (const Headline& h : headlines) {
      nlohmann::json x = {{"target", h.what}, {"goal", h.target}, {"met", h.met}};
      if (!std::isnan(h.value)) x["measured"] = h.value;
      j["targets"].push_back(x);
    }
    std::ofstream(o.json_path) << j.dump(2) << "\n";
  }
  if (own_dir) ::rmdir(o.dir.c_str());
  return 0;
}
