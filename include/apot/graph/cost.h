// The computational-cost model of APOT_SPEC section 7 on any graph: MACs, fixed-point
// operations (FixOPs = MACs * b_w * b_a / 64 times a per-kind factor) and model size, from
// each weight layer's quantisation (int8 layers count 8/8 bits, float layers every MAC as 1).
#pragma once

#include <string>
#include <vector>

#include "apot/graph/graph.h"

namespace apot::graph {

struct LayerCost {
  int node = -1;
  std::string name;
  int64_t macs = 0, weights = 0;
  int weight_bits = 32, act_bits = 32;
  double fixops = 0;      // in units of one 8x8-bit operation
  double size_bytes = 0;  // weights only
};

struct CostReport {
  std::string arch;
  int64_t macs = 0, quantized_macs = 0;
  double fixops = 0, size_bytes = 0;
  // Batch-norm parameters and running statistics (4 float32 per channel) and biases in
  // float32: Table 3's model sizes include them.
  double float_bytes = 0;
  std::vector<LayerCost> layers;
};

// 0.75 of a uniform MAC for APoT, 0.70 for PoT, 1 for uniform (APOT_SPEC section 7).
double fixops_factor(levels::Kind kind);

// The graph's shapes must be inferred and its quantisation assigned.
CostReport compute_cost(const Graph& graph);

// The usual policy on `graph` at `height` x `width`: int8 first and last layers, `kind` at
// weight_bits / act_bits elsewhere (2..8), or every layer float for kind "fp". Per-layer
// overrides apply on top.
CostReport compute_cost(Graph graph, int height, int width, int weight_bits, int act_bits, const std::string& kind,
                        const std::map<std::string, LayerOverride>& overrides = {});

}  // namespace apot::graph
