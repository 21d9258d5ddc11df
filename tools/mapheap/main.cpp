// tools/mapheap/main.cpp — the `mapheap` command: inspect, check and measure
// memory that lives in mappings. Subcommands live one per file (commands.hpp).
#include <cstdio>
#include <exception>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "mapheap/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"mapheap — memory that lives in memory mappings"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mapheap 0.1.0");
  int exit_code = mapheap::cli::kOk;

  mapheap::cli::add_info(app, exit_code);
  mapheap::cli::add_run(app, exit_code);
  mapheap::cli::add_heap(app, exit_code);
  CLI::App* bench = app.add_subcommand("bench", "Measure mapheap against its peers");
  bench->require_subcommand(1);
  mapheap::cli::add_bench_io(*bench, exit_code);
  mapheap::cli::add_bench_malloc(*bench, exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : mapheap::cli::kUsage;
  } catch (const mapheap::error& e) {
    fmt::print(stderr, "{}\n", e.what());
    return mapheap::cli::kFailure;
  } catch (const std::exception& e) {
    fmt::print(stderr, "mapheap: {}\n", e.what());
    return mapheap::cli::kFailure;
  }
  return exit_code;
}
