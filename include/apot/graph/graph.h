// The network graph that every stage of apot reads: the LibTorch model (src/qat), the cost
// model, the export, the .apot file and the integer engine. A graph is a list of nodes in
// topological order; each node produces one value (a feature map of channels x height x width
// per image) and names the nodes whose values it reads. A node's name is the prefix of its
// parameters in state dicts ("layer2.0.conv1"), and names it in taps and errors.
//
// No LibTorch here: the engine reads graphs without it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "apot/levels/level_set.h"

namespace apot::graph {

// Every malformed graph, model file or quantisation assignment; the message names the node.
class GraphError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class Op {
  input,            // the image: shape set by infer_shapes
  conv,             // 2-D convolution (groups, square kernel, stride, zero padding)
  linear,           // fully connected on the flattened input (C, H, W order)
  add,              // element-wise sum of two or more values of one shape
  max_pool,         // kernel, stride, padding (padding counts as -inf)
  avg_pool,         // kernel, stride, padding (padding counts as 0, divides by kernel^2)
  global_avg_pool,  // mean over height and width: C x 1 x 1
  flatten,          // C x H x W -> (C*H*W) x 1 x 1
  shortcut_pad,     // ResNet option A: subsample by stride, zero-pad channels to out_channels
  concat,           // the inputs' channels one after another (equal height and width)
  channel_slice,    // channels begin .. begin + out_channels - 1 of the input (a split's part)
  channel_shuffle,  // groups x (C / groups) channels read as (C / groups) x groups (ShuffleNet)
};
const char* to_string(Op op);
Op parse_op(const std::string& name);  // throws GraphError listing the known ops

enum class Activation { none, relu, clamp };
const char* to_string(Activation a);

struct Shape {
  int channels = 0, height = 0, width = 0;
  int64_t size() const { return int64_t(channels) * height * width; }
  bool operator==(const Shape& o) const { return channels == o.channels && height == o.height && width == o.width; }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "16x32x32"
};

// How a weight layer (conv, linear) computes: full precision, int8 weights on a float input
// (the first and last layers), or quantised weights and input with level sets of `kind`.
struct LayerQuant {
  enum class Mode { float32, int8, quantized };
  Mode mode = Mode::float32;
  levels::Kind kind = levels::Kind::apot;
  int weight_bits = 32, act_bits = 32;
  bool signed_input = false;  // the input may be negative (signed activation levels)

  bool quantized() const { return mode == Mode::quantized; }
  std::string describe() const;  // "W4A4 apot", "int8", "fp32"
  bool operator==(const LayerQuant& o) const;
};

struct Node {
  std::string name;
  Op op = Op::input;
  std::vector<int> inputs;  // indices of earlier nodes

  // conv / linear: out_channels (features); conv, pools: kernel, stride, padding; conv: groups.
  // shortcut_pad: stride and out_channels. channel_slice: begin and out_channels.
  // channel_shuffle: groups.
  int out_channels = 0;
  int kernel = 1, stride = 1, padding = 0, groups = 1;
  int begin = 0;
  bool bias = false;  // conv / linear: a bias parameter "<name>.bias"

  // Batch norm applied to the output of a conv / linear, as a parameter prefix ("layer1.0.bn1");
  // empty for none. Then the activation.
  std::string batch_norm;
  Activation activation = Activation::none;
  float clamp_lo = 0, clamp_hi = 0;  // Activation::clamp (ReLU6: 0, 6)

  LayerQuant quant;  // conv / linear

  Shape shape;  // the output, set by Graph::infer_shapes (input: set by the caller)

  bool has_weights() const { return op == Op::conv || op == Op::linear; }
  // The output is known to be >= 0 (after ReLU, or a clamp from 0 or above).
  bool non_negative() const;
};

class Graph {
 public:
  std::string arch;  // builder name ("resnet20") or the model file's name

  // Appends a node after checking that its name is new and its inputs exist; returns its index.
  int add(Node node);
  int find(const std::string& name) const;        // -1 if absent
  const Node& at(const std::string& name) const;  // throws GraphError
  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }
  size_t size() const { return nodes_.size(); }
  const Node& operator[](size_t i) const { return nodes_[i]; }
  Node& operator[](size_t i) { return nodes_[i]; }

  int output() const { return int(nodes_.size()) - 1; }  // the last node
  const Node& input() const;                             // node 0
  int in_channels() const { return input().shape.channels; }
  int num_classes() const { return nodes_.back().shape.channels; }

  // Sets the input's height and width and every node's output shape; checks every node's
  // attributes and inputs. Errors name the node and what is wrong.
  void infer_shapes(int height, int width);
  // Structure only (no shapes): one input node first, inputs of earlier nodes, ops with the
  // right number of inputs, positive attributes, unique names.
  void validate() const;

  // For each node, the nodes that read it, in order.
  std::vector<std::vector<int>> consumers() const;
  // The weight layers (conv, linear) in order.
  std::vector<int> weight_layers() const;
  // Weight layers that read the image directly, and the one that produces the output through
  // parameter-free single-input nodes only (pooling, flatten): the layers that keep 8-bit
  // weights and a float input under the usual policy.
  std::vector<int> first_layers() const;
  int last_layer() const;  // -1 if the output is not produced that way

  // Multiply-accumulates of one image through node i (conv, linear; 0 otherwise), and its
  // weight count (without bias). Need infer_shapes.
  int64_t macs(int i) const;
  int64_t weight_count(int i) const;
  int in_channels_of(int i) const { return nodes_[size_t(nodes_[i].inputs.at(0))].shape.channels; }
  const Shape& input_shape_of(int i) const { return nodes_[size_t(nodes_[i].inputs.at(0))].shape; }

 private:
  std::vector<Node> nodes_;
  std::map<std::string, int> index_;
};

// ---- quantisation assignment ----

// Per-layer changes to the default, e.g. 8 bits for one named layer.
struct LayerOverride {
  std::optional<int> weight_bits, act_bits;
  std::optional<levels::Kind> kind;
  std::optional<bool> full_precision;  // keep this layer in float
};

struct QuantAssignment {
  bool full_precision = false;  // every layer float32 (overrides ignored)
  levels::Kind kind = levels::Kind::apot;
  int weight_bits = 4, act_bits = 4;
  bool int8_first_last = true;  // first and last layers: int8 weights, float input
  std::map<std::string, LayerOverride> layers;
  // Check that every bit-width has a level set of its kind (off for the cost model, which
  // prices any 2..8-bit layer).
  bool check_level_sets = true;
};

// Sets every weight layer's LayerQuant: first / last layers int8 (or float) with a float input,
// the others quantised with the default or their override; signed_input where the input may be
// negative. Throws GraphError for an override naming no weight layer, or for bit-widths the
// kind has no level set for.
void assign_quantization(Graph& graph, const QuantAssignment& assignment);

}  // namespace apot::graph
