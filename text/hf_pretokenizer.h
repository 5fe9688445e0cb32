// tokenizer.json pre-tokenizers: ByteLevel, Split, Metaspace, Digits, WhitespaceSplit, Sequence,
// with Hugging Face `tokenizers`' semantics: each cuts the current pieces into smaller ones (and
// ByteLevel / Metaspace rewrite them), empty pieces are dropped.
//
// ByteLevel's byte-to-unicode map is deferred when nothing follows it (PreTokens::byte_level):
// the BPE model maps the bytes of a piece itself, and only on a cache miss.
//
// Thread-safety: immutable after parsing; Apply may be called concurrently on distinct PreTokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/hf_json.h"

namespace slm::text::hf {

struct PreTokenSpan {
  size_t begin = 0;
  size_t end = 0;
  // The piece starts where the encoded string starts (Metaspace's prepend_scheme "first").
  bool at_start = false;
};

// The pieces of one normalized segment: spans of `text`.
struct PreTokens {
  std::string_view text;  // the segment, or `storage` once a step rewrote it
  std::string storage;
  std::vector<PreTokenSpan> pieces;
  // The pieces still need GPT-2's byte-to-unicode map (a final ByteLevel step).
  bool byte_level = false;

  void Reset(std::string_view segment, bool at_start);
  std::string_view Piece(const PreTokenSpan& span) const {
    return text.substr(span.begin, span.end - span.begin);
  }
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void Apply(PreTokens& tokens) const = 0;
};

// The pre-tokenizer at `path`; `last` says nothing follows it (ByteLevel may defer its map).
std::unique_ptr<PreTokenizer> ParsePreTokenizer(const json& node, const std::string& path,
                                                const JsonContext& ctx, bool last = true);

}  // namespace slm::text::hf
