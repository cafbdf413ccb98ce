// The `apot` command: parses the subcommand line and turns every user error into one line on
// stderr and a non-zero exit (2 for usage errors, 1 for failures while running).
#include <cstdio>
#include <exception>

#include "apot/levels/level_set.h"
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"apot: Additive Powers-of-Two quantization: train, export and run low-bit networks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "apot 0.1.0");
  apot::cli::register_levels(app);
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
  } catch (const apot::cli::UsageError& e) {
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "apot: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
