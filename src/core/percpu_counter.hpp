// core/percpu_counter.hpp — statistics counters split per CPU, as the
// kernel's percpu_counter: add() touches only the slot of the CPU the thread
// runs on (read from rseq, no syscall), so counting on a hot path does not
// bounce one cache line between CPUs; read() sums the slots.
//
// A thread may migrate between reading its CPU and adding: the add lands in
// another CPU's slot, which is still correct (slots are atomics; the sum is
// exact once the adders are done) and only costs a shared line now and then.
// read() while adders run is a snapshot that may miss adds in flight, which is
// what statistics need.
#pragma once

#include <atomic>
#include <cstdint>

#include "pal/pal.hpp"

namespace mapheap::core {

// kCounters counters, each CPU's together in its own cache lines (as the
// kernel keeps a CPU's counters in its per-CPU area): two CPUs never write
// the same line, and a set of ten costs 64 slots x 128 bytes, 8 KiB, where
// ten separate counters took 40 KiB (ten pages to fault in when an owner is
// built: the mapped heap's open did, in every process).
template <unsigned kCounters, unsigned kSlots = 64>
class PerCpuCounters {
  static_assert(kCounters > 0, "at least one counter");
  static_assert(kSlots > 0 && (kSlots & (kSlots - 1)) == 0, "a power of two");

 public:
  void add(unsigned which, std::int64_t delta) noexcept {
    slots_[pal::current_cpu() & (kSlots - 1)].v[which].fetch_add(delta, std::memory_order_relaxed);
  }
  std::int64_t read(unsigned which) const noexcept {
    std::int64_t sum = 0;
    for (const Slot& s : slots_) sum += s.v[which].load(std::memory_order_relaxed);
    return sum;
  }
  void reset(unsigned which) noexcept {
    for (Slot& s : slots_) s.v[which].store(0, std::memory_order_relaxed);
  }

 private:
  struct alignas(64) Slot {
    std::atomic<std::int64_t> v[kCounters] = {};
  };
  Slot slots_[kSlots];
};

}  // namespace mapheap::core
