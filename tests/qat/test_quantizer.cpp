// The RCF autograd operator: forward against the plain argmin projection, the alpha gradient
// against the spec's closed form and a finite-difference estimate, the STE masks of both
// variants, per-channel alphas, and the two implementations against each other.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "apot/qat/quantizer.h"
#include "projection_test_util.h"
#include "qat_test_util.h"

using apot::kernels::SteVariant;
using apot::levels::Kind;
using apot::levels::LevelSet;
using apot::levels::Role;
using apot::qat::Backend;
using apot::qat::QuantizerSpec;
using apot::qat::rcf_quantize;
using apot::test::all_backends;
using apot::test::backend_name;
using apot::test::BackendGuard;

namespace {

std::vector<QuantizerSpec> specs() {
  std::vector<QuantizerSpec> out;
  for (Role role : {Role::weight, Role::activation})
    for (Kind kind : {Kind::apot, Kind::pot, Kind::uniform})
      for (int bits : {2, 3, 4, 5})
        for (SteVariant v : {SteVariant::cifar, SteVariant::imagenet}) out.push_back({kind, bits, role, v});
  return out;
}

torch::Tensor sample_input(const QuantizerSpec& spec, float alpha, unsigned seed) {
  const LevelSet set = LevelSet::make(spec.kind, spec.bits, spec.role);
  const auto values = apot::test::interesting_inputs(set, alpha, 3000, seed);
  return torch::tensor(values);
}

// The spec's closed form (APOT_SPEC section 2), written with plain loops.
double closed_form_alpha_grad(const QuantizerSpec& spec, const torch::Tensor& input, const torch::Tensor& g,
                              float alpha) {
  const LevelSet set = LevelSet::make(spec.kind, spec.bits, spec.role);
  const float* in = input.data_ptr<float>();
  const float* gr = g.data_ptr<float>();
  double sum = 0;
  for (int64_t i = 0; i < input.numel(); ++i) {
    const float x = in[i] / alpha;
    float term;
    if (set.is_signed())
      term = std::fabs(x) > 1 ? (x > 0 ? gr[i] : -gr[i]) : gr[i] * (apot::test::argmin_projection(set, x) - x);
    else term = x > 1 ? gr[i] : x < 0 ? 0.0f : gr[i] * (apot::test::argmin_projection(set, x) - x);
    sum += term;
  }
  return sum;
}

}  // namespace

TEST(RcfQuantize, ForwardEqualsThePlainProjectionOnBothBackends) {
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    for (const QuantizerSpec& spec : specs()) {
      const LevelSet set = LevelSet::make(spec.kind, spec.bits, spec.role);
      const float alpha = 1.3f;
      const torch::Tensor in = sample_input(spec, alpha, 1);
      const torch::Tensor out = rcf_quantize(in, torch::tensor(alpha), spec);
      const float* o = out.data_ptr<float>();
      const float* x = in.data_ptr<float>();
      for (int64_t i = 0; i < in.numel(); ++i)
        ASSERT_EQ(o[i], apot::test::argmin_projection(set, x[i] / alpha) * alpha)
            << set.name() << " on " << backend_name(b) << " input " << x[i];
    }
  }
}

TEST(RcfQuantize, BackendsAgreeBitForBit) {
  for (const QuantizerSpec& spec : specs()) {
    const float alpha = 2.1f;
    const torch::Tensor in = sample_input(spec, alpha, 2).reshape({-1});
    const torch::Tensor g = torch::randn_like(in);
    std::vector<torch::Tensor> outs, grads, alpha_grads;
    for (Backend b : all_backends()) {
      BackendGuard guard(b);
      const torch::Tensor x = in.clone().requires_grad_(true);
      const torch::Tensor a = torch::tensor(alpha).requires_grad_(true);
      const torch::Tensor out = rcf_quantize(x, a, spec);
      out.backward(g);
      outs.push_back(out.detach());
      grads.push_back(x.grad());
      alpha_grads.push_back(a.grad());
    }
    EXPECT_TRUE(apot::test::bitwise_equal(outs[0], outs[1])) << LevelSet::make(spec.kind, spec.bits, spec.role).name();
    EXPECT_TRUE(apot::test::bitwise_equal(grads[0], grads[1]));
    EXPECT_NEAR(alpha_grads[0].item<double>(), alpha_grads[1].item<double>(),
                1e-5 * (1 + std::fabs(alpha_grads[0].item<double>())));
  }
}

TEST(RcfQuantize, AlphaGradientIsTheClosedForm) {
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    for (const QuantizerSpec& spec : specs()) {
      const float alpha = 0.9f;
      const torch::Tensor in = sample_input(spec, alpha, 3);
      const torch::Tensor g = torch::randn_like(in);
      const torch::Tensor a = torch::tensor(alpha).requires_grad_(true);
      rcf_quantize(in, a, spec).backward(g);
      const double expected = closed_form_alpha_grad(spec, in, g, alpha);
      EXPECT_NEAR(a.grad().item<double>(), expected, 1e-5 * (1 + std::fabs(expected))) << backend_name(b);
    }
  }
}

// The RCF alpha gradient is the exact derivative of f(a) = a * (clamp(input / a) + K), where
// K = P(c) - c is held at its value for the current alpha (the straight-through surrogate).
// Central differences of that surrogate must agree with autograd.
TEST(RcfQuantize, AlphaGradientMatchesFiniteDifferencesOfTheSurrogate) {
  torch::manual_seed(4);
  for (const QuantizerSpec& spec : specs()) {
    const double alpha = 1.7;
    const bool is_signed = spec.role == Role::weight;
    torch::Tensor in = torch::randn({4000}, torch::kFloat64) * 1.5;
    if (!is_signed) in = in.abs();
    const torch::Tensor g = torch::randn({4000}, torch::kFloat64);
    const double lo = is_signed ? -1.0 : 0.0;
    const torch::Tensor c0 = (in / alpha).clamp(lo, 1.0);
    const torch::Tensor q0 =
        rcf_quantize(in.to(torch::kFloat32), torch::tensor(float(alpha)), spec).to(torch::kFloat64) / alpha;
    const torch::Tensor frozen = q0 - c0;
    auto surrogate = [&](double a) { return ((a * ((in / a).clamp(lo, 1.0) + frozen)) * g).sum().item<double>(); };
    const double h = 1e-6;
    const double finite_difference = (surrogate(alpha + h) - surrogate(alpha - h)) / (2 * h);
    const torch::Tensor a = torch::tensor(float(alpha)).requires_grad_(true);
    rcf_quantize(in.to(torch::kFloat32), a, spec).backward(g.to(torch::kFloat32));
    EXPECT_NEAR(a.grad().item<double>(), finite_difference, 2e-3 * (1 + std::fabs(finite_difference)))
        << LevelSet::make(spec.kind, spec.bits, spec.role).name();
  }
}

TEST(RcfQuantize, StraightThroughMasksOfBothVariants) {
  // Inputs below, inside and above the range (alpha = 1).
  const torch::Tensor in = torch::tensor({-2.0f, -0.5f, 0.3f, 2.0f});
  const torch::Tensor ones = torch::ones({4});
  struct Case {
    Role role;
    SteVariant variant;
    std::vector<float> expected;
  };
  const std::vector<Case> cases{
      {Role::weight, SteVariant::cifar, {1, 1, 1, 1}},          // weights pass everywhere
      {Role::weight, SteVariant::imagenet, {0, 1, 1, 0}},       // cut outside [-1, 1]
      {Role::activation, SteVariant::cifar, {1, 1, 1, 0}},      // cut above alpha only
      {Role::activation, SteVariant::imagenet, {0, 0, 1, 0}},   // cut outside [0, 1]
      {Role::activation, SteVariant::rectified, {0, 0, 1, 0}},  // the ReLU's cut, then imagenet's
  };
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    for (const Case& c : cases) {
      const torch::Tensor x = in.clone().requires_grad_(true);
      rcf_quantize(x, torch::tensor(1.0f), {Kind::apot, 4, c.role, c.variant}).backward(ones);
      EXPECT_TRUE(torch::equal(x.grad(), torch::tensor(c.expected))) << backend_name(b) << " " << x.grad();
    }
  }
}

// The rectified variant is a ReLU followed by the quantiser (either variant: after the ReLU no
// input is below 0): the same values, input gradients and alpha gradient, at exact zeros too.
TEST(RcfQuantize, RectifiedEqualsReluThenTheQuantiser) {
  torch::manual_seed(9);
  torch::Tensor in = torch::randn({4, 8, 6, 5}) * 2;
  in.index_put_({0, 0}, 0.0f);  // exact zeros, where the ReLU's gradient is 0
  in.index_put_({1, 1}, -0.0f);
  const torch::Tensor g = torch::randn_like(in);
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    for (int bits : {2, 4}) {
      const QuantizerSpec plain{Kind::apot, bits, Role::activation, SteVariant::cifar};
      QuantizerSpec fused = plain;
      fused.variant = SteVariant::rectified;
      const torch::Tensor x1 = in.clone().requires_grad_(true), x2 = in.clone().requires_grad_(true);
      const torch::Tensor a1 = torch::tensor(1.3f).requires_grad_(true), a2 = torch::tensor(1.3f).requires_grad_(true);
      const torch::Tensor y1 = rcf_quantize(torch::relu(x1), a1, plain), y2 = rcf_quantize(x2, a2, fused);
      y1.backward(g);
      y2.backward(g);
      EXPECT_TRUE(torch::equal(y1, y2)) << backend_name(b);
      EXPECT_TRUE(torch::equal(x1.grad(), x2.grad())) << backend_name(b);
      EXPECT_EQ(a1.grad().item<float>(), a2.grad().item<float>()) << backend_name(b);
      EXPECT_GT(x2.grad().ne(0).sum().item<int64_t>(), 0);
    }
  }
  EXPECT_THROW(rcf_quantize(in, torch::tensor(1.0f), {Kind::apot, 4, Role::signed_activation, SteVariant::rectified}),
               std::invalid_argument);
}

TEST(RcfQuantize, PerChannelAlphaEqualsSeparateQuantisers) {
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    torch::manual_seed(5);
    const torch::Tensor w = torch::randn({3, 4, 3, 3});
    const torch::Tensor g = torch::randn_like(w);
    const QuantizerSpec spec{Kind::apot, 4, Role::weight, SteVariant::cifar};
    const torch::Tensor alphas = torch::tensor({0.5f, 1.0f, 2.0f}).requires_grad_(true);
    const torch::Tensor x = w.clone().requires_grad_(true);
    rcf_quantize(x, alphas, spec).backward(g);
    for (int c = 0; c < 3; ++c) {
      const torch::Tensor a = torch::tensor(alphas[c].item<float>()).requires_grad_(true);
      const torch::Tensor xc = w[c].clone().requires_grad_(true);
      const torch::Tensor out = rcf_quantize(xc, a, spec);
      out.backward(g[c]);
      EXPECT_TRUE(torch::equal(out, rcf_quantize(w, alphas.detach(), spec)[c]));
      EXPECT_NEAR(alphas.grad()[c].item<float>(), a.grad().item<float>(), 1e-5);
      EXPECT_TRUE(torch::equal(x.grad()[c], xc.grad()));
    }
  }
}

// Channels-last tensors (the trainer's CPU layout) keep their layout through the operator, with
// the same values and gradients as the NCHW tensor; per-channel weight alphas too (dimension 0
// stays outermost). A channel slice of an NCHW tensor becomes contiguous, one of a channels-last
// tensor (ShuffleNetV2's split) channels-last.
TEST(RcfQuantize, ChannelsLastKeepsItsLayoutAndValues) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    torch::manual_seed(6);
    const torch::Tensor w = torch::randn({4, 6, 5, 3}) * 2;
    const torch::Tensor g = torch::randn_like(w);
    for (const QuantizerSpec& spec : {QuantizerSpec{Kind::apot, 4, Role::weight, SteVariant::cifar},
                                      QuantizerSpec{Kind::uniform, 3, Role::activation, SteVariant::imagenet},
                                      QuantizerSpec{Kind::apot, 4, Role::signed_activation, SteVariant::cifar}}) {
      const torch::Tensor alpha_values =
          spec.role == Role::weight ? torch::tensor({0.5f, 1.0f, 2.0f, 3.0f}) : torch::tensor(1.5f);
      std::vector<torch::Tensor> outs, grads, alpha_grads;
      for (int layout = 0; layout < 4; ++layout) {
        torch::Tensor x = layout == 1 ? w.contiguous(cl) : w.clone();
        if (layout == 2) x = torch::cat({w, w}, 1).slice(1, 0, 6);                 // a slice of NCHW
        if (layout == 3) x = torch::cat({w, w}, 1).contiguous(cl).slice(1, 0, 6);  // a slice of NHWC
        x = x.detach().requires_grad_(true);
        const torch::Tensor a = alpha_values.clone().requires_grad_(true);
        const torch::Tensor out = rcf_quantize(x, a, spec);
        out.backward(layout == 1 ? g.contiguous(cl) : g);
        if ((layout == 1 || layout == 3) && b == Backend::automatic) {
          EXPECT_TRUE(out.is_contiguous(cl)) << layout;
        }
        if (layout == 1 && b == Backend::automatic) {
          EXPECT_TRUE(x.grad().is_contiguous(cl));
        }
        outs.push_back(out.detach().contiguous());
        grads.push_back(x.grad().contiguous());
        alpha_grads.push_back(a.grad());
      }
      for (int layout = 1; layout < 4; ++layout) {
        EXPECT_TRUE(apot::test::bitwise_equal(outs[0], outs[size_t(layout)])) << backend_name(b) << " " << layout;
        EXPECT_TRUE(apot::test::bitwise_equal(grads[0], grads[size_t(layout)])) << backend_name(b) << " " << layout;
        // The alpha gradient sums the same terms in another order.
        EXPECT_TRUE(torch::allclose(alpha_grads[0], alpha_grads[size_t(layout)], 1e-5, 1e-5)) << backend_name(b);
      }
    }
  }
}

TEST(RcfQuantize, BadAlphaAndShapesAreErrors) {
  const QuantizerSpec spec{Kind::apot, 4, Role::activation, SteVariant::cifar};
  const torch::Tensor x = torch::rand({8});
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    for (float bad : {0.0f, -1.0f, 1e-20f, std::numeric_limits<float>::quiet_NaN()})
      EXPECT_THROW(rcf_quantize(x, torch::tensor(bad), spec), std::invalid_argument) << bad;
  }
  EXPECT_THROW(rcf_quantize(x, torch::ones({2}), spec), std::invalid_argument);
  const QuantizerSpec weight{Kind::apot, 4, Role::weight, SteVariant::cifar};
  EXPECT_THROW(rcf_quantize(torch::rand({3, 2}), torch::ones({2}), weight), std::invalid_argument);
  EXPECT_THROW(rcf_quantize(torch::ones({3}, torch::kInt32), torch::tensor(1.0f), spec), std::invalid_argument);
}

TEST(RcfQuantize, NaNInputPropagates) {
  for (Backend b : all_backends()) {
    BackendGuard guard(b);
    const torch::Tensor x = torch::tensor({0.5f, std::numeric_limits<float>::quiet_NaN()}).requires_grad_(true);
    const torch::Tensor a = torch::tensor(1.0f).requires_grad_(true);
    const torch::Tensor out = rcf_quantize(x, a, {Kind::apot, 4, Role::activation, SteVariant::cifar});
    out.sum().backward();
    EXPECT_FALSE(std::isnan(out[0].item<float>()));
    EXPECT_TRUE(std::isnan(out[1].item<float>())) << backend_name(b);
    EXPECT_TRUE(std::isnan(x.grad()[1].item<float>()));
    EXPECT_TRUE(std::isnan(a.grad().item<float>()));
  }
}

TEST(Int8Symmetric, CodesStayWithinPlusMinus127AndGradientPasses) {
  // The most negative weight is the largest in magnitude: the reference's signed-max scale
  // would produce codes below -127 here.
  const torch::Tensor w = torch::tensor({-0.9f, -0.31f, 0.0f, 0.2f, 0.45f}).requires_grad_(true);
  const torch::Tensor q = apot::qat::quantize_int8_symmetric(w);
  const torch::Tensor codes = (q.detach() / (0.9 / 127.0)).round();
  EXPECT_EQ(codes.min().item<float>(), -127.0f);
  EXPECT_LE(codes.max().item<float>(), 127.0f);
  EXPECT_NEAR(q[0].item<float>(), -0.9f, 1e-6);
  EXPECT_NEAR(q[3].item<float>(), std::round(0.2 / (0.9 / 127)) * (0.9 / 127), 1e-6);
  q.sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), torch::ones({5})));
  const torch::Tensor zeros = torch::zeros({4});
  EXPECT_TRUE(torch::equal(apot::qat::quantize_int8_symmetric(zeros), zeros));
}

TEST(RcfQuantize, ReferenceArgminBackendAgreesAwayFromTies) {
  torch::manual_seed(6);
  for (Role role : {Role::weight, Role::activation}) {
    const QuantizerSpec spec{Kind::apot, 4, role, SteVariant::cifar};
    const torch::Tensor in = torch::randn({5000}) * 4;
    const torch::Tensor ours = rcf_quantize(in, torch::tensor(3.0f), spec);
    BackendGuard guard(Backend::reference_argmin);
    EXPECT_TRUE(torch::equal(ours, rcf_quantize(in, torch::tensor(3.0f), spec)));
  }
}

// CUDA tensors take the LibTorch-ops path (APOT_SPEC's operators on the device); it must give
// the CPU kernels' values bit for bit, per-tensor and per-channel, forward and backward. Runs
// where LibTorch was built with CUDA and a GPU is present (the device check in docs/RESULTS.md);
// skipped elsewhere.
TEST(RcfQuantize, CudaTensorsEqualTheCpuKernels) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const QuantizerSpec& spec : specs()) {
    const bool per_channel = spec.role == Role::weight;
    const torch::Tensor all = sample_input(spec, 1.7f, 7).reshape({-1});
    const torch::Tensor in = all.narrow(0, 0, all.numel() / 3 * 3).reshape({3, -1});
    const torch::Tensor alpha = per_channel ? torch::tensor({1.7f, 0.9f, 2.3f}) : torch::tensor(1.7f);
    const torch::Tensor g = torch::randn_like(in);
    std::vector<torch::Tensor> outs, grads, alpha_grads;
    for (torch::Device device : {torch::Device(torch::kCPU), torch::Device(torch::kCUDA)}) {
      // clone: .to() of a tensor already on the device is the tensor itself
      const torch::Tensor x = in.to(device).clone().requires_grad_(true);
      const torch::Tensor a = alpha.to(device).clone().requires_grad_(true);
      const torch::Tensor out = rcf_quantize(x, a, spec);
      ASSERT_EQ(out.device().type(), device.type());
      out.backward(g.to(device));
      outs.push_back(out.detach().cpu());
      grads.push_back(x.grad().cpu());
      alpha_grads.push_back(a.grad().cpu());
    }
    const std::string name = LevelSet::make(spec.kind, spec.bits, spec.role).name();
    EXPECT_TRUE(apot::test::bitwise_equal(outs[0], outs[1])) << name;
    EXPECT_TRUE(apot::test::bitwise_equal(grads[0], grads[1])) << name;
    EXPECT_TRUE(torch::allclose(alpha_grads[0], alpha_grads[1], 1e-5, 1e-4)) << name;
  }
}
