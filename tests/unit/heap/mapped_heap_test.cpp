// MappedHeap: one conformance suite run against every backing, then the
// multi-process, crash, persistence, snapshot and untrusted-file contracts.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cache/rseq.hpp"
#include "core/journal.hpp"
#include "heap/mapped_heap_format.hpp"
#include "mapheap/heap.hpp"
#include "mapheap/offset_ptr.hpp"
#include "page/buddy.hpp"
#include "pal/pal.hpp"
#include "slab/size_class.hpp"
#include "slab/slab.hpp"
#include "bench/support/page_faults.hpp"
#include "support/cpu.hpp"
#include "support/death.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace mapheap {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMiB = std::size_t{1} << 20;

using test::TempDir;

std::string unique_shm() {
  static std::atomic<int> n{0};
  return "/mapheap-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

struct Point {
  int x, y;
  Point(int a, int b) : x(a), y(b) {}
};

// ---------------------------------------------------------------- conformance

enum class Kind { file, shm, memfd, anonymous };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::file: return "file";
    case Kind::shm: return "shm";
    case Kind::memfd: return "memfd";
    case Kind::anonymous: return "anonymous";
  }
  return "?";
}

class Backings : public ::testing::TestWithParam<Kind> {
 protected:
  void TearDown() override {
    if (!shm_.empty()) ::shm_unlink(shm_.c_str());
  }
  HeapOptions create_options() {
    HeapOptions o;
    switch (GetParam()) {
      case Kind::file: o = HeapOptions::file(dir_.file("h.heap"), HeapMode::create); break;
      case Kind::shm:
        shm_ = unique_shm();
        o = HeapOptions::shm(shm_, HeapMode::create);
        break;
      case Kind::memfd: o = HeapOptions::memfd("conformance"); break;
      case Kind::anonymous: o = HeapOptions::anonymous(); break;
    }
    return o.with_size(16 * kMiB, 512 * kMiB);
  }
  // Options that open the heap `h` again, if the backing can be reopened.
  bool reopen_options(const MappedHeap& h, HeapOptions& o) {
    switch (GetParam()) {
      case Kind::file: o = HeapOptions::file(dir_.file("h.heap"), HeapMode::open); return true;
      case Kind::shm: o = HeapOptions::shm(shm_, HeapMode::open); return true;
      case Kind::memfd: {
        (void)h;
        return false;
      }
      case Kind::anonymous: return false;
    }
    return false;
  }
  TempDir dir_;
  std::string shm_;
};

TEST_P(Backings, AllocatesAndFreesEverySizeAndAlignment) {
  MappedHeap h = MappedHeap::open(create_options());
  EXPECT_TRUE(h.open_report().created);
  std::mt19937_64 rng(1);
  struct Block {
    unsigned char* p;
    std::size_t n, align;
  };
  std::vector<Block> live;
  for (int i = 0; i < 20000; ++i) {
    if (live.size() < 500 || rng() % 2 == 0) {
      const std::size_t size = std::size_t{1} << (rng() % 17);
      const std::size_t n = 1 + rng() % size;
      const std::size_t align = std::size_t{1} << (rng() % 8);
      auto* p = static_cast<unsigned char*>(h.allocate(n, align));
      ASSERT_NE(p, nullptr) << n;
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u);
      ASSERT_TRUE(h.contains(p));
      ASSERT_GE(h.usable_size(p), n);
      std::memset(p, static_cast<int>(n & 0xff), n);
      live.push_back({p, n, align});
    } else {
      const std::size_t k = rng() % live.size();
      const Block b = live[k];
      for (std::size_t j = 0; j < b.n; j += 97) ASSERT_EQ(b.p[j], static_cast<unsigned char>(b.n & 0xff));
      if (i % 2 == 0)
        h.deallocate(b.p);
      else
        h.deallocate(b.p, b.n, b.align);  // sized: the class from the size, not the page map
      live[k] = live.back();
      live.pop_back();
    }
  }
  const HeapCheck c = h.check();
  EXPECT_TRUE(c.ok) << c.message;
  for (const Block& b : live) h.deallocate(b.p, b.n, b.align);
  EXPECT_TRUE(h.check().ok);
}

// A sized free puts the block in its class's cache (the next allocation of
// the class gets it back), and a second one is still a reported double free.
TEST_P(Backings, SizedFreeCachesTheBlockAndCatchesADoubleFree) {
  MappedHeap h = MappedHeap::open(create_options());
  for (const std::size_t n : {std::size_t{1}, std::size_t{24}, std::size_t{100}, std::size_t{3000},
                              std::size_t{32768}, std::size_t{40000}, std::size_t{65536}}) {
    void* p = h.allocate(n, 8);
    ASSERT_NE(p, nullptr);
    h.deallocate(p, n, 8);
    EXPECT_EQ(h.allocate(n, 8), p) << n;  // a cache is last in, first out
    h.deallocate(p, n, 8);
  }
  void* big = h.allocate(100000);  // no class: the sized free takes the full path
  ASSERT_NE(big, nullptr);
  h.deallocate(big, 100000);
  EXPECT_TRUE(h.check().ok);
  void* p = h.allocate(48);
  ASSERT_NE(p, nullptr);
  h.deallocate(p, 48);
  EXPECT_DEATH(h.deallocate(p, 48), "double free");
}

// good_size(size, align): at least size, at most what usable_size reports,
// every byte of it usable without touching a neighbour, and the sized free
// takes any size from the request up to it. A window of live blocks, each
// filled to its good size with its own byte and checked before its free.
TEST_P(Backings, GoodSizeIsAllUsableAndFreesBySize) {
  MappedHeap h = MappedHeap::open(create_options());
  EXPECT_EQ(MappedHeap::good_size(0), 8u);
  EXPECT_EQ(MappedHeap::good_size(12), 16u);
  EXPECT_EQ(MappedHeap::good_size(8, 16), 16u);  // 16-aligned: the 8-byte class is only 8-aligned
  EXPECT_EQ(MappedHeap::good_size(300), 320u);
  EXPECT_EQ(MappedHeap::good_size(65536), 65536u);
  EXPECT_EQ(MappedHeap::good_size(100000), 100000u);  // a large block promises what was asked
  struct Live {
    unsigned char* p;
    std::size_t size, good, align;
    unsigned char fill;
  };
  std::vector<Live> live;
  std::mt19937_64 rng(11);
  const auto release = [&](const Live& b, std::size_t told) {
    for (std::size_t i = 0; i < b.good; ++i)
      if (b.p[i] != b.fill) return ::testing::AssertionFailure() << "byte " << i << " of a " << b.good << "-byte block";
    h.deallocate(b.p, told, b.align);
    return ::testing::AssertionSuccess();
  };
  for (int i = 0; i < 3000; ++i) {
    const std::size_t align = std::array<std::size_t, 5>{0, 8, 16, 64, 4096}[rng() % 5];
    const std::size_t size = (std::size_t{1} << (rng() % 17)) + rng() % 512;  // 1 B to ~64 KiB and past
    const std::size_t good = MappedHeap::good_size(size, align);
    ASSERT_GE(good, size);
    auto* p = static_cast<unsigned char*>(h.allocate(size, align));
    ASSERT_NE(p, nullptr) << size;
    ASSERT_GE(h.usable_size(p), good) << size << " aligned to " << align;
    const auto fill = static_cast<unsigned char>(i);
    std::memset(p, fill, good);
    live.push_back({p, size, good, align, fill});
    if (live.size() > 64) {
      const std::size_t k = rng() % live.size();
      const Live b = live[k];
      live[k] = live.back();
      live.pop_back();
      // Told the request, all of the good size, or something between.
      const std::size_t told = b.size + (b.good - b.size) * (rng() % 3) / 2;
      ASSERT_TRUE(release(b, told));
    }
  }
  for (const Live& b : live) ASSERT_TRUE(release(b, b.good));
  const auto c = h.check();
  EXPECT_TRUE(c.ok) << c.message;
}

// A heap that cannot grow takes back what its front caches and empty slabs
// hold before it reports itself full, so that blocks of one size, freed,
// serve another. Without that, the 60,000-byte blocks parked in this CPU's
// array and the transfer slot (16 each) and two empty slabs, about 2.5 MiB
// of the 8, would be lost to the 12,000-byte requests.
TEST_P(Backings, AFullHeapTakesBackWhatItsCachesHold) {
  MappedHeap h = MappedHeap::open(create_options().with_size(8 * kMiB, 8 * kMiB));
  std::vector<void*> big;
  for (void* p; (p = h.allocate(60000)) != nullptr;) big.push_back(p);
  ASSERT_GT(big.size(), 64u);
  for (void* p : big) h.deallocate(p);
  std::vector<void*> small;
  for (void* p; (p = h.allocate(12000)) != nullptr;) small.push_back(p);
  EXPECT_GE(small.size() * 12000, big.size() * 60000 * 9 / 10)
      << big.size() << " blocks of 60,000 bytes, then " << small.size() << " of 12,000";
  for (void* p : small) h.deallocate(p);
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

// Free pages that alternate dirty and released (half freed and trimmed,
// then the other half freed) merge only on demand, thousands of pairs for
// one large block: more than one critical section's undo journal holds. The
// allocation merges section by section (page::Buddy::merge_cut) and
// succeeds, where it once filled the journal and aborted the process.
TEST_P(Backings, AHeapOfMixedFreePagesStillServesALargeBlock) {
  MappedHeap h = MappedHeap::open(create_options().with_size(16 * kMiB, 16 * kMiB));
  std::vector<void*> small;
  for (void* p; (p = h.allocate(512)) != nullptr;) small.push_back(p);
  ASSERT_GT(small.size(), 20000u);
  const auto page_of = [&](const void* p) {
    return static_cast<std::size_t>(static_cast<const std::byte*>(p) - h.base()) / h.page_size();
  };
  for (void* p : small)
    if (page_of(p) % 2 == 0) h.deallocate(p);
  h.trim();
  for (void* p : small)
    if (page_of(p) % 2 == 1) h.deallocate(p);
  void* big = h.allocate(kMiB);
  ASSERT_NE(big, nullptr) << h.stats().buddyinfo;
  std::memset(big, 0x5a, kMiB);
  h.deallocate(big);
  const HeapStats st = h.stats();
  // Merging stopped with the reserve left: the rest of the allocation took
  // a few hundred entries of it at most.
  EXPECT_LT(st.journal_high_water, st.journal_capacity - page::Buddy::kMergeReserve / 2);
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

// A decay step gives the zone every class's long-empty slabs: up to 32 of
// each small class, 1,100 in all, each freed with its merges. One critical
// section per class bounds what a section journals by one class's share;
// all classes in one section journaled 11,000 entries here (of the 16,384
// the journal holds: a fuller heap would have filled it and aborted).
TEST_P(Backings, DecayJournalsOneClassAtATime) {
  // On one CPU: a move in the loops below would fill a second CPU's caches,
  // whose objects keep more slabs in use.
  const test::OnOneCpu pin;
  MappedHeap h = MappedHeap::open(create_options().with_size(64 * kMiB, 64 * kMiB));
  // Every class, a few slabs past what it keeps empty (slab::kKeepEmptyBytes
  // of them, two at least).
  std::vector<void*> objs;
  std::uint64_t kept = 0, section_bound = 0;
  for (unsigned c = 0; c < slab::kClassCount; ++c) {
    const std::uint64_t pages = slab::class_pages(c);
    const std::uint64_t keep = std::max<std::uint64_t>(2, slab::kKeepEmptyBytes / (pages * slab::kPageSize));
    kept += keep;
    // Freeing a slab: its pages' descriptors, the class lists and the
    // zone's counters (16), a cascade of merges (Buddy::kMergeEntries).
    section_bound = std::max(section_bound, keep * (pages + 16 + page::Buddy::kMergeEntries));
    const std::uint64_t n = (keep + 4) * slab::class_objects(c);
    for (std::uint64_t i = 0; i < n; ++i) {
      void* p = h.allocate(slab::class_size(c));
      ASSERT_NE(p, nullptr);
      objs.push_back(p);
    }
  }
  ASSERT_GT(kept, 1000u);
  for (void* p : objs) h.deallocate(p);
  const HeapStats before = h.stats();
  ASSERT_LT(before.journal_high_water, section_bound);
  // Empty for longer than the decay period (1 s); then a slow path runs decay.
  std::this_thread::sleep_for(std::chrono::milliseconds(1300));
  void* big = h.allocate(kMiB);
  ASSERT_NE(big, nullptr);
  h.deallocate(big);
  const HeapStats after = h.stats();
  EXPECT_GE(nlohmann::json::parse(after.json)["counters"]["decays"].get<std::int64_t>(), 1);
  // Most of the kept slabs (the front caches hold objects that keep some in
  // use; 941 pages of 1,104 slabs came back here).
  EXPECT_GT(after.free_bytes, before.free_bytes + kept / 4 * h.page_size())
      << "decay did not give the empty slabs back";
  EXPECT_LT(after.journal_high_water, section_bound);
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

TEST_P(Backings, GrowsPastItsInitialSizeWithoutMoving) {
  MappedHeap h = MappedHeap::open(create_options());
  std::byte* base = h.base();
  std::vector<void*> blocks;
  for (int i = 0; i < 12; ++i) {  // 12 x 8 MiB in a heap created with 16 MiB
    void* p = h.allocate(8 * kMiB);
    ASSERT_NE(p, nullptr) << i;
    std::memset(p, i, 8 * kMiB);
    blocks.push_back(p);
  }
  EXPECT_EQ(h.base(), base);
  EXPECT_GT(h.stats().committed_bytes, 96 * kMiB);
  EXPECT_TRUE(h.check().ok);
  // Past the maximum: null, not a crash.
  EXPECT_EQ(h.allocate(600 * kMiB), nullptr);
  for (void* p : blocks) h.deallocate(p);
}

// Another open of the same heap (here in this process; another process in
// the kill tests) grows it, hands over objects from the grown part and
// leaves some in the shared front caches: this open's usable_size and check
// must take them for what they are, not for strangers past the size it saw
// last (check called them corrupt).
TEST(MappedHeapGrowth, CheckSeesWhatAnotherOpenGrew) {
  TempDir dir;
  const std::string path = dir.file("grown.heap");
  MappedHeap a = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(16 * kMiB, 512 * kMiB));
  MappedHeap b = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
  const std::uint64_t seen = b.stats().committed_bytes;
  std::vector<void*> large, small;
  for (int i = 0; i < 8; ++i) large.push_back(a.allocate(8 * kMiB));
  for (int i = 0; i < 4000; ++i) small.push_back(a.allocate(64));
  ASSERT_EQ(std::count(large.begin(), large.end(), nullptr) + std::count(small.begin(), small.end(), nullptr), 0);
  std::uint64_t beyond = 0;
  for (void* p : small) beyond += static_cast<std::uint64_t>(static_cast<std::byte*>(p) - a.base()) >= seen;
  ASSERT_GT(beyond, 0u) << "no small object past the size b saw: the test tests nothing";
  for (void* p : small)  // the same object in b's view of the heap
    ASSERT_GE(b.usable_size(b.base() + (static_cast<std::byte*>(p) - a.base())), 64u);
  for (void* p : small) a.deallocate(p);  // into the shared caches
  const HeapCheck chk = b.check();
  EXPECT_TRUE(chk.ok) << chk.message;
  EXPECT_TRUE(a.check().ok);
  for (void* p : large) a.deallocate(p);
}

// A file heap asks for no readahead (MADV_RANDOM, DESIGN contract 9) over
// its whole reservation: the part it grows into, here or through another
// open, is read and written as randomly as the part it started with. The
// kernel shows the advice as "rr" in each mapping's VmFlags (counted by
// pal::smaps_range): checked in the open that grew the heap, in one opened
// after, and in a private view.
TEST(MappedHeapGrowth, NoReadaheadInTheGrownPart) {
  TempDir dir;
  const std::string path = dir.file("random.heap");
  MappedHeap a = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(16 * kMiB, 512 * kMiB));
  std::vector<void*> large;
  for (int i = 0; i < 8; ++i) large.push_back(a.allocate(8 * kMiB));
  ASSERT_EQ(std::count(large.begin(), large.end(), nullptr), 0);
  ASSERT_GT(a.stats().committed_bytes, 16 * kMiB) << "the heap did not grow: the test tests nothing";
  MappedHeap b = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
  // A private view: the file mapped up to its length, anonymous memory past it.
  MappedHeap c = MappedHeap::open(HeapOptions::file(path, HeapMode::copy_on_write));
  for (MappedHeap* h : {&a, &b, &c}) {
    auto t = pal::smaps_range(h->base(), h->stats().region_bytes);
    ASSERT_TRUE(t.ok());
    ASSERT_GT(t->vmas, 0u);
    EXPECT_EQ(t->random_read_vmas, t->vmas) << "of " << t->vmas << " mappings of the reservation";
  }
  for (void* p : large) a.deallocate(p);
}

TEST_P(Backings, NamedObjects) {
  MappedHeap h = MappedHeap::open(create_options());
  Point* p = h.construct<Point>("origin")(3, 4);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->x, 3);
  EXPECT_EQ(h.find<Point>("origin"), p);
  EXPECT_EQ(h.find_or_construct<Point>("origin")(9, 9), p);  // the existing one
  EXPECT_EQ(h.find<Point>("nowhere"), nullptr);
  EXPECT_THROW(h.construct<Point>("origin")(1, 1), error);  // exists
  try {
    (void)h.find<double>("origin");
    ADD_FAILURE() << "a type mismatch must throw";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("origin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Point"), std::string::npos) << e.what();
  }
  // Many names: the directory grows.
  for (int i = 0; i < 1000; ++i) *h.construct<long>("n" + std::to_string(i))() = i;
  for (int i = 0; i < 1000; i += 7) ASSERT_EQ(*h.find<long>("n" + std::to_string(i)), i);
  auto names = h.names();
  ASSERT_EQ(names.size(), 1001u);
  EXPECT_EQ(names[0].name, "n0");
  EXPECT_EQ(names[0].size, sizeof(long));
  EXPECT_EQ(names[0].type, "long int");
  for (int i = 0; i < 1000; i += 2) ASSERT_TRUE(h.destroy<long>("n" + std::to_string(i)));
  EXPECT_FALSE(h.destroy<long>("n0"));
  EXPECT_EQ(h.names().size(), 501u);
  EXPECT_TRUE(h.destroy<Point>("origin"));
  const HeapCheck c = h.check();
  EXPECT_TRUE(c.ok) << c.message;
}

TEST_P(Backings, ReopenRestoresNamedObjects) {
  HeapOptions again;
  std::uint64_t off = 0;
  {
    MappedHeap h = MappedHeap::open(create_options());
    if (!reopen_options(h, again)) GTEST_SKIP() << kind_name(GetParam()) << " heaps cannot be reopened by name";
    Point* p = h.construct<Point>("p")(7, 8);
    off = h.offset_of(p);
    auto* big = static_cast<char*>(h.allocate(3 * kMiB));
    std::strcpy(big, "still here");
    *h.construct<std::uint64_t>("big")() = h.offset_of(big);
    h.close();
  }
  MappedHeap h = MappedHeap::open(again);
  EXPECT_FALSE(h.open_report().created);
  EXPECT_FALSE(h.open_report().recovered) << "a clean close needs no recovery";
  Point* p = h.find<Point>("p");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(h.offset_of(p), off);
  EXPECT_EQ(p->y, 8);
  EXPECT_STREQ(static_cast<char*>(h.at(*h.find<std::uint64_t>("big"))), "still here");
  EXPECT_TRUE(h.check().ok);
}

TEST_P(Backings, SharedWithAForkedChild) {
  MappedHeap h = MappedHeap::open(create_options());
  auto* counter = h.construct<std::atomic<long>>("counter")(0);
  const int rc = test::in_child([&] {
    // The child uses the parent's open heap (inherited), allocating at once with it.
    for (int i = 0; i < 2000; ++i) {
      void* p = h.allocate(static_cast<std::size_t>(16 + i % 500));
      if (p == nullptr) return 1;
      if (i % 3 != 0) h.deallocate(p);
      counter->fetch_add(1);
    }
    h.construct<int>("from-child")(42);
    return 0;
  });
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(counter->load(), 2000);
  ASSERT_NE(h.find<int>("from-child"), nullptr);
  EXPECT_EQ(*h.find<int>("from-child"), 42);
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

INSTANTIATE_TEST_SUITE_P(MappedHeap, Backings,
                         ::testing::Values(Kind::file, Kind::shm, Kind::memfd, Kind::anonymous),
                         [](const ::testing::TestParamInfo<Kind>& i) { return kind_name(i.param); });

// ---------------------------------------------------------------- memfd by descriptor

TEST(MappedHeapMemfd, AnotherOpenOfTheDescriptorSeesTheHeap) {
  MappedHeap a = MappedHeap::open(HeapOptions::memfd("by-fd").with_size(16 * kMiB, 64 * kMiB));
  a.construct<int>("x")(5);
  // What a process receiving the descriptor does (here: the same process, a second view).
  int memfd = -1;
  for (int i = 3; i < 1024 && memfd < 0; ++i) {
    char link[64];
    const std::string p = "/proc/self/fd/" + std::to_string(i);
    const ssize_t n = ::readlink(p.c_str(), link, sizeof(link) - 1);
    if (n > 0 && std::string(link, static_cast<std::size_t>(n)).find("memfd:by-fd") != std::string::npos) memfd = i;
  }
  ASSERT_GE(memfd, 0);
  const int passed = ::dup(memfd);  // as if received over a UNIX socket
  a.close();  // the last close marks it clean; the passed descriptor keeps it alive
  MappedHeap b = MappedHeap::open(HeapOptions::from_fd(passed));
  ASSERT_NE(b.find<int>("x"), nullptr);
  EXPECT_EQ(*b.find<int>("x"), 5);
  EXPECT_FALSE(b.open_report().recovered);
  b.close();
  ::close(passed);
}

// ---------------------------------------------------------------- many processes

// Six processes of two threads each allocate, free, construct and destroy
// in one heap at once; the heap starts small and grows meanwhile.
TEST(MappedHeapProcesses, ProcessesAllocateAndConstructAtOnce) {
  TempDir dir;
  const std::string path = dir.file("shared.heap");
  std::uint64_t initial = 0;
  {
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(8 * kMiB, 256 * kMiB));
    h.construct<std::atomic<int>>("started")(0);
    initial = h.stats().committed_bytes;
  }
  constexpr int kProcs = 6, kThreads = 2;
  std::vector<pid_t> kids;
  for (int c = 0; c < kProcs; ++c) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      std::atomic<int> rc{0};
      try {
        MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
        auto* started = h.find<std::atomic<int>>("started");
        started->fetch_add(1);
        while (started->load() < kProcs) std::this_thread::yield();  // all at once
        auto work = [&](int t) {
          const int me = c * kThreads + t;
          const std::string prefix = "c" + std::to_string(c) + "t" + std::to_string(t) + "-";
          std::mt19937 rng(static_cast<unsigned>(me));
          std::vector<void*> mine;
          for (int i = 0; i < 20000; ++i) {
            if (mine.size() < 200 || rng() % 2) {
              const std::size_t n = rng() % 8 == 0 ? 40000 + rng() % 200000 : 1 + rng() % 2000;
              void* p = h.allocate(n);
              if (p == nullptr) { rc = 2; return; }
              std::memset(p, me, std::min<std::size_t>(n, 64));
              mine.push_back(p);
            } else {
              const std::size_t k = rng() % mine.size();
              if (static_cast<unsigned char*>(mine[k])[0] != me) { rc = 3; return; }
              h.deallocate(mine[k]);
              mine[k] = mine.back();
              mine.pop_back();
            }
            if (i % 500 == 0) h.construct<int>(prefix + std::to_string(i))(i);
            if (i % 1000 == 500) h.destroy<int>(prefix + std::to_string(i - 500));
          }
          for (void* p : mine) h.deallocate(p);
          // Every name of this thread's is findable from here too.
          if (h.find<int>(prefix + "19500") == nullptr) rc = 4;
        };
        std::thread second(work, 1);
        work(0);
        second.join();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", c, e.what());
        rc = 5;
      }
      ::_exit(rc.load());
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) EXPECT_EQ(test::wait_child(k), 0);
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
  EXPECT_FALSE(h.open_report().recovered);
  EXPECT_GT(h.stats().committed_bytes, initial) << "the heap grew while they all used it";
  const HeapCheck c = h.check();
  EXPECT_TRUE(c.ok) << c.message;
  // 40 constructed per thread, 20 destroyed: 20 left each, plus "started".
  EXPECT_EQ(h.names().size(), 1u + kProcs * kThreads * 20u);
}

TEST(MappedHeapProcesses, ExecedProcessOpensTheHeap) {
  TempDir dir;
  const std::string path = dir.file("exec.heap");
  {
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(16 * kMiB));
    h.construct<int>("answer")(41);
  }
  // A fresh program image (no inherited state): this test binary, told by
  // the environment to bump "answer" and exit.
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("MAPHEAP_TEST_EXEC_HEAP", path.c_str(), 1);
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) ::_exit(90);
    self[n] = '\0';
    ::execl(self, self, "--gtest_filter=MappedHeapProcesses.ExecChild", static_cast<char*>(nullptr));
    ::_exit(91);
  }
  ASSERT_EQ(test::wait_child(pid), 0);
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
  EXPECT_EQ(*h.find<int>("answer"), 42);
  EXPECT_TRUE(h.check().ok);
}

TEST(MappedHeapProcesses, ExecChild) {
  const char* path = std::getenv("MAPHEAP_TEST_EXEC_HEAP");
  if (path == nullptr) GTEST_SKIP() << "run by ExecedProcessOpensTheHeap";
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
  int* a = h.find<int>("answer");
  ASSERT_NE(a, nullptr);
  *a += 1;
}

// ---------------------------------------------------------------- crashes

// A child that allocates, frees and constructs until it is killed.
// ready_fd, if given, gets a byte once the child holds blocks (after its
// first 64 operations), and is closed.
[[noreturn]] void churn(MappedHeap& h, unsigned seed, int ready_fd = -1) {
  std::mt19937 rng(seed);
  std::vector<void*> mine;
  for (long i = 0;; ++i) {
    if (i == 64 && ready_fd >= 0) {
      (void)!::write(ready_fd, "r", 1);
      ::close(ready_fd);
    }
    const unsigned op = rng() % 16;
    if (op < 8 || mine.empty()) {
      const std::size_t n = rng() % 10 == 0 ? 33000 + rng() % 3000000 : 1 + rng() % 3000;
      if (void* p = h.allocate(n)) mine.push_back(p);
    } else if (op < 14) {
      const std::size_t k = rng() % mine.size();
      h.deallocate(mine[k]);
      mine[k] = mine.back();
      mine.pop_back();
    } else if (op == 14) {
      h.find_or_construct<long>("k" + std::to_string(rng() % 64))(i);
    } else {
      (void)h.destroy<long>("k" + std::to_string(rng() % 64));
    }
    if (mine.size() > 400) {
      for (void* p : mine) h.deallocate(p);
      mine.clear();
    }
  }
}

// A child process that is killed and reaped when the object goes, so that a
// failed assertion in the parent never leaves a churning child behind.
struct Killed {
  explicit Killed(pid_t p) : pid(p) {}
  Killed(const Killed&) = delete;
  Killed& operator=(const Killed&) = delete;
  ~Killed() {
    if (pid > 0) (void)kill_now();
  }
  int kill_now() {
    ::kill(pid, SIGKILL);
    const int rc = test::wait_child(pid);
    pid = -1;
    return rc;
  }
  pid_t pid;
};

// A child that opens the heap at `path` itself and churns in it until it is
// killed; returned once the child has the heap open (`opened` false if it
// died first), so that its death always leaves the heap to recover.
struct Churner {
  Killed child;
  bool opened;
};
Churner spawn_churner(const std::string& path, unsigned seed) {
  int ready[2];
  if (::pipe(ready) != 0) return {Killed(-1), false};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ready[0]);
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
    (void)!::write(ready[1], "x", 1);
    churn(h, seed);
  }
  ::close(ready[1]);
  char c;
  const bool opened = pid > 0 && ::read(ready[0], &c, 1) == 1;
  ::close(ready[0]);
  return {Killed(pid), opened};
}

int kill_rounds() {
  const char* s = std::getenv("MAPHEAP_KILL_ROUNDS");
  return s != nullptr ? std::atoi(s) : 200;
}

// The child opens the heap itself, so every reopen after its death is by a
// process alone: recovery runs at open.
TEST(MappedHeapCrash, KillLoopRecoversAtReopen) {
  TempDir dir;
  const std::string path = dir.file("kill.heap");
  MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(32 * kMiB, kMiB * 1024)).close();
  std::mt19937 rng(7);
  int recovered = 0, rolled = 0;
  for (int round = 0; round < kill_rounds(); ++round) {
    auto [child, opened] = spawn_churner(path, static_cast<unsigned>(round));
    ASSERT_TRUE(opened) << "round " << round << ": the child did not open the heap";
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    ASSERT_EQ(child.kill_now(), 128 + SIGKILL);
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
    ASSERT_TRUE(h.open_report().recovered) << "round " << round;
    recovered += 1;
    rolled += h.open_report().rolled_back > 0;
    const HeapCheck chk = h.check();
    ASSERT_TRUE(chk.ok) << "round " << round << ": " << chk.message;
    // Still a working heap.
    void* p = h.allocate(100);
    ASSERT_NE(p, nullptr);
    h.deallocate(p);
  }
  EXPECT_EQ(recovered, kill_rounds());
  {
    const HeapStats st = MappedHeap::open(HeapOptions::file(path, HeapMode::open)).stats();
    EXPECT_GT(st.journal_sections, 0u);
    EXPECT_LT(st.journal_high_water, st.journal_capacity / 4) << "sections stay far from the journal's size";
    std::printf("journal: %llu sections, %llu taken back, at most %llu entries in one (capacity %llu)\n",
                static_cast<unsigned long long>(st.journal_sections),
                static_cast<unsigned long long>(st.journal_rollbacks),
                static_cast<unsigned long long>(st.journal_high_water),
                static_cast<unsigned long long>(st.journal_capacity));
    std::fflush(stdout);
  }
  std::printf("kill loop: %d rounds, %d with a critical section taken back\n", recovered, rolled);
  std::fflush(stdout);  // children forked later must not inherit the line
}

// The parent keeps the heap open and allocating while children die: the
// survivors take the dead holder's lock (EOWNERDEAD) and carry on.
TEST(MappedHeapCrash, SurvivorsKeepAllocatingWhileOthersDie) {
  TempDir dir;
  const std::string path = dir.file("survive.heap");
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(32 * kMiB, kMiB * 1024));
  std::mt19937 rng(11);
  std::uint64_t reclaimed = 0;
  for (int round = 0; round < kill_rounds() / 4; ++round) {
    // The child is killed at a random moment after it has started to hold
    // blocks: a fork()ed child can take longer than the random window to
    // get going (under TSan it did, in every round), and then leaks nothing.
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      churn(h, static_cast<unsigned>(round) + 1000, ready[1]);
    }
    Killed child{pid};
    ::close(ready[1]);
    pollfd pf{ready[0], POLLIN, 0};
    const int got = ::poll(&pf, 1, 60'000);
    ::close(ready[0]);
    ASSERT_EQ(got, 1) << "round " << round << ": the child did not start churning within a minute";
    // Meanwhile this process allocates too.
    std::vector<void*> mine;
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 4000);
    while (std::chrono::steady_clock::now() < until) {
      void* p = h.allocate(rng() % 4 == 0 ? 40000 : 64);
      ASSERT_NE(p, nullptr) << "round " << round;
      mine.push_back(p);
    }
    ASSERT_EQ(child.kill_now(), 128 + SIGKILL);
    for (void* p : mine) h.deallocate(p);
    h.find_or_construct<int>("survivor")(1);  // the directory lock too
    const HeapCheck chk = h.check();
    ASSERT_TRUE(chk.ok) << "round " << round << ": " << chk.message;
    // Each dead child leaks what it held (up to 400 blocks of up to 3 MiB):
    // alone again, this process takes it back now and then, or a long run
    // (make stress) fills the heap.
    if (round % 8 == 7) reclaimed += h.gc().freed_blocks;
  }
  if (kill_rounds() / 4 >= 8) {
    EXPECT_GT(reclaimed, 0u);
  }
}

// Death at every journaled store of a run of operations: the next open
// rolls the section back and every invariant holds.
TEST(MappedHeapCrash, DeathAtEveryStoreOfASectionIsTakenBack) {
  TempDir dir;
  const std::string path = dir.file("points.heap");
  MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(16 * kMiB, 256 * kMiB)).close();
  int died = 0;
  for (long n = 0; n < 600; n += 1 + n / 40) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
      core::Journal::die_at_store(n);
      std::vector<void*> v;
      for (int i = 0; i < 300; ++i) v.push_back(h.allocate(i % 5 == 0 ? 70000 : 24 + 8 * i));
      h.construct<int>("point-" + std::to_string(n))(1);
      for (void* p : v) h.deallocate(p);
      (void)h.destroy<int>("point-" + std::to_string(n));
      core::Journal::die_at_store(-1);
      ::_exit(0);
    }
    const int rc = test::wait_child(pid);
    ASSERT_TRUE(rc == 86 || rc == 0) << rc;
    died += rc == 86;
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
    const HeapCheck chk = h.check();
    ASSERT_TRUE(chk.ok) << "death at store " << n << ": " << chk.message;
  }
  EXPECT_GT(died, 20);
}

// ---------------------------------------------------------------- modes

// The first finds after an open populate the pages they read outside the
// directory (the entry's strings; then, once the directory lock is released,
// the object's first page) instead of faulting on them: counted with the
// kernel's page-fault event, which a populate call does not raise, in a
// fork()ed child whose open maps the heap anew. The find and the object's
// first read are counted apart: each populate is checked on its own.
// Sanitizers fault on their own shadow pages: skipped there.
TEST(MappedHeapOpen, FirstFindsPopulateWhatTheyRead) {
  if (test::kUnderSanitizer) GTEST_SKIP() << "a sanitizer's shadow memory takes page faults of its own";
  struct Big {
    char bytes[256 * 1024];  // a large block: a run of its own, aligned to its size
  };
  TempDir dir;
  const std::string path = dir.file("touch.heap");
  const std::string warm(299, 'w'), cold(300, 'x');  // names of one size class
  {
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(64 * kMiB, 64 * kMiB));
    h.construct<Big>(warm.c_str())()->bytes[0] = 'w';
    // Blocks between the two: the kernel maps up to 64 KiB around a page
    // it faults in or populates, and that must not reach the second
    // object's pages from the first's (strings of that class included).
    ASSERT_EQ(h.names().size(), 1u);
    const std::size_t strings = cold.size() + 1 + h.names()[0].type.size() + 1;  // the entry's name and type
    for (int i = 0; i < 4; ++i) ASSERT_NE(h.allocate(kMiB), nullptr);
    for (int i = 0; i < 512; ++i) ASSERT_NE(h.allocate(strings), nullptr);  // in the strings' class
    h.construct<Big>(cold.c_str())()->bytes[0] = 'x';
    h.close();
  }
  const int rc = test::in_child([&] {
    const bench::PageFaultCounter counter;
    if (counter.read() < 0) return 100;  // not allowed here
    MappedHeap h = MappedHeap::open(HeapOptions::file(path));
    // The same code, stack and malloc pages, run once before counting.
    const Big* w = h.find<Big>(warm.c_str());
    if (w == nullptr || w->bytes[0] != 'w') return 2;
    const std::int64_t before = counter.read();
    const Big* x = h.find<Big>(cold.c_str());
    const std::int64_t found = counter.read();
    const char seen = x != nullptr ? x->bytes[0] : 0;
    const std::int64_t read = counter.read();
    if (seen != 'x') return 3;
    if (found != before) {
      std::fprintf(stderr, "the find took %lld page faults\n", static_cast<long long>(found - before));
      return 4;
    }
    if (read != found) {
      std::fprintf(stderr, "the object's first read took %lld page faults\n", static_cast<long long>(read - found));
      return 5;
    }
    return 0;
  });
  if (rc == 100) GTEST_SKIP() << "perf_event_open (page faults) is not allowed here";
  EXPECT_EQ(rc, 0) << "2, 3: an object is missing; 4: the find faulted; 5: the object's read faulted (see stderr)";
}

TEST(MappedHeapModes, ReadOnlyAndCopyOnWrite) {
  TempDir dir;
  const std::string path = dir.file("modes.heap");
  {
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(16 * kMiB));
    h.construct<int>("v")(1);
  }
  {
    MappedHeap r = MappedHeap::open(HeapOptions::file(path, HeapMode::read_only));
    ASSERT_NE(r.find<int>("v"), nullptr);
    EXPECT_EQ(*r.find<int>("v"), 1);
    EXPECT_EQ(r.allocate(10), nullptr);
    EXPECT_THROW(r.construct<int>("w")(2), error);
    EXPECT_TRUE(r.check().ok);
  }
  {
    MappedHeap c = MappedHeap::open(HeapOptions::file(path, HeapMode::copy_on_write));
    *c.find<int>("v") = 99;
    c.construct<int>("private")(3);
    EXPECT_NE(c.allocate(1000), nullptr);
    EXPECT_TRUE(c.check().ok);
  }
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
  EXPECT_EQ(*h.find<int>("v"), 1) << "a copy-on-write view never writes back";
  EXPECT_EQ(h.find<int>("private"), nullptr);
}

TEST(MappedHeapModes, FilesAre0600AndSymlinksAreRefused) {
  TempDir dir;
  const std::string path = dir.file("perm.heap");
  MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(16 * kMiB)).close();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string link = dir.file("link.heap");
  ASSERT_EQ(::symlink(path.c_str(), link.c_str()), 0);
  auto r = MappedHeap::try_open(HeapOptions::file(link, HeapMode::open));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.err().what()).find("link.heap"), std::string::npos) << r.err().what();
  HeapOptions follow = HeapOptions::file(link, HeapMode::open);
  follow.follow_symlinks = true;
  EXPECT_TRUE(MappedHeap::try_open(follow).ok());
  EXPECT_FALSE(MappedHeap::try_open(HeapOptions::file(dir.file("new.heap"), HeapMode::open)).ok());
  EXPECT_FALSE(MappedHeap::try_open(HeapOptions::file(path, HeapMode::create)).ok()) << "exists";
}

// ---------------------------------------------------------------- gc

struct Node {
  offset_ptr<Node> next;
  std::int64_t payload = 0;
  std::int64_t small[6] = {8, 16, 24, 32, 40, 48};  // integers that look like nearby offsets
};

TEST(MappedHeapGc, FreesWhatNoNamedObjectReaches) {
  TempDir dir;
  const std::string path = dir.file("gc.heap");
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(32 * kMiB));
  auto* head = h.construct<Node>("list")();
  Node* tail = head;
  for (int i = 0; i < 100; ++i) {  // a list, some nodes large
    auto* n = new (h.allocate(i % 10 == 0 ? 100000 : sizeof(Node))) Node{};
    n->payload = i;
    tail->next = n;
    tail = n;
    // Leaked blocks right after live ones, where the small integers "point".
    ASSERT_NE(h.allocate(i % 10 == 0 ? 50000 : sizeof(Node)), nullptr);
  }
  const GcReport r = h.gc();
  EXPECT_EQ(r.freed_blocks, 100u);
  // The directory table, the name block, the head and 100 nodes.
  EXPECT_EQ(r.live_blocks, 103u);
  const HeapCheck c = h.check();
  EXPECT_TRUE(c.ok) << c.message;
  int count = 0;
  for (const Node* n = head->next.get(); n != nullptr; n = n->next.get()) ASSERT_EQ(n->payload, count++);
  EXPECT_EQ(count, 100);
  // With interior pointers kept too, the same heap keeps the same blocks
  // here (the integers carry no tag).
  EXPECT_EQ(h.gc(GcPointers::interior).freed_blocks, 0u);
  EXPECT_EQ(h.gc().freed_blocks, 0u) << "nothing more to free";
}

TEST(MappedHeapGc, RefusedWhileAnotherProcessHasItOpen) {
  TempDir dir;
  const std::string path = dir.file("busy.heap");
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(16 * kMiB));
  int go[2], done[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    MappedHeap other = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
    (void)!::write(go[1], "x", 1);
    char c;
    (void)!::read(done[0], &c, 1);
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(go[0], &c, 1), 1);
  try {
    (void)h.gc();
    ADD_FAILURE() << "gc ran with another process attached";
  } catch (const error& e) {
    EXPECT_EQ(e.code().value(), EBUSY);
    EXPECT_NE(std::string(e.what()).find("other processes"), std::string::npos) << e.what();
  }
  (void)!::write(done[1], "x", 1);
  EXPECT_EQ(test::wait_child(pid), 0);
  // The child left without closing: listed, and known to be gone.
  const auto procs = h.stats().processes;
  ASSERT_EQ(procs.size(), 2u);
  EXPECT_EQ(std::count_if(procs.begin(), procs.end(), [](const ProcessInfo& p) { return p.alive; }), 1);
  EXPECT_NO_THROW((void)h.gc());
}

TEST(MappedHeapGc, ReclaimsWhatKilledProcessesLeaked) {
  TempDir dir;
  const std::string path = dir.file("leaks.heap");
  {
    MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(32 * kMiB, kMiB * 1024));
    h.construct<int>("keep")(1);
  }
  // Each child is killed only once it has the heap open: its death leaves
  // the heap to recover and (after it churned for a few ms) blocks no named
  // object reaches. Killed before it opened (nothing stopped that before),
  // it would leave neither.
  for (int round = 0; round < 20; ++round) {
    auto [child, opened] = spawn_churner(path, static_cast<unsigned>(round) + 77);
    ASSERT_TRUE(opened) << "round " << round << ": the child did not open the heap";
    std::this_thread::sleep_for(std::chrono::milliseconds(2 + round % 5));
    ASSERT_EQ(child.kill_now(), 128 + SIGKILL);
  }
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::open));
  EXPECT_TRUE(h.open_report().recovered);
  const std::uint64_t used_before = h.stats().used_bytes;
  const GcReport r = h.gc();
  EXPECT_GT(r.freed_blocks, 0u) << "the churners' blocks were never named";
  EXPECT_LT(h.stats().used_bytes, used_before);
  ASSERT_NE(h.find<int>("keep"), nullptr);
  const HeapCheck c = h.check();
  EXPECT_TRUE(c.ok) << c.message;
}

// A shared heap fills its cache arrays to their capacity (engine v4: cache
// floor 32), where the process heap stops at 16 for the big classes: a miss
// here takes the lock in the mapping and journals its slab operations. 200
// blocks of 8 KiB freed by one thread leave at least 33 of them cached (an
// array drained to 16 at its last overflow, and the transfer slot's batch of
// 17); a floor of 16 keeps at most 25 on one CPU (16, and a batch of 9).
// The front caches are per CPU (rseq) where the C library registers rseq,
// and per thread where it does not: make test runs this binary's process
// and crash tests both ways (tests/CMakeLists.txt: GLIBC_TUNABLES turns
// rseq off for the "per_thread:" ones).
TEST(MappedHeapCache, PerCpuWithRseqPerThreadWithout) {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.pthread.rseq=0") != nullptr) {
    EXPECT_FALSE(cache::rseq_available()) << "GLIBC_TUNABLES did not turn rseq off";
  }
  TempDir dir;
  // Room for the slots of both kinds on a machine of hundreds of CPUs (a
  // heap too small for them has none).
  MappedHeap h = MappedHeap::open(
      HeapOptions::file(dir.file("mode.heap"), HeapMode::create).with_size(256 * kMiB, kMiB * 1024));
  const nlohmann::json j = nlohmann::json::parse(h.stats().json);
  EXPECT_EQ(j["cache"]["mode"], cache::rseq_available() ? "per-cpu" : "per-thread");
}

TEST(MappedHeapCache, SharedHeapFillsCacheArraysToCapacity) {
  TempDir dir;
  MappedHeap h =
      MappedHeap::open(HeapOptions::file(dir.file("cache.heap"), HeapMode::create).with_size(32 * kMiB, kMiB * 1024));
  std::vector<void*> v;
  for (int i = 0; i < 200; ++i) {
    v.push_back(h.allocate(8192));
    ASSERT_NE(v.back(), nullptr);
  }
  for (void* p : v) h.deallocate(p);
  const nlohmann::json j = nlohmann::json::parse(h.stats().json);
  if (j["cache"]["mode"] == "none") GTEST_SKIP() << "no front caches here";
  EXPECT_EQ(j["cache"]["floor"], 32);
  std::uint64_t cached = 0;
  for (const auto& c : j["classes"])
    if (c["size"] == 8192) cached = c["cached"].get<std::uint64_t>();
  EXPECT_GE(cached, 33u);
  EXPECT_LE(cached, 200u);
  const HeapCheck chk = h.check();
  EXPECT_TRUE(chk.ok) << chk.message;
}

// ---------------------------------------------------------------- snapshot

TEST(MappedHeapSnapshot, ACopyTakenWhileOpenOpensAsAHeap) {
  TempDir dir;
  const std::string path = dir.file("live.heap"), snap = dir.file("snap.heap");
  MappedHeap h = MappedHeap::open(HeapOptions::file(path, HeapMode::create).with_size(32 * kMiB, kMiB * 1024));
  for (int i = 0; i < 100; ++i) h.construct<int>("s" + std::to_string(i))(i);
  std::vector<void*> cached;
  for (int i = 0; i < 1000; ++i) cached.push_back(h.allocate(48));
  for (void* p : cached) h.deallocate(p);  // objects in the caches
  h.snapshot(snap);
  *h.find<int>("s5") = 500;  // after the snapshot: not in it
  EXPECT_THROW(h.snapshot(snap), error) << "an existing destination is refused";
  MappedHeap s = MappedHeap::open(HeapOptions::file(snap, HeapMode::open));
  EXPECT_TRUE(s.open_report().recovered);
  EXPECT_EQ(*s.find<int>("s5"), 5);
  EXPECT_EQ(s.names().size(), 100u);
  const HeapCheck chk = s.check();
  EXPECT_TRUE(chk.ok) << chk.message;
  EXPECT_NE(s.allocate(48), nullptr);
}

// ---------------------------------------------------------------- untrusted files

class BadFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("victim.heap");
    MappedHeap h = MappedHeap::open(HeapOptions::file(path_, HeapMode::create).with_size(16 * kMiB));
    h.construct<int>("x")(1);
  }
  void patch(std::size_t off, const void* bytes, std::size_t n) {
    const int fd = ::open(path_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes, n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
    ::close(fd);
  }
  heap::HeapHeader header() {
    heap::HeapHeader h;
    const int fd = ::open(path_.c_str(), O_RDONLY);
    EXPECT_EQ(::pread(fd, &h, sizeof(h), 0), static_cast<ssize_t>(sizeof(h)));
    ::close(fd);
    return h;
  }
  // Opening must fail with a message naming the file and containing `why`.
  void expect_refused(const std::string& why) {
    for (HeapMode m : {HeapMode::open, HeapMode::read_only, HeapMode::open_or_create}) {
      auto r = MappedHeap::try_open(HeapOptions::file(path_, m));
      ASSERT_FALSE(r.ok()) << "opened a bad file (" << why << ")";
      const std::string msg = r.err().what();
      EXPECT_NE(msg.find(path_), std::string::npos) << msg;
      EXPECT_NE(msg.find(why), std::string::npos) << msg;
    }
  }
  TempDir dir_;
  std::string path_;
};

TEST_F(BadFiles, Truncated) {
  ASSERT_EQ(::truncate(path_.c_str(), 1000), 0);
  expect_refused("truncated");
}
TEST_F(BadFiles, TruncatedInsideTheAllocator) {
  ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(header().engine_offset + 4096)), 0);
  expect_refused("truncated");
}
TEST_F(BadFiles, Foreign) {
  const char elf[] = "\x7f" "ELF\x02\x01\x01 not a heap at all, but long enough";
  patch(0, elf, sizeof(elf));
  expect_refused("not a mapheap heap");
}
TEST_F(BadFiles, Empty) {
  std::vector<char> zeros(4096, 0);
  patch(0, zeros.data(), zeros.size());
  expect_refused("not a mapheap heap");
}
TEST_F(BadFiles, FutureVersion) {
  heap::HeapHeader h = header();
  h.version = heap::kHeapVersion + 1;
  h.checksum = heap::header_checksum(h);
  patch(0, &h, offsetof(heap::HeapHeader, clean));
  expect_refused("newer mapheap");
}
TEST_F(BadFiles, UnknownIncompatibleFeature) {
  heap::HeapHeader h = header();
  h.incompat |= std::uint64_t{1} << 40;
  h.checksum = heap::header_checksum(h);
  patch(0, &h, offsetof(heap::HeapHeader, clean));
  expect_refused("features");
}
// A newer engine's heap carries its own layout bit instead of this build's:
// a feature this build does not have, not a corrupt header.
TEST_F(BadFiles, NewerEngineLayout) {
  heap::HeapHeader h = header();
  h.incompat = (h.incompat & ~heap::kIncompatEngineV4) | std::uint64_t{1} << 5;
  h.checksum = heap::header_checksum(h);
  patch(0, &h, offsetof(heap::HeapHeader, clean));
  expect_refused("features this build does not have");
}
// Heaps of the older engine layouts (v1: size classes to 32 KiB; v2 and v3:
// cache arrays of 4 and 16 objects for the big classes) are refused with that
// reason, not misread with this build's classes and cache slots; an engine v4
// heap without the offset_ptr v2 bit, for its null pointers.
TEST_F(BadFiles, OlderEngineLayouts) {
  const std::pair<std::uint64_t, const char*> older[] = {
      {heap::kIncompatEngineV1, "older mapheap (engine v1"},
      {heap::kIncompatEngineV2, "older mapheap (engine v2"},
      {heap::kIncompatEngineV3 | heap::kIncompatOffsetPtrV2, "older mapheap (engine v3"},
      {heap::kIncompatEngineV4, "older mapheap (offset_ptr v1"}};
  for (const auto& [bit, why] : older) {
    SCOPED_TRACE(why);
    heap::HeapHeader h = header();
    h.incompat = bit;
    h.checksum = heap::header_checksum(h);
    patch(0, &h, offsetof(heap::HeapHeader, clean));
    expect_refused(why);
  }
}
TEST_F(BadFiles, CorruptHeaderByte) {
  heap::HeapHeader h = header();
  h.region_bytes ^= 0x1000;
  patch(0, &h, offsetof(heap::HeapHeader, checksum));
  expect_refused("checksum");
}
TEST_F(BadFiles, CorruptZoneHeader) {
  const std::uint64_t junk = 0x1234567890abcdefull;
  patch(header().engine_offset, &junk, sizeof(junk));
  expect_refused("corrupt allocator metadata");
}
TEST_F(BadFiles, CorruptJournalIsRefusedAndChangesNothing) {
  // A pending section (as a crash leaves it) whose one entry points past the file.
  const heap::HeapHeader h = header();
  core::JournalEntry e{};
  e.offset = h.region_bytes + 4096;
  e.length = 8;
  patch(h.zone_journal_offset + offsetof(core::JournalArea, entries), &e, sizeof(e));
  const std::uint32_t one = 1;
  patch(h.zone_journal_offset + offsetof(core::JournalArea, count), &one, sizeof(one));
  auto bytes = [&] {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string before = bytes();
  auto r = MappedHeap::try_open(HeapOptions::file(path_, HeapMode::open));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.err().what()).find("corrupt undo journal"), std::string::npos) << r.err().what();
  EXPECT_NE(std::string(r.err().what()).find(path_), std::string::npos) << r.err().what();
  EXPECT_TRUE(bytes() == before) << "a refused recovery must not change the file";
}

TEST_F(BadFiles, CorruptDirectoryIsReportedNotFollowed) {
  heap::HeapHeader h = header();
  const std::uint64_t far = h.region_bytes - 64;  // beyond the committed part
  patch(offsetof(heap::HeapHeader, directory), &far, sizeof(far));
  MappedHeap m = MappedHeap::open(HeapOptions::file(path_, HeapMode::open));
  try {
    (void)m.find<int>("x");
    ADD_FAILURE() << "followed a directory offset outside the heap";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("directory"), std::string::npos) << e.what();
  }
  const HeapCheck c = m.check();
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.message.find("directory"), std::string::npos) << c.message;
}
TEST_F(BadFiles, RandomGarbageNeverCrashes) {
  std::mt19937 rng(3);
  const heap::HeapHeader good = header();
  for (int i = 0; i < 50; ++i) {
    // A good heap, then a random stretch of its metadata damaged.
    fs::remove(path_);
    SetUp();
    std::vector<unsigned char> junk(64 + rng() % 512);
    for (auto& b : junk) b = static_cast<unsigned char>(rng());
    const std::size_t at = good.engine_offset + rng() % (2 * 4096 * 8);
    patch(at, junk.data(), junk.size());
    auto r = MappedHeap::try_open(HeapOptions::file(path_, HeapMode::open));
    if (r.ok()) (void)r.value().check();  // an error or a report, never a crash
  }
}

}  // namespace
}  // namespace mapheap
