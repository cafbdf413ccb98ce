// Requantisation: float values to a consumer's activation codes by thresholds.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "cells.h"
#include "gemm_impl.h"

namespace apot::kernels {

Requantizer make_requantizer(std::vector<float> thresholds, std::vector<uint8_t> codes) {
  if (thresholds.size() > 31) throw std::invalid_argument("requantizer: more than 31 thresholds");
  if (codes.size() != thresholds.size() + 1)
    throw std::invalid_argument("requantizer: needs one code more than thresholds");
  for (size_t i = 0; i < thresholds.size(); ++i)
    if (std::isnan(thresholds[i]) || (i > 0 && !(thresholds[i - 1] <= thresholds[i])))
      throw std::invalid_argument("requantizer: thresholds must be ascending numbers");
  Requantizer q{std::move(thresholds), std::move(codes), nullptr};
  q.tables = std::make_shared<const detail::SearchTables>(q.thresholds.data(), q.codes.data(), int(q.codes.size()));
  return q;
}

int Requantizer::code(float v) const {
  if (std::isnan(v)) return codes[0];
  // The number of thresholds t <= v (upper_bound: the first t with v < t).
  return codes[size_t(std::upper_bound(thresholds.begin(), thresholds.end(), v) - thresholds.begin())];
}

void requantize(const float* values, int h, int w, int n, const Requantizer& q, const CodeImage& out, GemmIsa isa,
                int stride) {
  if (out.h != h || out.w != w || out.cs < n || !out.data)
    throw std::invalid_argument("requantize: output code image does not fit");
  if (stride == 0) stride = n;
  if (stride < n) throw std::invalid_argument("requantize: the pixel stride is below the channel count");
  if (stride == n && out.border == 0 && out.cs == n && size_t(h) * size_t(w) * size_t(n) <= size_t(INT32_MAX)) {
    // A contiguous image (no border, no channel padding) is one pixel of h * w * n values: the
    // kernels then run whole vectors across pixels (ShuffleNetV2's 24-channel halves would
    // otherwise end every pixel with a partial vector).
    const CodeImage flat{out.data, 1, 1, h * w * n, 0};
    detail::engine_kernels(isa).requantize(values, 1, 1, h * w * n, h * w * n, q, flat);
    return;
  }
  detail::engine_kernels(isa).requantize(values, h, w, n, stride, q, out);
}

namespace detail {
void requantize_scalar(const float* values, int h, int w, int n, int stride, const Requantizer& q,
                       const CodeImage& out) {
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float* v = values + (size_t(y) * w + x) * size_t(stride);
      uint8_t* dst = out.pixel(y, x);
      for (int c = 0; c < n; ++c) dst[c] = static_cast<uint8_t>(q.code(v[c]));
    }
}
}  // namespace detail

}  // namespace apot::kernels
