// Cells: a one- or two-comparison replacement for the binary search over a sorted threshold
// table, shared by the engine's requantisation (avx512_epilogue.h) and the QAT projection
// (projection_avx512.cpp). Scalar set-up only; each ISA file does the lookup itself.
//
// With C cells, g(v) = trunc(min(max(fma(v, k, c), 0), C - 1)) (one FMA, one rounding, as
// vfmadd; NaN gives 0) never decreases as v grows. So a threshold whose own cell is below g(v)
// is <= v, one whose cell is above g(v) is > v, and the number of thresholds <= v is base[g]
// (the thresholds in lower cells) plus the comparisons of v with the at most `checks`
// thresholds in cell g, taken in order. Exact for every float, whatever k and c are.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace apot::kernels::detail {

struct Cells {
  int cells = 0;   // 64 or 32; 0: none applies (keep the search)
  int checks = 0;  // the most thresholds one cell holds
  float k = 0, c = 0;
  int16_t base[64] = {};  // base[g]: the thresholds in cells below g

  // The cell of v, as the vector code computes it: min(max(fma(v, k, c), 0), C - 1) truncated,
  // where max(u, 0) is u > 0 ? u : 0 (vmaxps), so NaN gives 0.
  static int cell_of(float v, float k, float c, int cells) {
    const float u = std::fma(v, k, c);
    const float low = u > 0.0f ? u : 0.0f, last = float(cells - 1);
    return static_cast<int>(low < last ? low : last);
  }

  // 64 cells where none holds two of the `count` ascending thresholds (one check), else 32
  // where none holds three (two checks), else none. The thresholds spread from t[0] to
  // t[count - 1] over the cells: k = (C - 0.25) / (t_last - t_0), c = -t_0 k.
  static Cells make(const float* t, int count) {
    Cells result;
    if (count < 2) return result;
    const float lo = t[0], hi = t[count - 1];
    if (!std::isfinite(lo) || !std::isfinite(hi) || !(hi > lo)) return result;
    for (int cells = 64; cells >= 32; cells /= 2) {
      const float k = (float(cells) - 0.25f) / (hi - lo), c = -lo * k;
      if (!std::isfinite(k) || !std::isfinite(c)) return result;
      int in_cell[64] = {}, most = 0;
      for (int i = 0; i < count; ++i) most = std::max(most, ++in_cell[cell_of(t[i], k, c, cells)]);
      if (most > (cells == 64 ? 1 : 2)) continue;
      result.cells = cells;
      result.checks = most;
      result.k = k;
      result.c = c;
      for (int g = 0, below = 0; g < cells; below += in_cell[g], ++g) result.base[g] = int16_t(below);
      return result;
    }
    return result;
  }
};

// The tables of the AVX-512 requantisation (avx512_epilogue.h, Search), laid out to be loaded as
// vectors: made once per Requantizer (make_requantizer) rather than on every kernel call (66 ns
// each on Zen 5: ShuffleNetV2 makes about 75 such calls per image).
//   t: the thresholds padded to 32 entries with +inf; c: the codes shifted by one (c[j] =
//   codes[j + 1], the last entry of the 16 or 32 holding codes[0]); first: the threshold the
//   first search step probes; the cells (Cells::make) where they apply: base[g] as 16-bit words
//   (64 cells) or 32-bit ones (32), and as bytes (64 cells, for vpermb), ct: the thresholds
//   padded with NaN, cc: the codes padded with the last one.
struct SearchTables {
  alignas(64) float t[32];
  alignas(64) int32_t c[32];
  alignas(64) float ct[32];
  alignas(64) int32_t cc[32];
  alignas(64) int16_t base16[64];
  alignas(64) int32_t base32[32];
  alignas(64) int8_t base8[64];
  float first = 0;
  bool wide = false;        // more than 16 levels: five search steps over 32 entries, else four
  int checks = 0;           // 0: no cells, the search
  bool wide_cells = false;  // 64 cells
  float k = 0, c0 = 0, top = 0;
  SearchTables(const float* thresholds, const uint8_t* codes, int levels);
};

inline SearchTables::SearchTables(const float* thresholds, const uint8_t* codes, int levels) {
  const int n = levels;
  wide = n > 16;
  const int size = wide ? 32 : 16;
  for (int i = 0; i < 32; ++i) {
    t[i] = i < n - 1 ? thresholds[i] : __builtin_inff();
    c[i] = codes ? codes[i + 1 < size ? std::min(i + 1, n - 1) : 0] : 0;
  }
  first = t[size / 2 - 1];
  const int T = n - 1;
  const Cells cells = codes ? Cells::make(thresholds, T) : Cells{};
  for (int i = 0; i < 32; ++i) {
    ct[i] = i < T ? thresholds[i] : __builtin_nanf("");
    cc[i] = codes ? codes[std::min(i, n - 1)] : 0;
  }
  for (int g = 0; g < 64; ++g) {
    base16[g] = cells.base[g];
    base8[g] = static_cast<int8_t>(cells.base[g]);
    if (g < 32) base32[g] = cells.base[g];
  }
  if (cells.cells == 0) return;
  checks = cells.checks;
  wide_cells = cells.cells == 64;
  k = cells.k;
  c0 = cells.c;
  top = float(cells.cells - 1);
}

}  // namespace apot::kernels::detail
