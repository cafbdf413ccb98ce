// `apot levels`: print a level set with its exact fractions and integer form.
#include <fmt/format.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>

#include "apot/levels/level_set.h"
#include "commands.h"

namespace apot::cli {
namespace {

struct LevelsOptions {
  int bits = 4;
  std::string kind = "apot";
  std::string role = "activation";
  bool json = false;
  bool is_signed = false;  // activations: the signed (symmetric) set
};

std::string fraction(int64_t numerator, int64_t denominator) {
  if (numerator == 0) return "0";
  const int64_t g = std::gcd(numerator < 0 ? -numerator : numerator, denominator);
  if (denominator / g == 1) return std::to_string(numerator / g);
  return std::to_string(numerator / g) + "/" + std::to_string(denominator / g);
}

// Shortest decimal that reads back as the same float32.
double shortest(float value) { return std::strtod(fmt::format("{}", value).c_str(), nullptr); }

void run_levels(const LevelsOptions& o) {
  const levels::Role role = levels::parse_role(o.role);
  if (o.is_signed && role != levels::Role::activation)
    throw UsageError("--signed applies to --role activation (weight levels are always signed)");
  const levels::LevelSet set =
      levels::LevelSet::make(levels::parse_kind(o.kind), o.bits, o.is_signed ? levels::Role::signed_activation : role);
  const std::vector<float> values = set.levels();
  const std::vector<int64_t> integers = set.integers();
  if (o.json) {
    nlohmann::json j;
    j["bits"] = set.bits();
    j["kind"] = levels::to_string(set.kind());
    j["requested_kind"] = levels::to_string(set.requested_kind());
    j["role"] = levels::to_string(set.role());
    j["name"] = set.name();
    j["levels"] = nlohmann::json::array();
    j["fractions"] = nlohmann::json::array();
    for (size_t i = 0; i < values.size(); ++i) {
      j["levels"].push_back(shortest(values[i]));
      j["fractions"].push_back(fraction(integers[i], set.denominator()));
    }
    j["integers"] = integers;
    j["denominator"] = set.denominator();
    j["storage_bits"] = set.storage_bits();
    j["thresholds"] = nlohmann::json::array();
    for (float t : set.thresholds()) j["thresholds"].push_back(shortest(t));
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("{} {}-bit {} levels ({}): {} values, integer form k / {} ({}-bit {} storage)\n",
             levels::to_string(set.kind()), set.bits(), levels::to_string(set.role()), set.name(), values.size(),
             set.denominator(), set.storage_bits(), set.is_signed() ? "signed" : "unsigned");
  fmt::print("{:>5}  {:>14}  {:>10}  {:>8}\n", "index", "level", "fraction", "integer");
  for (size_t i = 0; i < values.size(); ++i)
    fmt::print("{:>5}  {:>14}  {:>10}  {:>8}\n", i, values[i], fraction(integers[i], set.denominator()), integers[i]);
}

}  // namespace

void register_levels(CLI::App& app) {
  auto options = std::make_shared<LevelsOptions>();
  CLI::App* cmd = app.add_subcommand("levels", "Print a quantiser's level set, exact fractions and integer form");
  cmd->add_option("--bits,-b", options->bits, "bit-width (apot/pot 2-6, uniform 2-8, ternary 2)")->required();
  cmd->add_option("--kind,-k", options->kind, "apot | pot | uniform | ternary")
      ->check(CLI::IsMember({"apot", "pot", "uniform", "ternary"}))
      ->capture_default_str();
  cmd->add_option("--role,-r", options->role, "weight (signed) | activation (unsigned)")
      ->check(CLI::IsMember({"weight", "activation"}))
      ->capture_default_str();
  cmd->add_flag("--signed", options->is_signed,
                "activations that can be negative (no ReLU before the layer): the symmetric set, one bit for the "
                "sign, as weights");
  cmd->add_flag("--json", options->json, "print one JSON object");
  cmd->callback([options] { run_levels(*options); });
}

}  // namespace apot::cli
