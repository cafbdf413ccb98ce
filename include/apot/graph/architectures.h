// The architectures apot builds by name (`--arch`, `[model] arch`): one builder file per family
// under src/graph, each producing a Graph with the parameter names of the family's usual
// PyTorch code, so that its state dicts import as they are.
#pragma once

#include <string>
#include <vector>

#include "apot/graph/graph.h"

namespace apot::graph {

struct ArchOptions {
  int in_channels = 3;
  int num_classes = 10;
  std::string shortcut = "A";  // CIFAR ResNets: A (subsample + zero-pad) or B (1x1 conv + BN)
  // Parameter names: "apot" (the common CIFAR ResNet code: "linear", "shortcut") or "hub"
  // (torchvision and the CIFAR model hubs: "fc", "downsample"). ImageNet ResNets always use
  // torchvision's names.
  std::string naming = "apot";
  // MobileNetV2's width multiplier (torchvision's width_mult: channels rounded to multiples of
  // 8); the other families take only 1.
  double width_mult = 1.0;
};

// Throws GraphError naming the known architectures for an unknown one.
Graph build_architecture(const std::string& arch, const ArchOptions& options = {});
std::vector<std::string> known_architectures();
// The image size an architecture is made for: 32 for the CIFAR ResNets and the "_cifar"
// variants, 224 for the ImageNet ones (torchvision's).
int default_input_size(const std::string& arch);
bool is_known_architecture(const std::string& arch);

}  // namespace apot::graph
