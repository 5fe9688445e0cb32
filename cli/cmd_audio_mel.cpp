// slm audio mel --in FILE [--out FILE.safetensors]   features of one file
// slm audio mel --manifest FILE.jsonl                features of every utterance, with a summary
#include <torch/torch.h>

#include "audio/audio_io.h"
#include "audio/log_mel.h"
#include "cli/command.h"
#include "core/json_report.h"
#include "core/manifest.h"
#include "core/safetensors.h"
#include "core/timer.h"

namespace slm::cli {
namespace {

struct MelCommand {
  std::string in, out, manifest;
  int n_mels = 80;
  std::string normalization = "whisper";
};

audio::LogMelOptions OptionsFor(const MelCommand& c) {
  audio::LogMelOptions options;
  options.n_mels = c.n_mels;
  options.normalization = c.normalization == "whisper"       ? audio::MelNormalization::kWhisper
                          : c.normalization == "fixed_floor" ? audio::MelNormalization::kFixedFloor
                                                             : audio::MelNormalization::kNone;
  return options;
}

void ReportStats(Report& report, const torch::Tensor& features) {
  report.Set("n_mels", features.size(1));
  report.Set("min", features.min().item<double>());
  report.Set("max", features.max().item<double>());
  report.Set("mean", features.mean().item<double>());
  report.Set("std", features.std().item<double>());
}

void RunOneFile(const MelCommand& c, Report& report) {
  const double start = NowSeconds();
  const audio::FileInfo info = audio::Probe(c.in);
  const audio::Waveform wave = audio::Read(c.in);  // resampled to 16 kHz mono
  const double compute_start = NowSeconds();
  torch::Tensor features;
  try {
    features = audio::LogMel(OptionsFor(c)).Compute(wave.samples);
  } catch (const Error& e) {
    throw Error(Str("audio file '", c.in, "': ", e.what()));
  }
  const double compute_seconds = NowSeconds() - compute_start;
  if (!c.out.empty()) {
    safetensors::Save(c.out, {{"features", features}},
                      {{"layout", "[frames, n_mels]"}, {"source", c.in},
                       {"normalization", c.normalization}, {"sample_rate", "16000"},
                       {"hop_length", "160"}, {"n_fft", "400"}});
  }
  report.Set("input", c.in);
  report.Set("input_format", info.format);
  report.Set("input_sample_rate", info.sample_rate);
  report.Set("input_channels", info.channels);
  report.Set("audio_seconds", wave.Seconds());
  report.Set("frames", features.size(0));
  report.Set("normalization", c.normalization);
  ReportStats(report, features);
  report.Set("feature_seconds", compute_seconds);
  report.Set("total_seconds", NowSeconds() - start);
  if (!c.out.empty()) report.Set("output", c.out);
}

void RunManifest(const MelCommand& c, Report& report) {
  const double start = NowSeconds();
  const manifest::Manifest m = manifest::Read(c.manifest);
  std::vector<std::vector<float>> signals;
  double audio_seconds = 0;
  for (const auto& e : m.entries) {
    Check(!e.audio.empty(), c.manifest, ": entry '", e.id, "' has no audio");
    signals.push_back(audio::Read(m.AudioPath(e)).samples);
    Check(static_cast<int>(signals.back().size()) >= audio::LogMelOptions().MinSamples(), c.manifest,
          ": entry '", e.id, "' (", m.AudioPath(e), ") is too short for one log-mel frame");
    audio_seconds += double(signals.back().size()) / audio::kSampleRate;
  }
  Check(!signals.empty(), "manifest '", c.manifest, "' has no entries");
  const double compute_start = NowSeconds();
  std::vector<torch::Tensor> features;
  try {
    features = audio::LogMel(OptionsFor(c)).ComputeBatch(signals);
  } catch (const Error& e) {
    throw Error(Str("manifest '", c.manifest, "': ", e.what()));
  }
  const double compute_seconds = NowSeconds() - compute_start;
  const torch::Tensor all = torch::cat(features, 0);
  report.Set("manifest", c.manifest);
  report.Set("utterances", static_cast<int64_t>(features.size()));
  report.Set("audio_seconds", audio_seconds);
  report.Set("frames", all.size(0));
  report.Set("normalization", c.normalization);
  ReportStats(report, all);
  report.Set("feature_seconds", compute_seconds);
  report.Set("feature_rtf", compute_seconds / audio_seconds);
  report.Set("total_seconds", NowSeconds() - start);
}

Registrar registrar([](CLI::App& app, Common& common) {
  auto* cmd = Group(app, "audio", "audio front-end and speech encoder tools")
                  ->add_subcommand("mel", "log-mel features (Whisper front-end) of audio");
  auto c = std::make_shared<MelCommand>();
  auto* in = cmd->add_option("--in", c->in, "audio file (wav, flac, ogg, ...; any rate and channels)");
  auto* manifest = cmd->add_option("--manifest", c->manifest, "JSONL manifest: all its utterances");
  in->excludes(manifest);
  cmd->add_option("--out", c->out, "write features [frames, n_mels] to this .safetensors file")
      ->needs(in);
  cmd->add_option("--n-mels", c->n_mels, "80 or 128")->check(CLI::IsMember({80, 128}));
  cmd->add_option("--normalization", c->normalization, "whisper|fixed_floor|none")
      ->check(CLI::IsMember({"whisper", "fixed_floor", "none"}));
  cmd->callback([c, &common] {
    Check(!c->in.empty() || !c->manifest.empty(), "slm audio mel: give --in FILE or --manifest FILE");
    Report report(common.json);
    if (!c->in.empty()) RunOneFile(*c, report);
    else RunManifest(*c, report);
    report.Emit();
  });
});

}  // namespace
}  // namespace slm::cli
