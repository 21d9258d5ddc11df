// core/percpu_counter.hpp — statistics counters split per CPU, as the
// kernel's percpu_counter: add() touches only the slot of the CPU the thread
// runs on (read from rseq, no syscall), so counting on a hot path does not
// bounce one cache line between CPUs; read() sums the slots.
//
// A thread may migrate between reading its CPU and adding: the add lands in
// another CPU's slot, which is still correct (slots are atomic; the sum is
// exact once the adders are done) and only costs a shared line now and then.
// read() while adders run is a snapshot that may miss adds in flight, which is
// what statistics need.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "pal/pal.hpp"

namespace mapheap::core {

// kCounters counters, each CPU's together in its own cache lines (as the
// kernel keeps a CPU's counters in its per-CPU area): two CPUs never write
// the same line.
//
// The slots (kSlots x 128 bytes for ten counters, 8 KiB) are mapped at the
// first add, not when the owner is built: an object that is built and never
// counts (an engine opened to find one named object, in a new process) costs
// neither the memory nor the page faults of zeroing it, and the anonymous
// mapping's pages are faulted in only for the CPUs that count (32 slots a
// page). If that mapping cannot be made, every CPU adds to one slot kept in
// the object: exact still, only shared.
template <unsigned kCounters, unsigned kSlots = 64>
class PerCpuCounters {
  static_assert(kCounters > 0, "at least one counter");
  static_assert(kSlots > 0 && (kSlots & (kSlots - 1)) == 0, "a power of two");

  struct alignas(64) Slot {
    std::int64_t v[kCounters];  // through atomic_ref: zero pages are valid slots
  };

 public:
  static constexpr std::size_t kSlotBytes = kSlots * sizeof(Slot);

  PerCpuCounters() = default;
  PerCpuCounters(const PerCpuCounters&) = delete;
  PerCpuCounters& operator=(const PerCpuCounters&) = delete;
  ~PerCpuCounters() {
    Slot* s = slots_.load(std::memory_order_acquire);
    if (s != nullptr && s != &spare_) (void)pal::unmap(s, kSlotBytes);
  }

  void add(unsigned which, std::int64_t delta) noexcept {
    Slot* s = slots_.load(std::memory_order_acquire);
    if (s == nullptr) [[unlikely]]
      s = materialize();
    const unsigned i = s == &spare_ ? 0 : pal::current_cpu() & (kSlots - 1);
    std::atomic_ref<std::int64_t>(s[i].v[which]).fetch_add(delta, std::memory_order_relaxed);
  }
  std::int64_t read(unsigned which) const noexcept {
    std::int64_t sum = 0;
    Slot* s = slots_.load(std::memory_order_acquire);
    for (unsigned i = 0; i < slot_count(s); ++i)
      sum += std::atomic_ref<std::int64_t>(s[i].v[which]).load(std::memory_order_relaxed);
    return sum;
  }
  void reset(unsigned which) noexcept {
    Slot* s = slots_.load(std::memory_order_acquire);
    for (unsigned i = 0; i < slot_count(s); ++i)
      std::atomic_ref<std::int64_t>(s[i].v[which]).store(0, std::memory_order_relaxed);
  }

  // Whether the slots exist yet (after the first add), and whether they are
  // the per-CPU ones (false: the mapping failed, all CPUs share one slot).
  bool materialized() const noexcept { return slots_.load(std::memory_order_acquire) != nullptr; }
  bool per_cpu() const noexcept {
    Slot* s = slots_.load(std::memory_order_acquire);
    return s != nullptr && s != &spare_;
  }

 private:
  unsigned slot_count(const Slot* s) const noexcept { return s == nullptr ? 0 : s == &spare_ ? 1 : kSlots; }

  // The first add (of any thread): maps the slots, zero-filled by the OS, or
  // falls back to spare_; the first to publish wins, the others unmap theirs.
  Slot* materialize() noexcept {
    auto r = pal::map(nullptr, kSlotBytes, pal::Prot::read_write, pal::kMapPrivate | pal::kMapAnonymous, -1, 0);
    Slot* fresh = r.ok() ? static_cast<Slot*>(r.value()) : &spare_;
    Slot* seen = nullptr;
    if (slots_.compare_exchange_strong(seen, fresh, std::memory_order_acq_rel, std::memory_order_acquire))
      return fresh;
    if (fresh != &spare_) (void)pal::unmap(fresh, kSlotBytes);
    return seen;
  }

  std::atomic<Slot*> slots_{nullptr};
  Slot spare_{};
};

}  // namespace mapheap::core
