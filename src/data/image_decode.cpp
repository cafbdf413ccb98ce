// JPEG (libjpeg-turbo's TurboJPEG API, with scaled decoding) and PNG (libpng's simplified API).
#include <png.h>
#include <turbojpeg.h>

#include <cstring>

#include "apot/data/dataset.h"

namespace apot::data {
namespace {

constexpr int kMaxSide = 1 << 14;

Image decode_jpeg(const uint8_t* bytes, size_t size, const std::string& name, int min_side) {
  tjhandle handle = tjInitDecompress();
  if (!handle) throw DataError(name + ": cannot initialise the JPEG decoder");
  struct Closer {
    tjhandle h;
    ~Closer() { tjDestroy(h); }
  } closer{handle};
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle, bytes, static_cast<unsigned long>(size), &width, &height, &subsampling,
                          &colorspace) != 0)
    throw DataError(name + ": corrupt JPEG (" + tjGetErrorStr2(handle) + ")");
  if (width <= 0 || height <= 0 || width > kMaxSide || height > kMaxSide)
    throw DataError(name + ": implausible JPEG size " + std::to_string(width) + "x" + std::to_string(height));
  // The smallest libjpeg scale (1/8 .. 1) that keeps the shorter side at least min_side.
  int out_w = width, out_h = height;
  if (min_side > 0) {
    int count = 0;
    const tjscalingfactor* factors = tjGetScalingFactors(&count);
    for (int i = 0; i < count; ++i) {
      const int w = TJSCALED(width, factors[i]), h = TJSCALED(height, factors[i]);
      if (std::min(w, h) >= min_side && static_cast<int64_t>(w) * h < static_cast<int64_t>(out_w) * out_h) {
        out_w = w;
        out_h = h;
      }
    }
  }
  const bool grey = colorspace == TJCS_GRAY;
  Image img;
  img.width = out_w;
  img.height = out_h;
  img.channels = grey ? 1 : 3;
  img.pixels.resize(static_cast<size_t>(out_w) * out_h * img.channels);
  if (tjDecompress2(handle, bytes, static_cast<unsigned long>(size), img.pixels.data(), out_w, 0, out_h,
                    grey ? TJPF_GRAY : TJPF_RGB, TJFLAG_ACCURATEDCT) != 0) {
    // Warnings (e.g. premature end of data) still yield an image; errors do not.
    if (tjGetErrorCode(handle) == TJERR_FATAL)
      throw DataError(name + ": corrupt JPEG (" + tjGetErrorStr2(handle) + ")");
  }
  return img;
}

Image decode_png(const uint8_t* bytes, size_t size, const std::string& name) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes, size))
    throw DataError(name + ": corrupt PNG (" + png.message + ")");
  if (png.width == 0 || png.height == 0 || png.width > kMaxSide || png.height > kMaxSide) {
    png_image_free(&png);
    throw DataError(name + ": implausible PNG size");
  }
  const bool grey = !(png.format & PNG_FORMAT_FLAG_COLOR);
  png.format = grey ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  Image img;
  img.width = static_cast<int>(png.width);
  img.height = static_cast<int>(png.height);
  img.channels = grey ? 1 : 3;
  img.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, img.pixels.data(), 0, nullptr)) {
    const std::string message = png.message;
    png_image_free(&png);
    throw DataError(name + ": corrupt PNG (" + message + ")");
  }
  return img;
}

}  // namespace

Image decode_image(const uint8_t* bytes, size_t size, const std::string& name, int min_side) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return decode_jpeg(bytes, size, name, min_side);
  if (size >= 8 && std::memcmp(bytes, kPng, 8) == 0) return decode_png(bytes, size, name);
  throw DataError(name + ": not a JPEG or PNG image");
}

}  // namespace apot::data
