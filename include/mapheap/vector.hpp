// mapheap/vector.hpp — vector<T>: a sequence container for mapped heaps.
//
//   auto h = mapheap::MappedHeap::open(mapheap::HeapOptions::shm("/graph"));
//   using Row = mapheap::vector<std::uint32_t>;
//   auto* rows = h.find_or_construct<mapheap::vector<Row>>("rows")(h);
//   rows->emplace_back(h).push_back(42);  // the row gets the heap's allocator
//
// The interface is std::vector's. What differs is inside: std::vector with
// an allocator whose pointer is offset_ptr (libstdc++'s) works through that
// pointer everywhere — every push_back compares two offset_ptrs and steps
// one, every growth moves the elements one at a time through offset_ptr
// iterators (libstdc++ relocates with memmove only for std::allocator), and
// each step decodes a self-relative word. This vector keeps the same
// self-relative pointer to its storage (so it is valid in every process that
// maps the heap, at any address, and in the file after the heap closes) but
// decodes it once per operation and works with plain pointers; growth of a
// trivially copyable T is one memcpy. Building 2^20 vectors of 2^24
// uint32_t in a shm heap takes about the time std::vector on glibc malloc
// takes, where std::vector with allocator<T> takes 1.15-1.2 times as long
// (docs/BENCHMARKS.md).
//
// Iterators are plain pointers: like any pointer into a mapping they are
// valid in the process that made them, while the heap stays open. What is
// stored in the heap (the storage pointer, the size, the capacity, the
// allocator) is position-independent.
//
// Growth doubles the capacity (as libstdc++ does), from at least 4 elements
// (8 of a byte; 1 above 1 KiB) as Rust's Vec, and every allocation that may
// take more (growth, reserve) takes all of its size class, which the
// allocator reports (allocator<T>::allocate_at_least): a vector of uint32_t
// grown by push_back reallocates at 4, 8, 16, ... elements, where
// std::vector does at 1, 2, 4, 8, 16. shrink_to_fit allocates exactly
// size() elements. Insertion at the end has
// the strong exception guarantee when T's move constructor cannot throw or T
// is copyable (as std::vector's); insertion elsewhere, the basic one.
// Allocators propagate as their allocator_traits say; a vector in heap A
// assigned from one in heap B copies the elements into A. Swapping vectors
// of allocators that compare unequal and do not propagate (two heaps) moves
// the elements across, where std::vector's swap would be undefined.
//
// In MAPHEAP_CHECKED builds, an index or a pop past the end, and a size
// larger than the capacity read from the heap, abort with a message.
#pragma once

#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "mapheap/allocator.hpp"

namespace mapheap {

namespace detail {

[[noreturn]] inline void vector_misuse(const void* self, const char* what) noexcept {
  std::fprintf(stderr, "mapheap: vector at %p: %s\n", self, what);
  std::abort();
}

// <=> where T has it, else < both ways (the standard's synth-three-way).
struct synth_three_way {
  template <class T>
  auto operator()(const T& a, const T& b) const {
    if constexpr (std::three_way_comparable<T>) {
      return a <=> b;
    } else {
      if (a < b) return std::weak_ordering::less;
      if (b < a) return std::weak_ordering::greater;
      return std::weak_ordering::equivalent;
    }
  }
};

}  // namespace detail

template <class T, class Alloc = allocator<T>>
class vector {
  using traits = std::allocator_traits<Alloc>;
  static_assert(std::is_same_v<typename traits::value_type, T>,
                "mapheap::vector: the allocator's value_type must be T");

 public:
  using value_type = T;
  using allocator_type = Alloc;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using reference = T&;
  using const_reference = const T&;
  using pointer = typename traits::pointer;
  using const_pointer = typename traits::const_pointer;
  using iterator = T*;
  using const_iterator = const T*;
  using reverse_iterator = std::reverse_iterator<iterator>;
  using const_reverse_iterator = std::reverse_iterator<const_iterator>;

  // ---- construction, assignment, destruction

  vector() noexcept(std::is_nothrow_default_constructible_v<Alloc>)
    requires std::default_initializable<Alloc>
      : alloc_() {}
  explicit vector(const Alloc& a) noexcept : alloc_(a) {}
  // A constructor that throws has no destructor run: each frees what it
  // built before passing the exception on (built_or_released).
  explicit vector(size_type n, const Alloc& a = Alloc()) : alloc_(a) {
    built_or_released([&] { resize(n); });
  }
  vector(size_type n, const T& value, const Alloc& a = Alloc()) : alloc_(a) {
    built_or_released([&] { assign(n, value); });
  }
  template <std::input_iterator It>
  vector(It first, It last, const Alloc& a = Alloc()) : alloc_(a) {
    built_or_released([&] { assign(first, last); });
  }
  vector(std::initializer_list<T> il, const Alloc& a = Alloc()) : alloc_(a) {
    built_or_released([&] { assign(il); });
  }
  vector(const vector& o) : alloc_(traits::select_on_container_copy_construction(o.alloc_)) {
    built_or_released([&] { assign(o.begin(), o.end()); });
  }
  vector(const vector& o, const std::type_identity_t<Alloc>& a) : alloc_(a) {
    built_or_released([&] { assign(o.begin(), o.end()); });
  }
  vector(vector&& o) noexcept : alloc_(std::move(o.alloc_)) { steal(o); }
  vector(vector&& o, const std::type_identity_t<Alloc>& a) : alloc_(a) {
    if (alloc_ == o.alloc_) {
      steal(o);
    } else {
      built_or_released([&] {
        reserve(o.size());
        for (T& x : o) emplace_back_unchecked(std::move(x));
      });
      o.clear();
    }
  }
  ~vector() { release(); }

  vector& operator=(const vector& o) {
    if (this == &o) return *this;
    if constexpr (traits::propagate_on_container_copy_assignment::value) {
      if (alloc_ != o.alloc_) release();  // the old storage goes back to the old allocator
      alloc_ = o.alloc_;
    }
    assign(o.begin(), o.end());
    return *this;
  }
  vector& operator=(vector&& o) noexcept(traits::propagate_on_container_move_assignment::value ||
                                         traits::is_always_equal::value) {
    if (this == &o) return *this;
    if constexpr (traits::propagate_on_container_move_assignment::value) {
      release();
      alloc_ = std::move(o.alloc_);
      steal(o);
    } else {
      if (alloc_ == o.alloc_) {
        release();
        steal(o);
      } else {  // the elements move into this vector's heap
        assign(std::make_move_iterator(o.begin()), std::make_move_iterator(o.end()));
        o.clear();
      }
    }
    return *this;
  }
  vector& operator=(std::initializer_list<T> il) {
    assign(il);
    return *this;
  }

  void assign(size_type n, const T& value) {
    if (n > capacity()) {
      vector tmp(alloc_);  // value may be one of ours: copy before releasing
      tmp.reserve(n);
      for (size_type i = 0; i < n; ++i) tmp.emplace_back_unchecked(value);
      swap_storage(tmp);
      return;
    }
    T* p = raw();
    const size_type common = std::min(n, size_);
    std::fill(p, p + common, value);
    if (n > size_) {
      for (size_type i = size_; i < n; ++i) emplace_back_unchecked(value);
    } else {
      destroy_tail(n);
    }
  }
  template <std::input_iterator It>
  void assign(It first, It last) {
    if constexpr (std::forward_iterator<It>) {
      const auto n = static_cast<size_type>(std::distance(first, last));
      if (n > capacity()) {
        vector tmp(alloc_);
        tmp.reserve(n);
        for (; first != last; ++first) tmp.emplace_back_unchecked(*first);
        swap_storage(tmp);
        return;
      }
      T* p = raw();
      size_type i = 0;
      for (; i < size_ && first != last; ++i, ++first) p[i] = *first;
      if (first != last) {
        for (; first != last; ++first) emplace_back_unchecked(*first);
      } else {
        destroy_tail(i);
      }
    } else {
      clear();
      for (; first != last; ++first) emplace_back(*first);
    }
  }
  void assign(std::initializer_list<T> il) { assign(il.begin(), il.end()); }

  allocator_type get_allocator() const noexcept { return alloc_; }

  // ---- element access

  reference at(size_type i) {
    if (i >= size()) throw std::out_of_range("mapheap::vector::at: index out of range");
    return raw()[i];
  }
  const_reference at(size_type i) const {
    if (i >= size()) throw std::out_of_range("mapheap::vector::at: index out of range");
    return raw()[i];
  }
  reference operator[](size_type i) noexcept {
    check_index(i);
    return raw()[i];
  }
  const_reference operator[](size_type i) const noexcept {
    check_index(i);
    return raw()[i];
  }
  reference front() noexcept { return (*this)[0]; }
  const_reference front() const noexcept { return (*this)[0]; }
  reference back() noexcept { return (*this)[size_ - 1]; }
  const_reference back() const noexcept { return (*this)[size_ - 1]; }
  T* data() noexcept { return raw(); }
  const T* data() const noexcept { return raw(); }

  // ---- iterators

  iterator begin() noexcept { return raw(); }
  const_iterator begin() const noexcept { return raw(); }
  const_iterator cbegin() const noexcept { return raw(); }
  iterator end() noexcept { return raw() + size(); }
  const_iterator end() const noexcept { return raw() + size(); }
  const_iterator cend() const noexcept { return end(); }
  reverse_iterator rbegin() noexcept { return reverse_iterator(end()); }
  const_reverse_iterator rbegin() const noexcept { return const_reverse_iterator(end()); }
  const_reverse_iterator crbegin() const noexcept { return rbegin(); }
  reverse_iterator rend() noexcept { return reverse_iterator(begin()); }
  const_reverse_iterator rend() const noexcept { return const_reverse_iterator(begin()); }
  const_reverse_iterator crend() const noexcept { return rend(); }

  // ---- capacity

  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  size_type size() const noexcept { return size_; }
  size_type capacity() const noexcept { return cap_; }
  size_type max_size() const noexcept {
    return std::min<size_type>(traits::max_size(alloc_),
                               static_cast<size_type>(std::numeric_limits<difference_type>::max()) / sizeof(T));
  }
  void reserve(size_type n) {
    if (n > max_size()) throw std::length_error("mapheap::vector::reserve: more than max_size()");
    if (n > cap_) reallocate(n);
  }
  void shrink_to_fit() {
    if (size_ == cap_) return;
    if (size_ == 0) {
      release();
      return;
    }
    (void)regrow<false, true>(size_);  // exactly: capacity() == size() after it
  }

  // ---- modifiers

  void clear() noexcept { destroy_tail(0); }

  template <class... Args>
  reference emplace_back(Args&&... args) {
    if (size_ == cap_) [[unlikely]]
      return grow_and_emplace_back(std::forward<Args>(args)...);
    return emplace_back_unchecked(std::forward<Args>(args)...);
  }
  void push_back(const T& x) { emplace_back(x); }
  void push_back(T&& x) { emplace_back(std::move(x)); }
  void pop_back() noexcept {
#if MAPHEAP_CHECKED
    if (size_ == 0) detail::vector_misuse(this, "pop_back on an empty vector");
#endif
    destroy_tail(size_ - 1);
  }

  template <class... Args>
  iterator emplace(const_iterator pos, Args&&... args) {
    const size_type at = index_of(pos);
    if (at == size_) {
      emplace_back(std::forward<Args>(args)...);
      return raw() + at;
    }
    // The new element first, in storage of its own (args may refer to an
    // element that the shift below moves), then moved into place.
    value_holder v(alloc_, std::forward<Args>(args)...);
    make_room(1);
    T* p = raw();
    emplace_back_unchecked(std::move(p[size_ - 1]));
    std::move_backward(p + at, p + size_ - 2, p + size_ - 1);
    p[at] = std::move(v.get());
    return p + at;
  }
  iterator insert(const_iterator pos, const T& x) { return emplace(pos, x); }
  iterator insert(const_iterator pos, T&& x) { return emplace(pos, std::move(x)); }
  iterator insert(const_iterator pos, size_type n, const T& x) {
    const size_type at = index_of(pos);
    if (n == 0) return raw() + at;
    value_holder v(alloc_, x);  // x may be one of ours, and growth moves it
    make_room(n);
    for (size_type i = 0; i < n; ++i) emplace_back_unchecked(v.get());
    T* p = raw();
    std::rotate(p + at, p + size_ - n, p + size_);
    return p + at;
  }
  template <std::input_iterator It>
  iterator insert(const_iterator pos, It first, It last) {
    const size_type at = index_of(pos);
    const size_type old = size_;
    if constexpr (std::forward_iterator<It>) {
      make_room(static_cast<size_type>(std::distance(first, last)));
      for (; first != last; ++first) emplace_back_unchecked(*first);
    } else {
      for (; first != last; ++first) emplace_back(*first);
    }
    T* p = raw();
    std::rotate(p + at, p + old, p + size_);
    return p + at;
  }
  iterator insert(const_iterator pos, std::initializer_list<T> il) { return insert(pos, il.begin(), il.end()); }

  iterator erase(const_iterator pos) { return erase(pos, pos + 1); }
  iterator erase(const_iterator first, const_iterator last) {
    const size_type from = index_of(first);
    const size_type to = index_of(last);
    if (from > to) detail::vector_misuse(this, "erase of a range that ends before it begins");
    if (from == to) return raw() + from;
    T* p = raw();
    std::move(p + to, p + size_, p + from);
    destroy_tail(size_ - (to - from));
    return p + from;
  }

  void resize(size_type n) {
    if (n <= size_) {
      destroy_tail(n);
      return;
    }
    reserve(n);
    while (size_ < n) emplace_back_unchecked();
  }
  void resize(size_type n, const T& value) {
    if (n <= size_) {
      destroy_tail(n);
      return;
    }
    insert(end(), n - size_, value);  // which reads value before growing
  }

  void swap(vector& o) noexcept(traits::propagate_on_container_swap::value || traits::is_always_equal::value) {
    if (this == &o) return;
    if constexpr (traits::propagate_on_container_swap::value) {
      using std::swap;
      swap(alloc_, o.alloc_);
      swap_storage(o);
    } else {
      if (alloc_ == o.alloc_) {
        swap_storage(o);
      } else {  // two heaps: each keeps its own, the elements cross
        vector mine(std::move(*this), alloc_);
        *this = std::move(o);
        o = std::move(mine);
      }
    }
  }
  friend void swap(vector& a, vector& b) noexcept(noexcept(a.swap(b))) { a.swap(b); }

  // ---- comparison

  friend bool operator==(const vector& a, const vector& b)
    requires requires(const T& x) { x == x; }
  {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
  }
  friend auto operator<=>(const vector& a, const vector& b)
    requires requires(const T& x) { x < x; }
  {
    return std::lexicographical_compare_three_way(a.begin(), a.end(), b.begin(), b.end(),
                                                  detail::synth_three_way{});
  }

 private:
  // An element built in storage of its own from the allocator, for
  // insertions whose argument may be an element of this vector.
  class value_holder {
   public:
    template <class... Args>
    explicit value_holder(Alloc& a, Args&&... args) : alloc_(a) {
      traits::construct(alloc_, slot(), std::forward<Args>(args)...);
    }
    ~value_holder() { traits::destroy(alloc_, slot()); }
    value_holder(const value_holder&) = delete;
    value_holder& operator=(const value_holder&) = delete;
    T& get() noexcept { return *slot(); }

   private:
    T* slot() noexcept { return std::launder(reinterpret_cast<T*>(bytes_)); }
    Alloc& alloc_;
    alignas(T) unsigned char bytes_[sizeof(T)];
  };

  template <class F>
  void built_or_released(F&& build) {
    try {
      build();
    } catch (...) {
      release();
      throw;
    }
  }

  // The storage as a plain pointer, decoded once per operation.
  T* raw() const noexcept {
#if MAPHEAP_CHECKED
    if (size_ > cap_) detail::vector_misuse(this, "the size stored in the heap exceeds the capacity (corrupt)");
#endif
    if constexpr (std::is_pointer_v<pointer>) {
      return data_;
    } else {
      return data_ == nullptr ? nullptr : std::to_address(data_);
    }
  }
  void check_index([[maybe_unused]] size_type i) const noexcept {
#if MAPHEAP_CHECKED
    if (i >= size_) detail::vector_misuse(this, "index past the end");
#endif
  }
  size_type index_of(const_iterator pos) const noexcept {
    const auto d = pos - raw();
#if MAPHEAP_CHECKED
    if (d < 0 || static_cast<size_type>(d) > size_) detail::vector_misuse(this, "iterator outside the vector");
#endif
    return static_cast<size_type>(d);
  }

  template <class... Args>
  reference emplace_back_unchecked(Args&&... args) {
    T* p = raw() + size_;
    traits::construct(alloc_, p, std::forward<Args>(args)...);
    ++size_;
    return *p;
  }
  template <class... Args>
  [[gnu::noinline]] reference grow_and_emplace_back(Args&&... args) {
    return *regrow<true>(grown_capacity(1), std::forward<Args>(args)...);
  }
  void reallocate(size_type n) { (void)regrow<false>(n); }
  // Storage for at least n elements: all that the allocator's block holds
  // when the allocator says how much that is (allocate_at_least, as
  // mapheap::allocator does: the size class's bytes, which would otherwise
  // go unused until the next reallocation), exactly n otherwise or if kExact.
  struct storage {
    pointer ptr;
    size_type count;
  };
  template <bool kExact>
  storage allocate_storage(size_type n) {
    if constexpr (!kExact && requires(Alloc& a) { a.allocate_at_least(n); }) {
      auto got = alloc_.allocate_at_least(n);
      return {got.ptr, static_cast<size_type>(got.count)};
    } else {
      return {traits::allocate(alloc_, n), n};
    }
  }
  // Moves the elements into new storage of at least n (exactly n if
  // kExact); with kAppend, first builds one more element at the end of it
  // from args (so that an argument referring to an element of this vector
  // is read before the elements move) and returns it. If anything throws,
  // what was built is undone and *this is as it was.
  template <bool kAppend, bool kExact = false, class... Args>
  T* regrow(size_type n, Args&&... args) {
    const storage fresh = allocate_storage<kExact>(n);
    T* const q = std::to_address(fresh.ptr);
    bool appended = false;
    try {
      if constexpr (kAppend) {
        traits::construct(alloc_, q + size_, std::forward<Args>(args)...);
        appended = true;
      }
      move_into(q);
    } catch (...) {
      if (appended) traits::destroy(alloc_, q + size_);
      traits::deallocate(alloc_, fresh.ptr, fresh.count);
      throw;
    }
    const size_type old = size_;
    adopt(fresh.ptr, fresh.count, old + (kAppend ? 1 : 0));
    return q + old;
  }
  // The elements into fresh storage q: memcpy for trivially copyable T,
  // moves where they cannot throw (or T cannot be copied), copies otherwise;
  // what was built is undone if one throws.
  void move_into(T* q) {
    T* p = raw();
    if (size_ == 0) return;
    if constexpr (std::is_trivially_copyable_v<T>) {
      std::memcpy(static_cast<void*>(q), static_cast<const void*>(p), size_ * sizeof(T));
    } else {
      size_type i = 0;
      try {
        for (; i < size_; ++i) traits::construct(alloc_, q + i, std::move_if_noexcept(p[i]));
      } catch (...) {
        while (i > 0) traits::destroy(alloc_, q + --i);
        throw;
      }
    }
  }
  // Destroys and frees the old storage, takes the new.
  void adopt(pointer fresh, size_type n, size_type new_size) noexcept {
    T* p = raw();
    if constexpr (!std::is_trivially_destructible_v<T>) {
      for (size_type i = 0; i < size_; ++i) traits::destroy(alloc_, p + i);
    }
    if (cap_ != 0) traits::deallocate(alloc_, data_, cap_);
    data_ = fresh;
    cap_ = n;
    size_ = new_size;
  }
  // Room for `extra` more elements, growing as push_back does.
  void make_room(size_type extra) {
    if (cap_ - size_ < extra) reallocate(grown_capacity(extra));
  }
  // The first allocation of a vector that grows takes room for a few
  // elements, as Rust's Vec does (8 of a byte, 4 up to 1 KiB, else 1): one
  // grown from empty by push_back would otherwise reallocate at 1, 2 and 4
  // elements, each time a block to take, a copy and a block to free.
  static constexpr size_type kMinGrowth = sizeof(T) == 1 ? 8 : sizeof(T) <= 1024 ? 4 : 1;
  size_type grown_capacity(size_type extra) const {
    const size_type limit = max_size();
    if (limit - size_ < extra) throw std::length_error("mapheap::vector: more than max_size() elements");
    const size_type want = size_ + extra;
    const size_type doubled = size_ + std::max(size_, extra);  // as libstdc++ grows
    const size_type n = doubled < size_ || doubled > limit ? limit : doubled;
    return std::max({n, want, cap_, std::min(kMinGrowth, limit)});
  }
  void destroy_tail(size_type n) noexcept {
    if constexpr (!std::is_trivially_destructible_v<T>) {
      T* p = raw();
      for (size_type i = n; i < size_; ++i) traits::destroy(alloc_, p + i);
    }
    size_ = std::min(size_, n);
  }
  void release() noexcept {
    destroy_tail(0);
    if (cap_ != 0) traits::deallocate(alloc_, data_, cap_);
    data_ = nullptr;
    cap_ = 0;
  }
  void steal(vector& o) noexcept {
    data_ = o.data_;
    size_ = o.size_;
    cap_ = o.cap_;
    o.data_ = nullptr;
    o.size_ = o.cap_ = 0;
  }
  void swap_storage(vector& o) noexcept {
    pointer d = data_;
    data_ = o.data_;
    o.data_ = d;
    std::swap(size_, o.size_);
    std::swap(cap_, o.cap_);
  }

  [[no_unique_address]] Alloc alloc_;
  pointer data_ = nullptr;
  size_type size_ = 0;
  size_type cap_ = 0;
};

template <class T, class Alloc, class U>
typename vector<T, Alloc>::size_type erase(vector<T, Alloc>& v, const U& value) {
  const auto it = std::remove(v.begin(), v.end(), value);
  const auto n = static_cast<typename vector<T, Alloc>::size_type>(v.end() - it);
  v.erase(it, v.end());
  return n;
}
template <class T, class Alloc, class Pred>
typename vector<T, Alloc>::size_type erase_if(vector<T, Alloc>& v, Pred pred) {
  const auto it = std::remove_if(v.begin(), v.end(), pred);
  const auto n = static_cast<typename vector<T, Alloc>::size_type>(v.end() - it);
  v.erase(it, v.end());
  return n;
}

}  // namespace mapheap
