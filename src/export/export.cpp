// Export: the graph, integer weights recovered from the trained fake-quantised weights, folded
// batch norm and bias.
#include "apot/export/export.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "apot/graph/serialize.h"
#include "apot/runtime/format.h"

namespace apot::exporter {
namespace {

using runtime::LayerKind;
using runtime::LayerRecord;

struct Blob {
  std::vector<uint8_t> bytes;
  uint64_t add(const void* data, size_t size, size_t align = 4) {
    while (bytes.size() % align) bytes.push_back(0);
    const uint64_t offset = bytes.size();
    const uint8_t* p = static_cast<const uint8_t*>(data);
    bytes.insert(bytes.end(), p, p + size);
    return offset;
  }
};

// The batch norm after a layer (eval mode) as scale and shift per channel: 1 and 0 without one.
void batch_norm_of(torch::nn::Module* module, int channels, std::vector<double>& scale, std::vector<double>& shift) {
  scale.assign(size_t(channels), 1.0);
  shift.assign(size_t(channels), 0.0);
  if (!module) return;
  torch::Tensor gamma, beta, mean, var;
  double eps = 0;
  if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(module)) {
    gamma = bn->weight, beta = bn->bias, mean = bn->running_mean, var = bn->running_var, eps = bn->options.eps();
  } else if (auto* bn1 = dynamic_cast<torch::nn::BatchNorm1dImpl*>(module)) {
    gamma = bn1->weight, beta = bn1->bias, mean = bn1->running_mean, var = bn1->running_var, eps = bn1->options.eps();
  } else {
    throw std::invalid_argument("export: unknown batch-norm module");
  }
  const auto s = gamma.detach().to(torch::kFloat64) / (var.to(torch::kFloat64) + eps).sqrt();
  const auto b = beta.detach().to(torch::kFloat64) - s * mean.to(torch::kFloat64);
  scale.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
  shift.assign(b.data_ptr<double>(), b.data_ptr<double>() + b.numel());
}

// Reorders conv weights [out][in][kh][kw] to [out][kh][kw][in] (the engine's im2col order), and
// linear weights [out][C*H*W] (PyTorch's flattening of a C x H x W input) to [out][H*W*C].
std::vector<float> engine_order(const torch::Tensor& w, const graph::Shape& linear_source) {
  torch::Tensor t = w.contiguous();
  if (w.dim() == 4) {
    t = w.permute({0, 2, 3, 1}).contiguous();
  } else if (linear_source.height * linear_source.width > 1) {
    t = w.reshape({w.size(0), linear_source.channels, linear_source.height, linear_source.width})
            .permute({0, 2, 3, 1})
            .contiguous();
  }
  return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

// The shape a linear layer's input has before flatten nodes.
graph::Shape unflattened_input(const graph::Graph& g, int node) {
  int i = g[size_t(node)].inputs.at(0);
  while (g[size_t(i)].op == graph::Op::flatten) i = g[size_t(i)].inputs.at(0);
  return g[size_t(i)].shape;
}

int bits_for(size_t levels) {
  int b = 1;
  while ((size_t(1) << b) < levels) ++b;
  return b;
}

}  // namespace

std::vector<uint8_t> export_model(qat::NetworkImpl& model, const ExportInfo& info) {
  torch::NoGradGuard no_grad;
  model.eval();
  graph::Graph g = model.graph();
  g.infer_shapes(info.height, info.width);
  Blob blob;
  std::vector<LayerRecord> records;
  for (int index : g.weight_layers()) {
    const graph::Node& node = g[size_t(index)];
    const graph::LayerQuant& lq = node.quant;
    const bool linear = node.op == graph::Op::linear;
    const graph::Shape in = linear ? unflattened_input(g, index) : g.input_shape_of(index);
    LayerRecord r{};
    r.in_channels = uint32_t(linear ? in.size() : in.channels);
    r.out_channels = uint32_t(node.out_channels);
    r.kernel = uint32_t(linear ? 1 : node.kernel);
    r.stride = uint32_t(linear ? 1 : node.stride);
    r.padding = uint32_t(linear ? 0 : node.padding);
    r.groups = uint32_t(linear ? 1 : node.groups);
    torch::Tensor weight, weight_alpha, act_alpha, bias, quantized;
    double weight_scale = 1;  // the layer's weight_output_scale (a layer without batch norm)
    if (auto* c = model.conv(node.name)) {
      weight = c->weight, weight_alpha = c->weight_alpha, act_alpha = c->act_alpha, bias = c->bias;
      if (lq.quantized()) quantized = c->quantized_weight().detach(), weight_scale = c->weight_output_scale();
    } else if (auto* l = model.linear(node.name)) {
      weight = l->weight, weight_alpha = l->weight_alpha, act_alpha = l->act_alpha, bias = l->bias;
      if (lq.quantized()) quantized = l->quantized_weight().detach(), weight_scale = l->weight_output_scale();
    } else {
      throw std::invalid_argument("export: no layer " + node.name + " in the model");
    }
    if (lq.mode == graph::LayerQuant::Mode::float32)
      throw std::invalid_argument("export: layer " + node.name +
                                  " is full precision; the engine runs int8 and quantised layers only (train it with "
                                  "quant.int8_first_last = true, or quantise it)");
    const int out = node.out_channels;
    std::vector<double> scale, shift;
    batch_norm_of(model.batch_norm(node.name), out, scale, shift);
    if (bias.defined()) {  // bn(W x + b) = s W x + (s b + t)
      const torch::Tensor b = bias.detach().to(torch::kFloat64).contiguous();
      for (int o = 0; o < out; ++o) shift[size_t(o)] += scale[size_t(o)] * b.data_ptr<double>()[o];
    }
    std::vector<int8_t> level_table;
    std::vector<uint8_t> codes;
    const std::vector<float> w = engine_order(weight.detach().to(torch::kFloat32), in);
    const size_t per_out = w.size() / size_t(out);
    if (lq.mode == graph::LayerQuant::Mode::int8) {
      double max_abs = 0;
      for (float v : w) max_abs = std::max(max_abs, double(std::fabs(v)));
      const double step = max_abs > 0 ? max_abs / 127.0 : 1.0;
      for (int v = -127; v <= 127; ++v) level_table.push_back(static_cast<int8_t>(v));
      for (float v : w) codes.push_back(static_cast<uint8_t>(std::clamp(std::lround(v / step), -127L, 127L) + 127));
      for (int o = 0; o < out; ++o) scale[size_t(o)] *= step;
      r.kind = uint32_t(linear ? LayerKind::float_linear : LayerKind::float_conv);
    } else {
      const levels::LevelSet wset = levels::LevelSet::make(lq.kind, lq.weight_bits, levels::Role::weight);
      const levels::LevelSet aset = levels::LevelSet::make_activation(lq.kind, lq.act_bits, lq.signed_input);
      if (aset.size() > 32)
        throw std::invalid_argument("export: layer " + node.name + ": its input has " + std::to_string(aset.size()) +
                                    " " + aset.name() +
                                    " levels; the engine runs activations of at most 32 levels (5 bits): quantise "
                                    "them to 5 bits or fewer (the checkpoint still runs in apot eval)");
      if (wset.storage_bits() != 8 || aset.storage_bits() != 8)
        throw std::invalid_argument("export: " + wset.name() + " / " + aset.name() +
                                    " levels do not fit 8-bit integers");
      // Signed inputs run as the integers plus the largest one (codes 0 .. 2 max).
      if (lq.signed_input && 2 * aset.integers().back() > 255)
        throw std::invalid_argument("export: layer " + node.name + ": signed " + aset.name() +
                                    " input levels do not fit 8-bit codes with their offset");
      // The trained forward's quantised weight is scale * alpha_w * k / D_w (as float32); recover k.
      const std::vector<float> wq = engine_order(quantized, in);
      const torch::Tensor alphas = weight_alpha.detach().to(torch::kFloat64).reshape(-1).contiguous();
      const std::vector<int64_t> integers = wset.integers();
      const double dw = double(wset.denominator()), da = double(aset.denominator());
      const double a_in = act_alpha.item<double>();
      for (int64_t v : integers) level_table.push_back(static_cast<int8_t>(v));
      for (int o = 0; o < out; ++o) {
        const double a = alphas.data_ptr<double>()[alphas.numel() == 1 ? 0 : o] * weight_scale;
        for (size_t i = 0; i < per_out; ++i) {
          const long k = std::lround(double(wq[o * per_out + i]) / a * dw);
          const auto it = std::find(integers.begin(), integers.end(), int64_t(k));
          if (it == integers.end())
            throw std::invalid_argument("export: layer " + node.name + ": weight " +
                                        std::to_string(wq[o * per_out + i]) + " is not on the " + wset.name() +
                                        " grid");
          codes.push_back(static_cast<uint8_t>(it - integers.begin()));
        }
        scale[size_t(o)] *= a * a_in / (dw * da);
      }
      r.kind = uint32_t(LayerKind::quantized_conv);
      r.input_alpha = static_cast<float>(a_in);
      r.input_act_bits = static_cast<uint32_t>(lq.act_bits);
      r.input_kind = lq.kind == levels::Kind::apot ? 0 : lq.kind == levels::Kind::pot ? 1 : 2;
      r.input_denominator = static_cast<uint32_t>(aset.denominator());
      r.input_signed = lq.signed_input ? 1 : 0;
    }
    r.weight_bits = static_cast<uint32_t>(bits_for(level_table.size()));
    r.weight_level_count = static_cast<uint32_t>(level_table.size());
    const std::vector<uint8_t> packed = runtime::pack_codes(codes, static_cast<int>(r.weight_bits));
    r.weights = blob.add(packed.data(), packed.size(), 1);
    r.weight_levels = blob.add(level_table.data(), level_table.size(), 1);
    std::vector<float> fscale(scale.begin(), scale.end()), fshift(shift.begin(), shift.end());
    r.scale = blob.add(fscale.data(), fscale.size() * 4);
    r.bias = blob.add(fshift.data(), fshift.size() * 4);
    records.push_back(r);
  }
  const qat::QuantPolicy& p = model.policy();
  nlohmann::json quant_meta = p.is_full_precision() ? nlohmann::json{{"kind", "fp"}}
                                                    : nlohmann::json{{"kind", levels::to_string(p.kind)},
                                                                     {"weight_bits", p.weight_bits},
                                                                     {"act_bits", p.act_bits},
                                                                     {"int8_first_last", p.int8_first_last}};
  nlohmann::json meta{
      {"format", "apot"},
      {"version", runtime::kFormatVersion},
      {"graph", graph::graph_to_json(g)},
      {"input", {{"height", info.height}, {"width", info.width}, {"mean", info.mean}, {"std", info.std}}},
      {"class_names", info.class_names},
      {"quant", quant_meta},
      {"provenance", nlohmann::json::parse(info.provenance_json)}};
  return runtime::serialize_apot(meta.dump(), records, blob.bytes);
}

void write_file_atomically(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error(path + ": cannot write");
  const bool ok =
      std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  std::fclose(f);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write");
  }
}

}  // namespace apot::exporter
