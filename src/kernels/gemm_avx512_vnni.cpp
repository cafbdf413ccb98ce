// AVX-512 VNNI GEMM: 16 output channels per zmm, up to 4 rows x 64 channels of int32
// accumulators; each vpdpbusd adds four u8 x s8 products per lane.
#include <immintrin.h>

#include <cstring>

#include "gemm_impl.h"

namespace apot::kernels::detail {
namespace {

template <int R, int NB>
void block(const uint8_t* A, int m, int lda, const PackedB& B, int nb, int32_t* C, int ldc) {
  const int k4n = B.Kp / 4;
  __m512i acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
  const int8_t* bp[NB];
  for (int j = 0; j < NB; ++j) bp[j] = B.data.data() + size_t(nb + j) * k4n * 64;
  const uint8_t* ap[R];
  for (int r = 0; r < R; ++r) ap[r] = A + size_t(m + r) * lda;
  for (int k4 = 0; k4 < k4n; ++k4) {
    __m512i b[NB];
    for (int j = 0; j < NB; ++j) b[j] = _mm512_loadu_si512(bp[j] + size_t(k4) * 64);
    for (int r = 0; r < R; ++r) {
      const __m512i a = _mm512_set1_epi32(load4(ap[r] + 4 * k4));
      for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], a, b[j]);
    }
  }
  for (int j = 0; j < NB; ++j) {
    const int n0 = (nb + j) * 16;
    const int count = B.N - n0 < 16 ? B.N - n0 : 16;
    const __mmask16 mask = static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1);
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_epi32(C + size_t(m + r) * ldc + n0, mask, acc[r][j]);
  }
}

template <int R>
void row_block(const uint8_t* A, int m, int lda, const PackedB& B, int32_t* C, int ldc) {
  const int nblocks = B.Np / 16;
  int nb = 0;
  for (; nb + 4 <= nblocks; nb += 4) block<R, 4>(A, m, lda, B, nb, C, ldc);
  switch (nblocks - nb) {
    case 3: block<R, 3>(A, m, lda, B, nb, C, ldc); break;
    case 2: block<R, 2>(A, m, lda, B, nb, C, ldc); break;
    case 1: block<R, 1>(A, m, lda, B, nb, C, ldc); break;
    default: break;
  }
}

}  // namespace

void gemm_rows_avx512_vnni(const uint8_t* A, int m0, int m1, int lda, const PackedB& B, int32_t* C, int ldc) {
  int m = m0;
  // With 16 output channels a 4-row block has only 4 independent accumulator chains, too few
  // to hide the vpdpbusd latency: take 8 rows at a time there.
  if (B.Np == 16)
    for (; m + 8 <= m1; m += 8) block<8, 1>(A, m, lda, B, 0, C, ldc);
  for (; m + 4 <= m1; m += 4) row_block<4>(A, m, lda, B, C, ldc);
  switch (m1 - m) {
    case 3: row_block<3>(A, m, lda, B, C, ldc); break;
    case 2: row_block<2>(A, m, lda, B, C, ldc); break;
    case 1: row_block<1>(A, m, lda, B, C, ldc); break;
    default: break;
  }
}

}  // namespace apot::kernels::detail
