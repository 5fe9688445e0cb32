#include "text/llama.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "core/error.h"
#include "core/hf_config.h"
#include "core/module_weights.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "text/llama_layers.h"

namespace slm::text {
namespace {

using nlohmann::json;

std::string ConfigDtypeName(torch::ScalarType type) {
  switch (type) {
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kHalf:
      return "float16";
    case torch::kDouble:
      return "float64";
    default:
      return "float32";
  }
}

}  // namespace

using namespace detail;

// ---------------------------------------------------------------------------------------------
// LlamaModelImpl

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config)
    : LlamaModelImpl(config, torch::TensorOptions().dtype(torch::kFloat), true) {}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config, const torch::TensorOptions& options,
                               bool init_weights)
    : config_(config), parts_(std::make_shared<Parts>()) {
  config_.Validate("LlamaConfig");
  sliding_window_ = config_.HasSlidingLayers() ? config_.sliding_window : 0;
  Check(torch::isFloatingType(c10::typeMetaToScalarType(options.dtype())),
        "LlamaModel: parameters need a floating-point dtype, got ", options.dtype().name());
  parts_->model = register_module("model", Backbone(config_, options));
  if (!config_.tie_word_embeddings)
    parts_->lm_head = register_module(
        "lm_head", Projection(config_.hidden_size, config_.vocab_size, false, options));
  if (!init_weights) return;

  // transformers' _init_weights: normal(0, initializer_range) for linear and embedding weights,
  // zero biases, unit norm weights, and a zero embedding row for the padding token.
  torch::NoGradGuard no_grad;
  for (auto& named : named_parameters()) {
    const std::string& name = named.key();
    torch::Tensor& p = named.value();
    if (EndsWith(name, "norm.weight")) {
      p.fill_(config_.Family().gemma ? 0.0 : 1.0);  // Gemma scales by (1 + weight)
    } else if (EndsWith(name, ".bias")) {
      p.zero_();
    } else {
      p.normal_(0.0, config_.initializer_range);
    }
  }
  if (config_.pad_token_id >= 0) parts_->model->embed_tokens->weight[config_.pad_token_id].zero_();
}

torch::Tensor LlamaModelImpl::EmbedTokens(const torch::Tensor& input_ids) {
  Check(input_ids.defined(), "LlamaModel: input_ids are undefined");
  Check(input_ids.scalar_type() == torch::kLong || input_ids.scalar_type() == torch::kInt,
        "LlamaModel: input_ids must be int64, got ", input_ids.scalar_type());
  const torch::Tensor& weight = parts_->model->embed_tokens->weight;
  if (input_ids.device().is_cpu() && input_ids.numel() > 0) {
    const auto [low, high] = torch::aminmax(input_ids);
    const int64_t lowest = low.item<int64_t>();
    const int64_t highest = high.item<int64_t>();
    Check(lowest >= 0 && highest < TotalVocabulary(), "LlamaModel: token id ",
          lowest < 0 ? lowest : highest, " is outside the vocabulary of ", TotalVocabulary());
  }
  const torch::Tensor ids = input_ids.to(weight.device());
  torch::Tensor embeds;
  if (!extra_embed_.defined()) {
    embeds = torch::embedding(weight, ids);
  } else {
    // Base ids from the frozen table, new ids from the trainable rows.
    const torch::Tensor is_new = (ids >= config_.vocab_size).unsqueeze(-1);
    embeds = torch::where(is_new, torch::embedding(extra_embed_, (ids - config_.vocab_size).clamp_min(0)),
                          torch::embedding(weight, ids.clamp_max(config_.vocab_size - 1)));
  }
  if (!config_.Family().gemma) return embeds;
  // Gemma2TextScaledWordEmbedding: sqrt(hidden_size) rounded to the weights' dtype first (a bf16
  // model multiplies by the bf16 value, as transformers does).
  const torch::Tensor scale = torch::scalar_tensor(std::sqrt(static_cast<double>(config_.hidden_size)), torch::kFloat)
                                  .to(weight.device(), weight.scalar_type());
  return embeds * scale;
}

void LlamaModelImpl::AddVocabulary(int64_t count) {
  Check(count >= 1, "LlamaModel: AddVocabulary needs count >= 1, got ", count);
  Check(!extra_embed_.defined(), "LlamaModel: the extra vocabulary was already added");
  torch::NoGradGuard no_grad;
  const torch::Tensor& embed = parts_->model->embed_tokens->weight;
  const torch::Tensor& head = parts_->lm_head ? parts_->lm_head->weight : embed;
  const torch::Tensor base = embed.to(torch::kFloat);
  // Drawn on the CPU generator whatever the device, so a seed gives the same rows on every device.
  const torch::Tensor noise = torch::randn({count, config_.hidden_size}).to(base.device());
  const torch::Tensor rows = base.mean(0, true) + base.std(0, true, true) * noise;
  // A plain submodule, so the parameters are named "extra_vocab.embed" / "extra_vocab.head".
  auto extra = register_module("extra_vocab", std::make_shared<torch::nn::Module>());
  extra_embed_ = extra->register_parameter("embed", rows.to(embed.options()));
  extra_head_ = extra->register_parameter(
      "head", head.to(torch::kFloat).mean(0, true).expand({count, -1}).contiguous().to(head.options()));
}

int64_t LlamaModelImpl::ExtraVocabulary() const { return extra_embed_.defined() ? extra_embed_.size(0) : 0; }

std::vector<torch::Tensor> LlamaModelImpl::ExtraVocabularyParameters() const {
  if (!extra_embed_.defined()) return {};
  return {extra_embed_, extra_head_};
}

LlamaOutput LlamaModelImpl::forward(const LlamaInput& input) {
  const bool has_ids = input.input_ids.defined();
  const bool has_embeds = input.inputs_embeds.defined();
  Check(has_ids != has_embeds, "LlamaModel: give exactly one of input_ids and inputs_embeds (got ",
        has_ids ? "both" : "neither", ")");
  const torch::Tensor& embed_weight = parts_->model->embed_tokens->weight;
  const torch::ScalarType dtype = embed_weight.scalar_type();
  const torch::Device device = embed_weight.device();

  torch::Tensor hidden;
  if (has_ids) {
    Check(input.input_ids.dim() == 2, "LlamaModel: input_ids must be [B, T], got ",
          ShapeString(input.input_ids.sizes().vec()));
    hidden = EmbedTokens(input.input_ids);
  } else {
    hidden = input.inputs_embeds;
    Check(hidden.dim() == 3 && hidden.size(2) == config_.hidden_size,
          "LlamaModel: inputs_embeds must be [B, T, hidden_size=", config_.hidden_size, "], got ",
          ShapeString(hidden.sizes().vec()));
    Check(hidden.scalar_type() == dtype, "LlamaModel: inputs_embeds are ", hidden.scalar_type(),
          " but the model is ", dtype);
    Check(hidden.device() == device, "LlamaModel: inputs_embeds are on ", hidden.device(),
          " but the model is on ", device);
  }
  const int64_t batch = hidden.size(0);
  const int64_t steps = hidden.size(1);
  Check(batch > 0 && steps > 0, "LlamaModel: empty input ", ShapeString(hidden.sizes().vec()));

  KVCache* cache = input.cache;
  StaticKVCache* fixed = input.static_cache;
  const int64_t layers = config_.num_hidden_layers;
  Check(int(cache != nullptr) + int(fixed != nullptr) + int(input.paged != nullptr) <= 1,
        "LlamaModel: give at most one of cache, static_cache and paged");
  if (input.row_lora != nullptr) CheckRowLora(*input.row_lora, batch);
  if (input.paged != nullptr) return PagedForward(hidden, input);
  if (fixed != nullptr) return StaticStep(hidden, input);
  const int64_t past = cache ? cache->Length() : 0;
  if (past > 0) {
    Check(static_cast<int64_t>(cache->keys.size()) == layers &&
              static_cast<int64_t>(cache->values.size()) == layers,
          "LlamaModel: the KV cache has ", cache->keys.size(), " layers, the model ", layers);
    Check(cache->keys[0].size(0) == batch, "LlamaModel: the KV cache holds a batch of ",
          cache->keys[0].size(0), " but the input has ", batch);
  }
  const int64_t total = past + steps;
  // Positions past the trained range would silently extrapolate the rotary embeddings.
  Check(total <= config_.max_position_embeddings, "LlamaModel: ", total, " positions (", past,
        " cached + ", steps, " new) exceed max_position_embeddings ",
        config_.max_position_embeddings);
  Check(input.logits_to_keep >= 0, "LlamaModel: logits_to_keep must not be negative, got ",
        input.logits_to_keep);
  Check(input.logits_to_keep == 0 || !input.logits_positions.defined(),
        "LlamaModel: give logits_to_keep or logits_positions, not both");

  torch::Tensor key_valid;  // bool [B, T_past + T]; undefined = every key is a real token
  if (input.attention_mask.defined()) {
    const torch::Tensor& mask = input.attention_mask;
    Check(mask.dim() == 2 && mask.size(0) == batch && mask.size(1) == total,
          "LlamaModel: attention_mask must be [B, T_past + T] = [", batch, ", ", total, "], got ",
          ShapeString(mask.sizes().vec()));
    key_valid = mask.to(device, torch::kBool);
  }

  torch::Tensor positions;
  if (input.position_ids.defined()) {
    const torch::Tensor& ids = input.position_ids;
    Check(ids.dim() == 2 && (ids.size(0) == batch || ids.size(0) == 1) && ids.size(1) == steps,
          "LlamaModel: position_ids must be [B, T] = [", batch, ", ", steps, "], got ",
          ShapeString(ids.sizes().vec()));
    positions = ids.to(device, torch::kLong);
  } else if (key_valid.defined()) {
    // What transformers' generate() passes for left-padded batches: each row counts its own real
    // tokens; padding sits at position 0.
    const torch::Tensor counts = key_valid.to(torch::kLong).cumsum(1) - 1;
    positions = counts.masked_fill(key_valid.logical_not(), 0).slice(1, past);
  } else {
    positions =
        torch::arange(past, total, torch::TensorOptions(torch::kLong).device(device)).unsqueeze(0);
  }

  AttentionPattern pattern;
  if (key_valid.defined()) {
    // Query i (at absolute position past + i) sees keys k <= past + i that are real tokens. A
    // padding query of a left-padded row would see no key at all, and softmax over nothing is
    // NaN on some SDPA backends; a NaN there would leak into real tokens of later layers through
    // 0 * NaN in the weighted sum. So every query also sees itself: finite values on padding
    // rows (transformers gets zeros or a uniform average there; neither is ever read).
    const auto bool_options = torch::TensorOptions(torch::kBool).device(device);
    const torch::Tensor causal = torch::ones({steps, total}, bool_options).tril(past);
    const torch::Tensor self = torch::ones({steps, total}, bool_options).triu(past) & causal;
    pattern.mask =
        (causal.unsqueeze(0) & (key_valid.unsqueeze(1) | self.unsqueeze(0))).unsqueeze(1);
  } else if (steps > 1) {
    if (past == 0) {
      pattern.is_causal = true;
    } else {
      // SDPA's is_causal aligns the triangle top-left; with a cache it must end bottom-right.
      pattern.mask = torch::ones({steps, total}, torch::TensorOptions(torch::kBool).device(device))
                         .tril(past)
                         .unsqueeze(0)
                         .unsqueeze(0);
    }
  }
  // One new token without padding sees every cached key: no mask at all.
  // Sliding layers: query i (index past + i) also needs key index k > past + i - window. Indices
  // and positions differ by a row's left padding only, so this is the window over positions.
  AttentionPattern sliding = pattern;
  const int64_t window = sliding_window_;
  if (window > 0 && total > window) {
    const auto bool_options = torch::TensorOptions(torch::kBool).device(device);
    const torch::Tensor band = torch::ones({steps, total}, bool_options).triu(past - window + 1);
    torch::Tensor allowed = pattern.mask;
    if (!allowed.defined()) allowed = torch::ones({steps, total}, bool_options).tril(past).unsqueeze(0).unsqueeze(0);
    sliding.mask = allowed & band.unsqueeze(0).unsqueeze(0);
    sliding.is_causal = false;
  }

  const auto [cos, signed_sin] = parts_->model->rotary_emb->forward(positions, dtype);
  LlamaOutput output;
  if (input.output_hidden_states) output.hidden_states.push_back(hidden);
  if (cache != nullptr) {
    cache->keys.resize(layers);
    cache->values.resize(layers);
  }
  const bool pruned = input.logits_positions.defined() && input.prune_last_layer && cache == nullptr &&
                      !input.output_hidden_states && input.row_lora == nullptr;
  std::optional<GrowingCacheAccess> growing;
  if (cache != nullptr) growing.emplace(*cache);
  LayerContext context;
  context.cos = cos;
  context.signed_sin = signed_sin;
  context.pattern = pattern;
  context.sliding = sliding;
  context.cache = growing ? &*growing : nullptr;
  context.lora = input.row_lora;
  const torch::Tensor at = pruned ? LogitsPositions(input.logits_positions, batch, steps, device) : torch::Tensor();
  for (int64_t l = 0; l < layers; ++l) {
    if (pruned && l == layers - 1) {
      // Only the chosen positions' outputs are read, and the last layer's other outputs feed
      // nothing: its queries, output projection and MLP run on those K rows instead of all T
      // (a training loss over 16 target tokens of 74 positions skips ~3/4 of the layer's work,
      // forward and backward). Query at index a sees keys j <= a that are real (or itself), as
      // the full pattern above says.
      const torch::Tensor index = torch::arange(steps, torch::TensorOptions(torch::kLong).device(device));
      const torch::Tensor query = at.unsqueeze(-1);                         // [B, K, 1]
      torch::Tensor allowed = index.view({1, 1, steps}) <= query;           // [B, K, T]
      if (key_valid.defined()) allowed = allowed & (key_valid.unsqueeze(1) | index.view({1, 1, steps}) == query);
      if (const int64_t last_window = config_.LayerWindow(l); last_window > 0)
        allowed = allowed & (index.view({1, 1, steps}) > query - last_window);
      const torch::Tensor at_positions = positions.expand({batch, steps}).gather(1, at);
      const auto [cos_q, signed_sin_q] = parts_->model->rotary_emb->forward(at_positions, dtype);
      hidden = parts_->model->decoder_layers[l]->ForwardAt(hidden, at, cos, signed_sin, cos_q, signed_sin_q,
                                                           allowed.unsqueeze(1));
      break;
    }
    context.layer = l;
    hidden = parts_->model->decoder_layers[l]->forward(hidden, context);
    if (input.output_hidden_states) output.hidden_states.push_back(hidden);
  }
  hidden = parts_->model->norm(hidden);
  // transformers' hidden_states end with the final-norm output, not the last layer's raw output.
  if (input.output_hidden_states) output.hidden_states.back() = hidden;
  output.last_hidden_state = hidden;

  const int64_t keep = input.logits_to_keep;
  torch::Tensor kept = keep > 0 && keep < steps ? hidden.slice(1, steps - keep) : hidden;
  if (pruned) {
    kept = hidden;  // the last layer ran at the chosen positions only
  } else if (input.logits_positions.defined()) {
    const torch::Tensor chosen = LogitsPositions(input.logits_positions, batch, steps, device);
    // The LM head over only the positions a loss needs: [B, K, H] instead of [B, T, H].
    kept = hidden.gather(1, chosen.unsqueeze(-1).expand({batch, chosen.size(1), hidden.size(2)}));
  }
  output.logits = Logits(kept);
  return output;
}

void LlamaModelImpl::CheckRowLora(const RowLora& lora, int64_t batch) const {
  Check(lora.bank != nullptr, "LlamaModel: row_lora has no bank");
  Check(lora.slots.defined() && lora.slots.dim() == 1 && lora.slots.size(0) == batch &&
            lora.slots.scalar_type() == torch::kLong,
        "LlamaModel: row_lora.slots must be int64 [B=", batch, "]");
  Check(lora.slots.device() == parts_->model->embed_tokens->weight.device(),
        "LlamaModel: row_lora.slots must be on the model's device");
  Check(!torch::GradMode::is_enabled(), "LlamaModel: row_lora is for inference; run under torch::NoGradGuard");
  // The bank replaces the model's own LoRA; both at once would apply two updates.
  Check(!has_lora_ || lora_scale_ == 0.0, "LlamaModel: row_lora needs the model's own LoRA off (SetLoraScale(0))");
  if (lora.slots.device().is_cpu() && batch > 0) {
    const auto [low, high] = torch::aminmax(lora.slots);
    Check(low.item<int64_t>() >= 0 && high.item<int64_t>() < lora.bank->Capacity(),
          "LlamaModel: row_lora.slots must be in [0, ", lora.bank->Capacity(), ")");
  }
}

// Rows whose keys and values live in a KVBlockPool (text/kv_cache.h, PagedKVBatch): positions,
// write slots, read slots and the causal mask all come from the block tables, on the device, so
// a decode step has fixed shapes for a given (batch, blocks) and can be captured as a CUDA graph.
LlamaOutput LlamaModelImpl::PagedForward(torch::Tensor hidden, const LlamaInput& input) {
  const PagedKVBatch& paged = *input.paged;
  const int64_t batch = hidden.size(0);
  const int64_t steps = hidden.size(1);
  const int64_t layers = config_.num_hidden_layers;
  const torch::Device device = hidden.device();
  Check(paged.pool != nullptr, "LlamaModel: paged.pool is null");
  KVBlockPool& pool = *paged.pool;
  Check(pool.Layers() == layers, "LlamaModel: the block pool has ", pool.Layers(), " layers, the model ", layers);
  Check(pool.Device() == device, "LlamaModel: the block pool is on ", pool.Device(), ", the model on ", device);
  Check(!torch::GradMode::is_enabled(), "LlamaModel: a paged pass writes the pool in place; run under torch::NoGradGuard");
  Check(!input.attention_mask.defined() && !input.position_ids.defined() && !input.output_hidden_states,
        "LlamaModel: a paged pass takes positions and mask from its block tables (no attention_mask, ",
        "position_ids or hidden states)");
  Check(paged.block_tables.defined() && paged.block_tables.dim() == 2 && paged.block_tables.size(0) == batch &&
            paged.block_tables.size(1) >= 1 && paged.block_tables.scalar_type() == torch::kLong,
        "LlamaModel: paged.block_tables must be int64 [B=", batch, ", M >= 1]");
  for (const torch::Tensor* t : {&paged.past, &paged.new_tokens})
    Check(t->defined() && t->dim() == 1 && t->size(0) == batch && t->scalar_type() == torch::kLong,
          "LlamaModel: paged.past and paged.new_tokens must be int64 [B=", batch, "]");
  for (const torch::Tensor* t : {&paged.block_tables, &paged.past, &paged.new_tokens})
    Check(t->device() == device, "LlamaModel: the paged batch's tensors must be on the model's device ", device);
  const int64_t block = pool.BlockSize();
  const int64_t blocks = paged.block_tables.size(1);
  const int64_t keys = blocks * block;
  if (device.is_cpu()) {
    // Cheap on the CPU; on a GPU the caller's bookkeeping is trusted (no host sync per step).
    const torch::Tensor end = paged.past + paged.new_tokens;
    const int64_t longest = end.max().item<int64_t>();
    Check(longest <= config_.max_position_embeddings, "LlamaModel: ", longest,
          " positions exceed max_position_embeddings ", config_.max_position_embeddings);
    Check(longest <= keys, "LlamaModel: a row reaches position ", longest, " but its block table holds ", keys);
    Check(paged.new_tokens.min().item<int64_t>() >= 0 && paged.new_tokens.max().item<int64_t>() <= steps &&
              paged.past.min().item<int64_t>() >= 0,
          "LlamaModel: paged.new_tokens must be in [0, T=", steps, "] and paged.past >= 0");
  }

  const auto options = torch::TensorOptions(torch::kLong).device(device);
  const torch::Tensor column = torch::arange(steps, options);
  const torch::Tensor positions = paged.past.unsqueeze(1) + column.unsqueeze(0);  // [B, T]
  const torch::Tensor real = column.unsqueeze(0) < paged.new_tokens.unsqueeze(1);
  const torch::Tensor offset = positions.remainder(block);
  const torch::Tensor table_index = positions.div(block, "floor").clamp_max(blocks - 1);
  const torch::Tensor slots = paged.block_tables.gather(1, table_index) * block + offset;
  const torch::Tensor write = torch::where(real, slots, offset + KVBlockPool::kScratchBlock * block);
  const torch::Tensor key = torch::arange(keys, options);
  const torch::Tensor read = paged.block_tables.repeat_interleave(block, 1) * block + key.remainder(block).unsqueeze(0);

  LayerContext context;
  const torch::ScalarType dtype = parts_->model->embed_tokens->weight.scalar_type();
  std::tie(context.cos, context.signed_sin) = parts_->model->rotary_emb->forward(positions, dtype);
  // A query at position p sees the row's positions 0..p: everything cached before this pass and
  // the pass's own earlier columns (their keys are in the pool by the time the layer attends).
  context.pattern.mask = (key.view({1, 1, keys}) <= positions.unsqueeze(2)).unsqueeze(1);
  // Sliding layers: keys j with p - window < j <= p.
  if (const int64_t window = sliding_window_; window > 0)
    context.sliding.mask = context.pattern.mask & (key.view({1, 1, keys}) > positions.unsqueeze(2) - window).unsqueeze(1);
  PagedCacheAccess access(pool, write.reshape({-1}), read.reshape({-1}), batch, keys);
  context.cache = &access;
  context.lora = input.row_lora;
  for (int64_t l = 0; l < layers; ++l) {
    context.layer = l;
    hidden = parts_->model->decoder_layers[l]->forward(hidden, context);
  }
  LlamaOutput output;
  output.last_hidden_state = parts_->model->norm(hidden);
  torch::Tensor kept = output.last_hidden_state;
  if (input.logits_positions.defined()) {
    Check(input.logits_to_keep == 0, "LlamaModel: give logits_to_keep or logits_positions, not both");
    const torch::Tensor chosen = LogitsPositions(input.logits_positions, batch, steps, device);
    kept = kept.gather(1, chosen.unsqueeze(-1).expand({batch, chosen.size(1), kept.size(2)}));
  } else if (input.logits_to_keep > 0 && input.logits_to_keep < steps) {
    kept = kept.slice(1, steps - input.logits_to_keep);
  }
  output.logits = Logits(kept);
  return output;
}

torch::Tensor LlamaModelImpl::LogitsPositions(const torch::Tensor& at, int64_t batch, int64_t steps,
                                              const torch::Device& device) const {
  Check(at.dim() == 2 && at.size(0) == batch && at.scalar_type() == torch::kLong,
        "LlamaModel: logits_positions must be int64 [B=", batch, ", K], got ", at.scalar_type(), " ",
        ShapeString(at.sizes().vec()));
  if (at.device().is_cpu() && at.numel() > 0) {
    const auto [low, high] = torch::aminmax(at);
    Check(low.item<int64_t>() >= 0 && high.item<int64_t>() < steps,
          "LlamaModel: logits_positions must be in [0, ", steps, ")");
  }
  return at.to(device);
}

torch::Tensor LlamaModelImpl::Logits(const torch::Tensor& hidden) const {
  const torch::Tensor& embed_weight = parts_->model->embed_tokens->weight;
  const torch::Tensor& head = parts_->lm_head ? parts_->lm_head->weight : embed_weight;
  torch::Tensor logits = torch::linear(hidden, head);
  if (extra_head_.defined() && predict_extra_) logits = torch::cat({logits, torch::linear(hidden, extra_head_)}, -1);
  if (const double cap = config_.final_logit_softcapping; cap > 0) logits = torch::tanh(logits / cap) * cap;
  return embed_weight.scalar_type() == torch::kDouble ? logits : logits.to(torch::kFloat);
}

// One token per row through a StaticKVCache: fixed shapes and no host synchronisation, so the
// whole step can be captured as a CUDA graph. Only shape checks touch the host.
LlamaOutput LlamaModelImpl::StaticStep(torch::Tensor hidden, const LlamaInput& input) {
  StaticKVCache& fixed = *input.static_cache;
  const int64_t batch = hidden.size(0);
  const int64_t layers = config_.num_hidden_layers;
  Check(input.cache == nullptr, "LlamaModel: give cache or static_cache, not both");
  Check(hidden.size(1) == 1, "LlamaModel: a static-cache step takes one token per row, got ", hidden.size(1));
  Check(static_cast<int64_t>(fixed.keys.size()) == layers && static_cast<int64_t>(fixed.values.size()) == layers &&
            fixed.valid.defined() && fixed.slot.defined(),
        "LlamaModel: the static KV cache has ", fixed.keys.size(), " layers, the model ", layers);
  Check(fixed.valid.size(0) == batch, "LlamaModel: the static KV cache holds a batch of ", fixed.valid.size(0),
        " but the input has ", batch);
  Check(input.position_ids.defined() && input.position_ids.dim() == 2 && input.position_ids.size(1) == 1,
        "LlamaModel: a static-cache step needs position_ids [B, 1]");
  Check(!input.output_hidden_states && !input.logits_positions.defined(),
        "LlamaModel: a static-cache step returns logits only");
  const torch::ScalarType dtype = parts_->model->embed_tokens->weight.scalar_type();
  fixed.valid.index_fill_(1, fixed.slot, true);
  StaticCacheAccess access(fixed);
  LayerContext context;
  context.pattern.mask = fixed.valid.view({batch, 1, 1, fixed.Capacity()});
  // Sliding layers: slots s > slot - window, computed on the device (the slot never leaves it).
  if (const int64_t window = sliding_window_; window > 0) {
    const torch::Tensor index = torch::arange(fixed.Capacity(), fixed.slot.options());
    context.sliding.mask = context.pattern.mask & (index > fixed.slot - window).view({1, 1, 1, fixed.Capacity()});
  }
  std::tie(context.cos, context.signed_sin) = parts_->model->rotary_emb->forward(input.position_ids, dtype);
  context.cache = &access;
  context.lora = input.row_lora;
  for (int64_t l = 0; l < layers; ++l) {
    context.layer = l;
    hidden = parts_->model->decoder_layers[l]->forward(hidden, context);
  }
  fixed.slot.add_(1);
  LlamaOutput output;
  output.last_hidden_state = parts_->model->norm(hidden);
  output.logits = Logits(output.last_hidden_state);
  return output;
}

void LlamaModelImpl::Freeze() {
  for (auto& [name, p] : BaseParameters()) p.set_requires_grad(false);
  eval();
}

bool LlamaModelImpl::IsFrozen() const {
  if (is_training()) return false;
  for (const auto& [name, p] : BaseParameters())
    if (p.requires_grad()) return false;
  return true;
}

int64_t LlamaModelImpl::ParameterCount() const {
  int64_t count = 0;
  for (const auto& [name, p] : BaseParameters()) count += p.numel();
  return count;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaModelImpl::BaseParameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& named : named_parameters())
    if (!IsAdapterName(named.key())) out.emplace_back(named.key(), named.value());
  return out;
}

safetensors::Plan LlamaModelImpl::WeightPlan() const {
  safetensors::Plan plan;
  for (const auto& [name, parameter] : BaseParameters()) plan.Expect(name, parameter);
  // transformers ties the head to the embeddings after loading; a stored copy is unused.
  if (config_.tie_word_embeddings)
    plan.tensors.push_back({"lm_head.weight", {config_.vocab_size, config_.hidden_size}, torch::kFloat, {},
                            /*optional=*/true});
  plan.ignore = IsIgnoredCheckpointTensor;
  plan.unexpected_hint = Str(" (not a parameter of this ", config_.num_hidden_layers, "-layer ",
                             config_.tie_word_embeddings ? "tied" : "untied", " ", config_.Family().architecture,
                             "; does config.json describe these weights?)");
  return plan;
}

void LlamaModelImpl::CheckWeights(const std::string& model_dir) const {
  safetensors::Checkpoint(model_dir).Verify(WeightPlan());
}

void LlamaModelImpl::LoadWeights(const std::string& model_dir) {
  safetensors::Checkpoint(model_dir).Load(WeightPlan());
}

void LlamaModelImpl::SaveWeights(const std::string& model_dir) const {
  json config = config_.ToJson();
  module_weights::NamedTensors tensors;
  for (const auto& [name, parameter] : BaseParameters()) tensors.emplace_back(name, parameter.detach());
  // Declare the dtype the weights are actually stored in, not the one the model was loaded from.
  config["torch_dtype"] = ConfigDtypeName(tensors.front().second.scalar_type());
  module_weights::WriteModelDirectory(model_dir, tensors, config);
}

LlamaModel LoadLlama(const std::string& model_dir, torch::Device device, torch::ScalarType dtype) {
  const LlamaConfig config = LlamaConfig::FromFile(hf_config::ConfigPath(model_dir));
  // Allocated directly in the target dtype and device, uninitialised: every weight is loaded.
  LlamaModel model(config, torch::TensorOptions().dtype(dtype).device(device),
                   /*init_weights=*/false);
  model->LoadWeights(model_dir);
  return model;
}

}  // namespace slm::text
