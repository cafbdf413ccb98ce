// AVX2 projection kernels (8 floats per vector): the same binary search as the AVX-512 path,
// with 8-entry permutes blended for larger tables; tails run the scalar element functions.
#include <immintrin.h>

#include "projection_impl.h"

namespace apot::kernels::detail {
namespace {

constexpr int kMaxVectors = 32;  // 256 entries

struct Tables256 {
  __m256 thresholds[kMaxVectors];
  __m256 magnitudes[kMaxVectors];
  int vectors;
  int table_size;

  explicit Tables256(const Projector::Tables& t) : table_size(t.table_size) {
    vectors = t.table_size > 8 ? t.table_size / 8 : 1;
    for (int v = 0; v < vectors; ++v) {
      thresholds[v] = _mm256_loadu_ps(t.thresholds.data() + 8 * v);
      magnitudes[v] = _mm256_loadu_ps(t.magnitudes.data() + 8 * v);
    }
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
  __m256 clipped;
};

inline Projected256 project(const Tables256& t, bool is_signed, __m256 x) {
  Projected256 p;
  if (is_signed) {
    p.clipped = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-1.0f)), _mm256_set1_ps(1.0f));
    p.magnitude_index = magnitude_index(t, _mm256_andnot_ps(sign_mask(), p.clipped));
    const __m256 magnitude = lookup(t.magnitudes, t.vectors, p.magnitude_index);
    p.value = _mm256_or_ps(magnitude, _mm256_and_ps(p.clipped, sign_mask()));
  } else {
    p.clipped = _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
    p.magnitude_index = magnitude_index(t, p.clipped);
    p.value = lookup(t.magnitudes, t.vectors, p.magnitude_index);
  }
  return p;
}

struct Normaliser256 {
  __m256 shift, scale, alpha;
  explicit Normaliser256(const RangeArgs& a)
      : shift(_mm256_set1_ps(a.norm.shift)), scale(_mm256_set1_ps(a.norm.scale)), alpha(_mm256_set1_ps(a.alpha)) {}
  __m256 operator()(__m256 in) const { return _mm256_div_ps(_mm256_div_ps(_mm256_sub_ps(in, shift), scale), alpha); }
};

inline __m256 is_nan(__m256 x) { return _mm256_cmp_ps(x, x, _CMP_UNORD_Q); }

size_t quantize_avx2(const RangeArgs& a, size_t begin, size_t end) {
  const Tables256 t(*a.tables);
  const Normaliser256 normalise(a);
  const __m256i zero_index = _mm256_set1_epi32(a.zero_index);
  size_t nans = 0, i = begin;
  alignas(32) int32_t lanes[8];
  for (; i + 8 <= end; i += 8) {
    const __m256 x = normalise(_mm256_loadu_ps(a.input + i));
    nans += __builtin_popcount(_mm256_movemask_ps(is_nan(x)));
    const Projected256 p = project(t, a.tables->is_signed, x);
    __m256i index = p.magnitude_index;
    if (a.tables->is_signed) {
      const __m256i negative = _mm256_srai_epi32(_mm256_castps_si256(p.clipped), 31);
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

void forward_avx2(const RangeArgs& a, size_t begin, size_t end) {
  const Tables256 t(*a.tables);
  const Normaliser256 normalise(a);
  const __m256 nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
  size_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 x = normalise(_mm256_loadu_ps(a.input + i));
    const Projected256 p = project(t, a.tables->is_signed, x);
    const __m256 out = _mm256_blendv_ps(_mm256_mul_ps(p.value, normalise.alpha), nan, is_nan(x));
    _mm256_storeu_ps(a.out + i, out);
  }
  kScalarKernels.forward(a, i, end);
}

double backward_avx2(const RangeArgs& a, size_t begin, size_t end) {
  const Tables256 t(*a.tables);
  const Normaliser256 normalise(a);
  const bool cifar = a.variant == SteVariant::cifar;
  const __m256 nan = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  __m256d sum_low = _mm256_setzero_pd(), sum_high = _mm256_setzero_pd();
  size_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 x = normalise(_mm256_loadu_ps(a.input + i));
    const __m256 g = _mm256_loadu_ps(a.grad_output + i);
    const Projected256 p = project(t, a.tables->is_signed, x);
    __m256 term = _mm256_mul_ps(g, _mm256_sub_ps(p.value, x));
    __m256 pass = g;
    if (a.tables->is_signed) {
      const __m256 outside = _mm256_cmp_ps(_mm256_andnot_ps(sign_mask(), x), one, _CMP_GT_OQ);
      term = _mm256_blendv_ps(term, _mm256_xor_ps(g, _mm256_and_ps(x, sign_mask())), outside);
      if (!cifar) pass = _mm256_blendv_ps(pass, zero, outside);
    } else {
      const __m256 above = _mm256_cmp_ps(x, one, _CMP_GT_OQ);
      const __m256 below = _mm256_cmp_ps(x, zero, _CMP_LT_OQ);
      term = _mm256_blendv_ps(_mm256_blendv_ps(term, g, above), zero, below);
      pass = _mm256_blendv_ps(pass, zero, above);
      if (!cifar) pass = _mm256_blendv_ps(pass, zero, below);
    }
    const __m256 nan_lanes = is_nan(x);
    term = _mm256_blendv_ps(term, nan, nan_lanes);
    pass = _mm256_blendv_ps(pass, nan, nan_lanes);
    _mm256_storeu_ps(a.grad_input + i, _mm256_div_ps(pass, normalise.scale));
    sum_low = _mm256_add_pd(sum_low, _mm256_cvtps_pd(_mm256_castps256_ps128(term)));
    sum_high = _mm256_add_pd(sum_high, _mm256_cvtps_pd(_mm256_extractf128_ps(term, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum_low, sum_high));
  const double vector_sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  return vector_sum + kScalarKernels.backward(a, i, end);
}

}  // namespace

const IsaKernels kAvx2Kernels = {quantize_avx2, dequantize_avx2, forward_avx2, backward_avx2};

}  // namespace apot::kernels::detail
