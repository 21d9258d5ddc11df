// mapheap/heap.hpp — MappedHeap: one heap in a mapping, shared by many
// processes at once and kept in a file.
//
//   auto h = mapheap::MappedHeap::open(mapheap::HeapOptions::file("/data/graph.heap"));
//   auto* counts = h.find_or_construct<Counts>("counts")();   // race-free across processes
//   void* p = h.allocate(64);                                  // any process, any thread
//   h.deallocate(p);
//   h.flush();                                                 // durable (msync, then fdatasync)
//
// Everything the heap stores is inside the mapping and refers to other things
// by offset, so every process may map it at its own address (use
// mapheap::offset_ptr<T> in your own data, and mapheap::allocator<T> for
// containers). The allocator is the engine of docs/design/engine.md with its
// lock and its undo journal inside the mapping: docs/design/mapped_heap.md
// describes the format and docs/design/crash.md what survives what.
//
// Errors: open() throws mapheap::error naming the path and the reason (a
// truncated, corrupt, foreign or future-version file included); try_open()
// returns it. allocate() returns nullptr when the heap is full.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "mapheap/error.hpp"
#include "mapheap/mapping.hpp"

namespace mapheap {

enum class HeapMode : std::uint8_t {
  create,          // a new heap; fails if the file or shm object exists
  open,            // an existing heap; fails if there is none
  open_or_create,  // opens it, or creates it if it does not exist
  read_only,       // an existing heap, mapped read-only: find and inspect only
  copy_on_write,   // an existing heap, privately: changes are never written back
};
const char* to_string(HeapMode) noexcept;

struct HeapOptions {
  Backing backing = Backing::file;  // file, shm ("/name"), memfd, or anonymous (shared with fork())
  std::string path;                 // file path, shm name, or memfd name
  int fd = -1;                      // memfd (or file) descriptor to map instead of opening path
  HeapMode mode = HeapMode::open_or_create;
  std::size_t initial_size = std::size_t{64} << 20;  // usable bytes at create
  std::size_t max_size = std::size_t{4} << 30;       // the reservation: the heap grows up to it
  unsigned permissions = 0600;                       // of a created file or shm object
  bool follow_symlinks = false;                      // a symlink is refused unless set
  bool checked = false;  // every free fully verified, every offset bounds-checked
  // Builders.
  static HeapOptions file(std::string path, HeapMode m = HeapMode::open_or_create);
  static HeapOptions shm(std::string name, HeapMode m = HeapMode::open_or_create);
  static HeapOptions memfd(std::string name);  // a new memfd: pass fd() to others
  static HeapOptions from_fd(int fd);          // a memfd heap another process made
  static HeapOptions anonymous();              // shared with children fork()ed later
  HeapOptions& with_size(std::size_t initial, std::size_t max = 0) {
    initial_size = initial;
    if (max != 0) max_size = max;
    return *this;
  }
  HeapOptions& with_mode(HeapMode m) {
    mode = m;
    return *this;
  }
};

// What open() found and did.
struct OpenReport {
  bool created = false;
  bool recovered = false;        // the last user did not close cleanly: recovery ran
  std::uint64_t rolled_back = 0;  // journal entries undone (critical sections cut short)
  std::uint64_t isolated_pages = 0;  // pages a dead process was releasing, returned
  std::uint64_t reclaimed_cached = 0;  // objects in dead threads' caches, returned
  double open_seconds = 0;  // wall time of open(), recovery included
};

struct HeapCheck {
  bool ok = true;
  std::string message;  // the first violation, "" when ok
};

// Which offset_ptrs keep a block alive in gc(): those to its first byte
// (what containers hold: vector's begin, string's data, node links), or
// also those into its middle (safe for any data, but small integers then
// look like pointers to neighbouring blocks and keep them too).
enum class GcPointers : std::uint8_t { start, interior };

struct GcReport {
  std::uint64_t live_blocks = 0;   // reachable from the named objects
  std::uint64_t freed_blocks = 0;  // unreachable: given back
  std::uint64_t freed_bytes = 0;
};

struct NamedInfo {
  std::string name;
  std::string type;  // the C++ type name the object was constructed with
  std::size_t size = 0;   // bytes (sizeof(T) * count)
  std::size_t count = 0;  // elements
  std::uint64_t offset = 0;  // from the heap's base
};

struct ProcessInfo {
  int pid = 0;
  bool alive = false;
};

struct HeapStats {
  std::uint64_t region_bytes = 0;     // the reservation (max size)
  std::uint64_t committed_bytes = 0;  // usable now
  std::uint64_t used_bytes = 0;       // in live objects
  std::uint64_t free_bytes = 0;       // free pages in the arena
  std::uint64_t metadata_bytes = 0;
  std::uint64_t named_objects = 0;
  std::string buddyinfo;  // /proc/buddyinfo style
  std::string slabinfo;   // /proc/slabinfo style
  std::string json;       // the engine's statistics as JSON
  std::vector<ProcessInfo> processes;  // processes that have the heap open
  // The undo journals (docs/design/crash.md): critical sections committed
  // and taken back, and the most entries one section needed, ever.
  std::uint64_t journal_sections = 0;
  std::uint64_t journal_rollbacks = 0;
  std::uint64_t journal_high_water = 0;
  std::uint64_t journal_capacity = 0;
};

// One page of the picture `mapheap map` draws.
enum class PageKind : std::uint8_t { metadata, free_dirty, free_released, large, slab, isolated };
struct PageRun {
  std::uint64_t first_page = 0;
  std::uint64_t pages = 0;
  PageKind kind = PageKind::metadata;
  unsigned size_class = 0;  // slab runs: the class; large: 0
  std::uint32_t in_use = 0;     // slab runs: objects in use
  std::uint32_t capacity = 0;   // slab runs: objects it holds
};

namespace detail {
// The type of a named object: its name and layout, checked by find<T>.
struct TypeTag {
  const char* name;
  std::size_t size;
  std::size_t align;
};
template <class T>
constexpr std::string_view type_name() noexcept {
  std::string_view s = __PRETTY_FUNCTION__;
  const auto from = s.find("T = ") + 4;
  const auto to = s.find_first_of(";]", from);
  return s.substr(from, to - from);
}
template <class T>
struct TypeTagOf {
  static constexpr std::string_view name = type_name<T>();
  static inline const std::string stored{name};
  static TypeTag tag() noexcept { return {stored.c_str(), sizeof(T), alignof(T)}; }
};
}  // namespace detail

class MappedHeap {
 public:
  MappedHeap() noexcept;  // closed
  ~MappedHeap();          // close(), errors ignored
  MappedHeap(MappedHeap&&) noexcept;
  MappedHeap& operator=(MappedHeap&&) noexcept;
  MappedHeap(const MappedHeap&) = delete;
  MappedHeap& operator=(const MappedHeap&) = delete;

  static MappedHeap open(const HeapOptions& options);  // throws mapheap::error
  static result<MappedHeap> try_open(const HeapOptions& options);

  // Closes the heap: the last process to close marks it clean (and flushes a
  // file), so the next open needs no recovery. Throws if the flush fails.
  void close();
  bool is_open() const noexcept;

  // ---- memory
  void* allocate(std::size_t size, std::size_t align = 0) noexcept;  // nullptr when full
  void deallocate(void* p) noexcept;  // a pointer the heap did not hand out aborts with the reason
  // The same, for p = allocate(size, align), told its alignment and a size
  // from the request up to good_size(size, align): quicker (the size names
  // the block's class, the page map is not read). A wrong size is the
  // caller's bug, found only by checked heaps.
  void deallocate(void* p, std::size_t size, std::size_t align = 0) noexcept;
  // The bytes allocate(size, align) hands out that the caller may use, all
  // of them (a container sizes its capacity by it): the size class's for a
  // small block, at least size for a large one. Reads no memory.
  static std::size_t good_size(std::size_t size, std::size_t align = 0) noexcept;
  std::size_t usable_size(const void* p) const noexcept;
  bool contains(const void* p) const noexcept;
  std::byte* base() const noexcept;
  std::uint64_t offset_of(const void* p) const noexcept { return static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base()); }
  void* at(std::uint64_t offset) const noexcept { return base() + offset; }
  // The open heap (of this process) holding p, or null.
  static MappedHeap* of(const void* p) noexcept;

  // ---- named objects
  template <class T>
  class Constructor {
   public:
    template <class... Args>
    T* operator()(Args&&... args) const {
      struct Ctx {
        std::tuple<Args&&...> args;
      } ctx{std::forward_as_tuple(std::forward<Args>(args)...)};
      auto ctor = [](void* where, void* c) {
        std::apply([where](auto&&... a) { ::new (where) T(std::forward<decltype(a)>(a)...); },
                   std::move(static_cast<Ctx*>(c)->args));
      };
      return static_cast<T*>(heap_->named_construct(name_, detail::TypeTagOf<T>::tag(), ctor, &ctx,
                                                    if_exists_));
    }

   private:
    friend class MappedHeap;
    Constructor(MappedHeap* h, std::string_view n, int e) : heap_(h), name_(n), if_exists_(e) {}
    MappedHeap* heap_;
    std::string_view name_;
    int if_exists_;  // 0: throw, 1: return the existing one
  };
  // construct<T>("name")(args...): throws if the name exists.
  template <class T>
  Constructor<T> construct(std::string_view name) {
    return Constructor<T>(this, name, 0);
  }
  // find_or_construct<T>("name")(args...): one process constructs, the
  // others get the same object (the directory lock is held meanwhile).
  template <class T>
  Constructor<T> find_or_construct(std::string_view name) {
    return Constructor<T>(this, name, 1);
  }
  // The object, or nullptr if there is none; throws if it has another type.
  template <class T>
  T* find(std::string_view name) {
    return static_cast<T*>(named_find(name, detail::TypeTagOf<T>::tag()));
  }
  // Runs ~T() and frees it; false if there is no such object. Throws on a type mismatch.
  template <class T>
  bool destroy(std::string_view name) {
    auto dtor = [](void* p) { static_cast<T*>(p)->~T(); };
    return named_destroy(name, detail::TypeTagOf<T>::tag(), dtor);
  }
  std::vector<NamedInfo> names() const;

  // ---- persistence and upkeep
  void flush();  // msync, then fdatasync (a no-op for shm, memfd and anonymous heaps)
  // A consistent copy of the heap (reflink when the filesystem can, else a
  // sparse copy) that opens as a heap of its own. Allocation pauses meanwhile.
  void snapshot(const std::string& dest);
  HeapCheck check() const;  // every invariant (quiescent heap: no allocation meanwhile)
  // Frees every block unreachable from the named objects (following
  // offset_ptrs conservatively; docs/design/crash.md). Only with no other
  // process attached and no unnamed block held by this one.
  GcReport gc(GcPointers pointers = GcPointers::start);
  void trim() noexcept;  // drains the caches, returns free pages to the OS
  HeapStats stats() const;
  std::vector<PageRun> page_runs() const;  // the page map, run by run, for pictures
  const OpenReport& open_report() const noexcept;
  const HeapOptions& options() const noexcept;
  std::size_t page_size() const noexcept;

  struct Impl;

 private:
  void* named_construct(std::string_view name, const detail::TypeTag& type,
                        void (*ctor)(void*, void*), void* ctx, int if_exists);
  void* named_find(std::string_view name, const detail::TypeTag& type);
  bool named_destroy(std::string_view name, const detail::TypeTag& type, void (*dtor)(void*));

  std::unique_ptr<Impl> impl_;
};

}  // namespace mapheap
