// `apot run model.apot --data SPEC [--json] [--compare CHECKPOINT] [--predictions FILE]`: accuracy of the integer
// engine, and with --compare its agreement with the trained LibTorch model.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "apot/data/loader.h"
#include "apot/data/spec.h"
#include "apot/export/export.h"
#include "apot/runtime/inspect.h"
#include "apot/runtime/model.h"
#include "apot/train/trainer.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct RunCmdOptions {
  std::string model, data, compare, predictions;
  int batch = 64, threads = 1, workers = 2, limit = 0, tap_images = 8;
  bool json = false;
  std::string tune;
};

// The trained model's float outputs of the engine's tap nodes (runtime::Model::tap_nodes()),
// found by name in the trained model's graph, NHWC per image.
std::vector<std::vector<float>> torch_taps(qat::NetworkImpl& model, const std::vector<std::string>& names,
                                           const torch::Tensor& image) {
  std::vector<torch::Tensor> outputs;
  model.forward_all(image, outputs);
  std::vector<std::vector<float>> taps;
  for (const std::string& name : names) {
    const int node = model.graph().find(name);
    if (node < 0)
      throw UsageError("run --compare: the trained model has no layer '" + name + "'; is it the model's checkpoint?");
    torch::Tensor t = outputs[size_t(node)];
    if (t.dim() == 4) t = t.permute({0, 2, 3, 1});
    t = t.contiguous();
    taps.emplace_back(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  return taps;
}

void run_run(const RunCmdOptions& o) {
  apply_tune_option(o.tune);
  const runtime::Model engine = runtime::Model::load(o.model);
  const runtime::ModelInfo& info = engine.info();
  const data::DataSpec spec = parse_data_argument(o.data);
  const auto test_set = data::open_dataset(spec, data::Split::test);
  if (test_set->num_classes() != info.class_names.size())
    throw UsageError(o.model + " has " + std::to_string(info.class_names.size()) + " classes, " + o.data + " has " +
                     std::to_string(test_set->num_classes()));
  data::LoaderOptions lo;
  lo.batch_size = o.batch;
  lo.workers = o.workers;
  lo.shuffle = false;
  lo.transform = data::default_transform(spec, data::Split::test, test_set.get());
  lo.transform.mean = info.mean;
  lo.transform.std = info.std;
  lo.transform.channels = info.channels;
  data::fit_to_input(lo.transform, int(info.height), int(info.width), *test_set);
  std::vector<size_t> indices;
  if (o.limit > 0)
    for (size_t i = 0; i < std::min<size_t>(o.limit, test_set->size()); ++i) indices.push_back(i);
  data::Loader loader(test_set, lo, indices);
  const std::vector<int64_t> shape = loader.example_shape();
  if (shape != std::vector<int64_t>{info.channels, info.height, info.width})
    throw UsageError(o.model + " expects " + std::to_string(info.channels) + "x" + std::to_string(info.height) + "x" +
                     std::to_string(info.width) + " inputs, " + o.data + " gives " + std::to_string(shape[0]) + "x" +
                     std::to_string(shape[1]) + "x" + std::to_string(shape[2]));

  qat::Network trained{nullptr};
  if (!o.compare.empty()) {
    trained = train::load_checkpoint(o.compare);
    trained->eval();
  }
  torch::NoGradGuard no_grad;
  runtime::RunOptions ro;
  ro.threads = o.threads;
  const runtime::Inspector inspect(engine);
  runtime::EngineOptions eo = runtime::engine_options(ro);
  int64_t count = 0, correct = 0, trained_correct = 0, agree = 0;
  const std::vector<std::string> tap_names = inspect.tap_names();
  std::string predictions;  // --predictions: "name<TAB>class" per image
  std::vector<double> tap_diff;
  std::vector<double> tap_scale;
  loader.start_epoch(0);
  data::Batch batch;
  const int classes = static_cast<int>(info.class_names.size());
  while (loader.next(batch)) {
    const int n = static_cast<int>(batch.labels.size(0));
    const std::vector<float> logits = engine.run(batch.images.data_ptr<float>(), n, ro);
    const int64_t* labels = batch.labels.data_ptr<int64_t>();
    torch::Tensor trained_pred;
    if (trained) trained_pred = trained(batch.images).argmax(1).contiguous();
    for (int i = 0; i < n; ++i) {
      const int pred =
          static_cast<int>(std::max_element(logits.begin() + i * classes, logits.begin() + (i + 1) * classes) -
                           (logits.begin() + i * classes));
      correct += pred == labels[i];
      if (!o.predictions.empty())
        predictions += test_set->example_name(indices.empty() ? size_t(count + i) : indices[size_t(count + i)]) + "\t" +
                       info.class_names[size_t(pred)] + "\n";
      if (trained) {
        const int64_t tp = trained_pred.data_ptr<int64_t>()[i];
        trained_correct += tp == labels[i];
        agree += tp == pred;
      }
    }
    if (trained && count < o.tap_images) {  // per-layer differences on the first images
      for (int i = 0; i < n && count + i < o.tap_images; ++i) {
        std::vector<std::vector<float>> engine_taps;
        const torch::Tensor image = batch.images.slice(0, i, i + 1).contiguous();
        inspect.run_with_taps(image.data_ptr<float>(), 1, engine_taps, eo);
        const auto reference = torch_taps(*trained, tap_names, image);
        if (reference.size() != engine_taps.size() || reference.size() != tap_names.size())
          throw std::logic_error("run --compare: the engine and the trained model give different layer lists");
        tap_diff.resize(reference.size(), 0.0);
        tap_scale.resize(reference.size(), 0.0);
        for (size_t t = 0; t < reference.size(); ++t) {
          if (reference[t].size() != engine_taps[t].size())
            throw std::logic_error("run --compare: " + tap_names[t] + " has another size in the engine");
          for (size_t k = 0; k < reference[t].size(); ++k) {
            tap_diff[t] = std::max(tap_diff[t], double(std::fabs(reference[t][k] - engine_taps[t][k])));
            tap_scale[t] = std::max(tap_scale[t], double(std::fabs(reference[t][k])));
          }
        }
      }
    }
    count += n;
  }
  if (!o.predictions.empty())
    exporter::write_file_atomically(o.predictions, std::vector<uint8_t>(predictions.begin(), predictions.end()));
  const double accuracy = 100.0 * correct / std::max<int64_t>(1, count);
  nlohmann::json j{{"model", o.model}, {"data", spec.text()}, {"count", count}, {"top1", accuracy}};
  if (trained) {
    j["trained_top1"] = 100.0 * trained_correct / std::max<int64_t>(1, count);
    j["agreement"] = 100.0 * agree / std::max<int64_t>(1, count);
    j["layers"] = nlohmann::json::array();
    for (size_t t = 0; t < tap_diff.size(); ++t)
      j["layers"].push_back({{"name", tap_names[t]},
                             {"op", graph::to_string(inspect.graph().at(tap_names[t]).op)},
                             {"max_abs_diff", tap_diff[t]},
                             {"max_abs", tap_scale[t]}});
  }
  if (o.json) {
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("engine on {} ({} images): top-1 {:.2f} %\n", spec.text(), count, accuracy);
  if (trained) {
    fmt::print("trained model ({}): top-1 {:.2f} %; same prediction on {:.2f} % of the images\n", o.compare,
               j["trained_top1"].get<double>(), j["agreement"].get<double>());
    fmt::print("largest difference per layer, engine vs trained model, on the first {} images:\n", o.tap_images);
    for (const auto& l : j["layers"])
      fmt::print("  {:<30} {:<5} max |diff| {:.3g}  (max |value| {:.3f})\n", l["name"].get<std::string>(),
                 l["op"].get<std::string>(), l["max_abs_diff"].get<double>(), l["max_abs"].get<double>());
  }
}

}  // namespace

void register_run(CLI::App& app) {
  auto o = std::make_shared<RunCmdOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Run an .apot model with the integer engine on a test set");
  cmd->add_option("model", o->model, ".apot file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--data", o->data, "data set spec (as apot eval)")->required();
  cmd->add_option("--compare", o->compare, "checkpoint of the trained model to compare with");
  cmd->add_option("--batch", o->batch, "batch size")->capture_default_str();
  cmd->add_option("--threads", o->threads, "engine threads")->capture_default_str();
  cmd->add_option("--limit", o->limit, "use only the first N test images");
  cmd->add_option("--predictions", o->predictions,
                  "write each image's predicted class to FILE, one \"name<TAB>class\" line per image "
                  "(name: the image file for image folders, else its index)");
  cmd->add_flag("--json", o->json, "print one JSON object");
  add_tune_option(cmd, o->tune);
  cmd->callback([o] { run_run(*o); });
}

}  // namespace apot::cli
