// tokenizer.json normalizers: NFC, NFD, NFKC, NFKD, Replace, Prepend, Strip, ByteLevel, Sequence,
// with Hugging Face `tokenizers`' semantics on the text (offsets are not tracked: slm needs ids).
//
// Thread-safety: immutable after parsing; Apply may be called concurrently.
#pragma once

#include <memory>
#include <string>

#include "text/hf_json.h"

namespace slm::text::hf {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Normalizes valid UTF-8 in place.
  virtual void Apply(std::string& text) const = 0;
};

// The normalizer at `path` ("normalizer"); slm::Error naming the path for unsupported types.
std::unique_ptr<Normalizer> ParseNormalizer(const json& node, const std::string& path,
                                            const JsonContext& ctx);

}  // namespace slm::text::hf
