// bfloat16 convolutions for the training step (one autograd function over at::convolution and
// at::convolution_backward).
#include "apot/qat/precision.h"

#include "apot/kernels/cpu.h"

namespace apot::qat {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Bf16Conv : torch::autograd::Function<Bf16Conv> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               torch::IntArrayRef stride, torch::IntArrayRef padding,
                               torch::IntArrayRef dilation, int64_t groups) {
    const torch::Tensor xb = x.to(torch::kBFloat16), wb = w.to(torch::kBFloat16);
    const torch::Tensor y =
        at::convolution(xb, wb, {}, stride, padding, dilation, false, {0, 0}, groups).to(torch::kFloat32);
    ctx->save_for_backward({xb, wb});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& xb = saved[0];
    const torch::Tensor& wb = saved[1];
    // The layout of the input (oneDNN reorders a gradient in another layout first).
    const torch::Tensor gb = grads[0].to(torch::kBFloat16).contiguous(xb.suggest_memory_format());
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), false};
    const auto [gx, gw, unused] = at::convolution_backward(
        gb, xb, wb, c10::nullopt, ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
        ctx->saved_data["dilation"].toIntVector(), false, {0, 0}, ctx->saved_data["groups"].toInt(), mask);
    return {mask[0] ? gx.to(torch::kFloat32) : torch::Tensor(), mask[1] ? gw.to(torch::kFloat32) : torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
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

}  // namespace apot::qat
