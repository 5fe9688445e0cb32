#include "engine/decoder.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <optional>

#include "core/device.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "engine/answer_text.h"

namespace slm::engine {
namespace {

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The pool's size in positions: configured, or max_batch full contexts on the CPU, or a share of
// the device memory left after loading on CUDA.
int64_t PoolTokens(const EngineConfig& config, const text::LlamaConfig& model, torch::Device device,
                   torch::ScalarType dtype) {
  if (config.kv_tokens > 0) return config.kv_tokens;
  const int64_t full = int64_t{config.max_batch} * model.max_position_embeddings;
  if (!device.is_cuda()) return full;
  const int64_t free = DeviceFreeBytes(device);
  const int64_t per_token = text::KVBlockPool::BlockBytes(model, 1, dtype);
  return std::max<int64_t>(model.max_position_embeddings, static_cast<int64_t>(free * config.kv_memory_fraction) / per_token);
}

// Removes `row` from `rows` (the decoder's active rows) and hands back its owner, null when it was
// not there: Finish and Fail hold it so that the row outlives callbacks that may drop every other
// reference to it, Preempt moves it to the waiting queue.
template <class T>
std::shared_ptr<T> TakeOut(std::vector<std::shared_ptr<T>>& rows, const T& row) {
  for (auto it = rows.begin(); it != rows.end(); ++it)
    if (it->get() == &row) {
      std::shared_ptr<T> owned = std::move(*it);
      rows.erase(it);
      return owned;
    }
  return nullptr;
}

}  // namespace

struct Decoder::Row {
  std::shared_ptr<AnswerRequest> request;
  enum class State { kWaiting, kPrefilling, kRunning, kDone };
  State state = State::kWaiting;
  int64_t prompt_positions = 0;  // upper bound until materialised, then exact
  torch::Tensor prompt;          // [P, H] on the model's device once materialised
  torch::Tensor replay;          // after a preemption: prompt + the tokens already fed
  int64_t target = 0;            // positions to prefill: prompt (or replay)
  int64_t cached = 0;
  int64_t chunk = 0;             // positions of this iteration's prefill chunk
  std::vector<int64_t> blocks;
  bool resume = false;           // preempted while running: next_token is already chosen
  int64_t next_token = -1;
  std::unique_ptr<TokenChooser> chooser;
  std::unique_ptr<TextStreamer> text;
  int64_t order = 0;
  Clock::time_point queued = Clock::now();
  torch::Tensor logits;          // this iteration's result, [V] float32 CPU

  int Tokens() const { return text ? static_cast<int>(text->Tokens().size()) : 0; }
  int64_t Slot() const { return request->adapter ? request->adapter->slot : 0; }
  bool Cancelled() const { return request->cancelled && request->cancelled(); }
  const torch::Tensor& Sequence() const { return replay.defined() ? replay : prompt; }
};

struct Decoder::Batch {
  std::vector<Row*> rows;
  torch::Tensor ids;     // [B, 1] decode
  torch::Tensor embeds;  // [B, T, H] prefill
  torch::Tensor tables, past, fresh, slots, last;
  bool lora = false;
};

Decoder::Decoder(ServedModel& model, const EngineConfig& config) : model_(model), config_(config) {
  text::LlamaModel& backbone = model_.Backbone();
  const torch::Tensor first = backbone->parameters().front();
  device_ = first.device();
  const int64_t tokens = PoolTokens(config_, backbone->Config(), device_, first.scalar_type());
  const int64_t blocks = std::max<int64_t>(1, (tokens + config_.kv_block_size - 1) / config_.kv_block_size);
  pool_ = std::make_unique<text::KVBlockPool>(backbone->Config(), blocks, config_.kv_block_size, first.options());
  log::Info(Str("KV cache: ", blocks, " blocks of ", config_.kv_block_size, " positions (",
                Fixed(double(blocks) * pool_->BytesPerBlock() / (1 << 20), 1), " MiB)"));
  if (device_.is_cuda() && config_.cuda_graphs) graphs_ = std::make_unique<DecodeGraphs>(backbone, *pool_);
  thread_ = std::thread([this] { Loop(); });
}

Decoder::~Decoder() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  const Status gone{Code::kUnavailable, "the server is shutting down"};
  for (auto& row : inbox_) row->request->on_fail(gone);
  for (auto& row : waiting_) row->request->on_fail(gone);
  for (auto& row : active_) row->request->on_fail(gone);
}

int64_t Decoder::PromptPositions(const AnswerRequest& request) const {
  if (request.adapter) return request.adapter->model->PromptPositions(request.example);
  return static_cast<int64_t>(request.prompt_ids.size());
}

Status Decoder::Submit(std::shared_ptr<AnswerRequest> request) {
  auto row = std::make_shared<Row>();
  try {
    row->prompt_positions = PromptPositions(*request);
  } catch (const std::exception& e) {
    return StatusOf(e);
  }
  if (row->prompt_positions < 1) return {Code::kInvalidArgument, "the prompt is empty"};
  const int64_t context = model_.ContextLength();
  if (row->prompt_positions + request->max_tokens > context)
    return {Code::kInvalidArgument, Str("the prompt (", row->prompt_positions, " positions) plus ", request->max_tokens,
                                        " new tokens exceed the model's context of ", context)};
  const int64_t capacity = pool_->TotalBlocks() * pool_->BlockSize();
  if (pool_->BlocksFor(row->prompt_positions + request->max_tokens) > pool_->TotalBlocks())
    return {Code::kResourceExhausted, Str("the prompt (", row->prompt_positions, " positions) plus ", request->max_tokens,
                                          " new tokens need more than the server's whole KV cache (", capacity,
                                          " positions, kv_cache.tokens)")};
  row->target = row->prompt_positions;
  row->request = std::move(request);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) return {Code::kUnavailable, "the server is shutting down"};
    inbox_.push_back(std::move(row));
  }
  wake_.notify_all();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// The decode thread

void Decoder::Loop() {
  torch::NoGradGuard no_grad;
  // Graph capture needs a stream other than the default one; the whole thread runs on one.
  std::optional<c10::cuda::CUDAStreamGuard> stream;
  if (device_.is_cuda()) stream.emplace(c10::cuda::getStreamFromPool(false, device_.index()));
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || !inbox_.empty() || !waiting_.empty() || !active_.empty(); });
      if (stop_) return;
      // A short wait gathers requests that arrive together into one batch.
      if (config_.max_wait_ms > 0 && active_.empty() && waiting_.empty())
        wake_.wait_for(lock, std::chrono::milliseconds(config_.max_wait_ms), [&] { return stop_; });
      if (stop_) return;
      for (auto& row : inbox_) waiting_.push_back(std::move(row));
      inbox_.clear();
    }
    const Clock::time_point start = Clock::now();
    model_.ReleaseRetired();
    DropCancelled();
    ExpireWaiting();
    {
      std::shared_lock<std::shared_mutex> bank(model_.BankLock());
      Admit();
      Step();
      PrefillChunk();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    counters_.busy_seconds += Seconds(Clock::now() - start);
    int64_t cached = 0;
    for (const auto& row : active_) cached += row->cached;
    counters_.cached_tokens = cached;
  }
}

void Decoder::DropCancelled() {
  const Status cancelled{Code::kCancelled, "cancelled by the client"};
  std::vector<std::shared_ptr<Row>> gone;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->Cancelled()) {
      gone.push_back(*it);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& row : active_)
    if (row->Cancelled()) gone.push_back(row);
  for (const auto& row : gone) Fail(*row, cancelled);
}

void Decoder::ExpireWaiting() {
  const Clock::time_point now = Clock::now();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    Row& row = **it;
    if (Seconds(now - row.queued) <= config_.queue_timeout_seconds) {
      ++it;
      continue;
    }
    std::shared_ptr<Row> keep = *it;
    it = waiting_.erase(it);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++counters_.queue_timeouts;
    }
    Fail(row, {Code::kResourceExhausted,
               Str("no KV-cache memory became free for this answer within ", config_.queue_timeout_seconds,
                   " s (batching.queue_timeout_seconds): ", pool_->UsedBlocks(), " of ", pool_->TotalBlocks(),
                   " blocks are held by ", active_.size(), " answers; retry later")});
  }
}

void Decoder::Admit() {
  // Materialise the prompts of the rows that may be admitted now, in one batch per adapter.
  std::vector<Row*> pending;
  const size_t room = config_.max_batch > static_cast<int>(active_.size()) ? config_.max_batch - active_.size() : 0;
  for (size_t i = 0; i < waiting_.size() && pending.size() < room; ++i)
    if (!waiting_[i]->Sequence().defined()) pending.push_back(waiting_[i].get());
  if (!pending.empty()) Materialize(pending);
  int64_t running = 0;
  for (const auto& row : active_) running += row->state == Row::State::kRunning;
  while (!waiting_.empty() && static_cast<int>(active_.size()) < config_.max_batch) {
    std::shared_ptr<Row> row = waiting_.front();
    if (row->state == Row::State::kDone) {  // failed to materialise
      waiting_.pop_front();
      continue;
    }
    if (!row->Sequence().defined()) break;
    const int64_t need = pool_->BlocksFor(row->target);
    // Keep a block per running row for the step that follows (rows crossing into a new block).
    if (pool_->FreeBlocks() - need < running) break;
    row->blocks = pool_->Allocate(need);
    Check(static_cast<int64_t>(row->blocks.size()) == need, "KV pool: ", need, " free blocks expected");
    NoteBlocks();
    row->state = Row::State::kPrefilling;
    row->cached = 0;
    row->order = ++admissions_;
    active_.push_back(row);
    waiting_.pop_front();
  }
}

void Decoder::Materialize(std::vector<Row*>& rows) {
  std::vector<const ServedAdapter*> adapters;
  for (Row* row : rows)
    if (std::find(adapters.begin(), adapters.end(), row->request->adapter.get()) == adapters.end())
      adapters.push_back(row->request->adapter.get());
  for (const ServedAdapter* adapter : adapters) {
    std::vector<Row*> group;
    for (Row* row : rows)
      if (row->request->adapter.get() == adapter) group.push_back(row);
    Isolated(group, [&](std::vector<Row*>& part) {
      if (adapter != nullptr) {
        std::vector<adapters::MultimodalExample> examples;
        for (Row* row : part) examples.push_back(row->request->example);
        const adapters::MultimodalBatch batch = adapter->model->Prepare(examples, text::PaddingSide::kLeft);
        const int64_t width = batch.inputs_embeds.size(1);
        for (size_t r = 0; r < part.size(); ++r) {
          const int64_t length = batch.lengths[r];
          part[r]->prompt = batch.inputs_embeds[r].narrow(0, width - length, length).clone();
        }
      } else {
        for (Row* row : part) {
          const torch::Tensor ids = torch::tensor(row->request->prompt_ids, torch::kLong).unsqueeze(0);
          row->prompt = model_.Backbone()->EmbedTokens(ids.to(device_))[0];
        }
      }
      for (Row* row : part) {
        row->prompt_positions = row->target = row->prompt.size(0);
        row->chooser = std::make_unique<TokenChooser>(row->request->sampling, model_.TextVocabulary(),
                                                      row->request->adapter ? std::vector<int64_t>{}
                                                                            : row->request->prompt_ids);
        row->text = std::make_unique<TextStreamer>(model_.Tokenizer(), row->request->stop);
      }
    }, "prompt materialisation");
  }
  // Rows that failed were finished; take them out of the queue.
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(),
                                [](const auto& r) { return r->state == Row::State::kDone; }),
                 waiting_.end());
}

void Decoder::Isolated(std::vector<Row*> rows, const std::function<void(std::vector<Row*>&)>& work, const char* what) {
  try {
    work(rows);
    return;
  } catch (const std::exception& e) {
    if (rows.size() == 1) {
      log::Warn(Str(what, " failed for one row: ", e.what()));
      Fail(*rows[0], StatusOf(e));
      return;
    }
    log::Warn(Str(what, " of ", rows.size(), " rows failed (", e.what(), "); retrying row by row"));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++counters_.isolated_retries;
  }
  for (Row* row : rows) {
    std::vector<Row*> one = {row};
    try {
      work(one);
    } catch (const std::exception& e) {
      Fail(*row, StatusOf(e));
    }
  }
}

bool Decoder::EnsureBlocks(Row& row, int64_t positions) {
  const int64_t need = pool_->BlocksFor(positions) - static_cast<int64_t>(row.blocks.size());
  while (need > 0) {
    const std::vector<int64_t> got = pool_->Allocate(need);
    if (!got.empty()) {
      row.blocks.insert(row.blocks.end(), got.begin(), got.end());
      NoteBlocks();
      return true;
    }
    Row* victim = nullptr;
    for (const auto& candidate : active_)
      if (victim == nullptr || candidate->order > victim->order) victim = candidate.get();
    Check(victim != nullptr, "KV pool: no block free and no row to preempt");
    Preempt(*victim);
    if (victim == &row) return false;
  }
  return true;
}

void Decoder::Preempt(Row& row) {
  Release(row);
  if (row.state == Row::State::kRunning) {
    // Recomputed later from the prompt and every token already fed (all but next_token).
    std::vector<int64_t> fed = row.text->Tokens();
    fed.pop_back();
    row.replay = row.prompt;
    if (!fed.empty()) {
      const torch::Tensor ids = torch::tensor(fed, torch::kLong).unsqueeze(0).to(device_);
      row.replay = torch::cat({row.prompt, model_.Backbone()->EmbedTokens(ids)[0]}, 0);
    }
    row.target = row.replay.size(0);
    row.resume = true;
  }
  row.cached = 0;
  row.state = Row::State::kWaiting;
  row.queued = Clock::now();
  if (std::shared_ptr<Row> owned = TakeOut(active_, row)) waiting_.push_front(std::move(owned));
  std::lock_guard<std::mutex> lock(mutex_);
  ++counters_.preemptions;
}

void Decoder::Step() {
  std::vector<Row*> rows;
  for (const auto& row : active_)
    if (row->state == Row::State::kRunning) rows.push_back(row.get());
  if (rows.empty()) return;
  // Blocks first (oldest rows first); a preempted row drops out of this step.
  std::vector<Row*> ready;
  for (Row* row : rows) {
    if (row->state != Row::State::kRunning) continue;  // preempted by an older row
    if (EnsureBlocks(*row, row->cached + 1)) ready.push_back(row);
  }
  ready.erase(std::remove_if(ready.begin(), ready.end(), [](Row* r) { return r->state != Row::State::kRunning; }),
              ready.end());
  if (ready.empty()) return;
  const Clock::time_point start = Clock::now();
  Isolated(ready, [&](std::vector<Row*>& part) {
    Batch batch;
    batch.rows = part;
    const int64_t b = static_cast<int64_t>(part.size());
    batch.ids = torch::empty({b, 1}, torch::kLong);
    for (int64_t i = 0; i < b; ++i) batch.ids[i][0] = part[i]->next_token;
    const torch::Tensor logits = Forward(batch, /*decode=*/true);
    for (int64_t i = 0; i < b; ++i) part[i]->logits = logits[i];
  }, "decode step");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    counters_.step_seconds += Seconds(Clock::now() - start);
    ++counters_.decode_steps;
    counters_.decode_rows += static_cast<int64_t>(ready.size());
    counters_.max_decode_batch = std::max<int64_t>(counters_.max_decode_batch, ready.size());
  }
  for (Row* row : ready) {
    if (row->state != Row::State::kRunning || !row->logits.defined()) continue;
    row->cached += 1;
    const torch::Tensor logits = std::move(row->logits);
    Accept(*row, row->chooser->Choose(logits));
  }
}

void Decoder::PrefillChunk() {
  int64_t budget = config_.prefill_chunk_tokens;
  std::vector<Row*> rows;
  for (const auto& row : active_) {
    if (row->state != Row::State::kPrefilling || budget <= 0) continue;
    row->chunk = std::min(row->target - row->cached, budget);
    budget -= row->chunk;
    rows.push_back(row.get());
  }
  if (rows.empty()) return;
  const Clock::time_point start = Clock::now();
  Isolated(rows, [&](std::vector<Row*>& part) {
    Batch batch;
    batch.rows = part;
    const int64_t b = static_cast<int64_t>(part.size());
    int64_t width = 0;
    for (Row* row : part) width = std::max(width, row->chunk);
    const int64_t hidden = part[0]->Sequence().size(1);
    batch.embeds = torch::zeros({b, width, hidden}, part[0]->Sequence().options());
    batch.last = torch::empty({b, 1}, torch::kLong);
    for (int64_t i = 0; i < b; ++i) {
      batch.embeds[i].narrow(0, 0, part[i]->chunk).copy_(part[i]->Sequence().narrow(0, part[i]->cached, part[i]->chunk));
      batch.last[i][0] = part[i]->chunk - 1;
    }
    const torch::Tensor logits = Forward(batch, /*decode=*/false);
    for (int64_t i = 0; i < b; ++i) part[i]->logits = logits[i];
  }, "prefill");
  int64_t tokens = 0;
  for (Row* row : rows) {
    if (row->state != Row::State::kPrefilling || !row->logits.defined()) continue;
    row->cached += row->chunk;
    tokens += row->chunk;
    const torch::Tensor logits = std::move(row->logits);
    if (row->cached < row->target) continue;
    row->state = Row::State::kRunning;
    if (row->resume) {  // the next token was chosen before the preemption
      row->resume = false;
      row->replay = torch::Tensor();
      continue;
    }
    Accept(*row, row->chooser->Choose(logits));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  counters_.prefill_seconds += Seconds(Clock::now() - start);
  ++counters_.prefill_chunks;
  counters_.prefill_tokens += tokens;
}

torch::Tensor Decoder::Forward(Batch& batch, bool decode) {
  const int64_t b = static_cast<int64_t>(batch.rows.size());
  int64_t width = 1;
  for (Row* row : batch.rows) width = std::max<int64_t>(width, row->blocks.size());
  batch.tables = torch::full({b, width}, text::KVBlockPool::kScratchBlock, torch::kLong);
  batch.past = torch::empty({b}, torch::kLong);
  batch.fresh = torch::empty({b}, torch::kLong);
  batch.slots = torch::empty({b}, torch::kLong);
  for (int64_t i = 0; i < b; ++i) {
    Row& row = *batch.rows[i];
    std::copy(row.blocks.begin(), row.blocks.end(), batch.tables[i].data_ptr<int64_t>());
    batch.past[i] = row.cached;
    batch.fresh[i] = decode ? 1 : row.chunk;
    batch.slots[i] = row.Slot();
    batch.lora |= row.Slot() != 0 && row.request->adapter->has_lora;
  }
  if (decode && graphs_) {
    torch::Tensor logits = graphs_->Run(batch.ids, batch.tables, batch.past, batch.slots, batch.lora, model_.Bank());
    std::lock_guard<std::mutex> lock(mutex_);
    counters_.graph_replays = graphs_->Replays();
    counters_.graph_captures = graphs_->Captures();
    return logits;
  }
  text::PagedKVBatch paged{pool_.get(), batch.tables.to(device_), batch.past.to(device_), batch.fresh.to(device_)};
  text::RowLora lora{&model_.Bank(), batch.slots.to(device_)};
  text::LlamaInput input;
  input.paged = &paged;
  input.row_lora = batch.lora ? &lora : nullptr;
  if (decode) {
    input.input_ids = batch.ids.to(device_);
    input.logits_to_keep = 1;
  } else {
    input.inputs_embeds = batch.embeds;
    input.logits_positions = batch.last.to(device_);
  }
  return model_.Backbone()->forward(input).logits.select(1, 0).to(torch::kCPU);
}

void Decoder::Accept(Row& row, int64_t token) {
  const std::vector<int64_t>& eos = model_.Tokenizer().EosIds();
  if (!row.request->ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
    Finish(row, FinishReason::kEndOfSequence);
    return;
  }
  bool stopped = false;
  Token out;
  out.text = row.text->Add(token, &stopped);
  out.id = token;
  out.index = row.Tokens() - 1;
  row.next_token = token;
  row.request->on_token(out);
  if (stopped)
    Finish(row, FinishReason::kStopString);
  else if (row.Tokens() >= row.request->max_tokens)
    Finish(row, FinishReason::kMaxTokens);
}

void Decoder::Release(Row& row) {
  if (!row.blocks.empty()) pool_->Free(row.blocks);
  row.blocks.clear();
  NoteBlocks();
}

void Decoder::NoteBlocks() {
  // Published at once (before any callback of the row runs), so a client that saw its answer end
  // sees the memory free in the statistics.
  std::lock_guard<std::mutex> lock(mutex_);
  counters_.used_blocks = pool_->UsedBlocks();
  counters_.peak_used_blocks = std::max(counters_.peak_used_blocks, counters_.used_blocks);
}

void Decoder::Finish(Row& row, FinishReason reason) {
  Release(row);
  row.state = Row::State::kDone;
  const std::shared_ptr<Row> keep = TakeOut(active_, row);  // alive until its callback returns
  row.request->on_finish(reason, row.prompt_positions, row.Tokens());
}

void Decoder::Fail(Row& row, const Status& status) {
  Release(row);
  row.state = Row::State::kDone;
  const std::shared_ptr<Row> keep = TakeOut(active_, row);  // alive until its callback returns
  row.request->on_fail(status);
}

PoolStats Decoder::Pool() {
  std::lock_guard<std::mutex> lock(mutex_);
  PoolStats s;
  s.blocks = pool_->TotalBlocks();
  s.block_size = pool_->BlockSize();
  s.used_blocks = counters_.used_blocks;
  s.peak_used_blocks = counters_.peak_used_blocks;
  s.bytes_per_token = pool_->BytesPerBlock() / pool_->BlockSize();
  s.cached_tokens = counters_.cached_tokens;
  s.utilisation = s.used_blocks > 0 ? double(s.cached_tokens) / (s.used_blocks * s.block_size) : 0.0;
  return s;
}

nlohmann::json Decoder::Stats() {
  const PoolStats pool = Pool();
  std::lock_guard<std::mutex> lock(mutex_);
  const Counters& c = counters_;
  return {{"decode_steps", c.decode_steps},
          {"decode_rows", c.decode_rows},
          {"mean_decode_batch", c.decode_steps ? double(c.decode_rows) / c.decode_steps : 0.0},
          {"max_decode_batch", c.max_decode_batch},
          {"prefill_chunks", c.prefill_chunks},
          {"prefill_tokens", c.prefill_tokens},
          {"preemptions", c.preemptions},
          {"queue_timeouts", c.queue_timeouts},
          {"isolated_retries", c.isolated_retries},
          {"graph_replays", c.graph_replays},
          {"graph_captures", c.graph_captures},
          {"decode_busy_seconds", c.busy_seconds},
          {"decode_step_seconds", c.step_seconds},
          {"prefill_seconds", c.prefill_seconds},
          {"kv_blocks", pool.blocks},
          {"kv_block_size", pool.block_size},
          {"kv_used_blocks", pool.used_blocks},
          {"kv_peak_used_blocks", pool.peak_used_blocks},
          {"kv_bytes_per_token", pool.bytes_per_token},
          {"kv_cached_tokens", pool.cached_tokens},
          {"kv_utilisation", pool.utilisation}};
}

}  // namespace slm::engine
