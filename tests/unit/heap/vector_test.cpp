// mapheap::vector: the same observable behaviour as std::vector under random
// operations (in a heap, with strings that take the heap's allocator, and
// with std::allocator), arguments that are elements of the vector itself,
// the strong guarantee when growth throws, vectors of two heaps assigned and
// swapped, and the checks of MAPHEAP_CHECKED builds. Across processes and
// across reopen it is tested with the other containers (containers_test.cpp).
#include "mapheap/vector.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "mapheap/heap.hpp"
#include "support/temp_dir.hpp"

namespace mapheap {
namespace {

using Str = string;

class VectorTest : public ::testing::Test {
 protected:
  MappedHeap heap(const char* name) const {
    return MappedHeap::open(HeapOptions::file(tmp_.file(name), HeapMode::create)
                                .with_size(std::size_t{8} << 20, std::size_t{256} << 20));
  }
  test::TempDir tmp_;
};

// The three kinds of element the random test runs on: a trivially copyable
// one (growth by memcpy), a string in the heap (uses-allocator construction,
// moves), and std::string with std::allocator (plain pointers).
struct IntCase {
  using Vec = vector<std::uint32_t>;
  using Ref = std::uint32_t;
  static Vec make(MappedHeap& h) { return Vec(h); }
  static Ref value(std::mt19937& rng) { return static_cast<Ref>(rng()); }
  static Ref arg(const Ref& r) { return r; }
  static std::uint32_t element(const Vec&, const Ref& r) { return r; }
  static Ref seen(const std::uint32_t& x) { return x; }
};
struct HeapStringCase {
  using Vec = vector<Str>;
  using Ref = std::string;
  static Vec make(MappedHeap& h) { return Vec(h); }
  static Ref value(std::mt19937& rng) {
    // Short ones stay inside the string object, long ones are in the heap.
    return std::string(rng() % 3 == 0 ? 5 : 40, static_cast<char>('a' + rng() % 26)) + std::to_string(rng() % 1000);
  }
  static const char* arg(const Ref& r) { return r.c_str(); }
  static Str element(const Vec& v, const Ref& r) { return Str(r, v.get_allocator()); }
  static Ref seen(const Str& s) { return std::string(s); }
};
struct StdStringCase {
  using Vec = vector<std::string, std::allocator<std::string>>;
  using Ref = std::string;
  static Vec make(MappedHeap&) { return Vec(); }
  static Ref value(std::mt19937& rng) { return HeapStringCase::value(rng); }
  static const Ref& arg(const Ref& r) { return r; }
  static std::string element(const Vec&, const Ref& r) { return r; }
  static Ref seen(const std::string& s) { return s; }
};

template <class Case>
std::string differs(const typename Case::Vec& v, const std::vector<typename Case::Ref>& ref) {
  if (v.size() != ref.size()) return "size " + std::to_string(v.size()) + ", expected " + std::to_string(ref.size());
  if (v.capacity() < v.size()) return "capacity below size";
  if (v.empty() != ref.empty()) return "empty()";
  std::size_t i = 0;
  for (const auto& x : v) {  // through the iterators
    if (Case::seen(x) != ref[i]) return "element " + std::to_string(i);
    ++i;
  }
  if (!v.empty() && (Case::seen(v.front()) != ref.front() || Case::seen(v.back()) != ref.back()))
    return "front or back";
  return "";
}

template <class Case>
void random_operations(MappedHeap& h, unsigned seed) {
  using Vec = typename Case::Vec;
  using Ref = typename Case::Ref;
  std::mt19937 rng(seed);
  Vec v = Case::make(h);
  std::vector<Ref> ref;
  auto pos = [&](bool include_end) {
    const std::size_t n = ref.size() + (include_end ? 1 : 0);
    return n == 0 ? std::size_t{0} : rng() % n;
  };
  for (int step = 0; step < 4000; ++step) {
    const auto op = rng() % 20;
    std::string what;
    if (op < 6) {  // the common case: append
      const Ref x = Case::value(rng);
      if (op % 2 == 0) {
        v.push_back(Case::element(v, x));
      } else {
        v.emplace_back(Case::arg(x));
      }
      ref.push_back(x);
      what = "push_back";
    } else if (op == 6 && !ref.empty()) {  // an element of the vector appended to it (may grow)
      const std::size_t k = pos(false);
      v.push_back(v[k]);
      ref.push_back(Ref(ref[k]));
      what = "push_back of an element";
    } else if (op == 7) {
      const std::size_t at = pos(true);
      const Ref x = Case::value(rng);
      const auto it = v.emplace(v.begin() + static_cast<std::ptrdiff_t>(at), Case::arg(x));
      ref.insert(ref.begin() + static_cast<std::ptrdiff_t>(at), x);
      ASSERT_EQ(it, v.begin() + static_cast<std::ptrdiff_t>(at));
      what = "emplace";
    } else if (op == 8 && !ref.empty()) {  // n copies of one of its own elements
      const std::size_t at = pos(true);
      const std::size_t k = pos(false);
      const std::size_t n = rng() % 40;
      v.insert(v.begin() + static_cast<std::ptrdiff_t>(at), n, v[k]);
      const Ref x = ref[k];
      ref.insert(ref.begin() + static_cast<std::ptrdiff_t>(at), n, x);
      what = "insert n of an element";
    } else if (op == 9) {
      const std::size_t at = pos(true);
      std::vector<Ref> more(rng() % 30);
      for (auto& x : more) x = Case::value(rng);
      v.insert(v.begin() + static_cast<std::ptrdiff_t>(at), more.begin(), more.end());
      ref.insert(ref.begin() + static_cast<std::ptrdiff_t>(at), more.begin(), more.end());
      what = "insert range";
    } else if (op == 10 && !ref.empty()) {
      const std::size_t at = pos(false);
      const auto it = v.erase(v.begin() + static_cast<std::ptrdiff_t>(at));
      ref.erase(ref.begin() + static_cast<std::ptrdiff_t>(at));
      ASSERT_EQ(it, v.begin() + static_cast<std::ptrdiff_t>(at));
      what = "erase";
    } else if (op == 11) {
      std::size_t a = pos(true), b = pos(true);
      if (a > b) std::swap(a, b);
      v.erase(v.begin() + static_cast<std::ptrdiff_t>(a), v.begin() + static_cast<std::ptrdiff_t>(b));
      ref.erase(ref.begin() + static_cast<std::ptrdiff_t>(a), ref.begin() + static_cast<std::ptrdiff_t>(b));
      what = "erase range";
    } else if (op == 12 && !ref.empty()) {
      v.pop_back();
      ref.pop_back();
      what = "pop_back";
    } else if (op == 13) {
      const std::size_t n = rng() % (ref.size() + 50);
      if (!ref.empty() && rng() % 2 == 0) {
        const std::size_t k = pos(false);
        const Ref x = ref[k];
        v.resize(n, v[k]);
        ref.resize(n, x);
        what = "resize with an element";
      } else {
        v.resize(n);
        ref.resize(n);
        what = "resize";
      }
    } else if (op == 14 && !ref.empty()) {
      const std::size_t k = pos(false);
      const std::size_t n = rng() % (2 * ref.size() + 2);
      const Ref x = ref[k];
      v.assign(n, v[k]);
      ref.assign(n, x);
      what = "assign n of an element";
    } else if (op == 15) {
      std::vector<Ref> other(rng() % 60);
      for (auto& x : other) x = Case::value(rng);
      v.assign(other.begin(), other.end());
      ref = other;
      what = "assign range";
    } else if (op == 16) {
      v.shrink_to_fit();
      ASSERT_EQ(v.capacity(), v.size());
      what = "shrink_to_fit";
    } else if (op == 17) {
      const std::size_t n = ref.size() + rng() % 100;
      v.reserve(n);
      ASSERT_GE(v.capacity(), n);
      what = "reserve";
    } else if (op == 18) {  // a copy, compared, then moved back
      Vec copy(v);
      ASSERT_TRUE(copy == v);
      ASSERT_EQ((copy <=> v), std::strong_ordering::equal);
      if (!ref.empty()) {
        copy.pop_back();
        ASSERT_TRUE(copy < v);
      }
      copy = v;
      v = std::move(copy);
      what = "copy and move";
    } else if (op == 19 && rng() % 8 == 0) {
      v.clear();
      ref.clear();
      what = "clear";
    }
    if (!what.empty()) {
      ASSERT_EQ(differs<Case>(v, ref), "") << "after " << what << " at step " << step;
    }
  }
}

TEST_F(VectorTest, MatchesStdVectorUnderRandomOperations) {
  auto h = heap("random.heap");
  const std::uint64_t used_before = h.stats().used_bytes;
  for (unsigned seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE(seed);
    random_operations<IntCase>(h, seed);
    random_operations<HeapStringCase>(h, seed);
    random_operations<StdStringCase>(h, seed);
  }
  EXPECT_TRUE(h.check().ok) << h.check().message;
  // Everything went back: the vectors and their strings freed what they took.
  EXPECT_EQ(h.stats().used_bytes, used_before);
}

TEST_F(VectorTest, ElementsAndNestedStorageAreInTheHeap) {
  auto h = heap("nested.heap");
  using Rows = vector<vector<std::uint32_t>>;
  auto* rows = h.find_or_construct<Rows>("rows")(h);
  for (std::uint32_t i = 0; i < 1000; ++i) {
    if (i % 10 == 0) rows->emplace_back();  // the row gets the heap's allocator
    rows->back().push_back(i);
  }
  ASSERT_EQ(rows->size(), 100u);
  EXPECT_TRUE(h.contains(rows->data()));
  for (std::size_t r = 0; r < rows->size(); ++r) {
    const auto& row = (*rows)[r];
    ASSERT_EQ(row.size(), 10u);
    EXPECT_TRUE(h.contains(row.data()));
    EXPECT_EQ(row.front(), r * 10);
    EXPECT_EQ(row.get_allocator(), allocator<std::uint32_t>(h));
  }
  auto* names = h.find_or_construct<vector<Str>>("names")(h);
  names->emplace_back("a name long enough to be outside the small-string buffer");
  names->resize(3);  // default-constructed strings get the heap too
  EXPECT_EQ((*names)[2].get_allocator(), allocator<char>(h));
  EXPECT_TRUE(h.contains((*names)[0].data()));
  h.destroy<Rows>("rows");
  h.destroy<vector<Str>>("names");
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

// gc follows the storage's offset_ptr: every row and string a named vector
// reaches stays, the blocks nothing reaches go.
TEST_F(VectorTest, GcKeepsWhatAVectorReaches) {
  auto h = heap("gc.heap");
  using Rows = vector<vector<std::uint32_t>>;
  auto* rows = h.find_or_construct<Rows>("rows")(h);
  auto* names = h.find_or_construct<vector<Str>>("names")(h);
  auto name = [](std::uint32_t i) { return "name " + std::to_string(i) + ", long enough to be outside the object"; };
  for (std::uint32_t i = 0; i < 200; ++i) {
    rows->emplace_back().assign(i % 50 + 1, i);
    names->emplace_back(name(i));
    ASSERT_NE(h.allocate(64), nullptr);  // reached by nothing
  }
  EXPECT_EQ(h.gc().freed_blocks, 200u);
  ASSERT_EQ(rows->size(), 200u);
  ASSERT_EQ(names->size(), 200u);
  for (std::uint32_t i = 0; i < 200; ++i) {
    const auto& row = (*rows)[i];
    ASSERT_EQ(row.size(), i % 50 + 1) << i;
    ASSERT_TRUE(std::all_of(row.begin(), row.end(), [i](std::uint32_t x) { return x == i; })) << i;
    ASSERT_EQ(std::string((*names)[i]), name(i)) << i;
  }
  EXPECT_TRUE(h.check().ok) << h.check().message;
  EXPECT_EQ(h.gc().freed_blocks, 0u) << "nothing more to free";
}

TEST_F(VectorTest, LayoutAndInterface) {
  // The allocator (an offset_ptr to the heap), the storage (an offset_ptr),
  // the size and the capacity; with an empty allocator, no room for it.
  static_assert(sizeof(vector<int>) == 32);
  static_assert(sizeof(vector<int, std::allocator<int>>) == 24);
  static_assert(std::is_same_v<vector<int>::pointer, offset_ptr<int>>);
  static_assert(std::is_same_v<vector<int>::iterator, int*>);
  static_assert(std::uses_allocator_v<vector<int>, allocator<char>>);
  static_assert(std::random_access_iterator<vector<int>::const_iterator>);

  auto h = heap("interface.heap");
  vector<int> v({5, 1, 4}, h);
  EXPECT_EQ(v.at(2), 4);
  EXPECT_THROW((void)v.at(3), std::out_of_range);
  EXPECT_THROW(v.reserve(v.max_size() + 1), std::length_error);
  EXPECT_EQ(std::vector<int>(v.rbegin(), v.rend()), (std::vector<int>{4, 1, 5}));
  v.insert(v.begin() + 1, {7, 7, 8});
  EXPECT_EQ(std::vector<int>(v.begin(), v.end()), (std::vector<int>{5, 7, 7, 8, 1, 4}));
  EXPECT_EQ(erase(v, 7), 2u);
  EXPECT_EQ(erase_if(v, [](int x) { return x > 4; }), 2u);
  EXPECT_EQ(std::vector<int>(v.begin(), v.end()), (std::vector<int>{1, 4}));
  vector<int> w(3, 9, h);
  EXPECT_TRUE(v < w);
  EXPECT_FALSE(v == w);
  v = {9, 9, 9};
  EXPECT_TRUE(v == w);
  vector<int> n(5, h);  // five value-initialized
  EXPECT_EQ(std::vector<int>(n.begin(), n.end()), std::vector<int>(5, 0));
}

// Growth starts at 4 elements (8 of a byte) and takes the whole size class
// the allocator reports, reserve too; every element up to the capacity is
// usable; shrink_to_fit is exact.
TEST_F(VectorTest, GrowthTakesWholeSizeClasses) {
  auto h = heap("growth.heap");
  vector<std::uint32_t> v(h);
  std::vector<std::size_t> capacities;
  for (std::uint32_t i = 0; i < 100; ++i) {
    v.push_back(i);
    if (capacities.empty() || v.capacity() != capacities.back()) capacities.push_back(v.capacity());
  }
  EXPECT_EQ(capacities, (std::vector<std::size_t>{4, 8, 16, 32, 64, 128}));
  vector<char> c(h);
  c.push_back('a');
  EXPECT_EQ(c.capacity(), 8u);
  // Elements of 5 bytes: growth asks for 4, 8, 16, 32, ... of them and gets
  // what their size classes hold (20 -> 32 bytes, 60 -> 64, 120 -> 128,
  // 250 -> 256).
  struct Five {
    char b[5];
  };
  vector<Five> f(h);
  std::vector<std::size_t> grown;
  for (int i = 0; i < 52; ++i) {
    f.push_back(Five{{static_cast<char>(i), 0, 0, 0, static_cast<char>(i)}});
    if (grown.empty() || f.capacity() != grown.back()) grown.push_back(f.capacity());
  }
  EXPECT_EQ(grown, (std::vector<std::size_t>{6, 12, 25, 51, 102}));
  for (int i = 0; i < 52; ++i) ASSERT_EQ(f[static_cast<std::size_t>(i)].b[4], static_cast<char>(i));
  vector<std::uint32_t> r(h);
  r.reserve(3);  // 12 bytes: the 16-byte class holds 4
  EXPECT_EQ(r.capacity(), 4u);
  vector<char> s(h);
  s.reserve(300);
  EXPECT_EQ(s.capacity(), MappedHeap::good_size(300, 1));
  EXPECT_EQ(s.capacity(), 320u);
  // Filled to the capacity, next to each other in their classes: nothing
  // overlaps, and the heap's structures are intact.
  s.resize(s.capacity(), 'x');
  r.resize(r.capacity(), 0x52525252u);
  v.resize(v.capacity(), 0x56565656u);
  EXPECT_EQ(std::count(s.begin(), s.end(), 'x'), 320);
  EXPECT_EQ(std::count(r.begin(), r.end(), 0x52525252u), 4);
  EXPECT_EQ(v[99], 99u);
  EXPECT_TRUE(h.check().ok) << h.check().message;
  v.resize(5);
  v.shrink_to_fit();
  EXPECT_EQ(v.capacity(), 5u);
  EXPECT_EQ(v[4], 4u);
  v.clear();
  r.clear();
  s.clear();
  c.clear();
  for (auto* x : {&v, &r}) x->shrink_to_fit();
  s.shrink_to_fit();
  c.shrink_to_fit();
  f.clear();
  f.shrink_to_fit();
  EXPECT_TRUE(h.check().ok) << h.check().message;
  EXPECT_EQ(h.stats().used_bytes, 0u) << "every block given back with the count allocate_at_least returned";
}

// Growth copies a type whose move may throw; when a copy throws, the vector
// is as it was (the strong guarantee of push_back), and nothing leaks.
int g_copies_left = -1;  // throw when it reaches 0; -1: never
int g_alive = 0;
struct Fragile {
  int v;
  explicit Fragile(int x) : v(x) { ++g_alive; }
  Fragile(const Fragile& o) : v(o.v) {
    if (g_copies_left == 0) throw std::runtime_error("copy failed");
    if (g_copies_left > 0) --g_copies_left;
    ++g_alive;
  }
  Fragile(Fragile&& o) : v(o.v) {  // NOLINT: may throw, so growth copies instead
    ++g_alive;
  }
  Fragile& operator=(const Fragile&) = default;
  ~Fragile() { --g_alive; }
};

TEST_F(VectorTest, StrongGuaranteeWhenGrowthThrows) {
  auto h = heap("throw.heap");
  {
    vector<Fragile> v(h);
    for (int i = 0; i < 8; ++i) v.emplace_back(i);
    ASSERT_EQ(v.size(), v.capacity());  // full: the next one grows
    const Fragile* before = v.data();
    for (int fail_at = 0; fail_at <= 8; ++fail_at) {
      g_copies_left = fail_at;  // copy number fail_at throws: 0 the new element's, then the relocation's
      EXPECT_THROW(v.push_back(v[3]), std::runtime_error) << fail_at;
      g_copies_left = -1;
      ASSERT_EQ(v.size(), 8u);
      ASSERT_EQ(v.capacity(), 8u);
      ASSERT_EQ(v.data(), before);
      for (int i = 0; i < 8; ++i) ASSERT_EQ(v[static_cast<std::size_t>(i)].v, i);
    }
    v.push_back(Fragile(42));
    EXPECT_EQ(v.size(), 9u);
    EXPECT_EQ(v.back().v, 42);
    EXPECT_EQ(g_alive, 9);
  }
  EXPECT_EQ(g_alive, 0);
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

// A single-pass iterator over Fragiles, so that the vector cannot size its
// storage first and builds element by element as it reads.
struct OnePass {
  using iterator_concept = std::input_iterator_tag;
  using iterator_category = std::input_iterator_tag;
  using value_type = Fragile;
  using difference_type = std::ptrdiff_t;
  const Fragile* p = nullptr;
  const Fragile& operator*() const { return *p; }
  OnePass& operator++() {
    ++p;
    return *this;
  }
  void operator++(int) { ++p; }
  bool operator==(const OnePass& o) const { return p == o.p; }
};
static_assert(std::input_iterator<OnePass> && !std::forward_iterator<OnePass>);

// A constructor that throws part-way has no destructor run: what it built
// (elements and storage) goes back before the exception leaves it.
TEST_F(VectorTest, AConstructorThatThrowsLeavesNothingBehind) {
  auto h = heap("ctor.heap");
  std::vector<Fragile> source;
  for (int i = 0; i < 40; ++i) source.emplace_back(i);
  const int alive = g_alive;
  const std::uint64_t used = h.stats().used_bytes;
  for (int fail_at : {0, 1, 17, 39}) {
    g_copies_left = fail_at;
    EXPECT_THROW((vector<Fragile>(OnePass{source.data()}, OnePass{source.data() + 40}, allocator<Fragile>(h))),
                 std::runtime_error);
    g_copies_left = fail_at;
    EXPECT_THROW((vector<Fragile>(40, source[0], allocator<Fragile>(h))), std::runtime_error);
    g_copies_left = -1;
    EXPECT_EQ(g_alive, alive) << fail_at;
    EXPECT_EQ(h.stats().used_bytes, used) << fail_at;
  }
  vector<Fragile> whole(OnePass{source.data()}, OnePass{source.data() + 40}, allocator<Fragile>(h));
  ASSERT_EQ(whole.size(), 40u);
  EXPECT_EQ(whole[39].v, 39);
  whole = vector<Fragile>(allocator<Fragile>(h));  // gone: used bytes as before
  EXPECT_EQ(h.stats().used_bytes, used);
  EXPECT_TRUE(h.check().ok) << h.check().message;
}

// Allocators of two heaps do not propagate: a vector keeps its heap, and the
// elements cross.
TEST_F(VectorTest, VectorsOfTwoHeaps) {
  auto a = heap("a.heap");
  auto b = heap("b.heap");
  vector<Str> x(a), y(b);
  for (int i = 0; i < 50; ++i) {
    x.emplace_back("from heap a, long enough to be outside the object " + std::to_string(i));
    y.emplace_back("from heap b, long enough to be outside the object " + std::to_string(i));
  }
  const std::string x0(x[0]), y0(y[0]);
  x.swap(y);
  EXPECT_EQ(std::string(x[0]), y0);
  EXPECT_EQ(std::string(y[0]), x0);
  EXPECT_TRUE(a.contains(x.data()) && a.contains(x[49].data()));
  EXPECT_TRUE(b.contains(y.data()) && b.contains(y[49].data()));
  x = std::move(y);  // copies into a, element by element
  EXPECT_TRUE(y.empty());
  EXPECT_EQ(std::string(x[0]), x0);
  EXPECT_TRUE(a.contains(x.data()) && a.contains(x[0].data()));
  vector<Str> z(x, allocator<Str>(b));  // a copy in b
  EXPECT_TRUE(z == x);
  EXPECT_TRUE(b.contains(z.data()) && b.contains(z[0].data()));
  vector<Str> moved(std::move(z), allocator<Str>(a));  // a move into a: copies
  EXPECT_TRUE(moved == x);
  EXPECT_TRUE(a.contains(moved[0].data()));
  x.clear();
  moved.clear();
  x.shrink_to_fit();
  moved.shrink_to_fit();
  EXPECT_TRUE(a.check().ok) << a.check().message;
  EXPECT_TRUE(b.check().ok) << b.check().message;
}

#if MAPHEAP_CHECKED
// Checked builds trust neither an index nor the size read from the heap.
TEST_F(VectorTest, CheckedBuildsCatchAnIndexPastTheEndAndACorruptSize) {
  // "fast": the dying child is a fork of this process and uses its heap.
  // "threadsafe" re-executes the binary, whose fixture makes a directory
  // of its own that the child's abort leaves behind in /tmp.
  GTEST_FLAG_SET(death_test_style, "fast");
  auto h = heap("checked.heap");
  auto* v = h.find_or_construct<vector<int>>("v")(h);
  v->assign({1, 2, 3});
  EXPECT_DEATH((void)(*v)[3], "vector at 0x[0-9a-f]+: index past the end");
  EXPECT_DEATH(
      {
        vector<int> e(h);
        e.pop_back();
      },
      "pop_back on an empty vector");
  // A size larger than the capacity, as a corrupt heap file would hold.
  std::size_t huge = std::size_t{1} << 40;
  std::memcpy(reinterpret_cast<unsigned char*>(v) + 16, &huge, sizeof huge);
  ASSERT_EQ(v->size(), huge);
  EXPECT_DEATH((void)v->begin(), "the size stored in the heap exceeds the capacity");
}
#endif

}  // namespace
}  // namespace mapheap
