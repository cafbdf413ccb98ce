// The arithmetic of the training step's convolutions: float32, or bfloat16 inputs with float32
// accumulation (oneDNN's bf16 convolutions, about twice the float32 rate on CPUs with
// AVX512_BF16). docs/QAT.md "Convolutions in bfloat16" says what it changes.
#pragma once

#include <torch/torch.h>

#include "apot/qat/quantizer.h"

#include <string>

namespace apot::qat {

enum class ConvPrecision { fp32, bf16 };

const char* to_string(ConvPrecision p);

// True where this CPU multiplies bfloat16 natively (AVX512_BF16); elsewhere oneDNN emulates it,
// slower than float32.
bool cpu_has_native_bf16();

// The convolution of x and w (float32, any layout) with the inputs, weights and output
// gradients rounded to bfloat16 and every sum in float32; the output and the gradients of x, w
// and bias are float32. The bias is added in float32. Forward and backward are those of
// at::convolution on the rounded tensors.
torch::Tensor conv2d_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                          torch::IntArrayRef stride, torch::IntArrayRef padding, torch::IntArrayRef dilation,
                          int64_t groups);

// conv2d_bf16(rcf_quantize(input, act_alpha, spec), w, ...) in one autograd function: the
// quantiser writes its values as bfloat16 and reads the convolution's input gradient as
// bfloat16 (two passes over the activations fewer); the same values and gradients as those
// two calls (tested). Where the quantiser's kernels do not apply (rcf_bf16_available), the two
// calls themselves.
torch::Tensor quantized_conv2d_bf16(const torch::Tensor& input, const torch::Tensor& act_alpha,
                                    const QuantizerSpec& spec, const torch::Tensor& w, const torch::Tensor& bias,
                                    torch::IntArrayRef stride, torch::IntArrayRef padding, torch::IntArrayRef dilation,
                                    int64_t groups);

}  // namespace apot::qat
