// Command registration for the `slm` executable. Each command lives in its own file (cli/*.cpp,
// bench/*.cpp) and registers itself at static-initialisation time:
//
//   static slm::cli::Registrar reg([](CLI::App& app, slm::cli::Common& common) {
//     auto* cmd = slm::cli::Group(app, "data", "make training data")->add_subcommand("corpus", "...");
//     auto opts = std::make_shared<Options>();
//     cmd->add_option("--out", opts->out, "output directory")->required();
//     cmd->callback([opts, &common] { ... Report report(common.json); ...; report.Emit(); });
//   });
//
// Callbacks throw slm::Error for anything the user can fix; main() prints it and exits 1.
// Common flags (--json, --threads, --log-level) are parsed before any callback runs.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/json_report.h"

namespace slm::cli {

struct Common {
  bool json = false;      // print one JSON object last on stdout
  int threads = 0;        // LibTorch intra-op threads; 0 = all cores
  std::string log_level = "info";
  std::vector<std::string> argv;  // the command line as given (commands that re-launch themselves)
};

using Setup = std::function<void(CLI::App& app, Common& common)>;

struct Registrar {
  explicit Registrar(Setup setup);
};

// `--config FILE` and repeated `--set key=value` of a config-driven command. Load() reads the file,
// applies the overrides, fills a config struct with its strict Load(config::Node) and rejects keys
// nothing consumed; `effective_yaml` receives the effective config to save with the run.
struct ConfigArgs {
  std::string config;
  std::vector<std::string> overrides;

  void Add(CLI::App* cmd, const std::string& example) {
    cmd->add_option("--config", config, "YAML config (" + example + ")")->required();
    cmd->add_option("--set", overrides, "override a config key, e.g. --set train.steps=10");
  }
  template <class ConfigT>
  ConfigT Load(std::string* effective_yaml = nullptr) const {
    auto doc = config::Document::LoadFile(config);
    doc.ApplyOverrides(overrides);
    ConfigT loaded;
    loaded.Load(doc.Root());
    doc.CheckAllConsumed();
    if (effective_yaml != nullptr) *effective_yaml = doc.EffectiveYaml();
    return loaded;
  }
};

// `parent name --config FILE [--set k=v ...]` for a command that runs a whole job from a config:
// loads ConfigT, calls run(config, effective_yaml, quiet) (quiet = --json, no progress bars) and
// reports every field of the result's ToJson().
template <class ConfigT, class Run>
void AddConfigJob(CLI::App* parent, const std::string& name, const std::string& description,
                  const std::string& example, Common& common, Run run) {
  auto* cmd = parent->add_subcommand(name, description);
  auto args = std::make_shared<ConfigArgs>();
  args->Add(cmd, example);
  cmd->callback([args, &common, run] {
    std::string effective;
    const ConfigT config = args->Load<ConfigT>(&effective);
    const auto result = run(config, effective, common.json);
    Report report(common.json);
    const nlohmann::json summary = result.ToJson();
    for (auto it = summary.begin(); it != summary.end(); ++it) report.Set(it.key(), it.value());
    report.Emit();
  });
}

// The subcommand `name` of `parent`, created with `description` on first use.
CLI::App* Group(CLI::App& parent, const std::string& name, const std::string& description);

}  // namespace slm::cli
