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

}  // namespace apot::kernels::detail
