// Feeds arbitrary text to the smaps parser: /proc is the kernel's, but the
// parser must not trust its shape (a future kernel may add or reorder fields).
// Checks that totals only grow from VMAs inside the range.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "pal/pal.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 16) return 0;
  std::uintptr_t lo = 0, hi = 0;
  std::memcpy(&lo, data, 8);
  std::memcpy(&hi, data + 8, 8);
  data += 16;
  size -= 16;
  mapheap::pal::SmapsParser parser(lo, hi);
  std::size_t start = 0;
  for (std::size_t i = 0; i <= size; ++i) {
    if (i == size || data[i] == '\n') {
      parser.feed_line(reinterpret_cast<const char*>(data + start), i - start);
      start = i + 1;
    }
  }
  const auto& t = parser.totals();
  // An empty range can contain no VMA.
  if (lo >= hi && t.vmas != 0) std::abort();
  if (t.vmas == 0 && (t.rss != 0 || t.size != 0)) std::abort();
  return 0;
}
