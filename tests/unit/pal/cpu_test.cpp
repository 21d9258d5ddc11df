// Unit tests for the cpu/process part of the platform layer: rseq, current
// CPU, CPU count, monotonic time, process id, spawn_wait.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/rseq.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pal/pal.hpp"

extern char** environ;

namespace pal = mapheap::pal;

namespace {

// Set in the environment of the child started by CurrentCpuWithoutRseq.
constexpr const char* kNoRseqMarker = "MAPHEAP_PALTEST_NO_RSEQ";

std::uint64_t clock_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace

TEST(PalCpu, RseqInfo) {
  const pal::RseqInfo info = pal::rseq_info();
  EXPECT_EQ(info.registered, __rseq_size > 0);
  EXPECT_EQ(info.size, __rseq_size);
  EXPECT_EQ(info.offset, __rseq_offset);
  if (std::getenv(kNoRseqMarker) != nullptr) {
    EXPECT_FALSE(info.registered) << "GLIBC_TUNABLES=glibc.pthread.rseq=0 was ignored";
  }
  // The same for another thread (glibc registers every thread it starts).
  pal::RseqInfo other;
  std::thread t([&] { other = pal::rseq_info(); });
  t.join();
  EXPECT_EQ(other.registered, info.registered);
  EXPECT_EQ(other.size, info.size);
}

TEST(PalCpu, CurrentCpuMatchesPinnedCpu) {
  // Pinning changes the affinity of one thread only, so a helper thread does
  // it and the test's own thread keeps its mask. sched_setaffinity returns
  // after the thread has migrated, and rseq's cpu_id is refreshed on the way
  // back to user space, so both must name the pinned CPU.
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(::sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  int checked = 0;
  std::vector<std::string> failures;
  std::thread t([&] {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &allowed)) continue;
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      if (::sched_setaffinity(0, sizeof(one), &one) != 0) {
        failures.push_back("sched_setaffinity " + std::to_string(cpu) + ": " +
                           std::strerror(errno));
        continue;
      }
      const unsigned pal_cpu = pal::current_cpu();
      const int os_cpu = ::sched_getcpu();
      if (os_cpu != cpu || pal_cpu != static_cast<unsigned>(cpu))
        failures.push_back("pinned to " + std::to_string(cpu) + ": current_cpu " +
                           std::to_string(pal_cpu) + ", sched_getcpu " + std::to_string(os_cpu));
      ++checked;
    }
  });
  t.join();
  EXPECT_GE(checked, 1);
  for (const std::string& f : failures) ADD_FAILURE() << f;
}

TEST(PalCpu, CurrentCpuWithoutRseq) {
  // Runs this binary again with glibc's rseq registration turned off, so that
  // current_cpu() takes its getcpu() path; the child runs the tests above.
  if (std::getenv(kNoRseqMarker) != nullptr) GTEST_SKIP() << "already the child";
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  ASSERT_GT(n, 0);
  exe[n] = '\0';
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "GLIBC_TUNABLES=", 15) != 0) env_strings.emplace_back(*e);
  env_strings.emplace_back("GLIBC_TUNABLES=glibc.pthread.rseq=0");
  env_strings.emplace_back(std::string(kNoRseqMarker) + "=1");
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string filter = "--gtest_filter=PalCpu.RseqInfo:PalCpu.CurrentCpuMatchesPinnedCpu";
  char* argv[] = {exe, filter.data(), nullptr};
  posix_spawn_file_actions_t fa;
  ASSERT_EQ(::posix_spawn_file_actions_init(&fa), 0);
  ASSERT_EQ(::posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0), 0);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe, &fa, nullptr, argv, envp.data());
  ::posix_spawn_file_actions_destroy(&fa);
  ASSERT_EQ(rc, 0) << std::strerror(rc);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "failed without rseq; rerun: GLIBC_TUNABLES=glibc.pthread.rseq=0 " << kNoRseqMarker
      << "=1 " << exe << " " << filter;
}

TEST(PalCpu, CpuCount) {
  EXPECT_GE(pal::cpu_count(), 1u);
  EXPECT_EQ(pal::cpu_count(), static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));
  EXPECT_EQ(pal::cpu_count(), pal::system_info().cpus_online);
}

TEST(PalCpu, MonotonicNsIsMonotonicAndOnTheMonotonicClock) {
  std::uint64_t prev = pal::monotonic_ns();
  for (int i = 0; i < 10000; ++i) {
    const std::uint64_t now = pal::monotonic_ns();
    ASSERT_GE(now, prev);
    prev = now;
  }
  // Sandwiched between two CLOCK_MONOTONIC readings: the same clock and units
  // (a different clock or microseconds would fall outside).
  const std::uint64_t before = clock_ns();
  const std::uint64_t mid = pal::monotonic_ns();
  const std::uint64_t after = clock_ns();
  EXPECT_LE(before, mid);
  EXPECT_LE(mid, after);
}

TEST(PalCpu, ProcessId) {
  EXPECT_EQ(pal::process_id(), static_cast<int>(::getpid()));
  const int parent = pal::process_id();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Not cached across fork.
    ::_exit(pal::process_id() == static_cast<int>(::getpid()) && pal::process_id() != parent ? 0
                                                                                             : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(PalCpu, SpawnWaitExitStatus) {
  const char* const t[] = {"true", nullptr};
  auto r = pal::spawn_wait(t);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value(), 0);

  const char* const f[] = {"false", nullptr};
  auto rf = pal::spawn_wait(f);
  ASSERT_TRUE(rf.ok());
  EXPECT_EQ(rf.value(), 1);

  const char* const e[] = {"sh", "-c", "exit 42", nullptr};
  EXPECT_EQ(pal::spawn_wait(e).value_or(-1), 42);

  const char* const abs[] = {"/bin/sh", "-c", "exit 7", nullptr};  // no PATH lookup needed
  EXPECT_EQ(pal::spawn_wait(abs).value_or(-1), 7);

  // The arguments reach the program.
  const char* const args[] = {"sh", "-c",   "test \"$1\" = hello && test \"$#\" = 2", "sh", "hello",
                              "x",  nullptr};
  EXPECT_EQ(pal::spawn_wait(args).value_or(-1), 0);
}

TEST(PalCpu, SpawnWaitKilledBySignal) {
  const char* const kill9[] = {"sh", "-c", "kill -9 $$", nullptr};
  auto r = pal::spawn_wait(kill9);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value(), 128 + 9);
  const char* const term[] = {"sh", "-c", "kill -TERM $$", nullptr};
  EXPECT_EQ(pal::spawn_wait(term).value_or(-1), 128 + 15);
}

TEST(PalCpu, SpawnWaitMissingProgram) {
  const char* const argv[] = {"mapheap-no-such-program-xyz", nullptr};
  auto r = pal::spawn_wait(argv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().op, pal::Op::spawn);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_STREQ(r.error().path, "mapheap-no-such-program-xyz");
  const char* const abs[] = {"/nonexistent-dir/prog", nullptr};
  auto ra = pal::spawn_wait(abs);
  ASSERT_FALSE(ra.ok());
  EXPECT_EQ(ra.error().code, ENOENT);
}
