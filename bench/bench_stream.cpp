// slm bench stream: load test of the streaming server over loopback. N concurrent clients each
// stream espeak-ng questions (16 kHz LINEAR16, 160 ms chunks) in real time, one Converse stream
// per utterance, back to back, for --duration seconds; interim transcripts on.
//
// Latencies follow the Riva client's method (serve/client.h): interim = its arrival minus the send
// time of the chunk holding the end of the audio it covers; final = its arrival minus the send time
// of the last chunk; answer first token (task respond) likewise. p50/p99 over every event of the
// level. A level "keeps up with real time" when interim p99 <= 200 ms, final p99 <= 300 ms, and no
// stream failed or was rejected.
//
// Baseline in the same run: the 1-stream level always runs first. With the server in process
// (the default; --server targets an external one) the engine's busy time gives the compute RTF
// (busy seconds / audio seconds) of each level, and cost_vs_one_stream = compute RTF at N / compute
// RTF at 1 = (compute of N streams) / (N x compute of one stream): below 1 when batching makes N
// streams cheaper than N separate ones.
//
// --sweep runs N = 1, 2, 4, 8, ... up to --max-streams and stops after the first level that does
// not keep up; it reports the largest N that kept up and the throughput at each N.
// --preset tinyllama serves a TinyLlama-1.1B-shaped backbone and a whisper-base-shaped encoder with
// random weights (bench/bench_models.h) and a fresh MLP spoken-QA adapter: the GPU goal's shapes.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "adapters/multimodal.h"
#include "audio/espeak_synth.h"
#include "bench/bench_models.h"
#include "bench/bench_serve_config.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json_report.h"
#include "core/strings.h"
#include "serve/client.h"
#include "engine/engine.h"
#include "serve/server.h"

namespace slm::bench {
namespace {

namespace v1 = slm::v1;
using Clock = std::chrono::steady_clock;

struct StreamBenchOptions {
  std::string config = "samples/configs/serve.yaml";
  std::vector<std::string> overrides;
  std::string server;  // external server; empty = start one in process
  std::string token;
  int streams = 8;
  bool sweep = false;
  int max_streams = 64;
  double duration = 10;
  double chunk_ms = 160;
  std::string task = "transcribe";
  std::string preset = "tiny";  // tiny (the config) | tinyllama
  std::string device = "cpu";
  std::string dtype = "float32";
  std::string work_dir;
  int clips = 8;
};

// Questions of the spoken-QA domain, spoken by different voices.
const char* const kQuestions[] = {"what is a dog",         "what is water",         "what is a psychological feature",
                                  "what is an achievement", "what is absolute space", "what is a tree",
                                  "what is a musical instrument", "what is the act of digging"};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(std::ceil(p / 100.0 * values.size())) - (p > 0));
  return values[index];
}

struct Level {
  int streams = 0;
  int utterances = 0;
  int errors = 0;
  int rejected = 0;
  std::string first_error;
  std::vector<double> interim, final, first_token;
  double audio_seconds = 0, wall_seconds = 0;
  double busy_seconds = -1;  // in-process server only
  nlohmann::json engine;
  bool KeepsUp() const {
    return errors == 0 && rejected == 0 && Percentile(interim, 99) <= 200 && Percentile(final, 99) <= 300 &&
           !final.empty();
  }
  double ComputeRtf() const { return busy_seconds < 0 || audio_seconds <= 0 ? -1 : busy_seconds / audio_seconds; }
  nlohmann::json ToJson() const {
    nlohmann::json j = {{"streams", streams},
                        {"utterances", utterances},
                        {"audio_seconds", audio_seconds},
                        {"wall_seconds", wall_seconds},
                        {"throughput_x_realtime", wall_seconds > 0 ? audio_seconds / wall_seconds : 0.0},
                        {"interim_p50_ms", Percentile(interim, 50)},
                        {"interim_p99_ms", Percentile(interim, 99)},
                        {"interims", interim.size()},
                        {"final_p50_ms", Percentile(final, 50)},
                        {"final_p99_ms", Percentile(final, 99)},
                        {"errors", errors},
                        {"rejected", rejected},
                        {"keeps_up", KeepsUp()}};
    if (!first_token.empty()) {
      j["first_token_p50_ms"] = Percentile(first_token, 50);
      j["first_token_p99_ms"] = Percentile(first_token, 99);
    }
    if (busy_seconds >= 0) j["compute_rtf"] = ComputeRtf();
    if (!first_error.empty()) j["first_error"] = first_error;
    if (!engine.is_null()) j["engine"] = engine;
    return j;
  }
};

nlohmann::json Delta(const nlohmann::json& after, const nlohmann::json& before) {
  nlohmann::json d;
  for (const char* key : {"encode_batches", "encode_rows", "prefill_chunks", "prefill_tokens", "decode_steps", "decode_rows",
                          "preemptions"})
    d[key] = after[key].get<int64_t>() - before[key].get<int64_t>();
  d["mean_encode_batch"] = d["encode_batches"].get<int64_t>() ? double(d["encode_rows"].get<int64_t>()) / d["encode_batches"].get<int64_t>() : 0.0;
  d["mean_decode_batch"] = d["decode_steps"].get<int64_t>() ? double(d["decode_rows"].get<int64_t>()) / d["decode_steps"].get<int64_t>() : 0.0;
  return d;
}

Level RunLevel(const std::shared_ptr<grpc::Channel>& channel, const serve::ChannelOptions& channel_options, const StreamBenchOptions& o,
               const std::vector<std::vector<float>>& clips, int n, engine::Engine* engine) {
  Level level;
  level.streams = n;
  std::mutex mutex;
  const nlohmann::json before = engine ? engine->Stats() : nlohmann::json();
  const Clock::time_point start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration));
  std::vector<std::thread> clients;
  for (int i = 0; i < n; ++i)
    clients.emplace_back([&, i] {
      // Staggered starts, as independent users would arrive.
      std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(o.chunk_ms * i / std::max(1, n))));
      for (int k = 0; Clock::now() < end; ++k) {
        serve::StreamRequest request;
        request.samples = clips[(i * 3 + k) % clips.size()];
        request.sample_rate = 16000;
        request.chunk_ms = o.chunk_ms;
        request.realtime = true;
        request.config.set_task(o.task == "respond" ? v1::RESPOND : v1::TRANSCRIBE);
        request.config.set_interim_results(true);
        request.config.set_endpointing_silence_ms(-1);
        request.config.set_request_id("bench-" + std::to_string(i) + "-" + std::to_string(k));
        const serve::StreamResult r = serve::StreamAudio(channel, channel_options, request);
        std::lock_guard<std::mutex> lock(mutex);
        level.utterances += 1;
        if (!r.status.ok()) {
          if (r.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) level.rejected += 1;
          else level.errors += 1;
          if (level.first_error.empty()) level.first_error = r.status.error_message();
          continue;
        }
        level.audio_seconds += r.audio_seconds;
        level.interim.insert(level.interim.end(), r.interim_latency_ms.begin(), r.interim_latency_ms.end());
        if (r.final_latency_ms >= 0) level.final.push_back(r.final_latency_ms);
        if (r.first_token_latency_ms >= 0) level.first_token.push_back(r.first_token_latency_ms);
      }
    });
  for (auto& t : clients) t.join();
  level.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (engine) {
    const nlohmann::json after = engine->Stats();
    level.busy_seconds = after["busy_seconds"].get<double>() - before["busy_seconds"].get<double>();
    level.engine = Delta(after, before);
  }
  return level;
}

// The tinyllama preset's server: random TinyLlama/whisper-base shapes and a fresh MLP adapter.
serve::ServeConfig TinyLlamaServer(const StreamBenchOptions& o, const std::string& work_dir) {
  const TinyLlamaShapes shapes = WriteTinyLlamaShapes(work_dir);
  const std::string adapter_dir = work_dir + "/sqa_adapter", adapter_yaml = work_dir + "/sqa_adapter.yaml";
  if (!std::filesystem::exists(adapter_dir + "/tasks.json")) {
    fs::AtomicWriteString(adapter_yaml, "model:\n  backbone: " + shapes.backbone + "\n  speech:\n    encoder: " +
                                            shapes.encoder_stream + "\n    projector: {type: mlp, hidden_dim: 0}\n");
    config::Document doc = config::Document::LoadFile(adapter_yaml);
    adapters::MultimodalConfig model_config;
    model_config.Load(doc.Root().Child("model"));
    adapters::MultimodalLM(model_config)->SaveAdapters(adapter_dir);
    fs::AtomicWriteString(adapter_dir + "/tasks.json", "{\"tasks\": {\"sqa\": \"<speech> Answer:\"}}\n");
  }
  serve::ServeConfig c;
  c.model_name = "tinyllama-shapes";
  c.backbone = shapes.backbone;
  c.speech_encoder = shapes.encoder_stream;  // transcripts encoded incrementally
  c.device = o.device;
  c.dtype = o.dtype;
  serve::AdapterEntry adapter;
  adapter.name = "sqa";
  adapter.config = adapter_yaml;
  adapter.adapters = adapter_dir;
  c.adapters.push_back(adapter);
  return c;
}

void RunStreamBench(const StreamBenchOptions& o, bool json) {
  Report report(json);
  std::optional<ScratchDir> scratch;
  std::unique_ptr<serve::Server> server;
  serve::ChannelOptions channel_options;
  channel_options.token = o.token;
  const int top = o.sweep ? o.max_streams : o.streams;
  if (o.server.empty()) {
    serve::ServeConfig config;
    if (o.preset == "tinyllama") {
      if (o.work_dir.empty()) scratch.emplace("slm-bench-stream-");
      config = TinyLlamaServer(o, o.work_dir.empty() ? scratch->path() : o.work_dir);
    } else {
      Check(o.preset == "tiny", "--preset must be tiny or tinyllama, got '", o.preset, "'");
      config = LoadServeConfig(o.config, o.overrides);
    }
    config.listen = "127.0.0.1:0";
    config.http.listen.clear();  // gRPC only (slm bench http compares the two)
    config.max_streams = std::max(config.max_streams, 2 * top);
    config.auth_token = o.token;
    server = std::make_unique<serve::Server>(config);
    server->Load();
    channel_options.server = server->Address();
    report.Set("server", "in process (" + o.preset + ", " + o.device + ", " + o.dtype + ", threads " +
                             std::to_string(config.threads) + ")");
  } else {
    channel_options.server = o.server;
    report.Set("server", o.server);
  }
  auto channel = serve::MakeChannel(channel_options);
  std::vector<std::vector<float>> clips;
  const auto& voices = audio::AvailableEnglishVoices();
  for (int i = 0; i < o.clips; ++i) {
    audio::VoiceSpec voice = audio::VoiceForSeed(1000 + i, voices);
    clips.push_back(audio::EspeakSynthesizer::Instance().Synthesize(kQuestions[i % 8], voice).samples);
  }
  engine::Engine* engine = server ? server->GetEngine() : nullptr;
  {
    // Warm-up (not measured): first calls allocate and initialise; the 1-stream baseline must not
    // pay for that.
    serve::StreamRequest warm;
    warm.samples = clips[0];
    warm.realtime = false;
    warm.config.set_task(o.task == "respond" ? v1::RESPOND : v1::TRANSCRIBE);
    warm.config.set_interim_results(true);
    for (int i = 0; i < 2; ++i) serve::StreamAudio(channel, channel_options, warm);
  }
  report.Set("task", o.task);
  report.Set("chunk_ms", o.chunk_ms);
  report.Set("duration_seconds_per_level", o.duration);

  std::vector<int> ns = {1};
  if (o.sweep) {
    for (int n = 2; n <= o.max_streams; n *= 2) ns.push_back(n);
  } else if (o.streams != 1) {
    ns.push_back(o.streams);
  }
  std::vector<Level> levels;
  int largest = 0;
  for (int n : ns) {
    const Level level = RunLevel(channel, channel_options, o, clips, n, engine);
    levels.push_back(level);
    report.Line(Str("streams ", n, ": interim p50 ", Fixed(Percentile(level.interim, 50)), " ms p99 ",
                    Fixed(Percentile(level.interim, 99)), " ms, final p50 ", Fixed(Percentile(level.final, 50)),
                    " ms p99 ", Fixed(Percentile(level.final, 99)), " ms, ",
                    Fixed(level.audio_seconds / std::max(1e-9, level.wall_seconds), 2), "x real time, compute RTF ",
                    Fixed(level.ComputeRtf(), 3), ", errors ", level.errors, ", rejected ", level.rejected,
                    level.KeepsUp() ? ", keeps up" : ", FALLS BEHIND"));
    if (level.KeepsUp()) largest = std::max(largest, n);
    if (o.sweep && !level.KeepsUp()) break;
  }
  nlohmann::json table = nlohmann::json::array();
  const double rtf1 = levels[0].ComputeRtf();
  for (const Level& level : levels) {
    nlohmann::json j = level.ToJson();
    if (rtf1 > 0 && level.ComputeRtf() > 0)
      j["cost_vs_one_stream"] = level.ComputeRtf() / rtf1;
    table.push_back(j);
  }
  report.Set("levels", table);
  report.Set("largest_streams_keeping_up", largest);
  const Level& last = levels.back();
  report.Set("streams", last.streams);
  report.Set("interim_p50_ms", Percentile(last.interim, 50));
  report.Set("interim_p99_ms", Percentile(last.interim, 99));
  report.Set("final_p50_ms", Percentile(last.final, 50));
  report.Set("final_p99_ms", Percentile(last.final, 99));
  if (!last.first_token.empty()) {
    report.Set("first_token_p50_ms", Percentile(last.first_token, 50));
    report.Set("first_token_p99_ms", Percentile(last.first_token, 99));
  }
  report.Set("keeps_up", last.KeepsUp());
  if (rtf1 > 0 && last.ComputeRtf() > 0) report.Set("cost_vs_one_stream", last.ComputeRtf() / rtf1);
  report.Emit();
  if (server) server->Drain(2);
}

cli::Registrar reg([](CLI::App& app, cli::Common& common) {
  auto* cmd = cli::Group(app, "bench", "benchmarks")
                  ->add_subcommand("stream", "load-test the streaming server: N real-time clients over loopback");
  auto o = std::make_shared<StreamBenchOptions>();
  cmd->add_option("--config", o->config, "server config for the in-process server")->capture_default_str();
  cmd->add_option("--set", o->overrides, "override a server config key");
  cmd->add_option("--server", o->server, "benchmark this running server instead (host:port)");
  cmd->add_option("--token", o->token, "bearer token");
  cmd->add_option("--streams", o->streams, "concurrent streams")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_flag("--sweep", o->sweep, "N = 1, 2, 4, ... up to --max-streams, until real time is lost");
  cmd->add_option("--max-streams", o->max_streams, "sweep limit")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--duration", o->duration, "seconds per level")->check(CLI::Range(1.0, 3600.0))->capture_default_str();
  cmd->add_option("--chunk-ms", o->chunk_ms, "audio per message")->check(CLI::Range(10.0, 2000.0))->capture_default_str();
  cmd->add_option("--task", o->task, "transcribe | respond")->check(CLI::IsMember({"transcribe", "respond"}));
  cmd->add_option("--preset", o->preset, "tiny (the config's models) | tinyllama (random TinyLlama/whisper-base shapes)");
  cmd->add_option("--device", o->device, "tinyllama preset: cpu | cuda");
  cmd->add_option("--dtype", o->dtype, "tinyllama preset: float32 | bfloat16 | float16");
  cmd->add_option("--work-dir", o->work_dir, "keep tinyllama's random weights here (reused when present)");
  cmd->add_option("--clips", o->clips, "distinct utterances")->check(CLI::Range(1, 64));
  cmd->callback([o, &common] { RunStreamBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
