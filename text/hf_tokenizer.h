// slm::text::HfTokenizerModel: the tokenizer.json backend of Tokenizer (text/tokenizer_model.h):
// a Hugging Face `tokenizers` file, encoded and decoded with the library's semantics so that ids
// and text are identical to `tokenizers` (tests/parity/hf_tokenizer_parity_test.cpp checks
// GPT-2, Llama 3, Qwen2 and sentencepiece-style files).
//
// Supported components (anything else is an slm::Error naming the JSON path and the supported
// values):
//   model           BPE (merges as "a b" strings or ["a", "b"] pairs; byte_fallback, fuse_unk,
//                   ignore_merges, continuing_subword_prefix, end_of_word_suffix, unk_token;
//                   dropout must be null or 0)
//   normalizer      NFC, NFD, NFKC, NFKD, Replace, Prepend, Strip, ByteLevel, Sequence
//   pre_tokenizer   ByteLevel, Split, Metaspace, Digits, WhitespaceSplit, Sequence
//   post_processor  TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence
//   decoder         ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence
// "truncation" and "padding" are ignored: Tokenizer never truncates, and pads in BatchEncode.
//
// Thread-safety: immutable after loading; Encode keeps a bounded per-thread cache of the ids of
// recent pre-tokens (what makes BPE fast on natural text), invisible to callers.
#pragma once

#include <memory>
#include <string>

#include "text/tokenizer_model.h"

namespace slm::text {

// Parses a tokenizer.json file. slm::Error naming the file (and the JSON path) for a missing or
// malformed file, an unsupported component, merges that name tokens outside the vocabulary.
std::unique_ptr<TokenizerModel> LoadHfTokenizerModel(const std::string& path);

}  // namespace slm::text
