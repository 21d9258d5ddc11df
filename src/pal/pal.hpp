// pal/pal.hpp — the platform layer: the whole contract between mapheap and the OS.
//
// CONTRACT
//  * This layer is the only code in mapheap that calls the operating system:
//    mmap and friends, files, shared memory, memfd, futexes, process-shared
//    mutexes, /proc and /sys, rseq/getcpu, process spawning. Every OS #ifdef
//    and every raw flag constant lives in src/pal/*.cpp; the rest of the
//    project speaks the typed vocabulary below.
//  * Nothing here throws. Every call that can fail returns pal::Result<T> or
//    pal::Status carrying a pal::Error that names the operation, the errno and
//    the arguments (path, size, offset, flags) needed to tell the user what
//    failed. No errno is ever left for the caller to read.
//  * Nothing here allocates from the C/C++ heap, except spawn() (tools only),
//    so the process malloc can be built on it. /proc and /sys are read with
//    fixed stack buffers.
//  * EINTR is retried inside the layer wherever the call is restartable.
//  * Files are opened with O_CLOEXEC always, and O_NOFOLLOW unless the caller
//    asks to follow symlinks; new files and shm objects get mode 0600 unless the
//    caller gives another.
//  * Values read from /proc and /sys are parsed defensively: a malformed line is
//    skipped, never trusted to index anything.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <pthread.h>
#include <sched.h>
#include <sys/types.h>

#include "pal/error.hpp"

namespace mapheap::pal {

// ---------------------------------------------------------------- memory

std::size_t page_size() noexcept;  // the OS base page size (sysconf, cached)

inline constexpr std::size_t kHuge2M = std::size_t{2} << 20;
inline constexpr std::size_t kHuge1G = std::size_t{1} << 30;

enum class Prot : std::uint8_t { none, read, read_write };

// Bit set of mapping flags. Exactly one of shared/private_ must be set.
enum MapFlag : std::uint32_t {
  kMapShared = 1u << 0,
  kMapPrivate = 1u << 1,
  kMapAnonymous = 1u << 2,
  kMapFixed = 1u << 3,  // replace whatever is at addr (only over our own reservation)
  kMapNoReserve = 1u << 4,
  kMapPopulate = 1u << 5,
  kMapHuge2M = 1u << 6,  // MAP_HUGETLB | MAP_HUGE_2MB
  kMapHuge1G = 1u << 7,  // MAP_HUGETLB | MAP_HUGE_1GB
};

// mmap(addr, len, prot, flags, fd, offset).
Result<void*> map(void* addr, std::size_t len, Prot prot, std::uint32_t flags, int fd,
                  std::uint64_t offset) noexcept;
Status unmap(void* addr, std::size_t len) noexcept;
Status protect(void* addr, std::size_t len, Prot prot) noexcept;
// mremap; may_move allows the kernel to pick a new address.
Result<void*> remap(void* addr, std::size_t old_len, std::size_t new_len, bool may_move) noexcept;

// Reserves `len` bytes of address space, aligned to `align` (a power of two,
// at least the page size; anything else is EINVAL): PROT_NONE, private, anonymous, MAP_NORESERVE.
// No memory is committed; the range is later replaced with kMapFixed mappings or made accessible
// with protect().
Result<void*> reserve(std::size_t len, std::size_t align) noexcept;

enum class Advice : std::uint8_t {
  normal,
  random,
  sequential,
  willneed,
  dontneed,   // private anonymous: drop pages, next touch reads zeros
  free_lazy,  // MADV_FREE
  remove,     // shared/shmem: punch the backing store (MADV_REMOVE)
  hugepage,   // THP: prefer huge pages
  nohugepage,
  populate_read,   // prefault for reading (Linux 5.14+)
  populate_write,  // prefault writable (Linux 5.14+)
  dontdump,
  cold,
  pageout,
};
const char* advice_name(Advice a) noexcept;
Status advise(void* addr, std::size_t len, Advice advice) noexcept;

Status lock(void* addr, std::size_t len) noexcept;    // mlock
Status unlock(void* addr, std::size_t len) noexcept;  // munlock
// msync(MS_SYNC) — or MS_ASYNC when async — of [addr, addr+len).
Status sync_memory(void* addr, std::size_t len, bool async = false) noexcept;

// ---------------------------------------------------------------- files

enum OpenFlag : std::uint32_t {
  kOpenRead = 0,             // O_RDONLY
  kOpenReadWrite = 1u << 0,  // O_RDWR
  kOpenCreate = 1u << 1,     // O_CREAT
  kOpenExclusive = 1u << 2,  // O_EXCL (with kOpenCreate)
  kOpenTruncate = 1u << 3,   // O_TRUNC
  kOpenFollow = 1u << 4,     // drop the default O_NOFOLLOW
  kOpenWriteOnly = 1u << 5,  // O_WRONLY
  kOpenNonBlock = 1u << 6,   // O_NONBLOCK: opening a FIFO or device must not block
};

// open(path, flags | O_CLOEXEC | O_NOCTTY [| O_NOFOLLOW], mode). A symlink gives ELOOP.
Result<int> open_file(const char* path, std::uint32_t flags, unsigned mode = 0600) noexcept;
Status close_fd(int fd) noexcept;
Result<int> dup_fd(int fd) noexcept;  // F_DUPFD_CLOEXEC

enum class FileType : std::uint8_t { regular, directory, symlink, other };

struct FileInfo {
  std::uint64_t size = 0;
  FileType type = FileType::other;
  std::uint32_t mode = 0;        // permission bits
  std::uint64_t dev = 0;         // st_dev of the file (for block device statistics)
  std::uint64_t fs_magic = 0;    // statfs f_type
  std::uint64_t block_size = 0;  // st_blksize (the huge page size on hugetlbfs)
  bool on_hugetlbfs = false;
  bool on_tmpfs = false;
};
Result<FileInfo> stat_fd(int fd) noexcept;

Status truncate_fd(int fd, std::uint64_t size) noexcept;  // ftruncate
// fallocate(mode 0): reserve blocks so later stores cannot hit ENOSPC.
Status allocate_fd(int fd, std::uint64_t offset, std::uint64_t len) noexcept;
// fallocate(PUNCH_HOLE | KEEP_SIZE): return blocks to the filesystem; reads give zeros.
Status punch_hole(int fd, std::uint64_t offset, std::uint64_t len) noexcept;
Status datasync(int fd) noexcept;  // fdatasync
// fsync of the directory holding `path`: makes a newly created name durable.
Status sync_parent_directory(const char* path) noexcept;
// An open-file-description lock (F_OFD_SETLKW) on the whole file: serialises
// check-then-act sequences (fstat, then ftruncate) between processes and
// threads that each opened the file. Released by unlock_file or by closing.
Status lock_file(int fd) noexcept;
Status unlock_file(int fd) noexcept;
// Open-file-description locks on a byte range (len 0: to the end), as
// lock_file: held per open of the file, released by closing it or by the
// death of the process. wait = false returns false when another holds a
// conflicting lock.
enum class RangeLock : std::uint8_t { shared, exclusive, unlock };
Result<bool> lock_range(int fd, std::uint64_t start, std::uint64_t len, RangeLock kind,
                        bool wait) noexcept;
// A reflink of src's data into dst (FICLONE): true if done, false if the
// filesystem cannot (the caller copies instead).
Result<bool> clone_file(int src, int dst) noexcept;
// Copies [0, len) of src to dst, holes kept as holes (SEEK_DATA/SEEK_HOLE,
// copy_file_range); dst is sized to len.
Status copy_sparse(int src, int dst, std::uint64_t len) noexcept;
// Whether another open of the file holds a lock on part of the range.
Result<bool> range_locked_by_others(int fd, std::uint64_t start, std::uint64_t len) noexcept;
// posix_fadvise(POSIX_FADV_DONTNEED) after writeback: evicts the file's clean
// pages from the page cache (what a "cold" read needs; no privilege needed).
Status drop_file_cache(int fd) noexcept;

// read/pread/write/pwrite: one call, EINTR retried; returns bytes transferred.
Result<std::size_t> read_fd(int fd, void* buf, std::size_t n) noexcept;
Result<std::size_t> pread_fd(int fd, void* buf, std::size_t n, std::uint64_t off) noexcept;
Result<std::size_t> write_fd(int fd, const void* buf, std::size_t n) noexcept;
Result<std::size_t> pwrite_fd(int fd, const void* buf, std::size_t n, std::uint64_t off) noexcept;
// Loops until n bytes are written (or an error).
Status pwrite_all(int fd, const void* buf, std::size_t n, std::uint64_t off) noexcept;

Status unlink_path(const char* path) noexcept;

enum MemfdFlag : std::uint32_t {
  kMemfdAllowSealing = 1u << 0,
  kMemfdHuge2M = 1u << 1,  // MFD_HUGETLB | MFD_HUGE_2MB
  kMemfdHuge1G = 1u << 2,  // MFD_HUGETLB | MFD_HUGE_1GB
};
Result<int> memfd(const char* name, std::uint32_t flags) noexcept;

// POSIX shared memory. `name` must look like "/name" (one leading slash, no other).
Result<int> shm_open_object(const char* name, std::uint32_t open_flags,
                            unsigned mode = 0600) noexcept;
Status shm_remove(const char* name) noexcept;

// ---------------------------------------------------------------- /proc and /sys

enum class ThpMode : std::uint8_t { unknown, always, madvise, never };
const char* thp_mode_name(ThpMode m) noexcept;

struct HugePagePool {
  std::size_t page_size = 0;   // 0 = slot unused
  std::uint64_t total = 0;     // nr_hugepages
  std::uint64_t free = 0;      // free_hugepages
  std::uint64_t reserved = 0;  // resv_hugepages
};

struct SystemInfo {
  std::size_t page_size = 0;
  unsigned cpus_online = 0;
  std::uint64_t memory_total = 0;      // bytes (/proc/meminfo MemTotal)
  std::uint64_t memory_available = 0;  // bytes (/proc/meminfo MemAvailable)
  HugePagePool huge[4];  // hugetlb pools by size, as /sys/kernel/mm/hugepages lists them
  ThpMode thp_enabled = ThpMode::unknown;
  ThpMode thp_defrag = ThpMode::unknown;  // defrag has more modes; unknown if not one of these
  char thp_shmem[24] = {};     // /sys/kernel/mm/transparent_hugepage/shmem_enabled choice
  int overcommit_memory = -1;  // 0 heuristic, 1 always, 2 never
  int overcommit_ratio = -1;
  bool rseq_registered = false;  // glibc registered rseq for this thread
  unsigned rseq_size = 0;        // __rseq_size
  bool getcpu_available = false;
  bool memfd_available = false;
  bool pagemap_pfn_readable = false;  // CAP_SYS_ADMIN: pagemap shows frame numbers
  char kernel[64] = {};               // uname release
};
// Everything above; probes memfd and pagemap, so call it once, not per mapping.
SystemInfo system_info() noexcept;

// Just the THP settings (three sysfs reads): what Mapping needs on every create.
struct ThpSettings {
  ThpMode enabled = ThpMode::unknown;      // the top-level switch
  ThpMode pmd_enabled = ThpMode::unknown;  // hugepages-2048kB/enabled (6.8+); unknown = inherit
  char shmem[24] = {};  // shmem_enabled choice: always, within_size, advise, never, deny, force
  // What decides 2 MiB THP for anonymous memory: the per-size switch unless it
  // says "inherit" (or is absent), then the top-level one.
  ThpMode effective() const noexcept {
    return pmd_enabled != ThpMode::unknown ? pmd_enabled : enabled;
  }
};
ThpSettings thp_settings() noexcept;
// Free huge pages of one size (0 if the size is not offered).
std::uint64_t huge_pages_free(std::size_t size) noexcept;
// Free pages not already promised to an existing mapping (free - resv): what
// a new hugetlb mapping can count on.
std::uint64_t huge_pages_available(std::size_t size) noexcept;

// Residency of [addr, addr+len) from /proc/self/pagemap, one entry per page.
struct PageResidency {
  std::uint64_t pages = 0;
  std::uint64_t present = 0;  // in RAM
  std::uint64_t swapped = 0;
  std::uint64_t exclusive = 0;       // mapped only here (bit 56)
  std::uint64_t file_or_shared = 0;  // bit 61
  std::uint64_t first_pfn = 0;       // frame of the first present page; 0 if not permitted
};
Result<PageResidency> pagemap_residency(const void* addr, std::size_t len) noexcept;
// Physical frame number behind addr; 0 when not present or not permitted.
Result<std::uint64_t> physical_frame(const void* addr) noexcept;

// Sums of /proc/self/smaps fields (in bytes) over the VMAs that intersect a range.
struct SmapsTotals {
  std::uint64_t vmas = 0;
  std::uint64_t size = 0;
  std::uint64_t rss = 0;
  std::uint64_t pss = 0;
  std::uint64_t shared_clean = 0;
  std::uint64_t shared_dirty = 0;
  std::uint64_t private_clean = 0;
  std::uint64_t private_dirty = 0;
  std::uint64_t anonymous = 0;
  std::uint64_t anon_huge = 0;   // AnonHugePages
  std::uint64_t shmem_huge = 0;  // ShmemPmdMapped
  std::uint64_t file_huge = 0;   // FilePmdMapped
  std::uint64_t swap = 0;
  std::uint64_t locked = 0;
  bool thp_eligible = false;  // any VMA with THPeligible: 1
  std::uint64_t random_read_vmas = 0;  // VMAs advised MADV_RANDOM: "rr" in VmFlags
};

// Streaming parser for smaps text; separated from the file reading so that it
// can be tested and fuzzed on arbitrary input.
class SmapsParser {
 public:
  SmapsParser(std::uintptr_t lo, std::uintptr_t hi) noexcept : lo_(lo), hi_(hi) {}
  // One line without its newline. Malformed lines are ignored.
  void feed_line(const char* line, std::size_t len) noexcept;
  const SmapsTotals& totals() const noexcept { return totals_; }

 private:
  std::uintptr_t lo_, hi_;
  bool in_range_ = false;
  SmapsTotals totals_{};
};
Result<SmapsTotals> smaps_range(const void* addr, std::size_t len) noexcept;

// /proc/self/io counters.
struct IoCounters {
  std::uint64_t rchar = 0, wchar = 0, read_bytes = 0, write_bytes = 0, cancelled_write_bytes = 0;
};
Result<IoCounters> process_io() noexcept;

// /sys/dev/block/MAJ:MIN/stat of the device holding a file (st_dev).
struct BlockStats {
  std::uint64_t sectors_read = 0, sectors_written = 0;  // 512-byte sectors
};
Result<BlockStats> block_device_stats(std::uint64_t dev) noexcept;

// getrusage: page faults and peak resident set size, of this process or of
// its waited-for children (what an allocator benchmark reports as peak RSS).
struct ResourceUsage {
  std::uint64_t minor_faults = 0;
  std::uint64_t major_faults = 0;
  std::uint64_t max_rss = 0;  // bytes
  std::uint64_t user_ns = 0, system_ns = 0;
};
Result<ResourceUsage> resource_usage(bool children = false) noexcept;

// echo 1 > /proc/sys/vm/drop_caches (needs root); the page cache is written
// back first (sync). EACCES/EPERM/EROFS when the caller lacks the right.
Status drop_page_cache() noexcept;

// ---------------------------------------------------------------- sync

// Futex on a 32-bit word; `shared` selects a process-shared futex (the word
// lives in a shared mapping) rather than FUTEX_PRIVATE_FLAG.
enum class WaitResult : std::uint8_t { woken, value_changed, timed_out, interrupted };
Result<WaitResult> futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                              std::int64_t timeout_ns, bool shared) noexcept;  // <0: forever
Result<int> futex_wake(std::atomic<std::uint32_t>* word, int count, bool shared) noexcept;

// A process-shared, robust pthread mutex that can live inside a mapping. If the
// owner dies holding it, the next lock() reports owner_died: the caller holds
// the lock, must repair the protected structure and call mark_consistent()
// before unlock(); unlocking without that makes the mutex not_recoverable.
enum class LockState : std::uint8_t { acquired, owner_died, busy, not_recoverable };
class RobustMutex {
 public:
  Status init() noexcept;  // REQUIRES: storage not in use by any process
  Result<LockState> lock() noexcept;
  Result<LockState> try_lock() noexcept;  // busy if another holder
  Status mark_consistent() noexcept;
  Status unlock() noexcept;
  Status destroy() noexcept;

 private:
  pthread_mutex_t m_;
};

// ---------------------------------------------------------------- cpu

struct RseqInfo {
  bool registered = false;    // the C library registered rseq for this thread
  unsigned size = 0;          // __rseq_size
  std::ptrdiff_t offset = 0;  // __rseq_offset from the thread pointer
};
RseqInfo rseq_info() noexcept;
// The CPU this thread runs on: rseq's cpu_id when registered (no syscall),
// else getcpu(). Only a hint: the thread may migrate right after.
unsigned current_cpu() noexcept;
unsigned cpu_count() noexcept;       // CPUs online
unsigned cpus_configured() noexcept;  // CPUs the system knows (online or not): cpu ids are below it

// The calling thread's id (gettid).
int thread_id() noexcept;
// Whether thread `tid` of process `pid` still exists (tgkill with signal 0;
// a thread of another user's process counts as alive).
bool thread_alive(int pid, int tid) noexcept;

// The calling thread's CPU affinity, saved so that it can be pinned to one
// CPU after another (to run code on each CPU in turn) and put back.
class CpuAffinity {
 public:
  Status save() noexcept;
  bool allowed(unsigned cpu) const noexcept;  // in the saved set
  Status pin(unsigned cpu) noexcept;          // run only on `cpu` from now on
  Status restore() noexcept;                  // back to the saved set

 private:
  cpu_set_t saved_{};
};

// A hint to the CPU inside a spin loop (x86 PAUSE, arm64 YIELD): it saves
// power and lets a sibling hyperthread run.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// ---------------------------------------------------------------- process & time

std::uint64_t monotonic_ns() noexcept;
std::uint64_t realtime_ns() noexcept;  // CLOCK_REALTIME: wall-clock stamps kept in files
int process_id() noexcept;

// Runs argv[0] (PATH lookup) with argv, waits, returns its exit status
// (128+signal if killed). Tools only: may allocate. ENOENT if not found.
Result<int> spawn_wait(const char* const argv[]) noexcept;

// What a spawned child used: wall time from spawn to exit, and its rusage.
struct ChildUsage {
  std::uint64_t wall_ns = 0;
  std::uint64_t max_rss_bytes = 0;  // peak resident set size
  double user_seconds = 0;
  double system_seconds = 0;
};
// As spawn_wait, with the environment `envp` (nullptr: this process's) and
// the child's usage written to `usage`.
Result<int> spawn_wait(const char* const argv[], const char* const envp[],
                       ChildUsage& usage) noexcept;

}  // namespace mapheap::pal
