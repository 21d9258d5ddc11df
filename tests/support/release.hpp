// tests/support/release.hpp — a page::Buddy::ReleaseFn that gives pages back
// through the Mapping they live in (the method a real owner uses).
#pragma once

#include <cstddef>

#include "mapheap/mapping.hpp"

namespace mapheap::test {

// ctx is the Mapping* holding the zone.
inline bool release_through_mapping(void* ctx, std::byte* addr, std::size_t bytes) {
  auto* m = static_cast<Mapping*>(ctx);
  try {
    m->release(static_cast<std::size_t>(addr - m->data()), bytes);
    return true;
  } catch (const error&) {
    return false;
  }
}

}  // namespace mapheap::test
