// ShuffleNetV2 (Ma et al. 2018) in torchvision's layout and parameter names
// (conv1.{0,1}, stage{2,3,4}.N.branch{1,2}.K, conv5.{0,1}, fc), widths x0.5..x2.0, and the
// CIFAR variant of the CIFAR model hubs: a stride-1 3x3 stem and no max-pool.
//
// A unit with stride 1 splits its input's channels in two halves, runs branch2 on the second
// and concatenates the first half with the result; a unit with stride 2 runs branch1 and
// branch2 on the whole input. Both end in a channel shuffle of 2 groups. The depthwise
// convolutions have batch norm but no ReLU, so the 1x1 convolutions after them read signed
// values.
#include "families.h"

namespace apot::graph {
namespace {

struct Width {
  const char* suffix;
  std::vector<int> channels;  // stem, stage 2, 3, 4, conv5
};

const std::vector<Width>& widths() {
  static const std::vector<Width> w{{"x0_5", {24, 48, 96, 192, 1024}},
                                    {"x1_0", {24, 116, 232, 464, 1024}},
                                    {"x1_5", {24, 176, 352, 704, 1024}},
                                    {"x2_0", {24, 244, 488, 976, 2048}}};
  return w;
}

constexpr int kRepeats[] = {4, 8, 4};

ConvSpec pointwise(int out, bool relu) { return {out, 1, 1, 0, 1, false, relu ? Activation::relu : Activation::none}; }
ConvSpec depthwise(int channels, int stride) { return {channels, 3, stride, 1, channels}; }

int unit(Graph& g, const std::string& p, int x, int in, int out, int stride) {
  const int half = out / 2;
  int left, right;
  if (stride == 1) {
    Node a;
    a.name = p + ".split.0";
    a.op = Op::channel_slice;
    a.inputs = {x};
    a.out_channels = half;
    Node b = a;
    b.name = p + ".split.1";
    b.begin = half;
    left = g.add(a);
    right = g.add(b);
  } else {
    left = add_conv(g, p + ".branch1.0", p + ".branch1.1", x, depthwise(in, stride));
    left = add_conv(g, p + ".branch1.2", p + ".branch1.3", left, pointwise(half, true));
    right = x;
  }
  right = add_conv(g, p + ".branch2.0", p + ".branch2.1", right, pointwise(half, true));
  right = add_conv(g, p + ".branch2.3", p + ".branch2.4", right, depthwise(half, stride));
  right = add_conv(g, p + ".branch2.5", p + ".branch2.6", right, pointwise(half, true));
  const int joined = add_simple(g, p + ".concat", Op::concat, {left, right});
  Node shuffle;
  shuffle.name = p;
  shuffle.op = Op::channel_shuffle;
  shuffle.inputs = {joined};
  shuffle.groups = 2;
  return g.add(shuffle);
}

Graph build(const std::string& arch, const ArchOptions& o) {
  const bool cifar = arch.size() > 6 && arch.compare(arch.size() - 6, 6, "_cifar") == 0;
  const std::vector<int>* channels = nullptr;
  for (const Width& w : widths())
    if (arch.find(w.suffix) != std::string::npos) channels = &w.channels;
  const std::vector<int>& c = *channels;
  Graph g;
  int x = add_input(g, o.in_channels);
  x = add_conv(g, "conv1.0", "conv1.1", x, {c[0], 3, cifar ? 1 : 2, 1, 1, false, Activation::relu});
  if (!cifar) x = add_max_pool(g, "maxpool", x, 3, 2, 1);
  int in = c[0];
  for (int stage = 0; stage < 3; ++stage) {
    const std::string name = "stage" + std::to_string(stage + 2);
    for (int i = 0; i < kRepeats[stage]; ++i) {
      x = unit(g, name + "." + std::to_string(i), x, in, c[size_t(stage) + 1], i == 0 ? 2 : 1);
      in = c[size_t(stage) + 1];
    }
  }
  x = add_conv(g, "conv5.0", "conv5.1", x, pointwise(c[4], true));
  x = add_simple(g, "avgpool", Op::global_avg_pool, {x});
  add_linear(g, "fc", x, o.num_classes, false);
  return g;
}

}  // namespace

ArchitectureFamily shufflenet_family() {
  ArchitectureFamily f;
  for (const Width& w : widths()) {
    f.names.push_back(std::string("shufflenet_v2_") + w.suffix);
    f.names.push_back(std::string("shufflenet_v2_") + w.suffix + "_cifar");
  }
  f.build = build;
  return f;
}

}  // namespace apot::graph
