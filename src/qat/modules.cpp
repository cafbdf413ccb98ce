// QuantConv2d / QuantLinear and the model-wide quantisation policy.
#include "apot/qat/modules.h"

#include <cmath>
#include <sstream>
#include <variant>

namespace apot::qat {
namespace F = torch::nn::functional;

void QuantOptions::validate() const {
  auto check = [this](int bits, levels::Role role) {
    if (bits == kFullPrecision) return;
    try {
      levels::LevelSet::make(kind, bits, role);
    } catch (const levels::LevelSetError& e) {
      throw std::invalid_argument(std::string("invalid quantisation options: ") + e.what());
    }
  };
  if (!int8_weights) check(weight_bits, levels::Role::weight);
  check(act_bits, input_spec().role);
  if (!(weight_alpha_init >= kernels::kMinAlpha) || !(act_alpha_init >= kernels::kMinAlpha) ||
      !std::isfinite(weight_alpha_init) || !std::isfinite(act_alpha_init))
    throw std::invalid_argument("initial alphas must be finite and positive");
}

std::string QuantOptions::describe() const {
  std::ostringstream s;
  const std::string weight = int8_weights ? "8(int8)" : quantizes_weight() ? std::to_string(weight_bits) : "32";
  s << "W" << weight << "A" << act_bits << (signed_input && quantizes_input() ? "s" : "");
  if ((quantizes_weight() && !int8_weights) || quantizes_input()) s << " " << levels::to_string(kind);
  return s.str();
}

QuantizerSpec QuantOptions::input_spec() const {
  // Signed inputs: the gradient is 0 outside [-alpha, alpha] on both sides, as the reference's
  // unsigned activations have above alpha (the cifar variant would pass it below -alpha).
  if (signed_input) return {kind, act_bits, levels::Role::signed_activation, kernels::SteVariant::imagenet};
  return {kind, act_bits, levels::Role::activation, variant};
}

double weight_output_scale(const torch::Tensor& weight, const QuantOptions& options) {
  if (!options.restore_weight_scale || options.weight_norm == WeightNorm::none || options.int8_weights ||
      options.weight_bits == kFullPrecision)
    return 1.0;
  return weight_statistics(weight.detach()).scale;
}

torch::Tensor quantize_layer_weight(const torch::Tensor& weight, const torch::Tensor& weight_alpha,
                                    const QuantOptions& options) {
  if (options.int8_weights) return quantize_int8_symmetric(weight);
  if (options.weight_bits == kFullPrecision) return weight;
  const QuantizerSpec spec{options.kind, options.weight_bits, levels::Role::weight, options.variant};
  const torch::Tensor q = quantize_weight(weight, weight_alpha, spec, options.weight_norm);
  const double scale = weight_output_scale(weight, options);
  return scale == 1.0 ? q : q * scale;
}

torch::Tensor normalize_layer_weight(const torch::Tensor& weight, const QuantOptions& options) {
  if (options.int8_weights || options.weight_bits == kFullPrecision) return weight;
  return normalize_weight(weight, options.weight_norm);
}

torch::Tensor quantize_layer_input(const torch::Tensor& input, const torch::Tensor& act_alpha,
                                   const QuantOptions& options, double drop) {
  if (!options.quantizes_input()) return input;
  const torch::Tensor q = rcf_quantize(input, act_alpha, options.input_spec());
  return drop > 0 ? torch::where(torch::rand_like(input) < drop, input, q) : q;
}

namespace {

torch::Tensor initial_weight_alpha(const QuantOptions& q, int64_t out_channels) {
  return q.per_channel_weight_alpha ? torch::full({out_channels}, q.weight_alpha_init)
                                    : torch::full({}, q.weight_alpha_init);
}

void register_alphas(torch::nn::Module& self, const QuantOptions& q, int64_t out_channels, torch::Tensor& weight_alpha,
                     torch::Tensor& act_alpha) {
  weight_alpha = self.register_parameter("weight_alpha", initial_weight_alpha(q, out_channels));
  act_alpha = self.register_parameter("act_alpha", torch::full({}, q.act_alpha_init));
}

// Keeps learned alphas (progressive initialisation reuses them) unless their shape changes.
void update_alphas(const QuantOptions& old_q, const QuantOptions& new_q, int64_t out_channels,
                   torch::Tensor& weight_alpha) {
  if (old_q.per_channel_weight_alpha == new_q.per_channel_weight_alpha) return;
  torch::NoGradGuard no_grad;
  weight_alpha.set_data(initial_weight_alpha(new_q, out_channels).to(weight_alpha.device()));
}

void init_like_pytorch(torch::Tensor& weight, torch::Tensor& bias, int64_t fan_in) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

}  // namespace

// ---- QuantConv2d ----

QuantConv2dImpl::QuantConv2dImpl(torch::nn::Conv2dOptions conv, QuantOptions quant)
    : conv_(std::move(conv)), quant_(quant) {
  reset();
}

void QuantConv2dImpl::reset() {
  quant_.validate();
  if (torch::enumtype::get_enum_name(conv_.padding_mode()) != std::string("kZeros"))
    throw std::invalid_argument("QuantConv2d supports zero padding only");
  const auto k = conv_.kernel_size();
  const int64_t out = conv_.out_channels(), in = conv_.in_channels() / conv_.groups();
  weight = register_parameter("weight", torch::empty({out, in, k->at(0), k->at(1)}));
  bias = conv_.bias() ? register_parameter("bias", torch::empty({out})) : register_parameter("bias", {}, false);
  register_alphas(*this, quant_, out, weight_alpha, act_alpha);
  init_like_pytorch(weight, bias, in * k->at(0) * k->at(1));
}

void QuantConv2dImpl::set_quant_options(const QuantOptions& quant) {
  quant.validate();
  update_alphas(quant_, quant, conv_.out_channels(), weight_alpha);
  quant_ = quant;
}

torch::Tensor QuantConv2dImpl::forward(const torch::Tensor& input) {
  if (quant_.quantizes_input() && input_drop == 0) return forward_quantising(input, quant_.input_spec());
  return apply(quantize_layer_input(input, act_alpha, quant_, input_drop),
               weight_override.defined() ? weight_override : quantized_weight());
}

torch::Tensor QuantConv2dImpl::forward_rectified(const torch::Tensor& input) {
  if (!can_rectify_input()) throw std::logic_error("forward_rectified: the input is not quantised to unsigned levels");
  QuantizerSpec spec = quant_.input_spec();
  spec.variant = kernels::SteVariant::rectified;
  return forward_quantising(input, spec);
}

const torch::ExpandingArray<2>* QuantConv2dImpl::bf16_padding(const torch::Tensor& x) const {
  if (precision != ConvPrecision::bf16 || !is_training() || x.scalar_type() != torch::kFloat32) return nullptr;
  // The padding is a variant (numbers, "valid" or "same"): c10::variant in LibTorch 1.13,
  // std::variant in 2.x; the unqualified call finds either one's get_if.
  using std::get_if;
  return get_if<torch::ExpandingArray<2>>(&conv_.padding());
}

torch::Tensor QuantConv2dImpl::forward_quantising(const torch::Tensor& input, const QuantizerSpec& spec) {
  const torch::Tensor w = weight_override.defined() ? weight_override : quantized_weight();
  if (const auto* padding = bf16_padding(input))  // the quantiser and the convolution in one function
    return quantized_conv2d_bf16(input, act_alpha, spec, w, bias, *conv_.stride(), **padding, *conv_.dilation(),
                                 conv_.groups());
  return apply(rcf_quantize(input, act_alpha, spec), w);
}

torch::Tensor QuantConv2dImpl::apply(const torch::Tensor& x, const torch::Tensor& w) const {
  if (const auto* padding = bf16_padding(x))
    return conv2d_bf16(x, w, bias, *conv_.stride(), **padding, *conv_.dilation(), conv_.groups());
  return F::conv2d(x, w,
                   F::Conv2dFuncOptions()
                       .bias(bias)
                       .stride(conv_.stride())
                       .padding(conv_.padding())
                       .dilation(conv_.dilation())
                       .groups(conv_.groups()));
}

void QuantConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "apot::qat::QuantConv2d(" << conv_.in_channels() << ", " << conv_.out_channels()
         << ", kernel_size=" << conv_.kernel_size() << ", stride=" << conv_.stride() << ", " << quant_.describe()
         << ")";
}

// ---- QuantLinear ----

QuantLinearImpl::QuantLinearImpl(torch::nn::LinearOptions linear, QuantOptions quant)
    : linear_(std::move(linear)), quant_(quant) {
  reset();
}

void QuantLinearImpl::reset() {
  quant_.validate();
  const int64_t out = linear_.out_features(), in = linear_.in_features();
  weight = register_parameter("weight", torch::empty({out, in}));
  bias = linear_.bias() ? register_parameter("bias", torch::empty({out})) : register_parameter("bias", {}, false);
  register_alphas(*this, quant_, out, weight_alpha, act_alpha);
  init_like_pytorch(weight, bias, in);
}

void QuantLinearImpl::set_quant_options(const QuantOptions& quant) {
  quant.validate();
  update_alphas(quant_, quant, linear_.out_features(), weight_alpha);
  quant_ = quant;
}

torch::Tensor QuantLinearImpl::forward(const torch::Tensor& input) {
  return apply(quantize_layer_input(input, act_alpha, quant_, input_drop),
               weight_override.defined() ? weight_override : quantized_weight());
}

torch::Tensor QuantLinearImpl::apply(const torch::Tensor& x, const torch::Tensor& w) const {
  return F::linear(x, w, bias);
}

void QuantLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "apot::qat::QuantLinear(" << linear_.in_features() << ", " << linear_.out_features() << ", "
         << quant_.describe() << ")";
}

// ---- policy ----

QuantPolicy QuantPolicy::full_precision() {
  QuantPolicy p;
  p.weight_bits = kFullPrecision;
  p.act_bits = kFullPrecision;
  return p;
}

graph::QuantAssignment QuantPolicy::assignment() const {
  graph::QuantAssignment a;
  a.full_precision = is_full_precision();
  a.kind = kind;
  a.weight_bits = weight_bits;
  a.act_bits = act_bits;
  a.int8_first_last = int8_first_last;
  a.layers = layers;
  return a;
}

QuantOptions QuantPolicy::options_for(const graph::Node& node) const {
  const graph::LayerQuant& quant = node.quant;
  QuantOptions q;
  q.restore_weight_scale = node.batch_norm.empty();
  q.variant = variant;
  q.weight_norm = weight_norm;
  q.weight_alpha_init = weight_alpha_init;
  q.act_alpha_init = act_alpha_init;
  q.per_channel_weight_alpha = per_channel_weight_alpha;
  q.kind = quant.kind;
  if (quant.mode == graph::LayerQuant::Mode::int8) {
    q.int8_weights = true;
  } else if (quant.mode == graph::LayerQuant::Mode::quantized) {
    q.weight_bits = quant.weight_bits;
    q.act_bits = quant.act_bits;
    q.signed_input = quant.signed_input;
  }
  return q;
}

}  // namespace apot::qat
