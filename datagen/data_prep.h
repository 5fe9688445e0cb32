// Training data made on demand from the project's own generators, so that every sample config runs
// from a clean checkout with nothing downloaded: a manifest that does not exist yet is generated
// (WordNet corpus -> espeak-ng speech, or synthetic shapes images); one that exists is used as it
// is. Generation is deterministic for its seed. Not thread-safe (writes files).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace slm::datagen {

// The WordNet corpus (datagen/wordnet_corpus.h) in corpus_dir unless corpus_dir/text/train.txt exists.
void EnsureWordNetCorpus(const std::string& corpus_dir, const std::string& wordnet_dir);

struct SpeechSynthesis {
  std::string sentences;  // text file, one sentence per line
  int64_t count = 0;      // first `count` non-blank lines; 0 = all
  uint64_t seed = 0;
  std::vector<std::string> voices;          // empty = every English espeak-ng voice; "+f5" = a variant
  std::vector<std::string> exclude_voices;  // held-out voices (datagen/speech_corpus.h SelectVoices)
  // Closed-vocabulary selection (like WSJ's 5k closed-vocabulary task), applied before `count`:
  // only sentences of at most `max_words` words (0 = any) whose words, after the scoring
  // normalisation (text/scoring_words.h), are all among the `vocabulary_size` most frequent words of
  // the file `vocabulary_from` (0 = no vocabulary limit). The chosen sentences are written to
  // sentences.txt next to the manifest.
  std::string vocabulary_from;
  int64_t vocabulary_size = 0;
  int64_t max_words = 0;
  // When `sentences` is missing and lies under corpus_dir, the WordNet corpus is built first.
  std::string corpus_dir = "data/wordnet";
  std::string wordnet_dir = "/usr/share/wordnet";
};

// manifest_path's directory receives wav/ and manifest.jsonl (datagen/speech_corpus.h) unless
// manifest_path exists. slm::Error when the sentences are missing and cannot be built, or when the
// closed-vocabulary selection leaves none.
void EnsureSpeechManifest(const std::string& manifest_path, const SpeechSynthesis& synthesis);

struct SpokenQaSynthesis {
  std::string qa = "data/wordnet/qa.jsonl";  // `slm data corpus` QA pairs ("what is a dog" -> gloss)
  std::string split = "train";               // the pairs whose "split" is this
  int64_t count = 0;                         // first `count` pairs of the split; 0 = all
  uint64_t seed = 0;
  std::vector<std::string> voices;
  std::vector<std::string> exclude_voices;
  std::string corpus_dir = "data/wordnet";
  std::string wordnet_dir = "/usr/share/wordnet";
};

// Spoken questions: the questions of `split` are synthesized (espeak-ng) into manifest_path's
// directory and manifest_path gets one sqa entry per question:
//   {"id":"u000001","task":"sqa","audio":"wav/u000001.wav","prompt":"what is a dog",
//    "response":"<the gloss>","text":"what is a dog"}
// unless manifest_path exists (it must not be named manifest.jsonl: that is the synthesizer's).
void EnsureSpokenQaManifest(const std::string& manifest_path, const SpokenQaSynthesis& synthesis);

// Plain text entries for task text: lines [skip, skip + count) of `lines` (blank ones left out)
// become {"id":"t000001","task":"text","text":"<line>"} in manifest_path, unless it exists. With
// `lines` under corpus_dir and missing, the WordNet corpus is built first (its text/*.txt hold the
// "lemma: gloss" lines the starter backbone was pretrained on: held-out text retention).
struct TextLines {
  std::string lines;
  int64_t count = 0;  // 0 = all
  int64_t skip = 0;
  std::string corpus_dir = "data/wordnet";
  std::string wordnet_dir = "/usr/share/wordnet";
};
void EnsureTextManifest(const std::string& manifest_path, const TextLines& text);

// Every entry of `source_manifest` with the units of its audio by the unit tokenizer in units_dir
// (audio/units.h), written to out_manifest: "units" as the LM reads them ("<u12><u7>...";
// text::SpeechUnitToken), "unit_durations" (frames per unit, with dedup) and "unit_tokenizer" (the
// tokenizer's hash); media paths are rewritten relative to the new manifest; `task` (when not empty)
// replaces each entry's task. slm::Error naming an entry without audio. `slm audio units encode
// --manifest` and the data source key units_from use it.
struct UnitsManifestStats {
  int64_t entries = 0, units = 0;
  std::string tokenizer_hash;
};
UnitsManifestStats EncodeUnitsManifest(const std::string& source_manifest, const std::string& out_manifest,
                                       const std::string& units_dir, const std::string& task, bool dedup,
                                       bool progress);

// GenerateShapes (datagen/shapes.h) into shapes_dir unless shapes_dir/caption_train.jsonl exists.
// An existing dir whose stats.json says another caption order is refused (slm::Error naming it),
// so that a config never trains on captions in an order it did not ask for.
void EnsureShapes(const std::string& shapes_dir, int64_t count, uint64_t seed, int size, int threads,
                  bool progress, bool canonical_captions = false);

}  // namespace slm::datagen
