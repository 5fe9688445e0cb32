// slm model summary --config FILE [--set k=v ...]   trainable vs frozen parameters and memory of
// the `model` section of a config (a training config's other sections are left to the trainer).
#include <cstdio>

#include "adapters/multimodal.h"
#include "cli/command.h"
#include "core/json_report.h"

namespace slm::cli {
namespace {

std::string Megabytes(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f MB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

void RunSummary(const ConfigArgs& args, bool json) {
  auto doc = config::Document::LoadFile(args.config);
  doc.ApplyOverrides(args.overrides);
  adapters::MultimodalConfig config;
  config.Load(doc.Root().Child("model"));
  doc.CheckAllConsumed("model");
  adapters::MultimodalLM model(config);
  const adapters::ModelSummary s = model->Summary();

  Report report(json);
  char line[256];
  std::snprintf(line, sizeof(line), "%-28s %14s %14s %12s", "component", "parameters", "trainable",
                "memory");
  report.Line(line);
  for (const auto& c : s.components) {
    std::snprintf(line, sizeof(line), "%-28s %14lld %14lld %12s", c.name.c_str(),
                  static_cast<long long>(c.parameters), static_cast<long long>(c.trainable),
                  Megabytes(c.bytes).c_str());
    report.Line(line);
  }
  const nlohmann::json summary = s.ToJson();
  for (auto it = summary.begin(); it != summary.end(); ++it)
    if (it.key() != "components" || json) report.Set(it.key(), it.value());
  report.Set("trainable_fraction",
             s.total_parameters > 0 ? double(s.trainable_parameters) / s.total_parameters : 0.0);
  report.Set("parameter_memory", Megabytes(s.parameter_bytes));
  report.Set("training_state_memory", Megabytes(s.training_state_bytes));
  if (model->HasSpeech())
    report.Set("speech_positions_per_second", model->SpeechPositionsPerSecond());
  report.Set("dtype", config.dtype);
  report.Set("device", config.device);
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  CLI::App* model = Group(app, "model", "multimodal model tools");
  auto* summary = model->add_subcommand(
      "summary", "trainable vs frozen parameter counts and memory of a config's model section");
  auto args = std::make_shared<ConfigArgs>();
  args->Add(summary, "samples/configs/multimodal_tiny.yaml");
  summary->callback([args, &common] { RunSummary(*args, common.json); });
});

}  // namespace
}  // namespace slm::cli
