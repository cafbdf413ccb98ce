// Per-layer statistics for `apot report`: one forward pass keeping every node's output, then for
// each weight layer its weight and input quantisers and its output against the same layer
// unquantised on the same input.
#include "apot/train/probe.h"

#include <filesystem>

#include "apot/graph/cost.h"
#include "apot/train/trainer.h"

namespace apot::train {
namespace {

std::vector<float> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::vector<float> scaled(std::vector<float> levels, double alpha) {
  for (float& l : levels) l = static_cast<float>(l * alpha);
  return levels;
}

// The weight quantiser: per-channel alphas put values and levels in units of each channel's alpha.
report::QuantizerStats weight_stats(const qat::QuantOptions& q, const torch::Tensor& normalized,
                                    const torch::Tensor& quantized, const torch::Tensor& alpha) {
  if (q.int8_weights) return report::quantizer_stats("int8", to_vector(normalized), to_vector(quantized), {}, 0, false);
  if (!q.quantizes_weight()) return report::quantizer_stats("float", to_vector(normalized), {}, {}, 0, false);
  const levels::LevelSet set = levels::LevelSet::make(q.kind, q.weight_bits, levels::Role::weight);
  if (alpha.numel() > 1) {
    std::vector<int64_t> shape(size_t(normalized.dim()), 1);
    shape[0] = alpha.numel();
    const torch::Tensor a = alpha.detach().reshape(shape);
    return report::quantizer_stats(set.name(), to_vector(normalized / a), to_vector(quantized / a), set.levels(),
                                   alpha.mean().item<double>(), true);
  }
  const double a = alpha.item<double>();
  return report::quantizer_stats(set.name(), to_vector(normalized), to_vector(quantized), scaled(set.levels(), a), a,
                                 false);
}

template <typename Layer>
report::LayerStats layer_stats(const Layer& layer, const torch::Tensor& input) {
  const qat::QuantOptions& q = layer.quant_options();
  report::LayerStats s;
  const torch::Tensor normalized = layer.normalized_weight();
  const torch::Tensor quantized_weight = layer.quantized_weight();
  const double scale = layer.weight_output_scale();  // quantized_weight is scale * Q(normalized)
  s.weight = weight_stats(q, normalized, quantized_weight / scale, layer.weight_alpha);
  torch::Tensor quantized_input = input;
  if (q.quantizes_input()) {
    quantized_input = qat::quantize_layer_input(input, layer.act_alpha, q);
    const levels::LevelSet set = levels::LevelSet::make(q.kind, q.act_bits, q.input_spec().role);
    const double a = layer.act_alpha.template item<double>();
    s.input = report::quantizer_stats(set.name(), to_vector(input), to_vector(quantized_input), scaled(set.levels(), a),
                                      a, false);
  }
  if (q.quantizes_weight() || q.quantizes_input()) {
    const torch::Tensor reference = layer.apply(input, normalized * scale).to(torch::kFloat64);
    const torch::Tensor output = layer.apply(quantized_input, quantized_weight).to(torch::kFloat64);
    s.output_sqnr_db = report::sqnr_db(reference.square().sum().template item<double>(),
                                       (reference - output).square().sum().template item<double>());
  }
  return s;
}

}  // namespace

report::LayerReport probe_layers(qat::NetworkImpl& model, const torch::Tensor& images) {
  if (images.dim() != 4) throw std::invalid_argument("probe_layers: images must be N x C x H x W");
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> outputs;
  model.forward_all(images, outputs);
  graph::Graph g = model.graph();
  g.infer_shapes(int(images.size(2)), int(images.size(3)));
  const graph::CostReport cost = graph::compute_cost(g);

  report::LayerReport r;
  r.images = images.size(0);
  for (const graph::LayerCost& c : cost.layers) {
    const graph::Node& node = g[size_t(c.node)];
    const int from = node.inputs.at(0);
    const torch::Tensor& input = from == 0 ? images : outputs[size_t(from)];
    report::LayerStats s;
    if (const auto* conv = model.conv(node.name)) {
      s = layer_stats(*conv, input);
    } else if (const auto* linear = model.linear(node.name)) {
      s = layer_stats(*linear, input.flatten(1));
    } else {
      continue;
    }
    s.name = node.name;
    s.op = graph::to_string(node.op);
    s.quant = node.quant.describe();
    s.macs = c.macs;
    s.weights = c.weights;
    s.fixops = c.fixops;
    s.size_bytes = c.size_bytes;
    r.layers.push_back(std::move(s));
  }
  model.train(was_training);
  return r;
}

report::LayerReport probe_checkpoint(const std::string& checkpoint, const std::string& data, int count) {
  if (count < 1) throw std::invalid_argument("probe: the batch needs at least one image");
  Checkpoint meta;
  qat::Network model = load_checkpoint(checkpoint, &meta);
  const std::string text = data.empty() ? meta.config.data : data;
  const data::DataSpec spec = data::parse_data_spec(text);
  const auto test_set = data::open_dataset(spec, data::Split::test);
  data::LoaderOptions lo;
  lo.batch_size = count;
  lo.workers = 1;
  lo.shuffle = false;
  lo.transform = transform_for(meta.config, spec, data::Split::test, *test_set);
  data::Loader loader(test_set, lo);
  loader.start_epoch(0);
  data::Batch batch;
  if (!loader.next(batch)) throw std::invalid_argument(text + ": no test images");
  report::LayerReport r = probe_layers(*model, batch.images);
  r.checkpoint = checkpoint;
  r.data = spec.text();
  r.config = nlohmann::json::parse(config_to_json(meta.config));
  return r;
}

}  // namespace apot::train
