// QuantConv2d / QuantLinear, the quantisation policy and save/load of their state.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "apot/graph/serialize.h"
#include "apot/qat/modules.h"
#include "apot/qat/network.h"
#include "qat_test_util.h"

using apot::qat::Network;
using apot::qat::QuantConv2d;
using apot::qat::QuantLinear;
using apot::qat::QuantOptions;
using apot::qat::QuantPolicy;

namespace {

QuantOptions w4a4() {
  QuantOptions q;
  q.weight_bits = 4;
  q.act_bits = 4;
  return q;
}

std::string temp_path(const char* name) { return std::string(::testing::TempDir()) + name; }

}  // namespace

TEST(QuantConv2d, ForwardIsConvolutionOfQuantisedWeightAndInput) {
  torch::manual_seed(1);
  QuantConv2d conv(torch::nn::Conv2dOptions(4, 6, 3).padding(1).bias(false), w4a4());
  const torch::Tensor x = torch::rand({2, 4, 8, 8}) * 10;
  const auto spec_w = apot::qat::QuantizerSpec{apot::levels::Kind::apot, 4, apot::levels::Role::weight, {}};
  const auto spec_a = apot::qat::QuantizerSpec{apot::levels::Kind::apot, 4, apot::levels::Role::activation, {}};
  const torch::Tensor wq =
      apot::qat::quantize_weight(conv->weight, conv->weight_alpha, spec_w, apot::qat::WeightNorm::detached);
  const torch::Tensor xq = apot::qat::rcf_quantize(x, conv->act_alpha, spec_a);
  EXPECT_TRUE(torch::allclose(conv(x), torch::conv2d(xq, wq, {}, 1, 1), 1e-5, 1e-5));
  // The quantised input takes at most 16 distinct values, the weight at most 15.
  EXPECT_LE(std::get<0>(torch::_unique(xq)).numel(), 16);
  EXPECT_LE(std::get<0>(torch::_unique(wq)).numel(), 15);
  EXPECT_EQ(conv->quant_options().describe(), "W4A4 apot");
}

TEST(QuantConv2d, AlphasAreNamedParametersThatLearn) {
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 5, 3).bias(true), w4a4());
  const auto params = conv->named_parameters();
  EXPECT_TRUE(params.contains("weight_alpha"));
  EXPECT_TRUE(params.contains("act_alpha"));
  EXPECT_EQ(params["weight_alpha"].item<float>(), 3.0f);
  EXPECT_EQ(params["act_alpha"].item<float>(), 8.0f);
  conv(torch::rand({2, 3, 6, 6}) * 12).sum().backward();
  EXPECT_TRUE(conv->weight_alpha.grad().defined());
  EXPECT_TRUE(conv->act_alpha.grad().defined());
  EXPECT_NE(conv->act_alpha.grad().item<float>(), 0.0f);
}

TEST(QuantConv2d, PerChannelWeightAlpha) {
  QuantOptions q = w4a4();
  q.per_channel_weight_alpha = true;
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 5, 3), q);
  EXPECT_EQ(conv->weight_alpha.sizes(), torch::IntArrayRef({5}));
  conv(torch::rand({1, 3, 6, 6})).sum().backward();
  EXPECT_EQ(conv->weight_alpha.grad().sizes(), torch::IntArrayRef({5}));
  q.per_channel_weight_alpha = false;
  conv->set_quant_options(q);
  EXPECT_EQ(conv->weight_alpha.dim(), 0);
}

TEST(QuantConv2d, InvalidOptionsAreRejected) {
  QuantOptions q = w4a4();
  q.weight_bits = 7;
  EXPECT_THROW(QuantConv2d(torch::nn::Conv2dOptions(3, 5, 3), q), std::invalid_argument);
  q = w4a4();
  q.act_alpha_init = -1;
  EXPECT_THROW(QuantLinear(torch::nn::LinearOptions(3, 5), q), std::invalid_argument);
}

TEST(QuantModules, StateSurvivesSaveAndLoad) {
  QuantOptions q = w4a4();
  q.per_channel_weight_alpha = true;
  QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3), q);
  QuantLinear linear(torch::nn::LinearOptions(6, 2), w4a4());
  {
    torch::NoGradGuard no_grad;
    conv->weight_alpha.copy_(torch::tensor({1.5f, 2.5f, 3.5f, 4.5f}));
    conv->act_alpha.fill_(5.25f);
    linear->act_alpha.fill_(7.5f);
  }
  const std::string conv_path = temp_path("conv.pt"), linear_path = temp_path("linear.pt");
  torch::save(conv, conv_path);
  torch::save(linear, linear_path);
  QuantConv2d conv2(torch::nn::Conv2dOptions(3, 4, 3), q);
  QuantLinear linear2(torch::nn::LinearOptions(6, 2), w4a4());
  torch::load(conv2, conv_path);
  torch::load(linear2, linear_path);
  EXPECT_TRUE(torch::equal(conv2->weight_alpha, conv->weight_alpha));
  EXPECT_EQ(conv2->act_alpha.item<float>(), 5.25f);
  EXPECT_TRUE(torch::equal(conv2->weight, conv->weight));
  EXPECT_EQ(linear2->act_alpha.item<float>(), 7.5f);
  const torch::Tensor x = torch::rand({1, 3, 5, 5});
  EXPECT_TRUE(torch::equal(conv(x), conv2(x)));
  std::remove(conv_path.c_str());
  std::remove(linear_path.c_str());
}

Network resnet(const std::string& arch, const std::string& shortcut = "A", int in = 3, int classes = 10) {
  apot::graph::ArchOptions o;
  o.in_channels = in;
  o.num_classes = classes;
  o.shortcut = shortcut;
  return apot::qat::make_network(arch, o);
}

TEST(QuantPolicy, FirstAndLastLayersAreInt8AndTheRestFollowThePolicy) {
  Network fp = resnet("resnet20");
  QuantPolicy policy;
  policy.weight_bits = 3;
  policy.act_bits = 3;
  policy.layers["layer3.2.conv2"].weight_bits = 5;
  Network q = apot::qat::quantized_copy(fp, policy);
  EXPECT_TRUE(q->conv("conv1")->quant_options().int8_weights);
  EXPECT_FALSE(q->conv("conv1")->quant_options().quantizes_input());
  EXPECT_TRUE(q->linear("linear")->quant_options().int8_weights);
  EXPECT_FALSE(q->linear("linear")->quant_options().quantizes_input());
  int inner = 0;
  for (const auto& m : q->modules(false)) {
    auto* c = dynamic_cast<apot::qat::QuantConv2dImpl*>(m.get());
    if (!c || c == q->conv("conv1") || c == q->conv("layer3.2.conv2")) continue;
    EXPECT_EQ(c->quant_options().describe(), "W3A3 apot");
    ++inner;
  }
  EXPECT_EQ(inner, 17);  // ResNet-20 option A: 9 blocks x 2 convs, one overridden
  EXPECT_EQ(q->conv("layer3.2.conv2")->quant_options().describe(), "W5A3 apot");
  EXPECT_EQ(q->graph().at("layer3.2.conv2").quant.weight_bits, 5);
  // The FP model is untouched and its weights were copied.
  EXPECT_EQ(fp->conv("conv1")->quant_options().describe(), "W32A32");
  EXPECT_TRUE(
      torch::equal(fp->named_parameters()["layer2.0.conv1.weight"], q->named_parameters()["layer2.0.conv1.weight"]));
  const auto fp_params = fp->named_parameters(), q_params = q->named_parameters();
  EXPECT_EQ(fp_params.size(), q_params.size());
  policy.layers["layer9.conv"].weight_bits = 5;
  EXPECT_THROW(apot::qat::quantized_copy(fp, policy), apot::graph::GraphError);
}

TEST(Network, TrainsAStepAtEveryPrecision) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({4, 3, 32, 32});
  const torch::Tensor y = torch::tensor({0, 1, 2, 3}, torch::kLong);
  for (int bits : {32, 5, 4, 3, 2}) {
    for (const char* shortcut : {"A", "B"}) {
      Network model = resnet("resnet20", shortcut);
      QuantPolicy policy;
      policy.weight_bits = bits;
      policy.act_bits = bits;
      apot::qat::apply_policy(*model, bits == 32 ? QuantPolicy::full_precision() : policy);
      torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
      model->train();
      const torch::Tensor logits = model(x);
      ASSERT_EQ(logits.sizes(), torch::IntArrayRef({4, 10}));
      const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
      sgd.zero_grad();
      loss.backward();
      sgd.step();
      EXPECT_TRUE(std::isfinite(loss.item<float>())) << bits;
    }
  }
}

TEST(Network, OneInputChannelBadArchitectureAndBadInput) {
  Network mono = resnet("resnet20", "A", 1, 7);
  EXPECT_EQ(mono(torch::randn({2, 1, 28, 28})).sizes(), torch::IntArrayRef({2, 7}));
  EXPECT_THROW(resnet("resnet21"), std::invalid_argument);
  EXPECT_THROW(mono(torch::randn({2, 3, 28, 28})), std::invalid_argument);
}

TEST(Network, ParametersMatchTheGraph) {
  for (const std::string arch : {"resnet20", "resnet18", "resnet50"}) {
    for (const char* shortcut : {"A", "B"}) {
      Network model = resnet(arch, shortcut);
      apot::graph::Graph g = model->graph();
      g.infer_shapes(64, 64);
      const auto params = model->named_parameters();
      int64_t layers = 0;
      for (int i : g.weight_layers()) {
        const std::string& name = g[size_t(i)].name;
        ASSERT_TRUE(params.contains(name + ".weight")) << arch << " " << name;
        EXPECT_EQ(params[name + ".weight"].numel(), g.weight_count(i)) << name;
        ++layers;
      }
      int64_t convs = 0;
      for (const auto& m : model->modules(false))
        convs +=
            dynamic_cast<apot::qat::QuantConv2dImpl*>(m.get()) || dynamic_cast<apot::qat::QuantLinearImpl*>(m.get());
      EXPECT_EQ(convs, layers) << arch;
    }
  }
}

// A model file's network: modules under the layer names, forward through pooling and a sum,
// every output kept by forward_all, and a deep copy.
TEST(Network, RunsAModelFile) {
  Network model = apot::qat::make_network(
      apot::graph::read_model_file(std::string(APOT_SOURCE_DIR) + "/recipes/models/fashion-mnist-small-cnn.toml"));
  const auto params = model->named_parameters();
  for (const char* name : {"conv1.weight", "bn1.weight", "conv3.weight", "bn3.bias", "fc.weight", "fc.bias"})
    EXPECT_TRUE(params.contains(name)) << name;
  EXPECT_EQ(params["fc.weight"].sizes(), torch::IntArrayRef({10, 16}));
  model->eval();
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  std::vector<torch::Tensor> outputs;
  const torch::Tensor logits = model->forward_all(x, outputs);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({2, 10}));
  const auto& g = model->graph();
  EXPECT_EQ(outputs[size_t(g.find("pool"))].sizes(), torch::IntArrayRef({2, 16, 7, 7}));
  const torch::Tensor sum = outputs[size_t(g.find("sum"))];
  EXPECT_TRUE(torch::equal(sum, torch::relu(outputs[size_t(g.find("conv3"))] + outputs[size_t(g.find("pool"))])));
  auto copy = std::dynamic_pointer_cast<apot::qat::NetworkImpl>(model->clone());
  EXPECT_TRUE(torch::equal(copy->forward(x), logits));
}

// A quantised layer whose input can be negative (after a convolution without activation) gets
// signed activation levels: negative inputs keep their sign.
TEST(Network, SignedInputsGetSignedActivationLevels) {
  Network model = apot::qat::make_network(apot::graph::model_from_toml_text(R"(name = "signed"
[input]
channels = 1
[[layer]]
name = "a"
op = "conv"
out_channels = 4
kernel = 3
padding = 1
[[layer]]
name = "b"
op = "conv"
out_channels = 4
kernel = 3
padding = 1
activation = "relu"
[[layer]]
name = "gap"
op = "global_avg_pool"
[[layer]]
name = "fc"
op = "linear"
out_channels = 2
)",
                                                                            "signed.toml"));
  QuantPolicy policy;
  policy.weight_bits = policy.act_bits = 4;
  apot::qat::apply_policy(*model, policy);
  const QuantOptions& q = model->conv("b")->quant_options();
  EXPECT_TRUE(q.signed_input);
  EXPECT_EQ(q.describe(), "W4A4s apot");
  EXPECT_EQ(q.input_spec().role, apot::levels::Role::signed_activation);
  // The same input quantiser on its own: +-{0, .1, .2, .3, .4, .6, .8, 1} x alpha, gradient zero
  // outside [-alpha, alpha] on both sides, alpha gradient -1 below and +1 above.
  const torch::Tensor x = torch::tensor({-20.0f, -2.1f, 0.05f, 3.3f, 20.0f}).requires_grad_();
  const torch::Tensor alpha = torch::tensor(4.0f).requires_grad_();
  const torch::Tensor y = apot::qat::quantize_layer_input(x, alpha, q);
  EXPECT_TRUE(torch::allclose(y, torch::tensor({-4.0f, -2.4f, 0.0f, 3.2f, 4.0f})));
  y.sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), torch::tensor({0.0f, 1.0f, 1.0f, 1.0f, 0.0f})));
  // (q - x/alpha) inside: (-0.6 + 0.525) + (0 - 0.0125) + (0.8 - 0.825), then -1 and +1 outside.
  EXPECT_NEAR(alpha.grad().item<float>(), -0.075 - 0.0125 - 0.025, 1e-5);
  // Unsigned layers are unchanged: "a" is the int8 first layer, fc reads a ReLU output.
  EXPECT_FALSE(model->linear("fc")->quant_options().signed_input);
  policy.layers["b"].full_precision = true;
  EXPECT_NO_THROW(apot::qat::apply_policy(*model, policy));
}
