// Graph structure, validation and shape inference.
#include "apot/graph/graph.h"

#include <algorithm>

namespace apot::graph {
namespace {

struct OpRow {
  Op op;
  const char* name;
  int min_inputs, max_inputs;
};
// One row per op: adding an op is adding a row here and its shape rule in infer_shapes.
constexpr OpRow kOps[] = {
    {Op::input, "input", 0, 0},
    {Op::conv, "conv", 1, 1},
    {Op::linear, "linear", 1, 1},
    {Op::add, "add", 2, 16},
    {Op::max_pool, "max_pool", 1, 1},
    {Op::avg_pool, "avg_pool", 1, 1},
    {Op::global_avg_pool, "global_avg_pool", 1, 1},
    {Op::flatten, "flatten", 1, 1},
    {Op::shortcut_pad, "shortcut_pad", 1, 1},
    {Op::concat, "concat", 2, 16},
    {Op::channel_slice, "channel_slice", 1, 1},
    {Op::channel_shuffle, "channel_shuffle", 1, 1},
};

const OpRow& row(Op op) {
  for (const OpRow& r : kOps)
    if (r.op == op) return r;
  throw GraphError("unknown op");
}

[[noreturn]] void fail(const Node& n, const std::string& what) {
  throw GraphError("node '" + n.name + "' (" + to_string(n.op) + "): " + what);
}

int pooled(int size, int kernel, int stride, int padding) { return (size + 2 * padding - kernel) / stride + 1; }

}  // namespace

const char* to_string(Op op) { return row(op).name; }

Op parse_op(const std::string& name) {
  std::string known;
  for (const OpRow& r : kOps) {
    if (name == r.name) return r.op;
    known += (known.empty() ? "" : ", ") + std::string(r.name);
  }
  throw GraphError("unknown op '" + name + "' (known: " + known + ")");
}

const char* to_string(Activation a) {
  return a == Activation::relu ? "relu" : a == Activation::clamp ? "clamp" : "none";
}

std::string Shape::str() const {
  return std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width);
}

std::string LayerQuant::describe() const {
  if (mode == Mode::float32) return "fp32";
  if (mode == Mode::int8) return "int8";
  return "W" + std::to_string(weight_bits) + "A" + std::to_string(act_bits) + (signed_input ? "s " : " ") +
         levels::to_string(kind);
}

bool LayerQuant::operator==(const LayerQuant& o) const {
  return mode == o.mode && kind == o.kind && weight_bits == o.weight_bits && act_bits == o.act_bits &&
         signed_input == o.signed_input;
}

bool Node::non_negative() const {
  if (activation == Activation::relu) return true;
  if (activation == Activation::clamp) return clamp_lo >= 0;
  return false;
}

int Graph::add(Node node) {
  if (node.name.empty()) throw GraphError("a node needs a name (node " + std::to_string(nodes_.size()) + ")");
  if (index_.count(node.name)) fail(node, "the name is used twice");
  for (int in : node.inputs)
    if (in < 0 || in >= int(nodes_.size())) fail(node, "reads a node that does not come before it");
  const int index = int(nodes_.size());
  index_[node.name] = index;
  nodes_.push_back(std::move(node));
  return index;
}

int Graph::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? -1 : it->second;
}

const Node& Graph::at(const std::string& name) const {
  const int i = find(name);
  if (i < 0) throw GraphError("no node named '" + name + "'");
  return nodes_[size_t(i)];
}

const Node& Graph::input() const {
  if (nodes_.empty() || nodes_[0].op != Op::input) throw GraphError("a graph starts with its input node");
  return nodes_[0];
}

void Graph::validate() const {
  input();
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    const OpRow& r = row(n.op);
    if (n.op == Op::input && i != 0) fail(n, "only the first node may be the input");
    if (int(n.inputs.size()) < r.min_inputs || int(n.inputs.size()) > r.max_inputs)
      fail(n, "takes " + std::to_string(r.min_inputs) +
                  (r.max_inputs != r.min_inputs ? ".." + std::to_string(r.max_inputs) : "") + " inputs, has " +
                  std::to_string(n.inputs.size()));
    for (int in : n.inputs)
      if (in < 0 || size_t(in) >= i) fail(n, "reads a node that does not come before it");
    const bool pool = n.op == Op::max_pool || n.op == Op::avg_pool;
    if ((n.op == Op::conv || pool) && (n.kernel < 1 || n.kernel > 15)) fail(n, "kernel must be 1..15");
    if ((n.op == Op::conv || pool || n.op == Op::shortcut_pad) && (n.stride < 1 || n.stride > 15))
      fail(n, "stride must be 1..15");
    if ((n.op == Op::conv || pool) && (n.padding < 0 || n.padding >= std::max(n.kernel, 2)))
      fail(n, "padding must be 0.." + std::to_string(std::max(n.kernel, 2) - 1));
    if (pool && 2 * n.padding > n.kernel) fail(n, "padding must be at most half the kernel");
    if ((n.has_weights() || n.op == Op::shortcut_pad || n.op == Op::channel_slice) &&
        (n.out_channels < 1 || n.out_channels > 65536))
      fail(n, "out_channels must be 1..65536");
    if (n.op == Op::channel_slice && (n.begin < 0 || n.begin > 65536)) fail(n, "begin must be 0..65536");
    if (n.op == Op::channel_shuffle && (n.groups < 1 || n.groups > 65536)) fail(n, "groups must be 1..65536");
    if (n.op == Op::conv && (n.groups < 1 || n.out_channels % n.groups != 0))
      fail(n, "out_channels must be a multiple of groups");
    if (!n.batch_norm.empty() && !n.has_weights()) fail(n, "only conv and linear nodes carry a batch norm");
    if (n.activation == Activation::clamp && !(n.clamp_lo < n.clamp_hi)) fail(n, "clamp needs lo < hi");
    if (n.activation != Activation::none && !(n.has_weights() || n.op == Op::add))
      fail(n, "only conv, linear and add nodes carry an activation");
  }
}

void Graph::infer_shapes(int height, int width) {
  validate();
  if (height < 1 || width < 1 || height > 16384 || width > 16384)
    throw GraphError("input size " + std::to_string(height) + "x" + std::to_string(width) + " is out of range");
  Node& in = nodes_[0];
  if (in.shape.channels < 1 || in.shape.channels > 4096) fail(in, "needs 1..4096 channels");
  in.shape.height = height;
  in.shape.width = width;
  for (size_t i = 1; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    const Shape x = nodes_[size_t(n.inputs[0])].shape;
    Shape out = x;
    switch (n.op) {
      case Op::input: break;
      case Op::conv:
        if (x.channels % n.groups != 0)
          fail(n, "its input '" + nodes_[size_t(n.inputs[0])].name + "' has " + std::to_string(x.channels) +
                      " channels, not a multiple of groups " + std::to_string(n.groups));
        out = {n.out_channels, pooled(x.height, n.kernel, n.stride, n.padding),
               pooled(x.width, n.kernel, n.stride, n.padding)};
        break;
      case Op::linear: out = {n.out_channels, 1, 1}; break;
      case Op::add:
        for (int j : n.inputs)
          if (nodes_[size_t(j)].shape != x)
            fail(n, "adds '" + nodes_[size_t(n.inputs[0])].name + "' (" + x.str() + ") and '" + nodes_[size_t(j)].name +
                        "' (" + nodes_[size_t(j)].shape.str() + "): shapes differ");
        break;
      case Op::max_pool:
      case Op::avg_pool:
        out = {x.channels, pooled(x.height, n.kernel, n.stride, n.padding),
               pooled(x.width, n.kernel, n.stride, n.padding)};
        break;
      case Op::global_avg_pool: out = {x.channels, 1, 1}; break;
      case Op::flatten:
        out = {int(std::min<int64_t>(x.size(), INT32_MAX)), 1, 1};
        if (x.size() > (int64_t(1) << 28)) fail(n, "flattens too many values");
        break;
      case Op::shortcut_pad:
        if (n.out_channels < x.channels)
          fail(n, "out_channels is smaller than its input's " + std::to_string(x.channels));
        out = {n.out_channels, (x.height - 1) / n.stride + 1, (x.width - 1) / n.stride + 1};
        break;
      case Op::concat:
        out.channels = 0;
        for (int j : n.inputs) {
          const Shape& s = nodes_[size_t(j)].shape;
          if (s.height != x.height || s.width != x.width)
            fail(n, "joins '" + nodes_[size_t(n.inputs[0])].name + "' (" + x.str() + ") and '" +
                        nodes_[size_t(j)].name + "' (" + s.str() + "): heights or widths differ");
          out.channels += s.channels;
        }
        if (out.channels > 65536) fail(n, "more than 65536 channels");
        break;
      case Op::channel_slice:
        if (n.begin + n.out_channels > x.channels)
          fail(n, "channels " + std::to_string(n.begin) + ".." + std::to_string(n.begin + n.out_channels - 1) +
                      " of '" + nodes_[size_t(n.inputs[0])].name + "', which has " + std::to_string(x.channels));
        out.channels = n.out_channels;
        break;
      case Op::channel_shuffle:
        if (x.channels % n.groups != 0)
          fail(n, "its input '" + nodes_[size_t(n.inputs[0])].name + "' has " + std::to_string(x.channels) +
                      " channels, not a multiple of groups " + std::to_string(n.groups));
        break;
    }
    if (out.height < 1 || out.width < 1)
      fail(n, "its input '" + nodes_[size_t(n.inputs[0])].name + "' (" + x.str() + ") is too small");
    if (out.size() > (int64_t(1) << 28)) fail(n, "output " + out.str() + " is too large");
    n.shape = out;
  }
}

std::vector<std::vector<int>> Graph::consumers() const {
  std::vector<std::vector<int>> out(nodes_.size());
  for (size_t i = 0; i < nodes_.size(); ++i)
    for (int in : nodes_[i].inputs)
      if (out[size_t(in)].empty() || out[size_t(in)].back() != int(i)) out[size_t(in)].push_back(int(i));
  return out;
}

std::vector<int> Graph::weight_layers() const {
  std::vector<int> out;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].has_weights()) out.push_back(int(i));
  return out;
}

std::vector<int> Graph::first_layers() const {
  std::vector<int> out;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].has_weights() && nodes_[i].inputs.at(0) == 0) out.push_back(int(i));
  return out;
}

int Graph::last_layer() const {
  int i = output();
  while (i > 0) {
    const Node& n = nodes_[size_t(i)];
    if (n.has_weights()) return i;
    if (n.op != Op::max_pool && n.op != Op::avg_pool && n.op != Op::global_avg_pool && n.op != Op::flatten) return -1;
    i = n.inputs[0];
  }
  return -1;
}

int64_t Graph::macs(int i) const {
  const Node& n = nodes_[size_t(i)];
  if (!n.has_weights()) return 0;
  return int64_t(n.shape.height) * n.shape.width * weight_count(i);
}

int64_t Graph::weight_count(int i) const {
  const Node& n = nodes_[size_t(i)];
  const Shape& x = input_shape_of(i);
  if (n.op == Op::linear) return int64_t(n.out_channels) * x.size();
  if (n.op == Op::conv) return int64_t(n.out_channels) * (x.channels / n.groups) * n.kernel * n.kernel;
  return 0;
}

// ---- quantisation ----

namespace {
// Whether each node's value is known to be >= 0, in one pass (nodes come in topological order).
std::vector<bool> non_negative_values(const Graph& g) {
  std::vector<bool> v(g.size(), false);
  for (size_t i = 0; i < g.size(); ++i) {
    const Node& n = g[i];
    switch (n.op) {
      case Op::input: v[i] = false; break;
      case Op::conv:
      case Op::linear: v[i] = n.non_negative(); break;
      case Op::add:
      case Op::concat:
        v[i] = n.activation != Activation::none
                   ? n.non_negative()
                   : std::all_of(n.inputs.begin(), n.inputs.end(), [&](int j) { return bool(v[size_t(j)]); });
        break;
      default: v[i] = v[size_t(n.inputs.at(0))];
    }
  }
  return v;
}
}  // namespace

void assign_quantization(Graph& g, const QuantAssignment& a) {
  for (const auto& [name, o] : a.layers) {
    const int i = g.find(name);
    if (i < 0 || !g[size_t(i)].has_weights())
      throw GraphError("quantisation override for '" + name +
                       "': " + (i < 0 ? "no such node" : "not a conv or linear layer"));
  }
  const std::vector<int> first = g.first_layers();
  const int last = g.last_layer();
  const std::vector<bool> non_negative = non_negative_values(g);
  for (int i : g.weight_layers()) {
    Node& n = g[size_t(i)];
    LayerQuant q;
    const bool edge = std::find(first.begin(), first.end(), i) != first.end() || i == last;
    const auto o = a.layers.find(n.name);
    const bool fp = a.full_precision || (o != a.layers.end() && o->second.full_precision.value_or(false));
    if (fp) {
      q.mode = LayerQuant::Mode::float32;
    } else if (edge && a.int8_first_last && (o == a.layers.end() || (!o->second.weight_bits && !o->second.act_bits))) {
      q.mode = LayerQuant::Mode::int8;
    } else {
      q.mode = LayerQuant::Mode::quantized;
      q.kind = a.kind;
      q.weight_bits = a.weight_bits;
      q.act_bits = a.act_bits;
      if (o != a.layers.end()) {
        q.kind = o->second.kind.value_or(q.kind);
        q.weight_bits = o->second.weight_bits.value_or(q.weight_bits);
        q.act_bits = o->second.act_bits.value_or(q.act_bits);
      }
      q.signed_input = !non_negative[size_t(n.inputs.at(0))];
      if (a.check_level_sets) try {
          levels::LevelSet::make(q.kind, q.weight_bits, levels::Role::weight);
          levels::LevelSet::make_activation(q.kind, q.act_bits, q.signed_input);
        } catch (const levels::LevelSetError& e) {
          fail(n, e.what());
        }
    }
    n.quant = q;
  }
}

}  // namespace apot::graph
