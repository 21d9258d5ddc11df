// MAPHEAP_OPTIONS: every option taken, every mistake warned about in one
// line and otherwise ignored.
#include "heap/options.hpp"

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace mapheap::heap {
namespace {

std::vector<std::string> warnings;
void collect(const char* line) {
  warnings.emplace_back(line);
}

TEST(HeapOptions, DefaultsWithoutTheVariable) {
  HeapOptions o;
  warnings.clear();
  parse_options(nullptr, o, collect);
  EXPECT_EQ(o.stats, StatsMode::off);
  EXPECT_EQ(o.decay_ms, 1000u);
  EXPECT_EQ(o.cache, cache::CacheMode::automatic);
  EXPECT_FALSE(o.verbose);
  EXPECT_TRUE(o.decay_thread);
  EXPECT_EQ(o.thp, ThpMode::large);
  EXPECT_FALSE(o.checked);
  EXPECT_TRUE(warnings.empty());
}

TEST(HeapOptions, EveryOptionIsTaken) {
  HeapOptions o;
  warnings.clear();
  parse_options(
      "stats=json,decay_ms=250,cache=per-thread,verbose=1,stats_file=/tmp/s.txt,decay_thread=0,"
      "thp=never,checked=1",
      o, collect);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  EXPECT_FALSE(o.decay_thread);
  EXPECT_EQ(o.thp, ThpMode::never);
  EXPECT_TRUE(o.checked);
  parse_options("thp=always", o, collect);
  EXPECT_EQ(o.thp, ThpMode::always);
  parse_options("thp=huge,checked=2", o, collect);  // two warnings, nothing changed
  EXPECT_EQ(warnings.size(), 2u);
  EXPECT_EQ(o.thp, ThpMode::always);
  EXPECT_TRUE(o.checked);
  warnings.clear();
  EXPECT_EQ(o.stats, StatsMode::json);
  EXPECT_EQ(o.decay_ms, 250u);
  EXPECT_EQ(o.cache, cache::CacheMode::per_thread);
  EXPECT_TRUE(o.verbose);
  EXPECT_STREQ(o.stats_file, "/tmp/s.txt");
  parse_options("cache=none,stats=0,,cache=per-cpu", o, collect);
  EXPECT_EQ(o.cache, cache::CacheMode::per_cpu);
  EXPECT_EQ(o.stats, StatsMode::off);
  EXPECT_TRUE(warnings.empty());
  HeapOptions f;
  parse_options("stats_file=/x", f, collect);  // a file implies text statistics
  EXPECT_EQ(f.stats, StatsMode::text);
}

TEST(HeapOptions, MistakesAreWarnedAboutAndIgnored) {
  HeapOptions o;
  warnings.clear();
  parse_options(
      "bogus=1,decay_ms=ten,cache=fast,stats=maybe,verbose,decay_ms=9999999999,decay_thread=yes",
      o, collect);
  ASSERT_EQ(warnings.size(), 7u);
  EXPECT_NE(warnings[6].find("'yes' for 'decay_thread'"), std::string::npos);
  EXPECT_TRUE(o.decay_thread);
  EXPECT_EQ(warnings[0], "mapheap: MAPHEAP_OPTIONS: unknown option 'bogus' ignored");
  EXPECT_EQ(warnings[1], "mapheap: MAPHEAP_OPTIONS: bad value 'ten' for 'decay_ms' ignored");
  EXPECT_NE(warnings[2].find("'fast' for 'cache'"), std::string::npos);
  EXPECT_NE(warnings[3].find("'maybe' for 'stats'"), std::string::npos);
  EXPECT_NE(warnings[4].find("for 'verbose'"), std::string::npos);
  EXPECT_NE(warnings[5].find("'9999999999' for 'decay_ms'"), std::string::npos);
  // Nothing changed.
  EXPECT_EQ(o.decay_ms, 1000u);
  EXPECT_EQ(o.cache, cache::CacheMode::automatic);
  EXPECT_EQ(o.stats, StatsMode::off);
  // A stats file name too long for the buffer is refused, not truncated.
  const std::string long_name = "stats_file=/" + std::string(300, 'a');
  parse_options(long_name.c_str(), o, collect);
  EXPECT_EQ(warnings.size(), 8u);
  EXPECT_EQ(o.stats_file[0], '\0');
}

}  // namespace
}  // namespace mapheap::heap
