// slm audio mel --in FILE [--out FILE.safetensors] [--n-mels 80|128] [--normalization ...]
#include <torch/torch.h>

#include "audio/audio_io.h"
#include "audio/log_mel.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/json_report.h"
#include "core/safetensors.h"

namespace slm::cli {
namespace {

struct MelCommand {
  std::string in, out;
  int n_mels = 80;
  std::string normalization = "whisper";
};

void RunMel(const MelCommand& c, bool json) {
  Report report(json);
  const double start = bench::NowSeconds();
  const audio::Waveform wave = audio::Read(c.in);  // resampled to 16 kHz mono
  audio::LogMelOptions options;
  options.n_mels = c.n_mels;
  options.normalization = c.normalization == "whisper"       ? audio::MelNormalization::kWhisper
                          : c.normalization == "fixed_floor" ? audio::MelNormalization::kFixedFloor
                                                             : audio::MelNormalization::kNone;
  const double compute_start = bench::NowSeconds();
  const torch::Tensor features = audio::LogMel(options).Compute(wave.samples);
  const double compute_seconds = bench::NowSeconds() - compute_start;
  if (!c.out.empty()) {
    safetensors::Save(c.out, {{"features", features}},
                      {{"layout", "[frames, n_mels]"}, {"source", c.in},
                       {"normalization", c.normalization}, {"sample_rate", "16000"},
                       {"hop_length", "160"}, {"n_fft", "400"}});
  }
  const audio::FileInfo info = audio::Probe(c.in);
  report.Set("input", c.in);
  report.Set("input_format", info.format);
  report.Set("input_sample_rate", info.sample_rate);
  report.Set("input_channels", info.channels);
  report.Set("audio_seconds", wave.Seconds());
  report.Set("frames", features.size(0));
  report.Set("n_mels", features.size(1));
  report.Set("normalization", c.normalization);
  report.Set("min", features.min().item<double>());
  report.Set("max", features.max().item<double>());
  report.Set("mean", features.mean().item<double>());
  report.Set("std", features.std().item<double>());
  report.Set("feature_seconds", compute_seconds);
  report.Set("total_seconds", bench::NowSeconds() - start);
  if (!c.out.empty()) report.Set("output", c.out);
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  auto* cmd = Group(app, "audio", "audio front-end tools")
                  ->add_subcommand("mel", "log-mel features (Whisper front-end) of an audio file");
  auto c = std::make_shared<MelCommand>();
  cmd->add_option("--in", c->in, "audio file (wav, flac, ogg, ...; any rate, any channels)")->required();
  cmd->add_option("--out", c->out, "write features [frames, n_mels] to this .safetensors file");
  cmd->add_option("--n-mels", c->n_mels, "80 or 128")->check(CLI::IsMember({80, 128}));
  cmd->add_option("--normalization", c->normalization, "whisper|fixed_floor|none")
      ->check(CLI::IsMember({"whisper", "fixed_floor", "none"}));
  cmd->callback([c, &common] { RunMel(*c, common.json); });
});

}  // namespace
}  // namespace slm::cli
