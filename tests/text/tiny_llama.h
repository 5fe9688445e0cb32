// A small random Llama for tests: weights wide enough (initializer_range 0.2) that logits are
// O(1), so tolerances and greedy choices mean something.
#pragma once

#include <torch/torch.h>

#include "text/llama.h"

namespace slm::testing {

inline text::LlamaConfig TinyLlamaConfig(int64_t vocab_size = 97, int64_t hidden_size = 32,
                                         int64_t max_positions = 128) {
  text::LlamaConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = hidden_size;
  c.intermediate_size = 2 * hidden_size;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = max_positions;
  c.rms_norm_eps = 1e-5;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.initializer_range = 0.2;
  return c;
}

inline text::LlamaModel TinyLlama(const text::LlamaConfig& config = TinyLlamaConfig(),
                                  uint64_t seed = 7) {
  torch::manual_seed(seed);
  text::LlamaModel model(config);
  model->Freeze();
  return model;
}

}  // namespace slm::testing
