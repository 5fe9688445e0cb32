// Interleaved speech-text sequences (task `interleaved`), as in SIMS (2025) but over a frozen
// backbone: word-aligned utterances become token sequences in which some word spans are spoken
// (the speech units between the span's first word's start and last word's end) and the rest are
// written (the words' text tokens), with a marker at the start and at every switch:
//
//   words  "a  general  concept  formed  by"      speech = [0, 1, 1, 0, 0]
//   ids    BOS <text> ▁a <speech> <u3><u3><u82>...<u9> <text> ▁formed ▁by EOS
//
// Three streams per utterance and epoch: text-only (every word written), interleaved (spans chosen
// by SelectSpeechWords), speech-only (every word spoken). Each utterance's stream is drawn with
// probabilities that make the expected *token* shares match InterleaveOptions::shares (speech-only
// sequences are several times longer than text-only ones, so equal draw probabilities would
// not give equal token shares). Sequences are then packed first-fit into rows of at most
// context_length tokens (train/dataset.h Materialize).
//
// Frames mode (InterleaveOptions::speech = "frames"): a speech span contributes its marker to the
// ids and a clip (the audio between its first word's start and last word's end) that the model
// encodes and splices after the marker; no units are needed.
//
// Units: frame-level unit ids (`units` of `slm audio units encode`) or deduplicated runs with
// `unit_durations` in frames; frame f covers [f, f+1) / frame_rate_hz seconds. A word span covers
// frames [floor(start * rate), ceil(end * rate)); the units whose first frame lies there are its
// speech.
//
// Every random choice comes from a std::mt19937_64 seeded by InterleaveSeed(seed, epoch, id), so a
// sequence is a pure function of (utterance, options, seed, epoch): workers, resume and evaluation
// all see the same data.
// Thread-safety: pure functions; AlignedUtterance is immutable after AlignUtterance.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/manifest.h"

namespace slm::train {

struct InterleaveOptions {
  std::string selection = "poisson";  // poisson | random | span
  double lambda = 10;                 // poisson: mean span length in words
  double eta = 0.3;                   // poisson, span: fraction of the words that become speech
  double p = 0.3;                     // random: probability that a word is speech
  int64_t span = 5;                   // span: span length in words
  // Target token shares of the three streams (normalised to sum 1): text-only, interleaved,
  // speech-only. {0, 0, 1} trains on speech-only sequences (the ablation baseline).
  double text_share = 0.20, interleaved_share = 0.54, speech_share = 0.25;
  // Speech spans as `units` (the unit tokens, predicted like text) or `frames` (the speech
  // encoder's projected frames of the span's audio, spliced after the <speech> marker: continuous
  // adapter outputs, read but never predicted; needs a model with a speech encoder).
  std::string speech = "units";
  int64_t context_length = 0;  // packed row length in LM positions; 0 = the backbone's max positions
  uint64_t seed = 0;           // 0 = the run's seed (the trainer fills it in)
  void Load(config::Node node);
};

enum class Stream { kText = 0, kInterleaved = 1, kSpeech = 2 };
const char* StreamName(Stream s);

// The special ids a sequence needs (text::Tokenizer and MultimodalLM::UnitTokenId supply them).
struct InterleaveIds {
  int64_t bos = -1, eos = -1, speech_marker = -1, text_marker = -1;
  std::function<int64_t(int64_t)> unit;  // unit id -> token id; empty in frames mode (no unit tokens)
};

// One utterance, checked and pre-tokenized.
struct AlignedUtterance {
  std::string id;
  std::vector<std::vector<int64_t>> word_tokens;  // per word: its text tokens (as read after a space)
  std::vector<std::pair<int64_t, int64_t>> word_frames;  // per word: [first, end) unit frames
  std::vector<int64_t> units;       // unit ids (runs when deduplicated)
  std::vector<int64_t> unit_start;  // per unit: its first frame, ascending
  std::vector<std::pair<double, double>> word_seconds;  // per word: [start, end] in seconds
  int64_t Words() const { return static_cast<int64_t>(word_tokens.size()); }
};

// Checks the alignment and builds the utterance. `units`: unit ids; `durations`: frames per unit
// (empty = one frame each); audio_seconds: the recording's length (< 0 = unknown, then only the
// units bound the times). Frames mode: no units (empty) and frame_rate_hz 0; audio_seconds must
// be known. slm::Error naming `where` for: no words, a word without text, words that
// overlap (one ends more than 10 ms after the next starts), a word ending after the audio (10 ms
// tolerance), units that end before the last word (one frame tolerance), durations that do not
// match the units.
AlignedUtterance AlignUtterance(const std::string& id, const std::vector<manifest::Word>& words,
                                const std::vector<int64_t>& units, const std::vector<int64_t>& durations,
                                double frame_rate_hz, double audio_seconds,
                                const std::function<std::vector<int64_t>(const std::string&)>& tokenize,
                                const std::string& where);

uint64_t InterleaveSeed(uint64_t seed, int64_t epoch, const std::string& id);

// Which of `words` words are spoken, for the interleaved stream. poisson: spans of length
// max(1, Poisson(lambda)) placed uniformly at random where they neither overlap nor touch another
// span, until round(eta * words) words are speech (at least 1 and, with 2 or more words, at most
// words - 1, so the sequence has both modalities); span: the same with fixed-length spans; random:
// each word independently with probability p (adjacent speech words form one span).
std::vector<bool> SelectSpeechWords(int64_t words, const InterleaveOptions& options, std::mt19937_64& rng);

struct SequenceStats {
  int64_t sequences[3] = {0, 0, 0};  // by Stream
  int64_t tokens[3] = {0, 0, 0};     // by Stream (all tokens, BOS/EOS included)
  int64_t text_tokens = 0, unit_tokens = 0, marker_tokens = 0;
  int64_t words = 0, speech_words = 0;  // over interleaved sequences
  int64_t speech_spans = 0, switches = 0;  // over interleaved sequences
  int64_t truncated = 0;                // sequences cut to the context length when packed
  void Add(const SequenceStats& other);
  nlohmann::json ToJson() const;  // shares, mean span length, switches per interleaved sequence
};

// Appends the ids of words [first, last) in one modality (no marker). Speech: the units whose first
// frame lies in [word_frames[first].first, word_frames[last - 1].second).
void AppendSpan(const AlignedUtterance& u, int64_t first, int64_t last, bool speech,
                const InterleaveIds& ids, std::vector<int64_t>& out, SequenceStats* stats = nullptr);
// BOS, then each run of equal modality with its marker, then EOS.
std::vector<int64_t> BuildSequence(const AlignedUtterance& u, const std::vector<bool>& speech,
                                   const InterleaveIds& ids, SequenceStats* stats = nullptr);
// The target of a word-cued tts example (a tts prompt template ending in {words}, train/tasks.h):
// for each word, <text>, its text tokens, <speech>, then the units from the word's first frame to
// the next word's first frame (the first word's from frame 0, the last word's to the end), so
// every unit is said and a pause belongs to the word before it; then EOS. The words are the cue
// that keeps a small LM aligned with the text it is saying (adapters::TtsPipeline generates in the
// same layout, one word at a time). Needs units (not frames mode).
std::vector<int64_t> WordCuedUnits(const AlignedUtterance& u, const InterleaveIds& ids);

// Frames mode: the [start, end] seconds of each speech run of `speech`, in order (one per <speech>
// marker of BuildSequence).
std::vector<std::pair<double, double>> SpeechClips(const AlignedUtterance& u, const std::vector<bool>& speech);

// Draw probabilities of the three streams that give the options' token shares, from the mean
// sequence length of each stream over a source. A stream with share 0 is never drawn.
std::vector<double> StreamProbabilities(const InterleaveOptions& options, const double mean_tokens[3]);

// The sequence of utterance `u` in epoch `epoch`: stream drawn with `probabilities`, spans by
// SelectSpeechWords, all from InterleaveSeed(options.seed, epoch, u.id).
std::vector<int64_t> EpochSequence(const AlignedUtterance& u, const InterleaveOptions& options,
                                   const std::vector<double>& probabilities, int64_t epoch,
                                   const InterleaveIds& ids, SequenceStats* stats = nullptr,
                                   std::vector<bool>* speech_words = nullptr);

// First-fit packing in order: each sequence (by its length) goes into the first row it fits in,
// else a new row; returns the sequence indices of each row. A sequence longer than `context` gets a
// row of its own (the dataset then cuts a units-mode one to the row; frames-mode ones are filtered
// out on load). slm::Error for context <= 0.
std::vector<std::vector<size_t>> PackByLength(const std::vector<int64_t>& lengths, int64_t context);

}  // namespace slm::train
