// CTC-guided decoding of a transcription, as a logits processor of the generation loop
// (text/generate.h): hybrid CTC/attention ASR (Watanabe et al. 2017). At every step the LM's
// `candidates` most likely tokens (plus the stop tokens, plus the tokens that spell the acoustic
// model's own transcript onwards, see below) are rescored by
//   log p_LM(token) + weight * (score(hypothesis + token) - score(hypothesis))
// where score is the acoustic model's prefix score of the hypothesis's spoken form; a token that
// adds no spoken character (a stop token, punctuation, a bare word boundary) is scored as the end
// of the speech instead (the full-transcript score), since otherwise it would cost nothing where
// every letter costs its acoustic probability, and a weak LM would fill the transcript with it.
// Every other token is set to -inf, so greedy decoding takes the best rescored candidate.
//
// Spoken form: what an acoustic model spells (audio/ctc.h's CtcAlphabet has the same characters):
// lower-case ASCII letters, the apostrophe, and ' ' as the word boundary.
//
// The text side and the acoustic side meet only through SpokenScorer, so text/ needs nothing from
// audio/: adapters/multimodal.cpp implements it over a CTC head's log-probabilities.
//
// Thread-safety: SpokenVocabulary is immutable once built (share it between calls and threads).
// The processor CtcGuidedDecoding returns changes its scorers' state: one processor per
// generation call, used from that call's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/generate.h"
#include "text/tokenizer.h"

namespace slm::text {

struct CtcGuideOptions {
  double weight = 0;       // 0 = off (callers skip the processor); > 0 = the acoustic score's weight
  int64_t candidates = 8;  // LM tokens rescored per step, >= 1
};

// The spoken form of text: letters lower-cased, apostrophes kept (at a word's edge too: a
// hypothesis ending in "didn'" is on its way to "didn't"), every other character a word boundary;
// boundaries collapse, and none is left at either end.
std::string SpokenForm(std::string_view text);

// The string a vocabulary piece begins with when the token starts a word: sentencepiece's and
// Metaspace's "▁", byte-level BPE's "Ġ", a plain " " for a BPE over raw text. Found from the
// tokenizer itself: the pieces it encodes "a a" into read <prefix>a<marker>a. "" when the
// tokenizer shows no such marker (no piece is then seen to start a word).
std::string WordStartMarker(const Tokenizer& tokenizer);

// How each token of a tokenizer's own vocabulary ([0, ModelVocabSize()), special tokens left out)
// is spelled in spoken characters: its piece with every word-start marker (WordStartMarker) read
// as ' ', kept only when everything else is ASCII letters and apostrophes ("▁Hello" -> " hello",
// "'s" -> "'s"; "▁Hello," or the byte piece "<0x61>" spell nothing).
class SpokenVocabulary {
 public:
  explicit SpokenVocabulary(const Tokenizer& tokenizer);

  struct Entry {
    int64_t id = 0;
    std::string spelling;  // non-empty; begins with ' ' when the token starts a word
  };
  // The spelled tokens, by increasing id.
  const std::vector<Entry>& Entries() const { return entries_; }
  // The spelling of token `id`; "" for a token that spells nothing.
  std::string Spelling(int64_t id) const;
  const std::string& Marker() const { return marker_; }

 private:
  std::string marker_;
  std::vector<Entry> entries_;
};

// The acoustic side of one utterance. Strings are spoken forms (SpokenForm).
class SpokenScorer {
 public:
  virtual ~SpokenScorer() = default;
  // log P(the utterance's transcript begins with `spoken`); 0 for "".
  virtual double Prefix(const std::string& spoken) = 0;
  // log P(the utterance's transcript is exactly `spoken`).
  virtual double Full(const std::string& spoken) = 0;
  // The acoustic model's own best transcript, in its characters (it may keep a boundary at an
  // end or two in a row: tokens are proposed only while the hypothesis is a prefix of it).
  virtual const std::string& Transcript() const = 0;
};

// The logits processor of CTC-guided decoding (see the header comment) for a batch whose row b is
// heard by rows[b] (rows.size() == the batch size): it reads each row's tokens so far as text
// (tokenizer.Decode without special tokens), rescores that step's candidates and sets every other
// logit to -inf. Works with greedy decoding (GenerationOptions::temperature 0). stop_token_ids:
// the ids that end a row (always candidates: once everything is heard, ending is the only good
// choice). When the hypothesis is still a prefix of the scorer's Transcript(), the tokens of
// `vocabulary` whose spelling continues it become candidates as well (at the very start, only
// word-start tokens, their leading boundary not counted): a weak LM rarely proposes an unexpected
// word itself, and the rescoring then decides between those and the LM's own.
// slm::Error for options.candidates < 1 or a missing tokenizer, vocabulary or row; when called
// with logits of another batch size than rows.size().
LogitsProcessor CtcGuidedDecoding(std::shared_ptr<const Tokenizer> tokenizer,
                                  std::shared_ptr<const SpokenVocabulary> vocabulary,
                                  std::vector<std::shared_ptr<SpokenScorer>> rows,
                                  std::vector<int64_t> stop_token_ids, const CtcGuideOptions& options);

}  // namespace slm::text
