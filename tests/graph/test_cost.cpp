// The cost model reproduces Table 3 of the paper (APOT_SPEC section 7) within 1 M FixOPs.
#include <gtest/gtest.h>

#include "apot/graph/architectures.h"
#include "apot/graph/cost.h"

using apot::graph::compute_cost;

namespace {
apot::graph::Graph resnet_spec(const char* arch, int in_channels, int classes) {
  apot::graph::ArchOptions o;
  o.in_channels = in_channels;
  o.num_classes = classes;
  return apot::graph::build_architecture(arch, o);
}
}  // namespace

namespace {
double fixops_m(const char* arch, int bits, const char* kind) {
  return compute_cost(resnet_spec(arch, 3, 1000), 224, 224, bits, bits, kind).fixops / 1e6;
}
}  // namespace

TEST(Cost, ReproducesTable3) {
  EXPECT_NEAR(fixops_m("resnet18", 5, "uniform"), 781, 1.0);
  EXPECT_NEAR(fixops_m("resnet18", 5, "apot"), 616, 1.0);
  EXPECT_NEAR(fixops_m("resnet18", 5, "pot"), 582, 1.0);
  EXPECT_NEAR(fixops_m("resnet18", 3, "uniform"), 357, 1.0);
  EXPECT_NEAR(fixops_m("resnet18", 3, "apot"), 298, 1.0);
  EXPECT_NEAR(fixops_m("resnet50", 4, "uniform"), 1112, 1.0);
  EXPECT_NEAR(fixops_m("resnet50", 4, "apot"), 864, 1.0);
  EXPECT_NEAR(1 - fixops_m("resnet50", 4, "apot") / fixops_m("resnet50", 4, "uniform"), 0.223, 0.0005);
}

TEST(Cost, MacCountsOfTheSpec) {
  const auto r18 = compute_cost(resnet_spec("resnet18", 3, 1000), 224, 224, 4, 4, "apot");
  EXPECT_NEAR(r18.macs / 1e9, 1.8141, 5e-5);
  EXPECT_NEAR(r18.quantized_macs / 1e9, 1.6955, 5e-5);
  EXPECT_EQ(r18.layers.front().macs, 118013952);  // conv1
  EXPECT_EQ(r18.layers.back().macs, 512000);      // fc
  EXPECT_NEAR(compute_cost(resnet_spec("resnet34", 3, 1000), 224, 224, 4, 4, "apot").macs / 1e9, 3.6638, 5e-5);
  const auto r50 = compute_cost(resnet_spec("resnet50", 3, 1000), 224, 224, 4, 4, "apot");
  EXPECT_NEAR(r50.macs / 1e9, 4.0892, 5e-5);
  EXPECT_NEAR(r50.quantized_macs / 1e9, 3.9691, 5e-5);
}

// MAC counts of torchvision's models, counted by PyTorch forward hooks (conv: output size x
// input channels per group x kernel area; linear: in x out).
TEST(Cost, MacCountsOfShuffleNetMobileNetAndVgg) {
  auto macs = [](const char* arch) { return compute_cost(resnet_spec(arch, 3, 1000), 224, 224, 4, 4, "apot").macs; };
  EXPECT_EQ(macs("mobilenet_v2"), 300774272);
  EXPECT_EQ(macs("shufflenet_v2_x1_0"), 144907992);
  EXPECT_EQ(macs("shufflenet_v2_x0_5"), 40476448);
  EXPECT_EQ(macs("vgg16_bn"), 15470264320);
  EXPECT_EQ(macs("vgg11_bn"), 7609090048);
}

TEST(Cost, ModelSizesOfTable3IncludeBatchNorm) {
  auto mib = [](int bits, const char* kind) {
    const auto r = compute_cost(resnet_spec("resnet18", 3, 1000), 224, 224, bits, bits, kind);
    return (r.size_bytes + r.float_bytes) / 1048576.0;
  };
  EXPECT_NEAR(mib(5, "apot"), 7.22, 0.01);
  EXPECT_NEAR(mib(3, "apot"), 4.56, 0.01);
  const auto fp = compute_cost(resnet_spec("resnet18", 3, 1000), 224, 224, 32, 32, "fp");
  EXPECT_NEAR((fp.size_bytes + fp.float_bytes) / 1e6, 46.8, 0.1);
}

TEST(Cost, BadArguments) {
  EXPECT_THROW(compute_cost(resnet_spec("resnet18", 3, 1000), 224, 224, 1, 4, "apot"), std::invalid_argument);
  EXPECT_THROW(compute_cost(resnet_spec("resnet18", 3, 1000), 224, 224, 4, 4, "lloyd"), std::invalid_argument);
  EXPECT_THROW(resnet_spec("vgg16", 3, 10), std::invalid_argument);  // no batch-norm-free VGG
}
