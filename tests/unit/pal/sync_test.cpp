// Unit tests for the synchronisation part of the platform layer: futex
// wait/wake (private and process-shared) and the robust process-shared mutex.
//
// Nothing here asserts on elapsed time. Where a test needs another thread or
// process to be blocked in the kernel, it keeps waking until futex_wake()
// reports that it woke someone, which proves the waiter was asleep on the
// same futex.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdint>
#include <new>
#include <thread>

#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pal/pal.hpp"
#include "support/process.hpp"

namespace pal = mapheap::pal;

namespace {

using mapheap::test::wait_child;

using Word = std::atomic<std::uint32_t>;

// An upper bound for "keep trying until the other side is asleep" loops, so
// that a broken futex fails the test instead of hanging it. Reaching it needs
// the other side to miss tens of millions of chances to run.
constexpr long kMaxSpins = 10'000'000;

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#else
constexpr bool kThreadSanitizer = false;
#endif

// One page of MAP_SHARED anonymous memory: survives fork() as shared memory.
struct SharedPage {
  void* addr = nullptr;
  SharedPage() {
    auto r = pal::map(nullptr, pal::page_size(), pal::Prot::read_write,
                      pal::kMapShared | pal::kMapAnonymous, -1, 0);
    EXPECT_TRUE(r.ok());
    addr = r.value_or(nullptr);
  }
  ~SharedPage() {
    if (addr != nullptr) (void)pal::unmap(addr, pal::page_size());
  }
  SharedPage(const SharedPage&) = delete;
  SharedPage& operator=(const SharedPage&) = delete;
  template <class T>
  T* at(std::size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(addr) + offset);
  }
};

// Wakes one waiter on `word` until one is actually woken; returns false if
// nobody ever was.
bool wake_one_sleeper(Word* word, bool shared) {
  for (long i = 0; i < kMaxSpins; ++i) {
    auto r = pal::futex_wake(word, 1, shared);
    if (!r.ok()) return false;
    if (r.value() == 1) return true;
    ::sched_yield();
  }
  return false;
}

void ignore_signal(int) {}

}  // namespace

// ---------------------------------------------------------------- futex

TEST(PalFutex, WaitReturnsValueChangedWhenWordDiffers) {
  Word word{1};
  for (bool shared : {false, true}) {
    auto r = pal::futex_wait(&word, 0, -1, shared);  // would block forever if it compared wrong
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value(), pal::WaitResult::value_changed) << "shared " << shared;
  }
}

TEST(PalFutex, WaitTimesOut) {
  Word word{0};
  for (bool shared : {false, true}) {
    auto r = pal::futex_wait(&word, 0, 1'000'000, shared);  // 1 ms
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value(), pal::WaitResult::timed_out) << "shared " << shared;
    auto zero = pal::futex_wait(&word, 0, 0, shared);  // a zero timeout expires at once
    ASSERT_TRUE(zero.ok());
    EXPECT_EQ(zero.value(), pal::WaitResult::timed_out);
  }
}

TEST(PalFutex, WaitTimeoutAboveOneSecondIsSplitCorrectly) {
  // 1 s + 1 ns: a timespec with tv_nsec >= 10^9 would be refused with EINVAL,
  // so this catches a wrong seconds/nanoseconds split (it takes one second).
  Word word{0};
  auto r = pal::futex_wait(&word, 0, 1'000'000'001, false);
  ASSERT_TRUE(r.ok()) << pal::errno_name(r.error().code);
  EXPECT_EQ(r.value(), pal::WaitResult::timed_out);
}

TEST(PalFutex, WaitOnInaccessibleMemoryFails) {
  // A PROT_NONE page: the kernel cannot read the word.
  auto res = pal::reserve(pal::page_size(), pal::page_size());
  ASSERT_TRUE(res.ok());
  auto* word = static_cast<Word*>(res.value());
  for (bool shared : {false, true}) {
    auto r = pal::futex_wait(word, 0, 1'000'000, shared);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().op, pal::Op::futex_wait);
    EXPECT_EQ(r.error().code, EFAULT);
  }
  EXPECT_TRUE(pal::unmap(res.value(), pal::page_size()).ok());
}

TEST(PalFutex, WakeMisalignedWordFails) {
  alignas(8) unsigned char storage[16] = {};
  // The futex syscall needs a 4-byte aligned address; the pointer is only
  // passed to the kernel, never dereferenced here.
  auto* word = reinterpret_cast<Word*>(storage + 1);
  for (bool shared : {false, true}) {
    auto r = pal::futex_wake(word, 1, shared);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().op, pal::Op::futex_wake);
    EXPECT_EQ(r.error().code, EINVAL);
    auto w = pal::futex_wait(word, 0, 0, shared);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.error().op, pal::Op::futex_wait);
    EXPECT_EQ(w.error().code, EINVAL);
  }
}

TEST(PalFutex, WakeWithoutWaitersWakesNobody) {
  Word word{0};
  for (bool shared : {false, true}) {
    auto r = pal::futex_wake(&word, INT_MAX, shared);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value(), 0);
  }
}

TEST(PalFutex, WakeWakesWaitingThread) {
  Word word{0};
  std::atomic<int> first_result{-1};
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    bool first = true;
    while (word.load() == 0) {
      auto r = pal::futex_wait(&word, 0, -1, false);
      if (first) {
        first_result.store(r.ok() ? static_cast<int>(r.value()) : -2);
        first = false;
      }
    }
    done.store(true);
  });
  // futex_wake returns 1 only when it woke a thread asleep on this word.
  const bool woke = wake_one_sleeper(&word, false);
  word.store(1);
  (void)pal::futex_wake(&word, INT_MAX, false);  // release it for good
  waiter.join();
  EXPECT_TRUE(woke);
  EXPECT_TRUE(done.load());
  EXPECT_EQ(first_result.load(), static_cast<int>(pal::WaitResult::woken));
}

TEST(PalFutex, WaitIsInterruptedBySignal) {
  // A handler installed without SA_RESTART makes FUTEX_WAIT return EINTR,
  // which futex_wait reports as `interrupted` rather than an error.
  struct sigaction sa {};
  struct sigaction old {};
  sa.sa_handler = ignore_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  Word word{0};
  std::atomic<int> result{-1};
  std::thread waiter([&] {
    auto r = pal::futex_wait(&word, 0, -1, false);  // nobody changes or wakes the word
    result.store(r.ok() ? static_cast<int>(r.value()) : -2);
  });
  const pthread_t tid = waiter.native_handle();
  // A signal that lands before the thread sleeps is simply handled; keep
  // sending until the wait returns.
  for (long i = 0; i < kMaxSpins && result.load() == -1; ++i) {
    ::pthread_kill(tid, SIGUSR1);
    ::sched_yield();
  }
  if (result.load() == -1) {  // never interrupted: release the thread to fail cleanly
    word.store(1);
    (void)pal::futex_wake(&word, INT_MAX, false);
  }
  waiter.join();
  ASSERT_EQ(::sigaction(SIGUSR1, &old, nullptr), 0);
  EXPECT_EQ(result.load(), static_cast<int>(pal::WaitResult::interrupted));
}

TEST(PalFutex, SharedFutexWorksAcrossFork) {
  SharedPage page;
  ASSERT_NE(page.addr, nullptr);
  Word* word = new (page.addr) Word(0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Child: wait until the parent publishes 1. Exit code 0 only if the first
    // wait ended by a wake-up (proof that the shared wake reached us).
    int first = -1;
    while (word->load() == 0) {
      auto r = pal::futex_wait(word, 0, -1, true);
      if (first == -1) first = r.ok() ? static_cast<int>(r.value()) : 100;
    }
    ::_exit(first == static_cast<int>(pal::WaitResult::woken) ? 0 : 10 + first);
  }
  ASSERT_GT(pid, 0);
  const bool woke = wake_one_sleeper(word, true);
  word->store(1);
  (void)pal::futex_wake(word, INT_MAX, true);
  if (!woke) ::kill(pid, SIGKILL);  // the child may sleep forever: do not hang
  EXPECT_TRUE(woke) << "a shared wake never reached the child";
  EXPECT_EQ(wait_child(pid), 0);
}

// ---------------------------------------------------------------- RobustMutex

TEST(PalRobustMutex, InitLockUnlockDestroy) {
  pal::RobustMutex m;
  ASSERT_TRUE(m.init().ok());
  auto l = m.lock();
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l.value(), pal::LockState::acquired);
  EXPECT_TRUE(m.unlock().ok());
  auto t = m.try_lock();
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.value(), pal::LockState::acquired);
  EXPECT_TRUE(m.unlock().ok());
  EXPECT_TRUE(m.destroy().ok());
}

TEST(PalRobustMutex, TryLockBusyWhileAnotherThreadHolds) {
  pal::RobustMutex m;
  ASSERT_TRUE(m.init().ok());
  std::atomic<bool> held{false};
  std::atomic<bool> release{false};
  std::thread holder([&] {
    auto r = m.lock();
    EXPECT_TRUE(r.ok() && r.value() == pal::LockState::acquired);
    held.store(true);
    while (!release.load()) ::sched_yield();
    EXPECT_TRUE(m.unlock().ok());
  });
  while (!held.load()) ::sched_yield();
  auto busy = m.try_lock();
  ASSERT_TRUE(busy.ok());
  EXPECT_EQ(busy.value(), pal::LockState::busy);
  release.store(true);
  holder.join();
  auto free_now = m.try_lock();
  ASSERT_TRUE(free_now.ok());
  EXPECT_EQ(free_now.value(), pal::LockState::acquired);
  EXPECT_TRUE(m.unlock().ok());
  EXPECT_TRUE(m.destroy().ok());
}

TEST(PalRobustMutex, LockBlocksUntilTheHolderUnlocks) {
  pal::RobustMutex m;
  ASSERT_TRUE(m.init().ok());
  ASSERT_EQ(m.lock().value_or(pal::LockState::busy), pal::LockState::acquired);
  std::atomic<bool> unlocked{false};
  std::atomic<bool> got_it_before_unlock{false};
  std::thread t([&] {
    auto r = m.lock();  // blocks while main holds it
    if (!unlocked.load()) got_it_before_unlock.store(true);
    EXPECT_TRUE(r.ok() && r.value() == pal::LockState::acquired);
    EXPECT_TRUE(m.unlock().ok());
  });
  for (int i = 0; i < 1000; ++i) ::sched_yield();  // give it a chance to try
  unlocked.store(true);
  EXPECT_TRUE(m.unlock().ok());
  t.join();
  EXPECT_FALSE(got_it_before_unlock.load());
  EXPECT_TRUE(m.destroy().ok());
}

TEST(PalRobustMutex, Errors) {
  pal::RobustMutex m;
  ASSERT_TRUE(m.init().ok());
  // Unlocking a robust mutex one does not hold is refused. TSan rightly
  // reports that misuse, and a report makes every later forked child exit
  // with TSan's status 66, so this part does not run under TSan.
  if (!kThreadSanitizer) {
    auto u = m.unlock();
    ASSERT_FALSE(u.ok());
    EXPECT_EQ(u.error().op, pal::Op::mutex_unlock);
    EXPECT_EQ(u.error().code, EPERM);
  }
  // A consistent mutex cannot be marked consistent.
  ASSERT_EQ(m.lock().value_or(pal::LockState::busy), pal::LockState::acquired);
  auto c = m.mark_consistent();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().op, pal::Op::mutex_consistent);
  EXPECT_EQ(c.error().code, EINVAL);
  EXPECT_TRUE(m.unlock().ok());
  EXPECT_TRUE(m.destroy().ok());
}

TEST(PalRobustMutex, SharedAcrossProcesses) {
  SharedPage page;
  ASSERT_NE(page.addr, nullptr);
  auto* m = new (page.addr) pal::RobustMutex;
  ASSERT_TRUE(m->init().ok());
  Word* held = new (page.at<Word>(512)) Word(0);
  Word* release = new (page.at<Word>(576)) Word(0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto r = m->lock();
    if (!r.ok() || r.value() != pal::LockState::acquired) ::_exit(1);
    held->store(1);
    while (release->load() == 0) ::sched_yield();
    ::_exit(m->unlock().ok() ? 0 : 2);
  }
  ASSERT_GT(pid, 0);
  while (held->load() == 0) ::sched_yield();
  auto busy = m->try_lock();  // held by another process
  ASSERT_TRUE(busy.ok());
  EXPECT_EQ(busy.value(), pal::LockState::busy);
  release->store(1);
  EXPECT_EQ(wait_child(pid), 0);
  auto l = m->lock();
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l.value(), pal::LockState::acquired);  // cleanly released: no owner death
  EXPECT_TRUE(m->unlock().ok());
  EXPECT_TRUE(m->destroy().ok());
}

namespace {

// Forks a child that locks `m` and exits without unlocking it.
void die_holding(pal::RobustMutex* m) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto r = m->lock();
    ::_exit(r.ok() && r.value() == pal::LockState::acquired ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  ASSERT_EQ(wait_child(pid), 0);
}

// A robust mutex initialised in a shared page, as a mapped heap would hold one.
class SharedRobustMutex : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(page_.addr, nullptr);
    m_ = new (page_.addr) pal::RobustMutex;
    ASSERT_TRUE(m_->init().ok());
  }
  SharedPage page_;
  pal::RobustMutex* m_ = nullptr;
};

}  // namespace

TEST_F(SharedRobustMutex, OwnerDeathIsReportedAndRecoverable) {
  pal::RobustMutex* m = m_;
  die_holding(m);
  auto l = m->lock();
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l.value(), pal::LockState::owner_died);  // we hold it now
  EXPECT_TRUE(m->mark_consistent().ok());
  EXPECT_TRUE(m->unlock().ok());
  auto again = m->lock();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value(), pal::LockState::acquired);
  EXPECT_TRUE(m->unlock().ok());
  EXPECT_TRUE(m->destroy().ok());
}

TEST_F(SharedRobustMutex, TryLockReportsOwnerDeath) {
  pal::RobustMutex* m = m_;
  die_holding(m);
  auto t = m->try_lock();
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.value(), pal::LockState::owner_died);
  EXPECT_TRUE(m->mark_consistent().ok());
  EXPECT_TRUE(m->unlock().ok());
  EXPECT_TRUE(m->destroy().ok());
}

TEST_F(SharedRobustMutex, UnlockWithoutRepairMakesItNotRecoverable) {
  pal::RobustMutex* m = m_;
  die_holding(m);
  auto l = m->lock();
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l.value(), pal::LockState::owner_died);
  EXPECT_TRUE(m->unlock().ok());  // without mark_consistent()
  auto dead = m->lock();
  ASSERT_TRUE(dead.ok());
  EXPECT_EQ(dead.value(), pal::LockState::not_recoverable);
  auto dead_try = m->try_lock();
  ASSERT_TRUE(dead_try.ok());
  EXPECT_EQ(dead_try.value(), pal::LockState::not_recoverable);
  EXPECT_TRUE(m->destroy().ok());
  // The storage can be initialised afresh.
  ASSERT_TRUE(m->init().ok());
  EXPECT_EQ(m->lock().value_or(pal::LockState::busy), pal::LockState::acquired);
  EXPECT_TRUE(m->unlock().ok());
  EXPECT_TRUE(m->destroy().ok());
}
