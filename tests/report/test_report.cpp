// apot report's library on synthetic run directories: what it reads, the plots it draws (real
// SVG from PLplot, one per figure), the JSON behind them, and its errors.
#include "apot/report/report.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("apot-report-test-" + std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// A run of `epochs` epochs with two clipping thresholds; finished runs have a summary.
fs::path make_run(const fs::path& root, const std::string& name, int epochs, bool finished) {
  const fs::path dir = root / name;
  fs::create_directories(dir);
  std::ofstream m(dir / "metrics.jsonl");
  for (int e = 1; e <= epochs; ++e)
    m << json{{"epoch", e},
              {"train_loss", 1.0 / e},
              {"val_loss", 1.1 / e},
              {"train_top1", 80.0 + e},
              {"val_top1", 79.0 + e},
              {"test_top1", 78.0 + e},
              {"lr", 0.1 / e},
              {"alphas",
               {{"layer1.0.conv1.act_alpha", 8.0 - 0.1 * e}, {"layer1.0.conv1.weight_alpha", 3.0 + 0.01 * e}}}}
             .dump()
      << "\n";
  if (finished)
    std::ofstream(dir / "summary.json") << json{
        {"best_epoch", epochs},
        {"best_val_top1", 79.0 + epochs},
        {"test_top1_at_best", 78.0 + epochs},
        {"config",
         {{"quant.kind", "apot"},
          {"quant.weight_bits", 4},
          {"quant.act_bits", 4},
          {"model.arch", "resnet20"}}}}.dump();
  return dir;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(Report, ReadsARunAndDrawsItsCurves) {
  TempDir tmp;
  const auto run = apot::report::read_run(make_run(tmp.path, "w4", 3, true).string());
  EXPECT_EQ(run.name, "w4");
  ASSERT_EQ(run.epochs.size(), 3u);
  const auto plots = apot::report::run_plots(run);
  ASSERT_EQ(plots.size(), 5u);  // loss, top-1, learning rate, activation and weight alphas
  EXPECT_EQ(plots[1].series.size(), 3u);
  EXPECT_EQ(plots[1].series[2].y, (std::vector<double>{79, 80, 81}));
  EXPECT_EQ(plots[3].series.at(0).label, "layer1.0.conv1");
  const std::string svg = apot::report::line_plot_svg(plots[1]);
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  std::string title;  // PLplot writes text as character references
  for (char c : std::string("Top-1")) {
    char ref[16];
    std::snprintf(ref, sizeof ref, "&#x%x;", unsigned(c));
    title += ref;
  }
  EXPECT_NE(svg.find(title), std::string::npos);
  EXPECT_GE(count(svg, "<polyline") + count(svg, "<path"), 3u);
}

TEST(Report, HtmlHasEveryPlotAndTheRunsTableAndJsonHasEveryNumber) {
  TempDir tmp;
  std::vector<apot::report::Run> runs{apot::report::read_run(make_run(tmp.path, "apot-w4", 4, true).string()),
                                      apot::report::read_run(make_run(tmp.path, "uniform-w4", 2, false).string())};
  const std::string html = apot::report::report_html(runs);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count(html, "<svg"), 1u + 5u + 5u);  // the comparison, then five per run
  EXPECT_EQ(count(html, "<figure"), 11u);
  EXPECT_EQ(html.find("<?xml"), std::string::npos);  // inline SVG, no XML prologue inside HTML
  EXPECT_NE(html.find("<td>apot-w4</td><td>resnet20</td><td>apot</td><td>4/4</td><td>4</td><td>4</td>"),
            std::string::npos);
  EXPECT_NE(html.find("(running)"), std::string::npos);  // the run without a summary
  const json j = apot::report::report_json(runs);
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][0]["epochs"][3]["test_top1"], 82.0);
  EXPECT_TRUE(j["runs"][1]["summary"].is_null());
}

TEST(Report, BadRunDirectoriesFailWithOneLine) {
  TempDir tmp;
  auto error = [](const std::string& dir) {
    try {
      apot::report::read_run(dir);
    } catch (const apot::report::ReportError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error((tmp.path / "none").string()).find("not a run directory"), std::string::npos);
  fs::create_directories(tmp.path / "empty");
  EXPECT_NE(error((tmp.path / "empty").string()).find("metrics.jsonl: cannot open"), std::string::npos);
  std::ofstream(tmp.path / "empty" / "metrics.jsonl");
  EXPECT_NE(error((tmp.path / "empty").string()).find("no epoch finished yet"), std::string::npos);
  std::ofstream(tmp.path / "empty" / "metrics.jsonl") << "{\"epoch\": 1}\n{not json\n";
  const std::string bad = error((tmp.path / "empty").string());
  EXPECT_NE(bad.find("metrics.jsonl:2:"), std::string::npos) << bad;
  EXPECT_EQ(bad.find('\n'), std::string::npos);
  EXPECT_THROW(apot::report::report_html({}), apot::report::ReportError);
}

// A finished run of one epoch with a configuration and a test top-1; its thresholds never move.
apot::report::Run finished_run(const std::string& kind, int bits, double top1) {
  apot::report::Run run;
  run.dir = run.name = kind + std::to_string(bits);
  run.epochs = {json{{"epoch", 1}, {"test_top1", top1}, {"alphas", {{"l.act_alpha", 8.0}}}},
                json{{"epoch", 2}, {"test_top1", top1}, {"alphas", {{"l.act_alpha", 8.0}}}}};
  run.summary = {{"test_top1_at_best", top1},
                 {"config", {{"quant.kind", kind}, {"quant.weight_bits", bits}, {"quant.act_bits", bits}}}};
  return run;
}

TEST(Report, AccuracyAgainstBitsHasALinePerKindAndFullPrecisionFlat) {
  const std::vector<apot::report::Run> runs{finished_run("fp", 4, 90), finished_run("apot", 4, 89),
                                            finished_run("apot", 2, 85), finished_run("uniform", 3, 86),
                                            finished_run("uniform", 4, 88.5)};
  const auto plot = apot::report::accuracy_by_bits(runs);
  ASSERT_TRUE(plot.has_value());
  ASSERT_EQ(plot->series.size(), 3u);
  EXPECT_EQ(plot->series[0].label, "apot");
  EXPECT_EQ(plot->series[0].x, (std::vector<double>{2, 4}));
  EXPECT_EQ(plot->series[0].y, (std::vector<double>{85, 89}));
  EXPECT_EQ(plot->series[2].label, "full precision");
  EXPECT_EQ(plot->series[2].x, (std::vector<double>{2, 4}));
  EXPECT_EQ(plot->series[2].y, (std::vector<double>{90, 90}));
  EXPECT_TRUE(apot::report::report_json(runs).contains("accuracy_by_bits"));
  EXPECT_NE(apot::report::report_html(runs).find("id=\"compare-bits\""), std::string::npos);
  EXPECT_FALSE(apot::report::accuracy_by_bits({finished_run("apot", 4, 89)}).has_value());
}

TEST(Report, ADistilledRunIsItsOwnLineAndNamedSoInTheTable) {
  apot::report::Run distilled = finished_run("apot", 3, 87);
  distilled.summary["config"]["distill.teacher"] = "runs/fp/best.ckpt";
  apot::report::Run plain = finished_run("apot", 3, 86);
  plain.summary["config"]["distill.teacher"] = "";  // as a summary.json of a run without a teacher has it
  const std::vector<apot::report::Run> runs{finished_run("apot", 4, 89), plain, distilled};
  const auto plot = apot::report::accuracy_by_bits(runs);
  ASSERT_TRUE(plot.has_value());
  ASSERT_EQ(plot->series.size(), 2u);
  EXPECT_EQ(plot->series[0].label, "apot");
  EXPECT_EQ(plot->series[0].y, (std::vector<double>{86, 89}));  // the plain W3A3 run, not the distilled one
  EXPECT_EQ(plot->series[1].label, "apot + distillation");
  EXPECT_EQ(plot->series[1].y, (std::vector<double>{87}));
  EXPECT_NE(apot::report::report_html(runs).find("<td>apot + distillation</td>"), std::string::npos);
}

TEST(Report, ThresholdsThatNeverMovedAreNotPlotted) {
  EXPECT_EQ(apot::report::run_plots(finished_run("fp", 32, 90)).size(), 3u);   // loss, top-1, learning rate
  EXPECT_EQ(apot::report::run_plots(finished_run("apot", 4, 90)).size(), 3u);  // alpha 8 at both epochs
  apot::report::Run one_epoch = finished_run("apot", 4, 90);
  one_epoch.epochs.pop_back();
  EXPECT_EQ(apot::report::run_plots(one_epoch).size(), 4u);  // one epoch: nothing to compare yet
}

}  // namespace
