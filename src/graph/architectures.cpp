// The table of architecture families: adding a family is adding its builder file and a row.
#include "families.h"

namespace apot::graph {
namespace {
const std::vector<ArchitectureFamily>& families() {
  static const std::vector<ArchitectureFamily> table{resnet_family(), shufflenet_family(), mobilenet_family(),
                                                     vgg_family()};
  return table;
}
}  // namespace

int add_input(Graph& g, int channels) {
  Node input;
  input.name = "input";
  input.shape.channels = channels;
  return g.add(input);
}

ConvSpec relu6(ConvSpec spec) {
  spec.activation = Activation::clamp;
  spec.clamp_hi = 6;
  return spec;
}

int add_conv(Graph& g, const std::string& name, const std::string& bn, int input, const ConvSpec& spec) {
  Node n;
  n.name = name;
  n.op = Op::conv;
  n.inputs = {input};
  n.out_channels = spec.out;
  n.kernel = spec.kernel;
  n.stride = spec.stride;
  n.padding = spec.padding;
  n.groups = spec.groups;
  n.bias = spec.bias;
  n.batch_norm = bn;
  n.activation = spec.activation;
  n.clamp_hi = spec.clamp_hi;
  return g.add(n);
}

int add_linear(Graph& g, const std::string& name, int input, int out, bool relu) {
  Node n;
  n.name = name;
  n.op = Op::linear;
  n.inputs = {input};
  n.out_channels = out;
  n.bias = true;
  n.activation = relu ? Activation::relu : Activation::none;
  return g.add(n);
}

int add_max_pool(Graph& g, const std::string& name, int input, int kernel, int stride, int padding) {
  Node pool;
  pool.name = name;
  pool.op = Op::max_pool;
  pool.inputs = {input};
  pool.kernel = kernel;
  pool.stride = stride;
  pool.padding = padding;
  return g.add(pool);
}

int add_simple(Graph& g, const std::string& name, Op op, std::vector<int> inputs) {
  Node n;
  n.name = name;
  n.op = op;
  n.inputs = std::move(inputs);
  return g.add(n);
}

std::vector<std::string> known_architectures() {
  std::vector<std::string> out;
  for (const ArchitectureFamily& f : families()) out.insert(out.end(), f.names.begin(), f.names.end());
  return out;
}

int default_input_size(const std::string& arch) {
  const bool cifar_suffix = arch.size() > 6 && arch.compare(arch.size() - 6, 6, "_cifar") == 0;
  const bool imagenet = arch == "resnet18" || arch == "resnet34" || arch == "resnet50" ||
                        arch.rfind("shufflenet_v2", 0) == 0 || arch.rfind("mobilenet_v2", 0) == 0 ||
                        arch.rfind("vgg", 0) == 0;
  return imagenet && !cifar_suffix ? 224 : 32;
}

bool is_known_architecture(const std::string& arch) {
  for (const std::string& n : known_architectures())
    if (n == arch) return true;
  return false;
}

Graph build_architecture(const std::string& arch, const ArchOptions& options) {
  if (options.in_channels < 1 || options.num_classes < 1)
    throw GraphError("a network needs at least one input channel and one class");
  if (options.naming != "apot" && options.naming != "hub")
    throw GraphError("unknown parameter naming '" + options.naming + "' (expected apot or hub)");
  for (const ArchitectureFamily& f : families())
    for (const std::string& n : f.names)
      if (n == arch) {
        if (!(options.width_mult >= 0.05 && options.width_mult <= 4.0))
          throw GraphError("the width multiplier must be 0.05..4");
        if (options.width_mult != 1.0 && !f.width_mult)
          throw GraphError(arch + " takes no width multiplier (only MobileNetV2 does)");
        Graph g = f.build(arch, options);
        g.arch = arch;
        g.validate();
        return g;
      }
  std::string names;
  for (const std::string& n : known_architectures()) names += (names.empty() ? "" : ", ") + n;
  throw GraphError("unknown architecture '" + arch + "' (known: " + names +
                   "; or describe your own network in a model file, docs/MODELS.md)");
}

}  // namespace apot::graph
