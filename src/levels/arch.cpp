// The ResNet family description and its layer enumeration.
#include "apot/levels/arch.h"

#include <stdexcept>

#include "apot/levels/level_set.h"

namespace apot::levels {

std::vector<std::string> known_architectures() {
  return {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34", "resnet50"};
}

ResNetSpec resnet_spec(const std::string& arch, int in_channels, int num_classes, Shortcut shortcut) {
  if (in_channels < 1 || num_classes < 1) throw LevelSetError("a network needs at least one input channel and one class");
  ResNetSpec s;
  s.name = arch;
  s.in_channels = in_channels;
  s.num_classes = num_classes;
  const std::vector<std::pair<std::string, int>> cifar{
      {"resnet20", 3}, {"resnet32", 5}, {"resnet44", 7}, {"resnet56", 9}, {"resnet110", 18}};
  for (const auto& [name, n] : cifar) {
    if (arch != name) continue;
    s.stem = Stem::cifar;
    s.block = BlockType::basic;
    s.blocks = {n, n, n};
    s.widths = {16, 32, 64};
    s.shortcut = shortcut;
    return s;
  }
  s.stem = Stem::imagenet;
  s.widths = {64, 128, 256, 512};
  s.shortcut = Shortcut::B;
  if (arch == "resnet18") {
    s.block = BlockType::basic;
    s.blocks = {2, 2, 2, 2};
  } else if (arch == "resnet34") {
    s.block = BlockType::basic;
    s.blocks = {3, 4, 6, 3};
  } else if (arch == "resnet50") {
    s.block = BlockType::bottleneck;
    s.blocks = {3, 4, 6, 3};
  } else {
    std::string names;
    for (const std::string& n : known_architectures()) names += (names.empty() ? "" : ", ") + n;
    throw LevelSetError("unknown architecture '" + arch + "' (known: " + names + ")");
  }
  return s;
}

int64_t LayerInfo::macs() const {
  return static_cast<int64_t>(out_height) * out_width * out_channels * in_channels * kernel * kernel;
}

int64_t LayerInfo::weight_count() const { return static_cast<int64_t>(out_channels) * in_channels * kernel * kernel; }

namespace {

struct Builder {
  std::vector<LayerInfo> layers;
  int h, w;

  LayerInfo& conv(const std::string& name, int in, int out, int k, int stride, int pad) {
    LayerInfo l;
    l.name = name;
    l.in_channels = in;
    l.out_channels = out;
    l.kernel = k;
    l.stride = stride;
    l.padding = pad;
    l.in_height = h;
    l.in_width = w;
    l.out_height = (h + 2 * pad - k) / stride + 1;
    l.out_width = (w + 2 * pad - k) / stride + 1;
    if (l.out_height < 1 || l.out_width < 1) throw LevelSetError("input too small for layer " + name);
    layers.push_back(l);
    return layers.back();
  }
};

}  // namespace

std::vector<LayerInfo> enumerate_layers(const ResNetSpec& spec, int height, int width) {
  Builder b{{}, height, width};
  const int stem_out = spec.widths.front();
  if (spec.stem == Stem::cifar) {
    b.conv("conv1", spec.in_channels, stem_out, 3, 1, 1).first = true;
  } else {
    LayerInfo& stem = b.conv("conv1", spec.in_channels, stem_out, 7, 2, 3);
    stem.first = true;
    b.h = (stem.out_height + 2 - 3) / 2 + 1;  // max-pool 3x3, stride 2, padding 1
    b.w = (stem.out_width + 2 - 3) / 2 + 1;
  }
  int in_planes = stem_out;
  for (size_t stage = 0; stage < spec.blocks.size(); ++stage) {
    const int planes = spec.widths[stage], out = planes * spec.expansion();
    for (int block = 0; block < spec.blocks[stage]; ++block) {
      const int stride = (stage > 0 && block == 0) ? 2 : 1;
      const std::string prefix = "layer" + std::to_string(stage + 1) + "." + std::to_string(block) + ".";
      const int h = b.h, w = b.w;
      if (spec.block == BlockType::basic) {
        const LayerInfo c1 = b.conv(prefix + "conv1", in_planes, planes, 3, stride, 1);
        b.h = c1.out_height;
        b.w = c1.out_width;
        b.conv(prefix + "conv2", planes, planes, 3, 1, 1);
      } else {
        b.conv(prefix + "conv1", in_planes, planes, 1, 1, 0);
        const LayerInfo c2 = b.conv(prefix + "conv2", planes, planes, 3, stride, 1);
        b.h = c2.out_height;
        b.w = c2.out_width;
        b.conv(prefix + "conv3", planes, out, 1, 1, 0);
      }
      if ((stride != 1 || in_planes != out) && spec.shortcut == Shortcut::B) {
        const int oh = b.h, ow = b.w;
        b.h = h;
        b.w = w;
        b.conv(prefix + spec.projection_name() + ".0", in_planes, out, 1, stride, 0);
        b.h = oh;
        b.w = ow;
      }
      in_planes = out;
    }
  }
  LayerInfo fc;
  fc.name = spec.classifier_name();
  fc.is_linear = true;
  fc.in_channels = in_planes;
  fc.out_channels = spec.num_classes;
  fc.last = true;
  b.layers.push_back(fc);
  return b.layers;
}

std::vector<BlockInfo> enumerate_blocks(const ResNetSpec& spec) {
  std::vector<BlockInfo> out;
  int next = 1;  // layer 0 is the stem; the order is that of enumerate_layers()
  int in_planes = spec.widths.front();
  for (size_t stage = 0; stage < spec.blocks.size(); ++stage)
    for (int block = 0; block < spec.blocks[stage]; ++block) {
      BlockInfo b;
      b.stride = (stage > 0 && block == 0) ? 2 : 1;
      b.in_planes = in_planes;
      b.out_planes = spec.widths[stage] * spec.expansion();
      const int convs = spec.block == BlockType::bottleneck ? 3 : 2;
      for (int c = 0; c < convs; ++c) b.conv[c] = next++;
      if ((b.stride != 1 || b.in_planes != b.out_planes) && spec.shortcut == Shortcut::B) b.projection = next++;
      in_planes = b.out_planes;
      out.push_back(b);
    }
  return out;
}

}  // namespace apot::levels
