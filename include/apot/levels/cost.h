// The computational-cost model of APOT_SPEC section 7: MACs, fixed-point operations (FixOPs)
// and model size of a network at given weight and activation bit-widths.
#pragma once

#include <string>
#include <vector>

#include "apot/levels/arch.h"

namespace apot::levels {

// kind: "apot" (0.75 of a uniform MAC), "pot" (0.70), "uniform" (1), "fp" (every MAC costs 1,
// 32-bit weights).
struct LayerCost {
  LayerInfo layer;
  int weight_bits = 32, act_bits = 32;
  double fixops = 0;      // in units of one 8x8-bit operation
  double size_bytes = 0;  // weights only
};

struct CostReport {
  std::string arch, kind;
  int weight_bits = 32, act_bits = 32;
  int64_t macs = 0, quantized_macs = 0;
  double fixops = 0, size_bytes = 0;
  // Batch-norm parameters and running statistics (4 float32 per channel) and the classifier
  // bias in float32: Table 3's model sizes include them.
  double float_bytes = 0;
  std::vector<LayerCost> layers;
};

// First conv and last linear count as 8/8-bit (1 FixOP per MAC, 8-bit weights).
CostReport compute_cost(const ResNetSpec& spec, int height, int width, int weight_bits, int act_bits,
                        const std::string& kind);

}  // namespace apot::levels
