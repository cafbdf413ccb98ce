// The integer engine on graphs that are not ResNets, without LibTorch: .apot files written by
// hand (graph, layer records, packed weight codes, metadata as the export writes them) and run
// against a plain reference interpreter of the graph's semantics. The reference quantises with
// the engine's own building blocks (the requantiser made from Projector::input_thresholds), so
// every activation code is the same and the values agree to float rounding. Every GEMM path,
// 1 and 2 threads, batches of 1 and 3; and the load-time errors for graphs the engine refuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "apot/graph/graph.h"
#include "apot/graph/serialize.h"
#include "apot/kernels/gemm.h"
#include "apot/kernels/projection.h"
#include "apot/levels/level_set.h"
#include "apot/runtime/format.h"
#include "apot/runtime/inspect.h"
#include "apot/runtime/model.h"

namespace {

using apot::graph::Activation;
using apot::graph::Graph;
using apot::graph::LayerQuant;
using apot::graph::Node;
using apot::graph::Op;
using apot::graph::Shape;
namespace kernels = apot::kernels;
namespace levels = apot::levels;
namespace runtime = apot::runtime;

// ---- graphs ----

LayerQuant int8() {
  LayerQuant q;
  q.mode = LayerQuant::Mode::int8;
  return q;
}

LayerQuant w4a4() {
  LayerQuant q;
  q.mode = LayerQuant::Mode::quantized;
  q.kind = levels::Kind::apot;
  q.weight_bits = 4;
  q.act_bits = 4;
  q.signed_input = false;
  return q;
}

Node input_node(int channels) {
  Node n;
  n.name = "input";
  n.op = Op::input;
  n.shape.channels = channels;
  return n;
}

Node conv(const std::string& name, int input, int out, int kernel, int stride, int padding, LayerQuant q,
          Activation act) {
  Node n;
  n.name = name;
  n.op = Op::conv;
  n.inputs = {input};
  n.out_channels = out;
  n.kernel = kernel;
  n.stride = stride;
  n.padding = padding;
  n.quant = q;
  n.activation = act;
  return n;
}

Node linear(const std::string& name, int input, int out, LayerQuant q) {
  Node n;
  n.name = name;
  n.op = Op::linear;
  n.inputs = {input};
  n.out_channels = out;
  n.bias = true;
  n.quant = q;
  return n;
}

Node pool(const std::string& name, Op op, int input, int kernel, int stride, int padding) {
  Node n;
  n.name = name;
  n.op = op;
  n.inputs = {input};
  n.kernel = kernel;
  n.stride = stride;
  n.padding = padding;
  return n;
}

Node unary(const std::string& name, Op op, int input) {
  Node n;
  n.name = name;
  n.op = op;
  n.inputs = {input};
  return n;
}

Node add(const std::string& name, std::vector<int> inputs, Activation act) {
  Node n;
  n.name = name;
  n.op = Op::add;
  n.inputs = std::move(inputs);
  n.activation = act;
  return n;
}

// 2 x 12 x 12: an int8 first layer, a strided quantised conv, a max-pool, a residual sum the
// engine fuses into conv3's epilogue (pool the residual), conv4 on the codes that epilogue
// makes, an avg-pool and a sum of it with conv4 that cannot be fused, global pooling and an
// int8 classifier.
Graph graph_a() {
  Graph g;
  g.arch = "graph_a";
  const int in = g.add(input_node(2));
  const int c1 = g.add(conv("conv1", in, 8, 3, 1, 1, int8(), Activation::relu));
  const int c2 = g.add(conv("conv2", c1, 16, 3, 2, 1, w4a4(), Activation::relu));
  const int p = g.add(pool("pool", Op::max_pool, c2, 2, 2, 0));
  const int c3 = g.add(conv("conv3", p, 16, 3, 1, 1, w4a4(), Activation::none));
  const int s = g.add(add("sum", {c3, p}, Activation::relu));
  const int c4 = g.add(conv("conv4", s, 16, 1, 1, 0, w4a4(), Activation::relu));
  const int avg = g.add(pool("avg", Op::avg_pool, c4, 3, 1, 1));
  const int s2 = g.add(add("sum2", {avg, c4}, Activation::none));
  const int gap = g.add(unary("gap", Op::global_avg_pool, s2));
  g.add(linear("fc", gap, 5, int8()));
  return g;
}

// 3 x 6 x 6: ResNet option A (a shortcut_pad beside a strided quantised conv, summed in that
// conv's epilogue; 2 input channels, padded to 4 in the code image) and a flatten of a 4 x 3 x 3
// map before an int8 classifier, whose record holds its weights in height x width x channels
// order.
Graph graph_b() {
  Graph g;
  g.arch = "graph_b";
  const int in = g.add(input_node(3));
  const int c1 = g.add(conv("c1", in, 2, 3, 1, 1, int8(), Activation::relu));
  const int c2 = g.add(conv("c2", c1, 4, 3, 2, 1, w4a4(), Activation::none));
  Node pad = unary("shortcut", Op::shortcut_pad, c1);
  pad.stride = 2;
  pad.out_channels = 4;
  const int sc = g.add(pad);
  const int s = g.add(add("block", {c2, sc}, Activation::relu));
  const int c3 = g.add(conv("c3", s, 4, 3, 1, 1, w4a4(), Activation::relu));
  const int flat = g.add(unary("flatten", Op::flatten, c3));
  g.add(linear("fc", flat, 5, int8()));
  return g;
}

// 3 x 10 x 10: a quantised conv on the image itself (an image step and a requantisation of it;
// with quantised_first false an int8 conv comes first instead), a 3x3 / 2 max-pool away from a
// first layer, an int8 conv on a float value that is not the image, a quantised 3x3 conv of
// 16 -> 32 channels (the Winograd kernel on AVX-512 VNNI, on a 5 x 5 map), a sum of three
// values, and an int8 classifier reading a 32 x 5 x 5 map directly (no flatten).
Graph graph_c(bool quantised_first) {
  Graph g;
  g.arch = quantised_first ? "graph_c" : "graph_c_int8_first";
  int in = g.add(input_node(3));
  if (!quantised_first) in = g.add(conv("f0", in, 3, 3, 1, 1, int8(), Activation::relu));
  const int q0 = g.add(conv("q0", in, 16, 3, 1, 1, w4a4(), Activation::relu));
  const int mp = g.add(pool("mp", Op::max_pool, q0, 3, 2, 1));
  const int f1 = g.add(conv("f1", mp, 32, 3, 1, 1, int8(), Activation::relu));
  const int q1 = g.add(conv("q1", f1, 32, 1, 1, 0, w4a4(), Activation::none));
  const int q2 = g.add(conv("q2", mp, 32, 3, 1, 1, w4a4(), Activation::none));
  const int s = g.add(add("sum3", {q1, q2, f1}, Activation::relu));
  g.add(linear("fc", s, 5, int8()));
  return g;
}

// 3 x 8 x 8: an avg-pool reading the image (a float consumer of the image other than an int8
// conv), then an int8 conv on that float value.
Graph graph_d() {
  Graph g;
  g.arch = "graph_d";
  const int in = g.add(input_node(3));
  const int p = g.add(pool("smooth", Op::avg_pool, in, 3, 1, 1));
  const int f = g.add(conv("f", p, 8, 3, 1, 1, int8(), Activation::relu));
  const int gap = g.add(unary("gap", Op::global_avg_pool, f));
  g.add(linear("fc", gap, 5, int8()));
  return g;
}

// 2 x 8 x 8, for the fusion and the buffer plan: two quantised convs on one value; a sum fused
// into the later of two quantised convs (the earlier's value its residual); a value made by an
// epilogue with two quantised readers (one gets its codes from the epilogue, the other
// requantises it) and a float reader; a fused sum whose residual is still read afterwards (not
// in place); a 5x5 quantised conv (a code image with a border of 2); a sum of a value with
// itself; and a quantised 1x1 conv on a 1 x 1 map as the output.
Graph graph_e() {
  Graph g;
  g.arch = "graph_e";
  const int in = g.add(input_node(2));
  const int c1 = g.add(conv("c1", in, 8, 3, 1, 1, int8(), Activation::relu));
  const int qa = g.add(conv("qa", c1, 8, 3, 1, 1, w4a4(), Activation::none));
  const int qb = g.add(conv("qb", c1, 8, 3, 1, 1, w4a4(), Activation::none));
  const int s1 = g.add(add("s1", {qa, qb}, Activation::relu));
  const int qc = g.add(conv("qc", s1, 8, 1, 1, 0, w4a4(), Activation::none));
  const int s2 = g.add(add("s2", {qc, s1}, Activation::none));
  const int qd = g.add(conv("qd", s1, 8, 5, 1, 2, w4a4(), Activation::relu));
  const int s3 = g.add(add("s3", {qd, qd}, Activation::none));
  const int s4 = g.add(add("s4", {s2, s3}, Activation::relu));
  const int gap = g.add(unary("gap", Op::global_avg_pool, s4));
  g.add(conv("head", gap, 5, 1, 1, 0, w4a4(), Activation::none));
  return g;
}

// 3 x 4 x 4: int8 linear layers on the image itself (a two-layer perceptron), or on the
// image's flattening.
Graph graph_f(bool flatten) {
  Graph g;
  g.arch = flatten ? "graph_f_flatten" : "graph_f";
  int in = g.add(input_node(3));
  if (flatten) in = g.add(unary("flatten", Op::flatten, in));
  Node h = linear("hidden", in, 16, int8());
  h.activation = Activation::relu;
  const int hidden = g.add(h);
  g.add(linear("fc", hidden, 5, int8()));
  return g;
}

// 3 x 8 x 8, the new layer types: a quantised depthwise conv with a ReLU6 clamp, a 1x1 conv
// without activation (a linear bottleneck) read by a conv with signed input levels, a channel
// split into two slices, a depthwise conv on one of them, their concat (the other slice read in
// place) and a channel shuffle (fused into the concat: with 2 groups an interleave of the two
// values, with 4 a gather), a sum with a ReLU6 clamp, a channel shuffle on its own, a plain
// concat, and a quantised linear layer before the int8 classifier.
Graph graph_g(int shuffle_groups) {
  Graph g;
  g.arch = "graph_g" + std::to_string(shuffle_groups);
  const int in = g.add(input_node(3));
  const int c1 = g.add(conv("c1", in, 16, 3, 1, 1, int8(), Activation::relu));
  Node d = conv("dw", c1, 16, 3, 1, 1, w4a4(), Activation::clamp);
  d.groups = 16;
  d.clamp_hi = 6;
  const int dw = g.add(d);
  const int pw = g.add(conv("pw", dw, 16, 1, 1, 0, w4a4(), Activation::none));
  LayerQuant signed_q = w4a4();
  signed_q.signed_input = true;
  const int qs = g.add(conv("qs", pw, 16, 1, 1, 0, signed_q, Activation::relu));
  Node a = unary("half_a", Op::channel_slice, qs);
  a.out_channels = 8;
  const int half_a = g.add(a);
  Node b = unary("half_b", Op::channel_slice, qs);
  b.begin = 8;
  b.out_channels = 8;
  const int half_b = g.add(b);
  Node d2 = conv("dw2", half_b, 8, 3, 1, 1, w4a4(), Activation::relu);
  d2.groups = 8;
  const int dw2 = g.add(d2);
  Node cat = unary("cat", Op::concat, half_a);
  cat.inputs = {half_a, dw2};
  const int joined = g.add(cat);
  Node sh = unary("shuffle", Op::channel_shuffle, joined);
  sh.groups = shuffle_groups;
  const int shuffled = g.add(sh);
  const int pp = g.add(pool("pool_pw", Op::max_pool, pw, 3, 1, 1));
  Node sum = add("sum", {shuffled, pp}, Activation::clamp);
  sum.clamp_hi = 6;
  const int summed = g.add(sum);
  Node sh2 = unary("shuffle2", Op::channel_shuffle, summed);  // on its own, and a plain concat
  sh2.groups = 4;
  const int shuffled2 = g.add(sh2);
  Node cat2 = unary("cat2", Op::concat, shuffled2);
  cat2.inputs = {shuffled2, pp};
  const int joined2 = g.add(cat2);
  const int gap = g.add(unary("gap", Op::global_avg_pool, joined2));
  Node fq = linear("fcq", gap, 12, w4a4());
  fq.activation = Activation::relu;
  const int fcq = g.add(fq);
  g.add(linear("fc", fcq, 10, int8()));
  return g;
}

// ---- .apot files by hand ----

// Per weight layer: scale = gain * (0.75..1.25) / (sqrt(fan-in) * rms weight * codes per unit
// of input), so that an input of rms 1 gives an output of rms about `gain`; bias in +-bias.
struct Gain {
  double gain = 1.0;
  float alpha = 2.0f;  // quantised layers: the input's clipping threshold
  double bias = 0.2;
};

struct LayerData {
  std::vector<int8_t> w;      // record order: conv [out][ky][kx][in]; linear [out][h][w][c]
  std::vector<int8_t> w_chw;  // linear: [out][c][h][w], PyTorch's flattening (the reference's)
  std::vector<float> scale, bias;
  float alpha = 0;
};

struct Net {
  Graph graph;                      // shapes inferred
  std::map<int, LayerData> layers;  // by node
  std::vector<runtime::LayerRecord> records;
  std::vector<uint8_t> blob;
  nlohmann::json meta;
  std::vector<uint8_t> bytes() const { return runtime::serialize_apot(meta.dump(), records, blob); }
};

uint64_t blob_add(std::vector<uint8_t>& blob, const void* data, size_t size, size_t align) {
  while (blob.size() % align) blob.push_back(0);
  const uint64_t offset = blob.size();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  blob.insert(blob.end(), p, p + size);
  return offset;
}

int bits_for(size_t count) {
  int b = 1;
  while ((size_t(1) << b) < count) ++b;
  return b;
}

Shape unflattened_input(const Graph& g, int node) {
  int i = g[size_t(node)].inputs.at(0);
  while (g[size_t(i)].op == Op::flatten) i = g[size_t(i)].inputs.at(0);
  return g[size_t(i)].shape;
}

// Weights, records and metadata for `graph`, as apot export writes them.
Net build(Graph graph, int height, int width, const std::map<std::string, Gain>& gains, unsigned seed) {
  graph.infer_shapes(height, width);
  Net net;
  std::mt19937 rng(seed);
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  for (int index : graph.weight_layers()) {
    const Node& node = graph[size_t(index)];
    const bool lin = node.op == Op::linear;
    const Shape in = lin ? unflattened_input(graph, index) : graph.input_shape_of(index);
    const Gain gain = gains.count(node.name) ? gains.at(node.name) : Gain{};
    runtime::LayerRecord r{};
    r.in_channels = uint32_t(lin ? in.size() : in.channels);
    r.out_channels = uint32_t(node.out_channels);
    r.kernel = uint32_t(lin ? 1 : node.kernel);
    r.stride = uint32_t(lin ? 1 : node.stride);
    r.padding = uint32_t(lin ? 0 : node.padding);
    r.groups = uint32_t(lin ? 1 : node.groups);
    const int out = node.out_channels;
    const size_t per_out = size_t(runtime::weight_count(r)) / size_t(out);
    std::vector<int8_t> table;
    double codes_per_unit = 1;
    LayerData d;
    if (node.quant.quantized()) {
      const levels::Kind kind = node.quant.kind;
      const levels::LevelSet wset = levels::LevelSet::make(kind, node.quant.weight_bits, levels::Role::weight);
      const levels::LevelSet aset =
          levels::LevelSet::make_activation(kind, node.quant.act_bits, node.quant.signed_input);
      for (int64_t v : wset.integers()) table.push_back(static_cast<int8_t>(v));
      d.alpha = gain.alpha > 0 ? gain.alpha : 2.0f;
      r.kind = uint32_t(runtime::LayerKind::quantized_conv);
      r.input_alpha = d.alpha;
      r.input_act_bits = uint32_t(node.quant.act_bits);
      r.input_kind = kind == levels::Kind::apot ? 0 : kind == levels::Kind::pot ? 1 : 2;
      r.input_denominator = uint32_t(aset.denominator());
      r.input_signed = node.quant.signed_input ? 1 : 0;
      codes_per_unit = double(aset.denominator()) / d.alpha;
    } else {
      for (int v = -127; v <= 127; ++v) table.push_back(static_cast<int8_t>(v));
      r.kind = uint32_t(lin ? runtime::LayerKind::float_linear : runtime::LayerKind::float_conv);
    }
    // Codes (indices into the table) in generation order: conv [out][ky][kx][in]; linear
    // [out][c][h][w], permuted to the record's [out][h][w][c] as the export does.
    std::uniform_int_distribution<int> pick(0, int(table.size()) - 1);
    std::vector<uint8_t> codes(size_t(out) * per_out);
    for (auto& c : codes) c = static_cast<uint8_t>(pick(rng));
    if (lin) {
      d.w_chw.resize(codes.size());
      for (size_t i = 0; i < codes.size(); ++i) d.w_chw[i] = table[codes[i]];
      const int H = in.height, W = in.width, C = in.channels;
      std::vector<uint8_t> hwc(codes.size());
      for (int o = 0; o < out; ++o)
        for (int c = 0; c < C; ++c)
          for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x)
              hwc[size_t(o) * per_out + (size_t(y) * W + x) * C + c] =
                  codes[size_t(o) * per_out + (size_t(c) * H + y) * W + x];
      codes = hwc;
    }
    d.w.resize(codes.size());
    double sq = 0;
    for (size_t i = 0; i < codes.size(); ++i) {
      d.w[i] = table[codes[i]];
      sq += double(d.w[i]) * d.w[i];
    }
    const double w_rms = std::sqrt(sq / double(codes.size()));
    for (int o = 0; o < out; ++o) {
      d.scale.push_back(float(gain.gain * uniform(0.75, 1.25) / (std::sqrt(double(per_out)) * w_rms * codes_per_unit)));
      d.bias.push_back(float(gain.bias * uniform(-1.0, 1.0)));
    }
    r.weight_bits = uint32_t(bits_for(table.size()));
    r.weight_level_count = uint32_t(table.size());
    const std::vector<uint8_t> packed = runtime::pack_codes(codes, int(r.weight_bits));
    r.weights = blob_add(net.blob, packed.data(), packed.size(), 1);
    r.weight_levels = blob_add(net.blob, table.data(), table.size(), 1);
    r.scale = blob_add(net.blob, d.scale.data(), d.scale.size() * 4, 4);
    r.bias = blob_add(net.blob, d.bias.data(), d.bias.size() * 4, 4);
    net.records.push_back(r);
    net.layers[index] = std::move(d);
  }
  const int channels = graph.in_channels();
  std::vector<std::string> names;
  for (int k = 0; k < graph.num_classes(); ++k) names.push_back("class" + std::to_string(k));
  net.meta =
      nlohmann::json{{"format", "apot"},
                     {"version", runtime::kFormatVersion},
                     {"graph", apot::graph::graph_to_json(graph)},
                     {"input",
                      {{"height", height},
                       {"width", width},
                       {"mean", std::vector<float>(size_t(channels), 0.0f)},
                       {"std", std::vector<float>(size_t(channels), 1.0f)}}},
                     {"class_names", names},
                     {"quant", {{"kind", "apot"}, {"weight_bits", 4}, {"act_bits", 4}, {"int8_first_last", true}}},
                     {"provenance", nlohmann::json::object()}};
  net.graph = std::move(graph);
  return net;
}

// ---- the reference interpreter ----

struct Reference {
  std::vector<std::vector<float>> values;  // per node: NHWC; flatten: channels, height, width order
  std::map<int, std::vector<int>> codes;   // per quantised conv: its input's codes (NHWC)
};

// An NHWC map in C, H, W order (the flattening the graph defines; a 1 x 1 map is unchanged).
std::vector<float> chw_of(const std::vector<float>& x, const Shape& s) {
  std::vector<float> out(x.size());
  for (int c = 0; c < s.channels; ++c)
    for (int y = 0; y < s.height; ++y)
      for (int w = 0; w < s.width; ++w)
        out[(size_t(c) * s.height + y) * s.width + w] = x[(size_t(y) * s.width + w) * s.channels + c];
  return out;
}

levels::LevelSet input_levels(const LayerQuant& q) {
  return levels::LevelSet::make_activation(q.kind, q.act_bits, q.signed_input);
}

// Thresholds as the engine makes them; codes: level index -> the level's integer + 128 (signed
// levels are negative), so that interpret() has the integers as code - 128.
kernels::Requantizer requantizer_of(const LayerQuant& q, float alpha) {
  const levels::LevelSet aset = input_levels(q);
  std::vector<uint8_t> codes;
  for (int64_t v : aset.integers()) codes.push_back(static_cast<uint8_t>(v + 128));
  return kernels::make_requantizer(kernels::Projector(aset).input_thresholds(alpha), codes);
}

// The input's level integers of a quantised layer (NHWC, or the flattened order of x).
std::vector<int> level_integers(const LayerQuant& q, float alpha, const std::vector<float>& x) {
  const kernels::Requantizer r = requantizer_of(q, alpha);
  std::vector<int> out(x.size());
  for (size_t k = 0; k < x.size(); ++k) out[k] = r.code(x[k]) - 128;
  return out;
}

// The graph's semantics node by node, in plain loops, for one C x H x W image.
Reference interpret(const Net& net, const float* image) {
  const Graph& g = net.graph;
  Reference ref;
  ref.values.resize(g.size());
  for (size_t i = 0; i < g.size(); ++i) {
    const Node& n = g[i];
    const Shape& os = n.shape;
    std::vector<float>& out = ref.values[i];
    out.assign(size_t(os.size()), 0.0f);
    if (n.op == Op::input) {
      for (int c = 0; c < os.channels; ++c)
        for (int y = 0; y < os.height; ++y)
          for (int x = 0; x < os.width; ++x)
            out[(size_t(y) * os.width + x) * os.channels + c] = image[(size_t(c) * os.height + y) * os.width + x];
      continue;
    }
    const Shape& is = g[size_t(n.inputs[0])].shape;
    const std::vector<float>& x = ref.values[size_t(n.inputs[0])];
    const int C = is.channels;
    auto inside = [&](int y, int xx) { return y >= 0 && xx >= 0 && y < is.height && xx < is.width; };
    switch (n.op) {
      case Op::input: break;
      case Op::conv: {
        const LayerData& d = net.layers.at(int(i));
        const int K = n.kernel;
        if (n.quant.quantized()) {
          // The input's level integers, then exact integer sums (output o of group g reads input
          // channels g * C/groups on), then the epilogue's float steps.
          const std::vector<int>& codes = ref.codes[int(i)] = level_integers(n.quant, d.alpha, x);
          const int per_group = C / n.groups, outs_per_group = os.channels / n.groups;
          for (int oy = 0; oy < os.height; ++oy)
            for (int ox = 0; ox < os.width; ++ox)
              for (int o = 0; o < os.channels; ++o) {
                int64_t acc = 0;
                const int c0 = o / outs_per_group * per_group;
                for (int ky = 0; ky < K; ++ky)
                  for (int kx = 0; kx < K; ++kx) {
                    const int iy = oy * n.stride - n.padding + ky, ix = ox * n.stride - n.padding + kx;
                    if (!inside(iy, ix)) continue;  // level 0
                    for (int c = 0; c < per_group; ++c)
                      acc += int64_t(d.w[((size_t(o) * K + ky) * K + kx) * per_group + c]) *
                             codes[(size_t(iy) * is.width + ix) * C + c0 + c];
                  }
                float v = d.scale[size_t(o)] * float(acc);
                v = v + d.bias[size_t(o)];
                out[(size_t(oy) * os.width + ox) * os.channels + o] = v;
              }
        } else {
          // int8 weights on a float input: sum = fma(x, w, sum) over taps and channels in row
          // order, the border contributing zero products; then scale and bias.
          for (int oy = 0; oy < os.height; ++oy)
            for (int ox = 0; ox < os.width; ++ox)
              for (int o = 0; o < os.channels; ++o) {
                float acc = 0.0f;
                for (int ky = 0; ky < K; ++ky)
                  for (int kx = 0; kx < K; ++kx) {
                    const int iy = oy * n.stride - n.padding + ky, ix = ox * n.stride - n.padding + kx;
                    for (int c = 0; c < C; ++c) {
                      const float xv = inside(iy, ix) ? x[(size_t(iy) * is.width + ix) * C + c] : 0.0f;
                      acc = std::fma(xv, float(d.w[((size_t(o) * K + ky) * K + kx) * C + c]), acc);
                    }
                  }
                float v = d.scale[size_t(o)] * acc;
                v = v + d.bias[size_t(o)];
                out[(size_t(oy) * os.width + ox) * os.channels + o] = v;
              }
        }
        break;
      }
      case Op::linear: {
        // On the input flattened in C, H, W order, with the weights in that order.
        const LayerData& d = net.layers.at(int(i));
        const std::vector<float> f = chw_of(x, is);
        if (n.quant.quantized()) {  // exact sums of the input's level integers
          const std::vector<int>& codes = ref.codes[int(i)] = level_integers(n.quant, d.alpha, f);
          for (int o = 0; o < os.channels; ++o) {
            int64_t acc = 0;
            for (size_t k = 0; k < f.size(); ++k) acc += int64_t(d.w_chw[size_t(o) * f.size() + k]) * codes[k];
            const float v = d.scale[size_t(o)] * float(acc);
            out[size_t(o)] = v + d.bias[size_t(o)];
          }
          break;
        }
        for (int o = 0; o < os.channels; ++o) {
          float acc = 0.0f;
          for (size_t k = 0; k < f.size(); ++k) acc = acc + f[k] * float(d.w_chw[size_t(o) * f.size() + k]);
          float v = d.scale[size_t(o)] * acc;
          out[size_t(o)] = v + d.bias[size_t(o)];
        }
        break;
      }
      case Op::add:
        out = x;
        for (size_t k = 1; k < n.inputs.size(); ++k) {
          const std::vector<float>& y = ref.values[size_t(n.inputs[k])];
          for (size_t e = 0; e < out.size(); ++e) out[e] = out[e] + y[e];
        }
        break;
      case Op::max_pool:
      case Op::avg_pool:
        for (int oy = 0; oy < os.height; ++oy)
          for (int ox = 0; ox < os.width; ++ox)
            for (int c = 0; c < C; ++c) {
              float acc = n.op == Op::max_pool ? -std::numeric_limits<float>::infinity() : 0.0f;
              for (int ky = 0; ky < n.kernel; ++ky)
                for (int kx = 0; kx < n.kernel; ++kx) {
                  const int iy = oy * n.stride - n.padding + ky, ix = ox * n.stride - n.padding + kx;
                  if (!inside(iy, ix)) continue;  // max: not in the window; avg: a zero
                  const float v = x[(size_t(iy) * is.width + ix) * C + c];
                  acc = n.op == Op::max_pool ? std::max(acc, v) : acc + v;
                }
              out[(size_t(oy) * os.width + ox) * C + c] = n.op == Op::max_pool ? acc : acc / float(n.kernel * n.kernel);
            }
        break;
      case Op::global_avg_pool:
        for (int c = 0; c < C; ++c) {
          float acc = 0.0f;
          for (int p = 0; p < is.height * is.width; ++p) acc = acc + x[size_t(p) * C + c];
          out[size_t(c)] = acc / float(is.height * is.width);
        }
        break;
      case Op::flatten: out = chw_of(x, is); break;
      case Op::shortcut_pad: {
        const int before = (os.channels - C) / 2;
        for (int oy = 0; oy < os.height; ++oy)
          for (int ox = 0; ox < os.width; ++ox)
            for (int c = 0; c < C; ++c)
              out[(size_t(oy) * os.width + ox) * os.channels + before + c] =
                  x[(size_t(oy * n.stride) * is.width + ox * n.stride) * C + c];
        break;
      }
      case Op::concat:
        for (int p = 0, at = 0; p < os.height * os.width; ++p, at = 0)
          for (int j : n.inputs) {
            const int cj = g[size_t(j)].shape.channels;
            for (int c = 0; c < cj; ++c)
              out[size_t(p) * os.channels + at++] = ref.values[size_t(j)][size_t(p) * cj + c];
          }
        break;
      case Op::channel_slice:
        for (int p = 0; p < os.height * os.width; ++p)
          for (int c = 0; c < os.channels; ++c) out[size_t(p) * os.channels + c] = x[size_t(p) * C + n.begin + c];
        break;
      case Op::channel_shuffle:  // output channel i * groups + g is input channel g * (C / groups) + i
        for (int p = 0; p < os.height * os.width; ++p)
          for (int c = 0; c < C; ++c)
            out[size_t(p) * C + (c % (C / n.groups)) * n.groups + c / (C / n.groups)] = x[size_t(p) * C + c];
        break;
    }
    if (n.activation == Activation::relu)
      for (float& v : out) v = std::max(v, 0.0f);
    if (n.activation == Activation::clamp)
      for (float& v : out) v = std::min(std::max(v, n.clamp_lo), n.clamp_hi);
  }
  return ref;
}

// ---- comparisons ----

// Largest |got - want| over the largest |want|, with at most `tolerance` of it allowed.
double relative_deviation(const float* got, const std::vector<float>& want, double tolerance, const std::string& what) {
  double top = 0, worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < want.size(); ++i) top = std::max(top, double(std::fabs(want[i])));
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    if (std::isnan(d)) {
      worst = d, worst_at = i;
      break;
    }
    if (d > worst) worst = d, worst_at = i;
  }
  const double rel = top > 0 ? worst / top : worst;
  EXPECT_LE(rel, tolerance) << what << ": element " << worst_at << " is " << got[worst_at] << ", the reference "
                            << want[worst_at] << " (largest |reference| " << top << ")";
  return rel;
}

// Each quantised layer's input must spread over several levels (not all zero, not all clipped),
// or the comparison would prove little.
void expect_levels_used(const Net& net, const std::vector<Reference>& refs) {
  for (const auto& [node, d] : net.layers) {
    const Node& n = net.graph[size_t(node)];
    if (!n.quant.quantized()) continue;
    const int top = int(input_levels(n.quant).integers().back());
    std::set<int> used;
    size_t zeros = 0, clipped = 0, count = 0;
    for (const Reference& r : refs)
      for (int c : r.codes.at(node)) {
        used.insert(c);
        zeros += c == 0;
        clipped += c == top;
        ++count;
      }
    std::printf("  %s: input codes use %zu levels, %.0f%% zero, %.0f%% at the top\n", n.name.c_str(), used.size(),
                100.0 * double(zeros) / double(count), 100.0 * double(clipped) / double(count));
    EXPECT_GE(used.size(), 6u) << n.name << ": its input uses too few activation levels";
    EXPECT_LT(double(zeros), 0.8 * double(count)) << n.name << ": its input is mostly zero";
    EXPECT_LT(double(clipped), 0.2 * double(count)) << n.name << ": its input is mostly clipped";
  }
}

runtime::EngineOptions options(kernels::GemmIsa isa, int threads) {
  runtime::EngineOptions o;
  o.isa = isa;
  o.threads = threads;
  o.pixel_stem = false;  // the float first layer, as the reference computes it
  return o;
}

// The engine on `net` against the reference on every path, thread count and batch size; the
// tap names the engine must report (the fusion it must find). Returns the largest relative
// deviation seen.
double check_against_reference(const Net& net, const std::vector<std::string>& want_taps, unsigned seed) {
  const runtime::Model model = runtime::Model::from_bytes(net.bytes(), net.graph.arch);
  const runtime::Inspector inspect(model);
  const std::vector<int> weight_nodes = net.graph.weight_layers();
  EXPECT_EQ(inspect.layer_count(), weight_nodes.size());
  for (size_t l = 0; l < std::min(inspect.layer_count(), weight_nodes.size()); ++l)
    EXPECT_EQ(inspect.layer_node(l), weight_nodes[l]);
  EXPECT_EQ(inspect.tap_names(), want_taps);
  const std::vector<int> tap_nodes = inspect.tap_nodes();
  if (inspect.tap_names() != want_taps) return 1;

  const int max_batch = 3;
  const size_t image = size_t(net.graph[0].shape.size());
  const size_t classes = size_t(net.graph.num_classes());
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.5f, 1.5f);  // not 8-bit pixels
  std::vector<float> input(max_batch * image);
  for (float& v : input) v = dist(rng);
  std::vector<Reference> refs;
  for (int b = 0; b < max_batch; ++b) refs.push_back(interpret(net, input.data() + size_t(b) * image));
  expect_levels_used(net, refs);

  const double tolerance = 1e-5;
  double worst_logits = 0, worst_taps = 0;
  for (int batch : {1, 3}) {
    const std::vector<float> scalar = inspect.run(input.data(), batch, options(kernels::GemmIsa::scalar, 1));
    for (kernels::GemmIsa isa : kernels::supported_gemm_isas())
      for (int threads : {1, 2}) {
        const std::string where = std::string(kernels::to_string(isa)) + ", " + std::to_string(threads) +
                                  " threads, batch " + std::to_string(batch);
        SCOPED_TRACE(where);
        const std::vector<float> logits = inspect.run(input.data(), batch, options(isa, threads));
        EXPECT_EQ(logits.size(), size_t(batch) * classes);
        if (logits.size() != size_t(batch) * classes) return 1;
        EXPECT_EQ(std::memcmp(logits.data(), scalar.data(), logits.size() * sizeof(float)), 0)
            << "logits differ from the scalar path's";
        {  // the public API (model.h) runs the same
          runtime::RunOptions pub;
          pub.threads = threads;
          pub.isa = runtime::isa_of(isa);
          pub.pixel_stem = false;
          std::vector<float> via_api(logits.size());
          model.run(input.data(), batch, via_api.data(), pub);
          EXPECT_EQ(std::memcmp(via_api.data(), logits.data(), logits.size() * sizeof(float)), 0)
              << "Model::run gives other logits than the Inspector";
        }
        for (int b = 0; b < batch; ++b)
          worst_logits = std::max(worst_logits,
                                  relative_deviation(logits.data() + size_t(b) * classes, refs[size_t(b)].values.back(),
                                                     tolerance, "logits of image " + std::to_string(b)));
        if (threads == 1) {
          // The same bits with per-layer timing (images one by one), and with pixel_stem on
          // (the input is not made of 8-bit pixels, so the float first layer runs all the same).
          std::vector<double> seconds(inspect.layer_count(), 0.0);
          runtime::EngineOptions timed = options(isa, 2);
          timed.layer_seconds = &seconds;
          const std::vector<float> again = inspect.run(input.data(), batch, timed);
          EXPECT_EQ(std::memcmp(again.data(), logits.data(), logits.size() * sizeof(float)), 0)
              << "logits differ with layer_seconds set";
          runtime::EngineOptions stem = options(isa, 1);
          stem.pixel_stem = true;
          const std::vector<float> with_stem = inspect.run(input.data(), batch, stem);
          EXPECT_EQ(std::memcmp(with_stem.data(), logits.data(), logits.size() * sizeof(float)), 0)
              << "logits differ with pixel_stem on a non-pixel input";
        }
        std::vector<std::vector<float>> taps;
        const std::vector<float> tapped = inspect.run_with_taps(input.data(), batch, taps, options(isa, threads));
        EXPECT_EQ(std::memcmp(tapped.data(), logits.data(), logits.size() * sizeof(float)), 0)
            << "run_with_taps gives other logits than run";
        EXPECT_EQ(taps.size(), size_t(batch) * tap_nodes.size());
        if (taps.size() != size_t(batch) * tap_nodes.size()) return 1;
        for (int b = 0; b < batch; ++b)
          for (size_t t = 0; t < tap_nodes.size(); ++t) {
            const std::vector<float>& want = refs[size_t(b)].values[size_t(tap_nodes[t])];
            const std::vector<float>& got = taps[size_t(b) * tap_nodes.size() + t];
            EXPECT_EQ(got.size(), want.size()) << "tap " << want_taps[t];
            if (got.size() != want.size()) return 1;
            const std::string what = "tap " + want_taps[t] + " of image " + std::to_string(b);
            worst_taps = std::max(worst_taps, relative_deviation(got.data(), want, tolerance, what));
          }
      }
  }
  std::printf("%s: largest deviation from the reference, relative to the largest value: logits %.3g, taps %.3g\n",
              net.graph.arch.c_str(), worst_logits, worst_taps);
  return std::max(worst_logits, worst_taps);
}

// ---- load-time errors ----

// The FormatError's message ("" if the model loads; another exception is reported as such).
std::string load_error(const Net& net) {
  try {
    runtime::Model::from_bytes(net.bytes(), "bad.apot");
  } catch (const runtime::FormatError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("(not a FormatError) ") + e.what();
  }
  return "";
}

std::map<std::string, Gain> gains_a() {
  return {{"conv1", {1.5, 0, 0.2}},
          {"conv2", {1.5, 2.0f, 0.2}},
          {"conv3", {1.0, 3.0f, 0.2}},
          {"conv4", {1.5, 3.0f, 0.2}},
          {"fc", {1.0, 0, 0.2}}};
}

Net net_a(Graph g = graph_a()) { return build(std::move(g), 12, 12, gains_a(), 7); }

Node& node(Graph& g, const std::string& name) { return g[size_t(g.find(name))]; }

}  // namespace

TEST(EngineGraph, FusedAndUnfusedSumsAndPoolsMatchTheReference) {
  const Net net = net_a();
  check_against_reference(net, {"conv1", "conv2", "sum", "conv4", "sum2"}, 11);
}

// 8-bit images through run_pixels: the same logits as run() on the image normalised as the data
// pipeline normalises it, in both layouts, on every path (with the integer first layer where
// the path has it).
TEST(EngineGraph, RunPixelsIsRunOnTheNormalisedImage) {
  Net net = net_a();
  const std::vector<float> mean{0.49f, 0.48f, 0.45f}, stdev{0.25f, 0.24f, 0.26f};
  net.meta["input"]["mean"] = std::vector<float>(mean.begin(), mean.begin() + net.graph.in_channels());
  net.meta["input"]["std"] = std::vector<float>(stdev.begin(), stdev.begin() + net.graph.in_channels());
  const runtime::Model model = runtime::Model::from_bytes(net.bytes(), "pixels");
  const runtime::ModelInfo& info = model.info();
  const size_t plane = size_t(info.height) * size_t(info.width), channels = size_t(info.channels);
  const int batch = 3;
  std::mt19937 rng(5);
  std::vector<uint8_t> hwc(size_t(batch) * info.input_size()), chw(hwc.size());
  for (uint8_t& p : hwc) p = uint8_t(rng() % 256);
  std::vector<float> normalised(hwc.size());
  for (int b = 0; b < batch; ++b)
    for (size_t c = 0; c < channels; ++c)
      for (size_t p = 0; p < plane; ++p) {
        const uint8_t v = hwc[b * info.input_size() + p * channels + c];
        chw[b * info.input_size() + c * plane + p] = v;
        normalised[b * info.input_size() + c * plane + p] = (v / 255.0f - info.mean[c]) * (1.0f / info.std[c]);
      }
  for (runtime::Isa isa : runtime::supported_isas())
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(runtime::to_string(isa)) + ", " + std::to_string(threads) + " threads");
      runtime::RunOptions o;
      o.isa = isa;
      o.threads = threads;
      const std::vector<float> want = model.run(normalised.data(), batch, o);
      const std::vector<float> got_hwc = model.run_pixels(hwc.data(), batch, runtime::PixelLayout::hwc, o);
      const std::vector<float> got_chw = model.run_pixels(chw.data(), batch, runtime::PixelLayout::chw, o);
      ASSERT_EQ(got_hwc.size(), want.size());
      EXPECT_EQ(std::memcmp(got_hwc.data(), want.data(), want.size() * sizeof(float)), 0);
      EXPECT_EQ(got_chw, got_hwc);
    }
  EXPECT_THROW(model.run_pixels(nullptr, 1), std::invalid_argument);
  EXPECT_THROW(model.run_pixels(hwc.data(), -1), std::invalid_argument);
  runtime::RunOptions zero;
  zero.threads = 0;
  EXPECT_THROW(model.run_pixels(hwc.data(), 1, runtime::PixelLayout::hwc, zero), std::invalid_argument);
}

TEST(EngineGraph, UnusableNormalisationIsAFormatError) {
  Net net = net_a();
  net.meta["input"]["std"] = std::vector<float>(size_t(net.graph.in_channels()), 0.0f);
  EXPECT_NE(load_error(net).find("normalisation of channel 0"), std::string::npos) << load_error(net);
}

TEST(EngineGraph, ShortcutPadAndFlattenMatchTheReference) {
  const Net net =
      build(graph_b(), 6, 6,
            {{"c1", {1.5, 0, 0.2}}, {"c2", {1.0, 2.0f, 0.2}}, {"c3", {1.5, 3.0f, 0.2}}, {"fc", {1.0, 0, 0.2}}}, 21);
  check_against_reference(net, {"c1", "block", "c3"}, 22);
}

std::map<std::string, Gain> gains_c() {
  return {{"f0", {1.5, 0, 0.2}},    {"q0", {1.5, 2.0f, 0.2}}, {"f1", {1.5, 0, 0.2}},
          {"q1", {1.0, 4.0f, 0.2}}, {"q2", {1.0, 4.0f, 0.2}}, {"fc", {1.0, 0, 0.2}}};
}

TEST(EngineGraph, QuantisedFirstLayerThreeWaySumAndSpatialLinearMatchTheReference) {
  const Net net = build(graph_c(true), 10, 10, gains_c(), 31);
  check_against_reference(net, {"q0", "f1", "q1", "q2", "sum3"}, 32);
}

TEST(EngineGraph, StridedPoolWinogradThreeWaySumAndSpatialLinearMatchTheReference) {
  const Net net = build(graph_c(false), 10, 10, gains_c(), 33);
  const auto isas = kernels::supported_gemm_isas();
  if (std::find(isas.begin(), isas.end(), kernels::GemmIsa::avx512_vnni) != isas.end()) {
    // q2 (16 -> 32, 3x3, stride 1) runs the Winograd kernel on AVX-512 VNNI: the comparisons
    // below cover it.
    const runtime::Model model = runtime::Model::from_bytes(net.bytes(), "graph_c");
    const runtime::Inspector inspect(model);
    bool winograd = false;
    for (size_t l = 0; l < inspect.layer_count(); ++l)
      if (net.graph[size_t(inspect.layer_node(l))].name == "q2")
        winograd = inspect.uses_winograd(l, kernels::GemmIsa::avx512_vnni);
    EXPECT_TRUE(winograd);
  }
  check_against_reference(net, {"f0", "q0", "f1", "q1", "q2", "sum3"}, 34);
}

TEST(EngineGraph, PoolOnTheImageMatchesTheReference) {
  const Net net = build(graph_d(), 8, 8, {{"f", {1.5, 0, 0.2}}, {"fc", {1.0, 0, 0.2}}}, 41);
  check_against_reference(net, {"f"}, 42);
}

TEST(EngineGraph, SharedInputsFusionChoicesAndQuantisedHeadMatchTheReference) {
  const Net net = build(graph_e(), 8, 8,
                        {{"c1", {1.5, 0, 0.2}},
                         {"qa", {1.0, 2.0f, 0.2}},
                         {"qb", {1.0, 2.0f, 0.2}},
                         {"qc", {1.0, 3.0f, 0.2}},
                         {"qd", {1.0, 2.5f, 0.2}},
                         {"head", {1.0, 3.0f, 0.5}}},
                        51);
  check_against_reference(net, {"c1", "qa", "s1", "s2", "qd", "s3", "s4", "head"}, 52);
}

TEST(EngineGraph, LinearLayersOnTheImageMatchTheReference) {
  const Net net = build(graph_f(false), 4, 4, {{"hidden", {1.5, 0, 0.2}}, {"fc", {1.0, 0, 0.2}}}, 61);
  check_against_reference(net, {}, 62);
}

TEST(EngineGraph, FlattenOfTheImageMatchesTheReference) {
  const Net net = build(graph_f(true), 4, 4, {{"hidden", {1.5, 0, 0.2}}, {"fc", {1.0, 0, 0.2}}}, 63);
  check_against_reference(net, {}, 64);
}

TEST(EngineGraph, NewLayerTypesMatchTheReference) {
  for (int groups : {2, 4}) {
    const Net net = build(graph_g(groups), 8, 8,
                          {{"c1", {1.5, 0, 0.2}},
                           {"dw", {1.0, 2.0f, 0.2}},
                           {"pw", {1.0, 2.0f, 0.2}},
                           {"qs", {1.0, 1.5f, 0.3}},
                           {"dw2", {1.0, 1.5f, 0.2}},
                           {"fcq", {1.0, 1.5f, 0.5}},
                           {"fc", {1.0, 0, 0.2}}},
                          71);
    check_against_reference(net, {"c1", "dw", "pw", "qs", "dw2", "sum", "fcq"}, 72);
  }
}

TEST(EngineGraphErrors, RecordWhoseOutChannelsDifferFromItsNode) {
  Net net = net_a();
  net.records[1].out_channels = 12;  // conv2 has 16
  const std::string e = load_error(net);
  EXPECT_NE(e.find("'conv2'"), std::string::npos) << e;
  EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
}

TEST(EngineGraphErrors, FewerRecordsThanWeightLayers) {
  Net net = net_a();
  net.records.pop_back();  // fc has no record
  const std::string e = load_error(net);
  ASSERT_NE(e, "");
  EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
  EXPECT_NE(e.find("'fc'"), std::string::npos) << "the message should name the layer without a record: " << e;
}

TEST(EngineGraphErrors, ClampActivations) {
  for (const std::string name : {"conv2", "conv3", "sum", "sum2"}) {
    Graph g = graph_a();
    Node& n = node(g, name);
    n.activation = Activation::clamp;  // [0, hi] runs (ReLU6, graph_g); other lower bounds do not
    n.clamp_lo = -1;
    n.clamp_hi = 6;
    const std::string e = load_error(net_a(std::move(g)));
    EXPECT_NE(e.find("'" + name + "'"), std::string::npos) << name << ": " << e;
    EXPECT_NE(e.find("clamp"), std::string::npos) << name << ": " << e;
    EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
  }
}

TEST(EngineGraphErrors, GroupedConvolution) {
  Graph g = graph_a();
  node(g, "conv3").groups = 2;
  const Net net = net_a(std::move(g));
  ASSERT_EQ(net.records[2].groups, 2u);
  const std::string e = load_error(net);
  EXPECT_NE(e.find("'conv3'"), std::string::npos) << e;
  EXPECT_NE(e.find("group"), std::string::npos) << e;
  EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
}

TEST(EngineGraphErrors, QuantisedLinearLayerRecordOfAnotherKind) {
  Graph g = graph_a();
  node(g, "fc").quant = w4a4();
  Net net = net_a(std::move(g));
  EXPECT_EQ(load_error(net), "");  // quantised linear layers run (graph_g)
  net.records.back().kind = uint32_t(runtime::LayerKind::float_linear);
  const std::string e = load_error(net);
  EXPECT_NE(e.find("'fc'"), std::string::npos) << e;
  EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
}

TEST(EngineGraphErrors, DanglingInputName) {
  Net net = net_a();
  for (auto& n : net.meta["graph"]["nodes"])
    if (n["name"] == "sum") n["inputs"] = nlohmann::json::array({"conv3", "nowhere"});
  const std::string e = load_error(net);
  EXPECT_NE(e.find("'sum'"), std::string::npos) << e;
  EXPECT_NE(e.find("nowhere"), std::string::npos) << e;
  EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
}

TEST(EngineGraphErrors, FullPrecisionLayerAndSignedInput) {
  {
    Graph g = graph_a();
    node(g, "conv2").quant = LayerQuant{};  // fp32
    Net net = net_a(std::move(g));
    const std::string e = load_error(net);
    EXPECT_NE(e.find("'conv2'"), std::string::npos) << e;
    EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
  }
  {
    Net net = net_a();  // conv3's input is unsigned in the graph, signed in its record
    net.records[2].input_signed = 1;
    const std::string e = load_error(net);
    EXPECT_NE(e.find("'conv3'"), std::string::npos) << e;
    EXPECT_NE(e.find("signed"), std::string::npos) << e;
    EXPECT_EQ(e.find("(not a FormatError)"), std::string::npos) << e;
  }
}
