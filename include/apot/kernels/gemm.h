// The integer convolution of the inference engine: an implicit GEMM over uint8 activation codes
// and int8 weight integers with int32 accumulation, read straight from an NHWC image with a zero
// border (no im2col copy), and one fused epilogue per output vector:
//   v = scale[n] * acc + bias[n]  (+ residual)  (ReLU)  -> float values and/or the consumer's
//   activation codes (requantisation by thresholds).
// Paths: a scalar reference, AVX2 (vpmaddubsw + vpmaddwd, only where no int16 pair sum can
// saturate), AVX-VNNI (vpdpbusd on 256-bit registers; on AVX-512 machines the same kernel runs
// with the EVEX encoding) and AVX-512 VNNI (vpdpbusd on 512-bit registers); chosen at run time,
// APOT_GEMM_ISA forces one. Every path gives bit-identical results (integer sums are exact, the
// epilogue rounds in the same order, fused multiply-adds are disabled).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace apot::kernels {

enum class GemmIsa { scalar, avx2, avx_vnni, avx512_vnni };
const char* to_string(GemmIsa isa);
const std::vector<GemmIsa>& supported_gemm_isas();  // detected once; scalar first
GemmIsa parse_gemm_isa(const std::string& name);    // "scalar" | "avx2" | "avx-vnni" | "avx512-vnni"
GemmIsa default_gemm_isa();                         // APOT_GEMM_ISA, else the best supported

inline int round_up4(int k) { return (k + 3) / 4 * 4; }

// Memory for packed weights: aligned to 64 bytes (a cache line, one zmm register); from 1 MiB
// on, whole 2 MiB pages that Linux is asked (madvise) to back with transparent huge pages: one
// TLB entry for 2 MiB instead of 512, which matters in virtual machines, where a TLB miss walks
// two page tables (ResNet-18's 7x7 layers, whose weights come from memory: 8 % faster).
void* allocate_aligned(size_t bytes);
void free_aligned(void* p, size_t bytes);  // bytes: as allocated

template <typename T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <typename U>
  Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(allocate_aligned(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { free_aligned(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const Aligned64<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const Aligned64<U>&) const {
    return false;
  }
};

// Activation codes of one image in NHWC order with a zero border: pixel (y, x), channel c is at
// data[((y + border) * (w + 2 * border) + x + border) * cs + c] with cs = round_up4(channels).
// Everything outside the h x w x channels interior must be zero (the border is the padding).
struct CodeImage {
  uint8_t* data = nullptr;
  int h = 0, w = 0, cs = 0, border = 0;
  // Bytes readable from data (0: bytes()). The AMX kernel's tiles of 32 pixels read on past the
  // last pixel; where the memory after the image is not readable, those pixels take the VNNI
  // kernel. amx_slack(): enough for every AMX tile of a layer reading this image.
  size_t capacity = 0;
  int padded_w() const { return w + 2 * border; }
  size_t bytes() const { return size_t(h + 2 * border) * padded_w() * cs; }
  size_t amx_slack() const { return size_t(64 + 8 * padded_w()) * size_t(cs) + 64; }
  uint8_t* pixel(int y, int x) const { return data + (size_t(y + border) * padded_w() + x + border) * cs; }
};

// The weights of one convolution, packed for the kernels. Rows k = (ky * kernel + kx) * cs + c
// (K = kernel * kernel * cs, channels padded to cs with zeros), in blocks of 4 rows x 16 output
// channels, one 64-byte vector per block, the blocks of 16 output channels one after the other
// (each a sequential stream for the kernels):
//   data[((n / 16) * (K / 4) + k / 4) * 64 + (n % 16) * 4 + k % 4] = W[n][k]
struct PackedConv {
  int in_channels = 0, cs = 0, out_channels = 0, kernel = 1, stride = 1, padding = 0;
  int nblocks = 0;  // ceil(out_channels / 16)
  int max_abs = 0;  // largest |W| (for the AVX2 saturation check)
  std::vector<int8_t, Aligned64<int8_t>> data;
  // Winograd F(2,3) along rows (3x3, stride 1, padding 1; docs/KERNELS.md): for kernel row ky
  // and input channel c, the transformed weights u_j = (2 g0, g0 + g1 + g2, g0 - g1 + g2, 2 g2)
  // of the row's taps g, when every |u_j| <= 127, cs is 16, 32, 64, 128, 256 or 512 and the
  // CPU has AVX-512 VNNI; empty otherwise. Layout per block of 16 output channels:
  // [ky][c / 4][j] vectors of 16 channels x 4 input channels. wino_e0/e1: per output channel
  // (16 * nblocks), the sums over ky and c of u0 + u2 and of u2 + u3.
  std::vector<int8_t, Aligned64<int8_t>> wino;
  std::vector<int32_t> wino_e0, wino_e1;
  // AMX tiles (docs/KERNELS.md) where kernel * cs is not a multiple of 64 and the CPU has
  // AMX-INT8: per block of 16 output channels, kernel row ky and 64-byte piece j of its
  // kernel * cs values, 16 rows of 4 K values x 16 channels as in `data`, the rows past the
  // kernel row's end zero. Empty otherwise (the AMX kernel then reads `data`).
  std::vector<int8_t, Aligned64<int8_t>> amx;
  // Depthwise convolutions (groups == in_channels == out_channels): one kernel per channel, as
  // int32 in dw[tap * 16 * nblocks + c] (zero beyond the channels; data and wino are empty).
  int groups = 1;
  std::vector<int32_t, Aligned64<int32_t>> dw;
  // 3x3 depthwise, for vpdpbusd on input columns (AVX512_VBMI): per block of 16 channels and
  // kernel column kx, each channel's taps (ky = 0, 1, 2, then 0) as 4 bytes; empty otherwise.
  std::vector<int8_t, Aligned64<int8_t>> dw3;
  bool depthwise() const { return groups > 1; }
  int K() const { return kernel * kernel * cs; }
  int8_t at(int k, int n) const { return data[(size_t(n / 16) * (K() / 4) + k / 4) * 64 + (n % 16) * 4 + k % 4]; }
  int out_h(int h) const { return (h + 2 * padding - kernel) / stride + 1; }
  int out_w(int w) const { return (w + 2 * padding - kernel) / stride + 1; }
};

// weights: out_channels rows of kernel * kernel * in_channels int8 integers, ordered (ky, kx, c).
PackedConv pack_conv(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride, int padding);

// weights: channels rows of kernel * kernel int8 integers, ordered (ky, kx): a depthwise
// convolution (groups == channels), which conv_u8s8 runs with the depthwise kernels.
PackedConv pack_depthwise(const int8_t* weights, int channels, int kernel, int stride, int padding);

// Quantisation of float values to the activation codes of a consumer: the level index is the
// number of thresholds <= v (so NaN and everything below the first threshold give index 0), the
// code is codes[index].
namespace detail {
struct SearchTables;
}
struct Requantizer {
  std::vector<float> thresholds;  // ascending, at most 31
  std::vector<uint8_t> codes;     // thresholds.size() + 1 entries
  int code(float v) const;
  // The vector kernels' tables for these thresholds and codes, made once by make_requantizer
  // (a Requantizer made otherwise has none: the kernels then make them on each call).
  std::shared_ptr<const detail::SearchTables> tables;
};
// Throws std::invalid_argument on unsorted or too many thresholds or a size mismatch.
Requantizer make_requantizer(std::vector<float> thresholds, std::vector<uint8_t> codes);

// What the epilogue does with the accumulators of output pixel p (raster order over oh x ow)
// and channel n. Every output is optional; arrays of values are [oh * ow][out_channels].
//   acc = sum - acc_offset[n]; v = scale[n] * acc + bias[n] (+ residual); ReLU: v = max(v, 0),
//   then v = min(v, relu_max) (ReLU6: relu_max 6)
// acc_offset folds an offset of the input codes out exactly (signed inputs: codes are the level
// integers plus an offset o, so the sum over the true integers is the sum minus o * sum(W[n])).
struct ConvOutput {
  const float* scale = nullptr;         // out_channels
  const float* bias = nullptr;          // out_channels
  const int32_t* acc_offset = nullptr;  // out_channels, subtracted from the integer sums
  const float* residual = nullptr;      // added after scale and bias, before the ReLU
  bool relu = false;
  float relu_max = __builtin_inff();         // the ReLU's upper clamp (only with relu)
  float* values = nullptr;                   // the float results (may be `residual`: in place)
  const Requantizer* requantizer = nullptr;  // with codes: the consumer's codes, written into
  CodeImage codes;                           // the interior of an oh x ow image
  int32_t* accumulators = nullptr;           // the integer sums, less acc_offset (tests)
};

// Whether conv_u8s8 takes the Winograd F(2,3) kernel for this layer: the AVX-512 VNNI path,
// packed Winograd weights (PackedConv::wino), 2 * max_code <= 255 (the transformed inputs are
// bytes), and not switched off by APOT_WINOGRAD=0. (conv_u8s8 also leaves it out for outputs with
// an acc_offset: its input transform takes the padding as zeros.)
bool winograd_applies(const PackedConv& w, int max_code, GemmIsa isa);

// The CPU and the OS allow AMX-INT8 and APOT_AMX is not 0.
bool amx_enabled();
// Whether the AMX kernel can run this layer (ConvSchedule::amx): the AVX-512 VNNI path where
// amx_enabled(), not depthwise.
bool amx_applies(const PackedConv& w, GemmIsa isa);

// Convolution of `in` (whose border must be at least w.padding and whose cs must equal w.cs;
// with an acc_offset, the border must hold the offset code: level 0, the padding's value)
// with max_code an upper bound of the input codes (the AVX2 path needs
// 2 * max_code * max|W| <= 32767 and falls back to the reference otherwise; with
// 4 * max_code * max|W| <= 32767 it adds two int16 pair sums before widening). threads > 1
// splits the output pixels over that many OpenMP threads. `schedule`: how the path's kernel
// walks the layer (the engine's tuned choice; the same bits in any case).
struct ConvSchedule {
  bool winograd = true;     // Winograd F(2,3) where it applies; false: the direct kernel
  bool rows_first = false;  // AVX-512 VNNI direct kernel: every channel block of an output row
                            // before the next row (else each group of blocks over all pixels)
  bool amx = false;         // AVX-512 VNNI path: AMX tiles (tdpbusd) where amx_applies()
  bool operator==(const ConvSchedule& o) const {
    return winograd == o.winograd && rows_first == o.rows_first && amx == o.amx;
  }
};
void conv_u8s8(const CodeImage& in, const PackedConv& w, int max_code, const ConvOutput& out,
               GemmIsa isa = default_gemm_isa(), int threads = 1, ConvSchedule schedule = {});

// values: h x w pixels of n floats (NHWC), pixel p's at values + p * stride (0: n; a channel
// slice of a wider value read in place) -> codes in the interior of `out` (h x w, cs >= n).
void requantize(const float* values, int h, int w, int n, const Requantizer& q, const CodeImage& out,
                GemmIsa isa = default_gemm_isa(), int stride = 0);

// The int8 multiply-accumulate rate of the path's inner instruction (vpdpbusd for
// avx512-vnni, vpmaddubsw + vpmaddwd + vpaddd for avx2) on one thread, with enough independent
// accumulators to hide latency and no memory traffic: the peak a kernel can approach.
// Measured over about `seconds`; 0 for the scalar path.
double measure_peak_gmacs(GemmIsa isa, double seconds = 0.2);

// ---- the float first layer (float image x integer weights, as in the trained model) ----

// A float image in NHWC order with a zero border, laid out like CodeImage (channel stride c).
struct FloatImage {
  float* data = nullptr;
  int h = 0, w = 0, c = 0, border = 0;
  int padded_w() const { return w + 2 * border; }
  size_t floats() const { return size_t(h + 2 * border) * padded_w() * c; }
  float* pixel(int y, int x) const { return data + (size_t(y + border) * padded_w() + x + border) * c; }
};

// Weights as floats, rows k = (ky * kernel + kx) * in_channels + c, each row 16 * nblocks
// output channels (zero beyond out_channels).
struct PackedFloatConv {
  int in_channels = 0, out_channels = 0, kernel = 1, stride = 1, padding = 0, nblocks = 0;
  std::vector<float, Aligned64<float>> data;
  int out_h(int h) const { return (h + 2 * padding - kernel) / stride + 1; }
  int out_w(int w) const { return (w + 2 * padding - kernel) / stride + 1; }
};
PackedFloatConv pack_float_conv(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride,
                                int padding);

// out[p][n] = max(scale[n] * sum + bias[n], 0) (without the max when relu is false), the sum
// accumulated as sum = fma(x, w, sum) over taps and channels in row order, every product
// included (the border contributes zeros), scale and bias rounded separately: every path gives
// the same bits (fma is exactly rounded). AVX-512 vectorises over output channels; AVX2 is the
// reference compiled for AVX2 + FMA.
void conv_f32(const FloatImage& in, const PackedFloatConv& w, const float* scale, const float* bias, bool relu,
              float* out, GemmIsa isa = default_gemm_isa(), int threads = 1);

// 3x3 max-pooling with stride 2 and padding 1 (the ImageNet stem) of an h x w x c NHWC map:
// out[y][x][ch] = the largest in[iy][ix][ch] over the window's pixels inside the map.
// Output rows [y0, y1) only (y1 < 0: to the end), from a band of the map: `in` holds its rows
// from in_row0 on (at least those the output rows need), `out` the whole output.
void max_pool_3x3s2(const float* in, int h, int w, int c, float* out, GemmIsa isa = default_gemm_isa(), int y0 = 0,
                    int y1 = -1, int in_row0 = 0);

// Two values' channels in turn (ShuffleNetV2's concat and channel shuffle of two groups): per
// pixel p, out[p][2 i] = a[p][i] and out[p][2 i + 1] = b[p][i] for i < per_group, the pixels of
// a `sa` floats apart, of b `sb` (>= per_group), of out 2 * per_group. The bits are copied.
void interleave_pairs(const float* a, int sa, const float* b, int sb, int pixels, int per_group, float* out,
                      GemmIsa isa = default_gemm_isa());

// Max or average pooling of an h x w x c NHWC map with any square window: out[y][x][ch] is the
// largest value in the window inside the map (a NaN wins), or the window's sum over
// kernel * kernel (outside the map counts as 0, PyTorch's count_include_pad).
enum class PoolKind { max, average };
void pool_reference(PoolKind kind, const float* in, int h, int w, int c, int kernel, int stride, int padding,
                    float* out);

}  // namespace apot::kernels
