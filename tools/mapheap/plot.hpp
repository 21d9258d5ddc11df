// tools/mapheap/plot.hpp — bar charts as PNG files, drawn by gnuplot.
//
// The benchmarks describe what to draw (panels of clustered bars); this helper
// writes the data and a gnuplot script to a private temporary directory and
// runs gnuplot through pal::spawn_wait (the CLI never forks or execs itself).
// gnuplot is a Debian package (gnuplot-nox, installed by scripts/deps.sh), not
// a build dependency: a benchmark checks for it before it starts measuring, so
// a user never waits minutes to learn that the plot cannot be drawn.
#pragma once

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

}  // namespace mapheap::cli
