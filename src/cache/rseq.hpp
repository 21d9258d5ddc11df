// cache/rseq.hpp — push and pop on the current CPU's array with restartable
// sequences: no lock, no atomic instruction, no syscall.
//
// A per-CPU array is one 64-bit word followed by items:
//
//   [ word: count (bits 0..15) | operations (bits 16..63) | item 0 : u64 | ... | item cap-1 ]
//
// and the array of CPU c lives at `base + c * stride`. An operation reads the
// CPU number from the thread's rseq area, finds its array, and commits with
// one store of the new word as its last instruction: the count and the
// number of operations change together, exactly once (pushes and pops are
// (operations +/- count) / 2: statistics with no extra instruction). If the thread is
// preempted, migrated or signalled before that store, the kernel moves it to
// the abort handler, which starts over. So each operation runs as if alone on
// its CPU, whichever process the other threads on that CPU belong to: the
// arrays may live in memory shared by many processes. And a process killed at
// any instruction leaves every array consistent: before the commit nothing
// was published, after it everything was (at most the one item in its hands
// is lost to the heap until recovery returns it).
//
// The critical sections are x86-64 assembly (this is the whole architecture
// dependence of the engine). Elsewhere, or when the C library registered no
// rseq area (GLIBC_TUNABLES=glibc.pthread.rseq=0, valgrind, an old kernel),
// rseq_available() is false and the engine uses per-thread caches instead.
//
// Descriptors: each inlined copy of an operation emits its struct rseq_cs
// (version, flags, start, length, abort) into section __mapheap_rseq_cs, and
// its abort handler, preceded by the signature the C library registered
// (RSEQ_SIG), into __mapheap_rseq_abort. Both sections carry the `?` flag:
// they join the section group of the code around them, so when the linker
// drops a duplicate inline or template copy (a COMDAT group) it drops that
// copy's descriptor too, instead of keeping one that points into nothing. The kernel clears rseq_cs when it
// aborts a sequence, so the handler jumps back to where the descriptor is
// armed, not to the start of the sequence.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && __has_include(<sys/rseq.h>)
#include <sys/rseq.h>
#define MAPHEAP_RSEQ 1
#else
#define MAPHEAP_RSEQ 0
#endif

namespace mapheap::cache {

inline constexpr std::uint64_t kCountMask = 0xffff;
inline constexpr std::uint64_t kOpsUnit = std::uint64_t{1} << 16;
inline constexpr std::uint64_t count_of(std::uint64_t word) noexcept { return word & kCountMask; }
inline constexpr std::uint64_t ops_of(std::uint64_t word) noexcept { return word >> 16; }
inline constexpr std::uint64_t kPopDelta = kOpsUnit - 1;   // count - 1, operations + 1
inline constexpr std::uint64_t kPushDelta = kOpsUnit + 1;  // count + 1, operations + 1

// Whether this thread has an rseq area with a CPU number in it.
inline bool rseq_available() noexcept {
#if MAPHEAP_RSEQ
  if (__rseq_size == 0) return false;
  const auto* rs = reinterpret_cast<const volatile struct rseq*>(
      static_cast<char*>(__builtin_thread_pointer()) + __rseq_offset);
  return static_cast<std::int32_t>(rs->cpu_id) >= 0;
#else
  return false;
#endif
}

#if MAPHEAP_RSEQ
inline struct rseq* rseq_area() noexcept {
  return reinterpret_cast<struct rseq*>(static_cast<char*>(__builtin_thread_pointer()) +
                                        __rseq_offset);
}

// The parts both operations share. Operands: t (scratch, then the CPU
// number, then the array), n (the count), w (the word), rs, base, stride (an
// immediate), ncpu, cap, sig. Few registers: base, ncpu and cap may be memory
// operands, so that an inlined operation needs no callee-saved register
// (and its caller no stack frame).
//
// ARM: emit the descriptor (start 1:, length to 2:, abort 4:) and point
// rseq->rseq_cs at it (label 0:, where the abort handler comes back to).
#define MAPHEAP_RSEQ_ARM                               \
  ".pushsection __mapheap_rseq_cs, \"aw?\"\n\t"       \
  ".balign 32\n\t"                                     \
  "3:\n\t"                                             \
  ".long 0, 0\n\t"                                     \
  ".quad 1f, 2f - 1f, 4f\n\t"                          \
  ".popsection\n\t"                                    \
  "0:\n\t"                                             \
  "leaq 3b(%%rip), %[t]\n\t"                           \
  "movq %[t], 8(%[rs])\n\t" /* rseq->rseq_cs */        \
  "1:\n\t"
// FIND: this CPU's array into t, its word into w and count into n; out to 2:
// if the CPU number is unknown or >= ncpu.
#define MAPHEAP_RSEQ_FIND                              \
  "movl 4(%[rs]), %k[t]\n\t" /* rseq->cpu_id */       \
  "cmpl %[ncpu], %k[t]\n\t"                            \
  "jae 2f\n\t"                                         \
  "imulq %[stride], %[t], %[t]\n\t"                    \
  "addq %[base], %[t]\n\t"                             \
  "movq (%[t]), %[w]\n\t"                              \
  "movzwl %w[w], %[n]\n\t" /* count */                 \
  "cmpl %[cap], %[n]\n\t"
// END: the label after the commit, and the abort handler after the signature.
#define MAPHEAP_RSEQ_END                               \
  "2:\n\t"                                             \
  ".pushsection __mapheap_rseq_abort, \"ax?\"\n\t"    \
  ".long %c[sig]\n\t"                                  \
  "4:\n\t"                                             \
  "jmp 0b\n\t"                                         \
  ".popsection\n\t"

// Pops the top item of this CPU's array: the item, or 0 when the array is
// empty, the CPU number is >= ncpu (or unknown), or the count is above cap
// (a corrupt array is never read past its end).
template <std::uint32_t Stride>
inline std::uint64_t rseq_pop(std::byte* base, std::uint32_t ncpu, std::uint32_t cap) noexcept {
  std::uint64_t t, item, w;
  std::uint32_t n;
  asm volatile(MAPHEAP_RSEQ_ARM
               "xorl %k[item], %k[item]\n\t"  //
               MAPHEAP_RSEQ_FIND
               "ja 2f\n\t"
               "testl %[n], %[n]\n\t"
               "jz 2f\n\t"
               "movq (%[t], %q[n], 8), %[item]\n\t"  // items[count - 1], 8 bytes past the word
               "addq %[delta], %[w]\n\t"
               "movq %[w], (%[t])\n\t"  // commit
               MAPHEAP_RSEQ_END
               : [t] "=&r"(t), [n] "=&r"(n), [item] "=&r"(item), [w] "=&r"(w)
               : [rs] "r"(rseq_area()), [base] "rm"(base), [stride] "i"(Stride),
                 [ncpu] "rm"(ncpu), [cap] "rm"(cap), [delta] "i"(kPopDelta), [sig] "i"(RSEQ_SIG)
               : "memory", "cc");
  return item;
}

// Pushes `item` (non-zero) on this CPU's array; false when it is full (or
// the CPU number is >= ncpu, or unknown).
template <std::uint32_t Stride>
inline bool rseq_push(std::byte* base, std::uint32_t ncpu, std::uint32_t cap,
                      std::uint64_t item) noexcept {
  std::uint64_t t, w;
  std::uint32_t n, ok;
  asm volatile(MAPHEAP_RSEQ_ARM
               "xorl %[ok], %[ok]\n\t"  //
               MAPHEAP_RSEQ_FIND
               "jae 2f\n\t"
               "movq %[item], 8(%[t], %q[n], 8)\n\t"  // above the count: invisible until the commit
               "addq %[delta], %[w]\n\t"
               "movl $1, %[ok]\n\t"
               "movq %[w], (%[t])\n\t"  // commit
               MAPHEAP_RSEQ_END
               : [t] "=&r"(t), [n] "=&r"(n), [ok] "=&r"(ok), [w] "=&r"(w)
               : [rs] "r"(rseq_area()), [base] "rm"(base), [stride] "i"(Stride),
                 [ncpu] "rm"(ncpu), [cap] "rm"(cap), [item] "r"(item), [delta] "i"(kPushDelta),
                 [sig] "i"(RSEQ_SIG)
               : "memory", "cc");
  return ok != 0;
}
#undef MAPHEAP_RSEQ_ARM
#undef MAPHEAP_RSEQ_FIND
#undef MAPHEAP_RSEQ_END
#else
template <std::uint32_t Stride>
inline std::uint64_t rseq_pop(std::byte*, std::uint32_t, std::uint32_t) noexcept {
  return 0;
}
template <std::uint32_t Stride>
inline bool rseq_push(std::byte*, std::uint32_t, std::uint32_t, std::uint64_t) noexcept {
  return false;
}
#endif

}  // namespace mapheap::cache
