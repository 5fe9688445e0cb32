// CUDA graphs for the answer decoder's decode steps (engine/decoder.h). A paged decode step has
// fixed shapes for a given batch size and block-table width, so it is captured once per bucket
// (batch and width rounded up to powers of two; rows padded into free slots that write to the
// pool's scratch block) and replayed with one launch instead of hundreds of kernel launches. The
// step reads the pool and the LoRA bank at fixed addresses; a bank whose Generation() changed
// (a projection got its tensors) makes the buckets capture again.
//
// Thread-safety: one object per decode thread, used by that thread only, on a stream other than
// the default one (capture is not allowed there).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "text/kv_cache.h"
#include "text/llama.h"
#include "text/lora_bank.h"

namespace at::cuda {
struct CUDAGraph;
}

namespace slm::engine {

// Free device memory of a CUDA device as the caching allocator sees it: total minus what it has
// reserved (memory other processes use is not known here).
int64_t DeviceFreeBytes(torch::Device device);

class DecodeGraphs {
 public:
  DecodeGraphs(text::LlamaModel& model, text::KVBlockPool& pool);
  ~DecodeGraphs();
  // Logits [B, V] float32 on the CPU of one decode step: ids [B, 1], tables [B, M], past [B],
  // slots [B] (CPU int64), with the bank's per-row LoRA when `lora`. The first call of a bucket
  // runs eagerly (it warms up what capture needs), the second captures, later ones replay. A
  // failed capture logs a warning and the bucket runs eagerly from then on.
  torch::Tensor Run(const torch::Tensor& ids, const torch::Tensor& tables, const torch::Tensor& past,
                    const torch::Tensor& slots, bool lora, const text::LoraBank& bank);
  int64_t Replays() const { return replays_; }
  int64_t Captures() const { return captures_; }

 private:
  struct Bucket;
  torch::Tensor Forward(Bucket& bucket, const text::LoraBank& bank);

  text::LlamaModel& model_;
  text::KVBlockPool& pool_;
  std::map<std::tuple<int64_t, int64_t, bool>, std::unique_ptr<Bucket>> buckets_;
  int64_t bank_generation_ = -1;
  int64_t replays_ = 0, captures_ = 0;
};

}  // namespace slm::engine
