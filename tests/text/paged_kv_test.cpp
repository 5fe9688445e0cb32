// The block pool and paged attention (text/kv_cache.h): allocation bookkeeping and its errors,
// and a paged pass over rows that join, prefill in chunks of any size and decode one token at a
// time against the plain forward pass of each row alone (the reference: no cache at all).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <random>

#include "tests/test_util.h"
#include "tests/text/tiny_llama.h"
#include "text/kv_cache.h"
#include "text/llama.h"

namespace slm::text {
namespace {

using testing::TinyLlama;
using testing::TinyLlamaConfig;

TEST(KVBlockPool, AllocatesFreesAndRefusesBadFrees) {
  const LlamaConfig config = TinyLlamaConfig();
  KVBlockPool pool(config, 5, 4, torch::TensorOptions(torch::kFloat));
  EXPECT_EQ(pool.TotalBlocks(), 5);
  EXPECT_EQ(pool.FreeBlocks(), 5);
  EXPECT_EQ(pool.BlocksFor(0), 0);
  EXPECT_EQ(pool.BlocksFor(4), 1);
  EXPECT_EQ(pool.BlocksFor(5), 2);
  EXPECT_EQ(pool.Keys(0).size(0), 6 * 4);  // 5 blocks + the scratch block
  EXPECT_EQ(KVBlockPool::BlockBytes(config, 4, torch::kFloat),
            2 * config.num_hidden_layers * 4 * config.num_key_value_heads * config.HeadDim() * 4);

  const std::vector<int64_t> a = pool.Allocate(3);
  ASSERT_EQ(a.size(), 3u);
  for (int64_t b : a) EXPECT_NE(b, KVBlockPool::kScratchBlock);
  EXPECT_EQ(pool.FreeBlocks(), 2);
  EXPECT_TRUE(pool.Allocate(3).empty());  // not enough: nothing taken
  EXPECT_EQ(pool.FreeBlocks(), 2);
  const std::vector<int64_t> b = pool.Allocate(2);
  EXPECT_EQ(pool.FreeBlocks(), 0);
  std::vector<int64_t> all = a;
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<int64_t>{1, 2, 3, 4, 5}));

  EXPECT_SLM_ERROR(pool.Free({KVBlockPool::kScratchBlock}), "scratch block");
  EXPECT_SLM_ERROR(pool.Free({6}), "outside the pool");
  EXPECT_SLM_ERROR(pool.Free({a[0], a[0]}), "freed twice");
  EXPECT_EQ(pool.FreeBlocks(), 0);  // the failed frees changed nothing
  pool.Free(a);
  EXPECT_SLM_ERROR(pool.Free({a[1]}), "already free");
  EXPECT_EQ(pool.FreeBlocks(), 3);
  pool.Free(b);
  EXPECT_EQ(pool.FreeBlocks(), 5);
  EXPECT_SLM_ERROR(KVBlockPool(config, 0, 4, torch::TensorOptions()), "at least one block");
}

// Logits [T, V] of one row run alone without any cache.
torch::Tensor Reference(LlamaModel& model, const std::vector<int64_t>& ids) {
  LlamaInput input;
  input.input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);
  return model->forward(input).logits[0];
}

// One row of a paged run: its tokens, how far they are cached, and its blocks.
struct Row {
  std::vector<int64_t> ids;
  int64_t cached = 0;
  std::vector<int64_t> blocks;
};

TEST(PagedAttention, ChunkedPrefillAndDecodeOfJoiningRowsEqualEachRowAlone) {
  torch::NoGradGuard no_grad;
  LlamaModel model = TinyLlama(TinyLlamaConfig(97, 32, 128));
  const int64_t block = 4;
  KVBlockPool pool(model->Config(), 64, block, torch::TensorOptions(torch::kFloat));
  std::mt19937 rng(3);
  std::vector<Row> rows(5);
  for (Row& r : rows) {
    const int64_t length = std::uniform_int_distribution<int64_t>(3, 40)(rng);
    for (int64_t t = 0; t < length; ++t) r.ids.push_back(std::uniform_int_distribution<int64_t>(3, 96)(rng));
  }
  double worst = 0;
  int passes = 0;
  // Every pass takes a random subset of unfinished rows, each with a random number of its next
  // tokens (1 = a decode step), so rows join and advance at different times in one batch.
  while (true) {
    std::vector<size_t> chosen;
    for (size_t i = 0; i < rows.size(); ++i)
      if (rows[i].cached < static_cast<int64_t>(rows[i].ids.size()) && rng() % 3 != 0) chosen.push_back(i);
    bool all_done = true;
    for (const Row& r : rows) all_done &= r.cached == static_cast<int64_t>(r.ids.size());
    if (all_done) break;
    if (chosen.empty()) continue;
    std::vector<int64_t> take;
    int64_t columns = 1, tables = 1;
    for (size_t i : chosen) {
      Row& r = rows[i];
      const int64_t left = static_cast<int64_t>(r.ids.size()) - r.cached;
      take.push_back(std::min<int64_t>(left, std::uniform_int_distribution<int64_t>(1, 9)(rng)));
      const int64_t need = pool.BlocksFor(r.cached + take.back()) - static_cast<int64_t>(r.blocks.size());
      const std::vector<int64_t> more = pool.Allocate(need);
      ASSERT_EQ(static_cast<int64_t>(more.size()), need);
      r.blocks.insert(r.blocks.end(), more.begin(), more.end());
      columns = std::max(columns, take.back());
      tables = std::max<int64_t>(tables, r.blocks.size() + rng() % 2);  // sometimes a spare scratch column
    }
    const int64_t batch = static_cast<int64_t>(chosen.size());
    torch::Tensor ids = torch::zeros({batch, columns}, torch::kLong);
    torch::Tensor table = torch::full({batch, tables}, KVBlockPool::kScratchBlock, torch::kLong);
    torch::Tensor past = torch::zeros({batch}, torch::kLong), fresh = torch::zeros({batch}, torch::kLong);
    torch::Tensor last = torch::zeros({batch, 1}, torch::kLong);
    for (int64_t b = 0; b < batch; ++b) {
      const Row& r = rows[chosen[b]];
      for (int64_t t = 0; t < take[b]; ++t) ids[b][t] = r.ids[r.cached + t];
      for (size_t k = 0; k < r.blocks.size(); ++k) table[b][k] = r.blocks[k];
      past[b] = r.cached;
      fresh[b] = take[b];
      last[b][0] = take[b] - 1;
    }
    PagedKVBatch paged{&pool, table, past, fresh};
    LlamaInput input;
    input.input_ids = ids;
    input.paged = &paged;
    const torch::Tensor logits = model->forward(input).logits;  // [B, T, V]
    for (int64_t b = 0; b < batch; ++b) {
      Row& r = rows[chosen[b]];
      const torch::Tensor expected =
          Reference(model, std::vector<int64_t>(r.ids.begin(), r.ids.begin() + r.cached + take[b]))
              .narrow(0, r.cached, take[b]);
      worst = std::max(worst, (logits[b].narrow(0, 0, take[b]) - expected).abs().max().item<double>());
      r.cached += take[b];
    }
    ++passes;
  }
  EXPECT_GT(passes, 5);
  EXPECT_LT(worst, 1e-5);
  for (Row& r : rows) pool.Free(r.blocks);
  EXPECT_EQ(pool.FreeBlocks(), pool.TotalBlocks());
}

TEST(PagedAttention, LogitsAtEachRowsLastColumnAndEmbeddingsInput) {
  torch::NoGradGuard no_grad;
  LlamaModel model = TinyLlama();
  KVBlockPool pool(model->Config(), 8, 8, torch::TensorOptions(torch::kFloat));
  const std::vector<int64_t> a = {5, 9, 11, 40, 7}, b = {8, 3};
  torch::Tensor ids = torch::zeros({2, 5}, torch::kLong);
  ids[0] = torch::tensor(a, torch::kLong);
  ids[1].narrow(0, 0, 2).copy_(torch::tensor(b, torch::kLong));
  const std::vector<int64_t> blocks = pool.Allocate(2);
  torch::Tensor table = torch::tensor({{blocks[0]}, {blocks[1]}}, torch::kLong);
  PagedKVBatch paged{&pool, table, torch::zeros({2}, torch::kLong), torch::tensor({5, 2}, torch::kLong)};
  LlamaInput input;
  input.inputs_embeds = model->EmbedTokens(ids);
  input.paged = &paged;
  input.logits_positions = torch::tensor({{4}, {1}}, torch::kLong);
  const torch::Tensor logits = model->forward(input).logits;  // [2, 1, V]
  EXPECT_LT((logits[0][0] - Reference(model, a)[4]).abs().max().item<double>(), 1e-5);
  EXPECT_LT((logits[1][0] - Reference(model, b)[1]).abs().max().item<double>(), 1e-5);
}

TEST(PagedAttention, RejectsBadBatches) {
  LlamaModel model = TinyLlama();
  KVBlockPool pool(model->Config(), 4, 4, torch::TensorOptions(torch::kFloat));
  PagedKVBatch paged{&pool, torch::ones({1, 1}, torch::kLong), torch::zeros({1}, torch::kLong),
                     torch::ones({1}, torch::kLong)};
  LlamaInput input;
  input.input_ids = torch::tensor({{5}}, torch::kLong);
  input.paged = &paged;
  EXPECT_SLM_ERROR(model->forward(input), "NoGradGuard");  // grad mode is on here
  torch::NoGradGuard no_grad;
  KVCache cache;
  input.cache = &cache;
  EXPECT_SLM_ERROR(model->forward(input), "at most one of cache, static_cache and paged");
  input.cache = nullptr;
  input.attention_mask = torch::ones({1, 1}, torch::kLong);
  EXPECT_SLM_ERROR(model->forward(input), "no attention_mask");
  input.attention_mask = torch::Tensor();
  paged.past = torch::tensor({4}, torch::kLong);  // position 4 needs a second block
  EXPECT_SLM_ERROR(model->forward(input), "block table holds 4");
  paged.past = torch::zeros({2}, torch::kLong);
  EXPECT_SLM_ERROR(model->forward(input), "must be int64 [B=1]");
  KVBlockPool other(TinyLlamaConfig(97, 32, 128), 4, 4, torch::TensorOptions(torch::kFloat));
  paged.past = torch::zeros({1}, torch::kLong);
  paged.pool = &other;
  EXPECT_NO_THROW(model->forward(input));  // same shapes: any pool of the model's geometry works
}

}  // namespace
}  // namespace slm::text
