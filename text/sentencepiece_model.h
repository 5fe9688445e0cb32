// slm::text::SentencePieceModel: the sentencepiece backend of Tokenizer (text/tokenizer_model.h),
// a SentencePiece (text/sentencepiece.h) plus its serialized bytes for saving.
//
// Encoding is sentencepiece's own (its normalization, dummy prefix and byte fallback), applied to
// each text segment between added tokens; decoding follows transformers' legacy Llama tokenizer:
// runs of ordinary ids are decoded by sentencepiece, added tokens and rendered special ids are
// inserted verbatim, and a run after one keeps the space its first "▁" stands for.
//
// Errors: slm::Error naming the model (a corrupt model, from LoadFromSerialized).
// Thread-safety: immutable after construction; const methods may be called concurrently.
#pragma once

#include <string>

#include "text/sentencepiece.h"
#include "text/tokenizer_model.h"

namespace slm::text {

class SentencePieceModel : public TokenizerModel {
 public:
  // `bytes` is a serialized sentencepiece ModelProto read from `source` (a path, for messages).
  SentencePieceModel(std::string bytes, const std::string& source);

  const char* Format() const override { return "sentencepiece"; }
  const std::string& Source() const override { return model_.Source(); }
  int64_t VocabSize() const override { return model_.VocabSize(); }
  std::string IdToPiece(int64_t id) const override;
  std::optional<int64_t> FindPiece(std::string_view piece) const override;
  bool IsControl(int64_t id) const override;
  SpecialTokenIds DefaultSpecialIds() const override;
  void Encode(std::string_view normalized, bool at_text_start,
              std::vector<int64_t>& ids) const override;
  std::vector<int64_t> PostProcess(const std::vector<int64_t>& ids,
                                   const SpecialTokenIds& tokenizer_ids) const override;
  std::string Decode(const std::vector<DecodeToken>& tokens) const override;
  void Save(const std::string& dir) const override;
  nlohmann::ordered_json DefaultTokenizerConfig() const override;

  const SentencePiece& Processor() const { return model_; }

 private:
  std::string bytes_;
  SentencePiece model_;
};

}  // namespace slm::text
