// The baselines `apot bench` measures the engine against, on the engine model's architecture
// and input size (random weights: their values do not change the time of either).
//  - LibTorch FP32, two ways: the module forward with LibTorch's own dispatch (eval mode, no
//    grad), and a forward with batch norm folded into the convolutions that calls oneDNN
//    directly (at::mkldnn_convolution). LibTorch 1.13's dispatch sends small inputs (batch 1 at
//    CIFAR sizes) to its native im2col + BLAS path, which with Debian's netlib BLAS is slow; the
//    direct forward is its fastest configuration here.
//  - oneDNN int8 (Debian's libdnnl): every convolution u8 x s8 -> u8, NHWC, output scale, ReLU,
//    the residual add as a sum post-op, ImageNet max-pool; the global pooling and the classifier
//    are left out (they favour the baseline).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "apot/levels/arch.h"

namespace apot::cli {

class TorchOnednnFp32 {
 public:
  TorchOnednnFp32(const levels::ResNetSpec& spec, int height, int width);
  static bool available();
  torch::Tensor forward(const torch::Tensor& x) const;

 private:
  levels::ResNetSpec spec_;
  std::vector<levels::LayerInfo> layers_;
  std::vector<levels::BlockInfo> blocks_;
  std::vector<torch::Tensor> weights_, biases_;
  torch::Tensor conv(const torch::Tensor& x, int layer) const;
};

class OnednnInt8 {
 public:
  OnednnInt8(const levels::ResNetSpec& spec, int height, int width, int batch);
  ~OnednnInt8();
  static bool available();  // built with oneDNN
  std::string isa() const;  // the instruction set oneDNN dispatches to
  void run(int threads) const;
  // Seconds of each layer's convolution in each of `reps` runs (one list per layer of
  // enumerate_layers; the classifier's, left out, stays empty), on the threads the OpenMP
  // setting allowed when this object was created (oneDNN fixes them then).
  std::vector<std::vector<double>> layer_samples(int reps) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace apot::cli
