// tokenizer.json decoders: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence,
// with Hugging Face `tokenizers`' semantics: each maps the list of token strings to a new list
// (decode_chain), and the text is the concatenation of the last list.
//
// Thread-safety: immutable after parsing; Apply may be called concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/hf_json.h"

namespace slm::text::hf {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>& tokens) const = 0;
};

std::unique_ptr<Decoder> ParseDecoder(const json& node, const std::string& path,
                                      const JsonContext& ctx);

}  // namespace slm::text::hf
