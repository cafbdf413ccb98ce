// Building models from a configuration, evaluation, and atomic checkpoints.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apot/graph/serialize.h"
#include "apot/onnx/onnx_import.h"
#include "apot/qat/checkpoint_import.h"
#include "apot/train/trainer.h"

namespace apot::train {

qat::QuantPolicy policy_of(const TrainConfig& c) {
  if (!c.quantized()) return qat::QuantPolicy::full_precision();
  qat::QuantPolicy p;
  p.weight_bits = c.weight_bits;
  p.act_bits = c.act_bits;
  p.kind = levels::parse_kind(c.kind);
  p.variant = kernels::parse_ste_variant(c.variant);
  p.weight_norm = qat::parse_weight_norm(c.weight_norm);
  p.weight_alpha_init = c.weight_alpha_init;
  p.act_alpha_init = c.act_alpha_init;
  p.per_channel_weight_alpha = c.per_channel;
  p.int8_first_last = c.int8_first_last;
  p.layers = c.layers;
  return p;
}

namespace {
// The model file (TOML or ONNX) of a configuration: model.file, else an ONNX init.
std::string model_file_of(const TrainConfig& c) {
  if (!c.model_file.empty()) return c.model_file;
  return onnx_import::is_onnx_path(c.init) ? c.init : std::string();
}
}  // namespace

graph::Graph graph_of(const TrainConfig& c, const ModelInfo& info) {
  const int classes = static_cast<int>(info.class_names.size());
  const std::string file = model_file_of(c);
  if (file.empty()) {
    graph::ArchOptions o;
    o.in_channels = info.in_channels;
    o.num_classes = classes;
    o.shortcut = c.shortcut;
    o.naming = c.naming;
    o.width_mult = c.width_mult;
    graph::Graph g = graph::build_architecture(c.arch, o);
    const graph::Shape& in = g.input().shape;
    if (in.height > 0 && (in.height != info.height || in.width != info.width))  // VGG's classifier
      throw ConfigError(c.arch + " takes " + std::to_string(in.height) + "x" + std::to_string(in.width) +
                        " images, the data gives " + std::to_string(info.height) + "x" + std::to_string(info.width));
    return g;
  }
  graph::Graph g;
  if (onnx_import::is_onnx_path(file)) {
    onnx_import::Model m = onnx_import::read_onnx(file);
    if (m.height != info.height || m.width != info.width)
      throw ConfigError(file + ": the model takes " + std::to_string(m.height) + "x" + std::to_string(m.width) +
                        " images, the data gives " + std::to_string(info.height) + "x" + std::to_string(info.width));
    g = std::move(m.graph);
  } else {
    g = graph::read_model_file(file);
  }
  if (g.in_channels() != info.in_channels)
    throw ConfigError(file + ": the model takes " + std::to_string(g.in_channels()) + " input channels, the data has " +
                      std::to_string(info.in_channels));
  g.infer_shapes(info.height, info.width);
  if (g.num_classes() != classes || g[size_t(g.output())].shape.height != 1 || g[size_t(g.output())].shape.width != 1)
    throw ConfigError(file + ": the model's output '" + g[size_t(g.output())].name + "' is " +
                      g[size_t(g.output())].shape.str() + ", the data has " + std::to_string(classes) + " classes");
  return g;
}

qat::Network build_model(const TrainConfig& c, graph::Graph graph) {
  return qat::make_network(std::move(graph), policy_of(c));  // alphas start at the recipe's values
}

qat::Network build_model(const TrainConfig& c, const ModelInfo& info) { return build_model(c, graph_of(c, info)); }

EvalResult evaluate(qat::Network& model, data::Loader& loader, at::MemoryFormat layout) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const int64_t classes = static_cast<int64_t>(loader.dataset().num_classes());
  std::vector<int64_t> correct_per_class(classes, 0), count_per_class(classes, 0);
  EvalResult r;
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  const auto params = model->parameters();
  const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().device();
  loader.start_epoch(0);
  data::Batch batch;
  while (loader.next(batch)) {
    const torch::Tensor logits = model(batch_on(batch.images, device, layout)).to(torch::kCPU);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, batch.labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    const torch::Tensor topk = std::get<1>(logits.topk(std::min<int64_t>(5, classes), 1));
    const torch::Tensor hits = topk.eq(batch.labels.unsqueeze(1));
    const torch::Tensor first = hits.select(1, 0);
    top1 += first.sum().item<int64_t>();
    top5 += hits.any(1).sum().item<int64_t>();
    const int64_t* labels = batch.labels.data_ptr<int64_t>();
    const torch::Tensor predicted = topk.select(1, 0).contiguous();
    const int64_t* pred = predicted.data_ptr<int64_t>();
    for (int64_t i = 0; i < batch.labels.numel(); ++i) {
      ++count_per_class[labels[i]];
      correct_per_class[labels[i]] += pred[i] == labels[i];
      r.predictions.push_back(pred[i]);
    }
    r.count += batch.labels.numel();
  }
  if (r.count > 0) {
    r.top1 = 100.0 * top1 / r.count;
    r.top5 = 100.0 * top5 / r.count;
    r.loss = loss_sum / r.count;
  }
  for (int64_t c = 0; c < classes; ++c)
    r.per_class.push_back(count_per_class[c] ? 100.0 * correct_per_class[c] / count_per_class[c] : 0.0);
  if (was_training) model->train();
  return r;
}

namespace {

std::string info_to_json(const ModelInfo& info) {
  nlohmann::json j;
  j["in_channels"] = info.in_channels;
  j["class_names"] = info.class_names;
  j["mean"] = info.mean;
  j["std"] = info.std;
  j["height"] = info.height;
  j["width"] = info.width;
  return j.dump();
}

ModelInfo info_from_json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text);
  ModelInfo info;
  info.in_channels = j.at("in_channels");
  info.class_names = j.at("class_names").get<std::vector<std::string>>();
  info.mean = j.at("mean").get<std::vector<float>>();
  info.std = j.at("std").get<std::vector<float>>();
  info.height = j.value("height", 32);
  info.width = j.value("width", 32);
  return info;
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const qat::Network& model, const torch::optim::Optimizer* optimizer,
                     const Checkpoint& meta) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive, optimizer_archive;
  model->save(model_archive);
  archive.write("model", model_archive);
  if (optimizer) {
    optimizer->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
  }
  archive.write("format", c10::IValue(std::string("apot-checkpoint-1")));
  graph::Graph g = model->graph();
  archive.write("graph", c10::IValue(graph::graph_to_json(g).dump()));
  archive.write("config", c10::IValue(config_to_json(meta.config)));
  archive.write("info", c10::IValue(info_to_json(meta.info)));
  archive.write("epoch", c10::IValue(meta.epoch));
  archive.write("metrics", c10::IValue(nlohmann::json(meta.metrics).dump()));
  const std::string tmp = path + ".tmp";
  archive.save_to(tmp);
  fsync_path(tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw TrainingError(path + ": cannot rename checkpoint into place");
  fsync_path(std::filesystem::path(path).parent_path().string().empty()
                 ? "."
                 : std::filesystem::path(path).parent_path().string());
}

namespace {
torch::serialize::InputArchive open_archive(const std::string& path) {
  if (!std::filesystem::exists(path)) throw TrainingError(path + ": checkpoint not found");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, torch::Device(torch::kCPU));  // a GPU run's tensors, too
  } catch (const c10::Error&) {
    throw TrainingError(path + ": not an apot checkpoint (corrupt or another format)");
  }
  c10::IValue format;
  if (!archive.try_read("format", format) || !format.isString() || format.toStringRef() != "apot-checkpoint-1")
    throw TrainingError(path + ": not an apot checkpoint (a PyTorch state dict? use --arch to import it)");
  return archive;
}

Checkpoint meta_of(torch::serialize::InputArchive& archive, const std::string& path) {
  Checkpoint meta;
  c10::IValue v;
  archive.read("config", v);
  meta.config = config_from_json(v.toStringRef());
  archive.read("info", v);
  meta.info = info_from_json(v.toStringRef());
  archive.read("epoch", v);
  meta.epoch = v.toInt();
  archive.read("metrics", v);
  meta.metrics = nlohmann::json::parse(v.toStringRef()).get<std::map<std::string, double>>();
  return meta;
}
}  // namespace

Checkpoint read_checkpoint_meta(const std::string& path) {
  torch::serialize::InputArchive archive = open_archive(path);
  return meta_of(archive, path);
}

qat::Network load_checkpoint(const std::string& path, Checkpoint* meta_out, torch::optim::Optimizer* optimizer) {
  torch::serialize::InputArchive archive = open_archive(path);
  const Checkpoint meta = meta_of(archive, path);
  c10::IValue graph_json;
  qat::Network model{nullptr};
  if (archive.try_read("graph", graph_json) && graph_json.isString()) {
    graph::Graph g;
    try {
      g = graph::graph_from_json(nlohmann::json::parse(graph_json.toStringRef()), path);
    } catch (const nlohmann::json::exception& e) {
      throw TrainingError(path + ": corrupt graph (" + e.what() + ")");
    }
    model = build_model(meta.config, std::move(g));
  } else {
    model = build_model(meta.config, meta.info);
  }
  torch::serialize::InputArchive model_archive;
  archive.read("model", model_archive);
  model->load(model_archive);
  if (optimizer) {
    torch::serialize::InputArchive optimizer_archive;
    if (!archive.try_read("optimizer", optimizer_archive)) throw TrainingError(path + ": holds no optimiser state");
    optimizer->load(optimizer_archive);
  }
  if (meta_out) *meta_out = meta;
  return model;
}

}  // namespace apot::train
