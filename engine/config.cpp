#include "engine/config.h"

#include <filesystem>
#include <set>

namespace slm::engine {

using config::InRange;

void AdapterEntry::Load(config::Node a) {
  a.Require("name", name).Read("run", run).Read("config", config).Read("adapters", adapters);
  if (name.empty()) a.Fail("name", "must not be empty");
  const bool prompt_only = run.empty() && config.empty() && adapters.empty();
  if (!prompt_only && run.empty() && (config.empty() || adapters.empty()))
    a.Fail("run", "give `run` (a training run directory) or both `config` and `adapters`");
  if (prompt_only && !a.Has("tasks"))
    a.Fail("run", "give `run` (a training run directory), both `config` and `adapters`, or `tasks` alone for the "
                  "frozen backbone with prompt templates");
  if (!run.empty()) {
    if (config.empty()) config = run + "/config.yaml";
    if (adapters.empty()) adapters = run + "/adapters";
  }
  if (a.Has("tasks")) {
    config::Node node = a.Child("tasks");
    for (const std::string& task : node.Keys()) {
      std::string prompt;
      node.Require(task, prompt);
      if (prompt_only && (prompt.find("<speech>") != std::string::npos || prompt.find("<image>") != std::string::npos))
        node.Fail(task, "a prompt-only adapter (no `run`) has no trained speech or image input; use \"{transcript}\" "
                        "for spoken questions");
      tasks[task] = prompt;
    }
  }
}

void SpeechLmConfig::Load(config::Node node) {
  node.Require("path", path)
      .Read("beam", beam, InRange(1, 4096))
      .Read("lm_weight", lm_weight, InRange(0.0, 100.0))
      .Read("word_bonus", word_bonus, InRange(-100.0, 100.0))
      .Read("char_threshold", char_threshold, InRange(-1000.0, 0.0))
      .Read("interim", interim);
  if (!std::filesystem::exists(path)) node.Fail("path", "word LM '" + path + "' does not exist");
}

void EngineConfig::Load(config::Node root) {
  root.Read("threads", threads, InRange(1, 256));
  config::Node model = root.Child("model");
  model.Read("name", model_name).Read("description", model_description).Require("backbone", backbone)
      .Read("speech_encoder", speech_encoder)
      .Read("device", device)
      .Read("dtype", dtype, config::OneOf<std::string>({"float32", "bfloat16", "float16"}));
  if (model_name.empty()) model.Fail("name", "must not be empty");
  std::set<std::string> names;
  for (config::Node a : model.List("adapters")) {
    AdapterEntry entry;
    entry.Load(a);
    if (!names.insert(entry.name).second) a.Fail("name", "adapter '" + entry.name + "' is listed twice");
    adapters.push_back(entry);
  }
  if (model.Has("speech_lm")) {
    if (speech_encoder.empty()) model.Fail("speech_lm", "needs model.speech_encoder (its CTC head is what it decodes)");
    speech_lm.Load(model.Child("speech_lm"));
  }

  config::Node limits = root.Child("limits");
  limits.Read("max_streams", max_streams, InRange(1, 100000))
      .Read("max_generates", max_generates, InRange(1, 100000))
      .Read("max_transcribes", max_transcribes, InRange(1, 100000))
      .Read("max_syntheses", max_syntheses, InRange(1, 100000))
      .Read("max_utterance_seconds", max_utterance_seconds, InRange(0.5, 600.0))
      .Read("max_file_seconds", max_file_seconds, InRange(0.5, 3600.0))
      .Read("max_synthesis_characters", max_synthesis_characters, InRange<int64_t>(1, 1000000))
      .Read("max_answer_tokens", max_answer_tokens, InRange(1, 100000))
      .Read("max_answer_tokens_limit", max_answer_tokens_limit, InRange(1, 100000));
  if (max_answer_tokens > max_answer_tokens_limit)
    limits.Fail("max_answer_tokens", "is above max_answer_tokens_limit");

  root.Child("streaming")
      .Read("endpointing_silence_ms", endpointing_silence_ms, InRange(0, 60000))
      .Read("speech_threshold_dbfs", speech_threshold_dbfs, InRange(-120.0, 0.0))
      .Read("interim_interval_ms", interim_interval_ms, InRange(20, 60000));
  root.Child("batching")
      .Read("max_batch", max_batch, InRange(1, 4096))
      .Read("max_wait_ms", max_wait_ms, InRange(0, 10000))
      .Read("prefill_chunk_tokens", prefill_chunk_tokens, InRange(1, 1 << 20))
      .Read("queue_timeout_seconds", queue_timeout_seconds, InRange(0.0, 3600.0));
  root.Child("kv_cache")
      .Read("block_size", kv_block_size, InRange(1, 4096))
      .Read("tokens", kv_tokens, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("memory_fraction", kv_memory_fraction, InRange(0.01, 0.99))
      .Read("cuda_graphs", cuda_graphs);
  root.Child("adapters")
      .Read("max_loaded", max_loaded_adapters, InRange(1, 1024))
      .Read("max_lora_rank", max_lora_rank, InRange(0, 4096));
}

}  // namespace slm::engine
