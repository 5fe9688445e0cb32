// slm text pretrain --config FILE [--set k=v ...]
// slm text ppl --model DIR --data FILE [--seq-len N]
// slm text generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] ...
#include <torch/torch.h>

#include <iostream>

#include "cli/command.h"
#include "core/config.h"
#include "core/device.h"
#include "core/json_report.h"
#include "text/llama.h"
#include "text/generate.h"
#include "text/lm_data.h"
#include "train/lm_pretrain.h"
#include "text/tokenizer.h"

namespace slm::cli {
namespace {

struct PplCommand {
  std::string model, data;
  int64_t seq_len = 128;
  int64_t batch_size = 16;
};

void RunPpl(const PplCommand& cmd, bool json) {
  const text::Tokenizer tokenizer = text::Tokenizer::Load(cmd.model);
  text::LlamaModel model = text::LoadLlama(cmd.model);
  model->Freeze();
  Check(cmd.seq_len + 1 <= model->Config().max_position_embeddings, "--seq-len ", cmd.seq_len,
        " + 1 exceeds the model's max_position_embeddings (", model->Config().max_position_embeddings, ")");
  const auto stream = text::TokenizeFile(
      cmd.data, [&](const std::string& line) { return tokenizer.Encode(line, true, true); });
  const torch::Tensor windows = text::PackWindows(stream, cmd.seq_len + 1, true);
  const text::PerplexityResult r = text::Perplexity(model, windows, cmd.batch_size);
  Report report(json);
  report.Set("model", cmd.model);
  report.Set("data", cmd.data);
  report.Set("tokens", static_cast<int64_t>(stream.size()));
  report.Set("predicted_tokens", r.predicted_tokens);
  report.Set("mean_nll", r.mean_nll);
  report.Set("perplexity", r.perplexity);
  report.Emit();
}

struct GenerateCommand {
  std::string model;
  std::vector<std::string> prompts;
  text::GenerationOptions options;
  std::string dtype = "float32";
  std::string device = "cpu";
};

void RunGenerate(const GenerateCommand& cmd, bool json) {
  const text::Tokenizer tokenizer = text::Tokenizer::Load(cmd.model);
  text::LlamaModel model = text::LoadLlama(cmd.model, ParseDevice(cmd.device), ParseDtype(cmd.dtype));
  model->Freeze();
  std::vector<std::vector<int64_t>> prompts;
  // The tokenizer's own special tokens: BOS for Llama-style tokenizers, none for Qwen's.
  for (const auto& p : cmd.prompts) prompts.push_back(tokenizer.EncodeWithSpecialTokens(p));
  text::GenerationOptions options = cmd.options;
  if (options.stop_token_ids.empty()) options.stop_token_ids = tokenizer.EosIds();
  // Continuations are decoded together with their prompt and the prompt's text is cut off, so
  // that the space sentencepiece encodes in a word's first piece ("▁word") is kept.
  auto completion_of = [&](size_t row, const std::vector<int64_t>& generated) {
    std::vector<int64_t> all = prompts[row];
    const std::string prompt_text = tokenizer.Decode(all, true);
    all.insert(all.end(), generated.begin(), generated.end());
    const std::string text = tokenizer.Decode(all, true);
    return text.compare(0, prompt_text.size(), prompt_text) == 0 ? text.substr(prompt_text.size())
                                                                 : tokenizer.Decode(generated, true);
  };
  // One prompt streams its continuation to stdout token by token (the per-token callback);
  // several prompts print when all are done.
  const bool stream = !json && prompts.size() == 1;
  std::vector<int64_t> shown;
  std::string printed;
  auto callback = [&](int64_t, int64_t token) {
    if (!stream) return true;
    shown.push_back(token);
    const std::string text = completion_of(0, shown);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::cout << text.substr(printed.size()) << std::flush;
      printed = text;
    }
    return true;
  };
  if (stream) std::cout << cmd.prompts[0] << std::flush;
  const text::GenerationResult result = text::Generate(model, prompts, options, callback);
  if (stream) std::cout << "\n";
  Report report(json);
  nlohmann::json outputs = nlohmann::json::array();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string completion = completion_of(i, result.tokens[i]);
    outputs.push_back({{"prompt", cmd.prompts[i]}, {"completion", completion},
                       {"tokens", result.tokens[i].size()}, {"finish_reason", result.finish_reasons[i]}});
    if (!stream) report.Line(cmd.prompts[i] + completion);
  }
  if (json) report.Set("outputs", outputs);
  report.Set("generated_tokens", result.GeneratedTokens());
  report.Set("prefill_seconds", result.prefill_seconds);
  report.Set("decode_seconds", result.decode_seconds);
  report.Set("decode_tokens_per_second",
             result.decode_seconds > 0 ? (result.GeneratedTokens() - int64_t(prompts.size())) / result.decode_seconds : 0.0);
  report.Emit();
}

Registrar registrar([](CLI::App& app, Common& common) {
  CLI::App* text = Group(app, "text", "text backbone tools");
  AddConfigJob<train::LmPretrainConfig>(text, "pretrain",
                                     "train a small Llama from scratch on WordNet text",
                                     "samples/configs/backbone_tiny.yaml", common, train::PretrainLm);

  auto* ppl = text->add_subcommand("ppl", "perplexity of a model on a text file (one sentence per line)");
  auto q = std::make_shared<PplCommand>();
  ppl->add_option("--model", q->model, "Hugging Face model directory")->required();
  ppl->add_option("--data", q->data, "text file")->required();
  ppl->add_option("--seq-len", q->seq_len, "tokens per window")->check(CLI::Range(1, 1 << 20));
  ppl->add_option("--batch-size", q->batch_size, "windows per forward pass")->check(CLI::Range(1, 4096));
  ppl->callback([q, &common] { RunPpl(*q, common.json); });

  auto* gen = text->add_subcommand("generate", "continue a prompt with a model (KV cache, streamed)");
  auto g = std::make_shared<GenerateCommand>();
  gen->add_option("--model", g->model, "Hugging Face model directory")->required();
  gen->add_option("--prompt", g->prompts, "prompt text (repeat for a batch)")->required();
  gen->add_option("--max-new-tokens", g->options.max_new_tokens)->check(CLI::Range(0, 1 << 20));
  gen->add_option("--temperature", g->options.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  gen->add_option("--top-k", g->options.top_k, "0 = off")->check(CLI::Range(0, 1 << 24));
  gen->add_option("--top-p", g->options.top_p, "1 = off")->check(CLI::Range(0.0, 1.0));
  gen->add_option("--repetition-penalty", g->options.repetition_penalty)->check(CLI::Range(0.0, 100.0));
  gen->add_option("--seed", g->options.seed);
  gen->add_option("--device", g->device, "cpu|cuda|cuda:N|auto");
  gen->add_option("--dtype", g->dtype, "float32|bfloat16|float16");
  gen->callback([g, &common] { RunGenerate(*g, common.json); });
});

}  // namespace
}  // namespace slm::cli
