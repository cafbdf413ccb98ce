// Internal interface between the projection driver (projection.cpp) and the per-ISA files.
// Each ISA provides the same four range functions; the driver splits tensors into chunks,
// runs them on threads and reduces the alpha gradient in chunk order.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "apot/kernels/projection.h"
#include "cells.h"

namespace apot::kernels::detail {

// The thresholds moved from x = ((input - shift) / scale) / alpha back to u = input - shift.
// g(u) = (u / scale) / alpha is monotone in u and odd, so for every float u
//   g(u) >= t  <=>  u >= lower_bound(t),
// which lets the SIMD paths find levels and clipping masks from u without dividing, with
// exactly the decisions of the scalar reference (which divides).
struct InputSpace {
  std::vector<float> thresholds;  // lower_bound(threshold_i), padded with +inf like Tables
  float above_one;                // lower_bound(next float after 1): g(u) > 1 <=> u >= above_one
  float non_negative;             // lower_bound(0): g(u) < 0 <=> u < non_negative
  float positive;                 // lower_bound(next float after 0): g(u) <= 0 <=> u < positive
  bool unit_scale;                // scale == 1: u / scale == u, the division can be skipped
  // The cells of cells.h over the thresholds (of magnitudes), where 64 cells with one check
  // apply to a set of at most 16 magnitudes (APoT and uniform weights of 3-5 bits and
  // activations of 2-4, PoT weights of 3-4 and activations of 2-3); else cells.cells == 0.
  // `check` holds the thresholds padded with NaN, which no value passes.
  Cells cells;
  float check[16];
  bool one_check() const { return cells.cells == 64 && cells.checks == 1; }
  // u < below_zero(variant): the backward pass's "below 0", x < 0 (x <= 0 for rectified).
  float below_zero(SteVariant variant) const { return variant == SteVariant::rectified ? positive : non_negative; }
};

struct RangeArgs {
  const Projector::Tables* tables;
  const InputSpace* space;
  const float* full_levels;  // levels() of the set, ascending (dequantize)
  float alpha;
  Normalisation norm;
  SteVariant variant;
  const float* input;
  const float* grad_output;
  const uint8_t* index_in;
  float* out;
  // When set, forward writes bfloat16 here instead of out (bfloat16_bits of each value), and
  // backward reads the output gradient from here instead of grad_output.
  uint16_t* out_bf16 = nullptr;
  const uint16_t* grad_output_bf16 = nullptr;
  float* grad_input;
  uint8_t* index_out;
  int zero_index;
};

struct IsaKernels {
  // Each returns the number of NaN inputs seen in [begin, end) (quantize) or nothing.
  size_t (*quantize)(const RangeArgs& a, size_t begin, size_t end);
  void (*dequantize)(const RangeArgs& a, size_t begin, size_t end);
  void (*forward)(const RangeArgs& a, size_t begin, size_t end);
  // Returns the alpha gradient of [begin, end), summed in double.
  double (*backward)(const RangeArgs& a, size_t begin, size_t end);
};

extern const IsaKernels kScalarKernels;
extern const IsaKernels kAvx2Kernels;
extern const IsaKernels kAvx512Kernels;

// ---- the scalar reference, one element at a time (also used for SIMD tails) ----
// Internal linkage: every ISA file compiles its own copy with its own instruction set, so the
// linker cannot hand one file's copy (say, AVX2 code) to another (the scalar path).
namespace {

// LibTorch's float -> bfloat16 conversion (c10::BFloat16): round to nearest even; NaN -> 0x7FC0.
inline uint16_t bfloat16_bits(float v) {
  if (std::isnan(v)) return 0x7FC0;
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float from_bfloat16(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

inline float normalised_input(const RangeArgs& a, float in) { return ((in - a.norm.shift) / a.norm.scale) / a.alpha; }

// Number of thresholds <= m: the index of the nearest magnitude (ties upward).
inline int magnitude_index(const Projector::Tables& t, float m) {
  int index = 0;
  for (int i = 0; i + 1 < t.num_magnitudes; ++i)
    if (m >= t.thresholds[i]) index = i + 1;
  return index;
}

struct Projected {
  int magnitude_index;
  float value;  // signed level, not yet times alpha
};

inline Projected project_element(const Projector::Tables& t, float x) {
  if (t.is_signed) {
    const float c = std::fmin(std::fmax(x, -1.0f), 1.0f);
    const int k = magnitude_index(t, std::fabs(c));
    return {k, std::copysign(t.magnitudes[k], c)};
  }
  const float c = std::fmin(std::fmax(x, 0.0f), 1.0f);
  const int k = magnitude_index(t, c);
  return {k, t.magnitudes[k]};
}

inline float forward_element(const RangeArgs& a, float in) {
  const float x = normalised_input(a, in);
  if (std::isnan(x)) return std::numeric_limits<float>::quiet_NaN();
  return project_element(*a.tables, x).value * a.alpha;
}

// Writes the input gradient of one element and returns its alpha-gradient term.
inline float backward_element(const RangeArgs& a, float in, float g, float* grad_in) {
  const float x = normalised_input(a, in);
  const bool cifar = a.variant == SteVariant::cifar;
  float pass, term;
  if (std::isnan(x)) {
    *grad_in = std::numeric_limits<float>::quiet_NaN();
    return std::numeric_limits<float>::quiet_NaN();
  }
  if (a.tables->is_signed) {
    if (x > 1.0f || x < -1.0f) {
      term = x > 0.0f ? g : -g;
      pass = cifar ? g : 0.0f;
    } else {
      term = g * (project_element(*a.tables, x).value - x);
      pass = g;
    }
  } else if (x > 1.0f) {
    term = g;
    pass = 0.0f;
  } else if (x < 0.0f || (x == 0.0f && a.variant == SteVariant::rectified)) {
    term = 0.0f;
    pass = cifar ? g : 0.0f;
  } else {
    term = g * (project_element(*a.tables, x).value - x);
    pass = g;
  }
  *grad_in = pass / a.norm.scale;
  return term;
}

inline uint8_t index_element(const RangeArgs& a, float in) {
  const float x = normalised_input(a, in);
  const Projected p = project_element(*a.tables, x);
  if (!a.tables->is_signed) return static_cast<uint8_t>(p.magnitude_index);
  const int signed_index = std::signbit(p.value) ? -p.magnitude_index : p.magnitude_index;
  return static_cast<uint8_t>(a.zero_index + signed_index);
}

}  // namespace
}  // namespace apot::kernels::detail
