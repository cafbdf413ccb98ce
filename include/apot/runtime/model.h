// The integer inference engine: loads an .apot file and runs its graph on float images.
//
// The graph's nodes run in order, each value in a buffer planned by liveness. Quantised
// convolutions run on uint8 activation codes (the integer levels of each layer's input level
// set) and int8 weight integers with int32 accumulation; a fusion step gives each one epilogue
// that applies the folded batch norm, a following residual add and its ReLU, and quantises the
// result for the next quantised layer. int8 layers (float input), pooling, sums that are not
// fused and the values between them run in float32, as in the trained model.
//
// Thread safety: a loaded Model is immutable; run() may be called from several threads at once.
// Working memory (sized for the model) is kept in a pool and reused between calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "apot/graph/graph.h"
#include "apot/kernels/gemm.h"
#include "apot/runtime/format.h"

namespace apot::runtime {

struct ModelInfo {
  graph::Graph graph;  // shapes inferred for height x width
  int height = 0, width = 0;
  int in_channels() const { return graph.in_channels(); }
  int num_classes() const { return graph.num_classes(); }
  std::vector<float> mean, std;
  std::vector<std::string> class_names;
  std::string metadata_json;
};

struct RunOptions {
  int threads = 1;
  kernels::GemmIsa isa = kernels::default_gemm_isa();
  // If set (size layer_count()), the seconds spent in each conv layer are added to it
  // (for the per-layer report of `apot bench`; the images of a batch then run one by one).
  std::vector<double>* layer_seconds = nullptr;
  // On the VNNI paths (AVX-512 VNNI, AVX-VNNI), an image whose values are all normalised 8-bit
  // pixels (kernels::pixel_of; every image a data set of 8-bit images gives) runs its first
  // layer on the pixels with integer sums (kernels::conv_stem_u8), the ImageNet max-pool fused
  // in bands; other input, the AVX2 and scalar paths, or false here use the float first layer.
  // Both compute the trained model's first layer; they differ in rounding only.
  bool pixel_stem = true;
};

class Model {
 public:
  static Model load(const std::string& path);
  static Model from_bytes(const std::vector<uint8_t>& bytes, const std::string& name = "model");
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelInfo& info() const;
  // input: batch x C x H x W float32, normalised as in training (ModelInfo mean/std).
  // Returns batch x classes logits. Throws std::invalid_argument on NaN or infinite input.
  std::vector<float> run(const float* input, int batch, const RunOptions& options = {}) const;
  // As run(), also returning float outputs (NHWC) for comparisons with the trained model, per
  // image in the order of tap_nodes(): the output of every conv layer and every sum (after its
  // activation; a conv whose sum is fused into it gives the sum's output), and of a max-pool
  // fused into the first layer instead of that layer's.
  std::vector<float> run_with_taps(const float* input, int batch, std::vector<std::vector<float>>& taps,
                                   const RunOptions& options = {}) const;
  // The graph nodes of run_with_taps' outputs, and their names ("conv1", "layer1.0.conv1",
  // "layer1.0" for the sum of a residual block).
  std::vector<int> tap_nodes() const;
  std::vector<std::string> tap_names() const;
  // The weight layers (conv, linear), in graph order; layer `index` is node layer_node(index).
  size_t layer_count() const;
  int layer_node(size_t index) const;
  // Whether layer `index` runs the Winograd F(2,3) kernel on this path (kernels::winograd_applies).
  bool uses_winograd(size_t index, kernels::GemmIsa isa = kernels::default_gemm_isa()) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace apot::runtime
