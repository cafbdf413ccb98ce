// Weight normalisation: both variants' gradients against LibTorch autograd of the same formula,
// and no NaN for a constant weight tensor.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "apot/qat/quantizer.h"
#include "qat_test_util.h"

using apot::kernels::SteVariant;
using apot::levels::Kind;
using apot::levels::Role;
using apot::qat::Backend;
using apot::qat::QuantizerSpec;
using apot::qat::WeightNorm;
using apot::test::all_backends;
using apot::test::BackendGuard;

namespace {
const QuantizerSpec kSpec{Kind::apot, 4, Role::weight, SteVariant::cifar};
}

TEST(WeightNorm, DetachedStatisticsGradientIsOneOverStd) {
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    torch::manual_seed(1);
    const torch::Tensor w0 = torch::randn({16, 8, 3, 3}) * 0.1 + 0.01;
    const torch::Tensor g = torch::randn_like(w0);
    // Ours.
    const torch::Tensor w = w0.clone().requires_grad_(true);
    const torch::Tensor a = torch::tensor(3.0f).requires_grad_(true);
    const torch::Tensor out = apot::qat::quantize_weight(w, a, kSpec, WeightNorm::detached);
    out.backward(g);
    // The same formula with LibTorch autograd: statistics detached, then the identity-normalised RCF.
    const torch::Tensor w2 = w0.clone().requires_grad_(true);
    const torch::Tensor a2 = torch::tensor(3.0f).requires_grad_(true);
    const torch::Tensor mean = w2.detach().to(torch::kFloat64).mean().to(torch::kFloat32);
    const torch::Tensor std = w2.detach().to(torch::kFloat64).std().to(torch::kFloat32);
    const torch::Tensor out2 = apot::qat::rcf_quantize((w2 - mean) / std, a2, kSpec);
    out2.backward(g);
    EXPECT_TRUE(torch::allclose(out, out2, 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(w.grad(), w2.grad(), 1e-4, 1e-5));
    EXPECT_TRUE(torch::allclose(w.grad(), g / std, 1e-4, 1e-5));  // cifar variant: everything passes
    EXPECT_NEAR(a.grad().item<float>(), a2.grad().item<float>(), 1e-3 * (1 + std::fabs(a2.grad().item<float>())));
  }
}

TEST(WeightNorm, ThroughVariantMatchesAutogradOfTheStandardisation) {
  torch::manual_seed(2);
  const torch::Tensor w0 = torch::randn({8, 4, 3, 3}) * 0.2 - 0.03;
  const torch::Tensor g = torch::randn_like(w0);
  const torch::Tensor w = w0.clone().requires_grad_(true);
  apot::qat::quantize_weight(w, torch::tensor(3.0f), kSpec, WeightNorm::through).backward(g);
  const torch::Tensor w2 = w0.clone().requires_grad_(true);
  apot::qat::rcf_quantize((w2 - w2.mean()) / w2.std(), torch::tensor(3.0f), kSpec).backward(g);
  EXPECT_TRUE(torch::allclose(w.grad(), w2.grad(), 1e-4, 1e-6));
  // Gradients through mean and std differ from the detached variant.
  const torch::Tensor w3 = w0.clone().requires_grad_(true);
  apot::qat::quantize_weight(w3, torch::tensor(3.0f), kSpec, WeightNorm::detached).backward(g);
  EXPECT_FALSE(torch::allclose(w.grad(), w3.grad(), 1e-4, 1e-6));
}

TEST(WeightNorm, ConstantWeightsGiveNoNaN) {
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    for (WeightNorm mode : {WeightNorm::detached, WeightNorm::through}) {
      const torch::Tensor w = torch::full({4, 4, 3, 3}, 0.25f).requires_grad_(true);
      const torch::Tensor a = torch::tensor(3.0f).requires_grad_(true);
      const torch::Tensor out = apot::qat::quantize_weight(w, a, kSpec, mode);
      out.sum().backward();
      EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << apot::qat::to_string(mode);
      EXPECT_TRUE(torch::equal(out, torch::zeros_like(out)));
      EXPECT_TRUE(torch::isfinite(w.grad()).all().item<bool>());
      EXPECT_TRUE(std::isfinite(a.grad().item<float>()));
    }
  }
}

TEST(WeightNorm, NamesParse) {
  EXPECT_EQ(apot::qat::parse_weight_norm("detached"), WeightNorm::detached);
  EXPECT_EQ(apot::qat::parse_weight_norm("imagenet"), WeightNorm::through);
  EXPECT_THROW(apot::qat::parse_weight_norm("batch"), std::invalid_argument);
}
