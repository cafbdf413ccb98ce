// The first layer on 8-bit pixels: packing, the border table, the scalar reference and the
// choice of path.
#include "apot/kernels/stem.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <utility>

#include "gemm_impl.h"

namespace apot::kernels {

namespace {
// The class of each output row (or column): outputs whose kernel has the same taps inside the
// image share one. Returns the class per output and the in-image tap range [lo, hi] per class.
std::pair<std::vector<int>, std::vector<std::pair<int, int>>> classes(int size, int kernel, int stride, int padding) {
  const int out = (size + 2 * padding - kernel) / stride + 1;
  std::map<std::pair<int, int>, int> ids;
  std::vector<std::pair<int, int>> ranges;
  std::vector<int> cls(size_t(std::max(out, 0)));
  for (int o = 0; o < out; ++o) {
    const int first = o * stride - padding;  // the input index under tap 0
    const std::pair<int, int> range{std::max(0, -first), std::min(kernel - 1, size - 1 - first)};
    auto [it, added] = ids.emplace(range, int(ranges.size()));
    if (added) ranges.push_back(range);
    cls[size_t(o)] = it->second;
  }
  return {cls, ranges};
}
}  // namespace

PackedStem pack_stem(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride, int padding,
                     int h, int w, const std::vector<float>& mean, const std::vector<float>& std) {
  detail::check_shape("pack_stem", out_channels, in_channels, kernel, stride, padding);
  if (h + 2 * padding < kernel || w + 2 * padding < kernel)
    throw std::invalid_argument("pack_stem: input smaller than the kernel");
  if (mean.size() != size_t(in_channels) || std.size() != size_t(in_channels))
    throw std::invalid_argument("pack_stem: one mean and one std per input channel needed");
  for (int c = 0; c < in_channels; ++c)
    if (!std::isfinite(mean[c]) || !std::isfinite(std[c]) || !(std[c] > 0))
      throw std::invalid_argument("pack_stem: mean and std must be finite, std positive");
  PackedStem s;
  s.in_channels = in_channels;
  s.out_channels = out_channels;
  s.kernel = kernel;
  s.stride = stride;
  s.padding = padding;
  s.nblocks = (out_channels + 15) / 16;
  s.groups = (kernel + 3) / 4;
  if (kernel * s.groups * in_channels > detail::TapOffsets::kCapacity)
    throw std::invalid_argument("pack_stem: too many input channels for the 8-bit first layer");
  s.h = h;
  s.w = w;
  const int ld = 16 * s.nblocks;
  auto W = [&](int n, int ky, int kx, int c) {
    return weights[((size_t(n) * kernel + ky) * kernel + kx) * in_channels + c];
  };
  s.data.assign(size_t(s.nblocks) * in_channels * kernel * s.groups * 64, 0);
  if (kernel == 3 && stride == 1) s.shifted.assign(s.data.size(), 0);
  s.plain.assign(size_t(in_channels) * kernel * kernel * ld, 0);
  for (int n = 0; n < out_channels; ++n)
    for (int c = 0; c < in_channels; ++c)
      for (int ky = 0; ky < kernel; ++ky)
        for (int kx = 0; kx < kernel; ++kx) {
          const int b = n / 16, b0 = b / 4 * 4, NB = std::min(4, s.nblocks - b0);
          const size_t t = size_t(ky) * s.groups + kx / 4, steps = size_t(kernel) * s.groups;
          const size_t vec = size_t(b0) * in_channels * steps + (t * in_channels + c) * NB + (b - b0);
          s.data[vec * 64 + (n % 16) * 4 + kx % 4] = W(n, ky, kx, c);
          if (!s.shifted.empty()) s.shifted[vec * 64 + (n % 16) * 4 + kx + 1] = W(n, ky, kx, c);
          s.plain[((size_t(c) * kernel + ky) * kernel + kx) * ld + n] = W(n, ky, kx, c);
        }
  // AMX tiles: kernels of 5 x 5 to 8 x 8, up to 4 input channels (3 x 3 kernels use 9 of a tile
  // row's 64 bytes and measured 0.98-1.40x the vector kernel's time: docs/KERNELS.md).
  if (kernel >= 5 && kernel <= 8 && in_channels <= 4) {
    s.amx.assign(size_t(s.nblocks) * in_channels * 1024, 0);
    for (int n = 0; n < out_channels; ++n)
      for (int c = 0; c < in_channels; ++c)
        for (int ky = 0; ky < kernel; ++ky)
          for (int kx = 0; kx < kernel; ++kx) {
            const int k = kx * 8 + ky;
            s.amx[(size_t(n / 16) * in_channels + c) * 1024 + size_t(k / 4) * 64 + size_t(n % 16) * 4 + k % 4] =
                W(n, ky, kx, c);
          }
  }
  for (int c = 0; c < in_channels; ++c) s.pixel_scale.push_back(float(1.0 / (255.0 * double(std[c]))));
  const auto [rows, row_ranges] = classes(h, kernel, stride, padding);
  const auto [cols, col_ranges] = classes(w, kernel, stride, padding);
  for (int rc : rows) s.row_offset.push_back(rc * int(col_ranges.size()) * ld);
  for (int cc : cols) s.col_offset.push_back(cc * ld);
  s.offset.assign(row_ranges.size() * col_ranges.size() * ld, 0.0f);
  for (size_t rc = 0; rc < row_ranges.size(); ++rc)
    for (size_t cc = 0; cc < col_ranges.size(); ++cc)
      for (int n = 0; n < out_channels; ++n) {
        double d = 0;
        for (int c = 0; c < in_channels; ++c) {
          long inside = 0;
          for (int ky = row_ranges[rc].first; ky <= row_ranges[rc].second; ++ky)
            for (int kx = col_ranges[cc].first; kx <= col_ranges[cc].second; ++kx) inside += W(n, ky, kx, c);
          d += double(mean[c]) / double(std[c]) * double(inside);
        }
        s.offset[(rc * col_ranges.size() + cc) * ld + n] = float(d);
      }
  return s;
}

namespace {
// pixel_of with the scale 255 std and offset 255 mean precomputed (the formula of
// pixel_row_avx512 too). Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (ties
// to even) for |q| < 2^22; larger q and NaN fail the range test.
inline int pixel(float x, float s, float m) {
  const float q = x * s + m;
  const float p = (q + 12582912.0f) - 12582912.0f;
  const bool ok = q > -0.5f && q < 255.5f && std::fabs(q - p) <= 1e-3f;
  return ok ? int(p) : -1;
}
}  // namespace

int pixel_of(float x, float mean, float std) { return pixel(x, 255.0f * std, 255.0f * mean); }

bool to_pixels(const float* image, const std::vector<float>& mean, const std::vector<float>& std, const PixelImage& out,
               GemmIsa isa) {
  if (mean.size() != size_t(out.c) || std.size() != size_t(out.c))
    throw std::invalid_argument("to_pixels: one mean and one std per channel needed");
  const auto pixel_row = detail::engine_kernels(isa).pixel_row;
  const int h = out.h, w = out.w;
  for (int c = 0; c < out.c; ++c) {
    const float s = 255.0f * std[c], m = 255.0f * mean[c];
    for (int y = 0; y < h; ++y)
      if (!pixel_row(image + (size_t(c) * h + y) * w, w, s, m, out.pixel(c, y, 0))) return false;
  }
  return true;
}

namespace detail {
bool pixel_row_scalar(const float* src, int w, float s, float m, uint8_t* dst) {
  bool ok = true;
  for (int x = 0; x < w; ++x) {
    const int p = pixel(src[x], s, m);
    ok &= p >= 0;
    dst[x] = static_cast<uint8_t>(p);
  }
  return ok;
}
}  // namespace detail

namespace detail {
void stem_rows_scalar(const StemArgs& a, int m0, int m1) { stem_reference(a, m0, m1); }
}  // namespace detail

bool stem_amx_applies(const PackedStem& w, GemmIsa isa) {
  return isa == GemmIsa::avx512_vnni && amx_enabled() && !w.amx.empty();
}

void conv_stem_u8(const PixelImage& in, const PackedStem& w, const float* scale, const float* bias, bool relu,
                  float* out, GemmIsa isa, int threads, int y0, int y1, bool amx) {
  if (in.c != w.in_channels || in.h != w.h || in.w != w.w || in.border < w.padding || !in.data || !scale || !bias ||
      !out)
    throw std::invalid_argument("conv_stem_u8: input image does not fit the convolution");
  if (y1 < 0) y1 = w.out_h();
  if (y0 < 0 || y0 > y1 || y1 > w.out_h()) throw std::invalid_argument("conv_stem_u8: invalid row range");
  const detail::EngineKernels& k = detail::engine_kernels(isa);
  detail::StemArgs a{&in, &w, scale, bias, relu, out, w.out_h(), w.out_w(), in.border - w.padding, y0 * w.out_w(), {}};
  for (int ky = 0; ky < w.kernel; ++ky)
    for (int g = 0; g < w.groups; ++g)
      for (int c = 0; c < w.in_channels; ++c)
        a.tap_offsets.push_back(ptrdiff_t(c * in.plane()) + ptrdiff_t(ky) * in.padded_w() + 4 * g);
  detail::split_rows(amx && stem_amx_applies(w, isa) ? detail::stem_rows_amx : k.stem, a, y0 * a.ow, y1 * a.ow,
                     threads);
}

}  // namespace apot::kernels
