// mapheap/allocator.hpp — allocator<T>: standard and Boost containers whose
// storage is in a MappedHeap and which are valid in every process that maps
// it; heap_resource: the same heap as a std::pmr::memory_resource, for one
// process only.
//
//   auto h = mapheap::MappedHeap::open(mapheap::HeapOptions::file("/data/names.heap"));
//   auto* names = h.find_or_construct<mapheap::vector<mapheap::string>>("names")(h);
//   names->emplace_back("a string long enough to live outside the object");
//
// allocator<T> hands out offset_ptr<T> (mapheap/offset_ptr.hpp), so a
// container placed in the heap stores only self-relative pointers, and it
// finds its heap through an offset_ptr to the heap's base: an allocator kept
// inside the mapping is valid wherever the mapping is. allocate() looks the
// base up among this process's open heaps (MappedHeap::of) and throws
// mapheap::error when none maps it — a container used after its heap closed.
//
// A container stays in its heap: copy and move assignment and swap do not
// propagate the allocator (a container in heap A assigned from one in heap B
// copies the elements into A, rather than pointing into B, which another
// process may not have mapped). Swapping containers of different heaps is
// undefined, as for any allocator that does not propagate.
//
// construct() passes the allocator on to elements that take one (uses-
// allocator construction, as std::pmr::polymorphic_allocator does): the
// strings of a mapheap::vector<mapheap::string>, and of the std::pairs of a
// std::map, are allocated in the same heap without a scoped_allocator_adaptor.
// Arguments that already construct the element without it (an allocator given
// explicitly, or by a scoped_allocator_adaptor) are passed unchanged.
// boost::container's map and flat_map construct a pair type of their own, not
// std::pair: give their mapped strings the allocator explicitly
// (m.emplace(k, mapheap::string(text, alloc))) or use
// boost::container::scoped_allocator_adaptor<allocator<...>>.
//
// deallocate() with no open heap mapping the allocator's heap aborts with a
// message (it is noexcept): destroy containers before closing their heap.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <memory_resource>
#include <new>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mapheap/error.hpp"
#include "mapheap/heap.hpp"
#include "mapheap/offset_ptr.hpp"

namespace mapheap {

namespace detail {

template <class T>
inline constexpr bool is_std_pair_v = false;
template <class A, class B>
inline constexpr bool is_std_pair_v<std::pair<A, B>> = true;

// The arguments that construct a T from args, with `alloc` added if T uses
// that allocator and can take it (std::uses_allocator_construction_args, but
// arguments that cannot take it more are kept as they are, not refused). A
// tuple of references into args, used before the full expression ends.
template <class T, class Alloc, class... Args>
constexpr auto allocator_construction_args(const Alloc& alloc, Args&&... args) {
  using U = std::remove_cv_t<T>;
  if constexpr (is_std_pair_v<U>) {
    using T1 = typename U::first_type;
    using T2 = typename U::second_type;
    auto piecewise = [&alloc](auto&& x, auto&& y) {
      return std::make_tuple(
          std::piecewise_construct,
          std::apply(
              [&alloc](auto&&... a) {
                return allocator_construction_args<T1>(alloc, std::forward<decltype(a)>(a)...);
              },
              std::forward<decltype(x)>(x)),
          std::apply(
              [&alloc](auto&&... a) {
                return allocator_construction_args<T2>(alloc, std::forward<decltype(a)>(a)...);
              },
              std::forward<decltype(y)>(y)));
    };
    if constexpr (sizeof...(Args) == 0) {
      return piecewise(std::tuple<>{}, std::tuple<>{});
    } else if constexpr (sizeof...(Args) == 3) {
      // (std::piecewise_construct, tuple x, tuple y)
      return [&](std::piecewise_construct_t, auto&& x, auto&& y) {
        return piecewise(std::forward<decltype(x)>(x), std::forward<decltype(y)>(y));
      }(std::forward<Args>(args)...);
    } else if constexpr (sizeof...(Args) == 2) {
      return [&](auto&& u, auto&& v) {
        return piecewise(std::forward_as_tuple(std::forward<decltype(u)>(u)),
                         std::forward_as_tuple(std::forward<decltype(v)>(v)));
      }(std::forward<Args>(args)...);
    } else if constexpr (sizeof...(Args) == 1 &&
                         (is_std_pair_v<std::remove_cvref_t<Args>> && ...)) {
      // Another pair, copied or moved member by member.
      return [&](auto&& pr) {
        return piecewise(std::forward_as_tuple(std::get<0>(std::forward<decltype(pr)>(pr))),
                         std::forward_as_tuple(std::get<1>(std::forward<decltype(pr)>(pr))));
      }(std::forward<Args>(args)...);
    } else {
      return std::forward_as_tuple(std::forward<Args>(args)...);
    }
  } else if constexpr (!std::uses_allocator_v<U, Alloc>) {
    return std::forward_as_tuple(std::forward<Args>(args)...);
  } else if constexpr (std::is_constructible_v<U, std::allocator_arg_t, const Alloc&, Args...>) {
    return std::tuple<std::allocator_arg_t, const Alloc&, Args&&...>(
        std::allocator_arg, alloc, std::forward<Args>(args)...);
  } else if constexpr (std::is_constructible_v<U, Args..., const Alloc&>) {
    return std::tuple<Args&&..., const Alloc&>(std::forward<Args>(args)..., alloc);
  } else {
    return std::forward_as_tuple(std::forward<Args>(args)...);
  }
}

// libstdc++'s node containers keep raw pointers in their nodes (std::list,
// std::map and std::set do not compile with offset_ptr; std::forward_list
// and std::unordered_* do, through std::to_address): such a container in a
// mapping is wrong in every other process. Their node types are refused by
// name, the only handle on them.
template <class T>
constexpr bool is_raw_pointer_node() noexcept {
  constexpr std::string_view name = type_name<T>();
  return name.starts_with("std::_Rb_tree_node<") || name.starts_with("std::_List_node<") ||
         name.starts_with("std::_Fwd_list_node<") ||
         name.starts_with("std::__detail::_Hash_node<") ||
         name.starts_with("std::__detail::_Hash_node_base");
}

[[noreturn]] inline void allocator_without_heap(const void* base, const void* p) noexcept {
  std::fprintf(stderr,
               "mapheap: allocator::deallocate(%p): no open MappedHeap in this process maps the "
               "allocator's heap (base %p); was the heap closed before the container was "
               "destroyed?\n",
               p, base);
  std::abort();
}

[[noreturn]] inline void throw_allocator_without_heap(const void* base) {
  char text[200];
  std::snprintf(text, sizeof text,
                "mapheap: allocator: no open MappedHeap in this process maps the allocator's "
                "heap (base %p); was it closed before a container that uses it?",
                base);
  throw error(EFAULT, text, {}, 0, "allocate");
}

}  // namespace detail

// What allocate_at_least returns: storage for `count` elements, at least
// the number asked for. C++23's std::allocation_result where the library
// has it (std::allocator_traits::allocate_at_least passes it on), the same
// two members otherwise.
#if defined(__cpp_lib_allocate_at_least) && __cpp_lib_allocate_at_least >= 202302L
template <class Pointer, class SizeType = std::size_t>
using allocation_result = std::allocation_result<Pointer, SizeType>;
#else
template <class Pointer, class SizeType = std::size_t>
struct allocation_result {
  Pointer ptr;
  SizeType count;
};
#endif

template <class T>
class allocator {
  static_assert(!detail::is_raw_pointer_node<T>(),
                "mapheap::allocator: this libstdc++ container keeps raw pointers in its nodes, "
                "wrong in every other process that maps the heap; use std::vector, "
                "std::deque, std::basic_string or boost::container's map, set, list, "
                "flat_map instead");

 public:
  using value_type = T;
  using pointer = offset_ptr<T>;
  using const_pointer = offset_ptr<const T>;
  using void_pointer = offset_ptr<void>;
  using const_void_pointer = offset_ptr<const void>;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  template <class U>
  struct rebind {
    using other = allocator<U>;
  };
  // A container stays in its heap (see the top of the file).
  using propagate_on_container_copy_assignment = std::false_type;
  using propagate_on_container_move_assignment = std::false_type;
  using propagate_on_container_swap = std::false_type;
  using is_always_equal = std::false_type;

  allocator(MappedHeap& heap) noexcept : base_(heap.base()) {}  // NOLINT: implicit by design
  allocator(const allocator& o) noexcept = default;  // offset_ptr's copy recomputes the distance
  template <class U>
  allocator(const allocator<U>& o) noexcept : base_(o.heap_base()) {}  // NOLINT
  allocator& operator=(const allocator&) noexcept = default;
  ~allocator() = default;

  // Throws std::bad_alloc when the heap is full, mapheap::error when no open
  // heap of this process maps the allocator's heap.
  [[nodiscard]] pointer allocate(size_type n) {
    if (n > max_size()) throw std::bad_array_new_length();
    void* p = heap().allocate(bytes_for(n), alignof(T));
    if (p == nullptr) throw std::bad_alloc();
    return pointer(static_cast<T*>(p));
  }
  // Storage for at least n elements: the whole of the block allocate(n)
  // would take (its size class), as C++23's allocate_at_least. count is
  // what deallocate must be given back. mapheap::vector grows by it.
  [[nodiscard]] allocation_result<pointer> allocate_at_least(size_type n) {
    const pointer p = allocate(n);
    const size_type fits = MappedHeap::good_size(bytes_for(n), alignof(T)) / sizeof(T);
    return {p, fits > n ? fits : n};
  }
  void deallocate(pointer p, size_type n) noexcept {
    if (!p) return;
    MappedHeap* h = MappedHeap::of(base_.get());
    if (h == nullptr) detail::allocator_without_heap(base_.get(), p.get());
    h->deallocate(p.get(), bytes_for(n), alignof(T));  // as allocate asked, up to its good size
  }
  size_type max_size() const noexcept {
    return std::numeric_limits<size_type>::max() / sizeof(T);
  }

  // Uses-allocator construction (see the top of the file).
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    std::apply(
        [p](auto&&... a) { ::new (static_cast<void*>(p)) U(std::forward<decltype(a)>(a)...); },
        detail::allocator_construction_args<U>(*this, std::forward<Args>(args)...));
  }

  // The heap's base in this process, and the open heap there (throws
  // mapheap::error if there is none).
  void* heap_base() const noexcept { return base_.get(); }
  MappedHeap& heap() const {
    MappedHeap* h = MappedHeap::of(base_.get());
    if (h == nullptr) detail::throw_allocator_without_heap(base_.get());
    return *h;
  }

 private:
  // What allocate(n) asks the heap for (a zero-length array takes a byte).
  // REQUIRES: n <= max_size().
  static constexpr size_type bytes_for(size_type n) noexcept { return n == 0 ? 1 : n * sizeof(T); }
  offset_ptr<void> base_;
};

// Equal when they allocate from the same heap.
template <class T, class U>
bool operator==(const allocator<T>& a, const allocator<U>& b) noexcept {
  return a.heap_base() == b.heap_base();
}

// The heap as a memory resource for std::pmr containers, in this process
// only: pmr containers store plain pointers (and a pointer to this resource),
// so one placed in the mapping is NOT valid in another process, nor after the
// heap is reopened. Use allocator<T> for anything another process reads.
// The MappedHeap must outlive the resource and must not be moved meanwhile.
class heap_resource final : public std::pmr::memory_resource {
 public:
  explicit heap_resource(MappedHeap& heap) noexcept : heap_(&heap) {}
  MappedHeap& heap() const noexcept { return *heap_; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    void* p = heap_->allocate(bytes == 0 ? 1 : bytes, align);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
    heap_->deallocate(p, bytes == 0 ? 1 : bytes, align);  // as do_allocate asked
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    const auto* o = dynamic_cast<const heap_resource*>(&other);
    return o != nullptr && o->heap_ == heap_;
  }

  MappedHeap* heap_;
};

// mapheap::vector<T> (mapheap/vector.hpp, included below) is the vector for
// heaps; std::vector<T, allocator<T>> works too, more slowly (see there).
using string = std::basic_string<char, std::char_traits<char>, allocator<char>>;

}  // namespace mapheap

#include "mapheap/vector.hpp"  // after allocator: mapheap::vector defaults to it
