// AVX2 GEMM: vpmaddubsw (u8 x s8 -> saturating int16 pairs) then vpmaddwd with ones; the
// driver only calls it when no pair sum can exceed 32767.
#include <immintrin.h>

#include <cstring>

#include "gemm_impl.h"

namespace apot::kernels::detail {
namespace {

template <int R>
void block(const uint8_t* A, int m, int lda, const PackedB& B, int nb, int32_t* C, int ldc) {
  const int k4n = B.Kp / 4;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int8_t* bp = B.data.data() + size_t(nb) * k4n * 64;
  for (int k4 = 0; k4 < k4n; ++k4) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + size_t(k4) * 64));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + size_t(k4) * 64 + 32));
    for (int r = 0; r < R; ++r) {
      const __m256i a = _mm256_set1_epi32(load4(A + size_t(m + r) * lda + 4 * k4));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b0), ones));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b1), ones));
    }
  }
  const int n0 = nb * 16;
  const int count = B.N - n0 < 16 ? B.N - n0 : 16;
  for (int r = 0; r < R; ++r) {
    alignas(32) int32_t lanes[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8), acc[r][1]);
    std::memcpy(C + size_t(m + r) * ldc + n0, lanes, sizeof(int32_t) * count);
  }
}

}  // namespace

void gemm_rows_avx2(const uint8_t* A, int m0, int m1, int lda, const PackedB& B, int32_t* C, int ldc) {
  const int nblocks = B.Np / 16;
  for (int nb = 0; nb < nblocks; ++nb) {
    int m = m0;
    for (; m + 4 <= m1; m += 4) block<4>(A, m, lda, B, nb, C, ldc);
    for (; m < m1; ++m) block<1>(A, m, lda, B, nb, C, ldc);
  }
}

}  // namespace apot::kernels::detail
