// CIFAR ResNet-(6n+2) (He et al. 2016) built from QuantConv2d / QuantLinear, so one model serves
// full precision (the default) and any quantisation policy. Parameter names follow the common
// PyTorch CIFAR ResNet (conv1, bn1, layer1.0.conv1, ..., linear); shortcuts are option A
// (parameter-free: stride-2 subsampling and zero-padded channels) or option B (1x1 conv + BN,
// named shortcut.0 / shortcut.1).
#pragma once

#include <torch/torch.h>

#include "apot/qat/modules.h"

namespace apot::qat {

enum class Shortcut { A, B };

struct CifarResNetOptions {
  int depth = 20;  // 6n + 2: 20, 32, 44, 56, 110
  Shortcut shortcut = Shortcut::A;
  int in_channels = 3;
  int num_classes = 10;
};

class BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl> {
 public:
  BasicBlockImpl(int in_planes, int planes, int stride, Shortcut shortcut);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  QuantConv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential shortcut{nullptr};  // option B with a projection only

 private:
  int in_planes_, planes_, stride_;
  Shortcut shortcut_kind_;
};
TORCH_MODULE(BasicBlock);

class CifarResNetImpl : public torch::nn::Cloneable<CifarResNetImpl> {
 public:
  explicit CifarResNetImpl(CifarResNetOptions options = {});
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  const CifarResNetOptions& options() const { return options_; }

  QuantConv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  QuantLinear linear{nullptr};

 private:
  CifarResNetOptions options_;
};
TORCH_MODULE(CifarResNet);

}  // namespace apot::qat
