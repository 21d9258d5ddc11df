// heap/region_lock.hpp — RegionLock: the engine's lock in a shared heap.
//
// The state is a robust, process-shared pthread mutex inside the mapping,
// paired with an undo journal (core/journal.hpp) inside the mapping. Whoever
// takes the lock makes the journal this thread's, so every metadata store
// in the critical section keeps its pre-image; unlock commits (empties the
// journal), then unlocks.
//
// When the holder died (EOWNERDEAD), the next locker takes back the dead
// holder's half-done section (journal rollback), marks the mutex consistent
// and carries on: no lock stays poisoned, and nobody waits for the dead.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "core/journal.hpp"
#include "pal/pal.hpp"

namespace mapheap::heap {

class RegionLock {
 public:
  void bind(pal::RobustMutex* m, core::Journal* j) noexcept {
    m_ = m;
    j_ = j;
  }

  void lock() noexcept {
    const pal::Result<pal::LockState> r = m_->lock();
    if (!r.ok()) fatal("cannot lock the shared heap's mutex");
    switch (r.value()) {
      case pal::LockState::acquired: break;
      case pal::LockState::owner_died: repair(); break;
      default: fatal("the shared heap's mutex is not recoverable");
    }
    prev_ = core::t_journal;
    core::t_journal = j_;
  }

  void unlock() noexcept {
    j_->commit();
    core::t_journal = prev_;
    if (!m_->unlock().ok()) fatal("cannot unlock the shared heap's mutex");
  }

  // Critical sections taken back in this process (their holder died).
  std::uint64_t repairs() const noexcept { return repairs_.load(std::memory_order_relaxed); }

 private:
  void repair() noexcept {
    (void)j_->rollback();
    repairs_.fetch_add(1, std::memory_order_relaxed);
    if (!m_->mark_consistent().ok()) fatal("cannot mark the shared heap's mutex consistent");
  }
  [[noreturn]] static void fatal(const char* what) noexcept {
    char msg[160];
    pal::TextOut out{msg, sizeof(msg)};
    out.printf("mapheap: %s\n", what);
    (void)pal::write_fd(2, msg, out.len < sizeof(msg) ? out.len : sizeof(msg) - 1);
    std::abort();
  }

  pal::RobustMutex* m_ = nullptr;
  core::Journal* j_ = nullptr;
  core::Journal* prev_ = nullptr;  // the journal of an enclosing section (written by the holder only)
  std::atomic<std::uint64_t> repairs_{0};
};

}  // namespace mapheap::heap
