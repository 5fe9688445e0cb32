// The answer decoder: every running answer of the server (spoken-QA answers, Generate requests)
// decoded together by one thread with continuous batching over a paged KV cache.
//
// Memory: one text::KVBlockPool for the resident backbone (kv_cache.tokens positions, or a share
// of the free GPU memory), in blocks of kv_cache.block_size positions. A row owns the blocks its
// positions fill; rows join and leave at any step and nobody's cache is ever copied.
//
// Each iteration of the decode thread:
//  1. admission: waiting rows, oldest first, get their prompt materialised (MultimodalLM::Prepare
//     per adapter: encoders, projectors, the template's embeddings; or the token embeddings) and
//     blocks for their whole prompt, while the pool keeps one free block per running row (the
//     blocks the next step may need). A row that waits longer than queue_timeout_seconds fails
//     with RESOURCE_EXHAUSTED; nothing else fails for lack of memory.
//  2. one decode step for every running row, all adapters in one forward (per-row LoRA from the
//     model's text::LoraBank). A row that crosses into a new block and finds none free preempts
//     the youngest active row (its blocks are freed and it is recomputed later from its prompt
//     and the tokens it already produced: nothing it streamed changes). On CUDA the step replays
//     a CUDA graph captured per (batch, table width) bucket, rows padded into free slots.
//  3. one prefill chunk: rows being prefilled advance by up to batching.prefill_chunk_tokens
//     positions in total, so a long new prompt never stalls the answers already streaming. A row
//     whose prompt completes gets its first token.
// Tokens are chosen per row exactly as text::Generate would choose them for that row alone
// (engine/answer_text.h), so an answer does not depend on its neighbours.
//
// Isolation: Submit() checks what can be checked before a row joins any batch (its prompt and
// token budget against the context and the pool) and refuses only that request. A failure inside
// a batch (materialisation or a forward pass) is retried row by row; only a row that fails alone
// fails, the others go on.
//
// Thread-safety: Submit, Stats and PoolStats from any thread. The callbacks of a request run on
// the decode thread, never under the decoder's lock, one at a time; after on_finish or on_fail
// (exactly one of them, once) nothing more is called. A request whose `cancelled` returns true
// leaves before the next step, with on_fail(CANCELLED).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/multimodal.h"
#include "engine/config.h"
#include "engine/decode_graphs.h"
#include "engine/served_model.h"
#include "engine/status.h"
#include "engine/types.h"
#include "text/kv_cache.h"

namespace slm::engine {

struct AnswerRequest {
  AdapterRef adapter;                   // null = the plain backbone
  adapters::MultimodalExample example;  // adapter rows: prompt with markers and media
  std::vector<int64_t> prompt_ids;      // plain-backbone rows (BOS included)
  int max_tokens = 32;
  SamplingSettings sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  Cancelled cancelled;  // may be empty
  std::function<void(const Token&)> on_token;
  // The answer is complete: why, the prompt's positions and the tokens generated.
  std::function<void(FinishReason, int64_t prompt_positions, int tokens)> on_finish;
  std::function<void(const Status&)> on_fail;
};

struct PoolStats {
  int64_t blocks = 0, used_blocks = 0, peak_used_blocks = 0, block_size = 0;
  int64_t bytes_per_token = 0;  // keys and values of one position, all layers
  int64_t cached_tokens = 0;    // positions held by active rows now
  double utilisation = 0;       // cached_tokens / (used_blocks * block_size): internal fragmentation
};

class Decoder {
 public:
  // Allocates the pool and starts the decode thread. `model` must outlive the decoder.
  Decoder(ServedModel& model, const EngineConfig& config);
  ~Decoder();  // stops the thread; rows still queued or running get on_fail(UNAVAILABLE)
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Queues a request, or refuses it (INVALID_ARGUMENT: its prompt plus max_tokens exceed the
  // context, a placeholder/media mismatch; RESOURCE_EXHAUSTED: it could not fit even in an empty
  // pool; UNAVAILABLE: shutting down). Nothing is called back for a refused request.
  Status Submit(std::shared_ptr<AnswerRequest> request);
  int64_t PromptPositions(const AnswerRequest& request) const;  // slm::Error for a mismatch

  PoolStats Pool();
  nlohmann::json Stats();

 private:
  struct Row;
  struct Batch;
  using Clock = std::chrono::steady_clock;

  void Loop();
  void DropCancelled();
  void ExpireWaiting();
  void Admit();
  // Embeddings of the rows' prompts, batched per adapter; a row that cannot be materialised
  // fails alone.
  void Materialize(std::vector<Row*>& rows);
  void Step();
  void PrefillChunk();
  // The logits of one forward pass over `batch` (CUDA graph or eager).
  torch::Tensor Forward(Batch& batch, bool decode);
  // Runs `work` over `rows`; when it throws, again row by row, failing only rows that fail alone.
  void Isolated(std::vector<Row*> rows, const std::function<void(std::vector<Row*>&)>& work, const char* what);
  bool EnsureBlocks(Row& row, int64_t positions);  // false: preempted (maybe itself)
  void Preempt(Row& row);
  void Accept(Row& row, int64_t token);
  void Finish(Row& row, FinishReason reason);
  void Fail(Row& row, const Status& status);
  void Release(Row& row);  // frees the row's blocks
  void NoteBlocks();       // publishes the pool's use to the statistics

  ServedModel& model_;
  const EngineConfig config_;
  std::unique_ptr<text::KVBlockPool> pool_;
  std::unique_ptr<DecodeGraphs> graphs_;
  torch::Device device_ = torch::kCPU;

  std::mutex mutex_;  // inbox_, stop_, counters
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<std::shared_ptr<Row>> inbox_;
  // Decode-thread state.
  std::deque<std::shared_ptr<Row>> waiting_;
  std::vector<std::shared_ptr<Row>> active_;  // prefilling or running, admission order
  int64_t admissions_ = 0;
  struct Counters {
    int64_t decode_steps = 0, decode_rows = 0, max_decode_batch = 0, prefill_chunks = 0, prefill_tokens = 0,
            preemptions = 0, queue_timeouts = 0, isolated_retries = 0, graph_replays = 0, graph_captures = 0,
            peak_used_blocks = 0, cached_tokens = 0, used_blocks = 0;
    double busy_seconds = 0, step_seconds = 0, prefill_seconds = 0;
  } counters_;
  std::thread thread_;
};

}  // namespace slm::engine
