// slm bench encode: speech and image encoder throughput at batch 1 and 16, each against named
// baselines measured in the same run:
//   speech: our variable-length encoder on N-second clips vs the same encoder on clips padded to
//           Whisper's fixed 30 s (what transformers' WhisperEncoder requires), and vs
//           transformers' WhisperEncoder itself (bench/encode_transformers.py in the project
//           virtualenv, same shapes, same thread count / device / dtype);
//   image:  our CLIP tower vs transformers' CLIPVisionModel.
// Weights are random (throughput does not depend on them); --preset base gives whisper-base and
// CLIP ViT-B/16 shapes, the default the embedded tiny encoders' shapes.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "audio/whisper_encoder.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/device.h"
#include "core/error.h"
#include "core/json_report.h"
#include "core/strings.h"
#include "vision/clip_vision.h"

namespace slm::bench {
namespace {

struct EncodeBenchOptions {
  std::string preset = "tiny";  // tiny | base
  double seconds = 5.0;         // speech clip length
  std::vector<int64_t> batch_sizes = {1, 16};
  int repeats = 3;
  std::string device = "cpu";
  std::string dtype = "float32";
  std::string python = ".venv/bin/python";  // "none" = no transformers baseline
  std::string script = "bench/encode_transformers.py";
  std::string baseline_mkl = "both";  // stock | same | both (bench_util.h PythonBaselines)
  std::string mkl_preload;
};

struct Shapes {
  audio::WhisperEncoderConfig speech;
  vision::ClipVisionConfig image;
};

Shapes ShapesFor(const std::string& preset) {
  Shapes s;
  if (preset == "base") {  // whisper-base encoder, CLIP ViT-B/16
    s.speech.d_model = 512;
    s.speech.encoder_layers = 6;
    s.speech.encoder_attention_heads = 8;
    s.speech.encoder_ffn_dim = 2048;
    s.image.hidden_size = 768;
    s.image.intermediate_size = 3072;
    s.image.num_hidden_layers = 12;
    s.image.num_attention_heads = 12;
    s.image.image_size = 224;
    s.image.patch_size = 16;
  } else {
    Check(preset == "tiny", "--preset must be tiny or base, got '", preset, "'");
    s.speech.d_model = 192;
    s.speech.encoder_layers = 4;
    s.speech.encoder_attention_heads = 4;
    s.speech.encoder_ffn_dim = 768;
    s.image.hidden_size = 192;
    s.image.intermediate_size = 768;
    s.image.num_hidden_layers = 4;
    s.image.num_attention_heads = 4;
    s.image.image_size = 64;
    s.image.patch_size = 8;
  }
  s.speech.max_source_positions = 1500;
  return s;
}

// transformers' numbers for the same shapes, or an empty object when the baseline cannot run.
nlohmann::json RunTransformers(const EncodeBenchOptions& o, const Shapes& s, const std::string& preload) {
  std::string batches;
  for (int64_t b : o.batch_sizes) batches += (batches.empty() ? "" : ",") + std::to_string(b);
  return RunPythonJson(
      o.python, o.script,
      Str("--device ", o.device, " --dtype ", o.dtype, " --threads ", torch::get_num_threads(), " --repeats ",
          o.repeats, " --batch-sizes ", batches, " --speech-d-model ", s.speech.d_model, " --speech-layers ",
          s.speech.encoder_layers, " --speech-heads ", s.speech.encoder_attention_heads, " --speech-ffn ",
          s.speech.encoder_ffn_dim, " --image-hidden ", s.image.hidden_size, " --image-layers ",
          s.image.num_hidden_layers, " --image-heads ", s.image.num_attention_heads, " --image-ffn ",
          s.image.intermediate_size, " --image-size ", s.image.image_size, " --patch ", s.image.patch_size),
      preload);
}

void RunEncodeBench(const EncodeBenchOptions& o, bool json) {
  Report report(json);
  const torch::Device device = ParseDevice(o.device);
  const torch::ScalarType dtype = ParseDtype(o.dtype);
  const Shapes s = ShapesFor(o.preset);
  Check(o.seconds > 0 && o.seconds <= 30, "--seconds must be in (0, 30], got ", o.seconds);
  torch::manual_seed(0);
  audio::WhisperEncoder speech(s.speech);
  speech->to(device, dtype);
  speech->Freeze();
  vision::ClipVisionModel image(s.image);
  image->to(device, dtype);
  image->Freeze();
  torch::NoGradGuard no_grad;

  report.Line(Str("encoder throughput, preset ", o.preset, ", median of ", o.repeats, ", ",
                  torch::get_num_threads(), " threads on ", device.str(), " ", o.dtype));
  report.Set("preset", o.preset);
  report.Set("device", device.str());
  report.Set("dtype", o.dtype);
  report.Set("threads", torch::get_num_threads());
  report.Set("speech_parameters", speech->ParameterCount());
  report.Set("image_parameters", image->ParameterCount());
  report.Set("clip_seconds", o.seconds);
  report.Set("mkl_dispatch", MklDispatchState().mode);
  std::vector<std::pair<std::string, nlohmann::json>> references;  // report-key suffix, numbers
  for (const PythonBaseline& baseline : PythonBaselines(o.baseline_mkl, !device.is_cuda(), o.mkl_preload)) {
    nlohmann::json numbers = RunTransformers(o, s, baseline.preload);
    if (!numbers.empty()) references.emplace_back(baseline.suffix, std::move(numbers));
  }
  report.Set("transformers_baseline", !references.empty());

  const int64_t frames = static_cast<int64_t>(o.seconds * 100.0);
  for (const int64_t batch : o.batch_sizes) {
    const torch::Tensor clip = torch::randn({batch, frames, 80}).to(device, dtype);
    const torch::Tensor padded = torch::randn({batch, 3000, 80}).to(device, dtype);
    const double variable = MedianSeconds(o.repeats, [&] {
      speech->forward(clip);
      Sync(device);
    });
    const double fixed = MedianSeconds(o.repeats, [&] {
      speech->forward(padded);
      Sync(device);
    });
    const std::string key = "speech.batch_" + std::to_string(batch);
    const double audio = o.seconds * batch;
    report.Set(key + ".audio_seconds_per_second", audio / variable);
    report.Set(key + ".padded_30s_audio_seconds_per_second", audio / fixed);
    report.Set(key + ".speedup_vs_padded_30s", fixed / variable);
    for (const auto& [suffix, reference] : references) {
      if (!reference.contains("speech") || !reference["speech"].contains(std::to_string(batch))) continue;
      const double theirs = reference["speech"][std::to_string(batch)].get<double>();
      report.Set(key + ".transformers" + suffix + "_audio_seconds_per_second", audio / theirs);
      report.Set(key + ".speedup_vs_transformers" + suffix, theirs / variable);
      report.Set(key + ".padded_speedup_vs_transformers" + suffix, theirs / fixed);
    }

    const torch::Tensor pixels =
        torch::randn({batch, 3, s.image.image_size, s.image.image_size}).to(device, dtype);
    const double ours = MedianSeconds(o.repeats, [&] {
      image->Features(pixels);
      Sync(device);
    });
    const std::string ikey = "image.batch_" + std::to_string(batch);
    report.Set(ikey + ".images_per_second", batch / ours);
    for (const auto& [suffix, reference] : references) {
      if (!reference.contains("image") || !reference["image"].contains(std::to_string(batch))) continue;
      const double theirs = reference["image"][std::to_string(batch)].get<double>();
      report.Set(ikey + ".transformers" + suffix + "_images_per_second", batch / theirs);
      report.Set(ikey + ".speedup_vs_transformers" + suffix, theirs / ours);
    }
  }
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd = cli::Group(app, "bench", "benchmarks, each against a baseline measured in the same run")
                  ->add_subcommand("encode",
                                   "speech/image encoder throughput vs 30 s padding and transformers");
  auto o = std::make_shared<EncodeBenchOptions>();
  cmd->add_option("--preset", o->preset, "tiny (the embedded encoders) | base (whisper-base, ViT-B/16)")
      ->capture_default_str();
  cmd->add_option("--seconds", o->seconds, "speech clip length")->capture_default_str();
  cmd->add_option("--batch-sizes", o->batch_sizes, "batch sizes")->delimiter(',')->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "timed repeats (median)")->check(CLI::Range(1, 100));
  cmd->add_option("--device", o->device, "cpu|cuda|cuda:N|auto")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "float32|bfloat16|float16")->capture_default_str();
  cmd->add_option("--python", o->python, "python with transformers for the baseline ('none' = skip)")
      ->capture_default_str();
  cmd->add_option("--script", o->script, "the baseline script")->capture_default_str();
  AddBaselineMklOptions(cmd, &o->baseline_mkl, &o->mkl_preload);
  cmd->callback([o, &common] { RunEncodeBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
