// The engine's integer convolution: weight packing (direct and Winograd F(2,3)), the scalar
// reference, the split over threads and the driver that calls the path's kernel from the table.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "apot/kernels/cpu.h"
#include "gemm_impl.h"

namespace apot::kernels {

namespace {
// F(2,3) along x: y0 = m0 + m1 + m2, y1 = m1 - m2 - m3 with m_j = t_j u_j, the input transform
// t = (d0 - d2, d1 + d2, d2 - d1, d1 - d3) and the weights doubled (u = 2 G g) so that they are
// integers; the kernels halve the sums.
void pack_winograd(const int8_t* weights, PackedConv& w) {
  const int cs = w.cs, C = w.in_channels, N = w.out_channels;
  if (cs != 16 && cs != 32 && cs != 64 && cs != 128 && cs != 256 && cs != 512) return;  // the kernel's channel strides
  std::vector<int8_t, Aligned64<int8_t>> wino(size_t(w.nblocks) * 3 * cs * 4 * 16, 0);
  std::vector<int32_t> e0(size_t(w.nblocks) * 16, 0), e1(size_t(w.nblocks) * 16, 0);
  for (int n = 0; n < N; ++n)
    for (int ky = 0; ky < 3; ++ky)
      for (int c = 0; c < C; ++c) {
        const int8_t* g = weights + (size_t(n) * 9 + ky * 3) * C + c;  // taps (ky, kx) of channel c
        const int g0 = g[0], g1 = g[C], g2 = g[2 * C];
        const int u[4] = {2 * g0, g0 + g1 + g2, g0 - g1 + g2, 2 * g2};
        for (int j = 0; j < 4; ++j) {
          if (u[j] < -127 || u[j] > 127) return;  // does not fit: the direct kernel only
          wino[(((size_t(n / 16) * 3 + ky) * (cs / 4) + c / 4) * 4 + j) * 64 + (n % 16) * 4 + c % 4] = int8_t(u[j]);
        }
        e0[size_t(n)] += u[0] + u[2];
        e1[size_t(n)] += u[2] + u[3];
      }
  w.wino = std::move(wino);
  w.wino_e0 = std::move(e0);
  w.wino_e1 = std::move(e1);
}

bool winograd_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("APOT_WINOGRAD");
    return !(v && std::string(v) == "0");
  }();
  return enabled;
}
}  // namespace

bool winograd_applies(const PackedConv& w, int max_code, GemmIsa isa) {
  return isa == GemmIsa::avx512_vnni && !w.wino.empty() && max_code >= 0 && 2 * max_code <= 255 && winograd_enabled();
}

bool amx_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("APOT_AMX");
    return !(v && std::string(v) == "0") && cpu_features().amx_int8;
  }();
  return enabled;
}

namespace detail {
bool byte_permutes() {
  static const bool enabled = [] {
    const char* v = std::getenv("APOT_VBMI");
    return !(v && std::string(v) == "0") && cpu_features().avx512vbmi;
  }();
  return enabled;
}
}  // namespace detail

bool amx_applies(const PackedConv& w, GemmIsa isa) {
  const bool exact = w.kernel * w.cs % 64 == 0;
  return isa == GemmIsa::avx512_vnni && amx_enabled() && !w.depthwise() && (exact || !w.amx.empty());
}

namespace {
// PackedConv::amx: the weights of each 64-byte piece of a kernel row, zero past the row's end.
void pack_amx(PackedConv& w) {
  const int row = w.kernel * w.cs, pieces = (row + 63) / 64;
  w.amx.assign(size_t(w.nblocks) * w.kernel * pieces * 1024, 0);
  int8_t* out = w.amx.data();
  for (int nb = 0; nb < w.nblocks; ++nb)
    for (int ky = 0; ky < w.kernel; ++ky)
      for (int j = 0; j < pieces; ++j, out += 1024)
        for (int i = 0; i < 64 && 64 * j + i < row; ++i)
          for (int n = 0; n < 16; ++n) {
            const int k = ky * row + 64 * j + i;
            out[(i / 4) * 64 + n * 4 + i % 4] = w.data[(size_t(nb) * (w.K() / 4) + k / 4) * 64 + n * 4 + k % 4];
          }
}
}  // namespace

PackedConv pack_conv(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride, int padding) {
  detail::check_shape("pack_conv", out_channels, in_channels, kernel, stride, padding);
  PackedConv w;
  w.in_channels = in_channels;
  w.cs = round_up4(in_channels);
  w.out_channels = out_channels;
  w.kernel = kernel;
  w.stride = stride;
  w.padding = padding;
  w.nblocks = (out_channels + 15) / 16;
  w.data.assign(size_t(w.K()) * w.nblocks * 16, 0);
  for (int n = 0; n < out_channels; ++n)
    for (int tap = 0; tap < kernel * kernel; ++tap)
      for (int c = 0; c < in_channels; ++c) {
        const int8_t v = weights[(size_t(n) * kernel * kernel + tap) * in_channels + c];
        const int k = tap * w.cs + c;
        w.data[(size_t(n / 16) * (w.K() / 4) + k / 4) * 64 + (n % 16) * 4 + k % 4] = v;
        w.max_abs = std::max(w.max_abs, std::abs(int(v)));
      }
  // Only where the AVX-512 VNNI kernel can run: the Winograd weights take 4/3 of the direct
  // ones' memory (ResNet-18: 12.6 MB more). Not for one block of output channels: there the
  // Winograd tiles, as the direct ones, broadcast an input vector per vpdpbusd, and the direct
  // kernel's row tiles (which share them) are faster.
  if (kernel == 3 && stride == 1 && padding == 1 && w.nblocks > 1 && detail::supports(GemmIsa::avx512_vnni))
    pack_winograd(weights, w);
  if (w.kernel * w.cs % 64 != 0 && amx_enabled()) pack_amx(w);
  return w;
}

PackedConv pack_depthwise(const int8_t* weights, int channels, int kernel, int stride, int padding) {
  detail::check_shape("pack_depthwise", channels, channels, kernel, stride, padding);
  PackedConv w;
  w.in_channels = w.out_channels = w.groups = channels;
  w.cs = round_up4(channels);
  w.kernel = kernel;
  w.stride = stride;
  w.padding = padding;
  w.nblocks = (channels + 15) / 16;
  const size_t ld = size_t(w.nblocks) * 16;
  w.dw.assign(size_t(kernel) * kernel * ld, 0);
  for (int c = 0; c < channels; ++c)
    for (int tap = 0; tap < kernel * kernel; ++tap) {
      const int8_t v = weights[size_t(c) * kernel * kernel + tap];
      w.dw[size_t(tap) * ld + c] = v;
      w.max_abs = std::max(w.max_abs, std::abs(int(v)));
    }
  if (kernel == 3) {
    w.dw3.assign(size_t(w.nblocks) * 3 * 64, 0);
    for (int c = 0; c < channels; ++c)
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx)
          w.dw3[(size_t(c / 16) * 3 + kx) * 64 + (c % 16) * 4 + ky] = weights[size_t(c) * 9 + ky * 3 + kx];
  }
  return w;
}

namespace detail {
void depthwise_rows_scalar(const ConvArgs& a, int m0, int m1) {
  const PackedConv& w = *a.w;
  const size_t ld = size_t(w.nblocks) * 16;
  const int c0 = 16 * a.nb0, c1 = std::min(w.out_channels, 16 * a.nb1);
  int32_t acc[16];
  for (int m = m0; m < m1; ++m) {
    const int y = m / a.ow, x = m % a.ow;
    const uint8_t* base = a.base(y, x);
    for (int b0 = c0; b0 < c1; b0 += 16) {
      const int count = std::min(c1, b0 + 16) - b0;
      for (int i = 0; i < count; ++i) {
        int32_t sum = 0;
        for (int tap = 0; tap < w.kernel * w.kernel; ++tap)
          sum += int32_t(base[a.tap_offsets[tap] + b0 + i]) * w.dw[size_t(tap) * ld + size_t(b0 + i)];
        acc[i] = sum;
      }
      epilogue_scalar(a, m, y, x, b0, count, acc);
    }
  }
}

void conv_rows_scalar(const ConvArgs& a, int m0, int m1) {
  const PackedConv& w = *a.w;
  const int n0 = 16 * a.nb0, n1 = std::min(w.out_channels, 16 * a.nb1);
  int32_t acc[16];  // one block of output channels at a time: no allocation
  for (int m = m0; m < m1; ++m) {
    const int y = m / a.ow, x = m % a.ow;
    const uint8_t* base = a.base(y, x);
    for (int b0 = n0; b0 < n1; b0 += 16) {
      const int b1 = std::min(n1, b0 + 16);
      for (int n = b0; n < b1; ++n) {
        int32_t sum = 0;
        for (int tap = 0; tap < w.kernel * w.kernel; ++tap)
          for (int c = 0; c < w.cs; ++c) sum += int32_t(base[a.tap_offsets[tap] + c]) * w.at(tap * w.cs + c, n);
        acc[n - b0] = sum;
      }
      epilogue_scalar(a, m, y, x, b0, b1 - b0, acc);
    }
  }
}

ConvSplit conv_split(int rows, int blocks, int threads) {
  ConvSplit s;
  threads = std::max(1, threads);
  const int per_row = (rows + threads - 1) / threads;
  const int unit = blocks >= 4 * threads ? 4 : blocks >= 2 * threads ? 2 : 1;
  const int per_block = (blocks + unit * threads - 1) / (unit * threads) * unit;
  // The busiest thread's share of the work: per_row / rows against per_block / blocks.
  if (long(per_block) * rows < long(per_row) * blocks) {
    s.by_rows = false;
    s.per_part = per_block;
    s.parts = (blocks + per_block - 1) / per_block;
  } else {
    s.per_part = per_row;
    s.parts = (rows + per_row - 1) / per_row;
  }
  return s;
}
}  // namespace detail

void conv_u8s8(const CodeImage& in, const PackedConv& w, int max_code, const ConvOutput& out, GemmIsa isa, int threads,
               ConvSchedule schedule) {
  if (in.cs != w.cs || in.border < w.padding || in.data == nullptr)
    throw std::invalid_argument("conv_u8s8: input image does not fit the convolution");
  if (in.h + 2 * w.padding < w.kernel || in.w + 2 * w.padding < w.kernel)
    throw std::invalid_argument("conv_u8s8: input smaller than the kernel");
  if (!out.scale || !out.bias) throw std::invalid_argument("conv_u8s8: scale and bias are required");
  detail::ConvArgs a;  // not brace-initialised: GCC then clears all 2 KiB of tap offsets first
  a.in = &in;
  a.w = &w;
  a.out = &out;
  a.oh = w.out_h(in.h);
  a.ow = w.out_w(in.w);
  a.offset = in.border - w.padding;
  a.nb1 = w.nblocks;
  a.max_code = max_code;
  // Winograd's input transform takes the padding as zeros, not as the border's offset code.
  a.rows_first = schedule.rows_first;
  a.amx = schedule.amx && amx_applies(w, isa);
  a.winograd = !a.amx && schedule.winograd && !w.depthwise() && !out.acc_offset && winograd_applies(w, max_code, isa);
  if (out.requantizer &&
      (out.codes.h != a.oh || out.codes.w != a.ow || out.codes.cs < w.out_channels || !out.codes.data))
    throw std::invalid_argument("conv_u8s8: output code image does not fit the convolution");
  const detail::EngineKernels& k = detail::engine_kernels(isa);
  for (int ky = 0; ky < w.kernel; ++ky)
    for (int kx = 0; kx < w.kernel; ++kx) a.tap_offsets.push_back((ptrdiff_t(ky) * in.padded_w() + kx) * in.cs);
  detail::ConvRows rows = w.depthwise() ? k.depthwise : k.conv;
  if (k.int16_sums && !w.depthwise()) {  // pair sums in int16: only where none can saturate
    const long worst = long(max_code) * w.max_abs;
    rows = 2 * worst > 32767 ? detail::conv_rows_scalar : 4 * worst <= 32767 ? k.conv_pairs : k.conv;
  }
  const detail::ConvSplit split = detail::conv_split(a.oh, w.nblocks, threads);
  if (split.parts <= 1) return rows(a, 0, a.oh * a.ow);
#pragma omp parallel for num_threads(split.parts) schedule(static, 1)
  for (int part = 0; part < split.parts; ++part) {
    detail::ConvArgs mine = a;
    int m0 = 0, m1 = a.oh * a.ow;
    if (split.by_rows) {
      m0 = std::min(a.oh, part * split.per_part) * a.ow;
      m1 = std::min(a.oh, (part + 1) * split.per_part) * a.ow;
    } else {
      mine.nb0 = std::min(w.nblocks, part * split.per_part);
      mine.nb1 = std::min(w.nblocks, (part + 1) * split.per_part);
    }
    rows(mine, m0, m1);
  }
}

double measure_peak_gmacs(GemmIsa isa, double seconds) {
  if (!detail::supports(isa)) return 0.0;
  const detail::EngineKernels& k = detail::engine_kernels(isa);
  if (!k.peak_probe) return 0.0;
  const auto probe = k.peak_probe;
  const long per_round = k.peak_macs_per_round;
  volatile int32_t sink = probe(1000);  // warm-up (frequency, caches)
  double best = 0;
  long iterations = 100000;
  for (auto start = std::chrono::steady_clock::now();
       std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds;) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = probe(iterations);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(iterations) * per_round / s / 1e9);
    if (s < 0.01) iterations *= 2;
  }
  (void)sink;
  return best;
}

}  // namespace apot::kernels
