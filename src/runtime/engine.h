// The engine's private parts, shared by its files: a model's layers, the steps it compiles to,
// the working memory of one image, and Model::Impl, which holds them.
//   load.cpp     the .apot records -> layers (checked against the graph)
//   compile.cpp  fusion, the order of steps, the float and code buffer plans
//   execute.cpp  the steps on one image, and the batch drivers
//   tune.cpp     the choice of each quantised convolution's kernel by measurement (APOT_TUNE)
//   model.cpp    the public API (model.h) and the Inspector (inspect.h)
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "apot/graph/graph.h"
#include "apot/kernels/gemm.h"
#include "apot/kernels/projection.h"
#include "apot/kernels/stem.h"
#include "apot/runtime/format.h"
#include "apot/runtime/inspect.h"
#include "apot/runtime/model.h"

namespace apot::runtime {
namespace engine {

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
  // Signed inputs: the code of level 0 (the padding's value), and per output channel that
  // offset times the weight sum, which the epilogue subtracts; empty for unsigned inputs.
  uint8_t code_offset = 0;
  std::vector<int32_t> acc_offset;
  // A 1x1 convolution of stride s > 1 (no padding) whose codes only requantize steps make reads
  // every s-th row and column only: its codes are made for those pixels alone (a quarter of the
  // work at s = 2), and it runs as a 1x1 stride-1 convolution of that grid (ResNet-18's
  // projections). 1: the whole input.
  int subsample = 1;
  // The kernel measured fastest for this layer on this CPU (tune.cpp), if it was tuned.
  std::optional<ConvVariant> variant;
  // int8 convolutions: on float input, and on 8-bit pixels (when it reads the image and the
  // normalisation allows).
  kernels::PackedFloatConv packed_float;
  std::optional<kernels::PackedStem> packed_pixels;
  // int8 linear layers: weights as float integers, [in][out], rows of engine::linear_row(out).
  std::vector<float> weights_k_out;
  bool quantized() const { return record.kind == uint32_t(LayerKind::quantized_conv); }
  // Whether conv_u8s8 takes Winograd F(2,3) for this layer on `isa` (its input transform takes
  // the padding as zeros, so not for signed inputs), and whether the AVX-512 direct kernel's
  // rows-first schedule differs from its default (more than one block of output channels).
  bool winograd_applies(kernels::GemmIsa isa) const {
    return quantized() && acc_offset.empty() && !packed.depthwise() && kernels::winograd_applies(packed, max_code, isa);
  }
  bool amx_applies(kernels::GemmIsa isa) const { return quantized() && kernels::amx_applies(packed, isa); }
  bool rows_first_applies(kernels::GemmIsa isa) const {
    return quantized() && !packed.depthwise() && isa == kernels::GemmIsa::avx512_vnni && packed.nblocks > 1;
  }
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
  concat,           // channels of the inputs one after the other (then shuffled, with shuffle)
  channel_slice,    // channels [begin, begin + out_channels) of the input
  channel_shuffle,  // channel g * per_group + i -> i * groups + g
};

struct Step {
  StepKind kind = StepKind::image;
  int node = -1;           // the node whose value the step makes (requantize: the value it reads)
  int layer = -1;          // conv, linear: the layer; requantize: the consumer
  std::vector<int> reads;  // nodes whose float values the step reads
  int out = -1;            // float buffer written, -1 for none
  std::vector<int> in;     // float buffers of `reads`
  // conv_codes: the sum's other operand (a node; its buffer in residual_buffer), the layer
  // whose codes the epilogue makes (conv_float on the image: the layer whose codes it makes).
  int residual = -1, residual_buffer = -1;
  int codes_for = -1;
  bool relu = false;
  float relu_max = __builtin_inff();  // a clamp [0, hi] activation (ReLU6): relu with relu_max hi
  int pool = -1;                      // conv_float on the image: a fused 3x3 / 2 max-pool node
  bool tapped = false;                // its value is one of run_with_taps' outputs
  // concat: per read value, the channels it gives from part_begin on (a channel slice is read
  // in place from its input); requantize: part_begin[0], the channel a slice it reads in place
  // starts at. With a channel shuffle fused in: per output channel, the read
  // value it comes from and its channel there (a gather without divisions).
  // interleave > 0 instead where each read value is one group of that many (ShuffleNetV2): output
  // channel i * interleave + k is channel i of value k.
  std::vector<int> part_begin, part_channels;
  std::vector<int> gather_part, gather_channel;
  int interleave = 0;
};

// Working memory for one image at a time, sized for the model once.
struct Workspace {
  // per code buffer (Impl::code_buffer); 64-byte aligned: the AMX kernel loads 64-byte tile rows,
  // at a quarter of the speed where they cross cache lines
  std::vector<std::vector<uint8_t, kernels::Aligned64<uint8_t>>> code_bytes;
  std::vector<kernels::CodeImage> codes;  // per layer; empty for float layers
  std::vector<float> image_bytes;         // the input image with a zero border
  kernels::FloatImage image;
  std::vector<uint8_t> pixel_bytes;  // the same as 8-bit pixels, if it is made of them
  kernels::PixelImage pixels;
  std::vector<std::vector<float>> buffers;  // float values, Impl::max_feature each
  std::vector<float> stem;                  // a first layer's output before its fused max-pool
  std::vector<float> padded;                // a float value with a zero border (conv_float)
  std::vector<float> tap;                   // a value that is made as codes only
  std::vector<float> input;                 // run_pixels: the normalised image (NCHW)
};

// The row length of a float linear layer's weights: its outputs, padded with zero weights to
// whole blocks of 16 (the step keeps a block's sums in registers).
inline int linear_row(int outputs) { return (outputs + 15) / 16 * 16; }

// f(y0, y1) on contiguous ranges of [0, rows), one per thread (OpenMP). f must not throw.
template <typename F>
void parallel_rows(int threads, int rows, F f) {
  const int parts = std::max(1, std::min(threads, rows));
  if (parts == 1) return f(0, rows);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int p = 0; p < parts; ++p) f(rows * p / parts, rows * (p + 1) / parts);
}

inline bool is_stem_pool(const graph::Node& n) {
  return n.op == Op::max_pool && n.kernel == 3 && n.stride == 2 && n.padding == 1;
}

// Pooled rows per band of a first layer on pixels with a fused max-pool (its buffer: 2 * 8 + 1
// rows of the layer's output).
constexpr int kStemBand = 8;

}  // namespace engine

// Throws std::invalid_argument if a value of the batch is NaN or infinite.
void check_input(const float* input, int batch, size_t image);

struct Model::Impl {
  using Layer = engine::Layer;
  using Step = engine::Step;
  using StepKind = engine::StepKind;
  using Workspace = engine::Workspace;

  ModelInfo info;
  graph::Graph graph;  // shapes inferred for info.height x info.width
  std::vector<Layer> layers;
  std::vector<int> layer_of;  // per node: its layer, or -1
  std::vector<Step> steps;
  std::vector<int> taps;  // tap nodes, in step order
  int float_buffers = 0;
  size_t max_feature = 0;  // the largest float value of one image, in floats
  size_t max_padded = 0;   // the largest padded float input of a conv_float step not on the image
  int image_border = 0;    // the border of the float image (the largest padding of its int8 readers)
  int pixel_layer = -1;    // the layer that may run on 8-bit pixels
  // 8-bit images go into pixel_layer's pixels without the float image in between
  // (run_pixel_image): pixel_layer's step is the only reader of the image, and every 8-bit value
  // of every channel comes back from its normalised float (to_pixels would find each image's
  // pixels again). Set by compile().
  bool pixels_direct = false;
  // The code buffer of each quantised layer's input (-1: float layers). Layers share one where
  // their inputs have the same shape and are never live together, so that an image touches
  // fewer lines: a layer's codes are made by the step before it (an epilogue or a requantize
  // step) and are dead once it has run.
  std::vector<int> code_buffer;
  int code_buffers = 0;
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<Workspace>> pool;

  const graph::Graph& g() const { return graph; }
  const graph::Shape& shape(int node) const { return g()[size_t(node)].shape; }

  // The input of layer l as the engine holds it: a linear layer reads its input as one pixel
  // of in_channels values (NHWC order flattened), a subsampled one (Layer::subsample) its grid.
  graph::Shape layer_input(size_t l) const {
    const graph::Node& n = g()[size_t(layers[l].node)];
    if (n.op == graph::Op::linear) return {int(layers[l].record.in_channels), 1, 1};
    graph::Shape s = g().input_shape_of(layers[l].node);
    const int sub = layers[l].subsample;
    s.height = (s.height - 1) / sub + 1;
    s.width = (s.width - 1) / sub + 1;
    return s;
  }
  // The code image of quantised layer l's input (no data).
  kernels::CodeImage input_shape(size_t l) const {
    const graph::Shape s = layer_input(l);
    return kernels::CodeImage{nullptr, s.height, s.width, layers[l].packed.cs, int(layers[l].record.padding)};
  }

  // Whether pixel_layer runs on 8-bit pixels with these options (the VNNI paths).
  bool on_pixels(const EngineOptions& o) const {
    const bool vnni = o.isa == kernels::GemmIsa::avx512_vnni || o.isa == kernels::GemmIsa::avx_vnni;
    return o.pixel_stem && vnni && pixel_layer >= 0 && layers[size_t(pixel_layer)].packed_pixels;
  }

  // Working memory for one image: from the pool, or made for this model.
  std::unique_ptr<Workspace> acquire() const;
  void release(std::unique_ptr<Workspace> ws) const;

  // ---- compilation ----

  void compile();
  void plan_buffers();
  void plan_code_buffers();

  // ---- kernel choice (tune.cpp) ----

  std::string tuning = "off";  // Inspector::tuning()
  // Measured when tuning: an image runs faster on one thread than split over OpenMP's threads
  // (small networks on a few cores lose more to starting and joining the threads at every
  // layer than they gain), so images run one by one on one thread whatever the options say.
  bool image_on_one_thread = false;
  // Sets each quantised convolution's variant: from the cache file, or measured (and cached),
  // as APOT_TUNE says (off: none, the path's default kernels).
  void tune();
  // Sets image_on_one_thread by timing whole images on one thread and on `threads`.
  void choose_image_threads(int threads);
  // What quantised layer l's speed depends on (its shape, input codes and epilogue): the key of
  // its measurement in the cache.
  std::string layer_key(size_t l, const Step& s) const;
  // The kernel quantised layer l runs with options o: the measured one for an image on one
  // thread (the measurement's setting: a batch on several threads runs one image per thread),
  // also where several threads run an image but the layer was measured faster on one; else
  // split_variant() over the threads.
  ConvVariant variant_for(const Layer& l, const EngineOptions& o) const {
    if (!o.tuned || !l.variant) return ConvVariant{o.isa, {}};
    if (o.threads > 1 && !l.variant->one_thread) return split_variant(*l.variant, o.isa);
    return *l.variant;
  }
  // The kernel of a layer split over threads, `chosen` its one-thread choice: AMX tiles where
  // they were chosen (the vector kernels are several times slower there), else the path's default.
  static ConvVariant split_variant(ConvVariant chosen, kernels::GemmIsa isa) {
    kernels::ConvSchedule s;
    s.amx = chosen.isa == isa && chosen.schedule.amx;
    if (s.amx) s.winograd = false;
    return ConvVariant{isa, s};
  }
  // One run of quantised layer l's convolution step, with the variant v, on workspace ws.
  void run_conv(const Step& s, Workspace& ws, float* out, const EngineOptions& o, ConvVariant v) const;

  // ---- execution ----

  // Runs f, adding its time to layer `index` of o.layer_seconds if that is set.
  template <typename F>
  static void timed(const EngineOptions& o, int index, F f) {
    if (!o.layer_seconds) return f();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    (*o.layer_seconds)[size_t(index)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  // Requantises the float value at `values` (pixels `stride` floats apart: more than the
  // consumer's channels for a channel slice read in place) into the input codes of layer
  // `consumer`.
  void requantize(const float* values, int stride, int consumer, Workspace& ws, const EngineOptions& o) const {
    const graph::Shape s = layer_input(size_t(consumer));
    const int sub = layers[size_t(consumer)].subsample;
    if (sub > 1) {  // each code row from every sub-th pixel of every sub-th value row
      const size_t value_row = size_t(g().input_shape_of(layers[size_t(consumer)].node).width) * size_t(stride);
      engine::parallel_rows(o.threads, s.height, [&](int y0, int y1) {
        for (int y = y0; y < y1; ++y)
          requantize_rows(values + size_t(y) * size_t(sub) * value_row, stride * sub, consumer, y, y + 1, ws, o.isa);
      });
      return;
    }
    engine::parallel_rows(o.threads, s.height, [&](int y0, int y1) {
      requantize_rows(values + size_t(y0) * s.width * size_t(stride), stride, consumer, y0, y1, ws, o.isa);
    });
  }
  // Rows [y0, y1) of requantize(), whose values start at `values`.
  void requantize_rows(const float* values, int stride, int consumer, int y0, int y1, Workspace& ws,
                       kernels::GemmIsa isa) const {
    const graph::Shape s = layer_input(size_t(consumer));
    kernels::CodeImage rows = ws.codes[size_t(consumer)];
    rows.data += size_t(y0) * rows.padded_w() * rows.cs;
    rows.h = y1 - y0;
    rows.capacity = 0;  // a view: only its own bytes
    kernels::requantize(values, y1 - y0, s.width, s.channels, layers[size_t(consumer)].input, rows, isa, stride);
  }

  static void max_pool(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0,
                       const EngineOptions& o) {
    engine::parallel_rows(o.threads, y1 - y0, [&](int a, int b) {
      kernels::max_pool_3x3s2(in, h, w, c, out, o.isa, y0 + a, y0 + b, in_row0);
    });
  }

  struct ImageConv {
    float* values;  // the whole float value, or null
    bool in_bands;  // the bands clamped the values and made the codes of the step's codes_for
  };
  ImageConv conv_on_image(const Step& s, const float* image, Workspace& ws, float* out, const EngineOptions& o) const;
  void run_step(const Step& s, const float* image, Workspace& ws, const EngineOptions& o,
                std::vector<std::vector<float>>* taps) const;
  // One image: its steps, writing num_classes logits (and the tap values if taps is set).
  void run_steps(const float* image, Workspace& ws, float* logits, std::vector<std::vector<float>>* taps,
                 const EngineOptions& o) const;
  void run_image(const float* image, float* logits, std::vector<std::vector<float>>* taps,
                 const EngineOptions& o) const;
  void run_pixel_image(const uint8_t* pixels, PixelLayout layout, float* logits, const EngineOptions& o) const;
  // A batch (arguments checked here): one thread per image when several threads run several
  // images, else image by image with the threads inside each image.
  void run_batch(const float* input, int batch, float* logits, const EngineOptions& o) const;
  void run_pixel_batch(const uint8_t* pixels, int batch, PixelLayout layout, float* logits,
                       const EngineOptions& o) const;
  // Throws std::invalid_argument for a null pointer, a negative batch or a layer_seconds of the
  // wrong size.
  void check_run(const void* input, int batch, const float* logits, const EngineOptions& o) const;
};

}  // namespace apot::runtime
