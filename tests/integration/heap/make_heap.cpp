// tests/integration/heap/make_heap.cpp — makes a small mapped heap for the
// CLI's tests (cli_heap.cmake): four named objects, a linked list of
// unnamed blocks reached from one of them, blocks of many sizes (slab pages
// of several size classes, large runs, free pages between them) and a few
// unreachable blocks for gc to find.
//
//   make_heap FILE            a heap file, closed cleanly
//   make_heap --shm NAME      the same in a POSIX shm object
//   make_heap --unclean FILE  ... left without closing (as if killed): the
//                             next read-write open runs recovery
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "mapheap/heap.hpp"
#include "mapheap/offset_ptr.hpp"

namespace demo {

struct Config {
  int version = 3;
  double ratio = 0.75;
  char name[32] = "cli test heap";
};

// Linked by offset_ptrs, which gc follows.
struct Node {
  mapheap::offset_ptr<Node> next;
  std::uint64_t value = 0;
  std::array<std::byte, 48> payload{};
};

struct List {
  mapheap::offset_ptr<Node> head;
  std::uint64_t length = 0;
};

}  // namespace demo

namespace {

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "make_heap: %s\n", why.c_str());
  std::exit(1);
}

void* must_allocate(mapheap::MappedHeap& h, std::size_t size) {
  void* p = h.allocate(size);
  if (p == nullptr) die("allocate(" + std::to_string(size) + ") returned null: the heap is full");
  std::memset(p, 0xA5, size);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  bool shm = false, unclean = false;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--shm")
      shm = true;
    else if (a == "--unclean")
      unclean = true;
    else if (path.empty() && !a.empty() && (a[0] != '-' || a.size() == 1))
      path = a;
    else
      die("usage: make_heap [--shm] [--unclean] FILE");
  }
  if (path.empty()) die("usage: make_heap [--shm] [--unclean] FILE");

  try {
    auto options = shm ? mapheap::HeapOptions::shm(path, mapheap::HeapMode::create)
                       : mapheap::HeapOptions::file(path, mapheap::HeapMode::create);
    options.with_size(std::size_t{8} << 20, std::size_t{64} << 20);
    mapheap::MappedHeap h = mapheap::MappedHeap::open(options);

    h.construct<std::uint64_t>("counter")(std::uint64_t{42});
    h.construct<demo::Config>("config")();
    auto* table = h.construct<std::array<std::uint64_t, 512>>("table")();
    auto* list = h.construct<demo::List>("list")();
    for (std::size_t i = 0; i < table->size(); ++i) (*table)[i] = i * i;

    // 200 nodes linked by offset_ptrs from "list".
    for (std::uint64_t i = 0; i < 200; ++i) {
      auto* n = new (must_allocate(h, sizeof(demo::Node))) demo::Node{};
      n->next = list->head;
      n->value = i;
      list->head = n;
      ++list->length;
    }
    // Blocks of many sizes; every other one freed again, so that slabs are
    // partly full and free pages lie between the kept large blocks.
    std::vector<void*> kept;
    const std::size_t sizes[] = {8, 24, 100, 256, 1000, 3000, 8192, 40000, 300000, 1u << 20};
    for (std::size_t round = 0; round < 6; ++round)
      for (std::size_t size : sizes) {
        void* p = must_allocate(h, size);
        if ((round + size) % 2 == 0)
          h.deallocate(p);
        else
          kept.push_back(p);
      }
    // `kept` is referenced from nowhere in the heap: gc may free it all.
    std::printf("made heap %s%s: %zu named objects, %llu list nodes, %zu unreachable blocks\n",
                path.c_str(), unclean ? " (left unclean)" : "", h.names().size(),
                static_cast<unsigned long long>(list->length), kept.size());
    std::fflush(stdout);
    if (unclean) std::_Exit(0);  // no close(): as if the process were killed here
    h.close();
  } catch (const std::exception& e) {
    die(e.what());
  }
  return 0;
}
