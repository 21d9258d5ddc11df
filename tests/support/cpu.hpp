// tests/support/cpu.hpp — OnOneCpu: keeps the calling thread on one CPU
// while it lives, for tests whose counts depend on which CPU's front-cache
// array an object went to (a move between a full push and its drain would
// split a batch; a move in a loop of frees fills a second CPU's arrays).
#pragma once

#include "pal/pal.hpp"

namespace mapheap::test {

class OnOneCpu {
 public:
  OnOneCpu() {
    if (!aff_.save().ok()) return;
    unsigned cpu = 0;
    while (cpu < 1024 && !aff_.allowed(cpu)) ++cpu;
    pinned_ = aff_.pin(cpu).ok();
  }
  ~OnOneCpu() {
    if (pinned_) (void)aff_.restore();
  }
  OnOneCpu(const OnOneCpu&) = delete;
  OnOneCpu& operator=(const OnOneCpu&) = delete;
  bool pinned() const { return pinned_; }

 private:
  pal::CpuAffinity aff_;
  bool pinned_ = false;
};

}  // namespace mapheap::test
