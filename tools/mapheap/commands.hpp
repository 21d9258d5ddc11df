// tools/mapheap/commands.hpp — how the CLI's subcommands plug into main().
//
// Each subcommand registers itself on a CLI11 App and, when run, stores its
// exit status in the shared `exit_code`. Exit statuses mean the same thing in
// every subcommand:
#pragma once

#include <initializer_list>
#include <string>

#include <CLI/CLI.hpp>

namespace mapheap::cli {

enum Exit : int {
  kOk = 0,           // did what was asked; for check-like commands: all is well
  kFailure = 1,      // the operation failed (the message names why)
  kUsage = 2,        // bad command line (CLI11 prints the usage)
  kUnavailable = 3,  // the machine lacks what was asked (e.g. gnuplot for --png)
};

void add_info(CLI::App& app, int& exit_code);
void add_bench_io(CLI::App& bench, int& exit_code);
void add_run(CLI::App& app, int& exit_code);
void add_bench_malloc(CLI::App& bench, int& exit_code);
// stat, ls, check, recover, gc, snapshot, map: the commands that open a mapped heap.
void add_heap(CLI::App& app, int& exit_code);

// A file the CLI runs or preloads: `given`, else $env_name, else one of the
// `installed` paths relative to the prefix this executable is installed in,
// else `built` (this build's own, may be null); empty if none exists.
std::string find_file(const std::string& given, const char* env_name,
                      std::initializer_list<const char*> installed, const char* built);
// libmapheap_preload.so (--preload, $MAPHEAP_PRELOAD, ../lib, this build's).
std::string find_preload(const std::string& given);

}  // namespace mapheap::cli
