// Synchronised batch norm for data-parallel training: the batch statistics (and, in the backward
// pass, the sums that the input gradient needs) are summed over every replica, so that N ranks
// of batch B normalise as one process of batch N x B does. The replicas are reached through a
// callback (the train library's Communicator), so this library does not depend on c10d.
#pragma once

#include <torch/torch.h>

#include <functional>

namespace apot::qat {

// Adds every replica's values into `t` (in place; the same call on every replica, in order).
using ReplicaSum = std::function<void(torch::Tensor& t)>;

// Batch norm in training mode over dimension 1 of x ([N, C] or [N, C, H, W]) with the
// statistics of all replicas' batches: y = (x - mean) / sqrt(var + eps) * weight + bias with the
// global mean and biased variance; the running statistics move by `momentum` towards the global
// mean and unbiased variance (as BatchNorm's do). The gradients of weight and bias are this
// replica's (the data-parallel gradient averaging combines them); the gradient of x uses the
// global sums, as PyTorch's SyncBatchNorm. With a sum that does nothing it is plain batch norm.
// `momentum` 0 or less: a cumulative average, as BatchNorm's momentum None (the caller passes
// 1 / batches seen).
torch::Tensor sync_batch_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                              torch::Tensor running_mean, torch::Tensor running_var, double momentum, double eps,
                              const ReplicaSum& sum);

}  // namespace apot::qat
