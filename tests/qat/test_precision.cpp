// Convolutions in bfloat16 (qat::conv2d_bf16) against float64 convolutions of the same
// bfloat16-rounded tensors, and the layers and networks that use them in training mode only.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "apot/qat/modules.h"
#include "apot/qat/network.h"
#include "apot/qat/precision.h"

using apot::qat::ConvPrecision;

namespace {

torch::Tensor rounded(const torch::Tensor& t) { return t.to(torch::kBFloat16).to(torch::kFloat64); }

// |a - b| <= 2^-7 |b - offset| + 1e-5 * max|b| elementwise: bfloat16 keeps 8 significant bits,
// so outputs and gradients rounded once from float32 sums are within 2^-8 of the exact value
// (offset: what is added after the rounding, the bias).
void expect_bf16_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what,
                       const torch::Tensor& offset = torch::Tensor()) {
  const torch::Tensor a64 = a.to(torch::kFloat64), b64 = b.to(torch::kFloat64);
  const double scale = b64.abs().max().item<double>();
  const torch::Tensor rounded_part = offset.defined() ? b64 - offset.to(torch::kFloat64) : b64;
  const torch::Tensor bound = rounded_part.abs() * (1.0 / 128) + 1e-5 * scale;
  EXPECT_TRUE(((a64 - b64).abs() <= bound).all().item<bool>())
      << what << ": off by up to " << (a64 - b64).abs().max().item<double>() << " of " << scale;
}

}  // namespace

// Shapes of the networks' layers: 3x3 with padding, stride 2, a 1x1 projection, a depthwise
// convolution, a bias; NCHW and channels-last inputs.
TEST(Conv2dBf16, ForwardAndGradientsAreThoseOfTheRoundedTensors) {
  struct Case {
    int64_t in, out, kernel, stride, padding, groups;
    bool bias;
  };
  for (const Case& c : {Case{8, 6, 3, 1, 1, 1, false}, Case{6, 10, 3, 2, 1, 2, true}, Case{8, 16, 1, 1, 0, 1, false},
                        Case{12, 12, 3, 1, 1, 12, false}}) {
    for (const auto layout : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
      torch::manual_seed(11);
      const torch::Tensor x = torch::randn({3, c.in, 9, 7}).contiguous(layout);
      const torch::Tensor w = torch::randn({c.out, c.in / c.groups, c.kernel, c.kernel});
      const torch::Tensor bias = c.bias ? torch::randn({c.out}) : torch::Tensor();
      const std::vector<int64_t> stride{c.stride, c.stride}, padding{c.padding, c.padding}, dilation{1, 1};
      const torch::Tensor xg = x.clone().requires_grad_(true), wg = w.clone().requires_grad_(true);
      const torch::Tensor bg = c.bias ? bias.clone().requires_grad_(true) : torch::Tensor();
      const torch::Tensor y = apot::qat::conv2d_bf16(xg, wg, bg, stride, padding, dilation, c.groups);
      ASSERT_EQ(y.scalar_type(), torch::kFloat32);
      const torch::Tensor g = torch::randn_like(y);
      y.backward(g);
      // The reference: float64 convolutions of the rounded input, weight and output gradient.
      const torch::Tensor xr = rounded(x).requires_grad_(true), wr = rounded(w).requires_grad_(true);
      const torch::Tensor yr = at::convolution(xr, wr, c.bias ? bias.to(torch::kFloat64) : torch::Tensor(), stride,
                                               padding, dilation, false, {0, 0}, c.groups);
      yr.backward(rounded(g));
      const std::string where = "groups " + std::to_string(c.groups) + " stride " + std::to_string(c.stride) +
                                (layout == at::MemoryFormat::ChannelsLast ? " channels-last" : " NCHW");
      expect_bf16_close(y, yr, "output, " + where, c.bias ? bias.reshape({1, -1, 1, 1}) : torch::Tensor());
      expect_bf16_close(xg.grad(), xr.grad(), "input gradient, " + where);
      expect_bf16_close(wg.grad(), wr.grad(), "weight gradient, " + where);
      ASSERT_EQ(xg.grad().scalar_type(), torch::kFloat32);
      if (c.bias) {
        EXPECT_TRUE(torch::allclose(bg.grad().to(torch::kFloat64), g.to(torch::kFloat64).sum({0, 2, 3}), 1e-5, 1e-5))
            << where;
      }
    }
  }
  EXPECT_THROW(apot::qat::conv2d_bf16(torch::randn({1, 2, 3, 3}, torch::kFloat64), torch::randn({2, 2, 1, 1}), {},
                                      {1, 1}, {0, 0}, {1, 1}, 1),
               std::invalid_argument);
}

// The quantiser writing bfloat16 and reading the bfloat16 gradient in the same function as the
// convolution gives what the quantiser followed by conv2d_bf16 gives, bit for bit: values and
// the gradients of input, alpha and weight (the same roundings in the same places).
TEST(Conv2dBf16, TheQuantiserInsideGivesTheSameBits) {
  using apot::qat::QuantizerSpec;
  for (auto variant : {apot::kernels::SteVariant::cifar, apot::kernels::SteVariant::rectified}) {
    for (const auto layout : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
      torch::manual_seed(13);
      torch::Tensor input = (torch::randn({4, 8, 10, 10}) * 3).contiguous(layout);
      input.index_put_({0, 0}, 0.0f);
      const torch::Tensor w = torch::randn({12, 8, 3, 3}), bias = torch::randn({12});
      const QuantizerSpec spec{apot::levels::Kind::apot, 4, apot::levels::Role::activation, variant};
      std::vector<torch::Tensor> outs, grads;
      for (bool fused : {false, true}) {
        const torch::Tensor x = input.clone().requires_grad_(true), a = torch::tensor(2.5f).requires_grad_(true);
        const torch::Tensor wg = w.clone().requires_grad_(true), bg = bias.clone().requires_grad_(true);
        const torch::Tensor y =
            fused ? apot::qat::quantized_conv2d_bf16(x, a, spec, wg, bg, {1, 1}, {1, 1}, {1, 1}, 1)
                  : apot::qat::conv2d_bf16(apot::qat::rcf_quantize(x, a, spec), wg, bg, {1, 1}, {1, 1}, {1, 1}, 1);
        y.backward(torch::ones_like(y) + y.detach() * 0.01);
        outs.push_back(y.detach());
        for (const auto& t : {x, a, wg, bg}) grads.push_back(t.grad());
      }
      EXPECT_TRUE(torch::equal(outs[0], outs[1]));
      for (size_t k = 0; k < 4; ++k) EXPECT_TRUE(torch::equal(grads[k], grads[k + 4])) << "gradient " << k;
      EXPECT_GT(grads[0].ne(0).sum().item<int64_t>(), 0);
    }
  }
}

// A layer in bfloat16 runs conv2d_bf16 in training mode and the float32 convolution in
// evaluation, bit for bit; a network sets it on every convolution and its copies keep it.
TEST(Conv2dBf16, LayersUseItInTrainingOnly) {
  apot::qat::QuantOptions q;
  q.weight_bits = 4;
  q.act_bits = 4;
  apot::qat::QuantConv2d conv(torch::nn::Conv2dOptions(8, 8, 3).padding(1), q);
  torch::manual_seed(12);
  const torch::Tensor x = torch::randn({2, 8, 6, 6}).abs();
  const torch::Tensor fp32 = conv->forward(x);
  conv->precision = ConvPrecision::bf16;
  conv->train();
  const torch::Tensor in_training = conv->forward(x);
  const torch::Tensor expected =
      apot::qat::quantized_conv2d_bf16(x, conv->act_alpha, conv->quant_options().input_spec(), conv->quantized_weight(),
                                       conv->bias, {1, 1}, {1, 1}, {1, 1}, 1);
  EXPECT_TRUE(torch::equal(in_training, expected));
  EXPECT_FALSE(torch::equal(in_training, fp32));
  conv->eval();
  EXPECT_TRUE(torch::equal(conv->forward(x), fp32));

  apot::qat::Network model = apot::qat::make_network("resnet20");
  model->set_conv_precision(ConvPrecision::bf16);
  auto copy = std::dynamic_pointer_cast<apot::qat::NetworkImpl>(model->clone());
  for (const auto& node : model->graph().nodes())
    if (node.op == apot::graph::Op::conv) {
      EXPECT_EQ(model->conv(node.name)->precision, ConvPrecision::bf16) << node.name;
      EXPECT_EQ(copy->conv(node.name)->precision, ConvPrecision::bf16) << node.name;
    }
}
