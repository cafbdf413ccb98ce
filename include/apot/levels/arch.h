// One description of the ResNet family that serves the LibTorch model (src/qat), the cost
// model (cost.h) and the integer engine: the stem, block type, stage depths and widths, and
// an enumeration of every convolution and linear layer with its shapes and MACs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace apot::levels {

enum class Stem { cifar, imagenet };  // 3x3 conv (CIFAR) or 7x7/2 conv + 3x3/2 max-pool (ImageNet)
enum class BlockType { basic, bottleneck };
enum class Shortcut { A, B };  // A: subsample + zero-pad channels (parameter-free); B: 1x1 conv + BN

struct ResNetSpec {
  std::string name;  // resnet20, resnet18, ...
  Stem stem = Stem::cifar;
  BlockType block = BlockType::basic;
  std::vector<int> blocks;  // per stage
  std::vector<int> widths;  // planes per stage (output channels = planes * expansion)
  Shortcut shortcut = Shortcut::A;
  int in_channels = 3;
  int num_classes = 10;

  int expansion() const { return block == BlockType::bottleneck ? 4 : 1; }
  // Parameter names of the classifier and of projection shortcuts: "linear"/"shortcut" for the
  // CIFAR family (as the common PyTorch CIFAR ResNet), "fc"/"downsample" for torchvision's.
  const char* classifier_name() const { return stem == Stem::cifar ? "linear" : "fc"; }
  const char* projection_name() const { return stem == Stem::cifar ? "shortcut" : "downsample"; }
};

// resnet20/32/44/56/110 (CIFAR; shortcut A or B) and resnet18/34/50 (ImageNet; shortcut B).
ResNetSpec resnet_spec(const std::string& arch, int in_channels = 3, int num_classes = 10,
                       Shortcut shortcut = Shortcut::A);
std::vector<std::string> known_architectures();

struct LayerInfo {
  std::string name;  // parameter prefix, e.g. "layer2.0.conv1" or "fc"
  bool is_linear = false;
  int in_channels = 0, out_channels = 0, kernel = 1, stride = 1, padding = 0;
  int in_height = 1, in_width = 1, out_height = 1, out_width = 1;
  bool first = false, last = false;  // the first convolution / the classifier
  int64_t macs() const;
  int64_t weight_count() const;
};

// Every convolution and linear layer in forward order for an input of height x width.
std::vector<LayerInfo> enumerate_layers(const ResNetSpec& spec, int height, int width);

// The residual blocks, with their layers as indices into enumerate_layers(): the convolutions
// of the main path in order (conv[2] = -1 for basic blocks) and the projection shortcut (-1
// when the shortcut has no parameters: identity, or option A's subsample and zero-padding).
struct BlockInfo {
  int conv[3] = {-1, -1, -1};
  int projection = -1;
  int stride = 1, in_planes = 0, out_planes = 0;
  int last_conv() const { return conv[2] >= 0 ? conv[2] : conv[1]; }
};
std::vector<BlockInfo> enumerate_blocks(const ResNetSpec& spec);

}  // namespace apot::levels
