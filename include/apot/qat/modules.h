// QuantConv2d and QuantLinear: convolution and linear layers whose weight and input are
// quantised (APOT_SPEC section 4), and the policy that turns a full-precision model into a
// quantised one (8-bit first and last layers, b bits elsewhere, per-layer overrides).
#pragma once

#include <torch/torch.h>

#include "apot/graph/graph.h"
#include "apot/qat/precision.h"
#include "apot/qat/quantizer.h"

namespace apot::qat {

constexpr int kFullPrecision = 32;  // bits value meaning "not quantised"

struct QuantOptions {
  int weight_bits = kFullPrecision;  // 2..6 (apot/pot), 2..8 (uniform), or 32
  int act_bits = kFullPrecision;     // input activation bits, or 32 for an unquantised input
  // The input can be negative: signed activation levels (the weights' symmetric set) with their
  // own alpha, gradients zero outside [-alpha, alpha]; otherwise unsigned levels.
  bool signed_input = false;
  levels::Kind kind = levels::Kind::apot;
  kernels::SteVariant variant = kernels::SteVariant::cifar;
  WeightNorm weight_norm = WeightNorm::detached;
  double weight_alpha_init = 3.0;  // about 3 sigma of normalised weights
  double act_alpha_init = 8.0;     // the CIFAR reference; the ImageNet one uses 6
  bool per_channel_weight_alpha = false;
  bool int8_weights = false;  // symmetric int8 weights (first and last layer); weight_bits ignored
  // No batch norm follows the layer: with weight normalisation its quantised weight is
  // multiplied back by the weights' standard deviation (detached), so that its output keeps the
  // float layer's scale (docs/QAT.md "Layers without batch norm"). Normalisation on a layer
  // with batch norm is cancelled by it; without, each output would grow by about sqrt(fan-in).
  bool restore_weight_scale = false;

  bool quantizes_weight() const { return int8_weights || weight_bits != kFullPrecision; }
  bool quantizes_input() const { return act_bits != kFullPrecision; }
  // The quantiser of the input (role activation or signed_activation).
  QuantizerSpec input_spec() const;
  // Throws std::invalid_argument naming the problem if the combination has no level set.
  void validate() const;
  std::string describe() const;  // e.g. "W4A4 apot" or "W8(int8)A32"
};

// Shared by both layer types.
// The factor quantize_layer_weight multiplies the normalised, quantised weight by: the weights'
// standard deviation where options.restore_weight_scale applies (normalised APoT/PoT/uniform
// weights), else 1.
double weight_output_scale(const torch::Tensor& weight, const QuantOptions& options);
// weight_output_scale(weight) * Q(normalised weight).
torch::Tensor quantize_layer_weight(const torch::Tensor& weight, const torch::Tensor& weight_alpha,
                                    const QuantOptions& options);
// The weights as the layer's weight quantiser sees them before clipping: normalised (weight_norm)
// where the level sets quantise them, unchanged for int8 and float weights. In the units of
// weight_alpha: weight_output_scale() times these is what the layer's forward quantises.
torch::Tensor normalize_layer_weight(const torch::Tensor& weight, const QuantOptions& options);
// `drop`: the probability of keeping an element unquantised (QDrop; 0 in training and inference).
torch::Tensor quantize_layer_input(const torch::Tensor& input, const torch::Tensor& act_alpha,
                                   const QuantOptions& options, double drop = 0);

class QuantConv2dImpl : public torch::nn::Cloneable<QuantConv2dImpl> {
 public:
  QuantConv2dImpl(torch::nn::Conv2dOptions conv, QuantOptions quant = {});
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);
  // forward(relu(input)) with the ReLU inside the input quantiser (SteVariant::rectified): the
  // same output, one pass over the input fewer each way. Only where can_rectify_input().
  torch::Tensor forward_rectified(const torch::Tensor& input);
  // The input is quantised to unsigned levels, with no QDrop.
  bool can_rectify_input() const { return quant_.quantizes_input() && !quant_.signed_input && input_drop == 0; }
  // Changes the quantisation (bits, kind...) keeping the weights; alphas are re-initialised
  // only when their shape changes.
  void set_quant_options(const QuantOptions& quant);
  const QuantOptions& quant_options() const { return quant_; }
  const torch::nn::Conv2dOptions& conv_options() const { return conv_; }
  torch::Tensor quantized_weight() const { return quantize_layer_weight(weight, weight_alpha, quant_); }
  torch::Tensor normalized_weight() const { return normalize_layer_weight(weight, quant_); }
  double weight_output_scale() const { return qat::weight_output_scale(weight, quant_); }
  // The layer on `input` and `weight` as they are: forward() is apply(quantised input, quantized_weight()).
  torch::Tensor apply(const torch::Tensor& input, const torch::Tensor& weight) const;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor weight, bias, weight_alpha, act_alpha;
  // When defined, forward() uses it as the quantised weight (post-training reconstruction learns
  // its rounding); not a parameter, never saved.
  torch::Tensor weight_override;
  // The probability that forward() leaves an input element unquantised (QDrop, during
  // post-training reconstruction only); never saved.
  double input_drop = 0;
  // The convolution's arithmetic in training mode (conv2d_bf16 for float32 inputs when bf16);
  // evaluation is always float32. Never saved.
  ConvPrecision precision = ConvPrecision::fp32;

 private:
  // apply(rcf_quantize(input, spec), weight), or in bf16 training both in one function.
  torch::Tensor forward_quantising(const torch::Tensor& input, const QuantizerSpec& spec);
  // The padding for the bf16 convolutions where they apply to x (training, float32, numeric
  // padding), else nullptr.
  const torch::ExpandingArray<2>* bf16_padding(const torch::Tensor& x) const;

  torch::nn::Conv2dOptions conv_;
  QuantOptions quant_;
};
TORCH_MODULE(QuantConv2d);

class QuantLinearImpl : public torch::nn::Cloneable<QuantLinearImpl> {
 public:
  QuantLinearImpl(torch::nn::LinearOptions linear, QuantOptions quant = {});
  void reset() override;
  torch::Tensor forward(const torch::Tensor& input);
  void set_quant_options(const QuantOptions& quant);
  const QuantOptions& quant_options() const { return quant_; }
  const torch::nn::LinearOptions& linear_options() const { return linear_; }
  torch::Tensor quantized_weight() const { return quantize_layer_weight(weight, weight_alpha, quant_); }
  torch::Tensor normalized_weight() const { return normalize_layer_weight(weight, quant_); }
  double weight_output_scale() const { return qat::weight_output_scale(weight, quant_); }
  // The layer on `input` and `weight` as they are: forward() is apply(quantised input, quantized_weight()).
  torch::Tensor apply(const torch::Tensor& input, const torch::Tensor& weight) const;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor weight, bias, weight_alpha, act_alpha;
  // When defined, forward() uses it as the quantised weight (post-training reconstruction learns
  // its rounding); not a parameter, never saved.
  torch::Tensor weight_override;
  // The probability that forward() leaves an input element unquantised (QDrop, during
  // post-training reconstruction only); never saved.
  double input_drop = 0;

 private:
  torch::nn::LinearOptions linear_;
  QuantOptions quant_;
};
TORCH_MODULE(QuantLinear);

// How to quantise a whole model.
struct QuantPolicy {
  int weight_bits = 4;
  int act_bits = 4;
  levels::Kind kind = levels::Kind::apot;
  kernels::SteVariant variant = kernels::SteVariant::cifar;
  WeightNorm weight_norm = WeightNorm::detached;
  double weight_alpha_init = 3.0;
  double act_alpha_init = 8.0;
  bool per_channel_weight_alpha = false;
  bool int8_first_last = true;                         // first and last layers: int8 weights, unquantised input
  std::map<std::string, graph::LayerOverride> layers;  // per-layer changes (mixed precision)

  static QuantPolicy full_precision();
  bool is_full_precision() const { return weight_bits == kFullPrecision && act_bits == kFullPrecision; }
  graph::QuantAssignment assignment() const;
  // The options of a graph's weight layer (from node.quant, and whether a batch norm follows).
  QuantOptions options_for(const graph::Node& node) const;
};

}  // namespace apot::qat
