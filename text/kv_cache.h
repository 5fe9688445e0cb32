// Where the backbone keeps the keys and values of tokens it has already seen (text/llama.h).
//
// Three forms, each made for one way of decoding:
//  - KVCache: per-batch tensors that grow by the new positions at every forward pass. Simple and
//    exact; each step copies the whole cache (torch::cat), so it suits short runs of one batch.
//  - StaticKVCache: preallocated per-batch buffers with a device-side write slot, so a one-token
//    step has fixed shapes and can be captured once as a CUDA graph (text/generate.cpp).
//  - KVBlockPool + PagedKVBatch: one pool of fixed-size blocks shared by every sequence a server
//    decodes (PagedAttention, Kwon et al. 2023). A sequence owns a list of blocks (its block
//    table); sequences join and leave at any step without copying anybody else's cache, and
//    memory is bounded by the pool, not by batch x longest sequence.
//
// Keys are stored after the rotary embedding, as the backbone attends to them.
//
// Thread-safety: none of these synchronise. A KVBlockPool's allocator and its tensors belong to
// one thread at a time (the serving engine's decode thread).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace slm::text {

struct LlamaConfig;

// Keys and values of every layer for incremental decoding: keys[l], values[l] are
// [B, num_key_value_heads, T_cached, head_dim]. One cache per sequence batch; not thread-safe.
struct KVCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  int64_t Length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  void Clear() {
    keys.clear();
    values.clear();
  }
};

// A preallocated cache for decoding one token per row with fixed shapes, so that a step can be
// captured once as a CUDA graph and replayed (text/generate.cpp): keys[l], values[l] are
// [B, num_key_value_heads, capacity, head_dim]; `valid` [B, capacity] bool marks the slots that
// hold a real key (left padding of the prompt stays false); `slot` [1] int64 on the model's device
// is where the next step writes. A step writes its keys and values at `slot`, marks it valid,
// attends to every valid slot and advances `slot` by one, all on the device (no host sync).
// Not thread-safe; one per sequence batch.
struct StaticKVCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  torch::Tensor valid;
  torch::Tensor slot;
  int64_t Capacity() const { return valid.defined() ? valid.size(1) : 0; }
  // The prompt's cache after a prefill (cache [B, kv, T, hd] per layer, mask [B, T] with 1 =
  // real token) copied into buffers of `capacity` >= T slots; slot = T.
  static StaticKVCache FromCache(const KVCache& cache, const torch::Tensor& mask, int64_t capacity);
};

// The block pool of one resident backbone. Position p of a sequence lives in block
// table[p / block_size] at offset p % block_size; keys(l) / values(l) are
// [num_blocks * block_size, num_key_value_heads, head_dim] in the model's dtype and device, so a
// slot index is block * block_size + offset. Block 0 is the scratch block: never handed out,
// written by padding positions and read (masked) through unused block-table entries, so every
// batch has fixed shapes and every gathered key is finite.
class KVBlockPool {
 public:
  // `blocks` usable blocks (the scratch block comes on top) of `block_size` positions each,
  // zero-initialised. slm::Error for non-positive sizes.
  KVBlockPool(const LlamaConfig& config, int64_t blocks, int64_t block_size, const torch::TensorOptions& options);
  // Bytes one block takes over all layers, keys and values, in `dtype`.
  static int64_t BlockBytes(const LlamaConfig& config, int64_t block_size, torch::ScalarType dtype);

  int64_t BlockSize() const { return block_size_; }
  int64_t TotalBlocks() const { return total_; }  // usable blocks (scratch excluded)
  int64_t FreeBlocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t UsedBlocks() const { return total_ - FreeBlocks(); }
  int64_t BytesPerBlock() const { return block_bytes_; }
  static constexpr int64_t kScratchBlock = 0;
  // Blocks needed to hold `positions` positions.
  int64_t BlocksFor(int64_t positions) const { return (positions + block_size_ - 1) / block_size_; }

  // `count` blocks, or an empty vector (nothing taken) when fewer are free.
  std::vector<int64_t> Allocate(int64_t count);
  // Returns blocks to the pool. slm::Error for the scratch block, an id out of range or a block
  // that is already free (a double free would hand one block to two sequences).
  void Free(const std::vector<int64_t>& blocks);

  int64_t Layers() const { return static_cast<int64_t>(keys_.size()); }
  torch::Tensor& Keys(int64_t layer) { return keys_[layer]; }
  torch::Tensor& Values(int64_t layer) { return values_[layer]; }
  torch::Device Device() const { return keys_.front().device(); }

 private:
  int64_t block_size_;
  int64_t total_;
  int64_t block_bytes_;
  std::vector<torch::Tensor> keys_, values_;
  std::vector<int64_t> free_;      // a stack: recently freed blocks are reused first
  std::vector<bool> is_free_;      // by block id
};

// One forward pass over rows whose caches live in a KVBlockPool (LlamaInput::paged). The T input
// columns of row b are its next tokens at positions past[b], past[b] + 1, ...; only the first
// new_tokens[b] are real (right padding). Real tokens' keys and values are written into the pool
// at their positions; padding columns write to the scratch block and their outputs are
// meaningless but finite. A real query at position p attends to the row's positions 0..p.
// block_tables [B, M] int64: row b's blocks in order, unused entries = kScratchBlock; the row's
// past[b] + new_tokens[b] positions must fit in its listed blocks (the caller allocates first).
// All three tensors live on the model's device. Inference only (the pool is written in place).
struct PagedKVBatch {
  KVBlockPool* pool = nullptr;
  torch::Tensor block_tables;  // [B, M] int64
  torch::Tensor past;          // [B] int64, positions already cached
  torch::Tensor new_tokens;    // [B] int64, real columns of this pass (<= T)
};

}  // namespace slm::text
