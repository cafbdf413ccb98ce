// `apot report RUN_DIR [RUN_DIR ...] --out report.html [--json]`: the training curves of runs in
// one self-contained HTML page (docs/RESULTS.md shows how the study uses it).
#include <fmt/format.h>

#include "apot/export/export.h"
#include "apot/report/report.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct ReportOptions {
  std::vector<std::string> runs;
  std::string out;
  bool json = false;
};

void run_report(const ReportOptions& o) {
  if (o.out.empty() && !o.json) throw UsageError("report: give --out FILE.html, --json, or both");
  std::vector<report::Run> runs;
  for (const std::string& dir : o.runs) runs.push_back(report::read_run(dir));
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
  CLI::App* cmd = app.add_subcommand("report", "Training curves of runs as one self-contained HTML page (and JSON)");
  cmd->add_option("runs", options->runs, "run directories (apot train --out)")->required();
  cmd->add_option("--out", options->out, "HTML file to write");
  cmd->add_flag("--json", options->json, "print the numbers behind the plots as one JSON object");
  cmd->callback([options] { run_report(*options); });
}

}  // namespace apot::cli
