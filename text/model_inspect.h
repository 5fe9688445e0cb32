// What is in a Hugging Face model directory and whether slm runs it (`slm model inspect DIR`):
// the architecture config.json describes, the checkpoint's parameters, dtypes and shards (read
// from the safetensors headers only: nothing is loaded, so a directory of any size is inspected in
// milliseconds), the tokenizer (format, vocabulary, special tokens), the chat format, and every
// reason slm cannot run it, each naming the file and key.
//
// "Supported" means: config.json is a family of text/model_family.h with options slm implements,
// every tensor the model needs is in the checkpoint with the right shape and a float dtype and no
// other tensor is, and a tokenizer loads whose ids fit the embedding rows. A chat template slm does
// not recognise is a note, not a problem: model.chat_format can set the format.
//
// Thread-safety: InspectModel reads files only; concurrent calls are safe.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "text/llama.h"

namespace slm::text {

class Tokenizer;

struct ShardSummary {
  std::string file;     // name inside the directory
  int64_t tensors = 0;
  int64_t bytes = 0;    // tensor data bytes
};

struct ModelInspection {
  std::string dir;
  std::string model_type;                  // config.json's, as written ("" when absent)
  std::vector<std::string> architectures;  // config.json's
  std::optional<LlamaConfig> config;       // when slm parses config.json
  bool supported = false;
  std::vector<std::string> problems;  // why not, each naming the file and key or tensor
  std::vector<std::string> notes;     // what does not block support (an unrecognised chat template)

  int64_t parameters = 0;                 // elements of the checkpoint's model tensors
  std::map<std::string, int64_t> dtypes;  // safetensors dtype ("BF16") -> number of tensors
  std::vector<ShardSummary> shards;
  int64_t weight_bytes = 0;

  std::string tokenizer_format;  // "sentencepiece" | "tokenizer.json" | "" (none loaded)
  int64_t tokenizer_vocab = 0;   // ids including added tokens
  int64_t tokenizer_model_vocab = 0;
  std::map<std::string, nlohmann::json> special_tokens;  // "bos" -> {"id", "token"}
  std::string chat_format;  // resolved name, "" when the template is not recognised
  std::vector<std::string> stop_tokens;  // the chat format's stop strings

  nlohmann::json ToJson() const;
  // The human-readable report, one line per fact.
  std::vector<std::string> Lines() const;
};

// Never throws for a bad directory: what cannot be read becomes a problem. slm::Error only when
// `dir` is not a directory.
ModelInspection InspectModel(const std::string& dir);

// slm::Error naming `where` when the tokenizer has ids the model has no embedding row for: a
// vocabulary larger than config.json's vocab_size, or an added token of the tokenizer file with
// an id at or beyond it (tokens slm adds itself, markers and speech units, are spliced or get
// their own rows and are not counted).
void CheckTokenizerFitsModel(const Tokenizer& tokenizer, const LlamaConfig& config, const std::string& where);

}  // namespace slm::text
