// mapheap/mapping.hpp — Mapping: one RAII memory mapping, the ground every heap stands on.
//
// A Mapping owns a fixed range of virtual address space (the *reservation*) and
// a usable prefix of it (the *size*). The base address never moves: growing a
// mapping makes more of the reservation usable in place —
//
//   base                       base+size                       base+reserved
//   |-------- usable ----------|----- reserved, not usable -----|
//
//  * anonymous private: the reservation is PROT_NONE; grow() makes pages
//    read-write (mprotect).
//  * file, shm, memfd, anonymous shared: the whole reservation is mapped over the
//    file once; grow() only extends the file (ftruncate). No remap, so every
//    process that maps the same object keeps its own base and sees the growth.
//    (Anonymous *shared* memory is an unnamed memfd, so that it can grow and a
//    fork()ed child sees the growth.)
//  * file, private (copy-on-write): changes are never written back, and the file
//    is never created or extended; growth past its end maps anonymous zero
//    pages in place.
//  * hugetlb: huge pages cannot be overcommitted (and a writable hugetlbfs
//    mapping resizes its file to the mapping), so only [0, size) is mapped and
//    grow() maps each new range in place.
//
// Files are preallocated by default (fallocate): a store into a sparse file on
// a full filesystem is a SIGBUS the kernel cannot turn into an error, so the
// space is claimed when the mapping is created or grown, where ENOSPC can be
// reported. shm and memfd objects are sparse by default (RAM is claimed on
// touch); set `preallocate` to claim it up front.
//
// Huge pages: the policy is a request. What was obtained, and why not more, is
// recorded in huge_report() — a fallback is never silent. Use
// HugePolicy::automatic to take the best the machine offers; `huge_strict` turns
// a fallback into an error.
//
// Errors: create() and grow() throw mapheap::error naming the path, size and
// flags involved; try_create()/try_grow() return them instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "mapheap/error.hpp"

namespace mapheap {

namespace pal {
class Status;  // the platform layer's error carrier (src/pal); private helpers only
}

enum class Backing : std::uint8_t {
  anonymous,  // no name; private, or shared with fork()ed children
  file,       // a path on a filesystem (hugetlbfs included)
  shm,        // a POSIX shared memory object "/name"
  memfd,      // an anonymous memory file; share it by passing fd()
};

enum class Sharing : std::uint8_t {
  shared,   // stores are visible to every mapper and written back to the file
  private_  // copy-on-write: stores stay in this process, never written back
};

enum class Access : std::uint8_t { read_write, read_only };

// For named backings (file, shm): what to do when the object does / does not exist.
enum class OpenMode : std::uint8_t {
  create_exclusive,  // fail with EEXIST if it exists
  open_or_create,
  open_existing,  // fail with ENOENT if it does not exist
};

enum class HugePolicy : std::uint8_t {
  none,         // base pages; THP disabled for the range (MADV_NOHUGEPAGE)
  transparent,  // base pages + MADV_HUGEPAGE (the kernel may promote 2 MiB runs)
  hugetlb_2m,   // hugetlb 2 MiB pages; falls back to transparent if unavailable
  hugetlb_1g,   // hugetlb 1 GiB pages; falls back to 2 MiB, then transparent
  automatic,    // the best available: hugetlb 2 MiB if enough are free, else transparent
};

// What a Mapping actually got.
enum class HugeOutcome : std::uint8_t { none, transparent, hugetlb_2m, hugetlb_1g };

const char* to_string(Backing) noexcept;
const char* to_string(HugePolicy) noexcept;
const char* to_string(HugeOutcome) noexcept;

struct HugeReport {
  HugePolicy requested = HugePolicy::none;
  HugeOutcome obtained = HugeOutcome::none;
  bool fell_back = false;
  std::string reason;  // why `obtained` is less than `requested`; "" if it is not
};

enum class Advice : std::uint8_t {
  normal,
  sequential,
  random,  // no readahead (what heap and kv data mappings use)
  willneed,
  dontneed,
  hugepage,
  nohugepage,
  populate,  // prefault now (read-write mappings are prefaulted writable)
};

struct Residency {
  std::uint64_t pages = 0;           // pages in the range
  std::uint64_t resident_pages = 0;  // present in RAM (pagemap)
  std::uint64_t swapped_pages = 0;
  std::uint64_t rss_bytes = 0;  // smaps, summed over the mapping's VMAs
  std::uint64_t private_dirty_bytes = 0;
  std::uint64_t shared_dirty_bytes = 0;
  std::uint64_t huge_bytes = 0;  // AnonHugePages + ShmemPmdMapped + FilePmdMapped
  std::uint64_t first_pfn = 0;   // physical frame of the first resident page, 0 if hidden
};

struct MappingOptions {
  Backing backing = Backing::anonymous;
  std::string path;  // file path, shm name ("/name") or memfd name
  OpenMode open_mode = OpenMode::open_or_create;
  Sharing sharing = Sharing::private_;
  Access access = Access::read_write;
  std::size_t size = 0;     // usable bytes now; 0 = the existing object's size
  std::size_t reserve = 0;  // bytes of address space for growth; 0 = size (no growth)
  HugePolicy huge = HugePolicy::none;
  bool huge_strict = false;      // a huge-page fallback is an error instead
  bool prefault = false;         // populate pages at create and grow
  bool preallocate = false;      // claim the object's storage (fallocate) at create and grow
  bool follow_symlinks = false;  // default: a symlink is refused (O_NOFOLLOW)
  bool lock_memory = false;      // mlock the usable range
  // MADV_RANDOM over the whole reservation, and over every piece a growth
  // maps later: no readahead, for memory touched at random (DESIGN contract
  // 9: a readahead fills the page cache with large folios that one store
  // dirties whole). Advice: a kernel that refuses it changes nothing else.
  bool random_access = false;
  unsigned mode = 0600;          // permissions of a created file or shm object
  int fd = -1;                   // memfd/file: map this descriptor (dup'ed) instead of opening path

  // Builders for the common cases.
  static MappingOptions anonymous(std::size_t size, Sharing s = Sharing::private_);
  static MappingOptions file(std::string path, std::size_t size = 0,
                             OpenMode m = OpenMode::open_or_create);
  static MappingOptions shm(std::string name, std::size_t size = 0,
                            OpenMode m = OpenMode::open_or_create);
  static MappingOptions memfd(std::string name, std::size_t size);
  static MappingOptions from_fd(int fd, std::size_t size = 0);
  MappingOptions& with_reserve(std::size_t r) {
    reserve = r;
    return *this;
  }
  MappingOptions& with_huge(HugePolicy h, bool strict = false) {
    huge = h;
    huge_strict = strict;
    return *this;
  }
  MappingOptions& with_sharing(Sharing s) {
    sharing = s;
    return *this;
  }
  MappingOptions& with_access(Access a) {
    access = a;
    return *this;
  }
  MappingOptions& with_prefault(bool p = true) {
    prefault = p;
    return *this;
  }
  MappingOptions& with_preallocate(bool p = true) {
    preallocate = p;
    return *this;
  }
  MappingOptions& with_random_access(bool r = true) {
    random_access = r;
    return *this;
  }
};

class Mapping {
 public:
  Mapping() noexcept = default;  // empty: data() == nullptr
  ~Mapping();
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  static Mapping create(const MappingOptions& options);  // throws mapheap::error
  static result<Mapping> try_create(const MappingOptions& options);

  std::byte* data() const noexcept { return st_.base; }
  std::size_t size() const noexcept { return st_.size; }          // usable bytes
  std::size_t reserved() const noexcept { return st_.reserved; }  // bytes of address space
  bool empty() const noexcept { return st_.base == nullptr; }
  Backing backing() const noexcept { return st_.backing; }
  Sharing sharing() const noexcept { return st_.sharing; }
  Access access() const noexcept { return st_.access; }
  const std::string& path() const noexcept { return st_.path; }
  int fd() const noexcept { return st_.fd; }  // -1 for private anonymous
  const HugeReport& huge_report() const noexcept { return st_.huge; }
  // Granule of size and growth: the base page, or the huge page for hugetlb.
  std::size_t granule() const noexcept { return st_.granule; }

  // Makes [0, new_size) usable; the base address does not move. Shrinking is
  // not done (new_size <= size() is a no-op). Throws if new_size > reserved(),
  // the mapping is read-only and the object is smaller, or the OS refuses.
  void grow(std::size_t new_size);
  result<std::size_t> try_grow(std::size_t new_size);

  // Writes [offset, offset+len) back and makes it durable: msync(MS_SYNC), then
  // fdatasync, in that order. A no-op for private and anonymous mappings
  // (nothing to write back). len = 0 means to the end.
  void sync(std::size_t offset = 0, std::size_t len = 0);

  void advise(Advice advice, std::size_t offset = 0, std::size_t len = 0);

  // Gives the pages of [offset, offset+len) back to the OS; later reads see
  // zeros. Private anonymous: MADV_DONTNEED; shared objects: hole punching
  // (fallocate PUNCH_HOLE, which also drops them from every mapper); private
  // file views: fresh anonymous zero pages replace the range (MADV_DONTNEED
  // would bring the file's bytes back).
  void release(std::size_t offset, std::size_t len);

  Residency residency(std::size_t offset = 0, std::size_t len = 0) const;

  // Unmaps and closes now (the destructor does the same, ignoring errors).
  void close();

 private:
  struct State {
    std::byte* base = nullptr;
    std::size_t size = 0;
    std::size_t reserved = 0;
    std::size_t granule = 0;
    std::size_t file_extent = 0;  // private file views: bytes backed by the file
    int fd = -1;
    Backing backing = Backing::anonymous;
    Sharing sharing = Sharing::private_;
    Access access = Access::read_write;
    bool prefault = false;
    bool preallocate = false;
    bool locked = false;
    bool piecewise = false;  // hugetlb: only [0, size) is mapped; grow maps more
    bool random_access = false;  // MappingOptions::random_access
    bool hugetlb = false;
    bool dir_sync_pending = false;  // we created the file: sync() also syncs its directory
    bool sync_failed = false;       // an msync/fdatasync error is fatal for this mapping
    std::string path;
    HugeReport huge;
  };

  void reset() noexcept;
  pal::Status populate(std::size_t offset, std::size_t len) noexcept;
  pal::Status map_range(std::size_t from, std::size_t to) noexcept;

  State st_;
};

}  // namespace mapheap
