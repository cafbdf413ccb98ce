// bfloat16 convolutions for the training step (one autograd function over at::convolution and
// at::convolution_backward).
#include "apot/qat/precision.h"

#include "apot/kernels/cpu.h"

namespace apot::qat {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void save_geometry(AutogradContext* ctx, torch::IntArrayRef stride, torch::IntArrayRef padding,
                   torch::IntArrayRef dilation, int64_t groups) {
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["padding"] = padding.vec();
  ctx->saved_data["dilation"] = dilation.vec();
  ctx->saved_data["groups"] = groups;
}

// The gradients of the bfloat16 input and weight of a convolution saved by save_geometry.
std::tuple<torch::Tensor, torch::Tensor> bf16_conv_backward(AutogradContext* ctx, const torch::Tensor& grad,
                                                            const torch::Tensor& xb, const torch::Tensor& wb,
                                                            bool input_grad, bool weight_grad) {
  // The layout of the input (oneDNN reorders a gradient in another layout first).
  const torch::Tensor gb = grad.to(torch::kBFloat16).contiguous(xb.suggest_memory_format());
  const auto [gx, gw, unused] =
      at::convolution_backward(gb, xb, wb, c10::nullopt, ctx->saved_data["stride"].toIntVector(),
                               ctx->saved_data["padding"].toIntVector(), ctx->saved_data["dilation"].toIntVector(),
                               false, {0, 0}, ctx->saved_data["groups"].toInt(), {input_grad, weight_grad, false});
  return {gx, gw};
}

struct Bf16Conv : torch::autograd::Function<Bf16Conv> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               torch::IntArrayRef stride, torch::IntArrayRef padding, torch::IntArrayRef dilation,
                               int64_t groups) {
    const torch::Tensor xb = x.to(torch::kBFloat16), wb = w.to(torch::kBFloat16);
    const torch::Tensor y =
        at::convolution(xb, wb, {}, stride, padding, dilation, false, {0, 0}, groups).to(torch::kFloat32);
    ctx->save_for_backward({xb, wb});
    save_geometry(ctx, stride, padding, dilation, groups);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool input_grad = ctx->needs_input_grad(0), weight_grad = ctx->needs_input_grad(1);
    const auto [gx, gw] = bf16_conv_backward(ctx, grads[0], saved[0], saved[1], input_grad, weight_grad);
    return {input_grad ? gx.to(torch::kFloat32) : torch::Tensor(),
            weight_grad ? gw.to(torch::kFloat32) : torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

// Quantiser (bfloat16 out) + convolution; inputs: input, alpha, weight.
struct QuantBf16Conv : torch::autograd::Function<QuantBf16Conv> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& input, const torch::Tensor& alpha,
                               const torch::Tensor& w, const QuantizerSpec& spec, torch::IntArrayRef stride,
                               torch::IntArrayRef padding, torch::IntArrayRef dilation, int64_t groups) {
    const torch::Tensor qb = rcf_forward_bf16(input, alpha, spec), wb = w.to(torch::kBFloat16);
    const torch::Tensor y =
        at::convolution(qb, wb, {}, stride, padding, dilation, false, {0, 0}, groups).to(torch::kFloat32);
    ctx->save_for_backward({input, alpha, qb, wb});
    save_geometry(ctx, stride, padding, dilation, groups);
    save_spec(ctx, spec);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool to_input = ctx->needs_input_grad(0) || ctx->needs_input_grad(1);
    const auto [gq, gw] = bf16_conv_backward(ctx, grads[0], saved[2], saved[3], to_input, ctx->needs_input_grad(2));
    torch::Tensor grad_input, grad_alpha;
    if (to_input) {
      std::tie(grad_input, grad_alpha) = rcf_backward_bf16(saved[0], gq, saved[1], saved_spec(ctx));
    }
    return {grad_input,      grad_alpha,      ctx->needs_input_grad(2) ? gw.to(torch::kFloat32) : torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

const char* to_string(ConvPrecision p) { return p == ConvPrecision::bf16 ? "bf16" : "fp32"; }

bool cpu_has_native_bf16() { return kernels::cpu_features().avx512_bf16; }

torch::Tensor conv2d_bf16(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                          torch::IntArrayRef stride, torch::IntArrayRef padding, torch::IntArrayRef dilation,
                          int64_t groups) {
  if (x.dim() != 4 || w.dim() != 4 || x.scalar_type() != torch::kFloat32 || w.scalar_type() != torch::kFloat32)
    throw std::invalid_argument("conv2d_bf16 takes float32 [N, C, H, W] inputs and weights, got " +
                                std::string(x.dtype().name()) + " " + c10::str(x.sizes()));
  const torch::Tensor y = Bf16Conv::apply(x, w, stride, padding, dilation, groups);
  return bias.defined() ? y + bias.reshape({1, -1, 1, 1}) : y;
}

torch::Tensor quantized_conv2d_bf16(const torch::Tensor& input, const torch::Tensor& act_alpha,
                                    const QuantizerSpec& spec, const torch::Tensor& w, const torch::Tensor& bias,
                                    torch::IntArrayRef stride, torch::IntArrayRef padding, torch::IntArrayRef dilation,
                                    int64_t groups) {
  if (!rcf_bf16_available(input) || act_alpha.numel() != 1 || w.scalar_type() != torch::kFloat32 || input.dim() != 4)
    return conv2d_bf16(rcf_quantize(input, act_alpha, spec), w, bias, stride, padding, dilation, groups);
  const torch::Tensor y = QuantBf16Conv::apply(input, act_alpha, w, spec, stride, padding, dilation, groups);
  return bias.defined() ? y + bias.reshape({1, -1, 1, 1}) : y;
}

}  // namespace apot::qat
