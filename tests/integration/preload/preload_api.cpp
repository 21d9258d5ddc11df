// Run with LD_PRELOAD=libmapheap_preload.so, or built with
// MAPHEAP_STATIC_MALLOC and linked with mapheap::malloc: the C and C++
// allocation API comes from mapheap and behaves as glibc's does (errno,
// size 0, overflow, alignment), across threads and fork(). Exit 0 when
// every check passes; each failure is printed.
#include <dirent.h>
#include <dlfcn.h>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;
#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) {                                                  \
      std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                   \
    }                                                               \
  } while (0)

bool aligned(const void* p, std::size_t a) {
  return reinterpret_cast<std::uintptr_t>(p) % a == 0;
}

struct alignas(256) Wide {
  char bytes[300];
};

}  // namespace

int main() {
  // The allocator in use is mapheap's.
  Dl_info info{};
#ifdef MAPHEAP_STATIC_MALLOC
  // Linked in: malloc is this executable's, and the C library's own
  // allocations (strdup) come from it too, or freeing them here would fail.
  char self[4096] = {};
  CHECK(readlink("/proc/self/exe", self, sizeof(self) - 1) > 0);
  CHECK(dladdr(reinterpret_cast<void*>(&malloc), &info) != 0 && info.dli_fname != nullptr &&
        std::strcmp(info.dli_fname, self) == 0);
#else
  CHECK(dladdr(reinterpret_cast<void*>(&malloc), &info) != 0 && info.dli_fname != nullptr &&
        std::strstr(info.dli_fname, "mapheap_preload") != nullptr);
#endif
  char* dup = strdup("allocated inside the C library");
  CHECK(dup != nullptr && malloc_usable_size(dup) >= 31);
  free(dup);

  void* z1 = malloc(0);
  void* z2 = malloc(0);
  CHECK(z1 != nullptr && z2 != nullptr && z1 != z2);
  free(z1);
  free(z2);
  free(nullptr);

  char* p = static_cast<char*>(malloc(100));
  CHECK(p != nullptr && aligned(p, 16) && malloc_usable_size(p) >= 100);
  std::memset(p, 7, 100);
  p = static_cast<char*>(realloc(p, 5000));
  CHECK(p != nullptr && p[99] == 7);
  p = static_cast<char*>(realloc(p, 0));  // glibc: frees, returns NULL
  CHECK(p == nullptr);
  p = static_cast<char*>(realloc(nullptr, 10));
  CHECK(p != nullptr);
  free(p);

  errno = 0;
  volatile std::size_t half = SIZE_MAX / 2;
  CHECK(malloc(half) == nullptr && errno == ENOMEM);
  errno = 0;
  volatile std::size_t quarter = SIZE_MAX / 4;  // volatile: sizes the compiler cannot see
  CHECK(calloc(quarter, 8) == nullptr && errno == ENOMEM);  // overflow
  errno = 0;
  CHECK(reallocarray(nullptr, quarter, 8) == nullptr && errno == ENOMEM);
  auto* c = static_cast<unsigned char*>(calloc(1000, 3));
  bool zero = c != nullptr;
  for (int i = 0; zero && i < 3000; ++i) zero = c[i] == 0;
  CHECK(zero);
  free(c);

  void* m = nullptr;
  CHECK(posix_memalign(&m, 3, 10) == EINVAL);
  CHECK(posix_memalign(&m, 4, 10) == EINVAL);  // not a multiple of sizeof(void*)
  CHECK(posix_memalign(&m, 64, 100) == 0 && aligned(m, 64));
  free(m);
  CHECK(posix_memalign(&m, 1 << 16, 100) == 0 && aligned(m, 1 << 16));
  free(m);
  errno = 0;
  CHECK(aligned_alloc(3, 16) == nullptr && errno == EINVAL);
  m = aligned_alloc(4096, 100);
  CHECK(m != nullptr && aligned(m, 4096));
  free(m);
  m = memalign(24, 10);  // rounded up to 32, as glibc does
  CHECK(m != nullptr && aligned(m, 32));
  free(m);
  const long page = sysconf(_SC_PAGESIZE);
  m = valloc(10);
  CHECK(m != nullptr && aligned(m, static_cast<std::size_t>(page)));
  free(m);
  m = pvalloc(1);
  CHECK(m != nullptr && malloc_usable_size(m) >= static_cast<std::size_t>(page));
  free(m);

  struct mallinfo2 mi = mallinfo2();
  CHECK(mi.arena > 0);
  CHECK(malloc_trim(0) >= 0);

  // C++: every form of new and delete.
  auto* w = new Wide;
  CHECK(aligned(w, 256));
  delete w;
  auto* wa = new Wide[3];
  CHECK(aligned(wa, 256));
  delete[] wa;
  auto* s = new std::string(1000, 'x');
  delete s;
  volatile std::size_t too_big = SIZE_MAX / 2;  // volatile: not a compile-time size
  CHECK(new (std::nothrow) char[too_big] == nullptr);
  bool threw = false;
  try {
    std::vector<char> huge(SIZE_MAX / 4);
  } catch (const std::bad_alloc&) {
    threw = true;
  } catch (const std::length_error&) {
    threw = true;
  }
  CHECK(threw);

  // Threads freeing each other's objects.
  std::vector<void*> shared(4096, nullptr);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&shared, t] {
      for (int i = 0; i < 50000; ++i) {
        const std::size_t k = static_cast<std::size_t>(i * 7 + t * 1031) % shared.size();
        void* q = malloc(static_cast<std::size_t>(1 + (i % 500)));
        void* old = __atomic_exchange_n(&shared[k], q, __ATOMIC_ACQ_REL);
        free(old);
      }
    });
  for (auto& t : ts) t.join();
  for (void* q : shared) free(q);

  // fork() while another thread allocates: the child can allocate.
  bool stop = false;
  std::thread busy([&stop] {
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) free(malloc(64));
  });
  for (int i = 0; i < 20; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      void* q = malloc(1000);
      std::memset(q, 1, 1000);
      free(q);
      _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  __atomic_store_n(&stop, true, __ATOMIC_RELAXED);
  busy.join();

  // Hundreds of threads at once, each with objects that outlive it (freed
  // by the main thread) and its own churn; then as many again.
  for (int wave = 0; wave < 2; ++wave) {
    constexpr int kThreads = 300;
    std::vector<void*> left(kThreads, nullptr);
    std::vector<std::thread> many;
    for (int t = 0; t < kThreads; ++t)
      many.emplace_back([&left, t] {
        for (int i = 0; i < 2000; ++i) free(malloc(static_cast<std::size_t>(16 + (i + t) % 900)));
        auto* q = static_cast<unsigned char*>(malloc(256));
        std::memset(q, t & 0xff, 256);
        left[static_cast<std::size_t>(t)] = q;
      });
    for (auto& t : many) t.join();
    for (int t = 0; t < kThreads; ++t) {
      auto* q = static_cast<unsigned char*>(left[static_cast<std::size_t>(t)]);
      CHECK(q != nullptr && q[0] == (t & 0xff) && q[255] == (t & 0xff));
      free(q);
    }
  }

  // An idle process gets its free memory back: after 128 MiB of objects are
  // freed, the decay thread appears and the resident set drops, with no
  // further allocation (waits up to a minute; decay_ms is 1000 by default).
  if (const char* opt = getenv("MAPHEAP_OPTIONS"); opt == nullptr || !std::strstr(opt, "decay")) {
    auto rss = [] {
      long pages = 0, resident = 0;
      FILE* f = fopen("/proc/self/statm", "r");
      if (f != nullptr) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
      }
      return resident * sysconf(_SC_PAGESIZE);
    };
    std::vector<void*> objs;
    for (std::size_t total = 0; total < (std::size_t{128} << 20); total += 4000) {
      void* q = malloc(4000);
      std::memset(q, 7, 4000);
      objs.push_back(q);
    }
    const long before = rss();
    for (void* q : objs) free(q);
    std::vector<void*>().swap(objs);
    auto decay_thread = [] {  // a thread of this process named mapheap-decay
      bool found = false;
      DIR* d = opendir("/proc/self/task");
      while (d != nullptr && !found) {
        const dirent* e = readdir(d);
        if (e == nullptr) break;
        const std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
        if (FILE* f = fopen(path.c_str(), "r")) {
          char comm[32] = {};
          found = fgets(comm, sizeof(comm), f) != nullptr &&
                  std::strncmp(comm, "mapheap-decay", 13) == 0;
          fclose(f);
        }
      }
      if (d != nullptr) closedir(d);
      return found;
    };
    bool dropped = false, seen = false;
    for (int i = 0; i < 600 && !(dropped && seen); ++i) {
      usleep(100000);
      dropped = rss() < before / 2;
      seen = seen || decay_thread();
    }
    CHECK(seen);
    CHECK(dropped);
  }

  if (failures == 0) std::puts("preload api ok");
  return failures == 0 ? 0 : 1;
}
