// slm bench mel: log-mel throughput of the KissFFT path against LibTorch's torch::stft path on the
// same audio, one thread each, in one run. Goals (issue 2): speed-up >= 1.5x, real-time factor
// <= 0.002.
#include <torch/torch.h>

#include "audio/log_mel.h"
#include "audio/synthetic_signal.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/json_report.h"

namespace slm::bench {
namespace {

struct MelBenchOptions {
  double seconds = 60;
  int repeats = 7;
  int n_mels = 80;
};

void RunMelBench(const MelBenchOptions& o, bool json) {
  Report report(json);
  const int previous_threads = torch::get_num_threads();
  torch::set_num_threads(1);  // both paths single-threaded: a per-core comparison
  const std::vector<float> audio = audio::SpeechLikeSignal(o.seconds, 16000, 1);

  audio::LogMelOptions options;
  options.n_mels = o.n_mels;
  const audio::LogMel mel(options);
  torch::Tensor ours, reference;
  const double kiss = MedianSeconds(o.repeats, [&] { ours = mel.Compute(audio); });
  const double torch_stft =
      MedianSeconds(o.repeats, [&] { reference = audio::ComputeLogMelWithTorch(audio, options); });

  // The streaming path on 160 ms chunks (what the server feeds), same features up to normalisation.
  audio::LogMelOptions stream_options = options;
  stream_options.normalization = audio::MelNormalization::kFixedFloor;
  int64_t streamed_frames = 0;
  const double streaming = MedianSeconds(o.repeats, [&] {
    audio::StreamingLogMel stream(stream_options);
    streamed_frames = 0;
    for (size_t i = 0; i < audio.size(); i += 2560) {
      stream.AcceptWaveform(16000, audio.data() + i, std::min<size_t>(2560, audio.size() - i));
      streamed_frames += stream.PopFrames().size(0);
    }
    stream.InputFinished();
    streamed_frames += stream.PopFrames().size(0);
  });
  torch::set_num_threads(previous_threads);

  report.Line("log-mel on " + std::to_string(o.seconds) + " s of 16 kHz speech-like audio, " +
              std::to_string(o.n_mels) + " mels, 1 thread, median of " + std::to_string(o.repeats));
  report.Set("audio_seconds", o.seconds);
  report.Set("frames", ours.size(0));
  report.Set("kissfft_seconds", kiss);
  report.Set("torch_stft_seconds", torch_stft);
  report.Set("speedup_vs_torch_stft", torch_stft / kiss);
  report.Set("rtf_kissfft", kiss / o.seconds);
  report.Set("rtf_torch_stft", torch_stft / o.seconds);
  report.Set("streaming_160ms_seconds", streaming);
  report.Set("rtf_streaming_160ms", streaming / o.seconds);
  report.Set("streaming_frames", streamed_frames);
  report.Set("max_abs_diff_vs_torch", (ours - reference).abs().max().item<double>());
  report.Set("goal_speedup_ge_1_5x_met", torch_stft / kiss >= 1.5);
  report.Set("goal_rtf_le_0_002_met", kiss / o.seconds <= 0.002);
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd = cli::Group(app, "bench", "benchmarks, each against a baseline measured in the same run")
                  ->add_subcommand("mel", "log-mel: KissFFT path vs torch::stft path, 1 thread each");
  auto o = std::make_shared<MelBenchOptions>();
  cmd->add_option("--seconds", o->seconds, "audio length")->check(CLI::Range(1.0, 3600.0));
  cmd->add_option("--repeats", o->repeats, "timed repeats (median reported)")->check(CLI::Range(1, 100));
  cmd->add_option("--n-mels", o->n_mels, "80 or 128")->check(CLI::IsMember({80, 128}));
  cmd->callback([o, &common] { RunMelBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
