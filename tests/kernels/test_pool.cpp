// Pooling: the stem's 3x3 / 2 max-pool on every path against its scalar loop (NaN included),
// and the any-window reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "apot/kernels/gemm.h"
#include "apot/kernels/projection.h"
#include "apot/levels/level_set.h"
#include "engine_test_util.h"

using namespace apot::kernels::test;

TEST(MaxPool, EveryPathMatchesAPlainLoop) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (auto [h, w] : {std::pair{1, 1}, std::pair{2, 3}, std::pair{7, 8}, std::pair{112, 9}})
    for (int c : {1, 16, 20, 64, 70, 130}) {
      std::vector<float> in(size_t(h) * w * c);
      for (auto& v : in) v = u(rng);
      const int oh = (h + 1) / 2, ow = (w + 1) / 2;
      std::vector<float> expected(size_t(oh) * ow * c, -INFINITY);
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x)
          for (int ky = -1; ky <= 1; ++ky)
            for (int kx = -1; kx <= 1; ++kx) {
              const int iy = 2 * y + ky, ix = 2 * x + kx;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
              for (int ch = 0; ch < c; ++ch) {
                float& e = expected[(size_t(y) * ow + x) * c + ch];
                e = std::max(e, in[(size_t(iy) * w + ix) * c + ch]);
              }
            }
      for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
        std::vector<float> got(expected.size(), 99.0f);
        apot::kernels::max_pool_3x3s2(in.data(), h, w, c, got.data(), isa);
        ASSERT_EQ(got, expected) << apot::kernels::to_string(isa) << " " << h << "x" << w << "x" << c;
        // In bands of two output rows, each from a copy of only the input rows it needs.
        std::vector<float> banded(expected.size(), 99.0f);
        for (int y0 = 0; y0 < oh; y0 += 2) {
          const int y1 = std::min(oh, y0 + 2), r0 = std::max(0, 2 * y0 - 1), r1 = std::min(h, 2 * y1);
          const std::vector<float> band(in.begin() + size_t(r0) * w * c, in.begin() + size_t(r1) * w * c);
          apot::kernels::max_pool_3x3s2(band.data(), h, w, c, banded.data(), isa, y0, y1, r0);
        }
        ASSERT_EQ(banded, expected) << apot::kernels::to_string(isa) << " in bands, " << h << "x" << w << "x" << c;
      }
      // NaN: every path keeps the reference's choice, m = v > m ? v : m after the first value
      // (so a NaN survives only where it comes first in its window).
      for (size_t i = 0; i < in.size(); i += 5) in[i] = NAN;
      std::vector<float> ref(expected.size());
      apot::kernels::max_pool_3x3s2(in.data(), h, w, c, ref.data(), GemmIsa::scalar);
      for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
        std::vector<float> got(expected.size(), 99.0f);
        apot::kernels::max_pool_3x3s2(in.data(), h, w, c, got.data(), isa);
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_TRUE(std::isnan(ref[i]) ? std::isnan(got[i]) : got[i] == ref[i])
              << apot::kernels::to_string(isa) << " with NaN, " << h << "x" << w << "x" << c << " at " << i;
      }
    }
}

class MaxPoolPath : public ::testing::TestWithParam<GemmIsa> {};
TEST_P(MaxPoolPath, MatchesTheScalarLoop) {
  if (!supported(GetParam())) GTEST_SKIP() << apot::kernels::to_string(GetParam()) << " is not supported on this CPU";
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> in(9 * 11 * 40);
  for (float& v : in) v = u(rng);
  std::vector<float> ref(5 * 6 * 40), got(ref.size());
  apot::kernels::max_pool_3x3s2(in.data(), 9, 11, 40, ref.data(), GemmIsa::scalar);
  apot::kernels::max_pool_3x3s2(in.data(), 9, 11, 40, got.data(), GetParam());
  EXPECT_EQ(got, ref);
}
INSTANTIATE_TEST_SUITE_P(Paths, MaxPoolPath, ::testing::ValuesIn(all_paths()), path_name);

// Any window: the reference against a direct definition, and 3x3 / 2 / 1 against the stem's
// max-pool.
TEST(Pool, AnyWindowMaxAndAverage) {
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int h = 7, w = 9, c = 3;
  std::vector<float> in(size_t(h) * w * c);
  for (float& v : in) v = u(rng);
  for (int k : {1, 2, 3, 5})
    for (int s : {1, 2, 3})
      for (int p = 0; 2 * p <= k; ++p) {
        const int oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
        std::vector<float> mx(size_t(oh) * ow * c), avg(mx.size());
        apot::kernels::pool_reference(apot::kernels::PoolKind::max, in.data(), h, w, c, k, s, p, mx.data());
        apot::kernels::pool_reference(apot::kernels::PoolKind::average, in.data(), h, w, c, k, s, p, avg.data());
        for (int y = 0; y < oh; ++y)
          for (int x = 0; x < ow; ++x)
            for (int ch = 0; ch < c; ++ch) {
              float m = -INFINITY, sum = 0;
              for (int iy = y * s - p; iy < y * s - p + k; ++iy)
                for (int ix = x * s - p; ix < x * s - p + k; ++ix)
                  if (iy >= 0 && ix >= 0 && iy < h && ix < w) {
                    m = std::max(m, in[(size_t(iy) * w + ix) * c + ch]);
                    sum += in[(size_t(iy) * w + ix) * c + ch];
                  }
              const size_t at = (size_t(y) * ow + x) * c + ch;
              ASSERT_EQ(mx[at], m) << k << "/" << s << "/" << p;
              ASSERT_NEAR(avg[at], sum / float(k * k), 1e-6f) << k << "/" << s << "/" << p;
            }
      }
  std::vector<float> a(4 * 5 * c), b(a.size());
  apot::kernels::pool_reference(apot::kernels::PoolKind::max, in.data(), h, w, c, 3, 2, 1, a.data());
  apot::kernels::max_pool_3x3s2(in.data(), h, w, c, b.data(), GemmIsa::scalar);
  EXPECT_EQ(a, b);
  EXPECT_THROW(apot::kernels::pool_reference(apot::kernels::PoolKind::max, in.data(), 2, 2, c, 5, 1, 0, a.data()),
               std::invalid_argument);
}

// ShuffleNetV2's concat and channel shuffle of two groups: every path copies the bits of a
// plain loop (NaN payloads too), for groups that fill vectors, end with part of one or take
// less than half of one, from values read with a stride (channel slices in place), and writes
// nothing past its pixels.
TEST(InterleavePairs, EveryPathMatchesAPlainLoop) {
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (int per_group : {1, 7, 8, 9, 16, 24, 40, 48})
    for (int extra_a : {0, 5})
      for (int extra_b : {0, 24})
        for (int pixels : {1, 5}) {
          const int sa = per_group + extra_a, sb = per_group + extra_b;
          std::vector<float> a(size_t(pixels) * sa), b(size_t(pixels) * sb);
          for (auto& v : a) v = u(rng);
          for (auto& v : b) v = u(rng);
          uint32_t payload = 0x7fc01234u;
          std::memcpy(&a[0], &payload, 4);
          payload = 0xffa05678u;
          std::memcpy(&b.back(), &payload, 4);
          const size_t n = size_t(pixels) * 2 * per_group;
          std::vector<float> expected(n + 17, 99.0f);
          for (int p = 0; p < pixels; ++p)
            for (int i = 0; i < per_group; ++i) {
              std::memcpy(&expected[size_t(p) * 2 * per_group + 2 * size_t(i)], &a[size_t(p) * sa + size_t(i)], 4);
              std::memcpy(&expected[size_t(p) * 2 * per_group + 2 * size_t(i) + 1], &b[size_t(p) * sb + size_t(i)], 4);
            }
          for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
            std::vector<float> got(n + 17, 99.0f);
            apot::kernels::interleave_pairs(a.data(), sa, b.data(), sb, pixels, per_group, got.data(), isa);
            ASSERT_EQ(std::memcmp(got.data(), expected.data(), got.size() * 4), 0)
                << apot::kernels::to_string(isa) << " per_group " << per_group << " strides " << sa << "," << sb
                << " pixels " << pixels;
          }
        }
  std::vector<float> v(64);
  EXPECT_THROW(apot::kernels::interleave_pairs(v.data(), 7, v.data(), 8, 2, 8, v.data()), std::invalid_argument);
}
