// Autoregressive generation with the Llama backbone (text/llama.h): greedy or sampled decoding of
// a batch of prompts with a KV cache, streaming each new token to a callback.
//
// Batching: prompts of different lengths are LEFT-padded into one [B, T] batch with an attention
// mask, so every row's next token is predicted at the last column; position ids count real
// tokens only (cumsum(mask) - 1, as Hugging Face), so row i of a batch generates what prompt i
// generates alone (up to floating-point reassociation). The prompt is run once (prefill), then one
// token per step for the whole batch through the KV cache. Rows that finished keep being fed a
// padding token so the batch keeps its shape; those tokens are never reported.
//
// Sampling follows transformers' generate: the repetition penalty (CTRL: a positive logit of a
// token already in the prompt or the generated text is divided by the penalty, a negative one
// multiplied) applies to greedy and sampled decoding; temperature == 0 is greedy (argmax),
// otherwise logits / temperature -> top-k -> top-p (nucleus, smallest set of tokens whose
// probability reaches top_p, always at least one) -> a multinomial draw from a CPU torch::Generator
// seeded with `seed`, so the same seed, model and prompts give the same tokens on any device.
//
// Devices and dtypes: the model may be on any device in any dtype; prompts are moved to the
// model's device, logits are float32 (LlamaOutput), sampling runs on the CPU.
//
// Errors: slm::Error for invalid options, an empty prompt list or prompt, a token id outside the
// model's vocabulary, and prompt length + max_new_tokens > max_position_embeddings.
//
// Thread-safety: the functions hold no global state; concurrent calls need separate models or a
// frozen model (see LlamaModel), and the callback runs on the calling thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "text/llama.h"

namespace slm::text {

// Called before each step's choice with that step's logits [B, V] (float32, CPU, writable) and
// the tokens each row has produced so far (new tokens only); it may rewrite the logits, e.g. set
// tokens a row must not produce to -inf. Runs on the calling thread.
using LogitsProcessor =
    std::function<void(torch::Tensor& logits, const std::vector<std::vector<int64_t>>& tokens)>;

struct GenerationOptions {
  int64_t max_new_tokens = 64;      // >= 0; 0 returns no tokens
  double temperature = 0.0;         // 0 = greedy; > 0 samples
  int64_t top_k = 0;                // 0 = off; sampling only
  double top_p = 1.0;               // in (0, 1]; 1 = off; sampling only
  double repetition_penalty = 1.0;  // > 0; 1 = off; > 1 discourages repeats
  // A row finishes when it produces one of these ids (the id itself is not reported). Empty = the
  // model config's eos_token_ids.
  std::vector<int64_t> stop_token_ids;
  // true: no token stops a row, every row produces max_new_tokens (benchmarks, tests).
  bool ignore_stop_tokens = false;
  // Non-empty: every new token is one of these ids or a stop token (e.g. a TTS adapter speaking
  // only unit tokens). Ids must be in the model's vocabulary.
  std::vector<int64_t> allowed_token_ids;
  uint64_t seed = 0;
  // How the steps after the prompt run: "dynamic" (the KV cache grows by one position per step),
  // "static" (a preallocated StaticKVCache of prompt + max_new_tokens positions: fixed shapes),
  // "graph" (static, and the step is captured once as a CUDA graph and replayed: one launch per
  // token instead of hundreds of kernel launches; CUDA only), "auto" = graph on CUDA, dynamic
  // elsewhere. All give the same tokens up to floating-point reassociation.
  std::string decode_mode = "auto";
  // Set in code, not config: rewrites each step's logits before the choice (LogitsProcessor; e.g.
  // text/ctc_guide.h's CTC-guided decoding).
  LogitsProcessor logits_processor;
  // Set in code, not config: per-row LoRA from a bank for every forward pass (LlamaInput::row_lora;
  // slots [B] for the batch's rows). Must outlive the call.
  const RowLora* lora = nullptr;

  // Reads the keys max_new_tokens, temperature, top_k, top_p, repetition_penalty,
  // stop_token_ids, ignore_stop_tokens, seed, decode_mode (strict: wrong types and ranges name
  // the key).
  void Load(config::Node node);
  // slm::Error naming the option for an out-of-range value.
  void Validate() const;
};

// Called for every new token of a row as soon as it is produced, rows in order within a step.
// Returning false finishes that row (finish reason "callback"); the token passed is kept.
using TokenCallback = std::function<bool(int64_t row, int64_t token_id)>;

struct GenerationResult {
  std::vector<std::vector<int64_t>> tokens;  // per row: new tokens only, without the stop token
  // Per row: "stop" (a stop token), "length" (max_new_tokens reached) or "callback".
  std::vector<std::string> finish_reasons;
  int64_t prompt_tokens = 0;   // real (unpadded) prompt tokens over all rows
  double prefill_seconds = 0;  // the prompt's forward pass, including the first token's choice
  double decode_seconds = 0;   // every later step
  int64_t GeneratedTokens() const;
};

// Batched generation from token prompts (each non-empty, ids in [0, vocab_size)) with the KV
// cache.
GenerationResult Generate(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationOptions& options,
                          const TokenCallback& callback = nullptr);

// Generation conditioned on embeddings (how adapters feed speech or images): inputs_embeds
// [B, T, hidden_size] in the model's dtype, attention_mask [B, T] (int64 or bool, 1 = real;
// left-padded; every row needs at least one real position). The prefill runs on the embeddings,
// later steps embed the generated ids. The repetition penalty sees only generated tokens (there
// are no prompt ids), as in transformers.
GenerationResult GenerateFromEmbeds(LlamaModel& model, const torch::Tensor& inputs_embeds,
                                    const torch::Tensor& attention_mask,
                                    const GenerationOptions& options,
                                    const TokenCallback& callback = nullptr);

// Same contract as Generate, but every step recomputes the whole sequence without a cache: the
// reference the cache is tested against and the benchmark's baseline.
GenerationResult GenerateWithoutCache(LlamaModel& model,
                                      const std::vector<std::vector<int64_t>>& prompts,
                                      const GenerationOptions& options,
                                      const TokenCallback& callback = nullptr);

// The logits processing of one step, exposed for tests: logits [B, V] float32 (modified copy
// returned) after the repetition penalty over `seen` ([B, V] bool: tokens in prompt or output).
torch::Tensor ApplyRepetitionPenalty(const torch::Tensor& logits, const torch::Tensor& seen,
                                     double penalty);
// logits / temperature, then top-k and top-p filtering (filtered entries = -inf).
torch::Tensor ApplySamplingFilters(const torch::Tensor& logits, double temperature, int64_t top_k,
                                   double top_p);

}  // namespace slm::text
