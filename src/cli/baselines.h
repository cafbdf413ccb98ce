// The baselines `apot bench` measures the engine against, built from the engine model's graph
// at its input size (random weights: their values do not change the time of either).
//  - LibTorch FP32, two ways: the module forward with LibTorch's own dispatch (eval mode, no
//    grad), and a forward with batch norm folded into the convolutions that calls oneDNN
//    directly (at::mkldnn_convolution). LibTorch 1.13's dispatch sends small inputs (batch 1 at
//    CIFAR sizes) to its native im2col + BLAS path, which with Debian's netlib BLAS is slow; the
//    direct forward is its fastest configuration here.
//  - oneDNN int8 (Debian's libdnnl): every convolution u8 x s8 -> u8, NHWC, output scale, ReLU,
//    a sum that follows a convolution as its sum post-op, 3x3 / 2 max-pools; other pooling,
//    sums that no convolution takes, option-A shortcuts and linear layers are left out (they
//    favour the baseline).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "apot/graph/graph.h"

namespace apot::cli {

class TorchOnednnFp32 {
 public:
  // `graph` with shapes inferred.
  explicit TorchOnednnFp32(graph::Graph graph);
  static bool available();
  torch::Tensor forward(const torch::Tensor& x) const;

 private:
  graph::Graph graph_;
  std::vector<torch::Tensor> weights_, biases_;  // per node (weight layers)
};

class OnednnInt8 {
 public:
  OnednnInt8(const graph::Graph& graph, int batch);  // shapes inferred
  ~OnednnInt8();
  static bool available();  // built with oneDNN
  std::string isa() const;  // the instruction set oneDNN dispatches to
  void run(int threads) const;
  // Only the convolutions and linear layers, not the steps between them (pooling, concat,
  // shuffle, slice copies): what this contender ran before it ran whole networks.
  void run_weight_layers(int threads) const;
  // Seconds of each layer's convolution in each of `reps` runs (one list per weight layer of
  // the graph; those left out stay empty), on the threads the OpenMP
  // setting allowed when this object was created (oneDNN fixes them then).
  std::vector<std::vector<double>> layer_samples(int reps) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace apot::cli
