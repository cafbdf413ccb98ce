// Helpers of the data tests: temporary directories and small files written by the tests.
#pragma once

#include <ftw.h>
#include <gtest/gtest.h>
#include <png.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace apot::test {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("apot-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::create_directories(path_);
  }
  // POSIX nftw rather than std::filesystem::remove_all: the pip LibTorch 2.11 wheel's
  // libtorch.so exports its own copy of remove_all, which crashed there (a null call); see
  // docs/RESULTS.md, "LibTorch 2.x and CUDA".
  ~TempDir() {
    ::nftw(
        path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  fs::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

inline std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b{0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    b.push_back(d >> 24);
    b.push_back((d >> 16) & 0xFF);
    b.push_back((d >> 8) & 0xFF);
    b.push_back(d & 0xFF);
  }
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// A smooth RGB (or grey) test pattern.
// A tiny IDX data set DIR/PREFIX-{images-idx3,labels-idx1}-ubyte: n grey 8x8 images of 4
// classes, class k a bright 4x4 square in quadrant k, plus noise.
inline void write_quadrants(const std::string& dir, const std::string& prefix, int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> images(size_t(n) * 64), labels(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const int k = i % 4;
    labels[size_t(i)] = static_cast<uint8_t>(k);
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x) {
        const bool on = (y / 4) == (k / 2) && (x / 4) == (k % 2);
        images[size_t(i) * 64 + size_t(y * 8 + x)] = static_cast<uint8_t>((on ? 180 : 40) + rng() % 40);
      }
  }
  write_bytes(dir + "/" + prefix + "-images-idx3-ubyte", idx_bytes({uint32_t(n), 8, 8}, images));
  write_bytes(dir + "/" + prefix + "-labels-idx1-ubyte", idx_bytes({uint32_t(n)}, labels));
}

inline std::vector<uint8_t> pattern(int h, int w, int c) {
  std::vector<uint8_t> p(size_t(h) * w * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) p[(size_t(y) * w + x) * c + k] = static_cast<uint8_t>((y * 9 + x * 5 + k * 60) % 256);
  return p;
}

inline std::vector<uint8_t> encode_jpeg(const std::vector<uint8_t>& pixels, int h, int w, int c, int quality = 95) {
  tjhandle t = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  tjCompress2(t, pixels.data(), w, 0, h, c == 1 ? TJPF_GRAY : TJPF_RGB, &out, &size, c == 1 ? TJSAMP_GRAY : TJSAMP_444,
              quality, 0);
  std::vector<uint8_t> bytes(out, out + size);
  tjFree(out);
  tjDestroy(t);
  return bytes;
}

inline std::vector<uint8_t> encode_png(const std::vector<uint8_t>& pixels, int h, int w, int c) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = w;
  img.height = h;
  img.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&img, nullptr, &size, 0, pixels.data(), 0, nullptr);
  std::vector<uint8_t> bytes(size);
  png_image_write_to_memory(&img, bytes.data(), &size, 0, pixels.data(), 0, nullptr);
  bytes.resize(size);
  return bytes;
}

}  // namespace apot::test
