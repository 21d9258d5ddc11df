// pal/error.hpp — what a failed OS call looks like to the rest of mapheap.
//
// Every platform-layer function that can fail returns a Result<T> (or a
// Status, which is a Result<void>). A failure is an Error: the operation that
// failed (Op), the errno it gave, and the arguments that matter for telling
// the user *what* failed — the path, the size, the offset and the flags.
//
// Error is a plain value: it never allocates and never throws, so the same
// types serve the process malloc (where allocating while reporting an error
// would recurse) and the tools (which turn it into a mapheap::error with a
// std::string message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

namespace mapheap::pal {

// The OS operations the platform layer performs. Each names one call (or one
// well-defined composite, such as `reserve`), and selects how `flags` is
// decoded when an Error is formatted.
enum class Op : std::uint8_t {
  none,
  mmap,
  munmap,
  mprotect,
  mremap,
  madvise,
  mlock,
  munlock,
  msync,
  open,
  close,
  dup,
  fstat,
  fstatfs,
  ftruncate,
  fallocate,
  punch_hole,
  fdatasync,
  fsync,
  lock_file,
  fadvise,
  read,
  write,
  memfd_create,
  shm_open,
  shm_unlink,
  unlink,
  futex_wait,
  futex_wake,
  mutex_init,
  mutex_lock,
  mutex_unlock,
  mutex_consistent,
  proc_read,  // reading a /proc or /sys file
  spawn,
  sched_affinity,
  check,  // a precondition mapheap checks itself (not an OS call)
};

// Human name of an Op ("mmap", "fallocate(PUNCH_HOLE)", ...). Never null.
const char* op_name(Op op) noexcept;

struct Error {
  Op op = Op::none;
  int code = 0;                  // errno value (or an errno-like code for Op::check)
  std::uint64_t size = 0;        // length / size involved, 0 if none
  std::uint64_t offset = 0;      // file offset involved, 0 if none
  std::uint64_t flags = 0;       // raw OS flags passed (decoded by op when formatted)
  std::uint32_t extra = 0;       // second flag word: mmap prot, open mode
  const char* detail = nullptr;  // static text with more context, or null
  char path[232] = {};           // path or name involved (truncated), "" if none

  static Error make(Op op, int code) noexcept;
  Error& with_path(const char* p) noexcept;
  Error& with_size(std::uint64_t s) noexcept {
    size = s;
    return *this;
  }
  Error& with_offset(std::uint64_t o) noexcept {
    offset = o;
    return *this;
  }
  Error& with_flags(std::uint64_t f, std::uint32_t x = 0) noexcept {
    flags = f;
    extra = x;
    return *this;
  }
  Error& with_detail(const char* d) noexcept {
    detail = d;
    return *this;
  }

  // Writes e.g. "open(path='/x', flags=O_RDWR|O_CLOEXEC|O_NOFOLLOW) failed: ENOENT
  // (No such file or directory)" into buf (always NUL-terminated). Returns the
  // length that the full message needs, like snprintf.
  std::size_t format(char* buf, std::size_t cap) const noexcept;
};

// A bounded text appender for messages built without allocating: it writes
// what fits (always NUL-terminated when cap > 0) and keeps counting past the
// end, so `len` is the length the whole text needs, as with snprintf.
struct TextOut {
  char* buf;
  std::size_t cap;
  std::size_t len = 0;
  void put(const char* s) noexcept;
  // At most 255 characters per call.
  __attribute__((format(printf, 2, 3))) void printf(const char* fmt, ...) noexcept;
};

// Symbolic errno name ("ENOENT"), or "E?" if unknown.
const char* errno_name(int code) noexcept;

// Result<T>: a T or an Error. T must be trivially copyable (pal returns fds,
// addresses, sizes and small structs); this keeps Result free of allocation.
template <class T>
class [[nodiscard]] Result {
  static_assert(std::is_trivially_copyable_v<T>, "pal::Result holds plain values");

 public:
  Result(T v) noexcept : ok_(true) { new (&value_) T(v); }  // NOLINT: implicit by design
  Result(const Error& e) noexcept : ok_(false) { new (&error_) Error(e); }  // NOLINT

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  // REQUIRES: ok()
  T value() const noexcept { return value_; }
  T operator*() const noexcept { return value_; }
  const T* operator->() const noexcept { return &value_; }
  // REQUIRES: !ok()
  const Error& error() const noexcept { return error_; }
  T value_or(T fallback) const noexcept { return ok_ ? value_ : fallback; }

 private:
  bool ok_;
  union {
    T value_;
    Error error_;
  };
};

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(const Error& e) noexcept : ok_(false), error_(e) {}  // NOLINT: implicit by design
  static Status success() noexcept { return Status(); }

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  const Error& error() const noexcept { return error_; }

 private:
  bool ok_ = true;
  Error error_{};
};

}  // namespace mapheap::pal
