#include "text/kv_cache.h"

#include "core/error.h"
#include "core/strings.h"
#include "text/llama.h"

namespace slm::text {

StaticKVCache StaticKVCache::FromCache(const KVCache& cache, const torch::Tensor& mask, int64_t capacity) {
  Check(!cache.keys.empty() && cache.keys.size() == cache.values.size(), "StaticKVCache: the cache is empty");
  const int64_t past = cache.Length();
  const torch::Tensor& first = cache.keys[0];
  Check(mask.dim() == 2 && mask.size(0) == first.size(0) && mask.size(1) == past, "StaticKVCache: mask must be [",
        first.size(0), ", ", past, "], got ", ShapeString(mask.sizes().vec()));
  Check(capacity >= past, "StaticKVCache: capacity ", capacity, " is below the ", past, " cached positions");
  StaticKVCache fixed;
  for (size_t l = 0; l < cache.keys.size(); ++l) {
    for (const auto& [from, to] : {std::pair{&cache.keys[l], &fixed.keys}, std::pair{&cache.values[l], &fixed.values}}) {
      torch::Tensor buffer = torch::zeros({from->size(0), from->size(1), capacity, from->size(3)}, from->options());
      buffer.narrow(2, 0, past).copy_(*from);
      to->push_back(buffer);
    }
  }
  fixed.valid = torch::zeros({first.size(0), capacity}, first.options().dtype(torch::kBool));
  fixed.valid.narrow(1, 0, past).copy_(mask.ne(0));
  fixed.slot = torch::full({1}, past, first.options().dtype(torch::kLong));
  return fixed;
}

KVBlockPool::KVBlockPool(const LlamaConfig& config, int64_t blocks, int64_t block_size,
                         const torch::TensorOptions& options)
    : block_size_(block_size), total_(blocks) {
  Check(blocks >= 1, "KVBlockPool: needs at least one block, got ", blocks);
  Check(block_size >= 1, "KVBlockPool: block_size must be >= 1, got ", block_size);
  const torch::TensorOptions o = options.requires_grad(false);
  const int64_t slots = (blocks + 1) * block_size;  // + the scratch block
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    keys_.push_back(torch::zeros({slots, config.num_key_value_heads, config.HeadDim()}, o));
    values_.push_back(torch::zeros({slots, config.num_key_value_heads, config.HeadDim()}, o));
  }
  block_bytes_ = BlockBytes(config, block_size, c10::typeMetaToScalarType(o.dtype()));
  is_free_.assign(blocks + 1, true);
  is_free_[kScratchBlock] = false;
  // Handed out in increasing order at first (a stack, so push the highest first).
  for (int64_t b = blocks; b >= 1; --b) free_.push_back(b);
}

int64_t KVBlockPool::BlockBytes(const LlamaConfig& config, int64_t block_size, torch::ScalarType dtype) {
  return 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * config.HeadDim() *
         static_cast<int64_t>(c10::elementSize(dtype));
}

std::vector<int64_t> KVBlockPool::Allocate(int64_t count) {
  Check(count >= 0, "KVBlockPool: cannot allocate ", count, " blocks");
  if (count > FreeBlocks()) return {};
  std::vector<int64_t> blocks(free_.end() - count, free_.end());
  free_.resize(free_.size() - count);
  for (const int64_t b : blocks) is_free_[b] = false;
  return blocks;
}

void KVBlockPool::Free(const std::vector<int64_t>& blocks) {
  // Everything is checked before anything is freed, so a bad list changes nothing.
  std::vector<bool> seen(is_free_.size(), false);
  for (const int64_t b : blocks) {
    Check(b != kScratchBlock, "KVBlockPool: the scratch block is never allocated, so it cannot be freed");
    Check(b > 0 && b <= total_, "KVBlockPool: block ", b, " is outside the pool [1, ", total_, "]");
    Check(!is_free_[b] && !seen[b], "KVBlockPool: block ", b, " is already free (freed twice)");
    seen[b] = true;
  }
  for (const int64_t b : blocks) {
    is_free_[b] = true;
    free_.push_back(b);
  }
}

}  // namespace slm::text
