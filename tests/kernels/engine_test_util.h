// Shared by the engine-kernel tests: random convolution problems, zero-bordered code images,
// requantisers, and one call of conv_u8s8 with every epilogue output.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "apot/kernels/gemm.h"

namespace apot::kernels::test {

using apot::kernels::CodeImage;
using apot::kernels::ConvOutput;
using apot::kernels::GemmIsa;

struct Problem {
  int h, w, c, n, k, stride, pad, max_a, max_b;
  std::vector<uint8_t> x;  // h x w x c codes, unpadded
  std::vector<int8_t> W;   // n x (k x k x c)
  std::vector<float> scale, bias, residual;
  int oh() const { return (h + 2 * pad - k) / stride + 1; }
  int ow() const { return (w + 2 * pad - k) / stride + 1; }
};

inline Problem make(int h, int w, int c, int n, int k, int stride, int max_a, int max_b, unsigned seed) {
  std::mt19937 rng(seed);
  Problem p{h, w, c, n, k, stride, k / 2, max_a, max_b, {}, {}, {}, {}, {}};
  p.x.resize(size_t(h) * w * c);
  for (auto& v : p.x) v = static_cast<uint8_t>(rng() % (max_a + 1));
  p.W.resize(size_t(n) * k * k * c);
  for (auto& v : p.W) v = static_cast<int8_t>(int(rng() % (2 * max_b + 1)) - max_b);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int i = 0; i < n; ++i) {
    p.scale.push_back(0.01f * (1.5f + u(rng)));
    p.bias.push_back(u(rng));
  }
  p.residual.resize(size_t(p.oh()) * p.ow() * n);
  for (auto& v : p.residual) v = u(rng);
  return p;
}

// A zero-bordered code image holding p.x.
struct Image {
  std::vector<uint8_t> bytes;
  CodeImage view;
  Image(int h, int w, int c, int border) {
    view.h = h;
    view.w = w;
    view.cs = apot::kernels::round_up4(c);
    view.border = border;
    bytes.assign(view.bytes(), 0);
    view.data = bytes.data();
  }
};

// slack: readable bytes past the image (CodeImage::capacity), as the engine allocates them.
inline Image input_image(const Problem& p, int extra_border = 0, bool slack = false) {
  Image im(p.h, p.w, p.c, p.pad + extra_border);
  for (int y = 0; y < p.h; ++y)
    for (int x = 0; x < p.w; ++x)
      for (int ci = 0; ci < p.c; ++ci) im.view.pixel(y, x)[ci] = p.x[(size_t(y) * p.w + x) * p.c + ci];
  if (slack) {
    im.bytes.resize(im.bytes.size() + im.view.amx_slack(), 0);
    im.view.data = im.bytes.data();
    im.view.capacity = im.bytes.size();
  }
  return im;
}

// `levels` activation codes (16: 4-bit) and thresholds spread over the range of the epilogue
// values: from -0.5 (the AVX-512 epilogue's threshold search), or from 0 and denser towards 0,
// as APoT's are (its cells, where no cell holds more than two thresholds).
inline apot::kernels::Requantizer requantizer(int levels = 16, bool from_zero = false) {
  std::vector<float> t;
  std::vector<uint8_t> codes{0};
  for (int i = 0; i + 1 < levels; ++i) {
    const float f = float(i) / float(levels - 1);
    t.push_back(from_zero ? 0.01f + 1.2f * f * (0.5f + 0.5f * f) : -0.5f + 1.5f * f);
    codes.push_back(static_cast<uint8_t>(3 * (i + 1)));
  }
  return apot::kernels::make_requantizer(t, codes);
}

struct Result {
  std::vector<int32_t> acc;
  std::vector<float> values;
  std::vector<uint8_t> codes;  // the whole bordered output image
};

// slack: as for input_image.
inline Result run(const Problem& p, GemmIsa isa, bool residual, bool relu, int threads = 1, int extra_border = 0,
                  int levels = 16, bool from_zero = false, apot::kernels::ConvSchedule schedule = {},
                  bool slack = false) {
  Image in = input_image(p, extra_border, slack);
  const auto packed = apot::kernels::pack_conv(p.W.data(), p.n, p.c, p.k, p.stride, p.pad);
  const auto q = requantizer(levels, from_zero);
  Result r;
  r.acc.assign(size_t(p.oh()) * p.ow() * p.n, -7);
  r.values.assign(r.acc.size(), -7.0f);
  Image out(p.oh(), p.ow(), p.n, 1);
  ConvOutput o;
  o.scale = p.scale.data();
  o.bias = p.bias.data();
  o.residual = residual ? p.residual.data() : nullptr;
  o.relu = relu;
  o.values = r.values.data();
  o.accumulators = r.acc.data();
  o.requantizer = &q;
  o.codes = out.view;
  apot::kernels::conv_u8s8(in.view, packed, p.max_a, o, isa, threads, schedule);
  r.codes = out.bytes;
  return r;
}

// The engine's usual outputs, without the sums (the AVX-512 epilogue's straight shapes, where
// the requantiser has 64 cells of at most one threshold: evenly spread thresholds): the codes
// alone (no ReLU: the first threshold is below 0), or with a residual, the ReLU and the values;
// offset: an offset per output channel taken off the sums (as for signed inputs).
inline Result run_without_sums(const Problem& p, GemmIsa isa, bool residual, bool offset, int threads = 1,
                               apot::kernels::ConvSchedule schedule = {}, bool slack = false) {
  Image in = input_image(p, 0, slack);
  const auto packed = apot::kernels::pack_conv(p.W.data(), p.n, p.c, p.k, p.stride, p.pad);
  const auto q = requantizer(16, false);
  Result r;
  r.values.assign(size_t(p.oh()) * p.ow() * p.n, -7.0f);
  Image out(p.oh(), p.ow(), p.n, 1);
  ConvOutput o;
  o.scale = p.scale.data();
  o.bias = p.bias.data();
  o.requantizer = &q;
  o.codes = out.view;
  std::vector<int32_t> offsets;
  for (int n = 0; n < p.n; ++n) offsets.push_back((n * 37) % 201 - 100);
  if (offset) o.acc_offset = offsets.data();
  if (residual) {
    o.residual = p.residual.data();
    o.relu = true;
    o.values = r.values.data();
  }
  apot::kernels::conv_u8s8(in.view, packed, p.max_a, o, isa, threads, schedule);
  r.codes = out.bytes;
  return r;
}

// Every engine path, for tests that report the paths this CPU lacks as skipped.
inline const std::vector<GemmIsa>& all_paths() {
  static const std::vector<GemmIsa> all{GemmIsa::scalar, GemmIsa::avx2, GemmIsa::avx_vnni, GemmIsa::avx512_vnni};
  return all;
}
inline bool supported(GemmIsa isa) {
  const auto& s = apot::kernels::supported_gemm_isas();
  return std::find(s.begin(), s.end(), isa) != s.end();
}
inline std::string path_name(const ::testing::TestParamInfo<GemmIsa>& info) {
  std::string n = apot::kernels::to_string(info.param);
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
}

}  // namespace apot::kernels::test
