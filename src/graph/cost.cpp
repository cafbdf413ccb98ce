// FixOPs, MACs and bytes of a graph.
#include "apot/graph/cost.h"

namespace apot::graph {

double fixops_factor(levels::Kind kind) {
  switch (kind) {
    case levels::Kind::apot: return 0.75;
    case levels::Kind::pot: return 0.70;
    default: return 1.0;
  }
}

CostReport compute_cost(const Graph& g) {
  CostReport r;
  r.arch = g.arch;
  for (int i : g.weight_layers()) {
    const Node& n = g[size_t(i)];
    LayerCost c;
    c.node = i;
    c.name = n.name;
    c.macs = g.macs(i);
    c.weights = g.weight_count(i);
    const double macs = double(c.macs);
    r.macs += c.macs;
    switch (n.quant.mode) {
      case LayerQuant::Mode::float32: c.fixops = macs; break;
      case LayerQuant::Mode::int8:
        c.fixops = macs;
        c.weight_bits = c.act_bits = 8;
        break;
      case LayerQuant::Mode::quantized:
        c.weight_bits = n.quant.weight_bits;
        c.act_bits = n.quant.act_bits;
        c.fixops = macs * c.weight_bits * c.act_bits / 64.0 * fixops_factor(n.quant.kind);
        r.quantized_macs += c.macs;
        break;
    }
    c.size_bytes = double(c.weights) * c.weight_bits / 8.0;
    r.fixops += c.fixops;
    r.size_bytes += c.size_bytes;
    r.float_bytes += (n.batch_norm.empty() ? 0.0 : 16.0 * n.out_channels) + (n.bias ? 4.0 * n.out_channels : 0.0);
    r.layers.push_back(c);
  }
  return r;
}

CostReport compute_cost(Graph g, int height, int width, int weight_bits, int act_bits, const std::string& kind,
                        const std::map<std::string, LayerOverride>& overrides) {
  QuantAssignment a;
  a.full_precision = kind == "fp";
  if (!a.full_precision) {
    a.kind = levels::parse_kind(kind);
    if (a.kind == levels::Kind::ternary) throw GraphError("cost: kind must be apot, pot, uniform or fp");
    if (weight_bits < 2 || weight_bits > 8 || act_bits < 2 || act_bits > 8)
      throw GraphError("cost: bit-widths must be 2..8, got W" + std::to_string(weight_bits) + "A" +
                       std::to_string(act_bits));
  }
  a.weight_bits = weight_bits;
  a.act_bits = act_bits;
  a.layers = overrides;
  a.check_level_sets = false;
  g.infer_shapes(height, width);
  assign_quantization(g, a);
  return compute_cost(g);
}

}  // namespace apot::graph
