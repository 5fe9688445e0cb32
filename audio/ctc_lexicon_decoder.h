// CTC prefix beam search constrained by a word lexicon, with a word n-gram LM by shallow fusion
// (Hannun et al. 2014, "First-pass large vocabulary continuous speech recognition using
// bi-directional recurrent DNNs"; the lexicon-constrained form of flashlight's LexiconDecoder and
// pyctcdecode). What it adds over greedy decoding (CtcGreedyWords): the character CTC head spells
// phonetically ("t is adag"); the search keeps several spellings alive and lets the lexicon (only
// words the LM knows, partial words must be prefixes of one) and the LM (which words follow which)
// choose among them.
//
// Search: over the CTC alphabet (audio/ctc.h: 0 blank, 1 space = word boundary, 2 apostrophe,
// 3..28 a-z), one hypothesis per distinct label prefix with its blank/non-blank path
// probabilities; a prefix's score is
//     ln P_ctc(prefix) + lm_weight * (ln P_lm(completed words) + lookahead(partial word))
//                      + word_bonus * (completed words)
// where lookahead is the best unigram ln-probability of a lexicon word the partial word can still
// become (LM smearing, so a word is not penalised only once it is complete). A word completes
// when the CTC emits a space (or the utterance ends), and only if the partial word is a lexicon
// word; the final score adds ln P_lm(</s> | context). The best `beam` prefixes survive each frame.
// Pruning for speed: a frame's characters with ln-probability below char_threshold are not tried,
// and a frame whose blank posterior exceeds blank_skip only extends prefixes by blank/repeat.
// Without an LM (nullptr) there is no lexicon and no LM term: plain CTC prefix beam search, which
// with beam 1 on peaked posteriors reads the same as greedy decoding.
//
// Output: an audio::CtcTranscript like CtcGreedyWords': the best label sequence is force-aligned
// (CTC Viterbi) to the frames, so each word's span [start_frame, end_frame) runs from its first
// character's first frame to its last character's last frame and its confidence is the mean over
// its characters of the peak posterior of that character on its aligned frames; the transcript's
// confidence is the same mean over every character, spaces included.
//
// Input: logits or log-probabilities [T, CtcAlphabet::kSize] of one utterance's real frames, any
// float dtype, any device (log_softmax in float32 on the CPU; log_softmax of log-probabilities is
// the identity).
//
// Cost: O(T * beam * C) extensions per utterance (C = characters above char_threshold in a frame,
// at most 28), each an O(1) hash lookup; one LM lookup per new (prefix, word) pair; the final
// alignment O(T * L) for L output characters. Deterministic: ties are broken by creation order,
// never by hash order or address.
//
// Thread-safety: a CtcLexiconDecoder is immutable after construction and may be shared by any
// number of threads (it holds the WordLm by shared_ptr); each CtcBeamStream belongs to one
// utterance and is used by one thread at a time.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "audio/ctc.h"
#include "audio/word_lm.h"

namespace slm::audio {

struct CtcBeamOptions {
  int beam = 16;                 // prefixes kept per frame (>= 1)
  float lm_weight = 0.6f;        // alpha, on the LM's ln-probabilities
  float word_bonus = 0.f;        // beta, ln units per completed word
  float char_threshold = -8.f;   // ln: characters less likely in a frame are not tried
  float blank_skip = 0.999f;     // frames with P(blank) above this extend by blank only (1 = never)
  // slm::Error naming the field for a value out of range.
  void Validate() const;
};

class CtcBeamStream;

class CtcLexiconDecoder {
 public:
  // `lm` may be null (no lexicon, no LM). slm::Error for bad options or an LM whose vocabulary has
  // no spellable word.
  CtcLexiconDecoder(std::shared_ptr<const WordLm> lm, const CtcBeamOptions& options);
  // The whole utterance at once (= Start, Advance, Finish). slm::Error for logits not [T, kSize].
  CtcTranscript Decode(const torch::Tensor& logits) const;
  // An incremental search over frames as they arrive (the server's streams).
  std::unique_ptr<CtcBeamStream> Start() const;

  const CtcBeamOptions& Options() const { return options_; }
  const WordLm* Lm() const { return lm_.get(); }

 private:
  friend class CtcBeamStream;
  // The lexicon as a character trie; node 0 is the root (empty partial word).
  struct TrieNode {
    int32_t first_edge = 0, edges = 0;  // children: edges_[first_edge, first_edge + edges)
    int32_t word = -1;                  // LM id of the word ending here
    float lookahead = 0;                // best unigram ln-probability of a word below
  };
  struct TrieEdge {
    int8_t label;
    int32_t child;
  };
  int32_t TrieChild(int32_t node, int64_t label) const;
  std::shared_ptr<const WordLm> lm_;
  CtcBeamOptions options_;
  std::vector<TrieNode> trie_;
  std::vector<TrieEdge> edges_;
};

class CtcBeamStream {
 public:
  explicit CtcBeamStream(const CtcLexiconDecoder& decoder);
  // Consumes the next frames (logits or log-probabilities [n, kSize], n may be 0).
  void Advance(const torch::Tensor& logits);
  // The best hypothesis so far, its partial word spelled as is (interim transcripts).
  CtcTranscript Interim() const;
  // Ends the utterance: completes or drops each prefix's partial word, adds </s>, returns the best.
  // Advance must not be called afterwards.
  CtcTranscript Finish();
  int64_t Frames() const { return frames_; }

 private:
  struct Prefix {  // a labelled prefix, shared by its extensions
    int32_t parent = -1;
    int8_t label = -1;  // last CTC label; -1 for the empty prefix
    int32_t trie = 0;   // lexicon node of the partial word
    int32_t partial = 0;  // characters in the partial word
    int32_t words = 0;    // completed words
    float lm = 0;         // ln P_lm of the completed words
    WordLmState state;
  };
  struct Hyp {
    int32_t prefix;
    float blank, non_blank;  // ln P(prefix, path ends in blank / in its last label)
  };
  int32_t Extend(int32_t prefix, int8_t label);  // -1 when the lexicon forbids it
  float Score(const Hyp& h) const;
  std::vector<int64_t> Labels(int32_t prefix) const;
  CtcTranscript Align(std::vector<int64_t> labels) const;

  const CtcLexiconDecoder& decoder_;
  std::vector<Prefix> prefixes_;
  std::unordered_map<uint64_t, int32_t> children_;  // (prefix << 5 | label) -> prefix
  std::vector<Hyp> beam_;
  std::vector<float> log_probs_;  // [frames_ * kSize], every frame so far (the final alignment)
  int64_t frames_ = 0;
  bool finished_ = false;
};

}  // namespace slm::audio
