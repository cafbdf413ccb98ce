// Projection kernels at the edges: exact ties, signed zeros, huge values, NaN and Inf, bad
// alphas, out-of-range indices, thread-count independence and the ISA override.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "../../src/kernels/cells.h"  // internal: the cells claim is tested directly
#include "apot/kernels/statistics.h"
#include "projection_test_util.h"

using apot::kernels::Isa;
using apot::kernels::Projector;
using apot::kernels::SteVariant;
using apot::levels::Kind;
using apot::levels::LevelSet;
using apot::levels::Role;
using apot::test::same_bits;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> forward(const Projector& p, const std::vector<float>& in, float alpha, Isa isa) {
  std::vector<float> out(in.size());
  p.forward(in.data(), in.size(), alpha, out.data(), isa);
  return out;
}

}  // namespace

TEST(ProjectionEdges, ExactTiesGoToTheLargerMagnitude) {
  // B = 2 activations {0, 1/4, 1/2, 1}: the midpoints 1/8, 3/8 and 3/4 are exact floats.
  const Projector act(LevelSet::make(Kind::apot, 2, Role::activation));
  const Projector w(LevelSet::make(Kind::apot, 3, Role::weight));  // +-{0, 1/4, 1/2, 1}
  for (Isa isa : apot::kernels::supported_isas()) {
    EXPECT_EQ(forward(act, {0.125f, 0.375f, 0.75f}, 1.0f, isa), (std::vector<float>{0.25f, 0.5f, 1.0f}));
    const float below = std::nextafter(0.375f, 0.0f);
    EXPECT_EQ(forward(act, {below}, 1.0f, isa), (std::vector<float>{0.25f}));
    EXPECT_EQ(forward(w, {-0.375f, 0.375f, -0.75f}, 1.0f, isa), (std::vector<float>{-0.5f, 0.5f, -1.0f}));
  }
}

TEST(ProjectionEdges, SignedZerosAndFarValues) {
  const Projector w(LevelSet::make(Kind::apot, 4, Role::weight));
  const Projector act(LevelSet::make(Kind::apot, 4, Role::activation));
  const float huge = std::numeric_limits<float>::max();
  for (Isa isa : apot::kernels::supported_isas()) {
    const auto wo = forward(w, {0.0f, -0.0f, 1e30f, -1e30f, huge, -huge, kInf, -kInf}, 3.0f, isa);
    EXPECT_EQ(wo, (std::vector<float>{0, 0, 3, -3, 3, -3, 3, -3})) << apot::kernels::to_string(isa);
    EXPECT_TRUE(std::signbit(wo[1])) << "-0 keeps its sign";
    const auto ao = forward(act, {0.0f, -0.0f, -5.0f, 1e30f, kInf, -kInf}, 8.0f, isa);
    EXPECT_EQ(ao, (std::vector<float>{0, 0, 0, 8, 8, 0})) << apot::kernels::to_string(isa);
  }
}

TEST(ProjectionEdges, NaNPropagatesAndIsNeverHidden) {
  for (const LevelSet& set :
       {LevelSet::make(Kind::apot, 4, Role::weight), LevelSet::make(Kind::apot, 4, Role::activation)}) {
    const Projector p(set);
    std::vector<float> in(37, 0.3f);
    in[5] = kNaN;
    in[20] = kNaN;  // inside the SIMD body and in the tail
    in[36] = kNaN;
    const std::vector<float> g(in.size(), 1.0f);
    for (Isa isa : apot::kernels::supported_isas()) {
      const auto out = forward(p, in, 2.0f, isa);
      std::vector<float> grad(in.size());
      const double grad_alpha = p.backward(in.data(), g.data(), in.size(), 2.0f, SteVariant::cifar, grad.data(), isa);
      EXPECT_TRUE(std::isnan(grad_alpha));
      for (size_t i : {5, 20, 36}) {
        EXPECT_TRUE(std::isnan(out[i])) << set.name() << " " << apot::kernels::to_string(isa);
        EXPECT_TRUE(std::isnan(grad[i]));
      }
      EXPECT_FALSE(std::isnan(out[0]));
      EXPECT_FALSE(std::isnan(grad[0]));
      std::vector<uint8_t> index(in.size());
      EXPECT_THROW(p.quantize(in.data(), in.size(), 2.0f, index.data(), isa), std::invalid_argument);
    }
  }
}

TEST(ProjectionEdges, InfinityGradientsFollowTheClippedBranch) {
  const Projector w(LevelSet::make(Kind::apot, 4, Role::weight));
  const Projector act(LevelSet::make(Kind::apot, 4, Role::activation));
  const std::vector<float> in{kInf, -kInf};
  const std::vector<float> g{2.0f, 3.0f};
  for (Isa isa : apot::kernels::supported_isas()) {
    std::vector<float> grad(2);
    EXPECT_EQ(w.backward(in.data(), g.data(), 2, 1.0f, SteVariant::cifar, grad.data(), isa), 2.0 - 3.0);
    EXPECT_EQ(grad, (std::vector<float>{2.0f, 3.0f}));  // cifar: weight gradient passes everywhere
    EXPECT_EQ(w.backward(in.data(), g.data(), 2, 1.0f, SteVariant::imagenet, grad.data(), isa), 2.0 - 3.0);
    EXPECT_EQ(grad, (std::vector<float>{0.0f, 0.0f}));
    EXPECT_EQ(act.backward(in.data(), g.data(), 2, 1.0f, SteVariant::cifar, grad.data(), isa), 2.0);
    EXPECT_EQ(grad, (std::vector<float>{0.0f, 3.0f}));  // cifar: only the part above alpha is cut
    act.backward(in.data(), g.data(), 2, 1.0f, SteVariant::imagenet, grad.data(), isa);
    EXPECT_EQ(grad, (std::vector<float>{0.0f, 0.0f}));
  }
}

TEST(ProjectionEdges, BadAlphaIsAnError) {
  const Projector p(LevelSet::make(Kind::apot, 4, Role::activation));
  std::vector<float> in(4, 1.0f), out(4), g(4, 1.0f);
  for (float alpha : {0.0f, -1.0f, -0.0f, 1e-12f, kNaN, kInf}) {
    EXPECT_THROW(p.forward(in.data(), 4, alpha, out.data()), std::invalid_argument) << alpha;
    EXPECT_THROW(p.backward(in.data(), g.data(), 4, alpha, SteVariant::cifar, out.data()), std::invalid_argument);
  }
  EXPECT_NO_THROW(p.forward(in.data(), 4, apot::kernels::kMinAlpha, out.data()));
  EXPECT_THROW(p.forward(in.data(), 4, 1.0f, out.data(), apot::kernels::default_isa(), {0.0f, 0.0f}),
               std::invalid_argument);
}

TEST(ProjectionEdges, OutOfRangeIndicesAreRejected) {
  const Projector p(LevelSet::make(Kind::apot, 4, Role::weight));  // 15 levels
  const std::vector<uint8_t> index{0, 14, 15};
  std::vector<float> out(3);
  EXPECT_THROW(p.dequantize(index.data(), 3, 1.0f, out.data()), std::invalid_argument);
  EXPECT_NO_THROW(p.dequantize(index.data(), 2, 1.0f, out.data()));
  EXPECT_EQ(out[0], -1.0f);
  EXPECT_EQ(out[1], 1.0f);
}

TEST(ProjectionEdges, EmptyInputIsANoOp) {
  const Projector p(LevelSet::make(Kind::apot, 4, Role::activation));
  for (Isa isa : apot::kernels::supported_isas())
    EXPECT_EQ(p.backward(nullptr, nullptr, 0, 1.0f, SteVariant::cifar, nullptr, isa), 0.0);
}

TEST(ProjectionEdges, ResultsDoNotDependOnTheThreadCount) {
  const LevelSet set = LevelSet::make(Kind::apot, 4, Role::activation);
  const Projector p(set);
  const std::vector<float> in = apot::test::interesting_inputs(set, 6.0f, 300001, 11);
  std::mt19937 rng(12);
  std::normal_distribution<float> normal;
  std::vector<float> g(in.size());
  for (float& v : g) v = normal(rng);
  for (Isa isa : apot::kernels::supported_isas()) {
    std::vector<double> sums;
    std::vector<std::vector<float>> outs;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      std::vector<float> grad(in.size()), out(in.size());
      p.forward(in.data(), in.size(), 6.0f, out.data(), isa);
      sums.push_back(p.backward(in.data(), g.data(), in.size(), 6.0f, SteVariant::cifar, grad.data(), isa));
      outs.push_back(out);
    }
    EXPECT_EQ(sums[0], sums[1]) << apot::kernels::to_string(isa);
    EXPECT_EQ(sums[0], sums[2]) << apot::kernels::to_string(isa);
    EXPECT_EQ(outs[0], outs[1]);
  }
  omp_set_num_threads(2);
}

TEST(ProjectionEdges, IsaNamesParseAndUnknownOnesFail) {
  EXPECT_EQ(apot::kernels::parse_isa("scalar"), Isa::scalar);
  for (Isa isa : apot::kernels::supported_isas())
    EXPECT_EQ(apot::kernels::parse_isa(apot::kernels::to_string(isa)), isa);
  EXPECT_THROW(apot::kernels::parse_isa("sse9"), std::runtime_error);
  EXPECT_THROW(apot::kernels::parse_ste_variant("mnist"), std::invalid_argument);
}

TEST(Statistics, MeanAndUnbiasedStd) {
  const std::vector<float> x{1.0f, 2.0f, 3.0f, 4.0f};
  const auto s = apot::kernels::mean_std(x.data(), x.size());
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.std, std::sqrt(5.0 / 3.0));
  const std::vector<float> constant(100000, 0.25f);
  const auto c = apot::kernels::mean_std(constant.data(), constant.size());
  EXPECT_EQ(c.mean, 0.25);
  EXPECT_EQ(c.std, 0.0);  // callers must guard: the kernels reject a zero scale
  EXPECT_EQ(apot::kernels::mean_std(x.data(), 1).std, 0.0);
}

// cells.h's claim: base[g(v)] plus the checks in v's cell is the number of thresholds <= v, for
// every float, whatever the thresholds (here random sets, crowded ones that need two checks or
// none apply, and floats next to every threshold and every cell boundary).
TEST(Cells, CountThresholdsExactlyForEveryValue) {
  using apot::kernels::detail::Cells;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> spread(-3.0f, 7.0f);
  int with_one = 0, with_two = 0, with_none = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int count = 2 + trial % 31;
    std::vector<float> t(static_cast<size_t>(count));
    for (float& x : t) x = trial % 5 == 0 ? std::ldexp(spread(rng), -(trial % 40)) : spread(rng);
    if (trial % 7 == 0) t[1] = std::nextafter(t[0], INFINITY);  // crowded: two in one cell
    std::sort(t.begin(), t.end());
    const Cells cells = Cells::make(t.data(), count);
    if (cells.cells == 0) {
      ++with_none;
      continue;
    }
    (cells.checks == 1 ? with_one : with_two)++;
    ASSERT_LE(cells.checks, cells.cells == 64 ? 1 : 2);
    std::vector<float> values{-INFINITY, INFINITY, std::numeric_limits<float>::quiet_NaN(), 0.0f, -0.0f};
    auto around = [&](float x) {
      float up = x, down = x;
      for (int s = 0; s < 4; ++s, up = std::nextafter(up, INFINITY), down = std::nextafter(down, -INFINITY)) {
        values.push_back(up);
        values.push_back(down);
      }
    };
    for (float x : t) around(x);
    for (int g = 0; g <= cells.cells; ++g) around((float(g) - cells.c) / cells.k);  // cell boundaries
    for (int i = 0; i < 200; ++i) values.push_back(spread(rng));
    for (float v : values) {
      const int expected = static_cast<int>(std::count_if(t.begin(), t.end(), [v](float x) { return v >= x; }));
      const int g = Cells::cell_of(v, cells.k, cells.c, cells.cells);
      int index = cells.base[g];
      for (int c = 0; c < cells.checks; ++c)
        if (index < count && v >= t[static_cast<size_t>(index)]) ++index;
      ASSERT_EQ(index, expected) << "value " << v << " in cell " << g << ", " << count << " thresholds";
    }
  }
  EXPECT_GT(with_one, 0);
  EXPECT_GT(with_two, 0);
  EXPECT_GT(with_none, 0);
}
