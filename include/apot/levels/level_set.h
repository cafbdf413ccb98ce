// Quantisation level sets (APoT, PoT, uniform, ternary) and their exact integer form.
//
// A LevelSet is the list of values a quantiser may output for a clipping threshold of 1,
// built exactly as the reference code builds it (APOT_SPEC section 1), plus the integer
// form used for inference: every level is integer / denominator with one common
// denominator per set. Signed sets (weights, and activations that can be negative) are
// symmetric: they are stored as the
// non-negative magnitudes, and the full set is -magnitudes (reversed, without 0) followed
// by the magnitudes.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace apot::levels {

enum class Kind { apot, pot, uniform, ternary };
// Activations after a ReLU are unsigned; a signed activation (the input of a layer that no ReLU
// precedes, e.g. after MobileNetV2's linear bottlenecks) uses the weights' symmetric set.
enum class Role { weight, activation, signed_activation };

// Thrown for every unsupported combination of kind, bits and role.
class LevelSetError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

Kind parse_kind(const std::string& name);  // "apot" | "pot" | "uniform" | "ternary"
Role parse_role(const std::string& name);  // "weight" | "activation" | "signed_activation"
const char* to_string(Kind kind);
const char* to_string(Role role);

class LevelSet {
 public:
  // The set a quantiser of `bits` bits in `role` uses. Signed sets (weights and signed
  // activations) spend one bit on the sign (magnitude set with B = bits-1) and are ternary at
  // 2 bits for every kind.
  // Unsigned or signed activations, as a layer's input needs.
  static LevelSet make_activation(Kind kind, int bits, bool is_signed) {
    return make(kind, bits, is_signed ? Role::signed_activation : Role::activation);
  }
  static LevelSet make(Kind kind, int bits, Role role);

  Kind kind() const { return kind_; }  // ternary when 2-bit weights were asked for
  Kind requested_kind() const { return requested_kind_; }
  int bits() const { return bits_; }
  Role role() const { return role_; }
  bool is_signed() const { return role_ != Role::activation; }
  std::string name() const;  // e.g. "apot-w4", "uniform-a8" or "apot-s4" (signed activation)

  // Non-negative magnitudes, ascending, first is 0, last is 1, as float32 values computed
  // the way the reference computes them (bit-exact).
  const std::vector<float>& magnitudes() const { return magnitudes_; }
  // Integer form of the magnitudes: magnitude_integers()[i] / denominator() == level i exactly.
  const std::vector<int64_t>& magnitude_integers() const { return magnitude_integers_; }
  int64_t denominator() const { return denominator_; }

  // Thresholds for projection of a magnitude in [0, 1]: element i is the midpoint of
  // magnitudes i and i+1 rounded up to the next float32, so that for any float m,
  // (m >= thresholds[i]) holds exactly when m is at least the exact midpoint.
  // Ties therefore go to the larger magnitude.
  const std::vector<float>& thresholds() const { return thresholds_; }

  // The full set, ascending: for signed sets -magnitudes reversed (without 0), then magnitudes.
  std::vector<float> levels() const;
  std::vector<int64_t> integers() const;
  size_t size() const;  // number of distinct levels
  // Index of level 0 within levels() (0 for unsigned sets).
  size_t zero_index() const { return is_signed() ? magnitudes_.size() - 1 : 0; }

  // Smallest two's-complement (signed sets) or unsigned width in {8, 16, 32, 64} that
  // holds every integer level.
  int storage_bits() const;

 private:
  Kind kind_ = Kind::apot;
  Kind requested_kind_ = Kind::apot;
  int bits_ = 0;
  Role role_ = Role::activation;
  std::vector<float> magnitudes_;
  std::vector<int64_t> magnitude_integers_;
  int64_t denominator_ = 1;
  std::vector<float> thresholds_;
};

// The raw APoT sums of APOT_SPEC section 1 for B = 2..6, in units of 2^-raw_exponent
// (e.g. B = 4: units of 1/64). Exposed for tests and documentation.
struct RawSums {
  std::vector<int64_t> sums;  // ascending, distinct
  int raw_exponent;           // sums are multiples of 2^-raw_exponent
};
RawSums apot_raw_sums(int B);

}  // namespace apot::levels
