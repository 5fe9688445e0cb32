#include "text/sentencepiece_model.h"

#include <filesystem>
#include <utility>

#include "core/fs.h"
#include "core/strings.h"

namespace slm::text {
namespace {

// sentencepiece's word-boundary marker U+2581 in UTF-8.
constexpr std::string_view kWordBoundary = "\xE2\x96\x81";

}  // namespace

SentencePieceModel::SentencePieceModel(std::string bytes, const std::string& source)
    : bytes_(std::move(bytes)), model_(SentencePiece::LoadFromSerialized(bytes_, source)) {}

std::string SentencePieceModel::IdToPiece(int64_t id) const {
  return model_.IdToPiece(static_cast<int>(id));
}

std::optional<int64_t> SentencePieceModel::FindPiece(std::string_view piece) const {
  const int id = model_.PieceToId(piece);
  // PieceToId answers unk for unknown pieces, so unk itself needs the piece comparison.
  if (id != model_.UnkId() || model_.IdToPiece(id) == piece) return id;
  return std::nullopt;
}

bool SentencePieceModel::IsControl(int64_t id) const {
  return model_.IsControl(static_cast<int>(id));
}

SpecialTokenIds SentencePieceModel::DefaultSpecialIds() const {
  return {model_.BosId(), model_.EosId(), model_.PadId(), model_.UnkId()};
}

void SentencePieceModel::Encode(std::string_view normalized, bool /*at_text_start*/,
                                std::vector<int64_t>& ids) const {
  if (normalized.empty()) return;
  for (const int id : model_.Encode(normalized)) ids.push_back(id);
}

std::vector<int64_t> SentencePieceModel::PostProcess(const std::vector<int64_t>& ids,
                                                     const SpecialTokenIds& tokenizer_ids) const {
  std::vector<int64_t> out;
  out.reserve(ids.size() + 1);
  if (tokenizer_ids.bos >= 0) out.push_back(tokenizer_ids.bos);
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string SentencePieceModel::Decode(const std::vector<DecodeToken>& tokens) const {
  std::string text;
  std::vector<int> run;  // consecutive ordinary sentencepiece ids
  auto flush = [&] {
    if (run.empty()) return;
    const std::string decoded = model_.Decode(run);
    // sentencepiece drops the word boundary of a text's first piece (its dummy prefix); inside a
    // text that started before an added token the space is real.
    if (!text.empty() && StartsWith(model_.IdToPiece(run.front()), kWordBoundary) &&
        !StartsWith(decoded, " ")) {
      text += ' ';
    }
    text += decoded;
    run.clear();
  };
  for (const DecodeToken& token : tokens) {
    if (token.added != nullptr) {
      flush();
      if (!token.skip) text += token.added->content;
    } else if (token.special) {
      flush();
      if (!token.skip) text += model_.IdToPiece(static_cast<int>(token.id));
    } else {
      run.push_back(static_cast<int>(token.id));
    }
  }
  flush();
  return text;
}

void SentencePieceModel::Save(const std::string& dir) const {
  fs::AtomicWriteString((std::filesystem::path(dir) / "tokenizer.model").string(), bytes_);
}

nlohmann::ordered_json SentencePieceModel::DefaultTokenizerConfig() const {
  // Hugging Face's sentencepiece Llama tokenizer; "legacy" is the added-token behaviour of
  // text/tokenizer.h.
  return {{"tokenizer_class", "LlamaTokenizer"},
          {"add_bos_token", true},
          {"add_eos_token", false},
          {"legacy", true},
          {"clean_up_tokenization_spaces", false}};
}

}  // namespace slm::text
