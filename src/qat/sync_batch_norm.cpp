// Synchronised batch norm: one all-reduce of [sum, sum of squares, count] per layer forward and
// one of [sum dy, sum dy (x - mean)] backward, in float64 so that the statistics of a large
// global batch keep their precision.
#include "apot/qat/sync_batch_norm.h"

#include <stdexcept>

namespace apot::qat {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The context keeps its own copy of the sum for the backward pass (a capsule), so that callers
// may pass temporaries and change the network's sum between passes.
struct SumHolder : torch::CustomClassHolder {
  explicit SumHolder(ReplicaSum s) : sum(std::move(s)) {}
  ReplicaSum sum;
};

// [1, C, 1, 1] (or [1, C]) views of per-channel values, for broadcasting against x.
torch::Tensor per_channel(const torch::Tensor& v, const torch::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = v.numel();
  return v.reshape(shape);
}

std::vector<int64_t> reduced_dims(const torch::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

class SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, torch::Tensor running_mean, torch::Tensor running_var,
                               double momentum, double eps, const ReplicaSum& sum) {
    const int64_t channels = x.size(1);
    const auto dims = reduced_dims(x);
    const torch::Tensor x64 = x.to(torch::kFloat64);
    torch::Tensor stats = torch::cat(
        {x64.sum(dims), x64.square().sum(dims), torch::full({1}, double(x.numel() / channels), x64.options())});
    sum(stats);
    const double count = stats[2 * channels].item<double>();
    if (count < 2) throw std::invalid_argument("batch norm needs more than one value per channel over the replicas");
    const torch::Tensor mean = stats.slice(0, 0, channels) / count;
    const torch::Tensor var = (stats.slice(0, channels, 2 * channels) / count - mean.square()).clamp_min(0);
    const torch::Tensor invstd = (var + eps).rsqrt();
    {
      torch::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1 - momentum).add_((var * (count / (count - 1))).to(running_var.scalar_type()), momentum);
    }
    const torch::Tensor scale = (invstd * weight.to(torch::kFloat64)).to(x.scalar_type());
    const torch::Tensor shift =
        (bias.to(torch::kFloat64) - mean * invstd * weight.to(torch::kFloat64)).to(x.scalar_type());
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["count"] = count;
    ctx->saved_data["sum"] = c10::IValue::make_capsule(c10::make_intrusive<SumHolder>(sum));
    return x * per_channel(scale, x) + per_channel(shift, x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3];
    const double count = ctx->saved_data["count"].toDouble();
    const auto holder = ctx->saved_data["sum"].toCapsule();
    const ReplicaSum& sum = static_cast<const SumHolder*>(holder.get())->sum;
    const int64_t channels = x.size(1);
    const auto dims = reduced_dims(x);
    const torch::Tensor dy = grads[0].to(torch::kFloat64);
    const torch::Tensor xmu = x.to(torch::kFloat64) - per_channel(mean, x);
    const torch::Tensor local = torch::cat({dy.sum(dims), (dy * xmu).sum(dims)});
    torch::Tensor global = local.clone();
    sum(global);
    const torch::Tensor sum_dy = global.slice(0, 0, channels), sum_dy_xmu = global.slice(0, channels);
    const torch::Tensor w = weight.to(torch::kFloat64);
    const torch::Tensor grad_x =
        per_channel(w * invstd, x) *
        (dy - per_channel(sum_dy / count, x) - xmu * per_channel(invstd.square() * sum_dy_xmu / count, x));
    const torch::Tensor grad_weight = (local.slice(0, channels) * invstd).to(weight.scalar_type());
    const torch::Tensor grad_bias = local.slice(0, 0, channels).to(weight.scalar_type());
    return {grad_x.to(x.scalar_type()), grad_weight, grad_bias, {}, {}, {}, {}, {}};
  }
};

}  // namespace

torch::Tensor sync_batch_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor running_mean, torch::Tensor running_var, double momentum, double eps,
                              const ReplicaSum& sum) {
  if (x.dim() < 2 || !weight.defined() || !bias.defined() || weight.numel() != x.size(1))
    throw std::invalid_argument("sync_batch_norm: input [N, C, ...] with affine weight and bias of C values");
  return SyncBatchNormFunction::apply(x, weight, bias, running_mean, running_var, momentum, eps, sum);
}

}  // namespace apot::qat
