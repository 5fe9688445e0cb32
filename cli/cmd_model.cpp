// slm model summary --config FILE [--set k=v ...]   trainable vs frozen parameters and memory of
//   the `model` section of a config (a training config's other sections are left to the trainer).
// slm model generate --config FILE [--adapters DIR] --prompt "<speech> ..." [--audio WAV ...]
//   [--image PNG ...]   continue a multimodal prompt (placeholders filled in order).
#include <cstdio>
#include <iostream>

#include "audio/audio_io.h"

#include "adapters/multimodal.h"
#include "cli/command.h"
#include "core/json_report.h"

namespace slm::cli {
namespace {

std::string Megabytes(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f MB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

adapters::MultimodalConfig LoadModelSection(const ConfigArgs& args) {
  auto doc = config::Document::LoadFile(args.config);
  doc.ApplyOverrides(args.overrides);
  adapters::MultimodalConfig config;
  config.Load(doc.Root().Child("model"));
  doc.CheckAllConsumed("model");
  return config;
}

void RunSummary(const ConfigArgs& args, bool json) {
  const adapters::MultimodalConfig config = LoadModelSection(args);
  adapters::MultimodalLM model(config);
  const adapters::ModelSummary s = model->Summary();

  Report report(json);
  char line[256];
  std::snprintf(line, sizeof(line), "%-28s %14s %14s %12s", "component", "parameters", "trainable",
                "memory");
  report.Line(line);
  for (const auto& c : s.components) {
    std::snprintf(line, sizeof(line), "%-28s %14lld %14lld %12s", c.name.c_str(),
                  static_cast<long long>(c.parameters), static_cast<long long>(c.trainable),
                  Megabytes(c.bytes).c_str());
    report.Line(line);
  }
  const nlohmann::json summary = s.ToJson();
  for (auto it = summary.begin(); it != summary.end(); ++it)
    if (it.key() != "components" || json) report.Set(it.key(), it.value());
  report.Set("trainable_fraction",
             s.total_parameters > 0 ? double(s.trainable_parameters) / s.total_parameters : 0.0);
  report.Set("parameter_memory", Megabytes(s.parameter_bytes));
  report.Set("training_state_memory", Megabytes(s.training_state_bytes));
  if (model->HasSpeech())
    report.Set("speech_positions_per_second", model->SpeechPositionsPerSecond());
  report.Set("dtype", config.dtype);
  report.Set("device", config.device);
  report.Emit();
}

struct GenerateArgs {
  ConfigArgs config;
  std::string adapters;
  std::string prompt;
  std::vector<std::string> audio, images;
  text::GenerationOptions options;
};

void RunGenerate(const GenerateArgs& args, bool json) {
  adapters::MultimodalLM model(LoadModelSection(args.config));
  if (!args.adapters.empty()) model->LoadAdapters(args.adapters);
  model->eval();
  adapters::MultimodalExample example;
  example.prompt = args.prompt;
  for (const std::string& path : args.audio)
    example.speech.push_back(model->SpeechFeatures(audio::Read(path).samples));
  for (const std::string& path : args.images) example.images.push_back(model->ImagePixels(path));
  const text::Tokenizer& tokenizer = model->Tokenizer();
  std::vector<int64_t> tokens;
  std::string printed;
  auto callback = [&](int64_t, int64_t token) {
    tokens.push_back(token);
    const std::string text = tokenizer.Decode(tokens, true);
    if (!json && text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::cout << text.substr(printed.size()) << std::flush;
      printed = text;
    }
    return true;
  };
  const text::GenerationResult result = model->Generate({example}, args.options, callback);
  if (!json) std::cout << "\n";
  Report report(json);
  report.Set("completion", tokenizer.Decode(result.tokens[0], true));
  report.Set("generated_tokens", result.GeneratedTokens());
  report.Set("finish_reason", result.finish_reasons[0]);
  report.Set("prefill_seconds", result.prefill_seconds);
  report.Set("decode_seconds", result.decode_seconds);
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  CLI::App* model = Group(app, "model", "multimodal model tools");
  auto* summary = model->add_subcommand(
      "summary", "trainable vs frozen parameter counts and memory of a config's model section");
  auto args = std::make_shared<ConfigArgs>();
  args->Add(summary, "samples/configs/multimodal_tiny.yaml");
  summary->callback([args, &common] { RunSummary(*args, common.json); });

  auto* generate = model->add_subcommand(
      "generate", "continue a prompt with <speech>/<image> placeholders (KV cache, streamed)");
  auto g = std::make_shared<GenerateArgs>();
  g->config.Add(generate, "samples/configs/multimodal_tiny.yaml");
  generate->add_option("--adapters", g->adapters, "trained adapter directory (SaveAdapters)");
  generate->add_option("--prompt", g->prompt, "prompt text with placeholders")->required();
  generate->add_option("--audio", g->audio, "audio file per <speech>, in order");
  generate->add_option("--image", g->images, "image file per <image>, in order");
  generate->add_option("--max-new-tokens", g->options.max_new_tokens)->check(CLI::Range(0, 1 << 20));
  generate->add_option("--temperature", g->options.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  generate->add_option("--seed", g->options.seed);
  generate->callback([g, &common] { RunGenerate(*g, common.json); });
});

}  // namespace
}  // namespace slm::cli
