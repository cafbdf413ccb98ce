// `apot export --checkpoint FILE --out model.apot`.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "apot/export/export.h"
#include "apot/train/trainer.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct ExportOptions {
  std::string checkpoint, out;
};

void run_export(const ExportOptions& o) {
  train::Checkpoint meta;
  qat::Network model = train::load_checkpoint(o.checkpoint, &meta);
  exporter::ExportInfo info;
  info.height = meta.info.height;
  info.width = meta.info.width;
  info.mean = meta.info.mean;
  info.std = meta.info.std;
  info.class_names = meta.info.class_names;
  info.provenance_json = nlohmann::json{
      {"checkpoint", o.checkpoint},
      {"epoch", meta.epoch},
      {"metrics", meta.metrics},
      {"config", nlohmann::json::parse(train::config_to_json(meta.config))},
      {"exported_by",
       "apot 0.1.0"}}.dump();
  const std::vector<uint8_t> bytes = exporter::export_model(*model, info);
  exporter::write_file_atomically(o.out, bytes);
  int64_t params = 0;
  for (const auto& p : model->named_parameters())
    if (p.key().find("_alpha") == std::string::npos) params += p.value().numel();
  for (const auto& b : model->named_buffers()) params += b.value().numel();
  fmt::print("wrote {} ({} bytes; the FP32 parameters and buffers take {} bytes: {:.1f}x smaller)\n", o.out,
             bytes.size(), params * 4, double(params * 4) / bytes.size());
}

}  // namespace

void register_export(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand("export", "Export a trained quantised checkpoint to a packed .apot file");
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint of apot train (.ckpt)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o->out, "output .apot file")->required();
  cmd->callback([o] { run_export(*o); });
}

}  // namespace apot::cli
