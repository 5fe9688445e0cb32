// slm train --config FILE [--set k=v ...] [--resume] [--nproc N]
// slm eval --config FILE [--checkpoint DIR | --adapters DIR]   (default: the run's latest checkpoint)
#include "cli/command.h"
#include <unistd.h>

#include <cstdlib>

#include "train/checkpoint.h"
#include "train/distributed.h"
#include "experiments/stages.h"
#include "train/trainer.h"

namespace slm::cli {
namespace {

struct TrainArgs {
  ConfigArgs config;
  bool resume = false;
  int nproc = 1;
  int master_port = 0;
};

// This command line without --nproc / --master-port, for the ranks to run.
std::vector<std::string> RankArgv(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--nproc" || a == "--master-port") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0 || a.rfind("--master-port=", 0) == 0) continue;
    out.push_back(a);
  }
  return out;
}

struct EvalArgs {
  ConfigArgs config;
  std::string checkpoint;
  std::string adapters;  // an adapters/ directory instead of a checkpoint (e.g. `slm merge` output)
};

void RunEval(const EvalArgs& args, bool json) {
  const auto config = args.config.Load<train::TrainConfig>();
  Check(!config.data.valid.empty(), args.config.config, ": data.valid lists no source to evaluate on");
  Check(args.checkpoint.empty() || args.adapters.empty(), "give --checkpoint or --adapters, not both");
  const std::string dir = !args.adapters.empty()    ? args.adapters
                          : args.checkpoint.empty() ? train::LatestCheckpoint(config.output_dir)
                                                    : args.checkpoint;
  Check(!dir.empty(), "no --checkpoint given and '", config.output_dir, "' has no checkpoint");
  adapters::MultimodalLM model(config.model);
  train::TrainingState state;
  if (args.adapters.empty()) state = train::LoadCheckpoint(dir, *model, nullptr);
  else model->LoadAdapters(dir);
  Report report(json);
  report.Set("checkpoint", dir);
  report.Set("step", state.step);
  // One key: source names are manifest paths, whose dots Report::Set would read as nesting.
  report.Set("eval", train::EvaluateValid(config, *model));
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  auto* train_cmd = app.add_subcommand("train", "train adapters (and LoRA) from a config");
  auto t = std::make_shared<TrainArgs>();
  t->config.Add(train_cmd, "samples/configs/asr_tiny.yaml");
  train_cmd->add_flag("--resume", t->resume, "continue the run in output_dir from its latest checkpoint");
  train_cmd->add_option("--nproc", t->nproc, "data-parallel processes on this host (c10d Gloo)")
      ->check(CLI::Range(1, 256));
  train_cmd->add_option("--master-port", t->master_port, "rendezvous port for --nproc (default: from the pid)")
      ->check(CLI::Range(0, 65535));
  train_cmd->callback([t, &common] {
    if (t->nproc > 1) {
      const int port = t->master_port > 0 ? t->master_port : 20000 + static_cast<int>(getpid() % 20000);
      const int status = train::SpawnLocalRanks(RankArgv(common.argv), t->nproc, port);
      Check(status == 0, "a training rank failed (exit status ", status, ")");
      return;
    }
    auto doc = config::Document::LoadFile(t->config.config);
    doc.ApplyOverrides(t->config.overrides);
    if (experiments::StagesConfig::IsStaged(doc)) {  // a multi-stage run (train/stages.h)
      Check(t->nproc == 1 && std::getenv("RANK") == nullptr, "a multi-stage config runs in one process (no --nproc)");
      experiments::StagesConfig stages;
      stages.Load(doc);
      const experiments::StagesResult result = experiments::RunStages(stages, t->resume, common.json);
      Report report(common.json);
      report.Set("output_dir", result.output_dir);
      report.Set("stages", static_cast<int64_t>(result.stages.size()));
      report.Set("seconds", result.seconds);
      report.Set("report", result.output_dir + "/forgetting.md");
      report.Line(result.report.ToMarkdown());
      if (common.json) report.Set("forgetting", result.report.ToJson());
      report.Emit();
      return;
    }
    std::string effective;
    const auto config = t->config.Load<train::TrainConfig>(&effective);
    const train::TrainResult result = train::Train(config, effective, t->resume, common.json);
    const char* rank = std::getenv("RANK");
    if (rank != nullptr && std::string(rank) != "0") return;  // rank 0 reports for the group
    Report report(common.json);
    const nlohmann::json summary = result.ToJson();
    for (auto it = summary.begin(); it != summary.end(); ++it) report.Set(it.key(), it.value());
    report.Emit();
  });

  auto* eval_cmd = app.add_subcommand("eval", "evaluate a checkpoint on a config's valid sources");
  auto e = std::make_shared<EvalArgs>();
  e->config.Add(eval_cmd, "samples/configs/asr_tiny.yaml");
  eval_cmd->add_option("--checkpoint", e->checkpoint, "checkpoint directory (default: latest)");
  eval_cmd->add_option("--adapters", e->adapters, "an adapters directory instead (a run's adapters/, `slm merge` output)");
  eval_cmd->callback([e, &common] { RunEval(*e, common.json); });
});

}  // namespace
}  // namespace slm::cli
