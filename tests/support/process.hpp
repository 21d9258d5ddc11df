// tests/support/process.hpp — running a piece of a test in a child process.
//
// Many contracts are about processes: a shared mapping seen across fork(), a
// lock whose owner died, a permission an unprivileged user lacks. These
// helpers fork, run, and turn the child's end into one number.
#pragma once

#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

namespace mapheap::test {

// The child's exit status, or 128 + signal if a signal ended it; -1 if wait failed.
inline int wait_child(pid_t pid) {
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// Runs fn() (returning an int exit status) in a fork()ed child.
template <class Fn>
int in_child(Fn&& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(fn());
  return wait_child(pid);
}

// Runs fn() in a child that has dropped to user and group 65534 ("nobody"):
// root ignores file modes, so permission errors are only seen there.
// Returns 100 if the child could not drop its privileges.
template <class Fn>
int run_as_nobody(Fn&& fn) {
  return in_child([&] {
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
         ::setresuid(65534, 65534, 65534) != 0))
      return 100;
    return fn();
  });
}

}  // namespace mapheap::test
