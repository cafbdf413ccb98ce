// Image transforms on uint8 HWC images.
#include "apot/data/transforms.h"

#include <algorithm>
#include <cmath>

namespace apot::data {

void TransformOptions::validate() const {
  if (resize_shorter < 0 || crop < 0 || pad < 0) throw DataError("transform sizes must not be negative");
  if (channels != 0 && channels != 1 && channels != 3) throw DataError("transform channels must be 1 or 3");
  if (mean.size() != std.size()) throw DataError("transform mean and std must have the same length");
  for (float s : std)
    if (!(s > 0)) throw DataError("transform std values must be positive");
}

uint64_t SampleRng::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int SampleRng::uniform_int(int upper) {
  return upper <= 1 ? 0 : static_cast<int>(next() % static_cast<uint64_t>(upper));
}

uint64_t mix_seed(uint64_t a, uint64_t b) {
  SampleRng r(a * 0x2545F4914F6CDD1Dull + b);
  return r.next();
}

Image resize_bilinear(const Image& in, int height, int width) {
  Image out;
  out.height = height;
  out.width = width;
  out.channels = in.channels;
  out.pixels.resize(static_cast<size_t>(height) * width * in.channels);
  const float sy = float(in.height) / height, sx = float(in.width) / width;
  for (int y = 0; y < height; ++y) {
    const float fy = std::max(0.0f, (y + 0.5f) * sy - 0.5f);
    const int y0 = std::min(int(fy), in.height - 1), y1 = std::min(y0 + 1, in.height - 1);
    const float wy = fy - y0;
    for (int x = 0; x < width; ++x) {
      const float fx = std::max(0.0f, (x + 0.5f) * sx - 0.5f);
      const int x0 = std::min(int(fx), in.width - 1), x1 = std::min(x0 + 1, in.width - 1);
      const float wx = fx - x0;
      for (int c = 0; c < in.channels; ++c) {
        auto at = [&](int yy, int xx) { return float(in.pixels[(size_t(yy) * in.width + xx) * in.channels + c]); };
        const float v =
            (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) + wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1));
        out.pixels[(size_t(y) * width + x) * in.channels + c] =
            static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 255.0f)));
      }
    }
  }
  return out;
}

namespace {

Image convert_channels(const Image& in, int channels) {
  if (channels == 0 || channels == in.channels) return in;
  Image out{in.height, in.width, channels, {}};
  const size_t n = size_t(in.height) * in.width;
  out.pixels.resize(n * channels);
  for (size_t p = 0; p < n; ++p) {
    if (channels == 3) {
      for (int c = 0; c < 3; ++c) out.pixels[p * 3 + c] = in.pixels[p];
    } else {
      const int sum = in.pixels[p * 3] + in.pixels[p * 3 + 1] + in.pixels[p * 3 + 2];
      out.pixels[p] = static_cast<uint8_t>((sum + 1) / 3);
    }
  }
  return out;
}

}  // namespace

Image transform_image(const Image& source, const TransformOptions& t, uint64_t sample_seed) {
  SampleRng rng(sample_seed);
  Image img = convert_channels(source, t.channels);
  if (t.resize_shorter > 0) {
    const int shorter = std::min(img.height, img.width);
    const int h = int(std::lround(double(img.height) * t.resize_shorter / shorter));
    const int w = int(std::lround(double(img.width) * t.resize_shorter / shorter));
    if (h != img.height || w != img.width) img = resize_bilinear(img, h, w);
  }
  const int pad = t.random_crop ? t.pad : 0;
  const int out_h = t.crop > 0 ? t.crop : img.height, out_w = t.crop > 0 ? t.crop : img.width;
  const int padded_h = img.height + 2 * pad, padded_w = img.width + 2 * pad;
  if (out_h > padded_h || out_w > padded_w)
    throw DataError("crop " + std::to_string(t.crop) + " is larger than the image (" + std::to_string(img.height) +
                    "x" + std::to_string(img.width) + ")");
  int top, left;
  if (t.random_crop) {
    top = rng.uniform_int(padded_h - out_h + 1);
    left = rng.uniform_int(padded_w - out_w + 1);
  } else {
    top = (padded_h - out_h) / 2;
    left = (padded_w - out_w) / 2;
  }
  const bool flip = t.hflip && (rng.next() & 1);
  Image out{out_h, out_w, img.channels, std::vector<uint8_t>(size_t(out_h) * out_w * img.channels, 0)};
  for (int y = 0; y < out_h; ++y) {
    const int sy = y + top - pad;
    if (sy < 0 || sy >= img.height) continue;
    for (int x = 0; x < out_w; ++x) {
      const int sx = x + left - pad;
      if (sx < 0 || sx >= img.width) continue;
      const int dx = flip ? out_w - 1 - x : x;
      std::copy_n(&img.pixels[(size_t(sy) * img.width + sx) * img.channels], img.channels,
                  &out.pixels[(size_t(y) * out_w + dx) * img.channels]);
    }
  }
  return out;
}

void to_normalised_chw(const Image& img, const TransformOptions& t, float* out) {
  const size_t plane = size_t(img.height) * img.width;
  for (int c = 0; c < img.channels; ++c) {
    const float mean = t.mean.empty() ? 0.0f : t.mean[std::min<size_t>(c, t.mean.size() - 1)];
    const float inv_std = t.std.empty() ? 1.0f : 1.0f / t.std[std::min<size_t>(c, t.std.size() - 1)];
    for (size_t p = 0; p < plane; ++p)
      out[c * plane + p] = (img.pixels[p * img.channels + c] / 255.0f - mean) * inv_std;
  }
}

}  // namespace apot::data
