// The float first layer (a float image times int8 weights): packing and the driver.
#include <stdexcept>

#include "gemm_impl.h"

namespace apot::kernels {

PackedFloatConv pack_float_conv(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride,
                                int padding) {
  detail::check_shape("pack_float_conv", out_channels, in_channels, kernel, stride, padding);
  PackedFloatConv w{in_channels, out_channels, kernel, stride, padding, (out_channels + 15) / 16, {}};
  const int K = kernel * kernel * in_channels, ld = w.nblocks * 16;
  w.data.assign(size_t(K) * ld, 0.0f);
  for (int n = 0; n < out_channels; ++n)
    for (int k = 0; k < K; ++k) w.data[size_t(k) * ld + n] = float(weights[size_t(n) * K + k]);
  return w;
}

namespace detail {
void conv_f32_rows_scalar(const FloatConvArgs& a, int m0, int m1) { conv_f32_reference(a, m0, m1); }
}  // namespace detail

void conv_f32(const FloatImage& in, const PackedFloatConv& w, const float* scale, const float* bias, bool relu,
              float* out, GemmIsa isa, int threads) {
  if (in.c != w.in_channels || in.border < w.padding || !in.data || !scale || !bias || !out)
    throw std::invalid_argument("conv_f32: input image does not fit the convolution");
  if (in.h + 2 * w.padding < w.kernel || in.w + 2 * w.padding < w.kernel)
    throw std::invalid_argument("conv_f32: input smaller than the kernel");
  const detail::EngineKernels& k = detail::engine_kernels(isa);
  const detail::FloatConvArgs a{&in, &w, scale, bias, relu, out, w.out_h(in.h), w.out_w(in.w), in.border - w.padding};
  detail::split_rows(k.conv_f32, a, 0, a.oh * a.ow, threads);
}

}  // namespace apot::kernels
