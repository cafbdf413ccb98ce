// The u8 x s8 GEMM: every ISA path against the scalar reference on many shapes, and the
// reference against a plain triple loop.
#include <gtest/gtest.h>

#include <random>

#include "apot/kernels/gemm.h"

using apot::kernels::GemmIsa;

namespace {
struct Problem {
  int M, N, K, max_a, max_b;
  std::vector<uint8_t> A;  // M x Kp, zero padded
  std::vector<int8_t> W;   // N x K
  int Kp;
};

Problem make(int M, int N, int K, int max_a, int max_b, unsigned seed) {
  std::mt19937 rng(seed);
  Problem p{M, N, K, max_a, max_b, {}, {}, apot::kernels::round_up4(K)};
  p.A.assign(size_t(M) * p.Kp, 0);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) p.A[size_t(m) * p.Kp + k] = static_cast<uint8_t>(rng() % (max_a + 1));
  p.W.resize(size_t(N) * K);
  for (auto& w : p.W) w = static_cast<int8_t>(int(rng() % (2 * max_b + 1)) - max_b);
  return p;
}
}  // namespace

TEST(Gemm, ScalarReferenceIsTheMatrixProduct) {
  const Problem p = make(5, 7, 13, 48, 10, 1);
  const auto B = apot::kernels::pack_weights(p.W.data(), p.N, p.K);
  std::vector<int32_t> C(size_t(p.M) * p.N);
  apot::kernels::gemm_u8s8(p.A.data(), p.M, p.Kp, p.max_a, B, C.data(), p.N, GemmIsa::scalar);
  for (int m = 0; m < p.M; ++m)
    for (int n = 0; n < p.N; ++n) {
      int32_t expected = 0;
      for (int k = 0; k < p.K; ++k) expected += int(p.A[size_t(m) * p.Kp + k]) * int(p.W[size_t(n) * p.K + k]);
      EXPECT_EQ(C[size_t(m) * p.N + n], expected);
    }
}

TEST(Gemm, EveryPathMatchesTheReferenceOnManyShapes) {
  unsigned seed = 0;
  for (int M : {1, 2, 3, 4, 5, 9, 64, 67})
    for (int N : {1, 7, 16, 17, 32, 48, 64, 70})
      for (int K : {4, 13, 27, 144, 576})
        for (auto [max_a, max_b] : {std::pair{48, 10}, std::pair{255, 127}, std::pair{100, 1}}) {
          const Problem p = make(M, N, K, max_a, max_b, ++seed);
          const auto B = apot::kernels::pack_weights(p.W.data(), p.N, p.K);
          std::vector<int32_t> ref(size_t(M) * N), got(size_t(M) * N);
          apot::kernels::gemm_u8s8(p.A.data(), M, p.Kp, max_a, B, ref.data(), N, GemmIsa::scalar);
          for (GemmIsa isa : apot::kernels::supported_gemm_isas()) {
            std::fill(got.begin(), got.end(), -1);
            apot::kernels::gemm_u8s8(p.A.data(), M, p.Kp, max_a, B, got.data(), N, isa);
            ASSERT_EQ(got, ref) << apot::kernels::to_string(isa) << " M=" << M << " N=" << N << " K=" << K
                                << " max_a=" << max_a << " max_b=" << max_b;
          }
        }
}

TEST(Gemm, BadArgumentsAndNames) {
  const Problem p = make(2, 3, 8, 10, 10, 3);
  const auto B = apot::kernels::pack_weights(p.W.data(), p.N, p.K);
  std::vector<int32_t> C(6);
  EXPECT_THROW(apot::kernels::gemm_u8s8(p.A.data(), 2, 4, 10, B, C.data(), 3), std::invalid_argument);
  EXPECT_THROW(apot::kernels::parse_gemm_isa("avx9"), std::runtime_error);
  for (GemmIsa isa : apot::kernels::supported_gemm_isas())
    EXPECT_EQ(apot::kernels::parse_gemm_isa(apot::kernels::to_string(isa)), isa);
}
