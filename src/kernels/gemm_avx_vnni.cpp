// The 256-bit VNNI convolution with the VEX-encoded vpdpbusd of AVX-VNNI (CPUs with AVX-VNNI but
// without AVX-512, e.g. Alder Lake): no int16 intermediate, so no saturation limit.
#include "gemm_ymm.h"

namespace apot::kernels::detail {
namespace {
struct VexDot {
  static __m256i add(__m256i acc, __m256i a, __m256i b) { return _mm256_dpbusd_avx_epi32(acc, a, b); }
  static __m256i add2(__m256i acc, __m256i a, __m256i b, __m256i c, __m256i d) { return add(add(acc, a, b), c, d); }
};
}  // namespace

void conv_rows_avx_vnni(const ConvArgs& a, int m0, int m1) { ymm_rows<6, VexDot>(a, m0, m1); }
void stem_rows_avx_vnni(const StemArgs& a, int m0, int m1) { stem_rows_ymm<VexDot>(a, m0, m1); }
int32_t peak_probe_avx_vnni(long iterations) { return ymm_peak_probe<VexDot>(iterations); }

}  // namespace apot::kernels::detail
