// Internals shared by the AVX-512 VNNI convolution kernels (gemm_avx512_vnni.cpp, the direct
// kernel; gemm_winograd_avx512.cpp, Winograd F(2,3)): the vpdpbusd step, the weight loads, and
// the vectorised epilogue with its requantisation. Internal linkage, included only by files
// compiled with the AVX-512 VNNI flags.
#pragma once

#include <immintrin.h>

#include "cells.h"
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

// The bytes of `table` that the low six bits of each byte of `index` select (AVX512_VBMI's vpermb;
// run only where byte_permutes() holds: these files are built without -mavx512vbmi, which
// Cascade Lake lacks, so that GCC does not emit it elsewhere).
inline __m512i permute_bytes(__m512i index, __m512i table) {
  __m512i out;
  __asm__("vpermb %2, %1, %0" : "=v"(out) : "v"(index), "v"(table));
  return out;
}

// The requantiser's tables padded to 32 entries: thresholds with +inf, codes with the last code
// (so that v = +inf, which passes the padding, still gets it). The search keeps the index minus
// one (-1 .. 30): each step is then add, permute, compare, blend, and the first step compares
// with a constant; the code table is stored shifted by one, its last entry holding codes[0],
// because the permutes read only the low index bits (-1 selects the last entry).
//
// Where it applies, the cells of cells.h replace the search (exact as well, and fewer
// instructions; signed level sets too, since session 19): 64 cells when none holds two
// thresholds (one check; base[] as 16-bit words, one word permute: APoT 4-bit, uniform up to 5
// bits; 10 instructions per vector instead of 13 with 32 cells and two checks), else 32 cells
// when none holds three (APoT up to 4 bits, PoT up to 3); APoT 5-bit and PoT 4-bit keep the
// search (16 per vector). The thresholds of the cells' checks are padded with NaN, which no value
// passes. With AVX512_VBMI the 64 cells' base[] is one byte permute (vpermb; base[0] = 0 for the
// three high bytes of each lane), where vpermt2w takes three micro-ops on Intel (the straight
// epilogue alone, 4-bit cells, Sapphire Rapids: 6.75 -> 5.80 TSC cycles per vector).
struct Search {
  __m512 t0, t1, first;  // first: the threshold the first step probes, in every lane
  __m512i c0, c1;        // c[j] = codes[j + 1], c[last] = codes[0]
  bool wide;             // more than 16 levels: five steps over 32 entries, else four over 16
  // The cells: k, the top cell, base[g], thresholds padded with NaN (no value passes them),
  // codes padded with the last code.
  int checks = 0;           // 0: no cells, the search
  bool wide_cells = false;  // 64 cells, base[] as 16-bit words; else 32 cells of 32 bits
  bool byte_cells = false;  // 64 cells, base[] as bytes through vpermb (byte_permutes)
  __m512 k, c, top, ct0, ct1;
  __m512i base0, base1, base8, cc0, cc1;
  __m512i codes16;  // the codes of indices 0 .. 15 as bytes, in each 16-byte lane (store_codes_one_check)

  // q == nullptr: a search that is never used (an epilogue without codes).
  explicit Search(const Requantizer* q) {
    if (q && q->tables) load(*q->tables);
    else
      load(q ? SearchTables(q->thresholds.data(), q->codes.data(), int(q->codes.size()))
             : SearchTables(nullptr, nullptr, 1));
  }

  void load(const SearchTables& s) {
    wide = s.wide;
    t0 = _mm512_load_ps(s.t);
    t1 = _mm512_load_ps(s.t + 16);
    first = _mm512_set1_ps(s.first);
    c0 = _mm512_load_si512(s.c);
    c1 = _mm512_load_si512(s.c + 16);
    checks = s.checks;
    wide_cells = s.wide_cells;
    byte_cells = wide_cells && byte_permutes();
    base8 = _mm512_load_si512(s.base8);
    k = _mm512_set1_ps(s.k);
    c = _mm512_set1_ps(s.c0);
    top = _mm512_set1_ps(s.top);
    base0 = wide_cells ? _mm512_load_si512(s.base16) : _mm512_load_si512(s.base32);
    base1 = wide_cells ? _mm512_load_si512(s.base16 + 32) : _mm512_load_si512(s.base32 + 16);
    ct0 = _mm512_load_ps(s.ct);
    ct1 = _mm512_load_ps(s.ct + 16);
    cc0 = _mm512_load_si512(s.cc);
    cc1 = _mm512_load_si512(s.cc + 16);
    codes16 = _mm512_broadcast_i32x4(_mm512_cvtepi32_epi8(cc0));
  }

  // Codes of R x 16 values (index = number of thresholds <= v), the search steps of the R
  // vectors interleaved (independent dependency chains for the out-of-order core).
  template <int R>
  void codes(const __m512 (&v)[R], __m128i (&out)[R]) const {
    if (one_check()) return codes_one_check(v, out);
    __m512i index[R];
    if (checks > 0) {
      for (int r = 0; r < R; ++r) {
        // max(u, 0) returns its second operand, 0, for NaN
        const __m512 u = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(v[r], k, c), _mm512_setzero_ps()), top);
        // 64 cells: the word permute reads the cell (< 64) from each lane's low word and base[0]
        // = 0 for its high word, so each lane holds base[g] as a 32-bit integer.
        index[r] = cell_base(_mm512_cvttps_epi32(u));
      }
      for (int c = 0; c < checks; ++c)
        for (int r = 0; r < R; ++r) {
          const __m512 t = wide ? _mm512_permutex2var_ps(ct0, index[r], ct1) : _mm512_permutexvar_ps(index[r], ct0);
          index[r] =
              _mm512_mask_add_epi32(index[r], _mm512_cmp_ps_mask(v[r], t, _CMP_GE_OQ), index[r], _mm512_set1_epi32(1));
        }
      for (int r = 0; r < R; ++r)
        out[r] = _mm512_cvtepi32_epi8(wide ? _mm512_permutex2var_epi32(cc0, index[r], cc1)
                                           : _mm512_permutexvar_epi32(index[r], cc0));
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

  // 64 cells, one check and at most 16 levels (4-bit APoT): codes_one_check() applies.
  bool one_check() const { return checks == 1 && wide_cells && !wide; }

  // The indices (number of thresholds <= v) of R vectors with 64 cells, one check and at most
  // 16 levels (4-bit APoT), in one straight line: each step for all R vectors in turn.
  template <int R>
  __attribute__((always_inline)) void indices_one_check(const __m512 (&v)[R], __m512i (&index)[R]) const {
    for (int r = 0; r < R; ++r) {
      const __m512 u = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(v[r], k, c), _mm512_setzero_ps()), top);
      index[r] = cell_base(_mm512_cvttps_epi32(u));
    }
    for (int r = 0; r < R; ++r) {
      const __m512 t = _mm512_permutexvar_ps(index[r], ct0);
      index[r] =
          _mm512_mask_add_epi32(index[r], _mm512_cmp_ps_mask(v[r], t, _CMP_GE_OQ), index[r], _mm512_set1_epi32(1));
    }
  }

  // codes() with 64 cells, one check and at most 16 levels (4-bit APoT): indices_one_check(),
  // then each vector's codes.
  template <int R>
  __attribute__((always_inline)) void codes_one_check(const __m512 (&v)[R], __m128i (&out)[R]) const {
    __m512i index[R];
    indices_one_check(v, index);
    for (int r = 0; r < R; ++r) out[r] = _mm512_cvtepi32_epi8(_mm512_permutexvar_epi32(index[r], cc0));
  }

  // codes_one_check() for R vectors of 16 real channels each, stored: pixel r's 16 codes at
  // dst + r * step for r < valid. Each four vectors' indices (0 .. 15) narrow to bytes together
  // (two vpackusdw, one vpackuswb: 16-byte lane q then holds channels 4 q .. 4 q + 3 of the four
  // vectors in turn), one vpshufb looks their codes up in its lane's copy of the 16 codes and one
  // vpermd puts them in pixel order: 5 micro-ops for four vectors where vpermd and vpmovdb take 3
  // for each, all of them on the permute port (AVX-512 BW; no byte permute needed). Vectors past
  // the last four take the per-vector way.
  template <int R>
  __attribute__((always_inline)) void store_codes_one_check(const __m512 (&v)[R], uint8_t* dst, size_t step,
                                                            int valid) const {
    __m512i index[R];
    indices_one_check(v, index);
    // Dword 4 r + q of the result (pixel r's channels 4 q .. 4 q + 3): dword 4 q + r of the packed
    // lookup, a 4 x 4 transpose of dwords.
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    constexpr int G = R / 4;
    for (int g = 0; g < G; ++g) {
      const __m512i words01 = _mm512_packus_epi32(index[4 * g], index[4 * g + 1]);
      const __m512i words23 = _mm512_packus_epi32(index[4 * g + 2], index[4 * g + 3]);
      const __m512i codes =
          _mm512_permutexvar_epi32(order, _mm512_shuffle_epi8(codes16, _mm512_packus_epi16(words01, words23)));
      uint8_t* d = dst + size_t(4 * g) * step;
      if (4 * g < valid) _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm512_castsi512_si128(codes));
      if (4 * g + 1 < valid)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + step), _mm512_extracti32x4_epi32(codes, 1));
      if (4 * g + 2 < valid)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * step), _mm512_extracti32x4_epi32(codes, 2));
      if (4 * g + 3 < valid)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 3 * step), _mm512_extracti32x4_epi32(codes, 3));
    }
    for (int r = 4 * G; r < R; ++r)
      if (r < valid)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + size_t(r) * step),
                         _mm512_cvtepi32_epi8(_mm512_permutexvar_epi32(index[r], cc0)));
  }

  // Codes of 16 values.
  __m128i codes(__m512 v) const {
    const __m512 one[1] = {v};
    __m128i out[1];
    codes(one, out);
    return out[0];
  }

 private:
  // base[g] of the cells g (0 .. top) of each lane.
  __attribute__((always_inline)) __m512i cell_base(__m512i g) const {
    if (byte_cells) return permute_bytes(g, base8);
    return wide_cells ? _mm512_permutex2var_epi16(base0, g, base1) : _mm512_permutex2var_epi32(base0, g, base1);
  }

  void step(__m512 v, __m512i& index, int s) const {
    const __m512i candidate = _mm512_add_epi32(index, _mm512_set1_epi32(s));
    const __m512 t = wide ? _mm512_permutex2var_ps(t0, candidate, t1) : _mm512_permutexvar_ps(candidate, t0);
    index = _mm512_mask_mov_epi32(index, _mm512_cmp_ps_mask(v, t, _CMP_GE_OQ), candidate);
  }
};

// A zero accumulator. The kernels' arrays of accumulators set to _mm512_setzero_si512() became
// a `rep stos` of the whole array on the stack at every tile's start (GCC 12; ResNet-20's
// 16-channel tile3: 8 % of its samples in `perf`; timed runs could not tell the difference on a
// noisy VM), then loads: produced by an instruction GCC cannot see into, each starts in a
// register.
inline __m512i zero_accumulator() {
  __m512i z;
  __asm__("vpxord %0, %0, %0" : "=v"(z));
  return z;
}

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
  // A copy, not a reference: the kernels' code stores could point anywhere, so the compiler
  // loaded the output's pointers through a reference again after each store.
  const ConvOutput o;
  const Search search;
  const size_t N;
  // Whether the ReLU (and its clamp) runs: where only codes come out of the epilogue, it changes
  // no code when the first threshold is above 0 (a negative value and 0 both pass none) and the
  // clamp is at or above the last threshold (both sides of it pass all).
  const bool relu;

  // The two shapes most layers take, each in one straight line (straight_row()), where the
  // requantiser has 64 cells with one check: only codes out and no ReLU to apply (a ResNet's
  // first convolution of a block, MobileNetV2's expansions and depthwise layers), or a residual,
  // the ReLU, values and codes out (a ResNet's second convolution).
  enum class Straight { no, codes, residual_codes };
  const Straight straight;

  Epilogue(const ConvOutput& out, int out_channels)
      : o(out),
        search(out.requantizer),
        N(size_t(out_channels)),
        relu(out.relu && !codes_without_relu(out)),
        straight(straight_shape(out, search, relu)) {}

  static Straight straight_shape(const ConvOutput& o, const Search& s, bool relu) {
    if (!o.requantizer || o.accumulators || !s.one_check()) return Straight::no;
    if (!o.values && !o.residual && !relu) return Straight::codes;
    if (o.values && o.residual && relu) return Straight::residual_codes;
    return Straight::no;
  }

  static bool codes_without_relu(const ConvOutput& o) {
    if (o.values || o.accumulators || !o.requantizer || o.requantizer->thresholds.empty()) return false;
    const std::vector<float>& t = o.requantizer->thresholds;
    return t.front() > 0.0f && o.relu_max >= t.back();
  }

  // How the sums reach row() and straight_row(): any (acc_offset, where the layer has one, still to
  // take off: one path, subtracting 0 where it is null), none (already taken off: the vector
  // kernels start their sums at start(), and Winograd takes no layer with an offset), some (the
  // layer has one, still to take off). The AMX kernel instantiates none or some per layer.
  enum class Offsets { any, none, some };

  // The vector kernels' starting sums for the block of channels n0 (mask): -acc_offset, or 0.
  // Starting there, the sums come out with the offset taken off (the same integers: the adds
  // wrap as the subtraction does) and the epilogue subtracts nothing (Offsets::none), where a
  // subtraction per vector took one of its 14-16 micro-ops, whether the layer had an offset or not.
  __attribute__((always_inline)) __m512i start(int n0, __mmask16 mask) const {
    if (!o.acc_offset) return zero_accumulator();
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_maskz_loadu_epi32(mask, o.acc_offset + n0));
  }

  // Output vectors of pixels (y, x + r), r < valid, of one row: v = scale * (acc - acc_offset)
  // + bias (+ residual) (ReLU: max(0, v) = std::max(v, 0.0f), NaN included, then the clamp) per vector, the stores,
  // then the requantisation of all of them together. Always inlined into the tile (GCC kept the 7- and 8-pixel versions
  // out of line, passing the accumulators through memory: ResNet-20 1.5 %).
  template <int R, Offsets Off = Offsets::any>
  __attribute__((always_inline)) void row(const __m512i (&acc)[R], int p, int y, int x, int n0, __mmask16 mask,
                                          int valid) const {
    if (straight == Straight::codes) return straight_row<false, R, Off>(acc, p, y, x, n0, mask, valid);
    if (straight == Straight::residual_codes) return straight_row<true, R, Off>(acc, p, y, x, n0, mask, valid);
    __m512 v[R];
    const __m512 scale = _mm512_maskz_loadu_ps(mask, o.scale + n0), bias = _mm512_maskz_loadu_ps(mask, o.bias + n0);
    const bool subtract = Off != Offsets::none && o.acc_offset;
    const __m512i offset = subtract ? _mm512_maskz_loadu_epi32(mask, o.acc_offset + n0) : _mm512_setzero_si512();
    for (int r = 0; r < R; ++r) {
      const size_t at = size_t(p + r) * N + n0;
      const __m512i sum = subtract ? _mm512_sub_epi32(acc[r], offset) : acc[r];
      v[r] = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_cvtepi32_ps(sum)), bias);
      if (r >= valid) continue;
      if (o.residual) v[r] = _mm512_add_ps(v[r], _mm512_maskz_loadu_ps(mask, o.residual + at));
      if (relu) {  // = std::min(std::max(v, 0.0f), relu_max), NaN included
        v[r] = _mm512_max_ps(_mm512_setzero_ps(), v[r]);
        v[r] = _mm512_min_ps(_mm512_set1_ps(o.relu_max), v[r]);
      }
      if (o.values) _mm512_mask_storeu_ps(o.values + at, mask, v[r]);
      if (o.accumulators) _mm512_mask_storeu_epi32(o.accumulators + at, mask, sum);
    }
    if (!o.requantizer) return;
    requantize_row(v, y, x, n0, mask, valid);
  }

  // The codes of R vectors of pixels (y, x + r), r < valid, stored: four vectors at a time
  // (store_codes_one_check) where the requantiser has one check and all 16 channels are real,
  // else vector by vector.
  template <int R>
  __attribute__((always_inline)) void requantize_row(const __m512 (&v)[R], int y, int x, int n0, __mmask16 mask,
                                                     int valid) const {
    if (mask == 0xffff && search.one_check())
      return search.store_codes_one_check(v, o.codes.pixel(y, x) + n0, size_t(o.codes.cs), valid);
    __m128i codes[R];
    search.codes(v, codes);
    store_codes(codes, y, x, n0, mask, valid);
  }

  // The codes of pixels (y, x + r), r < valid, channels n0 + lane (mask).
  template <int R>
  __attribute__((always_inline)) void store_codes(const __m128i (&codes)[R], int y, int x, int n0, __mmask16 mask,
                                                  int valid) const {
    uint8_t* dst = o.codes.pixel(y, x) + n0;
    const size_t step = size_t(o.codes.cs);
    if (mask == 0xffff) {
      for (int r = 0; r < R; ++r)
        if (r < valid) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + r * step), codes[r]);
      return;
    }
    for (int r = 0; r < R; ++r)
      if (r < valid) _mm_mask_storeu_epi8(dst + r * step, mask, codes[r]);
  }

  // row() for the straight shapes, the same operations in the same order: v = scale * (acc -
  // acc_offset) + bias (Residual: + residual, the ReLU and its clamp, the values stored), its
  // cell, the one check, the code.
  template <bool Residual, int R, Offsets Off = Offsets::any>
  __attribute__((always_inline)) void straight_row(const __m512i (&acc)[R], int p, int y, int x, int n0, __mmask16 mask,
                                                   int valid) const {
    const __m512 scale = _mm512_maskz_loadu_ps(mask, o.scale + n0), bias = _mm512_maskz_loadu_ps(mask, o.bias + n0);
    const __m512i offset = Off != Offsets::none && (Off == Offsets::some || o.acc_offset)
                               ? _mm512_maskz_loadu_epi32(mask, o.acc_offset + n0)
                               : _mm512_setzero_si512();
    __m512 v[R];
    for (int r = 0; r < R; ++r) {
      const __m512i sum = Off == Offsets::none ? acc[r] : _mm512_sub_epi32(acc[r], offset);
      v[r] = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_cvtepi32_ps(sum)), bias);
      if (Residual && r < valid) {
        const size_t at = size_t(p + r) * N + n0;
        v[r] = _mm512_add_ps(v[r], _mm512_maskz_loadu_ps(mask, o.residual + at));
        v[r] = _mm512_min_ps(_mm512_set1_ps(o.relu_max), _mm512_max_ps(_mm512_setzero_ps(), v[r]));
        _mm512_mask_storeu_ps(o.values + at, mask, v[r]);
      }
    }
    requantize_row(v, y, x, n0, mask, valid);
  }
};

}  // namespace
}  // namespace apot::kernels::detail
