// The spoken dictionary: the common concrete nouns that the embedded assistant is expected to know
// by heart ("what is a lantern" -> WordNet's gloss of its first sense). The text format in which
// its questions and answers meet the backbone is text/qa_text.h.
//
// Selection (SelectDictionary) from the Debian WordNet files and a corpus that `slm data corpus`
// built:
//   - nouns of index.noun that are one lower-case word of at least 3 letters;
//   - whose most frequent sense (the first offset of index.noun, WordNet's sense order) is in a
//     concrete lexicographer file (animal, artifact, body, food, object, plant) and has a question
//     "what is a(n) <word>" in qa.jsonl (datagen/wordnet_corpus.h asks about the first lemma);
//   - that are not mostly another part of speech (a verb, adjective or adverb entry of the same
//     lemma with more sense-tagged occurrences than the noun: "down", "young" go);
//   - ranked by how often the word occurs in the corpus's training text (text/train.txt and
//     sentences/train.txt), ties by the word; the first `words` are taken.
// The answer is qa.jsonl's, so a dictionary entry is exactly a QA pair of the corpus. The result
// depends only on the files (no clock, no threads).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/manifest.h"

namespace slm::datagen {

struct DictionaryOptions {
  std::string wordnet_dir = "/usr/share/wordnet";
  std::string corpus_dir = "data/wordnet";  // qa.jsonl, text/train.txt, sentences/train.txt
  int64_t words = 1000;                     // >= 1
};

// The entries in rank order: manifest entries of task "qa" with the corpus's id, prompt and
// response, and extra fields "word" (the noun), "rank" (0-based) and "count" (its corpus count).
// slm::Error naming the missing file (and `slm data corpus` for a missing corpus), a malformed
// index line ("<file>:<line>: ..."), or fewer qualifying nouns than asked for.
std::vector<manifest::Entry> SelectDictionary(const DictionaryOptions& options);

}  // namespace slm::datagen
