// LoRA weights of several adapters side by side, applied per row, so that one backbone forward
// serves rows of different adapters (batched LoRA as Punica / S-LoRA do it).
//
// A bank has `capacity` slots. Slot 0 is "no LoRA" and stays zero; each other slot holds one
// adapter's factors for every projection it targets: for projection (layer l, target t) the bank
// keeps A [S, R, in] and B [S, out, R] (R = the bank's rank; an adapter of lower rank is zero-
// padded, which changes nothing: the padded rows of A meet zero columns of B). B is stored
// already multiplied by the adapter's alpha / rank x scale, so a row's update is
// x A[slot]^T B[slot]^T, two batched matrix products over the rows' gathered factors. A
// projection no slot targets has no tensors and costs nothing.
//
// Rows pick slots through RowLora::slots [B] (int64 on the model's device); the backbone's own
// LoRA branches (LlamaModelImpl::AddLora) must be inactive in such a pass (scale 0 or none): the
// bank replaces them.
//
// Shapes, dtypes, devices: the model's. Thread-safety: Set/Clear mutate the tensors in place
// (addresses stay, so a captured CUDA graph keeps reading the right memory) and must not run
// during a forward pass that reads the bank; concurrent forward passes reading it are safe.
#pragma once

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace slm::text {

struct LlamaConfig;

// Projections LoRA may target, in the order the bank indexes them.
inline constexpr std::array<const char*, 7> kLoraTargets = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                            "gate_proj", "up_proj", "down_proj"};

class LoraBank {
 public:
  // An empty bank for a backbone of `config`'s shapes with `capacity` >= 2 slots (slot 0
  // included) of rank `rank` >= 1, tensors with `options` (the model's dtype and device).
  LoraBank(const LlamaConfig& config, int64_t capacity, int64_t rank, const torch::TensorOptions& options);

  int64_t Capacity() const { return capacity_; }
  int64_t Rank() const { return rank_; }

  // Writes an adapter into `slot` (1 <= slot < capacity): `lora` maps PEFT parameter names as
  // LlamaModelImpl names them ("model.layers.0.self_attn.q_proj.lora_A.weight" [r, in] and
  // "...lora_B.weight" [out, r]) to tensors; `factor` = scale * alpha / r. Projections the
  // adapter does not target are zeroed in this slot. slm::Error naming the tensor for an unknown
  // name, a missing partner (A without B), a rank above Rank() or a wrong shape; the slot is left
  // unchanged then.
  void Set(int64_t slot, const std::map<std::string, torch::Tensor>& lora, double factor);
  // Zeroes `slot` (it then applies no update).
  void Clear(int64_t slot);

  // A [S, R, in] and B*factor [S, out, R] of projection `target` (index into kLoraTargets) of
  // `layer`; undefined when no slot ever targeted it.
  const torch::Tensor& A(int64_t layer, int64_t target) const { return a_[layer][target]; }
  const torch::Tensor& B(int64_t layer, int64_t target) const { return b_[layer][target]; }
  // Incremented when a projection gets its tensors for the first time (new addresses): a
  // captured CUDA graph reading the bank must be captured again.
  int64_t Generation() const { return generation_; }

 private:
  struct Shape {
    int64_t in = 0, out = 0;
  };
  int64_t capacity_;
  int64_t rank_;
  torch::TensorOptions options_;
  std::vector<std::array<Shape, kLoraTargets.size()>> shapes_;
  std::vector<std::array<torch::Tensor, kLoraTargets.size()>> a_, b_;
  int64_t generation_ = 0;
};

// Which bank slot each row of a forward pass uses (LlamaInput::row_lora).
struct RowLora {
  const LoraBank* bank = nullptr;
  torch::Tensor slots;  // [B] int64 on the model's device, each in [0, capacity)
};

}  // namespace slm::text
