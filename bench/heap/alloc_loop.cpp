// alloc_loop — heap_bench's one-process alloc workload alone, on mapheap only,
// for A/B comparisons of two builds of the library (run each, alternated,
// pinned: `taskset -c 0 alloc_loop ...`). A new heap of 64 MiB growing to
// 1 GiB; a window of 4,096 live blocks of 8 B-64 KiB (log-uniform) replaced
// 2^20 times per pass. Prints each pass's time and minor faults (pages a
// MADV_POPULATE call maps count there too), then the heap file's blocks on
// disk, the bytes this process caused to be written, and its peak RSS.
//
//   alloc_loop [--heap file|shm] [--write ends|all] [--passes N] [--dir DIR]
//
// --write ends: each block's first and last 8 bytes (as heap_bench does);
// --write all: every byte (memset), as a program that fills its blocks.
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mapheap/heap.hpp"

namespace {

long minor_faults() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  return r.ru_minflt;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--heap file|shm] [--write ends|all] [--passes N] [--dir DIR]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bool shm = false, all = false;
  int passes = 2;
  std::string dir = "/var/tmp";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    const std::string v = argv[++i];
    if (a == "--heap" && (v == "file" || v == "shm")) {
      shm = v == "shm";
    } else if (a == "--write" && (v == "ends" || v == "all")) {
      all = v == "all";
    } else if (a == "--passes" && std::atoi(v.c_str()) > 0) {
      passes = std::atoi(v.c_str());
    } else if (a == "--dir") {
      dir = v;
    } else {
      return usage(argv[0]);
    }
  }

  // Every random choice before the heap exists.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> unit(0, 1);
  const auto block_size = [&] { return static_cast<std::uint32_t>(std::exp2(3.0 + 13.0 * unit(rng))); };
  constexpr unsigned kWindow = 4096, kRounds = 1u << 20;
  std::vector<std::uint32_t> live_size(kWindow), next_size(kRounds), next_slot(kRounds);
  for (auto& s : live_size) s = block_size();
  for (unsigned r = 0; r < kRounds; ++r) {
    next_slot[r] = static_cast<std::uint32_t>(rng() % kWindow);
    next_size[r] = block_size();
  }
  std::vector<void*> live(kWindow);

  const std::string name = "/mapheap-alloc-loop-" + std::to_string(::getpid());
  const std::string path = dir + name + ".heap";
  // Removed however the program ends (a full heap returns early).
  struct Remove {
    bool shm;
    const std::string& name;
    const std::string& path;
    ~Remove() { shm ? (void)::shm_unlink(name.c_str()) : (void)::unlink(path.c_str()); }
  } remove{shm, name, path};
  auto options = shm ? mapheap::HeapOptions::shm(name, mapheap::HeapMode::create)
                     : mapheap::HeapOptions::file(path, mapheap::HeapMode::create);
  options.with_size(std::size_t{64} << 20, std::size_t{1} << 30);
  mapheap::MappedHeap heap = mapheap::MappedHeap::open(options);
  const auto write = [&](void* p, std::uint32_t n) {
    if (all) {
      std::memset(p, 0x5a, n);
    } else {
      std::memset(p, 1, 8);
      if (n >= 16) std::memset(static_cast<char*>(p) + n - 8, 2, 8);
    }
  };
  for (unsigned i = 0; i < kWindow; ++i) {
    live[i] = heap.allocate(live_size[i]);
    if (live[i] == nullptr) return std::fprintf(stderr, "the heap is full\n"), 1;
    write(live[i], live_size[i]);
  }
  for (int pass = 1; pass <= passes; ++pass) {
    const long f0 = minor_faults();
    const double t0 = now_ms();
    for (unsigned r = 0; r < kRounds; ++r) {
      const unsigned j = next_slot[r];
      heap.deallocate(live[j]);
      live[j] = heap.allocate(next_size[r]);
      if (live[j] == nullptr) return std::fprintf(stderr, "the heap is full\n"), 1;
      live_size[j] = next_size[r];
      write(live[j], live_size[j]);
    }
    std::printf("pass %d: %.1f ms, %ld minor faults\n", pass, now_ms() - t0, minor_faults() - f0);
  }
  for (void* p : live) heap.deallocate(p);
  heap.close();

  if (!shm) {
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0)
      std::printf("heap file on disk: %.1f MiB\n", static_cast<double>(st.st_blocks) * 512 / (1 << 20));
  }
  if (FILE* f = std::fopen("/proc/self/io", "r")) {
    char line[128];
    while (std::fgets(line, sizeof line, f) != nullptr)
      if (std::strncmp(line, "write_bytes:", 12) == 0) std::printf("%s", line);
    std::fclose(f);
  }
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  std::printf("peak RSS: %.1f MiB\n", static_cast<double>(r.ru_maxrss) / 1024);
  return 0;
}
