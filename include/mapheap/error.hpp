// mapheap/error.hpp — the one exception type mapheap throws, and result<T> for
// the non-throwing try_ variants.
//
// mapheap::error is a std::system_error: code() is the OS errno (in
// std::generic_category) and what() is a complete sentence naming what was
// being done, the path, the size and the flags involved, and why it failed:
//
//   mapheap: cannot map file '/nonexistent/h.heap' (size 4096): open(path=
//   '/nonexistent/h.heap', flags=O_RDWR|O_CREAT|O_EXCL|O_CLOEXEC|O_NOFOLLOW|O_NOCTTY|
//   O_NONBLOCK, mode=0600) failed: ENOENT (No such file or directory): a directory
//   in the path does not exist
#pragma once

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace mapheap {

class error : public std::system_error {
 public:
  error(int errno_value, std::string message, std::string path = {}, std::uint64_t size = 0,
        std::string operation = {})
      : std::system_error(errno_value, std::generic_category(), message),
        message_(std::move(message)),
        path_(std::move(path)),
        size_(size),
        operation_(std::move(operation)) {}

  const char* what() const noexcept override { return message_.c_str(); }
  const std::string& path() const noexcept { return path_; }  // "" if none
  std::uint64_t size() const noexcept { return size_; }       // 0 if none
  // The OS call (or mapheap check) that failed: "open", "mmap", "check", ...
  const std::string& operation() const noexcept { return operation_; }

 private:
  std::string message_;
  std::string path_;
  std::uint64_t size_;
  std::string operation_;
};

// A T or a mapheap::error; returned by the try_ variants instead of throwing.
template <class T>
class result {
 public:
  result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  result(error e) : v_(std::move(e)) {}      // NOLINT: implicit by design
  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  T& value() & {
    if (!ok()) throw std::get<1>(v_);
    return std::get<0>(v_);
  }
  T&& value() && {
    if (!ok()) throw std::get<1>(v_);
    return std::get<0>(std::move(v_));
  }
  // REQUIRES: !ok()
  const error& err() const { return std::get<1>(v_); }

 private:
  std::variant<T, error> v_;
};

}  // namespace mapheap
