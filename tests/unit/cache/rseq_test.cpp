// The rseq push and pop: exact on a single thread, and under contention no
// item is lost or duplicated, whichever CPUs the threads run on.
#include "cache/rseq.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "support/process.hpp"

namespace mapheap::cache {
namespace {

constexpr std::uint32_t kCap = 16;
constexpr std::uint64_t kStride = 8 + 8 * kCap;
constexpr std::uint32_t kCpus = 1024;  // every CPU number this machine can have

struct Arrays {
  std::vector<std::uint64_t> words = std::vector<std::uint64_t>(kStride / 8 * kCpus, 0);
  std::byte* base() { return reinterpret_cast<std::byte*>(words.data()); }
  std::uint64_t& word(std::uint32_t cpu) { return words[cpu * kStride / 8]; }
  std::uint32_t count(std::uint32_t cpu) { return static_cast<std::uint32_t>(count_of(word(cpu))); }
  std::uint64_t item(std::uint32_t cpu, std::uint32_t i) { return words[cpu * kStride / 8 + 1 + i]; }
};

TEST(Rseq, PushAndPopOnThisCpu) {
  if (!rseq_available()) GTEST_SKIP() << "the C library registered no rseq area";
  Arrays a;
  EXPECT_EQ(rseq_pop<kStride>(a.base(), kCpus, kCap), 0u);  // empty
  // A thread may migrate between operations, so each step is checked by the
  // sum over all CPUs, not one CPU's array.
  std::uint64_t pushed = 0;
  for (std::uint64_t i = 1; i <= kCap; ++i) pushed += rseq_push<kStride>(a.base(), kCpus, kCap, i);
  std::uint32_t total = 0;
  for (std::uint32_t c = 0; c < kCpus; ++c) total += a.count(c);
  EXPECT_EQ(total, pushed);
  EXPECT_GE(pushed, 1u);
  std::vector<std::uint64_t> got;
  for (std::uint64_t v; (v = rseq_pop<kStride>(a.base(), kCpus, kCap)) != 0;) got.push_back(v);
  for (std::uint32_t c = 0; c < kCpus; ++c)  // what migration left elsewhere
    for (std::uint32_t i = 0; i < a.count(c); ++i) got.push_back(a.item(c, i));
  EXPECT_EQ(got.size(), pushed);
  // Each array's word counted its operations: pushes - pops = what is left.
  std::uint64_t ops = 0, left = 0;
  for (std::uint32_t c = 0; c < kCpus; ++c) {
    ops += ops_of(a.word(c));
    left += a.count(c);
  }
  EXPECT_EQ(ops, pushed + (pushed - left));
}

TEST(Rseq, FullEmptyAndOutOfRangeAreRefused) {
  if (!rseq_available()) GTEST_SKIP() << "the C library registered no rseq area";
  Arrays a;
  // No CPU is below 0: every operation is refused and nothing is written.
  EXPECT_FALSE(rseq_push<kStride>(a.base(), 0, kCap, 42));
  EXPECT_EQ(rseq_pop<kStride>(a.base(), 0, kCap), 0u);
  // Every array full: push refused, whichever CPU we are on.
  for (std::uint32_t c = 0; c < kCpus; ++c) a.word(c) = kCap;
  EXPECT_FALSE(rseq_push<kStride>(a.base(), kCpus, kCap, 42));
  // A count above the capacity (a corrupt array) is never read through.
  for (std::uint32_t c = 0; c < kCpus; ++c) a.word(c) = kCap + 1;
  EXPECT_EQ(rseq_pop<kStride>(a.base(), kCpus, kCap), 0u);
  for (std::uint32_t c = 0; c < kCpus; ++c) ASSERT_EQ(a.word(c), kCap + 1);  // untouched
}

// Threads (more than CPUs, so they preempt each other inside sequences)
// push unique items and pop whatever is there: at the end the items popped
// plus those left in the arrays are exactly those pushed.
TEST(Rseq, NothingLostOrDuplicatedUnderContention) {
  if (!rseq_available()) GTEST_SKIP() << "the C library registered no rseq area";
  Arrays a;
  constexpr int kThreads = 6, kSteps = 300000;
  std::vector<std::vector<std::uint64_t>> pushed(kThreads), popped(kThreads);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (std::uint64_t i = 1; i <= kSteps; ++i) {
        const std::uint64_t item = (std::uint64_t(t + 1) << 32) | i;
        if (rseq_push<kStride>(a.base(), kCpus, kCap, item)) pushed[t].push_back(item);
        if (i % 3 != 0) {
          const std::uint64_t v = rseq_pop<kStride>(a.base(), kCpus, kCap);
          if (v != 0) popped[t].push_back(v);
        }
      }
    });
  for (auto& t : ts) t.join();
  std::vector<std::uint64_t> in, out;
  for (int t = 0; t < kThreads; ++t) {
    in.insert(in.end(), pushed[t].begin(), pushed[t].end());
    out.insert(out.end(), popped[t].begin(), popped[t].end());
  }
  std::uint64_t ops = 0;
  for (std::uint32_t c = 0; c < kCpus; ++c) {
    for (std::uint32_t i = 0; i < a.count(c); ++i) out.push_back(a.item(c, i));
    ops += ops_of(a.word(c));
  }
  std::sort(in.begin(), in.end());
  std::sort(out.begin(), out.end());
  EXPECT_EQ(std::adjacent_find(out.begin(), out.end()), out.end()) << "an item came out twice";
  EXPECT_EQ(in.size(), out.size());
  EXPECT_TRUE(in == out);
  // Exactly one operation counted per push and per pop that happened.
  std::uint64_t pops = 0;
  for (int t = 0; t < kThreads; ++t) pops += popped[t].size();
  EXPECT_EQ(ops, in.size() + pops);
}

// The property a shared heap depends on: two processes on one CPU use the
// same arrays in shared memory, and killing them at random instants never
// leaves an array torn. Each child logs its pushes and pops after they
// commit, so at the kill at most one operation per child is unlogged: the
// arrays then hold the logged balance give or take one per child, every
// count is within its capacity, every item is one a child pushed and appears
// once, and the arrays go on working.
TEST(Rseq, ProcessesKilledMidOperationLeaveArraysConsistent) {
  if (!rseq_available()) GTEST_SKIP() << "the C library registered no rseq area";
  struct Shared {
    std::uint64_t words[kStride / 8 * kCpus];
    std::atomic<std::uint64_t> pushes[2], pops[2], next[2];
  };
  void* mem = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* sh = new (mem) Shared{};
  auto* base = reinterpret_cast<std::byte*>(sh->words);
  cpu_set_t one;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(one), &one), 0);
  int cpu = 0;
  while (!CPU_ISSET(cpu, &one)) ++cpu;
  std::uint32_t seed = 12345;
  for (int round = 0; round < 60; ++round) {
    pid_t kids[2];
    for (int c = 0; c < 2; ++c) {
      kids[c] = ::fork();
      ASSERT_GE(kids[c], 0);
      if (kids[c] == 0) {
        cpu_set_t pin;
        CPU_ZERO(&pin);
        CPU_SET(cpu, &pin);
        (void)::sched_setaffinity(0, sizeof(pin), &pin);  // both children on one CPU
        for (;;) {
          const std::uint64_t i = sh->next[c].fetch_add(1) + 1;
          if (rseq_push<kStride>(base, kCpus, kCap, (std::uint64_t(c + 1) << 40) | i))
            sh->pushes[c].fetch_add(1);
          if (i % 2 == 0 && rseq_pop<kStride>(base, kCpus, kCap) != 0) sh->pops[c].fetch_add(1);
        }
      }
    }
    seed = seed * 1103515245u + 12345u;
    ::usleep(1000 + (seed >> 8) % 20000);
    for (pid_t k : kids) ::kill(k, SIGKILL);
    for (pid_t k : kids) ASSERT_EQ(test::wait_child(k), 128 + SIGKILL);

    std::vector<std::uint64_t> items;
    for (std::uint32_t c = 0; c < kCpus; ++c) {
      const std::uint64_t w = sh->words[c * kStride / 8];
      ASSERT_LE(count_of(w), kCap) << "round " << round << " cpu " << c;
      ASSERT_EQ((ops_of(w) - count_of(w)) % 2, 0u) << "round " << round;
      for (std::uint32_t i = 0; i < count_of(w); ++i) items.push_back(sh->words[c * kStride / 8 + 1 + i]);
    }
    std::sort(items.begin(), items.end());
    ASSERT_EQ(std::adjacent_find(items.begin(), items.end()), items.end()) << "round " << round;
    for (std::uint64_t v : items) {
      const std::uint64_t who = v >> 40, seq = v & ((std::uint64_t{1} << 40) - 1);
      ASSERT_TRUE(who == 1 || who == 2) << std::hex << v;
      ASSERT_LE(seq, sh->next[who - 1].load()) << std::hex << v;
    }
    const auto logged = static_cast<std::int64_t>(sh->pushes[0] + sh->pushes[1]) -
                        static_cast<std::int64_t>(sh->pops[0] + sh->pops[1]);
    const auto held = static_cast<std::int64_t>(items.size());
    ASSERT_LE(held - logged, 2) << "round " << round;
    ASSERT_GE(held - logged, -2) << "round " << round;
    // The survivors' view: the arrays still work (empty them for the next round).
    while (rseq_pop<kStride>(base, kCpus, kCap) != 0) {
    }
    for (std::uint32_t c = 0; c < kCpus; ++c) sh->words[c * kStride / 8] = 0;
    for (int c = 0; c < 2; ++c) sh->pushes[c] = sh->pops[c] = 0;
  }
  ::munmap(mem, sizeof(Shared));
}

}  // namespace
}  // namespace mapheap::cache
