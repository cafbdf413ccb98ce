// `apot train RECIPE.toml [--set key=value ...] [--device cpu|cuda|cuda:N] --out DIR [--resume]`.
#include <fmt/format.h>

#include <iostream>

#include "apot/train/trainer.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct TrainOptions {
  std::string recipe, out;
  std::vector<std::string> sets;
  std::string device;
  bool resume = false;
};

void run_train(const TrainOptions& o) {
  train::TrainConfig config;
  try {
    std::vector<std::string> sets = o.sets;
    if (!o.device.empty()) sets.push_back("train.device=" + o.device);
    config = train::load_config(o.recipe, sets);
  } catch (const train::ConfigError& e) {
    throw UsageError(e.what());
  }
  const train::TrainSummary s = train::run_training(config, o.out, o.resume, std::cout);
  fmt::print("selected epoch {} (validation top-1 {:.2f} %): test top-1 {:.2f} %; final epoch test top-1 {:.2f} %\n",
             s.best_epoch, s.best_val_top1, s.test_top1_at_best, s.final_test_top1);
  fmt::print("checkpoints: {} (selected), {} (last); {:.0f} s\n", s.best_checkpoint, s.last_checkpoint, s.seconds);
}

}  // namespace

void register_train(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand("train", "Quantisation-aware training from a TOML recipe");
  cmd->add_option("recipe", o->recipe, "recipe file (recipes/*.toml)")->required();
  cmd->add_option("--set", o->sets, "override a recipe key: section.key=value (repeatable), e.g. optim.lr=0.05");
  cmd->add_option("--out", o->out, "output directory (checkpoints, metrics.jsonl, summary.json)")->required();
  cmd->add_option("--device", o->device, "where to train: cpu, cuda or cuda:N (train.device)");
  cmd->add_flag("--resume", o->resume, "continue the run in --out from its last checkpoint");
  cmd->callback([o] { run_train(*o); });
}

}  // namespace apot::cli
