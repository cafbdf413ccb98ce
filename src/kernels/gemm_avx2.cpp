// AVX2 convolution: vpmaddubsw (u8 x s8 -> saturating int16 pairs) then vpmaddwd with ones and
// vpaddd; the driver only calls it when no pair sum can exceed 32767. The float first layer on
// AVX2 machines: the reference compiled with FMA.
#include "gemm_ymm.h"

namespace apot::kernels::detail {
namespace {
struct Avx2Dot {
  static __m256i add(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
  }
};
}  // namespace

void conv_rows_avx2(const ConvArgs& a, int m0, int m1) { ymm_rows<4, Avx2Dot>(a, m0, m1); }
int32_t peak_probe_avx2(long iterations) { return ymm_peak_probe<Avx2Dot>(iterations); }
void conv_f32_rows_avx2(const FloatConvArgs& a, int m0, int m1) { conv_f32_reference(a, m0, m1); }

}  // namespace apot::kernels::detail
