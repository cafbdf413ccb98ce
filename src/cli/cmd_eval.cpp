// `apot eval --checkpoint FILE --data SPEC [--arch ARCH | --model-file FILE] [--json]`: top-1,
// top-5, per class; a PyTorch state dict is imported for --arch or --model-file, an ONNX file
// (--model net.onnx) with its own graph.
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include <sstream>

#include "apot/onnx/onnx_import.h"
#include "apot/train/trainer.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct EvalOptions {
  std::string checkpoint, data, arch, shortcut = "A", naming = "apot", model_file, key;
  std::vector<float> mean, stddev;
  int batch = 256, workers = 2, threads = 0;
  double width_mult = 1.0;
  bool json = false;
};

void run_eval(const EvalOptions& o) {
  if (!std::filesystem::exists(o.checkpoint)) throw UsageError(o.checkpoint + ": file not found");
  if (o.threads > 0) torch::set_num_threads(o.threads);
  const data::DataSpec spec = parse_data_argument(o.data);
  const auto test_set = data::open_dataset(spec, data::Split::test);
  data::LoaderOptions lo;
  lo.batch_size = o.batch;
  lo.workers = o.workers;
  lo.shuffle = false;
  lo.transform = data::default_transform(spec, data::Split::test, test_set.get());
  qat::Network model{nullptr};
  std::string what;
  if (!o.arch.empty() && !o.model_file.empty()) throw UsageError("give --arch or --model-file, not both");
  if (o.mean.size() != o.stddev.size()) throw UsageError("--mean and --std need the same number of values");
  const bool onnx = onnx_import::is_onnx_path(o.checkpoint);
  if (onnx && (!o.arch.empty() || !o.model_file.empty()))
    throw UsageError(o.checkpoint + ": an ONNX file has its own graph; leave out --arch and --model-file");
  if (onnx || !o.arch.empty() || !o.model_file.empty()) {  // a full-precision model: state dict or ONNX
    if (lo.transform.channels == 0) lo.transform.channels = test_set->channels();
    const int channels = lo.transform.channels;
    train::TrainConfig c;
    if (!o.arch.empty()) c.arch = o.arch;
    c.model_file = o.model_file;
    c.shortcut = o.shortcut;
    c.naming = o.naming;
    c.width_mult = o.width_mult;
    c.init = o.checkpoint;
    c.init_key = o.key;
    model = qat::make_network(train::graph_of(c, train::model_info(data::Loader(test_set, lo, {0}))));
    std::ostringstream quiet;
    train::initialise_from(model, o.checkpoint, o.key, quiet);
    if (!o.mean.empty()) {  // the normalisation the model was trained with
      if (o.mean.size() != size_t(channels))
        throw UsageError("--mean and --std need one value per input channel (" + std::to_string(channels) + ")");
      lo.transform.mean = o.mean;
      lo.transform.std = o.stddev;
    }
    what = model->graph().arch + (onnx ? " fp32 (imported ONNX model)" : " fp32 (imported state dict)");
  } else {
    train::Checkpoint meta;
    model = train::load_checkpoint(o.checkpoint, &meta);
    lo.transform.mean = meta.info.mean;
    lo.transform.std = meta.info.std;
    lo.transform.channels = meta.info.in_channels;
    data::fit_to_input(lo.transform, meta.info.height, meta.info.width, *test_set);
    if (meta.info.class_names.size() != test_set->num_classes())
      throw UsageError(o.checkpoint + " was trained for " + std::to_string(meta.info.class_names.size()) +
                       " classes, " + o.data + " has " + std::to_string(test_set->num_classes()));
    what = meta.config.arch + " " +
           (meta.config.quantized() ? meta.config.kind + " W" + std::to_string(meta.config.weight_bits) + "A" +
                                          std::to_string(meta.config.act_bits)
                                    : std::string("fp32"));
  }
  data::Loader loader(test_set, lo);
  const train::EvalResult r = train::evaluate(model, loader);
  const auto& names = test_set->class_names();
  if (o.json) {
    nlohmann::json per_class = nlohmann::json::object();
    for (size_t c = 0; c < names.size(); ++c) per_class[names[c]] = r.per_class[c];
    fmt::print("{}\n", nlohmann::json{{"model", what},
                                      {"data", spec.text()},
                                      {"count", r.count},
                                      {"top1", r.top1},
                                      {"top5", r.top5},
                                      {"loss", r.loss},
                                      {"per_class", per_class}}
                           .dump());
    return;
  }
  fmt::print("{} on {} ({} images): top-1 {:.2f} %, top-5 {:.2f} %, loss {:.4f}\n", what, spec.text(), r.count, r.top1,
             r.top5, r.loss);
  for (size_t c = 0; c < names.size(); ++c) fmt::print("  {:<16} {:6.2f} %\n", names[c], r.per_class[c]);
}

}  // namespace

void register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd =
      app.add_subcommand("eval", "Evaluate a checkpoint (or an imported state dict or ONNX model) on a test set");
  cmd->add_option("--checkpoint,--model", o->checkpoint,
                  "apot checkpoint (.ckpt), an ONNX model (.onnx), or a PyTorch state dict with --arch")
      ->required();
  cmd->add_option("--data", o->data, "fashion-mnist | mnist:DIR | cifar10:DIR | cifar100:DIR | imagefolder:DIR")
      ->required();
  cmd->add_option("--arch", o->arch, "architecture of an imported state dict: " + architecture_list());
  cmd->add_option("--width-mult", o->width_mult, "MobileNetV2's width multiplier of --arch")->capture_default_str();
  cmd->add_option("--shortcut", o->shortcut, "CIFAR shortcut of an imported state dict: A | B")->capture_default_str();
  cmd->add_option("--naming", o->naming, "parameter names of --arch: apot (linear, shortcut) | hub (fc, downsample)")
      ->check(CLI::IsMember({"apot", "hub"}))
      ->capture_default_str();
  cmd->add_option("--model-file", o->model_file, "model file (docs/MODELS.md) of an imported state dict")
      ->check(CLI::ExistingFile);
  cmd->add_option("--key", o->key, "the entry of a checkpoint dict that holds the state dict (e.g. state_dict, ema)");
  cmd->add_option("--mean", o->mean, "input mean per channel of an imported model (on the 0..1 scale)")->delimiter(',');
  cmd->add_option("--std", o->stddev, "input std per channel of an imported model")->delimiter(',');
  cmd->add_option("--batch", o->batch, "batch size")->capture_default_str();
  cmd->add_option("--workers", o->workers, "loader threads")->capture_default_str();
  cmd->add_option("--threads", o->threads, "LibTorch threads (0: all cores)");
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] { run_eval(*o); });
}

data::DataSpec parse_data_argument(const std::string& text) {
  try {
    return data::parse_data_spec(text);
  } catch (const data::DataError& e) {
    throw UsageError(e.what());
  }
}

}  // namespace apot::cli
