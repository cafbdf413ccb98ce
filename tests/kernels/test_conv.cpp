// The engine's integer convolution: the scalar reference against a plain convolution loop,
// every ISA path (and thread count) against the reference bit for bit on many shapes with every
// epilogue option, Winograd at its limits, the float first layer, and the peak probe.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "apot/kernels/cpu.h"
#include "apot/kernels/gemm.h"
#include "apot/kernels/projection.h"
#include "apot/levels/level_set.h"
#include "engine_test_util.h"

using namespace apot::kernels::test;

TEST(Conv, ScalarReferenceIsTheConvolution) {
  for (auto [k, stride] : {std::pair{3, 1}, std::pair{3, 2}, std::pair{1, 1}, std::pair{1, 2}}) {
    const Problem p = make(7, 6, 5, 19, k, stride, 48, 10, 1 + k + stride);
    const Result r = run(p, GemmIsa::scalar, true, true);
    const auto q = requantizer();
    Image out(p.oh(), p.ow(), p.n, 1);
    for (int y = 0; y < p.oh(); ++y)
      for (int x = 0; x < p.ow(); ++x)
        for (int n = 0; n < p.n; ++n) {
          int32_t expected = 0;
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) {
              const int iy = y * stride - p.pad + ky, ix = x * stride - p.pad + kx;
              if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
              for (int c = 0; c < p.c; ++c)
                expected +=
                    int(p.x[(size_t(iy) * p.w + ix) * p.c + c]) * int(p.W[((size_t(n) * k + ky) * k + kx) * p.c + c]);
            }
          const size_t at = (size_t(y) * p.ow() + x) * p.n + n;
          ASSERT_EQ(r.acc[at], expected) << "k=" << k << " stride=" << stride;
          const float v = std::max(p.scale[n] * float(expected) + p.bias[n] + p.residual[at], 0.0f);
          EXPECT_FLOAT_EQ(r.values[at], v);
          out.view.pixel(y, x)[n] = static_cast<uint8_t>(q.code(r.values[at]));
        }
    EXPECT_EQ(r.codes, out.bytes) << "codes (and an untouched zero border)";
  }
}
TEST(Conv, EveryPathMatchesTheReferenceOnManyShapes) {
  unsigned seed = 100;
  for (auto [h, w] :
       {std::pair{1, 1}, std::pair{3, 5}, std::pair{8, 8}, std::pair{13, 7}, std::pair{4, 33}, std::pair{2, 32}})
    for (int c : {3, 4, 16, 20, 64})
      for (int n : {1, 5, 16, 17, 32, 48, 64, 80})
        for (auto [k, stride] : {std::pair{3, 1}, std::pair{3, 2}, std::pair{1, 1}, std::pair{1, 2}})
          for (auto [max_a, max_b] : {std::pair{48, 10}, std::pair{100, 127}, std::pair{255, 127}}) {
            const Problem p = make(h, w, c, n, k, stride, max_a, max_b, ++seed);
            const bool residual = seed % 2 == 0, relu = seed % 3 != 0;
            const Result ref = run(p, GemmIsa::scalar, residual, relu);
            for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
              const Result got = run(p, isa, residual, relu, 1 + seed % 3, seed % 2);
              const std::string what = std::string(apot::kernels::to_string(isa)) + " " + std::to_string(h) + "x" +
                                       std::to_string(w) + "x" + std::to_string(c) + " -> " + std::to_string(n) + " k" +
                                       std::to_string(k) + "s" + std::to_string(stride) + " max " +
                                       std::to_string(max_a) + "x" + std::to_string(max_b);
              ASSERT_EQ(got.acc, ref.acc) << what;
              ASSERT_EQ(got.values, ref.values) << what;
              ASSERT_EQ(got.codes, ref.codes) << what;
            }
          }
}
// Every schedule the engine's tuning may choose (runtime/tune.cpp: Winograd or the direct
// kernel, channel blocks or rows first) gives the reference's bits on every path.
TEST(Conv, EveryScheduleMatchesTheReference) {
  unsigned seed = 900;
  for (auto [h, w] : {std::pair{6, 6}, std::pair{7, 7}, std::pair{5, 13}})
    for (int c : {16, 32})
      for (int n : {16, 40, 64, 96})
        for (auto [k, stride] : {std::pair{3, 1}, std::pair{3, 2}, std::pair{1, 1}}) {
          const Problem p = make(h, w, c, n, k, stride, 48, 10, ++seed);
          const bool residual = seed % 2 == 0;
          const Result ref = run(p, GemmIsa::scalar, residual, true);
          for (GemmIsa isa : apot::kernels::supported_gemm_isas())
            for (bool winograd : {true, false})
              for (bool rows_first : {false, true})
                for (int threads : {1, 2}) {
                  const Result got = run(p, isa, residual, true, threads, 0, 16, false, {winograd, rows_first});
                  const std::string what = std::string(apot::kernels::to_string(isa)) + " " + std::to_string(h) + "x" +
                                           std::to_string(w) + "x" + std::to_string(c) + " -> " + std::to_string(n) +
                                           " k" + std::to_string(k) + "s" + std::to_string(stride) +
                                           (winograd ? " winograd" : " direct") + (rows_first ? " rows first" : "") +
                                           " threads " + std::to_string(threads);
                  ASSERT_EQ(got.acc, ref.acc) << what;
                  ASSERT_EQ(got.values, ref.values) << what;
                  ASSERT_EQ(got.codes, ref.codes) << what;
                }
        }
}

// The AMX kernel (ConvSchedule::amx, gemm_amx.cpp) on CPUs with AMX-INT8: the reference's bits
// on maps whose tiles cross rows (stride 1: 1x1, 7x7, 14x14, odd widths), at stride 2 two rows
// to a block (up to 16 columns) or halves of one row, kernel rows of whole 64-byte pieces (cs 64,
// 128) and of a piece with zero rows (cs 3, 16, 20, 24, 32, 96: PackedConv::amx), one to five
// blocks of output channels (pairs and a last single block), the pixels at the image's end (AMX
// where CodeImage::capacity leaves room past it, else the VNNI kernel), and 1-3 threads (split
// by rows and by channel blocks).
TEST(Conv, AmxMatchesTheReference) {
  if (!apot::kernels::cpu_features().amx_int8) GTEST_SKIP() << "this CPU (or its OS) has no AMX-INT8";
  using apot::kernels::amx_applies;
  auto packed = [](const Problem& p) { return apot::kernels::pack_conv(p.W.data(), p.n, p.c, p.k, p.stride, p.pad); };
  EXPECT_TRUE(amx_applies(packed(make(4, 4, 64, 16, 3, 1, 48, 10, 1)), GemmIsa::avx512_vnni));
  EXPECT_TRUE(amx_applies(packed(make(4, 4, 20, 16, 1, 1, 48, 10, 1)), GemmIsa::avx512_vnni)) << "padded pieces";
  EXPECT_FALSE(amx_applies(packed(make(4, 4, 64, 16, 3, 1, 48, 10, 1)), GemmIsa::avx2));
  EXPECT_FALSE(amx_applies(apot::kernels::pack_depthwise(std::vector<int8_t>(9 * 32, 1).data(), 32, 3, 1, 1),
                           GemmIsa::avx512_vnni));
  unsigned seed = 2600;
  struct Shape {
    int h, w, k, stride;
  };
  for (Shape s : {Shape{1, 1, 1, 1}, Shape{7, 7, 3, 1}, Shape{7, 7, 1, 1}, Shape{14, 14, 3, 1}, Shape{5, 13, 3, 1},
                  Shape{9, 33, 1, 1}, Shape{8, 8, 3, 2}, Shape{13, 7, 1, 2}, Shape{15, 15, 7, 2}, Shape{6, 5, 5, 1},
                  Shape{28, 28, 3, 2}, Shape{14, 14, 3, 2}, Shape{11, 33, 3, 2}, Shape{40, 40, 3, 2}})
    for (int c : {3, 16, 20, 24, 32, 64, 96, 128})
      for (int n : {5, 16, 17, 32, 48, 80}) {
        if (s.k == 7 && c > 16) continue;
        const Problem p = make(s.h, s.w, c, n, s.k, s.stride, 48, 10, ++seed);
        const bool residual = seed % 2 == 0;
        const Result ref = run(p, GemmIsa::scalar, residual, seed % 3 != 0);
        for (int threads : {1, 2, 3}) {
          apot::kernels::ConvSchedule amx;
          amx.amx = true;
          // Odd thread counts: room past the image (the last tiles on AMX), else none (on VNNI).
          const Result got =
              run(p, GemmIsa::avx512_vnni, residual, seed % 3 != 0, threads, seed % 2, 16, false, amx, threads % 2);
          const std::string what = std::to_string(s.h) + "x" + std::to_string(s.w) + "x" + std::to_string(c) + " -> " +
                                   std::to_string(n) + " k" + std::to_string(s.k) + "s" + std::to_string(s.stride) +
                                   " threads " + std::to_string(threads);
          ASSERT_EQ(got.acc, ref.acc) << what;
          ASSERT_EQ(got.values, ref.values) << what;
          ASSERT_EQ(got.codes, ref.codes) << what;
        }
      }
}

// The AMX kernel runs its own copy of the epilogue per shape: the codes alone, or a residual,
// the ReLU, values and codes, each with and without an offset (for whole blocks of 16 channels,
// else the general epilogue); the AVX-512 VNNI kernels on the same outputs.
TEST(Conv, OutputsWithoutSumsMatchTheReference) {
  if (!supported(GemmIsa::avx512_vnni)) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  const bool amx = apot::kernels::cpu_features().amx_int8;
  unsigned seed = 2700;
  struct Shape {
    int h, w, c, n, k, stride;
  };
  for (Shape s : {Shape{14, 14, 64, 48, 1, 1}, Shape{9, 11, 32, 32, 3, 1}, Shape{16, 16, 64, 16, 3, 1},
                  Shape{7, 7, 128, 80, 3, 1}, Shape{14, 14, 64, 17, 3, 2}, Shape{6, 9, 20, 32, 3, 2}})
    for (bool residual : {false, true})
      for (bool offset : {false, true}) {
        const Problem p = make(s.h, s.w, s.c, s.n, s.k, s.stride, 48, 10, ++seed);
        const Result ref = run_without_sums(p, GemmIsa::scalar, residual, offset);
        for (bool tiles : {false, true}) {
          if (tiles && !amx) continue;
          for (int threads : {1, 2}) {
            apot::kernels::ConvSchedule schedule;
            schedule.amx = tiles;
            const Result got = run_without_sums(p, GemmIsa::avx512_vnni, residual, offset, threads, schedule, true);
            const std::string what = std::to_string(s.h) + "x" + std::to_string(s.w) + "x" + std::to_string(s.c) +
                                     " -> " + std::to_string(s.n) + " k" + std::to_string(s.k) + "s" +
                                     std::to_string(s.stride) + (residual ? " residual" : " codes") +
                                     (offset ? " offset" : "") + (tiles ? " amx" : "") + " threads " +
                                     std::to_string(threads);
            ASSERT_EQ(got.values, ref.values) << what;
            ASSERT_EQ(got.codes, ref.codes) << what;
          }
        }
      }
}

// The Winograd F(2,3) kernel (3x3, stride 1, AVX-512 VNNI): taken exactly where it applies,
// and equal to the reference at its limits: codes up to 127 (transformed inputs up to 254),
// transformed weights of +-127, odd and even widths (a last pair with one pixel), rows of 1 to
// 9 pairs (the 2 x 2, 3 x 2 and 4 x 1 tiles and their tails; tiles within a row, and with 128
// channels tiles spanning two or three rows), padded channels, partial output blocks, and 1-3
// threads (split by rows and by channel blocks).
TEST(Conv, WinogradMatchesTheReferenceAtItsLimits) {
  using apot::kernels::winograd_applies;
  const auto isas = apot::kernels::supported_gemm_isas();
  if (std::find(isas.begin(), isas.end(), GemmIsa::avx512_vnni) == isas.end())
    GTEST_SKIP() << "Winograd weights are packed on AVX-512 VNNI CPUs only";
  auto packed = [](const Problem& p) { return apot::kernels::pack_conv(p.W.data(), p.n, p.c, p.k, p.stride, p.pad); };
  // Which layers qualify.
  Problem p = make(4, 4, 16, 17, 3, 1, 127, 10, 1);
  EXPECT_TRUE(winograd_applies(packed(p), 127, GemmIsa::avx512_vnni));
  EXPECT_FALSE(winograd_applies(packed(make(4, 4, 16, 16, 3, 1, 48, 10, 5)), 48, GemmIsa::avx512_vnni))
      << "one block of output channels: the direct kernel's row tiles";
  EXPECT_FALSE(winograd_applies(packed(p), 128, GemmIsa::avx512_vnni)) << "2 x 128 is no byte";
  EXPECT_FALSE(winograd_applies(packed(p), 48, GemmIsa::avx2));
  EXPECT_FALSE(winograd_applies(packed(make(4, 4, 20, 32, 3, 1, 48, 10, 2)), 48, GemmIsa::avx512_vnni)) << "cs 20";
  EXPECT_FALSE(winograd_applies(packed(make(4, 4, 16, 32, 3, 2, 48, 10, 3)), 48, GemmIsa::avx512_vnni)) << "stride 2";
  EXPECT_FALSE(winograd_applies(packed(make(4, 4, 16, 32, 1, 1, 48, 10, 4)), 48, GemmIsa::avx512_vnni)) << "1x1";
  p.W.assign(p.W.size(), 0);
  p.W[0] = 64;  // 2 g0 = 128
  EXPECT_FALSE(winograd_applies(packed(p), 48, GemmIsa::avx512_vnni));
  p.W[0] = 43, p.W[16] = 43, p.W[32] = 42;  // g0 + g1 + g2 = 128 (taps kx = 0, 1, 2 of channel 0)
  EXPECT_FALSE(winograd_applies(packed(p), 48, GemmIsa::avx512_vnni));
  p.W[0] = 42;  // 127
  EXPECT_TRUE(winograd_applies(packed(p), 48, GemmIsa::avx512_vnni));

  // Rows of taps at the limits: (63, 1, 63) gives u = (126, 127, 125, 126), and their negations;
  // (63, -1, 63) gives u2 = 127.
  const int8_t rows[][3] = {{63, 1, 63}, {-63, -1, -63}, {63, -1, 63}, {-63, 1, -63}, {0, 0, 0}, {5, -7, 2}};
  unsigned seed = 900;
  for (int w : {1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 17})
    for (int h : {1, 2, 4})
      for (auto [c, n] :
           {std::pair{13, 17}, std::pair{32, 40}, std::pair{64, 64}, std::pair{128, 96}, std::pair{16, 32}}) {
        Problem q = make(h, w, c, n, 3, 1, 127, 10, ++seed);
        std::mt19937 rng(seed);
        for (size_t i = 0; i < q.x.size(); ++i) q.x[i] = rng() % 3 == 0 ? 127 : static_cast<uint8_t>(rng() % 128);
        for (int o = 0; o < n; ++o)
          for (int ky = 0; ky < 3; ++ky)
            for (int ci = 0; ci < c; ++ci) {
              const int8_t* r = rows[rng() % 6];
              for (int kx = 0; kx < 3; ++kx) q.W[((size_t(o) * 3 + ky) * 3 + kx) * c + ci] = r[kx];
            }
        ASSERT_TRUE(winograd_applies(packed(q), 127, GemmIsa::avx512_vnni));
        const Result ref = run(q, GemmIsa::scalar, seed % 2 == 0, true);
        for (GemmIsa isa : apot::kernels::supported_gemm_isas())
          for (int threads : {1, 2, 3}) {
            const Result got = run(q, isa, seed % 2 == 0, true, threads, seed % 2);
            const std::string what = std::string(apot::kernels::to_string(isa)) + " " + std::to_string(h) + "x" +
                                     std::to_string(w) + "x" + std::to_string(c) + " -> " + std::to_string(n) + ", " +
                                     std::to_string(threads) + " threads";
            ASSERT_EQ(got.acc, ref.acc) << what;
            ASSERT_EQ(got.values, ref.values) << what;
            ASSERT_EQ(got.codes, ref.codes) << what;
          }
      }
}
// Threads share a convolution by whole output rows or, where rows divide badly (7 rows over 2
// threads, one row), by blocks of output channels (the last one partial with 130 channels):
// every split gives the one-thread result.
TEST(Conv, ThreadsShareRowsOrChannelBlocks) {
  struct Shape {
    int h, w, c, n, k, stride;
  };
  unsigned seed = 500;
  for (const Shape& s : {Shape{7, 7, 32, 128, 3, 1}, Shape{14, 14, 16, 256, 3, 2}, Shape{3, 3, 8, 64, 3, 1},
                         Shape{2, 2, 16, 130, 3, 2}, Shape{1, 1, 20, 200, 1, 1}, Shape{4, 33, 16, 80, 3, 1}}) {
    const Problem p = make(s.h, s.w, s.c, s.n, s.k, s.stride, 48, 10, ++seed);
    const Result ref = run(p, GemmIsa::scalar, true, true);
    for (GemmIsa isa : apot::kernels::supported_gemm_isas())
      for (int threads : {1, 2, 3, 4}) {
        const Result got = run(p, isa, true, true, threads);
        const std::string what = std::string(apot::kernels::to_string(isa)) + " " + std::to_string(s.h) + "x" +
                                 std::to_string(s.w) + " -> " + std::to_string(s.n) + ", " + std::to_string(threads) +
                                 " threads";
        ASSERT_EQ(got.acc, ref.acc) << what;
        ASSERT_EQ(got.values, ref.values) << what;
        ASSERT_EQ(got.codes, ref.codes) << what;
      }
  }
}
// The engine writes a block's output over its residual input: the same results as separate
// buffers on every path and split.
TEST(Conv, ResidualInPlaceEqualsSeparateBuffers) {
  unsigned seed = 700;
  for (auto [h, n] : {std::pair{7, 128}, std::pair{13, 17}, std::pair{9, 64}}) {
    const Problem p = make(h, h, 32, n, 3, 1, 48, 10, ++seed);
    const Result ref = run(p, GemmIsa::scalar, true, true);
    const Image in = input_image(p);
    const auto packed = apot::kernels::pack_conv(p.W.data(), p.n, p.c, p.k, p.stride, p.pad);
    const auto q = requantizer();
    for (GemmIsa isa : apot::kernels::supported_gemm_isas())
      for (int threads : {1, 3}) {
        std::vector<float> stream = p.residual;
        Image out(p.oh(), p.ow(), p.n, 1);
        ConvOutput o;
        o.scale = p.scale.data();
        o.bias = p.bias.data();
        o.residual = stream.data();
        o.values = stream.data();
        o.relu = true;
        o.requantizer = &q;
        o.codes = out.view;
        apot::kernels::conv_u8s8(in.view, packed, p.max_a, o, isa, threads);
        const std::string what = std::string(apot::kernels::to_string(isa)) + " " + std::to_string(h) + " -> " +
                                 std::to_string(n) + ", " + std::to_string(threads) + " threads";
        ASSERT_EQ(stream, ref.values) << what;
        ASSERT_EQ(out.bytes, ref.codes) << what;
      }
  }
}
// The epilogues' code lookups (permutes, byte shuffles) for every level count from 2 to 32,
// with both kinds of threshold sets.
TEST(Conv, EveryPathMatchesTheReferenceForEveryLevelCount) {
  for (bool from_zero : {false, true})
    for (int levels = 2; levels <= 32; ++levels)
      for (int n : {32, 20}) {
        const Problem p = make(6, 7, 16, n, 3, 1, 48, 10, 300 + unsigned(levels));
        const Result ref = run(p, GemmIsa::scalar, true, true, 1, 0, levels, from_zero);
        for (GemmIsa isa : apot::kernels::supported_gemm_isas())
          ASSERT_EQ(run(p, isa, true, true, 1, 0, levels, from_zero).codes, ref.codes)
              << apot::kernels::to_string(isa) << " " << levels << " levels, " << n << " channels"
              << (from_zero ? ", thresholds from 0" : "");
      }
}
// Packed weights: 64-byte aligned, and from 1 MiB on in whole 2 MiB pages (huge-page advice).
TEST(Conv, PackedWeightsAreAlignedForTheKernelsAndHugePages) {
  for (size_t bytes : {size_t(1), size_t(4096), (size_t(1) << 20) - 1, size_t(1) << 20, size_t(3) << 20}) {
    auto* p = static_cast<uint8_t*>(apot::kernels::allocate_aligned(bytes));
    const size_t alignment = bytes < (size_t(1) << 20) ? 64 : size_t(2) << 20;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % alignment, 0u) << bytes << " bytes";
    std::fill(p, p + bytes, uint8_t(7));  // all of it is usable (ASan checks the bounds)
    EXPECT_EQ(p[bytes - 1], 7);
    apot::kernels::free_aligned(p, bytes);
  }
  // ResNet-18's last layers: 512 x 512 x 3 x 3 weights, 2.25 MiB.
  std::vector<int8_t> w(size_t(512) * 512 * 9, 1);
  const auto packed = apot::kernels::pack_conv(w.data(), 512, 512, 3, 1, 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(packed.data.data()) % (size_t(2) << 20), 0u);
  EXPECT_EQ(packed.at(4607, 511), 1);
}
TEST(Conv, BadArgumentsAndNames) {
  const Problem p = make(4, 4, 8, 8, 3, 1, 10, 10, 3);
  const auto packed = apot::kernels::pack_conv(p.W.data(), p.n, p.c, p.k, p.stride, p.pad);
  Image no_border(4, 4, 8, 0);
  ConvOutput o;
  o.scale = p.scale.data();
  o.bias = p.bias.data();
  EXPECT_THROW(apot::kernels::conv_u8s8(no_border.view, packed, 10, o), std::invalid_argument);
  Image in = input_image(p);
  Image wrong(3, 4, 8, 1);
  const auto q = requantizer();
  o.requantizer = &q;
  o.codes = wrong.view;
  EXPECT_THROW(apot::kernels::conv_u8s8(in.view, packed, 10, o), std::invalid_argument);
  EXPECT_THROW(apot::kernels::pack_conv(p.W.data(), 0, 8, 3, 1, 1), std::invalid_argument);
  EXPECT_THROW(apot::kernels::make_requantizer({0.5f, 0.2f}, {0, 1, 2}), std::invalid_argument);
  EXPECT_THROW(apot::kernels::make_requantizer({0.5f}, {0, 1, 2}), std::invalid_argument);
  EXPECT_THROW(apot::kernels::make_requantizer(std::vector<float>(32, 1.0f), std::vector<uint8_t>(33)),
               std::invalid_argument);
  EXPECT_THROW(apot::kernels::parse_gemm_isa("avx9"), std::runtime_error);
  for (GemmIsa isa : apot::kernels::supported_gemm_isas())
    EXPECT_EQ(apot::kernels::parse_gemm_isa(apot::kernels::to_string(isa)), isa);
}
TEST(FloatConv, EveryPathMatchesAPlainConvolution) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (auto [k, stride] : {std::pair{3, 1}, std::pair{7, 2}, std::pair{1, 1}})
    for (int n : {5, 8, 13, 16, 24, 64, 70})
      for (auto [h, w] : {std::pair{9, 7}, std::pair{16, 16}}) {
        const int c = 3, pad = k / 2, oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
        std::vector<float> x(size_t(h) * w * c), scale(n), bias(n);
        for (auto& v : x) v = u(rng);
        for (int i = 0; i < n; ++i) scale[i] = 0.1f * u(rng), bias[i] = u(rng);
        std::vector<int8_t> W(size_t(n) * k * k * c);
        for (auto& v : W) v = static_cast<int8_t>(int(rng() % 255) - 127);
        const auto packed = apot::kernels::pack_float_conv(W.data(), n, c, k, stride, pad);
        std::vector<float> bytes;
        apot::kernels::FloatImage in{nullptr, h, w, c, pad};
        bytes.assign(in.floats(), 0.0f);
        in.data = bytes.data();
        for (int y = 0; y < h; ++y)
          for (int xx = 0; xx < w; ++xx)
            for (int ci = 0; ci < c; ++ci) in.pixel(y, xx)[ci] = x[(size_t(y) * w + xx) * c + ci];
        std::vector<float> ref(size_t(oh) * ow * n);
        apot::kernels::conv_f32(in, packed, scale.data(), bias.data(), true, ref.data(), GemmIsa::scalar);
        for (int y = 0; y < oh; ++y)
          for (int xx = 0; xx < ow; ++xx)
            for (int o = 0; o < n; ++o) {
              double sum = 0;
              for (int ky = 0; ky < k; ++ky)
                for (int kx = 0; kx < k; ++kx) {
                  const int iy = y * stride - pad + ky, ix = xx * stride - pad + kx;
                  if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                  for (int ci = 0; ci < c; ++ci)
                    sum += double(x[(size_t(iy) * w + ix) * c + ci]) * W[((size_t(o) * k + ky) * k + kx) * c + ci];
                }
              const double expected = std::max(scale[o] * sum + bias[o], 0.0);
              ASSERT_NEAR(ref[(size_t(y) * ow + xx) * n + o], expected, 1e-4 * (1 + std::abs(scale[o]) * 200 * k * k));
            }
        std::vector<float> linear(ref.size());  // without the ReLU
        apot::kernels::conv_f32(in, packed, scale.data(), bias.data(), false, linear.data(), GemmIsa::scalar);
        for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(ref[i], std::max(linear[i], 0.0f));
        for (GemmIsa isa : apot::kernels::supported_gemm_isas())
          for (int threads : {1, 2}) {
            std::vector<float> got(ref.size(), -1.0f);
            apot::kernels::conv_f32(in, packed, scale.data(), bias.data(), true, got.data(), isa, threads);
            ASSERT_EQ(got, ref) << apot::kernels::to_string(isa) << " k" << k << " n" << n;
            apot::kernels::conv_f32(in, packed, scale.data(), bias.data(), false, got.data(), isa, threads);
            ASSERT_EQ(got, linear) << apot::kernels::to_string(isa) << " k" << k << " n" << n << " without ReLU";
          }
      }
}
TEST(Conv, PeakProbeMeasuresEverySimdPath) {
  for (GemmIsa isa : apot::kernels::supported_gemm_isas())
    if (isa == GemmIsa::scalar) EXPECT_EQ(apot::kernels::measure_peak_gmacs(isa, 0.01), 0.0);
    else EXPECT_GT(apot::kernels::measure_peak_gmacs(isa, 0.01), 0.0) << apot::kernels::to_string(isa);
}

// Each path against the scalar reference on a few shapes, reported as skipped where this CPU
// lacks the path.
class ConvPath : public ::testing::TestWithParam<GemmIsa> {};
TEST_P(ConvPath, MatchesTheReference) {
  if (!supported(GetParam())) GTEST_SKIP() << apot::kernels::to_string(GetParam()) << " is not supported on this CPU";
  for (const Problem& p :
       {make(5, 6, 16, 32, 3, 1, 48, 10, 1), make(9, 7, 8, 20, 3, 2, 48, 10, 2), make(4, 4, 64, 48, 1, 1, 15, 8, 3)})
    for (bool residual : {false, true}) {
      const Result ref = run(p, GemmIsa::scalar, residual, true);
      const Result got = run(p, GetParam(), residual, true);
      EXPECT_EQ(got.acc, ref.acc);
      EXPECT_EQ(got.values, ref.values);
      EXPECT_EQ(got.codes, ref.codes);
    }
}
INSTANTIATE_TEST_SUITE_P(Paths, ConvPath, ::testing::ValuesIn(all_paths()), path_name);
