// slm audio vocode (--units F.json --decoder DIR | --mel FILE.safetensors | --audio FILE) --out WAV
//   log-mel features (`slm audio mel --normalization fixed_floor --out`) -> audio with the default
//   Griffin-Lim vocoder; --audio re-synthesizes a recording from its own log-mel (the vocoder's
//   ceiling, for listen checks); --units decodes a unit file (`slm audio units encode --out`) with a
//   trained unit decoder first (its tokenizer hash must match the file's).
#include <torch/torch.h>

#include "audio/audio_io.h"
#include "audio/log_mel.h"
#include "audio/unit_decoder.h"
#include "audio/vocoder.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json_report.h"
#include "core/safetensors.h"
#include "core/timer.h"

namespace slm::cli {
namespace {

struct VocodeCommand {
  std::string mel, audio, units, decoder, out;
  audio::GriffinLimOptions options;
};

void RunVocode(const VocodeCommand& c, bool json) {
  Check(int(!c.mel.empty()) + int(!c.audio.empty()) + int(!c.units.empty()) == 1,
        "give exactly one of --units, --mel and --audio");
  Check(c.units.empty() == c.decoder.empty(), "--units needs --decoder (and --decoder needs --units)");
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
  } else if (!c.audio.empty()) {
    log_mel = audio::LogMel(features).Compute(audio::Read(c.audio).samples);
  } else {
    const nlohmann::json file = fs::ReadJson(c.units);
    Check(file.is_object() && file.contains("units") && file.contains("tokenizer_hash"), c.units,
          ": not a unit file (write one with `slm audio units encode --out`)");
    std::vector<int64_t> ids;
    try {
      ids = file.at("units").get<std::vector<int64_t>>();
      if (file.contains("durations")) {
        const auto durations = file.at("durations").get<std::vector<int64_t>>();
        Check(durations.size() == ids.size(), c.units, ": ", durations.size(), " durations for ", ids.size(), " units");
        std::vector<audio::UnitRun> runs;
        for (size_t i = 0; i < ids.size(); ++i) {
          Check(durations[i] >= 1 && durations[i] <= 10000, c.units, ": duration ", i, " is ", durations[i]);
          runs.push_back({ids[i], durations[i]});
        }
        ids = audio::ExpandRuns(runs);
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(Str(c.units, ": ", e.what()));
    }
    audio::UnitDecoder decoder(audio::UnitDecoderImpl::Load(c.decoder, file.at("tokenizer_hash").get<std::string>()));
    log_mel = decoder->Decode(ids);
  }
  const audio::GriffinLimVocoder vocoder(features, c.options);
  const double start = NowSeconds();
  const std::vector<float> samples = vocoder.Synthesize(log_mel);
  const double seconds = NowSeconds() - start;
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
  cmd->add_option("--units", c->units, "unit file from `slm audio units encode --out`");
  cmd->add_option("--decoder", c->decoder, "unit decoder directory (`slm audio units train-decoder`)");
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
