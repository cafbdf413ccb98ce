// Post-training quantisation: alphas from calibration images (max or least squared error),
// batch-norm re-estimation and bias correction, and the flow that makes a checkpoint of it.
#include "apot/ptq/ptq.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "apot/data/spec.h"
#include "apot/data/transforms.h"
#include "apot/report/layers.h"
#include "apot/train/probe.h"

namespace apot::ptq {
namespace {

using torch::indexing::None;
using torch::indexing::Slice;

// The most values of one layer's inputs kept for the alpha search (a strided sample beyond).
constexpr int64_t kMaxSearchValues = int64_t(1) << 22;

// sum(v^2) and sum((v - Q(v))^2) for one alpha.
std::pair<double, double> signal_and_noise(const torch::Tensor& values, double alpha, const qat::QuantizerSpec& spec) {
  const torch::Tensor q = qat::rcf_quantize(values, torch::full({}, alpha), spec);
  return {values.square().sum().item<double>(), (values - q).square().sum().item<double>()};
}

// The alpha of `values` and its SQNR: the largest value (magnitude for weights) for minmax, the
// least squared error over the grid k / grid * largest for mse.
std::pair<double, double> choose_alpha(const torch::Tensor& values, double largest, const qat::QuantizerSpec& spec,
                                       const Options& o) {
  if (!(largest > 0) || !std::isfinite(largest)) return {1.0, NAN};  // all zero: any alpha is exact
  double best = largest;
  auto [signal, noise] = signal_and_noise(values, largest, spec);
  if (o.method == Method::mse) {
    for (int k = 1; k < o.grid; ++k) {
      const double alpha = largest * k / o.grid;
      const double n = signal_and_noise(values, alpha, spec).second;
      if (n < noise) best = alpha, noise = n;
    }
  }
  return {best, report::sqnr_db(signal, noise)};
}

// The normalised weights at the scale the layer's forward uses them (see weight_output_scale).
template <typename Layer>
torch::Tensor effective_weight(const Layer& layer) {
  return layer.normalized_weight() * layer.weight_output_scale();
}

template <typename Layer>
void calibrate_weight(Layer& layer, const Options& o, LayerCalibration& out) {
  const qat::QuantOptions& q = layer.quant_options();
  if (!q.quantizes_weight() || q.int8_weights) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor w = layer.normalized_weight().detach();
  const qat::QuantizerSpec spec{q.kind, q.weight_bits, levels::Role::weight, q.variant};
  if (layer.weight_alpha.numel() == 1) {
    const auto [alpha, sqnr] = choose_alpha(w.flatten(), w.abs().max().template item<double>(), spec, o);
    layer.weight_alpha.fill_(alpha);
    out.weight_alpha = alpha;
    out.weight_sqnr_db = sqnr;
    return;
  }
  double signal = 0, noise = 0;
  for (int64_t c = 0; c < layer.weight_alpha.numel(); ++c) {
    const torch::Tensor wc = w[c].flatten();
    const double alpha = choose_alpha(wc, wc.abs().max().template item<double>(), spec, o).first;
    layer.weight_alpha[c].fill_(alpha);
    const auto [s, n] = signal_and_noise(wc, alpha, spec);
    signal += s, noise += n;
  }
  out.weight_alpha = layer.weight_alpha.mean().template item<double>();
  out.weight_sqnr_db = report::sqnr_db(signal, noise);
}

// The inputs of weight layer `node` on every calibration batch, through the model as it is now
// (flattened for linear layers), as one strided sample of at most kMaxSearchValues values; and the
// largest input seen (the largest magnitude for a signed input).
std::pair<torch::Tensor, double> layer_inputs(qat::NetworkImpl& model, int node, const torch::Tensor& images, int batch,
                                              bool is_signed) {
  torch::NoGradGuard no_grad;
  const std::string& name = model.graph()[size_t(node)].name;
  std::vector<torch::Tensor> samples;
  double largest = -INFINITY;
  const int64_t n = images.size(0), batches = (n + batch - 1) / batch;
  for (int64_t start = 0; start < n; start += batch) {
    const torch::Tensor in =
        model.input_of(images.index({Slice(start, std::min<int64_t>(n, start + batch))}), name).flatten();
    largest = std::max(largest, (is_signed ? in.abs().max() : in.max()).item<double>());
    const int64_t stride = std::max<int64_t>(1, in.numel() * batches / kMaxSearchValues);
    samples.push_back(in.index({Slice(0, None, stride)}).clone());
  }
  return {torch::cat(samples), largest};
}

template <typename Layer>
void calibrate_input(qat::NetworkImpl& model, Layer& layer, int node, const torch::Tensor& images, const Options& o,
                     LayerCalibration& out) {
  const qat::QuantOptions& q = layer.quant_options();
  if (!q.quantizes_input()) return;
  const auto [values, largest] = layer_inputs(model, node, images, o.batch, q.signed_input);
  const auto [alpha, sqnr] = choose_alpha(values, largest, q.input_spec(), o);
  torch::NoGradGuard no_grad;
  layer.act_alpha.fill_(alpha);
  out.act_alpha = alpha;
  out.act_sqnr_db = sqnr;
}

// Running statistics of every batch norm recomputed on the calibration images, as a cumulative
// average (momentum none) over the batches, with the quantised layers in place.
void reestimate_batch_norms(qat::NetworkImpl& model, const torch::Tensor& images, int batch) {
  std::vector<std::pair<torch::nn::BatchNorm2dImpl*, c10::optional<double>>> bn2d;
  std::vector<std::pair<torch::nn::BatchNorm1dImpl*, c10::optional<double>>> bn1d;
  for (int node : model.graph().weight_layers()) {
    torch::nn::Module* m = model.batch_norm(model.graph()[size_t(node)].name);
    if (auto* b = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m)) bn2d.emplace_back(b, b->options.momentum());
    if (auto* b = dynamic_cast<torch::nn::BatchNorm1dImpl*>(m)) bn1d.emplace_back(b, b->options.momentum());
  }
  for (auto& [b, momentum] : bn2d) b->options.momentum(c10::nullopt), b->reset_running_stats();
  for (auto& [b, momentum] : bn1d) b->options.momentum(c10::nullopt), b->reset_running_stats();
  torch::NoGradGuard no_grad;
  model.train();
  for (int64_t start = 0; start < images.size(0); start += batch)
    model.forward(images.index({Slice(start, std::min<int64_t>(images.size(0), start + batch))}));
  model.eval();
  for (auto& [b, momentum] : bn2d) b->options.momentum(momentum);
  for (auto& [b, momentum] : bn1d) b->options.momentum(momentum);
}

// Adds to the bias of a quantised layer with no batch norm the mean, per output channel, of its
// unquantised output minus its quantised output on the calibration inputs.
template <typename Layer>
void correct_bias(qat::NetworkImpl& model, Layer& layer, int node, const torch::Tensor& images, int batch) {
  const qat::QuantOptions& q = layer.quant_options();
  if (!layer.bias.defined() || !model.graph()[size_t(node)].batch_norm.empty()) return;
  if (!q.quantizes_weight() && !q.quantizes_input()) return;
  torch::NoGradGuard no_grad;
  const std::string& name = model.graph()[size_t(node)].name;
  torch::Tensor sum;
  int64_t count = 0;
  for (int64_t start = 0; start < images.size(0); start += batch) {
    torch::Tensor in =
        model.input_of(images.index({Slice(start, std::min<int64_t>(images.size(0), start + batch))}), name);
    if (std::is_same<Layer, qat::QuantLinearImpl>::value) in = in.flatten(1);
    torch::Tensor diff = layer.apply(in, effective_weight(layer)) - layer.forward(in);
    if (diff.dim() == 4) diff = diff.permute({0, 2, 3, 1});
    diff = diff.reshape({-1, diff.size(-1)});
    sum = sum.defined() ? sum + diff.sum(0) : diff.sum(0);
    count += diff.size(0);
  }
  layer.bias.add_(sum / double(count));
}

}  // namespace

Method parse_method(const std::string& name) {
  if (name == "minmax") return Method::minmax;
  if (name == "mse") return Method::mse;
  if (name == "recon") return Method::recon;
  throw std::invalid_argument("unknown PTQ method '" + name + "' (minmax | mse | recon)");
}

const char* to_string(Method method) {
  switch (method) {
    case Method::minmax: return "minmax";
    case Method::mse: return "mse";
    case Method::recon: return "recon";
  }
  return "?";
}

std::vector<LayerCalibration> calibrate(qat::NetworkImpl& model, const torch::Tensor& images, const Options& o,
                                        const std::function<void(int, int, const std::string&)>& progress) {
  if (images.dim() != 4 || images.size(0) < 1) throw std::invalid_argument("calibration images must be N x C x H x W");
  if (o.batch < 1 || o.grid < 1) throw std::invalid_argument("calibration batch and grid must be at least 1");
  if (!(o.drop >= 0 && o.drop < 1)) throw std::invalid_argument("the QDrop probability must be in [0, 1)");
  if (o.method == Method::recon) {
    // The full-precision model of the same weights gives the targets.
    auto reference = std::dynamic_pointer_cast<qat::NetworkImpl>(model.clone());
    reference->set_policy(qat::QuantPolicy::full_precision());
    Options alphas = o;
    alphas.method = Method::mse;
    alphas.batch_norm = alphas.bias_correction = false;
    std::vector<LayerCalibration> out = calibrate(model, images, alphas, progress);
    reconstruct(model, *reference, images, o, progress);
    for (LayerCalibration& l : out) {  // the activation alphas learned with the rounding
      const auto* conv = model.conv(l.name);
      const auto* linear = model.linear(l.name);
      const torch::Tensor& a = conv ? conv->act_alpha : linear->act_alpha;
      if (l.act_alpha > 0) l.act_alpha = a.item<double>(), l.act_sqnr_db = NAN;
    }
    return out;
  }
  model.eval();
  const graph::Graph& g = model.graph();
  const std::vector<int> layers = g.weight_layers();
  std::vector<LayerCalibration> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const graph::Node& node = g[size_t(layers[i])];
    LayerCalibration c;
    c.name = node.name;
    c.quant = node.quant.describe();
    if (auto* conv = model.conv(node.name)) {
      calibrate_weight(*conv, o, c);
      calibrate_input(model, *conv, layers[i], images, o, c);
    } else if (auto* linear = model.linear(node.name)) {
      calibrate_weight(*linear, o, c);
      calibrate_input(model, *linear, layers[i], images, o, c);
    }
    out.push_back(c);
    if (progress) progress(int(i + 1), int(layers.size()), node.name);
  }
  if (o.method == Method::mse) {
    if (o.batch_norm) reestimate_batch_norms(model, images, o.batch);
    if (o.bias_correction)
      for (int node : layers) {
        if (auto* conv = model.conv(g[size_t(node)].name)) correct_bias(model, *conv, node, images, o.batch);
        if (auto* linear = model.linear(g[size_t(node)].name)) correct_bias(model, *linear, node, images, o.batch);
      }
  }
  return out;
}

namespace {

// The calibration images and the test split of a configuration.
struct Prepared {
  train::TrainConfig config;  // with weight normalisation off
  torch::Tensor images;
  train::ModelInfo info;
  std::shared_ptr<data::Dataset> test_set;
  data::LoaderOptions eval_options;
  std::string data;
};

Prepared prepare(const train::TrainConfig& config, const Options& o) {
  config.validate();
  Prepared p;
  // The weights are quantised as they are: weight normalisation would scale each layer's output by
  // 1 / std(w) and the trained batch norms would no longer fit it (alphas are in weight units).
  p.config = config;
  train::TrainConfig& c = p.config;
  c.weight_norm = "none";
  if (!c.quantized()) throw std::invalid_argument("post-training quantisation needs a quantiser kind, not fp");
  if (c.init.empty()) throw std::invalid_argument("give the trained model to quantise (--model)");
  if (o.calib < o.batch)
    throw std::invalid_argument("a calibration set of " + std::to_string(o.calib) +
                                " images is smaller than one batch of " + std::to_string(o.batch) +
                                " (--calib, --batch)");
  torch::set_num_threads(c.threads > 0 ? c.threads : int(std::max(1u, std::thread::hardware_concurrency())));
  torch::manual_seed(c.seed);
  const data::DataSpec spec = data::parse_data_spec(c.data);
  p.data = spec.text();
  const auto train_set = data::open_dataset(spec, data::Split::train);
  p.test_set = data::open_dataset(spec, data::Split::test);
  if (size_t(o.calib) > train_set->size())
    throw std::invalid_argument("--calib " + std::to_string(o.calib) + ": the training split has only " +
                                std::to_string(train_set->size()) + " images");
  // A seeded choice of calibration images from the training split, transformed as for evaluation.
  std::vector<size_t> order(train_set->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  data::SampleRng rng(data::mix_seed(c.seed, 0xCA1B));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
  std::vector<size_t> chosen(order.begin(), order.begin() + o.calib);
  std::sort(chosen.begin(), chosen.end());
  data::LoaderOptions lo;
  lo.batch_size = o.batch;
  lo.workers = c.workers;
  lo.shuffle = false;
  lo.transform = train::transform_for(c, spec, data::Split::test, *train_set);
  data::Loader calib_loader(train_set, lo, chosen);
  std::vector<torch::Tensor> batches;
  calib_loader.start_epoch(0);
  for (data::Batch b; calib_loader.next(b);) batches.push_back(b.images);
  p.images = torch::cat(batches);
  p.info = train::model_info(calib_loader);
  if (p.test_set->num_classes() != p.info.class_names.size())
    throw std::invalid_argument(c.data + ": the test split has " + std::to_string(p.test_set->num_classes()) +
                                " classes, the training split " + std::to_string(p.info.class_names.size()));
  p.eval_options = lo;
  p.eval_options.batch_size = c.eval_batch_size;
  p.eval_options.transform = train::transform_for(c, spec, data::Split::test, *p.test_set);
  return p;
}

train::EvalResult test(qat::Network& model, const Prepared& p) {
  data::Loader loader(p.test_set, p.eval_options);
  return train::evaluate(model, loader);
}

// The model of `config` with the trained weights; `log` hears where they came from. A checkpoint
// trained with weight normalisation gives its layers' normalised weights: with batch norms that
// were trained on them, they compute what the checkpoint computed, without normalisation.
qat::Network trained_model(const train::TrainConfig& config, const Prepared& p, std::ostream& log) {
  qat::Network model = train::build_model(config, p.info);
  train::initialise_from(model, config.init, config.init_key, log);
  if (std::filesystem::path(config.init).extension() == ".ckpt") {
    const qat::Network source = train::load_checkpoint(config.init);
    torch::NoGradGuard no_grad;
    for (int node : model->graph().weight_layers()) {
      const std::string& name = model->graph()[size_t(node)].name;
      if (auto* conv = model->conv(name)) conv->weight.copy_(effective_weight(*source->conv(name)));
      if (auto* linear = model->linear(name)) linear->weight.copy_(effective_weight(*source->linear(name)));
    }
  }
  return model;
}

// For each layer the policy quantises: the model with that layer alone quantised and calibrated,
// its output SQNR (train::probe_layers) and test top-1 against the baseline: every layer in float,
// calibrated the same way (mse and recon re-estimate nothing in float layers, but mse's batch-norm
// re-estimation on the calibration images moves top-1 by itself), so that a change is the
// layer's own.
std::vector<Sensitivity> sensitivity(const Prepared& p, const Options& o, double& baseline_top1, std::ostream& log) {
  std::ostringstream quiet;
  qat::Network full = trained_model(p.config, p, quiet);
  const graph::Graph& g = full->graph();
  train::TrainConfig none = p.config;
  for (int node : g.weight_layers()) none.layers[g[size_t(node)].name].full_precision = true;
  qat::Network baseline = trained_model(none, p, quiet);
  calibrate(*baseline, p.images, o);
  baseline_top1 = test(baseline, p).top1;
  log << "  sensitivity baseline (every layer in float, calibrated alike): top-1 " << baseline_top1 << " %"
      << std::endl;
  std::vector<Sensitivity> out;
  const torch::Tensor probe_images = p.images.index({Slice(0, std::min<int64_t>(256, p.images.size(0)))});
  for (int node : g.weight_layers()) {
    if (!g[size_t(node)].quant.quantized()) continue;
    train::TrainConfig alone = p.config;
    for (int other : g.weight_layers())
      if (other != node) alone.layers[g[size_t(other)].name].full_precision = true;
    qat::Network model = trained_model(alone, p, quiet);
    calibrate(*model, p.images, o);
    Sensitivity s;
    s.name = g[size_t(node)].name;
    s.quant = g[size_t(node)].quant.describe();
    for (const report::LayerStats& l : train::probe_layers(*model, probe_images).layers)
      if (l.name == s.name) s.output_sqnr_db = l.output_sqnr_db;
    s.top1 = test(model, p).top1;
    s.top1_change = s.top1 - baseline_top1;
    log << "  sensitivity " << s.name << ": top-1 " << s.top1 << " % (" << (s.top1_change >= 0 ? "+" : "")
        << s.top1_change << "), output SQNR " << s.output_sqnr_db << " dB" << std::endl;
    out.push_back(s);
  }
  return out;
}

}  // namespace

Result quantize(const train::TrainConfig& config, const Options& o, const std::string& out, std::ostream& log) {
  const Prepared p = prepare(config, o);
  const train::TrainConfig& c = p.config;
  qat::Network model = trained_model(c, p, log);
  log << "calibrating " << model->graph().arch << " " << c.kind << " W" << c.weight_bits << "A" << c.act_bits << " ("
      << to_string(o.method) << ") on " << p.images.size(0) << " images of " << p.data << std::endl;
  const auto start = std::chrono::steady_clock::now();
  Result r;
  r.layers = calibrate(*model, p.images, o, [&](int done, int total, const std::string& name) {
    log << "  [" << done << "/" << total << "] " << name << std::endl;
  });
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.calibration_images = p.images.size(0);
  r.test = test(model, p);
  if (o.sensitivity) r.sensitivity = sensitivity(p, o, r.sensitivity_baseline_top1, log);

  train::Checkpoint meta;
  meta.config = c;
  meta.info = p.info;
  meta.epoch = 0;
  meta.metrics = {{"test_top1", r.test.top1},
                  {"calibration_images", double(r.calibration_images)},
                  {"calibration_seconds", r.seconds}};
  train::save_checkpoint(out, model, nullptr, meta);
  return r;
}

}  // namespace apot::ptq
