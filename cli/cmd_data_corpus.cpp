// `slm data corpus --source wordnet --out DIR`: the offline text corpus, QA pairs and speakable
// sentences of datagen/wordnet_corpus.h; `slm data dictionary`: the spoken dictionary's word list
// chosen from that corpus (datagen/dictionary.h).
#include <memory>
#include <string>

#include "cli/command.h"
#include "core/json_report.h"
#include "core/manifest.h"
#include "datagen/dictionary.h"
#include "datagen/wordnet_corpus.h"

namespace {

struct CorpusCommandOptions {
  std::string source = "wordnet";
  slm::datagen::WordNetCorpusOptions wordnet;
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
    const slm::datagen::WordNetCorpusStats stats = slm::datagen::BuildWordNetCorpus(options->wordnet);
    slm::Report report(common.json);
    report.Set("source", options->source);
    report.Set("out", options->wordnet.out_dir);
    report.Set("synsets", stats.synsets);
    for (slm::datagen::DataSplit split : slm::datagen::kDataSplits) {
      const slm::datagen::WordNetSplitCounts& counts = stats.Of(split);
      const std::string name = slm::datagen::SplitName(split);
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

struct DictionaryCommandOptions {
  slm::datagen::DictionaryOptions dictionary;
  std::string out;
};

slm::cli::Registrar dictionary_reg([](CLI::App& app, slm::cli::Common& common) {
  CLI::App* cmd = slm::cli::Group(app, "data", "make training data offline")
                      ->add_subcommand("dictionary",
                                       "the spoken dictionary: the most common concrete nouns of a WordNet corpus "
                                       "with their questions and glosses (datagen/dictionary.h)");
  auto options = std::make_shared<DictionaryCommandOptions>();
  cmd->add_option("--corpus", options->dictionary.corpus_dir, "a corpus made by `slm data corpus`")
      ->capture_default_str();
  cmd->add_option("--wordnet-dir", options->dictionary.wordnet_dir, "directory with index.noun, data.noun, ...")
      ->capture_default_str();
  cmd->add_option("--words", options->dictionary.words, "how many nouns")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--out", options->out, "output manifest (JSONL, task qa)")->required();
  cmd->callback([options, &common] {
    const std::vector<slm::manifest::Entry> entries = slm::datagen::SelectDictionary(options->dictionary);
    slm::manifest::Write(options->out, entries);
    slm::Report report(common.json);
    report.Set("out", options->out);
    report.Set("words", static_cast<int64_t>(entries.size()));
    report.Set("first", entries.front().extra["word"].get<std::string>());
    report.Set("last", entries.back().extra["word"].get<std::string>());
    report.Emit();
  });
});

}  // namespace
