// The RCF autograd function with its two implementations (fused kernels for CPU float32,
// LibTorch ops elsewhere), weight normalisation and the int8 quantiser.
#include "apot/qat/quantizer.h"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "apot/kernels/statistics.h"

namespace apot::qat {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<Backend> g_backend{Backend::automatic};

bool use_kernels(const torch::Tensor& input) {
  return g_backend.load() == Backend::automatic && input.device().is_cpu() && input.scalar_type() == torch::kFloat32;
}

// One copy to the host for both values (on a GPU each copy waits for the device).
void check_alpha_values(const torch::Tensor& alpha) {
  const torch::Tensor a = alpha.detach();
  const torch::Tensor range = torch::stack({a.min(), a.max()}).to(torch::kCPU, torch::kFloat32);
  const float smallest = range[0].item<float>(), largest = range[1].item<float>();
  if (!std::isfinite(smallest) || smallest < kernels::kMinAlpha || !std::isfinite(largest))
    throw std::invalid_argument("clipping threshold alpha must be finite and >= 1e-8, got " + std::to_string(smallest));
}

// Alpha shaped to broadcast against input: a scalar, or [C, 1, 1, ...] per output channel.
torch::Tensor broadcast_alpha(const torch::Tensor& alpha, const torch::Tensor& input) {
  if (alpha.numel() == 1) return alpha.reshape({});
  std::vector<int64_t> shape(static_cast<size_t>(input.dim()), 1);
  shape[0] = alpha.numel();
  return alpha.reshape(shape);
}

void check_alpha_shape(const torch::Tensor& alpha, const torch::Tensor& input) {
  if (alpha.numel() == 1) return;
  if (input.dim() < 1 || alpha.dim() != 1 || alpha.numel() != input.size(0))
    throw std::invalid_argument("per-channel alpha must have one value per output channel (" +
                                std::to_string(input.dim() ? input.size(0) : 0) + "), got " +
                                std::to_string(alpha.numel()));
}

// ---- LibTorch-ops path ----

struct LevelTensors {
  torch::Tensor thresholds, magnitudes;
};

// Made once per level set and device: a copy to a GPU at every call would wait for the device.
const LevelTensors& level_tensors(const levels::LevelSet& set, const torch::Device& device) {
  static std::mutex mutex;
  // Never destroyed: GPU tensors must not be freed after the CUDA runtime has shut down.
  static auto* cache = new std::map<std::pair<std::string, std::string>, LevelTensors>;
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, added] = cache->try_emplace({set.name(), device.str()});
  if (added) it->second = {torch::tensor(set.thresholds()).to(device), torch::tensor(set.magnitudes()).to(device)};
  return it->second;
}

torch::Tensor normalised(const torch::Tensor& input, const torch::Tensor& alpha, kernels::Normalisation norm) {
  return input.sub(norm.shift).div(norm.scale).div(broadcast_alpha(alpha, input));
}

// Index of the nearest magnitude: the number of thresholds <= m, or (reference_argmin) the
// argmin of the [levels x elements] distance matrix as the reference code computes it.
torch::Tensor magnitude_index(const torch::Tensor& m, const LevelTensors& t) {
  if (g_backend.load() == Backend::reference_argmin)
    return (m.reshape({1, -1}) - t.magnitudes.unsqueeze(1)).abs().argmin(0).view(m.sizes());
  return torch::bucketize(m, t.thresholds, /*out_int32=*/false, /*right=*/true);
}

// The signed level nearest to clamp(x).
torch::Tensor ops_project(const torch::Tensor& x, const levels::LevelSet& set) {
  const LevelTensors& t = level_tensors(set, x.device());
  if (set.is_signed()) {
    const torch::Tensor c = x.clamp(-1.0, 1.0);
    return torch::copysign(t.magnitudes.take(magnitude_index(c.abs(), t)), c);
  }
  const torch::Tensor c = x.clamp(0.0, 1.0);
  return t.magnitudes.take(magnitude_index(c, t));
}

torch::Tensor ops_forward(const torch::Tensor& input, const torch::Tensor& alpha, const levels::LevelSet& set,
                          kernels::Normalisation norm) {
  const torch::Tensor x = normalised(input, alpha, norm);
  const torch::Tensor out = ops_project(x, set).mul(broadcast_alpha(alpha, input));
  return torch::where(x.isnan(), x, out);
}

std::pair<torch::Tensor, torch::Tensor> ops_backward(const torch::Tensor& input, const torch::Tensor& g,
                                                     const torch::Tensor& alpha, const levels::LevelSet& set,
                                                     kernels::SteVariant variant, kernels::Normalisation norm) {
  const torch::Tensor x = normalised(input, alpha, norm);
  const torch::Tensor inside_term = g * (ops_project(x, set) - x);
  const torch::Tensor zero = torch::zeros({}, g.options());
  const bool cifar = variant == kernels::SteVariant::cifar;
  torch::Tensor term, pass;
  if (set.is_signed()) {
    const torch::Tensor outside = x.abs() > 1.0;
    term = torch::where(outside, torch::where(x > 0, g, -g), inside_term);
    pass = cifar ? g : torch::where(outside, zero, g);
  } else {
    const torch::Tensor above = x > 1.0, below = variant == kernels::SteVariant::rectified ? x <= 0.0 : x < 0.0;
    term = torch::where(above, g, torch::where(below, zero, inside_term));
    pass = torch::where(above, zero, g);
    if (!cifar) pass = torch::where(below, zero, pass);
  }
  const torch::Tensor nan = x.isnan();
  term = torch::where(nan, x, term);
  pass = torch::where(nan, x, pass).div(norm.scale);
  torch::Tensor grad_alpha;
  if (alpha.numel() == 1) {
    grad_alpha = term.to(torch::kFloat64).sum().to(alpha.scalar_type()).reshape(alpha.sizes());
  } else {
    grad_alpha = term.to(torch::kFloat64).reshape({input.size(0), -1}).sum(1).to(alpha.scalar_type());
  }
  return {pass, grad_alpha};
}

// ---- fused-kernel path ----

// Runs body(begin_element, count, alpha_value, channel) for the whole tensor or per channel.
template <typename Body>
void for_each_alpha_slice(const torch::Tensor& input, const torch::Tensor& alpha, Body body) {
  const torch::Tensor a = alpha.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const float* values = a.data_ptr<float>();
  const int64_t slices = a.numel();
  const int64_t per_slice = slices ? input.numel() / slices : 0;
  for (int64_t c = 0; c < slices; ++c) body(c * per_slice, per_slice, values[c], c);
}

// The dense layout the kernels walk: 4-d tensors whose strides are ordered as channels-last
// (dense, or a channel slice of such a tensor, as ShuffleNetV2's split makes) stay or become
// channels-last (a copy to NCHW and back would cost more than the projection), anything else
// becomes contiguous. The kernels are elementwise over memory, and per-channel weight alphas
// still find each output channel's values in one run (dimension 0 is the outermost in both).
at::MemoryFormat kernel_layout(const torch::Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous() && t.suggest_memory_format() == at::MemoryFormat::ChannelsLast)
    return at::MemoryFormat::ChannelsLast;
  return at::MemoryFormat::Contiguous;
}

torch::Tensor kernel_forward(const torch::Tensor& input, const torch::Tensor& alpha, const kernels::Projector& p,
                             kernels::Normalisation norm) {
  const at::MemoryFormat layout = kernel_layout(input);
  const torch::Tensor in = input.contiguous(layout);
  torch::Tensor out = torch::empty_like(in, layout);
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  for_each_alpha_slice(in, alpha, [&](int64_t begin, int64_t count, float a, int64_t) {
    p.forward(src + begin, static_cast<size_t>(count), a, dst + begin, kernels::default_isa(), norm);
  });
  return out;
}

std::pair<torch::Tensor, torch::Tensor> kernel_backward(const torch::Tensor& input, const torch::Tensor& grad,
                                                        const torch::Tensor& alpha, const kernels::Projector& p,
                                                        kernels::SteVariant variant, kernels::Normalisation norm) {
  const at::MemoryFormat layout = kernel_layout(input);
  const torch::Tensor in = input.contiguous(layout), g = grad.to(torch::kFloat32).contiguous(layout);
  torch::Tensor grad_input = torch::empty_like(in, layout);
  std::vector<double> sums(static_cast<size_t>(alpha.numel()));
  for_each_alpha_slice(in, alpha, [&](int64_t begin, int64_t count, float a, int64_t c) {
    sums[static_cast<size_t>(c)] =
        p.backward(in.data_ptr<float>() + begin, g.data_ptr<float>() + begin, static_cast<size_t>(count), a, variant,
                   grad_input.data_ptr<float>() + begin, kernels::default_isa(), norm);
  });
  torch::Tensor grad_alpha = torch::tensor(sums, torch::kFloat64).to(alpha.scalar_type()).reshape(alpha.sizes());
  return {grad_input, grad_alpha.to(alpha.device())};
}

class RcfFunction : public torch::autograd::Function<RcfFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, const torch::Tensor& alpha,
                               const QuantizerSpec& spec, kernels::Normalisation norm) {
    ctx->save_for_backward({input, alpha});
    save_spec(ctx, spec);
    ctx->saved_data["shift"] = static_cast<double>(norm.shift);
    ctx->saved_data["scale"] = static_cast<double>(norm.scale);
    const kernels::Projector& p = projector_for(spec);
    if (use_kernels(input)) return kernel_forward(input, alpha, p, norm);
    return ops_forward(input, alpha, p.level_set(), norm);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& input = saved[0];
    const torch::Tensor& alpha = saved[1];
    const QuantizerSpec spec = saved_spec(ctx);
    const kernels::Normalisation norm{static_cast<float>(ctx->saved_data["shift"].toDouble()),
                                      static_cast<float>(ctx->saved_data["scale"].toDouble())};
    const kernels::Projector& p = projector_for(spec);
    const auto [grad_input, grad_alpha] = use_kernels(input)
                                              ? kernel_backward(input, grads[0], alpha, p, spec.variant, norm)
                                              : ops_backward(input, grads[0], alpha, p.level_set(), spec.variant, norm);
    return {grad_input, grad_alpha, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

void save_spec(torch::autograd::AutogradContext* ctx, const QuantizerSpec& spec) {
  ctx->saved_data["kind"] = static_cast<int64_t>(spec.kind);
  ctx->saved_data["bits"] = static_cast<int64_t>(spec.bits);
  ctx->saved_data["role"] = static_cast<int64_t>(spec.role);
  ctx->saved_data["variant"] = static_cast<int64_t>(spec.variant);
}

QuantizerSpec saved_spec(torch::autograd::AutogradContext* ctx) {
  QuantizerSpec spec;
  spec.kind = static_cast<levels::Kind>(ctx->saved_data["kind"].toInt());
  spec.bits = static_cast<int>(ctx->saved_data["bits"].toInt());
  spec.role = static_cast<levels::Role>(ctx->saved_data["role"].toInt());
  spec.variant = static_cast<kernels::SteVariant>(ctx->saved_data["variant"].toInt());
  return spec;
}

WeightNorm parse_weight_norm(const std::string& name) {
  if (name == "none") return WeightNorm::none;
  if (name == "detached" || name == "cifar") return WeightNorm::detached;
  if (name == "through" || name == "imagenet") return WeightNorm::through;
  throw std::invalid_argument("unknown weight normalisation '" + name + "' (expected none, detached or through)");
}

const char* to_string(WeightNorm mode) {
  switch (mode) {
    case WeightNorm::none: return "none";
    case WeightNorm::detached: return "detached";
    case WeightNorm::through: return "through";
  }
  return "unknown";
}

void set_backend(Backend b) { g_backend.store(b); }
Backend backend() { return g_backend.load(); }

const kernels::Projector& projector_for(const QuantizerSpec& spec) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int>, std::unique_ptr<kernels::Projector>> cache;
  const auto key = std::make_tuple(static_cast<int>(spec.kind), spec.bits, static_cast<int>(spec.role));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end())
    it =
        cache
            .emplace(key, std::make_unique<kernels::Projector>(levels::LevelSet::make(spec.kind, spec.bits, spec.role)))
            .first;
  return *it->second;
}

namespace {
void check_quantizer_arguments(const torch::Tensor& input, const torch::Tensor& alpha, const QuantizerSpec& spec) {
  if (!input.is_floating_point()) throw std::invalid_argument("rcf_quantize needs a floating-point tensor");
  check_alpha_shape(alpha, input);
  check_alpha_values(alpha);
  if (spec.role != levels::Role::weight && alpha.numel() != 1)
    throw std::invalid_argument("activation quantisers take one alpha");
  if (spec.variant == kernels::SteVariant::rectified && spec.role != levels::Role::activation)
    throw std::invalid_argument("the rectified STE variant needs unsigned activation levels");
}
}  // namespace

torch::Tensor rcf_quantize(const torch::Tensor& input, const torch::Tensor& alpha, const QuantizerSpec& spec,
                           kernels::Normalisation norm) {
  check_quantizer_arguments(input, alpha, spec);
  return RcfFunction::apply(input, alpha, spec, norm);
}

bool rcf_bf16_available(const torch::Tensor& input) { return use_kernels(input); }

torch::Tensor rcf_forward_bf16(const torch::Tensor& input, const torch::Tensor& alpha, const QuantizerSpec& spec) {
  check_quantizer_arguments(input, alpha, spec);
  if (!use_kernels(input) || alpha.numel() != 1)
    throw std::invalid_argument("rcf_forward_bf16 takes a CPU float32 input and one alpha");
  const at::MemoryFormat layout = kernel_layout(input);
  const torch::Tensor in = input.detach().contiguous(layout);
  torch::Tensor out = torch::empty(in.sizes(), in.options().dtype(torch::kBFloat16).memory_format(layout));
  projector_for(spec).forward_bf16(in.data_ptr<float>(), static_cast<size_t>(in.numel()),
                                   alpha.detach().to(torch::kCPU, torch::kFloat32).item<float>(),
                                   reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()), kernels::default_isa());
  return out;
}

std::pair<torch::Tensor, torch::Tensor> rcf_backward_bf16(const torch::Tensor& input, const torch::Tensor& grad,
                                                          const torch::Tensor& alpha, const QuantizerSpec& spec) {
  if (!use_kernels(input) || grad.scalar_type() != torch::kBFloat16 || alpha.numel() != 1)
    throw std::invalid_argument("rcf_backward_bf16 takes a CPU float32 input, a bfloat16 gradient and one alpha");
  const at::MemoryFormat layout = kernel_layout(input);
  const torch::Tensor in = input.contiguous(layout), g = grad.contiguous(layout);
  torch::Tensor grad_input = torch::empty_like(in, layout);
  const double sum = projector_for(spec).backward_bf16(
      in.data_ptr<float>(), reinterpret_cast<const uint16_t*>(g.data_ptr<at::BFloat16>()),
      static_cast<size_t>(in.numel()), alpha.detach().to(torch::kCPU, torch::kFloat32).item<float>(), spec.variant,
      grad_input.data_ptr<float>(), kernels::default_isa());
  return {grad_input, torch::tensor(sum, torch::kFloat64).to(alpha.scalar_type()).reshape(alpha.sizes())};
}

namespace {
constexpr double kDegenerateStd = 1e-12;
}

kernels::Normalisation weight_statistics(const torch::Tensor& weight) {
  double mean, std;
  if (weight.device().is_cpu() && weight.scalar_type() == torch::kFloat32) {
    const torch::Tensor w = weight.detach().contiguous(kernel_layout(weight));  // statistics of any order
    const kernels::MeanStd s = kernels::mean_std(w.data_ptr<float>(), static_cast<size_t>(w.numel()));
    mean = s.mean;
    std = s.std;
  } else {
    const torch::Tensor w = weight.detach().to(torch::kFloat64);
    const torch::Tensor both =  // one copy to the host
        torch::stack({w.mean(), w.numel() > 1 ? w.std() : torch::zeros({}, w.options())}).to(torch::kCPU);
    mean = both[0].item<double>();
    std = both[1].item<double>();
  }
  return {static_cast<float>(mean), static_cast<float>(std < kDegenerateStd ? 1.0 : std)};
}

torch::Tensor standardise_weight(const torch::Tensor& weight) {
  const torch::Tensor centered = weight - weight.mean();
  if (weight.numel() < 2) return centered;
  const torch::Tensor variance = centered.pow(2).sum() / static_cast<double>(weight.numel() - 1);
  if (variance.item<double>() < kDegenerateStd * kDegenerateStd) return centered;
  return centered / variance.sqrt();
}

torch::Tensor normalize_weight(const torch::Tensor& weight, WeightNorm mode) {
  switch (mode) {
    case WeightNorm::none: return weight;
    case WeightNorm::detached: {
      const kernels::Normalisation n = weight_statistics(weight);
      return (weight - n.shift) / n.scale;
    }
    case WeightNorm::through: return standardise_weight(weight);
  }
  throw std::invalid_argument("unknown weight normalisation");
}

torch::Tensor quantize_weight(const torch::Tensor& weight, const torch::Tensor& alpha, const QuantizerSpec& spec,
                              WeightNorm mode) {
  QuantizerSpec weight_spec = spec;
  weight_spec.role = levels::Role::weight;
  switch (mode) {
    case WeightNorm::none: return rcf_quantize(weight, alpha, weight_spec);
    case WeightNorm::detached: return rcf_quantize(weight, alpha, weight_spec, weight_statistics(weight));
    case WeightNorm::through: return rcf_quantize(standardise_weight(weight), alpha, weight_spec);
  }
  throw std::invalid_argument("unknown weight normalisation");
}

torch::Tensor quantize_int8_symmetric(const torch::Tensor& weight) {
  const torch::Tensor w = weight.detach();
  const double max_abs = w.abs().max().item<double>();
  if (!std::isfinite(max_abs)) throw std::invalid_argument("cannot quantize weights holding NaN or Inf");
  if (max_abs == 0.0) return weight;
  const double scale = max_abs / 127.0;
  const torch::Tensor q = w.div(scale).round().clamp(-127, 127).mul(scale);
  return weight + (q - w);  // straight-through: the value of q, the gradient of weight
}

}  // namespace apot::qat
