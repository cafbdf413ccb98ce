// The ResNet family: CIFAR ResNet-20/32/44/56/110 (He et al.; option A or B shortcuts) and
// ImageNet ResNet-18/34/50 in torchvision's layout and names.
//
// Within a block the shortcut comes first, then the main path and the sum: the engine runs
// nodes in this order, so a projection's input is dead once its codes are made and the
// projection can write over it.
#include "families.h"

namespace apot::graph {
namespace {

enum class Stem { cifar, imagenet };  // 3x3 conv, or 7x7/2 conv + 3x3/2 max-pool
enum class BlockType { basic, bottleneck };

struct ResNetSpec {
  Stem stem = Stem::cifar;
  BlockType block = BlockType::basic;
  std::vector<int> blocks;  // per stage
  std::vector<int> widths;  // planes per stage (output channels = planes * expansion)
  bool projection = false;  // option B shortcuts (1x1 conv + BN) where the shape changes
  int expansion() const { return block == BlockType::bottleneck ? 4 : 1; }
};

const std::vector<std::pair<std::string, int>>& cifar_depths() {
  static const std::vector<std::pair<std::string, int>> d{
      {"resnet20", 3}, {"resnet32", 5}, {"resnet44", 7}, {"resnet56", 9}, {"resnet110", 18}};
  return d;
}

ResNetSpec resnet_spec(const std::string& arch, const ArchOptions& o) {
  ResNetSpec s;
  for (const auto& [name, n] : cifar_depths())
    if (arch == name) {
      if (o.shortcut != "A" && o.shortcut != "B") throw GraphError("shortcut must be A or B, got '" + o.shortcut + "'");
      s.blocks = {n, n, n};
      s.widths = {16, 32, 64};
      s.projection = o.shortcut == "B";
      return s;
    }
  s.stem = Stem::imagenet;
  s.widths = {64, 128, 256, 512};
  s.projection = true;
  if (arch == "resnet18") s.blocks = {2, 2, 2, 2};
  if (arch == "resnet34" || arch == "resnet50") s.blocks = {3, 4, 6, 3};
  if (arch == "resnet50") s.block = BlockType::bottleneck;
  return s;
}

int conv(Graph& g, const std::string& name, const std::string& bn, int input, int out, int k, int stride, int pad,
         bool relu) {
  return add_conv(g, name, bn, input, {out, k, stride, pad, 1, false, relu ? Activation::relu : Activation::none});
}

Graph build_resnet(const std::string& arch, const ArchOptions& o) {
  const ResNetSpec s = resnet_spec(arch, o);
  const bool hub = s.stem == Stem::imagenet || o.naming == "hub";
  const std::string projection_name = hub ? "downsample" : "shortcut";
  Graph g;
  int x = add_input(g, o.in_channels);
  const int stem = s.widths.front();
  if (s.stem == Stem::cifar) {
    x = conv(g, "conv1", "bn1", x, stem, 3, 1, 1, true);
  } else {
    x = conv(g, "conv1", "bn1", x, stem, 7, 2, 3, true);
    x = add_max_pool(g, "maxpool", x, 3, 2, 1);
  }
  int in_planes = stem;
  for (size_t stage = 0; stage < s.blocks.size(); ++stage) {
    const int planes = s.widths[stage], out = planes * s.expansion();
    for (int block = 0; block < s.blocks[stage]; ++block) {
      const int stride = (stage > 0 && block == 0) ? 2 : 1;
      const std::string prefix = "layer" + std::to_string(stage + 1) + "." + std::to_string(block);
      int shortcut = x;
      if (stride != 1 || in_planes != out) {
        if (s.projection) {
          const std::string p = prefix + "." + projection_name;
          shortcut = conv(g, p + ".0", p + ".1", x, out, 1, stride, 0, false);
        } else {
          Node pad;
          pad.name = prefix + ".shortcut";
          pad.op = Op::shortcut_pad;
          pad.inputs = {x};
          pad.stride = stride;
          pad.out_channels = out;
          shortcut = g.add(pad);
        }
      }
      int y;
      if (s.block == BlockType::basic) {
        y = conv(g, prefix + ".conv1", prefix + ".bn1", x, planes, 3, stride, 1, true);
        y = conv(g, prefix + ".conv2", prefix + ".bn2", y, planes, 3, 1, 1, false);
      } else {  // torchvision's Bottleneck: the stride on the 3x3 convolution
        y = conv(g, prefix + ".conv1", prefix + ".bn1", x, planes, 1, 1, 0, true);
        y = conv(g, prefix + ".conv2", prefix + ".bn2", y, planes, 3, stride, 1, true);
        y = conv(g, prefix + ".conv3", prefix + ".bn3", y, out, 1, 1, 0, false);
      }
      Node sum;
      sum.name = prefix;
      sum.op = Op::add;
      sum.inputs = {y, shortcut};
      sum.activation = Activation::relu;
      x = g.add(sum);
      in_planes = out;
    }
  }
  x = add_simple(g, "avgpool", Op::global_avg_pool, {x});
  add_linear(g, hub ? "fc" : "linear", x, o.num_classes, false);
  return g;
}

}  // namespace

ArchitectureFamily resnet_family() {
  ArchitectureFamily f;
  for (const auto& [name, n] : cifar_depths()) f.names.push_back(name);
  for (const char* name : {"resnet18", "resnet34", "resnet50"}) f.names.push_back(name);
  f.build = build_resnet;
  return f;
}

}  // namespace apot::graph
