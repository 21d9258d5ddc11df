// heap/mapped_heap.cpp — MappedHeap: the engine in a shared, persistent
// mapping (docs/design/mapped_heap.md, docs/design/crash.md).
#include "mapheap/heap.hpp"
#include "mapheap/offset_ptr.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <new>
#include <random>
#include <thread>

#include "cache/engine.hpp"
#include "heap/mapped_heap_format.hpp"
#include "heap/region_lock.hpp"
#include "pal/error.hpp"
#include "pal/pal.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

namespace mapheap {

using heap::DirEntry;
using heap::DirState;
using heap::DirTable;
using heap::HeapHeader;
using heap::HeapLocks;
using Engine = cache::Engine<heap::RegionLock>;

// What bounds the zone's critical sections by construction (crash.md,
// "What bounds a section"): a class's empty slabs given back in one (decay,
// trim), for the run table of every page size; and one free of a batch,
// which commits as it goes (cache::Engine::free_batch), with room to spare.
static_assert(std::max({slab::release_entries(slab::kRuns), slab::release_entries(slab::kRuns8K),
                        slab::release_entries(slab::kRuns16K), slab::release_entries(slab::kRuns64K)}) <=
              heap::kZoneJournalEntries);
static_assert(4 * slab::kFreeEntries <= heap::kZoneJournalEntries);
static_assert(2 * slab::kLargeFreeEntries <= heap::kZoneJournalEntries);

namespace heap {

std::string validate_header(const HeapHeader& h, std::uint64_t file_bytes, bool writable) {
  if (h.magic != kHeapMagic) {
    if (h.magic == 0) return "not a mapheap heap: it starts with zeros (empty, or never finished being created)";
    return "not a mapheap heap (bad magic)";
  }
  if (h.version > kHeapVersion)
    return "made by a newer mapheap (format version " + std::to_string(h.version) +
           "; this build reads version " + std::to_string(kHeapVersion) + ")";
  if (h.version == 0) return "corrupt header: format version 0";
  if (header_checksum(h) != h.checksum) return "corrupt header: checksum mismatch";
  const auto older = [](const char* what) {
    return std::string("made by an older mapheap (") + what +
           "); this build opens engine v4 heaps only (classes up to 64 KiB, cache arrays of 32 "
           "objects or more)";
  };
  if ((h.incompat & kIncompatEngineV1) != 0) return older("engine v1: slab classes up to 32 KiB");
  if ((h.incompat & kIncompatEngineV2) != 0) return older("engine v2: cache arrays of 4 objects or more");
  if ((h.incompat & kIncompatEngineV3) != 0) return older("engine v3: cache arrays of 16 objects or more");
  // A bit this build does not know before a bit it misses: a newer engine's
  // heap has its own layout bit instead of V4, and is not corrupt.
  if (const std::uint64_t unknown = h.incompat & ~(kIncompatKnown | kIncompatRetired); unknown != 0)
    return "uses features this build does not have (incompatible feature bits " + std::to_string(unknown) + ")";
  if ((h.incompat & kIncompatEngineV4) == 0) return "corrupt header: no engine feature bit";
  if ((h.incompat & kIncompatOffsetPtrV2) == 0)
    return "made by an older mapheap (offset_ptr v1: null stored as the distance 1); this build "
           "reads null offset_ptrs as words with the sign bit clear";
  if (writable && (h.ro_compat & ~kRoCompatKnown) != 0)
    return "uses features this build can only read (open it read-only)";
  if (h.header_bytes != sizeof(HeapHeader)) return "corrupt header: header size " + std::to_string(h.header_bytes);
  const std::uint64_t page = h.page_size;
  if (page == 0 || (page & (page - 1)) != 0 || page % pal::page_size() != 0)
    return "made with page size " + std::to_string(page) + ", this system's is " +
           std::to_string(pal::page_size());
  if (h.zone_journal_entries != kZoneJournalEntries || h.dir_journal_entries != kDirJournalEntries)
    return "corrupt header: journal sizes";
  const std::uint64_t zj = core::JournalArea::bytes_for(h.zone_journal_entries);
  const std::uint64_t dj = core::JournalArea::bytes_for(h.dir_journal_entries);
  if (h.locks_offset < 4096 || h.locks_offset % 64 != 0 ||
      h.zone_journal_offset < h.locks_offset + sizeof(HeapLocks) ||
      h.dir_journal_offset < h.zone_journal_offset + zj ||
      h.engine_offset < h.dir_journal_offset + dj || h.engine_offset % page != 0 ||
      h.region_bytes <= h.engine_offset || h.region_bytes % page != 0 ||
      h.region_bytes > (std::uint64_t{1} << 50))
    return "corrupt header: layout offsets out of order or out of range";
  if (file_bytes < h.engine_offset + page)
    return "truncated: " + std::to_string(file_bytes) + " bytes, its header needs at least " +
           std::to_string(h.engine_offset + page);
  if (file_bytes > h.region_bytes)
    return "corrupt header: the file (" + std::to_string(file_bytes) +
           " bytes) is larger than the heap's maximum size (" + std::to_string(h.region_bytes) + ")";
  return {};
}

}  // namespace heap

namespace {

constexpr std::uint64_t kGateByte = (std::uint64_t{1} << 62) + 16;  // opens and closes, one at a time
constexpr std::uint64_t kPresenceByte = kGateByte + 1;  // shared by every process that has it open
constexpr std::uint32_t kFlagCachesUntrusted = 1;       // HeapHeader::reserved1: a snapshot's caches
constexpr std::size_t kMinEngineBytes = std::size_t{4} << 20;
constexpr std::size_t kMaxName = 1024;

std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

std::string describe(const pal::Error& e) {
  char buf[640];
  e.format(buf, sizeof(buf));
  return buf;
}

bool pid_alive(int pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

// The process-local table of open heaps, for MappedHeap::of(p) (allocators
// stored inside a heap find their heap by address).
struct Registered {
  std::atomic<std::uintptr_t> lo{0};
  std::atomic<std::uintptr_t> hi{0};
  std::atomic<MappedHeap::Impl*> impl{nullptr};
};
constexpr unsigned kRegistrySize = 64;
Registered g_registry[kRegistrySize];
std::mutex g_registry_mu;
std::atomic<std::uint64_t> g_registry_generation{1};  // changes when a heap closes

}  // namespace

struct MappedHeap::Impl {
  // The engine's lines make Impl 64-byte aligned, which `new` would serve
  // with the aligned operator new: in a process that has not called it yet,
  // that is a lazy binding into libstdc++, libgcc and libc, and page faults
  // in each, on every open of a new process. The plain operator new (which
  // copying the options has already called) with the alignment done here
  // costs 64 bytes instead. The word before the object keeps the block's start.
  static void* operator new(std::size_t n) {
    static_assert(alignof(Impl) >= 2 * sizeof(void*) && alignof(Impl) <= 4096);
    void* raw = ::operator new(n + alignof(Impl));
    const std::uintptr_t at = (reinterpret_cast<std::uintptr_t>(raw) + alignof(Impl)) & ~(alignof(Impl) - 1);
    reinterpret_cast<void**>(at)[-1] = raw;  // at - raw >= 8: blocks are at least 8-aligned
    return reinterpret_cast<void*>(at);
  }
  static void operator delete(void* p) noexcept {
    if (p != nullptr) ::operator delete(static_cast<void**>(p)[-1]);
  }

  MappedHeap* owner = nullptr;
  HeapOptions opt;
  Mapping map;
  int lock_fd = -1;     // the presence locks' descriptor (see open_lock_fd)
  bool own_lock_fd = false;  // opened for them, else it is the mapping's (closed with it)
  int opener = 0;       // the pid that opened it (a fork()ed child does not close it)
  bool writable = true;  // allocation and named objects allowed
  bool shared = true;    // changes reach other processes and the file
  std::atomic<bool> populate_works{true};  // see populate_fn
  std::atomic<bool> prefetch_works{true};  // see prefetch_fn
  mutable std::atomic<std::uint32_t> first_touches{kFirstTouches};  // see first_touch
  HeapHeader* hdr = nullptr;
  HeapLocks* locks = nullptr;
  core::Journal zone_journal;
  core::Journal dir_journal;
  heap::RegionLock dir_lock;
  Engine engine;
  OpenReport report;
  int proc_slot = -1;

  bool unformatted = false;  // open_existing found no header yet (being created?)

  ~Impl() {
    if (own_lock_fd) ::close(lock_fd);  // a close() that threw left it open; the mapping's closes with map
  }

  std::byte* base() const { return map.data(); }
  std::byte* engine_base() const { return map.data() + hdr->engine_offset; }
  std::uint64_t engine_bytes() const { return hdr->region_bytes - hdr->engine_offset; }
  // One past the last usable byte, from the base: what an offset read from
  // the mapping must stay below.
  std::uint64_t heap_end() const { return hdr->engine_offset + engine.zone().committed_bytes(); }
  // Whether [off, off + len) lies in the allocator's usable part.
  bool in_heap(std::uint64_t off, std::uint64_t len) const {
    const std::uint64_t end = heap_end();
    return off >= hdr->engine_offset && off <= end && end - off >= len;
  }

  [[noreturn]] void fail(int code, const std::string& why, const char* op = "check") const {
    std::string what = "mapheap: heap";
    if (!opt.path.empty()) what += " '" + opt.path + "'";
    throw error(code, what + ": " + why, opt.path, 0, op);
  }

  // ---- engine hooks
  static std::size_t grow_fn(void* ctx, std::size_t want) noexcept {
    auto* m = static_cast<Impl*>(ctx);
    try {
      auto r = m->map.try_grow(m->hdr->engine_offset + want);
      if (!r.ok()) return 0;
      return m->map.size() - m->hdr->engine_offset;
    } catch (...) {
      return 0;
    }
  }
  static bool release_fn(void* ctx, std::byte* addr, std::size_t bytes) noexcept {
    auto* m = static_cast<Impl*>(ctx);
    try {
      const auto off = static_cast<std::size_t>(addr - m->base());
      // Another process may have grown the heap past this one's view.
      if (off + bytes > m->map.size() && !m->map.try_grow(off + bytes).ok()) return false;
      m->map.release(off, bytes);
      return true;
    } catch (...) {
      return false;
    }
  }
  // Maps the pages of [addr, addr + bytes) with one madvise (a populate
  // advice) instead of a fault a page. Failing only means the pages fault in
  // as they would have (madvise reports an unmapped range or a would-be
  // SIGBUS as an error, it raises nothing); where the advice is unknown
  // (EINVAL: before Linux 5.14) it is not asked again.
  static void populate_pages(std::atomic<bool>& works, const void* addr, std::size_t bytes,
                             pal::Advice advice) noexcept {
    if (bytes == 0 || !works.load(std::memory_order_relaxed)) return;
    const std::uintptr_t page = pal::page_size();
    const auto lo = reinterpret_cast<std::uintptr_t>(addr) & ~(page - 1);
    const auto hi = (reinterpret_cast<std::uintptr_t>(addr) + bytes + page - 1) & ~(page - 1);
    if (auto s = pal::advise(reinterpret_cast<void*>(lo), hi - lo, advice); !s && s.error().code == EINVAL)
      works.store(false, std::memory_order_relaxed);
  }
  // The pages a front-cache refill is about to write for the first time,
  // populated writable (on an ext4 file mapping here, about 8.5 us a fault
  // against 1.5 us a page populated). No bounds test against map.size():
  // the hook runs without the lock that guards the mapping's size, and the
  // caller writes these pages next anyway.
  static void populate_fn(void* ctx, void* addr, std::size_t bytes) noexcept {
    auto* m = static_cast<Impl*>(ctx);
    populate_pages(m->populate_works, addr, bytes, pal::Advice::populate_write);
  }
  // Pages about to be read for the first time (the engine's metadata at
  // attach, the header, journals and directory at open), populated
  // readable: a read fault costs 16-26 us in a new process on this
  // project's test machine, a call for one page 6-9 us. A flag of its own:
  // a read populate refused must not turn off the write populate.
  static void prefetch_fn(void* ctx, const void* addr, std::size_t bytes) noexcept {
    auto* m = static_cast<Impl*>(ctx);
    populate_pages(m->prefetch_works, addr, bytes, pal::Advice::populate_read);
  }
  // The directory's table, which find() reads next in most opens: its first
  // page, then (the capacity read from it) up to 64 KiB of its entries. What
  // is read here only sizes a prefetch; table() checks it before any use.
  void prefetch_directory() {
    const std::uint64_t off = hdr->directory;
    if (off == 0 || off % 8 != 0 || !in_heap(off, sizeof(DirTable))) return;
    prefetch_fn(this, base() + off, sizeof(DirTable));
    auto* t = reinterpret_cast<DirTable*>(base() + off);
    const std::uint32_t cap = std::atomic_ref<std::uint32_t>(t->capacity).load(std::memory_order_relaxed);
    const std::uint64_t bytes = std::min<std::uint64_t>(DirTable::bytes_for(cap), std::uint64_t{64} << 10);
    if (cap != 0 && in_heap(off, bytes)) prefetch_fn(this, base() + off, bytes);
  }
  // What the first finds after an open read besides the directory (a
  // matching entry's strings, the object found) is on pages this process
  // has most likely never touched, scattered over the heap: populated first.
  // On this project's test machine a read fault on a page whose 2 MiB has
  // no page table yet cost 60-140 us in a new process, a populate call for
  // it 10-25 us. A budget of kFirstTouches calls per open, then none: a
  // process that has been finding for a while has these pages mapped, and
  // a call would be a wasted system call; so would one in the process that
  // created the heap (create() zeroes the budget). The object's page is
  // populated after the directory lock is released (touch_object), so that
  // the call does not hold up other processes. A populate for reading maps
  // a shared file's page read-only: an object written next still takes a
  // write fault, but not the read fault before it.
  static constexpr std::uint32_t kFirstTouches = 8;
  void first_touch(const void* p, std::size_t bytes) const noexcept {
    std::uint32_t left = first_touches.load(std::memory_order_relaxed);
    while (left != 0 && !first_touches.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
    }
    if (left != 0) prefetch_fn(const_cast<Impl*>(this), p, bytes);
  }
  // The object find() hands back: its first page, within the budget.
  // Called without the directory lock, with what the entry said under it.
  void* touch_object(std::uint64_t object, std::uint64_t size) const noexcept {
    first_touch(base() + object, std::min<std::uint64_t>(size, pal::page_size()));
    return base() + object;
  }
  cache::EngineOptions engine_options() {
    cache::EngineOptions eo;
    eo.grow = grow_fn;
    eo.grow_ctx = this;
    eo.populate = populate_fn;
    eo.populate_ctx = this;
    eo.prefetch = prefetch_fn;
    eo.prefetch_ctx = this;
    // A file keeps its blocks (a hole would be a SIGBUS on a full disk, and
    // the kernel reclaims a file's clean pages anyway); RAM-backed heaps give
    // free pages back.
    if (opt.backing != Backing::file && shared) {
      eo.release = release_fn;
      eo.release_ctx = this;
    }
    eo.checked = opt.checked;
    // Its caches' misses take the lock in the mapping and journal every slab
    // operation: the arrays are filled to their capacity (engine v4).
    eo.cache_floor = cache::kMinCapacity;
    return eo;
  }

  MappingOptions mapping_options(OpenMode om, std::size_t size, std::size_t reserve) const {
    MappingOptions mo;
    switch (opt.backing) {
      case Backing::file: mo = MappingOptions::file(opt.path, size, om); break;
      case Backing::shm: mo = MappingOptions::shm(opt.path, size, om); break;
      case Backing::memfd:
        mo = opt.fd >= 0 ? MappingOptions::from_fd(opt.fd, size)
                         : MappingOptions::memfd(opt.path.empty() ? "mapheap" : opt.path, size);
        break;
      case Backing::anonymous: mo = MappingOptions::anonymous(size, Sharing::shared); break;
    }
    mo.reserve = reserve;
    mo.mode = opt.permissions;
    mo.follow_symlinks = opt.follow_symlinks;
    mo.sharing = shared ? Sharing::shared : Sharing::private_;
    mo.access = Access::read_write;  // a read-only heap is a private view: locks need writing
    // Heap pages are touched at random: no readahead (DESIGN contract 9),
    // over the whole reservation, from before the first read (the probe's
    // too), and over the part the heap grows into later, here or in another
    // process. shm and memfd have no readahead.
    mo.random_access = opt.backing == Backing::file;
    return mo;
  }

  void bind_parts() {
    locks = reinterpret_cast<HeapLocks*>(base() + hdr->locks_offset);
    zone_journal.bind(base(), map.reserved(),
                      reinterpret_cast<core::JournalArea*>(base() + hdr->zone_journal_offset));
    dir_journal.bind(base(), map.reserved(),
                     reinterpret_cast<core::JournalArea*>(base() + hdr->dir_journal_offset));
    engine.lock_policy().bind(&locks->zone, &zone_journal);
    dir_lock.bind(&locks->directory, &dir_journal);
  }

  void init_mutexes() {
    for (pal::RobustMutex* m : {&locks->zone, &locks->directory})
      if (auto s = m->init(); !s) fail(s.error().code, "cannot initialise its locks: " + describe(s.error()));
  }

  // ---- create

  void create() {
    const std::size_t page = pal::page_size();
    // The layout: header, locks, the two journals, then the engine.
    constexpr std::uint64_t kLocks = 4096, kZoneJournal = 8192;
    constexpr std::uint64_t kDirJournal = kZoneJournal + core::JournalArea::bytes_for(heap::kZoneJournalEntries);
    const std::size_t engine_off =
        round_up(kDirJournal + core::JournalArea::bytes_for(heap::kDirJournalEntries), page);
    std::size_t reserve = round_up(std::max(opt.max_size, opt.initial_size), std::size_t{2} << 20);
    // The page map covers the whole reservation (32 bytes a page) and must
    // lie in the usable part: a heap starts at least that big, plus room
    // for the slab root, the caches and a first arena.
    const std::size_t page_map = round_up(sizeof(page::ZoneHeader) + reserve / page * sizeof(page::PageDesc), page);
    const std::size_t min_size = engine_off + page_map + kMinEngineBytes;
    const std::size_t size = std::min(round_up(std::max(opt.initial_size, min_size), page), std::max(reserve, min_size));
    reserve = std::max(reserve, round_up(size, std::size_t{2} << 20));
    map = Mapping::create(mapping_options(OpenMode::create_exclusive, size, reserve));
    try {
      format(size, engine_off, kLocks, kZoneJournal, kDirJournal);
    } catch (...) {
      // What we created is not a heap: nothing of it is left behind.
      if (opt.backing == Backing::file) (void)pal::unlink_path(opt.path.c_str());
      if (opt.backing == Backing::shm) (void)pal::shm_remove(opt.path.c_str());
      map.close();
      throw;
    }
    report.created = true;
    first_touches.store(0, std::memory_order_relaxed);  // this process wrote every page it has
  }

  void format(std::size_t size, std::uint64_t engine_off, std::uint64_t locks_off, std::uint64_t zone_journal_off,
              std::uint64_t dir_journal_off) {
    const std::size_t page = pal::page_size();
    hdr = reinterpret_cast<HeapHeader*>(base());

    HeapHeader h{};
    h.version = heap::kHeapVersion;
    h.header_bytes = sizeof(HeapHeader);
    h.incompat = heap::kIncompatEngineV4 | heap::kIncompatOffsetPtrV2;
    h.page_size = static_cast<std::uint32_t>(page);
    h.zone_journal_entries = heap::kZoneJournalEntries;
    h.dir_journal_entries = heap::kDirJournalEntries;
    std::random_device rd;
    for (unsigned i = 0; i < 16; i += 4) {
      const std::uint32_t r = rd();
      std::memcpy(h.uuid + i, &r, 4);
    }
    h.uuid[6] = static_cast<std::uint8_t>((h.uuid[6] & 0x0f) | 0x40);  // version 4
    h.uuid[8] = static_cast<std::uint8_t>((h.uuid[8] & 0x3f) | 0x80);  // variant 1
    h.region_bytes = map.reserved();
    h.locks_offset = locks_off;
    h.zone_journal_offset = zone_journal_off;
    h.dir_journal_offset = dir_journal_off;
    h.engine_offset = engine_off;
    h.created_ns = pal::realtime_ns();
    h.magic = heap::kHeapMagic;
    h.checksum = heap::header_checksum(h);
    // Everything but the magic first: a heap half-created is not a heap.
    std::memcpy(reinterpret_cast<std::byte*>(hdr) + sizeof(h.magic),
                reinterpret_cast<const std::byte*>(&h) + sizeof(h.magic), sizeof(h) - sizeof(h.magic));
    bind_parts();
    init_mutexes();
    zone_journal.format(heap::kZoneJournalEntries);
    dir_journal.format(heap::kDirJournalEntries);
    cache::EngineOptions eo = engine_options();
    eo.committed = size - engine_off;
    if (!engine.format(engine_base(), engine_bytes(), eo))
      fail(EINVAL, "cannot format the allocator in " + std::to_string(size - engine_off) + " bytes");
    std::atomic_ref<std::uint64_t>(hdr->magic).store(heap::kHeapMagic, std::memory_order_release);
    if (opt.backing == Backing::file) map.sync();
  }

  // ---- open

  void open_existing() {
    // First a view of what is there, to read the header; then the view with
    // the reservation the header asks for.
    Mapping probe = Mapping::create(mapping_options(OpenMode::open_existing, 0, 0));
    const std::size_t have = probe.size();
    // The header's page, mapped before it is read (see prefetch_fn).
    if (have >= sizeof(HeapHeader)) prefetch_fn(this, probe.data(), sizeof(HeapHeader));
    // Empty, or zeros where the magic goes: maybe a heap being created (its
    // magic is written last); open_or_create waits a little for it.
    unformatted = have < sizeof(HeapHeader) ||
                  std::atomic_ref<std::uint64_t>(reinterpret_cast<HeapHeader*>(probe.data())->magic)
                          .load(std::memory_order_acquire) == 0;
    if (have < sizeof(HeapHeader))
      fail(EINVAL, "truncated: " + std::to_string(have) + " bytes, a heap starts with a " +
                       std::to_string(sizeof(HeapHeader)) + "-byte header");
    HeapHeader h;
    std::memcpy(static_cast<void*>(&h), probe.data(), sizeof(h));
    if (std::string why = heap::validate_header(h, have, writable && shared); !why.empty())
      fail(EINVAL, why);
    if (h.region_bytes > probe.reserved()) {
      probe.close();
      map = Mapping::create(mapping_options(OpenMode::open_existing, 0, h.region_bytes));
    } else {
      map = std::move(probe);
    }
    hdr = reinterpret_cast<HeapHeader*>(base());
    if (std::memcmp(hdr, &h, offsetof(HeapHeader, checksum) + 8) != 0)
      fail(EAGAIN, "its header changed while it was being opened");
    prefault_open(h);
    // The zone header says how much of the heap is in use: the file must
    // hold it all before anything reads the page map.
    page::Buddy zone;
    if (const page::AttachError e = page::Buddy::attach(engine_base(), engine_bytes(), zone);
        e != page::AttachError::none)
      fail(EINVAL, std::string("corrupt allocator metadata: ") + page::to_string(e));
    if (hdr->engine_offset + zone.committed_bytes() > map.size())
      fail(EINVAL, "truncated: the allocator uses " + std::to_string(hdr->engine_offset + zone.committed_bytes()) +
                       " bytes, the file has " + std::to_string(map.size()));
    bind_parts();
    if (zone_journal.area()->capacity != hdr->zone_journal_entries ||
        dir_journal.area()->capacity != hdr->dir_journal_entries)
      fail(EINVAL, "corrupt journal header");
  }

  // The pages every open touches next, each mapped in one call rather than
  // by a fault (offsets from h, which validate_header checked; a range the
  // file lacks is an error madvise reports, not a signal, and the checks
  // that follow report it). A writable open writes the header's page (the
  // process table), the locks' and the zone header's (its clock): populated
  // writable, where touching them costs a read fault and then a write fault
  // a page. The zone header (in a read-only view) and the two journals'
  // headers are only read here.
  void prefault_open(const HeapHeader& h) {
    const std::size_t page = pal::page_size();
    if (writable && shared) {
      populate_fn(this, base(), round_up(h.locks_offset + sizeof(HeapLocks), page));
      populate_fn(this, base() + h.engine_offset, page);
    } else {
      prefetch_fn(this, base() + h.engine_offset, page);
    }
    prefetch_fn(this, base() + h.zone_journal_offset, sizeof(core::JournalArea));
    prefetch_fn(this, base() + h.dir_journal_offset, sizeof(core::JournalArea));
  }

  // ---- presence (named, shared heaps): who else has it open

  // The presence locks are open file description (OFD) locks: they belong
  // to a description, so each open needs one of its own. The mapping opened
  // a file or shm object by name itself: its description is this open's
  // alone (a fork()ed child shares it, as it would share any other).
  // A memfd's descriptor came from the caller and may be shared with other
  // opens: reopened through /proc/self/fd, which costs a path walk in
  // procfs (70-90 us in a new process on this project's test machine,
  // about a seventh of a reopen).
  void open_lock_fd() {
    if ((opt.backing == Backing::file || opt.backing == Backing::shm) && map.fd() >= 0) {
      lock_fd = map.fd();
      return;
    }
    const std::string self = "/proc/self/fd/" + std::to_string(map.fd());
    lock_fd = ::open(self.c_str(), O_RDWR | O_CLOEXEC);
    if (lock_fd < 0) fail(errno, std::string("cannot reopen it for locking: ") + std::strerror(errno), "open");
    own_lock_fd = true;
  }
  bool lock(std::uint64_t byte, pal::RangeLock kind, bool wait) {
    auto r = pal::lock_range(lock_fd, byte, 1, kind, wait);
    if (!r.ok()) fail(r.error().code, "cannot lock it: " + describe(r.error()), "fcntl");
    return r.value();
  }

  // ---- recovery

  // With nobody else attached: takes back whatever a dead process left
  // half-done. O(metadata): journals, the page map once, the thread slots.
  void recover(bool untrusted_caches) {
    // The journals come from the file: checked whole before any of them is
    // applied, so that a corrupt one changes nothing.
    for (const core::Journal* j : {&zone_journal, &dir_journal})
      if (const std::uint32_t n = j->invalid_entries(map.size()); n != 0)
        fail(EINVAL, "corrupt undo journal: " + std::to_string(n) +
                         " entries lie outside the file; nothing was rolled back");
    report.rolled_back += zone_journal.rollback();
    report.rolled_back += dir_journal.rollback();
    // A corrupt journal may have written anywhere in the file, the header included.
    if (std::string why = heap::validate_header(*hdr, map.size(), false); !why.empty())
      fail(EINVAL, "after its journals were rolled back: " + why);
    init_mutexes();  // a dead holder (from before a reboot, even) holds nothing now
    attach_engine();
    if (untrusted_caches) scrub_caches();
    report.isolated_pages = engine.reclaim_isolated();
    report.reclaimed_cached = engine.reclaim_dead_threads();
    report.recovered = true;
    if (shared) std::atomic_ref<std::uint64_t>(hdr->recoveries).fetch_add(1, std::memory_order_relaxed);
  }
  void attach_engine() {
    if (!engine.attach(engine_base(), engine_bytes(), engine_options()))
      fail(EINVAL, "corrupt allocator metadata (slab root or cache run)");
  }
  // A snapshot's cache arrays were copied while others pushed and popped:
  // an entry may name an object that was handed out meanwhile. They are
  // emptied; what they held is unreachable and `gc` takes it back.
  void scrub_caches() {
    const cache::FrontCache& fc = engine.front_cache();
    for (std::uint32_t s = 0; s < fc.array_slots(); ++s)
      for (unsigned cls = 0; cls < slab::kClassCount; ++cls)
        std::atomic_ref<std::uint64_t>(fc.array(s, cls)->word).store(0, std::memory_order_relaxed);
  }

  void register_process() {
    for (unsigned i = 0; i < heap::kMaxProcesses; ++i) {
      auto& slot = hdr->processes[i];
      std::atomic_ref<std::int32_t> pid(slot.pid);
      std::int32_t cur = pid.load(std::memory_order_acquire);
      if (cur != 0 && pid_alive(cur)) continue;
      if (pid.compare_exchange_strong(cur, ::getpid(), std::memory_order_acq_rel)) {
        slot.opened_ns = pal::realtime_ns();
        proc_slot = static_cast<int>(i);
        return;
      }
    }
  }

  void open() {
    const bool named = opt.backing == Backing::file || opt.backing == Backing::shm ||
                       (opt.backing == Backing::memfd && opt.fd >= 0);
    writable = opt.mode != HeapMode::read_only;
    shared = opt.mode != HeapMode::read_only && opt.mode != HeapMode::copy_on_write;
    if (opt.backing == Backing::anonymous || (opt.backing == Backing::memfd && opt.fd < 0)) {
      if (opt.mode != HeapMode::create && opt.mode != HeapMode::open_or_create)
        fail(EINVAL, std::string("a new ") + to_string(opt.backing) + " heap can only be created (mode " +
                         to_string(opt.mode) + ")");
      create();
    } else if (opt.mode == HeapMode::create) {
      create();
    } else if (opt.mode == HeapMode::open_or_create) {
      for (int attempt = 0;; ++attempt) {
        try {
          open_existing();
          break;
        } catch (const error& e) {
          if (e.code().value() == ENOENT) {
            try {
              create();
              break;
            } catch (const error& c) {
              if (c.code().value() != EEXIST || attempt > 3) throw;
              continue;  // another process created it first: open that
            }
          }
          // Another process is creating it: its magic comes last.
          if (unformatted && attempt < 200) {
            map.close();
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            continue;
          }
          throw;
        }
      }
    } else {
      open_existing();
    }

    const bool alone_possible = named && shared;
    bool alone = !named || !shared;
    if (alone_possible) {
      open_lock_fd();
      (void)lock(kGateByte, pal::RangeLock::exclusive, true);
      alone = lock(kPresenceByte, pal::RangeLock::exclusive, false);
      (void)lock(kPresenceByte, pal::RangeLock::shared, true);
    }
    try {
      // Alone, or in a private view (a copy nobody else writes), this
      // process may repair what the last users left: recovery if they did
      // not close cleanly, else fresh locks.
      const bool ours_alone = alone || !shared;
      const bool untrusted = (hdr->reserved1 & kFlagCachesUntrusted) != 0;
      const bool unclean = std::atomic_ref<std::uint32_t>(hdr->clean).load(std::memory_order_acquire) == 0 ||
                           zone_journal.pending() != 0 || dir_journal.pending() != 0 || untrusted;
      if (report.created) {
        // formatted and attached by create()
      } else if (ours_alone && unclean) {
        recover(untrusted);
        hdr->reserved1 &= ~kFlagCachesUntrusted;
      } else {
        if (ours_alone) init_mutexes();
        attach_engine();
      }
      if (shared) {
        if (alone)
          for (auto& s : hdr->processes) std::atomic_ref<std::int32_t>(s.pid).store(0, std::memory_order_relaxed);
        register_process();
        std::atomic_ref<std::uint32_t>(hdr->clean).store(0, std::memory_order_release);
        std::atomic_ref<std::uint64_t>(hdr->opens).fetch_add(1, std::memory_order_relaxed);
      }
    } catch (...) {
      if (alone_possible) (void)pal::lock_range(lock_fd, kGateByte, 1, pal::RangeLock::unlock, true);
      throw;
    }
    if (alone_possible) (void)lock(kGateByte, pal::RangeLock::unlock, true);
    if (!report.created) prefetch_directory();
    opener = ::getpid();
  }

  void close() {
    if (map.empty()) return;
    const bool ours = opener == ::getpid();
    if (ours && shared) {
      const bool named = lock_fd >= 0;
      bool last = true;
      if (named) {
        (void)lock(kGateByte, pal::RangeLock::exclusive, true);
        (void)lock(kPresenceByte, pal::RangeLock::unlock, true);
        last = lock(kPresenceByte, pal::RangeLock::exclusive, false);
      }
      if (proc_slot >= 0) std::atomic_ref<std::int32_t>(hdr->processes[proc_slot].pid).store(0, std::memory_order_release);
      if (last && opt.backing != Backing::anonymous) {
        if (opt.backing == Backing::file) map.sync();
        std::atomic_ref<std::uint32_t>(hdr->clean).store(1, std::memory_order_release);
        if (opt.backing == Backing::file) map.sync(0, pal::page_size());
      }
    }
    // Closing the description drops our locks: our own, or the mapping's
    // (which map.close() closes).
    if (own_lock_fd) ::close(lock_fd);
    lock_fd = -1;
    own_lock_fd = false;
    map.close();
  }

  // ---- the directory of named objects (under dir_lock)

  DirTable* table() const {
    const std::uint64_t off = hdr->directory;
    if (off == 0) return nullptr;
    if (off % 8 != 0 || !in_heap(off, sizeof(DirTable)))
      fail(EINVAL, "corrupt named-object directory: offset " + std::to_string(off) + " outside the heap");
    auto* t = reinterpret_cast<DirTable*>(base() + off);
    if (t->magic != heap::kDirMagic || t->capacity == 0 || (t->capacity & (t->capacity - 1)) != 0 ||
        !in_heap(off, DirTable::bytes_for(t->capacity)) || t->live > t->capacity)
      fail(EINVAL, "corrupt named-object directory at offset " + std::to_string(off));
    return t;
  }
  // The name and type strings of a live entry, bounds-checked.
  std::pair<std::string_view, std::string_view> strings(const DirEntry& e) const {
    const std::uint64_t len = std::uint64_t{e.name_len} + 1 + e.type_len + 1;
    if (!in_heap(e.strings, len) || e.name_len == 0 || e.name_len > kMaxName)
      fail(EINVAL, "corrupt named-object directory: an entry's name lies outside the heap");
    const char* s = reinterpret_cast<const char*>(base() + e.strings);
    return {std::string_view(s, e.name_len), std::string_view(s + e.name_len + 1, e.type_len)};
  }
  void check_object(const DirEntry& e, std::string_view name) const {
    if (!in_heap(e.object, e.size))
      fail(EINVAL, "corrupt named-object directory: object '" + std::string(name) + "' lies outside the heap");
  }
  // The live entry named `name`, or null.
  DirEntry* lookup(std::string_view name, std::uint64_t hash) const {
    DirTable* t = table();
    if (t == nullptr) return nullptr;
    const std::uint32_t mask = t->capacity - 1;
    for (std::uint32_t i = static_cast<std::uint32_t>(hash) & mask, n = 0; n < t->capacity;
         i = (i + 1) & mask, ++n) {
      DirEntry& e = t->entries[i];
      if (e.state == DirState::empty) return nullptr;
      if (e.state != DirState::live || e.hash != hash || e.name_len != name.size()) continue;
      const auto [stored, type] = strings(e);  // bounds-checked; nothing read yet
      first_touch(stored.data(), stored.size() + 1 + type.size() + 1);
      if (stored == name) return &e;
    }
    return nullptr;
  }
  void check_type(const DirEntry& e, std::string_view name, const detail::TypeTag& type) const {
    const std::string_view t = strings(e).second;
    if (t != type.name || e.size != type.size)
      fail(EINVAL, "named object '" + std::string(name) + "' is a " + std::string(t) + " (" +
                       std::to_string(e.size) + " bytes), not a " + type.name + " (" +
                       std::to_string(type.size) + " bytes)");
  }
  // The live entry named `name` (whose hash is `hash`), checked to hold a
  // `type` inside the heap; null if there is none. Under the directory lock.
  DirEntry* find_typed(std::string_view name, std::uint64_t hash, const detail::TypeTag& type) const {
    DirEntry* e = lookup(name, hash);
    if (e != nullptr) {
      check_type(*e, name, type);
      check_object(*e, name);
    }
    return e;
  }
  // A new entry for `name` (whose hash is `hash`) holding a `type` built by
  // ctor(obj, ctx), its strings beside it; the object. Under the directory
  // lock, with no live entry of that name.
  void* add_entry(std::string_view name, std::uint64_t hash, const detail::TypeTag& type,
                  void (*ctor)(void*, void*), void* ctx) {
    DirTable* t = reserve_entry();
    const std::size_t type_len = std::strlen(type.name);
    void* obj = engine.allocate(type.size == 0 ? 1 : type.size, type.align);
    void* str = obj != nullptr ? engine.allocate(name.size() + 1 + type_len + 1) : nullptr;
    if (str == nullptr) {
      if (obj != nullptr) engine.deallocate(obj);
      fail(ENOMEM, "full: no room to construct '" + std::string(name) + "' (" + std::to_string(type.size) + " bytes)");
    }
    auto* s = static_cast<char*>(str);
    std::memcpy(s, name.data(), name.size());
    s[name.size()] = '\0';
    std::memcpy(s + name.size() + 1, type.name, type_len + 1);
    try {
      ctor(obj, ctx);
    } catch (...) {
      engine.deallocate(obj);
      engine.deallocate(str);
      throw;
    }
    const std::uint32_t mask = t->capacity - 1;
    std::uint32_t i = static_cast<std::uint32_t>(hash) & mask;
    while (t->entries[i].state == DirState::live) i = (i + 1) & mask;
    DirEntry& e = t->entries[i];
    core::undo_save(e);
    core::undo_save(&t->live, sizeof(std::uint32_t) * 2);  // live, deleted
    const bool reuse = e.state == DirState::deleted;
    e.name_len = static_cast<std::uint32_t>(name.size());
    e.hash = hash;
    e.strings = static_cast<std::uint64_t>(static_cast<std::byte*>(str) - base());
    e.object = static_cast<std::uint64_t>(static_cast<std::byte*>(obj) - base());
    e.size = type.size;
    e.count = 1;
    e.type_len = static_cast<std::uint32_t>(type_len);
    e.align = static_cast<std::uint32_t>(type.align);
    e.state = DirState::live;
    t->live += 1;
    if (reuse) t->deleted -= 1;
    return obj;
  }
  // Room for one more entry: a larger table, published by one journaled store.
  DirTable* reserve_entry() {
    DirTable* t = table();
    if (t != nullptr && (std::uint64_t{t->live} + t->deleted + 1) * 4 <= std::uint64_t{t->capacity} * 3)
      return t;
    const std::uint32_t cap = t == nullptr ? 64 : (t->live + 1) * 4 > t->capacity * 2 ? t->capacity * 2 : t->capacity;
    auto* n = static_cast<DirTable*>(engine.allocate(DirTable::bytes_for(cap), 64));
    if (n == nullptr) fail(ENOMEM, "full: no room for the named-object directory");
    std::memset(static_cast<void*>(n), 0, DirTable::bytes_for(cap));
    n->magic = heap::kDirMagic;
    n->capacity = cap;
    if (t != nullptr)
      for (std::uint32_t i = 0; i < t->capacity; ++i) {
        const DirEntry& e = t->entries[i];
        if (e.state != DirState::live) continue;
        std::uint32_t j = static_cast<std::uint32_t>(e.hash) & (cap - 1);
        while (n->entries[j].state != DirState::empty) j = (j + 1) & (cap - 1);
        n->entries[j] = e;
        n->live += 1;
      }
    core::undo_save(hdr->directory);
    hdr->directory = static_cast<std::uint64_t>(reinterpret_cast<std::byte*>(n) - base());
    // The new table is published: commit before the old one is freed, so
    // that no rollback can bring back a table whose memory is gone.
    dir_journal.commit();
    if (t != nullptr) engine.deallocate(t);
    return n;
  }
};

// ---- HeapMode, options

const char* to_string(HeapMode m) noexcept {
  switch (m) {
    case HeapMode::create: return "create";
    case HeapMode::open: return "open";
    case HeapMode::open_or_create: return "open_or_create";
    case HeapMode::read_only: return "read_only";
    case HeapMode::copy_on_write: return "copy_on_write";
  }
  return "?";
}

HeapOptions HeapOptions::file(std::string path, HeapMode m) {
  HeapOptions o;
  o.backing = Backing::file;
  o.path = std::move(path);
  o.mode = m;
  return o;
}
HeapOptions HeapOptions::shm(std::string name, HeapMode m) {
  HeapOptions o = file(std::move(name), m);
  o.backing = Backing::shm;
  return o;
}
HeapOptions HeapOptions::memfd(std::string name) {
  HeapOptions o = file(std::move(name), HeapMode::create);
  o.backing = Backing::memfd;
  return o;
}
HeapOptions HeapOptions::from_fd(int fd) {
  HeapOptions o;
  o.backing = Backing::memfd;
  o.fd = fd;
  o.mode = HeapMode::open;
  return o;
}
HeapOptions HeapOptions::anonymous() {
  HeapOptions o;
  o.backing = Backing::anonymous;
  o.mode = HeapMode::create;
  return o;
}

// ---- MappedHeap

MappedHeap::MappedHeap() noexcept = default;
MappedHeap::~MappedHeap() {
  try {
    close();
  } catch (...) {
  }
}
MappedHeap::MappedHeap(MappedHeap&& o) noexcept : impl_(std::move(o.impl_)) {
  if (impl_) impl_->owner = this;
}
MappedHeap& MappedHeap::operator=(MappedHeap&& o) noexcept {
  if (this != &o) {
    try {
      close();
    } catch (...) {
    }
    impl_ = std::move(o.impl_);
    if (impl_) impl_->owner = this;
  }
  return *this;
}

namespace {
// A fork()ed child goes on using its parent's open heaps (the same engine
// objects, copied), alongside the parent. Its thread is a copy of the
// forking thread, with that thread's references to the front caches'
// per-thread slots (per-thread mode, where rseq is not available): two
// processes pushing and popping one slot's arrays hand out one block twice.
// The child forgets them (Engine::forget_parent) and claims its own. Only
// the forking thread is left in the child: the registry is read without
// its mutex (an entry's heap pointer is stored last when it is set and
// first when it is cleared), and the mutex is made new, in case a thread
// the child does not have held it. A child made by _Fork() or a raw clone
// runs no handler: it must not use its parent's heaps.
void fork_child() noexcept {
  new (&g_registry_mu) std::mutex();
  Engine::forget_parents_slots();  // every heap's, registered or not
  for (auto& r : g_registry)
    if (MappedHeap::Impl* m = r.impl.load(std::memory_order_acquire)) m->engine.forget_parent();
}
// Registered when the program starts (below), and by an open if that
// failed, without a lock or a once-flag that a fork at the wrong moment
// would leave taken in the child: two opens at once may both register it,
// and it bears being run twice. A failure is retried at the next open.
std::atomic<bool> g_fork_handler{false};
int register_fork_handler() noexcept {
  if (g_fork_handler.load(std::memory_order_acquire)) return 0;
  if (const int rc = ::pthread_atfork(nullptr, nullptr, fork_child); rc != 0) return rc;
  g_fork_handler.store(true, std::memory_order_release);
  return 0;
}
// At start-up, so that no open pays for it: registering writes the C
// library's list of handlers, and in a fork()ed child of a program that
// had not opened a heap yet those writes were copy-on-write faults of the
// child's first open (two, and a fault in the registering code). Children
// fork()ed later inherit the registration. With no heap open the handler
// finds nothing to do.
[[gnu::constructor]] void register_fork_handler_at_start() noexcept {
  (void)register_fork_handler();
}
}  // namespace

MappedHeap MappedHeap::open(const HeapOptions& options) {
  const std::uint64_t t0 = pal::monotonic_ns();
  MappedHeap h;
  h.impl_ = std::make_unique<Impl>();
  Impl& m = *h.impl_;
  m.owner = &h;
  m.opt = options;
  if (options.max_size != 0 && options.initial_size > options.max_size)
    m.fail(EINVAL, "initial size " + std::to_string(options.initial_size) + " is above the maximum size " +
                       std::to_string(options.max_size));
  if ((options.backing == Backing::file || options.backing == Backing::shm) && options.path.empty())
    m.fail(EINVAL, std::string("a ") + to_string(options.backing) + " heap needs a path");
  if (const int rc = register_fork_handler(); rc != 0)
    m.fail(rc, "cannot register its fork() handler (pthread_atfork)");
  m.open();
  {
    std::lock_guard<std::mutex> g(g_registry_mu);
    for (auto& r : g_registry)
      if (r.impl.load(std::memory_order_relaxed) == nullptr) {
        r.lo.store(reinterpret_cast<std::uintptr_t>(m.base()), std::memory_order_relaxed);
        r.hi.store(reinterpret_cast<std::uintptr_t>(m.base()) + m.map.reserved(), std::memory_order_relaxed);
        r.impl.store(&m, std::memory_order_release);
        break;
      }
  }
  m.report.open_seconds = static_cast<double>(pal::monotonic_ns() - t0) * 1e-9;
  return h;
}

result<MappedHeap> MappedHeap::try_open(const HeapOptions& options) {
  try {
    return open(options);
  } catch (const error& e) {
    return e;
  }
}

void MappedHeap::close() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> g(g_registry_mu);
    for (auto& r : g_registry)
      if (r.impl.load(std::memory_order_relaxed) == impl_.get()) {
        r.impl.store(nullptr, std::memory_order_release);
        r.lo.store(0, std::memory_order_relaxed);
        r.hi.store(0, std::memory_order_relaxed);
      }
    g_registry_generation.fetch_add(1, std::memory_order_acq_rel);
  }
  std::unique_ptr<Impl> m = std::move(impl_);
  m->close();
}

bool MappedHeap::is_open() const noexcept { return impl_ != nullptr; }

namespace {
// Containers call MappedHeap::of on every allocation, almost always for the
// heap they asked about last: each thread remembers that one (a close changes
// the generation, which empties every thread's memo).
struct OfMemo {
  std::uintptr_t lo = 0, hi = 0;
  MappedHeap::Impl* impl = nullptr;
  std::uint64_t generation = 0;
};
thread_local OfMemo t_of_memo __attribute__((tls_model("initial-exec")));

// The scan of the table, out of line so that the memo's hit saves no registers.
[[gnu::noinline]] MappedHeap* of_scan(std::uintptr_t a, std::uint64_t gen) noexcept {
  for (auto& r : g_registry) {
    MappedHeap::Impl* m = r.impl.load(std::memory_order_acquire);
    if (m != nullptr && a >= r.lo.load(std::memory_order_relaxed) && a < r.hi.load(std::memory_order_relaxed)) {
      t_of_memo = {r.lo.load(std::memory_order_relaxed), r.hi.load(std::memory_order_relaxed), m, gen};
      return m->owner;
    }
  }
  return nullptr;
}
}  // namespace

MappedHeap* MappedHeap::of(const void* p) noexcept {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  const std::uint64_t gen = g_registry_generation.load(std::memory_order_acquire);
  const OfMemo& memo = t_of_memo;
  if (memo.generation == gen && a >= memo.lo && a < memo.hi) return memo.impl->owner;
  return of_scan(a, gen);
}

void* MappedHeap::allocate(std::size_t size, std::size_t align) noexcept {
  if (!impl_->writable) return nullptr;
  return impl_->engine.allocate(size, align);
}
void MappedHeap::deallocate(void* p) noexcept {
  if (p != nullptr && impl_->writable) impl_->engine.deallocate(p);
}
void MappedHeap::deallocate(void* p, std::size_t size, std::size_t align) noexcept {
  if (p != nullptr && impl_->writable) impl_->engine.deallocate_sized(p, size, align);
}
std::size_t MappedHeap::good_size(std::size_t size, std::size_t align) noexcept {
  return Engine::good_size(size, align);
}
std::size_t MappedHeap::usable_size(const void* p) const noexcept { return impl_->engine.usable_size(p); }
bool MappedHeap::contains(const void* p) const noexcept {
  const auto* b = static_cast<const std::byte*>(p);
  return impl_ && b >= impl_->base() && b < impl_->base() + impl_->map.reserved();
}
std::byte* MappedHeap::base() const noexcept { return impl_ ? impl_->base() : nullptr; }
const OpenReport& MappedHeap::open_report() const noexcept { return impl_->report; }
const HeapOptions& MappedHeap::options() const noexcept { return impl_->opt; }
std::size_t MappedHeap::page_size() const noexcept { return impl_->hdr->page_size; }

// The directory lock for a scope (directory, then zone: never the other order).
using DirGuard = core::LockGuard<heap::RegionLock>;

void* MappedHeap::named_construct(std::string_view name, const detail::TypeTag& type,
                                  void (*ctor)(void*, void*), void* ctx, int if_exists) {
  Impl& m = *impl_;
  if (name.empty() || name.size() > kMaxName)
    m.fail(EINVAL, "a name must have 1 to " + std::to_string(kMaxName) + " bytes");
  if (!m.writable) m.fail(EROFS, "opened read-only: cannot construct '" + std::string(name) + "'");
  const std::uint64_t hash = heap::fnv1a(name.data(), name.size());
  std::uint64_t existing = 0, existing_size = 0;
  {
    DirGuard g(m.dir_lock);
    const DirEntry* e = m.find_typed(name, hash, type);
    if (e == nullptr) return m.add_entry(name, hash, type, ctor, ctx);
    if (if_exists != 1) m.fail(EEXIST, "named object '" + std::string(name) + "' exists");
    existing = e->object;
    existing_size = e->size;
  }
  return m.touch_object(existing, existing_size);  // its first page, after the lock
}

void* MappedHeap::named_find(std::string_view name, const detail::TypeTag& type) {
  Impl& m = *impl_;
  std::uint64_t object = 0, size = 0;
  {
    DirGuard g(m.dir_lock);
    const DirEntry* e = m.find_typed(name, heap::fnv1a(name.data(), name.size()), type);
    if (e == nullptr) return nullptr;
    object = e->object;
    size = e->size;
  }
  return m.touch_object(object, size);  // its first page, after the lock
}

bool MappedHeap::named_destroy(std::string_view name, const detail::TypeTag& type, void (*dtor)(void*)) {
  Impl& m = *impl_;
  if (!m.writable) m.fail(EROFS, "opened read-only: cannot destroy '" + std::string(name) + "'");
  DirGuard g(m.dir_lock);
  DirEntry* e = m.find_typed(name, heap::fnv1a(name.data(), name.size()), type);
  if (e == nullptr) return false;
  void* obj = m.base() + e->object;
  void* str = m.base() + e->strings;
  dtor(obj);
  DirTable* t = m.table();
  core::undo_save(e->state);
  core::undo_save(&t->live, sizeof(std::uint32_t) * 2);
  e->state = DirState::deleted;
  t->live -= 1;
  t->deleted += 1;
  // The entry is gone for good before its memory is: no rollback may bring
  // back an entry naming freed memory.
  m.dir_journal.commit();
  m.engine.deallocate(obj);
  m.engine.deallocate(str);
  return true;
}

std::vector<NamedInfo> MappedHeap::names() const {
  Impl& m = *impl_;
  std::vector<NamedInfo> out;
  DirGuard g(m.dir_lock);
  const DirTable* t = m.table();
  if (t == nullptr) return out;
  for (std::uint32_t i = 0; i < t->capacity; ++i) {
    const DirEntry& e = t->entries[i];
    if (e.state != DirState::live) continue;
    const auto [n, ty] = m.strings(e);
    out.push_back({std::string(n), std::string(ty), e.size * (e.count == 0 ? 1 : e.count), e.count, e.object});
  }
  std::sort(out.begin(), out.end(), [](const NamedInfo& a, const NamedInfo& b) { return a.name < b.name; });
  return out;
}

// ---- persistence

void MappedHeap::flush() {
  Impl& m = *impl_;
  if (m.shared && m.opt.backing == Backing::file) m.map.sync();
}

void MappedHeap::snapshot(const std::string& dest) {
  Impl& m = *impl_;
  const std::uint32_t flags = pal::kOpenReadWrite | pal::kOpenCreate | pal::kOpenExclusive |
                              (m.opt.follow_symlinks ? pal::kOpenFollow : 0u);
  const pal::Result<int> opened = pal::open_file(dest.c_str(), flags, m.opt.permissions);
  if (!opened.ok())
    throw error(opened.error().code, "mapheap: cannot create snapshot '" + dest + "': " + describe(opened.error()),
                dest, 0, "open");
  const int out = opened.value();
  // A partial copy is not a heap: it is removed, and the error names why.
  auto fail_dest = [&](const pal::Error& e, const char* op) {
    (void)pal::unlink_path(dest.c_str());
    throw error(e.code, "mapheap: cannot write snapshot '" + dest + "': " + describe(e), dest, 0, op);
  };
  auto fail_out = [&](const pal::Error& e) {
    (void)pal::close_fd(out);
    fail_dest(e, "write");
  };
  HeapHeader h;
  {
    // No slow path runs meanwhile: the metadata under both locks is still.
    DirGuard d(m.dir_lock);
    core::LockGuard<heap::RegionLock> z(m.engine.lock_policy());
    std::memcpy(static_cast<void*>(&h), m.hdr, sizeof(h));
    const pal::Result<pal::FileInfo> st = pal::stat_fd(m.map.fd());
    if (!st.ok()) fail_out(st.error());
    const pal::Result<bool> cloned = pal::clone_file(m.map.fd(), out);
    if (!cloned.ok()) fail_out(cloned.error());
    if (!cloned.value())
      if (pal::Status s = pal::copy_sparse(m.map.fd(), out, st.value().size); !s) fail_out(s.error());
  }
  // The copy is a heap closed uncleanly, whose caches are not to be trusted:
  // its first open recovers (fresh locks, empty caches).
  h.clean = 0;
  h.reserved1 |= kFlagCachesUntrusted;
  for (auto& p : h.processes) p.pid = 0;
  if (pal::Status s = pal::pwrite_all(out, &h, sizeof(h), 0); !s) fail_out(s.error());
  if (pal::Status s = pal::datasync(out); !s) fail_out(s.error());
  if (pal::Status s = pal::close_fd(out); !s) fail_dest(s.error(), "close");
}

HeapCheck MappedHeap::check() const {
  Impl& m = *impl_;
  HeapCheck r;
  auto bad = [&](std::string why) {
    r.ok = false;
    r.message = std::move(why);
    return r;
  };
  if (std::string why = heap::validate_header(*m.hdr, m.map.size(), false); !why.empty()) return bad(why);
  // Each journal is read under its lock: a section in progress in a live
  // process is no fault, and taking a dead holder's lock rolls its section
  // back first. (A read-only view cannot take the locks: it reads the
  // journals as they are.)
  const auto unfinished = [&](heap::RegionLock& lock, const auto& journal) {
    if (!m.writable) return journal.pending() != 0;
    core::LockGuard<heap::RegionLock> g(lock);
    return journal.pending() != 0;
  };
  if (unfinished(m.engine.lock_policy(), m.zone_journal))
    return bad("the allocator's journal holds an unfinished critical section");
  if (unfinished(m.dir_lock, m.dir_journal))
    return bad("the directory's journal holds an unfinished critical section");
  const page::CheckReport er = m.engine.check();
  if (!er.ok) return bad(std::string("allocator: ") + er.message);
  try {
    DirGuard g(m.dir_lock);
    const DirTable* t = m.table();
    if (t != nullptr) {
      std::uint32_t live = 0, deleted = 0;
      for (std::uint32_t i = 0; i < t->capacity; ++i) {
        const DirEntry& e = t->entries[i];
        if (e.state == DirState::deleted) ++deleted;
        if (e.state != DirState::live) {
          if (e.state != DirState::empty && e.state != DirState::deleted)
            return bad("directory: entry " + std::to_string(i) + " has an unknown state");
          continue;
        }
        ++live;
        const auto [n, ty] = m.strings(e);
        m.check_object(e, n);
        if (heap::fnv1a(n.data(), n.size()) != e.hash)
          return bad("directory: the hash of '" + std::string(n) + "' does not match its name");
        if (m.engine.slabs().validate(m.base() + e.object) != slab::FreeStatus::ok)
          return bad("directory: object '" + std::string(n) + "' is not an allocated block");
        if (m.engine.slabs().validate(m.base() + e.strings) != slab::FreeStatus::ok)
          return bad("directory: the name block of '" + std::string(n) + "' is not an allocated block");
      }
      if (live != t->live || deleted != t->deleted)
        return bad("directory: counts " + std::to_string(t->live) + " live / " + std::to_string(t->deleted) +
                   " deleted, entries say " + std::to_string(live) + " / " + std::to_string(deleted));
    }
  } catch (const error& e) {
    return bad(e.what());
  }
  return r;
}

void MappedHeap::trim() noexcept {
  if (impl_->writable) (void)impl_->engine.trim();
}

HeapStats MappedHeap::stats() const {
  Impl& m = *impl_;
  HeapStats s;
  const cache::EngineStats es = m.engine.stats();
  const std::uint64_t page = m.hdr->page_size;
  s.region_bytes = m.hdr->region_bytes;
  s.committed_bytes = m.heap_end();  // the zone's: this process's engine may not have seen a peer's growth
  s.used_bytes = static_cast<std::uint64_t>(std::max<std::int64_t>(es.counters.bytes_in_use, 0));
  s.free_bytes = es.zone.free_pages * page;
  s.metadata_bytes = m.hdr->engine_offset + es.metadata_pages * page;
  {
    DirGuard g(m.dir_lock);
    const DirTable* t = m.table();
    s.named_objects = t != nullptr ? t->live : 0;
  }
  std::string buf(1 << 16, '\0');
  buf.resize(std::min(buf.size() - 1, m.engine.render_buddyinfo(buf.data(), buf.size())));
  s.buddyinfo = buf;
  buf.assign(1 << 16, '\0');
  buf.resize(std::min(buf.size() - 1, m.engine.render_slabinfo(buf.data(), buf.size())));
  s.slabinfo = buf;
  buf.assign(1 << 17, '\0');
  buf.resize(std::min(buf.size() - 1, cache::render_stats_json(es, buf.data(), buf.size())));
  s.json = buf;
  for (const core::Journal* j : {&m.zone_journal, &m.dir_journal}) {
    s.journal_sections += j->area()->sections;
    s.journal_rollbacks += j->area()->rollbacks;
    s.journal_high_water = std::max<std::uint64_t>(s.journal_high_water, j->area()->high_water);
  }
  s.journal_capacity = m.hdr->zone_journal_entries;
  for (const auto& p : m.hdr->processes) {
    const int pid = std::atomic_ref<std::int32_t>(const_cast<std::int32_t&>(p.pid)).load(std::memory_order_acquire);
    if (pid != 0) s.processes.push_back({pid, pid_alive(pid)});
  }
  return s;
}

std::vector<PageRun> MappedHeap::page_runs() const {
  Impl& m = *impl_;
  std::vector<PageRun> runs;
  const std::uint64_t page = m.hdr->page_size;
  const std::uint64_t eng = m.hdr->engine_offset / page;
  page::Buddy& z = m.engine.zone();
  core::LockGuard<heap::RegionLock> g(m.engine.lock_policy());
  auto add = [&](std::uint64_t first, std::uint64_t n, PageKind k, unsigned cls = 0, std::uint32_t used = 0,
                 std::uint32_t cap = 0) {
    if (!runs.empty() && runs.back().kind == k && k != PageKind::slab && k != PageKind::large &&
        runs.back().first_page + runs.back().pages == first) {
      runs.back().pages += n;
      return;
    }
    runs.push_back({first, n, k, cls, used, cap});
  };
  add(0, eng + z.first_page(), PageKind::metadata);
  const std::uint32_t root = z.header().root, cache_run = m.engine.slabs().cache_run();
  for (std::uint32_t i = z.first_page(); i < z.end_page();) {
    const page::PageDesc& d = z.desc(page::PageIndex(i));
    std::uint64_t n = 1;
    switch (d.state) {
      case page::PageState::free:
        n = std::uint64_t{1} << d.order;
        add(eng + i, n, (d.flags & page::kPageReleased) ? PageKind::free_released : PageKind::free_dirty);
        break;
      case page::PageState::isolated:
        n = std::uint64_t{1} << d.order;
        add(eng + i, n, PageKind::isolated);
        break;
      case page::PageState::large:
        n = d.run == 0 ? 1 : d.run;
        add(eng + i, n, i == root || i == cache_run ? PageKind::metadata : PageKind::large);
        break;
      case page::PageState::slab:
        n = d.run == 0 ? 1 : d.run;
        add(eng + i, n, PageKind::slab, d.slab_class, d.slab_inuse,
            d.slab_class < slab::kClassCount ? m.engine.slabs().objects_of(d.slab_class) : 0);
        break;
      default: add(eng + i, 1, PageKind::metadata); break;
    }
    i = static_cast<std::uint32_t>(std::min<std::uint64_t>(i + n, z.end_page()));
  }
  return runs;
}

// Mark and sweep from the named objects. Blocks are enumerated from the
// page map (large runs; slab objects carved, not on their free list and not
// in a cache); a block is reachable if it is a named object's, or if a word
// of a reachable block that carries offset_ptr's tag points, as a
// self-relative offset, at its first byte (GcPointers::start) or anywhere in
// it (GcPointers::interior). Conservative: a word that merely looks like an
// offset_ptr keeps its target alive, never the reverse. The tag is what makes
// this work: read as offsets, the small integers of a heap (counts, lengths)
// "point" at neighbouring blocks and kept a dead process's whole tree alive
// (measured on the demo's word count before the tag: 1 block freed of ~20,000).
GcReport MappedHeap::gc(GcPointers pointers) {
  Impl& m = *impl_;
  if (!m.writable || !m.shared) m.fail(EROFS, "gc needs a heap opened read-write and shared");
  if (m.lock_fd >= 0) {
    auto others = pal::range_locked_by_others(m.lock_fd, kPresenceByte, 1);
    if (!others.ok()) m.fail(others.error().code, "cannot tell who has it open: " + describe(others.error()));
    if (others.value()) m.fail(EBUSY, "other processes have it open: gc needs it alone (see `mapheap stat`)");
  }
  (void)m.engine.trim();  // cached objects back to their slabs (those left are skipped below)

  struct Block {
    std::uint64_t off;
    std::uint64_t bytes;
    bool marked;
  };
  std::vector<Block> blocks;
  std::vector<void*> garbage;
  GcReport rep;
  {
    DirGuard d(m.dir_lock);
    core::LockGuard<heap::RegionLock> z(m.engine.lock_policy());
    page::Buddy& zone = m.engine.zone();
    const std::uint64_t eoff = m.hdr->engine_offset;
    const std::uint64_t page = zone.header().page_size;
    // Objects still cached (CPUs this thread may not run on) are free.
    std::vector<std::uint64_t> cached;
    const cache::FrontCache& fc = m.engine.front_cache();
    for (std::uint32_t s = 0; s < fc.array_slots(); ++s)
      for (unsigned cls = 0; cls < slab::kClassCount; ++cls) {
        const cache::ClassArray* a = fc.array(s, cls);
        const std::uint64_t n = std::min<std::uint64_t>(a->word & 0xffff, cache::class_capacity(cls));
        for (std::uint64_t i = 0; i < n; ++i) cached.push_back(eoff + a->items[i]);
      }
    std::sort(cached.begin(), cached.end());
    const std::uint32_t root = zone.header().root, cache_run = m.engine.slabs().cache_run();
    std::uint64_t live[slab::kMaxSlabObjects / 64];
    for (std::uint32_t i = zone.first_page(); i < zone.end_page();) {
      const page::PageDesc& pd = zone.desc(page::PageIndex(i));
      std::uint64_t n = 1;
      if (pd.state == page::PageState::free || pd.state == page::PageState::isolated) {
        n = std::uint64_t{1} << pd.order;
      } else if (pd.state == page::PageState::large) {
        n = pd.run == 0 ? 1 : pd.run;
        if (i != root && i != cache_run) blocks.push_back({eoff + std::uint64_t{i} * page, n * page, false});
      } else if (pd.state == page::PageState::slab) {
        n = pd.run == 0 ? 1 : pd.run;
        const unsigned cls = pd.slab_class;
        if (cls < slab::kClassCount && m.engine.slabs().live_objects(i, live) != 0) {
          const std::uint64_t size = slab::class_size(cls);
          for (std::uint32_t k = 0; k < slab::kMaxSlabObjects; ++k)
            if (live[k / 64] & (std::uint64_t{1} << (k % 64))) {
              const std::uint64_t off = eoff + std::uint64_t{i} * page + k * size;
              if (!std::binary_search(cached.begin(), cached.end(), off)) blocks.push_back({off, size, false});
            }
        }
      }
      i = static_cast<std::uint32_t>(std::min<std::uint64_t>(i + n, zone.end_page()));
    }
    std::sort(blocks.begin(), blocks.end(), [](const Block& a, const Block& b) { return a.off < b.off; });
    auto find = [&](std::uint64_t off) -> Block* {
      auto it = std::upper_bound(blocks.begin(), blocks.end(), off,
                                 [](std::uint64_t o, const Block& b) { return o < b.off; });
      if (it == blocks.begin()) return nullptr;
      --it;
      return off < it->off + it->bytes ? &*it : nullptr;
    };
    std::vector<Block*> work;
    const bool interior = pointers == GcPointers::interior;
    auto mark = [&](std::uint64_t off) {
      if (Block* b = find(off); b != nullptr && !b->marked && (interior || b->off == off)) {
        b->marked = true;
        work.push_back(b);
      }
    };
    if (const DirTable* t = m.table()) {
      // The table and the name blocks hold offsets from the base and text,
      // not offset_ptrs: kept, not scanned (read as self-relative offsets,
      // they would keep random blocks alive).
      mark(m.hdr->directory);
      for (std::uint32_t i = 0; i < t->capacity; ++i)
        if (t->entries[i].state == DirState::live) mark(t->entries[i].strings);
      work.clear();
      for (std::uint32_t i = 0; i < t->capacity; ++i)
        if (t->entries[i].state == DirState::live) mark(t->entries[i].object);
    }
    const std::uint64_t end = m.heap_end();
    while (!work.empty()) {
      const Block* b = work.back();
      work.pop_back();
      const std::byte* p = m.base() + b->off;
      for (std::uint64_t w = 0; w + 8 <= b->bytes; w += 8) {
        std::uint64_t v;
        std::memcpy(&v, p + w, 8);
        if (!offset_ptr<void>::is_encoded(v)) continue;  // null, or not an offset_ptr's word
        const std::int64_t dist = detail::offset_distance(static_cast<std::ptrdiff_t>(v));
        if (dist == 0) continue;  // a pointer to itself
        const std::uint64_t target = b->off + w + static_cast<std::uint64_t>(dist);
        if (target >= eoff && target < end) mark(target);
      }
    }
    for (const Block& b : blocks) {
      if (b.marked) {
        rep.live_blocks += 1;
      } else {
        rep.freed_blocks += 1;
        rep.freed_bytes += b.bytes;
        garbage.push_back(m.base() + b.off);
      }
    }
  }
  for (void* p : garbage) m.engine.deallocate(p);
  return rep;
}

}  // namespace mapheap
