// ONNX import: protobuf classes from Debian's libonnx (onnx_proto), mapped node by node onto
// the graph. Only the nodes the output depends on through data inputs are read, so shape
// arithmetic that feeds a Reshape's target shape needs no support.
#include "apot/onnx/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "apot/graph/serialize.h"
#include "constants.h"

namespace apot::onnx_import {
namespace {

using detail::Const;
using detail::decode;
using detail::dims_str;
using detail::fold;
using graph::Activation;
using graph::GraphError;
using graph::Node;
using graph::Op;

const char* const kSupported =
    "Conv, BatchNormalization, Relu, Clip, Add, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, Gemm, "
    "MatMul, Identity, Dropout, Slice (subsampling) and Pad (of channels): ResNet option-A shortcuts";

Array to_array(const Const& c) {
  Array a;
  a.shape = c.dims;
  a.values.assign(c.values.begin(), c.values.end());
  return a;
}

// "/layer1/layer1.0/conv1/Conv" -> "layer1.0.conv1" (PyTorch's scoped names: a component that
// the next one extends is dropped); `keep_last` keeps the final component (the op's own name).
std::string scoped_name(const std::string& onnx_name, bool keep_last) {
  std::vector<std::string> parts;
  std::stringstream ss(onnx_name);
  for (std::string p; std::getline(ss, p, '/');)
    if (!p.empty()) parts.push_back(p);
  if (!keep_last && parts.size() > 1) parts.pop_back();
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i + 1 < parts.size() && parts[i + 1].rfind(parts[i] + ".", 0) == 0) continue;
    out += (out.empty() ? "" : ".") + parts[i];
  }
  return out;
}

std::string strip_suffix(const std::string& s, const std::string& suffix) {
  if (s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0)
    return s.substr(0, s.size() - suffix.size());
  return "";
}

class Importer {
 public:
  Importer(const ::onnx::ModelProto& model, std::string source, std::string arch)
      : g_(model.graph()), source_(std::move(source)) {
    out_.graph.arch = std::move(arch);
  }

  Model run() {
    read_constants();
    add_input();
    mark_data_path();
    node_uses_ = {uses_[input_name_]};
    for (int i = 0; i < g_.node_size(); ++i)
      if (used_[size_t(i)]) convert(g_.node(i));
    finish();
    return std::move(out_);
  }

 private:
  const ::onnx::GraphProto& g_;
  std::string source_;
  Model out_;
  std::map<std::string, Const> consts_;  // by value name
  std::map<std::string, int> node_of_;   // value name -> graph node that produces it
  std::map<std::string, int> uses_;      // value name -> how many used ONNX nodes read it
  std::vector<int> node_uses_;           // graph node -> how many used ONNX nodes read its value
  std::string input_name_;
  std::vector<bool> used_;
  std::set<std::string> prefixes_;  // node names and batch-norm prefixes given out
  // Values subsampled by a Slice on one of height and width so far: (height step, width step).
  std::map<std::string, std::pair<int, int>> pending_;

  [[noreturn]] void fail(const ::onnx::NodeProto& n, const std::string& what) const {
    graph::detail::fail(source_, n.name().empty() ? n.op_type() : n.name(), n.op_type() + ": " + what);
  }

  Node& node(int i) { return out_.graph[size_t(i)]; }

  // ---- attributes ----
  const ::onnx::AttributeProto* attr(const ::onnx::NodeProto& n, const std::string& name) const {
    for (const auto& a : n.attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  int64_t attr_int(const ::onnx::NodeProto& n, const std::string& name, int64_t def) const {
    const auto* a = attr(n, name);
    return a ? a->i() : def;
  }
  float attr_float(const ::onnx::NodeProto& n, const std::string& name, float def) const {
    const auto* a = attr(n, name);
    return a ? a->f() : def;
  }
  std::vector<int64_t> attr_ints(const ::onnx::NodeProto& n, const std::string& name) const {
    const auto* a = attr(n, name);
    if (!a) return {};
    return {a->ints().begin(), a->ints().end()};
  }

  // kernel_shape / strides / pads / dilations of a 2-D window, as one square size each.
  struct Window {
    int kernel = 1, stride = 1, padding = 0;
  };
  Window window(const ::onnx::NodeProto& n, int kernel_from_weights) const {
    auto one = [&](const char* name, int64_t def, int64_t lo, int64_t hi) {
      const auto v = attr_ints(n, name);
      if (v.empty()) return def;
      if (!std::all_of(v.begin(), v.end(), [&](int64_t x) { return x == v[0]; }) ||
          v.size() != (std::string(name) == "pads" ? 4u : 2u))
        fail(n, std::string("only the same ") + name + " in height and width (and on every side) are supported");
      if (v[0] < lo || v[0] > hi)
        fail(n, std::string(name) + " " + std::to_string(v[0]) + " is outside " + std::to_string(lo) + ".." +
                    std::to_string(hi));
      return v[0];
    };
    Window w;
    w.kernel = int(one("kernel_shape", kernel_from_weights, 1, 15));
    w.stride = int(one("strides", 1, 1, 15));
    w.padding = int(one("pads", 0, 0, 15));
    for (int64_t d : attr_ints(n, "dilations"))
      if (d != 1) fail(n, "dilated windows are not supported");
    const auto* ap = attr(n, "auto_pad");
    if (ap && ap->s() != "NOTSET" && ap->s() != "VALID") fail(n, "auto_pad " + ap->s() + " is not supported");
    if (ap && ap->s() == "VALID") w.padding = 0;
    if (attr_int(n, "ceil_mode", 0) != 0) fail(n, "ceil_mode is not supported");
    if (w.kernel < 1) fail(n, "needs kernel_shape");
    return w;
  }

  // ---- values ----
  bool is_const(const std::string& v) const { return consts_.count(v) > 0; }
  const Const& constant(const ::onnx::NodeProto& n, int input) const {
    if (input >= n.input_size() || !is_const(n.input(input)))
      fail(n, "input " + std::to_string(input) + " must be a constant (a weight or a value known before the image)");
    const Const& c = consts_.at(n.input(input));
    if (!c.error.empty()) throw GraphError(c.error);
    return c;
  }
  // The one value of a scalar constant input (Clip's bounds, Pad's fill).
  double scalar(const ::onnx::NodeProto& n, int input) const {
    const Const& c = constant(n, input);
    if (c.values.size() != 1) fail(n, "input " + std::to_string(input) + " must hold one value");
    return c.values[0];
  }
  int data(const ::onnx::NodeProto& n, int input) const {
    if (input >= n.input_size()) fail(n, "missing input");
    const auto it = node_of_.find(n.input(input));
    if (it == node_of_.end())
      fail(n, "reads '" + n.input(input) + "', which is neither the image nor computed from it");
    if (pending_.count(n.input(input)))
      fail(n, "reads '" + n.input(input) + "', which a Slice subsampled in height or width alone");
    return it->second;
  }

  std::string unique(std::string base, const std::string& fallback) {
    if (base.empty()) base = fallback;
    std::string name = base;
    for (int k = 2; prefixes_.count(name) || out_.graph.find(name) >= 0; ++k) name = base + "_" + std::to_string(k);
    prefixes_.insert(name);
    return name;
  }
  // A weight layer's name: its weight's parameter name ("layer1.0.conv1.weight"), else the
  // node's scope; the batch norm's likewise.
  std::string weight_name(const ::onnx::NodeProto& n, int weight_input) {
    std::string base = weight_input < n.input_size() ? strip_suffix(n.input(weight_input), ".weight") : "";
    if (base.find("::") != std::string::npos) base.clear();
    if (base.empty()) base = scoped_name(n.name(), false);
    return unique(base, n.op_type() + "_" + std::to_string(out_.graph.size()));
  }

  int add_node(Node nd, const ::onnx::NodeProto& n) {
    try {
      const int i = out_.graph.add(std::move(nd));
      node_of_[n.output(0)] = i;
      node_uses_.push_back(uses_[n.output(0)]);
      return i;
    } catch (const GraphError& e) {
      fail(n, e.what());
    }
  }
  // `n`'s output is node i's value under another name: the read by `n` gives way to the reads of
  // that name.
  void alias(const ::onnx::NodeProto& n, int i) {
    node_of_[n.output(0)] = i;
    node_uses_[size_t(i)] += uses_[n.output(0)] - 1;
  }

  // The graph node that produced input 0 of `n` if `n` may be fused into it: produced by one of
  // `ops`, read by `n` alone, with nothing after its linear part (`what` says what is fused).
  int fusable(const ::onnx::NodeProto& n, std::initializer_list<Op> ops, bool allow_activation) {
    const int p = data(n, 0);
    const Node& pn = node(p);
    if (std::find(ops.begin(), ops.end(), pn.op) == ops.end())
      fail(n, "follows a " + std::string(graph::to_string(pn.op)) + " node ('" + pn.name +
                  "'), which cannot carry it in apot's graph");
    if (node_uses_[size_t(p)] > 1)
      fail(n,
           "its input '" + n.input(0) + "' is also read by another node, so it cannot be fused into '" + pn.name + "'");
    if (!allow_activation && pn.activation != Activation::none)
      fail(n, "follows '" + pn.name + "', which already has an activation");
    return p;
  }

  // ---- passes ----
  // A constant apot cannot read (an element type, external data, a fold that fails) is an error
  // only if the data path uses it.
  static Const unreadable(const std::string& why) {
    Const c;
    c.error = why;
    return c;
  }
  Const decode_or_error(const ::onnx::TensorProto& t) const {
    try {
      return decode(t, source_);
    } catch (const GraphError& e) {
      return unreadable(e.what());
    }
  }

  void read_constants() {
    for (const auto& t : g_.initializer()) consts_[t.name()] = decode_or_error(t);
    for (const auto& n : g_.node()) {
      if (n.output_size() != 1) continue;
      if (n.op_type() == "Constant") {
        Const c = unreadable(source_ + ": node '" + n.name() + "': Constant: no value apot reads");
        if (const auto* v = attr(n, "value"); v && v->has_t()) c = decode_or_error(v->t());
        if (const auto* f = attr(n, "value_float")) c = Const{{}, {double(f->f())}, ""};
        if (const auto* f = attr(n, "value_int")) c = Const{{}, {double(f->i())}, ""};
        if (const auto* fs = attr(n, "value_ints"))
          c = Const{{int64_t(fs->ints_size())}, {fs->ints().begin(), fs->ints().end()}, ""};
        if (const auto* fs = attr(n, "value_floats"))
          c = Const{{int64_t(fs->floats_size())}, {fs->floats().begin(), fs->floats().end()}, ""};
        consts_[n.output(0)] = std::move(c);
        continue;
      }
      // Inputs by position (nullptr for an optional input left out); all constant, or no fold.
      std::vector<const Const*> in;
      std::string error;
      bool constant_inputs = n.input_size() > 0;
      for (const auto& v : n.input()) {
        if (v.empty()) {
          in.push_back(nullptr);
          continue;
        }
        const auto it = consts_.find(v);
        if (it == consts_.end()) {
          constant_inputs = false;
          break;
        }
        if (!it->second.error.empty()) error = it->second.error;
        in.push_back(&it->second);
      }
      if (!constant_inputs) continue;
      if (!error.empty()) {
        consts_[n.output(0)] = unreadable(error);
        continue;
      }
      try {
        if (auto c = fold(n, in, [&](const std::string& name) { return attr(n, name); }))
          consts_[n.output(0)] = std::move(*c);
      } catch (const std::exception& e) {
        consts_[n.output(0)] = unreadable(source_ + ": node '" + n.name() + "': " + n.op_type() +
                                          ": cannot fold its constant inputs: " + e.what());
      }
    }
  }

  void add_input() {
    const ::onnx::ValueInfoProto* input = nullptr;
    for (const auto& v : g_.input()) {
      if (is_const(v.name())) continue;  // initializers listed as inputs (older exporters)
      if (input)
        throw GraphError(source_ + ": the model has two inputs ('" + input->name() + "', '" + v.name() +
                         "'); apot imports models of one image input");
      input = &v;
    }
    if (!input) throw GraphError(source_ + ": the model has no input");
    const auto& type = input->type();
    if (!type.has_tensor_type() || type.tensor_type().elem_type() != ::onnx::TensorProto::FLOAT)
      throw GraphError(source_ + ": input '" + input->name() + "' is not a float tensor");
    const auto& shape = type.tensor_type().shape();
    if (shape.dim_size() != 4)
      throw GraphError(source_ + ": input '" + input->name() + "' has " + std::to_string(shape.dim_size()) +
                       " dimensions; apot imports image models with N x C x H x W inputs");
    static const char* const what[] = {"batch", "channel", "height", "width"};
    int dims[4] = {0, 0, 0, 0};
    for (int d = 1; d < 4; ++d) {
      const auto& dim = shape.dim(d);
      if (!dim.has_dim_value() || dim.dim_value() < 1 || dim.dim_value() > 16384)
        throw GraphError(source_ + ": input '" + input->name() + "' has a dynamic " + what[d] + " (" +
                         (dim.has_dim_param() ? "'" + dim.dim_param() + "'" : std::string("unknown")) +
                         "); apot needs a fixed size: export with a fixed " + what[d] +
                         " (dynamic axes for the batch only)");
      dims[d] = int(dim.dim_value());
    }
    Node in;
    in.name = "input";
    in.op = Op::input;
    in.shape.channels = dims[1];
    prefixes_.insert(in.name);
    node_of_[input->name()] = out_.graph.add(in);
    input_name_ = input->name();
    out_.height = dims[2];
    out_.width = dims[3];
  }

  // The inputs of `n` that carry data (not weights, not target shapes).
  std::vector<std::string> data_inputs(const ::onnx::NodeProto& n) const {
    const std::string& op = n.op_type();
    std::vector<std::string> in;
    const bool first_only = op == "Reshape" || op == "Clip" || op == "Pad" || op == "Slice" || op == "Conv" ||
                            op == "BatchNormalization" || op == "Gemm" || op == "Dropout";
    for (int i = 0; i < n.input_size(); ++i) {
      if (n.input(i).empty() || is_const(n.input(i))) continue;
      if (first_only && i > 0) continue;
      in.push_back(n.input(i));
    }
    return in;
  }

  void mark_data_path() {
    if (g_.output_size() != 1)
      throw GraphError(source_ + ": the model has " + std::to_string(g_.output_size()) +
                       " outputs; apot imports models with one output (the logits)");
    std::set<std::string> needed{g_.output(0).name()};
    used_.assign(size_t(g_.node_size()), false);
    for (int i = g_.node_size() - 1; i >= 0; --i) {
      const auto& n = g_.node(i);
      bool use = false;
      for (const auto& o : n.output()) use |= needed.count(o) > 0;
      if (!use || (n.output_size() == 1 && is_const(n.output(0)))) continue;
      used_[size_t(i)] = true;
      for (const auto& v : data_inputs(n)) {
        needed.insert(v);
        ++uses_[v];
      }
    }
  }

  void convert(const ::onnx::NodeProto& n) {
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

  void conv(const ::onnx::NodeProto& n) {
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

  void batch_norm(const ::onnx::NodeProto& n) {
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
        fail(n, std::string(names[i]) + " has " + std::to_string(c.count()) + " values for " +
                    std::to_string(channels) + " channels");
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

  void relu(const ::onnx::NodeProto& n) {
    const int p = data(n, 0);
    if (node(p).non_negative()) return alias(n, p);  // ReLU of values >= 0 changes nothing
    fusable(n, {Op::conv, Op::linear, Op::add}, false);
    node(p).activation = Activation::relu;
    alias(n, p);
  }

  void clip(const ::onnx::NodeProto& n) {
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

  void add(const ::onnx::NodeProto& n) {
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
  void add_bias(const ::onnx::NodeProto& n, const Const& b, int data_input) {
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

  void pool(const ::onnx::NodeProto& n) {
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

  void simple(const ::onnx::NodeProto& n, Op op) {
    Node nd;
    nd.op = op;
    nd.inputs = {data(n, 0)};
    nd.name = unique(scoped_name(n.name(), true), graph::to_string(op));
    add_node(std::move(nd), n);
  }

  // A Reshape is a flatten when its target is [N, -1] or [N, C*H*W] (a constant), or when it
  // feeds a Gemm or MatMul (which flatten their input anyway) with a target computed from
  // Shape.
  void reshape(const ::onnx::NodeProto& n) {
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

  void linear(const ::onnx::NodeProto& n, int weight_input, std::vector<float> w, int64_t out, int64_t in,
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
        fail(n,
             "the bias (" + dims_str(bias->dims) + ") does not match the " + std::to_string(out) + " output features");
      Array b{{out}, {}};
      for (int64_t o = 0; o < out; ++o)
        b.values.push_back(float(bias->values[size_t(bias->count() == 1 ? 0 : o)] * bias_scale));
      nd.bias = true;
      out_.weights[nd.name + ".bias"] = std::move(b);
    }
    add_node(std::move(nd), n);
  }

  void gemm(const ::onnx::NodeProto& n) {
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

  void matmul(const ::onnx::NodeProto& n) {
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
  int channels_of(int i) {
    for (;; i = node(i).inputs.at(0)) {
      const Node& nd = node(i);
      if (nd.op == Op::input) return nd.shape.channels;
      if (nd.has_weights() || nd.op == Op::shortcut_pad) return nd.out_channels;
      if (nd.op == Op::flatten) return -1;
    }
  }

  // The shortcut_pad node that `n` extends, now producing `n`'s output: its input's producer if
  // that is a shortcut_pad read by `n` alone, else a new one (stride 1, no padding yet).
  int shortcut_pad_for(const ::onnx::NodeProto& n) {
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
  void slice(const ::onnx::NodeProto& n) {
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
  void pad(const ::onnx::NodeProto& n) {
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

  void finish() {
    const std::string& output = g_.output(0).name();
    const auto it = node_of_.find(output);
    if (it == node_of_.end() || it->second != int(out_.graph.size()) - 1 || it->second == 0)
      throw GraphError(source_ + ": the output '" + output + "' is not computed by the last node apot imports");
    auto& g = out_.graph;
    try {
      g.infer_shapes(out_.height, out_.width);
    } catch (const GraphError& e) {
      throw GraphError(source_ + ": " + e.what());
    }
    // The weights must fit the shapes the graph infers.
    for (int i : g.weight_layers()) {
      const Node& nd = g[size_t(i)];
      const Array& w = out_.weights.at(nd.name + ".weight");
      const int64_t in = nd.op == Op::conv ? g.in_channels_of(i) / nd.groups : g.input_shape_of(i).size();
      const int64_t have = w.shape[1];
      if (have != in)
        throw GraphError(source_ + ": node '" + nd.name + "': the weight takes " + std::to_string(have) + " input " +
                         (nd.op == Op::conv ? "channels per group" : "features") + ", its input has " +
                         std::to_string(in));
    }
  }
};

}  // namespace

bool available() { return true; }

Model read_onnx_bytes(const std::string& bytes, const std::string& source) {
  ::onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes) || !model.has_graph() || model.graph().node_size() == 0)
    throw std::runtime_error(source + ": not an ONNX model (corrupt, truncated or another format)");
  return Importer(model, source, std::filesystem::path(source).stem().string()).run();
}

Model read_onnx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return read_onnx_bytes(ss.str(), path);
}

}  // namespace apot::onnx_import
