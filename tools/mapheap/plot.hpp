// tools/mapheap/plot.hpp — bar charts as PNG files, drawn by gnuplot.
//
// The benchmarks describe what to draw (panels of clustered bars); this helper
// writes the data and a gnuplot script to a private temporary directory and
// runs gnuplot through pal::spawn_wait (the CLI never forks or execs itself).
// gnuplot is a Debian package (gnuplot-nox, installed by scripts/deps.sh), not
// a build dependency: a benchmark checks for it before it starts measuring, so
// a user never waits minutes to learn that the plot cannot be drawn.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace mapheap::cli {

// One panel: groups along the x axis, one bar per series inside each group.
struct BarChart {
  std::string title;
  std::string ylabel;
  std::vector<std::string> groups;          // x categories, e.g. block sizes
  std::vector<std::string> series;          // e.g. methods; one colour each
  std::vector<std::vector<double>> values;  // [series][group]; NaN draws no bar
  bool log_y = false;                       // for quantities spanning decades
  std::vector<double> reference_lines;      // dashed horizontal lines at these y values
  // One "#rrggbb" per series, so that a method keeps its colour across panels;
  // empty: gnuplot's default sequence.
  std::vector<std::string> colors;
};

// Throws mapheap::error with code ENOENT and a message that names the package
// to install when gnuplot cannot be run. Callers map that to exit code
// kUnavailable.
void check_gnuplot();

// Draws the panels (two per row) into one PNG at png_path, creating its parent
// directories. `title` heads the whole image. Throws mapheap::error when the
// charts are malformed (EINVAL), gnuplot is missing (ENOENT) or fails (EIO).
void write_png(const std::vector<BarChart>& panels, const std::string& png_path,
               const std::string& title = {});

// The plumbing every picture shares (bar charts here, `mapheap map`'s page
// map in heap_cmds.cpp).

// A gnuplot single-quoted string (everything literal but a doubled quote).
std::string gp_quote(const std::string& s);

// A private scratch directory under the system's temporary directory,
// removed with everything in it when the object goes.
class ScratchDir {
 public:
  ScratchDir();  // throws mapheap::error (EIO) if none can be made
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Creates png_path (and its parent directories) so that gnuplot cannot fall
// back to writing the image to our standard output; throws EACCES if it cannot.
void prepare_png(const std::string& png_path);

// Writes `script` into `dir`, runs gnuplot on it, and checks that png_path
// holds a PNG image. Throws mapheap::error naming what failed (ENOENT with the
// package to install when gnuplot is missing).
void run_gnuplot(const std::string& script, const ScratchDir& dir, const std::string& png_path);

}  // namespace mapheap::cli
