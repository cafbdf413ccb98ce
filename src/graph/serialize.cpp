// Graph <-> JSON (in .apot files and checkpoints). The TOML model-file reader is model_file.cpp.
#include "apot/graph/serialize.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace apot::graph {

[[noreturn]] void detail::fail(const std::string& source, const std::string& node, const std::string& what) {
  throw GraphError(source + ": node '" + node + "': " + what);
}

namespace {

using nlohmann::json;

const char* mode_name(LayerQuant::Mode m) {
  return m == LayerQuant::Mode::quantized ? "quantized" : m == LayerQuant::Mode::int8 ? "int8" : "fp32";
}

json quant_to_json(const LayerQuant& q) {
  json j{{"mode", mode_name(q.mode)}};
  if (q.quantized())
    j.update({{"kind", levels::to_string(q.kind)},
              {"weight_bits", q.weight_bits},
              {"act_bits", q.act_bits},
              {"signed_input", q.signed_input}});
  return j;
}

// The keys each op accepts besides name, op, input(s); anything else is an error (a typo
// should not silently become a default).
const std::set<std::string>& allowed_keys(Op op) {
  static const std::set<std::string> conv{"out_channels", "kernel",     "stride",     "padding", "groups",
                                          "bias",         "batch_norm", "activation", "clamp",   "quant"};
  static const std::set<std::string> linear{"out_channels", "bias", "batch_norm", "activation", "clamp", "quant"};
  static const std::set<std::string> pool{"kernel", "stride", "padding"};
  static const std::set<std::string> add{"activation", "clamp"};
  static const std::set<std::string> pad{"stride", "out_channels"};
  static const std::set<std::string> slice{"begin", "out_channels"};
  static const std::set<std::string> shuffle{"groups"};
  static const std::set<std::string> input{"channels", "height", "width"};
  static const std::set<std::string> none{};
  switch (op) {
    case Op::conv: return conv;
    case Op::linear: return linear;
    case Op::max_pool:
    case Op::avg_pool: return pool;
    case Op::add: return add;
    case Op::shortcut_pad: return pad;
    case Op::channel_slice: return slice;
    case Op::channel_shuffle: return shuffle;
    case Op::input: return input;
    default: return none;
  }
}

using detail::fail;

int int_of(const json& j, const char* key, int fallback, const std::string& source, const std::string& node) {
  if (!j.contains(key)) return fallback;
  const json& v = j.at(key);
  if (!v.is_number_integer()) fail(source, node, std::string(key) + " must be an integer");
  const int64_t x = v.get<int64_t>();
  if (x < -(int64_t(1) << 30) || x > (int64_t(1) << 30)) fail(source, node, std::string(key) + " is out of range");
  return int(x);
}

LayerQuant quant_from_json(const json& j, const std::string& source, const std::string& node) {
  LayerQuant q;
  if (!j.is_object()) fail(source, node, "quant must be an object");
  const std::string mode = j.value("mode", "fp32");
  if (mode == "quantized") {
    q.mode = LayerQuant::Mode::quantized;
    try {
      q.kind = levels::parse_kind(j.at("kind").get<std::string>());
    } catch (const std::exception& e) {
      fail(source, node, std::string("quant.kind: ") + e.what());
    }
    q.weight_bits = int_of(j, "weight_bits", 0, source, node);
    q.act_bits = int_of(j, "act_bits", 0, source, node);
    q.signed_input = j.value("signed_input", false);
  } else if (mode == "int8") {
    q.mode = LayerQuant::Mode::int8;
  } else if (mode != "fp32") {
    fail(source, node, "quant.mode must be quantized, int8 or fp32, got '" + mode + "'");
  }
  return q;
}

Node node_from_json(const json& j, const std::string& source, const std::map<std::string, int>& index, int previous,
                    size_t position) {
  if (!j.is_object()) throw GraphError(source + ": layer " + std::to_string(position) + " is not a table");
  if (!j.contains("name") || !j.at("name").is_string())
    throw GraphError(source + ": layer " + std::to_string(position) + " has no name");
  Node n;
  n.name = j.at("name").get<std::string>();
  if (!j.contains("op") || !j.at("op").is_string()) fail(source, n.name, "has no op");
  try {
    n.op = parse_op(j.at("op").get<std::string>());
  } catch (const GraphError& e) {
    fail(source, n.name, e.what());
  }
  const std::set<std::string>& allowed = allowed_keys(n.op);
  for (const auto& item : j.items())
    if (item.key() != "name" && item.key() != "op" && item.key() != "input" && item.key() != "inputs" &&
        !allowed.count(item.key()))
      fail(source, n.name, "unknown key '" + item.key() + "' for op " + to_string(n.op));
  std::vector<std::string> inputs;
  if (j.contains("input") && j.contains("inputs")) fail(source, n.name, "give input or inputs, not both");
  try {
    if (j.contains("input")) inputs.push_back(j.at("input").get<std::string>());
    if (j.contains("inputs")) inputs = j.at("inputs").get<std::vector<std::string>>();
  } catch (const json::exception&) {
    fail(source, n.name, "input must be a layer name, inputs a list of layer names");
  }
  if (inputs.empty() && n.op != Op::input) {
    if (previous < 0) fail(source, n.name, "has no input");
    n.inputs.push_back(previous);
  }
  for (const std::string& in : inputs) {
    const auto it = index.find(in);
    if (it == index.end()) fail(source, n.name, "reads '" + in + "', which is not a layer");
    n.inputs.push_back(it->second);
  }
  if (n.op == Op::input) {
    n.shape.channels = int_of(j, "channels", 0, source, n.name);
    n.shape.height = int_of(j, "height", 0, source, n.name);
    n.shape.width = int_of(j, "width", 0, source, n.name);
  }
  n.out_channels = int_of(j, "out_channels", 0, source, n.name);
  n.kernel =
      int_of(j, "kernel", n.op == Op::conv || n.op == Op::max_pool || n.op == Op::avg_pool ? 0 : 1, source, n.name);
  n.stride = int_of(j, "stride", (n.op == Op::max_pool || n.op == Op::avg_pool) ? n.kernel : 1, source, n.name);
  n.padding = int_of(j, "padding", 0, source, n.name);
  n.groups = int_of(j, "groups", n.op == Op::channel_shuffle ? 0 : 1, source, n.name);
  n.begin = int_of(j, "begin", 0, source, n.name);
  try {
    n.bias = j.value("bias", false);
    n.batch_norm = j.value("batch_norm", std::string());
    const std::string act = j.value("activation", std::string("none"));
    if (act == "relu") {
      n.activation = Activation::relu;
    } else if (act == "relu6") {
      n.activation = Activation::clamp;
      n.clamp_lo = 0;
      n.clamp_hi = 6;
    } else if (act == "clamp") {
      n.activation = Activation::clamp;
      const auto lohi = j.at("clamp").get<std::vector<float>>();
      if (lohi.size() != 2) fail(source, n.name, "clamp must be [lo, hi]");
      n.clamp_lo = lohi[0];
      n.clamp_hi = lohi[1];
    } else if (act != "none") {
      fail(source, n.name, "activation must be none, relu, relu6 or clamp, got '" + act + "'");
    }
  } catch (const json::exception& e) {
    fail(source, n.name, std::string("bad attribute type (") + e.what() + ")");
  }
  if (j.contains("quant")) n.quant = quant_from_json(j.at("quant"), source, n.name);
  return n;
}

// Adds the node to the graph, turning structural errors into errors naming the source.
void add_checked(Graph& g, Node n, const std::string& source) {
  try {
    g.add(std::move(n));
  } catch (const GraphError& e) {
    throw GraphError(source + ": " + e.what());
  }
}

}  // namespace

json graph_to_json(const Graph& g) {
  json nodes = json::array();
  for (const Node& n : g.nodes()) {
    json j{{"name", n.name}, {"op", to_string(n.op)}};
    if (n.op == Op::input) {
      j["channels"] = n.shape.channels;
      if (n.shape.height > 0) j.update({{"height", n.shape.height}, {"width", n.shape.width}});
    }
    if (!n.inputs.empty()) {
      json inputs = json::array();
      for (int in : n.inputs) inputs.push_back(g[size_t(in)].name);
      j["inputs"] = inputs;
    }
    if (n.has_weights() || n.op == Op::shortcut_pad || n.op == Op::channel_slice) j["out_channels"] = n.out_channels;
    if (n.op == Op::channel_slice) j["begin"] = n.begin;
    if (n.op == Op::conv || n.op == Op::max_pool || n.op == Op::avg_pool) {
      j["kernel"] = n.kernel;
      j["padding"] = n.padding;
    }
    if (n.op == Op::conv || n.op == Op::max_pool || n.op == Op::avg_pool || n.op == Op::shortcut_pad)
      j["stride"] = n.stride;
    if (n.op == Op::conv || n.op == Op::channel_shuffle) j["groups"] = n.groups;
    if (n.has_weights()) {
      j["bias"] = n.bias;
      if (!n.batch_norm.empty()) j["batch_norm"] = n.batch_norm;
      j["quant"] = quant_to_json(n.quant);
    }
    if (n.activation == Activation::relu) j["activation"] = "relu";
    if (n.activation == Activation::clamp) {
      j["activation"] = "clamp";
      j["clamp"] = {n.clamp_lo, n.clamp_hi};
    }
    nodes.push_back(j);
  }
  return json{{"arch", g.arch}, {"nodes", nodes}};
}

Graph graph_from_json(const json& j, const std::string& source) {
  if (!j.is_object() || !j.contains("nodes") || !j.at("nodes").is_array())
    throw GraphError(source + ": the graph has no node list");
  Graph g;
  g.arch = j.value("arch", std::string("model"));
  std::map<std::string, int> index;
  const json& nodes = j.at("nodes");
  if (nodes.size() > 100000) throw GraphError(source + ": too many nodes");
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node n = node_from_json(nodes[i], source, index, -1, i);
    if (index.count(n.name)) fail(source, n.name, "the name is used twice");
    const std::string name = n.name;
    add_checked(g, std::move(n), source);
    index[name] = int(i);
  }
  try {
    g.validate();
  } catch (const GraphError& e) {
    throw GraphError(source + ": " + e.what());
  }
  return g;
}

}  // namespace apot::graph
