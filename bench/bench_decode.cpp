// slm bench decode: greedy generation throughput with the KV cache (text::Generate) against full
// recomputation of the sequence at every step (text::GenerateWithoutCache), at batch 1 and a
// left-padded batch of 8, in one run on the same model and prompts. Both paths must produce the
// same tokens; the mismatch count is reported (0 expected). On CUDA the cached path decodes through
// CUDA graphs (text::GenerationOptions::decode_mode auto) and is also compared with the growing
// ("dynamic") cache; --bandwidth-gbs adds the batch-1 memory-bandwidth roofline fraction.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/device.h"
#include "core/json_report.h"
#include "text/generate.h"
#include "text/llama.h"

namespace slm::bench {
namespace {

struct DecodeBenchOptions {
  std::string model;  // a Hugging Face Llama directory; empty = a random model of the sizes below
  int64_t hidden = 256;
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t intermediate = 0;  // 0 = 8/3 * hidden rounded up to a multiple of 64 (Llama's ratio)
  int64_t vocab = 4096;
  int64_t prompt = 64;
  int64_t new_tokens = 64;
  std::vector<int64_t> batch_sizes = {1, 8};
  int repeats = 3;
  uint64_t seed = 0;
  std::string device = "cpu";
  std::string dtype = "float32";
  double bandwidth_gbs = 0;  // the card's memory bandwidth, for the roofline fraction
};

text::LlamaModel BuildModel(const DecodeBenchOptions& o, torch::Device device,
                            torch::ScalarType dtype) {
  if (!o.model.empty()) {
    text::LlamaModel model = text::LoadLlama(o.model, device, dtype);
    model->Freeze();
    return model;
  }
  text::LlamaConfig config;
  config.vocab_size = o.vocab;
  config.hidden_size = o.hidden;
  config.intermediate_size =
      o.intermediate > 0 ? o.intermediate : (o.hidden * 8 / 3 + 63) / 64 * 64;
  config.num_hidden_layers = o.layers;
  config.num_attention_heads = o.heads;
  config.num_key_value_heads = o.kv_heads;
  config.max_position_embeddings = o.prompt + o.new_tokens;
  // Wider than transformers' 0.02 so that a random model's logits are spread out: greedy choices
  // then have margins far above rounding noise and the two paths must agree token for token.
  config.initializer_range = 0.2;
  config.Validate("slm bench decode");
  torch::manual_seed(o.seed);
  text::LlamaModel model(config);
  model->to(device, dtype);
  model->Freeze();
  return model;
}

// Rows of decreasing length (prompt, prompt - prompt/16, ...) so that batches exercise left
// padding; random ids from a fixed seed.
std::vector<std::vector<int64_t>> MakePrompts(int64_t batch, int64_t length, int64_t vocab,
                                              uint64_t seed) {
  torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t row_length = std::max<int64_t>(1, length - b * std::max<int64_t>(1, length / 16));
    const torch::Tensor ids = torch::randint(std::min<int64_t>(3, vocab - 1), vocab, {row_length},
                                             generator, torch::kLong);
    prompts.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + row_length);
  }
  return prompts;
}

int64_t CountMismatches(const text::GenerationResult& a, const text::GenerationResult& b) {
  int64_t mismatches = 0;
  for (size_t row = 0; row < a.tokens.size(); ++row) {
    const auto& x = a.tokens[row];
    const auto& y = b.tokens[row];
    const size_t common = std::min(x.size(), y.size());
    for (size_t i = 0; i < common; ++i) mismatches += x[i] != y[i] ? 1 : 0;
    mismatches += static_cast<int64_t>(std::max(x.size(), y.size()) - common);
  }
  return mismatches;
}

// Medians over `repeats` timed runs after one warm-up run: the whole call, its prefill and its
// decode steps (each median on its own; this machine is shared and noisy).
struct Timing {
  double total = 0;
  double prefill = 0;
  double decode = 0;
  text::GenerationResult result;  // of the last run
};

Timing Measure(int repeats, const std::function<text::GenerationResult()>& run) {
  run();
  std::vector<double> totals, prefills, decodes;
  Timing timing;
  for (int i = 0; i < repeats; ++i) {
    const double start = NowSeconds();
    timing.result = run();
    totals.push_back(NowSeconds() - start);
    prefills.push_back(timing.result.prefill_seconds);
    decodes.push_back(timing.result.decode_seconds);
  }
  auto median = [](std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
  };
  timing.total = median(totals);
  timing.prefill = median(prefills);
  timing.decode = median(decodes);
  return timing;
}

double WeightBytes(const text::LlamaModelImpl& model) {
  double bytes = 0;
  for (const torch::Tensor& p : model.parameters()) bytes += static_cast<double>(p.numel() * p.element_size());
  return bytes;
}

void RunDecodeBench(const DecodeBenchOptions& o, bool json) {
  Report report(json);
  const torch::Device device = ParseDevice(o.device);
  const torch::ScalarType dtype = ParseDtype(o.dtype);
  text::LlamaModel model = BuildModel(o, device, dtype);
  const text::LlamaConfig& config = model->Config();

  text::GenerationOptions options;
  options.max_new_tokens = o.new_tokens;
  options.ignore_stop_tokens = true;  // every row generates exactly new_tokens

  report.Line("greedy decoding, KV cache vs full recomputation each step, median of " +
              std::to_string(o.repeats) + ", " + std::to_string(torch::get_num_threads()) +
              " threads on " + device.str());
  report.Set("model", o.model.empty() ? "random" : o.model);
  report.Set("device", device.str());
  report.Set("dtype", o.dtype);
  report.Set("threads", torch::get_num_threads());
  report.Set("parameters", model->ParameterCount());
  report.Set("config", {{"hidden_size", config.hidden_size},
                        {"num_hidden_layers", config.num_hidden_layers},
                        {"num_attention_heads", config.num_attention_heads},
                        {"num_key_value_heads", config.num_key_value_heads},
                        {"intermediate_size", config.intermediate_size},
                        {"vocab_size", config.vocab_size}});
  report.Set("prompt_tokens", o.prompt);
  report.Set("new_tokens", o.new_tokens);
  int64_t total_mismatches = 0;
  for (const int64_t batch : o.batch_sizes) {
    const auto prompts = MakePrompts(batch, o.prompt, config.vocab_size, o.seed);
    const Timing cached =
        Measure(o.repeats, [&] { return text::Generate(model, prompts, options); });
    const Timing recomputed =
        Measure(o.repeats, [&] { return text::GenerateWithoutCache(model, prompts, options); });
    // On CUDA the default (auto) decodes through CUDA graphs; the growing cache is measured too.
    std::optional<Timing> dynamic;
    if (device.is_cuda()) {
      text::GenerationOptions dynamic_options = options;
      dynamic_options.decode_mode = "dynamic";
      dynamic = Measure(o.repeats, [&] { return text::Generate(model, prompts, dynamic_options); });
    }
    const double tokens = static_cast<double>(cached.result.GeneratedTokens());
    const int64_t mismatches = CountMismatches(cached.result, recomputed.result);
    total_mismatches += mismatches;
    const std::string key = "batch_" + std::to_string(batch);
    report.Set(key + ".generated_tokens", cached.result.GeneratedTokens());
    report.Set(key + ".cached_tokens_per_second", tokens / cached.total);
    report.Set(key + ".recompute_tokens_per_second", tokens / recomputed.total);
    report.Set(key + ".speedup_vs_recompute", recomputed.total / cached.total);
    report.Set(key + ".cached_seconds", cached.total);
    report.Set(key + ".cached_prefill_seconds", cached.prefill);
    // Tokens after the first (which the prefill produces) over the time of the later steps.
    report.Set(key + ".cached_decode_tokens_per_second", (tokens - batch) / cached.decode);
    report.Set(key + ".recompute_seconds", recomputed.total);
    report.Set(key + ".token_mismatches", mismatches);
    const double decode_rate = (tokens - batch) / cached.decode;
    if (o.bandwidth_gbs > 0 && batch == 1)
      report.Set(key + ".roofline_fraction", WeightBytes(*model) * decode_rate / (o.bandwidth_gbs * 1e9));
    if (dynamic) {
      report.Set(key + ".dynamic_cache_tokens_per_second", tokens / dynamic->total);
      report.Set(key + ".dynamic_cache_decode_tokens_per_second", (tokens - batch) / dynamic->decode);
      report.Set(key + ".graph_speedup_vs_dynamic_cache", dynamic->decode / cached.decode);
      report.Set(key + ".graph_vs_dynamic_token_mismatches", CountMismatches(cached.result, dynamic->result));
    }
  }
  report.Set("token_mismatches", total_mismatches);
  report.Set("identical_tokens", total_mismatches == 0);
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd =
      cli::Group(app, "bench", "benchmarks, each against a baseline measured in the same run")
          ->add_subcommand("decode",
                           "greedy generation tokens/s: KV cache vs full recomputation, "
                           "batch 1 and 8 (--threads sets LibTorch threads)");
  auto o = std::make_shared<DecodeBenchOptions>();
  cmd->add_option("--model", o->model, "Hugging Face Llama directory (default: a random model)");
  cmd->add_option("--hidden", o->hidden, "hidden size")
      ->check(CLI::Range(8, 16384))
      ->capture_default_str();
  cmd->add_option("--layers", o->layers, "decoder layers")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--heads", o->heads, "attention heads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--kv-heads", o->kv_heads, "key/value heads (grouped-query attention)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--intermediate", o->intermediate, "MLP size (0 = 8/3 hidden, rounded to 64)")
      ->check(CLI::Range(0, 65536))
      ->capture_default_str();
  cmd->add_option("--vocab", o->vocab, "vocabulary size")
      ->check(CLI::Range(8, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--prompt", o->prompt, "prompt tokens (batch rows get shorter by prompt/16)")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  cmd->add_option("--new", o->new_tokens, "new tokens per row")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  cmd->add_option("--batch-sizes", o->batch_sizes, "batch sizes to measure")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "timed repeats (median reported)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the random model and prompts")->capture_default_str();
  cmd->add_option("--device", o->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "float32, bfloat16, float16")->capture_default_str();
  cmd->add_option("--bandwidth-gbs", o->bandwidth_gbs,
                  "memory bandwidth of the device in GB/s: reports the batch-1 roofline fraction "
                  "(weight bytes per token / time per token / bandwidth)");
  cmd->callback([o, &common] { RunDecodeBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
