// tools/mapheap/bench_malloc.cpp — `mapheap bench malloc`: the process
// allocators side by side.
//
// Each case (a workload of bench/malloc/workloads.cpp, or a real program
// given with --program) runs as its own process under each allocator:
// glibc's malloc (no preload) and jemalloc, tcmalloc, mimalloc and mapheap
// loaded with LD_PRELOAD. Repetitions go round the cases, and within a case
// the allocators take turns in an order that rotates every repetition, so
// that a slow minute of the machine falls on all of them. Reported: the
// median wall time and the median peak RSS (wait4's ru_maxrss) of each, each
// as a ratio to mapheap (above 1: mapheap is better), and for the idle-decay
// workload the RSS it kept after idling. Every run must exit 0; a run that
// fails stops the benchmark with its allocator, case and status.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "mapheap/error.hpp"
#include "measure.hpp"
#include "pal/pal.hpp"
#include "plot.hpp"

namespace mapheap::cli {

namespace {

namespace fs = std::filesystem;

struct Options {
  int reps = 5;
  unsigned threads = 0;  // 0: the CPUs of this machine
  double scale = 1.0;
  unsigned idle_ms = 4000;
  std::vector<std::string> only;        // workloads to run (empty: all)
  std::vector<std::string> allocators;  // empty: all five
  std::vector<std::string> programs;    // NAME=SHELL COMMAND
  std::string workloads;                // path of malloc_workloads
  std::string preload;                  // path of libmapheap_preload.so
  std::string json_path, png_path;
};

struct Allocator {
  std::string name;
  std::string library;  // empty: the C library's own malloc
  std::string package;  // the Debian package that provides it
};

// A shared library in the usual Debian places.
std::string find_library(const std::string& file) {
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                          "/usr/lib", "/usr/local/lib"}) {
    const fs::path p = fs::path(dir) / file;
    std::error_code ec;
    if (fs::exists(p, ec)) return p.string();
  }
  return {};
}

std::string find_workloads(const std::string& given) {
#ifdef MAPHEAP_BUILD_WORKLOADS
  const char* built = MAPHEAP_BUILD_WORKLOADS;
#else
  const char* built = nullptr;
#endif
  return find_file(given, "MAPHEAP_WORKLOADS", {}, built);
}

// The workloads the program knows (`malloc_workloads --list`): a workload
// added there is run without touching this file.
std::vector<std::string> list_workloads(const std::string& path) {
  std::string quoted = "'";
  for (char ch : path) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  quoted += "' --list";
  std::vector<std::string> names;
  if (FILE* f = ::popen(quoted.c_str(), "r")) {
    char line[256];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      std::string name = line;
      while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
      if (!name.empty()) names.push_back(name);
    }
    if (::pclose(f) != 0) names.clear();
  }
  if (names.empty())
    throw mapheap::error(EIO,
                         fmt::format("mapheap bench malloc: `{} --list` did not list workloads",
                                     path),
                         path, 0, "spawn");
  return names;
}

std::vector<Allocator> resolve_allocators(const Options& o, const std::string& preload) {
  const std::vector<Allocator> all = {
      {"glibc", "", "libc6"},
      {"jemalloc", find_library("libjemalloc.so.2"), "libjemalloc2"},
      {"tcmalloc", find_library("libtcmalloc_minimal.so.4"), "libtcmalloc-minimal4"},
      {"mimalloc", find_library("libmimalloc.so.2"), "libmimalloc2.0"},
      {"mapheap", preload, "(this build: libmapheap_preload.so)"},
  };
  std::vector<Allocator> out;
  for (const auto& a : all) {
    if (!o.allocators.empty() &&
        std::find(o.allocators.begin(), o.allocators.end(), a.name) == o.allocators.end())
      continue;
    if (a.name != "glibc" && a.library.empty())
      throw mapheap::error(ENOENT,
                           fmt::format("mapheap bench malloc: {} is not installed (Debian package "
                                       "{}; scripts/deps.sh installs it)",
                                       a.name, a.package),
                           a.name, 0, "find");
    out.push_back(a);
  }
  for (const auto& n : o.allocators)
    if (std::none_of(all.begin(), all.end(), [&](const Allocator& a) { return a.name == n; }))
      throw mapheap::error(EINVAL,
                           fmt::format("mapheap bench malloc: unknown allocator '{}' (known: "
                                       "glibc, jemalloc, tcmalloc, mimalloc, mapheap)",
                                       n),
                           n, 0, "parse");
  if (std::none_of(out.begin(), out.end(), [](const Allocator& a) { return a.name == "mapheap"; }))
    throw mapheap::error(EINVAL, "mapheap bench malloc: the ratios are to mapheap: keep it in --allocators",
                         "", 0, "parse");
  return out;
}

struct Case {
  std::string name;
  std::vector<std::string> argv;  // with "{result}" where the result file goes
  bool idle = false;  // reported rss_after_idle: its wall time is mostly sleep
};

struct Sample {
  double seconds = 0;
  double peak_mib = 0;
  double idle_mib = NAN;
};

// "key value" lines of a workload's --result file.
std::map<std::string, double> read_result(const std::string& path) {
  std::map<std::string, double> kv;
  std::ifstream in(path);
  std::string k;
  double v;
  while (in >> k >> v) kv[k] = v;
  return kv;
}

Sample run_once(const Case& c, const Allocator& a, const std::string& tmp) {
  const std::string result = tmp + "/result.txt";
  std::error_code ec;
  fs::remove(result, ec);
  std::vector<std::string> args;
  for (const auto& s : c.argv) args.push_back(s == "{result}" ? result : s);
  std::vector<const char*> argv;
  for (const auto& s : args) argv.push_back(s.c_str());
  argv.push_back(nullptr);
  // This process's environment, with LD_PRELOAD set (or removed for glibc)
  // and the scratch directory named for the programs' commands.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view kv = *e;
    if (kv.starts_with("LD_PRELOAD=") || kv.starts_with("MAPHEAP_BENCH_TMP=")) continue;
    env.emplace_back(kv);
  }
  if (!a.library.empty()) env.push_back("LD_PRELOAD=" + a.library);
  env.push_back("MAPHEAP_BENCH_TMP=" + tmp);
  std::vector<const char*> envp;
  for (const auto& s : env) envp.push_back(s.c_str());
  envp.push_back(nullptr);

  pal::ChildUsage u;
  const auto r = pal::spawn_wait(argv.data(), envp.data(), u);
  if (!r)
    throw mapheap::error(r.error().code,
                         fmt::format("mapheap bench malloc: cannot run {}: {}", args[0],
                                     std::strerror(r.error().code)),
                         args[0], 0, "spawn");
  if (*r != 0)
    throw mapheap::error(EIO,
                         fmt::format("mapheap bench malloc: {} under {} failed with status {} "
                                     "(command: {})",
                                     c.name, a.name, *r, fmt::join(args, " ")),
                         c.name, 0, "run");
  Sample s;
  s.seconds = static_cast<double>(u.wall_ns) / 1e9;
  s.peak_mib = static_cast<double>(u.max_rss_bytes) / (1 << 20);
  // A workload that idles says so by reporting what it kept.
  const auto kv = read_result(result);
  if (const auto it = kv.find("rss_after_idle"); it != kv.end()) s.idle_mib = it->second / (1 << 20);
  return s;
}

std::string ratio_text(double peer, double mine) {
  if (!(peer > 0) || !(mine > 0)) return "—";
  return fmt::format("{:.2f}x", peer / mine);
}

bool found(const std::string& path, const char* file, const char* option, const char* env) {
  if (path.empty())
    fmt::print(stderr, "mapheap bench malloc: {} not found (give {} PATH or set {})\n", file,
               option, env);
  return !path.empty();
}

int bench_malloc(const Options& o) {
  const std::string workloads = find_workloads(o.workloads);
  const std::string preload = find_preload(o.preload);
  if (!found(workloads, "malloc_workloads", "--workloads", "MAPHEAP_WORKLOADS") ||
      !found(preload, "libmapheap_preload.so", "--preload", "MAPHEAP_PRELOAD"))
    return kUnavailable;
  const std::vector<std::string> names = list_workloads(workloads);
  for (const auto& n : o.only)
    if (std::find(names.begin(), names.end(), n) == names.end())
      throw mapheap::error(EINVAL,
                           fmt::format("mapheap bench malloc: unknown workload '{}' (known: {})",
                                       n, fmt::join(names, ", ")),
                           n, 0, "parse");
  const auto allocators = resolve_allocators(o, preload);
  if (!o.png_path.empty()) check_gnuplot();
  const unsigned threads = o.threads != 0 ? o.threads : std::max(1u, pal::cpu_count());

  std::vector<Case> cases;
  for (const auto& w : names) {
    if (!o.only.empty() && std::find(o.only.begin(), o.only.end(), w) == o.only.end()) continue;
    Case c;
    c.name = w;
    c.argv = {workloads, w, "--threads", std::to_string(threads), "--scale",
              fmt::format("{}", o.scale), "--idle-ms", std::to_string(o.idle_ms), "--result",
              "{result}"};
    cases.push_back(std::move(c));
  }
  for (const auto& p : o.programs) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0)
      throw mapheap::error(EINVAL,
                           fmt::format("mapheap bench malloc: --program wants NAME=COMMAND, got "
                                       "'{}'",
                                       p),
                           p, 0, "parse");
    Case c;
    c.name = p.substr(0, eq);
    c.argv = {"/bin/sh", "-c", p.substr(eq + 1)};
    cases.push_back(std::move(c));
  }
  char tmpl[] = "/tmp/mapheap-bench-malloc-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    throw mapheap::error(errno, "mapheap bench malloc: cannot create a scratch directory in /tmp",
                         "/tmp", 0, "mkdtemp");
  const std::string tmp = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{tmp};

  fmt::print("# mapheap bench malloc: {} cases x {} allocators x {} repetitions, {} threads\n",
             cases.size(), allocators.size(), o.reps, threads);
  // samples[case][allocator]
  std::vector<std::vector<std::vector<Sample>>> samples(
      cases.size(), std::vector<std::vector<Sample>>(allocators.size()));
  for (int rep = 0; rep < o.reps; ++rep) {
    for (std::size_t ci = 0; ci < cases.size(); ++ci) {
      for (std::size_t k = 0; k < allocators.size(); ++k) {
        const std::size_t ai = (k + static_cast<std::size_t>(rep) + ci) % allocators.size();
        samples[ci][ai].push_back(run_once(cases[ci], allocators[ai], tmp));
      }
      std::fprintf(stderr, "\r  repetition %d/%d: %s done          ", rep + 1, o.reps,
                   cases[ci].name.c_str());
    }
  }
  std::fprintf(stderr, "\n");
  for (std::size_t ci = 0; ci < cases.size(); ++ci)
    for (const auto& per_allocator : samples[ci])
      for (const auto& s : per_allocator) cases[ci].idle = cases[ci].idle || !std::isnan(s.idle_mib);

  // Medians and the tables.
  struct Med {
    double seconds, peak_mib, idle_mib;
  };
  std::vector<std::vector<Med>> med(cases.size(), std::vector<Med>(allocators.size()));
  for (std::size_t ci = 0; ci < cases.size(); ++ci)
    for (std::size_t ai = 0; ai < allocators.size(); ++ai) {
      std::vector<double> t, m, idle;
      for (const auto& s : samples[ci][ai]) {
        t.push_back(s.seconds);
        m.push_back(s.peak_mib);
        idle.push_back(s.idle_mib);
      }
      med[ci][ai] = {median(t), median(m), cases[ci].idle ? median(idle) : NAN};
    }
  std::size_t me = 0;
  for (std::size_t ai = 0; ai < allocators.size(); ++ai)
    if (allocators[ai].name == "mapheap") me = ai;

  auto table = [&](const char* title, const char* unit, auto value, auto include) {
    fmt::print("\n### {} (median of {}; ratio = allocator / mapheap, above 1: mapheap better)\n\n",
               title, o.reps);
    fmt::print("| case |");
    for (const auto& a : allocators) fmt::print(" {} |", a.name);
    fmt::print("\n|---|");
    for (std::size_t i = 0; i < allocators.size(); ++i) fmt::print("---|");
    fmt::print("\n");
    std::vector<std::vector<double>> ratios(allocators.size());
    for (std::size_t ci = 0; ci < cases.size(); ++ci) {
      if (!include(cases[ci])) continue;
      fmt::print("| {} |", cases[ci].name);
      const double mine = value(med[ci][me]);
      for (std::size_t ai = 0; ai < allocators.size(); ++ai) {
        const double v = value(med[ci][ai]);
        if (ai == me)
          fmt::print(" {:.3g} {} |", v, unit);
        else
          fmt::print(" {:.3g} {} ({}) |", v, unit, ratio_text(v, mine));
        ratios[ai].push_back(v / mine);
      }
      fmt::print("\n");
    }
    fmt::print("| geometric mean of ratios |");
    for (std::size_t ai = 0; ai < allocators.size(); ++ai)
      if (ai == me)
        fmt::print(" 1 |");
      else
        fmt::print(" {:.2f}x |", geomean(ratios[ai]));
    fmt::print("\n");
    // Against the best of the peers, case by case.
    std::vector<double> vs_best;
    std::string worst_case;
    double worst = 0;
    for (std::size_t ci = 0; ci < cases.size(); ++ci) {
      if (!include(cases[ci])) continue;
      double best = INFINITY;
      for (std::size_t ai = 0; ai < allocators.size(); ++ai)
        if (ai != me) best = std::min(best, value(med[ci][ai]));
      const double r = value(med[ci][me]) / best;
      vs_best.push_back(r);
      if (r > worst) {
        worst = r;
        worst_case = cases[ci].name;
      }
    }
    if (allocators.size() > 1)
      fmt::print("\nmapheap / best peer: geometric mean {:.2f}x, worst {:.2f}x ({})\n",
                 geomean(vs_best), worst, worst_case);
  };
  auto not_idle = [](const Case& c) { return !c.idle; };
  table("Wall time", "s", [](const Med& m) { return m.seconds; }, not_idle);
  table("Peak RSS", "MiB", [](const Med& m) { return m.peak_mib; }, not_idle);
  const bool any_idle =
      std::any_of(cases.begin(), cases.end(), [](const Case& c) { return c.idle; });
  if (any_idle)
    table("RSS after idling", "MiB", [](const Med& m) { return m.idle_mib; },
          [](const Case& c) { return c.idle; });

  // How far the repetitions of one allocator spread (slowest / fastest): a
  // difference between allocators smaller than that is noise, not a result.
  std::vector<std::string> noisy;
  for (std::size_t ci = 0; ci < cases.size(); ++ci)
    for (std::size_t ai = 0; ai < allocators.size(); ++ai) {
      double lo = INFINITY, hi = 0;
      for (const auto& s : samples[ci][ai]) {
        lo = std::min(lo, s.seconds);
        hi = std::max(hi, s.seconds);
      }
      if (lo > 0 && hi / lo > 1.2)
        noisy.push_back(fmt::format("{} under {} ({:.2f}x)", cases[ci].name, allocators[ai].name,
                                    hi / lo));
    }
  if (o.reps > 1)
    fmt::print("\nWall times whose repetitions spread by more than 20% (slowest / fastest): {}\n",
               noisy.empty() ? std::string("none") : fmt::format("{}", fmt::join(noisy, ", ")));

  if (!o.json_path.empty()) {
    nlohmann::json j;
    j["threads"] = threads;
    j["repetitions"] = o.reps;
    j["scale"] = o.scale;
    j["idle_ms"] = o.idle_ms;
    for (std::size_t ci = 0; ci < cases.size(); ++ci)
      for (std::size_t ai = 0; ai < allocators.size(); ++ai) {
        nlohmann::json r;
        r["case"] = cases[ci].name;
        r["allocator"] = allocators[ai].name;
        r["library"] = allocators[ai].library;
        r["median_seconds"] = med[ci][ai].seconds;
        r["median_peak_rss_mib"] = med[ci][ai].peak_mib;
        if (cases[ci].idle) r["median_rss_after_idle_mib"] = med[ci][ai].idle_mib;
        for (const auto& s : samples[ci][ai]) {
          r["seconds"].push_back(s.seconds);
          r["peak_rss_mib"].push_back(s.peak_mib);
        }
        j["results"].push_back(r);
      }
    std::ofstream(o.json_path) << j.dump(2) << "\n";
  }
  if (!o.png_path.empty()) {
    // Each allocator's value over mapheap's, per case: 1 is mapheap.
    auto panel = [&](const std::string& title, const std::string& ylabel, auto value,
                     auto include) {
      BarChart ch;
      ch.title = title;
      ch.ylabel = ylabel;
      ch.log_y = true;
      ch.reference_lines = {1.0};
      for (const auto& a : allocators) ch.series.push_back(a.name);
      ch.colors = {"#888888", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"};
      ch.colors.resize(allocators.size(), "#000000");
      ch.values.assign(allocators.size(), {});
      for (std::size_t ci = 0; ci < cases.size(); ++ci) {
        if (!include(cases[ci])) continue;
        ch.groups.push_back(cases[ci].name);
        for (std::size_t ai = 0; ai < allocators.size(); ++ai)
          ch.values[ai].push_back(value(med[ci][ai]) / value(med[ci][me]));
      }
      return ch;
    };
    std::vector<BarChart> panels = {
        panel("Wall time relative to mapheap (lower is better)", "time / mapheap's",
              [](const Med& m) { return m.seconds; }, not_idle),
        panel("Peak RSS relative to mapheap (lower is better)", "peak RSS / mapheap's",
              [](const Med& m) { return m.peak_mib; }, not_idle)};
    if (any_idle) {
      BarChart idle = panel("RSS after idling", "MiB", [](const Med& m) { return m.idle_mib; },
                            [](const Case& c) { return c.idle; });
      // Absolute values: the point is how low each one gets.
      for (std::size_t ai = 0; ai < allocators.size(); ++ai)
        for (std::size_t ci = 0, g = 0; ci < cases.size(); ++ci)
          if (cases[ci].idle) idle.values[ai][g++] = med[ci][ai].idle_mib;
      idle.log_y = false;
      idle.reference_lines.clear();
      panels.push_back(idle);
    }
    write_png(panels, o.png_path,
              fmt::format("mapheap bench malloc ({} threads, median of {})", threads, o.reps));
    fmt::print("\nplot: {}\n", o.png_path);
  }
  return kOk;
}

}  // namespace

void add_bench_malloc(CLI::App& bench, int& exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* m = bench.add_subcommand(
      "malloc", "Process allocators side by side: glibc, jemalloc, tcmalloc, mimalloc and mapheap "
                "(LD_PRELOAD) on allocator stress workloads and real programs");
  m->add_option("--reps", o->reps, "Repetitions of every case (the median is reported)")
      ->check(CLI::Range(1, 1000));
  m->add_option("--threads", o->threads, "Threads of the threaded workloads (0: the CPU count)");
  m->add_option("--scale", o->scale, "Multiplies every workload's length")
      ->check(CLI::PositiveNumber);
  m->add_option("--idle-ms", o->idle_ms, "How long idle-decay idles before reading its RSS");
  m->add_option("--only", o->only, "Run only these workloads")->delimiter(',');
  m->add_option("--allocators", o->allocators,
                "Allocators to compare (default: glibc,jemalloc,tcmalloc,mimalloc,mapheap)")
      ->delimiter(',');
  m->add_option("--program", o->programs,
                "A real program to time: NAME=SHELL COMMAND (run by /bin/sh -c; "
                "$MAPHEAP_BENCH_TMP is a scratch directory); repeatable");
  m->add_option("--workloads", o->workloads, "Path of the malloc_workloads program");
  m->add_option("--preload", o->preload, "Path of libmapheap_preload.so");
  m->add_option("--json", o->json_path, "Also write every sample to this JSON file");
  m->add_option("--png", o->png_path, "Also draw the ratios into this PNG file (needs gnuplot)");
  m->callback([o, &exit_code] { exit_code = bench_malloc(*o); });
}

}  // namespace mapheap::cli
