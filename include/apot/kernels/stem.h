// The first layer on 8-bit pixels. The trained model's first layer sees normalised input
// x = (p / 255 - mean_c) / std_c of 8-bit pixels p, with a zero border in normalised space, and
// computes sum_{c, taps inside the image} w * x. With a_c = 1 / (255 std_c) and b_c = mean_c / std_c
// that sum is
//   sum_c a_c * A_c - D,   A_c = sum over the kernel's taps of w * p  (integers; the border as p = 0),
//                          D = sum_c b_c * (sum of w over the taps inside the image),
// where D depends only on which kernel rows and columns fall inside the image: one table entry per
// (row class, column class) of the output. The integer sums A_c run on vpdpbusd (four taps of a
// kernel row per 32-bit lane), about four times the float multiply-add rate, or on AMX tiles
// (a pixel's whole window of one channel in a 64-byte tile row; one accumulator tile per channel).
#pragma once

#include <cstdint>
#include <vector>

#include "apot/kernels/gemm.h"

namespace apot::kernels {

// An 8-bit image, planar: channel c, pixel (y, x) at
//   data[(c * (h + 2 * border) + y + border) * padded_w() + x + border],
// everything outside the h x w interior zero. Each row has four zero columns of slack on the
// right, so that a group of four taps past the kernel's last column stays inside the row.
struct PixelImage {
  uint8_t* data = nullptr;
  int h = 0, w = 0, c = 0, border = 0;
  int padded_w() const { return w + 2 * border + 4; }
  size_t plane() const { return size_t(h + 2 * border) * padded_w(); }
  size_t bytes() const { return plane() * c; }
  uint8_t* pixel(int ch, int y, int x) const {
    return data + ch * plane() + size_t(y + border) * padded_w() + x + border;
  }
};

// The first layer's weights for an h x w input with the given normalisation, packed for the
// kernels: groups of four taps kx = 4g .. 4g + 3 of one kernel row (zero past the kernel), one
// 64-byte vector (16 output channels x 4 taps) per (block of 16 output channels, channel c, ky, g).
// The blocks are taken four at a time (the last group holds the rest, NB blocks); within a group
// starting at block b0 the vectors are ordered by step t = ky * groups + g, then c, then block:
//   data[b0 * C * steps * 64 + ((t * C + c) * NB + (n / 16 - b0)) * 64 + (n % 16) * 4 + i]
//     = W[n][ky][4g + i][c],   steps = kernel * groups
// so that a kernel tile reads one stream with constant offsets.
struct PackedStem {
  int in_channels = 0, out_channels = 0, kernel = 1, stride = 1, padding = 0, nblocks = 0, groups = 0;
  int h = 0, w = 0;  // the input size the border table is for
  std::vector<int8_t, Aligned64<int8_t>> data;
  // 3x3 kernels at stride 1: `data` with each group of four taps (g0, g1, g2, 0) stored as
  // (0, g0, g1, g2), so that the four pixels broadcast for output x give output x + 1 as well;
  // empty otherwise.
  std::vector<int8_t, Aligned64<int8_t>> shifted;
  // AMX tiles (kernels of 5 x 5 to 8 x 8, up to 4 channels; empty otherwise): per block b of 16
  // output channels and channel c, one 1024-byte B tile of 16 rows of 4 K values x 16 output channels, K value
  // k = kx * 8 + ky (the byte order of the columns of 8 stacked input rows the AMX kernel reads),
  // zero where kx or ky is past the kernel:
  //   amx[(b * C + c) * 1024 + (k / 4) * 64 + (n % 16) * 4 + k % 4] = W[n][ky][kx][c]
  std::vector<int8_t, Aligned64<int8_t>> amx;
  std::vector<int32_t> plain;      // [c][ky][kx][n] with n padded to 16 * nblocks (the reference)
  std::vector<float> pixel_scale;  // a_c
  // D, 16 * nblocks entries per (row class, column class); output pixel (y, x) finds its
  // entries at offset[row_offset[y] + col_offset[x] + n].
  std::vector<float> offset;
  std::vector<int> row_offset, col_offset;
  int out_h() const { return (h + 2 * padding - kernel) / stride + 1; }
  int out_w() const { return (w + 2 * padding - kernel) / stride + 1; }
};

// weights: out_channels rows of kernel * kernel * in_channels int8 integers, ordered (ky, kx, c);
// mean and std: one per input channel (std > 0). Throws std::invalid_argument otherwise.
PackedStem pack_stem(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride, int padding,
                     int h, int w, const std::vector<float>& mean, const std::vector<float>& std);

// out[p][n] = max(scale[n] * (sum - D) + bias[n], 0) (no max when relu is false), with
// sum = 0.0f, then sum = sum + a_c * float(A_c) for c = 0, 1, .. (each product and sum rounded):
// every path gives the same bits. `in` must be w.h x w.w with w.in_channels channels and a border
// of at least w.padding. Output rows [y0, y1) only (y1 < 0: to the end), `out` from row y0 on.
// AVX-512 VNNI and AVX-VNNI (256-bit vpdpbusd) have kernels for up to 4 input channels; the
// other paths run the reference (AVX2's vpmaddubsw would saturate on 255 x 127). On the AVX-512
// VNNI path, `amx` takes AMX tiles where stem_amx_applies().
void conv_stem_u8(const PixelImage& in, const PackedStem& w, const float* scale, const float* bias, bool relu,
                  float* out, GemmIsa isa = default_gemm_isa(), int threads = 1, int y0 = 0, int y1 = -1,
                  bool amx = true);

// Whether conv_stem_u8 runs this first layer on AMX tiles: the AVX-512 VNNI path where
// amx_enabled() and pack_stem packed them (PackedStem::amx: kernels of 5 x 5 to 8 x 8, up to 4
// input channels; 3 x 3 kernels use 9 of a tile row's 64 bytes and measured 0.98-1.40x the vector
// kernel's time: docs/KERNELS.md).
bool stem_amx_applies(const PackedStem& w, GemmIsa isa);

// The 8-bit pixel whose normalised value is x, if there is one: p = round(q) for
// q = (x * std + mean) * 255 when p lies in 0..255 and |q - p| <= 1e-3 (the rounding of a float
// pipeline that normalised 8-bit pixels); -1 otherwise.
// (Computed in float: q = x * (255 std) + 255 mean.)
int pixel_of(float x, float mean, float std);

// The pixels of a normalised C x H x W float image (C = out.c, H x W = out.h x out.w) into the
// interior of `out`: true if every value is an 8-bit pixel (pixel_of), false (out unspecified)
// otherwise. Every path gives the same answer and, when it is true, the same pixels.
bool to_pixels(const float* image, const std::vector<float>& mean, const std::vector<float>& std, const PixelImage& out,
               GemmIsa isa = default_gemm_isa());

}  // namespace apot::kernels
