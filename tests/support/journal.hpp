// tests/support/journal.hpp — ScratchJournal: an undo journal of a given
// capacity over a region the test owns, its entries in memory of their own,
// for tests that run code inside a shared heap's kind of critical section
// (core::JournalScope) without a shared heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/journal.hpp"

namespace mapheap::test {

class ScratchJournal : public core::Journal {
 public:
  // Pre-images of stores inside [base, base + bytes), `capacity` of them.
  ScratchJournal(void* base, std::size_t bytes, std::uint32_t capacity)
      : words_(core::JournalArea::bytes_for(capacity) / sizeof(std::uint64_t) + 1) {
    bind(static_cast<std::byte*>(base), bytes, reinterpret_cast<core::JournalArea*>(words_.data()));
    format(capacity);
  }

 private:
  std::vector<std::uint64_t> words_;  // the area, 8-byte aligned
};

}  // namespace mapheap::test
