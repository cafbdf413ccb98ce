// The ResNet family from one levels::ResNetSpec.
#include "apot/qat/resnet.h"

namespace apot::qat {
namespace F = torch::nn::functional;

namespace {
QuantConv2d conv(int in, int out, int k, int stride, int pad) {
  return QuantConv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false));
}
}  // namespace

ResidualBlockImpl::ResidualBlockImpl(const levels::ResNetSpec& spec, int in_planes, int planes, int stride)
    : spec_(spec), in_planes_(in_planes), planes_(planes), out_planes_(planes * spec.expansion()), stride_(stride) {
  reset();
}

void ResidualBlockImpl::reset() {
  if (spec_.block == levels::BlockType::basic) {
    conv1 = register_module("conv1", conv(in_planes_, planes_, 3, stride_, 1));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes_));
    conv2 = register_module("conv2", conv(planes_, planes_, 3, 1, 1));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes_));
  } else {  // torchvision's Bottleneck (stride on the 3x3 convolution)
    conv1 = register_module("conv1", conv(in_planes_, planes_, 1, 1, 0));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes_));
    conv2 = register_module("conv2", conv(planes_, planes_, 3, stride_, 1));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes_));
    conv3 = register_module("conv3", conv(planes_, out_planes_, 1, 1, 0));
    bn3 = register_module("bn3", torch::nn::BatchNorm2d(out_planes_));
  }
  if ((stride_ != 1 || in_planes_ != out_planes_) && spec_.shortcut == levels::Shortcut::B)
    projection = register_module(
        spec_.projection_name(),
        torch::nn::Sequential(conv(in_planes_, out_planes_, 1, stride_, 0), torch::nn::BatchNorm2d(out_planes_)));
}

torch::Tensor ResidualBlockImpl::forward(const torch::Tensor& x) { return run(x, nullptr); }

torch::Tensor ResidualBlockImpl::forward_with_inner(const torch::Tensor& x, std::vector<torch::Tensor>& inner) {
  return run(x, &inner);
}

torch::Tensor ResidualBlockImpl::run(const torch::Tensor& x, std::vector<torch::Tensor>* inner) {
  torch::Tensor out = torch::relu(bn1(conv1(x)));
  if (inner) inner->push_back(out);
  if (conv3) {
    out = torch::relu(bn2(conv2(out)));
    if (inner) inner->push_back(out);
    out = bn3(conv3(out));
  } else {
    out = bn2(conv2(out));
  }
  torch::Tensor identity = x;
  if (projection) {
    identity = projection->forward(x);
  } else if (stride_ != 1 || in_planes_ != out_planes_) {
    // Option A: subsample, then zero-pad the channels (half on each side, as the common code).
    const int64_t before = pad_channels() / 2;
    identity = F::pad(x.slice(2, 0, x.size(2), stride_).slice(3, 0, x.size(3), stride_),
                      F::PadFuncOptions({0, 0, 0, 0, before, pad_channels() - before}));
  }
  return torch::relu(out + identity);
}

ResNetImpl::ResNetImpl(levels::ResNetSpec spec) : spec_(std::move(spec)) { reset(); }

void ResNetImpl::reset() {
  const int stem = spec_.widths.front();
  if (spec_.stem == levels::Stem::cifar)
    conv1 = register_module("conv1", conv(spec_.in_channels, stem, 3, 1, 1));
  else
    conv1 = register_module("conv1", conv(spec_.in_channels, stem, 7, 2, 3));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(stem));
  stages.clear();
  int in_planes = stem;
  for (size_t s = 0; s < spec_.blocks.size(); ++s) {
    torch::nn::Sequential stage;
    for (int b = 0; b < spec_.blocks[s]; ++b) {
      stage->push_back(ResidualBlock(spec_, in_planes, spec_.widths[s], (s > 0 && b == 0) ? 2 : 1));
      in_planes = spec_.widths[s] * spec_.expansion();
    }
    stages.push_back(register_module("layer" + std::to_string(s + 1), stage));
  }
  classifier = register_module(spec_.classifier_name(), QuantLinear(torch::nn::LinearOptions(in_planes, spec_.num_classes)));
  torch::NoGradGuard no_grad;
  for (auto& m : modules(false)) {
    if (auto* c = dynamic_cast<QuantConv2dImpl*>(m.get()))
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    if (auto* b = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    }
  }
}

torch::Tensor ResNetImpl::forward(const torch::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != spec_.in_channels)
    throw std::invalid_argument(spec_.name + " expects input [N, " + std::to_string(spec_.in_channels) +
                                ", H, W], got " + c10::str(x.sizes()));
  torch::Tensor out = torch::relu(bn1(conv1(x)));
  if (spec_.stem == levels::Stem::imagenet) out = F::max_pool2d(out, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
  for (auto& stage : stages) out = stage->forward(out);
  out = F::adaptive_avg_pool2d(out, F::AdaptiveAvgPool2dFuncOptions({1, 1})).flatten(1);
  return classifier(out);
}

ResNet make_resnet(const std::string& arch, int in_channels, int num_classes, levels::Shortcut shortcut) {
  return ResNet(levels::resnet_spec(arch, in_channels, num_classes, shortcut));
}

}  // namespace apot::qat
