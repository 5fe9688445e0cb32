// slm vision pretrain-encoder --config FILE [--set k=v ...]
#include "cli/command.h"
#include "core/json_report.h"
#include "train/image_encoder_pretrain.h"

namespace slm::cli {
namespace {

Registrar registrar([](CLI::App& app, Common& common) {
  CLI::App* vision = Group(app, "vision", "image encoder tools");
  auto* cmd = vision->add_subcommand(
      "pretrain-encoder",
      "train the tiny CLIP-style image tower contrastively on synthetic shapes");
  auto args = std::make_shared<ConfigArgs>();
  args->Add(cmd, "samples/configs/image_encoder_tiny.yaml");
  cmd->callback([args, &common] {
    std::string effective;
    const auto config = args->Load<train::ImageEncoderPretrainConfig>(&effective);
    const auto result = train::PretrainImageEncoder(config, effective, common.json);
    Report report(common.json);
    const nlohmann::json summary = result.ToJson();
    for (auto it = summary.begin(); it != summary.end(); ++it) report.Set(it.key(), it.value());
    report.Emit();
  });
});

}  // namespace
}  // namespace slm::cli
