// slm::text::Tokenizer: the text front-end of the LM. A tokenizer model (a sentencepiece
// tokenizer.model, or a Hugging Face tokenizer.json: text/tokenizer_model.h lists the backends)
// plus "added tokens": the multimodal markers "<speech>", "<image>", "<text>" and reserved
// speech-unit tokens "<u0>".."<uK-1>", which the adapters splice embeddings at or predict, and the
// added tokens a tokenizer.json declares.
//
// Formats. Load(dir) reads <dir>/tokenizer.model when it is a sentencepiece model, else
// <dir>/tokenizer.json (TokenizerOptions::format can force either). A tokenizer.json gives ids,
// text and special-token handling identical to Hugging Face `tokenizers` (text/hf_tokenizer.h
// lists the components supported). A tiktoken BPE file named tokenizer.model (Llama 3's
// original/tokenizer.model) is refused with a message naming the format: it carries neither the
// split regex nor the special tokens; the tokenizer.json next to it has both.
//
// Added tokens follow Hugging Face's conventions (for sentencepiece, the "legacy" Llama behaviour
// of transformers' sentencepiece tokenizers; for tokenizer.json, `tokenizers`' AddedVocabulary):
//  - Encode first splits the text on added-token strings (longest match, left to right), so
//    "<speech> Transcribe:" is the marker id followed by the ids the model gives for
//    " Transcribe:". Every text segment is encoded on its own, so normalisation applies per
//    segment: sentencepiece's dummy prefix makes a space after a marker part of the next piece
//    ("▁Transcribe"), and whitespace right before a marker is dropped ("a <image>" encodes like
//    "a<image>"). Text without added tokens encodes exactly as the model encodes it. Added tokens
//    of a tokenizer.json keep their single_word / lstrip / rstrip / normalized flags.
//  - A marker that the model already holds as a piece (trained with user_defined_symbols, as
//    TrainTokenizer does) keeps that id. Any other added token gets an id after the vocabulary
//    (and after the tokenizer.json's own added tokens), so VocabSize() grows beyond the model's:
//    those ids have no embedding row in a pretrained LM, whose embedding and LM head must be
//    resized by the adapter stage before the ids are fed to it.
//  - Added tokens persist next to the model file in "added_tokens.json" ({"<u0>": 32000, ...},
//    the tokens beyond the model's vocabulary, Hugging Face's legacy file) and in
//    tokenizer_config.json's "added_tokens_decoder" (every added token, with its flags).
//    Load reads the tokenizer.json's "added_tokens" and either or both files; ids once assigned
//    are kept, so a saved tokenizer reloads with the same ids.
//
// Special token ids (BOS/EOS/PAD/UNK) come from the model (sentencepiece's ids; for tokenizer.json
// the BPE unk_token and the special tokens around the sequence in the post-processor's template)
// and are overridden, in this order, by the model directory's config.json ("bos_token_id",
// "eos_token_id" (an int or a list), "pad_token_id"), generation_config.json (same keys) and
// tokenizer_config.json ("bos_token", "eos_token", "pad_token", "unk_token": a string or
// {"content": ...}). A null value overrides nothing. -1 means "no such token".
//
// Errors (slm::Error, naming the file): a directory with neither model file, a corrupt or
// unsupported model (a tokenizer.json error names the JSON path and the supported values), a
// tiktoken file, an id out of range in Decode / IdToPiece or in a config file, inconsistent
// added-token files, a batch row longer than max_length.
//
// Thread-safety: a loaded Tokenizer is immutable; every const method may be called concurrently.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/added_tokens.h"
#include "text/sentencepiece.h"
#include "text/tokenizer_model.h"

namespace slm::text {

inline constexpr const char* kSpeechMarker = "<speech>";
inline constexpr const char* kImageMarker = "<image>";
inline constexpr const char* kTextMarker = "<text>";

// {"<speech>", "<image>", "<text>"}, in that order (the order TrainTokenizer gives them ids in).
std::vector<std::string> DefaultMarkers();
// "<u17>" for unit 17: the added token of one discrete speech unit.
std::string SpeechUnitToken(int64_t unit);

enum class TokenizerFormat {
  kAuto,           // tokenizer.model if it is a sentencepiece model, else tokenizer.json
  kSentencePiece,  // tokenizer.model
  kTokenizerJson,  // tokenizer.json
};

struct TokenizerOptions {
  // Added tokens that must exist after loading; each keeps the id the model or the directory's
  // added-token files give it, else gets the next id after the vocabulary (markers first, in
  // order, then units). Empty strings and duplicates are errors.
  std::vector<std::string> markers = DefaultMarkers();
  // K: reserve "<u0>".."<uK-1>". Units already present (from a saved tokenizer) keep their ids;
  // a saved tokenizer with more units keeps them all.
  int64_t num_speech_units = 0;
  // Which file of a model directory to read (a file path names its format itself).
  TokenizerFormat format = TokenizerFormat::kAuto;
};

enum class PaddingSide { kLeft, kRight };

struct BatchEncodeOptions {
  bool add_bos = true;
  bool add_eos = false;
  // Left padding for generation (every row's last real token is at the last column, where the
  // next token is predicted), right padding for training.
  PaddingSide padding_side = PaddingSide::kLeft;
  // 0 = no limit. A row with more tokens is an error: nothing is truncated silently.
  int64_t max_length = 0;
};

struct BatchEncoding {
  torch::Tensor input_ids;       // [B, T] int64 on CPU, T = longest row; padding = PaddingId()
  torch::Tensor attention_mask;  // [B, T] int64 on CPU, 1 = real token, 0 = padding
};

struct TokenizerTrainOptions;

class Tokenizer {
 public:
  // `path` is a model directory (reads its tokenizer.model or tokenizer.json, see the header
  // comment, and the JSON side files there) or a model file: a sentencepiece model, or a file
  // named *.json read as a tokenizer.json (side files are read from the file's directory).
  static Tokenizer Load(const std::string& path, const TokenizerOptions& options = {});

  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // UTF-8 text to ids (see the header comment for how added tokens split the text). slm::Error if
  // add_bos / add_eos is requested and the tokenizer has no such token. Invalid UTF-8 is not an
  // error: sentencepiece maps bad bytes itself, tokenizer.json models see them as U+FFFD.
  std::vector<int64_t> Encode(std::string_view text, bool add_bos, bool add_eos) const;
  // The ids Hugging Face gives for encode(text, add_special_tokens=True): a tokenizer.json's
  // post-processor (TemplateProcessing, Bert, Roberta, ByteLevel, Sequence) around Encode's ids;
  // for sentencepiece, BOS (when there is one) first, as transformers' LlamaTokenizer does.
  std::vector<int64_t> EncodeWithSpecialTokens(std::string_view text) const;
  // Ids to text. skip_special_tokens drops the IsSpecial ids; otherwise they appear as their
  // strings ("<s>", "<speech>"). sentencepiece: a text run after an added token that begins with
  // a word boundary ("▁") keeps its leading space, so Decode(Encode("<speech> hi", false, false),
  // false) == "<speech> hi". tokenizer.json: Hugging Face's decode, every token (added tokens
  // included) through the decoder. slm::Error naming the position for an id outside
  // [0, VocabSize()).
  std::string Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;
  // Encodes and pads a batch (see BatchEncodeOptions). An empty list gives [0, 0] tensors.
  BatchEncoding BatchEncode(const std::vector<std::string>& texts,
                            const BatchEncodeOptions& options = {}) const;

  // The piece or added-token string of an id; slm::Error outside [0, VocabSize()).
  std::string IdToPiece(int64_t id) const;
  // The id of an added token or model piece; UnkId() when there is none (sentencepiece's rule).
  int64_t PieceToId(std::string_view piece) const;
  // The id of an added token; slm::Error naming the valid added tokens when it is not one.
  int64_t AddedTokenId(std::string_view content) const;
  // AddedTokenId(SpeechUnitToken(unit)); slm::Error when unit >= NumSpeechUnits().
  int64_t SpeechUnitId(int64_t unit) const;
  // The number of consecutive units "<u0>".."<uK-1>" present.
  int64_t NumSpeechUnits() const { return num_speech_units_; }
  // True for BOS/EOS/PAD, sentencepiece control pieces and special added tokens: what
  // Decode(..., skip_special_tokens=true) drops. UNK is not special: it stands for lost text and
  // decodes as the model renders it (sentencepiece: " \u2047 ").
  bool IsSpecial(int64_t id) const;

  // Ids in [0, VocabSize()): the model's vocabulary followed by added tokens beyond it.
  int64_t VocabSize() const { return vocab_size_; }
  // The size of the model's own vocabulary (sentencepiece pieces, tokenizer.json model.vocab).
  int64_t ModelVocabSize() const { return model_vocab_size_; }
  // ModelVocabSize(), under its older name.
  int64_t SentencePieceVocabSize() const { return model_vocab_size_; }
  // Added tokens sorted by id.
  const std::vector<AddedToken>& AddedTokens() const { return added_; }

  int64_t BosId() const { return bos_id_; }
  // The EOS appended by Encode(add_eos); EosIds() may list more ids that end a generation
  // (Llama 3 style configs list several).
  int64_t EosId() const { return eos_ids_.empty() ? -1 : eos_ids_.front(); }
  const std::vector<int64_t>& EosIds() const { return eos_ids_; }
  int64_t PadId() const { return pad_id_; }
  int64_t UnkId() const { return unk_id_; }
  // The id BatchEncode pads with: PAD, else EOS, else UNK (Llama models usually have no PAD; the
  // attention mask hides padding, so any valid id works).
  int64_t PaddingId() const;

  // Writes the model file (tokenizer.model or tokenizer.json, unchanged), added_tokens.json and
  // tokenizer_config.json into `dir` (created if needed; an existing tokenizer_config.json keeps
  // its other keys; saving a tokenizer.json removes a tokenizer.model there, which Load would
  // read first). Load(dir) restores this tokenizer: the same ids, added tokens and special ids.
  void Save(const std::string& dir) const;

  // The backend (text/tokenizer_model.h).
  const TokenizerModel& Backend() const { return *model_; }
  // "sentencepiece" or "tokenizer.json".
  const char* Format() const { return model_->Format(); }
  // The sentencepiece model; slm::Error for a tokenizer.json tokenizer.
  const SentencePiece& Model() const;
  // The model file this was loaded from (for messages).
  const std::string& Source() const { return model_->Source(); }

 private:
  // The model plus added tokens and special ids from the JSON files in side_dir ("" = none) and
  // from options.
  static Tokenizer Build(std::unique_ptr<TokenizerModel> model, const std::string& side_dir,
                         const TokenizerOptions& options);
  explicit Tokenizer(std::unique_ptr<TokenizerModel> model);
  void ReadAddedTokenFiles(const std::string& dir);
  void AddToken(const AddedToken& token, const std::string& origin);
  void EnsureToken(const std::string& content);
  void IndexAddedTokens();
  void ReadSpecialIds(const std::string& dir);
  int64_t ResolveTokenString(const std::string& content, const std::string& where) const;
  // Appends the ids of `text` without BOS/EOS: added tokens, normalization, the model.
  void EncodeText(std::string_view text, std::vector<int64_t>& ids) const;
  void CheckId(int64_t id, const char* what) const;
  const AddedToken* FindAdded(int64_t id) const;

  std::unique_ptr<const TokenizerModel> model_;
  int64_t model_vocab_size_ = 0;
  int64_t vocab_size_ = 0;
  std::vector<AddedToken> added_;                       // sorted by id
  std::unordered_map<std::string, int64_t> added_ids_;  // content -> id
  std::unordered_map<int64_t, size_t> added_index_;     // id -> index in added_
  AddedTokenMatcher raw_matcher_;                       // added tokens matched on the raw text
  AddedTokenMatcher normalized_matcher_;  // `normalized` ones, in normalized text (tokenizer.json)
  int64_t num_speech_units_ = 0;
  int64_t bos_id_ = -1;
  std::vector<int64_t> eos_ids_;
  int64_t pad_id_ = -1;
  int64_t unk_id_ = -1;

  friend Tokenizer TrainTokenizer(const TokenizerTrainOptions& options);
};

struct TokenizerTrainOptions {
  std::string input;    // UTF-8 corpus, one sentence per line
  std::string out_dir;  // receives tokenizer.model (+ tokenizer.vocab and the JSON side files)
  int vocab_size = 8000;
  std::string model_type = "unigram";  // "unigram" or "bpe"
  // Trained in as user_defined_symbols, so they get ids 3, 4, 5, ... inside the vocabulary (no
  // embedding resize needed for them).
  std::vector<std::string> markers = DefaultMarkers();
  double character_coverage = 1.0;
  // false makes vocab_size an upper bound (small corpora, docs/HAZARDS.md hazard 4).
  bool hard_vocab_limit = true;
  int64_t input_sentence_size = 0;  // 0 = every sentence (deterministic with a fixed seed)
  uint32_t seed = 0;
  int num_threads = 1;
};

// Trains a Llama-style sentencepiece model (unk=0, bos=1, eos=2, no pad, byte_fallback on, the
// markers as user_defined_symbols), writes <out_dir>/tokenizer.model and the side files, and
// returns it loaded. Needs vocab_size >= 256 byte pieces + 3 specials + markers + the corpus's
// characters. slm::Error with sentencepiece's reason (and what to change) on failure.
Tokenizer TrainTokenizer(const TokenizerTrainOptions& options);

}  // namespace slm::text
