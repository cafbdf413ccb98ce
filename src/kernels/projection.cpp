// The projection driver: argument checks, table preparation, chunking over OpenMP threads
// and the deterministic reduction of the alpha gradient.
#include "apot/kernels/projection.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "projection_impl.h"

namespace apot::kernels {
namespace {

// Fixed chunk size: the alpha gradient is summed per chunk, then over chunks in order, so
// the result depends on the data and the ISA, never on the number of threads.
constexpr size_t kChunk = size_t{1} << 14;
constexpr size_t kParallelThreshold = size_t{1} << 16;

const detail::IsaKernels& kernels_for(Isa isa) {
  for (Isa supported : supported_isas()) {
    if (supported != isa) continue;
    switch (isa) {
      case Isa::scalar: return detail::kScalarKernels;
      case Isa::avx2: return detail::kAvx2Kernels;
      case Isa::avx512: return detail::kAvx512Kernels;
    }
  }
  throw std::invalid_argument(std::string("ISA ") + to_string(isa) + " is not supported on this CPU");
}

void check_alpha(float alpha) {
  if (!std::isfinite(alpha) || alpha < kMinAlpha)
    throw std::invalid_argument("clipping threshold alpha must be finite and >= 1e-8, got " + std::to_string(alpha));
}

void check_normalisation(Normalisation norm) {
  if (!std::isfinite(norm.shift) || !std::isfinite(norm.scale) || !(norm.scale > 0.0f))
    throw std::invalid_argument("normalisation needs a finite shift and a finite positive scale");
}

template <typename Body>
void for_each_chunk(size_t n, Body body) {
  const long chunks = static_cast<long>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (long c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * kChunk;
    body(c, begin, std::min(n, begin + kChunk));
  }
}

size_t next_power_of_two(size_t n) {
  size_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace

SteVariant parse_ste_variant(const std::string& name) {
  if (name == "cifar") return SteVariant::cifar;
  if (name == "imagenet") return SteVariant::imagenet;
  if (name == "rectified") return SteVariant::rectified;
  throw std::invalid_argument("unknown STE variant '" + name + "' (expected cifar, imagenet or rectified)");
}

Projector::Projector(const levels::LevelSet& set) : set_(set) {
  const size_t count = set.magnitudes().size();
  if (count < 2 || count > 256) throw std::invalid_argument("level set " + set.name() + " has no 8-bit index form");
  tables_.num_magnitudes = static_cast<int>(count);
  tables_.table_size = static_cast<int>(next_power_of_two(count));
  tables_.log2_table_size = 0;
  while ((1 << tables_.log2_table_size) < tables_.table_size) ++tables_.log2_table_size;
  tables_.is_signed = set.is_signed();
  // Padded to at least one AVX-512 vector; extra thresholds are +inf so they never match.
  const size_t padded = std::max<size_t>(tables_.table_size, 16);
  tables_.thresholds.assign(padded, std::numeric_limits<float>::infinity());
  std::copy(set.thresholds().begin(), set.thresholds().end(), tables_.thresholds.begin());
  tables_.magnitudes.assign(padded, set.magnitudes().back());
  std::copy(set.magnitudes().begin(), set.magnitudes().end(), tables_.magnitudes.begin());
}

namespace {

uint32_t order_key(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

float from_order_key(uint32_t key) {
  const uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Smallest float u with g(u) >= t for a monotone g: a walk from a close guess, falling back to
// a bisection over the ordered float bit patterns.
template <typename G>
float lower_bound_input(G g, float t, float guess) {
  auto holds = [&](float u) { return g(u) >= t; };
  if (std::isfinite(guess)) {
    float u = guess;
    for (int step = 0; step < 8; ++step) {
      const bool here = holds(u);
      const float below = std::nextafter(u, -INFINITY);
      if (here && !holds(below)) return u;
      u = here ? below : std::nextafter(u, INFINITY);
    }
  }
  uint32_t lo = order_key(-INFINITY), hi = order_key(INFINITY);  // holds(hi) is true
  if (holds(-INFINITY)) return -INFINITY;
  while (hi - lo > 1) {  // invariant: !holds(lo), holds(hi)
    const uint32_t mid = lo + (hi - lo) / 2;
    (holds(from_order_key(mid)) ? hi : lo) = mid;
  }
  return from_order_key(hi);
}

detail::InputSpace input_space(const Projector::Tables& tables, float alpha, Normalisation norm) {
  const float scale = norm.scale;
  auto g = [scale, alpha](float u) { return (u / scale) / alpha; };
  auto bound = [&](float t) { return lower_bound_input(g, t, t * scale * alpha); };
  detail::InputSpace space;
  space.thresholds.assign(tables.thresholds.size(), std::numeric_limits<float>::infinity());
  for (int i = 0; i + 1 < tables.num_magnitudes; ++i) space.thresholds[i] = bound(tables.thresholds[i]);
  space.above_one = bound(std::nextafter(1.0f, 2.0f));
  space.non_negative = bound(0.0f);
  space.positive = bound(std::nextafter(0.0f, 1.0f));
  space.unit_scale = scale == 1.0f;
  const int count = tables.num_magnitudes - 1;  // thresholds
  if (tables.num_magnitudes <= 16) {            // one vector of magnitudes, indices 0 .. count
    space.cells = detail::Cells::make(space.thresholds.data(), count);
    if (!space.one_check()) space.cells = {};
    for (int i = 0; i < 16; ++i)
      space.check[i] = i < count ? space.thresholds[i] : std::numeric_limits<float>::quiet_NaN();
  }
  return space;
}

detail::RangeArgs base_args(const Projector::Tables& tables, const levels::LevelSet& set, float alpha,
                            Normalisation norm) {
  detail::RangeArgs a{};
  a.tables = &tables;
  a.alpha = alpha;
  a.norm = norm;
  a.zero_index = static_cast<int>(set.zero_index());
  return a;
}
}  // namespace

// Checks the arguments and moves the thresholds into input space (only the SIMD paths use it).
PreparedProjection Projector::prepare(float alpha, Isa isa, Normalisation norm) const {
  check_alpha(alpha);
  check_normalisation(norm);
  kernels_for(isa);
  PreparedProjection p;
  p.space_ = std::make_shared<const detail::InputSpace>(isa == Isa::scalar ? detail::InputSpace{}
                                                                           : input_space(tables_, alpha, norm));
  p.alpha_ = alpha;
  p.norm_ = norm;
  p.isa_ = isa;
  return p;
}

std::vector<float> Projector::input_thresholds(float alpha) const {
  check_alpha(alpha);
  const detail::InputSpace space = input_space(tables_, alpha, Normalisation{});
  std::vector<float> up(space.thresholds.begin(), space.thresholds.begin() + (tables_.num_magnitudes - 1));
  if (!tables_.is_signed) return up;
  // A signed set quantises the magnitude: |x| >= t takes the larger one, so -t itself belongs to
  // the level below the boundary, and "thresholds <= v" needs the next float above -t there.
  std::vector<float> all;
  for (auto t = up.rbegin(); t != up.rend(); ++t) all.push_back(std::nextafter(-*t, INFINITY));
  all.insert(all.end(), up.begin(), up.end());
  return all;
}

void Projector::quantize(const PreparedProjection& prepared, const float* input, size_t n, uint8_t* index) const {
  const detail::IsaKernels& k = kernels_for(prepared.isa_);
  detail::RangeArgs a = base_args(tables_, set_, prepared.alpha_, prepared.norm_);
  a.space = prepared.space_.get();
  a.input = input;
  a.index_out = index;
  const long chunks = static_cast<long>((n + kChunk - 1) / kChunk);
  std::vector<size_t> per_chunk(static_cast<size_t>(chunks), 0);
  for_each_chunk(n, [&](long c, size_t begin, size_t end) { per_chunk[c] = k.quantize(a, begin, end); });
  size_t nans = 0;
  for (size_t count : per_chunk) nans += count;
  if (nans > 0) throw std::invalid_argument("cannot quantize: input holds " + std::to_string(nans) + " NaN value(s)");
}

void Projector::quantize(const float* input, size_t n, float alpha, uint8_t* index, Isa isa, Normalisation norm) const {
  quantize(prepare(alpha, isa, norm), input, n, index);
}

void Projector::dequantize(const uint8_t* index, size_t n, float alpha, float* out, Isa isa) const {
  check_alpha(alpha);
  const detail::IsaKernels& k = kernels_for(isa);
  const std::vector<float> full = set_.levels();
  if (n > 0 && *std::max_element(index, index + n) >= full.size())
    throw std::invalid_argument("level index out of range for " + set_.name() + " (" + std::to_string(full.size()) +
                                " levels)");
  detail::RangeArgs a = base_args(tables_, set_, alpha, {});
  a.full_levels = full.data();
  a.index_in = index;
  a.out = out;
  for_each_chunk(n, [&](long, size_t begin, size_t end) { k.dequantize(a, begin, end); });
}

void Projector::forward(const float* input, size_t n, float alpha, float* out, Isa isa, Normalisation norm) const {
  forward_into(input, n, alpha, out, nullptr, isa, norm);
}

void Projector::forward_bf16(const float* input, size_t n, float alpha, uint16_t* out, Isa isa,
                             Normalisation norm) const {
  forward_into(input, n, alpha, nullptr, out, isa, norm);
}

void Projector::forward_into(const float* input, size_t n, float alpha, float* out, uint16_t* out_bf16, Isa isa,
                             Normalisation norm) const {
  const PreparedProjection p = prepare(alpha, isa, norm);
  const detail::IsaKernels& k = kernels_for(isa);
  detail::RangeArgs a = base_args(tables_, set_, alpha, norm);
  a.space = p.space_.get();
  a.input = input;
  a.out = out;
  a.out_bf16 = out_bf16;
  for_each_chunk(n, [&](long, size_t begin, size_t end) { k.forward(a, begin, end); });
}

double Projector::backward(const float* input, const float* grad_output, size_t n, float alpha, SteVariant variant,
                           float* grad_input, Isa isa, Normalisation norm) const {
  return backward_from(input, grad_output, nullptr, n, alpha, variant, grad_input, isa, norm);
}

double Projector::backward_bf16(const float* input, const uint16_t* grad_output, size_t n, float alpha,
                                SteVariant variant, float* grad_input, Isa isa, Normalisation norm) const {
  return backward_from(input, nullptr, grad_output, n, alpha, variant, grad_input, isa, norm);
}

double Projector::backward_from(const float* input, const float* grad_output, const uint16_t* grad_output_bf16,
                                size_t n, float alpha, SteVariant variant, float* grad_input, Isa isa,
                                Normalisation norm) const {
  const PreparedProjection p = prepare(alpha, isa, norm);
  const detail::IsaKernels& k = kernels_for(isa);
  detail::RangeArgs a = base_args(tables_, set_, alpha, norm);
  a.space = p.space_.get();
  a.input = input;
  a.grad_output = grad_output;
  a.grad_output_bf16 = grad_output_bf16;
  a.grad_input = grad_input;
  a.variant = variant;
  std::vector<double> partial((n + kChunk - 1) / kChunk, 0.0);
  for_each_chunk(n, [&](long c, size_t begin, size_t end) { partial[c] = k.backward(a, begin, end); });
  double sum = 0.0;
  for (double p : partial) sum += p;
  return sum;
}

}  // namespace apot::kernels
