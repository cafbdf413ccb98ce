// The 256-bit convolution kernel shared by the AVX2 path (vpmaddubsw + vpmaddwd + vpaddd) and
// the 256-bit VNNI path (vpdpbusd on ymm, VEX-encoded for AVX-VNNI CPUs or EVEX-encoded on
// AVX-512 VNNI ones): R pixels x 16 output channels (two ymm) per tile, the epilogue vectorised
// over 8 lanes. `Dot::add(acc, a, b)` adds the four u8 x s8 products of each 32-bit lane,
// `Dot::add2(acc, a, b, c, d)` those of a x b and c x d.
// Included by one file per instruction set, each compiled with its own flags: everything here
// has internal linkage so that no copy is shared between them.
#pragma once

#include <algorithm>

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
      for (size_t i = 0; i < q->codes.size() && i < 32; ++i)
        t[(i / 16) * 32 + i % 16] = t[(i / 16) * 32 + 16 + i % 16] = q->codes[i];
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

// The codes of 16 values (up to 32 levels): the level index as a count of thresholds <= v
// (compare masks are -1; NaN passes none, as in Requantizer::code), then the table lookup.
inline __m128i codes16(const Requantizer& q, const CodeTable& table, const __m256 (&v)[2]) {
  __m256i index[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  for (float t : q.thresholds) {
    const __m256 tv = _mm256_set1_ps(t);
    for (int h = 0; h < 2; ++h)
      index[h] = _mm256_sub_epi32(index[h], _mm256_castps_si256(_mm256_cmp_ps(v[h], tv, _CMP_GE_OQ)));
  }
  return table.lookup(index[0], index[1]);
}

// The epilogue of 16 channels, as epilogue_scalar: the float arithmetic in the same order, then
// codes16. Always inlined into the tile (out of line, the accumulators went through memory:
// ResNet-20 on the AVX2 path 0.479 -> 0.455 ms).
__attribute__((always_inline)) inline void epilogue16(const ConvArgs& a, const CodeTable& table, int p, int y, int x,
                                                      int n0, const __m256i acc[2]) {
  const ConvOutput& o = *a.out;
  const size_t at = size_t(p) * a.w->out_channels + n0;
  __m256 v[2];
  for (int h = 0; h < 2; ++h) {
    __m256i sum = acc[h];
    if (o.acc_offset)
      sum = _mm256_sub_epi32(sum, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o.acc_offset + n0 + 8 * h)));
    v[h] = _mm256_mul_ps(_mm256_loadu_ps(o.scale + n0 + 8 * h), _mm256_cvtepi32_ps(sum));
    v[h] = _mm256_add_ps(v[h], _mm256_loadu_ps(o.bias + n0 + 8 * h));
    if (o.residual) v[h] = _mm256_add_ps(v[h], _mm256_loadu_ps(o.residual + at + 8 * h));
    if (o.relu) {  // = std::min(std::max(v, 0.0f), relu_max), NaN included
      v[h] = _mm256_max_ps(_mm256_setzero_ps(), v[h]);
      v[h] = _mm256_min_ps(_mm256_set1_ps(o.relu_max), v[h]);
    }
    if (o.values) _mm256_storeu_ps(o.values + at + 8 * h, v[h]);
    if (o.accumulators) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.accumulators + at + 8 * h), sum);
  }
  if (!o.requantizer) return;
  _mm_storeu_si128(reinterpret_cast<__m128i*>(o.codes.pixel(y, x) + n0), codes16(*o.requantizer, table, v));
}

// Depthwise convolution, one pixel x 16 channels at a time: codes and weights as int32 lanes
// (vpmaddwd of the int16 pairs (code, 0) and (w, sign) is code * w), a last partial block of
// channels through the scalar epilogue.
inline void ymm_depthwise_rows(const ConvArgs& a, int m0, int m1) {
  const CodeTable table(a.out->requantizer);
  const PackedConv& w = *a.w;
  const size_t ld = size_t(w.nblocks) * 16;
  const int taps = w.kernel * w.kernel;
  for (int m = m0; m < m1; ++m) {
    const int y = m / a.ow, x = m % a.ow;
    const uint8_t* base = a.base(y, x);
    for (int nb = a.nb0; nb < a.nb1; ++nb) {
      const int c0 = 16 * nb, count = std::min(16, w.out_channels - c0);
      if (count < 16) {
        alignas(32) int32_t lanes[16];
        for (int i = 0; i < count; ++i) {
          int32_t sum = 0;
          for (int t = 0; t < taps; ++t)
            sum += int32_t(base[a.tap_offsets[t] + c0 + i]) * w.dw[size_t(t) * ld + c0 + i];
          lanes[i] = sum;
        }
        epilogue_scalar(a, m, y, x, c0, count, lanes);
        continue;
      }
      __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
      for (int t = 0; t < taps; ++t) {
        const uint8_t* p = base + a.tap_offsets[t] + c0;
        const int32_t* wp = w.dw.data() + size_t(t) * ld + c0;
        for (int h = 0; h < 2; ++h) {
          const __m256i codes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * h)));
          const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(wp + 8 * h));
          acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(codes, wv));
        }
      }
      epilogue16(a, table, m, y, x, c0, acc);
    }
  }
}

// requantize(), 16 values at a time (the last n % 16 channels through a zero-padded copy).
inline void requantize_ymm(const float* values, int h, int w, int n, int stride, const Requantizer& q,
                           const CodeImage& out) {
  const CodeTable table(&q);
  const int whole = n / 16 * 16, rest = n - whole;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float* src = values + (size_t(y) * w + x) * size_t(stride);
      uint8_t* dst = out.pixel(y, x);
      for (int c = 0; c < whole; c += 16) {
        const __m256 v[2] = {_mm256_loadu_ps(src + c), _mm256_loadu_ps(src + c + 8)};
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c), codes16(q, table, v));
      }
      if (rest == 0) continue;
      alignas(32) float part[16] = {};
      alignas(16) uint8_t codes[16];
      std::copy_n(src + whole, rest, part);
      const __m256 v[2] = {_mm256_load_ps(part), _mm256_load_ps(part + 8)};
      _mm_store_si128(reinterpret_cast<__m128i*>(codes), codes16(q, table, v));
      std::copy_n(codes, rest, dst + whole);
    }
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

// The 8-bit first layer on 256-bit VNNI registers (vpdpbusd adds u8 x s8 products in int32, so
// 255 x 127 needs no range check; AVX2's vpmaddubsw would saturate): R pixels x one block of
// 16 output channels (two ymm) x C input channels of int32 sums, as the AVX-512 kernel, then
// sum = a_0 A_0 + a_1 A_1 + .. and the epilogue in the reference's order. The weights are the
// AVX-512 kernel's groups of up to four blocks; this kernel reads one block of a group.
template <int C, int R, typename Dot>
void stem_tile_ymm(const StemArgs& a, int m, int valid, int nb) {
  const PackedStem& w = *a.w;
  const uint8_t* ap[R] = {};
  const float* d[R] = {};  // D of each pixel
  for (int r = 0, y = m / a.ow, x = m % a.ow; r < R; ++r) {
    ap[r] = r < valid ? a.base(y, x) : ap[r - 1];
    d[r] = r < valid ? a.border_offset(y, x) : d[r - 1];
    if (++x == a.ow) x = 0, ++y;
  }
  const int steps = w.kernel * w.groups, b0 = nb / 4 * 4, NB = std::min(4, w.nblocks - b0);
  __m256i acc[C][R][2];
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) acc[c][r][0] = acc[c][r][1] = _mm256_setzero_si256();
  const int8_t* bp = w.data.data() + (size_t(b0) * C * steps + (nb - b0)) * 64;
  const ptrdiff_t* off = a.tap_offsets.data();
  const size_t stride = size_t(NB) * 64;  // from one (step, channel) vector of the block to the next
  for (int t = 0; t < steps; ++t, off += C)
    for (int c = 0; c < C; ++c, bp += stride) {
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp));
      const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 32));
      for (int r = 0; r < R; ++r) {
        const __m256i av = _mm256_set1_epi32(load4(ap[r] + off[c]));
        acc[c][r][0] = Dot::add(acc[c][r][0], av, lo);
        acc[c][r][1] = Dot::add(acc[c][r][1], av, hi);
      }
    }
  const int n0 = nb * 16, count = std::min(16, w.out_channels - n0);
  for (int r = 0; r < valid; ++r) {
    float* dst = a.out + size_t(m + r - a.m_base) * w.out_channels + n0;
    alignas(32) float lanes[16];  // sum - D (D has 16 entries per block, scale and bias only count)
    for (int h = 0; h < 2; ++h) {
      __m256 sum = _mm256_setzero_ps();
      for (int c = 0; c < C; ++c)
        sum = _mm256_add_ps(sum,
                            _mm256_mul_ps(_mm256_set1_ps(w.pixel_scale[size_t(c)]), _mm256_cvtepi32_ps(acc[c][r][h])));
      const __m256 centred = _mm256_sub_ps(sum, _mm256_loadu_ps(d[r] + n0 + 8 * h));
      if (count < 16) {
        _mm256_store_ps(lanes + 8 * h, centred);
        continue;
      }
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(a.scale + n0 + 8 * h), centred);
      v = _mm256_add_ps(v, _mm256_loadu_ps(a.bias + n0 + 8 * h));
      if (a.relu) v = _mm256_max_ps(_mm256_setzero_ps(), v);  // = std::max(v, 0.0f), NaN included
      _mm256_storeu_ps(dst + 8 * h, v);
    }
    for (int i = 0; count < 16 && i < count; ++i) {  // the last, partial block: the reference's epilogue
      float v = a.scale[n0 + i] * lanes[i];
      v = v + a.bias[n0 + i];
      dst[i] = a.relu ? std::max(v, 0.0f) : v;
    }
  }
}

// About 12 accumulators (C * R * 2), which with two weight vectors and a broadcast fit the 16
// ymm registers of VEX code.
template <typename Dot, int C>
void stem_rows_ymm_c(const StemArgs& a, int m0, int m1) {
  constexpr int R = C == 1 ? 6 : C == 2 ? 3 : C == 3 ? 2 : 1;
  for (int nb = 0; nb < a.w->nblocks; ++nb)
    for (int m = m0; m < m1; m += R) stem_tile_ymm<C, R, Dot>(a, m, std::min(R, m1 - m), nb);
}

template <typename Dot>
void stem_rows_ymm(const StemArgs& a, int m0, int m1) {
  switch (a.w->in_channels) {
    case 1: return stem_rows_ymm_c<Dot, 1>(a, m0, m1);
    case 2: return stem_rows_ymm_c<Dot, 2>(a, m0, m1);
    case 3: return stem_rows_ymm_c<Dot, 3>(a, m0, m1);
    case 4: return stem_rows_ymm_c<Dot, 4>(a, m0, m1);
    default: return stem_reference(a, m0, m1);
  }
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
