// tests/support/page_cache.hpp — how much of a file is in the page cache.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <vector>

#include "pal/pal.hpp"

namespace mapheap::test {

// Pages of the file's first `len` bytes held in the page cache, via mincore on
// a fresh mapping (mapping does not fault anything in); SIZE_MAX on error.
inline std::size_t cached_pages(int fd, std::size_t len) {
  void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ~std::size_t{0};
  const std::size_t page = pal::page_size();
  std::vector<unsigned char> vec((len + page - 1) / page);
  std::size_t n = 0;
  if (::mincore(p, len, vec.data()) == 0)
    for (unsigned char v : vec) n += v & 1u;
  else
    n = ~std::size_t{0};
  ::munmap(p, len);
  return n;
}

}  // namespace mapheap::test
