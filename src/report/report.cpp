// Run directories -> the report's plots, its JSON and its HTML page.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apot/report/report.h"

namespace apot::report {
namespace fs = std::filesystem;
using nlohmann::json;

Run read_run(const std::string& dir) {
  if (!fs::is_directory(dir)) throw ReportError(dir + ": not a run directory");
  Run run;
  run.dir = dir;
  run.name = fs::path(dir).lexically_normal().filename().string();
  if (run.name.empty()) run.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  const std::string metrics = (fs::path(dir) / "metrics.jsonl").string();
  std::ifstream in(metrics);
  if (!in) throw ReportError(metrics + ": cannot open (is " + dir + " a training run directory?)");
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    try {
      json j = json::parse(line);
      if (!j.is_object() || !j.contains("epoch")) throw ReportError("not an epoch's metrics");
      run.epochs.push_back(std::move(j));
    } catch (const std::exception& e) {
      throw ReportError(metrics + ":" + std::to_string(line_number) + ": " + e.what());
    }
  }
  if (run.epochs.empty()) throw ReportError(metrics + ": no epoch finished yet");
  const fs::path summary = fs::path(dir) / "summary.json";
  if (fs::exists(summary)) {
    std::ifstream s(summary);
    try {
      run.summary = json::parse(s);
    } catch (const std::exception& e) {
      throw ReportError(summary.string() + ": " + e.what());
    }
  }
  return run;
}

namespace {

double number(const json& j, const char* key) {
  return j.contains(key) && j.at(key).is_number() ? j.at(key).get<double>() : NAN;
}

Series series_of(const Run& run, const std::string& label, const char* key) {
  Series s{label, {}, {}};
  for (const json& e : run.epochs) {
    s.x.push_back(number(e, "epoch"));
    s.y.push_back(number(e, key));
  }
  return s;
}

std::string config_value(const Run& run, const char* key) {
  if (!run.summary.is_object() || !run.summary.contains("config") || !run.summary["config"].contains(key)) return "";
  const json& v = run.summary["config"][key];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fixed(double v, int digits = 2) {
  if (!std::isfinite(v)) return "";
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(digits);
  s << v;
  return s.str();
}

// The plot as an inline <svg> element (without PLplot's XML prologue), and its legend.
std::string figure(const LinePlot& plot, const std::string& id) {
  const std::string svg = line_plot_svg(plot);
  std::ostringstream html;
  html << "<figure class=\"plot\" id=\"" << escape(id) << "\">" << svg.substr(svg.find("<svg"));
  html << "<figcaption>";
  const auto& colours = series_colours();
  for (size_t k = 0; k < plot.series.size(); ++k)
    html << "<span class=\"key\"><span class=\"swatch\" style=\"background:" << colours[k % colours.size()]
         << "\"></span>" << escape(plot.series[k].label) << "</span> ";
  html << "</figcaption></figure>\n";
  return html.str();
}

}  // namespace

std::vector<LinePlot> run_plots(const Run& run) {
  std::vector<LinePlot> plots;
  plots.push_back({"Loss",
                   "epoch",
                   "loss",
                   {series_of(run, "train loss", "train_loss"), series_of(run, "validation loss", "val_loss")},
                   false});
  plots.push_back({"Top-1",
                   "epoch",
                   "top-1 (%)",
                   {series_of(run, "train", "train_top1"), series_of(run, "validation", "val_top1"),
                    series_of(run, "test", "test_top1")},
                   false});
  plots.push_back({"Learning rate", "epoch", "learning rate (log10)", {series_of(run, "weights", "lr")}, true});
  // Clipping thresholds: one series per parameter, in the order of the last epoch's object.
  const json& last = run.epochs.back();
  if (last.contains("alphas") && last["alphas"].is_object() && !last["alphas"].empty()) {
    LinePlot act{"Activation clipping thresholds", "epoch", "alpha", {}, false};
    LinePlot weight{"Weight clipping thresholds", "epoch", "alpha", {}, false};
    for (const auto& item : last["alphas"].items()) {
      Series s{item.key().substr(0, item.key().rfind('.')), {}, {}};  // the layer's name
      for (const json& e : run.epochs) {
        s.x.push_back(number(e, "epoch"));
        s.y.push_back(e.contains("alphas") && e["alphas"].contains(item.key()) ? number(e["alphas"], item.key().c_str())
                                                                               : NAN);
      }
      const bool is_act = item.key().find("act_alpha") != std::string::npos;
      (is_act ? act : weight).series.push_back(std::move(s));
    }
    if (!act.series.empty()) plots.push_back(std::move(act));
    if (!weight.series.empty()) plots.push_back(std::move(weight));
  }
  return plots;
}

json report_json(const std::vector<Run>& runs) {
  json out = json::array();
  for (const Run& r : runs)
    out.push_back({{"name", r.name}, {"dir", r.dir}, {"summary", r.summary}, {"epochs", r.epochs}});
  return {{"runs", out}};
}

std::string report_html(const std::vector<Run>& runs) {
  if (runs.empty()) throw ReportError("no runs to report");
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>apot report</title>\n<style>"
          "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
          "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
          ".plot{display:inline-block;margin:0 1em 1em 0;vertical-align:top}.plot svg{width:560px;height:auto}"
          ".key{margin-right:1em;font-size:0.85em;white-space:nowrap}"
          ".swatch{display:inline-block;width:1em;height:0.6em;margin-right:0.3em}</style></head><body>\n"
          "<h1>apot report</h1>\n<h2>Runs</h2>\n<table id=\"runs\"><tr><th>run</th><th>model</th><th>kind</th>"
          "<th>W/A bits</th><th>epochs</th><th>selected epoch</th><th>best validation top-1</th>"
          "<th>test top-1 at it</th><th>final test top-1</th></tr>\n";
  for (const Run& r : runs) {
    const json& s = r.summary;
    const std::string kind = config_value(r, "quant.kind");
    html << "<tr><td>" << escape(r.name) << "</td><td>" << escape(config_value(r, "model.arch")) << "</td><td>"
         << escape(kind) << "</td><td>"
         << (kind == "fp" ? "32/32"
                          : escape(config_value(r, "quant.weight_bits") + "/" + config_value(r, "quant.act_bits")))
         << "</td><td>" << r.epochs.size() << "</td><td>" << (s.is_object() ? fixed(number(s, "best_epoch"), 0) : "")
         << "</td><td>" << (s.is_object() ? fixed(number(s, "best_val_top1")) : "") << "</td><td>"
         << (s.is_object() ? fixed(number(s, "test_top1_at_best")) : "") << "</td><td>"
         << fixed(number(r.epochs.back(), "test_top1")) << (s.is_object() ? "" : " (running)") << "</td></tr>\n";
  }
  html << "</table>\n";
  if (runs.size() > 1) {
    LinePlot test{"Test top-1 of every run", "epoch", "top-1 (%)", {}, false};
    for (const Run& r : runs) test.series.push_back(series_of(r, r.name, "test_top1"));
    html << figure(test, "compare-test-top1");
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    html << "<h2>" << escape(runs[i].name) << "</h2>\n<p>" << escape(runs[i].dir) << "</p>\n";
    const std::vector<LinePlot> plots = run_plots(runs[i]);
    for (size_t p = 0; p < plots.size(); ++p)
      html << figure(plots[p], "run" + std::to_string(i) + "-plot" + std::to_string(p));
  }
  html << "</body></html>\n";
  return html.str();
}

}  // namespace apot::report
