// slm bench engine: the serving engine's answer decoder (engine/decoder.h) under load, against
// baselines measured in the same run:
//  - throughput: N concurrent Generate requests of P-token prompts and exactly T new tokens each
//    through the engine (continuous batching over the paged KV cache, CUDA graphs on a GPU)
//    versus text::Generate of the same N prompts as one left-padded batch (the library's own
//    batched decode) and transformers' `generate` of them batched with padding
//    (bench/generate_transformers.py, the Python stack's way);
//  - batch 1: one request alone, tokens/s and, with --bandwidth-gbs, the fraction of the memory
//    roofline (weight bytes per token / seconds per token / bandwidth);
//  - mixed adapters: the mean decode step with the N rows spread over K LoRA adapters versus all
//    N rows on one adapter (per-row LoRA from the bank: the cost of mixing);
//  - memory: KV bytes per cached position and the pool's block utilisation at N.
// Presets: tiny (the embedded backbone, CPU) and tinyllama (random TinyLlama-1.1B shapes, for a
// GPU). Tokens are identical between the engine and text::Generate (greedy); the mismatch count
// is reported.
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "adapters/multimodal.h"
#include "bench/bench_models.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/config.h"
#include "core/device.h"
#include "core/fs.h"
#include "core/json_report.h"
#include "core/strings.h"
#include "engine/engine.h"
#include "text/generate.h"

namespace slm::bench {
namespace {

struct EngineBenchOptions {
  std::string preset = "tiny";  // tiny | tinyllama
  std::string device = "cpu";
  std::string dtype = "float32";
  int rows = 64;
  int prompt = 32;
  int new_tokens = 64;
  int adapters = 4;
  std::string work_dir;
  std::string python;  // empty = the project's venv
  double bandwidth_gbs = 0;
  bool transformers = true;
};

struct RunResult {
  double seconds = 0;
  std::vector<std::vector<int64_t>> tokens;
  nlohmann::json stats_delta;
};

nlohmann::json Delta(const nlohmann::json& after, const nlohmann::json& before) {
  nlohmann::json d;
  for (const char* key : {"decode_steps", "decode_rows", "prefill_chunks", "preemptions", "graph_replays"})
    d[key] = after[key].get<int64_t>() - before[key].get<int64_t>();
  for (const char* key : {"decode_step_seconds", "prefill_seconds", "decode_busy_seconds"})
    d[key] = after[key].get<double>() - before[key].get<double>();
  d["mean_step_ms"] = d["decode_steps"].get<int64_t>() > 0
                          ? 1000 * d["decode_step_seconds"].get<double>() / d["decode_steps"].get<int64_t>()
                          : 0.0;
  d["mean_decode_batch"] = d["decode_steps"].get<int64_t>() > 0
                               ? double(d["decode_rows"].get<int64_t>()) / d["decode_steps"].get<int64_t>()
                               : 0.0;
  d["kv_utilisation"] = after["kv_utilisation"];
  d["kv_peak_used_blocks"] = after["kv_peak_used_blocks"];
  return d;
}

// Every prompt through the engine at once; the wall time from the first submission to the last
// summary. `adapters[i % adapters.size()]` names row i's adapter ("" = the plain backbone).
RunResult RunEngine(engine::Engine& engine, const std::vector<std::vector<int64_t>>& prompts,
                    const std::vector<std::string>& adapters, int new_tokens) {
  RunResult result;
  const nlohmann::json before = engine.Stats();
  std::vector<std::shared_ptr<engine::Engine::GenerateJob>> jobs(prompts.size());
  const double start = NowSeconds();
  for (size_t i = 0; i < prompts.size(); ++i) {
    engine::GenerateSettings s;
    s.prompt_ids = prompts[i];
    s.adapter = adapters[i % adapters.size()];
    s.max_new_tokens = new_tokens;
    s.ignore_eos = true;
    const engine::Status status = engine.StartGenerate(s, &jobs[i]);
    Check(status.ok(), "bench engine: request ", i, " refused: ", status.message);
  }
  result.tokens.resize(prompts.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    engine::GenerateEvent event;
    while (engine.Next(*jobs[i], &event))
      if (event.kind == engine::GenerateEvent::Kind::kToken) result.tokens[i].push_back(event.token.id);
    const engine::Status status = engine.Result(*jobs[i]);
    Check(status.ok(), "bench engine: request ", i, " failed: ", status.message);
    engine.Close(*jobs[i]);
  }
  result.seconds = NowSeconds() - start;
  result.stats_delta = Delta(engine.Stats(), before);
  return result;
}

// K LoRA adapters (rank 8 on every projection, random factors) over `backbone`, text only.
std::vector<engine::AdapterEntry> MakeAdapters(const std::string& backbone, const std::string& dir, int count,
                                               const std::string& device, const std::string& dtype) {
  std::vector<engine::AdapterEntry> out;
  adapters::SharedComponents shared;
  for (int k = 0; k < count; ++k) {
    const std::string adapter_dir = Str(dir, "/adapter", k), yaml = Str(dir, "/adapter", k, ".yaml");
    if (!std::filesystem::exists(adapter_dir + "/tasks.json")) {
      fs::AtomicWriteString(yaml, Str("model:\n  backbone: ", backbone, "\n  device: ", device, "\n  dtype: ", dtype,
                                      "\n  lora: {enabled: true, rank: 8, alpha: 16, target_modules: [q_proj, k_proj, "
                                      "v_proj, o_proj, gate_proj, up_proj, down_proj]}\n"));
      config::Document doc = config::Document::LoadFile(yaml);
      adapters::MultimodalConfig model_config;
      model_config.Load(doc.Root().Child("model"));
      adapters::MultimodalLM model(model_config, &shared);
      torch::manual_seed(100 + k);
      {
        torch::NoGradGuard no_grad;
        for (torch::Tensor& p : model->Backbone()->LoraParameters()) p.normal_(0.0, 0.02);
      }
      model->SaveAdapters(adapter_dir);
      fs::AtomicWriteString(adapter_dir + "/tasks.json", "{\"tasks\": {\"text\": \"{text}\"}}\n");
    }
    engine::AdapterEntry entry;
    entry.name = Str("lora", k);
    entry.config = yaml;
    entry.adapters = adapter_dir;
    out.push_back(entry);
  }
  return out;
}

void RunEngineBench(const EngineBenchOptions& o, int threads, bool json) {
  Report report(json);
  std::optional<ScratchDir> scratch;
  if (o.work_dir.empty()) scratch.emplace("slm-bench-engine-");
  const std::string work = o.work_dir.empty() ? scratch->path() : o.work_dir;
  fs::MakeDirs(work);
  std::string backbone;
  if (o.preset == "tinyllama") {
    backbone = WriteTinyLlamaShapes(work).backbone;
  } else {
    Check(o.preset == "tiny", "--preset must be tiny or tinyllama, got '", o.preset, "'");
    backbone = std::filesystem::absolute("samples/models/backbone_tiny").string();
  }
  engine::EngineConfig config;
  config.model_name = o.preset;
  config.backbone = backbone;
  config.device = o.device;
  config.dtype = o.dtype;
  config.threads = threads;
  config.max_batch = std::max(o.rows, 1);
  config.max_generates = 2 * std::max(o.rows, 1);
  config.max_answer_tokens = config.max_answer_tokens_limit = o.new_tokens;
  config.prefill_chunk_tokens = 512;
  config.max_wait_ms = 2;
  config.adapters = MakeAdapters(backbone, work, std::max(o.adapters, 1), o.device, o.dtype);
  torch::set_num_threads(threads);
  engine::ServedModel model(config);
  engine::Engine engine(model, config);
  const text::Tokenizer& tokenizer = model.Tokenizer();
  const int64_t vocab = model.TextVocabulary();
  report.Set("preset", o.preset);
  report.Set("device", o.device);
  report.Set("dtype", o.dtype);
  report.Set("rows", o.rows);
  report.Set("prompt_tokens", o.prompt);
  report.Set("new_tokens", o.new_tokens);

  // Random prompts of ordinary pieces, BOS first.
  std::mt19937 rng(7);
  std::vector<std::vector<int64_t>> prompts;
  while (static_cast<int>(prompts.size()) < o.rows) {
    std::vector<int64_t> ids = {tokenizer.BosId()};
    while (static_cast<int>(ids.size()) < o.prompt) {
      const int64_t id = 3 + rng() % (vocab - 3);
      if (!tokenizer.IsSpecial(id)) ids.push_back(id);
    }
    prompts.push_back(ids);
  }

  // Warm-up (allocations, CUDA graph captures of the buckets used below).
  RunEngine(engine, prompts, {""}, 4);
  RunEngine(engine, {prompts[0]}, {""}, 4);

  const RunResult batched = RunEngine(engine, prompts, {""}, o.new_tokens);
  const double tokens = double(o.rows) * o.new_tokens;
  report.Set("engine_tokens_per_second", tokens / batched.seconds);
  report.Set("engine", batched.stats_delta);
  report.Line(Str("engine: ", o.rows, " rows x ", o.new_tokens, " tokens in ", Fixed(batched.seconds, 3), " s = ",
                  Fixed(tokens / batched.seconds, 1), " tokens/s (mean decode batch ",
                  Fixed(batched.stats_delta["mean_decode_batch"].get<double>(), 1), ", step ",
                  Fixed(batched.stats_delta["mean_step_ms"].get<double>(), 2), " ms)"));

  // The library's own batched decode of the same prompts (left-padded, one cache).
  {
    text::GenerationOptions options;
    options.max_new_tokens = o.new_tokens;
    options.ignore_stop_tokens = true;
    text::GenerationResult generated;
    const double seconds = MedianSeconds(1, [&] { generated = text::Generate(model.Backbone(), prompts, options); });
    int64_t mismatches = 0;
    for (size_t i = 0; i < prompts.size(); ++i) mismatches += generated.tokens[i] != batched.tokens[i];
    report.Set("generate_batched_tokens_per_second", tokens / seconds);
    report.Set("engine_vs_generate_batched", (tokens / batched.seconds) / (tokens / seconds));
    report.Set("rows_differing_from_generate", mismatches);
    report.Line(Str("text::Generate, one padded batch: ", Fixed(tokens / seconds, 1), " tokens/s; engine ",
                    Fixed(seconds / batched.seconds, 2), "x; rows with other tokens: ", mismatches));
  }
  if (o.transformers) {
    const std::string prompts_file = work + "/bench_engine_prompts.json";
    fs::AtomicWriteString(prompts_file, nlohmann::json(prompts).dump());
    const std::string python = o.python.empty() ? std::filesystem::absolute(".venv/bin/python").string() : o.python;
    const nlohmann::json hf = RunPythonJson(
        python, "bench/generate_transformers.py",
        Str("--model ", backbone, " --prompts ", prompts_file, " --new ", o.new_tokens, " --device ", o.device,
            " --dtype ", o.dtype, " --threads ", threads, " --repeats 1"));
    if (hf.contains("tokens_per_second")) {
      const double rate = hf["tokens_per_second"].get<double>();
      report.Set("transformers_tokens_per_second", rate);
      report.Set("engine_vs_transformers", (tokens / batched.seconds) / rate);
      report.Line(Str("transformers generate, one padded batch: ", Fixed(rate, 1), " tokens/s; engine ",
                      Fixed((tokens / batched.seconds) / rate, 2), "x"));
    }
  }

  // Batch 1.
  const RunResult alone = RunEngine(engine, {prompts[0]}, {""}, o.new_tokens);
  const double step = alone.stats_delta["mean_step_ms"].get<double>() / 1000;
  report.Set("batch1_tokens_per_second", o.new_tokens / alone.seconds);
  report.Set("batch1_decode_tokens_per_second", step > 0 ? 1.0 / step : 0.0);
  if (o.bandwidth_gbs > 0 && step > 0) {
    int64_t bytes = 0;
    for (const torch::Tensor& p : model.Backbone()->parameters()) bytes += p.numel() * p.element_size();
    report.Set("batch1_roofline_fraction", bytes / step / (o.bandwidth_gbs * 1e9));
  }
  report.Line(Str("batch 1: ", Fixed(o.new_tokens / alone.seconds, 1), " tokens/s (decode step ",
                  Fixed(step * 1000, 2), " ms)"));

  // Mixed adapters at the same batch size.
  if (o.adapters >= 1) {
    const RunResult one = RunEngine(engine, prompts, {"lora0"}, o.new_tokens);
    std::vector<std::string> names;
    for (int k = 0; k < o.adapters; ++k) names.push_back(Str("lora", k));
    const RunResult mixed = RunEngine(engine, prompts, names, o.new_tokens);
    const double ratio = mixed.stats_delta["mean_step_ms"].get<double>() / one.stats_delta["mean_step_ms"].get<double>();
    report.Set("one_adapter_step_ms", one.stats_delta["mean_step_ms"]);
    report.Set("mixed_adapters_step_ms", mixed.stats_delta["mean_step_ms"]);
    report.Set("mixed_vs_one_adapter_step", ratio);
    report.Set("plain_step_ms", batched.stats_delta["mean_step_ms"]);
    report.Line(Str("decode step at ", o.rows, " rows: plain ", Fixed(batched.stats_delta["mean_step_ms"].get<double>(), 2),
                    " ms, one LoRA adapter ", Fixed(one.stats_delta["mean_step_ms"].get<double>(), 2), " ms, ",
                    o.adapters, " adapters mixed ", Fixed(mixed.stats_delta["mean_step_ms"].get<double>(), 2),
                    " ms (", Fixed(ratio, 3), "x)"));
  }
  const nlohmann::json stats = engine.Stats();
  report.Set("kv_bytes_per_token", stats["kv_bytes_per_token"]);
  report.Set("kv_blocks", stats["kv_blocks"]);
  report.Set("kv_block_size", stats["kv_block_size"]);
  report.Set("kv_peak_used_blocks", stats["kv_peak_used_blocks"]);
  report.Set("kv_utilisation_at_rows", batched.stats_delta["kv_utilisation"]);
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd = cli::Group(app, "bench", "benchmarks")
                  ->add_subcommand("engine", "the serving engine's decoder: N concurrent answers vs padded batches, "
                                             "batch 1, mixed LoRA adapters");
  auto o = std::make_shared<EngineBenchOptions>();
  cmd->add_option("--preset", o->preset, "tiny (the embedded backbone) | tinyllama (random TinyLlama-1.1B shapes)")
      ->capture_default_str();
  cmd->add_option("--device", o->device, "cpu | cuda")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "float32 | bfloat16 | float16")->capture_default_str();
  cmd->add_option("--rows", o->rows, "concurrent answers")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--prompt", o->prompt, "prompt tokens per answer")->check(CLI::Range(2, 8192))->capture_default_str();
  cmd->add_option("--new", o->new_tokens, "new tokens per answer")->check(CLI::Range(1, 8192))->capture_default_str();
  cmd->add_option("--adapters", o->adapters, "LoRA adapters mixed in the last measurement (0 = skip it)")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  cmd->add_option("--work-dir", o->work_dir, "keep models and adapters here (reused when present)");
  cmd->add_option("--python", o->python, "Python for the transformers baseline (default .venv/bin/python)");
  cmd->add_option("--bandwidth-gbs", o->bandwidth_gbs, "memory bandwidth (GB/s) for the batch-1 roofline");
  cmd->add_flag("!--no-transformers", o->transformers, "skip the transformers baseline");
  cmd->callback([o, &common] { RunEngineBench(*o, common.threads, common.json); });
});

}  // namespace
}  // namespace slm::bench
