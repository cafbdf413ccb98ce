// The same 256-bit VNNI kernel as gemm_avx_vnni.cpp with the EVEX-encoded vpdpbusd of AVX-512
// VNNI + VL: the avx-vnni path on AVX-512 machines, so that the kernel is exercised (and tested)
// where AVX-VNNI itself is missing.
#include "gemm_ymm.h"

namespace apot::kernels::detail {
namespace {
struct EvexDot {
  static __m256i add(__m256i acc, __m256i a, __m256i b) { return _mm256_dpbusd_epi32(acc, a, b); }
  static __m256i add2(__m256i acc, __m256i a, __m256i b, __m256i c, __m256i d) { return add(add(acc, a, b), c, d); }
};
}  // namespace

void conv_rows_avx_vnni_evex(const ConvArgs& a, int m0, int m1) { ymm_rows<6, EvexDot>(a, m0, m1); }
void stem_rows_avx_vnni_evex(const StemArgs& a, int m0, int m1) { stem_rows_ymm<EvexDot>(a, m0, m1); }
int32_t peak_probe_avx_vnni_evex(long iterations) { return ymm_peak_probe<EvexDot>(iterations); }

}  // namespace apot::kernels::detail
