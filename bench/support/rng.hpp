// bench/support/rng.hpp — xorshift64*: one fast, seeded sequence that every
// contender of a benchmark sees the same (plain C++: the malloc workloads
// link nothing of mapheap).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace mapheap::bench {

struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
  std::size_t between(std::size_t lo, std::size_t hi) { return lo + below(hi - lo + 1); }
  double unit() { return static_cast<double>(next() >> 11) * 0x1p-53; }  // [0, 1)
};

}  // namespace mapheap::bench
