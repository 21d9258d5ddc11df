// core/percpu_counter.hpp — a statistics counter split per CPU, as the
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

template <unsigned kSlots = 64>
class PerCpuCounter {
  static_assert(kSlots > 0 && (kSlots & (kSlots - 1)) == 0, "a power of two");

 public:
  void add(std::int64_t delta) noexcept {
    slots_[pal::current_cpu() & (kSlots - 1)].v.fetch_add(delta, std::memory_order_relaxed);
  }
  std::int64_t read() const noexcept {
    std::int64_t sum = 0;
    for (const Slot& s : slots_) sum += s.v.load(std::memory_order_relaxed);
    return sum;
  }
  void reset() noexcept {
    for (Slot& s : slots_) s.v.store(0, std::memory_order_relaxed);
  }

 private:
  // One cache line per slot: two CPUs never write the same line.
  struct alignas(64) Slot {
    std::atomic<std::int64_t> v{0};
  };
  Slot slots_[kSlots];
};

}  // namespace mapheap::core
