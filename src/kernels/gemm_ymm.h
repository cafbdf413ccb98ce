// The 256-bit convolution kernel shared by the AVX2 path (vpmaddubsw + vpmaddwd + vpaddd) and
// the 256-bit VNNI path (vpdpbusd on ymm, VEX-encoded for AVX-VNNI CPUs or EVEX-encoded on
// AVX-512 VNNI ones): R pixels x 16 output channels (two ymm) per tile, the epilogue vectorised
// over 8 lanes. `Dot::add(acc, a, b)` adds the four u8 x s8 products of each 32-bit lane,
// `Dot::add2(acc, a, b, c, d)` those of a x b and c x d.
// Included by one file per instruction set, each compiled with its own flags: everything here
// has internal linkage so that no copy is shared between them.
#pragma once

#include <immintrin.h>

#include "gemm_impl.h"

namespace apot::kernels::detail {
namespace {

// The consumer's code table for vpshufb: codes[0..15] and codes[16..31] (up to 32 levels), each
// in both 128-bit lanes.
struct CodeTable {
  __m256i lo, hi;
  explicit CodeTable(const Requantizer* q) {
    alignas(32) uint8_t t[64] = {};
    if (q)
      for (size_t i = 0; i < q->codes.size() && i < 32; ++i) t[(i / 16) * 32 + i % 16] = t[(i / 16) * 32 + 16 + i % 16] = q->codes[i];
    lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
    hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(t + 32));
  }

  // The codes of level indices (0..31) of channels 0-7 (i0) and 8-15 (i1), in channel order.
  __m128i lookup(__m256i i0, __m256i i1) const {
    // Packing interleaves the 128-bit lanes: bytes 0-7 of lane 0 are channels 0-3, 8-11, of
    // lane 1 channels 4-7, 12-15.
    const __m256i words = _mm256_packus_epi32(i0, i1);
    const __m256i bytes = _mm256_packus_epi16(words, words);
    const __m256i wide = _mm256_cmpgt_epi8(bytes, _mm256_set1_epi8(15));
    const __m256i c = _mm256_blendv_epi8(_mm256_shuffle_epi8(lo, bytes), _mm256_shuffle_epi8(hi, bytes), wide);
    return _mm_unpacklo_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
  }
};

// The epilogue of 16 channels, as epilogue_scalar: the float arithmetic in the same order, the
// level index as a count of thresholds <= v (compare masks are -1), the codes by table lookup.
void epilogue16(const ConvArgs& a, const CodeTable& table, int p, int y, int x, int n0, const __m256i acc[2]) {
  const ConvOutput& o = *a.out;
  const size_t at = size_t(p) * a.w->out_channels + n0;
  __m256 v[2];
  for (int h = 0; h < 2; ++h) {
    v[h] = _mm256_mul_ps(_mm256_loadu_ps(o.scale + n0 + 8 * h), _mm256_cvtepi32_ps(acc[h]));
    v[h] = _mm256_add_ps(v[h], _mm256_loadu_ps(o.bias + n0 + 8 * h));
    if (o.residual) v[h] = _mm256_add_ps(v[h], _mm256_loadu_ps(o.residual + at + 8 * h));
    if (o.relu) v[h] = _mm256_max_ps(_mm256_setzero_ps(), v[h]);  // = std::max(v, 0.0f), NaN included
    if (o.values) _mm256_storeu_ps(o.values + at + 8 * h, v[h]);
    if (o.accumulators) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.accumulators + at + 8 * h), acc[h]);
  }
  if (!o.requantizer) return;
  const Requantizer& q = *o.requantizer;
  __m256i index[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  for (float t : q.thresholds) {
    const __m256 tv = _mm256_set1_ps(t);
    for (int h = 0; h < 2; ++h)
      index[h] = _mm256_sub_epi32(index[h], _mm256_castps_si256(_mm256_cmp_ps(v[h], tv, _CMP_GE_OQ)));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(o.codes.pixel(y, x) + n0), table.lookup(index[0], index[1]));
}

// R output pixels (the first `valid` are real) x 16 output channels from block nb; Pairs: two
// groups of four input channels per step through Dot::add2.
template <int R, typename Dot, bool Pairs>
void tile(const ConvArgs& a, const CodeTable& table, int m, int valid, int nb) {
  const PackedConv& w = *a.w;
  const uint8_t* ap[R];
  int ys[R], xs[R];
  for (int r = 0, y = m / a.ow, x = m % a.ow; r < R; ++r) {
    ys[r] = y;
    xs[r] = x;
    ap[r] = r < valid ? a.base(y, x) : ap[r - 1];
    if (++x == a.ow) x = 0, ++y;
  }
  __m256i acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int8_t* bp = w.data.data() + size_t(nb) * (w.K() / 4) * 64;
  const size_t bstep = 64;
  const int taps = w.kernel * w.kernel, cs4 = w.cs / 4;
  for (int t = 0; t < taps; ++t) {
    const ptrdiff_t off = a.tap_offsets[t];
    int c4 = 0;
    for (; Pairs && c4 + 1 < cs4; c4 += 2, bp += 2 * bstep) {  // two groups of four channels per step
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
      const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + bstep));
      const __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + bstep + 32));
      for (int r = 0; r < R; ++r) {
        const __m256i av = _mm256_set1_epi32(load4(ap[r] + off + 4 * c4));
        const __m256i aw = _mm256_set1_epi32(load4(ap[r] + off + 4 * c4 + 4));
        acc[r][0] = Dot::add2(acc[r][0], av, b0, aw, c0);
        acc[r][1] = Dot::add2(acc[r][1], av, b1, aw, c1);
      }
    }
    for (; c4 < cs4; ++c4, bp += bstep) {
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
      for (int r = 0; r < R; ++r) {
        const __m256i av = _mm256_set1_epi32(load4(ap[r] + off + 4 * c4));
        acc[r][0] = Dot::add(acc[r][0], av, b0);
        acc[r][1] = Dot::add(acc[r][1], av, b1);
      }
    }
  }
  const int n0 = nb * 16;
  const int count = std::min(16, w.out_channels - n0);
  for (int r = 0; r < valid; ++r) {
    if (count < 16) {  // the last block of channels: the reference epilogue
      alignas(32) int32_t lanes[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[r][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8), acc[r][1]);
      epilogue_scalar(a, m + r, ys[r], xs[r], n0, count, lanes);
    } else {
      epilogue16(a, table, m + r, ys[r], xs[r], n0, acc[r]);
    }
  }
}

template <int R, typename Dot, bool Pairs = true>
void ymm_rows(const ConvArgs& a, int m0, int m1) {
  const CodeTable table(a.out->requantizer);
  for (int nb = a.nb0; nb < a.nb1; ++nb)
    for (int m = m0; m < m1; m += R) tile<R, Dot, Pairs>(a, table, m, std::min(R, m1 - m), nb);
}

// The inner instruction alone: 6 independent accumulators, a new operand every round (nothing
// can be hoisted), no memory traffic; 6 accumulators, 6 operands, the broadcast and AVX2's
// constant of ones fit the 16 ymm registers of VEX code (with 8 + 8 the probe spilled and
// measured less than the convolution reaches). MACs per round: 6 x 32.
template <typename Dot>
int32_t ymm_peak_probe(long iterations) {
  constexpr int kChains = 6;
  __m256i acc[kChains], b[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i), b[i] = _mm256_set1_epi8(static_cast<char>(i + 1));
  __m256i a = _mm256_set1_epi8(1);
  for (long it = 0; it < iterations; ++it) {
    __asm__ volatile("" : "+x"(a));
    for (int i = 0; i < kChains; ++i) acc[i] = Dot::add(acc[i], a, b[i]);
  }
  __m256i sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm256_add_epi32(sum, acc[i]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  return lanes[0] + lanes[7];
}

}  // namespace
}  // namespace apot::kernels::detail
