// core/lock.hpp — FutexLock: the in-process lock of the engine's slow paths.
//
// Three states in one 32-bit word, as in Drepper's "Futexes Are Tricky"
// (mutex #2): 0 unlocked, 1 locked, 2 locked with possible waiters. An
// uncontended lock/unlock is one atomic exchange and one atomic exchange, no
// syscall; a waiter spins briefly, then sleeps in the kernel, and unlock wakes
// one sleeper only when the word says there may be one. It never allocates,
// so the process malloc can use it.
//
// For a heap shared between processes, where a holder may die, the engine
// uses pal::RobustMutex instead (the lock kind is a compile-time policy).
//
// A FutexLock section journals nothing. A thread inside a shared heap's
// section (whose lock set core::t_journal) can reach the process heap:
// mapheap as the process's malloc, under a named object's constructor, a
// std::string in an error path. Those stores are not the shared heap's; in
// its undo journal they would fill it (it aborts when full) and a rollback
// would write them into the heap. The lock takes the thread's journal away
// for its section and gives it back at unlock. (So a thread that holds two
// FutexLocks releases them in the reverse order it took them, as every
// LockGuard does: otherwise the outer one's unlock would give back null.)
#pragma once

#include <atomic>
#include <cstdint>

#include "core/journal.hpp"
#include "pal/pal.hpp"

namespace mapheap::core {

class FutexLock {
 public:
  void lock() noexcept {
    std::uint32_t c = 0;
    if (!word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) lock_slow(c);
    enter();
  }
  bool try_lock() noexcept {
    std::uint32_t c = 0;
    if (!word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return false;
    enter();
    return true;
  }
  void unlock() noexcept {
    t_journal = outer_;
    if (word_.exchange(0, std::memory_order_release) == 2) unlock_slow();
  }

 private:
  void lock_slow(std::uint32_t c) noexcept {
    // Spin a little: engine critical sections are short.
    for (int i = 0; i < 100 && c != 0; ++i) {
      pal::cpu_relax();
      c = 0;
      if (word_.compare_exchange_weak(c, 1, std::memory_order_acquire)) return;
    }
    // Mark "waiters possible" and sleep until the word is 0 when we swap in 2.
    if (c != 2) c = word_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      (void)pal::futex_wait(&word_, 2, -1, /*shared=*/false);
      c = word_.exchange(2, std::memory_order_acquire);
    }
  }
  void unlock_slow() noexcept { (void)pal::futex_wake(&word_, 1, /*shared=*/false); }
  // The holder's: its journal, away for the section (see the top).
  void enter() noexcept {
    outer_ = t_journal;
    t_journal = nullptr;
  }

  std::atomic<std::uint32_t> word_{0};
  Journal* outer_ = nullptr;  // written and read by the holder only
};

// Holds a lock for a scope.
template <class Lock>
class LockGuard {
 public:
  explicit LockGuard(Lock& l) noexcept : l_(l) { l_.lock(); }
  ~LockGuard() { l_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  Lock& l_;
};

}  // namespace mapheap::core
