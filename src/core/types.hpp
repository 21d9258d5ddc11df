// core/types.hpp — quantities with types: a count of pages, a page's index in
// a region, a buddy order. They are not interchangeable size_t's: mixing a
// page count with a byte count is the classic allocator bug, and here it does
// not compile.
#pragma once

#include <bit>
#include <compare>
#include <cstdint>
#include <limits>

namespace mapheap::core {

// A number of OS pages.
struct Pages {
  std::uint64_t n = 0;
  constexpr Pages() = default;
  constexpr explicit Pages(std::uint64_t v) : n(v) {}
  friend constexpr auto operator<=>(Pages, Pages) = default;
  constexpr Pages operator+(Pages o) const { return Pages(n + o.n); }
  constexpr Pages operator-(Pages o) const { return Pages(n - o.n); }
};

// The index of a page from the start of a region. 32 bits: a region holds at
// most 2^32 - 1 pages (16 TiB of 4 KiB pages). Stored in mappings, so it is an
// index, never a pointer.
struct PageIndex {
  std::uint32_t i = kNone;
  static constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
  constexpr PageIndex() = default;
  constexpr explicit PageIndex(std::uint32_t v) : i(v) {}
  constexpr bool valid() const { return i != kNone; }
  friend constexpr auto operator<=>(PageIndex, PageIndex) = default;
  constexpr PageIndex operator+(Pages p) const {
    return PageIndex(static_cast<std::uint32_t>(i + p.n));
  }
};
inline constexpr PageIndex kNoPage{};

// A buddy order: a block of order k is 2^k pages, aligned to 2^k pages.
struct Order {
  std::uint8_t k = 0;
  constexpr Order() = default;
  constexpr explicit Order(unsigned v) : k(static_cast<std::uint8_t>(v)) {}
  friend constexpr auto operator<=>(Order, Order) = default;
  constexpr Pages pages() const { return Pages(std::uint64_t{1} << k); }
};

// The smallest order whose block holds `p` pages. REQUIRES: p.n >= 1.
constexpr Order order_for(Pages p) {
  return Order(p.n <= 1 ? 0u : static_cast<unsigned>(std::bit_width(p.n - 1)));
}

// The largest order whose block fits in `p` pages. REQUIRES: p.n >= 1.
constexpr Order order_within(Pages p) {
  return Order(static_cast<unsigned>(std::bit_width(p.n) - 1));
}

}  // namespace mapheap::core
