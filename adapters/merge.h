// `slm merge --config FILE`: one adapter directory from several trained ones of the same model
// (MultimodalLMImpl::SaveAdapters layout: adapters.safetensors, adapter_config.json, lora/ in PEFT
// format, tasks.json), e.g. the checkpoints of the stages of a multi-stage run (model merging as a
// forgetting mitigation).
//
//   linear  every adapter tensor (projectors, unit rows, fine-tuned encoders):  sum_i w_i T_i.
//           LoRA exactly: the merged update is sum_i w_i s_i B_i A_i (s_i = alpha_i / r_i), written
//           as one LoRA of rank sum_i r_i (B = [w_1 s_1 B_1 | w_2 s_2 B_2 | ...], A = [A_1; A_2; ...],
//           alpha = rank, so scaling 1): no approximation, at the price of a larger rank.
//   ties    TIES-merging (Yadav et al. 2023) as PEFT's add_weighted_adapter computes it: task vectors
//           tau_i = w_i (T_i - T_base) (T_base: the `base` adapters, or zeros), each trimmed to its
//           `density` share of largest magnitudes, the sign elected per entry by the sign of
//           sum_i tau_i, and the entries that agree with it averaged (sum / count): T = T_base +
//           that. LoRA: on the dense updates s_i B_i A_i (the base has none), then a truncated SVD
//           back to rank max_i r_i ("ties_svd").
//
// Checks (slm::Error naming the inputs and the tensor): fewer than two inputs, a missing directory,
// adapter_config.json that differ (projector specs, speech units), tensors that differ in name or
// shape, LoRA in some inputs only or with other target modules, different backbones (model.backbone
// of each run's config.yaml, when the adapters sit in a run directory), density outside (0, 1].
// Output: `output` with the merged adapters, tasks.json (the union), and merge.json (method,
// inputs, weights and the model.lora.rank / model.lora.alpha to load the merged LoRA with).
// Thread-safety: a pure function of its files.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.h"

namespace slm::adapters {

struct MergeConfig {
  struct Input {
    std::string adapters;  // an adapters/ directory
    double weight = 1.0;
  };
  std::string method = "linear";  // linear | ties
  std::vector<Input> inputs;
  std::string base;       // ties: the adapters task vectors are measured from ("" = zeros)
  double density = 0.2;   // ties: share of each task vector kept
  std::string output;     // the merged adapters/ directory
  void Load(config::Node root);  // the `merge:` section
};

struct MergeResult {
  std::string output;
  int64_t tensors = 0;       // adapter tensors merged (LoRA pairs count once)
  int64_t lora_rank = 0;     // of the merged LoRA (0 without LoRA)
  double lora_alpha = 0;
  nlohmann::json ToJson() const;
};

MergeResult MergeAdapters(const MergeConfig& config);

}  // namespace slm::adapters
