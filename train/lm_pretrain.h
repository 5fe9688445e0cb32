// `slm text pretrain`: trains a small Llama from scratch on the WordNet corpus, tokenizer included,
// and writes a Hugging Face model directory that both slm (LoadLlama, Tokenizer) and transformers
// (LlamaForCausalLM.from_pretrained) load: config.json, model.safetensors, tokenizer.model,
// generation_config.json; plus config.yaml (the effective config) and metrics.jsonl.
//
// Continued pretraining (init_from) starts from an existing model and tokenizer instead.
//
// Training: packed windows of seq_len + 1 tokens (text/lm_data.h) shuffled per epoch with the seed,
// AdamW (no weight decay on norms), linear warm-up then cosine decay to min_lr_ratio * lr, gradient
// clipping, float32 (on `device`; the model directory is written from the CPU). Evaluation every eval.every steps on
// the valid split; the final report has valid and test perplexity next to a unigram baseline
// estimated on the training tokens and scored on the same predicted tokens.
// Deterministic for a fixed seed and thread count. Not thread-safe (one run per process).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/config.h"
#include "text/llama.h"
#include "train/runner.h"

namespace slm::train {

struct LmPretrainConfig : JobConfig {
  struct Data {
    std::string corpus_dir = "data/wordnet";  // output of `slm data corpus` (text/train.txt, ...)
    std::string wordnet_dir = "/usr/share/wordnet";
    bool build_if_missing = true;             // run the WordNet corpus builder when absent
    int64_t max_train_lines = 0;              // 0 = all
    // Question-answer pairs (a manifest with prompt/response, e.g. `slm data dictionary` output)
    // mixed into the training text as text/qa_text.h's QaTrainingText lines, qa_repeat copies
    // of each, spread over the text lines in a seeded order: what the model must know by heart.
    // The final report adds the typed exact-match accuracy on them (greedy, NormalizeAnswer).
    std::string qa_file;
    int64_t qa_repeat = 1;
  } data;
  // A Hugging Face Llama directory to continue from (weights and tokenizer; the tokenizer is not
  // retrained and `tokenizer`/`model` keys may not be given). Empty = from scratch.
  std::string init_from;
  struct Tokenizer {
    int vocab_size = 4096;
    std::string model_type = "unigram";
  } tokenizer;
  text::LlamaConfig model;  // vocab_size comes from the tokenizer
  struct Train : LoopOptions {  // steps, lr schedule, AdamW, clipping, grad_accum, precision (train/runner.h) plus:
    int64_t seq_len = 128;
    double init_std = 0.02;
    Train() {
      batch_size = 32;
      lr = 3e-3;
      weight_decay = 0.1;
    }
  } train;
  struct Eval {
    int64_t every = 200;
    int64_t max_windows = 0;  // 0 = the whole valid split
    int64_t batch_size = 32;
  } eval;
  // seed, threads, device (the model trains in float32 on either), output_dir: train/runner.h JobConfig.

  LmPretrainConfig();  // small-model defaults (see samples/configs/backbone_tiny.yaml)
  void Load(config::Node node);
};

struct LmPretrainResult : JobResult {  // model_dir, parameters, seconds, the loop (train/runner.h)
  int64_t train_tokens_seen = 0;
  double tokens_per_second = 0;
  double valid_perplexity = 0;
  double test_perplexity = 0;
  double unigram_valid_perplexity = 0;
  double unigram_test_perplexity = 0;
  int64_t qa_questions = 0;        // data.qa_file's pairs asked (typed, greedy)
  double qa_exact_match = 0;       // fraction answered exactly (text/qa_text.h NormalizeAnswer)
  nlohmann::json ToJson() const;
};

// Runs the whole pretraining. `effective_config_yaml` is saved as output_dir/config.yaml.
LmPretrainResult PretrainLm(const LmPretrainConfig& config, const std::string& effective_config_yaml,
                        bool quiet = false);

}  // namespace slm::train
