// The maths of the per-layer statistics (histograms, level usage, SQNR) and their JSON form.
#include "apot/report/layers.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "apot/report/report.h"

namespace apot::report {
using nlohmann::json;

Histogram make_histogram(const std::vector<float>& values, double lo, double hi, int bins) {
  if (bins < 1 || !(lo < hi)) throw std::invalid_argument("histogram: need bins >= 1 and lo < hi");
  Histogram h{lo, hi, std::vector<int64_t>(size_t(bins), 0), 0, 0};
  const double scale = bins / (hi - lo);
  for (float v : values) {
    if (!std::isfinite(v)) continue;
    if (v < lo) {
      ++h.below;
    } else if (v > hi) {
      ++h.above;
    } else {
      h.counts[size_t(std::min<double>(bins - 1, std::floor((v - lo) * scale)))]++;
    }
  }
  return h;
}

std::vector<int64_t> level_usage(const std::vector<float>& quantized, const std::vector<float>& levels) {
  std::vector<int64_t> usage(levels.size(), 0);
  if (levels.empty()) return usage;
  for (float v : quantized) {
    if (!std::isfinite(v)) continue;
    const auto above = std::lower_bound(levels.begin(), levels.end(), v);
    size_t k = size_t(above - levels.begin());
    if (k == levels.size() || (k > 0 && v - levels[k - 1] <= *above - v)) --k;  // the nearer neighbour
    usage[k]++;
  }
  return usage;
}

double sqnr_db(double signal_power, double noise_power) {
  if (noise_power == 0) return signal_power == 0 ? NAN : INFINITY;
  return 10.0 * std::log10(signal_power / noise_power);
}

std::pair<double, double> signal_and_noise(const std::vector<float>& signal, const std::vector<float>& approx) {
  if (signal.size() != approx.size())
    throw std::invalid_argument("SQNR of " + std::to_string(signal.size()) + " values against " +
                                std::to_string(approx.size()));
  double s = 0, n = 0;
  for (size_t i = 0; i < signal.size(); ++i) {
    s += double(signal[i]) * signal[i];
    n += (double(signal[i]) - approx[i]) * (double(signal[i]) - approx[i]);
  }
  return {s, n};
}

QuantizerStats quantizer_stats(std::string level_set, const std::vector<float>& values,
                               const std::vector<float>& quantized, std::vector<float> levels, double alpha,
                               bool per_channel, int bins) {
  QuantizerStats q;
  q.level_set = std::move(level_set);
  q.per_channel = per_channel;
  q.alpha = alpha;
  q.levels = std::move(levels);
  q.count = int64_t(values.size());
  double lo, hi;
  if (!q.levels.empty()) {
    const double margin = 0.15 * (q.levels.back() - q.levels.front());
    lo = q.levels.front() - margin;
    hi = q.levels.back() + margin;
    int64_t clipped = 0;
    for (float v : values) clipped += (v < q.levels.front() || v > q.levels.back());
    q.clipped = values.empty() ? 0 : double(clipped) / double(values.size());
    q.usage = level_usage(quantized, q.levels);
  } else {
    lo = INFINITY, hi = -INFINITY;
    for (float v : values)
      if (std::isfinite(v)) lo = std::min<double>(lo, v), hi = std::max<double>(hi, v);
    if (!(lo < hi)) lo = (std::isfinite(lo) ? lo : 0) - 0.5, hi = lo + 1;
  }
  q.histogram = make_histogram(values, lo, hi, bins);
  if (!quantized.empty()) {
    const auto [s, n] = signal_and_noise(values, quantized);
    q.sqnr_db = sqnr_db(s, n);
  }
  return q;
}

double LayerReport::total_fixops() const {
  double sum = 0;
  for (const LayerStats& l : layers) sum += l.fixops;
  return sum;
}

double LayerReport::total_size_bytes() const {
  double sum = 0;
  for (const LayerStats& l : layers) sum += l.size_bytes;
  return sum;
}

namespace {

json finite_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json to_json(const QuantizerStats& q) {
  return {{"level_set", q.level_set},
          {"per_channel", q.per_channel},
          {"alpha", q.alpha},
          {"levels", q.levels},
          {"histogram",
           {{"lo", q.histogram.lo},
            {"hi", q.histogram.hi},
            {"counts", q.histogram.counts},
            {"below", q.histogram.below},
            {"above", q.histogram.above}}},
          {"usage", q.usage},
          {"count", q.count},
          {"clipped", q.clipped},
          {"sqnr_db", finite_or_null(q.sqnr_db)}};
}

// The value of `key` in `j`, or a ReportError naming where it is missing or of the wrong type.
template <typename T>
T field(const json& j, const char* key, const std::string& where) {
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    throw ReportError("layers.json: " + where + ": missing or malformed \"" + key + "\"");
  }
}

double number_or_nan(const json& j, const char* key, const std::string& where) {
  if (j.contains(key) && j.at(key).is_null()) return NAN;
  return field<double>(j, key, where);
}

QuantizerStats quantizer_from_json(const json& j, const std::string& where) {
  QuantizerStats q;
  q.level_set = field<std::string>(j, "level_set", where);
  q.per_channel = field<bool>(j, "per_channel", where);
  q.alpha = field<double>(j, "alpha", where);
  q.levels = field<std::vector<float>>(j, "levels", where);
  const json h = field<json>(j, "histogram", where);
  q.histogram = {field<double>(h, "lo", where), field<double>(h, "hi", where),
                 field<std::vector<int64_t>>(h, "counts", where), field<int64_t>(h, "below", where),
                 field<int64_t>(h, "above", where)};
  if (q.histogram.counts.empty() || !(q.histogram.lo < q.histogram.hi))
    throw ReportError("layers.json: " + where + ": an empty histogram");
  q.usage = field<std::vector<int64_t>>(j, "usage", where);
  if (!q.usage.empty() && q.usage.size() != q.levels.size())
    throw ReportError("layers.json: " + where + ": " + std::to_string(q.usage.size()) + " usage counts for " +
                      std::to_string(q.levels.size()) + " levels");
  q.count = field<int64_t>(j, "count", where);
  q.clipped = field<double>(j, "clipped", where);
  q.sqnr_db = number_or_nan(j, "sqnr_db", where);
  return q;
}

}  // namespace

json to_json(const LayerReport& report) {
  json layers = json::array();
  for (const LayerStats& l : report.layers) {
    json j{{"name", l.name},
           {"op", l.op},
           {"quant", l.quant},
           {"macs", l.macs},
           {"weights", l.weights},
           {"fixops", l.fixops},
           {"size_bytes", l.size_bytes},
           {"output_sqnr_db", finite_or_null(l.output_sqnr_db)}};
    if (l.weight) j["weight"] = to_json(*l.weight);
    if (l.input) j["input"] = to_json(*l.input);
    layers.push_back(std::move(j));
  }
  return {{"checkpoint", report.checkpoint},
          {"data", report.data},
          {"images", report.images},
          {"config", report.config},
          {"total_fixops", report.total_fixops()},
          {"total_size_bytes", report.total_size_bytes()},
          {"layers", layers}};
}

LayerReport layer_report_from_json(const json& j) {
  if (!j.is_object()) throw ReportError("layers.json: not a JSON object");
  LayerReport r;
  r.checkpoint = field<std::string>(j, "checkpoint", "top level");
  r.data = field<std::string>(j, "data", "top level");
  r.images = field<int64_t>(j, "images", "top level");
  r.config = j.value("config", json());
  for (const json& l : field<json>(j, "layers", "top level")) {
    LayerStats s;
    s.name = field<std::string>(l, "name", "a layer");
    s.op = field<std::string>(l, "op", s.name);
    s.quant = field<std::string>(l, "quant", s.name);
    s.macs = field<int64_t>(l, "macs", s.name);
    s.weights = field<int64_t>(l, "weights", s.name);
    s.fixops = field<double>(l, "fixops", s.name);
    s.size_bytes = field<double>(l, "size_bytes", s.name);
    s.output_sqnr_db = number_or_nan(l, "output_sqnr_db", s.name);
    if (l.contains("weight")) s.weight = quantizer_from_json(l.at("weight"), s.name + " weight");
    if (l.contains("input")) s.input = quantizer_from_json(l.at("input"), s.name + " input");
    r.layers.push_back(std::move(s));
  }
  return r;
}

}  // namespace apot::report
