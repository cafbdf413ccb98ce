// Internal interface of the GEMM paths: each computes rows [m0, m1) of C.
#pragma once

#include <cstring>

#include "apot/kernels/gemm.h"

namespace apot::kernels::detail {

using GemmRows = void (*)(const uint8_t* A, int m0, int m1, int lda, const PackedB& B, int32_t* C, int ldc);
void gemm_rows_scalar(const uint8_t* A, int m0, int m1, int lda, const PackedB& B, int32_t* C, int ldc);
void gemm_rows_avx2(const uint8_t* A, int m0, int m1, int lda, const PackedB& B, int32_t* C, int ldc);
void gemm_rows_avx512_vnni(const uint8_t* A, int m0, int m1, int lda, const PackedB& B, int32_t* C, int ldc);

// Four consecutive activation codes as one int32 (for the broadcast of a 4-byte group).
inline int32_t load4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline int8_t packed_at(const PackedB& B, int k, int n) {
  return B.data[(size_t(n / 16) * (B.Kp / 4) + k / 4) * 64 + (n % 16) * 4 + k % 4];
}

}  // namespace apot::kernels::detail
