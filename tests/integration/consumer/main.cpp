// Uses only the installed public headers: maps memory, grows it, checks it.
#include <cstdio>
#include <cstring>

#include <mapheap/mapping.hpp>

int main() {
  auto m = mapheap::Mapping::create(mapheap::MappingOptions::anonymous(4096).with_reserve(1 << 20));
  std::byte* base = m.data();
  std::memcpy(m.data(), "consumer", 8);
  m.grow(1 << 20);
  if (m.data() != base || std::memcmp(m.data(), "consumer", 8) != 0) return 1;
  auto bad = mapheap::Mapping::try_create(mapheap::MappingOptions::anonymous(0));
  if (bad.ok()) return 2;
  std::printf("consumer ok: %s\n", bad.err().what());
  return 0;
}
