// slab/size_class.cpp — the text rendering of the size-class table (for the
// CLI's slab report and docs/design/engine.md). The table itself is built at
// compile time in size_class.hpp.
#include "slab/size_class.hpp"

#include "pal/error.hpp"

namespace mapheap::slab {

std::size_t format_table(char* buf, std::size_t cap, const RunTable& runs) noexcept {
  if (cap > 0) buf[0] = '\0';
  pal::TextOut out{buf, cap};
  if (const char* why = check_runs(runs)) {
    out.printf("size classes: bad run table for %u-byte pages: %s\n", runs.page_size, why);
    return out.len;
  }
  out.printf("# page %u bytes; waste: the most a request of this class leaves unused\n",
             runs.page_size);
  out.printf("# class   size  pages  objects   tail  tail%%  waste  waste%%\n");
  for (unsigned c = 0; c < kClassCount; ++c) {
    const unsigned size = kClasses.size[c];
    const unsigned smallest = c == 0 ? 1u : kClasses.size[c - 1] + 1u;  // worst request
    const unsigned run = runs.pages[c] * runs.page_size;
    // Tenths of a percent, in integers: no floating point (snprintf of a
    // double may allocate in some C libraries).
    const unsigned tail_pm = runs.tail[c] * 1000u / run;
    const unsigned waste_pm = (size - smallest) * 1000u / smallest;
    out.printf("%7u %6u %6u %8u %6u %4u.%u %6u %5u.%u\n", c, size,
               static_cast<unsigned>(runs.pages[c]), static_cast<unsigned>(runs.objects[c]),
               static_cast<unsigned>(runs.tail[c]), tail_pm / 10, tail_pm % 10, size - smallest,
               waste_pm / 10, waste_pm % 10);
  }
  return out.len;
}

}  // namespace mapheap::slab
