// tools/mapheap/run.cpp — `mapheap run -- COMMAND [ARGS...]`: runs a command
// with mapheap as its malloc (LD_PRELOAD of libmapheap_preload.so) and
// prints the allocator's statistics of that process when it ends: counters,
// /proc/buddyinfo and /proc/slabinfo in their shapes, or JSON. Exits with
// the command's status.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "commands.hpp"
#include "pal/pal.hpp"

namespace mapheap::cli {

std::string find_file(const std::string& given, const char* env_name,
                      std::initializer_list<const char*> installed, const char* built) {
  namespace fs = std::filesystem;
  if (!given.empty()) return given;
  if (const char* env = std::getenv(env_name)) return env;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const char* rel : installed) {
      const fs::path p = self.parent_path().parent_path() / rel;
      if (fs::exists(p, ec)) return p.string();
    }
  }
  if (built != nullptr && fs::exists(built, ec)) return built;
  return {};
}

std::string find_preload(const std::string& given) {
#ifdef MAPHEAP_BUILD_PRELOAD
  const char* built = MAPHEAP_BUILD_PRELOAD;
#else
  const char* built = nullptr;
#endif
  return find_file(given, "MAPHEAP_PRELOAD",
                   {"lib/libmapheap_preload.so", "lib64/libmapheap_preload.so",
                    "lib/x86_64-linux-gnu/libmapheap_preload.so"},
                   built);
}

namespace {

int run(const std::vector<std::string>& command, const std::string& preload_opt, bool json) {
  const std::string preload = find_preload(preload_opt);
  if (preload.empty()) {
    fmt::print(stderr,
               "mapheap run: libmapheap_preload.so not found (give --preload PATH or set "
               "MAPHEAP_PRELOAD)\n");
    return kUnavailable;
  }
  char stats_path[] = "/tmp/mapheap-run-XXXXXX";
  const int fd = ::mkstemp(stats_path);
  if (fd < 0) {
    fmt::print(stderr, "mapheap run: cannot create a statistics file in /tmp\n");
    return kFailure;
  }
  ::close(fd);
  std::string ld = preload;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0')
    ld += std::string(":") + old;
  std::string options = std::string("stats=") + (json ? "json" : "text") + ",stats_file=" + stats_path;
  if (const char* old = std::getenv("MAPHEAP_OPTIONS"); old != nullptr && *old != '\0')
    options = std::string(old) + "," + options;
  ::setenv("LD_PRELOAD", ld.c_str(), 1);
  ::setenv("MAPHEAP_OPTIONS", options.c_str(), 1);
  std::vector<const char*> argv;
  for (const auto& a : command) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  const auto status = pal::spawn_wait(argv.data());
  ::unsetenv("LD_PRELOAD");
  if (!status.ok()) {
    char msg[512];
    status.error().format(msg, sizeof(msg));
    fmt::print(stderr, "mapheap run: {}\n", msg);
    std::remove(stats_path);
    return kFailure;
  }
  std::ifstream in(stats_path);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(stats_path);
  if (text.str().empty()) {
    fmt::print(stderr,
               "mapheap run: {} wrote no statistics (a static binary, or one that ended "
               "without exit handlers)\n",
               command[0]);
  } else {
    std::cout << (json ? "" : "== mapheap statistics of " + command[0] + "\n") << text.str();
    std::cout.flush();
  }
  return *status;
}

}  // namespace

void add_run(CLI::App& app, int& exit_code) {
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a command with mapheap as its malloc and print its allocator statistics");
  auto command = std::make_shared<std::vector<std::string>>();
  auto preload = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("command", *command, "the command and its arguments (after --)")
      ->required()
      ->allow_extra_args();
  cmd->add_option("--preload", *preload, "path of libmapheap_preload.so");
  cmd->add_flag("--json", *json, "statistics as JSON");
  cmd->callback([&exit_code, command, preload, json] { exit_code = run(*command, *preload, *json); });
}

}  // namespace mapheap::cli
