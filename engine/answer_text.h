// How an answer's tokens become streamed text and how each next token is chosen, per row.
//
// TokenChooser reproduces text::Generate's choice for one row (text/generate.h): logits in float32
// on the CPU, the repetition penalty over the tokens seen (the prompt's ids for a token prompt,
// the generated ones always), then argmax (temperature 0) or temperature -> top-k -> top-p -> a
// multinomial draw from the row's own CPU generator seeded with its seed. A row therefore gets
// the tokens it would get from text::Generate / MultimodalLM::Generate alone, whatever it is
// batched with. Only ids below `vocabulary` are eligible: an embedding table padded beyond its
// tokenizer (or a TTS adapter's unit rows) must never produce an undecodable id.
//
// TextStreamer turns tokens into the text deltas an API streams: the whole answer is decoded
// after every token (Hugging Face's incremental-detokenization rule: a sentencepiece piece's
// leading space depends on what precedes it), a UTF-8 sequence not yet complete and a tail that
// may be the start of a stop string are held back, and a completed stop string ends the answer
// without being sent.
//
// Thread-safety: one object per row, used by one thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/types.h"
#include "text/tokenizer.h"

namespace slm::engine {

class TokenChooser {
 public:
  // `prompt_ids`: the ids a token prompt starts with (seen by the repetition penalty); empty for
  // an embeddings prompt (media), as text::GenerateFromEmbeds.
  TokenChooser(const SamplingSettings& sampling, int64_t vocabulary, const std::vector<int64_t>& prompt_ids);
  // The next id from logits [V] (any dtype/device); records it as seen.
  int64_t Choose(const torch::Tensor& logits);

 private:
  SamplingSettings sampling_;
  int64_t vocabulary_;
  torch::Generator generator_;
  torch::Tensor seen_;  // [1, V] bool, only with a repetition penalty
};

class TextStreamer {
 public:
  TextStreamer(const text::Tokenizer& tokenizer, std::vector<std::string> stop);
  // Appends `token`; returns the text it releases. Sets *stopped when a stop string completed
  // (the returned text then ends right before it, and the answer is over).
  std::string Add(int64_t token, bool* stopped);
  const std::vector<int64_t>& Tokens() const { return tokens_; }
  // The whole answer decoded (special tokens skipped), stop string excluded.
  std::string Text() const;

 private:
  const text::Tokenizer& tokenizer_;
  std::vector<std::string> stop_;
  std::vector<int64_t> tokens_;
  std::string sent_;
  bool stopped_ = false;
};

// Bytes at the end of `s` that start a UTF-8 sequence not yet complete.
size_t IncompleteUtf8Tail(const std::string& s);

}  // namespace slm::engine
