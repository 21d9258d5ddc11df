// map/mapping.cpp — Mapping: reserve once, grow in place, never move.
//
// Creation runs in three steps:
//   1. open the backing object (file, shm, memfd) and learn its size;
//   2. plan the page size: walk the fallback chain of the huge-page policy
//      (1 GiB -> 2 MiB hugetlb -> transparent -> none), recording why each
//      better option was not taken;
//   3. reserve an aligned range of address space and map the object over it
//      (fd-backed) or open its usable prefix (private anonymous).
// Side effects are undone on failure: a file or shm object this call created is
// removed again, and nothing stays mapped.
#include "mapheap/mapping.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <new>
#include <utility>
#include <vector>

#include "pal/pal.hpp"

namespace mapheap {

const char* to_string(Backing b) noexcept {
  switch (b) {
    case Backing::anonymous: return "anonymous";
    case Backing::file: return "file";
    case Backing::shm: return "shm";
    case Backing::memfd: return "memfd";
  }
  return "?";
}

const char* to_string(HugePolicy p) noexcept {
  switch (p) {
    case HugePolicy::none: return "none";
    case HugePolicy::transparent: return "transparent";
    case HugePolicy::hugetlb_2m: return "hugetlb-2M";
    case HugePolicy::hugetlb_1g: return "hugetlb-1G";
    case HugePolicy::automatic: return "auto";
  }
  return "?";
}

const char* to_string(HugeOutcome o) noexcept {
  switch (o) {
    case HugeOutcome::none: return "none";
    case HugeOutcome::transparent: return "transparent";
    case HugeOutcome::hugetlb_2m: return "hugetlb-2M";
    case HugeOutcome::hugetlb_1g: return "hugetlb-1G";
  }
  return "?";
}

MappingOptions MappingOptions::anonymous(std::size_t size, Sharing s) {
  MappingOptions o;
  o.backing = Backing::anonymous;
  o.size = size;
  o.sharing = s;
  return o;
}

MappingOptions MappingOptions::file(std::string path, std::size_t size, OpenMode m) {
  MappingOptions o;
  o.backing = Backing::file;
  o.path = std::move(path);
  o.size = size;
  o.open_mode = m;
  o.sharing = Sharing::shared;
  o.preallocate = true;  // no SIGBUS on a full filesystem: claim the blocks up front
  return o;
}

MappingOptions MappingOptions::shm(std::string name, std::size_t size, OpenMode m) {
  MappingOptions o = file(std::move(name), size, m);
  o.backing = Backing::shm;
  o.preallocate = false;  // RAM: claimed on touch unless asked
  return o;
}

MappingOptions MappingOptions::memfd(std::string name, std::size_t size) {
  MappingOptions o;
  o.backing = Backing::memfd;
  o.path = std::move(name);
  o.size = size;
  o.sharing = Sharing::shared;
  return o;
}

MappingOptions MappingOptions::from_fd(int fd, std::size_t size) {
  MappingOptions o;
  o.backing = Backing::memfd;
  o.fd = fd;
  o.size = size;
  o.sharing = Sharing::shared;
  return o;
}

namespace {

// The largest size or reservation we accept (2^62 bytes, far beyond any
// address space): it fits an off_t for ftruncate/fallocate and a ptrdiff_t,
// and leaves room so that rounding a size up to a granule cannot overflow.
constexpr std::size_t kMaxBytes = std::size_t{1} << 62;

// v rounded up to a multiple of g. Sizes are checked against kMaxBytes first,
// so this cannot overflow.
std::size_t round_up(std::size_t v, std::size_t g) {  // REQUIRES: v <= kMaxBytes
  return (v + g - 1) / g * g;
}

std::string describe(const pal::Error& e) {
  char buf[640];
  e.format(buf, sizeof(buf));
  return buf;
}

// Every error from this file reads "mapheap: cannot <doing> '<path>' (size N):
// <cause>", so a user learns what was asked as well as what the OS said.
struct Context {
  const char* doing;
  std::string path;
  std::size_t size;
  int fd = -1;  // named in the message when there is no path

  std::string head() const {
    std::string s = "mapheap: cannot ";
    s += doing;
    if (!path.empty())
      s += " '" + path + "'";
    else if (fd >= 0)
      s += " (fd " + std::to_string(fd) + ")";
    if (size != 0) s += " (size " + std::to_string(size) + ")";
    return s + ": ";
  }
  error os(const pal::Error& e) const {
    std::string why = describe(e);
    // A descriptor passed in by the caller may not be open for writing.
    if (fd >= 0 &&
        (e.op == pal::Op::ftruncate || e.op == pal::Op::fallocate || e.op == pal::Op::lock_file) &&
        (e.code == EBADF || e.code == EINVAL))
      why += " (is the descriptor open read-write?)";
    // MADV_POPULATE reports a failed allocation of backing store as EFAULT.
    if (e.op == pal::Op::madvise && e.code == EFAULT)
      why += " (could not allocate the backing storage: the filesystem or memory is full)";
    return error(e.code, head() + why, path, size, pal::op_name(e.op));
  }
  error check(int code, const std::string& why) const {
    return error(code, head() + why, path, size, "check");
  }
};

const char* doing_create(Backing b) {
  switch (b) {
    case Backing::anonymous: return "create anonymous mapping";
    case Backing::file: return "map file";
    case Backing::shm: return "map shared memory object";
    case Backing::memfd: return "map memfd";
  }
  return "map";
}

pal::Prot prot_of(Access a) {
  return a == Access::read_only ? pal::Prot::read : pal::Prot::read_write;
}

bool is_hugetlb(HugeOutcome o) {
  return o == HugeOutcome::hugetlb_2m || o == HugeOutcome::hugetlb_1g;
}

// Did `got` give what `asked` requested (automatic is satisfied by anything
// but nothing)?
bool satisfies(HugePolicy asked, HugeOutcome got) {
  switch (asked) {
    case HugePolicy::none: return true;
    case HugePolicy::transparent:
    case HugePolicy::automatic: return got != HugeOutcome::none;
    case HugePolicy::hugetlb_2m: return is_hugetlb(got);
    case HugePolicy::hugetlb_1g: return got == HugeOutcome::hugetlb_1g;
  }
  return false;
}

// One rung of the huge-page fallback chain.
struct Plan {
  HugeOutcome outcome;
  std::size_t granule;
};

// Closes a descriptor unless released (creation's error paths).
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) (void)pal::close_fd(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

// Removes a file or shm object this creation made, unless creation succeeded.
struct CreatedGuard {
  Backing backing = Backing::file;
  std::string path;
  bool armed = false;
  ~CreatedGuard() {
    if (!armed) return;
    if (backing == Backing::shm)
      (void)pal::shm_remove(path.c_str());
    else
      (void)pal::unlink_path(path.c_str());
  }
};

std::string normalized_shm_name(const std::string& name) {
  return (!name.empty() && name[0] == '/') ? name : "/" + name;
}

// Makes a shared object at least `want` bytes, never smaller. Another process
// may be growing it at the same moment, so this must not be "fstat, then
// ftruncate" unguarded: ftruncate can shrink, and a stale size would cut off
// the other process's growth. fallocate never shrinks; the sparse path holds
// an OFD lock across its fstat and ftruncate.
pal::Status extend_object(int fd, std::size_t want, bool preallocate) {
  auto st = pal::stat_fd(fd);
  if (!st) return st.error();
  if (st->size >= want) return {};
  if (preallocate) {
    pal::Status s = pal::allocate_fd(fd, st->size, want - st->size);
    if (s.ok() || s.error().code != EOPNOTSUPP) return s;
    // The filesystem cannot preallocate: fall back to a sparse extension.
  }
  // Two processes extending at once must not shrink each other's growth:
  // the size is read again and set under a lock. One byte far past any
  // size, so that other range locks on the object (the mapped heap's) do
  // not conflict with it.
  constexpr std::uint64_t kExtendLockByte = std::uint64_t{1} << 62;
  if (auto l = pal::lock_range(fd, kExtendLockByte, 1, pal::RangeLock::exclusive, true); !l)
    return l.error();
  pal::Status result;
  auto again = pal::stat_fd(fd);
  if (!again)
    result = again.error();
  else if (again->size < want)
    result = pal::truncate_fd(fd, want);
  (void)pal::lock_range(fd, kExtendLockByte, 1, pal::RangeLock::unlock, true);
  return result;
}

}  // namespace

Mapping::~Mapping() {
  reset();
}

Mapping::Mapping(Mapping&& o) noexcept : st_(std::exchange(o.st_, State{})) {}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    reset();
    st_ = std::exchange(o.st_, State{});
  }
  return *this;
}

void Mapping::reset() noexcept {
  if (st_.base != nullptr) (void)pal::unmap(st_.base, st_.reserved);
  if (st_.fd >= 0) (void)pal::close_fd(st_.fd);
  st_ = State{};
}

void Mapping::close() {
  State st = std::exchange(st_, State{});
  if (st.base != nullptr) {
    if (auto s = pal::unmap(st.base, st.reserved); !s) {
      if (st.fd >= 0) (void)pal::close_fd(st.fd);
      throw Context{"unmap", st.path, st.reserved}.os(s.error());
    }
  }
  if (st.fd >= 0) {
    if (auto s = pal::close_fd(st.fd); !s) throw Context{"close", st.path, 0}.os(s.error());
  }
}

Mapping Mapping::create(const MappingOptions& options) {
  return try_create(options).value();
}

// Prefaults [offset, offset+len). Stores are the point for anonymous memory
// and shm; a shared *file* is prefaulted for reading only, because write
// faults would dirty (and, on ext4, allocate) every page and the next sync
// would write the whole file.
pal::Status Mapping::populate(std::size_t offset, std::size_t len) noexcept {
  if (len == 0) return {};
  const bool file_view = st_.backing == Backing::file && st_.sharing == Sharing::shared;
  const bool write = st_.access == Access::read_write && !file_view;
  std::byte* p = st_.base + offset;
  pal::Status s =
      pal::advise(p, len, write ? pal::Advice::populate_write : pal::Advice::populate_read);
  if (s.ok() || s.error().code != EINVAL) return s;
  // Kernels before 5.14 lack MADV_POPULATE_*: touch each page. A write touch is
  // an atomic add of zero, which cannot clobber a peer's concurrent store.
  const std::size_t page = pal::page_size();
  for (std::size_t off = 0; off < len; off += page) {
    if (write)
      std::atomic_ref<unsigned char>(*reinterpret_cast<unsigned char*>(p + off)).fetch_add(0);
    else
      (void)*static_cast<volatile const std::byte*>(p + off);
  }
  return {};
}

// hugetlb (piecewise) mappings: maps [from, to) of the object, or of anonymous
// huge pages, over our own reservation. On failure the range is reserved
// again, so the address space stays ours and inaccessible.
pal::Status Mapping::map_range(std::size_t from, std::size_t to) noexcept {
  const bool anon = st_.fd < 0;
  std::uint32_t flags = pal::kMapFixed;
  flags |= st_.sharing == Sharing::shared ? pal::kMapShared : pal::kMapPrivate;
  if (anon) {
    flags |= pal::kMapAnonymous;
    flags |= st_.granule == pal::kHuge1G ? pal::kMapHuge1G : pal::kMapHuge2M;
  }
  auto m =
      pal::map(st_.base + from, to - from, prot_of(st_.access), flags, st_.fd, anon ? 0 : from);
  if (m) {
    // A new mapping does not inherit the advice the reservation had.
    if (st_.random_access) (void)pal::advise(st_.base + from, to - from, pal::Advice::random);
    return {};
  }
  (void)pal::map(st_.base + from, to - from, pal::Prot::none,
                 pal::kMapPrivate | pal::kMapAnonymous | pal::kMapNoReserve | pal::kMapFixed, -1,
                 0);
  return m.error();
}

result<Mapping> Mapping::try_create(const MappingOptions& o) {
  const std::size_t page = pal::page_size();
  const bool named = o.backing == Backing::file || o.backing == Backing::shm;
  const std::string path = o.backing == Backing::shm ? normalized_shm_name(o.path) : o.path;
  Context ctx{o.fd >= 0 ? "map descriptor" : doing_create(o.backing), path, o.size, o.fd};
  const bool shared = o.sharing == Sharing::shared;
  const bool writable = o.access == Access::read_write;

  if (named && o.fd < 0 && o.path.empty())
    return ctx.check(EINVAL,
                     "no path given for a " + std::string(to_string(o.backing)) + " mapping");
  if (o.size > kMaxBytes || o.reserve > kMaxBytes)
    return ctx.check(ERANGE, "size " + std::to_string(std::max(o.size, o.reserve)) +
                                 " is larger than the largest mapping (" +
                                 std::to_string(kMaxBytes) + " bytes)");
  if (o.reserve != 0 && o.size > o.reserve)
    return ctx.check(EINVAL, "size " + std::to_string(o.size) + " is beyond the reservation of " +
                                 std::to_string(o.reserve) + " bytes");
  // Only a shared, writable mapping may create (or extend) the object: a
  // read-only or copy-on-write view of a missing file is an error, not an
  // empty new file.
  const bool may_create = named && o.fd < 0 && shared && writable;
  if (o.open_mode == OpenMode::create_exclusive && named && !may_create)
    return ctx.check(EINVAL, "exclusive creation needs a shared, read-write mapping");

  // ---- 1. open the backing object
  int obj_fd = -1;
  FdGuard guard;
  CreatedGuard created{o.backing, path, false};
  std::uint64_t existing = 0;
  bool on_hugetlbfs = false, on_tmpfs = false;
  std::size_t fs_granule = 0;
  const bool fd_backed = o.backing != Backing::anonymous || shared;
  if (o.fd >= 0) {
    auto d = pal::dup_fd(o.fd);
    if (!d) return ctx.os(d.error());
    obj_fd = guard.fd = d.value();
  } else if (named) {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
    // before the type check below could refuse it.
    std::uint32_t flags = pal::kOpenNonBlock;
    if (writable && shared) flags |= pal::kOpenReadWrite;
    if (o.follow_symlinks) flags |= pal::kOpenFollow;
    auto open = [&](std::uint32_t f) {
      return o.backing == Backing::shm ? pal::shm_open_object(path.c_str(), f, o.mode)
                                       : pal::open_file(path.c_str(), f, o.mode);
    };
    const std::uint32_t create_flags = flags | pal::kOpenCreate | pal::kOpenExclusive;
    pal::Result<int> r = pal::Error{};
    if (may_create && o.open_mode == OpenMode::create_exclusive) {
      r = open(create_flags);
      created.armed = r.ok();
    } else {
      r = open(flags);
      if (!r && r.error().code == ENOENT && may_create && o.open_mode == OpenMode::open_or_create) {
        // Create it ourselves (O_EXCL) so that we know whether to remove it
        // on failure; lose the race to another creator gracefully.
        r = open(create_flags);
        created.armed = r.ok();
        if (!r && r.error().code == EEXIST) r = open(flags);
      }
    }
    if (!r) return ctx.os(r.error());
    obj_fd = guard.fd = r.value();
  }
  if (obj_fd >= 0) {
    auto st = pal::stat_fd(obj_fd);
    if (!st) return ctx.os(st.error());
    if (st->type == pal::FileType::directory)
      return ctx.check(EISDIR, "it is a directory, not a file");
    if (st->type != pal::FileType::regular)
      return ctx.check(ENODEV, "it is not a regular file (a device, FIFO or socket)");
    existing = st->size;
    on_hugetlbfs = st->on_hugetlbfs;
    on_tmpfs = st->on_tmpfs;
    if (on_hugetlbfs) fs_granule = static_cast<std::size_t>(st->block_size);
  }
  if (existing > kMaxBytes) return ctx.check(EFBIG, "the object is larger than any mapping");

  // ---- 2. plan the page size, most wanted first
  HugeReport report;
  report.requested = o.huge;
  std::vector<Plan> plans;
  std::string why_not;  // accumulated reasons for skipped rungs
  auto note = [&](const std::string& s) {
    if (!why_not.empty()) why_not += "; ";
    why_not += s;
  };
  const std::size_t wanted_bytes = std::max<std::size_t>(o.size, existing);
  if (on_hugetlbfs) {
    // The filesystem decides: every page of a hugetlbfs file (or hugetlb memfd)
    // is a huge page, and there is nothing to fall back to.
    if (fs_granule == 0 || (fs_granule & (fs_granule - 1)) != 0)
      return ctx.check(EINVAL, "hugetlbfs reports a page size of " + std::to_string(fs_granule));
    const std::uint64_t need =
        round_up(std::max<std::size_t>(wanted_bytes, 1), fs_granule) / fs_granule;
    const std::uint64_t avail = pal::huge_pages_available(fs_granule);
    if (avail < need && existing < wanted_bytes)
      return ctx.check(ENOMEM, "hugetlb pages of " + std::to_string(fs_granule >> 10) +
                                   " KiB: " + std::to_string(need) + " needed, " +
                                   std::to_string(avail) + " available (HugePages_Free - Rsvd)");
    plans.push_back({fs_granule == pal::kHuge1G ? HugeOutcome::hugetlb_1g : HugeOutcome::hugetlb_2m,
                     fs_granule});
  } else {
    const bool want_1g = o.huge == HugePolicy::hugetlb_1g;
    const bool want_2m =
        want_1g || o.huge == HugePolicy::hugetlb_2m || o.huge == HugePolicy::automatic;
    const bool hugetlb_capable =
        o.backing == Backing::anonymous || (o.backing == Backing::memfd && o.fd < 0);
    auto consider = [&](HugeOutcome out, std::size_t hsize, const char* label) {
      if (!hugetlb_capable) {
        note(std::string(label) + ": a " + to_string(o.backing) +
             " mapping on a regular filesystem or tmpfs cannot use hugetlb pages (use a file on "
             "hugetlbfs)");
        return;
      }
      // Only [0, size) is mapped at creation (grow maps more), so that is
      // what must be available now.
      const std::uint64_t need = round_up(std::max<std::size_t>(o.size, 1), hsize) / hsize;
      const std::uint64_t avail = pal::huge_pages_available(hsize);
      if (avail < need) {
        note(std::string(label) + ": " + std::to_string(need) + " pages needed, " +
             std::to_string(avail) + " free (HugePages_Free - HugePages_Rsvd)");
        return;
      }
      plans.push_back({out, hsize});
    };
    if (want_1g) consider(HugeOutcome::hugetlb_1g, pal::kHuge1G, "hugetlb 1 GiB");
    if (want_2m) consider(HugeOutcome::hugetlb_2m, pal::kHuge2M, "hugetlb 2 MiB");
    if (o.huge != HugePolicy::none) {
      const pal::ThpSettings thp = pal::thp_settings();
      // Shared memory (shm, memfd, tmpfs files, anonymous shared) follows
      // shmem_enabled; everything else the anonymous/file THP switch.
      const bool shmem = on_tmpfs || o.backing == Backing::shm || o.backing == Backing::memfd ||
                         (o.backing == Backing::anonymous && shared);
      const std::string shmem_mode = thp.shmem;
      if (!shmem && thp.effective() == pal::ThpMode::never)
        note("transparent: THP is 'never' for 2 MiB pages (/sys/kernel/mm/transparent_hugepage)");
      else if (shmem && (shmem_mode == "never" || shmem_mode == "deny"))
        note("transparent: shared memory THP is '" + shmem_mode +
             "' in /sys/kernel/mm/transparent_hugepage/shmem_enabled");
      else
        plans.push_back({HugeOutcome::transparent, page});
    }
    plans.push_back({HugeOutcome::none, page});
  }
  // A strict request that the plans cannot meet fails before any side effect.
  if (o.huge_strict && !satisfies(o.huge, plans.front().outcome))
    return ctx.check(ENOMEM, std::string("huge pages (") + to_string(o.huge) +
                                 ") were required but are not available: " +
                                 (why_not.empty() ? "not offered" : why_not));

  // ---- 3. size, reserve and map, falling down the plans on failure
  for (std::size_t i = 0; i < plans.size(); ++i) {
    const Plan& plan = plans[i];
    const std::size_t g = plan.granule;
    const bool hugetlb = is_hugetlb(plan.outcome);
    const bool last = i + 1 == plans.size();
    auto fall = [&](const pal::Error& e) -> bool {  // true: try the next plan
      if (hugetlb && !last && !o.huge_strict) {
        note(describe(e));
        return true;
      }
      return false;
    };

    // The anonymous shared or memfd object is created now that the page size is known.
    FdGuard fresh;
    int fd = obj_fd;
    if (fd < 0 && fd_backed) {
      std::uint32_t mf = 0;
      if (plan.outcome == HugeOutcome::hugetlb_2m) mf |= pal::kMemfdHuge2M;
      if (plan.outcome == HugeOutcome::hugetlb_1g) mf |= pal::kMemfdHuge1G;
      const std::string name = o.path.empty() ? "mapheap" : o.path;
      auto r = pal::memfd(name.c_str(), mf);
      if (!r) {
        if (fall(r.error())) continue;
        return ctx.os(r.error());
      }
      fd = fresh.fd = r.value();
    }

    // Sizes. `size` is what the caller asked for, in granules; an existing
    // object larger than that stays whole (its content must be reachable).
    const std::uint64_t have = fresh.fd < 0 ? existing : 0;
    std::size_t size = o.size != 0 ? round_up(o.size, g) : static_cast<std::size_t>(have);
    if (have > size) size = static_cast<std::size_t>(have);
    if (size == 0)
      return ctx.check(EINVAL, fd >= 0 && fresh.fd < 0
                                   ? "size 0: the object is empty and no size was given"
                                   : "size 0: a mapping needs a size");
    if (shared && !writable && fd >= 0 && fresh.fd < 0 && have < o.size)
      return ctx.check(EINVAL, "the object is " + std::to_string(have) +
                                   " bytes; a read-only mapping cannot extend it to " +
                                   std::to_string(o.size));
    const std::size_t reserve = round_up(std::max(o.reserve, size), g);
    if (o.reserve != 0 && size > round_up(o.reserve, g))
      return ctx.check(EINVAL, "the object is " + std::to_string(size) +
                                   " bytes, larger than the reservation of " +
                                   std::to_string(o.reserve) + " bytes");
    ctx.size = size;

    const std::size_t align = std::max(g, reserve >= pal::kHuge2M ? pal::kHuge2M : page);
    auto res = pal::reserve(reserve, align);
    if (!res) return ctx.os(res.error());

    Mapping m;  // owns the reservation from here: every return unmaps it
    State& st = m.st_;
    st.base = static_cast<std::byte*>(res.value());
    st.reserved = reserve;
    st.granule = g;
    st.fd = fd;
    st.backing = o.backing;
    st.sharing = o.sharing;
    st.access = o.access;
    st.prefault = o.prefault;
    st.preallocate = o.preallocate;
    st.hugetlb = hugetlb;
    st.piecewise = hugetlb;
    st.random_access = o.random_access;
    st.path = path;
    auto give_back_fd = [&] { st.fd = -1; };  // the guards own fd until success

    const pal::Prot prot = prot_of(o.access);
    pal::Status mapped;
    if (fd >= 0 && shared && writable) {
      if (auto s = extend_object(fd, size, o.preallocate); !s) {
        give_back_fd();
        if (fall(s.error())) continue;
        return ctx.os(s.error());
      }
    }
    if (hugetlb) {
      // Only [0, size): a writable hugetlbfs mapping would resize the file to
      // the whole reservation, and huge pages cannot be overcommitted.
      mapped = m.map_range(0, size);
    } else if (fd >= 0 && shared) {
      // The whole reservation maps the object: growth is only ftruncate.
      auto r = pal::map(st.base, reserve, prot, pal::kMapShared | pal::kMapFixed, fd, 0);
      if (!r) mapped = r.error();
    } else if (fd >= 0) {  // private, copy-on-write view of the object
      st.file_extent = std::min(round_up(static_cast<std::size_t>(have), page), reserve);
      if (st.file_extent > 0) {
        auto r = pal::map(st.base, st.file_extent, prot, pal::kMapPrivate | pal::kMapFixed, fd, 0);
        if (!r) mapped = r.error();
      }
      if (mapped.ok() && size > st.file_extent)
        mapped = pal::protect(st.base + st.file_extent, size - st.file_extent, prot);
    } else {
      mapped = pal::protect(st.base, size, prot);
    }
    if (!mapped) {
      give_back_fd();
      if (fall(mapped.error())) continue;
      return ctx.os(mapped.error());
    }

    // Transparent huge pages are advice; so is their absence for policy none.
    if (plan.outcome == HugeOutcome::transparent) {
      if (auto s = pal::advise(st.base, reserve, pal::Advice::hugepage); !s) {
        note("transparent: " + describe(s.error()));
        report.obtained = HugeOutcome::none;
      } else {
        report.obtained = HugeOutcome::transparent;
      }
    } else {
      report.obtained = plan.outcome;
      if (o.huge == HugePolicy::none)  // EINVAL only if the kernel has no THP at all
        (void)pal::advise(st.base, reserve, pal::Advice::nohugepage);
    }
    if (!satisfies(o.huge, report.obtained)) {
      report.fell_back = true;
      report.reason = why_not.empty() ? "not available" : why_not;
      if (o.huge_strict) {
        give_back_fd();
        return ctx.check(ENOMEM, std::string("huge pages (") + to_string(o.huge) +
                                     ") were required but not available: " + report.reason);
      }
    } else if (!why_not.empty()) {
      report.reason = why_not;  // what a lesser-but-acceptable choice passed over
    }
    st.huge = std::move(report);
    // Before anything is read through the mapping, over all of it: a shared
    // object maps the whole reservation, and what lies past the object now
    // (reserved, anonymous) is where growth goes.
    if (o.random_access) (void)pal::advise(st.base, reserve, pal::Advice::random);

    if (o.prefault) {
      if (auto s = m.populate(0, size); !s) {
        give_back_fd();
        return ctx.os(s.error());
      }
    }
    if (o.lock_memory) {
      if (auto s = pal::lock(st.base, size); !s) {
        give_back_fd();
        return ctx.os(s.error());
      }
      st.locked = true;
    }
    st.size = size;
    st.dir_sync_pending = created.armed && o.backing == Backing::file;
    fresh.release();
    guard.release();
    created.armed = false;
    return m;
  }
  return ctx.check(ENOMEM, "no page size could be mapped: " + why_not);
}

result<std::size_t> Mapping::try_grow(std::size_t new_size) {
  Context ctx{"grow mapping", st_.path, new_size, st_.path.empty() ? st_.fd : -1};
  if (st_.base == nullptr) return ctx.check(EBADF, "the mapping is closed");
  if (new_size <= st_.size) return st_.size;
  if (new_size > st_.reserved)
    return ctx.check(ERANGE, "beyond its reservation of " + std::to_string(st_.reserved) +
                                 " bytes (reserve more address space at creation)");
  const std::size_t want = round_up(new_size, st_.granule);  // <= reserved: granule multiple
  const std::size_t page = pal::page_size();
  const std::size_t from = round_up(st_.size, st_.piecewise ? st_.granule : page);
  const pal::Prot prot = prot_of(st_.access);
  const bool shared_object = st_.fd >= 0 && st_.sharing == Sharing::shared;

  if (shared_object) {
    if (st_.access == Access::read_only) {
      // Another process may have grown the object; we may not.
      auto st = pal::stat_fd(st_.fd);
      if (!st) return ctx.os(st.error());
      if (st->size < new_size)
        return ctx.check(EINVAL, "the object is " + std::to_string(st->size) +
                                     " bytes; a read-only mapping cannot extend it");
    } else if (auto s = extend_object(st_.fd, want, st_.preallocate); !s) {
      return ctx.os(s.error());
    }
  }
  if (st_.piecewise) {
    if (want > from) {
      if (auto s = map_range(from, want); !s) return ctx.os(s.error());
    }
  } else if (!shared_object) {
    // Private: pages past the file's extent (all pages, for anonymous
    // memory) are anonymous and become accessible in place.
    const std::size_t start = std::max(from, st_.file_extent);
    if (want > start) {
      if (auto s = pal::protect(st_.base + start, want - start, prot); !s) return ctx.os(s.error());
    }
  }
  // The new range is usable only once it is populated and locked as asked;
  // size() does not change if either fails.
  const std::size_t old = round_up(st_.size, page);
  if (st_.prefault) {
    if (auto s = populate(old, want - old); !s) return ctx.os(s.error());
  }
  if (st_.locked) {
    if (auto s = pal::lock(st_.base + old, want - old); !s) return ctx.os(s.error());
  }
  st_.size = want;
  return st_.size;
}

void Mapping::grow(std::size_t new_size) {
  (void)try_grow(new_size).value();
}

namespace {
// Validates [offset, offset+len) against the usable size; len 0 = to the end.
std::pair<std::size_t, std::size_t> clamp_range(const Context& ctx, std::size_t size,
                                                std::size_t offset, std::size_t len) {
  if (offset > size)
    throw ctx.check(ERANGE, "offset " + std::to_string(offset) + " is beyond the mapping's size " +
                                std::to_string(size));
  if (len == 0) len = size - offset;
  if (len > size - offset)
    throw ctx.check(ERANGE, "range [" + std::to_string(offset) + ", +" + std::to_string(len) +
                                ") is beyond the mapping's size " + std::to_string(size));
  // Page-align outward: the OS works in pages.
  const std::size_t page = pal::page_size();
  const std::size_t start = offset / page * page;
  return {start, round_up(offset + len, page) - start};
}
}  // namespace

void Mapping::sync(std::size_t offset, std::size_t len) {
  Context ctx{"sync mapping", st_.path, st_.size};
  if (st_.base == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  auto [start, n] = clamp_range(ctx, st_.size, offset, len);
  if (st_.fd < 0 || st_.sharing != Sharing::shared || st_.access == Access::read_only) return;
  if (st_.sync_failed)
    throw ctx.check(EIO,
                    "an earlier sync failed; the kernel may have dropped the dirty pages, "
                    "so durability can no longer be promised for this mapping");
  // msync first: it starts writeback of the mapped pages and waits for it;
  // fdatasync then flushes the device cache and the metadata needed to read
  // the data back (the file size after growth).
  pal::Status s = pal::sync_memory(st_.base + start, n);
  if (s) s = pal::datasync(st_.fd);
  // A file this mapping created is durable only once its name is.
  if (s && st_.dir_sync_pending) {
    s = pal::sync_parent_directory(st_.path.c_str());
    if (s) st_.dir_sync_pending = false;
  }
  if (!s) {
    st_.sync_failed = true;
    throw ctx.os(s.error());
  }
}

void Mapping::advise(Advice advice, std::size_t offset, std::size_t len) {
  Context ctx{"advise mapping", st_.path, st_.size};
  if (st_.base == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  auto [start, n] = clamp_range(ctx, st_.size, offset, len);
  if (n == 0) return;
  pal::Advice a = pal::Advice::normal;
  switch (advice) {
    case Advice::normal: a = pal::Advice::normal; break;
    case Advice::sequential: a = pal::Advice::sequential; break;
    case Advice::random: a = pal::Advice::random; break;
    case Advice::willneed: a = pal::Advice::willneed; break;
    case Advice::dontneed: a = pal::Advice::dontneed; break;
    case Advice::hugepage: a = pal::Advice::hugepage; break;
    case Advice::nohugepage: a = pal::Advice::nohugepage; break;
    case Advice::populate:
      if (auto s = populate(start, n); !s) throw ctx.os(s.error());
      return;
  }
  if (auto s = pal::advise(st_.base + start, n, a); !s) throw ctx.os(s.error());
}

void Mapping::release(std::size_t offset, std::size_t len) {
  Context ctx{"release pages of mapping", st_.path, len};
  if (st_.base == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  if (offset % st_.granule != 0 || len % st_.granule != 0)
    throw ctx.check(EINVAL, "offset " + std::to_string(offset) + " and length " +
                                std::to_string(len) + " must be multiples of the granule " +
                                std::to_string(st_.granule));
  auto [start, n] = clamp_range(ctx, st_.size, offset, len);
  if (n == 0) return;
  pal::Status s;
  if (st_.fd >= 0 && st_.sharing == Sharing::shared) {
    if (st_.access == Access::read_only)
      throw ctx.check(EBADF, "a read-only mapping cannot release the object's pages");
    s = pal::punch_hole(st_.fd, start, n);  // drops the pages from every mapper, too
  } else {
    // A private view of a file: MADV_DONTNEED would fault the file's bytes
    // back in, so the part backed by the file is replaced by zero pages.
    const std::size_t file_end = std::min(start + n, st_.file_extent);
    if (st_.fd >= 0 && start < file_end) {
      auto r = pal::map(st_.base + start, file_end - start, prot_of(st_.access),
                        pal::kMapPrivate | pal::kMapAnonymous | pal::kMapFixed, -1, 0);
      if (!r) throw ctx.os(r.error());
    }
    const std::size_t anon_start = std::max(start, file_end);
    if (anon_start < start + n)
      s = pal::advise(st_.base + anon_start, start + n - anon_start, pal::Advice::dontneed);
  }
  if (!s) throw ctx.os(s.error());
}

Residency Mapping::residency(std::size_t offset, std::size_t len) const {
  Context ctx{"read residency of mapping", st_.path, st_.size};
  if (st_.base == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  auto [start, n] = clamp_range(ctx, st_.size, offset, len);
  Residency r;
  if (n == 0) return r;
  auto pm = pal::pagemap_residency(st_.base + start, n);
  if (!pm) throw ctx.os(pm.error());
  auto sm = pal::smaps_range(st_.base + start, n);
  if (!sm) throw ctx.os(sm.error());
  r.pages = pm->pages;
  r.resident_pages = pm->present;
  r.swapped_pages = pm->swapped;
  r.first_pfn = pm->first_pfn;
  r.rss_bytes = sm->rss;
  r.private_dirty_bytes = sm->private_dirty;
  r.shared_dirty_bytes = sm->shared_dirty;
  r.huge_bytes = sm->anon_huge + sm->shmem_huge + sm->file_huge;
  return r;
}

}  // namespace mapheap
