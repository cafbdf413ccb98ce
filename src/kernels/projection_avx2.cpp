// AVX2 projection kernels (8 floats per vector): the same division-free search in u space as
// the AVX-512 path, with 8-entry permutes blended for larger tables; tails run the scalar
// element functions.
#include <immintrin.h>

#include "projection_impl.h"

namespace apot::kernels::detail {
namespace {

constexpr int kMaxVectors = 32;  // 256 entries

struct Tables256 {
  __m256 thresholds[kMaxVectors];  // in u space
  __m256 magnitudes[kMaxVectors];
  int vectors;
  int table_size;
  bool is_signed;
  __m256 shift, scale, alpha, above_one;

  explicit Tables256(const RangeArgs& a) : table_size(a.tables->table_size), is_signed(a.tables->is_signed) {
    vectors = table_size > 8 ? table_size / 8 : 1;
    for (int v = 0; v < vectors; ++v) {
      thresholds[v] = _mm256_loadu_ps(a.space->thresholds.data() + 8 * v);
      magnitudes[v] = _mm256_loadu_ps(a.tables->magnitudes.data() + 8 * v);
    }
    shift = _mm256_set1_ps(a.norm.shift);
    scale = _mm256_set1_ps(a.norm.scale);
    alpha = _mm256_set1_ps(a.alpha);
    above_one = _mm256_set1_ps(a.space->above_one);
  }
};

inline __m256 lookup(const __m256* table, int vectors, __m256i index) {
  __m256 result = _mm256_permutevar8x32_ps(table[0], index);
  const __m256i block = _mm256_srli_epi32(index, 3);
  for (int v = 1; v < vectors; ++v) {
    const __m256 candidate = _mm256_permutevar8x32_ps(table[v], index);
    const __m256i here = _mm256_cmpeq_epi32(block, _mm256_set1_epi32(v));
    result = _mm256_blendv_ps(result, candidate, _mm256_castsi256_ps(here));
  }
  return result;
}

inline __m256i magnitude_index(const Tables256& t, __m256 m) {
  __m256i index = _mm256_setzero_si256();
  for (int step = t.table_size / 2; step >= 1; step >>= 1) {
    const __m256i probe = _mm256_add_epi32(index, _mm256_set1_epi32(step - 1));
    const __m256 ge = _mm256_cmp_ps(m, lookup(t.thresholds, t.vectors, probe), _CMP_GE_OQ);
    index = _mm256_add_epi32(index, _mm256_and_si256(_mm256_castps_si256(ge), _mm256_set1_epi32(step)));
  }
  return index;
}

inline __m256 sign_mask() { return _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u))); }

struct Projected256 {
  __m256i magnitude_index;
  __m256 value;
};

inline Projected256 project(const Tables256& t, __m256 u) {
  Projected256 p;
  if (t.is_signed) {
    p.magnitude_index = magnitude_index(t, _mm256_andnot_ps(sign_mask(), u));
    const __m256 magnitude = lookup(t.magnitudes, t.vectors, p.magnitude_index);
    p.value = _mm256_or_ps(magnitude, _mm256_and_ps(u, sign_mask()));
  } else {
    p.magnitude_index = magnitude_index(t, u);
    p.value = lookup(t.magnitudes, t.vectors, p.magnitude_index);
  }
  return p;
}

inline __m256 is_nan(__m256 x) { return _mm256_cmp_ps(x, x, _CMP_UNORD_Q); }

size_t quantize_avx2(const RangeArgs& a, size_t begin, size_t end) {
  const Tables256 t(a);
  const __m256i zero_index = _mm256_set1_epi32(a.zero_index);
  size_t nans = 0, i = begin;
  alignas(32) int32_t lanes[8];
  for (; i + 8 <= end; i += 8) {
    const __m256 u = _mm256_sub_ps(_mm256_loadu_ps(a.input + i), t.shift);
    nans += __builtin_popcount(_mm256_movemask_ps(is_nan(u)));
    const Projected256 p = project(t, u);
    __m256i index = p.magnitude_index;
    if (t.is_signed) {
      const __m256i negative = _mm256_srai_epi32(_mm256_castps_si256(u), 31);
      // zero + k for positive lanes, zero - k for negative ones: (k xor neg) - neg negates.
      index = _mm256_add_epi32(zero_index, _mm256_sub_epi32(_mm256_xor_si256(index, negative), negative));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), index);
    for (int l = 0; l < 8; ++l) a.index_out[i + l] = static_cast<uint8_t>(lanes[l]);
  }
  return nans + kScalarKernels.quantize(a, i, end);
}

void dequantize_avx2(const RangeArgs& a, size_t begin, size_t end) {
  const __m256 alpha = _mm256_set1_ps(a.alpha);
  size_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.index_in + i));
    const __m256 level = _mm256_i32gather_ps(a.full_levels, _mm256_cvtepu8_epi32(bytes), 4);
    _mm256_storeu_ps(a.out + i, _mm256_mul_ps(level, alpha));
  }
  kScalarKernels.dequantize(a, i, end);
}

// bfloat16_bits of 8 floats (round to nearest even, NaN -> 0x7FC0).
inline __m128i to_bfloat16(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i bias =
      _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7FFF));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(is_nan(v)));
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // lanes 0 and 2
  return _mm256_castsi256_si128(packed);
}

inline __m256 from_bfloat16(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

void forward_avx2(const RangeArgs& a, size_t begin, size_t end) {
  const Tables256 t(a);
  const __m256 nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
  size_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 u = _mm256_sub_ps(_mm256_loadu_ps(a.input + i), t.shift);
    const __m256 out = _mm256_blendv_ps(_mm256_mul_ps(project(t, u).value, t.alpha), nan, is_nan(u));
    if (a.out_bf16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out_bf16 + i), to_bfloat16(out));
    } else {
      _mm256_storeu_ps(a.out + i, out);
    }
  }
  kScalarKernels.forward(a, i, end);
}

template <bool kUnitScale>
double backward_avx2_impl(const RangeArgs& a, size_t begin, size_t end) {
  const Tables256 t(a);
  const bool cifar = a.variant == SteVariant::cifar;
  const __m256 below_bound = _mm256_set1_ps(a.space->below_zero(a.variant));
  const __m256 nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
  const __m256 zero = _mm256_setzero_ps();
  __m256d sum_low = _mm256_setzero_pd(), sum_high = _mm256_setzero_pd();
  size_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 u = _mm256_sub_ps(_mm256_loadu_ps(a.input + i), t.shift);
    const __m256 g = a.grad_output_bf16 ? from_bfloat16(a.grad_output_bf16 + i) : _mm256_loadu_ps(a.grad_output + i);
    const __m256 x = _mm256_div_ps(kUnitScale ? u : _mm256_div_ps(u, t.scale), t.alpha);
    const Projected256 p = project(t, u);
    __m256 term = _mm256_mul_ps(g, _mm256_sub_ps(p.value, x));
    __m256 pass = g;
    if (t.is_signed) {
      const __m256 outside = _mm256_cmp_ps(_mm256_andnot_ps(sign_mask(), u), t.above_one, _CMP_GE_OQ);
      term = _mm256_blendv_ps(term, _mm256_xor_ps(g, _mm256_and_ps(u, sign_mask())), outside);
      if (!cifar) pass = _mm256_blendv_ps(pass, zero, outside);
    } else {
      const __m256 above = _mm256_cmp_ps(u, t.above_one, _CMP_GE_OQ);
      const __m256 below = _mm256_cmp_ps(u, below_bound, _CMP_LT_OQ);
      term = _mm256_blendv_ps(_mm256_blendv_ps(term, g, above), zero, below);
      pass = _mm256_blendv_ps(pass, zero, above);
      if (!cifar) pass = _mm256_blendv_ps(pass, zero, below);
    }
    const __m256 nan_lanes = is_nan(u);
    term = _mm256_blendv_ps(term, nan, nan_lanes);
    pass = _mm256_blendv_ps(pass, nan, nan_lanes);
    _mm256_storeu_ps(a.grad_input + i, kUnitScale ? pass : _mm256_div_ps(pass, t.scale));
    sum_low = _mm256_add_pd(sum_low, _mm256_cvtps_pd(_mm256_castps256_ps128(term)));
    sum_high = _mm256_add_pd(sum_high, _mm256_cvtps_pd(_mm256_extractf128_ps(term, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum_low, sum_high));
  const double vector_sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  return vector_sum + kScalarKernels.backward(a, i, end);
}

double backward_avx2(const RangeArgs& a, size_t begin, size_t end) {
  return a.space->unit_scale ? backward_avx2_impl<true>(a, begin, end) : backward_avx2_impl<false>(a, begin, end);
}

}  // namespace

const IsaKernels kAvx2Kernels = {quantize_avx2, dequantize_avx2, forward_avx2, backward_avx2};

}  // namespace apot::kernels::detail
