// FutexLock: mutual exclusion under contention (a plain counter protected by
// it must come out exact), try_lock, and sleeping waiters that are woken.
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/lock.hpp"

namespace mapheap::core {
namespace {

TEST(FutexLock, ExcludesUnderContention) {
  FutexLock lock;
  std::uint64_t counter = 0;  // deliberately not atomic: the lock must protect it
  constexpr int kThreads = 4, kIters = 200000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        LockGuard<FutexLock> g(lock);
        ++counter;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(counter, std::uint64_t{kThreads} * kIters);
}

TEST(FutexLock, TryLock) {
  FutexLock lock;
  ASSERT_TRUE(lock.try_lock());
  EXPECT_FALSE(lock.try_lock());
  std::thread other([&] { EXPECT_FALSE(lock.try_lock()); });
  other.join();
  lock.unlock();
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

// A holder that keeps the lock long enough for waiters to go to sleep in the
// kernel: they must all get it in the end (one wake per unlock suffices).
TEST(FutexLock, SleepingWaitersAreWoken) {
  FutexLock lock;
  std::atomic<int> done{0};
  lock.lock();
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&] {
      LockGuard<FutexLock> g(lock);
      done.fetch_add(1);
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let them sleep; not asserted
  EXPECT_EQ(done.load(), 0);
  lock.unlock();
  for (auto& t : ts) t.join();
  EXPECT_EQ(done.load(), 3);
}

}  // namespace
}  // namespace mapheap::core
