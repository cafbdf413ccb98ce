// CIFAR ResNet built from quantisable layers.
#include "apot/qat/resnet_cifar.h"

namespace apot::qat {
namespace F = torch::nn::functional;

namespace {
QuantConv2d conv3x3(int in, int out, int stride) {
  return QuantConv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}
}  // namespace

BasicBlockImpl::BasicBlockImpl(int in_planes, int planes, int stride, Shortcut shortcut)
    : in_planes_(in_planes), planes_(planes), stride_(stride), shortcut_kind_(shortcut) {
  reset();
}

void BasicBlockImpl::reset() {
  conv1 = register_module("conv1", conv3x3(in_planes_, planes_, stride_));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes_));
  conv2 = register_module("conv2", conv3x3(planes_, planes_, 1));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes_));
  const bool projects = stride_ != 1 || in_planes_ != planes_;
  if (projects && shortcut_kind_ == Shortcut::B) {
    shortcut = register_module(
        "shortcut",
        torch::nn::Sequential(QuantConv2d(torch::nn::Conv2dOptions(in_planes_, planes_, 1).stride(stride_).bias(false)),
                              torch::nn::BatchNorm2d(planes_)));
  }
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor out = torch::relu(bn1(conv1(x)));
  out = bn2(conv2(out));
  torch::Tensor identity = x;
  if (shortcut) {
    identity = shortcut->forward(x);
  } else if (stride_ != 1 || in_planes_ != planes_) {
    // Option A: subsample and zero-pad the channels (planes/4 on each side, as the common code).
    const int64_t pad = (planes_ - in_planes_) / 2;
    identity = F::pad(x.slice(2, 0, x.size(2), stride_).slice(3, 0, x.size(3), stride_),
                      F::PadFuncOptions({0, 0, 0, 0, pad, planes_ - in_planes_ - pad}));
  }
  return torch::relu(out + identity);
}

CifarResNetImpl::CifarResNetImpl(CifarResNetOptions options) : options_(options) {
  if (options_.depth < 8 || (options_.depth - 2) % 6 != 0)
    throw std::invalid_argument("CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got " +
                                std::to_string(options_.depth));
  if (options_.in_channels < 1 || options_.num_classes < 1)
    throw std::invalid_argument("CIFAR ResNet needs at least one input channel and one class");
  reset();
}

void CifarResNetImpl::reset() {
  const int blocks = (options_.depth - 2) / 6;
  conv1 = register_module("conv1", conv3x3(options_.in_channels, 16, 1));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(16));
  int in_planes = 16;
  auto make_layer = [&](int planes, int stride) {
    torch::nn::Sequential layer;
    for (int b = 0; b < blocks; ++b) {
      layer->push_back(BasicBlock(in_planes, planes, b == 0 ? stride : 1, options_.shortcut));
      in_planes = planes;
    }
    return layer;
  };
  layer1 = register_module("layer1", make_layer(16, 1));
  layer2 = register_module("layer2", make_layer(32, 2));
  layer3 = register_module("layer3", make_layer(64, 2));
  linear = register_module("linear", QuantLinear(torch::nn::LinearOptions(64, options_.num_classes)));
  torch::NoGradGuard no_grad;
  for (auto& m : modules(false)) {
    if (auto* c = dynamic_cast<QuantConv2dImpl*>(m.get())) torch::nn::init::kaiming_normal_(c->weight);
    if (auto* b = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    }
  }
  torch::nn::init::kaiming_normal_(linear->weight);
}

torch::Tensor CifarResNetImpl::forward(const torch::Tensor& x) {
  torch::Tensor out = torch::relu(bn1(conv1(x)));
  out = layer3->forward(layer2->forward(layer1->forward(out)));
  out = F::adaptive_avg_pool2d(out, F::AdaptiveAvgPool2dFuncOptions({1, 1})).flatten(1);
  return linear(out);
}

}  // namespace apot::qat
