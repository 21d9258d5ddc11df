// tools/mapheap/info.cpp — `mapheap info`: what this machine offers to memory
// that lives in mappings (page sizes, huge page pools, THP, rseq, overcommit).
#include <memory>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "pal/pal.hpp"

namespace mapheap::cli {
namespace {

std::string human_size(std::uint64_t bytes) {
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) return fmt::format("{} GiB", bytes >> 30);
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  if (bytes >= (1ull << 10) && bytes % (1ull << 10) == 0) return fmt::format("{} KiB", bytes >> 10);
  return fmt::format("{} B", bytes);
}

const char* overcommit_name(int mode) {
  switch (mode) {
    case 0: return "heuristic";
    case 1: return "always";
    case 2: return "never (strict accounting)";
    default: return "unknown";
  }
}

nlohmann::json to_json(const pal::SystemInfo& s) {
  nlohmann::json pools = nlohmann::json::array();
  for (const auto& p : s.huge) {
    if (p.page_size == 0) continue;
    pools.push_back({{"page_size", p.page_size},
                     {"total", p.total},
                     {"free", p.free},
                     {"reserved", p.reserved}});
  }
  return {
      {"kernel", s.kernel},
      {"page_size", s.page_size},
      {"cpus_online", s.cpus_online},
      {"memory_total", s.memory_total},
      {"memory_available", s.memory_available},
      {"hugetlb_pools", pools},
      {"thp",
       {{"enabled", pal::thp_mode_name(s.thp_enabled)},
        {"defrag", pal::thp_mode_name(s.thp_defrag)},
        {"shmem_enabled", s.thp_shmem}}},
      {"overcommit",
       {{"mode", s.overcommit_memory},
        {"name", overcommit_name(s.overcommit_memory)},
        {"ratio", s.overcommit_ratio}}},
      {"rseq", {{"registered", s.rseq_registered}, {"size", s.rseq_size}}},
      {"memfd", s.memfd_available},
      {"pagemap_frame_numbers", s.pagemap_pfn_readable},
      {"current_cpu", pal::current_cpu()},
  };
}

void print_text(const pal::SystemInfo& s) {
  fmt::print("mapheap info — what this machine offers\n\n");
  fmt::print("  {:<24}{}\n", "kernel", s.kernel);
  fmt::print("  {:<24}{}\n", "page size", human_size(s.page_size));
  fmt::print("  {:<24}{}\n", "CPUs online", s.cpus_online);
  fmt::print("  {:<24}{:.1f} GiB total, {:.1f} GiB available\n", "memory",
             static_cast<double>(s.memory_total) / (1u << 30),
             static_cast<double>(s.memory_available) / (1u << 30));
  bool any_pool = false;
  for (const auto& p : s.huge) {
    if (p.page_size == 0) continue;
    any_pool = true;
    fmt::print("  {:<24}{} total, {} free, {} reserved{}\n",
               fmt::format("hugetlb {} pages", human_size(p.page_size)), p.total, p.free,
               p.reserved, p.total == 0 ? "  (none reserved: hugetlb requests fall back)" : "");
  }
  if (!any_pool) fmt::print("  {:<24}{}\n", "hugetlb", "not offered by this kernel");
  fmt::print("  {:<24}enabled={} defrag={} shmem={}\n", "transparent huge pages",
             pal::thp_mode_name(s.thp_enabled), pal::thp_mode_name(s.thp_defrag),
             s.thp_shmem[0] != '\0' ? s.thp_shmem : "unknown");
  fmt::print("  {:<24}{} ({}), ratio {}%\n", "overcommit", s.overcommit_memory,
             overcommit_name(s.overcommit_memory), s.overcommit_ratio);
  fmt::print("  {:<24}{}\n", "rseq",
             s.rseq_registered
                 ? fmt::format("registered by the C library (area size {}): per-CPU caches "
                               "read cpu_id without a syscall",
                               s.rseq_size)
                 : std::string("not registered: per-thread caches will be used"));
  fmt::print("  {:<24}{}\n", "memfd_create", s.memfd_available ? "available" : "unavailable");
  fmt::print("  {:<24}{}\n", "pagemap frame numbers",
             s.pagemap_pfn_readable ? "readable" : "hidden (needs CAP_SYS_ADMIN)");
}

}  // namespace

void add_info(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "info", "Show what this machine offers: page sizes, huge pages, THP, rseq, overcommit");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print the data as JSON");
  cmd->callback([json, &exit_code] {
    const pal::SystemInfo s = pal::system_info();
    if (*json)
      fmt::print("{}\n", to_json(s).dump(2));
    else
      print_text(s);
    exit_code = kOk;
  });
}

}  // namespace mapheap::cli
