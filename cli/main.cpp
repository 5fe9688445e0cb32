// slm: argument parsing and dispatch only (docs/ARCHITECTURE.md, "Layout"); the work happens in the libraries.
#include <cstdio>
#include <iostream>
#include <vector>

#include "cli/command.h"
#include "core/device.h"
#include "core/error.h"
#include "core/log.h"

namespace slm::cli {
namespace {
std::vector<Setup>& Setups() {
  static std::vector<Setup> setups;
  return setups;
}
}  // namespace

Registrar::Registrar(Setup setup) { Setups().push_back(std::move(setup)); }

CLI::App* Group(CLI::App& parent, const std::string& name, const std::string& description) {
  for (CLI::App* sub : parent.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_name() == name) return sub;
  CLI::App* group = parent.add_subcommand(name, description);
  group->require_subcommand(1);
  return group;
}

}  // namespace slm::cli

int main(int argc, char** argv) {
  CLI::App app{"slm: teach a frozen text language model to hear, see and speak"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every command");
  slm::cli::Common common;
  common.argv.assign(argv, argv + argc);
  app.add_flag("--json", common.json, "Print one JSON object with the results last on stdout");
  app.add_option("--threads", common.threads, "LibTorch intra-op threads (0 = all cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("--log-level", common.log_level, "debug|info|warn|error|off");
  // Common flags apply before any subcommand callback runs.
  app.parse_complete_callback([&common] {
    slm::log::SetLevel(slm::log::ParseLevel(common.log_level));
    slm::SetThreads(common.threads);
  });
  // Flags may also follow the subcommand ("slm audio mel --in x.wav --json"); CLI11 copies this
  // setting into subcommands created afterwards, so it must precede the registrations.
  app.fallthrough();
  for (const auto& setup : slm::cli::Setups()) setup(app, common);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const slm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
