// The integer engine: graph from the architecture description, layers from the .apot records.
#include "apot/runtime/model.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>

#include "apot/kernels/projection.h"
#include "apot/kernels/stem.h"
#include "apot/levels/level_set.h"

namespace apot::runtime {
namespace {

struct Layer {
  LayerRecord record{};
  levels::LayerInfo info;
  std::vector<float> scale, bias;
  // Quantised convolutions: packed weights, and the requantiser that makes this layer's input
  // codes (its producer's epilogue uses it).
  kernels::PackedConv packed;
  kernels::Requantizer input;
  int max_code = 0;
  // The first convolution: on float input, and on 8-bit pixels (when the normalisation allows).
  kernels::PackedFloatConv packed_float;
  std::optional<kernels::PackedStem> packed_pixels;
  // The classifier: weights as float integers, [in][out].
  std::vector<float> weights_k_out;
};

// Working memory for one image at a time, sized for the model once: a zero-bordered code image
// for each quantised layer's input, layers that are never live together sharing one (borders
// are never written, so they stay zero), and float buffers for the residual stream.
struct Workspace {
  std::vector<std::vector<uint8_t>> code_bytes;  // per code buffer (Impl::code_buffer)
  std::vector<kernels::CodeImage> codes;  // per layer; empty for float layers
  std::vector<float> image_bytes;         // the input image with the stem's zero border
  kernels::FloatImage image;
  std::vector<uint8_t> pixel_bytes;       // the same as 8-bit pixels, if it is made of them
  kernels::PixelImage pixels;
  std::vector<float> stem, stream, shortcut;
  std::vector<float> tap;  // run_with_taps: the float output of a block's inner convolution
};

std::vector<int8_t> weight_integers(const LayerRecord& r, const std::vector<uint8_t>& blob, const std::string& name) {
  const size_t count = size_t(r.out_channels) * r.in_channels * r.kernel * r.kernel;
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

}  // namespace

// Pooled rows per band of the ImageNet stem on pixels (its buffer: 2 * 8 + 1 stem rows).
constexpr int kStemBand = 8;

struct Model::Impl {
  ModelInfo info;
  std::vector<Layer> layers;
  std::vector<levels::BlockInfo> blocks;
  size_t max_feature = 0;  // the largest float feature map of one image, in floats
  // The code buffer of each quantised layer's input (-1: float layers). Layers share one where
  // their inputs have the same shape and are never live together, so that an image touches
  // fewer lines: in run_image's order a layer's codes are written before it runs (by the layer
  // before it, or requantised from the float stream) and are dead once it has run. ResNet-20
  // needs 6 buffers instead of 19.
  std::vector<int> code_buffer;
  int code_buffers = 0;
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<Workspace>> pool;

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
    const Layer& stem = layers.front();
    ws->image = {nullptr, info.height, info.width, stem.info.in_channels, stem.info.padding};
    ws->image_bytes.assign(ws->image.floats(), 0.0f);
    ws->image.data = ws->image_bytes.data();
    if (stem.packed_pixels) {
      ws->pixels = {nullptr, info.height, info.width, stem.info.in_channels, stem.info.padding};
      ws->pixel_bytes.assign(ws->pixels.bytes(), 0);
      ws->pixels.data = ws->pixel_bytes.data();
    }
    for (auto* v : {&ws->stream, &ws->shortcut}) v->resize(max_feature);
    if (info.spec.stem == levels::Stem::imagenet) ws->stem.resize(max_feature);  // before the max-pool
    return ws;
  }
  // The code image of quantised layer i's input (no data).
  kernels::CodeImage input_shape(size_t i) const {
    const levels::LayerInfo& li = layers[i].info;
    return kernels::CodeImage{nullptr, li.in_height, li.in_width, layers[i].packed.cs, li.padding};
  }

  void plan_code_buffers() {
    code_buffer.assign(layers.size(), -1);
    std::vector<size_t> shape;  // per buffer, the first layer that uses it
    std::vector<bool> live;     // per buffer
    // The same bytes: also the same channels, so that no layer finds another's codes in the
    // padding channels.
    auto same = [&](size_t i, size_t j) {
      const kernels::CodeImage a = input_shape(i), b = input_shape(j);
      return a.h == b.h && a.w == b.w && a.cs == b.cs && a.border == b.border &&
             layers[i].info.in_channels == layers[j].info.in_channels;
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
    if (!blocks.empty()) write(blocks.front().conv[0]);
    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      const levels::BlockInfo& b = blocks[bi];
      if (b.projection >= 0) {
        write(b.projection);
        ran(b.projection);
      }
      const int convs = b.conv[2] >= 0 ? 3 : 2;
      for (int i = 0; i < convs; ++i) {
        write(i + 1 < convs ? b.conv[i + 1] : bi + 1 < blocks.size() ? blocks[bi + 1].conv[0] : -1);
        ran(b.conv[i]);
      }
    }
    code_buffers = int(shape.size());
    for (size_t i = 0; i < layers.size(); ++i)
      if ((layers[i].record.kind == uint32_t(LayerKind::quantized_conv)) != (code_buffer[i] >= 0))
        throw std::logic_error("engine: a quantised layer outside the residual blocks");
  }

  void release(std::unique_ptr<Workspace> ws) const {
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.push_back(std::move(ws));
  }

  // Runs f, adding its time to layer `index` of o.layer_seconds if that is set.
  template <typename F>
  static void timed(const RunOptions& o, int index, F f) {
    if (!o.layer_seconds) return f();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    (*o.layer_seconds)[size_t(index)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  // Quantised layer `index` on its input codes; `out` has the outputs, scale and bias are added.
  void conv(int index, kernels::ConvOutput out, Workspace& ws, const RunOptions& o) const {
    const Layer& l = layers[index];
    out.scale = l.scale.data();
    out.bias = l.bias.data();
    timed(o, index, [&] { kernels::conv_u8s8(ws.codes[index], l.packed, l.max_code, out, o.isa, o.threads); });
  }

  // Codes of a float feature map for quantised layer `consumer`, rows shared by the threads.
  void requantize(const float* values, int consumer, Workspace& ws, const RunOptions& o) const {
    const Layer& l = layers[consumer];
    const int w = l.info.in_width, n = l.info.in_channels;
    const kernels::CodeImage& all = ws.codes[consumer];
    parallel_rows(o.threads, l.info.in_height, [&](int y0, int y1) {
      kernels::CodeImage rows = all;
      rows.data += size_t(y0) * all.padded_w() * all.cs;
      rows.h = y1 - y0;
      kernels::requantize(values + size_t(y0) * w * n, y1 - y0, w, n, l.input, rows, o.isa);
    });
  }

  // The ImageNet stem's max-pool, output rows [y0, y1) from the stem rows from in_row0 on.
  static void max_pool(const float* in, int h, int w, int c, float* out, int y0, int y1, int in_row0, const RunOptions& o) {
    parallel_rows(o.threads, y1 - y0, [&](int a, int b) {
      kernels::max_pool_3x3s2(in, h, w, c, out, o.isa, y0 + a, y0 + b, in_row0);
    });
  }

  // One residual block: ws.stream (float input, whose codes for the block's first convolution
  // are already in place) -> ws.stream (float output), plus the codes of the next block's first
  // convolution (next_consumer, if any). The last convolution writes its output over its
  // residual input, in place (each output reads only its own residual value): the lines it
  // writes are already in cache, and no third buffer is needed.
  // With taps, the inner convolutions also write their float outputs (the same epilogue values
  // that their codes come from), and the block appends them.
  void block(const levels::BlockInfo& b, int next_consumer, Workspace& ws, const RunOptions& o,
             std::vector<std::vector<float>>* taps) const {
    const Layer& first = layers[b.conv[0]];
    const int h = first.info.in_height, w = first.info.in_width;
    float* residual = ws.stream.data();
    if (b.projection >= 0) {
      // Once the projection's codes are made, the block reads no float of its input: the
      // projection writes over it, into lines that requantize() has just brought into cache
      // (to a cold buffer it took 0.08 instead of 0.05 ms at ResNet-18's first projection).
      requantize(ws.stream.data(), b.projection, ws, o);
      kernels::ConvOutput out;
      out.values = ws.stream.data();
      conv(b.projection, out, ws, o);
    } else if (b.stride != 1 || b.in_planes != b.out_planes) {  // option A: subsample, zero-pad channels
      const int before = (b.out_planes - b.in_planes) / 2;
      const int oh = (h - 1) / b.stride + 1, ow = (w - 1) / b.stride + 1;
      std::fill(ws.shortcut.begin(), ws.shortcut.begin() + size_t(oh) * ow * b.out_planes, 0.0f);
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x)
          std::copy_n(ws.stream.data() + (size_t(y * b.stride) * w + x * b.stride) * b.in_planes, b.in_planes,
                      ws.shortcut.data() + (size_t(y) * ow + x) * b.out_planes + before);
      residual = ws.shortcut.data();
    }
    const int convs = b.conv[2] >= 0 ? 3 : 2;
    for (int i = 0; i < convs; ++i) {
      const bool last = i + 1 == convs;
      const int consumer = last ? next_consumer : b.conv[i + 1];
      kernels::ConvOutput out;
      out.relu = true;
      if (last) {
        out.residual = residual;
        out.values = residual;
      }
      if (consumer >= 0) {
        out.requantizer = &layers[consumer].input;
        out.codes = ws.codes[consumer];
      }
      const levels::LayerInfo& li = layers[b.conv[i]].info;
      const size_t outputs = size_t(li.out_height) * li.out_width * li.out_channels;
      if (taps && !last) {
        ws.tap.resize(std::max(ws.tap.size(), outputs));
        out.values = ws.tap.data();
      }
      conv(b.conv[i], out, ws, o);
      if (taps && !last) taps->emplace_back(ws.tap.begin(), ws.tap.begin() + ptrdiff_t(outputs));
    }
    if (residual != ws.stream.data()) std::swap(ws.stream, ws.shortcut);
  }

  void run_image(const float* image, float* logits, std::vector<std::vector<float>>* taps, const RunOptions& o) const {
    std::unique_ptr<Workspace> ws = acquire();
    const Layer& stem = layers.front();
    const bool pool = info.spec.stem == levels::Stem::imagenet;
    int h = stem.info.out_height, w = stem.info.out_width;
    const int sc = stem.info.out_channels;
    const int ph = (h + 1) / 2, pw = (w + 1) / 2;  // after the max-pool (3x3, stride 2, padding 1)
    const bool vnni = o.isa == kernels::GemmIsa::avx512_vnni || o.isa == kernels::GemmIsa::avx_vnni;
    const bool pixels = o.pixel_stem && vnni && stem.packed_pixels &&
                        kernels::to_pixels(image, info.mean, info.std, ws->pixels, o.isa);
    if (pixels && pool) {
      // Bands of pooled rows: the stem rows they need go through a buffer that stays in cache.
      for (int py0 = 0; py0 < ph; py0 += kStemBand) {
        const int py1 = std::min(ph, py0 + kStemBand), r0 = std::max(0, 2 * py0 - 1), r1 = std::min(h, 2 * py1);
        timed(o, 0, [&] {
          kernels::conv_stem_u8(ws->pixels, *stem.packed_pixels, stem.scale.data(), stem.bias.data(), true,
                                ws->stem.data(), o.isa, o.threads, r0, r1);
        });
        max_pool(ws->stem.data(), h, w, sc, ws->stream.data(), py0, py1, r0, o);
      }
    } else if (pixels) {
      timed(o, 0, [&] {
        kernels::conv_stem_u8(ws->pixels, *stem.packed_pixels, stem.scale.data(), stem.bias.data(), true,
                              ws->stream.data(), o.isa, o.threads);
      });
    } else {
      const int c = info.spec.in_channels, H = info.height, W = info.width;
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          float* dst = ws->image.pixel(y, x);
          for (int ci = 0; ci < c; ++ci) dst[ci] = image[(size_t(ci) * H + y) * W + x];
        }
      timed(o, 0, [&] {
        kernels::conv_f32(ws->image, stem.packed_float, stem.scale.data(), stem.bias.data(), true,
                          pool ? ws->stem.data() : ws->stream.data(), o.isa, o.threads);
      });
      if (pool) max_pool(ws->stem.data(), h, w, sc, ws->stream.data(), 0, ph, 0, o);
    }
    if (pool) {
      h = ph;
      w = pw;
    }
    int channels = sc;
    if (taps) taps->emplace_back(ws->stream.begin(), ws->stream.begin() + size_t(h) * w * channels);
    if (!blocks.empty()) requantize(ws->stream.data(), blocks.front().conv[0], *ws, o);
    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      const levels::BlockInfo& b = blocks[bi];
      block(b, bi + 1 < blocks.size() ? blocks[bi + 1].conv[0] : -1, *ws, o, taps);
      const Layer& last = layers[b.last_conv()];
      h = last.info.out_height;
      w = last.info.out_width;
      channels = last.info.out_channels;
      if (taps) taps->emplace_back(ws->stream.begin(), ws->stream.begin() + size_t(h) * w * channels);
    }
    // Global average pooling, then the classifier.
    std::vector<float> feature(channels, 0.0f);
    for (int p = 0; p < h * w; ++p)
      for (int ci = 0; ci < channels; ++ci) feature[ci] += ws->stream[size_t(p) * channels + ci];
    for (float& v : feature) v /= float(h * w);
    release(std::move(ws));
    const Layer& fc = layers.back();
    const int classes = fc.info.out_channels;
    std::fill(logits, logits + classes, 0.0f);
    for (int ci = 0; ci < channels; ++ci)
      for (int o2 = 0; o2 < classes; ++o2) logits[o2] += feature[ci] * fc.weights_k_out[size_t(ci) * classes + o2];
    for (int o2 = 0; o2 < classes; ++o2) logits[o2] = fc.scale[o2] * logits[o2] + fc.bias[o2];
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const ModelInfo& Model::info() const { return impl_->info; }
size_t Model::layer_count() const { return impl_->layers.size(); }

bool Model::uses_winograd(size_t index, kernels::GemmIsa isa) const {
  const Layer& l = impl_->layers.at(index);
  return l.record.kind == uint32_t(LayerKind::quantized_conv) && kernels::winograd_applies(l.packed, l.max_code, isa);
}

Model Model::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path + ": cannot open");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return from_bytes(bytes, path);
}

Model Model::from_bytes(const std::vector<uint8_t>& bytes, const std::string& name) {
  const ParsedFile file = parse_apot(bytes.data(), bytes.size(), name);
  auto impl = std::make_unique<Impl>();
  ModelInfo& info = impl->info;
  info.metadata_json = file.metadata;
  try {
    const nlohmann::json meta = nlohmann::json::parse(file.metadata);
    const std::string shortcut = meta.at("shortcut");
    info.spec = levels::resnet_spec(meta.at("arch"), meta.at("in_channels"), meta.at("num_classes"),
                                    shortcut == "B" ? levels::Shortcut::B : levels::Shortcut::A);
    info.height = meta.at("input").at("height");
    info.width = meta.at("input").at("width");
    info.mean = meta.at("input").at("mean").get<std::vector<float>>();
    info.std = meta.at("input").at("std").get<std::vector<float>>();
    info.class_names = meta.at("class_names").get<std::vector<std::string>>();
  } catch (const std::exception& e) {
    throw FormatError(name + ": invalid metadata (" + e.what() + ")");
  }
  if (info.height < 1 || info.width < 1 || info.height > 4096 || info.width > 4096)
    throw FormatError(name + ": implausible input size");
  const std::vector<levels::LayerInfo> expected = levels::enumerate_layers(info.spec, info.height, info.width);
  if (expected.size() != file.layers.size())
    throw FormatError(name + ": " + std::to_string(file.layers.size()) + " layer records, but " + info.spec.name +
                      " has " + std::to_string(expected.size()) + " layers");
  const float* floats = nullptr;
  for (size_t i = 0; i < expected.size(); ++i) {
    const LayerRecord& r = file.layers[i];
    const levels::LayerInfo& li = expected[i];
    const uint32_t want_kind =
        li.last ? uint32_t(LayerKind::float_linear) : li.first ? uint32_t(LayerKind::float_conv) : uint32_t(LayerKind::quantized_conv);
    if (r.kind != want_kind || r.in_channels != uint32_t(li.in_channels) || r.out_channels != uint32_t(li.out_channels) ||
        r.kernel != uint32_t(li.kernel) || r.stride != uint32_t(li.stride) || r.padding != uint32_t(li.padding))
      throw FormatError(name + ": layer record " + std::to_string(i) + " does not match " + li.name + " of " + info.spec.name);
    Layer l;
    l.record = r;
    l.info = li;
    floats = reinterpret_cast<const float*>(file.blob.data() + r.scale);
    l.scale.assign(floats, floats + r.out_channels);
    floats = reinterpret_cast<const float*>(file.blob.data() + r.bias);
    l.bias.assign(floats, floats + r.out_channels);
    const std::vector<int8_t> w = weight_integers(r, file.blob, name);
    const int K = li.kernel * li.kernel * li.in_channels;
    if (r.kind == uint32_t(LayerKind::quantized_conv)) {
      l.packed = kernels::pack_conv(w.data(), li.out_channels, li.in_channels, li.kernel, li.stride, li.padding);
      try {
        const levels::LevelSet set =
            levels::LevelSet::make(kind_of(r.input_kind), static_cast<int>(r.input_act_bits), levels::Role::activation);
        if (set.denominator() != r.input_denominator || set.storage_bits() != 8)
          throw FormatError(name + ": layer " + li.name + ": input level set does not fit 8-bit codes");
        std::vector<uint8_t> codes;
        for (int64_t v : set.integers()) codes.push_back(static_cast<uint8_t>(v));
        l.max_code = static_cast<int>(set.integers().back());
        l.input = kernels::make_requantizer(kernels::Projector(set).input_thresholds(r.input_alpha), std::move(codes));
      } catch (const levels::LevelSetError& e) {
        throw FormatError(name + ": layer " + li.name + ": " + e.what());
      } catch (const std::invalid_argument& e) {
        throw FormatError(name + ": layer " + li.name + ": " + e.what());
      }
    } else if (r.kind == uint32_t(LayerKind::float_conv)) {
      l.packed_float = kernels::pack_float_conv(w.data(), li.out_channels, li.in_channels, li.kernel, li.stride, li.padding);
      try {  // a normalisation that does not fit (say, a zero std) leaves only the float path
        l.packed_pixels = kernels::pack_stem(w.data(), li.out_channels, li.in_channels, li.kernel, li.stride,
                                             li.padding, info.height, info.width, info.mean, info.std);
      } catch (const std::invalid_argument&) {
        l.packed_pixels.reset();
      }
    } else {
      l.weights_k_out.resize(size_t(K) * li.out_channels);
      for (int o = 0; o < li.out_channels; ++o)
        for (int k = 0; k < K; ++k) l.weights_k_out[size_t(k) * li.out_channels + o] = float(w[size_t(o) * K + k]);
    }
    if (!li.last) {
      impl->max_feature = std::max(impl->max_feature, size_t(li.out_height) * li.out_width * li.out_channels);
      impl->max_feature = std::max(impl->max_feature, size_t(li.in_height) * li.in_width * li.in_channels);
    }
    impl->layers.push_back(std::move(l));
  }
  impl->blocks = levels::enumerate_blocks(info.spec);
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
    if (non_finite) throw std::invalid_argument("input holds a NaN or infinite value (image " + std::to_string(b) + ")");
  }
}
}  // namespace

std::vector<float> Model::run_with_taps(const float* input, int batch, std::vector<std::vector<float>>& taps,
                                        const RunOptions& options) const {
  const size_t image = size_t(impl_->info.spec.in_channels) * impl_->info.height * impl_->info.width;
  check_input(input, batch, image);
  const size_t classes = impl_->layers.back().info.out_channels;
  std::vector<float> logits(size_t(batch) * classes);
  taps.clear();
  for (int b = 0; b < batch; ++b) impl_->run_image(input + b * image, logits.data() + b * classes, &taps, options);
  return logits;
}

std::vector<std::string> Model::tap_names() const {
  const auto& layers = impl_->layers;
  std::vector<std::string> names{layers.front().info.name};
  for (const levels::BlockInfo& b : impl_->blocks) {
    const int convs = b.conv[2] >= 0 ? 3 : 2;
    for (int i = 0; i + 1 < convs; ++i) names.push_back(layers[size_t(b.conv[i])].info.name);
    const std::string& last = layers[size_t(b.last_conv())].info.name;  // "layer1.0.conv2"
    names.push_back(last.substr(0, last.rfind('.')) + " (block output)");
  }
  return names;
}

// Several images: one thread per image, each convolution on one thread. One image: the
// convolutions split their output pixels over the threads.
std::vector<float> Model::run(const float* input, int batch, const RunOptions& options) const {
  const size_t image = size_t(impl_->info.spec.in_channels) * impl_->info.height * impl_->info.width;
  check_input(input, batch, image);
  const size_t classes = impl_->layers.back().info.out_channels;
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
