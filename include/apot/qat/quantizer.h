// LibTorch autograd operators for quantisation-aware training (APOT_SPEC sections 2-3):
// the reparameterised clipping function (RCF) with a learnable alpha, weight normalisation,
// and a symmetric int8 quantiser for the first and last layers.
//
// CPU float32 tensors run the fused kernels of src/kernels; tensors on other devices (CUDA)
// run a LibTorch-ops path (bucketize over the level thresholds, never a distance matrix). The
// ops path can be forced on the CPU (set_backend) and gives the same values there.
#pragma once

#include <torch/torch.h>

#include "apot/kernels/projection.h"
#include "apot/levels/level_set.h"

namespace apot::qat {

// Weight normalisation before quantisation: none; "detached" statistics (the CIFAR reference:
// d w_n / d w = 1/std); or gradients "through" mean and std (the ImageNet reference).
enum class WeightNorm { none, detached, through };
WeightNorm parse_weight_norm(const std::string& name);  // "none" | "detached" | "through"
const char* to_string(WeightNorm mode);

struct QuantizerSpec {
  levels::Kind kind = levels::Kind::apot;
  int bits = 4;
  levels::Role role = levels::Role::activation;
  kernels::SteVariant variant = kernels::SteVariant::cifar;
};

// Which implementation the operators use. automatic: fused kernels for CPU float32, LibTorch
// ops elsewhere. torch_ops: LibTorch ops everywhere. reference_argmin: LibTorch ops with the
// reference code's O(N*L) distance matrix + argmin projection (for benchmarks: it is what the
// reference costs; at exact ties it picks the lower level).
enum class Backend { automatic, torch_ops, reference_argmin };
void set_backend(Backend backend);
Backend backend();

// The shared, immutable projector of a level set (built once per kind/bits/role).
const kernels::Projector& projector_for(const QuantizerSpec& spec);

// RCF: P(clamp(x / alpha)) * alpha with x = (input - shift) / scale. alpha is a scalar tensor,
// or for weights a [C] tensor with one alpha per output channel (dimension 0 of input). The
// gradient to input is the straight-through estimate of spec.variant, divided by scale;
// the gradient to alpha is the spec's closed form, summed.
torch::Tensor rcf_quantize(const torch::Tensor& input, const torch::Tensor& alpha, const QuantizerSpec& spec,
                           kernels::Normalisation norm = {});

// A spec kept in an autograd context for the backward pass (the quantiser's functions).
void save_spec(torch::autograd::AutogradContext* ctx, const QuantizerSpec& spec);
QuantizerSpec saved_spec(torch::autograd::AutogradContext* ctx);

// The activation quantiser's kernels with bfloat16 on the convolution's side, for the bf16
// convolutions (qat::quantized_conv2d_bf16), without autograd. Available for CPU float32 inputs
// with the automatic backend (rcf_bf16_available). rcf_forward_bf16: rcf_quantize's values
// rounded to bfloat16 (in the kernels' layout), alpha checked as rcf_quantize checks it;
// rcf_backward_bf16: the gradients of input and alpha from a bfloat16 output gradient.
bool rcf_bf16_available(const torch::Tensor& input);
torch::Tensor rcf_forward_bf16(const torch::Tensor& input, const torch::Tensor& alpha, const QuantizerSpec& spec);
std::pair<torch::Tensor, torch::Tensor> rcf_backward_bf16(const torch::Tensor& input, const torch::Tensor& grad,
                                                          const torch::Tensor& alpha, const QuantizerSpec& spec);

// Weight quantiser: normalisation (mode) then RCF with role weight.
torch::Tensor quantize_weight(const torch::Tensor& weight, const torch::Tensor& alpha, const QuantizerSpec& spec,
                              WeightNorm mode);

// The weights as quantize_weight normalises them before clipping (no autograd intent).
torch::Tensor normalize_weight(const torch::Tensor& weight, WeightNorm mode);

// (w - mean) / std over the whole tensor with autograd through both statistics (unbiased std).
// A tensor whose std is below 1e-12 (all values equal) is divided by 1 instead: no NaN.
torch::Tensor standardise_weight(const torch::Tensor& weight);
// The statistics used by the detached mode, with the same guard.
kernels::Normalisation weight_statistics(const torch::Tensor& weight);

// Symmetric int8 (codes -127..127, scale max|w| / 127) with a straight-through gradient.
// Unlike the reference (which scales by the signed max and can produce codes below -127).
torch::Tensor quantize_int8_symmetric(const torch::Tensor& weight);

}  // namespace apot::qat
