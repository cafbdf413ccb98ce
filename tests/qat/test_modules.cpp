// QuantConv2d / QuantLinear, the quantisation policy and save/load of their state.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

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

// The trainer feeds CPU batches channels-last. A step in that layout (option-A shortcut padding,
// channel split / concat / shuffle, depthwise convolutions, quantisers) gives the loss and
// gradients of the NCHW step. Exactly in float64 (LibTorch's reference convolutions, the
// quantisers' LibTorch-ops path). In float32 (oneDNN, the fused quantisers) the convolutions'
// rounding differs by about 1e-5 of a value: full precision is compared with tolerances of that
// order; quantised, those differences move the few activations that lie that close to a level
// threshold to the next level (as any change of thread count or library would), so only the loss
// is compared, loosely. In float32 every activation stays channels-last, through the fused
// quantisers too (bit-exact in either layout: RcfQuantize.ChannelsLastKeepsItsLayoutAndValues).
TEST(Network, ChannelsLastStepEqualsTheContiguousOne) {
  for (const char* arch : {"resnet20", "shufflenet_v2_x0_5_cifar", "mobilenet_v2_cifar"}) {
    for (bool quantized : {false, true}) {
      for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
        torch::manual_seed(4);
        Network model = apot::qat::make_network(arch);
        if (quantized) apot::qat::apply_policy(*model, QuantPolicy{});  // W4A4 APoT
        model->to(dtype);
        model->train();
        const torch::Tensor x = torch::randn({8, 3, 32, 32}, dtype);
        const torch::Tensor y = torch::tensor({0, 1, 2, 3, 4, 5, 6, 7}, torch::kLong);
        std::vector<std::string> names;
        for (const auto& p : model->named_parameters()) names.push_back(p.key());
        std::vector<torch::Tensor> losses;
        std::vector<std::vector<torch::Tensor>> grads;
        for (const auto layout : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
          model->zero_grad();
          std::vector<torch::Tensor> outputs;
          const torch::Tensor loss =
              torch::nn::functional::cross_entropy(model->forward_all(x.contiguous(layout), outputs), y);
          loss.backward();
          losses.push_back(loss.detach());
          grads.emplace_back();
          for (const auto& p : model->parameters())  // unused alphas (int8 layers) have none
            grads.back().push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
          if (layout == at::MemoryFormat::ChannelsLast && dtype == torch::kFloat32) {
            for (size_t i = 1; i < outputs.size(); ++i) {
              const auto& node = model->graph().nodes()[i];
              if (outputs[i].dim() == 4 && node.op != apot::graph::Op::channel_slice) {  // slices are views
                EXPECT_TRUE(outputs[i].is_contiguous(layout)) << arch << " " << node.name;
              }
            }
          }
        }
        if (dtype == torch::kFloat32) {
          if (quantized) {
            EXPECT_TRUE(torch::allclose(losses[0], losses[1], 0.02, 0)) << arch << losses[0] << losses[1];
            continue;
          }
          EXPECT_TRUE(torch::allclose(losses[0], losses[1], 1e-4, 1e-6)) << arch << losses[0] << losses[1];
          // A wrong layout would put gradients off by about their own size; float32 rounding through
          // ShuffleNetV2's 50 layers of batch norm over 8 images at random initialisation moves
          // them by up to 2 % (ResNet-20: 0.2 %), and gradients near zero (MobileNetV2 biases
          // before a batch norm) by about 1e-6; the exact check is the float64 one above.
          for (size_t k = 0; k < grads[0].size(); ++k) {
            ASSERT_EQ(grads[0][k].defined(), grads[1][k].defined()) << arch << " " << names[k];
            if (!grads[0][k].defined()) continue;
            const double scale = grads[0][k].norm().item<double>(),
                         diff = (grads[0][k] - grads[1][k]).norm().item<double>();
            EXPECT_LE(diff, 5e-2 * scale + 1e-5) << arch << " FP float32 " << names[k];
          }
          continue;
        }
        EXPECT_TRUE(torch::allclose(losses[0], losses[1], 1e-9, 1e-12)) << arch << losses[0] << losses[1];
        for (size_t k = 0; k < grads[0].size(); ++k) {
          ASSERT_EQ(grads[0][k].defined(), grads[1][k].defined()) << arch << " " << names[k];
          if (grads[0][k].defined()) {
            EXPECT_TRUE(torch::allclose(grads[0][k], grads[1][k], 1e-7, 1e-9))
                << arch << (quantized ? " W4A4 " : " FP ") << names[k] << " differs by "
                << (grads[0][k] - grads[1][k]).abs().max().item<double>();
          }
        }
      }
    }
  }
}

// forward() applies a ReLU whose every reader quantises it to unsigned levels inside the readers'
// quantisers (SteVariant::rectified); forward_all() keeps the values and runs the ReLUs. Both give
// the same logits and the same gradients of every parameter, bit for bit, on both quantiser paths
// (ResNet-20: each block's first ReLU; MobileNetV2's ReLU6 and signed inputs are not fused; QDrop
// turns it off).
TEST(Network, ReluInsideTheQuantiserGivesTheSameStep) {
  for (apot::qat::Backend b : apot::test::all_backends()) {
    apot::test::BackendGuard guard(b);
    for (const char* arch : {"resnet20", "mobilenet_v2_cifar"}) {
      torch::manual_seed(7);
      Network model = apot::qat::make_network(arch);
      apot::qat::apply_policy(*model, QuantPolicy{});
      model->train();
      const torch::Tensor x = torch::randn({4, 3, 32, 32});
      const torch::Tensor y = torch::tensor({0, 1, 2, 3}, torch::kLong);
      size_t fused = 0;
      for (size_t i = 0; i < model->graph().size(); ++i) fused += model->relu_fuses_into_readers(i);
      EXPECT_EQ(fused, std::string(arch) == "resnet20" ? 9u : 0u) << arch;
      std::vector<torch::Tensor> logits;
      std::vector<std::vector<torch::Tensor>> grads;
      for (bool keep : {false, true}) {
        model->zero_grad();
        std::vector<torch::Tensor> outputs;
        const torch::Tensor out = keep ? model->forward_all(x, outputs) : model->forward(x);
        torch::nn::functional::cross_entropy(out, y).backward();
        logits.push_back(out.detach());
        grads.emplace_back();
        for (const auto& p : model->parameters()) grads.back().push_back(p.grad().defined() ? p.grad().clone() : p);
      }
      EXPECT_TRUE(torch::equal(logits[0], logits[1])) << arch;
      for (size_t k = 0; k < grads[0].size(); ++k)
        ASSERT_TRUE(torch::equal(grads[0][k], grads[1][k])) << arch << " parameter " << k;
    }
  }
  Network model = apot::qat::make_network("resnet20");
  apot::qat::apply_policy(*model, QuantPolicy{});
  model->conv("layer1.0.conv2")->input_drop = 0.5;
  EXPECT_FALSE(model->relu_fuses_into_readers(size_t(model->graph().find("layer1.0.conv1"))));
}

// With one replica (a sum that leaves its tensor as it is), synchronised batch norm is LibTorch's
// batch norm: outputs, gradients of input, weight and bias, and running statistics.
TEST(SyncBatchNorm, OneReplicaEqualsBatchNorm) {
  const apot::qat::ReplicaSum alone = [](torch::Tensor&) {};
  for (const auto& shape : std::vector<std::vector<int64_t>>{{6, 5, 4, 3}, {9, 7}}) {
    torch::manual_seed(7);
    const torch::Tensor x0 = torch::randn(shape) * 3 + 1;
    const torch::Tensor g = torch::randn(shape);
    const int64_t c = shape[1];
    torch::nn::BatchNorm1d bn1d(c);
    torch::nn::BatchNorm2d bn2d(c);
    torch::nn::BatchNormImplBase<1, torch::nn::BatchNorm1dImpl>& reference_1d = *bn1d;
    torch::nn::BatchNormImplBase<2, torch::nn::BatchNorm2dImpl>& reference_2d = *bn2d;
    const bool image = shape.size() == 4;
    torch::Tensor& rw = image ? reference_2d.weight : reference_1d.weight;
    torch::Tensor& rb = image ? reference_2d.bias : reference_1d.bias;
    {
      torch::NoGradGuard no_grad;
      rw.uniform_(0.5, 1.5);
      rb.normal_();
    }
    const torch::Tensor w = rw.detach().clone().requires_grad_(true), b = rb.detach().clone().requires_grad_(true);
    torch::Tensor rm = torch::zeros({c}), rv = torch::ones({c});
    const torch::Tensor x_ref = x0.clone().requires_grad_(true), x = x0.clone().requires_grad_(true);
    const torch::Tensor y_ref = image ? bn2d->forward(x_ref) : bn1d->forward(x_ref);
    y_ref.backward(g);
    const torch::Tensor y = apot::qat::sync_batch_norm(x, w, b, rm, rv, 0.1, 1e-5, alone);
    y.backward(g);
    EXPECT_TRUE(torch::allclose(y, y_ref, 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(x.grad(), x_ref.grad(), 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(w.grad(), rw.grad(), 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(b.grad(), rb.grad(), 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(rm, image ? reference_2d.running_mean : reference_1d.running_mean, 1e-6, 1e-6));
    EXPECT_TRUE(torch::allclose(rv, image ? reference_2d.running_var : reference_1d.running_var, 1e-6, 1e-6));
  }
}

// Two replicas, each with half of a batch, normalise as the whole batch does: the replicas are
// threads that meet in a shared sum.
TEST(SyncBatchNorm, TwoReplicasEqualOneWholeBatch) {
  torch::manual_seed(8);
  const torch::Tensor whole = torch::randn({8, 3, 5, 5}) * 2 - 1;
  const torch::Tensor g = torch::randn_like(whole);
  const torch::Tensor weight = torch::rand({3}) + 0.5, bias = torch::randn({3});
  const apot::qat::ReplicaSum alone = [](torch::Tensor&) {};
  torch::Tensor rm = torch::zeros({3}), rv = torch::ones({3});
  const torch::Tensor x = whole.clone().requires_grad_(true);
  const torch::Tensor y = apot::qat::sync_batch_norm(x, weight, bias, rm, rv, 0.1, 1e-5, alone);
  y.backward(g);

  // A two-party sum: each adds its tensor in; the second to arrive publishes the total and wakes
  // the first (a generation counter, so that a fast party's next sum cannot be mistaken for this one).
  std::mutex mutex;
  std::condition_variable changed;
  int arrived = 0, generation = 0;
  torch::Tensor total, result;
  const apot::qat::ReplicaSum pair = [&](torch::Tensor& t) {
    std::unique_lock<std::mutex> lock(mutex);
    const int my_generation = generation;
    total = arrived == 0 ? t.clone() : total + t;
    if (++arrived == 2) {
      result = total;
      arrived = 0;
      ++generation;
      changed.notify_all();
    } else {
      changed.wait(lock, [&] { return generation != my_generation; });
    }
    t.copy_(result);
  };
  torch::Tensor halves_grad[2], rms[2] = {torch::zeros({3}), torch::zeros({3})},
                                rvs[2] = {torch::ones({3}), torch::ones({3})};
  torch::Tensor outs[2];
  std::vector<std::thread> replicas;
  for (int r = 0; r < 2; ++r)
    replicas.emplace_back([&, r] {
      const torch::Tensor part = whole.slice(0, 4 * r, 4 * r + 4).clone().requires_grad_(true);
      outs[r] = apot::qat::sync_batch_norm(part, weight, bias, rms[r], rvs[r], 0.1, 1e-5, pair);
      outs[r].backward(g.slice(0, 4 * r, 4 * r + 4));
      halves_grad[r] = part.grad();
    });
  for (auto& t : replicas) t.join();
  EXPECT_TRUE(torch::allclose(torch::cat({outs[0], outs[1]}), y, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(torch::cat({halves_grad[0], halves_grad[1]}), x.grad(), 1e-5, 1e-5));
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(torch::allclose(rms[r], rm, 1e-6, 1e-6));
    EXPECT_TRUE(torch::allclose(rvs[r], rv, 1e-6, 1e-6));
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
