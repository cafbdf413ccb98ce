// Shared helpers of the projection tests: the level sets to sweep, inputs with many
// interesting values, and the plain O(N*L) argmin projection the reference is checked against.
#pragma once

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "apot/kernels/projection.h"
#include "apot/levels/level_set.h"

namespace apot::test {

inline std::vector<levels::LevelSet> all_level_sets() {
  using levels::Kind;
  using levels::Role;
  std::vector<levels::LevelSet> sets;
  for (Role role : {Role::weight, Role::activation}) {
    for (int bits = 2; bits <= 6; ++bits) {
      sets.push_back(levels::LevelSet::make(Kind::apot, bits, role));
      sets.push_back(levels::LevelSet::make(Kind::pot, bits, role));
    }
    for (int bits = 2; bits <= 8; ++bits) sets.push_back(levels::LevelSet::make(Kind::uniform, bits, role));
  }
  return sets;
}

// Random values around the clipping range, plus every level, every threshold and their float
// neighbours (all times alpha), plus +-0.
inline std::vector<float> interesting_inputs(const levels::LevelSet& set, float alpha, size_t random_count,
                                             unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.6f * alpha);
  std::uniform_real_distribution<float> wide(-2.5f * alpha, 2.5f * alpha);
  std::vector<float> v;
  for (size_t i = 0; i < random_count; ++i) v.push_back(i % 2 ? normal(rng) : wide(rng));
  auto add_with_neighbours = [&](float unit) {
    for (float sign : {1.0f, -1.0f}) {
      const float x = sign * unit;
      v.push_back(x * alpha);
      v.push_back(std::nextafter(x, -INFINITY) * alpha);
      v.push_back(std::nextafter(x, INFINITY) * alpha);
    }
  };
  for (float level : set.magnitudes()) add_with_neighbours(level);
  for (float t : set.thresholds()) {
    add_with_neighbours(t);
    // A dense run of floats around the threshold as an input value, where the SIMD paths'
    // division-free decisions must agree with the reference's division.
    for (float sign : {1.0f, -1.0f}) {
      float up = sign * t * alpha, down = up;
      for (int step = 0; step < 6; ++step) {
        v.push_back(up);
        v.push_back(down);
        up = std::nextafter(up, INFINITY);
        down = std::nextafter(down, -INFINITY);
      }
    }
  }
  for (float edge : {1.0f, 0.0f}) {  // the clipping edges, for the masks of the backward pass
    float up = edge * alpha, down = up;
    for (int step = 0; step < 6; ++step) {
      v.push_back(up);
      v.push_back(-down);
      up = std::nextafter(up, INFINITY);
      down = std::nextafter(down, -INFINITY);
    }
  }
  v.push_back(0.0f);
  v.push_back(-0.0f);
  return v;
}

// The nearest level of the full set to clamp(x), found by comparing with every level in double.
// Ties go to the level of larger magnitude (the documented rule).
inline float argmin_projection(const levels::LevelSet& set, float x) {
  const double lo = set.is_signed() ? -1.0 : 0.0;
  const double c = std::fmin(std::fmax(double(x), lo), 1.0);
  const std::vector<float> levels = set.levels();
  float best = levels[0];
  double best_distance = INFINITY;
  for (float level : levels) {
    const double d = std::fabs(c - double(level));
    if (d < best_distance || (d == best_distance && std::fabs(level) > std::fabs(best))) {
      best = level;
      best_distance = d;
    }
  }
  return best;
}

inline bool same_bits(float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub || (std::isnan(a) && std::isnan(b));
}

}  // namespace apot::test
