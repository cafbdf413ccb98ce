// Loading: an .apot file's metadata (the graph, the input, the class names) and its layer
// records, each checked against its graph node, into the engine's layers; then compilation.
#include <cmath>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apot/graph/serialize.h"
#include "apot/levels/level_set.h"
#include "engine.h"

namespace apot::runtime {

using engine::Layer;
using graph::Op;

namespace {

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

levels::Kind kind_of(uint32_t k) {
  return k == 0 ? levels::Kind::apot : k == 1 ? levels::Kind::pot : levels::Kind::uniform;
}

// What a layer record must say for its node.
void check_record(const LayerRecord& r, const graph::Graph& g, int node, const std::string& name) {
  const graph::Node& n = g[size_t(node)];
  const std::string where = name + ": node '" + n.name + "': ";
  const bool linear = n.op == Op::linear;
  uint32_t want_kind = 0;
  if (n.quant.mode == graph::LayerQuant::Mode::int8)
    want_kind = uint32_t(linear ? LayerKind::float_linear : LayerKind::float_conv);
  if (n.quant.mode == graph::LayerQuant::Mode::quantized) want_kind = uint32_t(LayerKind::quantized_conv);
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
  const bool quantized = r.kind == uint32_t(LayerKind::quantized_conv);
  const bool depthwise = r.groups == r.in_channels && r.groups == r.out_channels;
  if (r.groups != 1 && !(quantized && depthwise))
    throw FormatError(where +
                      "grouped convolutions other than quantised depthwise ones are not supported by this "
                      "engine yet");
  if (quantized) {
    if (r.input_act_bits != uint32_t(n.quant.act_bits)) throw FormatError(where + "input bits differ from the graph's");
    if ((r.input_signed != 0) != n.quant.signed_input)
      throw FormatError(where + "its record's input signedness differs from the graph's");
  }
}

}  // namespace

Model Model::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(path + ": read error");
  return from_memory(bytes.data(), bytes.size(), path);
}

Model Model::from_bytes(const std::vector<uint8_t>& bytes, const std::string& name) {
  return from_memory(bytes.data(), bytes.size(), name);
}

Model Model::from_memory(const void* data, size_t size, const std::string& name) {
  if (!data && size > 0) throw std::invalid_argument("Model::from_memory: null data");
  const ParsedFile file = parse_apot(static_cast<const uint8_t*>(data), size, name);
  auto impl = std::make_unique<Impl>();
  ModelInfo& info = impl->info;
  graph::Graph& g = impl->graph;
  info.metadata_json = file.metadata;
  try {
    const nlohmann::json meta = nlohmann::json::parse(file.metadata);
    g = graph::graph_from_json(meta.at("graph"), name);
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
    g.infer_shapes(info.height, info.width);
  } catch (const graph::GraphError& e) {
    throw FormatError(name + ": " + e.what());
  }
  const int channels = g.in_channels();
  info.channels = channels;
  info.num_classes = g.num_classes();
  if (info.mean.size() != size_t(channels) || info.std.size() != size_t(channels))
    throw FormatError(name + ": one mean and one std per input channel needed");
  // Finite normalised values for every 8-bit pixel (the value is monotonic in the pixel, so the
  // ends decide), as run_pixels computes them.
  for (int c = 0; c < channels; ++c) {
    const float mean = info.mean[size_t(c)], inv_std = 1.0f / info.std[size_t(c)];
    if (!(info.std[size_t(c)] > 0) || !std::isfinite((0.0f - mean) * inv_std) ||
        !std::isfinite((255 / 255.0f - mean) * inv_std))
      throw FormatError(name + ": input normalisation of channel " + std::to_string(c) +
                        " is not usable (std must be positive, and mean and std finite)");
  }
  if (info.class_names.empty())
    for (int c = 0; c < info.num_classes; ++c) info.class_names.push_back(std::to_string(c));
  if (info.class_names.size() != size_t(info.num_classes))
    throw FormatError(name + ": " + std::to_string(info.class_names.size()) + " class names for " +
                      std::to_string(info.num_classes) + " classes");
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
    // Packing refuses shapes the kernels do not run (std::invalid_argument) and level sets that
    // cannot be made: one FormatError naming the node for either.
    try {
      if (r.kind == uint32_t(LayerKind::quantized_conv)) {
        l.packed = r.groups > 1 ? kernels::pack_depthwise(w.data(), out, kernel, stride, padding)
                                : kernels::pack_conv(w.data(), out, in_channels, kernel, stride, padding);
        const levels::LevelSet set = levels::LevelSet::make_activation(
            kind_of(r.input_kind), static_cast<int>(r.input_act_bits), r.input_signed != 0);
        // Signed inputs: codes are the level integers plus the largest one, and the sums lose
        // that offset times each output's weight sum again in the epilogue (exact).
        const int64_t top = set.integers().back(), offset = r.input_signed ? top : 0;
        if (set.denominator() != r.input_denominator || set.storage_bits() != 8 || top + offset > 255)
          throw FormatError(name + ": node '" + n.name + "': input level set does not fit 8-bit codes");
        std::vector<uint8_t> codes;
        for (int64_t v : set.integers()) codes.push_back(static_cast<uint8_t>(v + offset));
        l.max_code = static_cast<int>(top + offset);
        l.code_offset = static_cast<uint8_t>(offset);
        if (offset) {
          const size_t per_out = w.size() / size_t(out);
          l.acc_offset.assign(size_t(out), 0);
          for (size_t o = 0; o < size_t(out); ++o) {
            int64_t sum = 0;
            for (size_t i = 0; i < per_out; ++i) sum += offset * w[o * per_out + i];
            if (sum > INT32_MAX || sum < INT32_MIN)
              throw FormatError(name + ": node '" + n.name + "': its integer sums do not fit 32 bits");
            l.acc_offset[o] = int32_t(sum);
          }
        }
        l.input = kernels::make_requantizer(kernels::Projector(set).input_thresholds(r.input_alpha), std::move(codes));
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
        const size_t row = size_t(engine::linear_row(out));
        l.weights_k_out.assign(size_t(K) * row, 0.0f);
        for (int o = 0; o < out; ++o)
          for (int k = 0; k < K; ++k) l.weights_k_out[size_t(k) * row + size_t(o)] = float(w[size_t(o) * K + k]);
      }
    } catch (const levels::LevelSetError& e) {
      throw FormatError(name + ": node '" + n.name + "': " + e.what());
    } catch (const std::invalid_argument& e) {
      throw FormatError(name + ": node '" + n.name + "': " + e.what());
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
    if (g[i].activation == graph::Activation::clamp && g[i].clamp_lo != 0.0f)
      throw FormatError(name + ": node '" + g[i].name +
                        "': clamp activations from other than 0 are not supported by this engine yet");
  if (g[g.size() - 1].shape.height != 1 || g[g.size() - 1].shape.width != 1)
    throw FormatError(name + ": the output '" + g[g.size() - 1].name + "' is not a vector of class scores");
  impl->compile();
  impl->plan_buffers();
  impl->plan_code_buffers();
  impl->tune();
  return Model(std::move(impl));
}

}  // namespace apot::runtime
