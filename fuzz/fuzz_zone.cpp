// A zone is untrusted input (DESIGN contract 2): another process or a file may
// have written anything into its header and page map. This fuzzer writes the
// input over the metadata of a freshly formatted zone, then: attach() must
// refuse or accept without crashing; check() must not crash whatever the
// bytes; and if check() accepts the zone, allocating and freeing on it must
// keep check() passing (an accepted zone is one the allocator can trust).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "page/buddy.hpp"

namespace {
constexpr std::size_t kPage = 4096;
constexpr std::size_t kPages = 64;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mapheap::page;
  alignas(kPage) static std::byte region[kPages * kPage];
  std::memset(region, 0, sizeof(region));
  Buddy fresh;
  if (Buddy::format(region, sizeof(region), kPage, 1, fresh) != FormatError::none) std::abort();
  // Some real state first, so the fuzzer mutates a lived-in zone.
  (void)fresh.alloc(Pages(3));
  (void)fresh.alloc(Pages(1), PageState::slab);
  (void)fresh.alloc(Pages(5), PageState::slab);

  // The input: pairs of (offset, byte) patches over the metadata page(s),
  // then a tail of operations.
  const std::size_t meta = fresh.first_page() * kPage;
  std::size_t i = 0;
  for (; i + 3 <= size && data[i] != 0xff; i += 3) {
    const std::size_t off = (static_cast<std::size_t>(data[i]) << 8 | data[i + 1]) % meta;
    reinterpret_cast<std::uint8_t*>(region)[off] = data[i + 2];
  }
  ++i;

  Buddy z;
  if (Buddy::attach(region, sizeof(region), z) != AttachError::none) return 0;
  if (!z.check().ok) return 0;
  std::vector<PageIndex> live;
  for (; i < size; ++i) {
    const std::uint8_t op = data[i];
    if (op & 1) {
      const PageIndex p =
          z.alloc(Pages(1 + (op >> 1) % 9), (op & 2) ? PageState::slab : PageState::large);
      if (p.valid()) live.push_back(p);
    } else if (!live.empty()) {
      const std::size_t k = (op >> 1) % live.size();
      if (z.free(live[k]) != FreeResult::ok) std::abort();  // it was ours to free
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
    if (!z.check().ok) std::abort();  // a trusted zone must stay consistent
  }
  return 0;
}
