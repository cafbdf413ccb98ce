// MobileNetV2 (Sandler et al. 2018) in torchvision's layout and parameter names
// (features.0.{0,1}, features.N.conv.K[.J], features.18.{0,1}, classifier.1), with
// torchvision's width multiplier, and the CIFAR variant of the CIFAR model hubs (the same
// names; a stride-1 stem and stride 1 in the second stage).
//
// Each inverted residual block expands with a 1x1 convolution (ReLU6; absent when the expansion
// is 1), filters with a depthwise 3x3 (ReLU6) and projects with a 1x1 convolution without an
// activation (the linear bottleneck), adding its input when the shape is unchanged. Blocks
// therefore read signed values: their expansion convolutions need signed activation levels.
// The classifier's dropout is not part of the graph (inference; training runs without it).
#include <algorithm>
#include <cmath>

#include "families.h"

namespace apot::graph {
namespace {

// torchvision's _make_divisible: the nearest multiple of 8, not below 90 % of v.
int divisible(double v, int divisor = 8) {
  int rounded = std::max(divisor, int(v + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

struct Stage {
  int expansion, channels, blocks, stride;
};

Graph build(const std::string& arch, const ArchOptions& o) {
  const bool cifar = arch == "mobilenet_v2_cifar";
  const std::vector<Stage> stages{
      {1, 16, 1, 1}, {6, 24, 2, cifar ? 1 : 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2},
      {6, 320, 1, 1}};
  const double w = o.width_mult;
  Graph g;
  int x = add_input(g, o.in_channels);
  int in = divisible(32 * w);
  x = add_conv(g, "features.0.0", "features.0.1", x, relu6({in, 3, cifar ? 1 : 2, 1}));
  int index = 1;
  for (const Stage& s : stages) {
    const int out = divisible(s.channels * w);
    for (int b = 0; b < s.blocks; ++b, ++index) {
      const std::string p = "features." + std::to_string(index) + ".conv.";
      const int stride = b == 0 ? s.stride : 1;
      const int hidden = int(std::lround(double(in) * s.expansion));
      int y = x, k = 0;
      if (s.expansion != 1) {
        y = add_conv(g, p + "0.0", p + "0.1", y, relu6({hidden, 1}));
        k = 1;
      }
      const std::string dw = p + std::to_string(k);
      y = add_conv(g, dw + ".0", dw + ".1", y, relu6({hidden, 3, stride, 1, hidden}));
      y = add_conv(g, p + std::to_string(k + 1), p + std::to_string(k + 2), y, {out, 1});
      if (stride == 1 && in == out) y = add_simple(g, "features." + std::to_string(index), Op::add, {y, x});
      x = y;
      in = out;
    }
  }
  const int last = divisible(1280 * std::max(1.0, w));
  const std::string p = "features." + std::to_string(index);
  x = add_conv(g, p + ".0", p + ".1", x, relu6({last, 1}));
  x = add_simple(g, "avgpool", Op::global_avg_pool, {x});
  add_linear(g, "classifier.1", x, o.num_classes, false);
  return g;
}

}  // namespace

ArchitectureFamily mobilenet_family() {
  ArchitectureFamily f;
  f.names = {"mobilenet_v2", "mobilenet_v2_cifar"};
  f.build = build;
  f.width_mult = true;
  return f;
}

}  // namespace apot::graph
