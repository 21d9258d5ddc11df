// heap/options.cpp — parsing MAPHEAP_OPTIONS without allocating.
#include "heap/options.hpp"

#include <cstring>

#include "pal/error.hpp"

namespace mapheap::heap {

namespace {

bool equals(const char* s, std::size_t n, const char* lit) noexcept {
  return std::strlen(lit) == n && std::memcmp(s, lit, n) == 0;
}

bool parse_u32(const char* s, std::size_t n, std::uint32_t& out) noexcept {
  if (n == 0 || n > 9) return false;
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + static_cast<std::uint32_t>(s[i] - '0');
  }
  out = v;
  return true;
}

bool parse_bool(const char* s, std::size_t n, bool& out) noexcept {
  if (!equals(s, n, "0") && !equals(s, n, "1")) return false;
  out = s[0] == '1';
  return true;
}

}  // namespace

void parse_options(const char* text, HeapOptions& out, void (*warn)(const char*)) noexcept {
  if (text == nullptr) return;
  char line[200];
  for (const char* p = text; *p != '\0';) {
    const char* end = std::strchr(p, ',');
    const std::size_t len = end != nullptr ? static_cast<std::size_t>(end - p) : std::strlen(p);
    const char* eq = static_cast<const char*>(std::memchr(p, '=', len));
    const std::size_t klen = eq != nullptr ? static_cast<std::size_t>(eq - p) : len;
    const char* v = eq != nullptr ? eq + 1 : p + len;
    const std::size_t vlen = eq != nullptr ? len - klen - 1 : 0;
    bool ok = true;
    if (len == 0) {
      // an empty entry (",,"): nothing to say
    } else if (equals(p, klen, "stats")) {
      if (equals(v, vlen, "0"))
        out.stats = StatsMode::off;
      else if (equals(v, vlen, "1") || equals(v, vlen, "text"))
        out.stats = StatsMode::text;
      else if (equals(v, vlen, "json"))
        out.stats = StatsMode::json;
      else
        ok = false;
    } else if (equals(p, klen, "stats_file")) {
      ok = vlen > 0 && vlen < sizeof(out.stats_file);
      if (ok) {
        std::memcpy(out.stats_file, v, vlen);
        out.stats_file[vlen] = '\0';
        if (out.stats == StatsMode::off) out.stats = StatsMode::text;
      }
    } else if (equals(p, klen, "decay_ms")) {
      ok = parse_u32(v, vlen, out.decay_ms);
    } else if (equals(p, klen, "cache")) {
      if (equals(v, vlen, "auto"))
        out.cache = cache::CacheMode::automatic;
      else if (equals(v, vlen, "per-cpu"))
        out.cache = cache::CacheMode::per_cpu;
      else if (equals(v, vlen, "per-thread"))
        out.cache = cache::CacheMode::per_thread;
      else if (equals(v, vlen, "none"))
        out.cache = cache::CacheMode::none;
      else
        ok = false;
    } else if (equals(p, klen, "verbose")) {
      ok = parse_bool(v, vlen, out.verbose);
    } else if (equals(p, klen, "decay_thread")) {
      ok = parse_bool(v, vlen, out.decay_thread);
    } else if (equals(p, klen, "checked")) {
      ok = parse_bool(v, vlen, out.checked);
    } else if (equals(p, klen, "thp")) {
      if (equals(v, vlen, "large"))
        out.thp = ThpMode::large;
      else if (equals(v, vlen, "always"))
        out.thp = ThpMode::always;
      else if (equals(v, vlen, "never"))
        out.thp = ThpMode::never;
      else
        ok = false;
    } else {
      pal::TextOut t{line, sizeof(line)};
      t.printf("mapheap: MAPHEAP_OPTIONS: unknown option '%.*s' ignored", static_cast<int>(klen), p);
      warn(line);
      ok = true;
    }
    if (!ok) {
      pal::TextOut t{line, sizeof(line)};
      t.printf("mapheap: MAPHEAP_OPTIONS: bad value '%.*s' for '%.*s' ignored",
               static_cast<int>(vlen), v, static_cast<int>(klen), p);
      warn(line);
    }
    p = end != nullptr ? end + 1 : p + len;
  }
}

}  // namespace mapheap::heap
