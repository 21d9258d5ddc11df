// heap/options.hpp — MAPHEAP_OPTIONS: the process heap's settings, read
// from the environment when the heap is created, without allocating.
//
//   MAPHEAP_OPTIONS=stats=1,decay_ms=250,cache=per-thread
//
//   stats=0|1|json     print statistics at exit (text or JSON)
//   stats_file=PATH    ... to PATH instead of standard error
//   decay_ms=N         free runs go back to the OS after N ms (default 1000)
//   decay_thread=0|1   a thread that runs decay while the program is idle
//                      (default 1; started at the first memory to decay)
//   cache=auto|per-cpu|per-thread|none
//   thp=large|always|never  transparent huge pages: for large allocations of
//                      2 MiB and more (default), for the whole heap, or
//                      refused even where the system would give them
//   checked=0|1        verify every free fully (each double free caught; slow)
//   verbose=0|1        say on standard error which heap was made, and why not
//
// An unknown name or a bad value gives a one-line warning on standard error
// and is otherwise ignored: a typo never stops a program.
#pragma once

#include <cstdint>

#include "cache/front_cache.hpp"

namespace mapheap::heap {

enum class StatsMode : std::uint8_t { off, text, json };
enum class ThpMode : std::uint8_t { large, always, never };

struct HeapOptions {
  StatsMode stats = StatsMode::off;
  char stats_file[256] = {};  // empty: standard error
  std::uint32_t decay_ms = 1000;
  cache::CacheMode cache = cache::CacheMode::automatic;
  bool verbose = false;
  bool decay_thread = true;
  ThpMode thp = ThpMode::large;
  bool checked = false;
};

// Parses `text` (may be null) into `out`, warning through `warn` (a line
// without its newline) about every entry it does not take.
void parse_options(const char* text, HeapOptions& out, void (*warn)(const char* line)) noexcept;

}  // namespace mapheap::heap
