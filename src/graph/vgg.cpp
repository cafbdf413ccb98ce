// VGG-11/13/16/19 with batch norm (Simonyan & Zisserman 2015) in torchvision's layout and
// parameter names (features.K for every convolution, batch norm, ReLU and max-pool in turn;
// classifier.{0,3,6}), and the CIFAR variant of the CIFAR model hubs (the same features, then
// a 512-512-512 classifier on the flattened 512 x 1 x 1 map of a 32 x 32 image).
//
// torchvision's adaptive average pool to 7 x 7 is the identity at 224 x 224, the size its
// classifier is built for, and is left out. The classifier reads the flattened features, so the
// graph's input has a fixed size: 224 x 224, or 32 x 32 for the CIFAR variant.
#include "families.h"

namespace apot::graph {
namespace {

constexpr int kPool = 0;

const std::vector<std::pair<std::string, std::vector<int>>>& configs() {
  static const std::vector<std::pair<std::string, std::vector<int>>> c{
      {"vgg11_bn", {64, kPool, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool}},
      {"vgg13_bn", {64, 64, kPool, 128, 128, kPool, 256, 256, kPool, 512, 512, kPool, 512, 512, kPool}},
      {"vgg16_bn",
       {64, 64, kPool, 128, 128, kPool, 256, 256, 256, kPool, 512, 512, 512, kPool, 512, 512, 512, kPool}},
      {"vgg19_bn", {64,  64,  kPool, 128, 128, kPool, 256, 256, 256, 256, kPool,
                    512, 512, 512,   512, kPool, 512, 512, 512, 512, kPool}},
  };
  return c;
}

Graph build(const std::string& arch, const ArchOptions& o) {
  const bool cifar = arch.size() > 6 && arch.compare(arch.size() - 6, 6, "_cifar") == 0;
  const std::string base = cifar ? arch.substr(0, arch.size() - 6) : arch;
  std::vector<int> config;
  for (const auto& [name, c] : configs())
    if (name == base) config = c;
  Graph g;
  int x = add_input(g, o.in_channels);
  g[size_t(x)].shape.height = g[size_t(x)].shape.width = cifar ? 32 : 224;
  int k = 0;  // the index in torchvision's features Sequential
  for (int v : config) {
    const std::string name = "features." + std::to_string(k);
    if (v == kPool) {
      x = add_max_pool(g, name, x, 2, 2, 0);
      k += 1;
    } else {
      x = add_conv(g, name, "features." + std::to_string(k + 1), x, {v, 3, 1, 1, 1, true, Activation::relu});
      k += 3;
    }
  }
  x = add_simple(g, "flatten", Op::flatten, {x});
  const int hidden = cifar ? 512 : 4096;
  x = add_linear(g, "classifier.0", x, hidden, true);
  x = add_linear(g, "classifier.3", x, hidden, true);
  add_linear(g, "classifier.6", x, o.num_classes, false);
  return g;
}

}  // namespace

ArchitectureFamily vgg_family() {
  ArchitectureFamily f;
  for (const auto& [name, c] : configs()) {
    f.names.push_back(name);
    f.names.push_back(name + "_cifar");
  }
  f.build = build;
  return f;
}

}  // namespace apot::graph
