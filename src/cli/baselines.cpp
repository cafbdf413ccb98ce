#include "baselines.h"

#include "apot/qat/network.h"

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

TorchOnednnFp32::TorchOnednnFp32(graph::Graph graph) : graph_(std::move(graph)) {
  torch::NoGradGuard no_grad;
  weights_.resize(graph_.size());
  biases_.resize(graph_.size());
  for (int i : graph_.weight_layers()) {
    const graph::Node& n = graph_[size_t(i)];
    const graph::Shape& in = graph_.input_shape_of(i);
    const int per_group = n.op == graph::Op::conv ? in.channels / n.groups : int(in.size());
    const float fan_in = float(per_group * n.kernel * n.kernel);
    weights_[size_t(i)] = n.op == graph::Op::linear
                              ? torch::randn({n.out_channels, per_group}) / std::sqrt(fan_in)
                              : torch::randn({n.out_channels, per_group, n.kernel, n.kernel}) / std::sqrt(fan_in);
    biases_[size_t(i)] = 0.1f * torch::randn({n.out_channels});
  }
}

bool TorchOnednnFp32::available() { return at::hasMKLDNN(); }

torch::Tensor TorchOnednnFp32::forward(const torch::Tensor& input) const {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> v(graph_.size());
  v[0] = input;
  for (size_t i = 1; i < graph_.size(); ++i) {
    const graph::Node& n = graph_[i];
    const torch::Tensor& x = v[size_t(n.inputs[0])];
    torch::Tensor out;
    switch (n.op) {
      case graph::Op::input: break;
      case graph::Op::conv:  // batch norm folded into the weights and bias
        out = at::mkldnn_convolution(x, weights_[i], biases_[i], {n.padding, n.padding}, {n.stride, n.stride}, {1, 1},
                                     n.groups);
        break;
      case graph::Op::linear: out = torch::linear(x.flatten(1), weights_[i], biases_[i]); break;
      default: out = qat::run_parameter_free(n, v);
    }
    v[i] = qat::activate(n, out);
  }
  return v.back().flatten(1);
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

OnednnInt8::OnednnInt8(const graph::Graph& g, int batch) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const auto consumers = g.consumers();
  std::vector<int> layer_of(g.size(), -1);
  const std::vector<int> weight_layers = g.weight_layers();
  for (size_t l = 0; l < weight_layers.size(); ++l) layer_of[size_t(weight_layers[l])] = int(l);
  // The memory of each node's value (u8, NHWC); a value of another shape than a reader expects
  // (an option-A shortcut) is replaced by a fresh one, as its contents do not change the time.
  std::vector<memory> value(g.size());
  auto source = [&](int node, const graph::Shape& s) {
    memory& mem = value[size_t(node)];
    const memory::dims dims{batch, s.channels, s.height, s.width};
    if (!mem || mem.get_desc().dims() != dims) {
      mem = memory({dims, dt::u8, tag::nhwc}, m.engine);
      std::fill_n(static_cast<uint8_t*>(mem.get_data_handle()), size_t(batch) * s.size(), uint8_t{3});
    }
    return mem;
  };
  for (size_t i = 1; i < g.size(); ++i) {
    const graph::Node& n = g[i];
    if (n.op != graph::Op::conv) {
      if (!n.inputs.empty() && !value[i]) value[i] = value[size_t(n.inputs[0])];
      if (n.op == graph::Op::max_pool && n.kernel == 3 && n.stride == 2 && n.padding == 1) {
        const memory src = source(n.inputs[0], g.input_shape_of(int(i)));
        const memory::desc pool_md({batch, n.shape.channels, n.shape.height, n.shape.width}, dt::u8, tag::nhwc);
        const dnnl::pooling_forward::desc pool(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                               src.get_desc(), pool_md, {2, 2}, {3, 3}, {1, 1}, {1, 1});
        const dnnl::pooling_forward::primitive_desc ppd(pool, m.engine);
        memory pooled(ppd.dst_desc(), m.engine);
        m.primitives.push_back(dnnl::pooling_forward(ppd));
        m.arguments.push_back({{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, pooled}});
        m.layer.push_back(-1);
        value[i] = pooled;
      }
      continue;
    }
    const graph::Shape& in = g.input_shape_of(int(i));
    const int cin = in.channels / n.groups, cout = n.out_channels / n.groups;
    const memory src = source(n.inputs[0], in);
    const memory::desc dst_md({batch, n.out_channels, n.shape.height, n.shape.width}, dt::u8, tag::nhwc);
    const memory::dims wdims = n.groups == 1 ? memory::dims{n.out_channels, cin, n.kernel, n.kernel}
                                             : memory::dims{n.groups, cout, cin, n.kernel, n.kernel};
    const memory::desc w_md(wdims, dt::s8, tag::any);
    const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               src.get_desc(), w_md, dst_md, {n.stride, n.stride},
                                               {n.padding, n.padding}, {n.padding, n.padding});
    // A sum that reads only this convolution's value becomes its sum post-op.
    const bool fused = consumers[i].size() == 1 && g[size_t(consumers[i][0])].op == graph::Op::add &&
                       n.activation == graph::Activation::none;
    const graph::Node& last = fused ? g[size_t(consumers[i][0])] : n;
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {1.0f / 64});
    dnnl::post_ops ops;
    if (fused) ops.append_sum(1.0f);
    if (last.activation == graph::Activation::relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (last.activation == graph::Activation::clamp)  // ReLU6
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, last.clamp_lo, last.clamp_hi);
    attr.set_post_ops(ops);
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, m.engine);
    memory user_w({wdims, dt::s8, n.groups == 1 ? tag::oihw : tag::goihw}, m.engine);
    int8_t* wp = static_cast<int8_t*>(user_w.get_data_handle());
    for (int64_t k = 0, count = int64_t(n.out_channels) * cin * n.kernel * n.kernel; k < count; ++k)
      wp[k] = static_cast<int8_t>(k % 7 - 3);
    memory weights(pd.weights_desc(), m.engine);
    dnnl::reorder(user_w, weights).execute(m.stream, user_w, weights);
    memory dst(pd.dst_desc(), m.engine);
    std::fill_n(static_cast<uint8_t*>(dst.get_data_handle()), pd.dst_desc().get_size(), uint8_t{0});
    m.primitives.push_back(dnnl::convolution_forward(pd));
    m.arguments.push_back({{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
    m.layer.push_back(layer_of[i]);
    value[i] = dst;
    if (fused) value[size_t(consumers[i][0])] = dst;
  }
  m.layers = weight_layers.size();
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
  for (size_t i = 0; i < impl_->primitives.size(); ++i)
    impl_->primitives[i].execute(impl_->stream, impl_->arguments[i]);
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
OnednnInt8::OnednnInt8(const graph::Graph&, int) {
  throw std::runtime_error("this apot was built without oneDNN 2.x (libdnnl-dev)");
}
OnednnInt8::~OnednnInt8() = default;
bool OnednnInt8::available() { return false; }
std::string OnednnInt8::isa() const { return "none"; }
void OnednnInt8::run(int) const {}
std::vector<std::vector<double>> OnednnInt8::layer_samples(int) const { return {}; }

#endif

}  // namespace apot::cli
