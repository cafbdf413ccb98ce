// `apot report`: one self-contained HTML file (plots inline as SVG, drawn by PLplot) and the
// numbers behind it as JSON, from training run directories (metrics.jsonl, summary.json,
// layers.json). Per run: loss, train / validation / test top-1, learning rate and every
// clipping threshold over the epochs; per layer (layers.h): histograms of the weights and
// inputs with the levels over them, level usage, SQNR, MACs, FixOPs and bytes. Several runs:
// a comparison table and top-1 against bit-width per quantiser kind.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "apot/report/layers.h"

namespace apot::report {

class ReportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Run {
  std::string dir, name;               // name: the directory's last component
  std::vector<nlohmann::json> epochs;  // metrics.jsonl, one object per epoch
  nlohmann::json summary;              // summary.json, or null for a run that has not finished
  std::optional<LayerReport> layers;   // layers.json (train::probe_checkpoint), if there
};

// Reads DIR/metrics.jsonl (required, at least one epoch), DIR/summary.json and DIR/layers.json
// (both optional).
Run read_run(const std::string& dir);

// A line plot: one line per series over the same kind of x values.
struct Series {
  std::string label;
  std::vector<double> x, y;
};
struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_y = false;
};
// The colours of the series, in order (CSS hex), as line_plot_svg draws them.
const std::vector<std::string>& series_colours();
// PLplot's SVG text made smaller without changing what it draws: whitespace, numbers to two
// decimals, runs of equally styled <polyline>s as one <path>.
std::string compact_svg(const std::string& svg);

// An SVG document of the plot, drawn by PLplot's svg device.
std::string line_plot_svg(const LinePlot& plot);

// A histogram (of what a quantiser sees) with the quantiser's levels drawn over it as lines.
struct HistogramPlot {
  std::string title, x_label;
  Histogram histogram;
  std::vector<float> levels;  // in the histogram's units
  bool log_y = false;
};
std::string histogram_svg(const HistogramPlot& plot);

// The plots of one run's training (loss, top-1, learning rate, alphas; no alphas for a
// full-precision run or thresholds that never moved), in the report's order.
std::vector<LinePlot> run_plots(const Run& run);
// Test top-1 (at the best validation epoch) against weight bits, one series per kind of the
// finished quantised runs, and full precision as a flat line; nullopt when fewer than two
// bit-widths were run.
std::optional<LinePlot> accuracy_by_bits(const std::vector<Run>& runs);
// Every number behind the report: per run its summary and per-epoch metrics.
nlohmann::json report_json(const std::vector<Run>& runs);
// The whole HTML page.
std::string report_html(const std::vector<Run>& runs);

}  // namespace apot::report
