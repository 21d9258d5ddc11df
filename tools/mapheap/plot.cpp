// tools/mapheap/plot.cpp — BarChart panels to PNG through a gnuplot script.
#include "plot.hpp"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include <fmt/core.h>

#include "mapheap/error.hpp"
#include "pal/pal.hpp"

namespace mapheap::cli {

namespace {

namespace fs = std::filesystem;

constexpr int kPanelWidth = 720;
constexpr int kPanelHeight = 430;

std::string pal_message(const pal::Error& e) {
  char buf[512];
  e.format(buf, sizeof(buf));
  return buf;
}

// Labels in the data file are double-quoted columns; gnuplot has no escape for
// a double quote there, so one becomes a single quote.
std::string data_label(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += (c == '"' || c == '\n') ? '\'' : c;
  out += '"';
  return out;
}

void validate(const std::vector<BarChart>& panels) {
  if (panels.empty()) throw mapheap::error(EINVAL, "mapheap: nothing to plot (no panels)");
  for (const BarChart& c : panels) {
    bool shape_ok = !c.groups.empty() && !c.series.empty() && c.values.size() == c.series.size() &&
                    (c.colors.empty() || c.colors.size() == c.series.size());
    for (const auto& col : c.colors)
      shape_ok = shape_ok && col.size() == 7 && col[0] == '#' &&
                 col.find_first_not_of("0123456789abcdefABCDEF", 1) == std::string::npos;
    for (const auto& row : c.values) shape_ok = shape_ok && row.size() == c.groups.size();
    if (!shape_ok)
      throw mapheap::error(EINVAL,
                           fmt::format("mapheap: plot panel '{}' is malformed: {} series x {} "
                                       "groups, but values is not [series][group] (or a colour "
                                       "is not #rrggbb)",
                                       c.title, c.series.size(), c.groups.size()));
  }
}

void write_data(const BarChart& c, const fs::path& file) {
  std::ofstream out(file);
  out << data_label("group");
  for (const auto& s : c.series) out << ' ' << data_label(s);
  out << '\n';
  for (std::size_t g = 0; g < c.groups.size(); ++g) {
    out << data_label(c.groups[g]);
    for (std::size_t s = 0; s < c.series.size(); ++s) {
      const double v = c.values[s][g];
      // A non-positive value has no bar on a log axis; NaN makes gnuplot skip it.
      if (!std::isfinite(v) || (c.log_y && v <= 0))
        out << " NaN";
      else
        out << ' ' << fmt::format("{:.6g}", v);
    }
    out << '\n';
  }
  if (!out) throw mapheap::error(EIO, fmt::format("mapheap: cannot write '{}'", file.string()));
}

std::string make_script(const std::vector<BarChart>& panels, const std::vector<fs::path>& data,
                        const std::string& png_path, const std::string& title) {
  const std::size_t cols = panels.size() == 1 ? 1 : 2;
  const std::size_t rows = (panels.size() + cols - 1) / cols;
  const int width = kPanelWidth * static_cast<int>(cols);
  const int height = kPanelHeight * static_cast<int>(rows) + (title.empty() ? 0 : 30);

  std::string s;
  // pngcairo draws anti-aliased text; the libgd `png` terminal is the fallback
  // that every gnuplot build has. noenhanced: labels like "mmap+huge" or
  // "4K_x" must not be read as markup.
  s += "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n";
  s += fmt::format("  set terminal pngcairo noenhanced size {},{} font 'Sans,10'\n", width, height);
  s += "} else {\n";
  s += fmt::format("  set terminal png noenhanced size {},{}\n", width, height);
  s += "}\n";
  s += fmt::format("set output {}\n", gp_quote(png_path));
  s += "set datafile missing 'NaN'\n";
  s += "set style data histograms\n";
  s += "set style histogram clustered gap 1\n";
  s += "set style fill solid 0.85 border -1\n";
  s += "set boxwidth 0.9 relative\n";
  s += "set grid ytics\n";
  s += "set key outside right top vertical Left reverse noautotitle\n";
  s += "set xtics nomirror\n";
  s += "set tics out\n";
  s += fmt::format("set multiplot layout {},{} rowsfirst{}\n", rows, cols,
                   title.empty() ? std::string() : " title " + gp_quote(title));
  for (std::size_t i = 0; i < panels.size(); ++i) {
    const BarChart& c = panels[i];
    s += fmt::format("set title {}\n", gp_quote(c.title));
    s += fmt::format("set ylabel {}\n", gp_quote(c.ylabel));
    // Many groups in one panel: slanted labels instead of overlapping ones.
    s += c.groups.size() > 6 ? "set xtics rotate by 30 right\n" : "set xtics norotate\n";
    if (c.log_y)
      s += "set logscale y 10\nset yrange [*:*]\n";
    else
      s += "unset logscale y\nset yrange [0:*]\n";
    for (double y : c.reference_lines)
      s += fmt::format(
          "set arrow from graph 0, first {:.6g} to graph 1, first {:.6g} nohead "
          "dashtype 2 linecolor rgb 'gray30' front\n",
          y, y);
    std::string colour;
    if (!c.colors.empty()) {
      std::string words;
      for (const auto& col : c.colors) words += (words.empty() ? "" : " ") + col;
      s += fmt::format("colours = {}\n", gp_quote(words));
      colour = " linecolor rgb word(colours, i-1)";
    }
    s += fmt::format("plot for [i=2:{}] {} using i:xtic(1) title columnheader(i){}\n",
                     c.series.size() + 1, gp_quote(data[i].string()), colour);
    s += "unset arrow\n";
  }
  s += "unset multiplot\n";
  s += "set output\n";
  return s;
}

bool has_png_signature(const std::string& path) {
  static constexpr unsigned char kSig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::ifstream in(path, std::ios::binary);
  unsigned char head[8] = {};
  in.read(reinterpret_cast<char*>(head), sizeof(head));
  if (in.gcount() != sizeof(head)) return false;
  for (std::size_t i = 0; i < sizeof(head); ++i)
    if (head[i] != kSig[i]) return false;
  return true;
}

}  // namespace

void check_gnuplot() {
  static const char* const argv[] = {"gnuplot", "-e", "exit", nullptr};
  auto r = pal::spawn_wait(argv);
  if (!r && r.error().code == ENOENT)
    throw mapheap::error(ENOENT,
                         "mapheap: cannot draw the plot: gnuplot is not installed (install the "
                         "Debian package gnuplot-nox, e.g. with scripts/deps.sh)",
                         "gnuplot", 0, "spawn");
  if (!r)
    throw mapheap::error(r.error().code, "mapheap: cannot run gnuplot: " + pal_message(r.error()),
                         "gnuplot", 0, "spawn");
  if (r.value() != 0)
    throw mapheap::error(EIO,
                         fmt::format("mapheap: gnuplot does not work here (`gnuplot -e exit` "
                                     "exited with status {})",
                                     r.value()),
                         "gnuplot", 0, "spawn");
}

void write_png(const std::vector<BarChart>& panels, const std::string& png_path,
               const std::string& title) {
  validate(panels);

  prepare_png(png_path);

  ScratchDir dir;
  std::vector<fs::path> data;
  for (std::size_t i = 0; i < panels.size(); ++i) {
    data.push_back(dir.path() / fmt::format("panel{}.dat", i));
    write_data(panels[i], data.back());
  }
  run_gnuplot(make_script(panels, data, png_path, title), dir, png_path);
}

std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

ScratchDir::ScratchDir() {
  const fs::path base = fs::temp_directory_path();
  for (unsigned attempt = 0; attempt < 100; ++attempt) {
    fs::path p = base / fmt::format("mapheap-plot-{}-{}", pal::process_id(), attempt);
    std::error_code ec;
    if (fs::create_directory(p, ec)) {
      path_ = p;
      return;
    }
    if (ec) break;
  }
  throw mapheap::error(EIO,
                       fmt::format("mapheap: cannot create a scratch directory for the "
                                   "plot under '{}'",
                                   base.string()),
                       base.string());
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void prepare_png(const std::string& png_path) {
  if (png_path.empty()) throw mapheap::error(EINVAL, "mapheap: the PNG path is empty");
  const fs::path out_path(png_path);
  std::error_code ec;
  if (out_path.has_parent_path()) fs::create_directories(out_path.parent_path(), ec);
  std::ofstream probe(out_path, std::ios::binary | std::ios::trunc);
  if (!probe)
    throw mapheap::error(EACCES,
                         fmt::format("mapheap: cannot write the plot to '{}' (cannot create "
                                     "the file{})",
                                     png_path, ec ? ": " + ec.message() : std::string()),
                         png_path);
}

void run_gnuplot(const std::string& text, const ScratchDir& dir, const std::string& png_path) {
  const fs::path script = dir.path() / "plot.gp";
  {
    std::ofstream out(script);
    out << text;
    if (!out) throw mapheap::error(EIO, fmt::format("mapheap: cannot write '{}'", script.string()));
  }
  const std::string script_str = script.string();
  const char* const argv[] = {"gnuplot", script_str.c_str(), nullptr};
  auto r = pal::spawn_wait(argv);
  if (!r) {
    if (r.error().code == ENOENT) check_gnuplot();  // throws the message naming the package
    throw mapheap::error(r.error().code, "mapheap: cannot run gnuplot: " + pal_message(r.error()),
                         "gnuplot", 0, "spawn");
  }
  if (r.value() != 0)
    throw mapheap::error(EIO,
                         fmt::format("mapheap: gnuplot failed (exit status {}) drawing '{}'; its "
                                     "messages are above",
                                     r.value(), png_path),
                         png_path, 0, "spawn");
  if (!has_png_signature(png_path))
    throw mapheap::error(
        EIO, fmt::format("mapheap: gnuplot did not write a PNG image to '{}'", png_path), png_path);
}

}  // namespace mapheap::cli
