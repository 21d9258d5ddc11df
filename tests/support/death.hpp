// tests/support/death.hpp — death-test helpers that hold under sanitizers.
//
// A sanitizer catches SIGSEGV/SIGBUS itself, reports, and exits non-zero, so a
// store that must fault is "killed by the signal" in a plain build and "exited
// with a SEGV/BUS report" under ASan or TSan. Both are the fault we expect; anything
// else (a clean exit, another signal) fails the test.
#pragma once

#include <sys/wait.h>

#include <csignal>

namespace mapheap::test {

// ASan and TSan both install their own SIGSEGV/SIGBUS handlers (and replace
// mlock with a no-op).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif
#else
inline constexpr bool kUnderSanitizer = false;
#endif

struct DiedOf {
  int signal;
  bool operator()(int status) const {
    if (WIFSIGNALED(status) && WTERMSIG(status) == signal) return true;
    if (!kUnderSanitizer) return false;
    // The sanitizer reported the fault (fault_pattern checks its report) and
    // then exited, or aborted when ASAN_OPTIONS has abort_on_error=1.
    return (WIFEXITED(status) && WEXITSTATUS(status) != 0) ||
           (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  }
};

// The stderr pattern to go with DiedOf: ASan names the fault; a plain build
// prints nothing before the signal.
inline const char* fault_pattern(int signal) {
  if (!kUnderSanitizer) return "";
  return signal == SIGBUS ? "BUS" : "SEGV";
}

}  // namespace mapheap::test
