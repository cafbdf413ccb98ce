// `apot quantize --model SRC --data SPEC --calib N --wbits B --abits B --kind K --method minmax|mse
// --out q.ckpt`: post-training quantisation of a trained model (src/ptq) into a checkpoint. SRC
// is an apot checkpoint, a PyTorch state dict (with --arch, --model-file or --recipe) or an ONNX
// file.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "apot/onnx/onnx_import.h"
#include "apot/ptq/ptq.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct QuantizeOptions {
  std::string model, key, recipe, data, arch, model_file, shortcut, naming, kind, method = "mse", out;
  std::vector<std::string> sets;
  std::vector<double> mean, stddev;
  std::optional<int> wbits, abits;
  std::optional<uint64_t> seed;
  std::optional<double> width_mult;
  bool per_channel = false, json = false, batch_norm = true, bias_correction = true, report = false;
  int calib = 1024, batch = 128, grid = 100, threads = 0, iters = 400;
  double qdrop = 0;
};

// The configuration of the quantised model: the source checkpoint's, the recipe's or the
// defaults, then the flags.
train::TrainConfig config_of(const QuantizeOptions& o) {
  const bool from_checkpoint = std::filesystem::path(o.model).extension() == ".ckpt";
  const bool onnx = onnx_import::is_onnx_path(o.model);  // its graph comes with it (train::graph_of)
  if (onnx && (!o.arch.empty() || !o.model_file.empty()))
    throw UsageError(o.model + ": an ONNX file has its own graph; leave out --arch and --model-file");
  train::TrainConfig c;
  if (from_checkpoint) {
    if (!o.recipe.empty() || !o.arch.empty() || !o.model_file.empty())
      throw UsageError("--recipe, --arch and --model-file are for PyTorch state dicts; a checkpoint has its own");
    if (!o.sets.empty()) throw UsageError("--set needs --recipe (a checkpoint keeps its own configuration)");
    c = train::read_checkpoint_meta(o.model).config;
  } else if (!o.recipe.empty()) {
    c = train::load_config(o.recipe, o.sets);
  } else {
    c = train::config_from_toml_text("", "the defaults", o.sets);
    if (!onnx && o.arch.empty() && o.model_file.empty())
      throw UsageError(o.model + ": a PyTorch state dict needs --arch, --model-file or --recipe");
    if (o.data.empty()) throw UsageError("give --data (the data set the model was trained on)");
  }
  if (!o.arch.empty()) c.arch = o.arch, c.model_file.clear();
  if (!o.model_file.empty()) c.model_file = o.model_file;
  if (onnx) c.model_file = o.model;  // over a recipe's model too: the weights are the ONNX file's
  if (!o.shortcut.empty()) c.shortcut = o.shortcut;
  if (!o.naming.empty()) c.naming = o.naming;
  if (o.width_mult) c.width_mult = *o.width_mult;
  if (!o.data.empty()) c.data = o.data;
  if (!o.kind.empty()) c.kind = o.kind;
  if (!c.quantized()) throw UsageError("give --kind apot | pot | uniform: " + o.model + " is full precision");
  if (o.wbits) c.weight_bits = *o.wbits;
  if (o.abits) c.act_bits = *o.abits;
  if (o.per_channel) c.per_channel = true;
  if (o.seed) c.seed = *o.seed;
  if (o.threads > 0) c.threads = o.threads;
  if (o.mean.size() != o.stddev.size()) throw UsageError("--mean and --std need the same number of values");
  if (!o.mean.empty()) c.norm_mean = o.mean, c.norm_std = o.stddev;
  c.init = o.model;
  c.init_key = o.key;
  try {
    c.validate();
  } catch (const train::ConfigError& e) {
    throw UsageError(e.what());
  }
  parse_data_argument(c.data);
  return c;
}

std::string db(double v) { return std::isfinite(v) ? fmt::format("{:6.1f}", v) : std::string("     -"); }

void run_quantize(const QuantizeOptions& o) {
  if (!std::filesystem::exists(o.model)) throw UsageError(o.model + ": file not found");
  const train::TrainConfig c = config_of(o);
  ptq::Options po;
  try {
    po.method = ptq::parse_method(o.method);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  po.calib = o.calib;
  po.batch = o.batch;
  po.grid = o.grid;
  po.batch_norm = o.batch_norm;
  po.bias_correction = o.bias_correction;
  po.sensitivity = o.report;
  po.iters = o.iters;
  po.drop = o.qdrop;
  po.seed = c.seed;
  std::ostringstream quiet;
  ptq::Result r;
  try {
    r = ptq::quantize(c, po, o.out, o.json ? static_cast<std::ostream&>(quiet) : std::cout);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  const std::string what = fmt::format("{} W{}A{} ({}{})", c.kind, c.weight_bits, c.act_bits, o.method,
                                       o.qdrop > 0 ? fmt::format(", qdrop {}", o.qdrop) : std::string());
  if (o.json) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : r.layers)
      layers.push_back(
          {{"name", l.name},
           {"quant", l.quant},
           {"weight_alpha", l.weight_alpha},
           {"act_alpha", l.act_alpha},
           {"weight_sqnr_db", std::isfinite(l.weight_sqnr_db) ? nlohmann::json(l.weight_sqnr_db) : nullptr},
           {"act_sqnr_db", std::isfinite(l.act_sqnr_db) ? nlohmann::json(l.act_sqnr_db) : nullptr}});
    nlohmann::json sensitivity = nlohmann::json::array();
    for (const auto& l : r.sensitivity)
      sensitivity.push_back(
          {{"name", l.name},
           {"quant", l.quant},
           {"output_sqnr_db", std::isfinite(l.output_sqnr_db) ? nlohmann::json(l.output_sqnr_db) : nullptr},
           {"top1", l.top1},
           {"top1_change", l.top1_change}});
    fmt::print("{}\n", nlohmann::json{{"model", o.model},
                                      {"quantization", what},
                                      {"data", c.data},
                                      {"calibration_images", r.calibration_images},
                                      {"calibration_seconds", r.seconds},
                                      {"test_top1", r.test.top1},
                                      {"test_top5", r.test.top5},
                                      {"checkpoint", o.out},
                                      {"layers", layers},
                                      {"sensitivity", sensitivity},
                                      {"sensitivity_baseline_top1", r.sensitivity.empty()
                                                                        ? nlohmann::json(nullptr)
                                                                        : nlohmann::json(r.sensitivity_baseline_top1)}}
                           .dump());
    return;
  }
  fmt::print("{:<18} {:<12} {:>12} {:>12} {:>12} {:>12}\n", "layer", "quant", "weight alpha", "SQNR (dB)",
             "input alpha", "SQNR (dB)");
  for (const auto& l : r.layers)
    fmt::print("{:<18} {:<12} {:>12.4f} {:>12} {:>12.4f} {:>12}\n", l.name, l.quant, l.weight_alpha,
               db(l.weight_sqnr_db), l.act_alpha, db(l.act_sqnr_db));
  fmt::print("{}: test top-1 {:.2f} %, top-5 {:.2f} % ({} test images); calibration {:.1f} s on {} images\n", what,
             r.test.top1, r.test.top5, r.test.count, r.seconds, r.calibration_images);
  if (!r.sensitivity.empty()) {
    fmt::print(
        "\nsensitivity: each layer quantised alone, the others full precision; change against every layer in "
        "float calibrated alike ({:.2f} %)\n{:<18} {:<12} {:>16} {:>10} {:>12}\n",
        r.sensitivity_baseline_top1, "layer", "quant", "output SQNR (dB)", "top-1 (%)", "change");
    for (const auto& l : r.sensitivity)
      fmt::print("{:<18} {:<12} {:>16} {:>10.2f} {:>+12.2f}\n", l.name, l.quant, db(l.output_sqnr_db), l.top1,
                 l.top1_change);
  }
  fmt::print("wrote {}\n", o.out);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto o = std::make_shared<QuantizeOptions>();
  CLI::App* cmd =
      app.add_subcommand("quantize", "Post-training quantisation of a trained model from calibration images");
  cmd->add_option("--model", o->model,
                  "trained model: an apot checkpoint (.ckpt), an ONNX model (.onnx) or a PyTorch state dict")
      ->required();
  cmd->add_option("--key", o->key, "the entry of a checkpoint dict that holds the state dict");
  cmd->add_option("--arch", o->arch, "architecture of a state dict (resnet20, resnet56, ...)");
  cmd->add_option("--model-file", o->model_file, "model file (docs/MODELS.md) of a state dict")
      ->check(CLI::ExistingFile);
  cmd->add_option("--shortcut", o->shortcut, "CIFAR ResNet shortcut of a state dict: A | B");
  cmd->add_option("--width-mult", o->width_mult, "MobileNetV2's width multiplier of --arch");
  cmd->add_option("--naming", o->naming, "parameter names of --arch: apot | hub")
      ->check(CLI::IsMember({"apot", "hub"}));
  cmd->add_option("--recipe", o->recipe, "recipe (TOML) with the model and quantisation, e.g. per-layer overrides")
      ->check(CLI::ExistingFile);
  cmd->add_option("--set", o->sets, "override a recipe key: section.key=value (repeatable)");
  cmd->add_option("--data", o->data,
                  "data set: calibration images from its training split, evaluation on its test split");
  cmd->add_option("--calib", o->calib, "calibration images")->capture_default_str();
  cmd->add_option("--batch", o->batch, "images per calibration pass")->capture_default_str();
  cmd->add_option("--wbits", o->wbits, "weight bits (default: the recipe's or checkpoint's)");
  cmd->add_option("--abits", o->abits, "activation bits");
  cmd->add_option("--kind", o->kind, "quantiser: apot | pot | uniform")
      ->check(CLI::IsMember({"apot", "pot", "uniform"}));
  cmd->add_option("--method", o->method, "minmax | mse | recon")->capture_default_str();
  cmd->add_option("--iters", o->iters, "recon: optimiser steps per block")->capture_default_str();
  cmd->add_option("--qdrop", o->qdrop,
                  "recon: probability of leaving an activation unquantised while a block is learned (QDrop: 0.5)")
      ->capture_default_str();
  cmd->add_flag("--per-channel", o->per_channel, "one weight alpha per output channel");
  cmd->add_option("--grid", o->grid, "candidate alphas per mse search")->capture_default_str();
  cmd->add_flag("!--no-bn", o->batch_norm, "mse: keep the batch-norm statistics as trained");
  cmd->add_flag("!--no-bias-correction", o->bias_correction, "mse: no bias correction");
  cmd->add_option("--mean", o->mean, "input mean per channel of a state dict's model (0..1 scale)")->delimiter(',');
  cmd->add_option("--std", o->stddev, "input std per channel of a state dict's model")->delimiter(',');
  cmd->add_option("--seed", o->seed, "seed of the calibration images' choice");
  cmd->add_option("--threads", o->threads, "LibTorch threads (0: all cores)");
  cmd->add_option("--out", o->out, "checkpoint to write (.ckpt)")->required();
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->add_flag("--report", o->report,
                "also each layer's sensitivity: output SQNR and test top-1 with that layer alone quantised");
  cmd->callback([o] { run_quantize(*o); });
}

}  // namespace apot::cli
