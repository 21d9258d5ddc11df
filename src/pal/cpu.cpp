// pal/cpu.cpp — which CPU we are on (rseq or getcpu), CPU count, time, and
// running a helper program (tools only).
#include <cerrno>
#include <ctime>

#include <sched.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pal/pal.hpp"

extern char** environ;

namespace mapheap::pal {

RseqInfo rseq_info() noexcept {
  RseqInfo info;
  // glibc 2.35+ registers an rseq area for every thread it starts and exports
  // its offset from the thread pointer; __rseq_size == 0 means it did not
  // (disabled by GLIBC_TUNABLES=glibc.pthread.rseq=0, or an old kernel).
  info.size = __rseq_size;
  info.offset = __rseq_offset;
  info.registered = __rseq_size > 0;
  return info;
}

unsigned current_cpu() noexcept {
  if (__rseq_size > 0) {
    const auto* area = reinterpret_cast<const volatile struct rseq*>(
        static_cast<char*>(__builtin_thread_pointer()) + __rseq_offset);
    const int cpu = static_cast<int>(area->cpu_id);
    if (cpu >= 0) return static_cast<unsigned>(cpu);
  }
  const int cpu = ::sched_getcpu();
  return cpu >= 0 ? static_cast<unsigned>(cpu) : 0u;
}

unsigned cpu_count() noexcept {
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}

namespace {
std::uint64_t clock_ns(clockid_t clock) noexcept {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

std::uint64_t monotonic_ns() noexcept { return clock_ns(CLOCK_MONOTONIC); }
std::uint64_t realtime_ns() noexcept { return clock_ns(CLOCK_REALTIME); }

unsigned cpus_configured() noexcept {
  const long n = ::sysconf(_SC_NPROCESSORS_CONF);
  return n > 0 ? static_cast<unsigned>(n) : cpu_count();
}

int thread_id() noexcept {
  // Not cached: a child of fork() must not see its parent's id.
  return static_cast<int>(::gettid());
}

bool thread_alive(int pid, int tid) noexcept {
  if (pid <= 0 || tid <= 0) return false;
  if (::tgkill(pid, tid, 0) == 0) return true;
  return errno == EPERM;  // exists, but not ours to signal
}

Status CpuAffinity::save() noexcept {
  CPU_ZERO(&saved_);
  if (::sched_getaffinity(0, sizeof(saved_), &saved_) != 0)
    return Error::make(Op::sched_affinity, errno).with_detail("sched_getaffinity");
  return {};
}

bool CpuAffinity::allowed(unsigned cpu) const noexcept {
  return cpu < CPU_SETSIZE && CPU_ISSET(cpu, &saved_);
}

Status CpuAffinity::pin(unsigned cpu) noexcept {
  if (cpu >= CPU_SETSIZE) return Error::make(Op::sched_affinity, EINVAL);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (::sched_setaffinity(0, sizeof(one), &one) != 0) return Error::make(Op::sched_affinity, errno);
  return {};
}

Status CpuAffinity::restore() noexcept {
  if (::sched_setaffinity(0, sizeof(saved_), &saved_) != 0)
    return Error::make(Op::sched_affinity, errno);
  return {};
}

int process_id() noexcept {
  return static_cast<int>(::getpid());
}

Result<int> spawn_wait(const char* const argv[]) noexcept {
  ChildUsage ignored;
  return spawn_wait(argv, nullptr, ignored);
}

Result<int> spawn_wait(const char* const argv[], const char* const envp[],
                       ChildUsage& usage) noexcept {
  pid_t pid = 0;
  const std::uint64_t start = monotonic_ns();
  const int r = ::posix_spawnp(&pid, argv[0], nullptr, nullptr, const_cast<char* const*>(argv),
                               envp != nullptr ? const_cast<char* const*>(envp) : environ);
  if (r != 0) return Error::make(Op::spawn, r).with_path(argv[0]);
  int status = 0;
  struct rusage ru {};
  while (::wait4(pid, &status, 0, &ru) < 0) {
    if (errno != EINTR) return Error::make(Op::spawn, errno).with_path(argv[0]);
  }
  usage.wall_ns = monotonic_ns() - start;
  usage.max_rss_bytes = static_cast<std::uint64_t>(ru.ru_maxrss) * 1024;  // Linux: KiB
  usage.user_seconds = static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6;
  usage.system_seconds = static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

}  // namespace mapheap::pal
