// The architecture builders against torchvision's own models (tests/fixtures/
// make_torchvision_files.py): the same parameter names and shapes, and, with parameters and
// input from one formula on both sides, the same logits. Also which layers get signed inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "apot/qat/network.h"

namespace apot::qat {
namespace {

nlohmann::json fixture(const std::string& name) {
  std::ifstream in(std::string(APOT_SOURCE_DIR) + "/tests/fixtures/torchvision/" + name + ".json");
  EXPECT_TRUE(in.good()) << name;
  return nlohmann::json::parse(in);
}

// The fixture script's formula (see its docstring).
double formula(const std::string& name, int64_t i) {
  int64_t seed = 0;
  for (size_t k = 0; k < name.size(); ++k) seed += int64_t(static_cast<unsigned char>(name[k])) * int64_t(k + 1);
  return std::sin(0.731 * double(i) + 0.117 * double(seed % 9973));
}

bool ends_with(const std::string& s, const std::string& end) {
  return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
}

void fill(torch::Tensor& t, const std::string& name) {
  std::vector<double> v(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double u = formula(name, i);
    if (ends_with(name, "running_var")) v[size_t(i)] = 0.5 + 0.5 * std::fabs(u);
    else if (t.dim() == 1 && ends_with(name, "weight")) v[size_t(i)] = 1 + 0.25 * u;
    else if (t.dim() == 1) v[size_t(i)] = 0.1 * u;
    else v[size_t(i)] = u * std::sqrt(2.0 / (double(t.numel()) / double(t.size(0))));
  }
  t.copy_(torch::tensor(v, torch::kFloat64).to(torch::kFloat32).reshape(t.sizes()));
}

// Every parameter and buffer by name, without num_batches_tracked and apot's alphas (not in
// torchvision's state dicts).
std::map<std::string, torch::Tensor> tensors(NetworkImpl& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model.named_parameters())
    if (!ends_with(p.key(), "_alpha")) out[p.key()] = p.value();
  for (const auto& b : model.named_buffers())
    if (!ends_with(b.key(), "num_batches_tracked")) out[b.key()] = b.value();
  return out;
}

Network build(const nlohmann::json& j, int classes) {
  graph::ArchOptions o;
  o.num_classes = classes;
  o.width_mult = j["width_mult"].get<double>();
  return make_network(j["arch"].get<std::string>(), o);
}

void expect_same_names_and_shapes(NetworkImpl& model, const nlohmann::json& j) {
  const auto want = j["shapes"].get<std::map<std::string, std::vector<int64_t>>>();
  const auto have = tensors(model);
  for (const auto& [name, shape] : want) {
    const auto it = have.find(name);
    ASSERT_NE(it, have.end()) << "missing " << name;
    EXPECT_EQ(it->second.sizes().vec(), shape) << name;
  }
  for (const auto& [name, t] : have) EXPECT_TRUE(want.count(name)) << "extra " << name;
}

class TorchvisionModel : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchvisionModel, SameNamesShapesAndLogits) {
  const nlohmann::json j = fixture(GetParam());
  Network model = build(j, j["classes"].get<int>());
  expect_same_names_and_shapes(*model, j);
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : tensors(*model)) fill(t, name);
  model->eval();
  const int size = j["input"].get<int>();
  std::vector<double> input(size_t(3 * size * size));
  for (size_t i = 0; i < input.size(); ++i) input[i] = std::sin(0.05 * double(i));
  const torch::Tensor x = torch::tensor(input, torch::kFloat64).to(torch::kFloat32).reshape({1, 3, size, size});
  const torch::Tensor out = model(x);
  const torch::Tensor want = torch::tensor(j["logits"].get<std::vector<float>>()).reshape({1, -1});
  ASSERT_EQ(out.sizes(), want.sizes());
  EXPECT_LE((out - want).abs().max().item<float>(), 1e-4) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TorchvisionModel,
                         ::testing::Values("mobilenet_v2", "mobilenet_v2_cifar_w0_5", "shufflenet_v2_x1_0",
                                           "shufflenet_v2_x0_5_cifar", "vgg11_bn_cifar", "vgg16_bn_cifar"));

TEST(TorchvisionVgg, SameNamesAndShapesAt224) {
  for (const char* name : {"vgg11_bn", "vgg16_bn"}) {
    const nlohmann::json j = fixture(name);
    const graph::Graph g = graph::build_architecture(j["arch"].get<std::string>(), {3, 1000});
    // The shapes from the graph alone (a model would allocate 130 M weights).
    std::map<std::string, std::vector<int64_t>> have;
    graph::Graph shaped = g;
    shaped.infer_shapes(224, 224);
    for (int i : shaped.weight_layers()) {
      const graph::Node& n = shaped[size_t(i)];
      const int64_t in = shaped.in_channels_of(i);
      have[n.name + ".weight"] = n.op == graph::Op::conv
                                     ? std::vector<int64_t>{n.out_channels, in, n.kernel, n.kernel}
                                     : std::vector<int64_t>{n.out_channels, shaped.input_shape_of(i).size()};
      have[n.name + ".bias"] = {n.out_channels};
      if (!n.batch_norm.empty())
        for (const char* p : {".weight", ".bias", ".running_mean", ".running_var"})
          have[n.batch_norm + p] = {n.out_channels};
    }
    EXPECT_EQ(have, (j["shapes"].get<std::map<std::string, std::vector<int64_t>>>())) << name;
  }
}

// Layers whose input can be negative get signed activation levels; the graph decides.
std::vector<std::string> signed_layers(const std::string& arch) {
  graph::Graph g = graph::build_architecture(arch);
  graph::QuantAssignment a;
  graph::assign_quantization(g, a);
  std::vector<std::string> out;
  for (int i : g.weight_layers())
    if (g[size_t(i)].quant.signed_input) out.push_back(g[size_t(i)].name);
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(SignedInputs, MobileNetV2ExpansionsReadTheLinearBottlenecks) {
  const auto s = signed_layers("mobilenet_v2_cifar");
  EXPECT_TRUE(contains(s, "features.2.conv.0.0"));   // after block 1's projection
  EXPECT_TRUE(contains(s, "features.4.conv.0.0"));   // after a residual sum of two projections
  EXPECT_TRUE(contains(s, "features.18.0"));         // the last 1x1 convolution
  EXPECT_FALSE(contains(s, "features.1.conv.0.0"));  // depthwise after the ReLU6 stem
  EXPECT_FALSE(contains(s, "features.2.conv.2"));    // projection after ReLU6
  EXPECT_FALSE(contains(s, "classifier.1"));         // int8 last layer: a float input
  EXPECT_EQ(s.size(), 17u);                          // 16 expansions + features.18
}

TEST(SignedInputs, ShuffleNetV2PointwiseAfterDepthwise) {
  const auto s = signed_layers("shufflenet_v2_x0_5_cifar");
  EXPECT_TRUE(contains(s, "stage2.0.branch1.2"));
  EXPECT_TRUE(contains(s, "stage2.1.branch2.5"));
  EXPECT_FALSE(contains(s, "stage2.1.branch2.0"));  // a half of the shuffled ReLU outputs
  EXPECT_FALSE(contains(s, "stage2.0.branch2.3"));  // depthwise after ReLU
  EXPECT_EQ(s.size(), 19u);                         // one per depthwise convolution
}

TEST(SignedInputs, QuantisedMobileNetV2TrainsAStep) {
  graph::ArchOptions o;
  o.width_mult = 0.25;
  Network model = make_network("mobilenet_v2_cifar", o);
  QuantPolicy p;
  model->set_policy(p);
  const QuantConv2dImpl* expansion = model->conv("features.2.conv.0.0");
  ASSERT_NE(expansion, nullptr);
  EXPECT_TRUE(expansion->quant_options().signed_input);
  EXPECT_EQ(expansion->quant_options().describe(), "W4A4s apot");
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({4, 3, 32, 32});
  const torch::Tensor loss = torch::nn::functional::cross_entropy(model(x), torch::tensor({0, 1, 2, 3}));
  loss.backward();
  EXPECT_TRUE(std::isfinite(loss.item<float>()));
  EXPECT_GT(model->conv("features.2.conv.0.0")->act_alpha.grad().abs().item<float>(), 0);
}

TEST(Architectures, WidthMultiplierOnlyForMobileNetV2) {
  graph::ArchOptions o;
  o.width_mult = 0.5;
  EXPECT_THROW(graph::build_architecture("resnet20", o), graph::GraphError);
  EXPECT_NO_THROW(graph::build_architecture("mobilenet_v2", o));
  o.width_mult = 0;
  EXPECT_THROW(graph::build_architecture("mobilenet_v2", o), graph::GraphError);
}

// Weight normalisation on a layer that no batch norm follows (VGG's classifier.0 and .3): the
// quantised weight keeps the float weights' scale, so the layer's output keeps its size; layers
// with batch norm keep the paper's unit-variance weights.
TEST(WeightScale, LayersWithoutBatchNormKeepTheirOutputScale) {
  torch::manual_seed(3);
  Network model = make_network(graph::build_architecture("vgg11_bn_cifar", {}), QuantPolicy{});
  QuantLinearImpl* hidden = model->linear("classifier.0");
  QuantConv2dImpl* conv = model->conv("features.4");
  ASSERT_NE(hidden, nullptr);
  ASSERT_NE(conv, nullptr);
  EXPECT_TRUE(hidden->quant_options().restore_weight_scale);
  EXPECT_FALSE(conv->quant_options().restore_weight_scale);
  EXPECT_EQ(conv->weight_output_scale(), 1.0);
  EXPECT_FALSE(model->linear("classifier.6")->quant_options().quantizes_input());  // int8 last layer
  EXPECT_EQ(model->linear("classifier.6")->weight_output_scale(), 1.0);

  torch::NoGradGuard no_grad;
  const double std = hidden->weight.std().item<double>();
  EXPECT_NEAR(hidden->weight_output_scale(), std, 1e-6 * std);
  const torch::Tensor q = hidden->quantized_weight();
  // The quantised weight is std * alpha * level / D: on the grid of the normalised one, scaled.
  const double d = double(levels::LevelSet::make(levels::Kind::apot, 4, levels::Role::weight).denominator());
  const torch::Tensor k = torch::round(q / std / hidden->weight_alpha * d);
  EXPECT_TRUE(torch::allclose(q, k * hidden->weight_alpha / d * std, 1e-5, 1e-7));
  const torch::Tensor normalised_q = apot::qat::quantize_weight(
      hidden->weight, hidden->weight_alpha, {levels::Kind::apot, 4, levels::Role::weight, kernels::SteVariant::cifar},
      WeightNorm::detached);
  EXPECT_TRUE(torch::allclose(q, normalised_q * std, 1e-5, 1e-7));
  // The layer's output has the float layer's size, not sqrt(512) times it.
  const torch::Tensor x = torch::rand({64, 512}) * 2;
  const double ratio = (hidden->forward(x) - hidden->bias).std().item<double>() /
                       torch::nn::functional::linear(x, hidden->weight).std().item<double>();
  EXPECT_GT(ratio, 0.7);
  EXPECT_LT(ratio, 1.4);
  // Without weight normalisation there is nothing to restore.
  QuantPolicy none;
  none.weight_norm = WeightNorm::none;
  model->set_policy(none);
  EXPECT_EQ(model->linear("classifier.0")->weight_output_scale(), 1.0);
}

}  // namespace
}  // namespace apot::qat
