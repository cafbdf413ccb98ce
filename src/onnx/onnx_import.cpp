// ONNX import: protobuf classes from Debian's libonnx (onnx_proto), mapped node by node onto
// the graph. Only the nodes the output depends on through data inputs are read, so shape
// arithmetic that feeds a Reshape's target shape needs no support. This file: the passes over
// the model and the readers; onnx_ops.cpp: the ops.
#include "apot/onnx/onnx_import.h"

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
#include "importer.h"

namespace apot::onnx_import {
namespace detail {

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

void Importer::read_constants() {
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

void Importer::add_input() {
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
std::vector<std::string> Importer::data_inputs(const ::onnx::NodeProto& n) const {
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

void Importer::mark_data_path() {
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

void Importer::finish() {
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

}  // namespace detail

bool available() { return true; }

Model read_onnx_bytes(const std::string& bytes, const std::string& source) {
  ::onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes) || !model.has_graph() || model.graph().node_size() == 0)
    throw std::runtime_error(source + ": not an ONNX model (corrupt, truncated or another format)");
  return detail::Importer(model, source, std::filesystem::path(source).stem().string()).run();
}

Model read_onnx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return read_onnx_bytes(ss.str(), path);
}

}  // namespace apot::onnx_import
