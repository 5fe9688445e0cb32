// slm::text::TokenizerModel: the backend interface behind slm::text::Tokenizer. A backend is one
// tokenizer file format: a sentencepiece model (text/sentencepiece_model.h) or a Hugging Face
// tokenizer.json (text/hf_tokenizer.h). Tokenizer keeps what is the same for every format (added
// and special tokens, markers and speech units, special ids from the config files, batching,
// persistence of added tokens) and hands each piece of text between added tokens to the backend.
//
// The pipeline Tokenizer::Encode runs, in Hugging Face `tokenizers` order:
//   1. split the text on added tokens that are matched on the raw text;
//   2. Normalize() each remaining segment (identity without a normalizer);
//   3. with HfAddedTokenRules(), split the normalized segment on added tokens flagged
//      `normalized` (their normalized form);
//   4. Encode() each remaining piece: pre-tokenization and the model, no added tokens, no
//      BOS/EOS.
// Tokenizer::EncodeWithSpecialTokens then calls PostProcess().
//
// Ids: [0, VocabSize()) are the model's own vocabulary; added tokens beyond it belong to
// Tokenizer. Callers check ids before calling IdToPiece.
//
// Errors: slm::Error naming the model file (Source()). Thread-safety: a constructed backend is
// immutable as far as callers can observe; every const method may be called concurrently (caches
// are per thread).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace slm::text {

struct AddedToken {
  std::string content;
  int64_t id = -1;
  // Special tokens are dropped by Decode(..., skip_special_tokens=true). Markers and speech units
  // are special; tokenizer_config.json may declare non-special added tokens.
  bool special = true;
  // Hugging Face's matching flags (tokenizers' AddedToken): match only as a whole word; swallow
  // the whitespace on the left / right of the match; match the normalized text (tokenizer.json
  // backends only; the sentencepiece backend matches every added token on the raw text).
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// BOS/EOS/PAD/UNK as the model file declares them; -1 = none.
struct SpecialTokenIds {
  int64_t bos = -1;
  int64_t eos = -1;
  int64_t pad = -1;
  int64_t unk = -1;
};

// One id handed to TokenizerModel::Decode, with what Tokenizer knows about it.
struct DecodeToken {
  int64_t id = -1;
  const AddedToken* added = nullptr;  // the added token with this id, if it is one
  bool special = false;               // Tokenizer::IsSpecial(id)
  bool skip = false;                  // dropped (skip_special_tokens and special)
};

class TokenizerModel {
 public:
  virtual ~TokenizerModel() = default;

  // "sentencepiece" or "tokenizer.json".
  virtual const char* Format() const = 0;
  // The file the model was loaded from (for messages).
  virtual const std::string& Source() const = 0;
  // "the sentencepiece model '<path>'": how messages name this model.
  std::string Describe() const {
    return std::string("the ") + Format() + " model '" + Source() + "'";
  }

  virtual int64_t VocabSize() const = 0;
  // The piece of an id in [0, VocabSize()) ("" for an id the vocabulary skips).
  virtual std::string IdToPiece(int64_t id) const = 0;
  // The id of a piece of the model's vocabulary, nullopt when there is none.
  virtual std::optional<int64_t> FindPiece(std::string_view piece) const = 0;
  // sentencepiece control pieces (<s>, </s>, ...); tokenizer.json models have none.
  virtual bool IsControl(int64_t id) const = 0;
  virtual SpecialTokenIds DefaultSpecialIds() const = 0;
  // Added tokens the model file itself declares (tokenizer.json "added_tokens"), in file order.
  virtual std::vector<AddedToken> FileAddedTokens() const { return {}; }

  // True when added tokens flagged `normalized` are matched in the normalized text (step 3 above,
  // Hugging Face tokenizers' rule); false matches every added token on the raw text.
  virtual bool HfAddedTokenRules() const { return false; }
  // True when the model wants valid UTF-8 (Tokenizer repairs invalid input to U+FFFD first, as
  // Python's "replace" error handler does); sentencepiece handles bad bytes itself.
  virtual bool NeedsValidUtf8() const { return false; }
  virtual bool HasNormalizer() const { return false; }
  virtual std::string Normalize(std::string_view segment) const { return std::string(segment); }
  // Appends the ids of one normalized piece of text. at_text_start: the piece begins the encoded
  // string (Metaspace's prepend_scheme "first").
  virtual void Encode(std::string_view normalized, bool at_text_start,
                      std::vector<int64_t>& ids) const = 0;
  // The ids Hugging Face's encode(text, add_special_tokens=True) gives for the sequence `ids`:
  // tokenizer.json's post_processor; for sentencepiece, `tokenizer_ids.bos` first when there is
  // one (transformers' LlamaTokenizer defaults).
  virtual std::vector<int64_t> PostProcess(const std::vector<int64_t>& ids,
                                           const SpecialTokenIds& tokenizer_ids) const = 0;
  // Text of the tokens, each backend following its library's rules for added and special tokens.
  virtual std::string Decode(const std::vector<DecodeToken>& tokens) const = 0;

  // Writes the model file into the existing directory `dir`.
  virtual void Save(const std::string& dir) const = 0;
  // The tokenizer_config.json Tokenizer::Save writes when the directory has none.
  virtual nlohmann::ordered_json DefaultTokenizerConfig() const = 0;
};

}  // namespace slm::text
