// Crash-safe training checkpoints.
//
// Layout (run_dir/checkpoints/):
//   step-000200/adapters/        MultimodalLM::SaveAdapters (projectors + PEFT LoRA)
//   step-000200/optimizer.pt     torch::save of the AdamW state
//   step-000200/rng.safetensors  the CPU default generator state (LoRA dropout draws from it)
//   step-000200/state.json       step, epoch, batch cursor, counters (TrainingState)
//   step-000200/SHA256SUMS       "<sha256>  <relative path>" per file (`sha256sum -c` reads it)
//   latest                       "step-000200\n", replaced atomically
// A checkpoint is written into a hidden temporary directory, fsync'ed file by file (core/fs.h),
// then renamed into place; only then does `latest` move to it, and only then are checkpoints
// beyond `keep` deleted (never the one `latest` names). A crash or a full disk at any point leaves
// the previous `latest` checkpoint intact and named. LoadCheckpoint verifies every digest before
// touching the model: a corrupt or partial checkpoint is an slm::Error naming the file.
// Not thread-safe (one trainer per run directory).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "adapters/multimodal.h"
#include "train/runner.h"

namespace slm::train {


// Writes the checkpoint of `state.step` and returns its directory.
std::string SaveCheckpoint(const std::string& run_dir, const TrainingState& state,
                           const adapters::MultimodalLMImpl& model,
                           torch::optim::Optimizer& optimizer, int64_t keep);

// The directory `latest` names, or "" when the run has no checkpoint.
std::string LatestCheckpoint(const std::string& run_dir);

// Verifies SHA256SUMS, then loads adapters (and, when `optimizer` is given, the optimizer and RNG
// state) and returns the training state.
TrainingState LoadCheckpoint(const std::string& checkpoint_dir, adapters::MultimodalLMImpl& model,
                             torch::optim::Optimizer* optimizer);

}  // namespace slm::train
