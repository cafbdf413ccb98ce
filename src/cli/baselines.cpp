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
  std::vector<int> layer;             // the weight layer of each primitive; -1 for the steps between them
  std::vector<dnnl::memory> buffers;  // every value, also those only views and reorders refer to
  size_t layers = 0;
};

namespace {
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// A node's activation as a post-op (ReLU, or ReLU6's clip).
void append_activation(dnnl::post_ops& ops, const graph::Node& n) {
  if (n.activation == graph::Activation::relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  if (n.activation == graph::Activation::clamp)
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, n.clamp_lo, n.clamp_hi);
}
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
  auto dims_of = [&](const graph::Shape& s) { return memory::dims{batch, s.channels, s.height, s.width}; };
  auto source = [&](int node, const graph::Shape& s) {
    memory& mem = value[size_t(node)];
    const memory::dims dims = dims_of(s);
    if (!mem || mem.get_desc().dims() != dims) {
      if (mem) m.buffers.push_back(mem);  // replaced, but a view may refer to it
      mem = memory({dims, dt::u8, tag::nhwc}, m.engine);
      std::fill_n(static_cast<uint8_t*>(mem.get_data_handle()), size_t(batch) * s.size(), uint8_t{3});
    }
    return mem;
  };
  auto add = [&](dnnl::primitive p, std::unordered_map<int, memory> args, int layer = -1) {
    m.primitives.push_back(std::move(p));
    m.arguments.push_back(std::move(args));
    m.layer.push_back(layer);
  };
  for (size_t i = 1; i < g.size(); ++i) {
    const graph::Node& n = g[i];
    if (value[i]) continue;  // a sum fused into its convolution
    // The steps between the convolutions, as an int8 network in oneDNN runs them on u8 values
    // of one scale: the least work any int8 deployment does there (no requantisation).
    switch (n.op) {
      case graph::Op::input:
      case graph::Op::conv: break;
      case graph::Op::max_pool:
      case graph::Op::avg_pool:
      case graph::Op::global_avg_pool: {
        const graph::Shape& is = g.input_shape_of(int(i));
        const memory src = source(n.inputs[0], is);
        const bool global = n.op == graph::Op::global_avg_pool;
        const memory::dims kernel = global ? memory::dims{is.height, is.width} : memory::dims{n.kernel, n.kernel};
        const memory::dims stride = global ? memory::dims{1, 1} : memory::dims{n.stride, n.stride};
        const memory::dims pad = global ? memory::dims{0, 0} : memory::dims{n.padding, n.padding};
        const dnnl::pooling_forward::desc pool(
            dnnl::prop_kind::forward_inference,
            n.op == graph::Op::max_pool ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_include_padding,
            src.get_desc(), memory::desc(dims_of(n.shape), dt::u8, tag::nhwc), stride, kernel, pad, pad);
        const dnnl::pooling_forward::primitive_desc ppd(pool, m.engine);
        memory pooled(ppd.dst_desc(), m.engine);
        add(dnnl::pooling_forward(ppd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, pooled}});
        value[i] = pooled;
        break;
      }
      case graph::Op::channel_slice: {  // a view; a copy only for readers other than a concat
        const memory src = source(n.inputs[0], g.input_shape_of(int(i)));
        const memory view(src.get_desc().submemory_desc(dims_of(n.shape), {0, n.begin, 0, 0}), m.engine,
                          src.get_data_handle());
        bool concat_only = true;
        for (int c : consumers[i]) concat_only = concat_only && g[size_t(c)].op == graph::Op::concat;
        value[i] = view;
        if (!concat_only) {
          memory dense({dims_of(n.shape), dt::u8, tag::nhwc}, m.engine);
          add(dnnl::reorder(view, dense), {{DNNL_ARG_FROM, view}, {DNNL_ARG_TO, dense}});
          value[i] = dense;
        }
        break;
      }
      case graph::Op::concat: {
        std::vector<memory::desc> parts;
        std::unordered_map<int, memory> args;
        for (size_t k = 0; k < n.inputs.size(); ++k) {
          const memory part = source(n.inputs[k], g[size_t(n.inputs[k])].shape);
          parts.push_back(part.get_desc());
          args[DNNL_ARG_MULTIPLE_SRC + int(k)] = part;
        }
        const dnnl::concat::primitive_desc cpd(memory::desc(dims_of(n.shape), dt::u8, tag::nhwc), 1, parts, m.engine);
        memory joined(cpd.dst_desc(), m.engine);
        args[DNNL_ARG_DST] = joined;
        add(dnnl::concat(cpd), std::move(args));
        value[i] = joined;
        break;
      }
      case graph::Op::channel_shuffle: {  // a reorder between two strided views of the channels
        // (oneDNN 2.6's shuffle primitive has only a reference implementation for u8: 2-3x slower)
        const memory src = source(n.inputs[0], n.shape);
        const graph::Shape& s = n.shape;
        const memory::dim groups = n.groups, per = s.channels / n.groups, c = s.channels;
        const memory::dims dims{batch, groups, per, s.height, s.width};
        const memory::dim image = c * s.height * s.width, row = c * s.width;
        const memory::desc from(dims, dt::u8, memory::dims{image, per, 1, row, c});
        const memory::desc to(dims, dt::u8, memory::dims{image, 1, groups, row, c});
        memory shuffled({dims_of(s), dt::u8, tag::nhwc}, m.engine);
        const memory a(from, m.engine, src.get_data_handle()), b(to, m.engine, shuffled.get_data_handle());
        add(dnnl::reorder(a, b), {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}});
        value[i] = shuffled;
        break;
      }
      case graph::Op::add: {  // a sum no convolution took as its post-op
        const memory a = source(n.inputs[0], n.shape), b = source(n.inputs[1], n.shape);
        dnnl::primitive_attr attr;
        dnnl::post_ops ops;
        append_activation(ops, n);
        attr.set_post_ops(ops);
        const dnnl::binary::desc bd(dnnl::algorithm::binary_add, a.get_desc(), b.get_desc(),
                                    memory::desc(dims_of(n.shape), dt::u8, tag::nhwc));
        const dnnl::binary::primitive_desc bpd(bd, attr, m.engine);
        memory sum(bpd.dst_desc(), m.engine);
        add(dnnl::binary(bpd), {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, sum}});
        value[i] = sum;
        break;
      }
      case graph::Op::linear: {  // int8 inner product on the flattened value; the network's
        // last one writes f32 logits
        const graph::Shape& is = g.input_shape_of(int(i));
        const memory::desc features(memory::dims{batch, memory::dim(is.size())}, dt::u8, tag::nc);
        const memory src(features, m.engine, source(n.inputs[0], is).get_data_handle());
        const memory::dims wdims{n.out_channels, memory::dim(is.size())};
        const bool last = i + 1 == g.size();
        const memory::desc dst_md({batch, n.out_channels}, last ? dt::f32 : dt::u8, tag::nc);
        const dnnl::inner_product_forward::desc ipd(dnnl::prop_kind::forward_inference, src.get_desc(),
                                                    memory::desc(wdims, dt::s8, tag::any), dst_md);
        dnnl::primitive_attr attr;
        attr.set_output_scales(0, {1.0f / 64});
        dnnl::post_ops ops;
        append_activation(ops, n);
        attr.set_post_ops(ops);
        const dnnl::inner_product_forward::primitive_desc pd(ipd, attr, m.engine);
        memory weights(pd.weights_desc(), m.engine);
        std::fill_n(static_cast<int8_t*>(weights.get_data_handle()), pd.weights_desc().get_size(), int8_t{1});
        memory dst(pd.dst_desc(), m.engine);
        add(dnnl::inner_product_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}},
            layer_of[i]);
        value[i] = dst;
        break;
      }
      case graph::Op::flatten:
      case graph::Op::shortcut_pad:  // option A: its reader's sum reads a fresh buffer of its shape
        value[i] = value[size_t(n.inputs[0])];
        break;
    }
    if (n.op != graph::Op::conv) continue;
    const graph::Shape& in = g.input_shape_of(int(i));
    const int cin = in.channels / n.groups, cout = n.out_channels / n.groups;
    const memory src = source(n.inputs[0], in);
    const memory::desc dst_md(dims_of(n.shape), dt::u8, tag::nhwc);
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
    append_activation(ops, last);
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
    add(dnnl::convolution_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}},
        layer_of[i]);
    value[i] = dst;
    if (fused) value[size_t(consumers[i][0])] = dst;
  }
  for (const memory& v : value) m.buffers.push_back(v);
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

void OnednnInt8::run_weight_layers(int threads) const {
  omp_set_num_threads(threads);
  for (size_t i = 0; i < impl_->primitives.size(); ++i)
    if (impl_->layer[i] >= 0) impl_->primitives[i].execute(impl_->stream, impl_->arguments[i]);
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
void OnednnInt8::run_weight_layers(int) const {}
std::vector<std::vector<double>> OnednnInt8::layer_samples(int) const { return {}; }

#endif

}  // namespace apot::cli
