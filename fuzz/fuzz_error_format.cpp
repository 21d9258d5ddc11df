// Error::format must stay within any buffer and NUL-terminate it whatever the
// fields hold (flags from the OS, paths from users).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "pal/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 24) return 0;
  mapheap::pal::Error e;
  e.op = static_cast<mapheap::pal::Op>(data[0] % (static_cast<int>(mapheap::pal::Op::check) + 1));
  e.code = static_cast<int>(data[1]);
  std::memcpy(&e.size, data + 2, 8);
  std::memcpy(&e.flags, data + 10, 8);
  e.extra = data[18];
  const std::size_t cap = data[19];
  e.detail = (data[20] & 1) ? "detail text" : nullptr;
  std::string path(reinterpret_cast<const char*>(data + 24), size - 24);
  path = path.substr(0, path.find('\0'));
  e.with_path(path.c_str());
  char buf[300];
  std::memset(buf, 'x', sizeof(buf));
  const std::size_t need = e.format(buf, cap);
  if (cap > 0 && std::strlen(buf) >= cap) std::abort();               // NUL within the cap
  if (cap < sizeof(buf) && buf[cap] != 'x' && cap > 0) std::abort();  // nothing past it
  if (cap > 0 && std::strlen(buf) != (need < cap ? need : cap - 1)) std::abort();
  return 0;
}
