// Export: integer weights recovered from the trained fake-quantised weights, folded batch norm.
#include "apot/export/export.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

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

// The batch norm after a convolution: scale and shift per channel (eval mode).
void batch_norm_of(torch::nn::BatchNorm2dImpl& bn, std::vector<double>& scale, std::vector<double>& shift) {
  const auto gamma = bn.weight.detach().to(torch::kFloat64), beta = bn.bias.detach().to(torch::kFloat64);
  const auto mean = bn.running_mean.to(torch::kFloat64), var = bn.running_var.to(torch::kFloat64);
  const auto s = gamma / (var + bn.options.eps()).sqrt();
  const auto b = beta - s * mean;
  scale.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
  shift.assign(b.data_ptr<double>(), b.data_ptr<double>() + b.numel());
}

std::string bn_name(const std::string& conv) {
  const size_t dot = conv.rfind('.');
  const std::string last = dot == std::string::npos ? conv : conv.substr(dot + 1);
  const std::string prefix = dot == std::string::npos ? "" : conv.substr(0, dot + 1);
  if (last == "0") return prefix + "1";                              // shortcut.0 -> shortcut.1
  if (last.rfind("conv", 0) == 0) return prefix + "bn" + last.substr(4);  // convN -> bnN
  return "";
}

// Reorders [out][in][kh][kw] to [out][kh][kw][in] (the engine's im2col order).
std::vector<float> to_ohwi(const torch::Tensor& w) {
  const torch::Tensor t = w.dim() == 4 ? w.permute({0, 2, 3, 1}).contiguous() : w.contiguous();
  return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
}

int bits_for(size_t levels) {
  int b = 1;
  while ((size_t(1) << b) < levels) ++b;
  return b;
}

}  // namespace

std::vector<uint8_t> export_model(qat::ResNet& model, const ExportInfo& info) {
  torch::NoGradGuard no_grad;
  model->eval();
  const levels::ResNetSpec& spec = model->spec();
  const auto layers = levels::enumerate_layers(spec, info.height, info.width);
  auto modules = model->named_modules();
  Blob blob;
  std::vector<LayerRecord> records;
  nlohmann::json quant_meta;
  for (const levels::LayerInfo& li : layers) {
    LayerRecord r{};
    r.in_channels = li.in_channels;
    r.out_channels = li.out_channels;
    r.kernel = li.kernel;
    r.stride = li.stride;
    r.padding = li.padding;
    std::shared_ptr<torch::nn::Module> m = modules[li.name];
    qat::QuantOptions q;
    torch::Tensor weight, weight_alpha, act_alpha, bias;
    qat::QuantConv2dImpl* conv = dynamic_cast<qat::QuantConv2dImpl*>(m.get());
    if (auto* c = conv) {
      q = c->quant_options();
      weight = c->weight;
      weight_alpha = c->weight_alpha;
      act_alpha = c->act_alpha;
    } else if (auto* l = dynamic_cast<qat::QuantLinearImpl*>(m.get())) {
      q = l->quant_options();
      weight = l->weight;
      bias = l->bias;
    } else {
      throw std::invalid_argument("export: no layer " + li.name + " in the model");
    }
    const int out = li.out_channels;
    std::vector<double> scale(out, 1.0), shift(out, 0.0);
    if (!li.is_linear) {
      auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(modules[bn_name(li.name)]);
      if (!bn) throw std::invalid_argument("export: no batch norm after " + li.name);
      batch_norm_of(*bn, scale, shift);
    } else if (bias.defined()) {
      const torch::Tensor b = bias.detach().to(torch::kFloat64).contiguous();
      shift.assign(b.data_ptr<double>(), b.data_ptr<double>() + out);
    }
    std::vector<int8_t> level_table;
    std::vector<uint8_t> codes;
    const std::vector<float> w = to_ohwi(weight.detach().to(torch::kFloat32));
    const size_t per_out = w.size() / out;
    if (li.first || li.last) {
      if (!q.int8_weights)
        throw std::invalid_argument("export: layer " + li.name +
                                    " must have int8 weights (train with quant.int8_first_last = true)");
      double max_abs = 0;
      for (float v : w) max_abs = std::max(max_abs, double(std::fabs(v)));
      const double step = max_abs > 0 ? max_abs / 127.0 : 1.0;
      for (int v = -127; v <= 127; ++v) level_table.push_back(static_cast<int8_t>(v));
      for (float v : w) codes.push_back(static_cast<uint8_t>(std::clamp(std::lround(v / step), -127L, 127L) + 127));
      for (int o = 0; o < out; ++o) scale[o] *= step;
      r.kind = uint32_t(li.first ? LayerKind::float_conv : LayerKind::float_linear);
    } else {
      if (!q.quantizes_weight() || !q.quantizes_input() || q.int8_weights)
        throw std::invalid_argument("export: layer " + li.name + " is not quantised (" + q.describe() + ")");
      const levels::LevelSet wset = levels::LevelSet::make(q.kind, q.weight_bits, levels::Role::weight);
      const levels::LevelSet aset = levels::LevelSet::make(q.kind, q.act_bits, levels::Role::activation);
      if (wset.storage_bits() != 8 || aset.storage_bits() != 8)
        throw std::invalid_argument("export: " + wset.name() + " / " + aset.name() + " levels do not fit 8-bit integers");
      // The trained forward's quantised weight is alpha_w * k / D_w (as float32); recover k.
      const std::vector<float> wq = to_ohwi(conv->quantized_weight().detach());
      const torch::Tensor alphas = weight_alpha.detach().to(torch::kFloat64).reshape(-1).contiguous();
      const std::vector<int64_t> integers = wset.integers();
      const double dw = double(wset.denominator()), da = double(aset.denominator());
      const double a_in = act_alpha.item<double>();
      for (int64_t v : integers) level_table.push_back(static_cast<int8_t>(v));
      for (int o = 0; o < out; ++o) {
        const double a = alphas.data_ptr<double>()[alphas.numel() == 1 ? 0 : o];
        for (size_t i = 0; i < per_out; ++i) {
          const long k = std::lround(double(wq[o * per_out + i]) / a * dw);
          const auto it = std::find(integers.begin(), integers.end(), int64_t(k));
          if (it == integers.end())
            throw std::invalid_argument("export: layer " + li.name + ": weight " + std::to_string(wq[o * per_out + i]) +
                                        " is not on the " + wset.name() + " grid");
          codes.push_back(static_cast<uint8_t>(it - integers.begin()));
        }
        scale[o] *= a * a_in / (dw * da);
      }
      r.kind = uint32_t(LayerKind::quantized_conv);
      r.input_alpha = static_cast<float>(a_in);
      r.input_act_bits = static_cast<uint32_t>(q.act_bits);
      r.input_kind = q.kind == levels::Kind::apot ? 0 : q.kind == levels::Kind::pot ? 1 : 2;
      r.input_denominator = static_cast<uint32_t>(aset.denominator());
      if (quant_meta.empty())
        quant_meta = {{"kind", levels::to_string(q.kind)},
                      {"weight_bits", q.weight_bits},
                      {"act_bits", q.act_bits},
                      {"int8_first_last", true},
                      {"weight_levels", {{"integers", integers}, {"denominator", wset.denominator()}}},
                      {"act_levels", {{"integers", aset.integers()}, {"denominator", aset.denominator()}}}};
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
  nlohmann::json meta{{"format", "apot"},
                      {"version", runtime::kFormatVersion},
                      {"arch", spec.name},
                      {"shortcut", spec.shortcut == levels::Shortcut::B ? "B" : "A"},
                      {"in_channels", spec.in_channels},
                      {"num_classes", spec.num_classes},
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
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0 &&
                  ::fsync(::fileno(f)) == 0;
  std::fclose(f);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write");
  }
}

}  // namespace apot::exporter
