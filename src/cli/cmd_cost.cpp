// `apot cost`: MACs, FixOPs and model size per APOT_SPEC section 7, optionally per layer.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "apot/levels/cost.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct CostOptions {
  std::string arch = "resnet18", kind = "apot";
  int wbits = 4, abits = 4, input = 0, classes = 0;
  bool json = false, layers = false;
};

void run_cost(const CostOptions& o) {
  const bool imagenet = o.arch == "resnet18" || o.arch == "resnet34" || o.arch == "resnet50";
  const int input = o.input > 0 ? o.input : (imagenet ? 224 : 32);
  const int classes = o.classes > 0 ? o.classes : (imagenet ? 1000 : 10);
  const levels::ResNetSpec spec = levels::resnet_spec(o.arch, 3, classes, levels::Shortcut::A);
  const levels::CostReport r = levels::compute_cost(spec, input, input, o.wbits, o.abits, o.kind);
  const levels::CostReport uniform =
      o.kind == "fp" ? r : levels::compute_cost(spec, input, input, o.wbits, o.abits, "uniform");
  if (o.json) {
    nlohmann::json j{{"arch", r.arch},         {"kind", r.kind},
                     {"wbits", r.weight_bits}, {"abits", r.act_bits},
                     {"input", input},         {"classes", classes},
                     {"macs", r.macs},         {"quantized_macs", r.quantized_macs},
                     {"fixops", r.fixops},     {"fixops_uniform", uniform.fixops},
                     {"size_bytes", r.size_bytes}, {"size_bytes_with_bn", r.size_bytes + r.float_bytes}};
    if (o.layers) {
      j["layers"] = nlohmann::json::array();
      for (const auto& l : r.layers)
        j["layers"].push_back({{"name", l.layer.name}, {"macs", l.layer.macs()}, {"fixops", l.fixops},
                               {"wbits", l.weight_bits}, {"abits", l.act_bits}, {"size_bytes", l.size_bytes}});
    }
    fmt::print("{}\n", j.dump());
    return;
  }
  if (o.layers) {
    fmt::print("{:<24} {:>12} {:>6} {:>14} {:>12}\n", "layer", "MACs", "W/A", "FixOPs", "bytes");
    for (const auto& l : r.layers)
      fmt::print("{:<24} {:>12} {:>6} {:>14.0f} {:>12.0f}\n", l.layer.name, l.layer.macs(),
                 fmt::format("{}/{}", l.weight_bits, l.act_bits), l.fixops, l.size_bytes);
  }
  fmt::print("{} {}x{} {} W{}A{}: {:.4f} G MACs ({:.4f} G quantised), {:.1f} M FixOPs", r.arch, input, input, r.kind,
             r.weight_bits, r.act_bits, r.macs / 1e9, r.quantized_macs / 1e9, r.fixops / 1e6);
  if (o.kind != "fp" && o.kind != "uniform")
    fmt::print(" ({:.1f} % less than uniform's {:.1f} M)", 100.0 * (1 - r.fixops / uniform.fixops), uniform.fixops / 1e6);
  fmt::print(", weights {:.2f} MiB ({:.2f} MiB with batch norm)\n", r.size_bytes / 1048576.0,
             (r.size_bytes + r.float_bytes) / 1048576.0);
}

}  // namespace

void register_cost(CLI::App& app) {
  auto o = std::make_shared<CostOptions>();
  CLI::App* cmd = app.add_subcommand("cost", "MACs, FixOPs and model size of a network (APOT_SPEC section 7)");
  cmd->add_option("--arch", o->arch, "resnet18 | resnet34 | resnet50 | resnet20 | resnet32 | resnet44 | resnet56 | resnet110")
      ->capture_default_str();
  cmd->add_option("--wbits", o->wbits, "weight bits (2-8)")->capture_default_str();
  cmd->add_option("--abits", o->abits, "activation bits (2-8)")->capture_default_str();
  cmd->add_option("--kind", o->kind, "apot | pot | uniform | fp")
      ->check(CLI::IsMember({"apot", "pot", "uniform", "fp"}))
      ->capture_default_str();
  cmd->add_option("--input", o->input, "input side (default 224 for ImageNet nets, 32 for CIFAR nets)");
  cmd->add_option("--classes", o->classes, "number of classes (default 1000 / 10)");
  cmd->add_flag("--layers", o->layers, "per-layer table");
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] { run_cost(*o); });
}

}  // namespace apot::cli
