// GEMM driver: packing, ISA selection and the scalar reference.
#include <cstdlib>
#include <stdexcept>

#include "gemm_impl.h"

namespace apot::kernels {

const char* to_string(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::scalar: return "scalar";
    case GemmIsa::avx2: return "avx2";
    case GemmIsa::avx512_vnni: return "avx512-vnni";
  }
  return "unknown";
}

std::vector<GemmIsa> supported_gemm_isas() {
  static const std::vector<GemmIsa> detected = [] {
    std::vector<GemmIsa> out{GemmIsa::scalar};
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) out.push_back(GemmIsa::avx2);
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
      out.push_back(GemmIsa::avx512_vnni);
#endif
    return out;
  }();
  return detected;
}

GemmIsa parse_gemm_isa(const std::string& name) {
  for (GemmIsa isa : supported_gemm_isas())
    if (name == to_string(isa)) return isa;
  throw std::runtime_error("APOT_GEMM_ISA=" + name + " is not a GEMM path this CPU supports (scalar, avx2, avx512-vnni)");
}

GemmIsa default_gemm_isa() {
  static const GemmIsa chosen = [] {
    if (const char* forced = std::getenv("APOT_GEMM_ISA"); forced && *forced) return parse_gemm_isa(forced);
    return supported_gemm_isas().back();
  }();
  return chosen;
}

PackedB pack_weights(const int8_t* weights, int N, int K) {
  PackedB B;
  B.K = K;
  B.N = N;
  B.Kp = round_up4(K);
  B.Np = (N + 15) / 16 * 16;
  B.data.assign(size_t(B.Np) * B.Kp, 0);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int8_t v = weights[size_t(n) * K + k];
      B.data[(size_t(n / 16) * (B.Kp / 4) + k / 4) * 64 + (n % 16) * 4 + k % 4] = v;
      B.max_abs = std::max(B.max_abs, std::abs(int(v)));
    }
  return B;
}

namespace detail {
void gemm_rows_scalar(const uint8_t* A, int m0, int m1, int lda, const PackedB& B, int32_t* C, int ldc) {
  for (int m = m0; m < m1; ++m)
    for (int n = 0; n < B.N; ++n) {
      int32_t sum = 0;
      for (int k = 0; k < B.K; ++k) sum += int32_t(A[size_t(m) * lda + k]) * packed_at(B, k, n);
      C[size_t(m) * ldc + n] = sum;
    }
}
}  // namespace detail

void gemm_u8s8(const uint8_t* A, int M, int lda, int max_a, const PackedB& B, int32_t* C, int ldc, GemmIsa isa) {
  if (lda < B.Kp || ldc < B.N) throw std::invalid_argument("gemm_u8s8: row strides smaller than the matrix");
  bool supported = false;
  for (GemmIsa s : supported_gemm_isas()) supported |= s == isa;
  if (!supported) throw std::invalid_argument(std::string("GEMM path ") + to_string(isa) + " is not supported here");
  detail::GemmRows rows = detail::gemm_rows_scalar;
  if (isa == GemmIsa::avx512_vnni) rows = detail::gemm_rows_avx512_vnni;
  if (isa == GemmIsa::avx2 && 2 * max_a * B.max_abs <= 32767) rows = detail::gemm_rows_avx2;
  rows(A, 0, M, lda, B, C, ldc);
}

}  // namespace apot::kernels
