// `apot report`: one self-contained HTML file (plots inline as SVG, drawn by PLplot) and the
// numbers behind it as JSON, from training run directories (metrics.jsonl, summary.json).
// This first part draws the training curves: loss, train / validation / test top-1, learning
// rate, and every clipping threshold over the epochs, and compares several runs in a table.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace apot::report {

class ReportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Run {
  std::string dir, name;               // name: the directory's last component
  std::vector<nlohmann::json> epochs;  // metrics.jsonl, one object per epoch
  nlohmann::json summary;              // summary.json, or null for a run that has not finished
};

// Reads DIR/metrics.jsonl (required, at least one epoch) and DIR/summary.json (optional).
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
// An SVG document of the plot, drawn by PLplot's svg device.
std::string line_plot_svg(const LinePlot& plot);

// The plots of one run (loss, top-1, learning rate, alphas), in the report's order.
std::vector<LinePlot> run_plots(const Run& run);
// Every number behind the report: per run its summary and per-epoch metrics.
nlohmann::json report_json(const std::vector<Run>& runs);
// The whole HTML page.
std::string report_html(const std::vector<Run>& runs);

}  // namespace apot::report
