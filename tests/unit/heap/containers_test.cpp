// Containers in a MappedHeap through mapheap::allocator<T>: std::vector,
// std::basic_string, boost::container::map and flat_map, a vector of strings,
// and mapheap::vector (of ints, of strings, of vectors).
// Built by one process, read and extended by fork()ed children that map the
// heap at another address (each opens the file itself), read again after the
// heap is closed and reopened elsewhere; and heap_resource for std::pmr.
#include "mapheap/allocator.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory_resource>
#include <new>
#include <scoped_allocator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/container/flat_map.hpp>
#include <boost/container/map.hpp>
#include <boost/container/scoped_allocator.hpp>
#include <boost/container/vector.hpp>
#include <gtest/gtest.h>

#include "mapheap/heap.hpp"
#include "mapheap/offset_ptr.hpp"
#include "support/temp_dir.hpp"

namespace mapheap {
namespace {

using Ints = std::vector<int, allocator<int>>;
using Str = string;  // std::basic_string<char, ..., allocator<char>>
using Strings = std::vector<Str, allocator<Str>>;
using HeapInts = vector<int>;  // mapheap::vector
using HeapStrings = vector<Str>;
using Rows = vector<vector<std::uint32_t>>;
using Queue = std::deque<Str, allocator<Str>>;  // libstdc++'s deque keeps offset_ptrs too
using Scoped = std::vector<Str, std::scoped_allocator_adaptor<allocator<Str>>>;
// boost::container's maps construct their own pair type (not std::pair), so
// allocator<T>::construct cannot hand the heap to a mapped string: give it
// one explicitly (TextMap), or let boost's scoped_allocator_adaptor (ScopedMap).
using TextMap = boost::container::map<int, Str, std::less<>, allocator<std::pair<const int, Str>>>;
using ScopedMap =
    boost::container::map<int, Str, std::less<>,
                          boost::container::scoped_allocator_adaptor<allocator<std::pair<const int, Str>>>>;
using Index = boost::container::flat_map<Str, int, std::less<>, allocator<std::pair<Str, int>>>;
using BoostInts = boost::container::vector<std::uint64_t, allocator<std::uint64_t>>;

constexpr int kPerRound = 60;

// Entry i of round r: mostly longer than the small-string buffer (so the
// characters are in the heap), every fifth one short (so they are inside the
// string object itself, which an offset_ptr also finds at any address).
std::string text(int round, int i) {
  if (i % 5 == 0) return "r" + std::to_string(round) + "i" + std::to_string(i);
  return "round " + std::to_string(round) + ", entry " + std::to_string(i) +
         ": too long for the small-string buffer";
}
int key(int round, int i) {
  return round * 1000 + i;
}

// Every named container gets kPerRound entries for round r.
void append_round(MappedHeap& h, int round) {
  allocator<int> alloc(h);
  auto* ints = h.find_or_construct<Ints>("ints")(alloc);
  auto* strings = h.find_or_construct<Strings>("strings")(alloc);
  auto* queue = h.find_or_construct<Queue>("queue")(alloc);
  auto* scoped = h.find_or_construct<Scoped>("scoped")(alloc);
  auto* map = h.find_or_construct<TextMap>("map")(std::less<>(), alloc);
  auto* scoped_map = h.find_or_construct<ScopedMap>("scoped-map")(std::less<>(), alloc);
  auto* index = h.find_or_construct<Index>("index")(std::less<>(), alloc);
  auto* big = h.find_or_construct<BoostInts>("boost-ints")(alloc);
  auto* heap_ints = h.find_or_construct<HeapInts>("heap-ints")(alloc);
  auto* heap_strings = h.find_or_construct<HeapStrings>("heap-strings")(alloc);
  auto* rows = h.find_or_construct<Rows>("rows")(alloc);
  for (int i = 0; i < kPerRound; ++i) {
    const std::string t = text(round, i);
    ints->push_back(key(round, i));
    strings->emplace_back(t);  // allocator::construct gives the string the heap
    queue->emplace_front(t);
    scoped->emplace_back(t);   // the adaptor gives it the heap
    if (i % 2 == 0) {
      map->try_emplace(key(round, i), Str(t, alloc));
      scoped_map->try_emplace(key(round, i), t);
    } else {
      map->emplace(key(round, i), Str(t, alloc));
      (*scoped_map)[key(round, i)] = t;
    }
    index->emplace(Str(t, alloc), key(round, i));
    big->push_back(static_cast<std::uint64_t>(key(round, i)) << 32);
    heap_ints->push_back(key(round, i));
    heap_strings->emplace_back(t);  // the string gets the heap, as in strings
    // Row i holds the keys of entry i of every round so far (the rows grow
    // in place, moving their elements when they reallocate).
    if (rows->size() <= static_cast<std::size_t>(i)) rows->emplace_back();
    (*rows)[static_cast<std::size_t>(i)].push_back(static_cast<std::uint32_t>(key(round, i)));
  }
}

// "" when rounds [0, rounds) are all there, in order, and every byte of them
// is inside the heap; else the first thing that is wrong.
std::string verify_rounds(MappedHeap& h, int rounds) {
  auto* ints = h.find<Ints>("ints");
  auto* strings = h.find<Strings>("strings");
  auto* queue = h.find<Queue>("queue");
  auto* scoped = h.find<Scoped>("scoped");
  auto* map = h.find<TextMap>("map");
  auto* scoped_map = h.find<ScopedMap>("scoped-map");
  auto* index = h.find<Index>("index");
  auto* big = h.find<BoostInts>("boost-ints");
  auto* heap_ints = h.find<HeapInts>("heap-ints");
  auto* heap_strings = h.find<HeapStrings>("heap-strings");
  auto* rows = h.find<Rows>("rows");
  if (!ints || !strings || !queue || !scoped || !map || !scoped_map || !index || !big || !heap_ints ||
      !heap_strings || !rows)
    return "a named container is missing";
  const auto n = static_cast<std::size_t>(rounds * kPerRound);
  if (ints->size() != n) return "ints has " + std::to_string(ints->size()) + " entries";
  if (strings->size() != n) return "strings has " + std::to_string(strings->size()) + " entries";
  if (queue->size() != n) return "queue has " + std::to_string(queue->size()) + " entries";
  if (scoped->size() != n) return "scoped has " + std::to_string(scoped->size()) + " entries";
  if (map->size() != n) return "map has " + std::to_string(map->size()) + " entries";
  if (scoped_map->size() != n) return "scoped-map has " + std::to_string(scoped_map->size()) + " entries";
  if (index->size() != n) return "index has " + std::to_string(index->size()) + " entries";
  if (big->size() != n) return "boost-ints has " + std::to_string(big->size()) + " entries";
  if (heap_ints->size() != n) return "heap-ints has " + std::to_string(heap_ints->size()) + " entries";
  if (heap_strings->size() != n) return "heap-strings has " + std::to_string(heap_strings->size()) + " entries";
  if (rows->size() != static_cast<std::size_t>(rounds > 0 ? kPerRound : 0))
    return "rows has " + std::to_string(rows->size()) + " rows";
  if (!h.contains(ints->data()) || !h.contains(strings->data()) || !h.contains(big->data()) ||
      !h.contains(heap_ints->data()) || !h.contains(heap_strings->data()) || !h.contains(rows->data()))
    return "a vector's elements are outside the heap";
  std::size_t at = 0;
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < kPerRound; ++i, ++at) {
      const std::string t = text(r, i);
      const std::string where = " at round " + std::to_string(r) + " entry " + std::to_string(i);
      if ((*ints)[at] != key(r, i)) return "ints" + where;
      if (std::string_view((*strings)[at]) != t) return "strings: '" + std::string((*strings)[at]) + "'" + where;
      if (!h.contains((*strings)[at].data())) return "a string's characters are outside the heap" + where;
      const std::string_view q = (*queue)[n - 1 - at];  // pushed at the front
      if (q != t || !h.contains(q.data())) return "queue" + where;
      if (std::string_view((*scoped)[at]) != t) return "scoped" + where;
      if (!h.contains((*scoped)[at].data())) return "a scoped string is outside the heap" + where;
      auto m = map->find(key(r, i));
      if (m == map->end() || std::string_view(m->second) != t) return "map" + where;
      if (!h.contains(m->second.data())) return "a mapped string is outside the heap" + where;
      auto sm = scoped_map->find(key(r, i));
      if (sm == scoped_map->end() || std::string_view(sm->second) != t) return "scoped-map" + where;
      if (!h.contains(sm->second.data())) return "a scoped-map string is outside the heap" + where;
      auto x = index->find(std::string_view(t));  // heterogeneous lookup
      if (x == index->end() || x->second != key(r, i)) return "index" + where;
      if ((*big)[at] != static_cast<std::uint64_t>(key(r, i)) << 32) return "boost-ints" + where;
      if ((*heap_ints)[at] != key(r, i)) return "heap-ints" + where;
      if (std::string_view((*heap_strings)[at]) != t) return "heap-strings" + where;
      if (!h.contains((*heap_strings)[at].data())) return "a heap-strings string is outside the heap" + where;
      const auto& row = (*rows)[static_cast<std::size_t>(i)];
      if (row.size() != static_cast<std::size_t>(rounds)) return "a row has " + std::to_string(row.size()) + " keys" + where;
      if (row[static_cast<std::size_t>(r)] != static_cast<std::uint32_t>(key(r, i))) return "rows" + where;
      if (!h.contains(row.data())) return "a row's keys are outside the heap" + where;
    }
  }
  if (!std::is_sorted(index->begin(), index->end())) return "the flat map is not sorted";
  return "";
}

// A heap file in a fresh directory, removed at the end.
class ContainersTest : public ::testing::Test {
 protected:
  HeapOptions options(HeapMode mode) const {
    return HeapOptions::file(path_, mode).with_size(std::size_t{8} << 20, std::size_t{64} << 20);
  }
  test::TempDir tmp_;
  const std::string& dir_ = tmp_.path;
  const std::string path_ = tmp_.file("containers.heap");
};

// Keeps [addr, addr + len) taken so that the next mapping lands elsewhere.
struct AddressBlocker {
  AddressBlocker(const void* addr, std::size_t len) : len_(len) {
    p_ = ::mmap(const_cast<void*>(addr), len, PROT_NONE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  }
  ~AddressBlocker() {
    if (p_ != MAP_FAILED) ::munmap(p_, len_);
  }
  AddressBlocker(const AddressBlocker&) = delete;
  AddressBlocker& operator=(const AddressBlocker&) = delete;
  bool ok(const void* want) const { return p_ == want; }
  void* p_;
  std::size_t len_;
};

// A fork()ed child running fn; fn returns "" on success, else what failed.
struct Child {
  pid_t pid = -1;
  int fd = -1;  // the read end of the pipe the child writes its message to
};

Child start_child(const std::function<std::string()>& fn) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string message;
    try {
      message = fn();
    } catch (const std::exception& e) {
      message = std::string("exception: ") + e.what();
    }
    if (!message.empty()) {
      const ssize_t w = ::write(pipefd[1], message.data(), message.size());
      (void)w;
    }
    ::_exit(message.empty() ? 0 : 1);
  }
  ::close(pipefd[1]);
  if (pid < 0) {
    ::close(pipefd[0]);
    return {};
  }
  return {pid, pipefd[0]};
}

// "" when the child succeeded; else its message. A child still running after
// two minutes is killed (a hang must not hang the suite).
std::string finish_child(Child c) {
  if (c.pid < 0) return "fork or pipe failed";
  std::string message;
  char buf[512];
  for (;;) {
    pollfd p{c.fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 120'000);
    if (ready == 0) {
      ::kill(c.pid, SIGKILL);
      message += " (timed out: killed)";
      break;
    }
    if (ready < 0 && errno == EINTR) continue;
    const ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    message.append(buf, static_cast<std::size_t>(n));
  }
  ::close(c.fd);
  int status = 0;
  while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && message.empty()) return "";
  if (WIFSIGNALED(status)) message += " (killed by signal " + std::to_string(WTERMSIG(status)) + ")";
  if (WIFEXITED(status)) message += " (exit " + std::to_string(WEXITSTATUS(status)) + ")";
  return message;
}

std::string in_child(const std::function<std::string()>& fn) {
  return finish_child(start_child(fn));
}

TEST_F(ContainersTest, EverythingTheContainersHoldIsInTheHeap) {
  auto h = MappedHeap::open(options(HeapMode::create));
  append_round(h, 0);
  append_round(h, 1);
  EXPECT_EQ(verify_rounds(h, 2), "");
  // The containers themselves are named objects in the heap too.
  EXPECT_TRUE(h.contains(h.find<Ints>("ints")));
  auto* map = h.find<TextMap>("map");
  ASSERT_NE(map, nullptr);
  EXPECT_TRUE(h.contains(&*map->begin()));
  // Growing and shrinking returns memory to the heap, not to malloc.
  auto* ints = h.find<Ints>("ints");
  ints->resize(10'000, 7);
  EXPECT_TRUE(h.contains(ints->data() + 9'999));
  ints->resize(2 * kPerRound);
  ints->shrink_to_fit();
  auto* heap_ints = h.find<HeapInts>("heap-ints");
  heap_ints->resize(10'000, 7);
  EXPECT_TRUE(h.contains(heap_ints->data() + 9'999));
  heap_ints->resize(2 * kPerRound);
  heap_ints->shrink_to_fit();
  EXPECT_EQ(heap_ints->capacity(), 2u * kPerRound);
  EXPECT_EQ(verify_rounds(h, 2), "");
  auto* strings = h.find<Strings>("strings");
  strings->resize(strings->size() + 3);  // default-constructed strings get the heap too
  EXPECT_EQ(strings->back().get_allocator(), allocator<char>(h));
  strings->back() = std::string(100, 'x');
  EXPECT_TRUE(h.contains(strings->back().data()));
  strings->resize(2 * kPerRound);
  EXPECT_EQ(verify_rounds(h, 2), "");
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

TEST_F(ContainersTest, AllocatorBasics) {
  auto h = MappedHeap::open(options(HeapMode::create));
  allocator<int> a(h);
  allocator<double> b(a);
  allocator<int> c = h;
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  EXPECT_EQ(a.heap_base(), h.base());
  EXPECT_EQ(&a.heap(), MappedHeap::of(h.base()));
  static_assert(std::is_same_v<std::allocator_traits<allocator<int>>::pointer, offset_ptr<int>>);
  static_assert(std::is_same_v<std::allocator_traits<allocator<int>>::void_pointer, offset_ptr<void>>);
  static_assert(std::is_same_v<std::allocator_traits<allocator<int>>::const_void_pointer,
                               offset_ptr<const void>>);
  static_assert(std::is_same_v<std::allocator_traits<allocator<int>>::rebind_alloc<char>, allocator<char>>);
  offset_ptr<int> p = a.allocate(100);
  ASSERT_TRUE(p);
  EXPECT_TRUE(h.contains(p.get()));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p.get()) % alignof(int), 0u);
  std::fill(p, p + 100, 3);
  EXPECT_EQ(p[99], 3);
  a.deallocate(p, 100);
  struct alignas(64) Wide {
    char c[64];
  };
  allocator<Wide> w(h);
  auto q = w.allocate(3);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(q.get()) % 64, 0u);
  w.deallocate(q, 3);
  // allocate_at_least: the whole size class, every element of it usable,
  // given back with the count it returned.
  const auto r = a.allocate_at_least(3);  // 12 bytes, from the 16-byte class
  EXPECT_EQ(r.count, 4u);
  std::fill(r.ptr, r.ptr + r.count, 5);
  const auto big = a.allocate_at_least(75);  // 300 bytes, from the 320-byte class
  EXPECT_EQ(big.count, 80u);
  std::fill(big.ptr, big.ptr + big.count, 6);
  EXPECT_EQ(r.ptr[3], 5);
  a.deallocate(r.ptr, r.count);
  a.deallocate(big.ptr, big.count);
  const auto wide = w.allocate_at_least(3);
  EXPECT_EQ(wide.count, 3u) << "64-byte elements fill their class exactly";
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(wide.ptr.get()) % 64, 0u);
  w.deallocate(wide.ptr, wide.count);
  const auto none = a.allocate_at_least(0);  // one byte's block: the 8-byte class
  EXPECT_EQ(none.count, 2u);
  a.deallocate(none.ptr, none.count);
  // Full: bad_alloc, as from new.
  EXPECT_THROW((void)a.allocate(std::size_t{1} << 40), std::bad_alloc);
  EXPECT_THROW((void)a.allocate(a.max_size() + 1), std::bad_array_new_length);
  // A second heap's allocator is not equal.
  auto other = MappedHeap::open(HeapOptions::file(dir_ + "/other.heap", HeapMode::create)
                                    .with_size(std::size_t{4} << 20, std::size_t{16} << 20));
  EXPECT_NE(a, allocator<int>(other));
  // No open heap maps the allocator's heap any more: a clear mapheap::error.
  h.close();
  try {
    (void)a.allocate(1);
    ADD_FAILURE() << "allocate after close did not throw";
  } catch (const mapheap::error& e) {
    EXPECT_NE(std::string(e.what()).find("no open MappedHeap"), std::string::npos) << e.what();
  }
}

TEST_F(ContainersTest, ChildAtAnotherAddressReadsAndAppends) {
  auto h = MappedHeap::open(options(HeapMode::create));
  append_round(h, 0);
  ASSERT_EQ(verify_rounds(h, 1), "");
  const void* parent_base = h.base();
  // The child keeps the parent's mapping (inherited) and maps the file again:
  // the second mapping is necessarily elsewhere.
  EXPECT_EQ(in_child([&]() -> std::string {
              AddressBlocker block(parent_base, std::size_t{2} << 20);  // usually taken already
              auto mine = MappedHeap::open(options(HeapMode::open));
              if (mine.base() == parent_base) return "the child mapped the heap at the parent's address";
              if (auto e = verify_rounds(mine, 1); !e.empty()) return "child, before: " + e;
              append_round(mine, 1);
              if (auto e = verify_rounds(mine, 2); !e.empty()) return "child, after: " + e;
              mine.close();
              return "";
            }),
            "");
  // The parent sees the child's entries through its own mapping.
  EXPECT_EQ(verify_rounds(h, 2), "");
  append_round(h, 2);
  // A second child sees both, and two children then append concurrently, each
  // to a vector of its own (the heap allocates for both at once).
  EXPECT_EQ(in_child([&]() -> std::string {
              auto mine = MappedHeap::open(options(HeapMode::open));
              return verify_rounds(mine, 3);
            }),
            "");
  auto worker = [&](int n) {
    return [&, n]() -> std::string {
      auto mine = MappedHeap::open(options(HeapMode::open));
      allocator<Str> alloc(mine);
      auto* own = mine.find_or_construct<Strings>("child-" + std::to_string(n))(alloc);
      for (int i = 0; i < 500; ++i) own->emplace_back(text(100 + n, i));
      mine.close();
      return "";
    };
  };
  Child one = start_child(worker(1));
  Child two = start_child(worker(2));
  EXPECT_EQ(finish_child(one), "");
  EXPECT_EQ(finish_child(two), "");
  for (int n = 1; n <= 2; ++n) {
    auto* own = h.find<Strings>("child-" + std::to_string(n));
    ASSERT_NE(own, nullptr) << n;
    ASSERT_EQ(own->size(), 500u);
    for (int i = 0; i < 500; ++i) {
      ASSERT_EQ(std::string_view((*own)[static_cast<std::size_t>(i)]), text(100 + n, i)) << n << " " << i;
      ASSERT_TRUE(h.contains((*own)[static_cast<std::size_t>(i)].data()));
    }
  }
  EXPECT_EQ(verify_rounds(h, 3), "");
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

TEST_F(ContainersTest, ContentsPersistAcrossCloseAndReopenElsewhere) {
  const void* first_base = nullptr;
  {
    auto h = MappedHeap::open(options(HeapMode::create));
    first_base = h.base();
    append_round(h, 0);
    append_round(h, 1);
    h.close();
  }
  {
    AddressBlocker block(first_base, std::size_t{2} << 20);
    ASSERT_TRUE(block.ok(first_base)) << "could not take the old address back";
    auto h = MappedHeap::open(options(HeapMode::open));
    EXPECT_NE(static_cast<const void*>(h.base()), first_base);
    EXPECT_EQ(verify_rounds(h, 2), "");
    // Change it: erase some, append a round.
    auto* map = h.find<TextMap>("map");
    ASSERT_NE(map, nullptr);
    map->erase(key(0, 1));
    map->emplace(key(0, 1), Str(text(0, 1), allocator<char>(h)));  // put back, in a new node
    append_round(h, 2);
    h.close();
  }
  auto h = MappedHeap::open(options(HeapMode::open));
  EXPECT_FALSE(h.open_report().recovered);
  EXPECT_EQ(verify_rounds(h, 3), "");
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

TEST_F(ContainersTest, PmrAdapterInThisProcess) {
  auto h = MappedHeap::open(options(HeapMode::create));
  heap_resource r(h);
  EXPECT_EQ(&r.heap(), &h);
  std::pmr::vector<int> v(&r);
  for (int i = 0; i < 5000; ++i) v.push_back(i);
  EXPECT_TRUE(h.contains(v.data()));
  EXPECT_EQ(v[4999], 4999);
  std::pmr::vector<std::pmr::string> strings(&r);
  strings.emplace_back("a pmr string long enough to be outside the small-string buffer");
  EXPECT_TRUE(h.contains(strings.back().data()));  // polymorphic_allocator passes itself on
  heap_resource same(h);
  EXPECT_TRUE(r.is_equal(same));
  EXPECT_TRUE(r == same);
  EXPECT_FALSE(r.is_equal(*std::pmr::new_delete_resource()));
  auto other = MappedHeap::open(HeapOptions::file(dir_ + "/other.heap", HeapMode::create)
                                    .with_size(std::size_t{4} << 20, std::size_t{16} << 20));
  heap_resource elsewhere(other);
  EXPECT_FALSE(r.is_equal(elsewhere));
  // Full: bad_alloc.
  EXPECT_THROW((void)r.allocate(std::size_t{1} << 40, 8), std::bad_alloc);
  void* p = r.allocate(256, 64);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 64, 0u);
  EXPECT_TRUE(h.contains(p));
  r.deallocate(p, 256, 64);
  strings.clear();
  strings.shrink_to_fit();
  v = std::pmr::vector<int>(&r);
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

}  // namespace
}  // namespace mapheap
