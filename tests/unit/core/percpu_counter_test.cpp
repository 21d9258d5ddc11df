// PerCpuCounters: exact once the adders are done, whatever CPUs they ran on.
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <latch>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/percpu_counter.hpp"
#include "pal/pal.hpp"

namespace mapheap::core {
namespace {

TEST(PerCpuCounters, SumIsExactAfterConcurrentAdds) {
  PerCpuCounters<1> c;
  constexpr int kThreads = 4, kIters = 250000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) c.add(0, t % 2 == 0 ? 3 : -1);
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.read(0), std::int64_t{kIters} * (3 + 3 - 1 - 1));
  c.reset(0);
  EXPECT_EQ(c.read(0), 0);
}

// Pinned to each CPU in turn, adds land in that CPU's slot; the sum is the same.
TEST(PerCpuCounters, AddsFromEveryCpu) {
  PerCpuCounters<1, 8> c;
  cpu_set_t allowed;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  std::int64_t expected = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    std::thread t([&] {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      ASSERT_EQ(::sched_setaffinity(0, sizeof(one), &one), 0);
      EXPECT_EQ(pal::current_cpu(), static_cast<unsigned>(cpu));
      for (int i = 0; i < 1000; ++i) c.add(0, cpu + 1);
    });
    t.join();
    expected += 1000 * (cpu + 1);
  }
  EXPECT_EQ(c.read(0), expected);
}

// A set of counters: each sums its own adds, from threads adding to all of
// them at once; a reset clears one and leaves the others; a CPU's counters
// share its lines, not another CPU's.
TEST(PerCpuCounters, EachCounterOfASetIsExactAndSeparate) {
  PerCpuCounters<10> set;
  static_assert(PerCpuCounters<10>::kSlotBytes == 64 * 128);
  static_assert(PerCpuCounters<8>::kSlotBytes == 64 * 64);
  constexpr int kThreads = 4, kIters = 100000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i)
        for (unsigned k = 0; k < 10; ++k) set.add(k, k + 1);
    });
  for (auto& t : ts) t.join();
  for (unsigned k = 0; k < 10; ++k) EXPECT_EQ(set.read(k), std::int64_t{kThreads} * kIters * (k + 1)) << k;
  set.reset(3);
  EXPECT_EQ(set.read(3), 0);
  EXPECT_EQ(set.read(2), std::int64_t{kThreads} * kIters * 3);
  EXPECT_EQ(set.read(4), std::int64_t{kThreads} * kIters * 5);
}

// The slots are mapped at the first add, not when the set is built: a set
// that never counts reads zeros and costs no more than its own few lines.
TEST(PerCpuCounters, SlotsAreMappedAtTheFirstAdd) {
  PerCpuCounters<10> set;
  static_assert(sizeof(PerCpuCounters<10>) <= 256);
  EXPECT_FALSE(set.materialized());
  EXPECT_EQ(set.read(0), 0);
  set.reset(9);
  EXPECT_FALSE(set.materialized());
  set.add(9, 5);
  EXPECT_TRUE(set.materialized());
  EXPECT_TRUE(set.per_cpu());
  EXPECT_EQ(set.read(9), 5);
  EXPECT_EQ(set.read(0), 0);
}

// Threads racing to make the first add (released together): one mapping
// wins, the others' are unmapped, and no add is lost.
TEST(PerCpuCounters, FirstAddsRacingLoseNothing) {
  for (int round = 0; round < 50; ++round) {
    PerCpuCounters<2> c;
    std::latch start(4);
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 100; ++i) c.add(1, 1);
      });
    for (auto& t : ts) t.join();
    ASSERT_EQ(c.read(1), 400) << "round " << round;
    ASSERT_EQ(c.read(0), 0);
  }
}

// When the slots cannot be mapped (here: no address space left under
// RLIMIT_AS), every CPU adds to the one slot inside the set, and the sums are
// still exact.
TEST(PerCpuCounters, WithoutAMappingAllCpusShareOneSlot) {
  EXPECT_EXIT(
      {
        PerCpuCounters<3> c;
        rlimit lim{};
        if (::getrlimit(RLIMIT_AS, &lim) != 0) std::_Exit(10);
        lim.rlim_cur = 0;  // every new mapping fails with ENOMEM
        if (::setrlimit(RLIMIT_AS, &lim) != 0) std::_Exit(11);
        c.add(2, 7);
        c.add(2, -3);
        c.add(0, 1);
        if (c.per_cpu() || !c.materialized()) std::_Exit(12);
        if (c.read(2) != 4 || c.read(0) != 1 || c.read(1) != 0) std::_Exit(13);
        c.reset(2);
        std::_Exit(c.read(2) == 0 && c.read(0) == 1 ? 0 : 14);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace mapheap::core
