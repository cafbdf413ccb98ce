// The engine's internals, for apot's own tools and tests (`apot run --compare`, `apot bench
// --layers`, the kernel-path tests): the graph a model runs, its layers, the float values of its
// intermediate nodes, per-layer times, and a choice of kernel path by GemmIsa. Not installed:
// an application uses apot/runtime/model.h.
#pragma once

#include <string>
#include <vector>

#include "apot/graph/graph.h"
#include "apot/kernels/gemm.h"
#include "apot/runtime/model.h"

namespace apot::runtime {

kernels::GemmIsa gemm_isa(Isa isa);  // automatic: kernels::default_gemm_isa()
Isa isa_of(kernels::GemmIsa isa);

// A quantised convolution's kernel: the path and its schedule (on AVX-512 VNNI, Winograd F(2,3)
// or the direct kernel for 3x3 stride-1 layers, and the direct kernel's loop order), and whether
// it runs on one thread where several run one image (one_thread: the engine measured that
// splitting the layer does not pay). Every variant gives the same bits.
struct ConvVariant {
  kernels::GemmIsa isa = kernels::GemmIsa::scalar;
  kernels::ConvSchedule schedule;
  bool one_thread = false;
  bool operator==(const ConvVariant& o) const {
    return isa == o.isa && schedule == o.schedule && one_thread == o.one_thread;
  }
};

struct EngineOptions {
  int threads = 1;
  kernels::GemmIsa isa = kernels::default_gemm_isa();
  // Quantised convolutions run the variant the engine measured fastest on this CPU when the
  // model was loaded (runtime/tune.cpp), where it has one; else `isa` everywhere.
  bool tuned = false;
  bool pixel_stem = true;
  // If set (size layer_count()), the seconds spent in each weight layer are added to it (the
  // images of a batch then run one by one).
  std::vector<double>* layer_seconds = nullptr;
};
EngineOptions engine_options(const RunOptions& options);

class Inspector {
 public:
  explicit Inspector(const Model& model) : model_(model) {}

  // The model's graph, shapes inferred for its input size.
  const graph::Graph& graph() const;
  // The weight layers (conv, linear), in graph order; layer `index` is node layer_node(index).
  size_t layer_count() const;
  int layer_node(size_t index) const;
  // Whether layer `index` runs the Winograd F(2,3) kernel on this path (kernels::winograd_applies).
  bool uses_winograd(size_t index, kernels::GemmIsa isa = kernels::default_gemm_isa()) const;
  // The kernel quantised layer `index` runs with these options (its tuned variant with
  // options.tuned, else options.isa), schedule.winograd set only where Winograd runs; and its
  // name, e.g. "avx512-vnni winograd", "avx512-vnni rows first", "avx-vnni", with ", one thread"
  // where several threads run the image but this layer runs on one.
  ConvVariant conv_variant(size_t index, const EngineOptions& options) const;
  std::string conv_variant_name(size_t index, const EngineOptions& options) const;
  // The kernel of the first layer on 8-bit pixels where layer `index` runs as one with these
  // options, e.g. "avx512-vnni amx, on pixels"; "" where it does not.
  std::string pixel_layer_kernel(size_t index, const EngineOptions& options) const;
  // How the variants of this model's layers were chosen (APOT_TUNE): "off", "nothing to
  // choose", or "N measured, M from the cache (path)", "(path: cannot be written)" where the
  // cache file could not be saved.
  std::string tuning() const;

  std::vector<float> run(const float* input, int batch, const EngineOptions& options) const;
  // As run(), also returning float outputs (NHWC) for comparisons with the trained model, per
  // image in the order of tap_nodes(): the output of every conv layer and every sum (after its
  // activation; a conv whose sum is fused into it gives the sum's output), and of a max-pool
  // fused into the first layer instead of that layer's.
  std::vector<float> run_with_taps(const float* input, int batch, std::vector<std::vector<float>>& taps,
                                   const EngineOptions& options = {}) const;
  // The graph nodes of run_with_taps' outputs, and their names ("conv1", "layer1.0.conv1",
  // "layer1.0" for the sum of a residual block).
  std::vector<int> tap_nodes() const;
  std::vector<std::string> tap_names() const;

 private:
  const Model& model_;
};

}  // namespace apot::runtime
