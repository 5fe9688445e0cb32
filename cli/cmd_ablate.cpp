// slm ablate --config FILE [--quick] [--set k=v ...]: the replay-ablation grid (train/ablate.h).
#include "cli/command.h"
#include "experiments/ablate.h"

namespace slm::cli {
namespace {

struct AblateArgs {
  ConfigArgs config;
  bool quick = false;
};

Registrar registrar([](CLI::App& app, Common& common) {
  auto* cmd = app.add_subcommand("ablate", "run a grid of multi-stage runs (mitigation x ratio x seed) and report");
  auto a = std::make_shared<AblateArgs>();
  a->config.Add(cmd, "samples/configs/replay_ablation.yaml");
  cmd->add_flag("--quick", a->quick, "the config's quick: grid (minutes, for tests)");
  cmd->callback([a, &common] {
    auto doc = config::Document::LoadFile(a->config.config);
    doc.ApplyOverrides(a->config.overrides);
    experiments::AblationConfig config;
    config.Load(doc.Root(), a->quick);
    doc.CheckAllConsumed();
    const experiments::AblationResult result = experiments::RunAblation(config, common.json);
    Report report(common.json);
    report.Set("output_dir", result.output_dir);
    report.Set("runs", static_cast<int64_t>(result.runs.size()));
    report.Set("ran", result.ran);
    report.Set("skipped", result.skipped);
    report.Set("failed", result.failed);
    report.Set("seconds", result.seconds);
    report.Set("report", result.output_dir + "/report.md");
    report.Emit();
  });
});

}  // namespace
}  // namespace slm::cli
