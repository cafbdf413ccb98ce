// Per-layer statistics of a trained model, for `apot report`: what each quantiser sees (the
// normalised weights, the input activations on a batch) as a histogram with the levels it
// projects to (the paper's Figure 1), how often each level is hit, signal-to-quantisation-noise
// ratios, and each layer's cost (MACs, FixOPs, bytes). train::probe_layers computes them with
// LibTorch and they are kept beside the run as layers.json; this header and its maths are
// LibTorch-free.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace apot::report {

// Equal-width bins over [lo, hi]; values outside the range are counted in below / above.
struct Histogram {
  double lo = 0, hi = 1;
  std::vector<int64_t> counts;
  int64_t below = 0, above = 0;
};
// Non-finite values are skipped. bins >= 1 and lo < hi, or std::invalid_argument.
Histogram make_histogram(const std::vector<float>& values, double lo, double hi, int bins);

// For each of `levels` (ascending), how many of `quantized` are nearest to it.
std::vector<int64_t> level_usage(const std::vector<float>& quantized, const std::vector<float>& levels);

// 10 log10(signal power / noise power) in dB: +inf for no noise, NaN for no signal and no noise.
double sqnr_db(double signal_power, double noise_power);
// sum(signal^2) and sum((signal - approx)^2) of two vectors of one size (std::invalid_argument
// otherwise), as the arguments of sqnr_db.
std::pair<double, double> signal_and_noise(const std::vector<float>& signal, const std::vector<float>& approx);

// One quantiser of a layer: of its weights or of its input.
struct QuantizerStats {
  std::string level_set;       // "apot-w4", "uniform-a3", "int8", or "float" (not quantised)
  bool per_channel = false;    // one alpha per output channel: values and levels are in units of alpha
  double alpha = 0;            // the clipping threshold (the mean of per-channel ones); 0 for none
  std::vector<float> levels;   // what values are projected to, in the histogram's units (empty: int8, float)
  Histogram histogram;         // of the values the quantiser sees
  std::vector<int64_t> usage;  // per level: how many values were projected to it
  int64_t count = 0;           // values seen
  double clipped = 0;          // fraction of values beyond the outermost level
  double sqnr_db = NAN;        // of the quantised values against the values (NaN when not quantised)
};

// Builds the statistics of one quantiser from what it sees and what it gives: `levels` in the
// units of `values` (empty for none); the histogram spans the levels and a margin, or the
// values' range when there are no levels.
QuantizerStats quantizer_stats(std::string level_set, const std::vector<float>& values,
                               const std::vector<float>& quantized, std::vector<float> levels, double alpha,
                               bool per_channel, int bins = 80);

struct LayerStats {
  std::string name, op;           // the graph node's name and op ("conv", "linear")
  std::string quant;              // "W4A4 apot", "int8", "fp32"
  int64_t macs = 0, weights = 0;  // per image
  double fixops = 0, size_bytes = 0;
  std::optional<QuantizerStats> weight;  // always present for weight layers
  std::optional<QuantizerStats> input;   // present where the input is quantised
  double output_sqnr_db = NAN;           // the output against the same layer unquantised, same input
};

struct LayerReport {
  std::string checkpoint, data;  // what was probed, on which data
  int64_t images = 0;            // images in the probe batch
  nlohmann::json config;         // the checkpoint's training configuration (summary.json's "config")
  std::vector<LayerStats> layers;
  double total_fixops() const;
  double total_size_bytes() const;
};

// JSON round trip (non-finite numbers as null); from_json throws ReportError naming the field.
nlohmann::json to_json(const LayerReport& report);
LayerReport layer_report_from_json(const nlohmann::json& j);

}  // namespace apot::report
