// Level sets: one table row per quantiser kind (name, bit range, magnitude builder), so that
// adding a kind is adding a row. See APOT_SPEC section 1 for the sets themselves.
#include "apot/levels/level_set.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

namespace apot::levels {
namespace {

// Magnitudes of one set for the magnitude parameter B (B = bits for activations,
// bits - 1 for weights).
struct Magnitudes {
  std::vector<int64_t> integers;  // ascending, integers[0] == 0, back() == denominator
  int64_t denominator;
  std::vector<float> values;  // float32 values exactly as the reference computes them
};

// APoT and PoT: the reference builds float sums of powers of two, then multiplies every
// value by the float32 reciprocal of the largest one (values.mul(1.0 / max(values))).
Magnitudes normalise_power_sums(const std::vector<int64_t>& sums, int raw_exponent) {
  Magnitudes m;
  m.integers = sums;
  m.denominator = sums.back();
  const double unit = std::ldexp(1.0, -raw_exponent);
  const float max_value = static_cast<float>(static_cast<double>(sums.back()) * unit);
  const float reciprocal = 1.0f / max_value;
  for (int64_t s : sums) {
    const float v = static_cast<float>(static_cast<double>(s) * unit);
    m.values.push_back(v * reciprocal);
  }
  return m;
}

Magnitudes build_apot(int B) {
  const RawSums raw = apot_raw_sums(B);
  return normalise_power_sums(raw.sums, raw.raw_exponent);
}

// {0} U {2^-1, ..., 2^-(2^B - 1)} before normalising, i.e. {0, 1, 1/2, ..., 2^-(2^B - 2)}.
Magnitudes build_pot(int B) {
  const int count = (1 << B) - 1;  // non-zero terms
  std::vector<int64_t> sums{0};
  for (int i = count - 1; i >= 0; --i) sums.push_back(int64_t{1} << (count - 1 - i));
  return normalise_power_sums(sums, count);
}

// k / (2^B - 1): the reference rounds x * (2^B - 1) and divides by 2^B - 1 in float32.
Magnitudes build_uniform(int B) {
  Magnitudes m;
  m.denominator = (int64_t{1} << B) - 1;
  for (int64_t k = 0; k <= m.denominator; ++k) {
    m.integers.push_back(k);
    m.values.push_back(static_cast<float>(k) / static_cast<float>(m.denominator));
  }
  return m;
}

Magnitudes build_ternary(int) { return Magnitudes{{0, 1}, 1, {0.0f, 1.0f}}; }

struct KindRow {
  Kind kind;
  const char* name;
  int min_bits, max_bits;  // inclusive range of total bits, for both roles
  bool weights_only;
  Magnitudes (*build)(int B);
};

constexpr KindRow kKinds[] = {
    {Kind::apot, "apot", 2, 6, false, build_apot},
    {Kind::pot, "pot", 2, 6, false, build_pot},
    {Kind::uniform, "uniform", 2, 8, false, build_uniform},
    {Kind::ternary, "ternary", 2, 2, true, build_ternary},
};

const KindRow& row_of(Kind kind) {
  for (const KindRow& row : kKinds)
    if (row.kind == kind) return row;
  throw LevelSetError("unknown quantiser kind");
}

// Midpoint of two floats rounded up to a float: exact comparisons in float32.
float threshold_between(float lower, float upper) {
  const double mid = (static_cast<double>(lower) + static_cast<double>(upper)) / 2.0;
  float t = static_cast<float>(mid);
  if (static_cast<double>(t) < mid) t = std::nextafter(t, INFINITY);
  return t;
}

}  // namespace

RawSums apot_raw_sums(int B) {
  // Term lists as exponents e (term 2^-e); 0 stands for the zero term.
  std::vector<std::vector<int>> terms;
  switch (B) {
    case 2: terms = {{1, 2, 3}}; break;
    case 3: terms = {{1, 2, 4}, {3}}; break;
    case 4: terms = {{1, 3, 5}, {2, 4, 6}}; break;
    case 5: terms = {{1, 3, 6}, {2, 4, 7}, {5}}; break;
    case 6: terms = {{1, 4, 7}, {2, 5, 8}, {3, 6, 9}}; break;
    default:
      throw LevelSetError("APoT is defined for B = 2..6 (the reference yields NaN otherwise), got B = " +
                          std::to_string(B));
  }
  int raw_exponent = 0;
  for (const auto& list : terms)
    for (int e : list) raw_exponent = std::max(raw_exponent, e);
  std::set<int64_t> sums{0};
  for (const auto& list : terms) {
    std::set<int64_t> next;
    for (int64_t s : sums) {
      next.insert(s);  // the zero term
      for (int e : list) next.insert(s + (int64_t{1} << (raw_exponent - e)));
    }
    sums = std::move(next);
  }
  return RawSums{std::vector<int64_t>(sums.begin(), sums.end()), raw_exponent};
}

Kind parse_kind(const std::string& name) {
  for (const KindRow& row : kKinds)
    if (name == row.name) return row.kind;
  throw LevelSetError("unknown quantiser kind '" + name + "' (expected apot, pot, uniform or ternary)");
}

Role parse_role(const std::string& name) {
  if (name == "weight") return Role::weight;
  if (name == "activation") return Role::activation;
  if (name == "signed_activation") return Role::signed_activation;
  throw LevelSetError("unknown role '" + name + "' (expected weight, activation or signed_activation)");
}

const char* to_string(Kind kind) { return row_of(kind).name; }
const char* to_string(Role role) {
  return role == Role::weight ? "weight" : role == Role::activation ? "activation" : "signed_activation";
}

LevelSet LevelSet::make(Kind kind, int bits, Role role) {
  const KindRow& requested = row_of(kind);
  if (requested.weights_only && role != Role::weight)
    throw LevelSetError(std::string(requested.name) + " levels exist only for weights");
  if (bits < requested.min_bits || bits > requested.max_bits)
    throw LevelSetError(std::string(requested.name) + " " + to_string(role) + " quantisers support " +
                        std::to_string(requested.min_bits) + ".." + std::to_string(requested.max_bits) + " bits, got " +
                        std::to_string(bits));
  // 2-bit weights are ternary for every kind (APOT_SPEC section 1); so are 2-bit signed activations.
  const bool is_signed = role != Role::activation;
  const bool ternary = is_signed && bits == 2;
  const KindRow& row = ternary ? row_of(Kind::ternary) : requested;
  const int B = is_signed ? bits - 1 : bits;
  Magnitudes m = row.build(B);

  LevelSet set;
  set.kind_ = row.kind;
  set.requested_kind_ = kind;
  set.bits_ = bits;
  set.role_ = role;
  set.magnitudes_ = std::move(m.values);
  set.magnitude_integers_ = std::move(m.integers);
  set.denominator_ = m.denominator;
  for (size_t i = 0; i + 1 < set.magnitudes_.size(); ++i)
    set.thresholds_.push_back(threshold_between(set.magnitudes_[i], set.magnitudes_[i + 1]));
  return set;
}

std::string LevelSet::name() const {
  const char* role = role_ == Role::weight ? "-w" : role_ == Role::activation ? "-a" : "-s";
  return std::string(to_string(kind_)) + role + std::to_string(bits_);
}

size_t LevelSet::size() const { return is_signed() ? 2 * magnitudes_.size() - 1 : magnitudes_.size(); }

std::vector<float> LevelSet::levels() const {
  std::vector<float> out;
  if (is_signed())
    for (size_t i = magnitudes_.size() - 1; i >= 1; --i) out.push_back(-magnitudes_[i]);
  out.insert(out.end(), magnitudes_.begin(), magnitudes_.end());
  return out;
}

std::vector<int64_t> LevelSet::integers() const {
  std::vector<int64_t> out;
  if (is_signed())
    for (size_t i = magnitude_integers_.size() - 1; i >= 1; --i) out.push_back(-magnitude_integers_[i]);
  out.insert(out.end(), magnitude_integers_.begin(), magnitude_integers_.end());
  return out;
}

int LevelSet::storage_bits() const {
  const int64_t top = magnitude_integers_.back();
  for (int width : {8, 16, 32}) {
    const int64_t limit = is_signed() ? (int64_t{1} << (width - 1)) - 1 : (int64_t{1} << width) - 1;
    if (top <= limit) return width;
  }
  return 64;
}

}  // namespace apot::levels
