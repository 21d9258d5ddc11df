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
// Encoding: a non-null offset_ptr stores `target - this` in bytes plus a
// constant tag, detail::kOffsetTag (0xF7C3 << 48), which marks the word as an
// offset_ptr and makes it negative as a signed integer. Any word whose sign
// bit is clear is null; a new null stores null_offset (2^62). Every distance
// is representable, 0 included (a pointer to the offset_ptr itself, which
// node-based containers need: an empty circular list's header points to
// itself).
//
// Copying an offset_ptr copies the target, not the stored word: the copy
// constructor and assignment add the distance from the source to the copy.
// The same add applies to a null word, which moves it by less than 2^47 and
// keeps it far from the sign bit, so a copy needs no test for null: one load,
// one add, one store. (Between any two places in one process the distance is
// under 2^47, and a null word copied through any chain of copies, in any
// processes, stays within 2^48 of null_offset: the distances telescope to
// the one from its first place to its last, the parts inside a mapping being
// the same in every process. A block memcpy'd elsewhere moves its nulls by
// as far as it moved: about 2^15 moves of 2^47 bytes each, all one way,
// would be needed to reach the sign bit or zero.) So offset_ptr is not
// trivially copyable and must not be memcpy'd on its own; copying a whole
// block that holds both the pointer and its target (memcpy, another mapping)
// keeps the pointer pointing into the copy. Memory that is merely zeroed
// reads as null, but construct offset_ptrs rather than conjure them from
// bytes.
//
// The fast paths of std::vector<T, allocator<T>> come out free of tests:
// `v[i]` is one add to the stored word and a dereference (no null test: a null
// pointer may not be dereferenced), `++p` and `p += n` are one add. get(),
// `->`, comparisons and differences test for null (one sign test each).
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
// In MAPHEAP_CHECKED builds, dereferencing a null offset_ptr, arithmetic on
// one (but for adding 0) and a stored word that is neither null nor tagged
// (memory that never held an offset_ptr) abort with a message.
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

[[noreturn]] inline void offset_ptr_misuse(const void* self, const char* what) noexcept {
  std::fprintf(stderr, "mapheap: offset_ptr at %p: %s\n", self, what);
  std::abort();
}

// The stored word of a non-null offset_ptr: the distance plus a tag,
// 0xF7C3 << 48 (any two user-space addresses are less than 2^47 apart, so the
// word's top 16 bits are the tag or one below it, and its sign bit is set).
// One add to encode and one subtract to decode, as cheap as the bare
// distance. The tag lets a reachability sweep (MappedHeap::gc) tell an
// offset_ptr from an integer that happens to be a plausible distance: without
// it, every small count in a block "points" at a neighbouring block.
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
// The address `self` + the stored word's distance. GCC's points-to analysis
// follows integers computed from pointers: without the empty asm it takes the
// result to point into *self (the 8-byte offset_ptr, or a temporary copy of
// it on the stack) and may drop or reorder stores through it as stores to a
// dead temporary (a vector's elements came out as zeros at -O3). The asm
// costs no instruction: it only hides where the number came from. (Boost's
// offset_ptr.hpp warns of the same hazard.)
inline void* offset_address(const void* self, std::ptrdiff_t stored) noexcept {
  std::uintptr_t a = reinterpret_cast<std::uintptr_t>(self) +
                     static_cast<std::uintptr_t>(offset_distance(stored));
  asm("" : "+r"(a));
  return reinterpret_cast<void*>(a);
}
// Null is any word with the sign bit clear (see the encoding above).
constexpr bool offset_is_null(std::ptrdiff_t stored) noexcept { return stored >= 0; }
inline constexpr std::ptrdiff_t kOffsetNull = std::ptrdiff_t{1} << 62;
// U* converts to T* implicitly and without changing the address:
// cv-qualification added, or T is void.
template <class U, class T>
inline constexpr bool offset_ptr_same_address_v =
    std::is_convertible_v<U*, T*> &&
    (std::is_same_v<std::remove_cv_t<U>, std::remove_cv_t<T>> || std::is_void_v<T>);

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

  // The word a new null offset_ptr stores (see the encoding above); a copied
  // null stores a word near it. Test for null with is_null_word.
  static constexpr std::ptrdiff_t null_offset = detail::kOffsetNull;

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
  offset_ptr(const offset_ptr& o) noexcept { copy_word(o); }
  // offset_ptr<T> -> offset_ptr<const T>, -> offset_ptr<void>: the same
  // address, so the word is copied as by the copy constructor.
  template <class U>
    requires(!std::is_same_v<U, T> && detail::offset_ptr_same_address_v<U, T>)
  offset_ptr(const offset_ptr<U>& o) noexcept {  // NOLINT: implicit like T*
    copy_word(o);
  }
  // offset_ptr<Derived> -> offset_ptr<Base>: the address may change.
  template <class U>
    requires(!detail::offset_ptr_same_address_v<U, T> && std::is_convertible_v<U*, T*>)
  offset_ptr(const offset_ptr<U>& o) noexcept : offset_ptr(static_cast<T*>(o.get())) {}  // NOLINT
  // What static_cast<T*> allows but no implicit conversion does: void -> T,
  // Base -> Derived. (The allocator requirements ask for
  // static_cast<pointer>(void_pointer).)
  template <class U>
    requires(!std::is_convertible_v<U*, T*> && requires(U* u) { static_cast<T*>(u); })
  explicit offset_ptr(const offset_ptr<U>& o) noexcept : offset_ptr(static_cast<T*>(o.get())) {}

  offset_ptr& operator=(const offset_ptr& o) noexcept {
    copy_word(o);
    return *this;
  }
  template <class U>
    requires std::is_convertible_v<U*, T*>
  offset_ptr& operator=(U* p) noexcept {
    set(p);
    return *this;
  }
  offset_ptr& operator=(std::nullptr_t) noexcept {
    store(null_offset);
    return *this;
  }
  template <class U>
    requires(!std::is_same_v<U, T> && std::is_convertible_v<U*, T*>)
  offset_ptr& operator=(const offset_ptr<U>& o) noexcept {
    set(static_cast<T*>(o.get()));
    return *this;
  }
  ~offset_ptr() = default;

  // The target's address in this process: one sign test and one add.
  T* get() const noexcept { return detail::offset_is_null(word()) ? nullptr : target(); }
  // The stored word (see the encoding above): for code that follows
  // offset_ptrs by reading a mapping's words (a reachability sweep).
  std::ptrdiff_t stored_offset() const noexcept { return word(); }
  // Whether a stored word is null.
  static constexpr bool is_null_word(std::ptrdiff_t word) noexcept {
    return detail::offset_is_null(word);
  }
  // Whether a word read from a mapping has a non-null offset_ptr's tag.
  static bool is_encoded(std::uint64_t word) noexcept { return detail::offset_tagged(word); }
  // The target an offset_ptr found at `self` with stored word `off` refers to.
  static const void* decode(const void* self, std::ptrdiff_t off) noexcept {
    if (detail::offset_is_null(off)) return nullptr;
    return detail::offset_address(self, off);
  }

  explicit operator bool() const noexcept { return !detail::offset_is_null(word()); }
  bool operator!() const noexcept { return detail::offset_is_null(word()); }
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
  // Dereferencing needs no null test (a null pointer may not be dereferenced).
  std::add_lvalue_reference_t<T> operator*() const noexcept
    requires(!std::is_void_v<T>)
  {
    return *checked_target();
  }
  template <std::integral I>
    requires std::is_object_v<T>
  std::add_lvalue_reference_t<T> operator[](I i) const noexcept {
    return checked_target()[i];
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
  // Moving the target moves the stored word by as much: one add, no decoding
  // and no test (arithmetic on a null pointer, but for adding 0, is undefined,
  // as for T*; adding 0 to a null word leaves it null).
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
  template <class U>
  friend class offset_ptr;

  // The target, assuming non-null.
  T* target() const noexcept {
    return static_cast<T*>(detail::offset_address(this, word()));
  }
  T* checked_target() const noexcept {
#if MAPHEAP_CHECKED
    check_word();
    if (detail::offset_is_null(word()))
      detail::offset_ptr_misuse(this, "dereferencing a null offset_ptr");
#endif
    return target();
  }
  // The word of `o` seen from here: the same target (or null), with no test.
  template <class U>
  void copy_word(const offset_ptr<U>& o) noexcept {
#if MAPHEAP_CHECKED
    o.check_word();
#endif
    store(static_cast<std::ptrdiff_t>(static_cast<std::uint64_t>(o.word()) +
                                      (reinterpret_cast<std::uintptr_t>(&o) -
                                       reinterpret_cast<std::uintptr_t>(this))));
  }
#if MAPHEAP_CHECKED
  // A word that is neither null nor tagged never came from an offset_ptr.
  void check_word() const noexcept {
    const std::ptrdiff_t w = word();
    if (!detail::offset_is_null(w) && !detail::offset_tagged(static_cast<std::uint64_t>(w)))
      detail::offset_ptr_misuse(this,
                                "the stored word is not an offset_ptr's (uninitialized or corrupt)");
  }
#endif
  void step(std::uint64_t bytes) noexcept {
#if MAPHEAP_CHECKED
    check_word();
    if (bytes != 0 && detail::offset_is_null(word()))
      detail::offset_ptr_misuse(this, "arithmetic on a null offset_ptr");
    T* const want = reinterpret_cast<T*>(reinterpret_cast<std::uintptr_t>(get()) + bytes);
#endif
    store(static_cast<std::ptrdiff_t>(static_cast<std::uint64_t>(word()) + bytes));
#if MAPHEAP_CHECKED
    if (get() != want) detail::offset_ptr_too_far(this, want);
#endif
  }
  void set(T* p) noexcept {
    if (p == nullptr) {
      store(null_offset);
      return;
    }
    const auto d = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(p) -
                                             reinterpret_cast<std::uintptr_t>(this));
    store(detail::offset_encode(d));
#if MAPHEAP_CHECKED
    if (!detail::offset_tagged(static_cast<std::uint64_t>(word()))) detail::offset_ptr_too_far(this, p);
#endif
  }

  // The word is read and written as bytes (a memcpy the compiler turns into
  // one load or store that may alias anything). Containers type-pun their
  // iterators: boost::container::flat_map copies its tree's iterator as its
  // own through a reinterpret_cast (dtl::force_copy), so one word is written
  // as a member of offset_ptr<A> and read as a member of offset_ptr<B>; with
  // plain member accesses GCC's type-based alias analysis took the two for
  // different objects and read the word before the write (end() came out
  // equal to begin() at -O2). Memory accesses of character type alias
  // everything, so the order of the program holds.
  std::ptrdiff_t word() const noexcept {
    std::ptrdiff_t w;
    __builtin_memcpy(&w, &off_, sizeof w);
    return w;
  }
  void store(std::ptrdiff_t w) noexcept { __builtin_memcpy(&off_, &w, sizeof w); }

  std::ptrdiff_t off_ = null_offset;
};

// ---- arithmetic: templates on the integer type, so that they are exact
// matches and win over the built-in pointer operators (see operator T*).
// A copy moved: no decoding, no test, so `*(p + n)` is p's word plus n.
template <class T, std::integral I>
  requires std::is_object_v<T>
offset_ptr<T> operator+(const offset_ptr<T>& p, I n) noexcept {
  offset_ptr<T> r(p);
  r += static_cast<std::ptrdiff_t>(n);
  return r;
}
template <class T, std::integral I>
  requires std::is_object_v<T>
offset_ptr<T> operator+(I n, const offset_ptr<T>& p) noexcept {
  return p + n;
}
template <class T, std::integral I>
  requires std::is_object_v<T>
offset_ptr<T> operator-(const offset_ptr<T>& p, I n) noexcept {
  offset_ptr<T> r(p);
  r -= static_cast<std::ptrdiff_t>(n);
  return r;
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
