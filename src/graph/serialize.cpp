// Graph <-> JSON, and the TOML model-file reader (toml++ turns it into the same JSON).
#include "apot/graph/serialize.h"

#include <toml++/toml.h>
#include <algorithm>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace apot::graph {
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
  static const std::set<std::string> input{"channels", "height", "width"};
  static const std::set<std::string> none{};
  switch (op) {
    case Op::conv: return conv;
    case Op::linear: return linear;
    case Op::max_pool:
    case Op::avg_pool: return pool;
    case Op::add: return add;
    case Op::shortcut_pad: return pad;
    case Op::input: return input;
    default: return none;
  }
}

[[noreturn]] void fail(const std::string& source, const std::string& node, const std::string& what) {
  throw GraphError(source + ": node '" + node + "': " + what);
}

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
  n.groups = int_of(j, "groups", 1, source, n.name);
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
    if (n.has_weights() || n.op == Op::shortcut_pad) j["out_channels"] = n.out_channels;
    if (n.op == Op::conv || n.op == Op::max_pool || n.op == Op::avg_pool) {
      j["kernel"] = n.kernel;
      j["padding"] = n.padding;
    }
    if (n.op == Op::conv || n.op == Op::max_pool || n.op == Op::avg_pool || n.op == Op::shortcut_pad)
      j["stride"] = n.stride;
    if (n.op == Op::conv) j["groups"] = n.groups;
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

// TOML allows no control characters but tab, newline and carriage return, and non-ASCII
// characters only in strings and comments. toml++ 3.3 is unsafe on some violations: it asserts
// on a table header that starts with a control character, and reaches __builtin_unreachable on
// a character from U+00A1 to U+0499 where it looks for whitespace (found by fuzz_model_file).
// So they are refused here, before it parses, with one line naming the place.
void check_toml_characters(const std::string& text, const std::string& source) {
  int line = 1;
  char quote = 0;      // inside a string: its delimiter (" or ')
  bool multi = false;  // ... a multi-line one (""" or ''')
  bool comment = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t' && c != '\n' && c != '\r') || u == 0x7f)
      throw GraphError(source + ":" + std::to_string(line) + ": a control character (byte " + std::to_string(u) +
                       ") is not allowed in TOML");
    if (c == '\n') {
      ++line;
      comment = false;
      if (!multi) quote = 0;  // an unterminated single-line string: toml++ reports it
      continue;
    }
    if (u >= 0x80 && !quote && !comment)
      throw GraphError(source + ":" + std::to_string(line) +
                       ": a non-ASCII character outside a string or comment is not allowed in TOML");
    if (comment) continue;
    if (quote) {
      if (c == '\\' && quote == '"') {
        ++i;  // an escaped character
        if (i < text.size() && text[i] == '\n') ++line;
      } else if (c == quote && (!multi || text.compare(i, 3, std::string(3, quote)) == 0)) {
        if (multi) i += 2;
        quote = 0;
        multi = false;
      }
      continue;
    }
    if (c == '#') {
      comment = true;
    } else if (c == '"' || c == '\'') {
      quote = c;
      multi = text.compare(i, 3, std::string(3, c)) == 0;
      if (multi) i += 2;
    }
  }
}

Graph model_from_toml_text(const std::string& text, const std::string& source) {
  check_toml_characters(text, source);
  json doc;
  try {
    const toml::table table = toml::parse(text, source);
    std::ostringstream out;
    out << toml::json_formatter(table);
    doc = json::parse(out.str());
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << source << ":" << e.source().begin.line << ": " << e.description();
    throw GraphError(msg.str());
  }
  for (const auto& item : doc.items())
    if (item.key() != "name" && item.key() != "input" && item.key() != "layer")
      throw GraphError(source + ": unknown key '" + item.key() + "' (expected name, [input], [[layer]])");
  if (!doc.contains("input") || !doc.at("input").is_object() || !doc.at("input").contains("channels"))
    throw GraphError(source + ": needs [input] with channels");
  if (!doc.contains("layer") || !doc.at("layer").is_array() || doc.at("layer").empty())
    throw GraphError(source + ": needs at least one [[layer]]");
  const json& layers = doc.at("layer");
  if (layers.size() > 100000) throw GraphError(source + ": too many layers");
  // Names first, so that layers may read layers defined further down; then a depth-first
  // topological sort that reports the first cycle it finds.
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i].is_object() || !layers[i].contains("name") || !layers[i].at("name").is_string())
      throw GraphError(source + ": layer " + std::to_string(i + 1) + " has no name");
    const std::string name = layers[i].at("name").get<std::string>();
    if (name == "input") throw GraphError(source + ": node 'input': the name is reserved for the image");
    if (!position.emplace(name, i).second) fail(source, name, "the name is used twice");
  }
  std::vector<std::vector<std::string>> reads(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& l = layers[i];
    const std::string name = l.at("name").get<std::string>();
    try {
      if (l.contains("input")) reads[i].push_back(l.at("input").get<std::string>());
      if (l.contains("inputs")) {
        const auto more = l.at("inputs").get<std::vector<std::string>>();
        reads[i].insert(reads[i].end(), more.begin(), more.end());
      }
    } catch (const json::exception&) {
      fail(source, name, "input must be a layer name, inputs a list of layer names");
    }
    if (!l.contains("input") && !l.contains("inputs"))
      reads[i].push_back(i == 0 ? "input" : layers[i - 1].at("name").get<std::string>());
    for (const std::string& r : reads[i])
      if (r != "input" && !position.count(r)) fail(source, name, "reads '" + r + "', which is not a layer");
  }
  std::vector<int> state(layers.size(), 0);  // 0 new, 1 on the path, 2 done
  std::vector<size_t> order;
  std::vector<std::string> path;
  std::function<void(size_t)> visit = [&](size_t i) {
    const std::string name = layers[i].at("name").get<std::string>();
    if (state[i] == 2) return;
    if (state[i] == 1) {
      std::string cycle;
      for (auto it = std::find(path.begin(), path.end(), name); it != path.end(); ++it) cycle += *it + " -> ";
      fail(source, name, "is part of a cycle (" + cycle + name + ")");
    }
    if (path.size() > 10000) fail(source, name, "the network is too deep");
    state[i] = 1;
    path.push_back(name);
    for (const std::string& r : reads[i])
      if (r != "input") visit(position.at(r));
    path.pop_back();
    state[i] = 2;
    order.push_back(i);
  };
  for (size_t i = 0; i < layers.size(); ++i) visit(i);
  json nodes = json::array();
  json input = doc.at("input");
  input["name"] = "input";
  input["op"] = "input";
  nodes.push_back(input);
  for (size_t i : order) {
    json l = layers[i];
    l.erase("input");
    l["inputs"] = reads[i];
    if (l.contains("quant"))
      fail(source, l.at("name").get<std::string>(),
           "quantisation comes from the recipe ([quant], [quant.layers]), not the model file");
    nodes.push_back(l);
  }
  Graph g = graph_from_json(json{{"arch", doc.value("name", std::string("model"))}, {"nodes", nodes}}, source);
  const auto consumers = g.consumers();
  for (size_t i = 1; i + 1 < g.size(); ++i)
    if (consumers[i].empty())
      throw GraphError(source + ": node '" + g[i].name + "': its output is never used (the last layer is the output)");
  return g;
}

Graph read_model_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw GraphError(path + ": cannot open the model file");
  std::stringstream text;
  text << in.rdbuf();
  return model_from_toml_text(text.str(), path);
}

}  // namespace apot::graph
