// tools/mapheap/measure.hpp — the summaries every benchmark here reports:
// medians of repetitions and geometric means of ratios.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace mapheap::cli {

inline double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

inline std::uint64_t median_u64(std::vector<std::uint64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Of the positive, finite values; NaN if there are none.
inline double geomean(const std::vector<double>& v) {
  double log_sum = 0;
  std::size_t n = 0;
  for (double x : v) {
    if (!(x > 0) || !std::isfinite(x)) continue;
    log_sum += std::log(x);
    ++n;
  }
  return n == 0 ? std::nan("") : std::exp(log_sum / static_cast<double>(n));
}

}  // namespace mapheap::cli
