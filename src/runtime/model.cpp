// The integer engine: the graph from the .apot metadata, its layers from the records, compiled
// once into a list of steps (fusion, buffer plan) that run_image walks.
#include "apot/runtime/model.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "apot/graph/serialize.h"
#include "apot/kernels/projection.h"
#include "apot/kernels/stem.h"
#include "apot/levels/level_set.h"

namespace apot::runtime {
namespace {

using graph::Op;

struct Layer {
  int node = -1;
  LayerRecord record{};
  std::vector<float> scale, bias;
  // Quantised convolutions: packed weights, and the requantiser that makes this layer's input
  // codes (the producer's epilogue, or a requantize step, uses it).
  kernels::PackedConv packed;
  kernels::Requantizer input;
  int max_code = 0;
  // int8 convolutions: on float input, and on 8-bit pixels (when it reads the image and the
  // normalisation allows).
  kernels::PackedFloatConv packed_float;
  std::optional<kernels::PackedStem> packed_pixels;
  // int8 linear layers: weights as float integers, [in][out].
  std::vector<float> weights_k_out;
  bool quantized() const { return record.kind == uint32_t(LayerKind::quantized_conv); }
};

enum class StepKind {
  image,       // the image (NCHW) -> an NHWC float buffer, for consumers other than int8 convolutions
  requantize,  // a float value -> the input codes of quantised layer `layer`
  conv_codes,  // quantised convolution, fused epilogue (residual, ReLU, float values, codes)
  conv_float,  // int8 convolution on a float input (the image, or a float value)
  linear,      // int8 linear layer
  add,
  max_pool,
  avg_pool,
  global_avg_pool,
  flatten,
  shortcut_pad,
};

struct Step {
  StepKind kind = StepKind::image;
  int node = -1;           // the node whose value the step makes (requantize: the value it reads)
  int layer = -1;          // conv, linear: the layer; requantize: the consumer
  std::vector<int> reads;  // nodes whose float values the step reads
  int out = -1;            // float buffer written, -1 for none
  std::vector<int> in;     // float buffers of `reads`
  // conv_codes: the sum's other operand (a node; its buffer in residual_buffer), the layer
  // whose codes the epilogue makes.
  int residual = -1, residual_buffer = -1;
  int codes_for = -1;
  bool relu = false;
  int pool = -1;        // conv_float on the image: a fused 3x3 / 2 max-pool node
  bool tapped = false;  // its value is one of run_with_taps' outputs
};

// Working memory for one image at a time, sized for the model once.
struct Workspace {
  std::vector<std::vector<uint8_t>> code_bytes;  // per code buffer (Impl::code_buffer)
  std::vector<kernels::CodeImage> codes;         // per layer; empty for float layers
  std::vector<float> image_bytes;                // the input image with a zero border
  kernels::FloatImage image;
  std::vector<uint8_t> pixel_bytes;  // the same as 8-bit pixels, if it is made of them
  kernels::PixelImage pixels;
  std::vector<std::vector<float>> buffers;  // float values, Impl::max_feature each
  std::vector<float> stem;                  // a first layer's output before its fused max-pool
  std::vector<float> padded;                // a float value with a zero border (conv_float)
  std::vector<float> tap;                   // a value that is made as codes only
};

std::vector<int8_t> weight_integers(const LayerRecord& r, const std::vector<uint8_t>& blob, const std::string& name) {
  const size_t count = size_t(weight_count(r));
  const std::vector<uint8_t> codes = unpack_codes(blob.data() + r.weights, count, static_cast<int>(r.weight_bits));
  const int8_t* table = reinterpret_cast<const int8_t*>(blob.data() + r.weight_levels);
  std::vector<int8_t> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (codes[i] >= r.weight_level_count) throw FormatError(name + ": weight code outside its level table");
    out[i] = table[codes[i]];
  }
  return out;
}

// f(y0, y1) on contiguous ranges of [0, rows), one per thread (OpenMP). f must not throw.
template <typename F>
void parallel_rows(int threads, int rows, F f) {
  const int parts = std::max(1, std::min(threads, rows));
  if (parts == 1) return f(0, rows);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int p = 0; p < parts; ++p) f(rows * p / parts, rows * (p + 1) / parts);
}

levels::Kind kind_of(uint32_t k) {
  return k == 0 ? levels::Kind::apot : k == 1 ? levels::Kind::pot : levels::Kind::uniform;
}

bool is_stem_pool(const graph::Node& n) {
  return n.op == Op::max_pool && n.kernel == 3 && n.stride == 2 && n.padding == 1;
}

}  // namespace

// Pooled rows per band of a first layer on pixels with a fused max-pool (its buffer: 2 * 8 + 1
// rows of the layer's output).
constexpr int kStemBand = 8;

struct Model::Impl {
  ModelInfo info;
  std::vector<Layer> layers;
  std::vector<int> layer_of;  // per node: its layer, or -1
  std::vector<Step> steps;
  std::vector<int> taps;  // tap nodes, in step order
  int float_buffers = 0;
  size_t max_feature = 0;  // the largest float value of one image, in floats
  size_t max_padded = 0;   // the largest padded float input of a conv_float step not on the image
  int image_border = 0;    // the border of the float image (the largest padding of its int8 readers)
  int pixel_layer = -1;    // the layer that may run on 8-bit pixels
  // The code buffer of each quantised layer's input (-1: float layers). Layers share one where
  // their inputs have the same shape and are never live together, so that an image touches
  // fewer lines: a layer's codes are made by the step before it (an epilogue or a requantize
  // step) and are dead once it has run.
  std::vector<int> code_buffer;
  int code_buffers = 0;
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<Workspace>> pool;

  const graph::Graph& g() const { return info.graph; }
  const graph::Shape& shape(int node) const { return g()[size_t(node)].shape; }

  // The code image of quantised layer l's input (no data).
  kernels::CodeImage input_shape(size_t l) const {
    const graph::Shape& s = g().input_shape_of(layers[l].node);
    return kernels::CodeImage{nullptr, s.height, s.width, layers[l].packed.cs, int(layers[l].record.padding)};
  }

  std::unique_ptr<Workspace> acquire() const {
    {
      std::lock_guard<std::mutex> lock(pool_mutex);
      if (!pool.empty()) {
        auto ws = std::move(pool.back());
        pool.pop_back();
        return ws;
      }
    }
    auto ws = std::make_unique<Workspace>();
    ws->codes.resize(layers.size());
    ws->code_bytes.resize(size_t(code_buffers));
    for (size_t i = 0; i < layers.size(); ++i) {
      if (code_buffer[i] < 0) continue;
      kernels::CodeImage& c = ws->codes[i];
      c = input_shape(i);
      std::vector<uint8_t>& bytes = ws->code_bytes[size_t(code_buffer[i])];
      if (bytes.empty()) bytes.assign(c.bytes(), 0);
      c.data = bytes.data();
    }
    const graph::Shape& in = shape(0);
    ws->image = {nullptr, in.height, in.width, in.channels, image_border};
    ws->image_bytes.assign(ws->image.floats(), 0.0f);
    ws->image.data = ws->image_bytes.data();
    if (pixel_layer >= 0) {
      ws->pixels = {nullptr, in.height, in.width, in.channels, int(layers[size_t(pixel_layer)].record.padding)};
      ws->pixel_bytes.assign(ws->pixels.bytes(), 0);
      ws->pixels.data = ws->pixel_bytes.data();
    }
    ws->buffers.assign(size_t(float_buffers), std::vector<float>(max_feature));
    for (const Step& s : steps)
      if (s.pool >= 0) ws->stem.resize(std::max(ws->stem.size(), size_t(shape(layers[size_t(s.layer)].node).size())));
    ws->padded.assign(max_padded, 0.0f);
    return ws;
  }

  void release(std::unique_ptr<Workspace> ws) const {
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.push_back(std::move(ws));
  }

  // ---- compilation ----

  void compile();
  void plan_buffers();
  void plan_code_buffers();

  // ---- execution ----

  // Runs f, adding its time to layer `index` of o.layer_seconds if that is set.
  template <typename F>
  static void timed(const RunOptions& o, int index, F f) {
    if (!o.layer_seconds) return f();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    (*o.layer_seconds)[size_t(index)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  void requantize(const float* values, int consumer, Workspace& ws, const RunOptions& o) const {
    const Layer& l = layers[size_t(consumer)];
    const graph::Shape& s = g().input_shape_of(l.node);
    const kernels::CodeImage& all = ws.codes[size_t(consumer)];
    parallel_rows(o.threads, s.height, [&](int y0, int y1) {
      kernels::CodeImage rows = all;
      rows.data += size_t(y0) * all.padded_w() * all.cs;
      rows.h = y1 - y0;
      kernels::requantize(values + size_t(y0) * s.width * s.channels, y1 - y0, s.width, s.channels, l.input, rows,
                          o.isa);
    });
  }

  static void max_pool(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0,
                       const RunOptions& o) {
    parallel_rows(o.threads, y1 - y0,
                  [&](int a, int b) { kernels::max_pool_3x3s2(in, h, w, c, out, o.isa, y0 + a, y0 + b, in_row0); });
  }

  void conv_on_image(const Step& s, const float* image, Workspace& ws, float* out, const RunOptions& o) const;
  void run_step(const Step& s, const float* image, Workspace& ws, const RunOptions& o,
                std::vector<std::vector<float>>* taps) const;
  void run_image(const float* image, float* logits, std::vector<std::vector<float>>* taps, const RunOptions& o) const;
};

// ---- compilation: fusion and the order of steps ----

void Model::Impl::compile() {
  const graph::Graph& graph = g();
  const size_t n = graph.size();
  const auto consumers = graph.consumers();
  auto quantized = [&](int node) {
    return layer_of[size_t(node)] >= 0 && layers[size_t(layer_of[size_t(node)])].quantized();
  };
  // A sum of two values fuses into the epilogue of the quantised convolution that produces one
  // of them (the later one, so that the other is ready), if that is its only reader and it has
  // no activation of its own.
  std::vector<int> fused_conv(n, -1), fused_into(n, -1);
  for (size_t a = 0; a < n; ++a) {
    const graph::Node& node = graph[a];
    if (node.op != Op::add || node.inputs.size() != 2 || node.inputs[0] == node.inputs[1]) continue;
    const int later = std::max(node.inputs[0], node.inputs[1]), earlier = std::min(node.inputs[0], node.inputs[1]);
    for (int p : {later, earlier})
      if (quantized(p) && consumers[size_t(p)].size() == 1 && graph[size_t(p)].activation == graph::Activation::none) {
        fused_conv[a] = p;
        fused_into[size_t(p)] = int(a);
        break;
      }
  }
  // Values that an epilogue makes, and the quantised reader that gets its codes from it (the
  // last one; the others requantise the float value right before they run).
  std::vector<int> codes_for(n, -1);
  auto from_epilogue = [&](size_t v) { return (quantized(int(v)) && fused_into[v] < 0) || fused_conv[v] >= 0; };
  for (size_t v = 0; v < n; ++v) {
    if (!from_epilogue(v)) continue;
    for (int c : consumers[v])
      if (quantized(c)) codes_for[v] = c;
  }
  // Which values are needed as floats.
  std::vector<bool> need_float(n, false);
  need_float[n - 1] = true;
  for (size_t v = 0; v < n; ++v)
    for (int c : consumers[v]) {
      if (fused_into[v] == c) continue;  // the conv's value is the sum's
      if (quantized(c) && codes_for[v] == c) continue;
      if (v == 0 && graph[size_t(c)].op == Op::conv && !quantized(c)) continue;  // int8 convs read the padded image
      need_float[v] = true;
    }
  // The steps, in node order; a fused sum runs its convolution at its own position.
  steps.clear();
  auto requantize_for = [&](int conv) {
    const int v = graph[size_t(conv)].inputs[0];
    if (codes_for[size_t(v)] == conv) return;
    Step r;
    r.kind = StepKind::requantize;
    r.node = v;
    r.layer = layer_of[size_t(conv)];
    r.reads = {v};
    steps.push_back(r);
  };
  if (need_float[0]) {
    Step s;
    s.kind = StepKind::image;
    s.node = 0;
    s.out = 0;  // a buffer is chosen by plan_buffers
    steps.push_back(s);
  }
  std::vector<bool> skip(n, false);
  for (size_t i = 1; i < n; ++i) {
    if (skip[i] || fused_into[i] >= 0) continue;
    const graph::Node& node = graph[i];
    Step s;
    s.node = int(i);
    s.relu = node.activation == graph::Activation::relu;
    if (node.activation == graph::Activation::clamp)
      throw FormatError("node '" + node.name + "': clamp activations are not supported by this engine yet");
    switch (node.op) {
      case Op::input: break;
      case Op::conv:
        s.layer = layer_of[i];
        if (quantized(int(i))) {
          requantize_for(int(i));
          s.kind = StepKind::conv_codes;
          s.codes_for = codes_for[i] >= 0 ? layer_of[size_t(codes_for[i])] : -1;
        } else {
          s.kind = StepKind::conv_float;
          if (node.inputs[0] != 0) s.reads = {node.inputs[0]};
          const auto& readers = consumers[i];
          if (node.inputs[0] == 0 && readers.size() == 1 && is_stem_pool(graph[size_t(readers[0])])) {
            s.pool = readers[0];
            s.node = readers[0];
            skip[size_t(readers[0])] = true;
          }
        }
        break;
      case Op::add:
        if (fused_conv[i] >= 0) {
          const int p = fused_conv[i];
          requantize_for(p);
          s.kind = StepKind::conv_codes;
          s.layer = layer_of[size_t(p)];
          s.residual = node.inputs[0] == p ? node.inputs[1] : node.inputs[0];
          s.reads = {s.residual};
          s.codes_for = codes_for[i] >= 0 ? layer_of[size_t(codes_for[i])] : -1;
        } else {
          s.kind = StepKind::add;
          s.reads = node.inputs;
        }
        break;
      case Op::linear:
        s.kind = StepKind::linear;
        s.layer = layer_of[i];
        s.reads = {node.inputs[0]};
        break;
      case Op::max_pool:
        s.kind = StepKind::max_pool;
        s.reads = {node.inputs[0]};
        break;
      case Op::avg_pool:
        s.kind = StepKind::avg_pool;
        s.reads = {node.inputs[0]};
        break;
      case Op::global_avg_pool:
        s.kind = StepKind::global_avg_pool;
        s.reads = {node.inputs[0]};
        break;
      case Op::flatten:
        s.kind = StepKind::flatten;
        s.reads = {node.inputs[0]};
        break;
      case Op::shortcut_pad:
        s.kind = StepKind::shortcut_pad;
        s.reads = {node.inputs[0]};
        break;
    }
    s.tapped = s.kind == StepKind::conv_codes || s.kind == StepKind::conv_float || s.kind == StepKind::add;
    if (s.tapped) taps.push_back(s.node);
    s.out = need_float[size_t(s.node)] ? 0 : -1;  // a buffer is chosen by plan_buffers
    steps.push_back(s);
  }
  if (steps.empty() || steps.back().node != int(n - 1)) throw FormatError("the graph's output is not computed last");
}

// Float buffers by liveness: a value's buffer is free once the last step that reads it has run;
// a fused sum writes over its residual operand when that is the operand's last use (each output
// reads only its own residual value), so the lines it writes are already in cache.
void Model::Impl::plan_buffers() {
  const size_t n = g().size();
  std::vector<int> last_read(n, -1), buffer(n, -1);
  for (size_t s = 0; s < steps.size(); ++s)
    for (int v : steps[s].reads) last_read[size_t(v)] = int(s);
  std::vector<int> free_list;
  float_buffers = 0;
  auto take = [&] {
    if (free_list.empty()) return float_buffers++;
    const int b = free_list.back();
    free_list.pop_back();
    return b;
  };
  for (size_t s = 0; s < steps.size(); ++s) {
    Step& st = steps[s];
    st.in.clear();
    for (int v : st.reads) {
      if (buffer[size_t(v)] < 0) throw std::logic_error("engine: a step reads a value that has no buffer");
      st.in.push_back(buffer[size_t(v)]);
    }
    if (st.residual >= 0) st.residual_buffer = buffer[size_t(st.residual)];
    const bool produces = st.kind != StepKind::requantize && st.out >= 0;
    if (produces) {
      if (st.kind == StepKind::conv_codes && st.residual >= 0 && last_read[size_t(st.residual)] == int(s)) {
        st.out = st.residual_buffer;
        last_read[size_t(st.residual)] = -1;  // handed over, not freed
      } else {
        st.out = take();
      }
      buffer[size_t(st.node)] = st.out;
    } else {
      st.out = -1;
    }
    for (int v : st.reads)
      if (last_read[size_t(v)] == int(s)) {
        free_list.push_back(buffer[size_t(v)]);
        last_read[size_t(v)] = -1;
      }
  }
}

void Model::Impl::plan_code_buffers() {
  code_buffer.assign(layers.size(), -1);
  std::vector<size_t> shape;  // per buffer, the first layer that uses it
  std::vector<bool> live;     // per buffer
  // The same bytes: also the same channels, so that no layer finds another's codes in the
  // padding channels.
  auto same = [&](size_t i, size_t j) {
    const kernels::CodeImage a = input_shape(i), b = input_shape(j);
    return a.h == b.h && a.w == b.w && a.cs == b.cs && a.border == b.border &&
           layers[i].record.in_channels == layers[j].record.in_channels;
  };
  auto write = [&](int layer) {  // layer's codes are made
    if (layer < 0) return;
    size_t b = 0;
    while (b < shape.size() && (live[b] || !same(shape[b], size_t(layer)))) ++b;
    if (b == shape.size()) {
      shape.push_back(size_t(layer));
      live.push_back(false);
    }
    live[b] = true;
    code_buffer[size_t(layer)] = int(b);
  };
  auto ran = [&](int layer) {  // layer has run: its codes are dead
    if (code_buffer[size_t(layer)] < 0) throw std::logic_error("engine: a layer runs before its codes are made");
    live[size_t(code_buffer[size_t(layer)])] = false;
  };
  for (const Step& s : steps) {
    if (s.kind == StepKind::requantize) write(s.layer);
    if (s.kind == StepKind::conv_codes) {
      write(s.codes_for);
      ran(s.layer);
    }
  }
  code_buffers = int(shape.size());
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].quantized() != (code_buffer[i] >= 0))
      throw std::logic_error("engine: a quantised layer without codes");
}

// ---- execution ----

// An int8 convolution reading the image: on 8-bit pixels where it can (a fused max-pool in
// bands of rows whose stem rows stay in cache), else on the float image.
void Model::Impl::conv_on_image(const Step& s, const float* image, Workspace& ws, float* out,
                                const RunOptions& o) const {
  const Layer& stem = layers[size_t(s.layer)];
  const graph::Shape& cs = shape(stem.node);
  const int h = cs.height, w = cs.width, sc = cs.channels;
  const bool vnni = o.isa == kernels::GemmIsa::avx512_vnni || o.isa == kernels::GemmIsa::avx_vnni;
  const bool pool = s.pool >= 0;
  const int ph = pool ? shape(s.pool).height : h;
  const bool pixels = o.pixel_stem && vnni && s.layer == pixel_layer && stem.packed_pixels &&
                      kernels::to_pixels(image, info.mean, info.std, ws.pixels, o.isa);
  if (pixels && pool) {
    for (int py0 = 0; py0 < ph; py0 += kStemBand) {
      const int py1 = std::min(ph, py0 + kStemBand), r0 = std::max(0, 2 * py0 - 1), r1 = std::min(h, 2 * py1);
      timed(o, s.layer, [&] {
        kernels::conv_stem_u8(ws.pixels, *stem.packed_pixels, stem.scale.data(), stem.bias.data(), s.relu,
                              ws.stem.data(), o.isa, o.threads, r0, r1);
      });
      max_pool(ws.stem.data(), h, w, sc, out, py0, py1, r0, o);
    }
  } else if (pixels) {
    timed(o, s.layer, [&] {
      kernels::conv_stem_u8(ws.pixels, *stem.packed_pixels, stem.scale.data(), stem.bias.data(), s.relu, out, o.isa,
                            o.threads);
    });
  } else {
    const graph::Shape& in = shape(0);
    for (int y = 0; y < in.height; ++y)
      for (int x = 0; x < in.width; ++x) {
        float* dst = ws.image.pixel(y, x);
        for (int ci = 0; ci < in.channels; ++ci) dst[ci] = image[(size_t(ci) * in.height + y) * in.width + x];
      }
    timed(o, s.layer, [&] {
      kernels::conv_f32(ws.image, stem.packed_float, stem.scale.data(), stem.bias.data(), s.relu,
                        pool ? ws.stem.data() : out, o.isa, o.threads);
    });
    if (pool) max_pool(ws.stem.data(), h, w, sc, out, 0, ph, 0, o);
  }
}

void Model::Impl::run_step(const Step& s, const float* image, Workspace& ws, const RunOptions& o,
                           std::vector<std::vector<float>>* taps) const {
  float* out = s.out >= 0 ? ws.buffers[size_t(s.out)].data() : nullptr;
  auto in = [&](size_t k) { return ws.buffers[size_t(s.in[k])].data(); };
  const graph::Node& node = g()[size_t(s.node)];
  const graph::Shape& os = node.shape;
  switch (s.kind) {
    case StepKind::image: {
      const graph::Shape& is = shape(0);
      for (int y = 0; y < is.height; ++y)
        for (int x = 0; x < is.width; ++x)
          for (int c = 0; c < is.channels; ++c)
            out[(size_t(y) * is.width + x) * is.channels + c] = image[(size_t(c) * is.height + y) * is.width + x];
      break;
    }
    case StepKind::requantize: requantize(in(0), s.layer, ws, o); break;
    case StepKind::conv_codes: {
      const Layer& l = layers[size_t(s.layer)];
      kernels::ConvOutput co;
      co.scale = l.scale.data();
      co.bias = l.bias.data();
      co.relu = s.relu;
      if (s.residual >= 0) co.residual = ws.buffers[size_t(s.residual_buffer)].data();
      co.values = out;
      if (!out && taps) {
        ws.tap.resize(std::max(ws.tap.size(), size_t(os.size())));
        co.values = ws.tap.data();
      }
      if (s.codes_for >= 0) {
        co.requantizer = &layers[size_t(s.codes_for)].input;
        co.codes = ws.codes[size_t(s.codes_for)];
      }
      timed(o, s.layer,
            [&] { kernels::conv_u8s8(ws.codes[size_t(s.layer)], l.packed, l.max_code, co, o.isa, o.threads); });
      if (taps) taps->emplace_back(co.values, co.values + os.size());
      return;
    }
    case StepKind::conv_float: {
      const Layer& l = layers[size_t(s.layer)];
      float* target = out ? out : (ws.tap.resize(std::max(ws.tap.size(), size_t(os.size()))), ws.tap.data());
      if (s.reads.empty()) {
        conv_on_image(s, image, ws, target, o);
      } else {  // a float value: copied into a zero-bordered image
        const graph::Shape& is = shape(s.reads[0]);
        const int pad = int(l.record.padding);
        kernels::FloatImage padded{ws.padded.data(), is.height, is.width, is.channels, pad};
        std::fill(ws.padded.begin(), ws.padded.begin() + ptrdiff_t(padded.floats()), 0.0f);
        for (int y = 0; y < is.height; ++y)
          std::copy_n(in(0) + size_t(y) * is.width * is.channels, size_t(is.width) * is.channels, padded.pixel(y, 0));
        timed(o, s.layer, [&] {
          kernels::conv_f32(padded, l.packed_float, l.scale.data(), l.bias.data(), s.relu, target, o.isa, o.threads);
        });
      }
      if (taps) taps->emplace_back(target, target + os.size());
      return;
    }
    case StepKind::linear: {
      const Layer& l = layers[size_t(s.layer)];
      const int k = int(l.record.in_channels), classes = int(l.record.out_channels);
      const float* feature = in(0);
      std::fill(out, out + classes, 0.0f);
      for (int ci = 0; ci < k; ++ci)
        for (int o2 = 0; o2 < classes; ++o2) out[o2] += feature[ci] * l.weights_k_out[size_t(ci) * classes + o2];
      for (int o2 = 0; o2 < classes; ++o2) {
        out[o2] = l.scale[size_t(o2)] * out[o2] + l.bias[size_t(o2)];
        if (s.relu) out[o2] = std::max(out[o2], 0.0f);
      }
      break;
    }
    case StepKind::add: {
      const size_t count = size_t(os.size());
      std::copy_n(in(0), count, out);
      for (size_t k = 1; k < s.in.size(); ++k) {
        const float* x = in(k);
        for (size_t i = 0; i < count; ++i) out[i] += x[i];
      }
      if (s.relu)
        for (size_t i = 0; i < count; ++i) out[i] = std::max(out[i], 0.0f);
      break;
    }
    case StepKind::max_pool:
    case StepKind::avg_pool: {
      const graph::Shape& is = shape(s.reads[0]);
      if (s.kind == StepKind::max_pool && is_stem_pool(node))
        max_pool(in(0), is.height, is.width, is.channels, out, 0, os.height, 0, o);
      else
        kernels::pool_reference(s.kind == StepKind::max_pool ? kernels::PoolKind::max : kernels::PoolKind::average,
                                in(0), is.height, is.width, is.channels, node.kernel, node.stride, node.padding, out);
      break;
    }
    case StepKind::global_avg_pool: {
      const graph::Shape& is = shape(s.reads[0]);
      const int channels = is.channels, pixels = is.height * is.width;
      const float* x = in(0);
      std::fill(out, out + channels, 0.0f);
      for (int p = 0; p < pixels; ++p)
        for (int ci = 0; ci < channels; ++ci) out[ci] += x[size_t(p) * channels + ci];
      for (int ci = 0; ci < channels; ++ci) out[ci] /= float(pixels);
      break;
    }
    case StepKind::flatten: std::copy_n(in(0), size_t(os.size()), out); break;
    case StepKind::shortcut_pad: {  // option A: subsample, zero-pad channels
      const graph::Shape& is = shape(s.reads[0]);
      const int before = (os.channels - is.channels) / 2;
      std::fill(out, out + os.size(), 0.0f);
      for (int y = 0; y < os.height; ++y)
        for (int x = 0; x < os.width; ++x)
          std::copy_n(in(0) + (size_t(y * node.stride) * is.width + x * node.stride) * is.channels, is.channels,
                      out + (size_t(y) * os.width + x) * os.channels + before);
      break;
    }
  }
  if (taps && s.tapped) taps->emplace_back(out, out + os.size());
}

void Model::Impl::run_image(const float* image, float* logits, std::vector<std::vector<float>>* taps,
                            const RunOptions& o) const {
  std::unique_ptr<Workspace> ws = acquire();
  for (const Step& s : steps) run_step(s, image, *ws, o, taps);
  const Step& last = steps.back();
  const float* out = ws->buffers[size_t(last.out)].data();
  std::copy_n(out, size_t(g()[g().size() - 1].shape.size()), logits);
  release(std::move(ws));
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const ModelInfo& Model::info() const { return impl_->info; }
size_t Model::layer_count() const { return impl_->layers.size(); }
int Model::layer_node(size_t index) const { return impl_->layers.at(index).node; }

bool Model::uses_winograd(size_t index, kernels::GemmIsa isa) const {
  const Layer& l = impl_->layers.at(index);
  return l.quantized() && kernels::winograd_applies(l.packed, l.max_code, isa);
}

Model Model::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path + ": cannot open");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return from_bytes(bytes, path);
}

namespace {

// What a layer record must say for its node.
void check_record(const LayerRecord& r, const graph::Graph& g, int node, const std::string& name) {
  const graph::Node& n = g[size_t(node)];
  const std::string where = name + ": node '" + n.name + "': ";
  const bool linear = n.op == Op::linear;
  uint32_t want_kind = 0;
  if (n.quant.mode == graph::LayerQuant::Mode::int8)
    want_kind = uint32_t(linear ? LayerKind::float_linear : LayerKind::float_conv);
  if (n.quant.mode == graph::LayerQuant::Mode::quantized && !linear) want_kind = uint32_t(LayerKind::quantized_conv);
  if (want_kind == 0)
    throw FormatError(where + "the engine does not run " + n.quant.describe() + " " + to_string(n.op) + " layers");
  if (r.kind != want_kind) throw FormatError(where + "its layer record is of another kind");
  const graph::Shape& in = g.input_shape_of(node);
  const uint32_t in_channels = uint32_t(linear ? in.size() : in.channels);
  if (r.in_channels != in_channels || r.out_channels != uint32_t(n.out_channels) ||
      r.kernel != uint32_t(linear ? 1 : n.kernel) || r.stride != uint32_t(linear ? 1 : n.stride) ||
      r.padding != uint32_t(linear ? 0 : n.padding) || r.groups != uint32_t(linear ? 1 : n.groups))
    throw FormatError(where +
                      "its layer record does not match the graph (channels, kernel, stride, padding or groups)");
  if (r.groups != 1) throw FormatError(where + "grouped convolutions are not supported by this engine yet");
  if (r.kind == uint32_t(LayerKind::quantized_conv)) {
    if (n.quant.signed_input) throw FormatError(where + "signed inputs are not supported by this engine yet");
    if (r.input_act_bits != uint32_t(n.quant.act_bits)) throw FormatError(where + "input bits differ from the graph's");
  }
}

}  // namespace

Model Model::from_bytes(const std::vector<uint8_t>& bytes, const std::string& name) {
  const ParsedFile file = parse_apot(bytes.data(), bytes.size(), name);
  auto impl = std::make_unique<Impl>();
  ModelInfo& info = impl->info;
  info.metadata_json = file.metadata;
  try {
    const nlohmann::json meta = nlohmann::json::parse(file.metadata);
    info.graph = graph::graph_from_json(meta.at("graph"), name);
    info.height = meta.at("input").at("height");
    info.width = meta.at("input").at("width");
    info.mean = meta.at("input").at("mean").get<std::vector<float>>();
    info.std = meta.at("input").at("std").get<std::vector<float>>();
    info.class_names = meta.at("class_names").get<std::vector<std::string>>();
  } catch (const graph::GraphError& e) {
    throw FormatError(e.what());
  } catch (const std::exception& e) {
    throw FormatError(name + ": invalid metadata (" + e.what() + ")");
  }
  if (info.height < 1 || info.width < 1 || info.height > 4096 || info.width > 4096)
    throw FormatError(name + ": implausible input size");
  try {
    info.graph.infer_shapes(info.height, info.width);
  } catch (const graph::GraphError& e) {
    throw FormatError(name + ": " + e.what());
  }
  const graph::Graph& g = info.graph;
  const int channels = g.in_channels();
  if (info.mean.size() != size_t(channels) || info.std.size() != size_t(channels))
    throw FormatError(name + ": one mean and one std per input channel needed");
  const std::vector<int> weight_nodes = g.weight_layers();
  if (weight_nodes.size() != file.layers.size())
    throw FormatError(name + ": " + std::to_string(file.layers.size()) + " layer records, but the graph has " +
                      std::to_string(weight_nodes.size()) + " weight layers" +
                      (file.layers.size() < weight_nodes.size()
                           ? " (node '" + g[size_t(weight_nodes[file.layers.size()])].name + "' has none)"
                           : ""));
  impl->layer_of.assign(g.size(), -1);
  const auto consumers = g.consumers();
  for (size_t i = 0; i < g.size(); ++i) impl->max_feature = std::max(impl->max_feature, size_t(g[i].shape.size()));
  for (size_t li = 0; li < weight_nodes.size(); ++li) {
    const int node = weight_nodes[li];
    const graph::Node& n = g[size_t(node)];
    const LayerRecord& r = file.layers[li];
    check_record(r, g, node, name);
    impl->layer_of[size_t(node)] = int(li);
    Layer l;
    l.node = node;
    l.record = r;
    const float* floats = reinterpret_cast<const float*>(file.blob.data() + r.scale);
    l.scale.assign(floats, floats + r.out_channels);
    floats = reinterpret_cast<const float*>(file.blob.data() + r.bias);
    l.bias.assign(floats, floats + r.out_channels);
    const std::vector<int8_t> w = weight_integers(r, file.blob, name);
    const int K = int(r.kernel * r.kernel * r.in_channels), out = int(r.out_channels);
    const int in_channels = int(r.in_channels), kernel = int(r.kernel), stride = int(r.stride),
              padding = int(r.padding);
    if (r.kind == uint32_t(LayerKind::quantized_conv)) {
      l.packed = kernels::pack_conv(w.data(), out, in_channels, kernel, stride, padding);
      try {
        const levels::LevelSet set =
            levels::LevelSet::make(kind_of(r.input_kind), static_cast<int>(r.input_act_bits), levels::Role::activation);
        if (set.denominator() != r.input_denominator || set.storage_bits() != 8)
          throw FormatError(name + ": node '" + n.name + "': input level set does not fit 8-bit codes");
        std::vector<uint8_t> codes;
        for (int64_t v : set.integers()) codes.push_back(static_cast<uint8_t>(v));
        l.max_code = static_cast<int>(set.integers().back());
        l.input = kernels::make_requantizer(kernels::Projector(set).input_thresholds(r.input_alpha), std::move(codes));
      } catch (const levels::LevelSetError& e) {
        throw FormatError(name + ": node '" + n.name + "': " + e.what());
      } catch (const std::invalid_argument& e) {
        throw FormatError(name + ": node '" + n.name + "': " + e.what());
      }
    } else if (r.kind == uint32_t(LayerKind::float_conv)) {
      l.packed_float = kernels::pack_float_conv(w.data(), out, in_channels, kernel, stride, padding);
      if (n.inputs[0] == 0) {
        impl->image_border = std::max(impl->image_border, padding);
        if (consumers[0].size() == 1) {
          try {  // a normalisation that does not fit (say, a zero std) leaves only the float path
            l.packed_pixels = kernels::pack_stem(w.data(), out, in_channels, kernel, stride, padding, info.height,
                                                 info.width, info.mean, info.std);
            impl->pixel_layer = int(li);
          } catch (const std::invalid_argument&) {
            l.packed_pixels.reset();
          }
        }
      } else {
        const graph::Shape& is = g.input_shape_of(node);
        impl->max_padded =
            std::max(impl->max_padded, size_t(is.height + 2 * padding) * (is.width + 2 * padding) * is.channels);
      }
    } else {
      l.weights_k_out.resize(size_t(K) * out);
      for (int o = 0; o < out; ++o)
        for (int k = 0; k < K; ++k) l.weights_k_out[size_t(k) * out + o] = float(w[size_t(o) * K + k]);
    }
    impl->layers.push_back(std::move(l));
  }
  // Every int8 layer on the image reads it with the largest border: one image for all of them.
  for (Layer& l : impl->layers)
    if (l.record.kind == uint32_t(LayerKind::float_conv) && g[size_t(l.node)].inputs[0] == 0 &&
        int(l.record.padding) != impl->image_border)
      throw FormatError(name + ": node '" + g[size_t(l.node)].name +
                        "': layers reading the image with different paddings are not supported by this engine yet");
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i].op == Op::add && g[i].activation == graph::Activation::clamp)
      throw FormatError(name + ": node '" + g[i].name + "': clamp activations are not supported by this engine yet");
  if (g[g.size() - 1].shape.height != 1 || g[g.size() - 1].shape.width != 1)
    throw FormatError(name + ": the output '" + g[g.size() - 1].name + "' is not a vector of class scores");
  impl->compile();
  impl->plan_buffers();
  impl->plan_code_buffers();
  return Model(std::move(impl));
}

namespace {
// The engine quantises without complaint, so a NaN or infinite pixel would give meaningless
// logits: refuse such input up front.
void check_input(const float* input, int batch, size_t image) {
  if (batch < 0) throw std::invalid_argument("negative batch size");
  for (int b = 0; b < batch; ++b) {
    const float* x = input + size_t(b) * image;
    // One branch-free pass over the bits (vectorised): a NaN or an infinity has every exponent
    // bit set.
    uint32_t non_finite = 0;
    for (size_t i = 0; i < image; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, 4);
      non_finite |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (non_finite)
      throw std::invalid_argument("input holds a NaN or infinite value (image " + std::to_string(b) + ")");
  }
}
}  // namespace

std::vector<float> Model::run_with_taps(const float* input, int batch, std::vector<std::vector<float>>& taps,
                                        const RunOptions& options) const {
  const size_t image = size_t(impl_->shape(0).size());
  check_input(input, batch, image);
  const size_t classes = size_t(impl_->info.num_classes());
  std::vector<float> logits(size_t(batch) * classes);
  taps.clear();
  for (int b = 0; b < batch; ++b) impl_->run_image(input + b * image, logits.data() + b * classes, &taps, options);
  return logits;
}

std::vector<int> Model::tap_nodes() const { return impl_->taps; }

std::vector<std::string> Model::tap_names() const {
  std::vector<std::string> names;
  for (int node : impl_->taps) names.push_back(impl_->g()[size_t(node)].name);
  return names;
}

// Several images: one thread per image, each convolution on one thread. One image: the
// convolutions split their output pixels over the threads.
std::vector<float> Model::run(const float* input, int batch, const RunOptions& options) const {
  const size_t image = size_t(impl_->shape(0).size());
  check_input(input, batch, image);
  const size_t classes = size_t(impl_->info.num_classes());
  std::vector<float> logits(size_t(batch) * classes);
  if (options.layer_seconds && options.layer_seconds->size() != impl_->layers.size())
    throw std::invalid_argument("RunOptions::layer_seconds must have one entry per layer");
  const int threads = std::max(1, options.threads);
  if (batch == 1 || threads == 1 || options.layer_seconds) {
    for (int b = 0; b < batch; ++b) impl_->run_image(input + b * image, logits.data() + b * classes, nullptr, options);
    return logits;
  }
  RunOptions per_image = options;
  per_image.threads = 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int b = 0; b < batch; ++b) impl_->run_image(input + b * image, logits.data() + b * classes, nullptr, per_image);
  return logits;
}

}  // namespace apot::runtime
