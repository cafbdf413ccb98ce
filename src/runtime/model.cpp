// The integer engine: graph from the architecture description, layers from the .apot records.
#include "apot/runtime/model.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apot/kernels/projection.h"
#include "apot/levels/level_set.h"

namespace apot::runtime {
namespace {

struct Layer {
  LayerRecord record{};
  levels::LayerInfo info;
  std::vector<float> scale, bias;
  // Quantised convolutions.
  kernels::PackedB packed;
  std::unique_ptr<kernels::Projector> input_projector;
  kernels::PreparedProjection input_quantizer;  // thresholds for this layer's fixed alpha
  std::vector<uint8_t> index_to_code;  // level index -> integer code of the input set
  int max_code = 0;
  // Float layers: weights as float integers, [K][out] (K = kh * kw * in) so the inner loop runs over outputs.
  std::vector<float> weights_k_out;
};

struct Block {
  int conv[3] = {-1, -1, -1};  // the block's convolutions in order
  int projection = -1;
  int stride = 1, in_planes = 0, out_planes = 0;
};

// A tensor of one image in NHWC order.
struct Feature {
  int h = 0, w = 0, c = 0;
  std::vector<float> data;
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

levels::Kind kind_of(uint32_t k) {
  return k == 0 ? levels::Kind::apot : k == 1 ? levels::Kind::pot : levels::Kind::uniform;
}

}  // namespace

struct Model::Impl {
  ModelInfo info;
  std::vector<Layer> layers;
  std::vector<Block> blocks;

  // ---- building blocks ----
  void quantize(const Feature& f, const Layer& l, std::vector<uint8_t>& codes) const {
    const size_t n = f.data.size();
    codes.resize(n);
    l.input_projector->quantize(l.input_quantizer, f.data.data(), n, codes.data());
    for (size_t i = 0; i < n; ++i) codes[i] = l.index_to_code[codes[i]];
  }

  // Integer convolution of codes (h x w x c) -> int32 [oh*ow][out].
  void conv_int(const uint8_t* codes, int h, int w, const Layer& l, std::vector<int32_t>& acc, std::vector<uint8_t>& cols,
                const RunOptions& o) const {
    const levels::LayerInfo& li = l.info;
    const int c = li.in_channels, k = li.kernel, s = li.stride, p = li.padding;
    const int oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
    const int M = oh * ow, Kp = l.packed.Kp;
    acc.resize(size_t(M) * li.out_channels);
    const uint8_t* A = codes;
    int lda = c;
    if (!(k == 1 && s == 1 && c % 4 == 0)) {
      cols.resize(size_t(M) * Kp);
      std::fill(cols.begin(), cols.end(), uint8_t{0});
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x) {
          uint8_t* row = cols.data() + size_t(y * ow + x) * Kp;
          for (int ky = 0; ky < k; ++ky) {
            const int iy = y * s - p + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; ++kx) {
              const int ix = x * s - p + kx;
              if (ix < 0 || ix >= w) continue;
              std::memcpy(row + (ky * k + kx) * c, codes + (size_t(iy) * w + ix) * c, c);
            }
          }
        }
      A = cols.data();
      lda = Kp;
    }
    kernels::gemm_u8s8(A, M, lda, l.max_code, l.packed, acc.data(), li.out_channels, o.isa);
  }

  // Float convolution (the stem) with folded scale and bias, optional ReLU.
  Feature conv_float(const Feature& in, const Layer& l, bool relu) const {
    const levels::LayerInfo& li = l.info;
    const int k = li.kernel, s = li.stride, p = li.padding, c = in.c, n = li.out_channels;
    Feature out;
    out.h = (in.h + 2 * p - k) / s + 1;
    out.w = (in.w + 2 * p - k) / s + 1;
    out.c = n;
    out.data.assign(size_t(out.h) * out.w * n, 0.0f);
    std::vector<float> acc(n);
    for (int y = 0; y < out.h; ++y)
      for (int x = 0; x < out.w; ++x) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int ky = 0; ky < k; ++ky) {
          const int iy = y * s - p + ky;
          if (iy < 0 || iy >= in.h) continue;
          for (int kx = 0; kx < k; ++kx) {
            const int ix = x * s - p + kx;
            if (ix < 0 || ix >= in.w) continue;
            const float* src = in.data.data() + (size_t(iy) * in.w + ix) * c;
            const float* wk = l.weights_k_out.data() + size_t((ky * k + kx) * c) * n;
            for (int ci = 0; ci < c; ++ci) {
              const float v = src[ci];
              const float* wrow = wk + size_t(ci) * n;
              for (int o = 0; o < n; ++o) acc[o] += v * wrow[o];
            }
          }
        }
        float* dst = out.data.data() + (size_t(y) * out.w + x) * n;
        for (int o = 0; o < n; ++o) {
          const float v = l.scale[o] * acc[o] + l.bias[o];
          dst[o] = relu ? std::max(v, 0.0f) : v;
        }
      }
    return out;
  }

  // One residual block on the float stream.
  Feature block(const Feature& x, const Block& b, const RunOptions& o) const {
    // Per-thread scratch buffers keep their capacity between calls: large buffers would
    // otherwise be mapped and page-faulted afresh for every block.
    thread_local std::vector<uint8_t> codes, cols;
    thread_local std::vector<int32_t> acc;
    int h = x.h, w = x.w;
    quantize(x, layers[b.conv[0]], codes);
    Feature cur;
    int convs = b.conv[2] >= 0 ? 3 : 2;
    for (int i = 0; i < convs; ++i) {
      const Layer& l = layers[b.conv[i]];
      conv_int(codes.data(), h, w, l, acc, cols, o);
      h = (h + 2 * l.info.padding - l.info.kernel) / l.info.stride + 1;
      w = (w + 2 * l.info.padding - l.info.kernel) / l.info.stride + 1;
      const int n = l.info.out_channels;
      cur.h = h;
      cur.w = w;
      cur.c = n;
      cur.data.resize(size_t(h) * w * n);
      const bool last = i + 1 == convs;
      for (size_t pix = 0; pix < size_t(h) * w; ++pix)
        for (int oc = 0; oc < n; ++oc) {
          const float v = l.scale[oc] * float(acc[pix * n + oc]) + l.bias[oc];
          cur.data[pix * n + oc] = last ? v : std::max(v, 0.0f);
        }
      if (!last) quantize(cur, layers[b.conv[i + 1]], codes);
    }
    // The shortcut, then the residual add and ReLU.
    if (b.projection >= 0) {
      const Layer& l = layers[b.projection];
      quantize(x, l, codes);
      conv_int(codes.data(), x.h, x.w, l, acc, cols, o);
      const int n = l.info.out_channels;
      for (size_t pix = 0; pix < size_t(h) * w; ++pix)
        for (int oc = 0; oc < n; ++oc)
          cur.data[pix * n + oc] += l.scale[oc] * float(acc[pix * n + oc]) + l.bias[oc];
    } else if (b.stride != 1 || b.in_planes != b.out_planes) {  // option A: subsample, zero-pad channels
      const int before = (b.out_planes - b.in_planes) / 2;
      for (int y = 0; y < h; ++y)
        for (int xx = 0; xx < w; ++xx) {
          const float* src = x.data.data() + (size_t(y * b.stride) * x.w + xx * b.stride) * x.c;
          float* dst = cur.data.data() + (size_t(y) * w + xx) * cur.c + before;
          for (int ci = 0; ci < x.c; ++ci) dst[ci] += src[ci];
        }
    } else {
      for (size_t i = 0; i < cur.data.size(); ++i) cur.data[i] += x.data[i];
    }
    for (float& v : cur.data) v = std::max(v, 0.0f);
    return cur;
  }

  std::vector<float> run_image(const float* image, std::vector<std::vector<float>>* taps, const RunOptions& o) const {
    const int c = info.spec.in_channels;
    Feature x{info.height, info.width, c, std::vector<float>(size_t(info.height) * info.width * c)};
    for (int ci = 0; ci < c; ++ci)
      for (int p = 0; p < info.height * info.width; ++p) x.data[size_t(p) * c + ci] = image[size_t(ci) * info.height * info.width + p];
    Feature stream = conv_float(x, layers.front(), true);
    if (info.spec.stem == levels::Stem::imagenet) {  // max-pool 3x3, stride 2, padding 1
      Feature pooled{(stream.h + 2 - 3) / 2 + 1, (stream.w + 2 - 3) / 2 + 1, stream.c, {}};
      pooled.data.assign(size_t(pooled.h) * pooled.w * pooled.c, -INFINITY);
      for (int y = 0; y < pooled.h; ++y)
        for (int xx = 0; xx < pooled.w; ++xx)
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx) {
              const int iy = y * 2 - 1 + ky, ix = xx * 2 - 1 + kx;
              if (iy < 0 || iy >= stream.h || ix < 0 || ix >= stream.w) continue;
              for (int ci = 0; ci < stream.c; ++ci) {
                float& d = pooled.data[(size_t(y) * pooled.w + xx) * pooled.c + ci];
                d = std::max(d, stream.data[(size_t(iy) * stream.w + ix) * stream.c + ci]);
              }
            }
      stream = std::move(pooled);
    }
    if (taps) taps->push_back(stream.data);
    for (const Block& b : blocks) {
      stream = block(stream, b, o);
      if (taps) taps->push_back(stream.data);
    }
    // Global average pooling, then the classifier.
    std::vector<float> feature(stream.c, 0.0f);
    for (int p = 0; p < stream.h * stream.w; ++p)
      for (int ci = 0; ci < stream.c; ++ci) feature[ci] += stream.data[size_t(p) * stream.c + ci];
    for (float& v : feature) v /= float(stream.h * stream.w);
    const Layer& fc = layers.back();
    const int classes = fc.info.out_channels;
    std::vector<float> logits(classes, 0.0f);
    for (int ci = 0; ci < stream.c; ++ci)
      for (int o2 = 0; o2 < classes; ++o2) logits[o2] += feature[ci] * fc.weights_k_out[size_t(ci) * classes + o2];
    for (int o2 = 0; o2 < classes; ++o2) logits[o2] = fc.scale[o2] * logits[o2] + fc.bias[o2];
    return logits;
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const ModelInfo& Model::info() const { return impl_->info; }
size_t Model::layer_count() const { return impl_->layers.size(); }

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
      l.packed = kernels::pack_weights(w.data(), li.out_channels, K);
      try {
        const levels::LevelSet set =
            levels::LevelSet::make(kind_of(r.input_kind), static_cast<int>(r.input_act_bits), levels::Role::activation);
        if (set.denominator() != r.input_denominator || set.storage_bits() != 8)
          throw FormatError(name + ": layer " + li.name + ": input level set does not fit 8-bit codes");
        for (int64_t v : set.integers()) l.index_to_code.push_back(static_cast<uint8_t>(v));
        l.max_code = static_cast<int>(set.integers().back());
        l.input_projector = std::make_unique<kernels::Projector>(set);
        l.input_quantizer = l.input_projector->prepare(r.input_alpha);
      } catch (const levels::LevelSetError& e) {
        throw FormatError(name + ": layer " + li.name + ": " + e.what());
      }
    } else {
      l.weights_k_out.resize(size_t(K) * li.out_channels);
      for (int o = 0; o < li.out_channels; ++o)
        for (int k = 0; k < K; ++k) l.weights_k_out[size_t(k) * li.out_channels + o] = float(w[size_t(o) * K + k]);
    }
    impl->layers.push_back(std::move(l));
  }
  // Blocks in enumeration order: conv1, conv2 [, conv3] [, projection].
  size_t next = 1;
  int in_planes = info.spec.widths.front();
  for (size_t s = 0; s < info.spec.blocks.size(); ++s)
    for (int bi = 0; bi < info.spec.blocks[s]; ++bi) {
      Block b;
      b.stride = (s > 0 && bi == 0) ? 2 : 1;
      b.in_planes = in_planes;
      b.out_planes = info.spec.widths[s] * info.spec.expansion();
      const int convs = info.spec.block == levels::BlockType::bottleneck ? 3 : 2;
      for (int c = 0; c < convs; ++c) b.conv[c] = static_cast<int>(next++);
      if ((b.stride != 1 || b.in_planes != b.out_planes) && info.spec.shortcut == levels::Shortcut::B)
        b.projection = static_cast<int>(next++);
      in_planes = b.out_planes;
      impl->blocks.push_back(b);
    }
  return Model(std::move(impl));
}

std::vector<float> Model::run_with_taps(const float* input, int batch, std::vector<std::vector<float>>& taps,
                                        const RunOptions& options) const {
  const size_t image = size_t(impl_->info.spec.in_channels) * impl_->info.height * impl_->info.width;
  const size_t classes = impl_->layers.back().info.out_channels;
  std::vector<float> logits(size_t(batch) * classes);
  taps.clear();
  for (int b = 0; b < batch; ++b) {
    const std::vector<float> l = impl_->run_image(input + b * image, &taps, options);
    std::copy(l.begin(), l.end(), logits.begin() + size_t(b) * classes);
  }
  return logits;
}

std::vector<float> Model::run(const float* input, int batch, const RunOptions& options) const {
  const size_t image = size_t(impl_->info.spec.in_channels) * impl_->info.height * impl_->info.width;
  const size_t classes = impl_->layers.back().info.out_channels;
  std::vector<float> logits(size_t(batch) * classes);
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, options.threads)) if (batch > 1 && options.threads > 1)
  for (int b = 0; b < batch; ++b) {
    const std::vector<float> l = impl_->run_image(input + b * image, nullptr, options);
    std::copy(l.begin(), l.end(), logits.begin() + size_t(b) * classes);
  }
  return logits;
}

}  // namespace apot::runtime
