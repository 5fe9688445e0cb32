// slm audio pretrain-encoder --config FILE [--set k=v ...]
#include "cli/command.h"
#include "core/json_report.h"
#include "train/speech_encoder_pretrain.h"

namespace slm::cli {
namespace {

Registrar registrar([](CLI::App& app, Common& common) {
  CLI::App* audio = Group(app, "audio", "audio front-end and speech encoder tools");
  auto* cmd = audio->add_subcommand(
      "pretrain-encoder", "train the tiny speech encoder with a CTC head on espeak-ng speech");
  auto args = std::make_shared<ConfigArgs>();
  args->Add(cmd, "samples/configs/speech_encoder_tiny.yaml");
  cmd->callback([args, &common] {
    std::string effective;
    const auto config = args->Load<train::SpeechEncoderPretrainConfig>(&effective);
    const auto result = train::PretrainSpeechEncoder(config, effective, common.json);
    Report report(common.json);
    const nlohmann::json summary = result.ToJson();
    for (auto it = summary.begin(); it != summary.end(); ++it) report.Set(it.key(), it.value());
    report.Emit();
  });
});

}  // namespace
}  // namespace slm::cli
