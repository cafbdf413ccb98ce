// The first layer on 8-bit pixels: the reference against the float convolution of the
// normalised image it replaces (the border table, the per-channel scales), every path and
// thread count against the reference bit for bit, the pixel recovery, bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "apot/kernels/stem.h"

using apot::kernels::GemmIsa;
using apot::kernels::PackedStem;
using apot::kernels::PixelImage;

namespace {

struct StemProblem {
  int h, w, c, n, k, stride, pad;
  std::vector<uint8_t> pixels;  // c x h x w
  std::vector<int8_t> W;        // n x (k x k x c)
  std::vector<float> mean, std, scale, bias;
  int oh() const { return (h + 2 * pad - k) / stride + 1; }
  int ow() const { return (w + 2 * pad - k) / stride + 1; }
};

StemProblem make_stem(int h, int w, int c, int n, int k, int stride, int pad, unsigned seed) {
  std::mt19937 rng(seed);
  StemProblem p{h, w, c, n, k, stride, pad, {}, {}, {}, {}, {}, {}};
  p.pixels.resize(size_t(c) * h * w);
  for (auto& v : p.pixels) v = static_cast<uint8_t>(rng() % 256);
  p.W.resize(size_t(n) * k * k * c);
  for (auto& v : p.W) v = static_cast<int8_t>(int(rng() % 255) - 127);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int i = 0; i < c; ++i) {
    p.mean.push_back(u(rng));
    p.std.push_back(0.1f + u(rng) * 0.3f);
  }
  for (int i = 0; i < n; ++i) {
    p.scale.push_back(0.001f * (0.5f + u(rng)));
    p.bias.push_back(u(rng) - 0.5f);
  }
  return p;
}

struct Pixels {
  std::vector<uint8_t> bytes;
  PixelImage view;
  Pixels(const StemProblem& p, int border) {
    view = {nullptr, p.h, p.w, p.c, border};
    bytes.assign(view.bytes(), 0);
    view.data = bytes.data();
    for (int c = 0; c < p.c; ++c)
      for (int y = 0; y < p.h; ++y)
        for (int x = 0; x < p.w; ++x) *view.pixel(c, y, x) = p.pixels[(size_t(c) * p.h + y) * p.w + x];
  }
};

PackedStem pack(const StemProblem& p) {
  return apot::kernels::pack_stem(p.W.data(), p.n, p.c, p.k, p.stride, p.pad, p.h, p.w, p.mean, p.std);
}

// amx: AMX tiles where stem_amx_applies(); false: the path's vector kernel.
std::vector<float> run(const StemProblem& p, const PackedStem& s, bool relu, GemmIsa isa, int threads,
                       int extra_border = 0, bool amx = true) {
  Pixels im(p, p.pad + extra_border);
  std::vector<float> out(size_t(p.oh()) * p.ow() * p.n, -7.0f);
  apot::kernels::conv_stem_u8(im.view, s, p.scale.data(), p.bias.data(), relu, out.data(), isa, threads, 0, -1, amx);
  return out;
}

// The AMX kernel on this CPU, or none (the list to loop over: false, and true where it runs).
std::vector<bool> amx_choices(const PackedStem& s, GemmIsa isa) {
  if (apot::kernels::stem_amx_applies(s, isa)) return {false, true};
  return {false};
}

}  // namespace

// The reference computes the convolution of the normalised image with a zero border.
TEST(Stem, ReferenceIsTheConvolutionOfTheNormalisedImage) {
  struct Shape {
    int h, w, c, n, k, stride, pad;
  };
  for (const Shape& sh : {Shape{9, 11, 3, 20, 7, 2, 3}, Shape{8, 8, 3, 16, 3, 1, 1}, Shape{6, 5, 1, 5, 5, 1, 2},
                          Shape{10, 7, 4, 33, 3, 2, 0}}) {
    const StemProblem p = make_stem(sh.h, sh.w, sh.c, sh.n, sh.k, sh.stride, sh.pad, 11);
    const std::vector<float> got = run(p, pack(p), false, GemmIsa::scalar, 1);
    for (int oy = 0; oy < p.oh(); ++oy)
      for (int ox = 0; ox < p.ow(); ++ox)
        for (int o = 0; o < p.n; ++o) {
          double sum = 0, magnitude = 0;
          for (int ky = 0; ky < p.k; ++ky)
            for (int kx = 0; kx < p.k; ++kx)
              for (int c = 0; c < p.c; ++c) {
                const int iy = oy * p.stride - p.pad + ky, ix = ox * p.stride - p.pad + kx;
                if (iy < 0 || ix < 0 || iy >= p.h || ix >= p.w) continue;
                const double x = (p.pixels[(size_t(c) * p.h + iy) * p.w + ix] / 255.0 - p.mean[c]) / p.std[c];
                const double wv = p.W[((size_t(o) * p.k + ky) * p.k + kx) * p.c + c];
                sum += x * wv;
                magnitude += std::fabs(x * wv) + std::fabs(wv * p.mean[c] / p.std[c]);
              }
          const double want = p.scale[o] * sum + p.bias[o];
          const double tolerance = 1e-6 * p.scale[o] * magnitude + 1e-6;
          ASSERT_NEAR(got[(size_t(oy) * p.ow() + ox) * p.n + o], want, tolerance)
              << "shape " << sh.h << "x" << sh.w << " k" << sh.k << " at " << oy << "," << ox << " channel " << o;
        }
  }
}

TEST(Stem, EveryPathMatchesTheReferenceBitForBit) {
  int cases = 0;
  unsigned seed = 100;
  for (int c : {1, 2, 3, 4})
    for (int k : {1, 3, 5, 7})
      for (int stride : {1, 2})
        for (int n : {5, 16, 24, 48, 64, 70}) {
          const int pad = (k / 2 + seed) % k;
          const int h = k + int(seed % 11), w = k + int((seed * 7) % 17);
          const StemProblem p = make_stem(h, w, c, n, k, stride, pad, ++seed);
          const PackedStem s = pack(p);
          const bool relu = seed % 2 == 0;
          const std::vector<float> want = run(p, s, relu, GemmIsa::scalar, 1);
          for (GemmIsa isa : apot::kernels::supported_gemm_isas())
            for (bool amx : amx_choices(s, isa))
              for (int threads : {1, 2, 3})
                ASSERT_EQ(run(p, s, relu, isa, threads, int(seed % 2), amx), want)
                    << apot::kernels::to_string(isa) << (amx ? " amx" : "") << " c" << c << " k" << k << " s" << stride
                    << " n" << n << " " << h << "x" << w << " pad " << pad << " threads " << threads;
          ++cases;
        }
  EXPECT_EQ(cases, 192);
}

TEST(Stem, ResNetStemShapes) {  // the two stems the engine runs: CIFAR 3x3 and ImageNet 7x7 / 2
  for (auto [h, n, k, stride, pad] : {std::tuple{32, 16, 3, 1, 1}, std::tuple{64, 64, 7, 2, 3}}) {
    const StemProblem p = make_stem(h, h, 3, n, k, stride, pad, 5);
    const PackedStem s = pack(p);
    const std::vector<float> want = run(p, s, true, GemmIsa::scalar, 1);
    for (GemmIsa isa : apot::kernels::supported_gemm_isas())
      for (bool amx : amx_choices(s, isa))
        EXPECT_EQ(run(p, s, true, isa, 2, 0, amx), want) << apot::kernels::to_string(isa) << (amx ? " amx" : "");
  }
}

// The AMX kernel (kernels of 5 x 5 to 8 x 8) on rows of several 16-pixel tiles and a partial one,
// every stride it meets, partial blocks of output channels, extra border; skipped without AMX.
TEST(Stem, AmxTilesMatchTheReference) {
  const PackedStem probe = pack(make_stem(16, 16, 3, 16, 7, 2, 3, 1));
  if (!apot::kernels::stem_amx_applies(probe, GemmIsa::avx512_vnni)) GTEST_SKIP() << "no AMX tiles on this CPU";
  int cases = 0;
  unsigned seed = 300;
  for (int c : {1, 2, 3, 4})
    for (int k : {5, 6, 7, 8})
      for (int stride : {1, 2, 3}) {
        const int pad = int(seed % unsigned(k)), n = 16 * (1 + int(seed % 5)) - int(seed % 3) * 5;
        const int h = k + 2 + int(seed % 7), w = 16 * stride + k + int((seed * 13) % 61);
        const StemProblem p = make_stem(h, w, c, n, k, stride, pad, ++seed);
        const PackedStem s = pack(p);
        ASSERT_TRUE(apot::kernels::stem_amx_applies(s, GemmIsa::avx512_vnni));
        const std::vector<float> want = run(p, s, seed % 2 == 0, GemmIsa::scalar, 1);
        for (int threads : {1, 2})
          ASSERT_EQ(run(p, s, seed % 2 == 0, GemmIsa::avx512_vnni, threads, int(seed % 3), true), want)
              << "c" << c << " k" << k << " s" << stride << " n" << n << " " << h << "x" << w << " pad " << pad
              << " threads " << threads;
        ++cases;
      }
  EXPECT_EQ(cases, 48);
  // Not for 3 x 3 kernels (9 of a row's 64 bytes) nor without its packing.
  EXPECT_FALSE(apot::kernels::stem_amx_applies(pack(make_stem(16, 16, 3, 16, 3, 1, 1, 1)), GemmIsa::avx512_vnni));
  EXPECT_FALSE(apot::kernels::stem_amx_applies(probe, GemmIsa::scalar));
}

TEST(Stem, RowBandsMatchTheWholeImage) {
  const StemProblem p = make_stem(20, 18, 3, 64, 7, 2, 3, 8);
  const PackedStem s = pack(p);
  const std::vector<float> whole = run(p, s, true, GemmIsa::scalar, 1);
  Pixels im(p, p.pad);
  const size_t row = size_t(p.ow()) * p.n;
  for (GemmIsa isa : apot::kernels::supported_gemm_isas())
    for (bool amx : amx_choices(s, isa))
      for (int band : {1, 3, 4}) {
        std::vector<float> got(whole.size(), -7.0f);
        for (int y0 = 0; y0 < p.oh(); y0 += band) {
          const int y1 = std::min(p.oh(), y0 + band);
          std::vector<float> out(size_t(y1 - y0) * row, -7.0f);
          apot::kernels::conv_stem_u8(im.view, s, p.scale.data(), p.bias.data(), true, out.data(), isa, 2, y0, y1, amx);
          std::copy(out.begin(), out.end(), got.begin() + size_t(y0) * row);
        }
        EXPECT_EQ(got, whole) << apot::kernels::to_string(isa) << (amx ? " amx" : "") << " bands of " << band;
      }
  std::vector<float> out(whole.size());
  EXPECT_THROW(apot::kernels::conv_stem_u8(im.view, s, p.scale.data(), p.bias.data(), true, out.data(), GemmIsa::scalar,
                                           1, 3, 2),
               std::invalid_argument);
  EXPECT_THROW(apot::kernels::conv_stem_u8(im.view, s, p.scale.data(), p.bias.data(), true, out.data(), GemmIsa::scalar,
                                           1, 0, p.oh() + 1),
               std::invalid_argument);
}

TEST(Stem, ToPixelsRecoversAnImage) {
  for (int w : {7, 37}) {  // rows shorter than a vector; two 16-lane (four 8-lane) vectors and a tail
    const StemProblem p = make_stem(9, w, 3, 16, 3, 1, 1, 4);
    std::vector<float> image(p.pixels.size());
    for (int c = 0; c < p.c; ++c)
      for (size_t i = 0; i < size_t(p.h) * p.w; ++i) {
        const size_t at = size_t(c) * p.h * p.w + i;
        image[at] = (float(p.pixels[at]) / 255.0f - p.mean[c]) / p.std[c];
      }
    for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
      std::vector<float> x = image;
      Pixels want(p, 2), got(p, 2);
      std::fill(got.bytes.begin(), got.bytes.end(), uint8_t{0});
      EXPECT_TRUE(apot::kernels::to_pixels(x.data(), p.mean, p.std, got.view, isa));
      EXPECT_EQ(got.bytes, want.bytes) << apot::kernels::to_string(isa);  // the interior filled, the border untouched
      for (size_t at : {size_t(0), size_t(17), x.size() - 1}) {           // first, inside a row's vector, last
        const float keep = x[at];
        for (float bad :
             {keep + 0.3f / 255.0f / p.std[0], std::nanf(""), INFINITY, (-1.0f / 255.0f - p.mean[0]) / p.std[0]}) {
          x[at] = bad;
          EXPECT_FALSE(apot::kernels::to_pixels(x.data(), p.mean, p.std, got.view, isa))
              << apot::kernels::to_string(isa) << " value " << bad << " at " << at << ", rows of " << w;
        }
        x[at] = keep;
      }
    }
  }
  const StemProblem p = make_stem(9, 7, 3, 16, 3, 1, 1, 4);
  const std::vector<float> image(p.pixels.size(), 0.0f);
  Pixels got(p, 2);
  EXPECT_THROW(apot::kernels::to_pixels(image.data(), {0.5f}, p.std, got.view), std::invalid_argument);
}

TEST(Stem, PixelOfRecoversEightBitPixels) {
  const float mean = 0.485f, std = 0.229f;
  for (int p = 0; p < 256; ++p) {
    const float x = (float(p) / 255.0f - mean) / std;  // as a float pipeline normalises
    EXPECT_EQ(apot::kernels::pixel_of(x, mean, std), p);
  }
  const float half = (0.5f / 255.0f - mean) / std;  // between pixels 0 and 1
  EXPECT_EQ(apot::kernels::pixel_of(half, mean, std), -1);
  EXPECT_EQ(apot::kernels::pixel_of((-1.0f / 255.0f - mean) / std, mean, std), -1);
  EXPECT_EQ(apot::kernels::pixel_of((256.0f / 255.0f - mean) / std, mean, std), -1);
  EXPECT_EQ(apot::kernels::pixel_of(std::nanf(""), mean, std), -1);
  EXPECT_EQ(apot::kernels::pixel_of(INFINITY, mean, std), -1);
}

TEST(Stem, RejectsBadArguments) {
  const StemProblem p = make_stem(8, 8, 3, 16, 3, 1, 1, 3);
  const std::vector<float> ok{0.5f, 0.5f, 0.5f};
  auto pack_with = [&](std::vector<float> mean, std::vector<float> std) {
    return apot::kernels::pack_stem(p.W.data(), p.n, p.c, p.k, p.stride, p.pad, p.h, p.w, mean, std);
  };
  EXPECT_THROW(pack_with({0.5f}, ok), std::invalid_argument);
  EXPECT_THROW(pack_with(ok, {0.5f, 0.0f, 0.5f}), std::invalid_argument);
  EXPECT_THROW(pack_with(ok, {0.5f, NAN, 0.5f}), std::invalid_argument);
  EXPECT_THROW(apot::kernels::pack_stem(p.W.data(), p.n, p.c, 9, 1, 0, 4, 4, ok, ok), std::invalid_argument);
  const PackedStem s = pack(p);
  Pixels small(make_stem(7, 8, 3, 16, 3, 1, 1, 3), 1);
  std::vector<float> out(64 * 16);
  EXPECT_THROW(apot::kernels::conv_stem_u8(small.view, s, p.scale.data(), p.bias.data(), true, out.data()),
               std::invalid_argument);
  Pixels no_border(p, 0);
  EXPECT_THROW(apot::kernels::conv_stem_u8(no_border.view, s, p.scale.data(), p.bias.data(), true, out.data()),
               std::invalid_argument);
}
