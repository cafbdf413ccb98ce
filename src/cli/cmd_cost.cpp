// `apot cost`: MACs, FixOPs and model size per APOT_SPEC section 7, optionally per layer.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "apot/graph/architectures.h"
#include "apot/graph/cost.h"
#include "apot/graph/serialize.h"
#include "apot/onnx/onnx_import.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct CostOptions {
  std::string arch = "resnet18", kind = "apot", model_file, shortcut = "A";
  std::vector<std::string> layer_bits;  // NAME=W/A
  int wbits = 4, abits = 4, input = 0, classes = 0;
  double width_mult = 1.0;
  bool json = false, layers = false;
};

// --layer NAME=W/A (e.g. layer1.0.conv1=8/8): a per-layer override, as [quant.layers] in recipes.
std::map<std::string, graph::LayerOverride> parse_layer_bits(const std::vector<std::string>& items) {
  std::map<std::string, graph::LayerOverride> out;
  for (const std::string& item : items) {
    const size_t eq = item.find('='), slash = item.find('/', eq == std::string::npos ? 0 : eq);
    try {
      if (eq == std::string::npos || eq == 0 || slash == std::string::npos) throw std::invalid_argument(item);
      graph::LayerOverride& l = out[item.substr(0, eq)];
      l.weight_bits = std::stoi(item.substr(eq + 1, slash - eq - 1));
      l.act_bits = std::stoi(item.substr(slash + 1));
    } catch (const std::exception&) {
      throw UsageError("--layer expects NAME=W/A (e.g. layer1.0.conv1=8/8), got '" + item + "'");
    }
  }
  return out;
}

void run_cost(const CostOptions& o) {
  const bool imagenet = o.model_file.empty() && graph::default_input_size(o.arch) == 224;
  const int input = o.input > 0 ? o.input : (imagenet ? 224 : 32);
  const int classes = o.classes > 0 ? o.classes : (imagenet ? 1000 : 10);
  graph::Graph g;
  int height = input, width = input;
  if (onnx_import::is_onnx_path(o.model_file)) {  // its own input size unless --input says otherwise
    onnx_import::Model m = onnx_import::read_onnx(o.model_file);
    g = std::move(m.graph);
    if (o.input <= 0) height = m.height, width = m.width;
  } else if (!o.model_file.empty()) {
    g = graph::read_model_file(o.model_file);
  } else {
    graph::ArchOptions ao;
    ao.num_classes = classes;
    ao.shortcut = o.shortcut;
    ao.width_mult = o.width_mult;
    g = graph::build_architecture(o.arch, ao);
  }
  const auto overrides = parse_layer_bits(o.layer_bits);
  const graph::CostReport r = graph::compute_cost(g, height, width, o.wbits, o.abits, o.kind, overrides);
  const graph::CostReport uniform =
      o.kind == "fp" ? r : graph::compute_cost(g, height, width, o.wbits, o.abits, "uniform", overrides);
  if (o.json) {
    nlohmann::json j{{"arch", r.arch},
                     {"kind", o.kind},
                     {"wbits", o.kind == "fp" ? 32 : o.wbits},
                     {"abits", o.kind == "fp" ? 32 : o.abits},
                     {"input", height},
                     {"input_width", width},
                     {"classes", classes},
                     {"macs", r.macs},
                     {"quantized_macs", r.quantized_macs},
                     {"fixops", r.fixops},
                     {"fixops_uniform", uniform.fixops},
                     {"size_bytes", r.size_bytes},
                     {"size_bytes_with_bn", r.size_bytes + r.float_bytes}};
    if (o.layers) {
      j["layers"] = nlohmann::json::array();
      for (const auto& l : r.layers)
        j["layers"].push_back({{"name", l.name},
                               {"macs", l.macs},
                               {"fixops", l.fixops},
                               {"wbits", l.weight_bits},
                               {"abits", l.act_bits},
                               {"size_bytes", l.size_bytes}});
    }
    fmt::print("{}\n", j.dump());
    return;
  }
  if (o.layers) {
    fmt::print("{:<24} {:>12} {:>6} {:>14} {:>12}\n", "layer", "MACs", "W/A", "FixOPs", "bytes");
    for (const auto& l : r.layers)
      fmt::print("{:<24} {:>12} {:>6} {:>14.0f} {:>12.0f}\n", l.name, l.macs,
                 fmt::format("{}/{}", l.weight_bits, l.act_bits), l.fixops, l.size_bytes);
  }
  fmt::print("{} {}x{} {} W{}A{}: {:.4f} G MACs ({:.4f} G quantised), {:.1f} M FixOPs", r.arch, height, width, o.kind,
             o.kind == "fp" ? 32 : o.wbits, o.kind == "fp" ? 32 : o.abits, r.macs / 1e9, r.quantized_macs / 1e9,
             r.fixops / 1e6);
  if (o.kind != "fp" && o.kind != "uniform")
    fmt::print(" ({:.1f} % less than uniform's {:.1f} M)", 100.0 * (1 - r.fixops / uniform.fixops),
               uniform.fixops / 1e6);
  fmt::print(", weights {:.2f} MiB ({:.2f} MiB with batch norm)\n", r.size_bytes / 1048576.0,
             (r.size_bytes + r.float_bytes) / 1048576.0);
}

}  // namespace

std::string architecture_list() {
  std::string out;
  for (const std::string& a : graph::known_architectures()) out += (out.empty() ? "" : ", ") + a;
  return out;
}

void register_cost(CLI::App& app) {
  auto o = std::make_shared<CostOptions>();
  CLI::App* cmd = app.add_subcommand("cost", "MACs, FixOPs and model size of a network (APOT_SPEC section 7)");
  cmd->add_option("--arch", o->arch, architecture_list())->capture_default_str();
  cmd->add_option("--width-mult", o->width_mult, "MobileNetV2's width multiplier")->capture_default_str();
  cmd->add_option("--model-file", o->model_file, "a model file or an ONNX file (docs/MODELS.md) instead of --arch")
      ->check(CLI::ExistingFile);
  cmd->add_option("--shortcut", o->shortcut, "CIFAR ResNet shortcut: A | B")
      ->check(CLI::IsMember({"A", "B"}))
      ->capture_default_str();
  cmd->add_option("--layer", o->layer_bits, "per-layer bits NAME=W/A, e.g. layer1.0.conv1=8/8 (repeatable)");
  cmd->add_option("--wbits", o->wbits, "weight bits (2-8)")->capture_default_str();
  cmd->add_option("--abits", o->abits, "activation bits (2-8)")->capture_default_str();
  cmd->add_option("--kind", o->kind, "apot | pot | uniform | fp")
      ->check(CLI::IsMember({"apot", "pot", "uniform", "fp"}))
      ->capture_default_str();
  cmd->add_option("--input", o->input, "input side (default 224 for ImageNet nets, 32 for CIFAR nets and *_cifar)");
  cmd->add_option("--classes", o->classes, "number of classes (default 1000 / 10)");
  cmd->add_flag("--layers", o->layers, "per-layer table");
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->callback([o] { run_cost(*o); });
}

}  // namespace apot::cli
