// slm audio vocode (--mel FILE.safetensors | --audio FILE) --out WAV [--iterations N]
//   log-mel features (`slm audio mel --normalization fixed_floor --out`) -> audio with the default
//   Griffin-Lim vocoder; --audio re-synthesizes a recording from its own log-mel (the vocoder's
//   ceiling, for listen checks). Units -> audio arrives with the unit decoder.
#include <torch/torch.h>

#include "audio/audio_io.h"
#include "audio/log_mel.h"
#include "audio/vocoder.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/json_report.h"
#include "core/safetensors.h"

namespace slm::cli {
namespace {

struct VocodeCommand {
  std::string mel, audio, out;
  audio::GriffinLimOptions options;
};

void RunVocode(const VocodeCommand& c, bool json) {
  Check(c.mel.empty() != c.audio.empty(), "give exactly one of --mel and --audio");
  audio::LogMelOptions features;
  features.normalization = audio::MelNormalization::kFixedFloor;
  torch::Tensor log_mel;
  if (!c.mel.empty()) {
    safetensors::Reader reader(c.mel);
    Check(reader.Has("features"), c.mel, ": no tensor 'features' (write it with `slm audio mel --out`)");
    const auto metadata = reader.Metadata();
    const auto it = metadata.find("normalization");
    Check(it == metadata.end() || it->second != "whisper", c.mel, ": whisper-normalised features cannot be ",
          "inverted; compute them with --normalization fixed_floor");
    if (it != metadata.end() && it->second == "none") features.normalization = audio::MelNormalization::kNone;
    log_mel = reader.Get("features").to(torch::kFloat);
  } else {
    log_mel = audio::LogMel(features).Compute(audio::Read(c.audio).samples);
  }
  const audio::GriffinLimVocoder vocoder(features, c.options);
  const double start = bench::NowSeconds();
  const std::vector<float> samples = vocoder.Synthesize(log_mel);
  const double seconds = bench::NowSeconds() - start;
  audio::Write(c.out, samples, vocoder.SampleRate());
  Report report(json);
  report.Set("out", c.out);
  report.Set("frames", log_mel.size(0));
  report.Set("audio_seconds", double(samples.size()) / vocoder.SampleRate());
  report.Set("iterations", c.options.iterations);
  report.Set("rtf", seconds / std::max(1e-9, double(samples.size()) / vocoder.SampleRate()));
  report.Emit();
}

Registrar reg([](CLI::App& app, Common& common) {
  auto c = std::make_shared<VocodeCommand>();
  auto* cmd = Group(app, "audio", "audio front-end and speech encoder tools")
                  ->add_subcommand("vocode", "log-mel features -> audio (Griffin-Lim)");
  cmd->add_option("--mel", c->mel, "features file from `slm audio mel --normalization fixed_floor --out`");
  cmd->add_option("--audio", c->audio, "re-synthesize this recording from its own log-mel");
  cmd->add_option("--out", c->out, "output audio file (.wav, .flac, .ogg)")->required();
  cmd->add_option("--iterations", c->options.iterations, "Griffin-Lim iterations")->capture_default_str();
  cmd->add_option("--momentum", c->options.momentum, "fast Griffin-Lim momentum (0 = classic)")->capture_default_str();
  cmd->add_option("--seed", c->options.seed, "initial phase seed");
  cmd->callback([c, &common] { RunVocode(*c, common.json); });
});

}  // namespace
}  // namespace slm::cli
