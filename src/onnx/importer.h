// The ONNX importer (internal to src/onnx): its class, shared by onnx_import.cpp (the passes over
// a model: constants, the input, the data path, the checks at the end; and the readers) and
// onnx_ops.cpp (one method per ONNX op, mapping it onto the graph).
#pragma once

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "apot/graph/serialize.h"
#include "apot/onnx/onnx_import.h"
#include "constants.h"

namespace apot::onnx_import::detail {

using graph::Activation;
using graph::GraphError;
using graph::Node;
using graph::Op;

// The ops apot imports, for error messages.
extern const char* const kSupported;

Array to_array(const Const& c);
// "/layer1/layer1.0/conv1/Conv" -> "layer1.0.conv1" (PyTorch's scoped names); `keep_last` keeps
// the final component (the op's own name).
std::string scoped_name(const std::string& onnx_name, bool keep_last);
// `s` without `suffix`, or "" if it does not end with it.
std::string strip_suffix(const std::string& s, const std::string& suffix);

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

  // ---- the passes (onnx_import.cpp) ----
  void read_constants();
  void add_input();
  // The inputs of `n` that carry data (not weights, not target shapes).
  std::vector<std::string> data_inputs(const ::onnx::NodeProto& n) const;
  void mark_data_path();
  // ---- one method per ONNX op (onnx_ops.cpp) ----
  // Dispatches `n` to the method of its op.
  void convert(const ::onnx::NodeProto& n);
  void conv(const ::onnx::NodeProto& n);
  void batch_norm(const ::onnx::NodeProto& n);
  void relu(const ::onnx::NodeProto& n);
  void clip(const ::onnx::NodeProto& n);
  void add(const ::onnx::NodeProto& n);
  // Add of a constant: the bias of the conv or linear before it (MatMul + Add, Conv + Add).
  void add_bias(const ::onnx::NodeProto& n, const Const& b, int data_input);
  void pool(const ::onnx::NodeProto& n);
  void simple(const ::onnx::NodeProto& n, Op op);
  // A Reshape is a flatten when its target is [N, -1] or [N, C*H*W] (a constant), or when it
  // feeds a Gemm or MatMul (which flatten their input anyway) with a target computed from
  // Shape.
  void reshape(const ::onnx::NodeProto& n);
  void linear(const ::onnx::NodeProto& n, int weight_input, std::vector<float> w, int64_t out, int64_t in,
              const Const* bias, double bias_scale);
  void gemm(const ::onnx::NodeProto& n);
  void matmul(const ::onnx::NodeProto& n);
  // The channels of a node's output (shortcut_pad needs them before shapes are inferred).
  // -1 for a flattened value.
  int channels_of(int i);
  // The shortcut_pad node that `n` extends, now producing `n`'s output: its input's producer if
  // that is a shortcut_pad read by `n` alone, else a new one (stride 1, no padding yet).
  int shortcut_pad_for(const ::onnx::NodeProto& n);
  // Slice of the image data: subsampling of height and width by one step from 0 (x[:, :, ::2,
  // ::2]), as option-A shortcuts do; exporters write one Slice per axis, so a height-only step
  // waits for the width's.
  void slice(const ::onnx::NodeProto& n);
  // Pad by zeros: nothing, or zero channels on both sides alike (option-A shortcuts; after a
  // subsampling Slice, the same shortcut_pad node).
  void pad(const ::onnx::NodeProto& n);
  void finish();
};

}  // namespace apot::onnx_import::detail
