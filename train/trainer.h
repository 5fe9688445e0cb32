// `slm train --config FILE [--set k=v] [--resume]` and `slm eval --config FILE --checkpoint DIR`:
// adapter training of a MultimodalLM from one YAML file (keys documented in docs/CONFIG.md).
//
//   model:       adapters::MultimodalConfig (backbone, encoders, projectors, LoRA)
//   data:        train: [sources], valid: [sources] (train/dataset.h), max_missing_fraction,
//                workers (threads materializing the next batches; 0 = inline)
//   train:       core/optim.h keys + grad_accum, max_epochs, batch_frames, precision (float32 | bfloat16 |
//                float16: autocast of forward passes and evaluation, float32 master weights)
//   eval:        every (steps; 0 = only at the end), max_examples, batch_size, max_new_tokens
//   checkpoint:  every (steps; 0 = only at the end), keep
//   output_dir, seed, threads
//
// Only MultimodalLM::TrainableParameters get gradients and optimizer state. Each step accumulates
// grad_accum batches. metrics.jsonl gets loss, lr, grad norm, examples/s and target tokens/s every
// log_every steps and the evaluation every eval.every steps; config.yaml holds the effective
// config; checkpoints follow train/checkpoint.h; the final adapters are in output_dir/adapters.
// A non-finite loss stops the run with the step and the ids of the batch's examples; the last good
// checkpoint stays. --resume continues from `latest`: data order, optimizer, RNG and counters are
// restored, so on CPU a resumed run reproduces an uninterrupted one bit for bit.
//
// Evaluation: train/evaluate.h (each valid source scored by its task).
// Not thread-safe (one run per process).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "adapters/multimodal.h"
#include "core/autocast.h"
#include "core/config.h"
#include "core/optim.h"
#include "train/dataset.h"
#include "train/evaluate.h"
#include "train/runner.h"

namespace slm::train {

struct TrainConfig {
  adapters::MultimodalConfig model;
  struct Data {
    std::vector<DataSourceConfig> train, valid;
    double max_missing_fraction = 0.01;
    int workers = 1;
  } data;
  struct Train : LoopOptions {  // steps, schedule, AdamW, clipping, grad_accum, precision (train/runner.h)
    int64_t max_epochs = 0;  // 0 = no limit (steps decide)
    double batch_frames = 0;  // padded-length budget per micro-batch (Dataset::EpochBatches); 0 = off
    // Forgetting mitigation: loss += l2_to_start * sum over trainable parameters of
    // (theta - theta_start)^2, theta_start = the weights this run started from (init_adapters, or
    // the fresh adapters), kept in output_dir/start_weights.safetensors so --resume uses the same.
    double l2_to_start = 0;
    // What trains (a stage of a multi-stage run may train a part only): any of speech_projector,
    // speech_encoder, image_projector, image_encoder, unit_vocab (the added unit rows), lora; the
    // model must have each one named. Empty = everything MultimodalLM::TrainableParameters holds.
    // The rest stays as it is (no gradients, no optimizer state) and is saved unchanged.
    std::vector<std::string> trainable;
  } train;
  EvalOptions eval;  // train/evaluate.h
  struct Checkpoint {
    int64_t every = 0;
    int64_t keep = 2;
  } checkpoint;
  std::string output_dir = "runs/train";
  // Start from these trained adapters (a run's adapters/ directory, a starter adapter) instead of
  // fresh ones; their projector specs and LoRA must match `model`. Ignored by --resume.
  std::string init_adapters;
  uint64_t seed = 1;
  int threads = 0;

  void Load(config::Node root);
};

struct TrainResult {
  std::string output_dir;
  int64_t steps = 0;
  int64_t epochs_started = 0;
  double seconds = 0;
  double examples_per_second = 0;
  double tokens_per_second = 0;  // target tokens
  double final_loss = 0;
  int64_t trainable_parameters = 0;
  bool resumed = false;
  int64_t resumed_from_step = 0;
  nlohmann::json eval;
  // Per train source: {manifest, task, entries, used, selected} (SourceStats) and its share of an
  // epoch's items: what a replay mixture actually was.
  nlohmann::json data;
  nlohmann::json ToJson() const;
};

TrainResult Train(const TrainConfig& config, const std::string& effective_config_yaml, bool resume,
                  bool quiet = false);

// The autocast scope of config.train.precision on the model's device (nothing for float32). Every
// forward pass of training and evaluation runs inside one; backward runs outside, as in PyTorch.
AutocastGuard PrecisionScope(const TrainConfig& config);

// The parameters `parts` (TrainConfig::Train::trainable names; empty = all) select from `model`;
// slm::Error naming a part the model does not have or an unknown name.
std::vector<torch::Tensor> SelectTrainable(const adapters::MultimodalLMImpl& model, const std::vector<std::string>& parts);

// Evaluate (train/evaluate.h) on config.data.valid (its own Dataset and cache), under config's precision: `slm eval`
// and the stages that only evaluate. slm::Error when the config lists no valid source.
nlohmann::json EvaluateValid(const TrainConfig& config, adapters::MultimodalLMImpl& model);

}  // namespace slm::train
