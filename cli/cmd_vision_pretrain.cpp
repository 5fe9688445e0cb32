// slm vision pretrain-encoder --config FILE [--set k=v ...]
#include "cli/command.h"
#include "train/image_encoder_pretrain.h"

namespace slm::cli {
namespace {

Registrar registrar([](CLI::App& app, Common& common) {
  AddConfigJob<train::ImageEncoderPretrainConfig>(
      Group(app, "vision", "image encoder tools"), "pretrain-encoder",
      "train the tiny CLIP-style image tower contrastively on synthetic shapes",
      "samples/configs/image_encoder_tiny.yaml", common, train::PretrainImageEncoder);
});

}  // namespace
}  // namespace slm::cli
