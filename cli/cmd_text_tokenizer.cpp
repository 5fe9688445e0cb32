// `slm text train-tokenizer`: a Llama-style sentencepiece tokenizer with the multimodal markers
// for a corpus (text/tokenizer.h, TrainTokenizer); `slm text tokenize`: what a tokenizer makes of
// a text (ids, pieces, decoded text), for checking prompts and templates.
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli/command.h"
#include "core/json_report.h"
#include "core/strings.h"
#include "text/tokenizer.h"

namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  bool bos = false;
  bool eos = false;
  bool special = false;
  int64_t speech_units = 0;
};

void RegisterTrain(CLI::App& text, slm::cli::Common& common) {
  CLI::App* cmd = text.add_subcommand(
      "train-tokenizer",
      "train a Llama-style sentencepiece tokenizer (byte fallback, <speech>/<image>/<text> "
      "markers) and write DIR/tokenizer.model");
  auto options = std::make_shared<slm::text::TokenizerTrainOptions>();
  cmd->add_option("--input", options->input, "UTF-8 corpus, one sentence per line")->required();
  cmd->add_option("--out", options->out_dir, "output directory")->required();
  cmd->add_option("--vocab-size", options->vocab_size, "pieces, including 256 byte pieces")
      ->check(CLI::Range(300, 1000000))
      ->capture_default_str();
  cmd->add_option("--model-type", options->model_type, "sentencepiece algorithm")
      ->check(CLI::IsMember({"unigram", "bpe"}))
      ->capture_default_str();
  cmd->add_option("--character-coverage", options->character_coverage,
                  "fraction of characters covered by pieces (rarer ones become bytes)")
      ->check(CLI::Range(0.98, 1.0))
      ->capture_default_str();
  cmd->add_option("--hard-vocab-limit", options->hard_vocab_limit,
                  "false: --vocab-size is an upper bound (small corpora)")
      ->capture_default_str();
  cmd->add_option("--seed", options->seed, "sentencepiece's sampling seed")->capture_default_str();
  cmd->callback([options, &common] {
    options->num_threads = std::clamp(
        common.threads > 0 ? common.threads : static_cast<int>(std::thread::hardware_concurrency()),
        1, 128);
    const auto start = std::chrono::steady_clock::now();
    const slm::text::Tokenizer tokenizer = slm::text::TrainTokenizer(*options);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    slm::Report report(common.json);
    report.Set("model", tokenizer.Source());
    report.Set("model_type", options->model_type);
    report.Set("vocab_size", tokenizer.VocabSize());
    report.Set("bos_id", tokenizer.BosId());
    report.Set("eos_id", tokenizer.EosId());
    report.Set("unk_id", tokenizer.UnkId());
    for (const std::string& marker : options->markers) {
      report.Set("markers." + marker, tokenizer.AddedTokenId(marker));
    }
    report.Set("threads", options->num_threads);
    report.Set("seconds", seconds);
    report.Emit();
  });
}

void RegisterTokenize(CLI::App& text, slm::cli::Common& common) {
  CLI::App* cmd = text.add_subcommand(
      "tokenize", "show the ids and pieces a tokenizer gives a text, and the text they decode to");
  auto options = std::make_shared<TokenizeOptions>();
  cmd->add_option("--model", options->model,
                  "model directory (tokenizer.model or tokenizer.json), or either file")
      ->required();
  cmd->add_option("--text", options->text, "UTF-8 text (markers such as <speech> allowed)")
      ->required();
  cmd->add_flag("--bos", options->bos, "prepend BOS");
  cmd->add_flag("--eos", options->eos, "append EOS");
  cmd->add_flag("--special", options->special,
                "add the special tokens of the tokenizer's own template (Hugging Face's "
                "add_special_tokens=True) instead of --bos/--eos");
  cmd->add_option("--speech-units", options->speech_units, "reserve <u0>..<uK-1>")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->callback([options, &common] {
    slm::text::TokenizerOptions load;
    load.num_speech_units = options->speech_units;
    const slm::text::Tokenizer tokenizer = slm::text::Tokenizer::Load(options->model, load);
    const std::vector<int64_t> ids =
        options->special ? tokenizer.EncodeWithSpecialTokens(options->text)
                         : tokenizer.Encode(options->text, options->bos, options->eos);
    std::vector<std::string> pieces;
    for (const int64_t id : ids) pieces.push_back(tokenizer.IdToPiece(id));
    slm::Report report(common.json);
    report.Set("model", tokenizer.Source());
    report.Set("format", tokenizer.Format());
    report.Set("vocab_size", tokenizer.VocabSize());
    report.Set("tokens", static_cast<int64_t>(ids.size()));
    report.Set("ids", ids);
    report.Set("pieces", pieces);
    report.Set("decoded", tokenizer.Decode(ids, /*skip_special_tokens=*/false));
    report.Emit();
  });
}

slm::cli::Registrar registrar([](CLI::App& app, slm::cli::Common& common) {
  CLI::App* text = slm::cli::Group(app, "text", "text backbone tools");
  RegisterTrain(*text, common);
  RegisterTokenize(*text, common);
});

}  // namespace
