// The engine's depthwise convolution (one kernel per channel) against a plain loop and every ISA
// path against the scalar reference bit for bit; and the epilogue's two additions for the new
// layer types: an integer offset folded out of the sums (signed input codes) and the ReLU's
// upper clamp (ReLU6), on ordinary and depthwise convolutions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "apot/kernels/gemm.h"
#include "engine_test_util.h"

using namespace apot::kernels::test;

namespace {

struct Depthwise {
  int h, w, c, k, stride, pad, max_a;
  std::vector<uint8_t> x;  // h x w x c codes
  std::vector<int8_t> W;   // c x (k x k)
  std::vector<float> scale, bias, residual;
  int oh() const { return (h + 2 * pad - k) / stride + 1; }
  int ow() const { return (w + 2 * pad - k) / stride + 1; }
};

Depthwise make_dw(int h, int w, int c, int k, int stride, int max_a, unsigned seed) {
  std::mt19937 rng(seed);
  Depthwise p{h, w, c, k, stride, k / 2, max_a, {}, {}, {}, {}, {}};
  p.x.resize(size_t(h) * w * c);
  for (auto& v : p.x) v = static_cast<uint8_t>(rng() % (max_a + 1));
  p.W.resize(size_t(c) * k * k);
  for (auto& v : p.W) v = static_cast<int8_t>(int(rng() % 255) - 127);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int i = 0; i < c; ++i) {
    p.scale.push_back(0.002f * (1.5f + u(rng)));
    p.bias.push_back(u(rng));
  }
  p.residual.resize(size_t(p.oh()) * p.ow() * c);
  for (auto& v : p.residual) v = u(rng);
  return p;
}

struct Options {
  bool residual = false, relu = false;
  float relu_max = __builtin_inff();
  int offset = 0;  // added to every code, the border included, and folded out again
  int threads = 1, extra_border = 0;
  bool codes_only = false;  // no values or sums out, as the engine runs most layers
  bool sums = true;         // the integer sums out (tests only; the engine's layers with values do without)
  bool from_zero = false;   // requantizer(16, true): thresholds from 0.01 up (APoT-like)
  const apot::kernels::Requantizer* q = nullptr;  // instead of requantizer(16, from_zero)
};

// Runs a depthwise problem (W: c x k x k) or, with dense, the ordinary convolution of p
// (Problem's W: n x k x k x c) with the same options.
template <typename P>
Result run_with(const P& p, const std::vector<int8_t>& W, int n, bool depthwise, GemmIsa isa, const Options& opt) {
  Image in(p.h, p.w, p.c, p.pad + opt.extra_border);
  std::fill(in.bytes.begin(), in.bytes.end(), static_cast<uint8_t>(opt.offset));
  for (int y = 0; y < p.h; ++y)
    for (int x = 0; x < p.w; ++x)
      for (int ci = 0; ci < p.c; ++ci)
        in.view.pixel(y, x)[ci] = static_cast<uint8_t>(p.x[(size_t(y) * p.w + x) * p.c + ci] + opt.offset);
  const auto packed = depthwise ? apot::kernels::pack_depthwise(W.data(), p.c, p.k, p.stride, p.pad)
                                : apot::kernels::pack_conv(W.data(), n, p.c, p.k, p.stride, p.pad);
  std::vector<int32_t> offsets(size_t(n), 0);
  const size_t per_out = W.size() / size_t(n);
  for (int o = 0; o < n; ++o)
    for (size_t i = 0; i < per_out; ++i) offsets[size_t(o)] += opt.offset * W[size_t(o) * per_out + i];
  const auto own = requantizer(16, opt.from_zero);
  const apot::kernels::Requantizer& q = opt.q ? *opt.q : own;
  Result r;
  r.acc.assign(size_t(p.oh()) * p.ow() * n, -7);
  r.values.assign(r.acc.size(), -7.0f);
  Image out(p.oh(), p.ow(), n, 1);
  apot::kernels::ConvOutput o;
  o.scale = p.scale.data();
  o.bias = p.bias.data();
  o.acc_offset = opt.offset ? offsets.data() : nullptr;
  o.residual = opt.residual ? p.residual.data() : nullptr;
  o.relu = opt.relu;
  o.relu_max = opt.relu_max;
  o.values = opt.codes_only ? nullptr : r.values.data();
  o.accumulators = opt.codes_only || !opt.sums ? nullptr : r.acc.data();
  o.requantizer = &q;
  o.codes = out.view;
  apot::kernels::conv_u8s8(in.view, packed, p.max_a + opt.offset, o, isa, opt.threads);
  r.codes = out.bytes;
  return r;
}

Result run_dw(const Depthwise& p, GemmIsa isa, const Options& opt) { return run_with(p, p.W, p.c, true, isa, opt); }

}  // namespace

TEST(Depthwise, ScalarReferenceIsTheConvolution) {
  for (auto [k, stride] : {std::pair{3, 1}, std::pair{3, 2}, std::pair{5, 1}, std::pair{1, 1}}) {
    const Depthwise p = make_dw(7, 6, 21, k, stride, 48, 3 + k + stride);
    Options opt;
    opt.residual = opt.relu = true;
    opt.relu_max = 0.75f;
    const Result r = run_dw(p, GemmIsa::scalar, opt);
    const auto q = requantizer();
    Image out(p.oh(), p.ow(), p.c, 1);
    for (int y = 0; y < p.oh(); ++y)
      for (int x = 0; x < p.ow(); ++x)
        for (int c = 0; c < p.c; ++c) {
          int32_t expected = 0;
          for (int ky = 0; ky < k; ++ky)
            for (int kx = 0; kx < k; ++kx) {
              const int iy = y * stride - p.pad + ky, ix = x * stride - p.pad + kx;
              if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
              expected += int(p.x[(size_t(iy) * p.w + ix) * p.c + c]) * int(p.W[(size_t(c) * k + ky) * k + kx]);
            }
          const size_t at = (size_t(y) * p.ow() + x) * p.c + c;
          ASSERT_EQ(r.acc[at], expected) << "k=" << k << " stride=" << stride;
          const float v = std::min(std::max(p.scale[c] * float(expected) + p.bias[c] + p.residual[at], 0.0f), 0.75f);
          EXPECT_FLOAT_EQ(r.values[at], v);
          out.view.pixel(y, x)[c] = static_cast<uint8_t>(q.code(r.values[at]));
        }
    EXPECT_EQ(r.codes, out.bytes) << "codes (and an untouched zero border)";
  }
}

TEST(Depthwise, EveryPathMatchesTheReferenceOnManyShapes) {
  unsigned seed = 500;
  for (auto [h, w] : {std::pair{1, 1}, std::pair{5, 7}, std::pair{8, 8}, std::pair{4, 33}, std::pair{16, 16}})
    for (int c : {3, 8, 16, 20, 48, 72})
      for (auto [k, stride] : {std::pair{3, 1}, std::pair{3, 2}, std::pair{5, 2}})
        for (int max_a : {15, 255}) {
          const Depthwise p = make_dw(h, w, c, k, stride, max_a, ++seed);
          Options opt;
          opt.residual = seed % 2 == 0;
          opt.relu = seed % 3 != 0;
          if (seed % 4 == 1) opt.relu_max = 0.5f;
          const Result ref = run_dw(p, GemmIsa::scalar, opt);
          opt.threads = 1 + int(seed % 3);
          opt.extra_border = int(seed % 2);
          for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
            const Result got = run_dw(p, isa, opt);
            const std::string what = std::string(apot::kernels::to_string(isa)) + " " + std::to_string(h) + "x" +
                                     std::to_string(w) + "x" + std::to_string(c) + " k" + std::to_string(k) + "s" +
                                     std::to_string(stride) + " max " + std::to_string(max_a);
            ASSERT_EQ(got.acc, ref.acc) << what;
            ASSERT_EQ(got.values, ref.values) << what;
            ASSERT_EQ(got.codes, ref.codes) << what;
          }
        }
}

// Codes shifted by an offset (border included) with the offset's sums folded out give exactly the
// unshifted convolution's sums, values and codes, on every path, dense and depthwise.
TEST(Depthwise, OffsetCodesFoldOutExactlyOnEveryPath) {
  unsigned seed = 900;
  for (int offset : {7, 15, 100}) {
    const int max_a = 2 * 15;  // 5-bit signed codes -15..15 shifted to 0..30 (offset 15)
    for (int c : {5, 16, 40}) {
      seed += 2;
      const int stride = 1 + int(seed % 4 / 2);
      const Depthwise d = make_dw(6, 9, c, 3, stride, max_a, seed);
      const Problem p = make(6, 9, c, 24, 3, stride, max_a, 127, seed + 1);
      for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
        Options plain;
        plain.relu = true;
        Options shifted = plain;
        shifted.offset = offset;
        const std::string what =
            std::string(apot::kernels::to_string(isa)) + " c" + std::to_string(c) + " offset " + std::to_string(offset);
        const Result a = run_dw(d, isa, plain), b = run_dw(d, isa, shifted);
        ASSERT_EQ(a.acc, b.acc) << "depthwise " << what;
        ASSERT_EQ(a.values, b.values) << "depthwise " << what;
        ASSERT_EQ(a.codes, b.codes) << "depthwise " << what;
        const Result e = run_with(p, p.W, p.n, false, isa, plain), f = run_with(p, p.W, p.n, false, isa, shifted);
        ASSERT_EQ(e.acc, f.acc) << "dense " << what;
        ASSERT_EQ(e.values, f.values) << "dense " << what;
        ASSERT_EQ(e.codes, f.codes) << "dense " << what;
      }
    }
  }
}

// Where Winograd F(2,3) would apply (AVX-512 VNNI; 3x3 stride 1, small weights) offset codes
// still give the unshifted sums: its input transform takes the padding as zeros, so conv_u8s8
// runs the direct kernel for outputs with an acc_offset.
TEST(Depthwise, OffsetCodesFoldOutOfWinograd) {
  if (!supported(GemmIsa::avx512_vnni)) GTEST_SKIP() << "Winograd runs on AVX-512 VNNI only";
  for (int c : {16, 32}) {
    const Problem p = make(7, 10, c, 32, 3, 1, 30, 40, 77 + unsigned(c));
    const auto packed = apot::kernels::pack_conv(p.W.data(), p.n, p.c, 3, 1, 1);
    ASSERT_TRUE(apot::kernels::winograd_applies(packed, 30 + 15, GemmIsa::avx512_vnni));
    Options plain;
    plain.relu = true;
    Options shifted = plain;
    shifted.offset = 15;
    const Result a = run_with(p, p.W, p.n, false, GemmIsa::scalar, plain);
    const Result b = run_with(p, p.W, p.n, false, GemmIsa::avx512_vnni, shifted);
    ASSERT_EQ(a.acc, b.acc) << "c" << c;
    ASSERT_EQ(a.values, b.values) << "c" << c;
    ASSERT_EQ(a.codes, b.codes) << "c" << c;
  }
}

// ReLU6-style clamps on the dense kernels (direct and Winograd tiles): every path equals the
// reference, and no value passes the clamp.
TEST(Depthwise, ReluClampOnDenseConvolutionsOnEveryPath) {
  unsigned seed = 1300;
  for (int c : {4, 16, 32})
    for (int n : {16, 17, 48})
      for (int stride : {1, 2}) {
        const Problem p = make(8, 10, c, n, 3, stride, 15, 60, ++seed);
        Options opt;
        opt.relu = true;
        opt.relu_max = 0.3f;
        opt.residual = seed % 2 == 0;
        const Result ref = run_with(p, p.W, n, false, GemmIsa::scalar, opt);
        EXPECT_LE(*std::max_element(ref.values.begin(), ref.values.end()), 0.3f);
        EXPECT_GE(*std::min_element(ref.values.begin(), ref.values.end()), 0.0f);
        EXPECT_GT(std::count(ref.values.begin(), ref.values.end(), 0.3f), 0) << "the clamp is reached";
        opt.threads = 1 + int(seed % 2);
        for (GemmIsa isa : apot::kernels::supported_gemm_isas())
          for (bool sums : {true, false}) {  // without the sums: the engine's epilogue for values and codes
            opt.sums = sums;
            const Result got = run_with(p, p.W, n, false, isa, opt);
            const std::string what = std::string(apot::kernels::to_string(isa)) + " c" + std::to_string(c) + " n" +
                                     std::to_string(n) + (sums ? "" : " no sums");
            ASSERT_EQ(got.values, ref.values) << what;
            ASSERT_EQ(got.codes, ref.codes) << what;
          }
      }
}

// Outputs of codes only (the engine's usual case): the AVX-512 epilogue then leaves out a ReLU
// that cannot change a code (first threshold above 0, clamp at or above the last threshold).
// Every path gives the codes of the reference that computes the values, with the ReLU kept where
// it matters (a clamp below the last threshold, thresholds from below 0) and without a ReLU;
// dense (direct, Winograd: 3x3 stride 1 with small weights) and depthwise. Also values and codes
// without the sums, as the engine runs a residual block's second convolution.
TEST(Depthwise, CodesOnlyOutputsMatchTheReferenceOnEveryPath) {
  unsigned seed = 1300;
  for (bool from_zero : {true, false})
    for (float relu_max : {__builtin_inff(), 6.0f, 0.8f, -1.0f})  // -1: no ReLU
      for (auto [k, stride] : {std::pair{3, 1}, std::pair{3, 2}, std::pair{1, 1}})
        for (int c : {16, 24, 40}) {
          ++seed;
          Options ref;
          ref.from_zero = from_zero;
          ref.relu = relu_max >= 0.0f;
          if (ref.relu) ref.relu_max = relu_max;
          ref.residual = seed % 2 == 0;
          Options opt = ref;
          opt.codes_only = true;
          opt.threads = 1 + int(seed % 2);
          const Depthwise d = make_dw(7, 9, c, k, stride, 48, seed);
          const Problem p = make(7, 9, c, 32, k, stride, 48, 10, seed);
          const Result dw_ref = run_dw(d, GemmIsa::scalar, ref);
          const Result dense_ref = run_with(p, p.W, p.n, false, GemmIsa::scalar, ref);
          for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
            const std::string what = std::string(apot::kernels::to_string(isa)) + " c" + std::to_string(c) + " k" +
                                     std::to_string(k) + "s" + std::to_string(stride) + " relu_max " +
                                     std::to_string(relu_max) + (from_zero ? " from zero" : "") +
                                     (ref.residual ? " residual" : "");
            ASSERT_EQ(run_dw(d, isa, opt).codes, dw_ref.codes) << "depthwise " << what;
            ASSERT_EQ(run_with(p, p.W, p.n, false, isa, opt).codes, dense_ref.codes) << "dense " << what;
            Options values = ref;  // values and codes, no sums: the engine's residual layers
            values.sums = false;
            const Result dw = run_dw(d, isa, values), dense = run_with(p, p.W, p.n, false, isa, values);
            ASSERT_EQ(dw.values, dw_ref.values) << "depthwise values " << what;
            ASSERT_EQ(dw.codes, dw_ref.codes) << "depthwise values " << what;
            ASSERT_EQ(dense.values, dense_ref.values) << "dense values " << what;
            ASSERT_EQ(dense.codes, dense_ref.codes) << "dense values " << what;
          }
        }
}

// Values that land exactly on thresholds (v >= t takes the higher code), and NaN and infinite
// values: small integer codes and weights, scales of 1 and 1/2 and thresholds on integers, so
// that many sums hit them. Threshold sets for each way the AVX-512 epilogue finds a code: 64
// cells from below 0 (signed levels) and from above 0, 31 thresholds (a 5-bit set), and a set
// whose cells would hold three thresholds (the search). Dense and depthwise, with and without an
// input offset and a residual, codes only, values and codes, and with the sums as well, against
// the scalar reference on every path.
// Values with every NaN made one number, for comparisons.
static std::vector<float> nan_as_number(std::vector<float> v) {
  for (float& x : v)
    if (std::isnan(x)) x = 1e30f;
  return v;
}

TEST(Depthwise, ValuesOnTheThresholdsNaNAndInfinityGiveTheReferenceCodes) {
  std::vector<std::vector<float>> sets(4);
  for (int i = -7; i <= 7; ++i) sets[0].push_back(3.0f * float(i));        // -21 .. 21
  for (int i = 0; i < 15; ++i) sets[1].push_back(0.5f + 2.0f * float(i));  // 0.5 .. 28.5
  for (int i = -15; i <= 15; ++i) sets[2].push_back(float(i));             // 31 thresholds
  sets[3] = {0.0f, 0.5f, 1.0f, 2.0f, 3.0f, 5.0f, 8.0f, 13.0f, 21.0f, 34.0f, 55.0f};
  unsigned seed = 1700;
  for (const std::vector<float>& t : sets) {
    std::vector<uint8_t> codes;
    for (size_t i = 0; i <= t.size(); ++i) codes.push_back(static_cast<uint8_t>(2 * i + 1));
    const auto q = apot::kernels::make_requantizer(t, codes);
    for (int offset : {0, 3})
      for (bool relu : {false, true})
        for (auto [k, stride] : {std::pair{3, 1}, std::pair{3, 2}, std::pair{1, 1}}) {
          ++seed;
          Depthwise d = make_dw(6, 11, 24, k, stride, 3, seed);
          std::mt19937 rng(seed);
          for (auto& w : d.W) w = static_cast<int8_t>(int(rng() % 3) - 1);
          Problem p = make(6, 11, 24, 40, k, stride, 3, 1, seed);
          for (auto* v : {&d.scale, &d.bias, &p.scale, &p.bias})
            for (size_t i = 0; i < v->size(); ++i) {
              const bool scale = v == &d.scale || v == &p.scale;
              (*v)[i] = scale ? (i % 2 ? 0.5f : 1.0f) : (i % 2 ? 1.5f : 0.0f);
            }
          for (auto* v : {&d.residual, &p.residual})
            for (float& r : *v) r = 0.5f * float(int(rng() % 5) - 2);
          for (auto* v : {&d.bias, &p.bias}) {
            (*v)[3] = __builtin_nanf("");
            (*v)[4] = __builtin_inff();
            (*v)[6] = -__builtin_inff();
          }
          Options ref;
          ref.q = &q;
          ref.relu = relu;
          ref.residual = relu && seed % 2 == 0;  // the engine's second convolution of a residual block
          ref.offset = offset;
          Options only = ref, values = ref;
          only.codes_only = true;
          values.sums = false;
          const Result dw_ref = run_dw(d, GemmIsa::scalar, ref);
          const Result dense_ref = run_with(p, p.W, p.n, false, GemmIsa::scalar, ref);
          long hits = 0;
          for (float v : dense_ref.values) hits += std::count(t.begin(), t.end(), v);
          EXPECT_GT(hits, 20) << "values on the thresholds";
          for (GemmIsa isa : apot::kernels::supported_gemm_isas())
            for (const Options* opt : {&ref, &only, &values}) {
              const std::string what = std::string(apot::kernels::to_string(isa)) + " " + std::to_string(t.size()) +
                                       " thresholds from " + std::to_string(t.front()) + " k" + std::to_string(k) +
                                       "s" + std::to_string(stride) + " offset " + std::to_string(offset) +
                                       (relu ? " relu" : "") + (opt->codes_only ? " codes only" : "") +
                                       (opt->sums ? "" : " no sums");
              const Result dw = run_dw(d, isa, *opt), dense = run_with(p, p.W, p.n, false, isa, *opt);
              ASSERT_EQ(dw.codes, dw_ref.codes) << "depthwise " << what;
              ASSERT_EQ(dense.codes, dense_ref.codes) << "dense " << what;
              if (!opt->codes_only) {
                ASSERT_EQ(nan_as_number(dw.values), nan_as_number(dw_ref.values)) << "depthwise " << what;
                ASSERT_EQ(nan_as_number(dense.values), nan_as_number(dense_ref.values)) << "dense " << what;
              }
            }
        }
  }
}
