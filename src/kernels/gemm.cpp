// GEMM driver: packing, ISA selection and the scalar reference.
#include <sys/mman.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "gemm_impl.h"

namespace apot::kernels {

const char* to_string(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::scalar: return "scalar";
    case GemmIsa::avx2: return "avx2";
    case GemmIsa::avx_vnni: return "avx-vnni";
    case GemmIsa::avx512_vnni: return "avx512-vnni";
  }
  return "unknown";
}

namespace detail {
#if defined(__x86_64__)
// AVX-VNNI from CPUID leaf 7, sub-leaf 1 (EAX bit 4) directly: GCC's __builtin_cpu_supports
// knows "avxvnni", Clang 14's does not. The OS must save the ymm state, which AVX2 support
// (checked through the builtin) already implies. Asked once: CPUID traps to the hypervisor in a
// virtual machine (microseconds each; asked on every convolution it slowed ResNet-20 by 20 %).
bool has_avx_vnni() {
  static const bool present = [] {
    __builtin_cpu_init();
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__builtin_cpu_supports("avx2") || !__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
    return ((eax >> 4) & 1u) != 0;
  }();
  return present;
}
#else
bool has_avx_vnni() { return false; }
#endif
}  // namespace detail

namespace {
using detail::has_avx_vnni;
#if defined(__x86_64__)
bool has_avx512_vnni_vl() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}
#else
bool has_avx512_vnni_vl() { return false; }
#endif
}  // namespace

std::vector<GemmIsa> supported_gemm_isas() {
  static const std::vector<GemmIsa> detected = [] {
    std::vector<GemmIsa> out{GemmIsa::scalar};
#if defined(__x86_64__)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2) out.push_back(GemmIsa::avx2);
    if (avx2 && (has_avx_vnni() || has_avx512_vnni_vl())) out.push_back(GemmIsa::avx_vnni);
    if (has_avx512_vnni_vl() && __builtin_cpu_supports("avx512bw")) out.push_back(GemmIsa::avx512_vnni);
#endif
    return out;
  }();
  return detected;
}

GemmIsa parse_gemm_isa(const std::string& name) {
  for (GemmIsa isa : supported_gemm_isas())
    if (name == to_string(isa)) return isa;
  throw std::runtime_error("APOT_GEMM_ISA=" + name + " is not a GEMM path this CPU supports (scalar, avx2, avx-vnni, avx512-vnni)");
}

GemmIsa default_gemm_isa() {
  static const GemmIsa chosen = [] {
    if (const char* forced = std::getenv("APOT_GEMM_ISA"); forced && *forced) return parse_gemm_isa(forced);
    return supported_gemm_isas().back();
  }();
  return chosen;
}

namespace {
bool supports(GemmIsa isa) {
  for (GemmIsa s : supported_gemm_isas())
    if (s == isa) return true;
  return false;
}
}  // namespace

namespace detail {
void require(GemmIsa isa) {
  if (!supports(isa)) throw std::invalid_argument(std::string("GEMM path ") + to_string(isa) + " is not supported here");
}
void check_shape(const char* what, int out_channels, int in_channels, int kernel, int stride, int padding) {
  if (out_channels < 1 || in_channels < 1 || kernel < 1 || stride < 1 || padding < 0 || padding >= kernel)
    throw std::invalid_argument(std::string(what) + ": invalid convolution shape");
}
}  // namespace detail
using detail::check_shape;
using detail::require;

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
  return isa == GemmIsa::avx512_vnni && !w.wino.empty() && max_code >= 0 && 2 * max_code <= 255 &&
         winograd_enabled();
}

PackedConv pack_conv(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride, int padding) {
  check_shape("pack_conv", out_channels, in_channels, kernel, stride, padding);
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
  const std::vector<GemmIsa>& isas = supported_gemm_isas();
  if (kernel == 3 && stride == 1 && padding == 1 && w.nblocks > 1 &&
      std::find(isas.begin(), isas.end(), GemmIsa::avx512_vnni) != isas.end())
    pack_winograd(weights, w);
  return w;
}

namespace {
constexpr size_t kHugePage = size_t(2) << 20, kHugeFrom = size_t(1) << 20;
}

void* allocate_aligned(size_t bytes) {
  if (bytes < kHugeFrom) return ::operator new(bytes, std::align_val_t(64));
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = ::operator new(rounded, std::align_val_t(kHugePage));
#ifdef MADV_HUGEPAGE
  madvise(p, rounded, MADV_HUGEPAGE);  // advice: where it is refused, small pages remain
#endif
  return p;
}

void free_aligned(void* p, size_t bytes) {
  ::operator delete(p, std::align_val_t(bytes < kHugeFrom ? 64 : kHugePage));
}

Requantizer make_requantizer(std::vector<float> thresholds, std::vector<uint8_t> codes) {
  if (thresholds.size() > 31) throw std::invalid_argument("requantizer: more than 31 thresholds");
  if (codes.size() != thresholds.size() + 1) throw std::invalid_argument("requantizer: needs one code more than thresholds");
  for (size_t i = 0; i < thresholds.size(); ++i)
    if (std::isnan(thresholds[i]) || (i > 0 && !(thresholds[i - 1] <= thresholds[i])))
      throw std::invalid_argument("requantizer: thresholds must be ascending numbers");
  return Requantizer{std::move(thresholds), std::move(codes)};
}

int Requantizer::code(float v) const {
  if (std::isnan(v)) return codes[0];
  // The number of thresholds t <= v (upper_bound: the first t with v < t).
  return codes[size_t(std::upper_bound(thresholds.begin(), thresholds.end(), v) - thresholds.begin())];
}

namespace detail {
void conv_rows_scalar(const ConvArgs& a, int m0, int m1) {
  const PackedConv& w = *a.w;
  const int n0 = 16 * a.nb0, n1 = std::min(w.out_channels, 16 * a.nb1);
  std::vector<int32_t> acc(size_t(std::max(0, n1 - n0)));
  for (int m = m0; m < m1; ++m) {
    const int y = m / a.ow, x = m % a.ow;
    const uint8_t* base = a.base(y, x);
    for (int n = n0; n < n1; ++n) {
      int32_t sum = 0;
      for (int tap = 0; tap < w.kernel * w.kernel; ++tap)
        for (int c = 0; c < w.cs; ++c) sum += int32_t(base[a.tap_offsets[tap] + c]) * w.at(tap * w.cs + c, n);
      acc[size_t(n - n0)] = sum;
    }
    epilogue_scalar(a, m, y, x, n0, n1 - n0, acc.data());
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

void conv_u8s8(const CodeImage& in, const PackedConv& w, int max_code, const ConvOutput& out, GemmIsa isa, int threads) {
  if (in.cs != w.cs || in.border < w.padding || in.data == nullptr)
    throw std::invalid_argument("conv_u8s8: input image does not fit the convolution");
  if (in.h + 2 * w.padding < w.kernel || in.w + 2 * w.padding < w.kernel)
    throw std::invalid_argument("conv_u8s8: input smaller than the kernel");
  if (!out.scale || !out.bias) throw std::invalid_argument("conv_u8s8: scale and bias are required");
  detail::ConvArgs a{&in, &w, &out, w.out_h(in.h), w.out_w(in.w), in.border - w.padding, {}, 0, w.nblocks};
  a.max_code = max_code;
  a.winograd = winograd_applies(w, max_code, isa);
  if (out.requantizer && (out.codes.h != a.oh || out.codes.w != a.ow || out.codes.cs < w.out_channels || !out.codes.data))
    throw std::invalid_argument("conv_u8s8: output code image does not fit the convolution");
  require(isa);
  for (int ky = 0; ky < w.kernel; ++ky)
    for (int kx = 0; kx < w.kernel; ++kx) a.tap_offsets.push_back((ptrdiff_t(ky) * in.padded_w() + kx) * in.cs);
  detail::ConvRows rows = detail::conv_rows_scalar;
  if (isa == GemmIsa::avx512_vnni) rows = detail::conv_rows_avx512_vnni;
  if (isa == GemmIsa::avx2 && 2 * max_code * w.max_abs <= 32767)
    rows = 4 * max_code * w.max_abs <= 32767 ? detail::conv_rows_avx2_pairs : detail::conv_rows_avx2;
  if (isa == GemmIsa::avx_vnni) rows = has_avx_vnni() ? detail::conv_rows_avx_vnni : detail::conv_rows_avx_vnni_evex;
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
  if (isa == GemmIsa::scalar || !supports(isa)) return 0.0;
  auto probe = detail::peak_probe_avx2;
  long per_round = detail::peak_macs_per_round_ymm;
  if (isa == GemmIsa::avx_vnni) probe = has_avx_vnni() ? detail::peak_probe_avx_vnni : detail::peak_probe_avx_vnni_evex;
  if (isa == GemmIsa::avx512_vnni) {
    probe = detail::peak_probe_avx512_vnni;
    per_round = detail::peak_macs_per_round_avx512;
  }
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

void max_pool_3x3s2(const float* in, int h, int w, int c, float* out, GemmIsa isa, int y0, int y1, int in_row0) {
  if (h < 1 || w < 1 || c < 1) throw std::invalid_argument("max_pool_3x3s2: empty input");
  const int oh = (h + 1) / 2, ow = (w + 1) / 2;
  if (y1 < 0) y1 = oh;
  if (y0 < 0 || y1 > oh || y0 > y1 || in_row0 < 0 || in_row0 > std::max(0, 2 * y0 - 1))
    throw std::invalid_argument("max_pool_3x3s2: invalid row range");
  require(isa);
  if (isa == GemmIsa::avx512_vnni) return detail::max_pool_avx512(in, h, w, c, out, y0, y1, in_row0);
  if (isa == GemmIsa::avx2 || isa == GemmIsa::avx_vnni) return detail::max_pool_avx2(in, h, w, c, out, y0, y1, in_row0);
  for (int y = y0; y < y1; ++y)
    for (int x = 0; x < ow; ++x) {
      float* d = out + (size_t(y) * ow + x) * c;
      bool first = true;
      for (int iy = std::max(0, 2 * y - 1); iy <= std::min(h - 1, 2 * y + 1); ++iy)
        for (int ix = std::max(0, 2 * x - 1); ix <= std::min(w - 1, 2 * x + 1); ++ix, first = false) {
          const float* s = in + (size_t(iy - in_row0) * w + ix) * c;
          for (int ch = 0; ch < c; ++ch) d[ch] = first || d[ch] < s[ch] ? s[ch] : d[ch];
        }
    }
}

PackedFloatConv pack_float_conv(const int8_t* weights, int out_channels, int in_channels, int kernel, int stride,
                                int padding) {
  check_shape("pack_float_conv", out_channels, in_channels, kernel, stride, padding);
  PackedFloatConv w{in_channels, out_channels, kernel, stride, padding, (out_channels + 15) / 16, {}};
  const int K = kernel * kernel * in_channels, ld = w.nblocks * 16;
  w.data.assign(size_t(K) * ld, 0.0f);
  for (int n = 0; n < out_channels; ++n)
    for (int k = 0; k < K; ++k) w.data[size_t(k) * ld + n] = float(weights[size_t(n) * K + k]);
  return w;
}

namespace detail {
void conv_f32_rows_scalar(const FloatConvArgs& a, int m0, int m1) { conv_f32_reference(a, m0, m1); }
}  // namespace detail

void conv_f32(const FloatImage& in, const PackedFloatConv& w, const float* scale, const float* bias, bool relu,
              float* out, GemmIsa isa, int threads) {
  if (in.c != w.in_channels || in.border < w.padding || !in.data || !scale || !bias || !out)
    throw std::invalid_argument("conv_f32: input image does not fit the convolution");
  if (in.h + 2 * w.padding < w.kernel || in.w + 2 * w.padding < w.kernel)
    throw std::invalid_argument("conv_f32: input smaller than the kernel");
  require(isa);
  const detail::FloatConvArgs a{&in, &w, scale, bias, relu, out, w.out_h(in.h), w.out_w(in.w), in.border - w.padding};
  detail::FloatConvRows rows = detail::conv_f32_rows_scalar;
  if (isa == GemmIsa::avx512_vnni) rows = detail::conv_f32_rows_avx512;
  if (isa == GemmIsa::avx2 || isa == GemmIsa::avx_vnni) rows = detail::conv_f32_rows_avx2;
  detail::split_rows(rows, a, 0, a.oh * a.ow, threads);
}

void requantize(const float* values, int h, int w, int n, const Requantizer& q, const CodeImage& out, GemmIsa isa) {
  if (out.h != h || out.w != w || out.cs < n || !out.data)
    throw std::invalid_argument("requantize: output code image does not fit");
  require(isa);
  if (isa == GemmIsa::avx512_vnni) return detail::requantize_avx512(values, h, w, n, q, out);
  if (isa == GemmIsa::avx2 || isa == GemmIsa::avx_vnni) return detail::requantize_avx2(values, h, w, n, q, out);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float* v = values + (size_t(y) * w + x) * n;
      uint8_t* dst = out.pixel(y, x);
      for (int c = 0; c < n; ++c) dst[c] = static_cast<uint8_t>(q.code(v[c]));
    }
}

}  // namespace apot::kernels
