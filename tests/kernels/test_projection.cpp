// Projection kernels: the scalar reference against a plain argmin and the spec's gradient
// formulas, and every SIMD path against the scalar reference, on every level set.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "projection_test_util.h"

using apot::kernels::Isa;
using apot::kernels::Normalisation;
using apot::kernels::Projector;
using apot::kernels::SteVariant;
using apot::levels::LevelSet;
using apot::test::all_level_sets;
using apot::test::argmin_projection;
using apot::test::interesting_inputs;
using apot::test::same_bits;

namespace {

// Per-element terms of d out / d alpha and the input gradient, written from APOT_SPEC section 2.
struct ExpectedBackward {
  std::vector<float> grad_input;
  double grad_alpha = 0.0;
};

ExpectedBackward spec_backward(const LevelSet& set, const std::vector<float>& in, const std::vector<float>& g,
                               float alpha, SteVariant variant) {
  ExpectedBackward e;
  for (size_t i = 0; i < in.size(); ++i) {
    const float x = in[i] / alpha;
    const float q = argmin_projection(set, x);
    float term, pass;
    if (set.is_signed()) {
      const bool outside = std::fabs(x) > 1.0f;
      term = outside ? (x > 0 ? g[i] : -g[i]) : g[i] * (q - x);
      pass = (outside && variant == SteVariant::imagenet) ? 0.0f : g[i];
    } else {
      if (x > 1.0f) {
        term = g[i];
        pass = 0.0f;
      } else if (x < 0.0f || (x == 0.0f && variant == SteVariant::rectified)) {
        // rectified: the ReLU inside the quantiser cuts x <= 0 (its own gradient is 0 there)
        term = 0.0f;
        pass = variant == SteVariant::cifar ? g[i] : 0.0f;
      } else {
        term = g[i] * (q - x);
        pass = g[i];
      }
    }
    e.grad_input.push_back(pass);
    e.grad_alpha += term;
  }
  return e;
}

// rectified applies to unsigned level sets only.
std::vector<SteVariant> variants_of(const LevelSet& set) {
  if (set.is_signed()) return {SteVariant::cifar, SteVariant::imagenet};
  return {SteVariant::cifar, SteVariant::imagenet, SteVariant::rectified};
}

std::vector<float> gradients(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> g(n);
  for (float& v : g) v = normal(rng);
  return g;
}

}  // namespace

TEST(ProjectionReference, ForwardEqualsPlainArgmin) {
  for (const LevelSet& set : all_level_sets()) {
    const Projector p(set);
    for (float alpha : {1.0f, 0.37f, 3.0f, 8.0f}) {
      const std::vector<float> in = interesting_inputs(set, alpha, 2000, 1);
      std::vector<float> out(in.size());
      p.forward(in.data(), in.size(), alpha, out.data(), Isa::scalar);
      for (size_t i = 0; i < in.size(); ++i) {
        const float expected = argmin_projection(set, in[i] / alpha) * alpha;
        ASSERT_EQ(out[i], expected) << set.name() << " alpha " << alpha << " input " << in[i];
      }
    }
  }
}

TEST(ProjectionReference, QuantizeGivesTheIndexOfTheForwardValue) {
  for (const LevelSet& set : all_level_sets()) {
    const Projector p(set);
    const float alpha = 2.5f;
    const std::vector<float> in = interesting_inputs(set, alpha, 1000, 2);
    std::vector<uint8_t> index(in.size());
    std::vector<float> out(in.size()), back(in.size());
    p.quantize(in.data(), in.size(), alpha, index.data(), Isa::scalar);
    p.forward(in.data(), in.size(), alpha, out.data(), Isa::scalar);
    p.dequantize(index.data(), index.size(), alpha, back.data(), Isa::scalar);
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_LT(index[i], set.size());
      ASSERT_EQ(back[i], out[i]) << set.name() << " input " << in[i];
    }
  }
}

TEST(ProjectionReference, BackwardMatchesTheSpecFormulas) {
  for (const LevelSet& set : all_level_sets()) {
    const Projector p(set);
    for (SteVariant variant : variants_of(set)) {
      const float alpha = 1.7f;
      const std::vector<float> in = interesting_inputs(set, alpha, 3000, 3);
      const std::vector<float> g = gradients(in.size(), 4);
      std::vector<float> grad_in(in.size());
      const double grad_alpha = p.backward(in.data(), g.data(), in.size(), alpha, variant, grad_in.data(), Isa::scalar);
      const ExpectedBackward e = spec_backward(set, in, g, alpha, variant);
      EXPECT_NEAR(grad_alpha, e.grad_alpha, 1e-9 * (1.0 + std::fabs(e.grad_alpha))) << set.name();
      for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(grad_in[i], e.grad_input[i]) << set.name() << " input " << in[i];
    }
  }
}

TEST(ProjectionReference, NormalisationIsAppliedBeforeAlpha) {
  const LevelSet set = LevelSet::make(apot::levels::Kind::apot, 4, apot::levels::Role::weight);
  const Projector p(set);
  const Normalisation norm{0.013f, 0.052f};
  const std::vector<float> raw = interesting_inputs(set, 0.1f, 2000, 5);
  std::vector<float> normalised(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) normalised[i] = (raw[i] - norm.shift) / norm.scale;
  const std::vector<float> g = gradients(raw.size(), 6);
  std::vector<float> a(raw.size()), b(raw.size()), ga(raw.size()), gb(raw.size());
  p.forward(raw.data(), raw.size(), 3.0f, a.data(), Isa::scalar, norm);
  p.forward(normalised.data(), raw.size(), 3.0f, b.data(), Isa::scalar);
  const double alpha_a =
      p.backward(raw.data(), g.data(), raw.size(), 3.0f, SteVariant::cifar, ga.data(), Isa::scalar, norm);
  const double alpha_b =
      p.backward(normalised.data(), g.data(), raw.size(), 3.0f, SteVariant::cifar, gb.data(), Isa::scalar);
  EXPECT_EQ(alpha_a, alpha_b);
  for (size_t i = 0; i < raw.size(); ++i) {
    ASSERT_EQ(a[i], b[i]);
    ASSERT_EQ(ga[i], gb[i] / norm.scale);  // chain rule through the detached normalisation
  }
}

// Round to nearest even on the upper 16 bits, as LibTorch converts float to bfloat16.
uint16_t expected_bfloat16(float v) {
  if (std::isnan(v)) return 0x7FC0;
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  const uint32_t low = u & 0xFFFFu, high = u >> 16;
  const bool up = low > 0x8000u || (low == 0x8000u && (high & 1u));
  return static_cast<uint16_t>(high + (up ? 1u : 0u));
}

float widened(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// The bfloat16 forms on every path: forward_bf16 is forward() rounded to nearest even (ties to
// even, NaN 0x7FC0); backward_bf16 is backward() on the widened gradients, bit for bit (alpha
// gradient included: the same path sums in the same order).
TEST(ProjectionIsa, BfloatSixteenFormsEqualTheFloatOnes) {
  EXPECT_EQ(expected_bfloat16(1.0f), 0x3F80);
  EXPECT_EQ(expected_bfloat16(widened(0x3F80) + std::ldexp(1.0f, -8)), 0x3F80);  // a tie: to even
  EXPECT_EQ(expected_bfloat16(widened(0x3F81) + std::ldexp(1.0f, -8)), 0x3F82);  // a tie: to even
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const LevelSet& set : all_level_sets()) {
    const Projector p(set);
    const float alpha = 1.37f;
    std::vector<float> in = interesting_inputs(set, alpha, 300, 21);
    in.push_back(nan);
    in.resize(in.size() + 5, 0.25f);  // a tail
    std::vector<uint16_t> g16(in.size());
    std::vector<float> g(in.size());
    const std::vector<float> random = gradients(in.size(), 22);
    for (size_t i = 0; i < in.size(); ++i) {
      g16[i] = expected_bfloat16(random[i]);
      g[i] = widened(g16[i]);
    }
    // Signed sets with a normalisation (a scale other than 1 takes other kernels)
    const Normalisation norm = set.is_signed() ? Normalisation{0.01f, 0.9f} : Normalisation{};
    for (Isa isa : apot::kernels::supported_isas()) {
      const std::string where = set.name() + " on " + apot::kernels::to_string(isa);
      std::vector<float> out(in.size());
      std::vector<uint16_t> out16(in.size());
      p.forward(in.data(), in.size(), alpha, out.data(), isa, norm);
      p.forward_bf16(in.data(), in.size(), alpha, out16.data(), isa, norm);
      for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out16[i], expected_bfloat16(out[i])) << where << " " << in[i];
      for (SteVariant variant : variants_of(set)) {
        std::vector<float> grad(in.size()), grad16(in.size());
        const double a = p.backward(in.data(), g.data(), in.size(), alpha, variant, grad.data(), isa, norm);
        const double a16 = p.backward_bf16(in.data(), g16.data(), in.size(), alpha, variant, grad16.data(), isa, norm);
        ASSERT_TRUE(same_bits(float(a), float(a16)) || (std::isnan(a) && std::isnan(a16))) << where;
        for (size_t i = 0; i < in.size(); ++i) ASSERT_TRUE(same_bits(grad[i], grad16[i])) << where << " " << in[i];
      }
    }
  }
}

// Every SIMD path against the scalar reference: same bits for values, indices and input
// gradients; the alpha gradient within double rounding (it is summed in another order).
TEST(ProjectionIsa, EveryPathMatchesTheScalarReference) {
  const auto isas = apot::kernels::supported_isas();
  std::printf("testing ISA paths:");
  for (Isa isa : isas) std::printf(" %s", apot::kernels::to_string(isa));
  std::printf("\n");
  for (const LevelSet& set : all_level_sets()) {
    const Projector p(set);
    for (size_t extra : {0u, 1u, 7u, 9u, 15u, 17u, 33u}) {
      // The AVX-512 cells are laid over the thresholds as each alpha and scale move them.
      const float alpha = extra % 3 == 0 ? 0.8f : extra % 3 == 1 ? 3.7f : 0.011f;
      std::vector<float> in = interesting_inputs(set, alpha, 500 + extra, 7 + extra);
      in.resize(in.size() - (in.size() % 64) + extra);  // exercise every tail length
      const std::vector<float> g = gradients(in.size(), 8);
      const Normalisation norm = set.is_signed() ? Normalisation{0.01f, 0.9f} : Normalisation{};
      std::vector<float> ref_out(in.size()), ref_grad(in.size());
      std::vector<uint8_t> ref_index(in.size());
      p.forward(in.data(), in.size(), alpha, ref_out.data(), Isa::scalar, norm);
      p.quantize(in.data(), in.size(), alpha, ref_index.data(), Isa::scalar, norm);
      for (SteVariant variant : variants_of(set)) {
        const double ref_alpha =
            p.backward(in.data(), g.data(), in.size(), alpha, variant, ref_grad.data(), Isa::scalar, norm);
        for (Isa isa : isas) {
          std::vector<float> out(in.size()), grad(in.size()), back(in.size());
          std::vector<uint8_t> index(in.size());
          p.forward(in.data(), in.size(), alpha, out.data(), isa, norm);
          p.quantize(in.data(), in.size(), alpha, index.data(), isa, norm);
          p.dequantize(index.data(), index.size(), alpha, back.data(), isa);
          const double grad_alpha = p.backward(in.data(), g.data(), in.size(), alpha, variant, grad.data(), isa, norm);
          const std::string where = set.name() + " on " + apot::kernels::to_string(isa);
          EXPECT_NEAR(grad_alpha, ref_alpha, 1e-10 * (1.0 + std::fabs(ref_alpha))) << where;
          for (size_t i = 0; i < in.size(); ++i) {
            ASSERT_TRUE(same_bits(out[i], ref_out[i])) << where << " input " << in[i];
            ASSERT_EQ(index[i], ref_index[i]) << where << " input " << in[i];
            ASSERT_TRUE(same_bits(grad[i], ref_grad[i]))
                << where << " input " << in[i] << " grad " << grad[i] << " ref " << ref_grad[i] << " g " << g[i]
                << " variant " << int(variant) << " alpha " << alpha;
            ASSERT_EQ(back[i], ref_out[i]) << where;
          }
        }
      }
    }
  }
}
