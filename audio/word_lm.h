// A word n-gram language model for the speech recognizer's beam search (audio/ctc_lexicon_decoder.h):
// the spelling a character CTC head cannot know (which words exist, which follow which) comes from
// text.
//
// Model: orders 1..3, interpolated Kneser-Ney (Chen & Goodman 1998; one discount per order,
// D = n1 / (n1 + 2 n2) over that order's counts of counts) with the highest order on raw counts
// and lower orders on continuation counts (n-grams that start with <s> keep raw counts); the
// unigram distribution is interpolated with the uniform one, so every vocabulary word has a
// probability. Sentences are wrapped in <s> ... </s>; words outside the vocabulary are <unk>.
// Pruning (WordLmOptions): n-grams of order >= 2 seen fewer than min_count times are dropped and
// the backoff weights are recomputed so that every context's distribution still sums to one
// (SRILM's renormalisation); max_vocabulary keeps the most frequent words. Training text is
// normalised with CtcAlphabet::Normalize, so every word is spellable by the CTC head.
//
// File format: standard ARPA text (readable by SRILM, KenLM, pyctcdecode), probabilities and
// backoff weights in log10 as ARPA defines them. Text before "\data\" is free (the builder writes
// a comment line there). Load checks the structure strictly: every defect is an slm::Error naming
// the file and line ("lm.arpa:12: expected a log10 probability, got 'x'"), including a truncated
// file (no "\end\"), counts that disagree with the header, an order other than 1..3, an n-gram
// whose context is absent, and a word that is not a normalised CTC word.
//
// Units: the API returns natural logarithms (ln), like the CTC log-probabilities they are added
// to; only the file holds log10.
//
// Thread-safety: a built or loaded WordLm is immutable; Score/End and every accessor are safe from
// any number of threads at once (the server shares one through a shared_ptr).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace slm::audio {

// The file name `slm audio lm build --out DIR` writes, and Load looks for in a directory.
inline constexpr const char* kWordLmFile = "lm.arpa";

struct WordLmOptions {
  int order = 3;               // 1, 2 or 3
  int64_t min_count = 1;       // n-grams of order >= 2 seen fewer times are pruned
  int64_t max_vocabulary = 0;  // 0 = every word of the text; else the most frequent (ties: alphabetical)
};

// The words an n-gram context remembers: the last Order()-1 word ids, most recent last; -1 = none.
struct WordLmState {
  std::array<int32_t, 2> words{-1, -1};
  bool operator==(const WordLmState& o) const { return words == o.words; }
};

class WordLm {
 public:
  static constexpr int32_t kUnk = 0, kBos = 1, kEos = 2;  // ids of <unk>, <s>, </s>

  // Counts `sentences` (raw text, one sentence each; empty ones skipped). slm::Error for an order
  // outside 1..3, min_count < 1 or no words at all.
  static WordLm Build(const std::vector<std::string>& sentences, const WordLmOptions& options);
  // Reads an ARPA file, or kWordLmFile in a directory (header comment for the errors).
  static WordLm Load(const std::string& file_or_dir);
  // Writes the ARPA file (atomically).
  void Save(const std::string& path) const;

  int Order() const { return order_; }
  // Id of a word (<s>, </s>, <unk> included), or -1 when it is not in the vocabulary.
  int32_t Id(const std::string& word) const;
  const std::string& Word(int32_t id) const { return words_.at(id); }
  int32_t VocabularySize() const { return static_cast<int32_t>(words_.size()); }
  // Number of stored n-grams of order n (1-based).
  int64_t Count(int n) const;

  WordLmState Begin() const;  // the context after <s>
  // ln P(word | state), and the state after it in *next (may be null). `word` must be a valid id.
  float Score(const WordLmState& state, int32_t word, WordLmState* next = nullptr) const;
  // ln P(</s> | state).
  float End(const WordLmState& state) const { return Score(state, kEos); }
  // ln P(sentence) of a normalised sentence including </s> (tests, diagnostics); unknown words
  // score as <unk>.
  double SentenceScore(const std::string& sentence) const;

 private:
  struct Entry {
    float logp = 0;     // ln
    float backoff = 0;  // ln; 0 for the highest order
  };
  static uint64_t Key(const int32_t* ids, int n);
  const Entry* Find(const int32_t* ids, int n) const;
  // ln P(w | the last `n` words of ctx) by backing off through the stored orders.
  float Query(const int32_t* ctx, int n, int32_t w) const;
  int32_t AddWord(const std::string& word);

  int order_ = 0;
  std::vector<std::string> words_;
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<Entry> unigrams_;                          // by id
  std::vector<std::unordered_map<uint64_t, Entry>> ngrams_;  // [n-2] for orders 2..3
};

}  // namespace slm::audio
