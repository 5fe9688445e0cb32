// slm audio lm build: the word n-gram LM of the recognizer's beam search (audio/word_lm.h) from
// text files, as an ARPA file (--out FILE, or DIR/lm.arpa with DIR/build.json: options, counts,
// sources).
// slm audio eval-asr: WER and CER of a speech encoder's CTC head on a manifest of speech, greedy
// decoding vs the lexicon + word-LM beam search (audio/ctc_lexicon_decoder.h), with the decode
// time of each in the same run. Every utterance is encoded once; --lm-weight and --word-bonus
// take comma-separated lists and every combination is decoded (the tuning grid).
#include <chrono>
#include <filesystem>
#include <fstream>

#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "audio/ctc_lexicon_decoder.h"
#include "audio/word_lm.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json_report.h"
#include "core/manifest.h"
#include "core/strings.h"
#include "train/metrics.h"

namespace slm::cli {
namespace {

namespace stdfs = std::filesystem;

struct BuildCommand {
  std::vector<std::string> texts;
  std::string out;
  audio::WordLmOptions options;
};

std::vector<float> ParseList(const std::string& flag, const std::string& text) {
  std::vector<float> values;
  for (const std::string& item : Split(text, ",")) {
    char* end = nullptr;
    const float v = std::strtof(item.c_str(), &end);
    Check(*end == '\0' && !item.empty(), flag, ": expected a number or a comma-separated list, got '", text, "'");
    values.push_back(v);
  }
  Check(!values.empty(), flag, ": no value in '", text, "'");
  return values;
}

struct EvalCommand {
  std::string encoder, manifest, lm;
  int beam = 16;
  std::string lm_weight = "0.6", word_bonus = "0";
  float char_threshold = -8.f;
  int limit = 0;
  int samples = 3;
};

struct Scores {
  train::EditCounts words, chars;
  double seconds = 0;
};

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Registrar reg([](CLI::App& app, Common& common) {
  CLI::App* audio_group = Group(app, "audio", "audio front-end and speech encoder tools");
  auto* lm_group = audio_group->add_subcommand("lm", "word n-gram LM of the recognizer's beam search");
  lm_group->require_subcommand(1);
  auto b = std::make_shared<BuildCommand>();
  auto* build = lm_group->add_subcommand("build", "interpolated Kneser-Ney word n-gram LM (ARPA) from text");
  build->add_option("--text", b->texts, "training text, one sentence per line (repeatable)")->required();
  build->add_option("--out", b->out, "ARPA file, or a directory (gets lm.arpa and build.json)")->required();
  build->add_option("--order", b->options.order, "n-gram order")->check(CLI::Range(1, 3))->capture_default_str();
  build->add_option("--min-count", b->options.min_count, "prune n-grams (order >= 2) seen fewer times")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  build->add_option("--max-vocab", b->options.max_vocabulary, "keep the N most frequent words (0 = all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 21))
      ->capture_default_str();
  build->callback([b, &common] {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::string> sentences;
    for (const std::string& file : b->texts) {
      std::ifstream in(file);
      Check(in.good(), "--text: cannot read '", file, "'");
      for (std::string line; std::getline(in, line);) sentences.push_back(line);
    }
    const audio::WordLm lm = audio::WordLm::Build(sentences, b->options);
    const bool dir = stdfs::is_directory(b->out) || !EndsWith(b->out, ".arpa");
    const std::string file = dir ? b->out + "/" + audio::kWordLmFile : b->out;
    if (dir) fs::MakeDirs(b->out);
    lm.Save(file);
    Report report(common.json);
    report.Set("lm", file);
    report.Set("sentences", sentences.size());
    report.Set("order", lm.Order());
    report.Set("vocabulary", lm.VocabularySize());
    nlohmann::json counts = nlohmann::json::array();
    for (int n = 1; n <= lm.Order(); ++n) counts.push_back(lm.Count(n));
    report.Set("ngrams", counts);
    report.Set("bytes", static_cast<int64_t>(stdfs::file_size(file)));
    report.Set("seconds", Seconds(start));
    if (dir) {
      nlohmann::json info = report.Data();
      info["text"] = b->texts;
      info["min_count"] = b->options.min_count;
      info["max_vocab"] = b->options.max_vocabulary;
      info.erase("seconds");
      fs::AtomicWriteString(b->out + "/build.json", info.dump(2) + "\n");
    }
    report.Emit();
  });

  auto e = std::make_shared<EvalCommand>();
  auto* eval = audio_group->add_subcommand("eval-asr", "WER/CER of greedy CTC vs lexicon + word-LM beam search");
  eval->add_option("--encoder", e->encoder, "speech encoder directory with a CTC head")->required();
  eval->add_option("--manifest", e->manifest, "manifest.jsonl of speech with reference text")->required();
  eval->add_option("--lm", e->lm, "word LM (ARPA file or directory); without it only greedy is scored");
  eval->add_option("--beam", e->beam, "beam width")->check(CLI::Range(1, 4096))->capture_default_str();
  eval->add_option("--lm-weight", e->lm_weight, "alpha, or a comma-separated list to sweep")->capture_default_str();
  eval->add_option("--word-bonus", e->word_bonus, "beta, or a comma-separated list to sweep")->capture_default_str();
  eval->add_option("--char-threshold", e->char_threshold, "ln-probability below which characters are not tried")
      ->capture_default_str();
  eval->add_option("--limit", e->limit, "first N utterances (0 = all)")->check(CLI::NonNegativeNumber);
  eval->add_option("--samples", e->samples, "print the first N transcripts of each decoder")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  eval->callback([e, &common] {
    const std::vector<float> alphas = ParseList("--lm-weight", e->lm_weight);
    const std::vector<float> betas = ParseList("--word-bonus", e->word_bonus);
    std::shared_ptr<const audio::WordLm> lm;
    if (!e->lm.empty()) {
      try {
        lm = std::make_shared<const audio::WordLm>(audio::WordLm::Load(e->lm));
      } catch (const Error& error) {
        throw Error(Str("--lm: ", error.what()));
      }
    }
    const manifest::Manifest m = manifest::Read(e->manifest);
    Check(!m.entries.empty(), e->manifest, ": no utterances");
    const audio::CtcTranscriber transcriber(e->encoder);
    std::vector<torch::Tensor> logits;
    std::vector<std::string> references;
    auto start = std::chrono::steady_clock::now();
    for (const manifest::Entry& entry : m.entries) {
      if (e->limit > 0 && static_cast<int>(logits.size()) >= e->limit) break;
      const audio::Waveform wave = audio::Read(m.AudioPath(entry));
      logits.push_back(transcriber.Logits(audio::Resample(wave.samples, wave.sample_rate, 16000)));
      references.push_back(entry.text.empty() ? entry.prompt : entry.text);
    }
    const double encode_seconds = Seconds(start);
    Report report(common.json);
    report.Set("utterances", logits.size());
    report.Set("encode_ms_per_utterance", 1000 * encode_seconds / logits.size());
    auto score = [&](const std::string& name, const std::function<audio::CtcTranscript(const torch::Tensor&)>& decode) {
      Scores s;
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<std::string> hypotheses;
      for (const torch::Tensor& l : logits) hypotheses.push_back(decode(l).text);
      s.seconds = Seconds(t0);
      for (size_t i = 0; i < hypotheses.size(); ++i) {
        s.words += train::WordErrors(references[i], hypotheses[i]);
        s.chars += train::CharErrors(references[i], hypotheses[i]);
        if (!name.empty() && static_cast<int>(i) < e->samples)
          report.Line(Str("  ", name, " | ", train::NormalizeForScoring(references[i]), " -> ", hypotheses[i]));
      }
      return s;
    };
    const Scores greedy = score("greedy", [](const torch::Tensor& l) { return audio::CtcGreedyWords(l); });
    // Greedy decoding takes microseconds: its time is the best of a few passes, or noise dominates.
    auto greedy_seconds = [&] {
      double best = 1e30;
      for (int pass = 0; pass < 5; ++pass)
        best = std::min(best, score("", [](const torch::Tensor& l) { return audio::CtcGreedyWords(l); }).seconds);
      return best;
    };
    auto as_json = [&](const Scores& s) {
      return nlohmann::json{{"wer", s.words.Rate()},
                            {"cer", s.chars.Rate()},
                            {"decode_ms_per_utterance", 1000 * s.seconds / logits.size()}};
    };
    report.Set("greedy", as_json(greedy));
    if (lm) {
      nlohmann::json grid = nlohmann::json::array();
      nlohmann::json best;
      for (const float alpha : alphas)
        for (const float beta : betas) {
          audio::CtcBeamOptions options;
          options.beam = e->beam;
          options.lm_weight = alpha;
          options.word_bonus = beta;
          options.char_threshold = e->char_threshold;
          const audio::CtcLexiconDecoder decoder(lm, options);
          // Greedy again in the same breath: the time ratio is against a baseline measured beside it.
          const double base = greedy_seconds();
          const Scores beam = score(Str("beam a=", alpha, " b=", beta),
                                    [&](const torch::Tensor& l) { return decoder.Decode(l); });
          nlohmann::json row = as_json(beam);
          row["lm_weight"] = alpha;
          row["word_bonus"] = beta;
          row["beam"] = e->beam;
          row["decode_time_vs_greedy"] = beam.seconds / std::max(base, 1e-9);
          row["decode_time_vs_encode"] = beam.seconds / std::max(encode_seconds, 1e-9);
          row["wer_vs_greedy"] = beam.words.Rate() / std::max(greedy.words.Rate(), 1e-9);
          report.Line(Str("beam ", e->beam, " alpha ", alpha, " beta ", beta, ": WER ", Fixed(100 * beam.words.Rate(), 2),
                          "% CER ", Fixed(100 * beam.chars.Rate(), 2), "% (greedy ", Fixed(100 * greedy.words.Rate(), 2),
                          "% / ", Fixed(100 * greedy.chars.Rate(), 2), "%), decode ",
                          Fixed(row["decode_ms_per_utterance"].get<double>(), 2), " ms/utt = ",
                          Fixed(row["decode_time_vs_greedy"].get<double>(), 1), "x greedy, ",
                          Fixed(100 * row["decode_time_vs_encode"].get<double>(), 1), "% of the encoder's time"));
          if (best.is_null() || row["wer"].get<double>() < best["wer"].get<double>()) best = row;
          grid.push_back(row);
        }
      report.Set("beam", grid);
      report.Set("best", best);
    }
    report.Emit();
  });
});

}  // namespace
}  // namespace slm::cli
