// Execution: the steps of one image, and the batch drivers.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "engine.h"

namespace apot::runtime {

namespace {
// The upper clamp of a clamp [0, hi] activation (ReLU6) on float values, where no kernel
// epilogue applies it: min(v, hi) as the epilogues compute it (NaN stays NaN).
void clamp_above(float* v, size_t count, const engine::Step& s) {
  if (!(s.relu && s.relu_max < __builtin_inff())) return;
  // A local copy: with s.relu_max itself the compiler must assume that the stores may change
  // it, and keeps the loop scalar (MobileNetV2's first layer, 112 x 112 x 32 values: 4 % of the
  // engine's time).
  const float hi = s.relu_max;
  for (size_t i = 0; i < count; ++i) v[i] = std::min(v[i], hi);
}
}  // namespace

using engine::is_stem_pool;
using engine::kStemBand;
using graph::Op;

// An int8 convolution reading the image: on 8-bit pixels where it can, else on the float image.
// On pixels, with a fused max-pool or where only the consumer's codes come out (out == null), in
// bands of rows that stay in cache: each band is pooled and made into the consumer's codes right
// after it is made (clamped first where the clamp can change a code). Returns where the whole
// float value was written (out, or ws.stem where out is null; null where only codes were made)
// and whether it ran in bands (which clamped the kept values and made the codes of s.codes_for).
Model::Impl::ImageConv Model::Impl::conv_on_image(const Step& s, const float* image, Workspace& ws, float* out,
                                                  const EngineOptions& o) const {
  const Layer& stem = layers[size_t(s.layer)];
  const graph::Shape& cs = shape(stem.node);
  const int h = cs.height, w = cs.width, sc = cs.channels;
  const bool pool = s.pool >= 0;
  // image == null: run_pixel_image has put the pixels in ws.pixels (pixels_direct).
  const bool pixels = s.layer == pixel_layer && on_pixels(o) &&
                      (!image || kernels::to_pixels(image, info.mean, info.std, ws.pixels, o.isa));
  if (!image && !pixels) throw std::logic_error("engine: the first layer needs the float image");
  if (pixels && (pool || !out)) {
    // Each thread takes its own rows (pooled rows with a pool), in bands of kStemBand whose stem
    // rows it computes into its own part of ws.stem and pools or requantises while they are in
    // its cache: one parallel region, not two per band (ResNet-18 at two threads: the stem and
    // pool took 0.59 ms against 0.67 at one, the stem's barriers and the pool's reading of rows
    // the other core wrote). With a pool, a band's first stem row is its previous band's last,
    // kept in the buffer. Per-layer timing (o.layer_seconds) runs one part, so that the stem alone
    // is timed.
    const int rows = pool ? shape(s.pool).height : h;
    const size_t band = size_t(pool ? 2 * kStemBand + 1 : kStemBand) * size_t(w) * size_t(sc);
    const int parts =
        o.layer_seconds
            ? 1
            : std::max(1, std::min({o.threads, (rows + kStemBand - 1) / kStemBand, int(ws.stem.size() / band)}));
    // The clamp of a ReLU6 changes no code where it is at or above the last threshold (pooled
    // values are clamped in any case: they are kept).
    const std::vector<float>* thresholds = s.codes_for >= 0 ? &layers[size_t(s.codes_for)].input.thresholds : nullptr;
    const bool clamp = pool || (thresholds && !thresholds->empty() && s.relu_max < thresholds->back());
    const int pw = pool ? shape(s.pool).width : w;
    auto run_part = [&](int part) {
      float* buffer = ws.stem.data() + size_t(part) * band;
      const int end = rows * (part + 1) / parts;
      for (int r0 = rows * part / parts; r0 < end; r0 += kStemBand) {
        const int r1 = std::min(end, r0 + kStemBand);
        const int y0 = pool ? std::max(0, 2 * r0 - 1) : r0, y1 = pool ? std::min(h, 2 * r1) : r1;  // stem rows
        // With a pool, the band's first stem row is the last one of the band before in this
        // part: moved to the buffer's start instead of computed again (1 row in 17).
        const bool kept = pool && r0 > rows * part / parts && y0 == 2 * r0 - 1;
        const size_t stem_row = size_t(w) * size_t(sc);
        if (kept) {
          const int previous_y0 = std::max(0, 2 * (r0 - kStemBand) - 1);
          std::copy_n(buffer + size_t(y0 - previous_y0) * stem_row, stem_row, buffer);
        }
        timed(o, s.layer, [&] {
          kernels::conv_stem_u8(ws.pixels, *stem.packed_pixels, stem.scale.data(), stem.bias.data(), s.relu,
                                buffer + (kept ? stem_row : 0), o.isa, 1, y0 + (kept ? 1 : 0), y1);
        });
        float* values = pool ? out + size_t(r0) * size_t(pw) * size_t(sc) : buffer;  // rows r0 .. r1
        if (pool) kernels::max_pool_3x3s2(buffer, h, w, sc, out, o.isa, r0, r1, y0);
        if (clamp) clamp_above(values, size_t(r1 - r0) * size_t(pw) * size_t(sc), s);
        if (s.codes_for >= 0) requantize_rows(values, sc, s.codes_for, r0, r1, ws, o.isa);
      }
    };
    if (parts == 1) {
      run_part(0);
    } else {
#pragma omp parallel for num_threads(parts) schedule(static, 1)
      for (int part = 0; part < parts; ++part) run_part(part);
    }
    return {pool ? out : nullptr, true};
  }
  float* target = out ? out : ws.stem.data();
  if (pixels) {
    timed(o, s.layer, [&] {
      kernels::conv_stem_u8(ws.pixels, *stem.packed_pixels, stem.scale.data(), stem.bias.data(), s.relu, target, o.isa,
                            o.threads);
    });
    return {target, false};
  }
  const graph::Shape& in = shape(0);
  for (int y = 0; y < in.height; ++y)
    for (int x = 0; x < in.width; ++x) {
      float* dst = ws.image.pixel(y, x);
      for (int ci = 0; ci < in.channels; ++ci) dst[ci] = image[(size_t(ci) * in.height + y) * in.width + x];
    }
  timed(o, s.layer, [&] {
    kernels::conv_f32(ws.image, stem.packed_float, stem.scale.data(), stem.bias.data(), s.relu,
                      pool ? ws.stem.data() : target, o.isa, o.threads);
  });
  if (pool) max_pool(ws.stem.data(), h, w, sc, out, 0, shape(s.pool).height, 0, o);
  return {target, false};
}

void Model::Impl::run_conv(const Step& s, Workspace& ws, float* out, const EngineOptions& o, ConvVariant v) const {
  const Layer& l = layers[size_t(s.layer)];
  kernels::ConvOutput co;
  co.scale = l.scale.data();
  co.bias = l.bias.data();
  if (!l.acc_offset.empty()) co.acc_offset = l.acc_offset.data();
  co.relu = s.relu;
  co.relu_max = s.relu_max;
  if (s.residual >= 0) co.residual = ws.buffers[size_t(s.residual_buffer)].data();
  co.values = out;
  if (s.codes_for >= 0) {
    co.requantizer = &layers[size_t(s.codes_for)].input;
    co.codes = ws.codes[size_t(s.codes_for)];
  }
  kernels::conv_u8s8(ws.codes[size_t(s.layer)], l.packed, l.max_code, co, v.isa, v.one_thread ? 1 : o.threads,
                     v.schedule);
}

void Model::Impl::run_step(const Step& s, const float* image, Workspace& ws, const EngineOptions& o,
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
    case StepKind::requantize: requantize(in(0) + s.part_begin[0], shape(s.reads[0]).channels, s.layer, ws, o); break;
    case StepKind::conv_codes: {
      const Layer& l = layers[size_t(s.layer)];
      if (!out && taps) {
        ws.tap.resize(std::max(ws.tap.size(), size_t(os.size())));
        out = ws.tap.data();
      }
      timed(o, s.layer, [&] { run_conv(s, ws, out, o, variant_for(l, o)); });
      if (taps) taps->emplace_back(out, out + os.size());
      return;
    }
    case StepKind::conv_float: {
      const Layer& l = layers[size_t(s.layer)];
      float* target = out;
      if (!target && (taps || !s.reads.empty())) {
        ws.tap.resize(std::max(ws.tap.size(), size_t(os.size())));
        target = ws.tap.data();
      }
      bool in_bands = false;
      if (s.reads.empty()) {
        const ImageConv made = conv_on_image(s, image, ws, target, o);
        if (!made.values) return;  // only codes, made in bands
        target = made.values;
        in_bands = made.in_bands;
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
      if (!in_bands) {
        clamp_above(target, size_t(os.size()), s);  // after a fused max-pool too: the two commute
        if (s.codes_for >= 0) requantize(target, os.channels, s.codes_for, ws, o);
      }
      if (taps) taps->emplace_back(target, target + os.size());
      return;
    }
    case StepKind::linear: {
      const Layer& l = layers[size_t(s.layer)];
      const int k = int(l.record.in_channels), classes = int(l.record.out_channels);
      const size_t row = size_t(engine::linear_row(classes));
      const float* feature = in(0);
      // Blocks of 16 outputs, their sums in registers (into `out` directly, the compiler had to
      // store them at every input: 10 classes from 1024 features took 3.4 us); each sum adds
      // its products in input order, as before.
      for (size_t o0 = 0; o0 < size_t(classes); o0 += 16) {
        float sum[16] = {};
        for (int ci = 0; ci < k; ++ci) {
          const float f = feature[ci];
          const float* w = l.weights_k_out.data() + size_t(ci) * row + o0;
          for (int j = 0; j < 16; ++j) sum[j] += f * w[j];
        }
        std::copy_n(sum, std::min<size_t>(16, size_t(classes) - o0), out + o0);
      }
      for (int o2 = 0; o2 < classes; ++o2) {
        out[o2] = l.scale[size_t(o2)] * out[o2] + l.bias[size_t(o2)];
        if (s.relu) out[o2] = std::max(out[o2], 0.0f);
      }
      clamp_above(out, size_t(classes), s);
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
      clamp_above(out, count, s);
      break;
    }
    case StepKind::concat: {  // NHWC: each pixel's channels from the inputs in turn
      const size_t pixels = size_t(os.height) * os.width, oc = size_t(os.channels);
      if (s.interleave > 0) {  // a fused channel shuffle whose groups are the read values
        const size_t groups = size_t(s.interleave), per_group = oc / groups;
        if (groups == 2) {  // ShuffleNetV2: pixel by pixel, two streams interleaved
          kernels::interleave_pairs(in(0) + s.part_begin[0], shape(s.reads[0]).channels, in(1) + s.part_begin[1],
                                    shape(s.reads[1]).channels, int(pixels), int(per_group), out, o.isa);
          break;
        }
        for (size_t k = 0; k < s.in.size(); ++k) {
          const size_t sc = size_t(shape(s.reads[k]).channels);
          const float* x = in(k) + s.part_begin[k];
          for (size_t p = 0; p < pixels; ++p)
            for (size_t i = 0; i < per_group; ++i) out[p * oc + i * groups + k] = x[p * sc + i];
        }
        break;
      }
      if (!s.gather_part.empty()) {  // a fused channel shuffle
        const float* src[16];        // graph.h: at most 16 inputs
        size_t stride[16];
        for (size_t k = 0; k < s.in.size(); ++k) src[k] = in(k), stride[k] = size_t(shape(s.reads[k]).channels);
        for (size_t p = 0; p < pixels; ++p)
          for (size_t o2 = 0; o2 < oc; ++o2) {
            const int k = s.gather_part[o2];
            out[p * oc + o2] = src[k][p * stride[k] + size_t(s.gather_channel[o2])];
          }
        break;
      }
      size_t at = 0;
      for (size_t k = 0; k < s.in.size(); ++k) {
        const size_t sc = size_t(shape(s.reads[k]).channels), count = size_t(s.part_channels[k]);
        const float* x = in(k) + s.part_begin[k];
        for (size_t p = 0; p < pixels; ++p) std::copy_n(x + p * sc, count, out + p * oc + at);
        at += count;
      }
      break;
    }
    case StepKind::channel_slice: {
      const size_t pixels = size_t(os.height) * os.width, c = size_t(shape(s.reads[0]).channels);
      for (size_t p = 0; p < pixels; ++p)
        std::copy_n(in(0) + p * c + size_t(node.begin), size_t(os.channels), out + p * os.channels);
      break;
    }
    case StepKind::channel_shuffle: {  // PyTorch: view(groups, C / groups), transpose, flatten
      const size_t pixels = size_t(os.height) * os.width, c = size_t(os.channels), groups = size_t(node.groups);
      const size_t per_group = c / groups;
      for (size_t p = 0; p < pixels; ++p) {
        const float* x = in(0) + p * c;
        float* y = out + p * c;
        for (size_t g2 = 0; g2 < groups; ++g2)
          for (size_t i = 0; i < per_group; ++i) y[i * groups + g2] = x[g2 * per_group + i];
      }
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
      const float* __restrict x = in(0);
      float* __restrict sum = out;  // another buffer than x (plan_buffers): the loop vectorises
      std::fill(sum, sum + channels, 0.0f);
      for (int p = 0; p < pixels; ++p)
        for (int ci = 0; ci < channels; ++ci) sum[ci] += x[size_t(p) * channels + ci];
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

void Model::Impl::run_steps(const float* image, Workspace& ws, float* logits, std::vector<std::vector<float>>* taps,
                            const EngineOptions& o) const {
  for (const Step& s : steps) run_step(s, image, ws, o, taps);
  const float* out = ws.buffers[size_t(steps.back().out)].data();
  std::copy_n(out, size_t(info.num_classes), logits);
}

void Model::Impl::run_image(const float* image, float* logits, std::vector<std::vector<float>>* taps,
                            const EngineOptions& o) const {
  std::unique_ptr<Workspace> ws = acquire();
  run_steps(image, *ws, logits, taps, o);
  release(std::move(ws));
}

// 8-bit pixels -> the normalised float image, computed as apot's data pipeline computes it
// (data/transforms.cpp), so that the engine sees the same floats (and finds the pixels again
// for its integer first layer).
void Model::Impl::run_pixel_image(const uint8_t* pixels, PixelLayout layout, float* logits,
                                  const EngineOptions& o) const {
  std::unique_ptr<Workspace> ws = acquire();
  const size_t plane = size_t(info.height) * size_t(info.width), channels = size_t(info.channels);
  // Where the first layer runs on these pixels and nothing else reads the image, they go into
  // its pixel image directly (the float image and to_pixels would give the same bytes).
  if (pixels_direct && on_pixels(o)) {
    const int h = info.height, w = info.width;
    for (size_t c = 0; c < channels; ++c)
      for (int y = 0; y < h; ++y) {
        uint8_t* dst = ws->pixels.pixel(int(c), y, 0);
        if (layout == PixelLayout::chw) {
          std::copy_n(pixels + c * plane + size_t(y) * size_t(w), size_t(w), dst);
          continue;
        }
        const uint8_t* src = pixels + size_t(y) * size_t(w) * channels + c;
        for (int x = 0; x < w; ++x) dst[x] = src[size_t(x) * channels];
      }
    run_steps(nullptr, *ws, logits, nullptr, o);
    release(std::move(ws));
    return;
  }
  ws->input.resize(plane * channels);
  for (size_t c = 0; c < channels; ++c) {
    const float mean = info.mean[c], inv_std = 1.0f / info.std[c];
    float* dst = ws->input.data() + c * plane;
    if (layout == PixelLayout::hwc)
      for (size_t p = 0; p < plane; ++p) dst[p] = (pixels[p * channels + c] / 255.0f - mean) * inv_std;
    else
      for (size_t p = 0; p < plane; ++p) dst[p] = (pixels[c * plane + p] / 255.0f - mean) * inv_std;
  }
  run_steps(ws->input.data(), *ws, logits, nullptr, o);
  release(std::move(ws));
}

std::unique_ptr<engine::Workspace> Model::Impl::acquire() const {
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
    auto& bytes = ws->code_bytes[size_t(code_buffer[i])];
    // the border: level 0; the slack: room for the AMX kernel's last tiles
    if (bytes.empty()) bytes.assign(c.bytes() + c.amx_slack(), layers[i].code_offset);
    c.data = bytes.data();
    c.capacity = bytes.size();
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
    if (s.pool >= 0 || (s.kind == StepKind::conv_float && s.reads.empty() && s.codes_for >= 0 && s.out < 0))
      ws->stem.resize(std::max(ws->stem.size(), size_t(shape(layers[size_t(s.layer)].node).size())));
  ws->padded.assign(max_padded, 0.0f);
  return ws;
}

// The pool's vector keeps its capacity, so that returning a workspace allocates nothing once
// the pool has held as many as run at once.
void Model::Impl::release(std::unique_ptr<Workspace> ws) const {
  std::lock_guard<std::mutex> lock(pool_mutex);
  pool.push_back(std::move(ws));
}

// The engine quantises without complaint, so a NaN or infinite pixel would give meaningless
// logits: refuse such input up front.
void check_input(const float* input, int batch, size_t image) {
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

namespace {

// f(b) for each image of a batch: one thread per image when several threads run several images
// (each image's layers on one thread), else image by image with the threads inside each image
// (on one thread where the tuning measured that faster: one_thread).
template <typename F>
void for_each_image(int batch, const EngineOptions& o, bool one_thread, F f) {
  const int threads = std::max(1, o.threads);
  EngineOptions per_image = o;
  per_image.threads = 1;
  if (batch == 1 || threads == 1 || o.layer_seconds) {
    for (int b = 0; b < batch; ++b) f(b, one_thread && o.tuned ? per_image : o);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int b = 0; b < batch; ++b) f(b, per_image);
}

}  // namespace

void Model::Impl::check_run(const void* input, int batch, const float* logits, const EngineOptions& o) const {
  if (batch < 0) throw std::invalid_argument("negative batch size");
  if (batch > 0 && (!input || !logits)) throw std::invalid_argument("null input or output buffer");
  if (o.layer_seconds && o.layer_seconds->size() != layers.size())
    throw std::invalid_argument("EngineOptions::layer_seconds must have one entry per layer");
}

void Model::Impl::run_batch(const float* input, int batch, float* logits, const EngineOptions& o) const {
  check_run(input, batch, logits, o);
  const size_t image = info.input_size(), classes = size_t(info.num_classes);
  check_input(input, batch, image);
  for_each_image(batch, o, image_on_one_thread, [&](int b, const EngineOptions& oi) {
    run_image(input + size_t(b) * image, logits + size_t(b) * classes, nullptr, oi);
  });
}

void Model::Impl::run_pixel_batch(const uint8_t* pixels, int batch, PixelLayout layout, float* logits,
                                  const EngineOptions& o) const {
  check_run(pixels, batch, logits, o);
  const size_t image = info.input_size(), classes = size_t(info.num_classes);
  for_each_image(batch, o, image_on_one_thread, [&](int b, const EngineOptions& oi) {
    run_pixel_image(pixels + size_t(b) * image, layout, logits + size_t(b) * classes, oi);
  });
}

}  // namespace apot::runtime
