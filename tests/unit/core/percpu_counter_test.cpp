// PerCpuCounters: exact once the adders are done, whatever CPUs they ran on.
#include <sched.h>

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
  static_assert(sizeof(PerCpuCounters<10>) == 64 * 128);
  static_assert(sizeof(PerCpuCounters<8>) == 64 * 64);
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

}  // namespace
}  // namespace mapheap::core
