// map/mapping.cpp — Mapping: reserve once, grow in place, never move.
//
// Creation runs in three steps:
//   1. open the backing object (file, shm, memfd) and learn its size;
//   2. plan the page size: walk the fallback chain of the huge-page policy
//      (1 GiB -> 2 MiB hugetlb -> transparent -> none), recording why each
//      better option was not taken;
//   3. reserve an aligned range of address space and map the object over it
//      (fd-backed) or open its usable prefix (private anonymous).
// hugetlb pages cannot be overcommitted, so a hugetlb mapping commits its whole
// reservation at creation; keep `reserve` close to `size` when asking for them.
#include "mapheap/mapping.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <new>
#include <utility>
#include <vector>

#include "pal/pal.hpp"

namespace mapheap {

const char* to_string(Backing b) noexcept {
  switch (b) {
    case Backing::anonymous:
      return "anonymous";
    case Backing::file:
      return "file";
    case Backing::shm:
      return "shm";
    case Backing::memfd:
      return "memfd";
  }
  return "?";
}

const char* to_string(HugePolicy p) noexcept {
  switch (p) {
    case HugePolicy::none:
      return "none";
    case HugePolicy::transparent:
      return "transparent";
    case HugePolicy::hugetlb_2m:
      return "hugetlb-2M";
    case HugePolicy::hugetlb_1g:
      return "hugetlb-1G";
    case HugePolicy::automatic:
      return "auto";
  }
  return "?";
}

const char* to_string(HugeOutcome o) noexcept {
  switch (o) {
    case HugeOutcome::none:
      return "none";
    case HugeOutcome::transparent:
      return "transparent";
    case HugeOutcome::hugetlb_2m:
      return "hugetlb-2M";
    case HugeOutcome::hugetlb_1g:
      return "hugetlb-1G";
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
  return o;
}

MappingOptions MappingOptions::shm(std::string name, std::size_t size, OpenMode m) {
  MappingOptions o = file(std::move(name), size, m);
  o.backing = Backing::shm;
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

std::size_t round_up(std::size_t v, std::size_t g) {
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

  std::string head() const {
    std::string s = "mapheap: cannot ";
    s += doing;
    if (!path.empty()) s += " '" + path + "'";
    if (size != 0) s += " (size " + std::to_string(size) + ")";
    return s + ": ";
  }
  error os(const pal::Error& e) const {
    return error(e.code, head() + describe(e), path, size, pal::op_name(e.op));
  }
  error check(int code, const std::string& why) const {
    return error(code, head() + why, path, size, "check");
  }
};

const char* doing_create(Backing b) {
  switch (b) {
    case Backing::anonymous:
      return "create anonymous mapping";
    case Backing::file:
      return "map file";
    case Backing::shm:
      return "map shared memory object";
    case Backing::memfd:
      return "map memfd";
  }
  return "map";
}

pal::Prot prot_of(Access a) {
  return a == Access::read_only ? pal::Prot::read : pal::Prot::read_write;
}

// One rung of the huge-page fallback chain.
struct Plan {
  HugeOutcome outcome;
  std::size_t granule;
};

// Everything creation learns before the address space is reserved.
struct Opened {
  int fd = -1;
  std::uint64_t object_size = 0;  // bytes in the file / shm / memfd when opened
  bool on_hugetlbfs = false;
  bool on_tmpfs = false;
  std::size_t fs_granule = 0;  // hugetlbfs page size
};

// Closes a descriptor unless released (creation's error paths).
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) (void)pal::close_fd(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

std::string normalized_shm_name(const std::string& name) {
  return (!name.empty() && name[0] == '/') ? name : "/" + name;
}

}  // namespace

Mapping::~Mapping() {
  reset();
}

Mapping::Mapping(Mapping&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      reserved_(std::exchange(o.reserved_, 0)),
      granule_(o.granule_),
      file_extent_(o.file_extent_),
      fd_(std::exchange(o.fd_, -1)),
      backing_(o.backing_),
      sharing_(o.sharing_),
      access_(o.access_),
      prefault_(o.prefault_),
      locked_(o.locked_),
      sync_failed_(o.sync_failed_),
      path_(std::move(o.path_)),
      huge_(std::move(o.huge_)) {}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    reset();
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    reserved_ = std::exchange(o.reserved_, 0);
    granule_ = o.granule_;
    file_extent_ = o.file_extent_;
    fd_ = std::exchange(o.fd_, -1);
    backing_ = o.backing_;
    sharing_ = o.sharing_;
    access_ = o.access_;
    prefault_ = o.prefault_;
    locked_ = o.locked_;
    sync_failed_ = o.sync_failed_;
    path_ = std::move(o.path_);
    huge_ = std::move(o.huge_);
  }
  return *this;
}

void Mapping::reset() noexcept {
  if (base_ != nullptr) (void)pal::unmap(base_, reserved_);
  if (fd_ >= 0) (void)pal::close_fd(fd_);
  base_ = nullptr;
  fd_ = -1;
  size_ = reserved_ = 0;
}

void Mapping::close() {
  if (base_ != nullptr) {
    void* base = std::exchange(base_, nullptr);
    if (auto s = pal::unmap(base, reserved_); !s)
      throw Context{"unmap", path_, reserved_}.os(s.error());
  }
  if (fd_ >= 0) {
    if (auto s = pal::close_fd(std::exchange(fd_, -1)); !s)
      throw Context{"close", path_, 0}.os(s.error());
  }
  size_ = reserved_ = 0;
}

Mapping Mapping::create(const MappingOptions& options) {
  return try_create(options).value();
}

result<Mapping> Mapping::try_create(const MappingOptions& o) {
  const std::size_t page = pal::page_size();
  const bool named = o.backing == Backing::file || o.backing == Backing::shm;
  const std::string path = o.backing == Backing::shm ? normalized_shm_name(o.path) : o.path;
  Context ctx{doing_create(o.backing), path, o.size};
  const bool shared = o.sharing == Sharing::shared;
  const bool writable = o.access == Access::read_write;

  if (named && o.fd < 0 && o.path.empty())
    return ctx.check(EINVAL,
                     "no path given for a " + std::string(to_string(o.backing)) + " mapping");
  if (o.reserve != 0 && o.size > o.reserve)
    return ctx.check(EINVAL, "size " + std::to_string(o.size) + " is beyond the reservation of " +
                                 std::to_string(o.reserve) + " bytes");

  // ---- 1. open the backing object
  Opened obj;
  FdGuard guard;
  const bool fd_backed = o.backing != Backing::anonymous || shared;
  if (o.fd >= 0) {
    auto d = pal::dup_fd(o.fd);
    if (!d) return ctx.os(d.error());
    obj.fd = guard.fd = d.value();
  } else if (named) {
    std::uint32_t flags = 0;
    // A private mapping never writes to the file, so it opens it read-only.
    if (writable && shared) flags |= pal::kOpenReadWrite;
    if (o.open_mode != OpenMode::open_existing) flags |= pal::kOpenCreate;
    if (o.open_mode == OpenMode::create_exclusive) flags |= pal::kOpenExclusive;
    if (o.follow_symlinks) flags |= pal::kOpenFollow;
    auto r = o.backing == Backing::shm ? pal::shm_open_object(path.c_str(), flags, o.mode)
                                       : pal::open_file(path.c_str(), flags, o.mode);
    if (!r) return ctx.os(r.error());
    obj.fd = guard.fd = r.value();
  }
  if (obj.fd >= 0) {
    auto st = pal::stat_fd(obj.fd);
    if (!st) return ctx.os(st.error());
    if (st->type == pal::FileType::directory)
      return ctx.check(EISDIR, "it is a directory, not a file");
    if (st->type != pal::FileType::regular)
      return ctx.check(ENODEV, "it is not a regular file (a device, FIFO or socket)");
    obj.object_size = st->size;
    obj.on_hugetlbfs = st->on_hugetlbfs;
    obj.on_tmpfs = st->on_tmpfs;
    if (obj.on_hugetlbfs) obj.fs_granule = static_cast<std::size_t>(st->block_size);
  }

  // ---- 2. plan the page size, most wanted first
  HugeReport report;
  report.requested = o.huge;
  std::vector<Plan> plans;
  std::string why_not;  // accumulated reasons for skipped rungs
  auto note = [&](const std::string& s) {
    if (!why_not.empty()) why_not += "; ";
    why_not += s;
  };
  const pal::ThpSettings thp = pal::thp_settings();
  if (obj.on_hugetlbfs) {
    // The filesystem decides: every page of a hugetlbfs file is a huge page.
    plans.push_back(
        {obj.fs_granule == pal::kHuge1G ? HugeOutcome::hugetlb_1g : HugeOutcome::hugetlb_2m,
         obj.fs_granule});
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
      const std::size_t need_bytes = round_up(std::max(o.reserve, o.size), hsize);
      const std::uint64_t need = need_bytes / hsize;
      const std::uint64_t free = pal::huge_pages_free(hsize);
      if (free < need) {
        note(std::string(label) + ": " + std::to_string(need) + " pages needed, " +
             std::to_string(free) + " free (/proc/meminfo HugePages_Free)");
        return;
      }
      plans.push_back({out, hsize});
    };
    if (want_1g) consider(HugeOutcome::hugetlb_1g, pal::kHuge1G, "hugetlb 1 GiB");
    if (want_2m) consider(HugeOutcome::hugetlb_2m, pal::kHuge2M, "hugetlb 2 MiB");
    if (o.huge != HugePolicy::none) {
      const bool shmem = fd_backed && (obj.on_tmpfs || o.backing == Backing::memfd ||
                                       o.backing == Backing::shm || shared);
      const std::string shmem_mode = thp.shmem;
      if (thp.enabled == pal::ThpMode::never && !shmem)
        note("transparent: THP is 'never' in /sys/kernel/mm/transparent_hugepage/enabled");
      else if (shmem && (shmem_mode == "never" || shmem_mode == "deny"))
        note("transparent: shared memory THP is '" + shmem_mode +
             "' in /sys/kernel/mm/transparent_hugepage/shmem_enabled");
      else
        plans.push_back({HugeOutcome::transparent, page});
    }
    plans.push_back({HugeOutcome::none, page});
  }

  // ---- 3. size, reserve and map, falling down the plans on failure
  for (std::size_t i = 0; i < plans.size(); ++i) {
    const Plan& plan = plans[i];
    const std::size_t g = plan.granule;
    const bool hugetlb =
        plan.outcome == HugeOutcome::hugetlb_2m || plan.outcome == HugeOutcome::hugetlb_1g;

    // The anonymous shared or memfd object is created now that the page size is known.
    FdGuard fresh;
    int fd = obj.fd;
    if (fd < 0 && fd_backed) {
      std::uint32_t mf = 0;
      if (plan.outcome == HugeOutcome::hugetlb_2m) mf |= pal::kMemfdHuge2M;
      if (plan.outcome == HugeOutcome::hugetlb_1g) mf |= pal::kMemfdHuge1G;
      const std::string name = o.path.empty() ? "mapheap" : o.path;
      auto r = pal::memfd(name.c_str(), mf);
      if (!r) {
        if (i + 1 < plans.size() && hugetlb) {
          note(describe(r.error()));
          continue;
        }
        return ctx.os(r.error());
      }
      fd = fresh.fd = r.value();
    }

    // Sizes. `want` is what the caller asked for, in granules; an existing
    // object larger than that stays whole (its content must be reachable).
    const std::uint64_t existing = fd >= 0 && fresh.fd < 0 ? obj.object_size : 0;
    std::size_t size = o.size != 0 ? round_up(o.size, g) : static_cast<std::size_t>(existing);
    if (existing > size) size = static_cast<std::size_t>(existing);
    if (size == 0)
      return ctx.check(EINVAL, fd >= 0 && fresh.fd < 0
                                   ? "size 0: the object is empty and no size was given"
                                   : "size 0: a mapping needs a size");
    if (!writable && shared && fd >= 0 && existing < o.size)
      return ctx.check(EINVAL, "the object is " + std::to_string(existing) +
                                   " bytes; a read-only mapping cannot extend it to " +
                                   std::to_string(o.size));
    std::size_t reserve = round_up(std::max(o.reserve, size), g);
    if (o.reserve != 0 && size > round_up(o.reserve, g))
      return ctx.check(EINVAL, "the object is " + std::to_string(size) +
                                   " bytes, larger than the reservation of " +
                                   std::to_string(o.reserve) + " bytes");
    ctx.size = size;

    const std::size_t align = std::max(g, reserve >= pal::kHuge2M ? pal::kHuge2M : page);
    auto res = pal::reserve(reserve, align);
    if (!res) return ctx.os(res.error());
    auto* base = static_cast<std::byte*>(res.value());
    auto undo = [&] { (void)pal::unmap(base, reserve); };

    const pal::Prot prot = prot_of(o.access);
    std::size_t file_extent = 0;
    pal::Status mapped;
    if (fd >= 0 && shared) {
      if (writable && existing < size) {
        if (auto s = pal::truncate_fd(fd, size); !s) {
          undo();
          if (hugetlb && i + 1 < plans.size()) {
            note(describe(s.error()));
            continue;
          }
          return ctx.os(s.error());
        }
      }
      // The whole reservation maps the object: growth is only ftruncate.
      auto m = pal::map(base, reserve, prot, pal::kMapShared | pal::kMapFixed, fd, 0);
      if (!m) mapped = m.error();
    } else if (fd >= 0) {  // private, copy-on-write view of the object
      file_extent = std::min(round_up(static_cast<std::size_t>(existing), page), reserve);
      if (file_extent > 0) {
        auto m = pal::map(base, file_extent, prot, pal::kMapPrivate | pal::kMapFixed, fd, 0);
        if (!m) mapped = m.error();
      }
      if (mapped.ok() && size > file_extent)
        mapped = pal::protect(base + file_extent, size - file_extent, prot);
    } else if (hugetlb) {  // private anonymous hugetlb: commit the reservation now
      auto m = pal::map(
          base, reserve, prot,
          pal::kMapPrivate | pal::kMapAnonymous | pal::kMapFixed |
              (plan.outcome == HugeOutcome::hugetlb_1g ? pal::kMapHuge1G : pal::kMapHuge2M),
          -1, 0);
      if (!m) mapped = m.error();
    } else {
      mapped = pal::protect(base, size, prot);
    }
    if (!mapped) {
      undo();
      if (hugetlb && i + 1 < plans.size()) {
        note(describe(mapped.error()));
        continue;
      }
      return ctx.os(mapped.error());
    }

    // Transparent huge pages are advice; so is their absence when THP is "always".
    if (plan.outcome == HugeOutcome::transparent) {
      if (auto s = pal::advise(base, reserve, pal::Advice::hugepage); !s) {
        note("transparent: " + describe(s.error()));
        report.obtained = HugeOutcome::none;
      } else {
        report.obtained = HugeOutcome::transparent;
      }
    } else {
      report.obtained = plan.outcome;
      if (plan.outcome == HugeOutcome::none && thp.enabled == pal::ThpMode::always && !shared)
        (void)pal::advise(base, reserve, pal::Advice::nohugepage);
    }
    const bool wanted_more =
        (o.huge == HugePolicy::hugetlb_1g && report.obtained != HugeOutcome::hugetlb_1g) ||
        (o.huge == HugePolicy::hugetlb_2m && report.obtained != HugeOutcome::hugetlb_2m &&
         report.obtained != HugeOutcome::hugetlb_1g) ||
        (o.huge == HugePolicy::transparent && report.obtained == HugeOutcome::none) ||
        (o.huge == HugePolicy::automatic && report.obtained == HugeOutcome::none);
    if (wanted_more) {
      report.fell_back = true;
      report.reason = why_not.empty() ? "not available" : why_not;
      if (o.huge_strict) {
        undo();
        return ctx.check(ENOMEM, std::string("huge pages (") + to_string(o.huge) +
                                     ") were required but not available: " + report.reason);
      }
    } else if (o.huge == HugePolicy::automatic && !why_not.empty()) {
      report.reason = why_not;  // automatic took what it found; say what it passed over
    }

    Mapping m;
    m.base_ = base;
    m.size_ = size;
    m.reserved_ = reserve;
    m.granule_ = g;
    m.file_extent_ = file_extent;
    m.fd_ = fd;
    fresh.release();
    guard.release();
    m.backing_ = o.backing;
    m.sharing_ = o.sharing;
    m.access_ = o.access;
    m.prefault_ = o.prefault;
    m.path_ = path;
    m.huge_ = std::move(report);
    if (o.prefault) m.advise(Advice::populate, 0, size);
    if (o.lock_memory) {
      if (auto s = pal::lock(base, size); !s) return ctx.os(s.error());
      m.locked_ = true;
    }
    return m;
  }
  return ctx.check(ENOMEM, "no page size could be mapped: " + why_not);
}

result<std::size_t> Mapping::try_grow(std::size_t new_size) {
  Context ctx{"grow mapping", path_, new_size};
  if (base_ == nullptr) return ctx.check(EBADF, "the mapping is closed");
  if (new_size <= size_) return size_;
  const std::size_t want = round_up(new_size, granule_);
  if (want > reserved_)
    return ctx.check(ERANGE, "beyond its reservation of " + std::to_string(reserved_) +
                                 " bytes (reserve more address space at creation)");
  const std::size_t page = pal::page_size();
  const std::size_t have = round_up(size_, page);
  const pal::Prot prot = prot_of(access_);
  const bool hugetlb =
      huge_.obtained == HugeOutcome::hugetlb_2m || huge_.obtained == HugeOutcome::hugetlb_1g;

  if (fd_ >= 0 && sharing_ == Sharing::shared) {
    // Another process may have grown the object already; never shrink it.
    auto st = pal::stat_fd(fd_);
    if (!st) return ctx.os(st.error());
    if (st->size < want) {
      if (access_ == Access::read_only)
        return ctx.check(EINVAL, "the object is " + std::to_string(st->size) +
                                     " bytes; a read-only mapping cannot extend it");
      if (auto s = pal::truncate_fd(fd_, want); !s) return ctx.os(s.error());
    }
  } else if (fd_ >= 0 || !hugetlb) {
    // Private: pages past the file's extent (or all pages, for anonymous
    // memory) are anonymous and become accessible in place.
    const std::size_t from = std::max(have, file_extent_);
    if (want > from) {
      if (auto s = pal::protect(base_ + from, want - from, prot); !s) return ctx.os(s.error());
    }
  }
  size_ = want;
  if (prefault_) advise(Advice::populate, have, want - have);
  if (locked_) {
    if (auto s = pal::lock(base_ + have, want - have); !s) return ctx.os(s.error());
  }
  return size_;
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
  Context ctx{"sync mapping", path_, size_};
  if (base_ == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  auto [start, n] = clamp_range(ctx, size_, offset, len);
  if (fd_ < 0 || sharing_ != Sharing::shared || access_ == Access::read_only) return;
  if (sync_failed_)
    throw ctx.check(EIO,
                    "an earlier sync failed; the kernel may have dropped the dirty pages, "
                    "so durability can no longer be promised for this mapping");
  // msync first: it starts writeback of the mapped pages and waits for it;
  // fdatasync then flushes the device cache and the metadata needed to read
  // the data back (the file size after growth).
  if (auto s = pal::sync_memory(base_ + start, n); !s) {
    sync_failed_ = true;
    throw ctx.os(s.error());
  }
  if (auto s = pal::datasync(fd_); !s) {
    sync_failed_ = true;
    throw ctx.os(s.error());
  }
}

void Mapping::advise(Advice advice, std::size_t offset, std::size_t len) {
  Context ctx{"advise mapping", path_, size_};
  if (base_ == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  auto [start, n] = clamp_range(ctx, size_, offset, len);
  if (n == 0) return;
  pal::Advice a = pal::Advice::normal;
  switch (advice) {
    case Advice::normal:
      a = pal::Advice::normal;
      break;
    case Advice::sequential:
      a = pal::Advice::sequential;
      break;
    case Advice::random:
      a = pal::Advice::random;
      break;
    case Advice::willneed:
      a = pal::Advice::willneed;
      break;
    case Advice::dontneed:
      a = pal::Advice::dontneed;
      break;
    case Advice::hugepage:
      a = pal::Advice::hugepage;
      break;
    case Advice::nohugepage:
      a = pal::Advice::nohugepage;
      break;
    case Advice::populate:
      a = access_ == Access::read_write ? pal::Advice::populate_write : pal::Advice::populate_read;
      break;
  }
  if (auto s = pal::advise(base_ + start, n, a); !s) {
    if (advice == Advice::populate && s.error().code == EINVAL) {
      // Kernels before 5.14 lack MADV_POPULATE_*: touch each page instead.
      const std::size_t page = pal::page_size();
      for (std::size_t off = 0; off < n; off += page)
        (void)*static_cast<volatile const std::byte*>(base_ + start + off);
      return;
    }
    throw ctx.os(s.error());
  }
}

void Mapping::release(std::size_t offset, std::size_t len) {
  Context ctx{"release pages of mapping", path_, len};
  if (base_ == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  if (offset % granule_ != 0 || len % granule_ != 0)
    throw ctx.check(EINVAL, "offset " + std::to_string(offset) + " and length " +
                                std::to_string(len) + " must be multiples of the granule " +
                                std::to_string(granule_));
  auto [start, n] = clamp_range(ctx, size_, offset, len);
  if (n == 0) return;
  pal::Status s;
  if (fd_ >= 0 && sharing_ == Sharing::shared) {
    if (access_ == Access::read_only)
      throw ctx.check(EBADF, "a read-only mapping cannot release the object's pages");
    s = pal::punch_hole(fd_, start, n);  // drops the pages from every mapper, too
  } else {
    s = pal::advise(base_ + start, n, pal::Advice::dontneed);
  }
  if (!s) throw ctx.os(s.error());
}

Residency Mapping::residency(std::size_t offset, std::size_t len) const {
  Context ctx{"read residency of mapping", path_, size_};
  if (base_ == nullptr) throw ctx.check(EBADF, "the mapping is closed");
  auto [start, n] = clamp_range(ctx, size_, offset, len);
  Residency r;
  if (n == 0) return r;
  auto pm = pal::pagemap_residency(base_ + start, n);
  if (!pm) throw ctx.os(pm.error());
  auto sm = pal::smaps_range(base_ + start, n);
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
