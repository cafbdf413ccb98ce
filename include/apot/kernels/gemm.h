// uint8 x int8 -> int32 matrix multiplication for the integer engine:
//   C[m][n] = sum_k A[m][k] * B[k][n]
// A holds activation codes (unsigned), B weight integers (signed), packed once per layer.
// Paths: a scalar reference, AVX2 (vpmaddubsw + vpmaddwd, only where no int16 pair sum can
// saturate) and AVX-512 VNNI (vpdpbusd); chosen at run time, APOT_GEMM_ISA forces one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace apot::kernels {

enum class GemmIsa { scalar, avx2, avx512_vnni };
const char* to_string(GemmIsa isa);
std::vector<GemmIsa> supported_gemm_isas();
GemmIsa parse_gemm_isa(const std::string& name);  // "scalar" | "avx2" | "avx512-vnni"
GemmIsa default_gemm_isa();                        // APOT_GEMM_ISA, else the best supported

// B packed in blocks of 16 columns x 4 rows: data[(nb * (Kp/4) + k4) * 64 + lane * 4 + j]
// = B[4*k4 + j][16*nb + lane], zero outside K x N.
struct PackedB {
  int K = 0, N = 0, Kp = 0, Np = 0;
  int max_abs = 0;  // largest |B| (for the AVX2 saturation check)
  std::vector<int8_t> data;
};
inline int round_up4(int k) { return (k + 3) / 4 * 4; }

// weights: N rows of K int8 (row n = output channel n).
PackedB pack_weights(const int8_t* weights, int N, int K);

// A: M rows, row stride lda >= Kp, columns K..Kp-1 must be zero. C: M x N int32, row stride ldc.
// max_a: an upper bound of A's values (the AVX2 path needs 2 * max_a * max|B| <= 32767 and
// falls back to the scalar path otherwise).
void gemm_u8s8(const uint8_t* A, int M, int lda, int max_a, const PackedB& B, int32_t* C, int ldc,
               GemmIsa isa = default_gemm_isa());

}  // namespace apot::kernels
