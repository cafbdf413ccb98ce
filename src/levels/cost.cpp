// FixOPs = MACs * (b_w * b_a) / 64 times a per-kind factor; 8/8-bit first and last layers.
#include "apot/levels/cost.h"

#include "apot/levels/level_set.h"

namespace apot::levels {

namespace {
double kind_factor(const std::string& kind) {
  if (kind == "apot") return 0.75;
  if (kind == "pot") return 0.70;
  if (kind == "uniform") return 1.0;
  throw LevelSetError("unknown cost kind '" + kind + "' (expected apot, pot, uniform or fp)");
}
}  // namespace

CostReport compute_cost(const ResNetSpec& spec, int height, int width, int weight_bits, int act_bits,
                        const std::string& kind) {
  const bool fp = kind == "fp";
  if (!fp) {
    kind_factor(kind);
    if (weight_bits < 2 || weight_bits > 8 || act_bits < 2 || act_bits > 8)
      throw LevelSetError("cost: bit-widths must be 2..8, got W" + std::to_string(weight_bits) + "A" +
                          std::to_string(act_bits));
  }
  CostReport r;
  r.arch = spec.name;
  r.kind = kind;
  r.weight_bits = fp ? 32 : weight_bits;
  r.act_bits = fp ? 32 : act_bits;
  for (const LayerInfo& l : enumerate_layers(spec, height, width)) {
    LayerCost c;
    c.layer = l;
    const double macs = static_cast<double>(l.macs());
    r.macs += l.macs();
    if (fp) {
      c.fixops = macs;
      c.weight_bits = c.act_bits = 32;
    } else if (l.first || l.last) {
      c.fixops = macs;
      c.weight_bits = c.act_bits = 8;
    } else {
      c.fixops = macs * weight_bits * act_bits / 64.0 * kind_factor(kind);
      c.weight_bits = weight_bits;
      c.act_bits = act_bits;
      r.quantized_macs += l.macs();
    }
    c.size_bytes = static_cast<double>(l.weight_count()) * c.weight_bits / 8.0;
    r.fixops += c.fixops;
    r.size_bytes += c.size_bytes;
    r.float_bytes += l.is_linear ? 4.0 * l.out_channels : 16.0 * l.out_channels;
    r.layers.push_back(c);
  }
  return r;
}

}  // namespace apot::levels
