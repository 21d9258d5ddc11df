// pal/sync.cpp — futex wait/wake and the process-shared robust mutex.
#include <cerrno>
#include <climits>
#include <ctime>

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pal/pal.hpp"

namespace mapheap::pal {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "a futex word is a plain 32-bit integer");

Result<WaitResult> futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                              std::int64_t timeout_ns, bool shared) noexcept {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
    tsp = &ts;
  }
  const int op = shared ? FUTEX_WAIT : (FUTEX_WAIT | FUTEX_PRIVATE_FLAG);
  const long r =
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, expected, tsp, nullptr, 0);
  if (r == 0) return WaitResult::woken;
  switch (errno) {
    case EAGAIN: return WaitResult::value_changed;
    case ETIMEDOUT: return WaitResult::timed_out;
    case EINTR: return WaitResult::interrupted;
    default: return Error::make(Op::futex_wait, errno);
  }
}

Result<int> futex_wake(std::atomic<std::uint32_t>* word, int count, bool shared) noexcept {
  const int op = shared ? FUTEX_WAKE : (FUTEX_WAKE | FUTEX_PRIVATE_FLAG);
  const long r =
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, count, nullptr, nullptr, 0);
  if (r < 0) return Error::make(Op::futex_wake, errno);
  return static_cast<int>(r);
}

Status RobustMutex::init() noexcept {
  pthread_mutexattr_t attr;
  int r = ::pthread_mutexattr_init(&attr);
  if (r == 0) r = ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (r == 0) r = ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (r == 0) r = ::pthread_mutex_init(&m_, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (r != 0) return Error::make(Op::mutex_init, r);
  return {};
}

namespace {
Result<LockState> lock_result(int r, Op op) noexcept {
  switch (r) {
    case 0: return LockState::acquired;
    case EOWNERDEAD: return LockState::owner_died;  // we hold it; the state needs repair
    case EBUSY: return LockState::busy;
    case ENOTRECOVERABLE: return LockState::not_recoverable;
    default: return Error::make(op, r);
  }
}
}  // namespace

Result<LockState> RobustMutex::lock() noexcept {
  return lock_result(::pthread_mutex_lock(&m_), Op::mutex_lock);
}

Result<LockState> RobustMutex::try_lock() noexcept {
  return lock_result(::pthread_mutex_trylock(&m_), Op::mutex_lock);
}

Status RobustMutex::mark_consistent() noexcept {
  const int r = ::pthread_mutex_consistent(&m_);
  if (r != 0) return Error::make(Op::mutex_consistent, r);
  return {};
}

Status RobustMutex::unlock() noexcept {
  const int r = ::pthread_mutex_unlock(&m_);
  if (r != 0) return Error::make(Op::mutex_unlock, r);
  return {};
}

Status RobustMutex::destroy() noexcept {
  const int r = ::pthread_mutex_destroy(&m_);
  if (r != 0) return Error::make(Op::mutex_init, r).with_detail("pthread_mutex_destroy");
  return {};
}

}  // namespace mapheap::pal
