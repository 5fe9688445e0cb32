#include "text/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"

namespace slm::text {
namespace {

// The model's config with vocab_size = every id it embeds and predicts (base + extra vocabulary).
LlamaConfig WithTotalVocabulary(const LlamaModelImpl& model) {
  LlamaConfig config = model.Config();
  config.vocab_size = model.TotalVocabulary();
  return config;
}

// Hugging Face's default position ids for a padded batch: real tokens count 0, 1, 2, ... from the
// first real token of each row; padding positions (masked out anyway) get 0.
torch::Tensor PositionIds(const torch::Tensor& mask) { return (mask.cumsum(-1) - 1).clamp_min(0); }

// What the loop starts from: either token ids or embeddings, already on the model's device.
struct Prefill {
  torch::Tensor input_ids;       // [B, T] int64, or undefined
  torch::Tensor inputs_embeds;   // [B, T, H], or undefined
  torch::Tensor attention_mask;  // [B, T] int64
  // [B, V] bool on the CPU (where sampling runs): the tokens of prompt and output so far, when
  // a repetition penalty is set.
  torch::Tensor seen;
  int64_t prompt_tokens = 0;
};

struct ModelPlacement {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;
};

ModelPlacement PlacementOf(LlamaModel& model) {
  const std::vector<torch::Tensor> parameters = model->parameters();
  Check(!parameters.empty(), "generation: the model has no parameters");
  return {parameters.front().device(), parameters.front().scalar_type()};
}

void CheckLength(const LlamaConfig& config, int64_t prompt_length, const GenerationOptions& o) {
  Check(prompt_length + o.max_new_tokens <= config.max_position_embeddings,
        "generation: the prompt has ", prompt_length, " positions (after padding) and ",
        "max_new_tokens is ", o.max_new_tokens, ", together more than the model's ",
        "max_position_embeddings=", config.max_position_embeddings,
        "; shorten the prompt or lower max_new_tokens");
}

std::vector<int64_t> StopTokens(const LlamaConfig& config, const GenerationOptions& o) {
  if (o.ignore_stop_tokens) return {};
  return o.stop_token_ids.empty() ? config.eos_token_ids : o.stop_token_ids;
}

// What finished rows are fed: any valid id works because nothing is reported for them.
int64_t FillerToken(const LlamaConfig& config, const std::vector<int64_t>& stops) {
  if (config.pad_token_id >= 0 && config.pad_token_id < config.vocab_size) {
    return config.pad_token_id;
  }
  for (const int64_t id : config.eos_token_ids) {
    if (id >= 0 && id < config.vocab_size) return id;
  }
  return stops.empty() ? 0 : stops.front();
}

void ValidateForModel(const LlamaConfig& config, const GenerationOptions& o) {
  o.Validate();
  for (const int64_t id : o.stop_token_ids) {
    Check(id < config.vocab_size, "generation: stop token id ", id,
          " is outside the model's vocabulary [0, ", config.vocab_size, ")");
  }
  for (const int64_t id : o.allowed_token_ids) {
    Check(id >= 0 && id < config.vocab_size, "generation: allowed token id ", id,
          " is outside the model's vocabulary [0, ", config.vocab_size, ")");
  }
}

// [V] bool on the CPU: the allowed ids plus the stop tokens; undefined when everything is allowed.
torch::Tensor AllowedMask(const LlamaConfig& config, const GenerationOptions& o) {
  if (o.allowed_token_ids.empty()) return {};
  torch::Tensor mask = torch::zeros({config.vocab_size}, torch::kBool);
  auto a = mask.accessor<bool, 1>();
  for (const int64_t id : o.allowed_token_ids) a[id] = true;
  for (const int64_t id : StopTokens(config, o))
    if (id >= 0 && id < config.vocab_size) a[id] = true;
  return mask;
}

// Next token of every row, [B] int64 on the CPU.
torch::Tensor ChooseTokens(torch::Tensor logits, const torch::Tensor& seen, const torch::Tensor& allowed,
                           const GenerationOptions& o, torch::Generator& generator) {
  // Sampling on the CPU in float32 makes a seed give the same tokens on every device.
  logits = logits.to(torch::kCPU, torch::kFloat);
  if (allowed.defined()) logits = logits.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  if (o.repetition_penalty != 1.0) {
    logits = ApplyRepetitionPenalty(logits, seen, o.repetition_penalty);
  }
  if (o.temperature == 0.0) return logits.argmax(-1);
  const torch::Tensor filtered = ApplySamplingFilters(logits, o.temperature, o.top_k, o.top_p);
  return torch::multinomial(filtered.softmax(-1), 1, /*replacement=*/false, generator).squeeze(1);
}

// Decoding steps through a StaticKVCache; in graph mode the step (embedding, every layer, the LM
// head, the position and slot updates) is captured as a CUDA graph on its second call and replayed
// from then on: the first call runs eagerly and doubles as the warm-up capture needs (cuBLAS
// handles, allocator). Runs on the caller's current CUDA stream, which must not be the default
// stream in graph mode (capture is not allowed there).
class StaticDecoder {
 public:
  StaticDecoder(LlamaModel& model, const KVCache& cache, const torch::Tensor& mask, int64_t capacity,
                bool graph, const RowLora* lora)
      : model_(model), cache_(StaticKVCache::FromCache(cache, mask, capacity)), graph_(graph), lora_(lora) {
    ids_ = torch::zeros({mask.size(0), 1}, mask.options().dtype(torch::kLong));
    positions_ = mask.sum(1, /*keepdim=*/true).to(torch::kLong) - 1;  // last real position per row
  }

  // Logits [B, vocab] float32 for `next` [B] int64 (any device). In graph mode the tensor is the
  // graph's output buffer: read it before the next call overwrites it.
  torch::Tensor Step(const torch::Tensor& next) {
    ids_.copy_(next.view({-1, 1}));
    if (!graph_ || calls_++ == 0) return Forward();
    if (!graph_cuda_) {
      // Created here, not as a member: constructing a CUDAGraph initialises CUDA.
      graph_cuda_ = std::make_unique<at::cuda::CUDAGraph>();
      bool begun = false;
      try {
        graph_cuda_->capture_begin();
        begun = true;
        output_ = Forward();
        graph_cuda_->capture_end();
      } catch (const std::exception& e) {
        // Nothing ran during the failed capture (state untouched): go on without the graph.
        if (begun) {
          try {
            graph_cuda_->capture_end();
          } catch (const std::exception&) {
          }
        }
        graph_cuda_.reset();
        graph_ = false;
        const std::string what = e.what();
        log::Warn(Str("generation: CUDA graph capture failed, decoding without it: ", what.substr(0, what.find('\n'))));
        return Forward();
      }
    }
    graph_cuda_->replay();
    return output_;
  }

 private:
  torch::Tensor Forward() {
    positions_.add_(1);
    LlamaInput input;
    input.input_ids = ids_;
    input.position_ids = positions_;
    input.static_cache = &cache_;
    input.row_lora = lora_;
    return model_->forward(input).logits.select(1, 0);
  }

  LlamaModel& model_;
  StaticKVCache cache_;
  bool graph_;
  const RowLora* lora_;
  torch::Tensor ids_, positions_, output_;
  std::unique_ptr<at::cuda::CUDAGraph> graph_cuda_;
  int64_t calls_ = 0;
};

std::string DecodeMode(const GenerationOptions& o, const torch::Device& device) {
  if (o.decode_mode != "auto") {
    Check(o.decode_mode != "graph" || device.is_cuda(), "generation option decode_mode 'graph' needs a CUDA ",
          "device; the model is on ", device.str(), " (use auto, static or dynamic)");
    return o.decode_mode;
  }
  return device.is_cuda() ? "graph" : "dynamic";
}

GenerationResult Run(LlamaModel& model, Prefill prefill, const GenerationOptions& o,
                     const TokenCallback& callback, bool use_cache) {
  torch::NoGradGuard no_grad;
  const LlamaConfig config = WithTotalVocabulary(*model);
  const int64_t batch = prefill.attention_mask.size(0);
  const torch::Device device = prefill.attention_mask.device();
  GenerationResult result;
  result.tokens.resize(batch);
  result.finish_reasons.assign(batch, "length");
  result.prompt_tokens = prefill.prompt_tokens;
  if (o.max_new_tokens == 0) return result;

  const std::vector<int64_t> stops = StopTokens(config, o);
  const int64_t filler = FillerToken(config, stops);
  const torch::Tensor allowed = AllowedMask(config, o);
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  std::vector<bool> finished(batch, false);
  int64_t unfinished = batch;
  KVCache cache;
  torch::Tensor mask = prefill.attention_mask;
  // Without padding the model needs no mask: it then takes its causal fast path for the prompt
  // and no mask at all for cached single-token steps (the common batch-1 case).
  const bool padded = (mask == 0).any().item<bool>();
  torch::Tensor ids = prefill.input_ids;         // the whole sequence (recompute path)
  torch::Tensor embeds = prefill.inputs_embeds;  // the whole sequence (recompute path)

  const std::string mode = use_cache ? DecodeMode(o, device) : "recompute";
  // Graph capture needs a stream other than the default one; the whole generation runs on it so
  // that no cross-stream ordering is needed (work queued earlier is finished first).
  std::optional<c10::cuda::CUDAStreamGuard> side_stream;
  if (mode == "graph") {
    c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
    side_stream.emplace(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index()));
  }
  std::optional<StaticDecoder> fixed;

  const double start = NowSeconds();
  LlamaInput input;
  input.input_ids = ids;
  input.inputs_embeds = embeds;
  if (padded) input.attention_mask = mask;
  input.position_ids = PositionIds(mask);
  input.cache = use_cache ? &cache : nullptr;
  input.logits_to_keep = 1;
  input.row_lora = o.lora;
  torch::Tensor logits = model->forward(input).logits.select(1, -1);
  if (mode == "static" || mode == "graph") {
    fixed.emplace(model, cache, mask, mask.size(1) + o.max_new_tokens, mode == "graph", o.lora);
    cache.Clear();
  }
  double decode_start = start;

  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    if (o.logits_processor) {
      logits = logits.to(torch::kCPU, torch::kFloat).contiguous().clone();
      o.logits_processor(logits, result.tokens);
    }
    torch::Tensor next = ChooseTokens(logits, prefill.seen, allowed, o, generator);
    if (step == 0) {
      decode_start = NowSeconds();
      result.prefill_seconds = decode_start - start;
    }
    auto chosen = next.accessor<int64_t, 1>();
    for (int64_t row = 0; row < batch; ++row) {
      if (finished[row]) continue;
      const int64_t token = chosen[row];
      if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
        result.finish_reasons[row] = "stop";
      } else {
        result.tokens[row].push_back(token);
        if (callback && !callback(row, token)) {
          result.finish_reasons[row] = "callback";
        } else if (static_cast<int64_t>(result.tokens[row].size()) < o.max_new_tokens) {
          continue;  // still running
        }
      }
      finished[row] = true;
      --unfinished;
    }
    if (unfinished == 0) break;

    for (int64_t row = 0; row < batch; ++row) {
      if (finished[row]) chosen[row] = filler;
    }
    if (prefill.seen.defined()) prefill.seen.scatter_(1, next.unsqueeze(1), true);
    if (fixed) {
      logits = fixed->Step(next);
      continue;
    }
    const torch::Tensor step_ids = next.to(device).unsqueeze(1);  // [B, 1]
    mask = torch::cat({mask, torch::ones({batch, 1}, mask.options())}, 1);
    LlamaInput step_input;
    step_input.row_lora = o.lora;
    if (padded) step_input.attention_mask = mask;
    step_input.logits_to_keep = 1;
    if (use_cache) {
      step_input.input_ids = step_ids;
      step_input.position_ids = mask.sum(1, /*keepdim=*/true) - 1;
      step_input.cache = &cache;
    } else {
      if (embeds.defined()) {
        embeds = torch::cat({embeds, model->EmbedTokens(step_ids).to(embeds.scalar_type())}, 1);
        step_input.inputs_embeds = embeds;
      } else {
        ids = torch::cat({ids, step_ids}, 1);
        step_input.input_ids = ids;
      }
      step_input.position_ids = PositionIds(mask);
    }
    logits = model->forward(step_input).logits.select(1, -1);
  }
  result.decode_seconds = NowSeconds() - decode_start;
  return result;
}

// Left-pads token prompts into a Prefill on the model's device.
Prefill PrefillFromPrompts(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                           const GenerationOptions& o, const char* function) {
  const LlamaConfig config = WithTotalVocabulary(*model);
  ValidateForModel(config, o);
  Check(!prompts.empty(), function, ": the list of prompts is empty");
  int64_t longest = 0;
  Prefill prefill;
  for (size_t i = 0; i < prompts.size(); ++i) {
    Check(!prompts[i].empty(), function, ": prompt ", i,
          " is empty; it needs at least one token (e.g. BOS)");
    for (size_t t = 0; t < prompts[i].size(); ++t) {
      Check(prompts[i][t] >= 0 && prompts[i][t] < config.vocab_size, function, ": prompt ", i,
            " has token id ", prompts[i][t], " at position ", t,
            ", outside the model's vocabulary [0, ", config.vocab_size, ")");
    }
    longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts[i].size()));
    prefill.prompt_tokens += static_cast<int64_t>(prompts[i].size());
  }
  CheckLength(config, longest, o);

  const int64_t batch = static_cast<int64_t>(prompts.size());
  const int64_t filler = FillerToken(config, StopTokens(config, o));
  torch::Tensor ids = torch::full({batch, longest}, filler, torch::kLong);
  torch::Tensor mask = torch::zeros({batch, longest}, torch::kLong);
  torch::Tensor seen;
  if (o.repetition_penalty != 1.0) seen = torch::zeros({batch, config.vocab_size}, torch::kBool);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = static_cast<int64_t>(prompts[b].size());
    for (int64_t t = 0; t < length; ++t) {
      ids_a[b][longest - length + t] = prompts[b][t];
      mask_a[b][longest - length + t] = 1;
    }
    if (seen.defined()) {
      auto seen_a = seen.accessor<bool, 2>();
      for (const int64_t id : prompts[b]) seen_a[b][id] = true;
    }
  }
  const torch::Device device = PlacementOf(model).device;
  prefill.input_ids = ids.to(device);
  prefill.attention_mask = mask.to(device);
  prefill.seen = seen;
  return prefill;
}

}  // namespace

void GenerationOptions::Validate() const {
  Check(max_new_tokens >= 0, "generation option max_new_tokens must be >= 0, got ", max_new_tokens);
  Check(std::isfinite(temperature) && temperature >= 0, "generation option temperature must be ",
        ">= 0 (0 = greedy), got ", temperature);
  Check(top_k >= 0, "generation option top_k must be >= 0 (0 = off), got ", top_k);
  Check(top_p > 0 && top_p <= 1, "generation option top_p must be in (0, 1] (1 = off), got ",
        top_p);
  Check(std::isfinite(repetition_penalty) && repetition_penalty > 0,
        "generation option repetition_penalty must be > 0 (1 = off), got ", repetition_penalty);
  for (const int64_t id : stop_token_ids) {
    Check(id >= 0, "generation option stop_token_ids has a negative id ", id);
  }
  Check(decode_mode == "auto" || decode_mode == "dynamic" || decode_mode == "static" || decode_mode == "graph",
        "generation option decode_mode must be auto, dynamic, static or graph, got '", decode_mode, "'");
}

void GenerationOptions::Load(config::Node node) {
  node.Read("max_new_tokens", max_new_tokens,
            config::InRange<int64_t>(0, std::numeric_limits<int32_t>::max()));
  node.Read("temperature", temperature, config::InRange(0.0, 1e6));
  node.Read("top_k", top_k, config::InRange<int64_t>(0, std::numeric_limits<int32_t>::max()));
  node.Read<double>("top_p", top_p, [](const double& v) {
    return v > 0 && v <= 1 ? std::string() : std::string("must be in (0, 1]");
  });
  node.Read<double>("repetition_penalty", repetition_penalty, [](const double& v) {
    return std::isfinite(v) && v > 0 ? std::string() : std::string("must be > 0 (1 = off)");
  });
  node.Read<std::vector<int64_t>>("stop_token_ids", stop_token_ids,
                                  [](const std::vector<int64_t>& ids) {
                                    for (const int64_t id : ids) {
                                      if (id < 0) return std::string("ids must be >= 0");
                                    }
                                    return std::string();
                                  });
  node.Read("ignore_stop_tokens", ignore_stop_tokens);
  node.Read("decode_mode", decode_mode, config::OneOf<std::string>({"auto", "dynamic", "static", "graph"}));
  int64_t seed_value = static_cast<int64_t>(seed);
  node.Read("seed", seed_value, config::InRange<int64_t>(0, std::numeric_limits<int64_t>::max()));
  seed = static_cast<uint64_t>(seed_value);
}

int64_t GenerationResult::GeneratedTokens() const {
  int64_t total = 0;
  for (const auto& row : tokens) total += static_cast<int64_t>(row.size());
  return total;
}

torch::Tensor ApplyRepetitionPenalty(const torch::Tensor& logits, const torch::Tensor& seen,
                                     double penalty) {
  const torch::Tensor penalized = torch::where(logits < 0, logits * penalty, logits / penalty);
  return torch::where(seen, penalized, logits);
}

torch::Tensor ApplySamplingFilters(const torch::Tensor& logits, double temperature, int64_t top_k,
                                   double top_p) {
  const double negative_infinity = -std::numeric_limits<double>::infinity();
  torch::Tensor scores = temperature > 0 ? logits / temperature : logits.clone();
  const int64_t vocab = scores.size(-1);
  if (top_k > 0 && top_k < vocab) {
    const torch::Tensor kth = std::get<0>(scores.topk(top_k, -1)).narrow(-1, top_k - 1, 1);
    scores = scores.masked_fill(scores < kth, negative_infinity);
  }
  if (top_p < 1.0) {
    // As transformers' TopPLogitsWarper: ascending sort, drop the low tail whose cumulative
    // probability stays within 1 - top_p, never the most likely token.
    auto [sorted, order] = scores.sort(-1, /*descending=*/false);
    torch::Tensor remove_sorted = sorted.softmax(-1).cumsum(-1) <= (1.0 - top_p);
    remove_sorted.narrow(-1, vocab - 1, 1).fill_(false);
    const torch::Tensor remove = remove_sorted.scatter(-1, order, remove_sorted);
    scores = scores.masked_fill(remove, negative_infinity);
  }
  return scores;
}

GenerationResult Generate(LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationOptions& options, const TokenCallback& callback) {
  return Run(model, PrefillFromPrompts(model, prompts, options, "Generate"), options, callback,
             /*use_cache=*/true);
}

GenerationResult GenerateWithoutCache(LlamaModel& model,
                                      const std::vector<std::vector<int64_t>>& prompts,
                                      const GenerationOptions& options,
                                      const TokenCallback& callback) {
  return Run(model, PrefillFromPrompts(model, prompts, options, "GenerateWithoutCache"), options,
             callback, /*use_cache=*/false);
}

GenerationResult GenerateFromEmbeds(LlamaModel& model, const torch::Tensor& inputs_embeds,
                                    const torch::Tensor& attention_mask,
                                    const GenerationOptions& options,
                                    const TokenCallback& callback) {
  const LlamaConfig config = WithTotalVocabulary(*model);
  ValidateForModel(config, options);
  Check(inputs_embeds.defined() && inputs_embeds.dim() == 3,
        "GenerateFromEmbeds: inputs_embeds must be [B, T, hidden_size], got ",
        inputs_embeds.defined() ? inputs_embeds.sizes() : torch::IntArrayRef{});
  Check(inputs_embeds.size(2) == config.hidden_size, "GenerateFromEmbeds: inputs_embeds has ",
        inputs_embeds.size(2), " features, the model's hidden_size is ", config.hidden_size);
  const int64_t batch = inputs_embeds.size(0);
  const int64_t length = inputs_embeds.size(1);
  Check(batch > 0 && length > 0, "GenerateFromEmbeds: inputs_embeds is empty (",
        inputs_embeds.sizes(), ")");
  Check(attention_mask.defined() && attention_mask.dim() == 2 && attention_mask.size(0) == batch &&
            attention_mask.size(1) == length,
        "GenerateFromEmbeds: attention_mask must be [", batch, ", ", length, "], got ",
        attention_mask.defined() ? attention_mask.sizes() : torch::IntArrayRef{});
  const ModelPlacement placement = PlacementOf(model);
  torch::Tensor mask = attention_mask.to(placement.device, torch::kLong);
  const torch::Tensor real_per_row = mask.ne(0).sum(1).to(torch::kCPU);
  for (int64_t b = 0; b < batch; ++b) {
    Check(real_per_row[b].item<int64_t>() > 0, "GenerateFromEmbeds: row ", b,
          " of attention_mask has no real position");
  }
  CheckLength(config, length, options);
  Prefill prefill;
  prefill.inputs_embeds = inputs_embeds.to(placement.device, placement.dtype);
  prefill.attention_mask = mask.ne(0).to(torch::kLong);
  prefill.prompt_tokens = real_per_row.sum().item<int64_t>();
  if (options.repetition_penalty != 1.0) {
    prefill.seen = torch::zeros({batch, config.vocab_size}, torch::kBool);
  }
  return Run(model, std::move(prefill), options, callback, /*use_cache=*/true);
}

}  // namespace slm::text
