// slm data synth --text FILE --out DIR [--voices a,b] [--exclude-voices c] [--limit N] [--seed S]: espeak-ng speech with
// word timings and an ASR manifest (datagen/speech_corpus.h).
#include <cmath>
#include <memory>
#include <string>

#include "cli/command.h"
#include "core/error.h"
#include "core/json_report.h"
#include "core/strings.h"
#include "datagen/speech_corpus.h"

namespace {

struct SynthOptions {
  std::string text;
  std::string out;
  std::string voices;
  std::string exclude_voices;
  int64_t limit = 0;
  uint64_t seed = 0;
  bool fixed_prosody = false;
};

constexpr size_t kSkippedShown = 20;

// Reported numbers carry the digits that mean something (ms for seconds, tenths for rates).
double Round(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

static slm::cli::Registrar registrar([](CLI::App& app, slm::cli::Common& common) {
  CLI::App* cmd = slm::cli::Group(app, "data", "make training data offline")
                      ->add_subcommand("synth", "espeak-ng speech + word timings + manifest");
  auto opts = std::make_shared<SynthOptions>();
  cmd->add_option("--text", opts->text, "text file, one sentence per line")->required();
  cmd->add_option("--out", opts->out, "output directory (wav/ and manifest.jsonl)")->required();
  cmd->add_option("--voices", opts->voices,
                  "comma-separated espeak-ng voices, e.g. en-us+f2,en-gb-x-rp (default: all "
                  "English voices); +VARIANT = that speaker on every accent, e.g. +f5");
  cmd->add_option("--exclude-voices", opts->exclude_voices,
                  "comma-separated voices (or +VARIANT) to leave out, e.g. a held-out test speaker");
  cmd->add_option("--limit", opts->limit, "synthesize only the first N sentences (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", opts->seed, "speaker assignment seed");
  cmd->add_flag("--fixed-prosody", opts->fixed_prosody,
                "espeak-ng's default rate, pitch and range for every utterance (one steady voice, for TTS data)");
  cmd->callback([opts, &common] {
    slm::datagen::SpeechCorpusOptions options;
    options.text_path = opts->text;
    options.out_dir = opts->out;
    options.voices = slm::Split(opts->voices, ", ");
    options.exclude_voices = slm::Split(opts->exclude_voices, ", ");
    options.limit = opts->limit;
    options.seed = opts->seed;
    options.fixed_prosody = opts->fixed_prosody;
    const slm::datagen::SpeechCorpusStats stats = slm::datagen::SynthesizeCorpus(options);

    slm::Report report(common.json);
    report.Set("manifest", stats.manifest_path);
    report.Set("utterances", stats.utterances);
    report.Set("audio_seconds", Round(stats.audio_seconds, 3));
    report.Set("wall_seconds", Round(stats.wall_seconds, 3));
    report.Set("speech_seconds_per_second", Round(stats.SpeechSecondsPerSecond(), 1));
    report.Set("real_time_factor", Round(stats.RealTimeFactor(), 5));
    report.Set("voices_used", static_cast<int64_t>(stats.per_voice.size()));
    nlohmann::json per_voice = nlohmann::json::object();
    for (const auto& [voice, count] : stats.per_voice) per_voice[voice] = count;
    if (common.json) report.Set("per_voice", per_voice);
    report.Set("skipped", static_cast<int64_t>(stats.skipped.size()));
    nlohmann::json skipped = nlohmann::json::array();
    for (size_t i = 0; i < stats.skipped.size() && i < kSkippedShown; ++i)
      skipped.push_back(slm::Str("line ", stats.skipped[i].line, ": ", stats.skipped[i].reason));
    if (common.json) {
      report.Set("skipped_reasons", skipped);
    } else {
      for (const auto& reason : skipped) report.Line("  skipped " + reason.get<std::string>());
      if (stats.skipped.size() > kSkippedShown)
        report.Line(slm::Str("  ... and ", stats.skipped.size() - kSkippedShown, " more"));
    }
    report.Emit();
  });
});

}  // namespace
