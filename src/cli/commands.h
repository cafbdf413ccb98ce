// Registration of the `apot` subcommands; one source file per subcommand.
#pragma once

#include <CLI/CLI.hpp>

#ifdef APOT_WITH_TORCH
#include "apot/data/spec.h"
#endif

namespace apot::cli {

// The known architectures, comma-separated (for help texts).
std::string architecture_list();

// Thrown by a subcommand for a user mistake: main prints "apot: error: <what>" and exits 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#ifdef APOT_WITH_TORCH
// A --data argument that is not a data set spec is a usage error (exit 2).
data::DataSpec parse_data_argument(const std::string& text);
#endif

// --tune 0|1|force on a command that loads an .apot file: sets APOT_TUNE for that load (how the
// engine chooses each layer's kernel; docs/KERNELS.md "Tuning"); unset, APOT_TUNE as it is.
void add_tune_option(CLI::App* cmd, std::string& tune);
void apply_tune_option(const std::string& tune);

void register_levels(CLI::App& app);
void register_cost(CLI::App& app);
#ifdef APOT_WITH_TORCH
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_export(CLI::App& app);
void register_run(CLI::App& app);
void register_bench(CLI::App& app);
void register_report(CLI::App& app);
void register_quantize(CLI::App& app);
#endif

}  // namespace apot::cli
