// Run directories -> the report's plots, its JSON and its HTML page.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
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
  const fs::path layers = fs::path(dir) / "layers.json";
  if (fs::exists(layers)) {
    std::ifstream l(layers);
    json j;
    try {
      j = json::parse(l);
    } catch (const std::exception& e) {
      throw ReportError(layers.string() + ": " + e.what());
    }
    run.layers = layer_report_from_json(j);
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

// A training configuration value from summary.json, or for an unfinished run from layers.json.
std::string config_value(const Run& run, const char* key) {
  const json* config = nullptr;
  if (run.summary.is_object() && run.summary.contains("config")) {
    config = &run.summary["config"];
  } else if (run.layers && run.layers->config.is_object()) {
    config = &run.layers->config;
  }
  if (!config || !config->contains(key)) return "";
  const json& v = config->at(key);
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// The kind of quantiser, with "+ distillation" for a run that learnt from a teacher: such a run is
// a different recipe, so it gets its own line in the comparison rather than replacing its kind's point.
std::string kind_label(const Run& run) {
  const std::string kind = config_value(run, "quant.kind");
  const std::string teacher = config_value(run, "distill.teacher");
  return kind.empty() || teacher.empty() ? kind : kind + " + distillation";
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

// An inline <svg> element (without PLplot's XML prologue) in a figure with a caption.
std::string figure(const std::string& svg, const std::string& id, const std::string& caption_html) {
  return "<figure class=\"plot\" id=\"" + escape(id) + "\">" + svg.substr(svg.find("<svg")) + "<figcaption>" +
         caption_html + "</figcaption></figure>\n";
}

// A line plot with its legend as the caption.
std::string figure(const LinePlot& plot, const std::string& id) {
  std::ostringstream caption;
  const auto& colours = series_colours();
  for (size_t k = 0; k < plot.series.size(); ++k)
    caption << "<span class=\"key\"><span class=\"swatch\" style=\"background:" << colours[k % colours.size()]
            << "\"></span>" << escape(plot.series[k].label) << "</span> ";
  return figure(line_plot_svg(plot), id, caption.str());
}

bool constant(const Series& s) {
  for (double y : s.y)
    if (std::isfinite(y) && y != s.y.front()) return false;
  return true;
}

std::string percent(double fraction) { return fixed(100.0 * fraction, 1) + " %"; }

std::string db(double v) { return std::isfinite(v) ? fixed(v, 1) : (std::isnan(v) ? "" : "exact"); }

// A quantiser's histogram with its levels, and how often each level is hit as the caption.
std::string quantizer_figure(const QuantizerStats& q, const std::string& title, const std::string& x_label, bool log_y,
                             const std::string& id) {
  const std::string svg = histogram_svg({title, x_label, q.histogram, q.levels, log_y});
  std::ostringstream caption;
  caption << escape(q.level_set);
  if (q.alpha > 0) caption << ", alpha " << fixed(q.alpha, 3) << (q.per_channel ? " (mean of the channels')" : "");
  if (!q.levels.empty()) caption << ", clipped " << percent(q.clipped);
  if (std::isfinite(q.sqnr_db)) caption << ", SQNR " << db(q.sqnr_db) << " dB";
  if (!q.usage.empty()) {
    caption << "<br>level usage:";
    for (size_t k = 0; k < q.usage.size(); ++k)
      caption << " <span class=\"usage\">" << fixed(q.levels[k], 3) << ": "
              << percent(q.count ? double(q.usage[k]) / double(q.count) : 0) << "</span>";
  }
  return figure(svg, id, caption.str());
}

std::string layers_html(const LayerReport& r, const std::string& id) {
  std::ostringstream html;
  html << "<h3>Layers</h3>\n<p>" << escape(r.checkpoint) << " on " << r.images << " test images of " << escape(r.data)
       << ": " << fixed(r.total_fixops() / 1e6, 2) << " M FixOPs, " << fixed(r.total_size_bytes() / 1024.0, 1)
       << " KiB of weights.</p>\n<table class=\"layers\" id=\"" << id
       << "-table\"><tr><th>#</th><th>layer</th><th>quantisation</th><th>MACs</th><th>FixOPs</th>"
          "<th>weight bytes</th><th>weight SQNR (dB)</th><th>input SQNR (dB)</th><th>output SQNR (dB)</th>"
          "<th>levels used</th></tr>\n";
  LinePlot sqnr{"SQNR per layer",
                "layer number",
                "SQNR (dB)",
                {{"output", {}, {}}, {"weights", {}, {}}, {"input", {}, {}}},
                false};
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerStats& l = r.layers[i];
    const auto sqnr_of = [](const std::optional<QuantizerStats>& q) { return q ? q->sqnr_db : NAN; };
    std::string used;
    for (const auto* q : {&l.weight, &l.input}) {
      if (!*q || (*q)->usage.empty()) continue;
      const auto hit = std::count_if((*q)->usage.begin(), (*q)->usage.end(), [](int64_t n) { return n > 0; });
      used += (used.empty() ? "" : ", ") + std::string(q == &l.weight ? "w " : "a ") + std::to_string(hit) + "/" +
              std::to_string((*q)->usage.size());
    }
    html << "<tr><td>" << i + 1 << "</td><td>" << escape(l.name) << "</td><td>" << escape(l.quant) << "</td><td>"
         << l.macs << "</td><td>" << fixed(l.fixops, 0) << "</td><td>" << fixed(l.size_bytes, 0) << "</td><td>"
         << db(sqnr_of(l.weight)) << "</td><td>" << db(sqnr_of(l.input)) << "</td><td>" << db(l.output_sqnr_db)
         << "</td><td>" << used << "</td></tr>\n";
    const double values[3] = {l.output_sqnr_db, sqnr_of(l.weight), sqnr_of(l.input)};
    for (int k = 0; k < 3; ++k) {
      sqnr.series[size_t(k)].x.push_back(double(i + 1));
      sqnr.series[size_t(k)].y.push_back(values[k]);
    }
  }
  html << "</table>\n";
  const auto drawn = [](const Series& s) {
    return std::any_of(s.y.begin(), s.y.end(), [](double y) { return std::isfinite(y); });
  };
  if (std::any_of(sqnr.series.begin(), sqnr.series.end(), drawn)) html << figure(sqnr, id + "-sqnr");
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerStats& l = r.layers[i];
    const std::string at = id + "-layer" + std::to_string(i + 1);
    if (l.weight)
      html << quantizer_figure(*l.weight, l.name + ": weights",
                               l.weight->per_channel ? "normalised weight / alpha" : "normalised weight", false,
                               at + "-weight");
    if (l.input) html << quantizer_figure(*l.input, l.name + ": input", "activation", true, at + "-input");
  }
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
    // A full-precision run learns no thresholds: neither do runs whose thresholds never moved.
    const bool full_precision = config_value(run, "quant.kind") == "fp";
    for (LinePlot* p : {&act, &weight}) {
      const bool still = run.epochs.size() > 1 && std::all_of(p->series.begin(), p->series.end(), constant);
      if (!p->series.empty() && !full_precision && !still) plots.push_back(std::move(*p));
    }
  }
  return plots;
}

std::optional<LinePlot> accuracy_by_bits(const std::vector<Run>& runs) {
  std::map<std::string, std::map<int, double>> by_kind;  // kind -> weight bits -> test top-1
  std::set<int> bits;
  std::optional<double> full_precision;
  for (const Run& r : runs) {
    if (!r.summary.is_object()) continue;
    const double top1 = number(r.summary, "test_top1_at_best");
    const std::string kind = kind_label(r);
    if (!std::isfinite(top1) || kind.empty()) continue;
    if (kind == "fp") {
      full_precision = top1;
      continue;
    }
    const std::string b = config_value(r, "quant.weight_bits");
    if (b.empty()) continue;
    by_kind[kind][std::stoi(b)] = top1;
    bits.insert(std::stoi(b));
  }
  if (bits.size() < 2) return std::nullopt;
  LinePlot plot{"Test top-1 against bit-width", "weight and activation bits", "top-1 (%)", {}, false};
  for (const auto& [kind, points] : by_kind) {
    Series s{kind, {}, {}};
    for (const auto& [b, top1] : points) s.x.push_back(b), s.y.push_back(top1);
    plot.series.push_back(std::move(s));
  }
  if (full_precision)
    plot.series.push_back(
        {"full precision", {double(*bits.begin()), double(*bits.rbegin())}, {*full_precision, *full_precision}});
  return plot;
}

json report_json(const std::vector<Run>& runs) {
  json out = json::array();
  for (const Run& r : runs) {
    json j{{"name", r.name}, {"dir", r.dir}, {"summary", r.summary}, {"epochs", r.epochs}};
    if (r.layers) j["layers"] = to_json(*r.layers);
    out.push_back(std::move(j));
  }
  json j{{"runs", out}};
  if (const auto plot = accuracy_by_bits(runs)) {
    json series = json::array();
    for (const Series& s : plot->series) series.push_back({{"kind", s.label}, {"bits", s.x}, {"top1", s.y}});
    j["accuracy_by_bits"] = series;
  }
  return j;
}

std::string report_html(const std::vector<Run>& runs) {
  if (runs.empty()) throw ReportError("no runs to report");
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>apot report</title>\n<style>"
          "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
          "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
          ".plot{display:inline-block;margin:0 1em 1em 0;vertical-align:top}.plot svg{width:560px;height:auto}"
          ".key{margin-right:1em;font-size:0.85em;white-space:nowrap}"
          ".swatch{display:inline-block;width:1em;height:0.6em;margin-right:0.3em}"
          "figcaption{max-width:560px;font-size:0.85em}.usage{white-space:nowrap}</style></head><body>\n"
          "<h1>apot report</h1>\n<h2>Runs</h2>\n<table id=\"runs\"><tr><th>run</th><th>model</th><th>kind</th>"
          "<th>W/A bits</th><th>epochs</th><th>selected epoch</th><th>best validation top-1</th>"
          "<th>test top-1 at it</th><th>final test top-1</th><th>FixOPs (M)</th><th>weights (KiB)</th></tr>\n";
  for (const Run& r : runs) {
    const json& s = r.summary;
    const std::string kind = config_value(r, "quant.kind");
    html << "<tr><td>" << escape(r.name) << "</td><td>" << escape(config_value(r, "model.arch")) << "</td><td>"
         << escape(kind_label(r)) << "</td><td>"
         << (kind == "fp" ? "32/32"
                          : escape(config_value(r, "quant.weight_bits") + "/" + config_value(r, "quant.act_bits")))
         << "</td><td>" << r.epochs.size() << "</td><td>" << (s.is_object() ? fixed(number(s, "best_epoch"), 0) : "")
         << "</td><td>" << (s.is_object() ? fixed(number(s, "best_val_top1")) : "") << "</td><td>"
         << (s.is_object() ? fixed(number(s, "test_top1_at_best")) : "") << "</td><td>"
         << fixed(number(r.epochs.back(), "test_top1")) << (s.is_object() ? "" : " (running)") << "</td><td>"
         << (r.layers ? fixed(r.layers->total_fixops() / 1e6, 2) : "") << "</td><td>"
         << (r.layers ? fixed(r.layers->total_size_bytes() / 1024.0, 1) : "") << "</td></tr>\n";
  }
  html << "</table>\n";
  if (runs.size() > 1) {
    LinePlot test{"Test top-1 of every run", "epoch", "top-1 (%)", {}, false};
    for (const Run& r : runs) test.series.push_back(series_of(r, r.name, "test_top1"));
    html << figure(test, "compare-test-top1");
  }
  if (const auto plot = accuracy_by_bits(runs)) html << figure(*plot, "compare-bits");
  for (size_t i = 0; i < runs.size(); ++i) {
    html << "<h2>" << escape(runs[i].name) << "</h2>\n<p>" << escape(runs[i].dir) << "</p>\n";
    const std::vector<LinePlot> plots = run_plots(runs[i]);
    for (size_t p = 0; p < plots.size(); ++p)
      html << figure(plots[p], "run" + std::to_string(i) + "-plot" + std::to_string(p));
    if (runs[i].layers) html << layers_html(*runs[i].layers, "run" + std::to_string(i));
  }
  html << "</body></html>\n";
  return html.str();
}

}  // namespace apot::report
