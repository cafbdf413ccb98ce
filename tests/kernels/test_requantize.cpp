// Requantisation (float values to a consumer's codes): the requantiser against the projection
// kernels it replaces, and every path against the scalar codes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "apot/kernels/gemm.h"
#include "apot/kernels/projection.h"
#include "apot/levels/level_set.h"
#include "engine_test_util.h"

using namespace apot::kernels::test;

TEST(Conv, RequantizeMatchesTheProjectionKernels) {
  std::mt19937 rng(5);
  for (bool is_signed : {false, true})
    for (auto kind : {apot::levels::Kind::apot, apot::levels::Kind::uniform, apot::levels::Kind::pot})
      for (int bits : {2, 3, 4, 5}) {
        const auto set = apot::levels::LevelSet::make_activation(kind, bits, is_signed);
        const apot::kernels::Projector projector(set);
        const float alpha = 0.37f + 0.9f * float(bits);
        // Signed inputs: the engine's codes are the integers plus the largest (all >= 0).
        std::vector<uint8_t> codes;
        for (int64_t v : set.integers())
          codes.push_back(static_cast<uint8_t>(v + (is_signed ? set.integers().back() : 0)));
        const auto q = apot::kernels::make_requantizer(projector.input_thresholds(alpha), codes);
        // Values around every threshold (the float neighbours included), outside the range, and
        // special values.
        std::vector<float> v{0.0f, -0.0f, -1.0f, alpha, 2 * alpha, -alpha, -2 * alpha, INFINITY, -INFINITY, NAN};
        for (float t : q.thresholds)
          for (float d : {-1.0f, 0.0f, 1.0f}) v.push_back(d == 0 ? t : std::nextafter(t, d * INFINITY));
        std::uniform_real_distribution<float> u((is_signed ? -1.2f : -0.2f) * alpha, 1.2f * alpha);
        while (v.size() % 16 != 3) v.push_back(u(rng));
        const int n = static_cast<int>(v.size());
        std::vector<uint8_t> index(v.size());
        std::vector<float> finite;
        for (float x : v) finite.push_back(std::isnan(x) ? 0.0f : x);  // quantize() rejects NaN
        projector.quantize(finite.data(), finite.size(), alpha, index.data());
        for (int i = 0; i < n; ++i) {
          if (std::isnan(v[i])) continue;
          ASSERT_EQ(q.code(v[i]), codes[index[i]]) << "value " << v[i] << " " << set.name();
        }
        for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
          Image out(1, 1, n, 0);
          apot::kernels::requantize(v.data(), 1, 1, n, q, out.view, isa);
          for (int i = 0; i < n; ++i)
            ASSERT_EQ(out.bytes[i], q.code(v[i])) << apot::kernels::to_string(isa) << " " << v[i];
          // A bordered 3 x 5 x 32 image (whole vectors of channels): the same values in turn.
          Image image(3, 5, 32, 1);
          std::vector<float> values(3 * 5 * 32);
          for (size_t i = 0; i < values.size(); ++i) values[i] = v[i % v.size()];
          apot::kernels::requantize(values.data(), 3, 5, 32, q, image.view, isa);
          for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 5; ++x)
              for (int c = 0; c < 32; ++c)
                ASSERT_EQ(image.view.pixel(y, x)[c], q.code(values[(size_t(y) * 5 + x) * 32 + c]))
                    << apot::kernels::to_string(isa) << " pixel " << y << "," << x << " channel " << c;
        }
      }
}

class RequantizePath : public ::testing::TestWithParam<GemmIsa> {};
TEST_P(RequantizePath, MatchesTheScalarCodes) {
  if (!supported(GetParam())) GTEST_SKIP() << apot::kernels::to_string(GetParam()) << " is not supported on this CPU";
  const auto q = requantizer(16, true);
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-0.5f, 1.5f);
  std::vector<float> values(4 * 7 * 37);
  for (float& v : values) v = u(rng);
  Image got(4, 7, 37, 1), ref(4, 7, 37, 1);
  apot::kernels::requantize(values.data(), 4, 7, 37, q, ref.view, GemmIsa::scalar);
  apot::kernels::requantize(values.data(), 4, 7, 37, q, got.view, GetParam());
  EXPECT_EQ(got.bytes, ref.bytes);
  // Without the tables make_requantizer makes (the kernels then make their own): the same codes.
  apot::kernels::Requantizer bare = q;
  bare.tables.reset();
  Image again(4, 7, 37, 1);
  apot::kernels::requantize(values.data(), 4, 7, 37, bare, again.view, GetParam());
  EXPECT_EQ(again.bytes, ref.bytes);
}
INSTANTIATE_TEST_SUITE_P(Paths, RequantizePath, ::testing::ValuesIn(all_paths()), path_name);

// A code image without border or channel padding is requantised as one run of values (whole
// vectors across pixels; ShuffleNetV2's 24-channel halves): the same codes as value by value,
// also for a partial last vector and one pixel split over vectors; 33 channels (padded to 36)
// take the per-pixel path with a masked last vector.
TEST_P(RequantizePath, ContiguousImagesMatchTheCodesValueByValue) {
  if (!supported(GetParam())) GTEST_SKIP() << apot::kernels::to_string(GetParam()) << " is not supported on this CPU";
  const auto q = requantizer(16, true);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-0.5f, 1.5f);
  for (int n : {24, 8, 48, 33}) {
    std::vector<float> values(5 * 3 * size_t(n));
    for (float& v : values) v = u(rng);
    Image got(5, 3, n, 0);  // 33 channels: padded to 36, the per-pixel path with a partial vector
    apot::kernels::requantize(values.data(), 5, 3, n, q, got.view, GetParam());
    for (int y = 0; y < 5; ++y)
      for (int x = 0; x < 3; ++x)
        for (int c = 0; c < n; ++c)
          ASSERT_EQ(got.view.pixel(y, x)[c], q.code(values[(size_t(y) * 3 + x) * size_t(n) + size_t(c)]))
              << apot::kernels::to_string(GetParam()) << " n " << n << " pixel " << y << "," << x << " channel " << c;
  }
}

// Pixels `stride` floats apart (a channel slice of a wider value, read in place), into images
// with and without a border: every code the scalar one, for 1 to 7 vectors per pixel with and
// without a partial last one, rows whose pixels do not fill the kernels' groups of pixels; the
// bytes outside the interior (border, channel padding) stay as they were.
TEST_P(RequantizePath, StridedPixelsMatchTheCodesValueByValue) {
  if (!supported(GetParam())) GTEST_SKIP() << apot::kernels::to_string(GetParam()) << " is not supported on this CPU";
  for (bool from_zero : {false, true}) {
    const auto q = requantizer(16, from_zero);
    std::mt19937 rng(13);
    std::uniform_real_distribution<float> u(-0.5f, 1.5f);
    for (int n : {5, 16, 24, 33, 48, 64, 96, 100})
      for (int extra : {0, 7, 24})
        for (int border : {0, 1})
          for (int w : {1, 3, 5, 8}) {
            const int h = 3, stride = n + extra;
            std::vector<float> values(size_t(h) * w * size_t(stride));
            for (float& v : values) v = u(rng);
            Image got(h, w, n, border);
            std::fill(got.bytes.begin(), got.bytes.end(), uint8_t(0xEE));
            Image expected = got;
            expected.view.data = expected.bytes.data();
            for (int y = 0; y < h; ++y)
              for (int x = 0; x < w; ++x)
                for (int c = 0; c < n; ++c)
                  expected.view.pixel(y, x)[c] =
                      static_cast<uint8_t>(q.code(values[(size_t(y) * w + x) * size_t(stride) + size_t(c)]));
            apot::kernels::requantize(values.data(), h, w, n, q, got.view, GetParam(), stride);
            ASSERT_EQ(got.bytes, expected.bytes) << apot::kernels::to_string(GetParam()) << " n " << n << " stride "
                                                 << stride << " border " << border << " width " << w;
          }
  }
  Image image(2, 2, 8, 0);
  std::vector<float> values(64);
  EXPECT_THROW(apot::kernels::requantize(values.data(), 2, 2, 8, requantizer(), image.view, GetParam(), 7),
               std::invalid_argument);
}
