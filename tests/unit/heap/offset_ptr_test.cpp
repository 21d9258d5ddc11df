// offset_ptr<T>: pointers inside a block keep working when the whole block is
// seen at another address (a memcpy'd copy, a second mapping of one memfd);
// null, arithmetic, comparisons, conversions, to_address, and use as a
// contiguous iterator by the standard algorithms. Needs no heap.
#include "mapheap/offset_ptr.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <numeric>
#include <ranges>
#include <span>
#include <sstream>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace mapheap {
namespace {

// ---- what the type promises at compile time
static_assert(std::contiguous_iterator<offset_ptr<int>>);
static_assert(std::contiguous_iterator<offset_ptr<const int>>);
static_assert(std::random_access_iterator<offset_ptr<std::string>>);
static_assert(std::is_same_v<std::iterator_traits<offset_ptr<int>>::iterator_category,
                             std::random_access_iterator_tag>);
static_assert(std::is_same_v<std::iterator_traits<offset_ptr<const int>>::value_type, int>);
static_assert(std::is_same_v<std::pointer_traits<offset_ptr<int>>::element_type, int>);
static_assert(std::is_same_v<std::pointer_traits<offset_ptr<int>>::rebind<double>,
                             offset_ptr<double>>);
static_assert(std::is_same_v<std::pointer_traits<offset_ptr<void>>::rebind<int>, offset_ptr<int>>);
static_assert(std::is_same_v<std::pointer_traits<offset_ptr<int>>::difference_type, std::ptrdiff_t>);
static_assert(std::is_convertible_v<offset_ptr<int>, offset_ptr<const int>>);
static_assert(std::is_convertible_v<offset_ptr<int>, offset_ptr<void>>);
static_assert(std::is_convertible_v<offset_ptr<const int>, offset_ptr<const void>>);
static_assert(!std::is_convertible_v<offset_ptr<const int>, offset_ptr<int>>);
static_assert(!std::is_convertible_v<offset_ptr<const void>, offset_ptr<void>>);
static_assert(!std::is_convertible_v<offset_ptr<void>, offset_ptr<int>>);
static_assert(std::is_constructible_v<offset_ptr<int>, offset_ptr<void>>);  // static_cast
static_assert(!std::is_constructible_v<offset_ptr<int>, offset_ptr<const void>>);
static_assert(!std::is_constructible_v<offset_ptr<int>, offset_ptr<double>>);
static_assert(std::is_constructible_v<bool, offset_ptr<int>>);
// Only character pointers convert implicitly (libstdc++'s basic_string needs
// it); anything else would let libstdc++'s node containers keep raw pointers.
static_assert(std::is_convertible_v<offset_ptr<char>, char*>);
static_assert(std::is_convertible_v<offset_ptr<char>, const char*>);
static_assert(std::is_convertible_v<offset_ptr<const wchar_t>, const wchar_t*>);
static_assert(!std::is_convertible_v<offset_ptr<const char>, char*>);
static_assert(!std::is_convertible_v<offset_ptr<int>, int*>);
static_assert(!std::is_convertible_v<offset_ptr<void>, void*>);
static_assert(!std::is_trivially_copyable_v<offset_ptr<int>>);  // copies recompute
static_assert(sizeof(offset_ptr<void>) == 8);

struct Base {
  int b = 1;
  virtual ~Base() = default;
};
struct Derived : Base {
  int d = 2;
};
static_assert(std::is_convertible_v<offset_ptr<Derived>, offset_ptr<Base>>);
static_assert(!std::is_convertible_v<offset_ptr<Base>, offset_ptr<Derived>>);
static_assert(std::is_constructible_v<offset_ptr<Derived>, offset_ptr<Base>>);  // static_cast

// A linked structure that lives in one block: a header and a ring of nodes
// holding pointers to each other and to themselves.
struct Node {
  offset_ptr<Node> next;  // first member: a node alone points to itself (offset 0)
  offset_ptr<Node> prev;
  int value = 0;
};
struct Block {
  offset_ptr<Node> head;
  offset_ptr<int> values;   // into `array` below
  offset_ptr<void> opaque;  // into `array` too, as void
  offset_ptr<Node> none;    // null
  Node nodes[8];
  int array[16];
};

void build(Block* b) {
  new (b) Block{};
  for (int i = 0; i < 8; ++i) {
    b->nodes[i].value = 100 + i;
    b->nodes[i].next = &b->nodes[(i + 1) % 8];
    b->nodes[i].prev = &b->nodes[(i + 7) % 8];
  }
  b->head = &b->nodes[0];
  std::iota(std::begin(b->array), std::end(b->array), 0);
  b->values = &b->array[3];
  b->opaque = &b->array[5];
}

// Walks the block: returns "" when every pointer points into this copy.
std::string verify(const Block* b) {
  if (b->none) return "null did not stay null";
  if (b->head.get() != &b->nodes[0]) return "head does not point to this copy's first node";
  const Node* n = b->head.get();
  for (int i = 0; i < 8; ++i) {
    if (n != &b->nodes[i]) return "the ring leaves this copy at node " + std::to_string(i);
    if (n->value != 100 + i) return "wrong value at node " + std::to_string(i);
    if (n->next->prev.get() != n) return "prev(next(n)) != n at node " + std::to_string(i);
    n = n->next.get();
  }
  if (n != b->head.get()) return "the ring does not close";
  if (b->values.get() != &b->array[3] || *b->values != 3 || b->values[2] != 5)
    return "values does not point into this copy's array";
  if (b->opaque.get() != static_cast<const void*>(&b->array[5])) return "opaque moved";
  return "";
}

TEST(OffsetPtr, DefaultIsNullAndNullIsDistinct) {
  offset_ptr<int> p;
  EXPECT_FALSE(p);
  EXPECT_TRUE(!p);
  EXPECT_EQ(p.get(), nullptr);
  EXPECT_TRUE(p == nullptr);
  EXPECT_TRUE(nullptr == p);
  EXPECT_EQ(p.stored_offset(), offset_ptr<int>::null_offset);
  offset_ptr<int> q = nullptr;
  EXPECT_TRUE(q == p);
  int* raw = nullptr;
  offset_ptr<int> r = raw;
  EXPECT_FALSE(r);
  int x = 5;
  r = &x;
  EXPECT_TRUE(r);
  EXPECT_NE(r, nullptr);
  r = nullptr;
  EXPECT_FALSE(r);
  offset_ptr<void> v;
  EXPECT_FALSE(v);
  EXPECT_EQ(v, nullptr);
  EXPECT_EQ(offset_ptr<int>::decode(&p, p.stored_offset()), nullptr);
}

TEST(OffsetPtr, NullPlusZeroIsNull) {
  offset_ptr<int> p;
  p += 0;
  EXPECT_FALSE(p);
  EXPECT_EQ(p + 0, nullptr);
  EXPECT_EQ(p - 0, nullptr);
  const std::size_t zero = 0;  // an empty vector's begin() + size()
  EXPECT_FALSE(p + zero);
}

// A copy adds the distance from the source without testing for null, so a
// copied null's word moves; it must stay null through any chain of copies,
// at addresses far apart, and its word must never look like an offset_ptr's
// (the reachability sweep would follow it).
TEST(OffsetPtr, NullStaysNullThroughCopiesAnywhere) {
  static offset_ptr<int> far_away;  // static storage: far from the stack and the heap
  auto heap_copy = std::make_unique<offset_ptr<int>>();
  std::vector<offset_ptr<int>> many(64);  // each copied from the one before
  offset_ptr<int> local;
  for (int round = 0; round < 100; ++round) {
    *heap_copy = local;
    far_away = *heap_copy;
    many[0] = far_away;
    for (std::size_t i = 1; i < many.size(); ++i) many[i] = many[i - 1];
    local = many.back();
  }
  for (const offset_ptr<int>* q : {&local, &far_away, heap_copy.get(), &many[17]}) {
    EXPECT_FALSE(*q);
    EXPECT_EQ(q->get(), nullptr);
    EXPECT_EQ(*q, nullptr);
    EXPECT_TRUE(offset_ptr<int>::is_null_word(q->stored_offset()));
    EXPECT_FALSE(offset_ptr<int>::is_encoded(static_cast<std::uint64_t>(q->stored_offset())));
    EXPECT_EQ(offset_ptr<int>::decode(q, q->stored_offset()), nullptr);
  }
  EXPECT_NE(heap_copy->stored_offset(), far_away.stored_offset());  // the words did move
  EXPECT_EQ(*heap_copy, far_away);  // and two nulls are equal whatever their words
  EXPECT_EQ(local - many[3], 0);
  // A copy through the converting constructors too.
  offset_ptr<const int> c = far_away;
  offset_ptr<const void> v = c;
  EXPECT_FALSE(c);
  EXPECT_FALSE(v);
  // Zeroed memory reads as null (the sign bit is clear).
  EXPECT_TRUE(offset_ptr<int>::is_null_word(0));
  EXPECT_FALSE(offset_ptr<int>::is_null_word(detail::offset_encode(0)));
}

// Null no longer takes a distance: every target is representable, the
// offset_ptr's own second byte included (the distance 1, null before
// OffsetPtrV2).
TEST(OffsetPtr, EveryDistanceIsATarget) {
  struct Holder {
    offset_ptr<char> p;
  } h;
  char* second = reinterpret_cast<char*>(&h.p) + 1;
  h.p = second;
  EXPECT_TRUE(h.p);
  EXPECT_EQ(h.p.get(), second);
  EXPECT_EQ(detail::offset_distance(h.p.stored_offset()), 1);
  Holder copy = h;  // a copy points at the original's byte, not its own
  EXPECT_EQ(copy.p.get(), second);
}

#if MAPHEAP_CHECKED
// Checked builds stop what release builds leave undefined, with a message.
TEST(OffsetPtrDeathTest, CheckedBuildsStopMisuse) {
  offset_ptr<int> null;
  EXPECT_DEATH((void)*null, "dereferencing a null offset_ptr");
  EXPECT_DEATH((void)null[2], "dereferencing a null offset_ptr");
  EXPECT_DEATH(null += 1, "arithmetic on a null offset_ptr");
  alignas(offset_ptr<int>) unsigned char junk[sizeof(offset_ptr<int>)];
  const std::uint64_t word = 0x8000'0000'0000'1234ull;  // sign set, no tag
  std::memcpy(junk, &word, sizeof word);
  const auto* bad = reinterpret_cast<const offset_ptr<int>*>(junk);
  EXPECT_DEATH({ offset_ptr<int> copy(*bad); }, "not an offset_ptr's");
}
#endif

TEST(OffsetPtr, PointsToItselfWithOffsetZero) {
  Node n;
  n.next = &n;  // `next` is at the node's address: distance 0, not null
  EXPECT_TRUE(n.next);
  EXPECT_EQ(n.next.get(), &n);
  EXPECT_EQ(detail::offset_distance(n.next.stored_offset()), 0);
  EXPECT_TRUE(offset_ptr<Node>::is_encoded(static_cast<std::uint64_t>(n.next.stored_offset())));
  EXPECT_EQ(offset_ptr<Node>::decode(&n.next, n.next.stored_offset()), &n);
  // Zeroed memory has no tag: not an offset_ptr.
  EXPECT_FALSE(offset_ptr<Node>::is_encoded(0));
  offset_ptr<void> self;
  self = &self;
  EXPECT_EQ(self.get(), &self);
}

TEST(OffsetPtr, CopiesPointAtTheTargetNotAtTheDistance) {
  int a[4] = {10, 11, 12, 13};
  offset_ptr<int> p = &a[2];
  EXPECT_EQ(detail::offset_distance(p.stored_offset()),
            reinterpret_cast<std::intptr_t>(&a[2]) - reinterpret_cast<std::intptr_t>(&p));
  // The tag marks the word; an integer of the same distance has none.
  EXPECT_TRUE(offset_ptr<int>::is_encoded(static_cast<std::uint64_t>(p.stored_offset())));
  EXPECT_FALSE(offset_ptr<int>::is_encoded(static_cast<std::uint64_t>(
      reinterpret_cast<std::intptr_t>(&a[2]) - reinterpret_cast<std::intptr_t>(&p))));
  EXPECT_FALSE(offset_ptr<int>::is_encoded(40));
  EXPECT_FALSE(offset_ptr<int>::is_encoded(static_cast<std::uint64_t>(-40)));
  // The farthest distances both ways keep the tag.
  EXPECT_TRUE(offset_ptr<int>::is_encoded(static_cast<std::uint64_t>(detail::offset_encode(-(std::int64_t{1} << 47)))));
  EXPECT_TRUE(offset_ptr<int>::is_encoded(static_cast<std::uint64_t>(detail::offset_encode((std::int64_t{1} << 47) - 1))));
  std::vector<offset_ptr<int>> copies(5, p);  // each at its own address
  for (const auto& c : copies) {
    EXPECT_EQ(c.get(), &a[2]);
    EXPECT_NE(c.stored_offset(), p.stored_offset());
  }
  offset_ptr<int> moved = std::move(copies[0]);
  EXPECT_EQ(moved.get(), &a[2]);
  offset_ptr<int> assigned;
  assigned = p;
  EXPECT_EQ(*assigned, 12);
  const offset_ptr<int>& alias = assigned;
  assigned = alias;  // self-assignment keeps the target
  EXPECT_EQ(*assigned, 12);
}

TEST(OffsetPtr, BlockCopiedWithMemcpyPointsIntoTheCopy) {
  alignas(Block) std::byte first[sizeof(Block)];
  alignas(Block) std::byte second[sizeof(Block)];
  auto* a = reinterpret_cast<Block*>(first);
  build(a);
  ASSERT_EQ(verify(a), "");
  // The whole block moves at once, as it does when another process maps it:
  // the distances inside it still hold.
  std::memcpy(static_cast<void*>(second), static_cast<const void*>(first), sizeof(Block));
  auto* b = reinterpret_cast<Block*>(second);
  EXPECT_EQ(verify(b), "");
  EXPECT_NE(b->head.get(), a->head.get());
  a->~Block();
  b->~Block();
}

// Two views of one memfd, each at its own address: written through one,
// read through the other.
class TwoViews : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = ::memfd_create("offset_ptr_test", MFD_CLOEXEC);
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, static_cast<off_t>(kSize)), 0);
    a_ = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    b_ = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    ASSERT_NE(a_, MAP_FAILED);
    ASSERT_NE(b_, MAP_FAILED);
    ASSERT_NE(a_, b_);
  }
  void TearDown() override {
    if (a_ != MAP_FAILED) ::munmap(a_, kSize);
    if (b_ != MAP_FAILED) ::munmap(b_, kSize);
    if (fd_ >= 0) ::close(fd_);
  }
  static constexpr std::size_t kSize = 1 << 16;
  int fd_ = -1;
  void* a_ = MAP_FAILED;
  void* b_ = MAP_FAILED;
};

TEST_F(TwoViews, StructureWrittenThroughOneViewIsWholeThroughTheOther) {
  auto* in_a = static_cast<Block*>(a_);
  build(in_a);
  ASSERT_EQ(verify(in_a), "");
  auto* in_b = static_cast<Block*>(b_);
  EXPECT_EQ(verify(in_b), "");
  EXPECT_EQ(reinterpret_cast<std::byte*>(in_b->head.get()) - static_cast<std::byte*>(b_),
            reinterpret_cast<std::byte*>(in_a->head.get()) - static_cast<std::byte*>(a_));
  // A change through B is seen through A, pointing into A.
  in_b->head = &in_b->nodes[5];
  in_b->nodes[5].value = 555;
  EXPECT_EQ(in_a->head.get(), &in_a->nodes[5]);
  EXPECT_EQ(in_a->head->value, 555);
}

TEST_F(TwoViews, PointersAcrossTheBlockFollowEachView) {
  // A list spread over the whole mapping, nodes far apart.
  struct Far {
    offset_ptr<Far> next;
    std::uint64_t id;
  };
  constexpr std::size_t kStride = 4096 + 64;
  constexpr std::size_t kCount = kSize / kStride;
  auto* base_a = static_cast<std::byte*>(a_);
  Far* prev = nullptr;
  for (std::size_t i = 0; i < kCount; ++i) {
    auto* f = new (base_a + i * kStride) Far{nullptr, i};
    if (prev != nullptr) prev->next = f;
    prev = f;
  }
  std::size_t seen = 0;
  for (auto* f = static_cast<Far*>(b_); f != nullptr; f = f->next.get()) {
    ASSERT_GE(reinterpret_cast<std::byte*>(f), static_cast<std::byte*>(b_));
    ASSERT_LT(reinterpret_cast<std::byte*>(f), static_cast<std::byte*>(b_) + kSize);
    EXPECT_EQ(f->id, seen);
    ++seen;
  }
  EXPECT_EQ(seen, kCount);
}

TEST(OffsetPtr, Arithmetic) {
  int a[10];
  std::iota(std::begin(a), std::end(a), 0);
  offset_ptr<int> p = a;
  EXPECT_EQ(*(p + 3), 3);
  EXPECT_EQ(*(3 + p), 3);
  EXPECT_EQ(p[7], 7);
  offset_ptr<int> q = p + 9;
  EXPECT_EQ(*(q - 2), 7);
  EXPECT_EQ(q - p, 9);
  EXPECT_EQ(p - q, -9);
  ++p;
  EXPECT_EQ(*p, 1);
  EXPECT_EQ(*p++, 1);
  EXPECT_EQ(*p, 2);
  --p;
  EXPECT_EQ(*p, 1);
  EXPECT_EQ(*p--, 1);
  EXPECT_EQ(*p, 0);
  p += 5;
  EXPECT_EQ(*p, 5);
  p -= 4;
  EXPECT_EQ(*p, 1);
  *p = 42;
  EXPECT_EQ(a[1], 42);
  offset_ptr<const int> c = p;
  EXPECT_EQ(q - c, 8);  // offset_ptr<T> - offset_ptr<const T>
  EXPECT_EQ(c - q, -8);
  offset_ptr<int> end = std::end(a);  // one past the end is fine
  EXPECT_EQ(end - offset_ptr<int>(a), 10);
  // With raw pointers, const or not, and any integer type.
  const int* craw = &a[4];
  EXPECT_EQ(end - craw, 6);
  EXPECT_EQ(craw - end, -6);
  EXPECT_EQ(end - &a[0], 10);
  EXPECT_EQ(*(end - std::size_t{1}), 9);
  EXPECT_EQ(*(offset_ptr<int>(a) + short{2}), 2);
  EXPECT_EQ(offset_ptr<int>(a)[std::size_t{8}], 8);
  static_assert(std::is_same_v<decltype(end + 1), offset_ptr<int>>);
  static_assert(std::is_same_v<decltype(end - 1u), offset_ptr<int>>);
  static_assert(std::is_same_v<decltype(end - end), std::ptrdiff_t>);
  // Zero means null, in assignment and construction (Boost writes `p = 0`).
  end = 0;
  EXPECT_FALSE(end);
  offset_ptr<int> zero(0);
  EXPECT_FALSE(zero);
  char text[4] = "abc";
  offset_ptr<char> pc = text;
  const char* raw = pc;  // implicit for characters, for libstdc++'s basic_string
  EXPECT_EQ(raw, text);
  EXPECT_EQ(pc - raw, 0);
  EXPECT_EQ(raw + 1 - pc, 1);
  EXPECT_TRUE(pc < raw + 1);
  EXPECT_EQ(*(pc + 2), 'c');
}

TEST(OffsetPtr, Comparisons) {
  int a[4] = {};
  offset_ptr<int> p = &a[1];
  offset_ptr<int> q = &a[2];
  offset_ptr<const int> cp = &a[1];
  offset_ptr<void> vp = &a[1];
  EXPECT_TRUE(p == cp);
  EXPECT_TRUE(cp == p);
  EXPECT_TRUE(p == vp);
  EXPECT_TRUE(p != q);
  EXPECT_TRUE(p < q);
  EXPECT_TRUE(q > cp);
  EXPECT_TRUE(p <= cp);
  EXPECT_TRUE(p >= cp);
  EXPECT_EQ(p <=> q, std::strong_ordering::less);
  EXPECT_EQ(q <=> p, std::strong_ordering::greater);
  EXPECT_EQ(p <=> cp, std::strong_ordering::equal);
  // With raw pointers, both ways round.
  EXPECT_TRUE(p == &a[1]);
  EXPECT_TRUE(&a[1] == p);
  EXPECT_TRUE(p != &a[0]);
  EXPECT_TRUE(p < &a[3]);
  EXPECT_TRUE(&a[3] > p);
  const int* craw = &a[2];
  EXPECT_TRUE(q == craw);
  // With null.
  offset_ptr<int> n;
  EXPECT_TRUE(n == nullptr);
  EXPECT_TRUE(p != nullptr);
  EXPECT_TRUE(nullptr != p);
  EXPECT_TRUE(n < p || p < n);  // null orders like a null T*
  EXPECT_EQ(n <=> nullptr, std::strong_ordering::equal);
  // Hashing follows the target, not the stored distance.
  std::unordered_set<offset_ptr<int>> set;
  set.insert(p);
  offset_ptr<int> again = &a[1];
  EXPECT_EQ(set.count(again), 1u);
  EXPECT_EQ(set.count(q), 0u);
}

TEST(OffsetPtr, Conversions) {
  Derived d;
  offset_ptr<Derived> pd = &d;
  offset_ptr<Base> pb = pd;  // implicit upcast
  EXPECT_EQ(pb.get(), static_cast<Base*>(&d));
  EXPECT_EQ(pb->b, 1);
  offset_ptr<Derived> back(pb);  // explicit downcast (static_cast)
  EXPECT_EQ(back.get(), &d);
  EXPECT_EQ(static_pointer_cast<Derived>(pb)->d, 2);
  EXPECT_EQ(dynamic_pointer_cast<Derived>(pb).get(), &d);
  Base plain;
  offset_ptr<Base> pplain = &plain;
  EXPECT_FALSE(dynamic_pointer_cast<Derived>(pplain));

  int x = 7;
  offset_ptr<int> pi = &x;
  offset_ptr<void> pv = pi;
  offset_ptr<const void> pcv = pi;
  EXPECT_EQ(pv.get(), &x);
  EXPECT_EQ(pcv.get(), &x);
  offset_ptr<int> from_void(pv);
  EXPECT_EQ(*from_void, 7);
  auto pci = static_pointer_cast<const int>(pcv);
  EXPECT_EQ(*pci, 7);
  auto mutable_again = const_pointer_cast<int>(pci);
  *mutable_again = 8;
  EXPECT_EQ(x, 8);
  auto bytes = reinterpret_pointer_cast<unsigned char>(pi);
  EXPECT_EQ(static_cast<void*>(bytes.get()), static_cast<void*>(&x));
  offset_ptr<const int> pc;
  pc = pi;  // assignment across const
  EXPECT_EQ(pc.get(), &x);
  // The hooks boost::intrusive::pointer_traits looks for.
  EXPECT_EQ(offset_ptr<int>::static_cast_from(pv).get(), &x);
  EXPECT_EQ(offset_ptr<int>::const_cast_from(pci).get(), &x);
  EXPECT_EQ(offset_ptr<Derived>::dynamic_cast_from(pb).get(), &d);
  EXPECT_EQ(offset_ptr<int>::pointer_to(x).get(), &x);
  EXPECT_EQ(std::pointer_traits<offset_ptr<int>>::pointer_to(x).get(), &x);
}

TEST(OffsetPtr, ToAddressAndArrow) {
  struct S {
    int field = 9;
  } s;
  offset_ptr<S> p = &s;
  EXPECT_EQ(p->field, 9);
  EXPECT_EQ(std::to_address(p), &s);
  offset_ptr<void> v = &s;
  EXPECT_EQ(std::to_address(v), static_cast<void*>(&s));
  offset_ptr<S> n;
  EXPECT_EQ(std::to_address(n), nullptr);
  std::ostringstream out;
  out << p;
  std::ostringstream want;
  want << static_cast<const void*>(&s);
  EXPECT_EQ(out.str(), want.str());
}

TEST(OffsetPtr, IteratorForTheStandardAlgorithms) {
  int a[8] = {5, 3, 7, 1, 8, 2, 6, 4};
  offset_ptr<int> first = a;
  offset_ptr<int> last = first + 8;
  std::sort(first, last);
  EXPECT_TRUE(std::is_sorted(std::begin(a), std::end(a)));
  EXPECT_EQ(std::distance(first, last), 8);
  EXPECT_EQ(*std::find(first, last, 6), 6);
  EXPECT_EQ(std::lower_bound(first, last, 4) - first, 3);
  EXPECT_EQ(std::accumulate(first, last, 0), 36);
  std::reverse(first, last);
  EXPECT_EQ(a[0], 8);
  std::vector<int> copy(first, last);
  EXPECT_EQ(copy.front(), 8);
  EXPECT_EQ(copy.back(), 1);
  std::fill(first + 2, first + 4, 0);
  EXPECT_EQ(a[2], 0);
  EXPECT_EQ(a[3], 0);
  // Ranges and std::span see a contiguous range.
  std::ranges::sort(first, last);
  EXPECT_EQ(a[7], 8);
  std::span<int> s(first, last);
  EXPECT_EQ(s.data(), a);
  EXPECT_EQ(s.size(), 8u);
  offset_ptr<const int> cfirst = first;
  EXPECT_EQ(std::ranges::count(cfirst, cfirst + 8, 0), 2);
  std::reverse_iterator<offset_ptr<int>> rb(last);
  EXPECT_EQ(*rb, 8);
}

}  // namespace
}  // namespace mapheap
