// `slm data corpus --source wordnet --out DIR`: the offline text corpus, QA pairs and speakable
// sentences of text/wordnet_corpus.h.
#include <memory>
#include <string>

#include "cli/command.h"
#include "core/json_report.h"
#include "text/wordnet_corpus.h"

namespace {

struct CorpusCommandOptions {
  std::string source = "wordnet";
  slm::text::WordNetCorpusOptions wordnet;
};

slm::cli::Registrar reg([](CLI::App& app, slm::cli::Common& common) {
  CLI::App* cmd = slm::cli::Group(app, "data", "make training data offline")
                      ->add_subcommand("corpus",
                                       "text corpus, QA pairs and speakable sentences from the "
                                       "Debian WordNet package (wordnet-base)");
  auto options = std::make_shared<CorpusCommandOptions>();
  cmd->add_option("--source", options->source, "where the text comes from")
      ->check(CLI::IsMember({"wordnet"}))
      ->capture_default_str();
  cmd->add_option("--out", options->wordnet.out_dir, "output directory")->required();
  cmd->add_option("--wordnet-dir", options->wordnet.wordnet_dir,
                  "directory with data.noun, data.verb, data.adj, data.adv")
      ->capture_default_str();
  cmd->add_option("--seed", options->wordnet.seed, "seed of the by-synset train/valid/test split")
      ->capture_default_str();
  cmd->add_option("--valid-fraction", options->wordnet.valid_fraction,
                  "fraction of synsets held out for validation")
      ->check(CLI::Range(0.0, 0.5))
      ->capture_default_str();
  cmd->add_option("--test-fraction", options->wordnet.test_fraction,
                  "fraction of synsets held out for testing")
      ->check(CLI::Range(0.0, 0.5))
      ->capture_default_str();
  cmd->callback([options, &common] {
    const slm::text::WordNetCorpusStats stats = slm::text::BuildWordNetCorpus(options->wordnet);
    slm::Report report(common.json);
    report.Set("source", options->source);
    report.Set("out", options->wordnet.out_dir);
    report.Set("synsets", stats.synsets);
    for (slm::text::DataSplit split : slm::text::kDataSplits) {
      const slm::text::WordNetSplitCounts& counts = stats.Of(split);
      const std::string name = slm::text::SplitName(split);
      report.Set(name + ".synsets", counts.synsets);
      report.Set(name + ".text_lines", counts.text_lines);
      report.Set(name + ".qa_pairs", counts.qa_pairs);
      report.Set(name + ".sentences", counts.sentences);
    }
    report.Set("files", stats.ToJson()["files"]);  // lines per file, relative to --out
    report.Set("qa_skipped", stats.qa_skipped);
    report.Set("unspeakable_sentences", stats.unspeakable_sentences);
    report.Set("seconds", stats.seconds);
    report.Emit();
  });
});

}  // namespace
