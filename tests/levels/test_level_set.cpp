// Level sets: the exact sets of APOT_SPEC section 1, their integer form, thresholds and errors.
#include "apot/levels/level_set.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

using apot::levels::Kind;
using apot::levels::LevelSet;
using apot::levels::LevelSetError;
using apot::levels::Role;

namespace {

std::vector<int64_t> magnitude_ints(Kind kind, int bits, Role role) {
  return LevelSet::make(kind, bits, role).magnitude_integers();
}

}  // namespace

TEST(LevelSet, ApotActivationIntegerFormsMatchTheSpec) {
  EXPECT_EQ(magnitude_ints(Kind::apot, 2, Role::activation), (std::vector<int64_t>{0, 1, 2, 4}));
  EXPECT_EQ(magnitude_ints(Kind::apot, 3, Role::activation), (std::vector<int64_t>{0, 1, 2, 3, 4, 6, 8, 10}));
  const LevelSet a4 = LevelSet::make(Kind::apot, 4, Role::activation);
  EXPECT_EQ(a4.magnitude_integers(), (std::vector<int64_t>{0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48}));
  EXPECT_EQ(a4.denominator(), 48);
  EXPECT_EQ(a4.storage_bits(), 8);
  const LevelSet a5 = LevelSet::make(Kind::apot, 5, Role::activation);
  EXPECT_EQ(a5.size(), 32u);
  EXPECT_EQ(a5.denominator(), 100);
  const LevelSet a6 = LevelSet::make(Kind::apot, 6, Role::activation);
  EXPECT_EQ(a6.size(), 64u);
  EXPECT_EQ(a6.denominator(), 448);  // raw sums in 1/512, top 7/8
  EXPECT_EQ(a6.storage_bits(), 16);  // 448 does not fit a byte
}

TEST(LevelSet, ApotDecimalLevelsMatchTheSpecTable) {
  const std::vector<double> b3 = {0, .1, .2, .3, .4, .6, .8, 1};
  const LevelSet a3 = LevelSet::make(Kind::apot, 3, Role::activation);
  ASSERT_EQ(a3.magnitudes().size(), b3.size());
  for (size_t i = 0; i < b3.size(); ++i) EXPECT_NEAR(a3.magnitudes()[i], b3[i], 1e-7);
  const std::vector<double> b4 = {0,      1. / 48, 1. / 24, 1. / 16, 1. / 12, 1. / 8,   1. / 6, 3. / 16,
                                  1. / 4, 1. / 3,  3. / 8,  1. / 2,  2. / 3,  11. / 16, 3. / 4, 1};
  const LevelSet a4 = LevelSet::make(Kind::apot, 4, Role::activation);
  for (size_t i = 0; i < b4.size(); ++i) EXPECT_NEAR(a4.magnitudes()[i], b4[i], 1e-7);
}

TEST(LevelSet, EveryIntegerIsTheExactLevel) {
  for (Kind kind : {Kind::apot, Kind::pot, Kind::uniform}) {
    for (Role role : {Role::weight, Role::activation}) {
      const int max_bits = kind == Kind::uniform ? 8 : 6;
      for (int bits = 2; bits <= max_bits; ++bits) {
        const LevelSet s = LevelSet::make(kind, bits, role);
        ASSERT_EQ(s.magnitudes().size(), s.magnitude_integers().size()) << s.name();
        EXPECT_EQ(s.magnitude_integers().front(), 0) << s.name();
        EXPECT_EQ(s.magnitude_integers().back(), s.denominator()) << s.name();
        EXPECT_EQ(s.magnitudes().back(), 1.0f) << s.name();
        for (size_t i = 0; i < s.magnitudes().size(); ++i) {
          const double exact = static_cast<double>(s.magnitude_integers()[i]) / s.denominator();
          // The float32 level is the reference's float computation: within one float ulp.
          EXPECT_NEAR(s.magnitudes()[i], exact, std::max(exact, 1e-30) * 2.5e-7) << s.name() << " level " << i;
          if (i > 0) {
            EXPECT_LT(s.magnitudes()[i - 1], s.magnitudes()[i]) << s.name();
          }
        }
      }
    }
  }
}

TEST(LevelSet, WeightsAreSignedWithOneBitLessMagnitude) {
  const LevelSet w4 = LevelSet::make(Kind::apot, 4, Role::weight);
  EXPECT_TRUE(w4.is_signed());
  EXPECT_EQ(w4.size(), 15u);
  EXPECT_EQ(w4.integers(), (std::vector<int64_t>{-10, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 10}));
  EXPECT_EQ(w4.zero_index(), 7u);
  EXPECT_EQ(w4.levels()[w4.zero_index()], 0.0f);
  const LevelSet w3 = LevelSet::make(Kind::apot, 3, Role::weight);
  EXPECT_EQ(w3.integers(), (std::vector<int64_t>{-4, -2, -1, 0, 1, 2, 4}));  // +-{0, 1/4, 1/2, 1}
  const LevelSet w5 = LevelSet::make(Kind::apot, 5, Role::weight);
  EXPECT_EQ(w5.denominator(), 48);
  EXPECT_EQ(w5.storage_bits(), 8);
  const LevelSet w6 = LevelSet::make(Kind::apot, 6, Role::weight);
  EXPECT_EQ(w6.denominator(), 100);
  EXPECT_EQ(w6.storage_bits(), 8);
}

TEST(LevelSet, TwoBitWeightsAreTernaryForEveryKind) {
  for (Kind kind : {Kind::apot, Kind::pot, Kind::uniform, Kind::ternary}) {
    const LevelSet s = LevelSet::make(kind, 2, Role::weight);
    EXPECT_EQ(s.kind(), Kind::ternary);
    EXPECT_EQ(s.requested_kind(), kind);
    EXPECT_EQ(s.integers(), (std::vector<int64_t>{-1, 0, 1}));
    EXPECT_EQ(s.denominator(), 1);
  }
}

TEST(LevelSet, SignedActivationsUseTheWeightsSymmetricSets) {
  for (Kind kind : {Kind::apot, Kind::pot, Kind::uniform})
    for (int bits = 2; bits <= 5; ++bits) {
      const LevelSet s = LevelSet::make_activation(kind, bits, true);
      const LevelSet w = LevelSet::make(kind, bits, Role::weight);
      EXPECT_TRUE(s.is_signed());
      EXPECT_EQ(s.role(), Role::signed_activation);
      EXPECT_EQ(s.integers(), w.integers()) << bits;
      EXPECT_EQ(s.denominator(), w.denominator());
      EXPECT_EQ(s.thresholds(), w.thresholds());
      EXPECT_EQ(s.kind(), bits == 2 ? Kind::ternary : kind);
    }
  EXPECT_FALSE(LevelSet::make_activation(Kind::apot, 4, false).is_signed());
  EXPECT_EQ(LevelSet::make_activation(Kind::apot, 4, true).name(), "apot-s4");
  EXPECT_EQ(apot::levels::parse_role("signed_activation"), Role::signed_activation);
  EXPECT_THROW(LevelSet::make(Kind::ternary, 2, Role::signed_activation), LevelSetError);  // ask for apot/pot/uniform
}

TEST(LevelSet, PowerOfTwoBaseline) {
  const LevelSet a3 = LevelSet::make(Kind::pot, 3, Role::activation);
  ASSERT_EQ(a3.size(), 8u);
  EXPECT_EQ(a3.magnitudes()[0], 0.0f);
  for (int i = 1; i < 8; ++i) EXPECT_EQ(a3.magnitudes()[i], std::ldexp(1.0f, i - 7)) << i;  // 2^-6 .. 1
  const LevelSet a4 = LevelSet::make(Kind::pot, 4, Role::activation);
  EXPECT_EQ(a4.denominator(), 1 << 14);
  EXPECT_EQ(a4.storage_bits(), 16);
  const LevelSet w4 = LevelSet::make(Kind::pot, 4, Role::weight);  // B = 3 magnitudes, signed
  EXPECT_EQ(w4.size(), 15u);
}

TEST(LevelSet, UniformBaseline) {
  const LevelSet w4 = LevelSet::make(Kind::uniform, 4, Role::weight);
  EXPECT_EQ(w4.size(), 15u);  // 2^b - 1 values
  EXPECT_EQ(w4.denominator(), 7);
  const LevelSet a4 = LevelSet::make(Kind::uniform, 4, Role::activation);
  EXPECT_EQ(a4.size(), 16u);
  EXPECT_EQ(a4.denominator(), 15);
  for (int k = 0; k <= 15; ++k) EXPECT_EQ(a4.magnitudes()[k], static_cast<float>(k) / 15.0f);
  const LevelSet a8 = LevelSet::make(Kind::uniform, 8, Role::activation);
  EXPECT_EQ(a8.size(), 256u);
  EXPECT_EQ(a8.storage_bits(), 8);
  EXPECT_EQ(LevelSet::make(Kind::uniform, 8, Role::weight).storage_bits(), 8);  // +-127
}

TEST(LevelSet, ThresholdsAreMidpointsRoundedUp) {
  for (Kind kind : {Kind::apot, Kind::pot, Kind::uniform}) {
    for (Role role : {Role::weight, Role::activation}) {
      for (int bits = 2; bits <= 6; ++bits) {
        const LevelSet s = LevelSet::make(kind, bits, role);
        ASSERT_EQ(s.thresholds().size() + 1, s.magnitudes().size());
        for (size_t i = 0; i < s.thresholds().size(); ++i) {
          const double mid = (double(s.magnitudes()[i]) + double(s.magnitudes()[i + 1])) / 2;
          const float t = s.thresholds()[i];
          EXPECT_GE(double(t), mid) << s.name();
          EXPECT_LT(double(std::nextafter(t, -1.0f)), mid) << s.name();
        }
      }
    }
  }
}

TEST(LevelSet, RawApotSumsAreDistinctAndCountTwoToTheB) {
  for (int B = 2; B <= 6; ++B) {
    const auto raw = apot::levels::apot_raw_sums(B);
    EXPECT_EQ(raw.sums.size(), size_t{1} << B) << "B=" << B;
    EXPECT_EQ(std::set<int64_t>(raw.sums.begin(), raw.sums.end()).size(), raw.sums.size());
  }
}

TEST(LevelSet, UnsupportedCombinationsFailClearly) {
  EXPECT_THROW(LevelSet::make(Kind::apot, 1, Role::activation), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::apot, 7, Role::activation), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::apot, 7, Role::weight), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::apot, 0, Role::weight), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::apot, -3, Role::weight), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::uniform, 9, Role::activation), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::pot, 7, Role::activation), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::ternary, 2, Role::activation), LevelSetError);
  EXPECT_THROW(LevelSet::make(Kind::ternary, 3, Role::weight), LevelSetError);
  EXPECT_THROW(apot::levels::apot_raw_sums(1), LevelSetError);
  EXPECT_THROW(apot::levels::parse_kind("lloyd"), LevelSetError);
  EXPECT_THROW(apot::levels::parse_role("bias"), LevelSetError);
  try {
    LevelSet::make(Kind::apot, 7, Role::activation);
  } catch (const LevelSetError& e) {
    EXPECT_NE(std::string(e.what()).find("2..6"), std::string::npos) << e.what();
  }
}

TEST(LevelSet, NamesRoundTrip) {
  for (Kind kind : {Kind::apot, Kind::pot, Kind::uniform, Kind::ternary})
    EXPECT_EQ(apot::levels::parse_kind(apot::levels::to_string(kind)), kind);
  EXPECT_EQ(LevelSet::make(Kind::apot, 4, Role::weight).name(), "apot-w4");
  EXPECT_EQ(LevelSet::make(Kind::uniform, 8, Role::activation).name(), "uniform-a8");
}
