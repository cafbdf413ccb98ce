// Projection kernels: float -> level index, index -> value, and the fused reparameterised
// clipping function (RCF) of APOT_SPEC section 2, forward and backward.
//
// Every operation has a scalar reference and SIMD paths (AVX2, AVX-512) chosen at run time;
// the environment variable APOT_ISA=scalar|avx2|avx512 forces one (an error if the CPU lacks
// it). Large tensors are split into fixed chunks processed by OpenMP threads; the alpha
// gradient is summed per chunk in double and the chunk sums are added in chunk order, so
// results do not depend on the number of threads.
//
// Behaviour at the edges (documented in docs/KERNELS.md):
// - x = input / alpha (after the optional normalisation (input - shift) / scale).
// - Ties (x exactly at the midpoint of two levels) go to the larger magnitude, so for signed
//   sets away from zero; the magnitude of -0 is 0.
// - +-Inf clip to the extreme levels; NaN inputs give NaN outputs, a NaN input gradient and a
//   NaN alpha gradient, so a NaN is never silently hidden.
// - alpha must be finite and at least kMinAlpha, otherwise std::invalid_argument.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "apot/levels/level_set.h"

namespace apot::kernels {

enum class Isa { scalar, avx2, avx512 };

const char* to_string(Isa isa);
// Paths this CPU (and this build) can run, scalar first.
std::vector<Isa> supported_isas();
// "scalar" | "avx2" | "avx512"; throws for an unknown name or one this CPU lacks.
Isa parse_isa(const std::string& name);
// The path used when none is given: APOT_ISA if set, else the best supported one.
Isa default_isa();

// Straight-through estimator variant of the input gradient (APOT_SPEC section 2). rectified:
// the input is the value before a ReLU, which the quantiser applies itself (unsigned level sets
// only): the forward pass is unchanged (negative inputs quantise to 0 either way) and the input
// gradient is 0 where input <= 0, as ReLU's gradient makes it; above alpha as imagenet's. The
// network uses it to fuse a ReLU into the quantiser that alone reads it (one pass fewer each way).
enum class SteVariant { cifar, imagenet, rectified };
SteVariant parse_ste_variant(const std::string& name);

constexpr float kMinAlpha = 1e-8f;

// Optional normalisation applied before dividing by alpha: (input - shift) / scale.
// The default is the identity. Used for weight normalisation with detached statistics.
struct Normalisation {
  float shift = 0.0f;
  float scale = 1.0f;
};

namespace detail {
struct InputSpace;
}

// A projector with its thresholds already moved into the input space of one alpha and
// normalisation (Projector::prepare): for inference, where alpha is fixed, this saves the
// per-call preparation.
class PreparedProjection {
 public:
  float alpha() const { return alpha_; }

 private:
  friend class Projector;
  std::shared_ptr<const detail::InputSpace> space_;
  float alpha_ = 1.0f;
  Normalisation norm_;
  Isa isa_ = Isa::scalar;
};

// A level set prepared for the kernels (padded lookup tables). Cheap to build; build once per
// quantiser and reuse.
class Projector {
 public:
  explicit Projector(const levels::LevelSet& set);
  const levels::LevelSet& level_set() const { return set_; }

  // index[i] = position in level_set().levels() of the level nearest to clamp(x / alpha).
  void quantize(const float* input, size_t n, float alpha, uint8_t* index, Isa isa = default_isa(),
                Normalisation norm = {}) const;
  PreparedProjection prepare(float alpha, Isa isa = default_isa(), Normalisation norm = {}) const;
  void quantize(const PreparedProjection& prepared, const float* input, size_t n, uint8_t* index) const;
  // The thresholds t_i (ascending) in input space such that quantize(x, alpha) = the number of
  // t_i <= x for every float x (NaN: 0), with exactly the decisions of quantize(); for a signed
  // set, the index into its levels in ascending order (set.integers()). The engine requantises
  // with them.
  std::vector<float> input_thresholds(float alpha) const;
  // out[i] = levels()[index[i]] * alpha. Indices out of range throw.
  void dequantize(const uint8_t* index, size_t n, float alpha, float* out, Isa isa = default_isa()) const;

  // Fused RCF forward: out[i] = P(clamp(x_i)) * alpha.
  void forward(const float* input, size_t n, float alpha, float* out, Isa isa = default_isa(),
               Normalisation norm = {}) const;

  // Fused RCF backward: writes grad_input (d loss / d input, times 1/norm.scale) and returns
  // d loss / d alpha summed over all elements.
  double backward(const float* input, const float* grad_output, size_t n, float alpha, SteVariant variant,
                  float* grad_input, Isa isa = default_isa(), Normalisation norm = {}) const;

  // The same with bfloat16 on the convolution's side (qat's bf16 convolutions): forward_bf16
  // writes each value as bfloat16 bits (rounded to nearest even, as LibTorch converts; NaN is
  // 0x7FC0), backward_bf16 reads the output gradient as bfloat16 bits.
  void forward_bf16(const float* input, size_t n, float alpha, uint16_t* out, Isa isa = default_isa(),
                    Normalisation norm = {}) const;
  double backward_bf16(const float* input, const uint16_t* grad_output, size_t n, float alpha, SteVariant variant,
                       float* grad_input, Isa isa = default_isa(), Normalisation norm = {}) const;

  // Internal tables, exposed for the ISA files.
  struct Tables {
    std::vector<float> thresholds;  // padded to table_size with +inf
    std::vector<float> magnitudes;  // padded to table_size with the last magnitude
    int table_size;                 // power of two >= number of magnitudes
    int log2_table_size;
    int num_magnitudes;
    bool is_signed;
  };
  const Tables& tables() const { return tables_; }

 private:
  void forward_into(const float* input, size_t n, float alpha, float* out, uint16_t* out_bf16, Isa isa,
                    Normalisation norm) const;
  double backward_from(const float* input, const float* grad_output, const uint16_t* grad_output_bf16, size_t n,
                       float alpha, SteVariant variant, float* grad_input, Isa isa, Normalisation norm) const;

  levels::LevelSet set_;
  Tables tables_;
};

}  // namespace apot::kernels
