// AVX-512 VNNI convolution: 16 output channels per zmm, R output pixels x NB channel blocks of
// int32 accumulators; each vpdpbusd adds four u8 x s8 products per lane. The epilogue is
// vectorised: scale, bias, residual, ReLU in float (the scalar order, no FMA), and the
// requantisation by a branch-free binary search over the thresholds held in one or two zmm
// registers (vpermps), then a vpermd table lookup of the codes.
#include <immintrin.h>

#include "gemm_impl.h"

namespace apot::kernels::detail {
namespace {

// The requantiser's tables, padded to a power of two of at most 32: thresholds with +inf,
// codes with the last code (so that v = +inf, which passes the padding, still gets it).
struct Search {
  __m512 t0, t1;
  __m512i c0, c1;
  int steps = 0;  // log2 of the table size
  bool wide = false;

  explicit Search(const Requantizer* q) {
    alignas(64) float t[32];
    alignas(64) int32_t c[32];
    for (int i = 0; i < 32; ++i) {
      t[i] = i < int(q ? q->thresholds.size() : 0) ? q->thresholds[i] : __builtin_inff();
      c[i] = q ? q->codes[std::min(i, int(q->codes.size()) - 1)] : 0;
    }
    const int levels = q ? int(q->codes.size()) : 1;
    while ((1 << steps) < levels) ++steps;
    wide = steps > 4;
    t0 = _mm512_load_ps(t);
    t1 = _mm512_load_ps(t + 16);
    c0 = _mm512_load_si512(c);
    c1 = _mm512_load_si512(c + 16);
  }

  // Codes of 16 values: index = number of thresholds <= v.
  __m128i codes(__m512 v) const {
    __m512i index = _mm512_setzero_si512();
    for (int step = (1 << steps) >> 1; step >= 1; step >>= 1) {
      const __m512i candidate = _mm512_add_epi32(index, _mm512_set1_epi32(step));
      const __m512i probe = _mm512_sub_epi32(candidate, _mm512_set1_epi32(1));
      const __m512 t = wide ? _mm512_permutex2var_ps(t0, probe, t1) : _mm512_permutexvar_ps(probe, t0);
      index = _mm512_mask_mov_epi32(index, _mm512_cmp_ps_mask(v, t, _CMP_GE_OQ), candidate);
    }
    const __m512i code = wide ? _mm512_permutex2var_epi32(c0, index, c1) : _mm512_permutexvar_epi32(index, c0);
    return _mm512_cvtepi32_epi8(code);
  }
};

inline __mmask16 lane_mask(int count) { return static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1); }

struct Epilogue {
  const ConvOutput& o;
  const Search search;
  const size_t N;

  void operator()(__m512i acc, int p, int y, int x, int n0, __mmask16 mask) const {
    const size_t at = size_t(p) * N + n0;
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, o.scale + n0), _mm512_cvtepi32_ps(acc));
    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, o.bias + n0));
    if (o.residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, o.residual + at));
    if (o.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // = std::max(v, 0.0f), NaN included
    if (o.values) _mm512_mask_storeu_ps(o.values + at, mask, v);
    if (o.accumulators) _mm512_mask_storeu_epi32(o.accumulators + at, mask, acc);
    if (o.requantizer) _mm_mask_storeu_epi8(o.codes.pixel(y, x) + n0, mask, search.codes(v));
  }
};

// R output pixels (the first `valid` are real; the others repeat the last) x NB blocks of 16
// output channels from block nb.
template <int R, int NB>
void tile(const ConvArgs& a, const Epilogue& epilogue, int m, int valid, int nb) {
  const PackedConv& w = *a.w;
  const uint8_t* ap[R];
  int ys[R], xs[R];
  for (int r = 0, y = m / a.ow, x = m % a.ow; r < R; ++r) {
    ys[r] = y;
    xs[r] = x;
    ap[r] = r < valid ? a.base(y, x) : ap[r - 1];
    if (++x == a.ow) x = 0, ++y;
  }
  __m512i acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  const int8_t* bp = w.data.data() + size_t(nb) * 64;
  const size_t bstep = size_t(w.nblocks) * 64;
  const int taps = w.kernel * w.kernel, cs4 = w.cs / 4;
  for (int t = 0; t < taps; ++t) {
    const ptrdiff_t off = a.tap_offsets[t];
    for (int c4 = 0; c4 < cs4; ++c4, bp += bstep) {
      __m512i b[NB];
      for (int j = 0; j < NB; ++j) b[j] = _mm512_loadu_si512(bp + j * 64);
      for (int r = 0; r < R; ++r) {
        const __m512i av = _mm512_set1_epi32(load4(ap[r] + off + 4 * c4));
        for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, b[j]);
      }
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __mmask16 mask = lane_mask(w.out_channels - n0);
    for (int r = 0; r < R; ++r)
      if (r < valid) epilogue(acc[r][j], m + r, ys[r], xs[r], n0, mask);
  }
}

// Channel blocks [nb, nb + NB) for all pixels, R at a time.
template <int R, int NB>
void sweep(const ConvArgs& a, const Epilogue& e, int m0, int m1, int nb) {
  for (int m = m0; m < m1; m += R) tile<R, NB>(a, e, m, std::min(R, m1 - m), nb);
}

}  // namespace

// Channel groups outside, pixels inside: a group's weights stay in cache while the pixels pass.
// Accumulator tiles: 12 pixels x 1 block, 8 x 2, 6 x 3 or 6 x 4 (enough independent vpdpbusd
// chains to hide their latency, at most 24 of the 32 registers).
void conv_rows_avx512_vnni(const ConvArgs& a, int m0, int m1) {
  const Epilogue e{*a.out, Search(a.out->requantizer), size_t(a.w->out_channels)};
  const int nblocks = a.w->nblocks;
  int nb = 0;
  for (; nb + 4 <= nblocks; nb += 4) sweep<6, 4>(a, e, m0, m1, nb);
  switch (nblocks - nb) {
    case 3: sweep<6, 3>(a, e, m0, m1, nb); break;
    case 2: sweep<8, 2>(a, e, m0, m1, nb); break;
    case 1: sweep<12, 1>(a, e, m0, m1, nb); break;
    default: break;
  }
}

namespace {
// The float first layer: R pixels x NB blocks of 16 output channels, mul then add (no FMA) in
// the reference's order.
template <int R, int NB>
void float_tile(const FloatConvArgs& a, int m, int valid, int nb) {
  const PackedFloatConv& w = *a.w;
  const int c = w.in_channels, ld = w.nblocks * 16;
  const float* ap[R];
  for (int r = 0, y = m / a.ow, x = m % a.ow; r < R; ++r) {
    ap[r] = r < valid ? a.base(y, x) : ap[r - 1];
    if (++x == a.ow) x = 0, ++y;
  }
  __m512 acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int ky = 0; ky < w.kernel; ++ky)
    for (int kx = 0; kx < w.kernel; ++kx) {
      const ptrdiff_t off = (ptrdiff_t(ky) * a.in->padded_w() + kx) * c;
      const float* wk = w.data.data() + size_t((ky * w.kernel + kx) * c) * ld + size_t(nb) * 16;
      for (int ci = 0; ci < c; ++ci) {
        __m512 b[NB];
        for (int j = 0; j < NB; ++j) b[j] = _mm512_loadu_ps(wk + size_t(ci) * ld + j * 16);
        for (int r = 0; r < R; ++r) {
          const __m512 av = _mm512_set1_ps(ap[r][off + ci]);
          for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_add_ps(acc[r][j], _mm512_mul_ps(av, b[j]));
        }
      }
    }
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __mmask16 mask = lane_mask(w.out_channels - n0);
    const __m512 scale = _mm512_maskz_loadu_ps(mask, a.scale + n0), bias = _mm512_maskz_loadu_ps(mask, a.bias + n0);
    for (int r = 0; r < valid; ++r) {
      __m512 v = _mm512_add_ps(_mm512_mul_ps(scale, acc[r][j]), bias);
      if (a.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
      _mm512_mask_storeu_ps(a.out + size_t(m + r) * w.out_channels + n0, mask, v);
    }
  }
}

template <int R, int NB>
void float_sweep(const FloatConvArgs& a, int m0, int m1, int nb) {
  for (int m = m0; m < m1; m += R) float_tile<R, NB>(a, m, std::min(R, m1 - m), nb);
}
}  // namespace

void conv_f32_rows_avx512(const FloatConvArgs& a, int m0, int m1) {
  const int nblocks = a.w->nblocks;
  int nb = 0;
  for (; nb + 4 <= nblocks; nb += 4) float_sweep<6, 4>(a, m0, m1, nb);
  switch (nblocks - nb) {
    case 3: float_sweep<6, 3>(a, m0, m1, nb); break;
    case 2: float_sweep<8, 2>(a, m0, m1, nb); break;
    case 1: float_sweep<12, 1>(a, m0, m1, nb); break;
    default: break;
  }
}

int32_t peak_probe_avx512_vnni(long iterations) {
  __m512i acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
  for (long it = 0; it < iterations; ++it) {
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    __asm__ volatile("" : "+v"(a), "+v"(b));  // keep the inputs opaque to the compiler
  }
  __m512i sum = acc[0];
  for (int i = 1; i < 16; ++i) sum = _mm512_add_epi32(sum, acc[i]);
  return _mm512_reduce_add_epi32(sum);
}

void requantize_avx512(const float* values, int h, int w, int n, const Requantizer& q, const CodeImage& out) {
  const Search search(&q);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float* v = values + (size_t(y) * w + x) * n;
      uint8_t* dst = out.pixel(y, x);
      for (int c = 0; c < n; c += 16) {
        const __mmask16 mask = lane_mask(n - c);
        _mm_mask_storeu_epi8(dst + c, mask, search.codes(_mm512_maskz_loadu_ps(mask, v + c)));
      }
    }
}

}  // namespace apot::kernels::detail
