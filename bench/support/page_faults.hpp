// bench/support/page_faults.hpp — the page faults this process takes, from
// the kernel's software event: faults taken, not the pages a
// MADV_POPULATE_* call maps (getrusage counts those as faults too). Needs
// perf events for the process's own user mode (perf_event_paranoid <= 2);
// without them, read() returns -1. The reopen benchmark and the mapped
// heap's test of its first finds count with it.
#pragma once

#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace mapheap::bench {

class PageFaultCounter {
 public:
  PageFaultCounter() {
    perf_event_attr a{};
    a.type = PERF_TYPE_SOFTWARE;
    a.size = sizeof a;
    a.config = PERF_COUNT_SW_PAGE_FAULTS;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    fd_ = static_cast<int>(::syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
  }
  PageFaultCounter(const PageFaultCounter&) = delete;
  PageFaultCounter& operator=(const PageFaultCounter&) = delete;
  ~PageFaultCounter() {
    if (fd_ >= 0) ::close(fd_);
  }
  // Faults since construction, or -1 if they cannot be counted here.
  std::int64_t read() const {
    std::uint64_t v = 0;
    if (fd_ < 0 || ::read(fd_, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) return -1;
    return static_cast<std::int64_t>(v);
  }

 private:
  int fd_ = -1;
};

}  // namespace mapheap::bench
