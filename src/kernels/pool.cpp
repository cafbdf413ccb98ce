// Pooling: the 3x3 / 2 max-pool of the ImageNet stem (scalar reference and the path's kernel),
// and max / average pooling of any window (the reference loop; no SIMD path yet).
#include <algorithm>
#include <limits>
#include <stdexcept>

#include "gemm_impl.h"

namespace apot::kernels {

void max_pool_3x3s2(const float* in, int h, int w, int c, float* out, GemmIsa isa, int y0, int y1, int in_row0) {
  if (h < 1 || w < 1 || c < 1) throw std::invalid_argument("max_pool_3x3s2: empty input");
  const int oh = (h + 1) / 2;
  if (y1 < 0) y1 = oh;
  if (y0 < 0 || y1 > oh || y0 > y1 || in_row0 < 0 || in_row0 > std::max(0, 2 * y0 - 1))
    throw std::invalid_argument("max_pool_3x3s2: invalid row range");
  detail::engine_kernels(isa).max_pool(in, h, w, c, out, y0, y1, in_row0);
}

void interleave_pairs(const float* a, int sa, const float* b, int sb, int pixels, int per_group, float* out,
                      GemmIsa isa) {
  if (pixels < 0 || per_group < 0 || sa < per_group || sb < per_group)
    throw std::invalid_argument("interleave_pairs: a pixel stride is below the channel count");
  detail::engine_kernels(isa).interleave_pairs(a, sa, b, sb, pixels, per_group, out);
}

namespace detail {
void interleave_pairs_scalar(const float* a, int sa, const float* b, int sb, int pixels, int per_group, float* out) {
  for (int p = 0; p < pixels; ++p) {
    float* __restrict o = out + size_t(p) * 2 * size_t(per_group);
    const float* __restrict x = a + size_t(p) * size_t(sa);
    const float* __restrict y = b + size_t(p) * size_t(sb);
    for (int i = 0; i < per_group; ++i) {
      o[2 * i] = x[i];
      o[2 * i + 1] = y[i];
    }
  }
}

void max_pool_scalar(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0) {
  const int ow = (w + 1) / 2;
  for (int y = y0; y < y1; ++y)
    for (int x = 0; x < ow; ++x) {
      float* d = out + (size_t(y) * ow + x) * c;
      bool first = true;
      for (int iy = std::max(0, 2 * y - 1); iy <= std::min(h - 1, 2 * y + 1); ++iy)
        for (int ix = std::max(0, 2 * x - 1); ix <= std::min(w - 1, 2 * x + 1); ++ix, first = false) {
          const float* s = in + (size_t(iy - in_row0) * w + ix) * c;
          for (int ch = 0; ch < c; ++ch) d[ch] = first || d[ch] < s[ch] ? s[ch] : d[ch];
        }
    }
}
}  // namespace detail

void pool_reference(PoolKind kind, const float* in, int h, int w, int c, int kernel, int stride, int padding,
                    float* out) {
  if (h < 1 || w < 1 || c < 1 || kernel < 1 || stride < 1 || padding < 0 || h + 2 * padding < kernel ||
      w + 2 * padding < kernel)
    throw std::invalid_argument("pool_reference: invalid shape");
  const int oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1;
  const bool max = kind == PoolKind::max;
  for (int y = 0; y < oh; ++y)
    for (int x = 0; x < ow; ++x)
      for (int ch = 0; ch < c; ++ch) {
        float acc = max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (int ky = 0; ky < kernel; ++ky)
          for (int kx = 0; kx < kernel; ++kx) {
            const int iy = y * stride - padding + ky, ix = x * stride - padding + kx;
            if (iy < 0 || ix < 0 || iy >= h || ix >= w) continue;
            const float v = in[(size_t(iy) * w + ix) * c + ch];
            acc = max ? (v > acc || v != v ? v : acc) : acc + v;
          }
        out[(size_t(y) * ow + x) * c + ch] = max ? acc : acc / float(kernel * kernel);
      }
}

}  // namespace apot::kernels
