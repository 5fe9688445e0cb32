#include "serve/serve_config.h"

#include <cstdlib>
#include <set>

namespace slm::serve {

using config::InRange;

void ServeConfig::Load(config::Node root) {
  root.Read("listen", listen).Read("drain_seconds", drain_seconds, InRange(0.0, 3600.0))
      .Read("threads", threads, InRange(1, 256));
  if (listen.find(':') == std::string::npos) root.Fail("listen", "must be host:port, e.g. 127.0.0.1:50051");

  config::Node model = root.Child("model");
  model.Read("name", model_name).Read("description", model_description).Require("backbone", backbone)
      .Read("speech_encoder", speech_encoder)
      .Read("device", device)
      .Read("dtype", dtype, config::OneOf<std::string>({"float32", "bfloat16", "float16"}));
  if (model_name.empty()) model.Fail("name", "must not be empty");
  std::set<std::string> names;
  for (config::Node a : model.List("adapters")) {
    AdapterEntry entry;
    a.Require("name", entry.name).Read("run", entry.run).Read("config", entry.config).Read("adapters", entry.adapters);
    if (entry.name.empty()) a.Fail("name", "must not be empty");
    if (!names.insert(entry.name).second) a.Fail("name", "adapter '" + entry.name + "' is listed twice");
    if (entry.run.empty() && (entry.config.empty() || entry.adapters.empty()))
      a.Fail("run", "give `run` (a training run directory) or both `config` and `adapters`");
    if (!entry.run.empty()) {
      if (entry.config.empty()) entry.config = entry.run + "/config.yaml";
      if (entry.adapters.empty()) entry.adapters = entry.run + "/adapters";
    }
    if (a.Has("tasks")) {
      config::Node tasks = a.Child("tasks");
      for (const std::string& task : tasks.Keys()) {
        std::string prompt;
        tasks.Require(task, prompt);
        entry.tasks[task] = prompt;
      }
    }
    adapters.push_back(entry);
  }

  config::Node limits = root.Child("limits");
  limits.Read("max_streams", max_streams, InRange(1, 100000))
      .Read("max_message_bytes", max_message_bytes, InRange<int64_t>(1024, int64_t{1} << 30))
      .Read("max_chunk_bytes", max_chunk_bytes, InRange<int64_t>(64, int64_t{1} << 30))
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
  root.Child("batching").Read("max_batch", max_batch, InRange(1, 4096)).Read("max_wait_ms", max_wait_ms, InRange(0, 10000));

  config::Node auth = root.Child("auth");
  std::string token_env;
  auth.Read("token", auth_token).Read("token_env", token_env);
  if (!token_env.empty()) {
    if (!auth_token.empty()) auth.Fail("token_env", "give token or token_env, not both");
    const char* value = std::getenv(token_env.c_str());
    if (value == nullptr || *value == '\0') auth.Fail("token_env", "environment variable " + token_env + " is not set");
    auth_token = value;
  }
  config::Node tls = root.Child("tls");
  tls.Read("cert", tls_cert).Read("key", tls_key);
  if (tls_cert.empty() != tls_key.empty()) tls.Fail(tls_cert.empty() ? "cert" : "key", "give both cert and key");
}

}  // namespace slm::serve
