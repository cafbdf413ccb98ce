// The reference code builds its level sets with torch (float32 tensor of the sums, times the
// float32 reciprocal of the maximum). This test repeats that construction with LibTorch and
// checks that LevelSet gives the same float32 levels, bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "apot/levels/level_set.h"

using apot::levels::Kind;
using apot::levels::LevelSet;
using apot::levels::Role;

namespace {

// build_power_value(B, additive) of the reference, loop for loop.
torch::Tensor reference_power_values(int B, bool additive) {
  std::vector<double> a{0.0}, b{0.0}, c{0.0};
  if (additive) {
    for (int i = 0; i < 3; ++i) {
      if (B == 2) {
        a.push_back(std::pow(2.0, -i - 1));
      } else if (B == 4) {
        a.push_back(std::pow(2.0, -2 * i - 1));
        b.push_back(std::pow(2.0, -2 * i - 2));
      } else if (B == 6) {
        a.push_back(std::pow(2.0, -3 * i - 1));
        b.push_back(std::pow(2.0, -3 * i - 2));
        c.push_back(std::pow(2.0, -3 * i - 3));
      } else if (B == 3) {
        if (i < 2) {
          a.push_back(std::pow(2.0, -i - 1));
        } else {
          b.push_back(std::pow(2.0, -i - 1));
          a.push_back(std::pow(2.0, -i - 2));
        }
      } else if (B == 5) {
        if (i < 2) {
          a.push_back(std::pow(2.0, -2 * i - 1));
          b.push_back(std::pow(2.0, -2 * i - 2));
        } else {
          c.push_back(std::pow(2.0, -2 * i - 1));
          a.push_back(std::pow(2.0, -2 * i - 2));
          b.push_back(std::pow(2.0, -2 * i - 3));
        }
      }
    }
  } else {
    for (int i = 0; i < (1 << B) - 1; ++i) a.push_back(std::pow(2.0, -i - 1));
  }
  std::set<double> sums;
  for (double x : a)
    for (double y : b)
      for (double z : c) sums.insert(x + y + z);
  std::vector<float> as_float(sums.begin(), sums.end());
  torch::Tensor values = torch::tensor(as_float);
  values = values.mul(1.0 / torch::max(values));
  return std::get<0>(values.sort());
}

void expect_same_bits(const torch::Tensor& reference, const std::vector<float>& ours, const std::string& what) {
  ASSERT_EQ(reference.numel(), static_cast<int64_t>(ours.size())) << what;
  const float* r = reference.data_ptr<float>();
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_EQ(r[i], ours[i]) << what << " level " << i;
}

}  // namespace

TEST(LevelSetTorchReference, ApotLevelsAreBitIdentical) {
  for (int B = 2; B <= 6; ++B) {
    const auto ours = LevelSet::make(Kind::apot, B, Role::activation).magnitudes();
    expect_same_bits(reference_power_values(B, true), ours, "apot B=" + std::to_string(B));
    if (B <= 5) {  // weights of B + 1 bits use the same magnitudes
      const auto weights = LevelSet::make(Kind::apot, B + 1, Role::weight).magnitudes();
      expect_same_bits(reference_power_values(B, true), weights, "apot weight B=" + std::to_string(B));
    }
  }
}

TEST(LevelSetTorchReference, PotLevelsAreBitIdentical) {
  for (int B = 2; B <= 5; ++B)
    expect_same_bits(reference_power_values(B, false), LevelSet::make(Kind::pot, B, Role::activation).magnitudes(),
                     "pot B=" + std::to_string(B));
}

TEST(LevelSetTorchReference, UniformLevelsAreBitIdentical) {
  // The reference's uniform_quant: x.mul(2^b - 1).round().div(2^b - 1), so levels k / (2^b - 1).
  for (int bits = 2; bits <= 8; ++bits) {
    const double n = (1 << bits) - 1;
    const torch::Tensor levels = torch::arange(0, n + 1, torch::kFloat).div(n);
    expect_same_bits(levels, LevelSet::make(Kind::uniform, bits, Role::activation).magnitudes(),
                     "uniform a" + std::to_string(bits));
  }
}
