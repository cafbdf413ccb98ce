// ONNX import, one method per ONNX op: each maps a node onto apot's graph (fusing batch norms,
// activations and biases into the layer before them) or says in one line why it cannot.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "apot/graph/serialize.h"
#include "importer.h"

namespace apot::onnx_import::detail {

void Importer::convert(const ::onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  if (!n.domain().empty() && n.domain() != "ai.onnx") fail(n, "ops of domain '" + n.domain() + "' are not supported");
  if (n.output_size() < 1) fail(n, "has no output");
  for (int i = 1; i < n.output_size(); ++i)
    if (!n.output(i).empty() && uses_.count(n.output(i)) && !(op == "Dropout"))
      fail(n, "only its first output may be used");
  if (op == "Conv") return conv(n);
  if (op == "BatchNormalization") return batch_norm(n);
  if (op == "Relu") return relu(n);
  if (op == "Clip") return clip(n);
  if (op == "Add") return add(n);
  if (op == "MaxPool" || op == "AveragePool") return pool(n);
  if (op == "GlobalAveragePool") return simple(n, Op::global_avg_pool);
  if (op == "Flatten") {
    if (attr_int(n, "axis", 1) != 1) fail(n, "only axis 1 is supported");
    return simple(n, Op::flatten);
  }
  if (op == "Reshape") return reshape(n);
  if (op == "Gemm") return gemm(n);
  if (op == "MatMul") return matmul(n);
  if (op == "Identity" || op == "Dropout") return alias(n, data(n, 0));
  if (op == "Pad") return pad(n);
  if (op == "Slice") return slice(n);
  fail(n, "op not supported (apot imports " + std::string(kSupported) + ")");
}

void Importer::conv(const ::onnx::NodeProto& n) {
  const Const& w = constant(n, 1);
  if (w.dims.size() != 4 || w.dims[2] != w.dims[3]) fail(n, "the weight must be O x I x k x k");
  const Window win = window(n, int(w.dims[2]));
  if (win.kernel != w.dims[2]) fail(n, "kernel_shape does not match the weight");
  Node nd;
  nd.op = Op::conv;
  nd.inputs = {data(n, 0)};
  nd.name = weight_name(n, 1);
  nd.out_channels = int(w.dims[0]);
  nd.kernel = win.kernel;
  nd.stride = win.stride;
  nd.padding = win.padding;
  nd.groups = int(attr_int(n, "group", 1));
  out_.weights[nd.name + ".weight"] = to_array(w);
  if (n.input_size() > 2 && !n.input(2).empty()) {
    const Const& b = constant(n, 2);
    if (b.count() != w.dims[0]) fail(n, "the bias does not match the output channels");
    nd.bias = true;
    out_.weights[nd.name + ".bias"] = to_array(b);
    out_.weights[nd.name + ".bias"].shape = {w.dims[0]};
  }
  add_node(std::move(nd), n);
}

void Importer::batch_norm(const ::onnx::NodeProto& n) {
  const int p = fusable(n, {Op::conv, Op::linear}, false);
  Node& pn = node(p);
  if (!pn.batch_norm.empty()) fail(n, "follows '" + pn.name + "', which already has a batch norm");
  if (n.input_size() != 5) fail(n, "needs five inputs (x, scale, bias, mean, variance)");
  if (attr_int(n, "training_mode", 0) != 0) fail(n, "training_mode must be 0 (export in eval mode)");
  const int64_t channels = pn.out_channels;
  std::string base = strip_suffix(n.input(1), ".weight");
  if (base.find("::") != std::string::npos) base.clear();
  if (base.empty()) base = scoped_name(n.name(), false);
  const std::string bn = unique(base, pn.name + ".bn");
  static const char* const names[] = {"weight", "bias", "running_mean", "running_var"};
  for (int i = 0; i < 4; ++i) {
    const Const& c = constant(n, i + 1);
    if (c.count() != channels)
      fail(n, std::string(names[i]) + " has " + std::to_string(c.count()) + " values for " + std::to_string(channels) +
                  " channels");
    Array a = to_array(c);
    a.shape = {channels};
    out_.weights[bn + "." + names[i]] = std::move(a);
  }
  // apot's batch norms use PyTorch's epsilon (1e-5f); under another epsilon the scale becomes
  // gamma * sqrt((var + 1e-5) / (var + epsilon)), which computes the same function.
  const float eps = attr_float(n, "epsilon", 1e-5f);
  if (!(eps >= 0)) fail(n, "a negative epsilon");
  if (eps != 1e-5f) {
    const auto& var = out_.weights[bn + ".running_var"].values;
    auto& gamma = out_.weights[bn + ".weight"].values;
    for (size_t c = 0; c < gamma.size(); ++c) {
      if (!(double(var[c]) + eps > 0)) fail(n, "a variance plus epsilon that is not positive");
      gamma[c] = float(double(gamma[c]) * std::sqrt((double(var[c]) + 1e-5) / (double(var[c]) + eps)));
    }
  }
  pn.batch_norm = bn;
  alias(n, p);
}

void Importer::relu(const ::onnx::NodeProto& n) {
  const int p = data(n, 0);
  if (node(p).non_negative()) return alias(n, p);  // ReLU of values >= 0 changes nothing
  fusable(n, {Op::conv, Op::linear, Op::add}, false);
  node(p).activation = Activation::relu;
  alias(n, p);
}

void Importer::clip(const ::onnx::NodeProto& n) {
  double lo = -INFINITY, hi = INFINITY;
  if (const auto* a = attr(n, "min")) lo = a->f();  // opset < 11
  if (const auto* a = attr(n, "max")) hi = a->f();
  if (n.input_size() > 1 && !n.input(1).empty()) lo = scalar(n, 1);
  if (n.input_size() > 2 && !n.input(2).empty()) hi = scalar(n, 2);
  if (!std::isfinite(hi)) fail(n, "a clip needs a finite maximum");
  const int p = fusable(n, {Op::conv, Op::linear, Op::add}, true);
  Node& pn = node(p);
  if (pn.activation == Activation::relu) {
    lo = std::max(lo, 0.0);
  } else if (pn.activation == Activation::clamp) {
    lo = std::max(lo, double(pn.clamp_lo));
    hi = std::min(hi, double(pn.clamp_hi));
  }
  if (!std::isfinite(lo) || !(lo < hi)) fail(n, "a clip needs a finite minimum below its maximum");
  pn.activation = Activation::clamp;
  pn.clamp_lo = float(lo);
  pn.clamp_hi = float(hi);
  alias(n, p);
}

void Importer::add(const ::onnx::NodeProto& n) {
  if (n.input_size() != 2) fail(n, "needs two inputs");
  const bool c0 = is_const(n.input(0)), c1 = is_const(n.input(1));
  if (c0 && c1) fail(n, "adds two constants");
  if (c0 || c1) return add_bias(n, constant(n, c0 ? 0 : 1), c0 ? 1 : 0);
  Node nd;
  nd.op = Op::add;
  nd.inputs = {data(n, 0), data(n, 1)};
  nd.name = unique(scoped_name(n.name(), true), "add_" + std::to_string(out_.graph.size()));
  add_node(std::move(nd), n);
}

// Add of a constant: the bias of the conv or linear before it (MatMul + Add, Conv + Add).
void Importer::add_bias(const ::onnx::NodeProto& n, const Const& b, int data_input) {
  const int p = data(n, data_input);
  Node& pn = node(p);
  if (!pn.has_weights() || !pn.batch_norm.empty() || pn.activation != Activation::none || node_uses_[size_t(p)] > 1)
    fail(n, "adds a constant to a value that is not the plain output of a Conv, Gemm or MatMul");
  // ONNX broadcasts from the last axis: a per-channel bias is C x 1 x 1 after a Conv, C after
  // a Gemm or MatMul (leading 1s aside).
  std::vector<int64_t> dims = b.dims;
  while (!dims.empty() && dims.front() == 1 && int64_t(dims.size()) > (pn.op == Op::conv ? 3 : 1))
    dims.erase(dims.begin());
  const std::vector<int64_t> want =
      pn.op == Op::conv ? std::vector<int64_t>{pn.out_channels, 1, 1} : std::vector<int64_t>{pn.out_channels};
  if (dims != want)
    fail(n, "adds a constant of shape " + dims_str(b.dims) + " to '" + pn.name + "'; only a per-channel bias (" +
                dims_str(want) + ") is supported");
  Array& bias = out_.weights[pn.name + ".bias"];
  if (!pn.bias) bias = Array{{int64_t(pn.out_channels)}, std::vector<float>(size_t(pn.out_channels), 0.f)};
  for (size_t i = 0; i < bias.values.size(); ++i) bias.values[i] += float(b.values[i]);
  pn.bias = true;
  alias(n, p);
}

void Importer::pool(const ::onnx::NodeProto& n) {
  const bool max = n.op_type() == "MaxPool";
  if (attr_ints(n, "kernel_shape").empty()) fail(n, "needs kernel_shape");
  const Window win = window(n, 0);
  if (max && attr_int(n, "storage_order", 0) != 0) fail(n, "storage_order 1 is not supported");
  if (!max && win.padding > 0 && attr_int(n, "count_include_pad", 0) == 0)
    fail(n, "padding that the average leaves out (count_include_pad 0) is not supported");
  Node nd;
  nd.op = max ? Op::max_pool : Op::avg_pool;
  nd.inputs = {data(n, 0)};
  nd.name = unique(scoped_name(n.name(), true), graph::to_string(nd.op));
  nd.kernel = win.kernel;
  nd.stride = win.stride;
  nd.padding = win.padding;
  add_node(std::move(nd), n);
}

void Importer::simple(const ::onnx::NodeProto& n, Op op) {
  Node nd;
  nd.op = op;
  nd.inputs = {data(n, 0)};
  nd.name = unique(scoped_name(n.name(), true), graph::to_string(op));
  add_node(std::move(nd), n);
}

// A Reshape is a flatten when its target is [N, -1] or [N, C*H*W] (a constant), or when it
// feeds a Gemm or MatMul (which flatten their input anyway) with a target computed from
// Shape.
void Importer::reshape(const ::onnx::NodeProto& n) {
  if (n.input_size() > 1 && is_const(n.input(1))) {
    const Const& s = consts_.at(n.input(1));
    if (s.count() != 2 || s.values[1] == 0) fail(n, "only a reshape to N x features (a flatten) is supported");
    return simple(n, Op::flatten);
  }
  bool feeds_linear = true;
  for (int i = 0; i < g_.node_size(); ++i) {
    const auto& c = g_.node(i);
    if (!used_[size_t(i)]) continue;
    for (const auto& in : c.input())
      if (in == n.output(0))
        feeds_linear &= c.op_type() == "Gemm" || c.op_type() == "MatMul" || c.op_type() == "Dropout";
  }
  if (!feeds_linear) fail(n, "a reshape to a shape computed at run time is supported only before Gemm or MatMul");
  simple(n, Op::flatten);
}

void Importer::linear(const ::onnx::NodeProto& n, int weight_input, std::vector<float> w, int64_t out, int64_t in,
                      const Const* bias, double bias_scale) {
  Node nd;
  nd.op = Op::linear;
  nd.inputs = {data(n, 0)};
  nd.name = weight_name(n, weight_input);
  nd.out_channels = int(out);
  out_.weights[nd.name + ".weight"] = Array{{out, in}, std::move(w)};
  if (bias) {
    std::vector<int64_t> dims = bias->dims;
    while (dims.size() > 1 && dims.front() == 1) dims.erase(dims.begin());
    if (bias->count() != 1 && dims != std::vector<int64_t>{out})
      fail(n, "the bias (" + dims_str(bias->dims) + ") does not match the " + std::to_string(out) + " output features");
    Array b{{out}, {}};
    for (int64_t o = 0; o < out; ++o)
      b.values.push_back(float(bias->values[size_t(bias->count() == 1 ? 0 : o)] * bias_scale));
    nd.bias = true;
    out_.weights[nd.name + ".bias"] = std::move(b);
  }
  add_node(std::move(nd), n);
}

void Importer::gemm(const ::onnx::NodeProto& n) {
  if (attr_int(n, "transA", 0) != 0) fail(n, "transA is not supported");
  const Const& b = constant(n, 1);
  if (b.dims.size() != 2) fail(n, "the weight must be 2-D");
  const bool trans = attr_int(n, "transB", 0) != 0;
  const int64_t out = trans ? b.dims[0] : b.dims[1], in = trans ? b.dims[1] : b.dims[0];
  const double alpha = attr_float(n, "alpha", 1.f), beta = attr_float(n, "beta", 1.f);
  std::vector<float> w(size_t(out * in));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i)
      w[size_t(o * in + i)] = float(alpha * b.values[size_t(trans ? o * in + i : i * out + o)]);
  const Const* c = n.input_size() > 2 && !n.input(2).empty() ? &constant(n, 2) : nullptr;
  linear(n, 1, std::move(w), out, in, c, beta);
}

void Importer::matmul(const ::onnx::NodeProto& n) {
  if (n.input_size() != 2 || is_const(n.input(0)) || !is_const(n.input(1)))
    fail(n, "only data x weight (a constant second input) is supported");
  const Const& b = consts_.at(n.input(1));
  if (b.dims.size() != 2) fail(n, "the weight must be 2-D");
  const int64_t in = b.dims[0], out = b.dims[1];
  std::vector<float> w(size_t(out * in));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) w[size_t(o * in + i)] = float(b.values[size_t(i * out + o)]);
  linear(n, 1, std::move(w), out, in, nullptr, 1.0);
}

// The channels of a node's output (shortcut_pad needs them before shapes are inferred).
// -1 for a flattened value.
int Importer::channels_of(int i) {
  for (;; i = node(i).inputs.at(0)) {
    const Node& nd = node(i);
    if (nd.op == Op::input) return nd.shape.channels;
    if (nd.has_weights() || nd.op == Op::shortcut_pad) return nd.out_channels;
    if (nd.op == Op::flatten) return -1;
  }
}

// The shortcut_pad node that `n` extends, now producing `n`'s output: its input's producer if
// that is a shortcut_pad read by `n` alone, else a new one (stride 1, no padding yet).
int Importer::shortcut_pad_for(const ::onnx::NodeProto& n) {
  const int p = data(n, 0);
  if (node(p).op == Op::shortcut_pad && node_uses_[size_t(p)] == 1) {
    alias(n, p);
    return p;
  }
  if (channels_of(p) < 0) fail(n, "only images (N x C x H x W values) may be padded");
  Node nd;
  nd.op = Op::shortcut_pad;
  nd.inputs = {p};
  nd.name = unique(scoped_name(n.name(), true), "shortcut_pad");
  nd.out_channels = channels_of(p);
  return add_node(std::move(nd), n);
}

// Slice of the image data: subsampling of height and width by one step from 0 (x[:, :, ::2,
// ::2]), as option-A shortcuts do; exporters write one Slice per axis, so a height-only step
// waits for the width's.
void Importer::slice(const ::onnx::NodeProto& n) {
  const std::vector<double> starts = constant(n, 1).values, ends = constant(n, 2).values;
  std::vector<double> axes, steps;
  if (n.input_size() > 3 && !n.input(3).empty()) axes = constant(n, 3).values;
  if (n.input_size() > 4 && !n.input(4).empty()) steps = constant(n, 4).values;
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(double(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    fail(n, "starts, ends, axes and steps differ in length");
  int step[4] = {1, 1, 1, 1};
  for (size_t k = 0; k < starts.size(); ++k) {
    if (!(std::fabs(axes[k]) <= 4)) fail(n, "an axis out of range");
    const int axis = axes[k] < 0 ? int(axes[k]) + 4 : int(axes[k]);
    if (axis < 0 || axis > 3 || starts[k] != 0 || !(ends[k] >= 16384) || !(steps[k] >= 1 && steps[k] <= 15) ||
        steps[k] != std::floor(steps[k]))
      fail(n, "only subsampling from the first element (x[:, :, ::s, ::s]) is supported");
    step[axis] = int(steps[k]);
  }
  if (step[0] != 1 || step[1] != 1) fail(n, "only the height and width may be subsampled");
  auto pending = pending_.find(n.input(0));
  if (pending != pending_.end()) {  // the other axis of an earlier Slice
    step[2] *= pending->second.first;
    step[3] *= pending->second.second;
  }
  const int source = pending != pending_.end() ? node_of_.at(n.input(0)) : data(n, 0);
  if (channels_of(source) < 0) fail(n, "only images (N x C x H x W values) may be subsampled");
  if (step[2] > 15 || step[3] > 15) fail(n, "a step over 15");
  if (step[2] != step[3]) {
    alias(n, source);
    pending_[n.output(0)] = {step[2], step[3]};
    return;
  }
  if (step[2] == 1) return alias(n, source);
  Node nd;
  nd.op = Op::shortcut_pad;
  nd.inputs = {source};
  nd.name = unique(scoped_name(n.name(), true), "shortcut_pad");
  nd.stride = step[2];
  nd.out_channels = channels_of(source);
  add_node(std::move(nd), n);
}

// Pad by zeros: nothing, or zero channels on both sides alike (option-A shortcuts; after a
// subsampling Slice, the same shortcut_pad node).
void Importer::pad(const ::onnx::NodeProto& n) {
  std::vector<double> pads;
  if (n.input_size() > 1 && !n.input(1).empty()) {
    pads = constant(n, 1).values;
  } else {
    for (int64_t v : attr_ints(n, "pads")) pads.push_back(double(v));
  }
  if ((n.input_size() > 2 && !n.input(2).empty() && scalar(n, 2) != 0) || attr_float(n, "value", 0) != 0)
    fail(n, "only padding with zeros is supported");
  const auto* mode = attr(n, "mode");
  if (mode && !mode->s().empty() && mode->s() != "constant") fail(n, "only constant padding is supported");
  if (std::all_of(pads.begin(), pads.end(), [](double v) { return v == 0; })) return alias(n, data(n, 0));
  if (pads.size() != 8 || pads[0] != 0 || pads[4] != 0 || pads[2] != 0 || pads[3] != 0 || pads[6] != 0 ||
      pads[7] != 0 || pads[1] != pads[5] || !(pads[1] >= 0 && pads[1] <= 4096))
    fail(n,
         "only padding channels by the same number on both sides is supported (pad height and width in the "
         "Conv or pooling instead)");
  node(shortcut_pad_for(n)).out_channels += 2 * int(pads[1]);
}

}  // namespace apot::onnx_import::detail
