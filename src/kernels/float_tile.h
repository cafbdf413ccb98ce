// The float first layer's register tile, shared by the AVX2 and AVX-512 paths: R pixels x NB
// vectors of V::lanes output channels from vector nv, fused multiply-adds in the reference's
// order (conv_f32_reference: the same bits), scale and bias rounded separately; and the max-pool.
// V names the vector type and its operations. Included by one file per instruction set, each
// compiled with its own flags: internal linkage, as gemm_ymm.h.
#pragma once

#include "gemm_impl.h"

namespace apot::kernels::detail {
namespace {

template <typename V, int R, int NB>
void float_tile(const FloatConvArgs& a, int m, int valid, int nv) {
  const PackedFloatConv& w = *a.w;
  const int c = w.in_channels, ld = w.nblocks * 16;
  const float* ap[R];
  for (int r = 0, y = m / a.ow, x = m % a.ow; r < R; ++r) {
    ap[r] = r < valid ? a.base(y, x) : ap[r - 1];
    if (++x == a.ow) x = 0, ++y;
  }
  typename V::type acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = V::zero();
  // Within one kernel row the taps (kx, c) are kernel * c consecutive floats of the input and
  // consecutive weight rows: one loop over them.
  const int row = w.kernel * c;
  for (int ky = 0; ky < w.kernel; ++ky) {
    const ptrdiff_t off = ptrdiff_t(ky) * a.in->padded_w() * c;
    const float* wk = w.data.data() + size_t(ky) * row * ld + size_t(nv) * V::lanes;
    for (int k = 0; k < row; ++k) {
      typename V::type b[NB];
      for (int j = 0; j < NB; ++j) b[j] = V::load(wk + size_t(k) * ld + j * V::lanes);
      for (int r = 0; r < R; ++r) {
        const typename V::type av = V::set1(ap[r][off + k]);
        for (int j = 0; j < NB; ++j) acc[r][j] = V::fmadd(av, b[j], acc[r][j]);
      }
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nv + j) * V::lanes;
    const auto mask = V::mask(w.out_channels - n0);
    const typename V::type scale = V::load(a.scale + n0, mask), bias = V::load(a.bias + n0, mask);
    for (int r = 0; r < valid; ++r) {
      typename V::type v = V::add(V::mul(scale, acc[r][j]), bias);
      if (a.relu) v = V::max(V::zero(), v);  // = std::max(v, 0.0f), NaN and -0 included
      V::store(a.out + size_t(m + r) * w.out_channels + n0, mask, v);
    }
  }
}

template <typename V, int R, int NB>
void float_sweep(const FloatConvArgs& a, int m0, int m1, int nv) {
  for (int m = m0; m < m1; m += R) float_tile<V, R, NB>(a, m, std::min(R, m1 - m), nv);
}

// max_pool_3x3s2 (stride 2, padding 1) on channels-last floats: output rows [y0, y1) from the
// input rows held from in_row0 on, four vectors of channels at a time, the running maxima in
// registers. max(v, m) = v > m ? v : m, the reference's choice for every pair of numbers.
template <typename V>
void max_pool_rows(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0) {
  const int ow = (w + 1) / 2;
  for (int y = y0; y < y1; ++y)
    for (int x = 0; x < ow; ++x) {
      const int iy0 = std::max(0, 2 * y - 1), iy1 = std::min(h - 1, 2 * y + 1);
      const int ix0 = std::max(0, 2 * x - 1), ix1 = std::min(w - 1, 2 * x + 1);
      float* d = out + (size_t(y) * ow + x) * c;
      for (int ch = 0; ch < c; ch += 4 * V::lanes) {
        decltype(V::mask(0)) mask[4];
        typename V::type m[4];
        for (int k = 0; k < 4; ++k) {
          mask[k] = V::mask(std::max(0, c - ch - V::lanes * k));
          m[k] = V::zero();  // every window holds an input pixel: replaced by the first
        }
        bool first = true;
        for (int iy = iy0; iy <= iy1; ++iy)
          for (int ix = ix0; ix <= ix1; ++ix) {
            const float* src = in + (size_t(iy - in_row0) * w + ix) * c + ch;
            for (int k = 0; k < 4; ++k) {
              const typename V::type v = V::load(src + V::lanes * k, mask[k]);
              m[k] = first ? v : V::max(v, m[k]);
            }
            first = false;
          }
        for (int k = 0; k < 4; ++k) V::store(d + ch + V::lanes * k, mask[k], m[k]);
      }
    }
}

}  // namespace
}  // namespace apot::kernels::detail
