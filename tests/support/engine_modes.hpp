// tests/support/engine_modes.hpp — the cache modes an engine test runs in
// (per-CPU only where rseq is available) and their gtest names.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cache/engine.hpp"

namespace mapheap::test {

inline std::vector<cache::CacheMode> cache_modes() {
  std::vector<cache::CacheMode> v{cache::CacheMode::per_thread, cache::CacheMode::none};
  if (cache::rseq_available()) v.insert(v.begin(), cache::CacheMode::per_cpu);
  return v;
}

struct CacheModeName {
  std::string operator()(const ::testing::TestParamInfo<cache::CacheMode>& p) const {
    std::string s = cache::to_string(p.param);
    for (char& ch : s)
      if (ch == '-') ch = '_';
    return s;
  }
};

}  // namespace mapheap::test
