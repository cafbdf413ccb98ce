// TrainConfig <-> TOML recipes, --set overrides and JSON, through one table of fields.
#include "apot/train/config.h"

#include <toml++/toml.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>

#include "apot/graph/architectures.h"
#include "apot/graph/serialize.h"
#include "apot/levels/level_set.h"

namespace apot::train {
namespace {

using json = nlohmann::json;

struct Field {
  std::string key;  // section.name
  std::function<void(TrainConfig&, const toml::node&)> set;
  std::function<json(const TrainConfig&)> get;
  std::function<void(TrainConfig&, const json&)> set_json;
};

[[noreturn]] void type_error(const std::string& key, const char* expected) {
  throw ConfigError("config key " + key + " must be " + expected);
}

template <typename T>
Field field(const std::string& key, T TrainConfig::*member) {
  Field f;
  f.key = key;
  f.get = [member](const TrainConfig& c) { return json(c.*member); };
  f.set_json = [member](TrainConfig& c, const json& j) { c.*member = j.get<T>(); };
  f.set = [member, key](TrainConfig& c, const toml::node& n) {
    if constexpr (std::is_same_v<T, bool>) {
      if (!n.is_boolean()) type_error(key, "true or false");
      c.*member = *n.value<bool>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!n.is_string()) type_error(key, "a string");
      c.*member = *n.value<std::string>();
    } else if constexpr (std::is_same_v<T, double>) {
      if (!n.is_number()) type_error(key, "a number");
      c.*member = *n.value<double>();
    } else if constexpr (std::is_same_v<T, std::vector<double>>) {
      const toml::array* a = n.as_array();
      if (!a) type_error(key, "an array of numbers");
      std::vector<double> values;
      for (const toml::node& e : *a) {
        if (!e.is_number()) type_error(key, "an array of numbers");
        values.push_back(*e.value<double>());
      }
      c.*member = values;
    } else if constexpr (std::is_same_v<T, std::vector<int>>) {
      const toml::array* a = n.as_array();
      if (!a) type_error(key, "an array of integers");
      std::vector<int> values;
      for (const toml::node& e : *a) {
        if (!e.is_integer()) type_error(key, "an array of integers");
        values.push_back(static_cast<int>(*e.value<int64_t>()));
      }
      c.*member = values;
    } else {
      if (!n.is_integer()) type_error(key, "an integer");
      const int64_t v = *n.value<int64_t>();
      if (v < 0 && std::is_unsigned_v<T>) type_error(key, "a non-negative integer");
      c.*member = static_cast<T>(v);
    }
  };
  return f;
}

const std::vector<Field>& fields() {
  static const std::vector<Field> all = {
      field("model.arch", &TrainConfig::arch),
      field("model.shortcut", &TrainConfig::shortcut),
      field("model.naming", &TrainConfig::naming),
      field("model.width_mult", &TrainConfig::width_mult),
      field("model.file", &TrainConfig::model_file),
      field("data.spec", &TrainConfig::data),
      field("data.batch_size", &TrainConfig::batch_size),
      field("data.workers", &TrainConfig::workers),
      field("data.val_size", &TrainConfig::val_size),
      field("data.augment", &TrainConfig::augment),
      field("data.crop", &TrainConfig::crop),
      field("data.pad", &TrainConfig::pad),
      field("data.resize", &TrainConfig::resize),
      field("data.skip_corrupt", &TrainConfig::skip_corrupt),
      field("data.eval_batch_size", &TrainConfig::eval_batch_size),
      field("data.mean", &TrainConfig::norm_mean),
      field("data.std", &TrainConfig::norm_std),
      field("quant.kind", &TrainConfig::kind),
      field("quant.weight_bits", &TrainConfig::weight_bits),
      field("quant.act_bits", &TrainConfig::act_bits),
      field("quant.variant", &TrainConfig::variant),
      field("quant.weight_norm", &TrainConfig::weight_norm),
      field("quant.per_channel", &TrainConfig::per_channel),
      field("quant.weight_alpha_init", &TrainConfig::weight_alpha_init),
      field("quant.act_alpha_init", &TrainConfig::act_alpha_init),
      field("quant.int8_first_last", &TrainConfig::int8_first_last),
      field("init.from", &TrainConfig::init),
      field("init.key", &TrainConfig::init_key),
      field("optim.epochs", &TrainConfig::epochs),
      field("optim.lr", &TrainConfig::lr),
      field("optim.momentum", &TrainConfig::momentum),
      field("optim.nesterov", &TrainConfig::nesterov),
      field("optim.weight_decay", &TrainConfig::weight_decay),
      field("optim.act_alpha_lr", &TrainConfig::act_alpha_lr),
      field("optim.weight_alpha_lr", &TrainConfig::weight_alpha_lr),
      field("optim.alpha_weight_decay", &TrainConfig::alpha_weight_decay),
      field("optim.label_smoothing", &TrainConfig::label_smoothing),
      field("optim.grad_clip", &TrainConfig::grad_clip),
      field("distill.teacher", &TrainConfig::teacher),
      field("distill.key", &TrainConfig::teacher_key),
      field("distill.weight", &TrainConfig::distill_weight),
      field("distill.temperature", &TrainConfig::temperature),
      field("schedule.kind", &TrainConfig::schedule),
      field("schedule.milestones", &TrainConfig::milestones),
      field("schedule.gamma", &TrainConfig::gamma),
      field("schedule.warmup_epochs", &TrainConfig::warmup_epochs),
      field("train.device", &TrainConfig::device),
      field("train.memory_format", &TrainConfig::memory_format),
      field("train.conv_precision", &TrainConfig::conv_precision),
      field("train.sync_batch_norm", &TrainConfig::sync_batch_norm),
      field("run.seed", &TrainConfig::seed),
      field("run.threads", &TrainConfig::threads),
      field("run.max_steps_per_epoch", &TrainConfig::max_steps_per_epoch),
      field("run.stop_after_epoch", &TrainConfig::stop_after_epoch),
  };
  return all;
}

// Short aliases accepted by --set (the user journeys write --set init=FILE).
std::string canonical_key(const std::string& key) {
  if (key == "init") return "init.from";
  if (key == "data") return "data.spec";
  return key;
}

const Field& find_field(const std::string& key, const std::string& source) {
  for (const Field& f : fields())
    if (f.key == key) return f;
  std::string known;
  for (const Field& f : fields()) known += (known.empty() ? "" : ", ") + f.key;
  throw ConfigError(source + ": unknown config key '" + key + "' (known keys: " + known + ")");
}

constexpr const char* kLayersKey = "quant.layers";

// One field of a per-layer override: weight_bits, act_bits, kind or full_precision.
void set_layer_field(TrainConfig& c, const std::string& layer, const std::string& name, const toml::node& v) {
  const std::string key = std::string(kLayersKey) + ".\"" + layer + "\"." + name;
  graph::LayerOverride& o = c.layers[layer];
  if (name == "weight_bits" || name == "act_bits") {
    if (!v.is_integer()) type_error(key, "an integer");
    (name == "weight_bits" ? o.weight_bits : o.act_bits) = static_cast<int>(*v.value<int64_t>());
  } else if (name == "kind") {
    if (!v.is_string()) type_error(key, "a string");
    try {
      o.kind = levels::parse_kind(*v.value<std::string>());
    } catch (const levels::LevelSetError& e) {
      throw ConfigError(key + ": " + e.what());
    }
  } else if (name == "full_precision") {
    if (!v.is_boolean()) type_error(key, "true or false");
    o.full_precision = *v.value<bool>();
  } else {
    throw ConfigError("unknown config key '" + key +
                      "' (a layer override has weight_bits, act_bits, kind, full_precision)");
  }
}

void apply_layers(TrainConfig& c, const toml::table& layers) {
  for (const auto& [name, v] : layers) {
    const toml::table* fields = v.as_table();
    if (!fields)
      type_error(std::string(kLayersKey) + ".\"" + std::string(name.str()) + "\"",
                 "a table such as { weight_bits = 8 }");
    c.layers[std::string(name.str())];
    for (const auto& [field, value] : *fields)
      set_layer_field(c, std::string(name.str()), std::string(field.str()), value);
  }
}

void apply_table(TrainConfig& c, const toml::table& table, const std::string& prefix, const std::string& source) {
  for (const auto& [k, v] : table) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (key == kLayersKey) {
      if (!v.as_table()) type_error(key, "a table of layer names");
      apply_layers(c, *v.as_table());
    } else if (const toml::table* sub = v.as_table()) apply_table(c, *sub, key, source);
    else find_field(key, source).set(c, v);
  }
}

void apply_override(TrainConfig& c, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw ConfigError("--set expects key=value, got '" + assignment + "'");
  const std::string key = canonical_key(assignment.substr(0, eq)), value = assignment.substr(eq + 1);
  toml::table parsed;
  try {
    // Made ASCII first, as a file is: toml++ 3.3 is unsafe on a bare word such as `1é`.
    parsed = toml::parse(graph::ascii_toml("v = " + value, "--set"));
  } catch (const graph::GraphError&) {
    parsed = toml::table{{"v", value}};  // a bare word: a string
  } catch (const toml::parse_error&) {
    parsed = toml::table{{"v", value}};
  }
  // quant.layers.NAME.FIELD, where NAME may hold dots (layer1.0.conv1) and quotes.
  const std::string layers_prefix = std::string(kLayersKey) + ".";
  if (key.rfind(layers_prefix, 0) == 0) {
    const std::string rest = key.substr(layers_prefix.size());
    const size_t dot = rest.rfind('.');
    std::string layer = dot == std::string::npos ? "" : rest.substr(0, dot);
    if (layer.size() >= 2 && layer.front() == '"' && layer.back() == '"') layer = layer.substr(1, layer.size() - 2);
    if (layer.empty()) throw ConfigError("--set " + key + ": expected quant.layers.LAYER.FIELD");
    set_layer_field(c, layer, rest.substr(dot + 1), *parsed.get("v"));
    return;
  }
  find_field(key, "--set").set(c, *parsed.get("v"));
}

}  // namespace

void TrainConfig::validate() const {
  if (model_file.empty() && !graph::is_known_architecture(arch)) {
    std::string names;
    for (const std::string& n : graph::known_architectures()) names += (names.empty() ? "" : ", ") + n;
    throw ConfigError("model.arch: unknown architecture '" + arch + "' (known: " + names +
                      "; or give a model file as model.file)");
  }
  if (shortcut != "A" && shortcut != "B") throw ConfigError("model.shortcut must be A or B");
  if (naming != "apot" && naming != "hub") throw ConfigError("model.naming must be apot or hub");
  if (norm_mean.size() != norm_std.size()) throw ConfigError("data.mean and data.std must have the same length");
  for (double s : norm_std)
    if (!(s > 0) || !std::isfinite(s)) throw ConfigError("data.std must be positive");
  for (double m : norm_mean)
    if (!std::isfinite(m)) throw ConfigError("data.mean must be finite");
  for (const auto& [name, o] : layers) {
    if (o.full_precision.value_or(false)) continue;
    try {
      const levels::Kind k = o.kind.value_or(kind == "fp" ? levels::Kind::apot : levels::parse_kind(kind));
      levels::LevelSet::make(k, o.weight_bits.value_or(weight_bits), levels::Role::weight);
      levels::LevelSet::make(k, o.act_bits.value_or(act_bits), levels::Role::activation);
    } catch (const levels::LevelSetError& e) {
      throw ConfigError("quant.layers.\"" + name + "\": " + e.what());
    }
  }
  if (batch_size < 1 || eval_batch_size < 1) throw ConfigError("data.batch_size must be at least 1");
  if (val_size < 0) throw ConfigError("data.val_size must not be negative");
  if (epochs < 1) throw ConfigError("optim.epochs must be at least 1");
  if (!(lr > 0)) throw ConfigError("optim.lr must be positive");
  if (schedule != "cosine" && schedule != "multistep") throw ConfigError("schedule.kind must be cosine or multistep");
  if (variant != "cifar" && variant != "imagenet") throw ConfigError("quant.variant must be cifar or imagenet");
  if (weight_norm != "none" && weight_norm != "detached" && weight_norm != "through")
    throw ConfigError("quant.weight_norm must be none, detached or through");
  if (label_smoothing < 0 || label_smoothing >= 1) throw ConfigError("optim.label_smoothing must be in [0, 1)");
  if (!(distill_weight >= 0 && distill_weight <= 1)) throw ConfigError("distill.weight must be in [0, 1]");
  if (!(temperature > 0 && temperature <= 100)) throw ConfigError("distill.temperature must be in (0, 100]");
  if (!std::regex_match(device, std::regex("cpu|cuda(:[0-9]+)?")))
    throw ConfigError("train.device must be cpu, cuda or cuda:N, not '" + device + "'");
  if (memory_format != "auto" && memory_format != "channels_last" && memory_format != "contiguous")
    throw ConfigError("train.memory_format must be auto, channels_last or contiguous, not '" + memory_format + "'");
  if (conv_precision != "fp32" && conv_precision != "bf16" && conv_precision != "auto")
    throw ConfigError("train.conv_precision must be fp32, bf16 or auto, not '" + conv_precision + "'");
  if (kind != "fp") {
    try {
      const levels::Kind k = levels::parse_kind(kind);
      levels::LevelSet::make(k, weight_bits, levels::Role::weight);
      levels::LevelSet::make(k, act_bits, levels::Role::activation);
    } catch (const levels::LevelSetError& e) {
      throw ConfigError(std::string("quant: ") + e.what());
    }
  }
}

TrainConfig config_from_toml_text(const std::string& text, const std::string& source,
                                  const std::vector<std::string>& overrides) {
  TrainConfig c;
  std::string ascii;
  try {
    ascii = graph::ascii_toml(text, source);
  } catch (const graph::GraphError& e) {
    throw ConfigError(e.what());
  }
  try {
    apply_table(c, toml::parse(ascii, source), "", source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  for (const std::string& o : overrides) apply_override(c, o);
  c.validate();
  return c;
}

TrainConfig load_config(const std::string& recipe_path, const std::vector<std::string>& overrides) {
  std::ifstream in(recipe_path);
  if (!in) throw ConfigError(recipe_path + ": cannot open recipe");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TrainConfig c = config_from_toml_text(text, recipe_path, {});
  // A model file named in the recipe is relative to the recipe; one given with --set, to the
  // working directory.
  const std::filesystem::path model(c.model_file);
  if (!c.model_file.empty() && model.is_relative())
    c.model_file = (std::filesystem::path(recipe_path).parent_path() / model).lexically_normal().string();
  for (const std::string& o : overrides) apply_override(c, o);
  c.validate();
  return c;
}

std::string config_to_json(const TrainConfig& c) {
  json j;
  for (const Field& f : fields()) j[f.key] = f.get(c);
  json layers = json::object();
  for (const auto& [name, o] : c.layers) {
    json l = json::object();
    if (o.weight_bits) l["weight_bits"] = *o.weight_bits;
    if (o.act_bits) l["act_bits"] = *o.act_bits;
    if (o.kind) l["kind"] = levels::to_string(*o.kind);
    if (o.full_precision) l["full_precision"] = *o.full_precision;
    layers[name] = l;
  }
  j[kLayersKey] = layers;
  return j.dump();
}

TrainConfig config_from_json(const std::string& text) {
  TrainConfig c;
  const json j = json::parse(text);
  for (const Field& f : fields())
    if (j.contains(f.key)) f.set_json(c, j[f.key]);
  if (j.contains(kLayersKey))
    for (const auto& [name, l] : j.at(kLayersKey).items()) {
      graph::LayerOverride& o = c.layers[name];
      if (l.contains("weight_bits")) o.weight_bits = l.at("weight_bits").get<int>();
      if (l.contains("act_bits")) o.act_bits = l.at("act_bits").get<int>();
      if (l.contains("kind")) o.kind = levels::parse_kind(l.at("kind").get<std::string>());
      if (l.contains("full_precision")) o.full_precision = l.at("full_precision").get<bool>();
    }
  return c;
}

}  // namespace apot::train
