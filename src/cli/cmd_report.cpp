// `apot report RUN_DIR [RUN_DIR ...] --out report.html [--json]`: the training curves of runs and
// their models' per-layer statistics in one self-contained HTML page (docs/RESULTS.md shows how
// the study uses it). The per-layer statistics are probed once from each run's best checkpoint
// and kept beside it as layers.json.
#include <fmt/format.h>

#include <filesystem>

#include "apot/export/export.h"
#include "apot/report/report.h"
#include "apot/train/probe.h"
#include "commands.h"

namespace apot::cli {
namespace {
namespace fs = std::filesystem;

struct ReportOptions {
  std::vector<std::string> runs;
  std::string out, data;
  int images = 256;
  bool json = false, layers = true, reprobe = false;
};

// Writes DIR/layers.json from the run's best (else last) checkpoint unless it is newer than it.
void probe_run(const std::string& dir, const ReportOptions& o) {
  fs::path checkpoint = fs::path(dir) / "best.ckpt";
  if (!fs::exists(checkpoint)) checkpoint = fs::path(dir) / "last.ckpt";
  const fs::path layers = fs::path(dir) / "layers.json";
  if (!fs::exists(checkpoint)) return;
  if (!o.reprobe && fs::exists(layers) && fs::last_write_time(layers) >= fs::last_write_time(checkpoint)) return;
  const report::LayerReport r = train::probe_checkpoint(checkpoint.string(), o.data, o.images);
  const std::string text = report::to_json(r).dump() + "\n";
  exporter::write_file_atomically(layers.string(), std::vector<uint8_t>(text.begin(), text.end()));
}

void run_report(const ReportOptions& o) {
  if (o.out.empty() && !o.json) throw UsageError("report: give --out FILE.html, --json, or both");
  if (o.images < 1) throw UsageError("--images must be at least 1");
  std::vector<report::Run> runs;
  for (const std::string& dir : o.runs) {
    if (!fs::is_directory(dir)) throw report::ReportError(dir + ": not a run directory");
    if (o.layers) probe_run(dir, o);
    runs.push_back(report::read_run(dir));
  }
  if (!o.out.empty()) {
    const std::string html = report::report_html(runs);
    exporter::write_file_atomically(o.out, std::vector<uint8_t>(html.begin(), html.end()));
    if (!o.json)
      fmt::print("wrote {} ({} run{}, {} bytes)\n", o.out, runs.size(), runs.size() == 1 ? "" : "s", html.size());
  }
  if (o.json) fmt::print("{}\n", report::report_json(runs).dump());
}

}  // namespace

void register_report(CLI::App& app) {
  auto options = std::make_shared<ReportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "report", "Training curves and per-layer statistics of runs as one self-contained HTML page (and JSON)");
  cmd->add_option("runs", options->runs, "run directories (apot train --out)")->required();
  cmd->add_option("--out", options->out, "HTML file to write");
  cmd->add_flag("--json", options->json, "print the numbers behind the plots as one JSON object");
  cmd->add_option("--data", options->data, "data set of the per-layer probe (default: the run's own)");
  cmd->add_option("--images", options->images, "test images in the per-layer probe")->capture_default_str();
  cmd->add_flag("!--no-layers", options->layers, "training curves only: no per-layer statistics");
  cmd->add_flag("--reprobe", options->reprobe, "probe the layers again even where layers.json is up to date");
  cmd->callback([options] { run_report(*options); });
}

}  // namespace apot::cli
