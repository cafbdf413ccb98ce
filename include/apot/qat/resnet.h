// The ResNet family (CIFAR ResNet-20..110 with option A or B shortcuts, ImageNet ResNet-18/34/50
// in torchvision's layout) built from QuantConv2d / QuantLinear according to one
// levels::ResNetSpec, so that one model serves full precision (the default) and every
// quantisation policy, and the cost model and engine see the same layers.
#pragma once

#include <torch/torch.h>

#include "apot/levels/arch.h"
#include "apot/qat/modules.h"

namespace apot::qat {

class ResidualBlockImpl : public torch::nn::Cloneable<ResidualBlockImpl> {
 public:
  ResidualBlockImpl(const levels::ResNetSpec& spec, int in_planes, int planes, int stride);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  // forward(), also appending to `inner` the outputs of the inner convolutions (after batch
  // norm and ReLU): conv1, and conv2 in a bottleneck block.
  torch::Tensor forward_with_inner(const torch::Tensor& x, std::vector<torch::Tensor>& inner);

  QuantConv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};  // conv3: bottleneck only
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential projection{nullptr};  // option B shortcut ("shortcut" / "downsample")

  // Option A: the channels added by zero padding (0 if the block keeps its shape).
  int pad_channels() const { return out_planes_ - in_planes_; }
  int stride() const { return stride_; }

 private:
  torch::Tensor run(const torch::Tensor& x, std::vector<torch::Tensor>* inner);
  levels::ResNetSpec spec_;
  int in_planes_, planes_, out_planes_, stride_;
};
TORCH_MODULE(ResidualBlock);

class ResNetImpl : public torch::nn::Cloneable<ResNetImpl> {
 public:
  explicit ResNetImpl(levels::ResNetSpec spec);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  const levels::ResNetSpec& spec() const { return spec_; }

  QuantConv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  std::vector<torch::nn::Sequential> stages;  // layer1, layer2, ...
  QuantLinear classifier{nullptr};            // "linear" (CIFAR) or "fc" (ImageNet)

 private:
  levels::ResNetSpec spec_;
};
TORCH_MODULE(ResNet);

// Builds a full-precision model of a known architecture (levels::known_architectures()).
ResNet make_resnet(const std::string& arch, int in_channels, int num_classes,
                   levels::Shortcut shortcut = levels::Shortcut::A);

}  // namespace apot::qat
