// FutexLock: mutual exclusion under contention (a plain counter protected by
// it must come out exact), try_lock, sleeping waiters that are woken, and
// sections that journal nothing even inside a shared heap's section.
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/journal.hpp"
#include "core/lock.hpp"
#include "support/journal.hpp"

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

// A thread in a shared heap's critical section (its journal set) that
// reaches the process heap: the process heap's stores are not that heap's
// and must not be journaled there. The lock takes the journal away for its
// section and gives it back.
TEST(FutexLock, SectionsJournalNothingAndGiveTheJournalBack) {
  std::vector<std::uint64_t> region(1024);
  test::ScratchJournal journal(region.data(), region.size() * sizeof(std::uint64_t), 64);
  JournalScope outer(&journal);
  undo_save(region[1]);
  ASSERT_EQ(journal.pending(), 1u);
  FutexLock lock;
  lock.lock();
  EXPECT_EQ(t_journal, nullptr);
  undo_save(region[2]);  // a process-heap store: not journaled
  EXPECT_EQ(undo_room(), UINT32_MAX);
  lock.unlock();
  EXPECT_EQ(t_journal, &journal);
  ASSERT_TRUE(lock.try_lock());
  undo_save(region[3]);
  lock.unlock();
  EXPECT_EQ(journal.pending(), 1u);
  undo_save(region[4]);  // the shared heap's section goes on
  EXPECT_EQ(journal.pending(), 2u);
  EXPECT_EQ(journal.room(), 62u);
  journal.commit();
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
