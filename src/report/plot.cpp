// Line plots through PLplot (Debian's libplplot-dev): its svg device writes a file, which is read
// back as text. PLplot keeps global state, so plots are drawn one at a time.
#include <plplot/plplot.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>

#include "apot/report/report.h"

namespace apot::report {
namespace {

std::mutex plplot_mutex;

// Colour map 0: index 0 the background (white), 1 the axes and labels (black), then the series.
const int kSeriesColours[][3] = {{31, 119, 180}, {214, 39, 40},   {44, 160, 44},   {255, 127, 14}, {148, 103, 189},
                                 {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
constexpr int kColourCount = int(sizeof kSeriesColours / sizeof kSeriesColours[0]);

}  // namespace

const std::vector<std::string>& series_colours() {
  static const std::vector<std::string> colours = [] {
    std::vector<std::string> out;
    for (const auto& c : kSeriesColours) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "#%02x%02x%02x", c[0], c[1], c[2]);
      out.push_back(hex);
    }
    return out;
  }();
  return colours;
}

namespace {

struct Axes {
  double x0, x1, y0, y1;
  int axis = 0;  // plenv's: 0 plain, 20 log y (plenv 10 = log x, 20 = log y)
};

// Opens PLplot's svg device on a temporary file, draws the axes, labels and `body`, and returns
// the file's text.
template <typename Body>
std::string draw_svg(const std::string& title, const std::string& x_label, const std::string& y_label, const Axes& axes,
                     Body body) {
  std::lock_guard<std::mutex> lock(plplot_mutex);
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("apot-plot-" + std::to_string(::getpid()) + ".svg");
  PLINT r[kColourCount + 2], g[kColourCount + 2], b[kColourCount + 2];
  r[0] = g[0] = b[0] = 255;
  r[1] = g[1] = b[1] = 0;
  for (int i = 0; i < kColourCount; ++i) {
    r[i + 2] = kSeriesColours[i][0];
    g[i + 2] = kSeriesColours[i][1];
    b[i + 2] = kSeriesColours[i][2];
  }
  plsdev("svg");
  plsfnam(file.c_str());
  plspage(0, 0, 560, 340, 0, 0);
  plscmap0(r, g, b, kColourCount + 2);
  plinit();
  plcol0(1);
  plschr(0, 0.9);
  plenv(axes.x0, axes.x1, axes.y0, axes.y1, 0, axes.axis);
  pllab(x_label.c_str(), y_label.c_str(), title.c_str());
  body();
  plend();
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  std::error_code ignored;
  std::filesystem::remove(file, ignored);
  if (text.str().find("<svg") == std::string::npos) throw ReportError(title + ": PLplot wrote no SVG");
  return compact_svg(text.str());
}

// The value of attribute `name` in one element's text, or nullopt.
std::optional<std::string> attribute(std::string_view element, std::string_view name) {
  const std::string key = " " + std::string(name) + "=\"";
  const size_t at = element.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  const size_t begin = at + key.size(), end = element.find('"', begin);
  if (end == std::string_view::npos) return std::nullopt;
  return std::string(element.substr(begin, end - begin));
}

// Numbers in attribute values (between double quotes; `quoted` says whether the text starts
// inside one) written with more than two decimals (PLplot writes six) keep two: a hundredth of
// a point is far below a pixel. Text between elements (tick labels) is left as it is.
std::string two_decimals(std::string_view text, bool quoted = false) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    out += c;
    ++i;
    if (c == '"') {
      quoted = !quoted;
    } else if (quoted && c == '.' && i > 1 && std::isdigit(static_cast<unsigned char>(text[i - 2]))) {
      for (int kept = 0; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i)
        if (kept++ < 2) out += text[i];
    }
  }
  return out;
}

}  // namespace

std::string compact_svg(const std::string& text) {
  // PLplot puts every attribute on a line of its own: one space instead.
  std::string svg;
  svg.reserve(text.size());
  bool in_break = false;
  for (char c : text) {
    if (c == '\n') {
      in_break = true;
    } else if (in_break && c == ' ') {
      continue;
    } else {
      if (in_break) svg += ' ';
      in_break = false;
      svg += c;
    }
  }
  // PLplot draws every tick, bar edge and line as a <polyline> of its own with the same stroke
  // attributes: consecutive ones with equal attributes become one <path> (each polyline a
  // subpath, in order, so nothing is painted differently), and opacities of 1 are left out.
  std::string out;
  out.reserve(svg.size() / 2);
  std::string style, path;  // the open path's attributes and its data
  auto close_path = [&] {
    if (!path.empty()) out += "<path" + style + " fill=\"none\" d=\"" + path + "\"/>";
    path.clear();
  };
  size_t i = 0;
  while (i < svg.size()) {
    const size_t at = svg.find("<polyline ", i);
    const size_t end = at == std::string::npos ? std::string::npos : svg.find("/>", at);
    if (end == std::string::npos) break;
    const std::string_view between(svg.data() + i, at - i);
    if (between.find_first_not_of(' ') != std::string_view::npos) close_path(), out += two_decimals(between);
    const std::string_view element(svg.data() + at, end + 2 - at);
    const auto width = attribute(element, "stroke-width"), colour = attribute(element, "stroke"),
               opacity = attribute(element, "stroke-opacity"), fill = attribute(element, "fill"),
               points = attribute(element, "points");
    if (!width || !colour || !points || (fill && *fill != "none")) {  // not one of PLplot's plain lines
      close_path();
      out += two_decimals(element);
      i = end + 2;
      continue;
    }
    std::string this_style =
        " stroke-width=\"" + two_decimals(std::to_string(std::stod(*width)), true) + "\" stroke=\"" + *colour + "\"";
    if (opacity && std::stod(*opacity) != 1.0) this_style += " stroke-opacity=\"" + *opacity + "\"";
    if (this_style != style) close_path(), style = this_style;
    std::string p = two_decimals(*points, true);
    while (!p.empty() && p.back() == ' ') p.pop_back();
    path += "M" + p;
    i = end + 2;
  }
  close_path();
  out += two_decimals(std::string_view(svg).substr(std::min(i, svg.size())));
  return out;
}

namespace {

// A y range with a margin, or [0, 1] when there is nothing to draw.
void pad_y(double& y0, double& y1) {
  if (!(y0 <= y1)) y0 = 0, y1 = 1;
  const double pad = (y1 - y0) < 1e-12 ? 0.5 : 0.05 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
}

}  // namespace

std::string line_plot_svg(const LinePlot& plot) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& s : plot.series) {
    if (s.x.size() != s.y.size())
      throw ReportError(plot.title + ": a series with " + std::to_string(s.x.size()) + " x values and " +
                        std::to_string(s.y.size()) + " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double y = plot.log_y ? std::log10(std::max(s.y[i], 1e-12)) : s.y[i];
      if (!std::isfinite(s.x[i]) || !std::isfinite(y)) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  if (!(x0 <= x1)) x0 = 0, x1 = 1;  // nothing to draw: empty axes
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  const double x_pad = 0.03 * (x1 - x0);  // the first and last points' markers inside the frame
  x0 -= x_pad;
  x1 += x_pad;
  pad_y(y0, y1);
  return draw_svg(plot.title, plot.x_label, plot.y_label, {x0, x1, y0, y1, plot.log_y ? 20 : 0}, [&] {
    for (size_t k = 0; k < plot.series.size(); ++k) {
      const Series& s = plot.series[k];
      std::vector<PLFLT> x, y;
      for (size_t i = 0; i < s.x.size(); ++i) {
        const double v = plot.log_y ? std::log10(std::max(s.y[i], 1e-12)) : s.y[i];
        if (!std::isfinite(s.x[i]) || !std::isfinite(v)) continue;
        x.push_back(s.x[i]);
        y.push_back(v);
      }
      plcol0(PLINT(2 + k % kColourCount));
      plwidth(2.0);
      if (x.size() > 1) plline(PLINT(x.size()), x.data(), y.data());
      // A small cross per point, as lines (PLplot's symbols are a text element each in SVG).
      const double dx = 0.006 * (x1 - x0), dy = 0.01 * (y1 - y0);
      for (size_t i = 0; i < x.size(); ++i) {
        pljoin(x[i] - dx, y[i], x[i] + dx, y[i]);
        pljoin(x[i], y[i] - dy, x[i], y[i] + dy);
      }
    }
  });
}

std::string histogram_svg(const HistogramPlot& plot) {
  const Histogram& h = plot.histogram;
  if (h.counts.empty() || !(h.lo < h.hi)) throw ReportError(plot.title + ": an empty histogram");
  const size_t bins = h.counts.size();
  const double width = (h.hi - h.lo) / double(bins);
  std::vector<PLFLT> x(bins), y(bins);
  double y1 = 0;
  for (size_t i = 0; i < bins; ++i) {
    x[i] = h.lo + width * double(i);
    y[i] = plot.log_y ? std::log10(1.0 + double(h.counts[i])) : double(h.counts[i]);
    y1 = std::max(y1, y[i]);
  }
  double y0 = 0;
  pad_y(y0, y1);
  y0 = 0;
  return draw_svg(plot.title, plot.x_label, plot.log_y ? "count (log10 of 1 + n)" : "count", {h.lo, h.hi, y0, y1, 0},
                  [&] {
                    plcol0(2);
                    plwidth(1.0);
                    plbin(PLINT(bins), x.data(), y.data(), PL_BIN_NOEXPAND);
                    plcol0(3);  // the levels the quantiser projects to
                    plwidth(1.5);
                    for (float level : plot.levels) pljoin(level, y0, level, y1);
                  });
}

}  // namespace apot::report
