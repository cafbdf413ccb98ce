// AVX-512 VNNI: Winograd F(2,3) along rows for 3x3 stride-1 layers (docs/KERNELS.md).
#include <vector>

#include "avx512_epilogue.h"

namespace apot::kernels::detail {
namespace {

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
    e.row<2 * S, Epilogue::Offsets::none>(first, y * ow + 2 * p, y, 2 * p, n0, mask, std::min(2 * S, ow - 2 * p));
    e.row<2 * (R - S), Epilogue::Offsets::none>(second, (y + 1) * ow, y + 1, 0, n0, mask, std::min(2 * (R - S), ow));
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
      for (int k = 0; k < NB; ++k) acc[j][r][k] = zero_accumulator();
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
      const __m512i y1v =
          _mm512_add_epi32(_mm512_sub_epi32(_mm512_sub_epi32(acc[1][r][k], acc[2][r][k]), acc[3][r][k]), c1);
      column[2 * r] = _mm512_srai_epi32(y0v, 1);
      column[2 * r + 1] = _mm512_srai_epi32(y1v, 1);
    }
    if (one_row) {
      epilogue.row<2 * R, Epilogue::Offsets::none>(column, y * a.ow + 2 * p, y, 2 * p, n0, mask,
                                                   std::min(2 * R, a.ow - 2 * p));
      continue;
    }
    if (R - (P - p) <= P) {  // two rows: S = P - p pairs in row y, the rest from the start of row y + 1
      wino_segments<R>(epilogue, column, a.ow, P - p, y, p, n0, mask);
      continue;
    }
    for (int r = 0; r < R; ++r) {  // rows of fewer pairs than the tile: pair by pair
      const int yr = y + (p + r) / P, xr = 2 * ((p + r) % P);
      const __m512i pair[2] = {column[2 * r], column[2 * r + 1]};
      epilogue.row<2, Epilogue::Offsets::none>(pair, yr * a.ow + xr, yr, xr, n0, mask, std::min(2, a.ow - xr));
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

}  // namespace

// Layers with an offset of the input codes (acc_offset) never get here (a.winograd is false for
// them; the check keeps it so): the epilogue here takes the sums as they are (Offsets::none).
bool conv_rows_winograd_avx512(const ConvArgs& a, int m0, int m1) {
  if (!a.winograd || a.out->acc_offset || m0 % a.ow != 0 || (m1 % a.ow != 0 && m1 != a.oh * a.ow) || m0 >= m1)
    return false;
  const Epilogue e(*a.out, a.w->out_channels);
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

}  // namespace apot::kernels::detail
