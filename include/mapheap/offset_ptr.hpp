// mapheap/offset_ptr.hpp — offset_ptr<T>: a self-relative pointer, for data
// that lives in a mapping each process maps at its own address.
//
// An offset_ptr stores the distance from its own address to its target, not
// the target's address. When a whole block — the pointer and what it points
// to — is seen at another address (another process's mapping of the same
// heap, a file reopened elsewhere), the distance still holds, so the pointer
// still finds its target:
//
//   struct Node { int value; mapheap::offset_ptr<Node> next; };   // in a MappedHeap
//
// Encoding: the stored value is `target - this` in bytes, plus a constant
// tag that marks the word as an offset_ptr (detail::kOffsetTag), and the
// distance 1 means null. Offset 0 is a pointer to the offset_ptr itself, which node-based
// containers need (an empty circular list's header points to itself, and its
// `next` is its first member). Offset 1 is the one address an offset_ptr
// never needs: it is inside the offset_ptr's own eight bytes, so no object
// other than the offset_ptr can start there. (Boost.Interprocess chose the
// same value for the same reason.) Memory that is merely zeroed is not an
// offset_ptr at all (it lacks the tag): construct offset_ptrs, never conjure
// them from zeroed bytes.
//
// Copying an offset_ptr copies the target, not the stored distance: the copy
// constructor and assignment recompute the distance from the copy's address.
// So offset_ptr is not trivially copyable and must not be memcpy'd on its own;
// copying a whole block that holds both the pointer and its target (memcpy,
// another mapping) keeps the pointer pointing into the copy.
//
// offset_ptr<T> is a fancy pointer: std::vector, std::basic_string and the
// boost::container containers take it as allocator_traits<A>::pointer
// (see mapheap/allocator.hpp). For an object type T it is a contiguous
// iterator; offset_ptr<void> and offset_ptr<const void> convert and compare
// but do no arithmetic. offset_ptr<char> (and the other character types)
// converts implicitly to char*, because libstdc++'s basic_string passes its
// pointer where a CharT* is expected; that char* is this process's address,
// valid only here and only while the mapping stays: never store it in a
// mapping. Other offset_ptrs convert only through get().
//
// In MAPHEAP_CHECKED builds, pointing an offset_ptr into its own second byte
// (the one unrepresentable target) aborts with a message.
#pragma once

#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iosfwd>
#include <iterator>
#include <memory>
#include <type_traits>

namespace mapheap {

template <class T>
class offset_ptr;

namespace detail {

// Iterator member types, for object types only: offset_ptr<void> is not an
// iterator, and a `reference` of void would break pointer traits that take
// one as a parameter (boost::intrusive::pointer_traits::pointer_to).
template <class T, bool = std::is_object_v<T>>
struct offset_ptr_iterator_types {};
template <class T>
struct offset_ptr_iterator_types<T, true> {
  using iterator_category = std::random_access_iterator_tag;
  using iterator_concept = std::contiguous_iterator_tag;
  using value_type = std::remove_cv_t<T>;
  using reference = T&;
  using pointer = T*;  // what operator-> returns, as for any iterator
};

template <class T>
inline constexpr bool is_character_v =
    std::is_same_v<T, char> || std::is_same_v<T, signed char> || std::is_same_v<T, unsigned char> ||
    std::is_same_v<T, wchar_t> || std::is_same_v<T, char8_t> || std::is_same_v<T, char16_t> ||
    std::is_same_v<T, char32_t>;

[[noreturn]] inline void offset_ptr_unrepresentable(const void* self) noexcept {
  std::fprintf(stderr,
               "mapheap: offset_ptr at %p cannot point to %p: that is inside the offset_ptr "
               "itself and is the encoding of null\n",
               self, static_cast<const void*>(static_cast<const char*>(self) + 1));
  std::abort();
}

// The stored word: the distance plus a tag, 0xF7C3 << 48 (any two user-space
// addresses are less than 2^47 apart, so the word's top 16 bits are the tag
// or one below it). One add to encode and one subtract to decode, as cheap as
// the bare distance. The tag lets a reachability sweep (MappedHeap::gc) tell
// an offset_ptr from an integer that happens to be a plausible distance:
// without it, every small count in a block "points" at a neighbouring block.
// 0xF7 never occurs in UTF-8 text, and such a word is a negative integer
// near -2^63 + 2^59 or a double near -1e270.
inline constexpr std::uint64_t kOffsetTag = std::uint64_t{0xF7C3} << 48;
constexpr std::ptrdiff_t offset_encode(std::int64_t distance) noexcept {
  return static_cast<std::ptrdiff_t>(static_cast<std::uint64_t>(distance) + kOffsetTag);
}
constexpr std::int64_t offset_distance(std::ptrdiff_t stored) noexcept {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(stored) - kOffsetTag);
}
constexpr bool offset_tagged(std::uint64_t word) noexcept {
  return (word - kOffsetTag + (std::uint64_t{1} << 47)) < (std::uint64_t{1} << 48);
}
[[noreturn]] inline void offset_ptr_too_far(const void* self, const void* target) noexcept {
  std::fprintf(stderr, "mapheap: offset_ptr at %p cannot point to %p: more than 2^47 bytes away\n", self,
               target);
  std::abort();
}

}  // namespace detail

template <class T>
class offset_ptr : public detail::offset_ptr_iterator_types<T> {
 public:
  using element_type = T;
  using difference_type = std::ptrdiff_t;
  template <class U>
  using rebind = offset_ptr<U>;

  // The stored value of a null offset_ptr (see the encoding above): the
  // distance 1, tagged.
  static constexpr std::ptrdiff_t null_offset = detail::offset_encode(1);

  // ---- construction: every constructor computes the distance from `this`
  constexpr offset_ptr() noexcept = default;  // null
  constexpr offset_ptr(std::nullptr_t) noexcept {}  // NOLINT: implicit like T*
  // From T* (and Derived*, or any U* that converts). A template, so that a
  // literal 0 (which Boost assigns) means nullptr without ambiguity.
  template <class U>
    requires std::is_convertible_v<U*, T*>
  offset_ptr(U* p) noexcept {  // NOLINT: implicit like T*
    set(p);
  }
  offset_ptr(const offset_ptr& o) noexcept { set(o.get()); }
  // offset_ptr<Derived> -> offset_ptr<Base>, offset_ptr<T> -> offset_ptr<const T>, -> offset_ptr<void>.
  template <class U>
    requires(!std::is_same_v<U, T> && std::is_convertible_v<U*, T*>)
  offset_ptr(const offset_ptr<U>& o) noexcept : offset_ptr(static_cast<T*>(o.get())) {}  // NOLINT
  // What static_cast<T*> allows but no implicit conversion does: void -> T,
  // Base -> Derived. (The allocator requirements ask for
  // static_cast<pointer>(void_pointer).)
  template <class U>
    requires(!std::is_convertible_v<U*, T*> && requires(U* u) { static_cast<T*>(u); })
  explicit offset_ptr(const offset_ptr<U>& o) noexcept : offset_ptr(static_cast<T*>(o.get())) {}

  offset_ptr& operator=(const offset_ptr& o) noexcept {
    set(o.get());
    return *this;
  }
  template <class U>
    requires std::is_convertible_v<U*, T*>
  offset_ptr& operator=(U* p) noexcept {
    set(p);
    return *this;
  }
  offset_ptr& operator=(std::nullptr_t) noexcept {
    off_ = null_offset;
    return *this;
  }
  template <class U>
    requires(!std::is_same_v<U, T> && std::is_convertible_v<U*, T*>)
  offset_ptr& operator=(const offset_ptr<U>& o) noexcept {
    set(static_cast<T*>(o.get()));
    return *this;
  }
  ~offset_ptr() = default;

  // The target's address in this process: one compare and one add.
  T* get() const noexcept {
    if (off_ == null_offset) return nullptr;
    return reinterpret_cast<T*>(reinterpret_cast<std::uintptr_t>(this) +
                                static_cast<std::uintptr_t>(detail::offset_distance(off_)));
  }
  // The stored word (null_offset when null): for code that follows
  // offset_ptrs by reading a mapping's words (a reachability sweep).
  std::ptrdiff_t stored_offset() const noexcept { return off_; }
  // Whether a word read from a mapping has an offset_ptr's tag.
  static bool is_encoded(std::uint64_t word) noexcept { return detail::offset_tagged(word); }
  // The target an offset_ptr found at `self` with stored word `off` refers to.
  static const void* decode(const void* self, std::ptrdiff_t off) noexcept {
    if (off == null_offset) return nullptr;
    return reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(self) +
                                         static_cast<std::uintptr_t>(detail::offset_distance(off)));
  }

  explicit operator bool() const noexcept { return off_ != null_offset; }
  bool operator!() const noexcept { return off_ == null_offset; }
  // Implicit for character types only, as libstdc++'s basic_string needs: it
  // passes its `pointer` where a CharT* is expected. Not for other types:
  // libstdc++'s node containers (std::map, std::list, ...) would then compile
  // and keep raw node pointers in the mapping. Never store the CharT* in a
  // mapping: it is this process's address. (The operators below are exact
  // matches, so they, not the built-in ones reached through this conversion,
  // are chosen.)
  operator T*() const noexcept  // NOLINT: implicit by design
    requires detail::is_character_v<std::remove_cv_t<T>>
  {
    return get();
  }

  // ---- access
  T* operator->() const noexcept { return get(); }  // also what std::to_address uses
  std::add_lvalue_reference_t<T> operator*() const noexcept
    requires(!std::is_void_v<T>)
  {
    return *get();
  }
  template <std::integral I>
    requires std::is_object_v<T>
  std::add_lvalue_reference_t<T> operator[](I i) const noexcept {
    return get()[i];
  }

  // For std::pointer_traits and boost::intrusive::pointer_traits.
  template <class U = T>
    requires(!std::is_void_v<U> && std::is_convertible_v<U*, T*>)
  static offset_ptr pointer_to(U& r) noexcept {
    return offset_ptr(std::addressof(r));
  }
  // boost::intrusive::pointer_traits prefers these when they exist.
  template <class U>
    requires requires(U* u) { static_cast<T*>(u); }
  static offset_ptr static_cast_from(const offset_ptr<U>& p) noexcept {
    return offset_ptr(static_cast<T*>(p.get()));
  }
  template <class U>
    requires requires(U* u) { const_cast<T*>(u); }
  static offset_ptr const_cast_from(const offset_ptr<U>& p) noexcept {
    return offset_ptr(const_cast<T*>(p.get()));
  }
  template <class U>
    requires requires(U* u) { dynamic_cast<T*>(u); }
  static offset_ptr dynamic_cast_from(const offset_ptr<U>& p) noexcept {
    return offset_ptr(dynamic_cast<T*>(p.get()));
  }

  // ---- arithmetic (object types only)
  // Moving the target moves the stored distance by as much: one add, no
  // decoding (arithmetic on a null pointer, but for adding 0, is undefined,
  // as for T*).
  offset_ptr& operator+=(difference_type n) noexcept
    requires std::is_object_v<T>
  {
    step(static_cast<std::uint64_t>(n) * sizeof(T));
    return *this;
  }
  offset_ptr& operator-=(difference_type n) noexcept
    requires std::is_object_v<T>
  {
    step(std::uint64_t{0} - static_cast<std::uint64_t>(n) * sizeof(T));
    return *this;
  }
  offset_ptr& operator++() noexcept
    requires std::is_object_v<T>
  {
    return *this += 1;
  }
  offset_ptr& operator--() noexcept
    requires std::is_object_v<T>
  {
    return *this -= 1;
  }
  offset_ptr operator++(int) noexcept
    requires std::is_object_v<T>
  {
    offset_ptr old(*this);
    ++*this;
    return old;
  }
  offset_ptr operator--(int) noexcept
    requires std::is_object_v<T>
  {
    offset_ptr old(*this);
    --*this;
    return old;
  }
  template <class CharT, class Traits>
  friend std::basic_ostream<CharT, Traits>& operator<<(std::basic_ostream<CharT, Traits>& os,
                                                       const offset_ptr& p) {
    return os << const_cast<const void*>(static_cast<const volatile void*>(p.get()));
  }

 private:
  void step(std::uint64_t bytes) noexcept {
    if (bytes == 0) return;  // null + 0 stays null (an empty vector's begin() + size())
#if MAPHEAP_CHECKED
    T* const want = reinterpret_cast<T*>(reinterpret_cast<std::uintptr_t>(get()) + bytes);
#endif
    off_ = static_cast<std::ptrdiff_t>(static_cast<std::uint64_t>(off_) + bytes);
#if MAPHEAP_CHECKED
    if (off_ == null_offset) detail::offset_ptr_unrepresentable(this);
    if (get() != want) detail::offset_ptr_too_far(this, want);
#endif
  }
  void set(T* p) noexcept {
    if (p == nullptr) {
      off_ = null_offset;
      return;
    }
    const auto d = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(p) -
                                             reinterpret_cast<std::uintptr_t>(this));
    off_ = detail::offset_encode(d);
#if MAPHEAP_CHECKED
    if (off_ == null_offset) detail::offset_ptr_unrepresentable(this);
    if (!detail::offset_tagged(static_cast<std::uint64_t>(off_))) detail::offset_ptr_too_far(this, p);
#endif
  }

  std::ptrdiff_t off_ = null_offset;
};

// ---- arithmetic: templates on the integer type, so that they are exact
// matches and win over the built-in pointer operators (see operator T*).
template <class T, std::integral I>
  requires std::is_object_v<T>
offset_ptr<T> operator+(const offset_ptr<T>& p, I n) noexcept {
  return offset_ptr<T>(p.get() + n);
}
template <class T, std::integral I>
  requires std::is_object_v<T>
offset_ptr<T> operator+(I n, const offset_ptr<T>& p) noexcept {
  return offset_ptr<T>(p.get() + n);
}
template <class T, std::integral I>
  requires std::is_object_v<T>
offset_ptr<T> operator-(const offset_ptr<T>& p, I n) noexcept {
  return offset_ptr<T>(p.get() - n);
}
// Differences between offset_ptr<T>, offset_ptr<const T> and raw pointers.
template <class T, class U>
  requires std::is_object_v<T> && std::is_same_v<std::remove_cv_t<T>, std::remove_cv_t<U>>
std::ptrdiff_t operator-(const offset_ptr<T>& a, const offset_ptr<U>& b) noexcept {
  return a.get() - b.get();
}
template <class T, class U>
  requires std::is_object_v<T> && std::is_same_v<std::remove_cv_t<T>, std::remove_cv_t<U>>
std::ptrdiff_t operator-(const offset_ptr<T>& a, U* b) noexcept {
  return a.get() - b;
}
template <class T, class U>
  requires std::is_object_v<T> && std::is_same_v<std::remove_cv_t<T>, std::remove_cv_t<U>>
std::ptrdiff_t operator-(U* a, const offset_ptr<T>& b) noexcept {
  return a - b.get();
}

// ---- comparisons: by target address, across offset_ptr<T>, offset_ptr<U>, U* and nullptr.
template <class T, class U>
  requires std::three_way_comparable_with<T*, U*>
bool operator==(const offset_ptr<T>& a, const offset_ptr<U>& b) noexcept {
  return a.get() == b.get();
}
template <class T, class U>
  requires std::three_way_comparable_with<T*, U*>
std::strong_ordering operator<=>(const offset_ptr<T>& a, const offset_ptr<U>& b) noexcept {
  return std::compare_three_way{}(a.get(), b.get());
}
template <class T, class U>
  requires std::three_way_comparable_with<T*, U*>
bool operator==(const offset_ptr<T>& a, U* b) noexcept {
  return a.get() == b;
}
template <class T, class U>
  requires std::three_way_comparable_with<T*, U*>
std::strong_ordering operator<=>(const offset_ptr<T>& a, U* b) noexcept {
  return std::compare_three_way{}(a.get(), b);
}
template <class T>
bool operator==(const offset_ptr<T>& a, std::nullptr_t) noexcept {
  return !a;
}
template <class T>
std::strong_ordering operator<=>(const offset_ptr<T>& a, std::nullptr_t) noexcept {
  return std::compare_three_way{}(a.get(), static_cast<T*>(nullptr));
}

// ---- casts, as for std::shared_ptr (found by argument-dependent lookup)
template <class T, class U>
offset_ptr<T> static_pointer_cast(const offset_ptr<U>& p) noexcept {
  return offset_ptr<T>(static_cast<T*>(p.get()));
}
template <class T, class U>
offset_ptr<T> const_pointer_cast(const offset_ptr<U>& p) noexcept {
  return offset_ptr<T>(const_cast<T*>(p.get()));
}
template <class T, class U>
offset_ptr<T> dynamic_pointer_cast(const offset_ptr<U>& p) noexcept {
  return offset_ptr<T>(dynamic_cast<T*>(p.get()));
}
template <class T, class U>
offset_ptr<T> reinterpret_pointer_cast(const offset_ptr<U>& p) noexcept {
  return offset_ptr<T>(reinterpret_cast<T*>(p.get()));
}

static_assert(sizeof(offset_ptr<int>) == sizeof(std::ptrdiff_t));
static_assert(std::is_standard_layout_v<offset_ptr<int>>);

}  // namespace mapheap

template <class T>
struct std::hash<mapheap::offset_ptr<T>> {
  std::size_t operator()(const mapheap::offset_ptr<T>& p) const noexcept {
    return std::hash<T*>{}(p.get());
  }
};
