// tools/mapheap/heap_cmds.cpp — the commands that open a mapped heap (a heap
// in a file, or in a POSIX shm object with --shm; include/mapheap/heap.hpp):
//
//   mapheap stat FILE [--json]       sizes, buddyinfo, slabinfo, named objects, processes
//   mapheap ls FILE [--json]         the named objects
//   mapheap check FILE               every invariant, on a read-only mapping
//   mapheap recover FILE             opens read-write (recovery runs), then checks
//   mapheap gc FILE                  frees what no named object reaches
//   mapheap snapshot FILE DEST       a consistent copy that opens as a heap
//   mapheap map FILE [--png OUT]     a picture of the pages, like a disk defragmenter's
//
// Only the public API is used: what these commands show is what any program
// could learn. Reading commands (stat, ls, check, map) map the heap read-only
// and never change it; recover, gc and snapshot open it read-write, which
// runs recovery first if its last user did not close it cleanly.
//
// Exit statuses are those of commands.hpp, and check and recover answer like
// fsck: 0 every invariant holds, 1 a violation, 2 the heap cannot be opened.
//
// The API has no progress callbacks, so a long operation (opening with
// recovery, check, gc, snapshot) cannot say how far it got: once it has run a
// second it says on standard error what it is doing, again every 10 s, and
// how long it took when it ends.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <sys/stat.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "mapheap/error.hpp"
#include "mapheap/heap.hpp"
#include "pal/pal.hpp"
#include "plot.hpp"

namespace mapheap::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kCannotOpen = 2;  // check and recover: the heap could not be looked at

// ---------------------------------------------------------------- the heap

// The heap a command works on, as the command line names it.
struct Target {
  std::string file;
  bool shm = false;
  bool follow_symlinks = false;

  // A POSIX shm name has exactly one leading slash; "graph" means "/graph".
  std::string path() const { return shm && file.rfind('/', 0) != 0 ? "/" + file : file; }
  // How messages name it: 'path' or shm '/name'.
  std::string label() const {
    return shm ? fmt::format("shm '{}'", path()) : fmt::format("'{}'", path());
  }
  HeapOptions options(HeapMode mode) const {
    HeapOptions o = shm ? HeapOptions::shm(path(), mode) : HeapOptions::file(path(), mode);
    o.follow_symlinks = follow_symlinks;
    return o;
  }
};

void add_target(CLI::App* cmd, Target& t) {
  cmd->add_option("FILE", t.file, "the heap's file (its POSIX shm name with --shm)")->required();
  cmd->add_flag("--shm", t.shm, "FILE is a POSIX shared memory object's name (\"/name\")");
  cmd->add_flag("--follow-symlinks", t.follow_symlinks,
                "open the heap through a symbolic link (refused otherwise)");
}

// The reason in an exception's message: mapheap::error's what() is a whole
// sentence starting with "mapheap: ", which a message of ours already has.
std::string reason(const std::exception& e) {
  std::string m = e.what();
  constexpr std::string_view kPrefix = "mapheap: ";
  if (m.rfind(kPrefix, 0) == 0) m.erase(0, kPrefix.size());
  if (m.empty()) m = "unknown error";
  return m;
}

// Every failure: "mapheap: <what>: <reason>", with <what> naming the heap.
void fail(const std::string& what, const std::string& why) {
  std::fflush(stdout);
  fmt::print(stderr, "mapheap: {}: {}\n", what, why);
}
void fail(const std::string& what, const std::exception& e) {
  fail(what, reason(e));
}

std::string seconds_text(double s) {
  if (s < 0.001) return fmt::format("{:.0f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.1f} ms", s * 1e3);
  return fmt::format("{:.2f} s", s);
}

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Says on standard error what a long operation is doing once it has run a
// second (and every 10 s after that), and how long it took if it said so.
// Quick operations print nothing.
class Progress {
 public:
  Progress(std::string doing, std::string done)
      : doing_(std::move(doing)), done_(std::move(done)), start_(Clock::now()) {
    thread_ = std::thread([this] { watch(); });
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  // The seconds the operation took; idempotent.
  double finish() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (finished_) return seconds_;
      finished_ = true;
      seconds_ = since(start_);
    }
    wake_.notify_all();
    thread_.join();
    if (announced_) fmt::print(stderr, "mapheap: {} in {}\n", done_, seconds_text(seconds_));
    return seconds_;
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    auto next = start_ + std::chrono::seconds(1);
    while (!wake_.wait_until(lock, next, [this] { return finished_; })) {
      if (!announced_)
        fmt::print(stderr, "mapheap: {} ...\n", doing_);
      else
        fmt::print(stderr, "mapheap: still {} ({:.0f} s so far)\n", doing_, since(start_));
      announced_ = true;
      next += std::chrono::seconds(10);
    }
  }

  std::string doing_, done_;
  Clock::time_point start_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool finished_ = false;
  bool announced_ = false;  // written by the watcher, read after join()
  double seconds_ = 0;
  std::thread thread_;
};

// Opens the heap; on failure prints why and returns nothing.
std::optional<MappedHeap> open_heap(const Target& t, HeapMode mode) {
  const bool writable = mode != HeapMode::read_only;
  try {
    // A read-write open runs recovery, which takes as long as the heap is big.
    std::optional<Progress> progress;
    if (writable)
      progress.emplace(
          fmt::format("opening {} (recovery runs if it was not closed cleanly)", t.label()),
          fmt::format("opened {}", t.label()));
    auto r = MappedHeap::try_open(t.options(mode));
    if (progress) progress->finish();
    if (!r) {
      fail(fmt::format("cannot open heap {}", t.label()), r.err());
      return std::nullopt;
    }
    return std::move(r).value();
  } catch (const std::exception& e) {
    fail(fmt::format("cannot open heap {}", t.label()), e);
    return std::nullopt;
  }
}

// A read-write open of a heap that was not closed cleanly ran recovery: say so.
void note_recovery(const MappedHeap& h, const Target& t) {
  const OpenReport& r = h.open_report();
  if (!r.recovered) return;
  fmt::print(stderr,
             "mapheap: {} was not closed cleanly: opening it ran recovery ({} journal entries "
             "rolled back, {} isolated pages and {} cached objects returned, {})\n",
             t.label(), r.rolled_back, r.isolated_pages, r.reclaimed_cached,
             seconds_text(r.open_seconds));
}

// Closes a heap opened read-write (the flush that marks it clean can fail).
bool close_heap(MappedHeap& h, const Target& t) {
  try {
    h.close();
    return true;
  } catch (const std::exception& e) {
    fail(fmt::format("cannot close heap {}", t.label()), e);
    return false;
  }
}

// "64.0 MiB"
std::string size_text(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  unsigned u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  if (v == std::floor(v)) return fmt::format("{:.0f} {}", v, kUnits[u]);
  return fmt::format("{:.1f} {}", v, kUnits[u]);
}

double percent(std::uint64_t part, std::uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

void print_indented(const std::string& text) {
  std::size_t from = 0;
  while (from < text.size()) {
    std::size_t to = text.find('\n', from);
    if (to == std::string::npos) to = text.size();
    fmt::print("    {}\n", std::string_view(text).substr(from, to - from));
    from = to + 1;
  }
}

// ---------------------------------------------------------------- stat

int stat_heap(const Target& t, bool json) {
  auto heap = open_heap(t, HeapMode::read_only);
  if (!heap) return kFailure;
  HeapStats s;
  try {
    s = heap->stats();
  } catch (const std::exception& e) {
    fail(fmt::format("cannot read the statistics of heap {}", t.label()), e);
    return kFailure;
  }
  const std::size_t page = heap->page_size();
  if (json) {
    nlohmann::json procs = nlohmann::json::array();
    for (const ProcessInfo& p : s.processes) procs.push_back({{"pid", p.pid}, {"alive", p.alive}});
    // The engine's own statistics are JSON already; kept as text if they do not parse.
    nlohmann::json engine = nlohmann::json::parse(s.json, nullptr, false);
    if (engine.is_discarded()) engine = s.json;
    const nlohmann::json out = {
        {"heap", t.path()},
        {"backing", t.shm ? "shm" : "file"},
        {"page_size", page},
        {"region_bytes", s.region_bytes},
        {"committed_bytes", s.committed_bytes},
        {"used_bytes", s.used_bytes},
        {"free_bytes", s.free_bytes},
        {"metadata_bytes", s.metadata_bytes},
        {"named_objects", s.named_objects},
        {"processes", procs},
        {"journal",
         {{"sections", s.journal_sections},
          {"rollbacks", s.journal_rollbacks},
          {"high_water", s.journal_high_water},
          {"capacity", s.journal_capacity}}},
        {"buddyinfo", s.buddyinfo},
        {"slabinfo", s.slabinfo},
        {"engine", engine},
    };
    fmt::print("{}\n", out.dump(2));
    return kOk;
  }

  fmt::print("mapheap stat — heap {}\n\n", t.label());
  auto row = [](const char* name, std::uint64_t bytes, const std::string& note) {
    fmt::print("  {:<18}{:>12}  {:>14} B{}\n", name, size_text(bytes), bytes,
               note.empty() ? "" : "  " + note);
  };
  row("size (max)", s.region_bytes, "the reservation: the heap grows up to it");
  row("committed", s.committed_bytes,
      fmt::format("{:.1f}% of the reservation", percent(s.committed_bytes, s.region_bytes)));
  row("used", s.used_bytes,
      fmt::format("{:.1f}% of committed, in live objects",
                  percent(s.used_bytes, s.committed_bytes)));
  row("free", s.free_bytes,
      fmt::format("{:.1f}% of committed, in free pages", percent(s.free_bytes, s.committed_bytes)));
  row("metadata", s.metadata_bytes,
      fmt::format("{:.1f}% of committed", percent(s.metadata_bytes, s.committed_bytes)));
  fmt::print("  {:<18}{:>12}\n", "page size", size_text(page));
  fmt::print("  {:<18}{:>12}\n", "named objects", s.named_objects);
  if (s.processes.empty()) {
    fmt::print("  {:<18}{:>12}\n", "processes", "none");
  } else {
    std::size_t alive = 0;
    std::string list;
    for (const ProcessInfo& p : s.processes) {
      alive += p.alive ? 1 : 0;
      list += fmt::format("{}{} ({})", list.empty() ? "" : ", ", p.pid, p.alive ? "alive" : "dead");
    }
    fmt::print("  {:<18}{:>12}  {} alive: {}\n", "processes", s.processes.size(), alive, list);
  }
  // docs/design/crash.md: the undo journals of the heap's two locks.
  fmt::print("  {:<18}{:>12}  critical sections committed; {} taken back after a death; at most {} of {} entries in one\n",
             "journal", s.journal_sections, s.journal_rollbacks, s.journal_high_water, s.journal_capacity);
  fmt::print("\n  buddyinfo (free page runs by order)\n");
  print_indented(s.buddyinfo.empty() ? std::string("(none)") : s.buddyinfo);
  fmt::print("\n  slabinfo\n");
  print_indented(s.slabinfo.empty() ? std::string("(none)") : s.slabinfo);
  return kOk;
}

// ---------------------------------------------------------------- ls

int list_names(const Target& t, bool json) {
  auto heap = open_heap(t, HeapMode::read_only);
  if (!heap) return kFailure;
  std::vector<NamedInfo> names;
  try {
    names = heap->names();
  } catch (const std::exception& e) {
    fail(fmt::format("cannot list the named objects of heap {}", t.label()), e);
    return kFailure;
  }
  std::sort(names.begin(), names.end(),
            [](const NamedInfo& a, const NamedInfo& b) { return a.name < b.name; });
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const NamedInfo& n : names)
      out.push_back({{"name", n.name},
                     {"type", n.type},
                     {"size", n.size},
                     {"count", n.count},
                     {"offset", n.offset}});
    fmt::print("{}\n", out.dump(2));
    return kOk;
  }
  if (names.empty()) {
    fmt::print("heap {} has no named objects\n", t.label());
    return kOk;
  }
  // Columns as wide as their widest cell; the type (often long) comes last.
  std::size_t wname = 4, wsize = 4, wcount = 5, woff = 6;
  auto hex = [](std::uint64_t v) { return fmt::format("{:#x}", v); };
  for (const NamedInfo& n : names) {
    wname = std::max(wname, n.name.size());
    wsize = std::max(wsize, fmt::formatted_size("{}", n.size));
    wcount = std::max(wcount, fmt::formatted_size("{}", n.count));
    woff = std::max(woff, hex(n.offset).size());
  }
  fmt::print("{:<{}}  {:>{}}  {:>{}}  {:>{}}  {}\n", "NAME", wname, "SIZE", wsize, "COUNT", wcount,
             "OFFSET", woff, "TYPE");
  for (const NamedInfo& n : names)
    fmt::print("{:<{}}  {:>{}}  {:>{}}  {:>{}}  {}\n", n.name, wname, n.size, wsize, n.count,
               wcount, hex(n.offset), woff, n.type);
  return kOk;
}

// ---------------------------------------------------------------- check, recover

// 0: every invariant holds ("ok" on standard output); 1: a violation, or the
// check could not complete (the reason on standard error).
int run_check(const MappedHeap& h, const Target& t, bool say_ok) {
  try {
    Progress progress(fmt::format("checking heap {} ({} committed)", t.label(),
                                  size_text(h.stats().committed_bytes)),
                      fmt::format("checked heap {}", t.label()));
    const HeapCheck c = h.check();
    progress.finish();
    if (!c.ok) {
      fail(fmt::format("heap {} fails its check", t.label()),
           c.message.empty() ? std::string("a violation (no message)") : c.message);
      return kFailure;
    }
    if (say_ok) fmt::print("ok\n");
    return kOk;
  } catch (const std::exception& e) {
    fail(fmt::format("cannot check heap {}", t.label()), e);
    return kFailure;
  }
}

int check_heap(const Target& t) {
  auto heap = open_heap(t, HeapMode::read_only);
  if (!heap) return kCannotOpen;
  return run_check(*heap, t, true);
}

int recover_heap(const Target& t) {
  auto heap = open_heap(t, HeapMode::open);
  if (!heap) return kCannotOpen;
  const OpenReport& r = heap->open_report();
  fmt::print("mapheap recover — heap {}\n\n", t.label());
  fmt::print("  {:<30}{}\n", "recovered",
             r.recovered ? "yes: the last user did not close it cleanly"
                         : "no: it was closed cleanly, nothing to recover");
  fmt::print("  {:<30}{}\n", "journal entries rolled back", r.rolled_back);
  fmt::print("  {:<30}{}\n", "isolated pages returned", r.isolated_pages);
  fmt::print("  {:<30}{}\n", "cached objects reclaimed", r.reclaimed_cached);
  fmt::print("  {:<30}{}\n", "open time", seconds_text(r.open_seconds));
  const int rc = run_check(*heap, t, false);
  fmt::print("  {:<30}{}\n", "check", rc == kOk ? "ok" : "VIOLATION (see above)");
  std::fflush(stdout);
  if (!close_heap(*heap, t)) return kFailure;
  fmt::print("  {:<30}{}\n", "closed", "cleanly: the next open needs no recovery");
  return rc;
}

// ---------------------------------------------------------------- gc, snapshot

int gc_heap(const Target& t, bool interior) {
  auto heap = open_heap(t, HeapMode::open);
  if (!heap) return kFailure;
  note_recovery(*heap, t);
  GcReport g;
  double secs = 0;
  try {
    Progress progress(fmt::format("collecting garbage in heap {}", t.label()),
                      fmt::format("collected garbage in heap {}", t.label()));
    // The library refuses (EBUSY) while another process has the heap open.
    g = heap->gc(interior ? GcPointers::interior : GcPointers::start);
    secs = progress.finish();
  } catch (const std::exception& e) {
    fail(fmt::format("gc of heap {}", t.label()), e);
    return kFailure;
  }
  fmt::print("mapheap gc — heap {}\n\n", t.label());
  fmt::print("  {:<16}{}  (reachable from the named objects)\n", "live blocks", g.live_blocks);
  fmt::print("  {:<16}{}  (unreachable: given back)\n", "freed blocks", g.freed_blocks);
  fmt::print("  {:<16}{}{}\n", "freed", size_text(g.freed_bytes),
             g.freed_bytes < 1024 ? std::string() : fmt::format("  ({} B)", g.freed_bytes));
  fmt::print("  {:<16}{}\n", "time", seconds_text(secs));
  return close_heap(*heap, t) ? kOk : kFailure;
}

int snapshot_heap(const Target& t, const std::string& dest) {
  auto heap = open_heap(t, HeapMode::open);
  if (!heap) return kFailure;
  note_recovery(*heap, t);
  double secs = 0;
  try {
    Progress progress(fmt::format("writing a snapshot of heap {} to '{}' ({} committed)", t.label(),
                                  dest, size_text(heap->stats().committed_bytes)),
                      fmt::format("wrote the snapshot of heap {} to '{}'", t.label(), dest));
    heap->snapshot(dest);
    secs = progress.finish();
  } catch (const std::exception& e) {
    fail(fmt::format("snapshot of heap {} to '{}'", t.label(), dest), e);
    return kFailure;
  }
  // Apparent size and the blocks it takes: a reflink or sparse copy takes
  // far less than it holds.
  std::string size = "size unknown";
  struct ::stat st {};
  if (::stat(dest.c_str(), &st) == 0)
    size = fmt::format("{} ({} on disk)", size_text(static_cast<std::uint64_t>(st.st_size)),
                       size_text(static_cast<std::uint64_t>(st.st_blocks) * 512));
  fmt::print("snapshot of heap {} written to '{}': {}, {}\n", t.label(), dest, size,
             seconds_text(secs));
  return close_heap(*heap, t) ? kOk : kFailure;
}

// ---------------------------------------------------------------- map

// What one cell of the picture shows. Kinds of PageKind, then nothing.
constexpr std::size_t kKinds = 6;
constexpr std::size_t kNone = kKinds;  // not committed (or not in any run)

struct Cell {
  std::array<std::uint64_t, kKinds> pages{};                // by PageKind
  std::vector<std::pair<unsigned, std::uint64_t>> classes;  // slab pages by size class
  double full_pages = 0;  // slab pages weighted by how full their slab is
};

struct Shown {
  std::size_t kind = kNone;
  unsigned size_class = 0;
  double fullness = 0;  // slab: objects in use / capacity
};

struct Picture {
  std::uint64_t pages = 0;           // pictured: the committed pages
  std::uint64_t pages_per_cell = 1;  // a power of two
  std::size_t columns = 0;
  std::size_t rows = 0;
  std::vector<Shown> cells;
  std::vector<unsigned> classes;               // the size classes present, ascending
  std::array<std::uint64_t, kKinds> totals{};  // pages of each kind
  std::uint64_t slab_in_use = 0, slab_capacity = 0;
};

const char* kind_name(std::size_t k) {
  switch (k) {
    case static_cast<std::size_t>(PageKind::metadata): return "metadata";
    case static_cast<std::size_t>(PageKind::free_dirty): return "free (dirty)";
    case static_cast<std::size_t>(PageKind::free_released): return "free (released)";
    case static_cast<std::size_t>(PageKind::large): return "large";
    case static_cast<std::size_t>(PageKind::slab): return "slab";
    case static_cast<std::size_t>(PageKind::isolated): return "isolated";
    default: return "not committed";
  }
}

std::uint64_t next_pow2(std::uint64_t v) {
  std::uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// The pages a picture shows: the committed ones (and any run beyond them).
std::uint64_t pictured_pages(const std::vector<PageRun>& runs, std::uint64_t committed_pages) {
  std::uint64_t pages = committed_pages;
  for (const PageRun& r : runs) pages = std::max(pages, r.first_page + r.pages);
  return pages;
}

// Pages per cell so that `pages` fit in max_cells: a power of two, so that
// cells and rows start at round page numbers.
std::uint64_t pages_per_cell(std::uint64_t pages, std::uint64_t max_cells) {
  return next_pow2((pages + max_cells - 1) / std::max<std::uint64_t>(max_cells, 1));
}

// Lays the pages out `columns` cells to a row, and decides what each cell
// shows: the kind most of its pages have (isolated pages win whenever there
// are any: they are what a reader looks for), for slabs the size class most
// of its slab pages have and how full they are.
Picture lay_out(const std::vector<PageRun>& runs, std::uint64_t pages, std::uint64_t per_cell,
                std::size_t columns) {
  Picture p;
  p.pages = pages;
  p.pages_per_cell = std::max<std::uint64_t>(per_cell, 1);
  const std::uint64_t ncells = (p.pages + p.pages_per_cell - 1) / p.pages_per_cell;
  p.columns = static_cast<std::size_t>(
      std::clamp<std::uint64_t>(ncells, 1, std::max<std::size_t>(columns, 1)));
  p.rows = static_cast<std::size_t>((ncells + p.columns - 1) / p.columns);

  std::vector<Cell> cells(static_cast<std::size_t>(ncells));
  for (const PageRun& r : runs) {
    if (r.pages == 0) continue;
    const auto k = static_cast<std::size_t>(r.kind);
    if (k >= kKinds) continue;  // a kind this tool does not know: left blank
    p.totals[k] += r.pages;
    const double fullness =
        r.capacity == 0 ? 0.0 : std::min(1.0, static_cast<double>(r.in_use) / r.capacity);
    if (r.kind == PageKind::slab) {
      p.slab_in_use += r.in_use;
      p.slab_capacity += r.capacity;
      p.classes.push_back(r.size_class);
    }
    const std::uint64_t end = r.first_page + r.pages;
    for (std::uint64_t c = r.first_page / p.pages_per_cell; c * p.pages_per_cell < end; ++c) {
      const std::uint64_t from = std::max(r.first_page, c * p.pages_per_cell);
      const std::uint64_t to = std::min(end, (c + 1) * p.pages_per_cell);
      Cell& cell = cells[static_cast<std::size_t>(c)];
      cell.pages[k] += to - from;
      if (r.kind != PageKind::slab) continue;
      cell.full_pages += fullness * static_cast<double>(to - from);
      auto it = std::find_if(cell.classes.begin(), cell.classes.end(),
                             [&](const auto& e) { return e.first == r.size_class; });
      if (it == cell.classes.end())
        cell.classes.emplace_back(r.size_class, to - from);
      else
        it->second += to - from;
    }
  }
  std::sort(p.classes.begin(), p.classes.end());
  p.classes.erase(std::unique(p.classes.begin(), p.classes.end()), p.classes.end());

  p.cells.resize(cells.size());
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const Cell& c = cells[i];
    Shown& s = p.cells[i];
    std::uint64_t covered = 0, best = 0;
    for (std::size_t k = 0; k < kKinds; ++k) {
      covered += c.pages[k];
      if (c.pages[k] > best) {
        best = c.pages[k];
        s.kind = k;
      }
    }
    const std::uint64_t in_cell =
        std::min<std::uint64_t>(p.pages_per_cell, p.pages - i * p.pages_per_cell);
    if (covered * 2 < in_cell) s.kind = kNone;  // mostly outside every run
    if (c.pages[static_cast<std::size_t>(PageKind::isolated)] > 0)
      s.kind = static_cast<std::size_t>(PageKind::isolated);
    if (s.kind == static_cast<std::size_t>(PageKind::slab)) {
      std::uint64_t most = 0;
      for (const auto& [cls, n] : c.classes)
        if (n > most) {
          most = n;
          s.size_class = cls;
        }
      s.fullness = c.full_pages / static_cast<double>(c.pages[s.kind]);
    }
  }
  return p;
}

// Where a size class falls between the smallest (0) and largest (1) present.
double class_position(const Picture& p, unsigned cls) {
  if (p.classes.size() < 2) return 0;
  const auto it = std::lower_bound(p.classes.begin(), p.classes.end(), cls);
  return static_cast<double>(it - p.classes.begin()) / static_cast<double>(p.classes.size() - 1);
}

struct Rgb {
  int r, g, b;
};

Rgb hex_rgb(unsigned v) {
  return {static_cast<int>((v >> 16) & 0xff), static_cast<int>((v >> 8) & 0xff),
          static_cast<int>(v & 0xff)};
}

std::string hex_text(Rgb c) {
  return fmt::format("#{:02x}{:02x}{:02x}", c.r, c.g, c.b);
}

Rgb hsv(double h, double s, double v) {
  const double c = v * s;
  const double hp = std::fmod(h, 360.0) / 60.0;
  const double x = c * (1 - std::fabs(std::fmod(hp, 2.0) - 1));
  double r = 0, g = 0, b = 0;
  if (hp < 1) {
    r = c, g = x;
  } else if (hp < 2) {
    r = x, g = c;
  } else if (hp < 3) {
    g = c, b = x;
  } else if (hp < 4) {
    g = x, b = c;
  } else if (hp < 5) {
    r = x, b = c;
  } else {
    r = c, b = x;
  }
  const double m = v - c;
  auto q = [m](double u) { return static_cast<int>(std::lround((u + m) * 255)); };
  return {q(r), q(g), q(b)};
}

// Slabs go from green (the smallest class present) to amber (the largest),
// from light (empty) to dark (full). Red is kept for isolated pages, blue
// for large ones, greys for metadata and free pages.
Rgb slab_colour(double class_pos, double fullness) {
  return hsv(150.0 - 110.0 * class_pos, 0.75, 0.95 - 0.5 * std::clamp(fullness, 0.0, 1.0));
}

Rgb kind_colour(std::size_t k) {
  switch (k) {
    case static_cast<std::size_t>(PageKind::metadata): return hex_rgb(0x3c3c3c);
    case static_cast<std::size_t>(PageKind::free_dirty): return hex_rgb(0x9fb0c0);
    case static_cast<std::size_t>(PageKind::free_released): return hex_rgb(0xe6ebf0);
    case static_cast<std::size_t>(PageKind::large): return hex_rgb(0x2f5fb3);
    case static_cast<std::size_t>(PageKind::isolated): return hex_rgb(0xe00000);
    default: return hex_rgb(0xffffff);
  }
}

Rgb cell_colour(const Picture& p, const Shown& s) {
  if (s.kind == static_cast<std::size_t>(PageKind::slab))
    return slab_colour(class_position(p, s.size_class), s.fullness);
  return kind_colour(s.kind);
}

// Text: one letter per slab size class present (shared when more than 26).
char class_letter(const Picture& p, unsigned cls) {
  const auto rank = static_cast<std::size_t>(
      std::lower_bound(p.classes.begin(), p.classes.end(), cls) - p.classes.begin());
  const std::size_t n = std::max<std::size_t>(p.classes.size(), 1);
  return static_cast<char>('a' + (n <= 26 ? rank : rank * 26 / n));
}

char cell_char(const Picture& p, const Shown& s) {
  switch (s.kind) {
    case static_cast<std::size_t>(PageKind::metadata): return '#';
    case static_cast<std::size_t>(PageKind::free_dirty): return ':';
    case static_cast<std::size_t>(PageKind::free_released): return '.';
    case static_cast<std::size_t>(PageKind::large): return 'L';
    case static_cast<std::size_t>(PageKind::isolated): return '!';
    case static_cast<std::size_t>(PageKind::slab): {
      const char c = class_letter(p, s.size_class);
      return s.fullness > 0.5 ? static_cast<char>(c - 'a' + 'A') : c;
    }
    default: return ' ';
  }
}

// "16384 pages of 4 KiB (64 MiB committed of 4 GiB reserved), 1 page per cell"
std::string scale_text(const Picture& p, std::size_t page, std::uint64_t reserved) {
  return fmt::format(
      "{} pages of {} ({} committed of {} reserved), {} per cell", p.pages, size_text(page),
      size_text(p.pages * page), size_text(reserved),
      p.pages_per_cell == 1 ? std::string("1 page") : fmt::format("{} pages", p.pages_per_cell));
}

void print_summary(const Picture& p, std::size_t page) {
  fmt::print("\n  {:<18}{:>10}  {:>10}  {:>6}\n", "pages", "count", "bytes", "share");
  for (std::size_t k = 0; k < kKinds; ++k) {
    if (p.totals[k] == 0 && k == static_cast<std::size_t>(PageKind::isolated)) continue;
    fmt::print("  {:<18}{:>10}  {:>10}  {:>5.1f}%\n", kind_name(k), p.totals[k],
               size_text(p.totals[k] * page), percent(p.totals[k], p.pages));
  }
  if (p.slab_capacity > 0)
    fmt::print("  slabs: {} size classes, {} of {} objects in use ({:.1f}%)\n", p.classes.size(),
               p.slab_in_use, p.slab_capacity, percent(p.slab_in_use, p.slab_capacity));
}

void print_text_map(const Picture& p, const Target& t, std::size_t page, std::uint64_t reserved) {
  fmt::print("mapheap map — heap {}: {}\n\n", t.label(), scale_text(p, page, reserved));
  const std::size_t label_width = std::max<std::size_t>(5, fmt::formatted_size("{}", p.pages));
  for (std::size_t row = 0; row < p.rows; ++row) {
    std::string line;
    for (std::size_t col = 0; col < p.columns; ++col) {
      const std::size_t i = row * p.columns + col;
      if (i >= p.cells.size()) break;
      line += cell_char(p, p.cells[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    fmt::print("  {:>{}} |{}\n", row * p.columns * p.pages_per_cell, label_width, line);
  }
  fmt::print("\n  (left: the first page of each row)\n");
  fmt::print(
      "  # metadata   : free (dirty)   . free (released)   L large   ! isolated   "
      "blank: not committed\n");
  if (!p.classes.empty()) {
    std::string letters;
    char previous = 0;
    for (unsigned cls : p.classes) {
      const char c = class_letter(p, cls);
      if (c != previous)
        letters += fmt::format("{}{}=", letters.empty() ? "" : " ", c);
      else
        letters += ',';
      letters += fmt::format("{}", cls);
      previous = c;
    }
    fmt::print("  a-z slab, by size class ({}); upper case: more than half of its objects in use\n",
               letters);
  }
  print_summary(p, page);
}

// Pixel layout of the PNG: a title band, the map (cell x cell pixels per
// cell), a band for the row labels' axis, then the legend: the page kinds
// on the left and the slab colours on the right, or below them in a
// narrow picture.
struct Layout {
  int cell = 4;
  int left = 90, right = 20, top = 56, below_map = 16;
  bool stacked = false;  // the slab legend below the page kinds' key
  int legend() const { return stacked ? 200 : 130; }
  int width = 0, height = 0;
};

void write_map_png(const Picture& p, const Layout& l, const std::string& title,
                   const std::string& subtitle, const std::string& png_path, std::size_t page) {
  prepare_png(png_path);
  ScratchDir dir;
  const fs::path cells = dir.path() / "cells.dat";
  {
    // gnuplot reads an image as a full grid, one scan per row: every cell
    // of the rectangle is written, those past the last page in white.
    std::ofstream out(cells);
    for (std::size_t row = 0; row < p.rows; ++row) {
      for (std::size_t col = 0; col < p.columns; ++col) {
        const std::size_t i = row * p.columns + col;
        const Rgb c = i < p.cells.size() ? cell_colour(p, p.cells[i]) : kind_colour(kNone);
        out << col << ' ' << row << ' ' << c.r << ' ' << c.g << ' ' << c.b << '\n';
      }
      out << '\n';
    }
    if (!out) throw mapheap::error(EIO, fmt::format("cannot write '{}'", cells.string()));
  }
  // The slab legend: size classes across, fullness up.
  const fs::path gradient = dir.path() / "gradient.dat";
  constexpr int kSteps = 10;
  if (!p.classes.empty()) {
    std::ofstream out(gradient);
    for (std::size_t x = 0; x < p.classes.size(); ++x) {
      for (int y = 0; y <= kSteps; ++y) {
        const Rgb c = slab_colour(class_position(p, p.classes[x]), y / double(kSteps));
        out << x << ' ' << y << ' ' << c.r << ' ' << c.g << ' ' << c.b << '\n';
      }
      out << '\n';
    }
    if (!out) throw mapheap::error(EIO, fmt::format("cannot write '{}'", gradient.string()));
  }

  const double W = l.width, H = l.height;
  auto sx = [W](double px) { return fmt::format("{:.6f}", px / W); };
  auto sy = [H](double px_from_top) { return fmt::format("{:.6f}", 1.0 - px_from_top / H); };
  const int map_w = static_cast<int>(p.columns) * l.cell;
  const int map_h = static_cast<int>(p.rows) * l.cell;

  std::string s;
  s += "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n";
  s += fmt::format("  set terminal pngcairo noenhanced size {},{} font 'Sans,10'\n", l.width,
                   l.height);
  s += "} else {\n";
  s += fmt::format("  set terminal png noenhanced size {},{}\n", l.width, l.height);
  s += "}\n";
  s += fmt::format("set output {}\n", gp_quote(png_path));
  s += "set multiplot\n";
  s += fmt::format("set label 1 {} at screen {},{} left front font ',12'\n", gp_quote(title),
                   sx(l.left), sy(16));
  s += fmt::format("set label 2 {} at screen {},{} left front\n", gp_quote(subtitle), sx(l.left),
                   sy(38));
  // The map: one pixel-exact rectangle per cell, page 0 at the top left.
  s += fmt::format("set lmargin at screen {}\nset rmargin at screen {}\n", sx(l.left),
                   sx(l.left + map_w));
  s += fmt::format("set tmargin at screen {}\nset bmargin at screen {}\n", sy(l.top),
                   sy(l.top + map_h));
  s += fmt::format("set xrange [-0.5:{}.5]\nset yrange [{}.5:-0.5]\n", p.columns - 1, p.rows - 1);
  s += "unset xtics\nset border lw 0.5 lc rgb 'gray50'\n";
  // Row labels: the first page of about ten rows.
  const std::size_t every = std::max<std::size_t>(1, (p.rows + 9) / 10);
  std::string tics;
  for (std::size_t row = 0; row < p.rows; row += every)
    tics += fmt::format("{}\"{}\" {}", tics.empty() ? "" : ", ", row * p.columns * p.pages_per_cell,
                        row);
  s += fmt::format("set ytics ({}) out nomirror scale 0.5\n", tics);
  s += fmt::format("set ylabel 'page' offset 1,0\n");
  s += fmt::format(
      "set key at screen {},{} left top Left reverse horizontal maxcols 2 "
      "samplen 1.2 spacing 1.4 width 0\n",
      sx(l.left), sy(l.top + map_h + l.below_map + 8));
  s += "set style fill solid 1.0 border lc rgb 'gray40'\n";
  std::string plot =
      fmt::format("plot {} using 1:2:3:4:5 with rgbimage pixels notitle", gp_quote(cells.string()));
  for (std::size_t k = 0; k < kKinds; ++k) {
    if (k == static_cast<std::size_t>(PageKind::slab)) continue;  // its own legend
    plot +=
        fmt::format(", keyentry with boxes fc rgb {} title {}", gp_quote(hex_text(kind_colour(k))),
                    gp_quote(fmt::format("{} ({})", kind_name(k), size_text(p.totals[k] * page))));
  }
  plot += ", keyentry with boxes fc rgb '#ffffff' title 'not committed'";
  s += plot + "\n";

  if (!p.classes.empty()) {
    // The slab gradient, bottom right.
    const int gx0 = l.stacked ? l.left + 40 : l.width / 2 + 80;
    const int gx1 = l.width - l.right - 10;
    const int gy0 = l.top + map_h + l.below_map + (l.stacked ? 100 : 30);
    const int gy1 = l.height - 34;
    s += "unset label 1\nunset label 2\nunset key\nunset ylabel\n";
    s += fmt::format("set lmargin at screen {}\nset rmargin at screen {}\n", sx(gx0), sx(gx1));
    s += fmt::format("set tmargin at screen {}\nset bmargin at screen {}\n", sy(gy0), sy(gy1));
    s += fmt::format("set xrange [-0.5:{}.5]\nset yrange [-0.5:{}.5]\n", p.classes.size() - 1,
                     kSteps);
    std::string xt;
    const std::size_t xevery = std::max<std::size_t>(1, (p.classes.size() + 11) / 12);
    for (std::size_t x = 0; x < p.classes.size(); x += xevery)
      xt += fmt::format("{}\"{}\" {}", xt.empty() ? "" : ", ", p.classes[x], x);
    s += fmt::format("set xtics ({}) out nomirror scale 0.5 font ',8'\n", xt);
    s += fmt::format("set ytics (\"empty\" 0, \"full\" {}) out nomirror scale 0.5 font ',8'\n",
                     kSteps);
    s += fmt::format(
        "set title {} offset 0,-0.3 font ',9'\n",
        gp_quote(fmt::format("slab pages ({}) by size class, {:.0f}% of their objects in use",
                             size_text(p.totals[static_cast<std::size_t>(PageKind::slab)] * page),
                             percent(p.slab_in_use, p.slab_capacity))));
    s += fmt::format("plot {} using 1:2:3:4:5 with rgbimage pixels notitle\n",
                     gp_quote(gradient.string()));
  }
  s += "unset multiplot\nset output\n";

  run_gnuplot(s, dir, png_path);
}

int map_heap(const Target& t, const std::string& png, unsigned width) {
  // Fail before opening the heap when the picture cannot be drawn.
  if (!png.empty()) {
    try {
      check_gnuplot();
    } catch (const mapheap::error& e) {
      fail(fmt::format("cannot draw the map of heap {}", t.label()), e);
      return kUnavailable;
    }
  }
  auto heap = open_heap(t, HeapMode::read_only);
  if (!heap) return kFailure;
  std::vector<PageRun> runs;
  HeapStats s;
  std::size_t page = 0;
  try {
    runs = heap->page_runs();
    s = heap->stats();
    page = heap->page_size();
  } catch (const std::exception& e) {
    fail(fmt::format("cannot read the page map of heap {}", t.label()), e);
    return kFailure;
  }
  if (page == 0) page = 4096;

  const std::uint64_t pages = pictured_pages(runs, s.committed_bytes / page);

  if (png.empty()) {
    // One character per cell, `width` cells to a row, at most 48 rows.
    const std::size_t columns = width == 0 ? 64 : width;
    const Picture p = lay_out(runs, pages, pages_per_cell(pages, columns * 48), columns);
    print_text_map(p, t, page, s.region_bytes);
    return kOk;
  }

  // About `width` pixels wide, the map at most half as high: as many pages
  // per cell as 4-pixel cells need to fit, then cells (square, 4 to 40
  // pixels) as large as fit.
  Layout l;
  l.width = width == 0 ? 1000 : static_cast<int>(width);
  const int map_w = l.width - l.left - l.right;
  const int max_h = l.width / 2;
  const std::uint64_t per_cell =
      pages_per_cell(pages, static_cast<std::uint64_t>(map_w / 4) * (max_h / 4));
  const std::uint64_t ncells = (pages + per_cell - 1) / per_cell;
  const double fit = std::sqrt(static_cast<double>(map_w) * max_h /
                               static_cast<double>(std::max<std::uint64_t>(ncells, 1)));
  l.cell = std::clamp(static_cast<int>(fit), 4, 40);
  const Picture p = lay_out(runs, pages, per_cell, static_cast<std::size_t>(map_w / l.cell));
  l.stacked = l.width < 900;
  l.height = l.top + static_cast<int>(p.rows) * l.cell + l.below_map + l.legend();

  const std::string title = fmt::format("mapheap map — heap {}", t.label());
  const std::string scale = scale_text(p, page, s.region_bytes);
  try {
    write_map_png(p, l, title, scale, png, page);
  } catch (const mapheap::error& e) {
    fail(fmt::format("cannot draw the map of heap {} to '{}'", t.label(), png), e);
    return e.code().value() == ENOENT && e.path() == "gnuplot" ? kUnavailable : kFailure;
  }
  fmt::print("{}: {}\n", title, scale);
  print_summary(p, page);
  fmt::print("\nwrote '{}' ({}x{} px, {} x {} cells)\n", png, l.width, l.height, p.columns, p.rows);
  return kOk;
}

}  // namespace

void add_heap(CLI::App& app, int& exit_code) {
  {
    auto* cmd = app.add_subcommand(
        "stat", "Show a mapped heap's sizes, buddyinfo, slabinfo, named objects and processes");
    auto t = std::make_shared<Target>();
    auto json = std::make_shared<bool>(false);
    add_target(cmd, *t);
    cmd->add_flag("--json", *json, "Print the data as JSON");
    cmd->callback([t, json, &exit_code] { exit_code = stat_heap(*t, *json); });
  }
  {
    auto* cmd = app.add_subcommand("ls", "List a mapped heap's named objects");
    auto t = std::make_shared<Target>();
    auto json = std::make_shared<bool>(false);
    add_target(cmd, *t);
    cmd->add_flag("--json", *json, "Print the list as JSON");
    cmd->callback([t, json, &exit_code] { exit_code = list_names(*t, *json); });
  }
  {
    auto* cmd = app.add_subcommand(
        "check",
        "Check every invariant of a mapped heap, read-only (exit 0: ok, 1: a violation, "
        "2: it cannot be opened)");
    auto t = std::make_shared<Target>();
    add_target(cmd, *t);
    cmd->callback([t, &exit_code] { exit_code = check_heap(*t); });
  }
  {
    auto* cmd = app.add_subcommand(
        "recover",
        "Open a mapped heap read-write, which recovers it after a crash, report what recovery "
        "did and check it (exit 0: ok, 1: a violation, 2: it cannot be opened)");
    auto t = std::make_shared<Target>();
    add_target(cmd, *t);
    cmd->callback([t, &exit_code] { exit_code = recover_heap(*t); });
  }
  {
    auto* cmd = app.add_subcommand(
        "gc",
        "Free the blocks of a mapped heap that no named object reaches (no other process may "
        "have it open)");
    auto t = std::make_shared<Target>();
    auto interior = std::make_shared<bool>(false);
    add_target(cmd, *t);
    cmd->add_flag("--interior", *interior,
                  "Keep a block that an offset_ptr points into, not only at its start (safe for "
                  "any data; small integers then keep neighbouring blocks too)");
    cmd->callback([t, interior, &exit_code] { exit_code = gc_heap(*t, *interior); });
  }
  {
    auto* cmd = app.add_subcommand(
        "snapshot", "Write a consistent copy of a mapped heap that opens as a heap of its own");
    auto t = std::make_shared<Target>();
    auto dest = std::make_shared<std::string>();
    add_target(cmd, *t);
    cmd->add_option("DEST", *dest, "the copy's file")->required();
    cmd->callback([t, dest, &exit_code] { exit_code = snapshot_heap(*t, *dest); });
  }
  {
    auto* cmd = app.add_subcommand(
        "map",
        "Draw a mapped heap's pages by state (metadata, free, large, slab by size class and "
        "fullness, isolated): as text, or as a PNG with --png");
    auto t = std::make_shared<Target>();
    auto png = std::make_shared<std::string>();
    auto width = std::make_shared<unsigned>(0);
    add_target(cmd, *t);
    cmd->add_option("--png", *png, "Draw the picture into this PNG file (needs gnuplot)");
    cmd->add_option("--width", *width,
                    "Width of the picture: pixels with --png (default 1000), else characters "
                    "(default 64)")
        ->check(CLI::Range(16u, 8000u));
    cmd->callback([t, png, width, &exit_code] {
      if (!png->empty() && *width != 0 && *width < 600) {
        fail("map",
             fmt::format("--width {} is too narrow for a PNG (600 pixels at least)", *width));
        exit_code = kUsage;
        return;
      }
      if (png->empty() && *width > 1000) {
        fail("map",
             fmt::format("--width {} is too wide for text (1000 characters at most)", *width));
        exit_code = kUsage;
        return;
      }
      exit_code = map_heap(*t, *png, *width);
    });
  }
}

}  // namespace mapheap::cli
