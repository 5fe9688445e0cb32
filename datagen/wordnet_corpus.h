// Offline text data from the Debian `wordnet-base` package (docs/ARCHITECTURE.md, "Data
// generators": the embedded backbone is pretrained on WordNet text, the speech data is synthesised
// from it).
//
// BuildWordNetCorpus streams /usr/share/wordnet/data.{noun,verb,adj,adv} (~117k synsets, one per
// line) and writes, under options.out_dir:
//   text/{train,valid,test}.txt       the language-model corpus, one line per definition
//                                     ("dog, domestic dog, Canis familiaris: a member of ...") and
//                                     one per example sentence, as WordNet spells them;
//   qa.jsonl                          core/manifest.h entries {"id":"qa-n-02084071","task":"qa",
//                                     "prompt":"what is a dog","response":"a member of ...",
//                                     "split":"train"} (a question per synset with a natural head);
//   sentences/{train,valid,test}.txt  speakable sentences for speech synthesis (IsSpeakable), made
//                                     from example sentences and short definitions;
//   stats.json                        WordNetCorpusStats::ToJson().
// Splits are by synset: every line made from a synset lands in that synset's split (SplitFor), so
// held-out text, questions and sentences never describe a synset seen in training. Text lines
// and sentences are deduplicated across the whole corpus, the first occurrence (file order
// noun, verb, adj, adv) keeping its split, so an identical line can never be in two splits.
// The output depends only on the WordNet files, the seed and the fractions (no clock, no
// threads). Every file is written atomically (core/fs.h), so a reader never sees a half file.
//
// Malformed data lines are errors, not skips: the files come from a package, so a bad line means
// a damaged install that the user should see ("<file>:<line>: ..."), not a silently smaller
// corpus. Thread-safety: all functions are pure or touch only their own output directory.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slm::datagen {

// One line of a WordNet data file ("wndb(5WN)"), reduced to what the corpus needs.
struct Synset {
  char pos = 'n';      // the file's part of speech: 'n', 'v', 'a' (adjectives and satellites), 'r'
  char ss_type = 'n';  // as written: 'n', 'v', 'a', 's' (adjective satellite) or 'r'
  std::string offset;  // 8 decimal digits, the synset's byte offset; unique within one file
  // Lexicographer file (lexnames(5WN)), e.g. 5 noun.animal, 6 noun.artifact, 27 noun.substance:
  // the only countability hint WordNet has, used to pick "what is a X" over "what is X".
  int lex_filenum = 0;
  // Lemmas in file order (the first is the most frequent), '_' turned into spaces and the
  // adjective syntax markers "(a)", "(p)", "(ip)" removed: "domestic dog", "galore".
  std::vector<std::string> words;
  // The gloss before its first quoted example, e.g. "a member of the genus Canis ...; occurs in
  // many breeds". Unquoted parts after an example (rare editorial notes) are dropped.
  std::string definition;
  // Quoted example sentences without their quotes or attributions ("- Shakespeare").
  std::vector<std::string> examples;
};

// Parses one data line of the file for part of speech `pos` ('n', 'v', 'a' or 'r').
// Returns nullopt for the license header (lines starting with two spaces) and blank lines.
// Throws slm::Error describing the defect (bad offset, word or pointer count, missing gloss,
// ss_type not matching the file) so that the caller can add the file name and line number.
std::optional<Synset> ParseDataLine(const std::string& line, char pos);

enum class DataSplit { kTrain = 0, kValid = 1, kTest = 2 };
inline constexpr std::array<DataSplit, 3> kDataSplits = {DataSplit::kTrain, DataSplit::kValid,
                                                         DataSplit::kTest};
// "train", "valid", "test": the file stems and the manifests' "split" values.
const char* SplitName(DataSplit split);

// The split of synset (pos, offset): a 64-bit hash of both mixed with `seed`, mapped to [0, 1);
// below valid_fraction -> valid, below valid_fraction + test_fraction -> test, else train.
// Stable across platforms and runs; changing the seed reshuffles every synset.
DataSplit SplitFor(char pos, std::string_view offset, uint64_t seed, double valid_fraction,
                   double test_fraction);

// "a" or "an" for the sound that `word` starts with: vowels take "an" except the "you"/"one"
// sounds (unit, european, one), and a few silent-h words take "an" (hour, honest, heir).
std::string IndefiniteArticle(std::string_view word);

// The lemma to ask about: the first of synset.words made of letters, spaces, hyphens and
// apostrophes only, at most 4 words and 32 characters, and without acronym tokens ("AD").
// nullopt when no lemma qualifies (digits, dotted abbreviations, long compound names).
std::optional<std::string> QuestionHead(const Synset& synset);

// The definition as an answer: leading parenthetical qualifiers such as "(usually followed by
// `to')" or "(botany)" removed and whitespace trimmed.
std::string AnswerFor(const Synset& synset);

// The question about `head` (a lemma of `synset`, see QuestionHead) whose answer is `answer`
// (AnswerFor):
//   nouns: "what is Paris" for proper nouns; "what is a dog" / "what is an abstraction" when the
//          answer starts with an indefinite determiner ("a", "an", "any", "one", "someone", ...)
//          or, when it starts with no determiner at all, for nouns of the countable lexicographer
//          files (animal, artifact, body, location, object, person, plant, shape): "what is a
//          colobus" ("arboreal monkey of ..."); "what is water" / "what is driving" otherwise;
//   verbs: "what does it mean to breathe";  adjectives and adverbs: "what does able mean".
std::string QuestionFor(const Synset& synset, const std::string& head, const std::string& answer);

// Turns raw text into a candidate sentence for speech synthesis: whitespace collapsed, spaces
// before commas removed, a final "!" turned into ".", a final "." added when no "." or "?" ends
// it, and the first letter capitalised. The result still has to pass IsSpeakable.
std::string NormalizeSentence(std::string_view raw);

// True for a sentence that a synthesiser reads unambiguously and that a recogniser can be scored
// on word by word: 3..16 words; ASCII letters, single spaces, commas ending a word, hyphens and
// apostrophes inside words (or a plural possessive "boys'"); one final "." or "?"; a capital
// first letter; no all-caps tokens ("NASA"); no abbreviation before the final dot ("etc.").
bool IsSpeakable(std::string_view sentence);

struct WordNetCorpusOptions {
  std::string wordnet_dir = "/usr/share/wordnet";
  std::string out_dir;
  uint64_t seed = 0;
  double valid_fraction = 0.05;  // of synsets, in [0, 1); valid + test must stay below 1
  double test_fraction = 0.05;
};

struct WordNetSplitCounts {
  int64_t synsets = 0;
  int64_t text_lines = 0;
  int64_t qa_pairs = 0;
  int64_t sentences = 0;
};

struct WordNetCorpusStats {
  std::array<WordNetSplitCounts, 3> splits{};  // indexed by static_cast<int>(DataSplit)
  int64_t synsets = 0;
  int64_t examples = 0;    // quoted examples found in glosses
  int64_t qa_skipped = 0;  // synsets with no natural lemma to ask about (QuestionHead) or no answer
  int64_t duplicate_text_lines = 0;   // dropped because an identical line came earlier
  int64_t unspeakable_sentences = 0;  // candidates rejected by IsSpeakable
  int64_t duplicate_sentences = 0;
  double seconds = 0;  // wall time of BuildWordNetCorpus
  const WordNetSplitCounts& Of(DataSplit split) const { return splits[static_cast<int>(split)]; }
  // Counts per split and per output file (paths relative to out_dir). Leaves out `seconds` so
  // that stats.json, like every other output file, is identical for identical inputs.
  nlohmann::json ToJson() const;
};

// Builds the corpus described at the top of this file. Throws slm::Error when the WordNet
// directory or one of its data files is missing (the message names the path and the package to
// install), for a malformed data line ("<file>:<line>: ..."), for fractions outside [0, 1) or
// summing to 1 or more, and when out_dir cannot be created or written. Streams the input and
// keeps only the output text in memory (docs/BENCHMARKS.md, "Data generators").
WordNetCorpusStats BuildWordNetCorpus(const WordNetCorpusOptions& options);

}  // namespace slm::datagen
