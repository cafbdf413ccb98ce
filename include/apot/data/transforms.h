// Image transforms (resize, pad, crop, flip, channel conversion) on uint8 HWC images, and the
// conversion to a normalised float CHW buffer. Random choices come from a per-sample seed, so
// the same seed gives the same image whatever thread runs it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apot/data/dataset.h"

namespace apot::data {

struct TransformOptions {
  int resize_shorter = 0;        // bilinear resize so the shorter side has this length (0: none)
  int crop = 0;                  // square output of this side (0: keep the size)
  bool random_crop = false;      // random crop position instead of the center
  int pad = 0;                   // zero padding on every side before a random crop
  bool hflip = false;            // random horizontal flip with probability 1/2
  int channels = 0;              // output channels: 0 keeps them; 1 averages RGB; 3 replicates grey
  std::vector<float> mean, std;  // per output channel, on the [0, 1] scale (empty: 0 and 1)

  void validate() const;  // throws DataError for inconsistent options
};

// A small deterministic generator (splitmix64) for per-sample randomness.
class SampleRng {
 public:
  explicit SampleRng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  int uniform_int(int upper_exclusive);  // 0 .. upper-1
 private:
  uint64_t state_;
};
uint64_t mix_seed(uint64_t a, uint64_t b);

Image resize_bilinear(const Image& in, int height, int width);
Image transform_image(const Image& in, const TransformOptions& t, uint64_t sample_seed);
// Writes channels x height x width floats ((pixel / 255 - mean) / std).
void to_normalised_chw(const Image& img, const TransformOptions& t, float* out);

}  // namespace apot::data
