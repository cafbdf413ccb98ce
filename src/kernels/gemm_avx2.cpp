// AVX2 convolution: vpmaddubsw (u8 x s8 -> saturating int16 pairs) then vpmaddwd with ones and
// vpaddd; the driver only calls it when no pair sum can exceed 32767, and the variant that adds
// two vpmaddubsw results in int16 first when no sum of two pairs can. The float first layer on
// AVX2 machines: 5 pixels x 16 channels of vfmadd in the reference's order.
#include "float_tile.h"
#include "gemm_ymm.h"

namespace apot::kernels::detail {
namespace {
struct Avx2Dot {
  static __m256i add(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
  }
  // The two int16 pair sums added before the widening: 5 instructions per 64 products instead
  // of 6. Exact when no int16 sum of four products can exceed 32767 (the driver checks).
  static __m256i add2(__m256i acc, __m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(a, b), _mm256_maddubs_epi16(c, d));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
};
}  // namespace

void conv_rows_avx2(const ConvArgs& a, int m0, int m1) { ymm_rows<4, Avx2Dot, false>(a, m0, m1); }
void conv_rows_avx2_pairs(const ConvArgs& a, int m0, int m1) { ymm_rows<4, Avx2Dot, true>(a, m0, m1); }
void depthwise_rows_avx2(const ConvArgs& a, int m0, int m1) { ymm_depthwise_rows(a, m0, m1); }
int32_t peak_probe_avx2(long iterations) { return ymm_peak_probe<Avx2Dot>(iterations); }
void requantize_avx2(const float* values, int h, int w, int n, int stride, const Requantizer& q, const CodeImage& out) {
  requantize_ymm(values, h, w, n, stride, q, out);
}
namespace {
inline __m256i lane_mask8(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(std::min(count, 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The float first layer's vectors: 8 floats.
struct Ymm {
  using type = __m256;
  static constexpr int lanes = 8;
  static __m256 zero() { return _mm256_setzero_ps(); }
  static __m256 set1(float x) { return _mm256_set1_ps(x); }
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i mask(int count) { return lane_mask8(count); }
  static __m256 load(const float* p, __m256i mask) { return _mm256_maskload_ps(p, mask); }
  static void store(float* p, __m256i mask, __m256 v) { _mm256_maskstore_ps(p, mask, v); }
  static __m256 fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
  static __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
  static __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  static __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
};
}  // namespace

// to_pixels' formula, 8 values at a time (the AVX-VNNI path's pixel recovery; as
// pixel_row_avx512).
bool pixel_row_avx2(const float* src, int w, float s, float m, uint8_t* dst) {
  const __m256 scale = _mm256_set1_ps(s), offset = _mm256_set1_ps(m), magic = _mm256_set1_ps(12582912.0f);
  const __m256 low = _mm256_set1_ps(-0.5f), high = _mm256_set1_ps(255.5f), tolerance = _mm256_set1_ps(1e-3f);
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int bad = 0;
  for (int x = 0; x < w; x += 8) {
    const int count = std::min(8, w - x);
    const __m256i mask = lane_mask8(count);
    const __m256 q = _mm256_add_ps(_mm256_mul_ps(_mm256_maskload_ps(src + x, mask), scale), offset);
    const __m256 p = _mm256_sub_ps(_mm256_add_ps(q, magic), magic);
    const __m256 in_range = _mm256_and_ps(_mm256_cmp_ps(q, low, _CMP_GT_OQ), _mm256_cmp_ps(q, high, _CMP_LT_OQ));
    const __m256 near = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(q, p), magnitude), tolerance, _CMP_LE_OQ);
    bad |= ~_mm256_movemask_ps(_mm256_and_ps(in_range, near)) & ((1 << count) - 1);
    const __m256i pixels = _mm256_cvttps_epi32(_mm256_and_ps(in_range, p));
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(pixels), _mm256_extracti128_si256(pixels, 1));
    alignas(16) uint8_t bytes[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(bytes), _mm_packus_epi16(words, words));
    std::memcpy(dst + x, bytes, size_t(count));
  }
  return bad == 0;
}

void max_pool_avx2(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0) {
  max_pool_rows<Ymm>(in, h, w, c, out, y0, y1, in_row0);
}

// 13 of the 16 ymm registers: 5 x 2 accumulators, 2 weight vectors, the broadcast.
void conv_f32_rows_avx2(const FloatConvArgs& a, int m0, int m1) {
  const int vectors = (a.w->out_channels + 7) / 8;
  int n8 = 0;
  for (; n8 + 2 <= vectors; n8 += 2) float_sweep<Ymm, 5, 2>(a, m0, m1, n8);
  if (n8 < vectors) float_sweep<Ymm, 10, 1>(a, m0, m1, n8);
}

}  // namespace apot::kernels::detail
