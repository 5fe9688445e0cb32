// slm bench tokenize: single-threaded encoding speed of slm's Tokenizer on Hugging Face
// tokenizer.json files against the `tokenizers` package, measured in the same run on the same
// corpus (bench/tokenize_hf.py). By default the baseline script trains the parity test's families
// (GPT-2, Llama 3, Qwen2 regexes; two sentencepiece-style conversions) and generates their
// multilingual corpus; --tokenizer/--corpus bench any tokenizer.json on a text file instead. The
// ids of every line are compared with tokenizers' (mismatching lines reported, 0 expected).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json_report.h"
#include "text/tokenizer.h"

namespace slm::bench {
namespace {

struct TokenizeBenchOptions {
  std::string families = "gpt2,llama3,qwen2,llama2,metaspace";
  int64_t lines = 10000;
  int repeats = 5;
  std::string tokenizer;  // a tokenizer.json (or its directory) instead of the families
  std::string corpus;     // with --tokenizer: a UTF-8 text file, one line per text
  std::string python = ".venv/bin/python";
  std::string script = "bench/tokenize_hf.py";
};

void RunTokenizeBench(const TokenizeBenchOptions& o, bool json) {
  Report report(json);
  Check(o.tokenizer.empty() == o.corpus.empty(), "slm bench tokenize: --tokenizer and --corpus go ",
        "together");
  Check(o.python != "none",
        "slm bench tokenize: the baseline (--python) builds the tokenizers and ",
        "times tokenizers; it cannot be skipped");
  ScratchDir scratch("slm-bench-tokenize-");
  std::string args = "--out '" + scratch.path() + "' --repeats " + std::to_string(o.repeats);
  if (o.tokenizer.empty()) {
    args += " --families " + o.families + " --lines " + std::to_string(o.lines);
  } else {
    std::string path = o.tokenizer;
    if (std::filesystem::is_directory(path))
      path = (std::filesystem::path(path) / "tokenizer.json").string();
    args += " --tokenizer '" + path + "' --corpus '" + o.corpus + "'";
  }
  const nlohmann::json baseline = RunPythonJson(o.python, o.script, args);
  Check(baseline.contains("families"), "slm bench tokenize: the baseline '", o.python, " ",
        o.script, "' gave no result (is the tokenizers package installed in that environment?)");

  report.Line("tokenizer.json encoding, one thread, median of " + std::to_string(o.repeats) +
              " runs: slm vs tokenizers " + baseline.value("tokenizers_version", std::string("?")));
  report.Set("tokenizers_version", baseline.value("tokenizers_version", std::string("?")));
  double worst_speedup = 0;
  int64_t total_mismatches = 0;
  for (const auto& [family, theirs] : baseline.at("families").items()) {
    const std::string dir = (std::filesystem::path(scratch.path()) / family).string();
    const auto lines =
        nlohmann::json::parse(fs::ReadFile(dir + "/corpus.json")).get<std::vector<std::string>>();
    const auto expected = nlohmann::json::parse(fs::ReadFile(dir + "/ids.json"))
                              .get<std::vector<std::vector<int64_t>>>();
    text::TokenizerOptions options;
    options.markers = {};  // the baseline's tokenizer has no markers either
    const text::Tokenizer tokenizer = text::Tokenizer::Load(dir, options);
    std::vector<std::vector<int64_t>> ids(lines.size());
    const double ours = MedianSeconds(o.repeats, [&] {
      for (size_t i = 0; i < lines.size(); ++i) ids[i] = tokenizer.Encode(lines[i], false, false);
    });
    int64_t tokens = 0;
    int64_t mismatches = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      tokens += static_cast<int64_t>(ids[i].size());
      mismatches += i < expected.size() && ids[i] == expected[i] ? 0 : 1;
    }
    const double loop = theirs.at("encode_seconds").get<double>();
    const double batch = theirs.at("encode_batch_seconds").get<double>();
    const std::string key = "families." + family;
    report.Set(key + ".lines", lines.size());
    report.Set(key + ".tokens", tokens);
    report.Set(key + ".slm_seconds", ours);
    report.Set(key + ".slm_tokens_per_second", tokens / ours);
    report.Set(key + ".tokenizers_encode_seconds", loop);
    report.Set(key + ".tokenizers_encode_batch_seconds", batch);
    report.Set(key + ".speedup_vs_tokenizers_encode", loop / ours);
    report.Set(key + ".speedup_vs_tokenizers_encode_batch", batch / ours);
    report.Set(key + ".mismatching_lines", mismatches);
    worst_speedup = worst_speedup == 0 ? loop / ours : std::min(worst_speedup, loop / ours);
    total_mismatches += mismatches;
  }
  report.Set("min_speedup_vs_tokenizers_encode", worst_speedup);
  report.Set("mismatching_lines", total_mismatches);
  report.Set("goal_speedup_ge_1x_met", worst_speedup >= 1.0);
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd =
      cli::Group(app, "bench", "benchmarks, each against a baseline measured in the same run")
          ->add_subcommand("tokenize",
                           "tokenizer.json encoding, one thread: slm vs Hugging Face tokenizers");
  auto o = std::make_shared<TokenizeBenchOptions>();
  cmd->add_option("--families", o->families,
                  "comma-separated: gpt2, llama3, qwen2, llama2, metaspace")
      ->capture_default_str();
  cmd->add_option("--lines", o->lines, "generated corpus lines per family")
      ->check(CLI::Range(int64_t{1}, int64_t{10000000}))
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "timed repeats (median)")->check(CLI::Range(1, 100));
  cmd->add_option("--tokenizer", o->tokenizer, "a tokenizer.json or its directory (with --corpus)");
  cmd->add_option("--corpus", o->corpus, "a UTF-8 text file, one text per line (with --tokenizer)");
  cmd->add_option("--python", o->python, "python with the tokenizers package")
      ->capture_default_str();
  cmd->add_option("--script", o->script, "the baseline script")->capture_default_str();
  cmd->callback([o, &common] { RunTokenizeBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
