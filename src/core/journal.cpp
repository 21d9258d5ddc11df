// core/journal.cpp — the journal's one out-of-line path.
#include "core/journal.hpp"

#include <cstdlib>

#include <unistd.h>

#include "pal/pal.hpp"

namespace mapheap::core {

void Journal::overflow() noexcept {
  // A critical section wrote more metadata than the journal holds: a bug in
  // the engine (its sections are bounded), never a state to continue from,
  // since the section could no longer be taken back.
  static constexpr char kMsg[] =
      "mapheap: undo journal full: a critical section wrote more metadata than it can take back\n";
  (void)pal::write_fd(2, kMsg, sizeof(kMsg) - 1);
  std::abort();
}

void Journal::fault_tick() noexcept {
  if (fault_countdown_.fetch_sub(1, std::memory_order_relaxed) == 0) ::_exit(86);
}

}  // namespace mapheap::core
