// wordcount — a persistent word count built by several processes sharing one
// mapped heap, one of which is killed half-way (the demo's mapped-heap part).
//
//   wordcount build HEAP CORPUS_DIR [--workers N] [--kill W] [--max-files N]
//   wordcount query HEAP WORD...
//
// `build` creates HEAP and forks N workers. Worker w counts the words of the
// files i with i % N == w into a map of its own inside the heap
// (boost::container::map of mapheap::string, with mapheap::allocator), and
// names it "counts-w" only when it is done. Worker W never finishes (it goes
// round its share until killed) and is killed with SIGKILL once it has
// counted half of its share, whatever the corpus size or the machine's speed:
// its map was never named, so its blocks are unreachable (`mapheap gc`
// returns them), and the heap's own metadata is whole (`mapheap check`
// passes). The parent then does W's share itself.
// `query` reopens the heap and sums the word's counts over the named maps.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/container/map.hpp>

#include "mapheap/allocator.hpp"
#include "mapheap/heap.hpp"
#include "mapheap/offset_ptr.hpp"

namespace {

namespace fs = std::filesystem;
using mapheap::HeapMode;
using mapheap::HeapOptions;
using mapheap::MappedHeap;
using String = mapheap::string;
using Pair = std::pair<const String, std::uint64_t>;
using Map = boost::container::map<String, std::uint64_t, std::less<>, mapheap::allocator<Pair>>;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::string> corpus(const std::string& dir, std::size_t max_files) {
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied)) {
    if (!e.is_regular_file()) continue;
    const std::string ext = e.path().extension().string();
    if (ext == ".py" || ext == ".txt" || ext == ".rst" || ext == ".md") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.size() > max_files) files.resize(max_files);
  return files;
}

// Counts the words (runs of letters, digits and '_') of one file into m.
std::uint64_t count_file(const std::string& path, Map& m, const mapheap::allocator<char>& a) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::uint64_t words = 0;
  for (std::size_t i = 0; i < text.size();) {
    while (i < text.size() && !(std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_')) ++i;
    const std::size_t from = i;
    while (i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_')) ++i;
    if (i == from) continue;
    const std::string_view w(text.data() + from, i - from);
    if (auto it = m.find(w); it != m.end())
      ++it->second;
    else
      m.emplace(String(w.data(), w.size(), a), 1);
    ++words;
  }
  return words;
}

// One worker's share: a map of its own, named only when complete. The victim
// never completes: it goes round its share again and again, allocating, until
// the parent's SIGKILL lands (however fast it is, the kill finds it mid-way).
std::uint64_t count_share(MappedHeap& h, const std::vector<std::string>& files, unsigned w, unsigned n,
                          std::atomic<std::uint64_t>* progress, bool victim = false) {
  void* mem = h.allocate(sizeof(Map), alignof(Map));
  if (mem == nullptr) throw std::bad_alloc();
  auto* m = new (mem) Map(mapheap::allocator<Pair>(h));
  const mapheap::allocator<char> a(h);
  std::uint64_t words = 0;
  do {
    for (std::size_t i = w; i < files.size(); i += n) {
      words += count_file(files[i], *m, a);
      if (progress != nullptr) progress->fetch_add(1);
    }
    if (victim) m->clear();  // its blocks go back and are taken again on the next round
  } while (victim);
  h.construct<mapheap::offset_ptr<Map>>("counts-" + std::to_string(w))(m);
  return words;
}

int build(const std::string& heap, const std::string& dir, unsigned workers, int victim, std::size_t max_files) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::string> files = corpus(dir, max_files);
  if (files.empty()) {
    std::fprintf(stderr, "wordcount: no text files under '%s'\n", dir.c_str());
    return 2;
  }
  fs::remove(heap);
  MappedHeap h = MappedHeap::open(HeapOptions::file(heap, HeapMode::create).with_size(64 << 20, std::size_t{2} << 30));
  std::vector<std::atomic<std::uint64_t>*> progress;
  for (unsigned w = 0; w < workers; ++w)
    progress.push_back(h.construct<std::atomic<std::uint64_t>>("progress-" + std::to_string(w))(0));
  std::printf("corpus: %zu files under %s; %u worker processes share %s\n", files.size(), dir.c_str(), workers,
              heap.c_str());
  std::fflush(stdout);  // not again by each child
  std::vector<pid_t> pids;
  for (unsigned w = 0; w < workers; ++w) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 0;
      try {
        MappedHeap mine = MappedHeap::open(HeapOptions::file(heap, HeapMode::open));
        auto* mine_progress = mine.find<std::atomic<std::uint64_t>>("progress-" + std::to_string(w));
        (void)count_share(mine, files, w, workers, mine_progress, static_cast<int>(w) == victim);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "worker %u: %s\n", w, e.what());
        rc = 1;
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  if (victim >= 0 && static_cast<unsigned>(victim) < workers) {
    const std::uint64_t share = (files.size() - static_cast<std::size_t>(victim) + workers - 1) / workers;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (progress[static_cast<std::size_t>(victim)]->load() < std::max<std::uint64_t>(1, share / 2) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ::kill(pids[static_cast<std::size_t>(victim)], SIGKILL);
    std::printf("killed worker %d (pid %d) with SIGKILL after %llu files counted (its share: %llu)\n", victim,
                static_cast<int>(pids[static_cast<std::size_t>(victim)]),
                static_cast<unsigned long long>(progress[static_cast<std::size_t>(victim)]->load()),
                static_cast<unsigned long long>(share));
  }
  int failed = 0;
  for (unsigned w = 0; w < workers; ++w) {
    int status = 0;
    ::waitpid(pids[w], &status, 0);
    const bool killed = WIFSIGNALED(status);
    if (!killed && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) ++failed;
    std::printf("  worker %u: %s, %llu files\n", w,
                killed ? "killed" : (WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "finished" : "FAILED"),
                static_cast<unsigned long long>(progress[w]->load()));
  }
  if (failed != 0) return 1;
  // The killed worker's share, done again by the parent (its half-built map is garbage).
  if (victim >= 0 && static_cast<unsigned>(victim) < workers) {
    progress[static_cast<std::size_t>(victim)]->store(0);
    (void)count_share(h, files, static_cast<unsigned>(victim), workers, progress[static_cast<std::size_t>(victim)]);
    std::printf("  worker %d's share redone by the parent: %llu files\n", victim,
                static_cast<unsigned long long>(progress[static_cast<std::size_t>(victim)]->load()));
  }
  std::size_t entries = 0;
  for (unsigned w = 0; w < workers; ++w)
    entries += (*h.find<mapheap::offset_ptr<Map>>("counts-" + std::to_string(w)))->size();
  std::printf("built in %.2f s: %u maps, %zu entries in all\n", seconds_since(t0), workers, entries);
  h.close();
  return 0;
}

int query(const std::string& heap, const std::vector<std::string>& words) {
  const auto t0 = std::chrono::steady_clock::now();
  MappedHeap h = MappedHeap::open(HeapOptions::file(heap, HeapMode::read_only));
  const double open_s = seconds_since(t0);
  std::vector<Map*> maps;
  for (const mapheap::NamedInfo& n : h.names())
    if (n.name.rfind("counts-", 0) == 0) maps.push_back(h.find<mapheap::offset_ptr<Map>>(n.name)->get());
  const double found_s = seconds_since(t0);
  std::printf("reopened %s in %.0f us (%s), %zu maps found in %.0f us\n", heap.c_str(), open_s * 1e6,
              h.open_report().recovered ? "recovered" : "no recovery needed", maps.size(), found_s * 1e6);
  for (const std::string& w : words) {
    std::uint64_t total = 0;
    for (const Map* m : maps)
      if (auto it = m->find(std::string_view(w)); it != m->end()) total += it->second;
    std::printf("  %-12s %llu\n", w.c_str(), static_cast<unsigned long long>(total));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() >= 3 && args[0] == "build") {
      unsigned workers = 4;
      int victim = -1;
      std::size_t max_files = 1500;
      for (std::size_t i = 3; i + 1 < args.size(); i += 2) {
        if (args[i] == "--workers") workers = static_cast<unsigned>(std::stoul(args[i + 1]));
        else if (args[i] == "--kill") victim = std::stoi(args[i + 1]);
        else if (args[i] == "--max-files") max_files = std::stoul(args[i + 1]);
        else throw std::invalid_argument("unknown option " + args[i]);
      }
      if (workers == 0 || workers > 64) throw std::invalid_argument("--workers must be 1 to 64");
      return build(args[1], args[2], workers, victim, max_files);
    }
    if (args.size() >= 3 && args[0] == "query") return query(args[1], {args.begin() + 2, args.end()});
    std::fprintf(stderr,
                 "usage: wordcount build HEAP CORPUS_DIR [--workers N] [--kill W] [--max-files N]\n"
                 "       wordcount query HEAP WORD...\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wordcount: %s\n", e.what());
    return 1;
  }
}
