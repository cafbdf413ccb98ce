// The `apot` command: parses the subcommand line and turns every user error into one line on
// stderr and a non-zero exit (2 for usage errors, 1 for failures while running).
#include <cstdio>
#include <exception>

#include "apot/graph/graph.h"
#include "apot/levels/level_set.h"
#include "commands.h"
#ifdef APOT_WITH_TORCH
#include "apot/data/dataset.h"
#include "apot/qat/checkpoint_import.h"
#include "apot/runtime/format.h"
#include "apot/train/config.h"
#include "apot/train/trainer.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"apot: Additive Powers-of-Two quantization: train, export and run low-bit networks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "apot 0.1.0");
  apot::cli::register_levels(app);
  apot::cli::register_cost(app);
#ifdef APOT_WITH_TORCH
  apot::cli::register_train(app);
  apot::cli::register_eval(app);
  apot::cli::register_export(app);
  apot::cli::register_run(app);
  apot::cli::register_bench(app);
  apot::cli::register_report(app);
  apot::cli::register_quantize(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "apot: error: %s (see apot --help)\n", e.what());
    return 2;
  } catch (const apot::levels::LevelSetError& e) {
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 2;
  } catch (const apot::graph::GraphError& e) {  // a model file, architecture or layer override
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 2;
#ifdef APOT_WITH_TORCH
  } catch (const apot::train::ConfigError& e) {
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 2;
  } catch (const apot::qat::StateDictError& e) {  // weights that do not fit the chosen model
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "apot: error: %s\n", e.what_without_backtrace());
    return 1;
#endif
  } catch (const apot::cli::UsageError& e) {
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
