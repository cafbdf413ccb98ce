// The engine's kernel table: one row per path, chosen once; the drivers (conv.cpp,
// float_conv.cpp, pool.cpp, requantize.cpp, stem.cpp) call through it.
#include <stdexcept>
#include <string>

#include "apot/kernels/cpu.h"
#include "gemm_impl.h"

namespace apot::kernels::detail {

bool supports(GemmIsa isa) {
  for (GemmIsa s : supported_gemm_isas())
    if (s == isa) return true;
  return false;
}

void require(GemmIsa isa) {
  if (!supports(isa))
    throw std::invalid_argument(std::string("GEMM path ") + to_string(isa) + " is not supported here");
}

void check_shape(const char* what, int out_channels, int in_channels, int kernel, int stride, int padding) {
  if (out_channels < 1 || in_channels < 1 || kernel < 1 || stride < 1 || padding < 0 || padding >= kernel)
    throw std::invalid_argument(std::string(what) + ": invalid convolution shape");
  if (kernel > kMaxKernel)
    throw std::invalid_argument(std::string(what) + ": kernels larger than " + std::to_string(kMaxKernel) + "x" +
                                std::to_string(kMaxKernel) + " are not supported");
}

namespace {

EngineKernels scalar_row() {
  EngineKernels k;
  k.conv = conv_rows_scalar;
  k.depthwise = depthwise_rows_scalar;
  k.conv_f32 = conv_f32_rows_scalar;
  k.stem = stem_rows_scalar;
  k.max_pool = max_pool_scalar;
  k.interleave_pairs = interleave_pairs_scalar;  // AVX2: the compiler's vectorisation of it
  k.requantize = requantize_scalar;
  k.pixel_row = pixel_row_scalar;
  return k;
}

EngineKernels avx2_row() {
  EngineKernels k = scalar_row();  // the first layer on pixels: no AVX2 kernel (the engine skips it there)
  k.conv = conv_rows_avx2;
  k.conv_pairs = conv_rows_avx2_pairs;
  k.int16_sums = true;
  k.depthwise = depthwise_rows_avx2;
  k.conv_f32 = conv_f32_rows_avx2;
  k.max_pool = max_pool_avx2;
  k.requantize = requantize_avx2;
  k.pixel_row = pixel_row_avx2;
  k.peak_probe = peak_probe_avx2;
  k.peak_macs_per_round = peak_macs_per_round_ymm;
  return k;
}

// 256-bit vpdpbusd: VEX-encoded where the CPU has AVX-VNNI, else the same kernels EVEX-encoded
// (AVX-512 VNNI + VL).
EngineKernels avx_vnni_row() {
  const bool vex = cpu_features().avx_vnni;
  EngineKernels k = avx2_row();
  k.conv = vex ? conv_rows_avx_vnni : conv_rows_avx_vnni_evex;
  k.conv_pairs = nullptr;
  k.int16_sums = false;
  k.stem = vex ? stem_rows_avx_vnni : stem_rows_avx_vnni_evex;
  k.peak_probe = vex ? peak_probe_avx_vnni : peak_probe_avx_vnni_evex;
  return k;
}

EngineKernels avx512_vnni_row() {
  EngineKernels k;
  k.conv = conv_rows_avx512_vnni;
  k.depthwise = depthwise_rows_avx512;
  k.conv_f32 = conv_f32_rows_avx512;
  k.stem = stem_rows_avx512;
  k.max_pool = max_pool_avx512;
  k.interleave_pairs = interleave_pairs_avx512;
  k.requantize = requantize_avx512;
  k.pixel_row = pixel_row_avx512;
  k.peak_probe = peak_probe_avx512_vnni;
  k.peak_macs_per_round = peak_macs_per_round_avx512;
  return k;
}

}  // namespace

const EngineKernels& engine_kernels(GemmIsa isa) {
  static const EngineKernels rows[] = {scalar_row(), avx2_row(), avx_vnni_row(), avx512_vnni_row()};
  static_assert(int(GemmIsa::scalar) == 0 && int(GemmIsa::avx2) == 1 && int(GemmIsa::avx_vnni) == 2 &&
                    int(GemmIsa::avx512_vnni) == 3,
                "one row per GemmIsa, in order");
  require(isa);
  return rows[int(isa)];
}

}  // namespace apot::kernels::detail
