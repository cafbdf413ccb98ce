#include "baselines.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <stdexcept>
#include <tuple>

// The oneDNN 2.x API (Debian 12's libdnnl 2.6); with another major version the baseline is off.
#ifdef APOT_WITH_DNNL
#include <oneapi/dnnl/dnnl_version.h>
#if DNNL_VERSION_MAJOR == 2
#define APOT_DNNL2 1
#include <oneapi/dnnl/dnnl.hpp>
#endif
#endif

namespace apot::cli {

TorchOnednnFp32::TorchOnednnFp32(const levels::ResNetSpec& spec, int height, int width)
    : spec_(spec), layers_(levels::enumerate_layers(spec, height, width)), blocks_(levels::enumerate_blocks(spec)) {
  torch::NoGradGuard no_grad;
  for (const levels::LayerInfo& l : layers_) {
    const float fan_in = float(l.in_channels * l.kernel * l.kernel);
    weights_.push_back(l.is_linear ? torch::randn({l.out_channels, l.in_channels}) / std::sqrt(fan_in)
                                   : torch::randn({l.out_channels, l.in_channels, l.kernel, l.kernel}) / std::sqrt(fan_in));
    biases_.push_back(0.1f * torch::randn({l.out_channels}));
  }
}

bool TorchOnednnFp32::available() { return at::hasMKLDNN(); }

torch::Tensor TorchOnednnFp32::conv(const torch::Tensor& x, int layer) const {
  const levels::LayerInfo& l = layers_[layer];
  return at::mkldnn_convolution(x, weights_[layer], biases_[layer], {l.padding, l.padding}, {l.stride, l.stride},
                                {1, 1}, 1);
}

torch::Tensor TorchOnednnFp32::forward(const torch::Tensor& input) const {
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::relu(conv(input, 0));
  if (spec_.stem == levels::Stem::imagenet) x = torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  for (const levels::BlockInfo& b : blocks_) {
    torch::Tensor out = torch::relu(conv(x, b.conv[0]));
    if (b.conv[2] >= 0) out = torch::relu(conv(out, b.conv[1]));
    out = conv(out, b.last_conv());
    torch::Tensor shortcut = x;
    if (b.projection >= 0) {
      shortcut = conv(x, b.projection);
    } else if (b.stride != 1 || b.in_planes != b.out_planes) {
      using namespace torch::indexing;
      const int64_t pad = (b.out_planes - b.in_planes) / 2;
      shortcut = torch::constant_pad_nd(x.index({Slice(), Slice(), Slice(None, None, b.stride), Slice(None, None, b.stride)}),
                                        {0, 0, 0, 0, pad, pad});
    }
    x = torch::relu(out + shortcut);
  }
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return torch::linear(x, weights_.back(), biases_.back());
}

#ifdef APOT_DNNL2

struct OnednnInt8::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::vector<dnnl::primitive> primitives;
  std::vector<std::unordered_map<int, dnnl::memory>> arguments;
  std::vector<int> layer;  // the layer of each primitive; -1 for the max-pool
  size_t layers = 0;
};

namespace {
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;
}  // namespace

OnednnInt8::OnednnInt8(const levels::ResNetSpec& spec, int height, int width, int batch) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const std::vector<levels::LayerInfo> layers = levels::enumerate_layers(spec, height, width);
  const std::vector<levels::BlockInfo> blocks = levels::enumerate_blocks(spec);
  std::vector<bool> residual_add(layers.size(), false), relu(layers.size(), true);
  for (const levels::BlockInfo& b : blocks) {
    residual_add[b.last_conv()] = true;
    if (b.projection >= 0) relu[b.projection] = false;
  }
  // The latest activation of each shape: a layer reads the one its producer wrote.
  std::map<std::tuple<int, int, int>, memory> latest;
  auto activation = [&](int c, int h, int w) {
    auto key = std::make_tuple(c, h, w);
    auto it = latest.find(key);
    if (it != latest.end()) return it->second;
    memory mem({{batch, c, h, w}, dt::u8, tag::nhwc}, m.engine);
    std::fill_n(static_cast<uint8_t*>(mem.get_data_handle()), size_t(batch) * c * h * w, uint8_t{3});
    return latest[key] = mem;
  };
  for (size_t i = 0; i + 1 < layers.size(); ++i) {  // the classifier is left out
    const levels::LayerInfo& l = layers[i];
    const memory src = activation(l.in_channels, l.in_height, l.in_width);
    const memory::desc dst_md({batch, l.out_channels, l.out_height, l.out_width}, dt::u8, tag::nhwc);
    const memory::desc w_md({l.out_channels, l.in_channels, l.kernel, l.kernel}, dt::s8, tag::any);
    const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               src.get_desc(), w_md, dst_md, {l.stride, l.stride},
                                               {l.padding, l.padding}, {l.padding, l.padding});
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {1.0f / 64});
    dnnl::post_ops ops;
    if (residual_add[i]) ops.append_sum(1.0f);
    if (relu[i]) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, m.engine);
    memory user_w({{l.out_channels, l.in_channels, l.kernel, l.kernel}, dt::s8, tag::oihw}, m.engine);
    int8_t* wp = static_cast<int8_t*>(user_w.get_data_handle());
    for (int64_t k = 0, n = int64_t(l.out_channels) * l.in_channels * l.kernel * l.kernel; k < n; ++k)
      wp[k] = static_cast<int8_t>(k % 7 - 3);
    memory weights(pd.weights_desc(), m.engine);
    dnnl::reorder(user_w, weights).execute(m.stream, user_w, weights);
    memory dst(pd.dst_desc(), m.engine);
    std::fill_n(static_cast<uint8_t*>(dst.get_data_handle()), pd.dst_desc().get_size(), uint8_t{0});
    m.primitives.push_back(dnnl::convolution_forward(pd));
    m.arguments.push_back({{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
    m.layer.push_back(int(i));
    latest[std::make_tuple(l.out_channels, l.out_height, l.out_width)] = dst;
    if (l.first && spec.stem == levels::Stem::imagenet) {  // max-pool 3x3, stride 2, padding 1
      const int ph = (l.out_height + 2 - 3) / 2 + 1, pw = (l.out_width + 2 - 3) / 2 + 1;
      const memory::desc pool_md({batch, l.out_channels, ph, pw}, dt::u8, tag::nhwc);
      const dnnl::pooling_forward::desc pool(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                             dst.get_desc(), pool_md, {2, 2}, {3, 3}, {1, 1}, {1, 1});
      const dnnl::pooling_forward::primitive_desc ppd(pool, m.engine);
      memory pooled(ppd.dst_desc(), m.engine);
      m.primitives.push_back(dnnl::pooling_forward(ppd));
      m.arguments.push_back({{DNNL_ARG_SRC, dst}, {DNNL_ARG_DST, pooled}});
      m.layer.push_back(-1);
      latest[std::make_tuple(l.out_channels, ph, pw)] = pooled;
    }
  }
  m.layers = layers.size();
  m.stream.wait();
}

OnednnInt8::~OnednnInt8() = default;
bool OnednnInt8::available() { return true; }

std::string OnednnInt8::isa() const {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx2: return "avx2";
    default: return "other";
  }
}

void OnednnInt8::run(int threads) const {
  omp_set_num_threads(threads);
  for (size_t i = 0; i < impl_->primitives.size(); ++i) impl_->primitives[i].execute(impl_->stream, impl_->arguments[i]);
  impl_->stream.wait();
}

std::vector<std::vector<double>> OnednnInt8::layer_samples(int reps) const {
  std::vector<std::vector<double>> samples(impl_->layers);
  for (int r = 0; r < std::max(reps, 1); ++r)
    for (size_t i = 0; i < impl_->primitives.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      impl_->primitives[i].execute(impl_->stream, impl_->arguments[i]);
      impl_->stream.wait();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (impl_->layer[i] >= 0) samples[size_t(impl_->layer[i])].push_back(s);
    }
  return samples;
}

#else  // built without oneDNN

struct OnednnInt8::Impl {};
OnednnInt8::OnednnInt8(const levels::ResNetSpec&, int, int, int) {
  throw std::runtime_error("this apot was built without oneDNN 2.x (libdnnl-dev)");
}
OnednnInt8::~OnednnInt8() = default;
bool OnednnInt8::available() { return false; }
std::string OnednnInt8::isa() const { return "none"; }
void OnednnInt8::run(int) const {}
std::vector<std::vector<double>> OnednnInt8::layer_samples(int) const { return {}; }

#endif

}  // namespace apot::cli
