// Internal interface of the convolution paths: each computes output pixels [m0, m1).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "apot/kernels/gemm.h"
#include "apot/kernels/stem.h"

namespace apot::kernels::detail {

// Shared checks of the drivers: throw std::invalid_argument.
bool supports(GemmIsa isa);  // the path runs on this CPU
void require(GemmIsa isa);
// Throws std::invalid_argument for an impossible shape, or a kernel larger than kMaxKernel.
constexpr int kMaxKernel = 16;
void check_shape(const char* what, int out_channels, int in_channels, int kernel, int stride, int padding);

// The offsets of a kernel's taps, in fixed storage: a convolution call allocates nothing, and the
// copy each thread makes of its arguments is a plain copy. check_shape limits kernels to
// kMaxKernel x kMaxKernel.
struct TapOffsets {
  static constexpr int kCapacity = 256;
  std::array<ptrdiff_t, kCapacity> v;  // not cleared (2 KiB on every call): only the first n are read
  int n = 0;
  TapOffsets() {}
  void push_back(ptrdiff_t x) {
    if (n == kCapacity) throw std::invalid_argument("convolution with too many kernel taps");
    v[size_t(n++)] = x;
  }
  ptrdiff_t operator[](size_t i) const { return v[i]; }
  const ptrdiff_t* data() const { return v.data(); }
  size_t size() const { return size_t(n); }
};

struct ConvArgs {
  const CodeImage* in;
  const PackedConv* w;
  const ConvOutput* out;
  int oh, ow;
  int offset;               // in.border - padding
  TapOffsets tap_offsets;   // byte offset of tap (ky, kx) from the tap (0, 0) pixel
  int nb0 = 0, nb1 = 0;     // the blocks of 16 output channels to compute: [nb0, nb1)
  int max_code = 255;       // an upper bound of the input codes
  bool winograd = false;    // winograd_applies(): the AVX-512 path takes F(2,3)
  bool rows_first = false;  // ConvSchedule::rows_first
  bool amx = false;         // ConvSchedule::amx, where amx_applies()

  // The input pixel under tap (0, 0) of output pixel (y, x).
  const uint8_t* base(int y, int x) const {
    return in->data + (size_t(y * w->stride + offset) * in->padded_w() + size_t(x * w->stride + offset)) * in->cs;
  }
};

// The CPU has AVX512_VBMI (vpermb) and APOT_VBMI is not 0 (tests run both ways): the AVX-512
// requantisation looks its 64 cells up with one byte permute, and 3x3 depthwise layers take
// vpdpbusd on input columns.
bool byte_permutes();

// Output pixels [m0, m1), channel blocks [a.nb0, a.nb1).
using ConvRows = void (*)(const ConvArgs& a, int m0, int m1);
void conv_rows_scalar(const ConvArgs& a, int m0, int m1);
void conv_rows_avx2(const ConvArgs& a, int m0, int m1);           // 2 * max code * max|W| <= 32767
void conv_rows_avx2_pairs(const ConvArgs& a, int m0, int m1);     // 4 * max code * max|W| <= 32767
void conv_rows_avx_vnni(const ConvArgs& a, int m0, int m1);       // VEX (AVX-VNNI)
void conv_rows_avx_vnni_evex(const ConvArgs& a, int m0, int m1);  // the same kernel, EVEX (AVX-512 VNNI + VL)
void conv_rows_avx512_vnni(const ConvArgs& a, int m0, int m1);
// Depthwise convolutions (PackedConv::depthwise()): channels are vector lanes.
void depthwise_rows_scalar(const ConvArgs& a, int m0, int m1);
void depthwise_rows_avx2(const ConvArgs& a, int m0, int m1);
void depthwise_rows_avx512(const ConvArgs& a, int m0, int m1);
// AMX tiles (a.amx layers); false (nothing done) where they cannot run the layer.
bool conv_rows_amx(const ConvArgs& a, int m0, int m1);
// Winograd F(2,3) for a.winograd layers and whole output rows; false (nothing done) otherwise.
bool conv_rows_winograd_avx512(const ConvArgs& a, int m0, int m1);
void max_pool_scalar(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0);
void max_pool_avx512(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0);
void max_pool_avx2(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0);
void interleave_pairs_scalar(const float* a, int sa, const float* b, int sb, int pixels, int per_group, float* out);
void interleave_pairs_avx512(const float* a, int sa, const float* b, int sb, int pixels, int per_group, float* out);
void requantize_scalar(const float* values, int h, int w, int n, int stride, const Requantizer& q,
                       const CodeImage& out);
void requantize_avx512(const float* values, int h, int w, int n, int stride, const Requantizer& q,
                       const CodeImage& out);
void requantize_avx2(const float* values, int h, int w, int n, int stride, const Requantizer& q, const CodeImage& out);

struct FloatConvArgs {
  const FloatImage* in;
  const PackedFloatConv* w;
  const float *scale, *bias;
  bool relu;
  float* out;
  int oh, ow, offset;
  const float* base(int y, int x) const {
    return in->data + (size_t(y * w->stride + offset) * in->padded_w() + size_t(x * w->stride + offset)) * in->c;
  }
};
using FloatConvRows = void (*)(const FloatConvArgs& a, int m0, int m1);
void conv_f32_rows_scalar(const FloatConvArgs& a, int m0, int m1);
void conv_f32_rows_avx2(const FloatConvArgs& a, int m0, int m1);
void conv_f32_rows_avx512(const FloatConvArgs& a, int m0, int m1);

struct StemArgs {
  const PixelImage* in;
  const PackedStem* w;
  const float *scale, *bias;
  bool relu;
  float* out;  // from output pixel m_base on
  int oh, ow, offset, m_base;
  TapOffsets tap_offsets;  // of step t = ky * groups + g, channel c from base(): [t * C + c]
  // Channel 0's pixel under tap (0, 0) of output pixel (y, x).
  const uint8_t* base(int y, int x) const {
    return in->data + size_t(y * w->stride + offset) * in->padded_w() + size_t(x * w->stride + offset);
  }
  // D of output pixel (y, x), 16 * nblocks entries.
  const float* border_offset(int y, int x) const {
    return w->offset.data() + w->row_offset[size_t(y)] + w->col_offset[size_t(x)];
  }
};
using StemRows = void (*)(const StemArgs& a, int m0, int m1);
void stem_rows_scalar(const StemArgs& a, int m0, int m1);
void stem_rows_avx512(const StemArgs& a, int m0, int m1);
void stem_rows_avx_vnni(const StemArgs& a, int m0, int m1);       // VEX
void stem_rows_avx_vnni_evex(const StemArgs& a, int m0, int m1);  // the same kernel, EVEX
void stem_rows_amx(const StemArgs& a, int m0, int m1);            // stem_amx_applies()
// One row of to_pixels (s = 255 std, m = 255 mean): false if a value is not a pixel.
bool pixel_row_scalar(const float* src, int w, float s, float m, uint8_t* dst);
bool pixel_row_avx512(const float* src, int w, float s, float m, uint8_t* dst);
bool pixel_row_avx2(const float* src, int w, float s, float m, uint8_t* dst);

// How conv_u8s8 shares a convolution among threads: whole output rows, `per_part` each, or
// (where rows divide badly, as 7 rows over 2 threads) the blocks of 16 output channels,
// `per_part` each, in groups of four blocks where there are enough (the AVX-512 tiles' width).
// Whichever leaves the busiest thread the least work; rows on a tie.
struct ConvSplit {
  int parts = 1;
  bool by_rows = true;
  int per_part = 0;
};
ConvSplit conv_split(int rows, int blocks, int threads);

// Runs rows(a, m0, m1) over [begin, end) on up to `threads` OpenMP threads in chunks of whole
// 48-pixel groups (a multiple of every kernel's tile height).
template <typename Args>
void split_rows(void (*rows)(const Args&, int, int), const Args& a, int begin, int end, int threads) {
  const int M = end - begin;
  const int chunks = std::min(std::max(1, threads), (M + 47) / 48);
  if (chunks <= 1) return rows(a, begin, end);
  const int per_chunk = (M + 48 * chunks - 1) / (48 * chunks) * 48;
#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c)
    rows(a, begin + std::min(M, c * per_chunk), begin + std::min(M, (c + 1) * per_chunk));
}

// The peak probes: `iterations` rounds of independent multiply-accumulates; return a value
// that depends on all of them. MACs per round: peak_macs_per_round_*.
constexpr long peak_macs_per_round_avx512 = 16L * 64;
constexpr long peak_macs_per_round_ymm = 6L * 32;
int32_t peak_probe_avx512_vnni(long iterations);
int32_t peak_probe_avx2(long iterations);
int32_t peak_probe_avx_vnni(long iterations);
int32_t peak_probe_avx_vnni_evex(long iterations);

// The engine's kernels of one path, one table row per path, filled once (engine_table.cpp):
// the drivers call through it instead of asking which path they are on.
struct EngineKernels {
  ConvRows conv;
  // AVX2 sums pairs of products in int16: `conv` needs 2 * max code * max|W| <= 32767,
  // `conv_pairs` (two pair sums added before widening) 4 * max code * max|W| <= 32767; the
  // scalar reference runs where neither holds.
  ConvRows conv_pairs = nullptr;
  bool int16_sums = false;
  ConvRows depthwise;
  FloatConvRows conv_f32;
  StemRows stem;
  void (*max_pool)(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0);
  void (*interleave_pairs)(const float* a, int sa, const float* b, int sb, int pixels, int per_group, float* out);
  // Pixel p's n values at values + p * stride (stride >= n).
  void (*requantize)(const float* values, int h, int w, int n, int stride, const Requantizer& q, const CodeImage& out);
  bool (*pixel_row)(const float* src, int w, float s, float m, uint8_t* dst);
  int32_t (*peak_probe)(long iterations) = nullptr;  // none on the scalar path
  long peak_macs_per_round = 0;
};
// The row of `isa`; throws std::invalid_argument if this CPU cannot run it.
const EngineKernels& engine_kernels(GemmIsa isa);

// Helpers compiled into every path's file with that file's instruction set: internal linkage,
// so that the linker cannot hand one file's copy (say, AVX2 code) to another (the scalar path).
namespace {

// Four consecutive activation codes as one int32 (for the broadcast of a 4-byte group).
inline int32_t load4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The scalar epilogue of `count` channels from n0 of output pixel p = (y, x); shared by the
// reference and the AVX2 path, and the definition the AVX-512 epilogue must match bit for bit.
inline void epilogue_scalar(const ConvArgs& a, int p, int y, int x, int n0, int count, const int32_t* acc) {
  const ConvOutput& o = *a.out;
  const size_t N = size_t(a.w->out_channels);
  uint8_t* codes = o.requantizer ? o.codes.pixel(y, x) : nullptr;
  for (int i = 0; i < count; ++i) {
    const int n = n0 + i;
    const size_t at = size_t(p) * N + n;
    const int32_t sum = o.acc_offset ? acc[i] - o.acc_offset[n] : acc[i];
    float v = o.scale[n] * float(sum);
    v = v + o.bias[n];
    if (o.residual) v = v + o.residual[at];
    if (o.relu) v = std::min(std::max(v, 0.0f), o.relu_max);  // NaN stays NaN
    if (o.values) o.values[at] = v;
    if (o.accumulators) o.accumulators[at] = sum;
    if (codes) codes[n] = static_cast<uint8_t>(o.requantizer->code(v));
  }
}

// The float first layer, one pixel at a time: acc = fma(x, w, acc) over taps and channels in
// row order (fma rounds once, as the AVX-512 kernel's vfmadd does), then scale and bias rounded
// separately (std::fma from libm): the scalar path, and the definition of the AVX2 and AVX-512
// kernels' bits.
inline void conv_f32_reference(const FloatConvArgs& a, int m0, int m1) {
  const PackedFloatConv& w = *a.w;
  const int n = w.out_channels, c = w.in_channels, ld = w.nblocks * 16;
  std::vector<float> acc(static_cast<size_t>(n));
  for (int m = m0; m < m1; ++m) {
    const float* base = a.base(m / a.ow, m % a.ow);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int ky = 0; ky < w.kernel; ++ky)
      for (int kx = 0; kx < w.kernel; ++kx) {
        const float* src = base + (size_t(ky) * a.in->padded_w() + kx) * c;
        const float* wk = w.data.data() + size_t((ky * w.kernel + kx) * c) * ld;
        for (int ci = 0; ci < c; ++ci)
          for (int o = 0; o < n; ++o) acc[o] = std::fma(src[ci], wk[size_t(ci) * ld + o], acc[o]);
      }
    float* dst = a.out + size_t(m) * n;
    for (int o = 0; o < n; ++o) {
      float v = a.scale[o] * acc[o];
      v = v + a.bias[o];
      dst[o] = a.relu ? std::max(v, 0.0f) : v;
    }
  }
}

// The 8-bit first layer, one pixel at a time: the definition of conv_stem_u8's rounding.
inline void stem_reference(const StemArgs& a, int m0, int m1) {
  const PackedStem& w = *a.w;
  const int n = w.out_channels, ld = 16 * w.nblocks, K = w.kernel, pw = a.in->padded_w();
  std::vector<int32_t> A(static_cast<size_t>(ld));
  std::vector<float> sum(static_cast<size_t>(ld));
  for (int m = m0; m < m1; ++m) {
    const int y = m / a.ow, x = m % a.ow;
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (int c = 0; c < w.in_channels; ++c) {
      const uint8_t* plane = a.base(y, x) + c * a.in->plane();
      std::fill(A.begin(), A.end(), 0);
      for (int ky = 0; ky < K; ++ky)
        for (int kx = 0; kx < K; ++kx) {
          const int32_t p = plane[ky * pw + kx];
          const int32_t* wk = w.plain.data() + ((size_t(c) * K + ky) * K + kx) * ld;
          for (int o = 0; o < ld; ++o) A[o] += wk[o] * p;
        }
      for (int o = 0; o < ld; ++o) sum[o] = sum[o] + w.pixel_scale[c] * float(A[o]);
    }
    const float* D = a.border_offset(y, x);
    float* dst = a.out + size_t(m - a.m_base) * n;
    for (int o = 0; o < n; ++o) {
      float v = a.scale[o] * (sum[o] - D[o]);
      v = v + a.bias[o];
      dst[o] = a.relu ? std::max(v, 0.0f) : v;
    }
  }
}

}  // namespace
}  // namespace apot::kernels::detail
