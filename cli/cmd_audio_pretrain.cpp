// slm audio pretrain-encoder --config FILE [--set k=v ...]
#include "cli/command.h"
#include "train/speech_encoder_pretrain.h"

namespace slm::cli {
namespace {

Registrar registrar([](CLI::App& app, Common& common) {
  AddConfigJob<train::SpeechEncoderPretrainConfig>(
      Group(app, "audio", "audio front-end and speech encoder tools"), "pretrain-encoder",
      "train the tiny speech encoder with a CTC head on espeak-ng speech",
      "samples/configs/speech_encoder_tiny.yaml", common, train::PretrainSpeechEncoder);
});

}  // namespace
}  // namespace slm::cli
