// slm train --config FILE [--set k=v ...] [--resume]
// slm eval --config FILE [--checkpoint DIR]     (default: the run's latest checkpoint)
#include "cli/command.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace slm::cli {
namespace {

struct TrainArgs {
  ConfigArgs config;
  bool resume = false;
};

struct EvalArgs {
  ConfigArgs config;
  std::string checkpoint;
};

void RunEval(const EvalArgs& args, bool json) {
  const auto config = args.config.Load<train::TrainConfig>();
  Check(!config.data.valid.empty(), args.config.config, ": data.valid lists no source to evaluate on");
  const std::string dir = args.checkpoint.empty() ? train::LatestCheckpoint(config.output_dir) : args.checkpoint;
  Check(!dir.empty(), "no --checkpoint given and '", config.output_dir, "' has no checkpoint");
  adapters::MultimodalLM model(config.model);
  const train::TrainingState state = train::LoadCheckpoint(dir, *model, nullptr);
  const double max_seconds =
      model->HasSpeech() ? model->SpeechEncoder()->Config().MaxInputFrames() / 100.0 : 0.0;
  const train::Dataset valid(config.data.valid, config.data.max_missing_fraction, max_seconds, "data.valid");
  train::FeatureCache cache;
  Report report(json);
  report.Set("checkpoint", dir);
  report.Set("step", state.step);
  const nlohmann::json results = train::Evaluate(*model, valid, config.eval, cache);
  for (auto it = results.begin(); it != results.end(); ++it) report.Set(it.key(), it.value());
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  auto* train_cmd = app.add_subcommand("train", "train adapters (and LoRA) from a config");
  auto t = std::make_shared<TrainArgs>();
  t->config.Add(train_cmd, "samples/configs/asr_tiny.yaml");
  train_cmd->add_flag("--resume", t->resume, "continue the run in output_dir from its latest checkpoint");
  train_cmd->callback([t, &common] {
    std::string effective;
    const auto config = t->config.Load<train::TrainConfig>(&effective);
    const train::TrainResult result = train::Train(config, effective, t->resume, common.json);
    Report report(common.json);
    const nlohmann::json summary = result.ToJson();
    for (auto it = summary.begin(); it != summary.end(); ++it) report.Set(it.key(), it.value());
    report.Emit();
  });

  auto* eval_cmd = app.add_subcommand("eval", "evaluate a checkpoint on a config's valid sources");
  auto e = std::make_shared<EvalArgs>();
  e->config.Add(eval_cmd, "samples/configs/asr_tiny.yaml");
  eval_cmd->add_option("--checkpoint", e->checkpoint, "checkpoint directory (default: latest)");
  eval_cmd->callback([e, &common] { RunEval(*e, common.json); });
});

}  // namespace
}  // namespace slm::cli
