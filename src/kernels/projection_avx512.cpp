// AVX-512 projection kernels (16 floats per vector). The nearest level is found from
// u = input - shift against thresholds moved into u's space (see InputSpace), by a branchless
// binary search with in-register permutes, so the forward pass needs no division; tails use
// masked loads and stores. Bit-identical to the scalar reference per element.
#include <immintrin.h>

#include <type_traits>

#include "projection_impl.h"

namespace apot::kernels::detail {
namespace {

constexpr int kMaxVectors = 16;  // 256 entries: uniform 8-bit activations
constexpr int kCells = -1;       // kTable for the cells of cells.h (at most 16 magnitudes)

struct Tables512 {
  __m512 thresholds[kMaxVectors];  // in u space
  __m512 magnitudes[kMaxVectors];
  int vectors;  // table_size / 16, at least 1
  int table_size;
  bool is_signed;
  __m512 shift, scale, alpha, above_one;
  __m512 cell_k, cell_c, top_cell, check;  // the cells, where space->one_check()
  __m512i base0, base1;                    // base[g] as 16-bit words

  explicit Tables512(const RangeArgs& a) : table_size(a.tables->table_size), is_signed(a.tables->is_signed) {
    vectors = table_size > 16 ? table_size / 16 : 1;
    for (int v = 0; v < vectors; ++v) {
      thresholds[v] = _mm512_loadu_ps(a.space->thresholds.data() + 16 * v);
      magnitudes[v] = _mm512_loadu_ps(a.tables->magnitudes.data() + 16 * v);
    }
    shift = _mm512_set1_ps(a.norm.shift);
    scale = _mm512_set1_ps(a.norm.scale);
    alpha = _mm512_set1_ps(a.alpha);
    above_one = _mm512_set1_ps(a.space->above_one);
    const Cells& cells = a.space->cells;
    cell_k = _mm512_set1_ps(cells.k);
    cell_c = _mm512_set1_ps(cells.c);
    top_cell = _mm512_set1_ps(float(cells.cells - 1));
    check = _mm512_loadu_ps(a.space->check);
    base0 = _mm512_loadu_si512(cells.base);
    base1 = _mm512_loadu_si512(cells.base + 32);
  }
};

// kTable: the table size where it is known at compile time (4, 8 or 16: one vector, the search
// unrolled; kCells: one vector, the cells instead of the search), 0 where it is read from the
// tables at run time.
template <int kTable = 0>
inline __m512 lookup(const __m512* table, int vectors, __m512i index) {
  if (kTable == kCells || (kTable > 0 && kTable <= 16) || vectors == 1) return _mm512_permutexvar_ps(index, table[0]);
  __m512 result = _mm512_permutex2var_ps(table[0], index, table[1]);
  const __m512i pair = _mm512_srli_epi32(index, 5);
  for (int p = 1; 2 * p < vectors; ++p) {
    const __m512 v = _mm512_permutex2var_ps(table[2 * p], index, table[2 * p + 1]);
    result = _mm512_mask_mov_ps(result, _mm512_cmpeq_epi32_mask(pair, _mm512_set1_epi32(p)), v);
  }
  return result;
}

// Number of thresholds <= m (m in u space; NaN compares false and gives 0).
template <int kTable = 0>
inline __m512i magnitude_index(const Tables512& t, __m512 m) {
  if constexpr (kTable == kCells) {
    // max(u, 0) returns its second operand, 0, for NaN. The word permute reads the cell (< 64)
    // from each lane's low word and base[0] = 0 for its high word.
    const __m512 u =
        _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(m, t.cell_k, t.cell_c), _mm512_setzero_ps()), t.top_cell);
    const __m512i index = _mm512_permutex2var_epi16(t.base0, _mm512_cvttps_epi32(u), t.base1);
    const __mmask16 passes = _mm512_cmp_ps_mask(m, _mm512_permutexvar_ps(index, t.check), _CMP_GE_OQ);
    return _mm512_mask_add_epi32(index, passes, index, _mm512_set1_epi32(1));
  }
  __m512i index = _mm512_setzero_si512();
  for (int step = (kTable ? kTable : t.table_size) / 2; step >= 1; step >>= 1) {
    const __m512i probe = _mm512_add_epi32(index, _mm512_set1_epi32(step - 1));
    const __mmask16 ge = _mm512_cmp_ps_mask(m, lookup<kTable>(t.thresholds, t.vectors, probe), _CMP_GE_OQ);
    index = _mm512_mask_add_epi32(index, ge, index, _mm512_set1_epi32(step));
  }
  return index;
}

// A function, not a global: a global would run AVX-512 code at start-up on any CPU.
inline __m512 sign_mask() { return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(0x80000000u))); }

struct Projected512 {
  __m512i magnitude_index;
  __m512 value;  // signed level, not yet times alpha
};

template <int kTable = 0, bool kSigned = false>
inline Projected512 project(const Tables512& t, __m512 u) {
  Projected512 p;
  if (kSigned) {
    p.magnitude_index = magnitude_index<kTable>(t, _mm512_andnot_ps(sign_mask(), u));
    const __m512 magnitude = lookup<kTable>(t.magnitudes, t.vectors, p.magnitude_index);
    p.value = _mm512_or_ps(magnitude, _mm512_and_ps(u, sign_mask()));
  } else {
    p.magnitude_index = magnitude_index<kTable>(t, u);
    p.value = lookup<kTable>(t.magnitudes, t.vectors, p.magnitude_index);
  }
  return p;
}

// body<kTable>() with kCells where the cells apply (InputSpace::one_check()), else with the table
// size as a constant where it is 4, 8 or 16 (PoT 5-bit weights and 4-bit activations), so that
// the search unrolls and its table stays in a register.
template <typename Body>
auto with_table_size(const RangeArgs& a, Body body) {
  if (a.space->one_check()) return body(std::integral_constant<int, kCells>{});
  switch (a.tables->table_size) {
    case 4: return body(std::integral_constant<int, 4>{});
    case 8: return body(std::integral_constant<int, 8>{});
    case 16: return body(std::integral_constant<int, 16>{});
    default: return body(std::integral_constant<int, 0>{});
  }
}

inline __mmask16 tail_mask(size_t remaining) {
  return remaining >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << remaining) - 1);
}

inline __mmask16 nan_lanes(__m512 v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); }

template <int kTable>
size_t quantize_avx512_impl(const RangeArgs& a, size_t begin, size_t end) {
  const Tables512 t(a);
  const __m512i zero_index = _mm512_set1_epi32(a.zero_index);
  size_t nans = 0;
  for (size_t i = begin; i < end; i += 16) {
    const __mmask16 k = tail_mask(end - i);
    const __m512 u = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, a.input + i), t.shift);
    nans += __builtin_popcount(nan_lanes(u) & k);
    const Projected512 p = t.is_signed ? project<kTable, true>(t, u) : project<kTable, false>(t, u);
    __m512i index = p.magnitude_index;
    if (t.is_signed) {
      const __mmask16 negative = _mm512_movepi32_mask(_mm512_castps_si512(u));
      index = _mm512_mask_sub_epi32(_mm512_add_epi32(zero_index, index), negative, zero_index, index);
    }
    _mm512_mask_cvtepi32_storeu_epi8(a.index_out + i, k, index);
  }
  return nans;
}

size_t quantize_avx512(const RangeArgs& a, size_t begin, size_t end) {
  return with_table_size(a, [&](auto table) { return quantize_avx512_impl<decltype(table)::value>(a, begin, end); });
}

void dequantize_avx512(const RangeArgs& a, size_t begin, size_t end) {
  const __m512 alpha = _mm512_set1_ps(a.alpha);
  for (size_t i = begin; i < end; i += 16) {
    const __mmask16 k = tail_mask(end - i);
    const __m512i index = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, a.index_in + i));
    const __m512 level = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, index, a.full_levels, 4);
    _mm512_mask_storeu_ps(a.out + i, k, _mm512_mul_ps(level, alpha));
  }
}

// bfloat16_bits of 16 floats (round to nearest even, NaN -> 0x7FC0), in the low 16 bits of each lane.
inline __m512i to_bfloat16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i bias =
      _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF));
  return _mm512_mask_mov_epi32(_mm512_srli_epi32(_mm512_add_epi32(bits, bias), 16), nan_lanes(v),
                               _mm512_set1_epi32(0x7FC0));
}

// body(i, mask) for each vector of [begin, end): R whole vectors a trip, then the tail.
template <int R, typename Body>
__attribute__((always_inline)) inline void for_each_vector(size_t begin, size_t end, Body body) {
  size_t i = begin;
  for (; i + 16 * R <= end; i += 16 * R)
    for (int r = 0; r < R; ++r) body(i + 16 * r, __mmask16(0xFFFF));
  for (; i < end; i += 16) body(i, tail_mask(end - i));
}

template <int kTable, bool kSigned, bool kBf16>
void forward_avx512_impl(const RangeArgs& a, size_t begin, size_t end) {
  const Tables512 t(a);
  const __m512 nan = _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN());
  const float* input = a.input;
  float* out = a.out;
  uint16_t* out_bf16 = a.out_bf16;
  for_each_vector<4>(
      begin, end, [&](size_t i, __mmask16 k) __attribute__((always_inline)) {
        const __m512 u = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, input + i), t.shift);
        const __m512 v =
            _mm512_mask_mov_ps(_mm512_mul_ps(project<kTable, kSigned>(t, u).value, t.alpha), nan_lanes(u), nan);
        if constexpr (kBf16) {
          // A masked vpmovdw to memory is microcoded on Zen 4 and 5: the whole vectors use a plain store.
          if (k == 0xFFFF)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_bf16 + i), _mm512_cvtepi32_epi16(to_bfloat16(v)));
          else _mm512_mask_cvtepi32_storeu_epi16(out_bf16 + i, k, to_bfloat16(v));
        } else {
          _mm512_mask_storeu_ps(out + i, k, v);
        }
      });
}

void forward_avx512(const RangeArgs& a, size_t begin, size_t end) {
  with_table_size(a, [&](auto table) {
    constexpr int kTable = decltype(table)::value;
    const bool bf16 = a.out_bf16 != nullptr;
    if (a.tables->is_signed)
      bf16 ? forward_avx512_impl<kTable, true, true>(a, begin, end)
           : forward_avx512_impl<kTable, true, false>(a, begin, end);
    else
      bf16 ? forward_avx512_impl<kTable, false, true>(a, begin, end)
           : forward_avx512_impl<kTable, false, false>(a, begin, end);
  });
}

// The sign, the gradient's type and a scale of 1 are template arguments, so that the loop has no
// branch; the STE variant becomes masks.
template <int kTable, bool kSigned, bool kBf16, bool kUnitScale>
double backward_avx512_impl(const RangeArgs& a, size_t begin, size_t end) {
  const Tables512 t(a);
  // cifar passes the gradient below 0 (unsigned sets) or outside [-1, 1] (signed sets).
  const __mmask16 pass_clipped = a.variant == SteVariant::cifar ? 0xFFFF : 0;
  const __m512 below_bound = _mm512_set1_ps(a.space->below_zero(a.variant));
  const __m512 nan = _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN());
  const float* input = a.input;
  const float* grad_output = a.grad_output;
  const uint16_t* grad_output_bf16 = a.grad_output_bf16;
  float* grad_input = a.grad_input;
  __m512d sum_low = _mm512_setzero_pd(), sum_high = _mm512_setzero_pd();
  for_each_vector<4>(
      begin, end, [&](size_t i, __mmask16 k) __attribute__((always_inline)) {
        const __m512 u = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, input + i), t.shift);
        __m512 g;
        if constexpr (kBf16)
          g = _mm512_castsi512_ps(
              _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, grad_output_bf16 + i)), 16));
        else g = _mm512_maskz_loadu_ps(k, grad_output + i);
        const __m512 x = _mm512_div_ps(kUnitScale ? u : _mm512_div_ps(u, t.scale), t.alpha);
        const Projected512 p = project<kTable, kSigned>(t, u);
        __m512 term = _mm512_mul_ps(g, _mm512_sub_ps(p.value, x));
        __mmask16 blocked;  // lanes whose input gradient is 0
        if constexpr (kSigned) {
          const __mmask16 outside = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign_mask(), u), t.above_one, _CMP_GE_OQ);
          term = _mm512_mask_mov_ps(term, outside, _mm512_xor_ps(g, _mm512_and_ps(u, sign_mask())));
          blocked = outside & ~pass_clipped;
        } else {
          const __mmask16 above = _mm512_cmp_ps_mask(u, t.above_one, _CMP_GE_OQ);
          const __mmask16 below = _mm512_cmp_ps_mask(u, below_bound, _CMP_LT_OQ);
          term = _mm512_mask_mov_ps(_mm512_mask_mov_ps(term, above, g), below, _mm512_setzero_ps());
          blocked = above | (below & ~pass_clipped);
        }
        const __mmask16 is_nan = nan_lanes(u);
        term = _mm512_maskz_mov_ps(k, _mm512_mask_mov_ps(term, is_nan, nan));
        const __m512 pass = _mm512_mask_mov_ps(_mm512_maskz_mov_ps(__mmask16(~blocked), g), is_nan, nan);
        _mm512_mask_storeu_ps(grad_input + i, k, kUnitScale ? pass : _mm512_div_ps(pass, t.scale));
        sum_low = _mm512_add_pd(sum_low, _mm512_cvtps_pd(_mm512_castps512_ps256(term)));
        sum_high = _mm512_add_pd(sum_high,
                                 _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(term), 1))));
      });
  return _mm512_reduce_add_pd(_mm512_add_pd(sum_low, sum_high));
}

template <int kTable, bool kSigned>
double backward_avx512_signed(const RangeArgs& a, size_t begin, size_t end) {
  const bool bf16 = a.grad_output_bf16 != nullptr, unit = a.space->unit_scale;
  if (bf16)
    return unit ? backward_avx512_impl<kTable, kSigned, true, true>(a, begin, end)
                : backward_avx512_impl<kTable, kSigned, true, false>(a, begin, end);
  return unit ? backward_avx512_impl<kTable, kSigned, false, true>(a, begin, end)
              : backward_avx512_impl<kTable, kSigned, false, false>(a, begin, end);
}

double backward_avx512(const RangeArgs& a, size_t begin, size_t end) {
  return with_table_size(a, [&](auto table) {
    constexpr int kTable = decltype(table)::value;
    return a.tables->is_signed ? backward_avx512_signed<kTable, true>(a, begin, end)
                               : backward_avx512_signed<kTable, false>(a, begin, end);
  });
}

}  // namespace

const IsaKernels kAvx512Kernels = {quantize_avx512, dequantize_avx512, forward_avx512, backward_avx512};

}  // namespace apot::kernels::detail
