// A tokenizer.json for tests: a character BPE over a-z, space and newline (no merges), with
// ChatML's special tokens <|endoftext|>, <|im_start|>, <|im_end|> (ids 29, 30, 31) and no BOS, as
// Qwen's tokenizers have none. Written with `config` as tokenizer_config.json.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/test_util.h"

namespace slm::testing {

inline std::string WriteChatmlTokenizer(const TempDir& dir, const nlohmann::json& config) {
  nlohmann::json vocab = {{"<unk>", 0}, {" ", 1}, {"\n", 2}};
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = vocab.size();
  nlohmann::json added = nlohmann::json::array();
  int64_t id = vocab.size();
  for (const std::string token : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
    added.push_back({{"id", id++}, {"content", token}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  const nlohmann::json tokenizer = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr},
                          {"added_tokens", added}, {"normalizer", nullptr}, {"pre_tokenizer", nullptr},
                          {"post_processor", nullptr}, {"decoder", nullptr},
                          {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  std::ofstream(dir.File("tokenizer.json")) << tokenizer.dump();
  std::ofstream(dir.File("tokenizer_config.json")) << config.dump();
  return dir.path();
}

}  // namespace slm::testing
