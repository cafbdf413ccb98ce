// AVX-512 VNNI convolution: 16 output channels per zmm, R output pixels x NB channel blocks of
// int32 accumulators; each vpdpbusd adds four u8 x s8 products per lane. The epilogue is
// vectorised: scale, bias, residual, ReLU in float (the scalar order, no FMA), and the
// requantisation by a branch-free binary search over the thresholds held in one or two zmm
// registers (vpermps), then a vpermd table lookup of the codes.
#include <immintrin.h>

#include "float_tile.h"
#include "gemm_impl.h"

namespace apot::kernels::detail {
namespace {

// acc += the four u8 x s8 products of each lane. Inline assembly ties the accumulator's input
// and output to one register: with the intrinsic GCC 12 copies every accumulator of a tile
// through a second register on each trip round the loop (two vmovdqa per vpdpbusd).
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// The requantiser's tables padded to 32 entries: thresholds with +inf, codes with the last code
// (so that v = +inf, which passes the padding, still gets it). The search keeps the index minus
// one (-1 .. 30): each step is then add, permute, compare, blend, and the first step compares
// with a constant; the code table is stored shifted by one, its last entry holding codes[0],
// because the permutes read only the low index bits (-1 selects the last entry).
//
// Where it applies, cells replace the search (exact as well, and fewer instructions: 13 per
// vector for 4-bit APoT instead of 16): u = min(max(v * k, 0), 31) truncated is a cell
// g = 0..31 that never decreases as v grows (NaN: 0). A threshold whose own cell is below g is
// <= v, one whose cell is above g is > v, so the index is base[g] (the thresholds in lower
// cells) plus the comparisons of v with the at most `checks` thresholds in cell g, taken in
// order: index += v >= t[index]. It applies when the thresholds are finite and >= 0 and no cell
// holds more than two of them (k = 31.75 / the largest threshold): APoT up to 4 bits, uniform
// up to 5, PoT up to 3 (APoT 5-bit and PoT 4-bit keep the search).
struct Search {
  __m512 t0, t1, first;  // first: the threshold the first step probes, in every lane
  __m512i c0, c1;        // c[j] = codes[j + 1], c[last] = codes[0]
  bool wide;             // more than 16 levels: five steps over 32 entries, else four over 16
  // The cells: k, the top cell, base[g], thresholds padded with NaN (no value passes them),
  // codes padded with the last code.
  int checks = 0;        // 0: no cells, the search
  __m512 k, top, ct0, ct1;
  __m512i base0, base1, cc0, cc1;

  explicit Search(const Requantizer* q) {
    alignas(64) float t[32];
    alignas(64) int32_t c[32];
    const int n = q ? int(q->codes.size()) : 1;
    wide = n > 16;
    const int size = wide ? 32 : 16;
    for (int i = 0; i < 32; ++i) {
      t[i] = i < n - 1 ? q->thresholds[i] : __builtin_inff();
      c[i] = q ? q->codes[i + 1 < size ? std::min(i + 1, n - 1) : 0] : 0;
    }
    t0 = _mm512_load_ps(t);
    t1 = _mm512_load_ps(t + 16);
    first = _mm512_set1_ps(t[size / 2 - 1]);
    c0 = _mm512_load_si512(c);
    c1 = _mm512_load_si512(c + 16);
    if (q) build_cells(*q);
  }

  // The cell of a value, as the vector code computes it.
  static int cell_of(float v, float k) {
    const float u = v * k;
    return static_cast<int>(u < 31.0f ? u : 31.0f);  // v >= 0 here
  }

  void build_cells(const Requantizer& q) {
    const int n = int(q.codes.size()), T = n - 1;
    if (T < 1 || !(q.thresholds.front() >= 0.0f) || !(q.thresholds.back() > 0.0f) || !std::isfinite(q.thresholds.back()))
      return;
    const float kf = 31.75f / q.thresholds.back();
    int count[32] = {};
    alignas(64) int32_t base[32], cc[32];
    alignas(64) float ct[32];
    int most = 0;
    for (float t : q.thresholds) most = std::max(most, ++count[cell_of(t, kf)]);
    if (most > 2) return;
    for (int g = 0, below = 0; g < 32; below += count[g], ++g) base[g] = below;
    for (int i = 0; i < 32; ++i) {
      ct[i] = i < T ? q.thresholds[size_t(i)] : __builtin_nanf("");
      cc[i] = q.codes[size_t(std::min(i, n - 1))];
    }
    checks = most;
    k = _mm512_set1_ps(kf);
    top = _mm512_set1_ps(31.0f);
    base0 = _mm512_load_si512(base);
    base1 = _mm512_load_si512(base + 16);
    ct0 = _mm512_load_ps(ct);
    ct1 = _mm512_load_ps(ct + 16);
    cc0 = _mm512_load_si512(cc);
    cc1 = _mm512_load_si512(cc + 16);
  }

  // Codes of R x 16 values (index = number of thresholds <= v), the search steps of the R
  // vectors interleaved (independent dependency chains for the out-of-order core).
  template <int R>
  void codes(const __m512 (&v)[R], __m128i (&out)[R]) const {
    __m512i index[R];
    if (checks > 0) {
      for (int r = 0; r < R; ++r) {
        // max(u, 0) returns its second operand, 0, for NaN
        const __m512 u = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v[r], k), _mm512_setzero_ps()), top);
        index[r] = _mm512_permutex2var_epi32(base0, _mm512_cvttps_epi32(u), base1);
      }
      for (int c = 0; c < checks; ++c)
        for (int r = 0; r < R; ++r) {
          const __m512 t = wide ? _mm512_permutex2var_ps(ct0, index[r], ct1) : _mm512_permutexvar_ps(index[r], ct0);
          index[r] = _mm512_mask_add_epi32(index[r], _mm512_cmp_ps_mask(v[r], t, _CMP_GE_OQ), index[r], _mm512_set1_epi32(1));
        }
      for (int r = 0; r < R; ++r)
        out[r] = _mm512_cvtepi32_epi8(wide ? _mm512_permutex2var_epi32(cc0, index[r], cc1) : _mm512_permutexvar_epi32(index[r], cc0));
      return;
    }
    const int half = wide ? 16 : 8;
    for (int r = 0; r < R; ++r)
      index[r] = _mm512_mask_mov_epi32(_mm512_set1_epi32(-1), _mm512_cmp_ps_mask(v[r], first, _CMP_GE_OQ),
                                       _mm512_set1_epi32(half - 1));
    if (wide) {
      for (int s = 8; s >= 1; s >>= 1)
        for (int r = 0; r < R; ++r) step(v[r], index[r], s);
      for (int r = 0; r < R; ++r) out[r] = _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(c0, index[r], c1));
      return;
    }
    for (int s = 4; s >= 1; s >>= 1)
      for (int r = 0; r < R; ++r) step(v[r], index[r], s);
    for (int r = 0; r < R; ++r) out[r] = _mm512_cvtepi32_epi8(_mm512_permutexvar_epi32(index[r], c0));
  }

  // Codes of 16 values.
  __m128i codes(__m512 v) const {
    const __m512 one[1] = {v};
    __m128i out[1];
    codes(one, out);
    return out[0];
  }

 private:
  void step(__m512 v, __m512i& index, int s) const {
    const __m512i candidate = _mm512_add_epi32(index, _mm512_set1_epi32(s));
    const __m512 t = wide ? _mm512_permutex2var_ps(t0, candidate, t1) : _mm512_permutexvar_ps(candidate, t0);
    index = _mm512_mask_mov_epi32(index, _mm512_cmp_ps_mask(v, t, _CMP_GE_OQ), candidate);
  }
};

// A weight vector, and (Fetch) a prefetch of the one 1 KiB further down its stream: a layer's
// weights come from L3 (or memory) on the first pass over them, and the prefetch hides that
// (single layers with cold caches: 56x56, 64 channels 0.60 -> 0.55 ms; 14x14, 256 channels
// 0.58 -> 0.52 ms). Later passes find them in L2, where the prefetches only take issue slots:
// sweep() prefetches in the first tile of a pass only (ResNet-18, one thread: 9.61 -> 9.37 ms).
template <bool Fetch>
inline __m512i load_weights(const int8_t* p) {
  if (Fetch) _mm_prefetch(reinterpret_cast<const char*>(p + 1024), _MM_HINT_T0);
  return _mm512_load_si512(p);
}

inline __mmask16 lane_mask(int count) { return static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1); }

struct Epilogue {
  const ConvOutput& o;
  const Search search;
  const size_t N;

  // Output vectors of pixels (y, x + r), r < valid, of one row: v = scale * acc + bias
  // (+ residual) (ReLU: max(0, v) = std::max(v, 0.0f), NaN included) per vector, the stores, then
  // the requantisation of all of them together. Always inlined into the tile (GCC kept the 7-
  // and 8-pixel versions out of line, passing the accumulators through memory: ResNet-20 1.5 %).
  template <int R>
  __attribute__((always_inline)) void row(const __m512i (&acc)[R], int p, int y, int x, int n0, __mmask16 mask,
                                          int valid) const {
    __m512 v[R];
    const __m512 scale = _mm512_maskz_loadu_ps(mask, o.scale + n0), bias = _mm512_maskz_loadu_ps(mask, o.bias + n0);
    for (int r = 0; r < R; ++r) {
      const size_t at = size_t(p + r) * N + n0;
      v[r] = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_cvtepi32_ps(acc[r])), bias);
      if (r >= valid) continue;
      if (o.residual) v[r] = _mm512_add_ps(v[r], _mm512_maskz_loadu_ps(mask, o.residual + at));
      if (o.relu) v[r] = _mm512_max_ps(_mm512_setzero_ps(), v[r]);
      if (o.values) _mm512_mask_storeu_ps(o.values + at, mask, v[r]);
      if (o.accumulators) _mm512_mask_storeu_epi32(o.accumulators + at, mask, acc[r]);
    }
    if (!o.requantizer) return;
    __m128i codes[R];
    search.codes(v, codes);
    uint8_t* dst = o.codes.pixel(y, x) + n0;
    const size_t step = size_t(o.codes.cs);
    for (int r = 0; r < R; ++r)
      if (r < valid) _mm_mask_storeu_epi8(dst + r * step, mask, codes[r]);
  }
};

// One tile: R output pixels x NB blocks of 16 output channels from block nb, all pixels in
// output row y from column x. CS > 0: the input has CS channels and stride S, so neighbouring
// pixels' inputs are S * CS bytes apart (constant offsets from one pointer, and an inner loop
// the compiler unrolls). CS = 0: any shape, one pointer per pixel, `valid` <= R real pixels
// (the others repeat the last). Fetch: prefetch the weights (the first tile of a pass).
template <int R, int NB, int CS, int S, bool Fetch>
void tile(const ConvArgs& a, const Epilogue& epilogue, int y, int x, int valid, int nb) {
  const PackedConv& w = *a.w;
  const int cs4 = CS > 0 ? CS / 4 : w.cs / 4;
  const uint8_t* ap[R];
  const uint8_t* const a0 = a.base(y, x);
  if (CS == 0)
    for (int r = 0; r < R; ++r) ap[r] = r < valid ? a.base(y, x + r) : ap[r - 1];
  __m512i acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  // Block-major weights: NB sequential streams, bs bytes apart.
  const size_t bs = size_t(w.K() / 4) * 64;
  const int8_t* bp = w.data.data() + size_t(nb) * bs;
  const size_t bstep = 64;
  const int taps = w.kernel * w.kernel;
  for (int t = 0; t < taps; ++t) {
    const ptrdiff_t off = a.tap_offsets[t];
    if (CS > 0) {
      // One moving pointer, the pixels at constant offsets from it.
      const uint8_t* p = a0 + off;
#pragma GCC unroll 1
      for (int c4 = 0; c4 < cs4; ++c4, bp += bstep, p += 4) {
        __m512i b[NB];
        for (int j = 0; j < NB; ++j) b[j] = load_weights<Fetch>(bp + j * bs);
        for (int r = 0; r < R; ++r) {
          const __m512i av = _mm512_set1_epi32(load4(p + r * S * CS));
          for (int j = 0; j < NB; ++j) acc[r][j] = dpbusd(acc[r][j], av, b[j]);
        }
      }
    } else {
      for (int c4 = 0; c4 < cs4; ++c4, bp += bstep) {
        __m512i b[NB];
        for (int j = 0; j < NB; ++j) b[j] = load_weights<Fetch>(bp + j * bs);
        for (int r = 0; r < R; ++r) {
          const __m512i av = _mm512_set1_epi32(load4(ap[r] + off + 4 * c4));
          for (int j = 0; j < NB; ++j) acc[r][j] = dpbusd(acc[r][j], av, b[j]);
        }
      }
    }
  }
  const int p0 = y * a.ow + x;
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __mmask16 mask = lane_mask(w.out_channels - n0);
    __m512i column[R];
    for (int r = 0; r < R; ++r) column[r] = acc[r][j];
    epilogue.row<R>(column, p0, y, x, n0, mask, CS > 0 ? R : valid);
  }
}

// Channel blocks [nb, nb + NB) for output pixels [m0, m1), row by row: whole tiles on the
// fast path, the rest of a row on the general one.
template <int R, int NB, int CS, int S>
void sweep(const ConvArgs& a, const Epilogue& e, int m0, int m1, int nb) {
  for (int m = m0; m < m1;) {
    const int y = m / a.ow, x = m % a.ow, end = std::min(m1, (y + 1) * a.ow);
    int xx = x;
    for (; xx + R <= x + (end - m); xx += R) {
      if (m == m0 && xx == x) tile<R, NB, CS, S, true>(a, e, y, xx, R, nb);
      else tile<R, NB, CS, S, false>(a, e, y, xx, R, nb);
    }
    for (; xx < x + (end - m); xx += R) {
      if (m == m0 && xx == x) tile<R, NB, 0, 1, true>(a, e, y, xx, std::min(R, x + (end - m) - xx), nb);
      else tile<R, NB, 0, 1, false>(a, e, y, xx, std::min(R, x + (end - m) - xx), nb);
    }
    m = end;
  }
}

template <int CS, int S>
void sweep_all(const ConvArgs& a, const Epilogue& e, int m0, int m1) {
  const int nblocks = a.nb1;
  int nb = a.nb0;
  if (nblocks - nb >= 4 && a.ow % 4 != 0 && a.ow % 7 == 0) {  // 7- and 14-wide rows: 7-pixel tiles
    for (; nb + 2 <= nblocks; nb += 2) sweep<7, 2, CS, S>(a, e, m0, m1, nb);
    if (nb < nblocks) sweep<7, 1, CS, S>(a, e, m0, m1, nb);
    return;
  }
  for (; nb + 4 <= nblocks; nb += 4) sweep<4, 4, CS, S>(a, e, m0, m1, nb);
  switch (nblocks - nb) {
    case 3: sweep<6, 3, CS, S>(a, e, m0, m1, nb); break;
    case 2: sweep<8, 2, CS, S>(a, e, m0, m1, nb); break;
    case 1: sweep<8, 1, CS, S>(a, e, m0, m1, nb); break;
    default: break;
  }
}

template <int S>
void sweep_cs(const ConvArgs& a, const Epilogue& e, int m0, int m1) {
  switch (a.w->cs) {
    case 16: return sweep_all<16, S>(a, e, m0, m1);
    case 32: return sweep_all<32, S>(a, e, m0, m1);
    case 64: return sweep_all<64, S>(a, e, m0, m1);
    case 128: return sweep_all<128, S>(a, e, m0, m1);
    case 256: return sweep_all<256, S>(a, e, m0, m1);
    case 512: return sweep_all<512, S>(a, e, m0, m1);
    default: return sweep_all<0, 1>(a, e, m0, m1);
  }
}

// ---- Winograd F(2,3) along rows (3x3, stride 1, padding 1; docs/KERNELS.md) ----
// Output pixels (y, 2p) and (y, 2p + 1) from the input pixels d0..d3 at x = 2p - 1 .. 2p + 2 of
// rows y - 1 .. y + 1: per row, m_j = t_j . u_j over the channels with t = (d0 - d2 + D,
// d1 + d2, d2 - d1 + D, d1 - d3 + D) (bytes: D, the largest code, keeps them in 0 .. 2D) and
// the packed weights u; then 2 y0 = m0 + m1 + m2 - D e0 and 2 y1 = m1 - m2 - m3 + D e1, exact
// integers: the accumulators equal the direct convolution's, so the epilogue gives the same
// bits. Four vpdpbusd per pair and channel group where the direct kernel takes six.

// The transformed rows of the input: rows [y0 - 1, y1 + 1) of pairs [0, P), each pair j-major
// (4 x CS bytes). Rows and columns outside the image are zeros (the padding).
template <int CS>
void wino_transform(const ConvArgs& a, int y0, int y1, uint8_t* t) {
  const CodeImage& in = *a.in;
  const int P = (a.ow + 1) / 2;
  const __m512i D = _mm512_set1_epi8(static_cast<char>(a.max_code));
  constexpr int chunks = (CS + 63) / 64;
  const __mmask64 mask = CS >= 64 ? ~__mmask64(0) : (__mmask64(1) << CS) - 1;
  for (int yi = y0 - 1; yi <= y1; ++yi) {
    const bool row = yi >= 0 && yi < in.h;
    for (int p = 0; p < P; ++p, t += 4 * CS)
      for (int c = 0; c < chunks; ++c) {
        __m512i d[4];
        for (int k = 0; k < 4; ++k) {
          const int xi = 2 * p - 1 + k;
          d[k] = row && xi >= 0 && xi < in.w ? _mm512_maskz_loadu_epi8(mask, in.pixel(yi, xi) + 64 * c)
                                            : _mm512_setzero_si512();
        }
        const __m512i u[4] = {_mm512_add_epi8(_mm512_sub_epi8(d[0], d[2]), D), _mm512_add_epi8(d[1], d[2]),
                              _mm512_add_epi8(_mm512_sub_epi8(d[2], d[1]), D),
                              _mm512_add_epi8(_mm512_sub_epi8(d[1], d[3]), D)};
        for (int j = 0; j < 4; ++j) _mm512_mask_storeu_epi8(t + j * CS + 64 * c, mask, u[j]);
      }
  }
}

// The epilogue of pairs [0, S) of a tile in row y from pair p, and of pairs [S, R) in row
// y + 1 from pair 0 (S = 1 .. R - 1, one template per split).
template <int R, int S = 1>
__attribute__((noinline)) void wino_segments(const Epilogue& e, const __m512i (&column)[2 * R], int ow, int split,
                                             int y, int p, int n0, __mmask16 mask) {
  if constexpr (S < R) {
    if (split != S) return wino_segments<R, S + 1>(e, column, ow, split, y, p, n0, mask);
    __m512i first[2 * S], second[2 * (R - S)];
    for (int i = 0; i < 2 * S; ++i) first[i] = column[i];
    for (int i = 0; i < 2 * (R - S); ++i) second[i] = column[2 * S + i];
    e.row<2 * S>(first, y * ow + 2 * p, y, 2 * p, n0, mask, std::min(2 * S, ow - 2 * p));
    e.row<2 * (R - S)>(second, (y + 1) * ow, y + 1, 0, n0, mask, std::min(2 * (R - S), ow));
  }
}

// R consecutive pairs f, f + 1, .. of the band (pair f: output row y0 + f / P, pairs p = f % P;
// consecutive pairs are 4 CS bytes apart in T also across rows, so a tile may span two rows)
// x NB blocks of 16 output channels from block nb.
template <int R, int NB, int CS, bool Fetch, bool Span>
void wino_tile(const ConvArgs& a, const Epilogue& epilogue, const uint8_t* t0, int y0, int f, int nb) {
  const PackedConv& w = *a.w;
  const int P = (a.ow + 1) / 2;
  const size_t row_bytes = size_t(P) * 4 * CS;
  const size_t bs = size_t(3) * CS * 64;  // one block's Winograd weights
  const int8_t* bp = w.wino.data() + size_t(nb) * bs;
  __m512i acc[4][R][NB];
  for (int j = 0; j < 4; ++j)
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < NB; ++k) acc[j][r][k] = _mm512_setzero_si512();
  for (int ky = 0; ky < 3; ++ky) {
    const uint8_t* t = t0 + ky * row_bytes + size_t(f) * 4 * CS;
#pragma GCC unroll 1
    for (int c4 = 0; c4 < CS / 4; ++c4, bp += 256, t += 4)
      for (int j = 0; j < 4; ++j) {
        __m512i b[NB];
        for (int k = 0; k < NB; ++k) b[k] = load_weights<Fetch>(bp + k * bs + j * 64);
        for (int r = 0; r < R; ++r) {
          const __m512i av = _mm512_set1_epi32(load4(t + r * 4 * CS + j * CS));
          for (int k = 0; k < NB; ++k) acc[j][r][k] = dpbusd(acc[j][r][k], av, b[k]);
        }
      }
  }
  const __m512i D = _mm512_set1_epi32(a.max_code);
  const int y = y0 + f / P, p = f % P;
  const bool one_row = !Span || p + R <= P;
  for (int k = 0; k < NB; ++k) {
    const int n0 = (nb + k) * 16;
    const __mmask16 mask = lane_mask(w.out_channels - n0);
    const __m512i c0 = _mm512_mullo_epi32(D, _mm512_loadu_si512(w.wino_e0.data() + n0));
    const __m512i c1 = _mm512_mullo_epi32(D, _mm512_loadu_si512(w.wino_e1.data() + n0));
    __m512i column[2 * R];
    for (int r = 0; r < R; ++r) {
      const __m512i m12 = _mm512_add_epi32(acc[1][r][k], acc[2][r][k]);
      const __m512i y0v = _mm512_sub_epi32(_mm512_add_epi32(acc[0][r][k], m12), c0);
      const __m512i y1v = _mm512_add_epi32(_mm512_sub_epi32(_mm512_sub_epi32(acc[1][r][k], acc[2][r][k]), acc[3][r][k]), c1);
      column[2 * r] = _mm512_srai_epi32(y0v, 1);
      column[2 * r + 1] = _mm512_srai_epi32(y1v, 1);
    }
    if (one_row) {
      epilogue.row<2 * R>(column, y * a.ow + 2 * p, y, 2 * p, n0, mask, std::min(2 * R, a.ow - 2 * p));
      continue;
    }
    if (R - (P - p) <= P) {  // two rows: S = P - p pairs in row y, the rest from the start of row y + 1
      wino_segments<R>(epilogue, column, a.ow, P - p, y, p, n0, mask);
      continue;
    }
    for (int r = 0; r < R; ++r) {  // rows of fewer pairs than the tile: pair by pair
      const int yr = y + (p + r) / P, xr = 2 * ((p + r) % P);
      const __m512i pair[2] = {column[2 * r], column[2 * r + 1]};
      epilogue.row<2>(pair, yr * a.ow + xr, yr, xr, n0, mask, std::min(2, a.ow - xr));
    }
  }
}

// Blocks [nb, nb + NB) for output rows [y0, y1): tiles of R pairs, a smaller one at the end of
// a run. Rows of 8 pairs or more are runs of their own; shorter rows (7x7 and 14x14 maps) are
// one run, tiles spanning rows, which leaves fewer small tiles (ResNet-18's 14x14 layers:
// 0.44 -> 0.40 ms) but costs the wider rows a little (docs/KERNELS.md).
template <int R, int NB, int CS, bool Span>
void wino_run(const ConvArgs& a, const Epilogue& e, const uint8_t* t, int y0, int r0, int end, int nb) {
  int f = r0;
  for (; f + R <= end; f += R) {
    if (f == 0) wino_tile<R, NB, CS, true, Span>(a, e, t, y0, f, nb);
    else wino_tile<R, NB, CS, false, Span>(a, e, t, y0, f, nb);
  }
  if (R > 2 && f + 2 <= end) {
    wino_tile<(R > 2 ? 2 : 1), NB, CS, false, Span>(a, e, t, y0, f, nb);
    f += 2;
  }
  if (f < end) wino_tile<1, NB, CS, false, Span>(a, e, t, y0, f, nb);
}

template <int R, int NB, int CS>
void wino_sweep(const ConvArgs& a, const Epilogue& e, const uint8_t* t, int y0, int y1, int nb) {
  const int P = (a.ow + 1) / 2, pairs = (y1 - y0) * P;
  if (P < 8 && CS >= 128) return wino_run<R, NB, CS, true>(a, e, t, y0, 0, pairs, nb);
  for (int r0 = 0; r0 < pairs; r0 += P) wino_run<R, NB, CS, false>(a, e, t, y0, r0, r0 + P, nb);
}

template <int CS>
void wino_rows(const ConvArgs& a, const Epilogue& e, int y0, int y1) {
  // Per thread, kept: the largest transformed band it has needed (ResNet-18: 415 KB).
  static thread_local std::vector<uint8_t, Aligned64<uint8_t>> buffer;
  const size_t bytes = size_t(y1 - y0 + 2) * ((a.ow + 1) / 2) * 4 * CS;
  if (buffer.size() < bytes) buffer.resize(bytes);
  wino_transform<CS>(a, y0, y1, buffer.data());
  // Three pairs x two blocks (24 accumulators); two x two for rows of four pairs with few
  // channels (ResNet-20's 8x8 maps); four pairs x one block for a block left over. Measured
  // against 2 x 3, 4 x 1 and 6 x 1 (docs/KERNELS.md).
  int nb = a.nb0;
  if ((a.ow + 1) / 2 == 4 && CS < 128)
    for (; nb + 2 <= a.nb1; nb += 2) wino_sweep<2, 2, CS>(a, e, buffer.data(), y0, y1, nb);
  else
    for (; nb + 2 <= a.nb1; nb += 2) wino_sweep<3, 2, CS>(a, e, buffer.data(), y0, y1, nb);
  for (; nb < a.nb1; ++nb) wino_sweep<4, 1, CS>(a, e, buffer.data(), y0, y1, nb);
}

bool wino_dispatch(const ConvArgs& a, const Epilogue& e, int m0, int m1) {
  if (!a.winograd || m0 % a.ow != 0 || (m1 % a.ow != 0 && m1 != a.oh * a.ow) || m0 >= m1) return false;
  const int y0 = m0 / a.ow, y1 = (m1 + a.ow - 1) / a.ow;
  switch (a.w->cs) {
    case 16: wino_rows<16>(a, e, y0, y1); return true;
    case 32: wino_rows<32>(a, e, y0, y1); return true;
    case 64: wino_rows<64>(a, e, y0, y1); return true;
    case 128: wino_rows<128>(a, e, y0, y1); return true;
    case 256: wino_rows<256>(a, e, y0, y1); return true;
    case 512: wino_rows<512>(a, e, y0, y1); return true;
    default: return false;
  }
}

}  // namespace

// Channel groups outside, pixels inside: a group's weights stay in cache while the pixels pass.
void conv_rows_avx512_vnni(const ConvArgs& a, int m0, int m1) {
  const Epilogue e{*a.out, Search(a.out->requantizer), size_t(a.w->out_channels)};
  if (wino_dispatch(a, e, m0, m1)) return;
  if (a.w->stride == 1) return sweep_cs<1>(a, e, m0, m1);
  if (a.w->stride == 2) return sweep_cs<2>(a, e, m0, m1);
  sweep_all<0, 1>(a, e, m0, m1);
}

namespace {
// The float first layer's vectors: 16 floats.
struct Zmm {
  using type = __m512;
  static constexpr int lanes = 16;
  static __m512 zero() { return _mm512_setzero_ps(); }
  static __m512 set1(float x) { return _mm512_set1_ps(x); }
  static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static __mmask16 mask(int count) { return lane_mask(count); }
  static __m512 load(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }
  static void store(float* p, __mmask16 mask, __m512 v) { _mm512_mask_storeu_ps(p, mask, v); }
  static __m512 fmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
  static __m512 mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
  static __m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
  static __m512 max(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
};
}  // namespace

void conv_f32_rows_avx512(const FloatConvArgs& a, int m0, int m1) {
  const int nblocks = a.w->nblocks;
  int nb = 0;
  for (; nb + 4 <= nblocks; nb += 4) float_sweep<Zmm, 6, 4>(a, m0, m1, nb);
  switch (nblocks - nb) {
    case 3: float_sweep<Zmm, 6, 3>(a, m0, m1, nb); break;
    case 2: float_sweep<Zmm, 8, 2>(a, m0, m1, nb); break;
    case 1: float_sweep<Zmm, 12, 1>(a, m0, m1, nb); break;
    default: break;
  }
}

namespace {
// The 8-bit first layer: R pixels x NB blocks of 16 output channels x C input channels of int32
// sums (vpdpbusd on four taps of a kernel row) in one pass over the taps, then
// sum = a_0 A_0 + a_1 A_1 + .. in the reference's order, and the epilogue.
template <int C, int R, int NB>
void stem_tile(const StemArgs& a, int m, int valid, int nb) {
  const PackedStem& w = *a.w;
  const uint8_t* ap[R];
  const float* d[R];  // D of each pixel
  for (int r = 0, y = m / a.ow, x = m % a.ow; r < R; ++r) {
    ap[r] = r < valid ? a.base(y, x) : ap[r - 1];
    d[r] = r < valid ? a.border_offset(y, x) : d[r - 1];
    if (++x == a.ow) x = 0, ++y;
  }
  const int steps = w.kernel * w.groups;  // per channel
  __m512i acc[C][R][NB];
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < NB; ++j) acc[c][r][j] = _mm512_setzero_si512();
  // One weight stream for the group of blocks from nb (the vectors of a step at constant offsets).
  const int8_t* bp = w.data.data() + size_t(nb) * C * steps * 64;
  const ptrdiff_t* off = a.tap_offsets.data();
#pragma GCC unroll 1
  for (int t = 0; t < steps; ++t, bp += C * NB * 64, off += C)
    for (int c = 0; c < C; ++c) {
      __m512i b[NB];
      for (int j = 0; j < NB; ++j) b[j] = _mm512_load_si512(bp + (c * NB + j) * 64);
      const ptrdiff_t o = off[c];
      for (int r = 0; r < R; ++r) {
        const __m512i av = _mm512_set1_epi32(load4(ap[r] + o));
        for (int j = 0; j < NB; ++j) acc[c][r][j] = dpbusd(acc[c][r][j], av, b[j]);
      }
    }
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __mmask16 mask = lane_mask(w.out_channels - n0);
    const __m512 scale = _mm512_maskz_loadu_ps(mask, a.scale + n0), bias = _mm512_maskz_loadu_ps(mask, a.bias + n0);
    for (int r = 0; r < valid; ++r) {
      __m512 sum = _mm512_setzero_ps();
      for (int c = 0; c < C; ++c)
        sum = _mm512_add_ps(sum, _mm512_mul_ps(_mm512_set1_ps(w.pixel_scale[size_t(c)]), _mm512_cvtepi32_ps(acc[c][r][j])));
      __m512 v = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_sub_ps(sum, _mm512_loadu_ps(d[r] + n0))), bias);
      if (a.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
      _mm512_mask_storeu_ps(a.out + size_t(m + r - a.m_base) * w.out_channels + n0, mask, v);
    }
  }
}

template <int C, int R, int NB>
void stem_sweep(const StemArgs& a, int m0, int m1, int nb) {
  for (int m = m0; m < m1; m += R) stem_tile<C, R, NB>(a, m, std::min(R, m1 - m), nb);
}

// About 24 accumulators: C * R * NB.
template <int C>
void stem_rows(const StemArgs& a, int m0, int m1) {
  constexpr int R4 = C == 1 ? 6 : C == 2 ? 3 : 2;
  const int nblocks = a.w->nblocks;
  int nb = 0;
  for (; nb + 4 <= nblocks; nb += 4) stem_sweep<C, R4, 4>(a, m0, m1, nb);
  switch (nblocks - nb) {
    case 3: stem_sweep<C, R4, 3>(a, m0, m1, nb); break;
    case 2: stem_sweep<C, 2 * R4, 2>(a, m0, m1, nb); break;
    case 1: stem_sweep<C, 4 * R4, 1>(a, m0, m1, nb); break;
    default: break;
  }
}
}  // namespace

void stem_rows_avx512(const StemArgs& a, int m0, int m1) {
  switch (a.w->in_channels) {
    case 1: return stem_rows<1>(a, m0, m1);
    case 2: return stem_rows<2>(a, m0, m1);
    case 3: return stem_rows<3>(a, m0, m1);
    case 4: return stem_rows<4>(a, m0, m1);
    default: return stem_reference(a, m0, m1);
  }
}

// to_pixels' formula, 16 values at a time.
bool pixel_row_avx512(const float* src, int w, float s, float m, uint8_t* dst) {
  const __m512 scale = _mm512_set1_ps(s), offset = _mm512_set1_ps(m), magic = _mm512_set1_ps(12582912.0f);
  const __m512 low = _mm512_set1_ps(-0.5f), high = _mm512_set1_ps(255.5f), tolerance = _mm512_set1_ps(1e-3f);
  __mmask16 bad = 0;
  for (int x = 0; x < w; x += 16) {
    const __mmask16 mask = lane_mask(w - x);
    const __m512 q = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mask, src + x), scale), offset);
    const __m512 p = _mm512_sub_ps(_mm512_add_ps(q, magic), magic);
    const __mmask16 in_range = _mm512_cmp_ps_mask(q, low, _CMP_GT_OQ) & _mm512_cmp_ps_mask(q, high, _CMP_LT_OQ);
    const __mmask16 near = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(q, p)), tolerance, _CMP_LE_OQ);
    bad |= mask & ~(in_range & near);
    const __m512i pixels = _mm512_cvttps_epi32(_mm512_maskz_mov_ps(in_range, p));
    _mm_mask_storeu_epi8(dst + x, mask, _mm512_cvtepi32_epi8(pixels));
  }
  return bad == 0;
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

// Up to four vectors of channels at a time, the running maxima in registers.
void max_pool_avx512(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0) {
  const int ow = (w + 1) / 2;
  for (int y = y0; y < y1; ++y)
    for (int x = 0; x < ow; ++x) {
      const int iy0 = std::max(0, 2 * y - 1), iy1 = std::min(h - 1, 2 * y + 1);
      const int ix0 = std::max(0, 2 * x - 1), ix1 = std::min(w - 1, 2 * x + 1);
      float* d = out + (size_t(y) * ow + x) * c;
      for (int ch = 0; ch < c; ch += 64) {
        __mmask16 mask[4];
        __m512 m[4];
        for (int k = 0; k < 4; ++k) mask[k] = ch + 16 * k < c ? lane_mask(c - ch - 16 * k) : 0;
        bool first = true;
        for (int iy = iy0; iy <= iy1; ++iy)
          for (int ix = ix0; ix <= ix1; ++ix) {
            const float* src = in + (size_t(iy - in_row0) * w + ix) * c + ch;
            for (int k = 0; k < 4; ++k) {
              const __m512 v = _mm512_maskz_loadu_ps(mask[k], src + 16 * k);
              // max(v, m) = v > m ? v : m, the reference's choice for every pair of numbers
              m[k] = first ? v : _mm512_max_ps(v, m[k]);
            }
            first = false;
          }
        for (int k = 0; k < 4; ++k) _mm512_mask_storeu_ps(d + ch + 16 * k, mask[k], m[k]);
      }
    }
}

// Four vectors at a time where the channels come in whole vectors (independent search chains).
void requantize_avx512(const float* values, int h, int w, int n, const Requantizer& q, const CodeImage& out) {
  const Search search(&q);
  const int vectors = (n + 15) / 16;
  auto target = [&](long i) { return out.pixel(int(i / vectors / w), int(i / vectors % w)) + (i % vectors) * 16; };
  long i = 0;
  const long total = long(h) * w * vectors;
  if (n % 16 == 0)
    for (; i + 4 <= total; i += 4) {
      __m512 v[4];
      __m128i codes[4];
      for (int r = 0; r < 4; ++r) v[r] = _mm512_loadu_ps(values + (i + r) * 16);
      search.codes(v, codes);
      for (int r = 0; r < 4; ++r) _mm_storeu_si128(reinterpret_cast<__m128i*>(target(i + r)), codes[r]);
    }
  for (; i < total; ++i) {
    const long pixel = i / vectors;
    const int c = int(i % vectors) * 16;
    const __mmask16 mask = lane_mask(n - c);
    _mm_mask_storeu_epi8(target(i), mask, search.codes(_mm512_maskz_loadu_ps(mask, values + pixel * n + c)));
  }
}

}  // namespace apot::kernels::detail
