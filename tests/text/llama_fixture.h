// Helpers shared by the Llama test files (tests/text/llama_*test.cpp): a tiny model whose logits
// are O(1), id tensors, a no-grad forward, and raw file writers for checkpoints the writer would
// refuse. Test-only; not thread-safe (torch::manual_seed).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "text/llama.h"

namespace slm::text::llama_testing {

// A small model whose weights are large enough (initializer_range 0.2) that logits are O(1):
// tolerances then mean something.
inline LlamaConfig TinyConfig(bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.initializer_range = 0.2;
  return c;
}

inline LlamaModel TinyModel(bool tied = false, uint64_t seed = 7) {
  torch::manual_seed(seed);
  LlamaModel model(TinyConfig(tied));
  model->eval();
  return model;
}

inline torch::Tensor Ids(std::vector<int64_t> ids, int64_t batch = 1) {
  const int64_t steps = static_cast<int64_t>(ids.size()) / batch;
  return torch::tensor(ids, torch::kLong).reshape({batch, steps});
}

inline double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

inline LlamaOutput Forward(LlamaModel model, const torch::Tensor& ids, KVCache* cache = nullptr,
                    const torch::Tensor& mask = {}) {
  torch::NoGradGuard no_grad;
  LlamaInput input;
  input.input_ids = ids;
  input.attention_mask = mask;
  input.cache = cache;
  return model->forward(input);
}

inline std::vector<std::pair<std::string, torch::Tensor>> NamedTensors(LlamaModel& model) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& named : model->named_parameters())
    tensors.emplace_back(named.key(), named.value().detach().clone());
  return tensors;
}

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A safetensors file from a raw header and data block, for files the writer would refuse.
inline void WriteRawSafetensors(const std::string& path, const std::string& header,
                         const std::string& data) {
  std::string bytes(8, '\0');
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  WriteText(path, bytes + header + data);
}

}  // namespace slm::text::llama_testing
