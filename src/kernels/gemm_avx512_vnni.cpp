// AVX-512 VNNI convolution: 16 output channels per zmm, R output pixels x NB channel blocks of
// int32 accumulators; each vpdpbusd adds four u8 x s8 products per lane. The epilogue
// (avx512_epilogue.h) is vectorised: scale, bias, residual, ReLU in float (the scalar order, no
// FMA), and the requantisation. 3x3 stride-1 layers take Winograd F(2,3) where it applies
// (gemm_winograd_avx512.cpp). Also the AVX-512 first layers, max-pool and requantisation.
#include "avx512_epilogue.h"
#include "float_tile.h"

namespace apot::kernels::detail {
namespace {

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
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __m512i start = epilogue.start(n0, lane_mask(w.out_channels - n0));
    for (int r = 0; r < R; ++r) acc[r][j] = start;
  }
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
    epilogue.row<R, Epilogue::Offsets::none>(column, p0, y, x, n0, mask, CS > 0 ? R : valid);
  }
}

// 3x3 stride-1 layers with one or two blocks of output channels: the input vector of each column
// of a kernel row is broadcast once and feeds the (up to) three output pixels whose taps read it,
// R + 2 broadcasts for 3R vpdpbusd per block, where tile() broadcasts once per pixel and tap. With
// one block, tile() issues as many broadcasts as vpdpbusd, and they bound it (16-channel layers of
// a ResNet-20: 0.0159 -> 0.0146 ms; whole network 0.224 -> 0.215 ms). The accumulators hold the
// same integer sums in another order.
template <int R, int NB, int CS, bool Fetch>
void tile3(const ConvArgs& a, const Epilogue& epilogue, int y, int x, int nb) {
  const PackedConv& w = *a.w;
  constexpr int cs4 = CS / 4;
  const uint8_t* const a0 = a.base(y, x);
  __m512i acc[R][NB];
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __m512i start = epilogue.start(n0, lane_mask(w.out_channels - n0));
    for (int r = 0; r < R; ++r) acc[r][j] = start;
  }
  const size_t bs = size_t(9 * cs4) * 64;
  for (int ky = 0; ky < 3; ++ky) {
    const uint8_t* p = a0 + a.tap_offsets[3 * ky];
    const int8_t* bp = w.data.data() + size_t(nb) * bs + size_t(3 * ky * cs4) * 64;
#pragma GCC unroll 1
    for (int c4 = 0; c4 < cs4; ++c4, bp += 64, p += 4) {
      __m512i b[3][NB];
      for (int kx = 0; kx < 3; ++kx)
        for (int j = 0; j < NB; ++j) b[kx][j] = load_weights<Fetch>(bp + kx * cs4 * 64 + j * bs);
#pragma GCC unroll 32
      for (int c = 0; c < R + 2; ++c) {
        const __m512i av = _mm512_set1_epi32(load4(p + c * CS));
        for (int kx = 0; kx < 3; ++kx)
          if (c - kx >= 0 && c - kx < R)
            for (int j = 0; j < NB; ++j) acc[c - kx][j] = dpbusd(acc[c - kx][j], av, b[kx][j]);
      }
    }
  }
  const int p0 = y * a.ow + x;
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __mmask16 mask = lane_mask(w.out_channels - n0);
    __m512i column[R];
    for (int r = 0; r < R; ++r) column[r] = acc[r][j];
    epilogue.row<R, Epilogue::Offsets::none>(column, p0, y, x, n0, mask, R);
  }
}

// A whole tile of R pixels: tile3 where the layer shares broadcasts along rows, tile otherwise.
template <int R, int NB, int CS, int S, bool Share, bool Fetch>
void whole_tile(const ConvArgs& a, const Epilogue& e, int y, int x, int nb) {
  if constexpr (Share) tile3<R, NB, CS, Fetch>(a, e, y, x, nb);
  else tile<R, NB, CS, S, Fetch>(a, e, y, x, R, nb);
}

// Channel blocks [nb, nb + NB) for output pixels [m0, m1), row by row: whole tiles on the
// fast path, the rest of a row on the general one.
template <int R, int NB, int CS, int S, bool Share = false>
void sweep(const ConvArgs& a, const Epilogue& e, int m0, int m1, int nb) {
  for (int m = m0; m < m1;) {
    const int y = m / a.ow, x = m % a.ow, end = std::min(m1, (y + 1) * a.ow);
    int xx = x;
    for (; xx + R <= x + (end - m); xx += R) {
      if (m == m0 && xx == x) whole_tile<R, NB, CS, S, Share, true>(a, e, y, xx, nb);
      else whole_tile<R, NB, CS, S, Share, false>(a, e, y, xx, nb);
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
  if constexpr (CS > 0 && S == 1) {  // one or two blocks of a 3x3 layer left: tile3
    if (a.w->kernel == 3 && nblocks - nb == 2) return sweep<8, 2, CS, 1, true>(a, e, m0, m1, nb);
    if (a.w->kernel == 3 && nblocks - nb == 1 && a.ow % 16 == 0) return sweep<16, 1, CS, 1, true>(a, e, m0, m1, nb);
    if (a.w->kernel == 3 && nblocks - nb == 1) return sweep<8, 1, CS, 1, true>(a, e, m0, m1, nb);
  }
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

}  // namespace

// Channel groups outside, pixels inside: a group's weights stay in cache while the pixels pass.
// rows_first: output rows outside, so that each pixel's outputs are written in one pass (meant
// for layers whose outputs outgrow the L2 cache while their weights are small; the engine's
// tuning takes it where it measures faster: on Zen 5, one of ResNet-18's 1x1 projections).
void conv_rows_avx512_vnni(const ConvArgs& a, int m0, int m1) {
  if (a.amx && conv_rows_amx(a, m0, m1)) return;
  if (conv_rows_winograd_avx512(a, m0, m1)) return;
  if (a.rows_first && a.nb1 - a.nb0 > 1) {  // one output row at a time, all its blocks
    ConvArgs row = a;
    row.rows_first = false;
    for (int m = m0; m < m1;) {
      const int end = std::min(m1, (m / a.ow + 1) * a.ow);
      conv_rows_avx512_vnni(row, m, end);
      m = end;
    }
    return;
  }
  const Epilogue e(*a.out, a.w->out_channels);
  if (a.w->stride == 1) return sweep_cs<1>(a, e, m0, m1);
  if (a.w->stride == 2) return sweep_cs<2>(a, e, m0, m1);
  sweep_all<0, 1>(a, e, m0, m1);
}

namespace {
// Depthwise: R pixels of output row y from x (the first `valid` real) x the 16 channels from c0.
// Codes widen to int32 lanes, each an int16 pair (code, 0); the weights are int32, so the pair
// dot product of vpdpwssd adds code * w exactly.
template <int R>
void depthwise_tile(const ConvArgs& a, const Epilogue& e, int y, int x, int valid, int c0) {
  const PackedConv& w = *a.w;
  const size_t ld = size_t(w.nblocks) * 16;
  const __mmask16 mask = lane_mask(w.out_channels - c0);
  const uint8_t* ap[R];
  __m512i acc[R];
  for (int r = 0; r < R; ++r) {
    ap[r] = a.base(y, x + std::min(r, valid - 1)) + c0;
    acc[r] = e.start(c0, mask);
  }
  const int32_t* wp = w.dw.data() + c0;
  for (int t = 0; t < w.kernel * w.kernel; ++t, wp += ld) {
    const __m512i wv = _mm512_load_si512(wp);
    const ptrdiff_t off = a.tap_offsets[t];
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_dpwssd_epi32(acc[r], _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, ap[r] + off)), wv);
  }
  e.row<R, Epilogue::Offsets::none>(acc, y * a.ow + x, y, x, c0, mask, valid);
}

// 3x3 with stride S, R pixels (all real): each input column of a kernel row is loaded and widened
// once for the up to three outputs whose windows hold it (R + 2 loads per kernel row at
// stride 1 instead of 3 R), the nine weight vectors in registers. Full: all 16 channels are
// real, so each load widens straight from memory (vpmovzxbd with a memory operand: one
// instruction where the masked load and the widening take two).
template <int R, int S, bool Full>
void depthwise3_tile(const ConvArgs& a, const Epilogue& e, int y, int x, int c0) {
  const PackedConv& w = *a.w;
  const size_t ld = size_t(w.nblocks) * 16, cs = size_t(a.in->cs);
  const __mmask16 mask = lane_mask(w.out_channels - c0);
  __m512i wv[9], acc[R];
  for (int t = 0; t < 9; ++t) wv[t] = _mm512_load_si512(w.dw.data() + size_t(t) * ld + c0);
  for (int r = 0; r < R; ++r) acc[r] = e.start(c0, mask);
  const uint8_t* base = a.base(y, x) + c0;
  for (int ky = 0; ky < 3; ++ky) {
    const uint8_t* row = base + a.tap_offsets[3 * ky];
#pragma GCC unroll 32
    for (int j = 0; j < S * (R - 1) + 3; ++j) {
      const uint8_t* at = row + size_t(j) * cs;
      const __m512i v = _mm512_cvtepu8_epi32(Full ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(at))
                                                  : _mm_maskz_loadu_epi8(mask, at));
#pragma GCC unroll 3
      for (int kx = 0; kx < 3; ++kx) {
        const int d = j - kx;  // S * r for output r
        if (d >= 0 && d % S == 0 && d / S < R) acc[d / S] = _mm512_dpwssd_epi32(acc[d / S], v, wv[3 * ky + kx]);
      }
    }
  }
  e.row<R, Epilogue::Offsets::none>(acc, y * a.ow + x, y, x, c0, mask, R);
}

// depthwise3_tile with vpdpbusd on input columns (AVX512_VBMI, all 16 channels real): the codes
// of one input column's three kernel rows, as the bytes (row 0, row 1, row 2, 0) of each
// channel's lane (three 16-byte loads into one vector, one vpermb), times each channel's taps
// (ky = 0, 1, 2) of kernel column kx (PackedConv::dw3): one vpdpbusd per output and kernel
// column where vpdpwssd takes one per tap, and each column built once for the up to three
// outputs that read it. Rows 1 and 2 come in as masked broadcasts (a load and a blend, which
// either 512-bit port runs), where vinserti32x4 took the permute port that the vpermb and the
// epilogue's permutes need (0.89-0.98x the layer's time in most runs, session 30).
template <int R, int S>
void depthwise3_columns_tile(const ConvArgs& a, const Epilogue& e, int y, int x, int c0) {
  const size_t cs = size_t(a.in->cs);
  const int8_t* wq = a.w->dw3.data() + size_t(c0 / 16) * 3 * 64;
  const __m512i wv[3] = {_mm512_load_si512(wq), _mm512_load_si512(wq + 64), _mm512_load_si512(wq + 128)};
  // Byte 4 c + k of a column: byte c of row k (16 k + c), and for k = 3 byte 48, a zero.
  alignas(64) static const uint8_t order_bytes[64] = {0,  16, 32, 48, 1,  17, 33, 48, 2,  18, 34, 48, 3,  19, 35, 48,
                                                      4,  20, 36, 48, 5,  21, 37, 48, 6,  22, 38, 48, 7,  23, 39, 48,
                                                      8,  24, 40, 48, 9,  25, 41, 48, 10, 26, 42, 48, 11, 27, 43, 48,
                                                      12, 28, 44, 48, 13, 29, 45, 48, 14, 30, 46, 48, 15, 31, 47, 48};
  const __m512i order = _mm512_load_si512(order_bytes);
  __m512i acc[R];
  for (int r = 0; r < R; ++r) acc[r] = e.start(c0, 0xffff);
  const uint8_t* base = a.base(y, x) + c0;
  const ptrdiff_t row1 = a.tap_offsets[3], row2 = a.tap_offsets[6];
#pragma GCC unroll 32
  for (int j = 0; j < S * (R - 1) + 3; ++j) {
    const uint8_t* at = base + size_t(j) * cs;
    __m512i rows = _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at)));
    rows = _mm512_mask_broadcast_i32x4(rows, 0x00f0, _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + row1)));
    rows = _mm512_mask_broadcast_i32x4(rows, 0x0f00, _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + row2)));
    const __m512i column = permute_bytes(order, rows);
#pragma GCC unroll 3
    for (int kx = 0; kx < 3; ++kx) {
      const int d = j - kx;  // S * r for output r
      if (d >= 0 && d % S == 0 && d / S < R) acc[d / S] = dpbusd(acc[d / S], column, wv[kx]);
    }
  }
  e.row<R, Epilogue::Offsets::none>(acc, y * a.ow + x, y, x, c0, 0xffff, R);
}

// depthwise3_tile<valid, S> for valid = 1 .. 8 (columns: depthwise3_columns_tile where all 16
// channels are real).
template <int S, int R = 8>
void depthwise3(const ConvArgs& a, const Epilogue& e, int y, int x, int valid, int c0, bool columns) {
  if constexpr (R > 1)
    if (valid < R) return depthwise3<S, R - 1>(a, e, y, x, valid, c0, columns);
  if (a.w->out_channels - c0 < 16) return depthwise3_tile<R, S, false>(a, e, y, x, c0);
  if (columns) depthwise3_columns_tile<R, S>(a, e, y, x, c0);
  else depthwise3_tile<R, S, true>(a, e, y, x, c0);
}
}  // namespace

// Eight pixels of a row at a time, each block of 16 channels in turn (its weights stay in L1);
// 3x3 kernels with stride 1 or 2 share the loads within a tile.
void depthwise_rows_avx512(const ConvArgs& a, int m0, int m1) {
  const Epilogue e(*a.out, a.w->out_channels);
  const int k = a.w->kernel, stride = a.w->stride;
  const bool columns = !a.w->dw3.empty() && byte_permutes();
  for (int m = m0; m < m1;) {
    const int y = m / a.ow, x = m % a.ow, valid = std::min({8, a.ow - x, m1 - m});
    for (int nb = a.nb0; nb < a.nb1; ++nb) {
      if (k == 3 && stride == 1) depthwise3<1>(a, e, y, x, valid, 16 * nb, columns);
      else if (k == 3 && stride == 2) depthwise3<2>(a, e, y, x, valid, 16 * nb, columns);
      else depthwise_tile<8>(a, e, y, x, valid, 16 * nb);
    }
    m += valid;
  }
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
// sum = a_0 A_0 + a_1 A_1 + .. in the reference's order, and the epilogue. Pair (3x3 kernels at
// stride 1, R pixels of one row): the four pixels broadcast for pixel r also give pixel r + 1,
// through the shifted weights (half the broadcasts; ResNet-20's first layer 0.0104 -> 0.0089 ms).
template <int C, int R, int NB, bool Pair>
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
      for (int j = 0; j < NB; ++j) acc[c][r][j] = zero_accumulator();
  // One weight stream for the group of blocks from nb (the vectors of a step at constant offsets).
  const size_t first = size_t(nb) * C * steps * 64;
  const int8_t* bp = w.data.data() + first;
  const int8_t* sp = Pair ? w.shifted.data() + first : nullptr;  // the same vectors, shifted
  const ptrdiff_t* off = a.tap_offsets.data();
#pragma GCC unroll 1
  for (int t = 0; t < steps; ++t, bp += C * NB * 64, sp += Pair ? C * NB * 64 : 0, off += C)
    for (int c = 0; c < C; ++c) {
      __m512i b[NB], shifted[NB];
      for (int j = 0; j < NB; ++j) b[j] = _mm512_load_si512(bp + (c * NB + j) * 64);
      if (Pair)
        for (int j = 0; j < NB; ++j) shifted[j] = _mm512_load_si512(sp + (c * NB + j) * 64);
      const ptrdiff_t o = off[c];
      for (int r = 0; r < R; r += Pair ? 2 : 1) {
        const __m512i av = _mm512_set1_epi32(load4(ap[r] + o));
        for (int j = 0; j < NB; ++j) acc[c][r][j] = dpbusd(acc[c][r][j], av, b[j]);
        if (Pair)
          for (int j = 0; j < NB; ++j) acc[c][r + 1][j] = dpbusd(acc[c][r + 1][j], av, shifted[j]);
      }
    }
  // The reference's sum starts from 0; 0 + a_0 A_0 is a_0 A_0 (a_0 > 0 and A_0 an integer: never
  // -0), so the first product starts it here.
  __m512 pixel_scale[C];
  for (int c = 0; c < C; ++c) pixel_scale[c] = _mm512_set1_ps(w.pixel_scale[size_t(c)]);
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const __mmask16 mask = lane_mask(w.out_channels - n0);
    const __m512 scale = _mm512_maskz_loadu_ps(mask, a.scale + n0), bias = _mm512_maskz_loadu_ps(mask, a.bias + n0);
    for (int r = 0; r < R; ++r) {
      if (r >= valid) break;
      __m512 sum = _mm512_mul_ps(pixel_scale[0], _mm512_cvtepi32_ps(acc[0][r][j]));
      for (int c = 1; c < C; ++c)
        sum = _mm512_add_ps(sum, _mm512_mul_ps(pixel_scale[c], _mm512_cvtepi32_ps(acc[c][r][j])));
      __m512 v = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_sub_ps(sum, _mm512_loadu_ps(d[r] + n0))), bias);
      if (a.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
      _mm512_mask_storeu_ps(a.out + size_t(m + r - a.m_base) * w.out_channels + n0, mask, v);
    }
  }
}

template <int C, int R, int NB>
void stem_sweep(const StemArgs& a, int m0, int m1, int nb) {
  // Pairs: up to two blocks (C x R x NB accumulators and 2 NB weight vectors fit the registers).
  const bool pairs = NB <= 2 && R % 2 == 0 && !a.w->shifted.empty();
  for (int m = m0; m < m1; m += R) {
    const int valid = std::min(R, m1 - m);
    if (pairs && valid == R && m % a.ow + R <= a.ow) stem_tile<C, R, NB, NB <= 2 && R % 2 == 0>(a, m, R, nb);
    else stem_tile<C, R, NB, false>(a, m, valid, nb);
  }
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

// Per 16 channels of each: two permutes of the pair, two stores (the last ones masked).
void interleave_pairs_avx512(const float* a, int sa, const float* b, int sb, int pixels, int per_group, float* out) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int p = 0; p < pixels; ++p) {
    const float* x = a + size_t(p) * size_t(sa);
    const float* y = b + size_t(p) * size_t(sb);
    float* o = out + size_t(p) * 2 * size_t(per_group);
    for (int i = 0; i < per_group; i += 16) {
      const int count = std::min(16, per_group - i);
      const __mmask16 m = lane_mask(count);
      const __m512 u = _mm512_maskz_loadu_ps(m, x + i), v = _mm512_maskz_loadu_ps(m, y + i);
      _mm512_mask_storeu_ps(o + 2 * i, lane_mask(2 * count), _mm512_permutex2var_ps(u, lo, v));
      if (count > 8) _mm512_mask_storeu_ps(o + 2 * i + 16, lane_mask(2 * count - 16), _mm512_permutex2var_ps(u, hi, v));
    }
  }
}

void max_pool_avx512(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0) {
  max_pool_rows<Zmm>(in, h, w, c, out, y0, y1, in_row0);
}

// Vectors [j0, per) of one pixel's values at s, one at a time; the last one masked with `last`.
inline void requantize_singly(const Search& search, const float* s, uint8_t* d, int j0, int per, __mmask16 last) {
  for (int j = j0; j < per; ++j) {
    const __mmask16 m = j == per - 1 ? last : __mmask16(0xFFFF);
    _mm_mask_storeu_epi8(d + 16 * j, m, search.codes(_mm512_maskz_loadu_ps(m, s + 16 * j)));
  }
}

// The codes of pixels x .. x + P - 1 of V vectors each (a pixel's last vector masked with
// `last`), their P * V searches interleaved.
template <int P, int V, typename Src, typename Dst>
inline void requantize_pixels(const Search& search, Src src, Dst dst, int x, __mmask16 last) {
  __m512 v[P * V];
  __m128i codes[P * V];
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < V; ++j)
      v[i * V + j] =
          j < V - 1 ? _mm512_loadu_ps(src(x + i) + 16 * j) : _mm512_maskz_loadu_ps(last, src(x + i) + 16 * j);
  search.codes(v, codes);
  for (int i = 0; i < P; ++i) {
    uint8_t* d = dst(x + i);
    for (int j = 0; j < V - 1; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16 * j), codes[i * V + j]);
    if (last == 0xFFFF) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16 * (V - 1)), codes[i * V + V - 1]);
    else _mm_mask_storeu_epi8(d + 16 * (V - 1), last, codes[i * V + V - 1]);
  }
}

// Four or more vectors at a time (independent searches interleaved): pixels of one vector four
// at a time, of two or three vectors two at a time (ShuffleNetV2's 24- and 48-channel values
// into bordered images or from channel slices: one at a time left each search's dependency
// chain exposed), larger pixels four of their whole vectors at a time (requantize() passes a
// contiguous image as one such pixel); a pixel's partial last vector masked.
void requantize_avx512(const float* values, int h, int w, int n, int stride, const Requantizer& q,
                       const CodeImage& out) {
  const Search search(&q);
  const int per = (n + 15) / 16;
  const __mmask16 last = lane_mask(n - 16 * (per - 1));
  const int whole = last == 0xFFFF ? per : per - 1;  // a pixel's vectors that need no mask
  for (int y = 0; y < h; ++y) {
    const float* row = values + size_t(y) * w * size_t(stride);
    uint8_t* codes = out.pixel(y, 0);
    auto src = [&](int x) { return row + size_t(x) * size_t(stride); };
    auto dst = [&](int x) { return codes + size_t(x) * size_t(out.cs); };
    int x = 0;
    switch (per) {
      case 1:
        for (; x + 4 <= w; x += 4) requantize_pixels<4, 1>(search, src, dst, x, last);
        break;
      case 2:
        for (; x + 2 <= w; x += 2) requantize_pixels<2, 2>(search, src, dst, x, last);
        break;
      case 3:
        for (; x + 2 <= w; x += 2) requantize_pixels<2, 3>(search, src, dst, x, last);
        break;
      default:
        for (; x < w; ++x) {
          const float* s = src(x);
          uint8_t* d = dst(x);
          int j = 0;
          for (; j + 4 <= whole; j += 4) {
            __m512 v[4];
            __m128i c[4];
            for (int r = 0; r < 4; ++r) v[r] = _mm512_loadu_ps(s + 16 * (j + r));
            search.codes(v, c);
            for (int r = 0; r < 4; ++r) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16 * (j + r)), c[r]);
          }
          requantize_singly(search, s, d, j, per, last);
        }
    }
    for (; x < w; ++x) requantize_singly(search, src(x), dst(x), 0, per, last);  // a row's last pixels
  }
}

}  // namespace apot::kernels::detail
