// A heap file is untrusted input (DESIGN contract 2): whatever its bytes,
// MappedHeap::open must refuse it with an error or open it, and check(),
// names() and stats() must report, never crash. A heap that check() accepts
// must stay consistent under allocation and free.
//
// Each input damages a copy of a lived-in heap file: the input is a list of
// patches (where: header, journals, allocator metadata or the directory;
// an offset; bytes), and its first byte may truncate the file.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "heap/mapped_heap_format.hpp"
#include "mapheap/heap.hpp"

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

std::string dir() {
  static const std::string d = [] {
    char tmpl[] = "/tmp/mapheap-fuzz-heap-XXXXXX";
    return std::string(::mkdtemp(tmpl));
  }();
  return d;
}

// The pristine file, built once: named objects, live and freed blocks.
const std::vector<char>& pristine() {
  static const std::vector<char> bytes = [] {
    const std::string path = dir() + "/pristine.heap";
    {
      auto h = mapheap::MappedHeap::open(
          mapheap::HeapOptions::file(path, mapheap::HeapMode::create).with_size(8 * kMiB, 16 * kMiB));
      for (int i = 0; i < 40; ++i) *h.construct<long>("obj" + std::to_string(i))() = i;
      std::vector<void*> v;
      for (int i = 0; i < 300; ++i) v.push_back(h.allocate(static_cast<std::size_t>(16 + (i % 9) * 300)));
      for (int i = 0; i < 300; i += 3) h.deallocate(v[static_cast<std::size_t>(i)]);
      (void)h.destroy<long>("obj3");
    }
    std::vector<char> out;
    const int fd = ::open(path.c_str(), O_RDONLY);
    char buf[1 << 16];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.insert(out.end(), buf, buf + n);
    ::close(fd);
    ::unlink(path.c_str());
    return out;
  }();
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mapheap;
  const std::vector<char>& good = pristine();
  std::vector<char> file = good;
  heap::HeapHeader h;
  std::memcpy(static_cast<void*>(&h), good.data(), sizeof(h));
  // Where patches land: the header, the journals, the allocator's first
  // metadata pages (zone header, page map, slab root, caches), anywhere.
  const std::uint64_t starts[4] = {0, h.zone_journal_offset, h.engine_offset, 0};
  const std::uint64_t spans[4] = {4096, h.engine_offset - h.zone_journal_offset, 64 * 4096, good.size()};
  std::size_t i = 0;
  if (size > 0 && data[0] < 8) {  // truncate
    file.resize(static_cast<std::size_t>(data[0]) * (good.size() / 8) + (size > 1 ? data[1] : 0));
    i = 2;
  }
  while (i + 4 <= size) {
    const unsigned where = data[i] % 4;
    std::uint64_t off = (std::uint64_t{data[i + 1]} << 16 | std::uint64_t{data[i + 2]} << 8 | data[i + 3]);
    off = starts[where] + off % spans[where];
    i += 4;
    const std::size_t n = std::min<std::size_t>(size - i, 1 + (i < size ? data[i] % 32 : 0));
    for (std::size_t k = 0; k < n && off + k < file.size(); ++k) file[off + k] = static_cast<char>(data[i + k]);
    i += n;
  }
  const std::string path = dir() + "/case.heap";
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ::write(fd, file.data(), file.size()) != static_cast<ssize_t>(file.size())) std::abort();
  ::close(fd);

  auto r = MappedHeap::try_open(HeapOptions::file(path, HeapMode::open));
  if (!r.ok()) return 0;  // refused with a reason: fine
  MappedHeap& m = r.value();
  HeapCheck c = m.check();
  try {
    (void)m.names();
    (void)m.stats();
    (void)m.page_runs();
    (void)m.find<long>("obj7");
  } catch (const error&) {
    return 0;  // reported: fine
  }
  if (!c.ok) return 0;
  std::vector<void*> v;
  for (int k = 0; k < 200; ++k)
    if (void* p = m.allocate(static_cast<std::size_t>(8 + k * 37 % 5000))) v.push_back(p);
  for (void* p : v) m.deallocate(p);
  c = m.check();
  if (!c.ok) {
    std::fprintf(stderr, "check accepted the heap, then failed after use: %s\n", c.message.c_str());
    std::abort();
  }
  return 0;
}
