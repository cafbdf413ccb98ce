// Compilation: which sums fuse into which convolution epilogues, the order of steps, and the
// plans of the float buffers and code buffers.
#include <algorithm>
#include <stdexcept>

#include "engine.h"

namespace apot::runtime {

using engine::is_stem_pool;
using graph::Op;

// ---- fusion and the order of steps ----

void Model::Impl::compile() {
  const graph::Graph& graph = g();
  const size_t n = graph.size();
  const auto consumers = graph.consumers();
  auto quantized = [&](int node) {
    return layer_of[size_t(node)] >= 0 && layers[size_t(layer_of[size_t(node)])].quantized();
  };
  // Epilogues fuse sums and make codes for quantised convolutions only (a quantised linear
  // layer reads its input as one pixel of codes, requantised from the float value).
  auto quantized_conv = [&](int node) { return quantized(node) && graph[size_t(node)].op == Op::conv; };
  // A sum of two values fuses into the epilogue of the quantised convolution that produces one
  // of them (the later one, so that the other is ready), if that is its only reader and it has
  // no activation of its own.
  std::vector<int> fused_conv(n, -1), fused_into(n, -1);
  for (size_t a = 0; a < n; ++a) {
    const graph::Node& node = graph[a];
    if (node.op != Op::add || node.inputs.size() != 2 || node.inputs[0] == node.inputs[1]) continue;
    const int later = std::max(node.inputs[0], node.inputs[1]), earlier = std::min(node.inputs[0], node.inputs[1]);
    for (int p : {later, earlier})
      if (quantized_conv(p) && consumers[size_t(p)].size() == 1 &&
          graph[size_t(p)].activation == graph::Activation::none) {
        fused_conv[a] = p;
        fused_into[size_t(p)] = int(a);
        break;
      }
  }
  // Values that an epilogue makes, and the quantised reader that gets its codes from it (the
  // last one; the others requantise the float value right before they run).
  // The int8 first layer on the image makes them too, or with a max-pool fused into it the pool
  // (conv_on_image: in bands of rows, with a pool or where only codes come out).
  std::vector<int> codes_for(n, -1);
  auto on_image = [&](size_t v) {
    const graph::Node& node = graph[v];
    return node.op == Op::conv && layer_of[v] >= 0 && !quantized(int(v)) && node.inputs[0] == 0;
  };
  auto pooled = [&](size_t v) {  // a first layer on the image with a fused max-pool
    return on_image(v) && consumers[v].size() == 1 && is_stem_pool(graph[size_t(consumers[v][0])]);
  };
  auto first_layer = [&](size_t v) {
    const graph::Node& node = graph[v];
    return (on_image(v) && !pooled(v)) || (is_stem_pool(node) && pooled(size_t(node.inputs[0])));
  };
  auto from_epilogue = [&](size_t v) {
    return (quantized_conv(int(v)) && fused_into[v] < 0) || fused_conv[v] >= 0 || first_layer(v);
  };
  for (size_t v = 0; v < n; ++v) {
    if (!from_epilogue(v)) continue;
    for (int c : consumers[v])
      if (quantized_conv(c)) codes_for[v] = c;
  }
  // Concat and requantize steps read channel slices in place, from the slice's input.
  auto sliced = [&](int v) { return graph[size_t(v)].op == Op::channel_slice; };
  // Which values are needed as floats.
  std::vector<bool> need_float(n, false);
  need_float[n - 1] = true;
  for (size_t v = 0; v < n; ++v)
    for (int c : consumers[v]) {
      if (fused_into[v] == c) continue;  // the conv's value is the sum's
      // (a slice gets no codes from an epilogue: its quantised readers requantise it in place)
      if (sliced(int(v)) && (graph[size_t(c)].op == Op::concat || quantized(c))) continue;
      if (quantized(c) && codes_for[v] == c) continue;
      if (v == 0 && graph[size_t(c)].op == Op::conv && !quantized(c)) continue;  // int8 convs read the padded image
      need_float[v] = true;
    }
  // The steps, in node order; a fused sum runs its convolution at its own position.
  steps.clear();
  auto requantize_for = [&](int conv) {  // also a quantised linear layer
    const int v = graph[size_t(conv)].inputs[0];
    if (codes_for[size_t(v)] == conv) return;
    Step r;
    r.kind = StepKind::requantize;
    r.node = v;
    r.layer = layer_of[size_t(conv)];
    r.reads = {sliced(v) ? graph[size_t(v)].inputs[0] : v};
    r.part_begin = {sliced(v) ? graph[size_t(v)].begin : 0};
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
    if (sliced(int(i)) && !need_float[i]) continue;  // only concat steps read it, in place
    const graph::Node& node = graph[i];
    Step s;
    s.node = int(i);
    s.relu = node.activation != graph::Activation::none;  // a clamp is from 0 (load checks)
    if (node.activation == graph::Activation::clamp) s.relu_max = node.clamp_hi;
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
          if (pooled(i)) {
            s.pool = s.node = consumers[i][0];
            skip[size_t(s.pool)] = true;
          }
          s.codes_for = codes_for[size_t(s.node)] >= 0 ? layer_of[size_t(codes_for[size_t(s.node)])] : -1;
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
        s.layer = layer_of[i];
        if (quantized(int(i))) {  // a 1x1 convolution of one pixel
          requantize_for(int(i));
          s.kind = StepKind::conv_codes;
        } else {
          s.kind = StepKind::linear;
          s.reads = {node.inputs[0]};
        }
        break;
      // One input, one step of the same name.
      case Op::max_pool: s.kind = StepKind::max_pool; break;
      case Op::avg_pool: s.kind = StepKind::avg_pool; break;
      case Op::global_avg_pool: s.kind = StepKind::global_avg_pool; break;
      case Op::flatten: s.kind = StepKind::flatten; break;
      case Op::shortcut_pad: s.kind = StepKind::shortcut_pad; break;
      case Op::concat:
        s.kind = StepKind::concat;
        for (int v : node.inputs) {
          s.reads.push_back(sliced(v) ? graph[size_t(v)].inputs[0] : v);
          s.part_begin.push_back(sliced(v) ? graph[size_t(v)].begin : 0);
          s.part_channels.push_back(graph[size_t(v)].shape.channels);
        }
        // Read only by a channel shuffle (ShuffleNetV2's units): one gather makes the shuffle's value.
        if (consumers[i].size() == 1 && graph[size_t(consumers[i][0])].op == Op::channel_shuffle) {
          s.node = consumers[i][0];
          skip[size_t(s.node)] = true;
          // Concat channel d goes to (d % per_group) * groups + d / per_group.
          const int channels = node.shape.channels, groups = graph[size_t(s.node)].groups;
          const int per_group = channels / groups;
          if (int(s.reads.size()) == groups &&
              std::all_of(s.part_channels.begin(), s.part_channels.end(), [&](int c) { return c == per_group; })) {
            s.interleave = groups;
            break;
          }
          s.gather_part.assign(size_t(channels), 0);
          s.gather_channel.assign(size_t(channels), 0);
          for (int k = 0, d = 0; k < int(s.reads.size()); ++k)
            for (int c = 0; c < s.part_channels[size_t(k)]; ++c, ++d) {
              const size_t o = size_t(d % per_group * groups + d / per_group);
              s.gather_part[o] = k;
              s.gather_channel[o] = s.part_begin[size_t(k)] + c;
            }
        }
        break;
      case Op::channel_slice: s.kind = StepKind::channel_slice; break;
      case Op::channel_shuffle: s.kind = StepKind::channel_shuffle; break;
    }
    if (s.kind == StepKind::max_pool || s.kind == StepKind::avg_pool || s.kind == StepKind::global_avg_pool ||
        s.kind == StepKind::flatten || s.kind == StepKind::shortcut_pad || s.kind == StepKind::channel_slice ||
        s.kind == StepKind::channel_shuffle)
      s.reads = {node.inputs[0]};
    s.tapped = s.kind == StepKind::conv_codes || s.kind == StepKind::conv_float || s.kind == StepKind::add;
    if (s.tapped) taps.push_back(s.node);
    s.out = need_float[size_t(s.node)] ? 0 : -1;  // a buffer is chosen by plan_buffers
    steps.push_back(s);
  }
  if (steps.empty() || steps.back().node != int(n - 1)) throw FormatError("the graph's output is not computed last");
  // Whether 8-bit images may skip the float image (Impl::pixels_direct).
  pixels_direct = pixel_layer >= 0 && layers[size_t(pixel_layer)].packed_pixels;
  for (const Step& s : steps)
    if (s.kind == StepKind::image || (s.kind == StepKind::conv_float && s.reads.empty() && s.layer != pixel_layer))
      pixels_direct = false;
  for (size_t c = 0; c < info.mean.size() && pixels_direct; ++c) {
    const float mean = info.mean[c], inv_std = 1.0f / info.std[c];
    for (int p = 0; p < 256 && pixels_direct; ++p)  // run_pixel_image's formula
      pixels_direct = kernels::pixel_of((float(p) / 255.0f - mean) * inv_std, mean, info.std[c]) == p;
  }
  // 1x1 convolutions of stride s > 1 whose codes only requantize steps make: codes of every s-th
  // row and column only, run as 1x1 stride-1 convolutions of that grid (Layer::subsample).
  std::vector<bool> from_epilogues(layers.size(), false);
  for (const Step& s : steps)
    if (s.codes_for >= 0) from_epilogues[size_t(s.codes_for)] = true;
  for (size_t l = 0; l < layers.size(); ++l) {
    Layer& layer = layers[l];
    const graph::Node& node = graph[size_t(layer.node)];
    if (!layer.quantized() || node.op != Op::conv || from_epilogues[l] || layer.record.kernel != 1 ||
        layer.record.stride < 2 || layer.record.padding != 0 || layer.record.groups != 1)
      continue;
    layer.subsample = int(layer.record.stride);
    layer.packed.stride = 1;  // a 1x1 kernel's packing does not depend on its stride
  }
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
           layers[i].record.in_channels == layers[j].record.in_channels &&
           layers[i].code_offset == layers[j].code_offset;
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
    if (s.kind == StepKind::conv_float) write(s.codes_for);
  }
  code_buffers = int(shape.size());
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].quantized() != (code_buffer[i] >= 0))
      throw std::logic_error("engine: a quantised layer without codes");
}

}  // namespace apot::runtime
