// slm tts --model RUN_DIR --text TEXT --out WAV [--decoder DIR] [--stream] [--max-units N]
//   Speaks TEXT with a trained TTS adapter: RUN_DIR is a `slm train` run with model.speech_units
//   (its config.yaml, adapters/ and the "tts" prompt of adapters/tasks.json); the unit decoder is
//   --decoder or the config's model.unit_decoder; Griffin-Lim makes the waveform. --stream prints
//   each audio chunk as it is produced (time since the start, samples).
#include <cstdio>
#include <filesystem>

#include "adapters/tts.h"
#include "audio/audio_io.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json_report.h"
#include "core/strings.h"

namespace slm::cli {
namespace {

namespace stdfs = std::filesystem;

struct TtsCommand {
  std::string run, text, out, decoder;
  bool stream = false;
  adapters::TtsOptions options;
};

void RunTts(const TtsCommand& c, bool json) {
  const std::string config_path = c.run + "/config.yaml", adapters_dir = c.run + "/adapters";
  Check(stdfs::is_regular_file(config_path), "--model '", c.run, "': no config.yaml (give a `slm train` run directory)");
  Check(stdfs::is_directory(adapters_dir), "--model '", c.run, "': no adapters/ (the run has not finished)");
  config::Document doc = config::Document::LoadFile(config_path);
  adapters::MultimodalConfig model_config;
  model_config.Load(doc.Root().Child("model"));
  doc.CheckAllConsumed("model");
  const std::string decoder_dir = c.decoder.empty() ? model_config.unit_decoder : c.decoder;
  Check(!decoder_dir.empty(), config_path, ": no model.unit_decoder; give --decoder DIR");
  adapters::TtsOptions options = c.options;
  if (stdfs::is_regular_file(adapters_dir + "/tasks.json")) {
    const nlohmann::json tasks = fs::ReadJson(adapters_dir + "/tasks.json");
    if (tasks.contains("tasks") && tasks["tasks"].contains("tts")) options.prompt_template = tasks["tasks"]["tts"];
  }

  adapters::MultimodalLM model(model_config);
  model->LoadAdapters(adapters_dir);
  model->eval();
  adapters::TtsPipeline tts(model, decoder_dir);

  Report report(json);
  const adapters::TtsResult result = tts.Synthesize(c.text, options, [&](const std::vector<float>& chunk) {
    if (c.stream) report.Line(Str("chunk: ", chunk.size(), " samples"));
  });
  audio::Write(c.out, result.samples, result.sample_rate);
  const double audio_seconds = double(result.samples.size()) / result.sample_rate;
  report.Set("out", c.out);
  report.Set("units", result.units);
  report.Set("text_pieces", result.pieces);
  report.Set("chunks", result.chunks);
  report.Set("audio_seconds", audio_seconds);
  report.Set("synthesis_seconds", result.seconds);
  report.Set("real_time_factor", audio_seconds > 0 ? result.seconds / audio_seconds : 0.0);
  report.Set("first_chunk_seconds", result.first_chunk_seconds);
  report.Set("finish_reasons", result.finish_reasons);
  report.Set("contexts", result.contexts);
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  auto* cmd = app.add_subcommand("tts", "speak text with a trained TTS adapter (units -> mel -> Griffin-Lim)");
  auto c = std::make_shared<TtsCommand>();
  cmd->add_option("--model", c->run, "a `slm train` run directory with model.speech_units")->required();
  cmd->add_option("--text", c->text, "what to say")->required();
  cmd->add_option("--out", c->out, "output WAV (16 kHz)")->required();
  cmd->add_option("--decoder", c->decoder, "unit decoder directory (default: the config's model.unit_decoder)");
  cmd->add_flag("--stream", c->stream, "print each audio chunk as it is produced");
  cmd->add_option("--max-units", c->options.max_units, "units per text piece (not word-cued)")->capture_default_str();
  cmd->add_option("--max-word-units", c->options.max_word_units, "word-cued: units per word")->capture_default_str();
  cmd->add_option("--max-characters", c->options.max_characters, "characters per text piece")->capture_default_str();
  cmd->add_option("--stream-units", c->options.stream_units, "units per audio chunk")->capture_default_str();
  cmd->add_option("--temperature", c->options.temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--seed", c->options.seed, "sampling seed")->capture_default_str();
  cmd->callback([c, &common] { RunTts(*c, common.json); });
});

}  // namespace
}  // namespace slm::cli
