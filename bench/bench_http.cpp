// slm bench http: the HTTP front-end against the gRPC one on the same engine, in the same run
// (docs/BENCHMARKS.md). One server in process serves both on loopback:
//
//  1. transcription throughput: C clients each send the same files back to back for --duration
//     seconds, over gRPC Transcribe and over POST /v1/audio/transcriptions (multipart), in
//     alternating rounds so that drift of the shared machine hits both alike; requests/s and
//     latency percentiles per API, and HTTP's overhead = 1 - HTTP req/s / gRPC req/s;
//  2. chat first-token latency: --requests sequential text questions over gRPC Generate (streamed)
//     and POST /v1/chat/completions with stream=true, same prompt and settings, alternating; the
//     client-side first-token latency's p50 and HTTP's overhead = HTTP p50 / gRPC p50 - 1;
//  3. realtime streams: N clients each streaming questions at real time in --chunk-ms pieces, one
//     stream per question, over gRPC Converse and over the /v1/realtime WebSocket, interim
//     transcripts on; interim / final latency percentiles (serve/client.h's method) and whether
//     the level keeps up (interim p99 <= 200 ms, final p99 <= 300 ms, no errors).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "audio/espeak_synth.h"
#include "bench/bench_serve_config.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/config.h"
#include "core/error.h"
#include "core/json_report.h"
#include "core/strings.h"
#include "http/audio_codec.h"
#include "http/client.h"
#include "serve/client.h"
#include "serve/server.h"

namespace slm::bench {
namespace {

namespace v1 = slm::v1;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct HttpBenchOptions {
  std::string config = "samples/configs/serve.yaml";
  std::vector<std::string> overrides;
  std::vector<int> clients = {1, 4};
  double duration = 10;
  int rounds = 2;
  int requests = 40;
  std::vector<int> streams = {1, 8, 16};
  double stream_seconds = 10;
  double chunk_ms = 20;
  std::string parts = "transcribe,chat,realtime";
};

const char* const kQuestions[] = {"what is a dog", "what is water", "what is a tree", "what is a musical instrument"};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(std::ceil(p / 100.0 * values.size())) - (p > 0));
  return values[index];
}

double Seconds(Clock::time_point from) { return std::chrono::duration<double>(Clock::now() - from).count(); }

struct Tally {
  int64_t requests = 0, errors = 0;
  double seconds = 0;
  std::vector<double> latency_ms;
  std::string first_error;
  double Rate() const { return seconds > 0 ? requests / seconds : 0; }
  json ToJson() const {
    return {{"requests", requests}, {"errors", errors}, {"requests_per_second", Rate()},
            {"latency_p50_ms", Percentile(latency_ms, 50)}, {"latency_p99_ms", Percentile(latency_ms, 99)}};
  }
};

// `clients` threads call `one(thread)` (true = success) until `seconds` pass.
void Load(int clients, double seconds, Tally& tally, const std::function<bool(int)>& one) {
  std::mutex mutex;
  const Clock::time_point start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&, t] {
      while (Clock::now() < end) {
        const Clock::time_point begin = Clock::now();
        bool ok = false;
        std::string error;
        try {
          ok = one(t);
        } catch (const std::exception& e) {
          error = e.what();
        }
        const double ms = Seconds(begin) * 1000;
        std::lock_guard<std::mutex> lock(mutex);
        if (ok) {
          tally.requests += 1;
          tally.latency_ms.push_back(ms);
        } else {
          tally.errors += 1;
          if (tally.first_error.empty()) tally.first_error = error.empty() ? "failed" : error;
        }
      }
    });
  for (auto& t : threads) t.join();
  tally.seconds += Seconds(start);
}

json TranscribeBench(const HttpBenchOptions& o, serve::Server& server, const std::vector<std::string>& files, Report& report) {
  json levels = json::array();
  auto channel = grpc::CreateChannel(server.Address(), grpc::InsecureChannelCredentials());
  for (int clients : o.clients) {
    Tally grpc_tally, http_tally;
    std::vector<std::unique_ptr<v1::Speech::Stub>> stubs;
    std::vector<std::unique_ptr<http::HttpClient>> https;
    for (int i = 0; i < clients; ++i) {
      stubs.push_back(v1::Speech::NewStub(channel));
      https.push_back(std::make_unique<http::HttpClient>(server.HttpAddress()));
    }
    // Each body has a boundary of its own, named by its own Content-Type.
    std::vector<std::string> bodies(files.size()), content_types(files.size());
    for (size_t i = 0; i < files.size(); ++i)
      bodies[i] = http::MultipartBody({{"file", files[i], "q.wav", "audio/wav"}, {"model", "", "", ""}}, &content_types[i]);
    std::vector<int> turn(clients, 0);
    for (int round = 0; round < o.rounds; ++round) {
      Load(clients, o.duration / o.rounds, grpc_tally, [&](int t) {
        grpc::ClientContext context;
        v1::TranscribeRequest request;
        request.set_audio(files[turn[t]++ % files.size()]);
        v1::TranscribeResponse response;
        return stubs[t]->Transcribe(&context, request, &response).ok() && !response.transcript().text().empty();
      });
      Load(clients, o.duration / o.rounds, http_tally, [&](int t) {
        const size_t i = turn[t]++ % bodies.size();
        const http::ClientResponse r = https[t]->Request("POST", "/v1/audio/transcriptions", bodies[i],
                                                         {{"Content-Type", content_types[i]}});
        Check(r.status == 200, "HTTP ", r.status, ": ", r.body.substr(0, 200));
        return !json::parse(r.body)["text"].get<std::string>().empty();  // as the gRPC side checks
      });
    }
    const double overhead = grpc_tally.Rate() > 0 ? 1 - http_tally.Rate() / grpc_tally.Rate() : 0;
    report.Line(Str("transcribe, ", clients, " clients: gRPC ", Fixed(grpc_tally.Rate(), 1), " req/s (p50 ",
                    Fixed(Percentile(grpc_tally.latency_ms, 50)), " ms), HTTP ", Fixed(http_tally.Rate(), 1), " req/s (p50 ",
                    Fixed(Percentile(http_tally.latency_ms, 50)), " ms): HTTP overhead ", Fixed(100 * overhead, 1), "%",
                    grpc_tally.errors + http_tally.errors ? Str(", errors ", grpc_tally.errors, "/", http_tally.errors) : ""));
    json level = {{"clients", clients}, {"grpc", grpc_tally.ToJson()}, {"http", http_tally.ToJson()},
                  {"http_over_grpc_rate", grpc_tally.Rate() > 0 ? http_tally.Rate() / grpc_tally.Rate() : 0.0},
                  {"http_overhead", overhead}};
    if (!http_tally.first_error.empty()) level["http"]["first_error"] = http_tally.first_error;
    if (!grpc_tally.first_error.empty()) level["grpc"]["first_error"] = grpc_tally.first_error;
    levels.push_back(level);
  }
  return levels;
}

json ChatBench(const HttpBenchOptions& o, serve::Server& server, Report& report) {
  auto stub = v1::Speech::NewStub(grpc::CreateChannel(server.Address(), grpc::InsecureChannelCredentials()));
  http::HttpClient client(server.HttpAddress());
  // A prompt the plain backbone continues (a question can end at once with end-of-text, which
  // would leave no first token to time).
  const std::string prompt = "a dog is";
  const int max_tokens = 8;
  std::vector<double> grpc_first, http_first, grpc_total, http_total;
  const std::string body = json{{"model", server.GetEngine()->Model().Name()}, {"max_tokens", max_tokens}, {"stream", true},
                                {"messages", {{{"role", "user"}, {"content", prompt}}}}}
                               .dump();
  for (int i = 0; i < o.requests + 2; ++i) {
    const bool measured = i >= 2;  // two warm-up requests each
    {
      grpc::ClientContext context;
      v1::GenerateRequest request;
      request.set_prompt(prompt);
      request.set_max_new_tokens(max_tokens);
      const Clock::time_point start = Clock::now();
      auto reader = stub->Generate(&context, request);
      v1::GenerateResponse response;
      double first = -1;
      while (reader->Read(&response))
        if (response.has_token() && first < 0 && !response.token().text().empty()) first = Seconds(start) * 1000;
      Check(reader->Finish().ok(), "gRPC Generate failed");
      Check(first >= 0, "gRPC Generate answered no token to time");
      if (measured) {
        grpc_first.push_back(first);
        grpc_total.push_back(Seconds(start) * 1000);
      }
    }
    {
      const Clock::time_point start = Clock::now();
      double first = -1;
      http::SseReader sse;
      const http::ClientResponse r = client.Stream("POST", "/v1/chat/completions", body, {{"Content-Type", "application/json"}},
                                                   [&](std::string_view piece) {
                                                     for (const std::string& data : sse.Feed(piece)) {
                                                       if (first >= 0 || data == "[DONE]") continue;
                                                       const json chunk = json::parse(data);
                                                       if (!chunk["choices"].empty() && chunk["choices"][0]["delta"].contains("content") &&
                                                           !chunk["choices"][0]["delta"]["content"].get<std::string>().empty())
                                                         first = Seconds(start) * 1000;
                                                     }
                                                     return true;
                                                   });
      Check(r.status == 200, "HTTP chat completion failed with ", r.status);
      Check(first >= 0, "the HTTP chat completion streamed no token to time");
      if (measured) {
        http_first.push_back(first);
        http_total.push_back(Seconds(start) * 1000);
      }
    }
  }
  const double g = Percentile(grpc_first, 50), h = Percentile(http_first, 50);
  report.Line(Str("chat first token, sequential: gRPC p50 ", Fixed(g, 2), " ms p99 ", Fixed(Percentile(grpc_first, 99), 2),
                  " ms; HTTP p50 ", Fixed(h, 2), " ms p99 ", Fixed(Percentile(http_first, 99), 2), " ms: HTTP overhead ",
                  Fixed(100 * (h / g - 1), 1), "% (", Fixed(h - g, 2), " ms)"));
  return {{"requests", o.requests},
          {"max_tokens", max_tokens},
          {"grpc", {{"first_token_p50_ms", g}, {"first_token_p99_ms", Percentile(grpc_first, 99)}, {"total_p50_ms", Percentile(grpc_total, 50)}}},
          {"http", {{"first_token_p50_ms", h}, {"first_token_p99_ms", Percentile(http_first, 99)}, {"total_p50_ms", Percentile(http_total, 50)}}},
          {"http_overhead", g > 0 ? h / g - 1 : 0.0},
          {"http_extra_ms", h - g}};
}

struct StreamLevel {
  int utterances = 0, errors = 0;
  std::string first_error;
  std::vector<double> interim, final;
  double audio_seconds = 0, seconds = 0;
  bool KeepsUp() const {
    return errors == 0 && !final.empty() && Percentile(interim, 99) <= 200 && Percentile(final, 99) <= 300;
  }
  json ToJson() const {
    json j = {{"utterances", utterances},  {"errors", errors},
              {"interim_p50_ms", Percentile(interim, 50)}, {"interim_p99_ms", Percentile(interim, 99)},
              {"final_p50_ms", Percentile(final, 50)},     {"final_p99_ms", Percentile(final, 99)},
              {"x_real_time", seconds > 0 ? audio_seconds / seconds : 0.0}, {"keeps_up", KeepsUp()}};
    if (!first_error.empty()) j["first_error"] = first_error;
    return j;
  }
};

StreamLevel StreamLoad(int n, double seconds, const std::vector<std::vector<float>>& clips,
                       const std::function<void(int, const std::vector<float>&, StreamLevel&, std::mutex&)>& one) {
  StreamLevel level;
  std::mutex mutex;
  const Clock::time_point start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      std::this_thread::sleep_for(std::chrono::milliseconds(160 * i / std::max(1, n)));
      for (int k = 0; Clock::now() < end; ++k) one(i, clips[(i * 3 + k) % clips.size()], level, mutex);
    });
  for (auto& t : threads) t.join();
  level.seconds = Seconds(start);
  return level;
}

json RealtimeBench(const HttpBenchOptions& o, serve::Server& server, const std::vector<std::vector<float>>& clips, Report& report) {
  auto channel = grpc::CreateChannel(server.Address(), grpc::InsecureChannelCredentials());
  serve::ChannelOptions channel_options;
  channel_options.server = server.Address();
  json levels = json::array();
  int grpc_largest = 0, http_largest = 0;
  for (int n : o.streams) {
    const StreamLevel grpc = StreamLoad(n, o.stream_seconds, clips, [&](int i, const std::vector<float>& clip, StreamLevel& level,
                                                                        std::mutex& mutex) {
      serve::StreamRequest request;
      request.samples = clip;
      request.chunk_ms = o.chunk_ms;
      request.realtime = true;
      request.config.set_task(v1::TRANSCRIBE);
      request.config.set_interim_results(true);
      request.config.set_endpointing_silence_ms(-1);
      const serve::StreamResult r = serve::StreamAudio(channel, channel_options, request);
      std::lock_guard<std::mutex> lock(mutex);
      level.utterances += 1;
      if (!r.status.ok()) {
        level.errors += 1;
        if (level.first_error.empty()) level.first_error = r.status.error_message();
        return;
      }
      level.audio_seconds += r.audio_seconds;
      level.interim.insert(level.interim.end(), r.interim_latency_ms.begin(), r.interim_latency_ms.end());
      if (r.final_latency_ms >= 0) level.final.push_back(r.final_latency_ms);
    });
    const StreamLevel ws = StreamLoad(n, o.stream_seconds, clips, [&](int i, const std::vector<float>& clip, StreamLevel& level,
                                                                      std::mutex& mutex) {
      http::RealtimeRequest request;
      request.samples = clip;
      request.chunk_ms = o.chunk_ms;
      request.session_json = R"({"type": "transcription", "audio": {"input": {"turn_detection": null}}})";
      const http::RealtimeResult r = http::StreamRealtime(server.HttpAddress(), request);
      std::lock_guard<std::mutex> lock(mutex);
      level.utterances += 1;
      if (!r.ok) {
        level.errors += 1;
        if (level.first_error.empty()) level.first_error = r.error;
        return;
      }
      level.audio_seconds += r.audio_seconds;
      level.interim.insert(level.interim.end(), r.interim_latency_ms.begin(), r.interim_latency_ms.end());
      if (r.final_latency_ms >= 0) level.final.push_back(r.final_latency_ms);
    });
    report.Line(Str("realtime, ", n, " streams: gRPC Converse interim p99 ", Fixed(Percentile(grpc.interim, 99)), " ms, final p99 ",
                    Fixed(Percentile(grpc.final, 99)), " ms", grpc.KeepsUp() ? "" : " (FALLS BEHIND)",
                    "; WebSocket interim p99 ", Fixed(Percentile(ws.interim, 99)), " ms, final p99 ",
                    Fixed(Percentile(ws.final, 99)), " ms", ws.KeepsUp() ? "" : " (FALLS BEHIND)"));
    if (grpc.KeepsUp()) grpc_largest = std::max(grpc_largest, n);
    if (ws.KeepsUp()) http_largest = std::max(http_largest, n);
    levels.push_back({{"streams", n}, {"grpc", grpc.ToJson()}, {"websocket", ws.ToJson()}});
  }
  return {{"chunk_ms", o.chunk_ms},
          {"levels", levels},
          {"grpc_largest_keeping_up", grpc_largest},
          {"websocket_largest_keeping_up", http_largest}};
}

void RunHttpBench(const HttpBenchOptions& o, bool json_output) {
  Report report(json_output);
  serve::ServeConfig config = LoadServeConfig(o.config, o.overrides);
  config.listen = "127.0.0.1:0";
  config.http.listen = "127.0.0.1:0";
  config.auth_token.clear();
  const int most = std::max(*std::max_element(o.streams.begin(), o.streams.end()),
                            *std::max_element(o.clients.begin(), o.clients.end()));
  config.max_streams = std::max(config.max_streams, 2 * most);
  config.max_transcribes = std::max(config.max_transcribes, 2 * most);
  config.http.max_connections = std::max(config.http.max_connections, 4 * most + 16);
  serve::Server server(config);
  server.Load();
  report.Set("server", Str("in process (", o.config, ", threads ", config.threads, ", http threads ", config.http.threads, ")"));

  std::vector<std::vector<float>> clips;
  std::vector<std::string> files;
  const auto& voices = audio::AvailableEnglishVoices();
  for (int i = 0; i < 4; ++i) {
    clips.push_back(audio::EspeakSynthesizer::Instance().Synthesize(kQuestions[i], audio::VoiceForSeed(1000 + i, voices)).samples);
    files.push_back(http::EncodeWav(clips.back(), 16000));
  }
  {  // warm-up of both paths
    http::HttpClient client(server.HttpAddress());
    std::string type;
    const std::string body = http::MultipartBody({{"file", files[0], "q.wav", "audio/wav"}}, &type);
    for (int i = 0; i < 3; ++i) client.Request("POST", "/v1/audio/transcriptions", body, {{"Content-Type", type}});
  }
  const std::vector<std::string> parts = Split(o.parts, ",");
  auto wanted = [&](const char* part) { return std::find(parts.begin(), parts.end(), part) != parts.end(); };
  if (wanted("transcribe")) report.Set("transcribe", TranscribeBench(o, server, files, report));
  if (wanted("chat")) report.Set("chat", ChatBench(o, server, report));
  if (wanted("realtime")) report.Set("realtime", RealtimeBench(o, server, clips, report));
  report.Emit();
  server.Drain(2);
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd = cli::Group(app, "bench", "benchmarks")
                  ->add_subcommand("http", "the OpenAI-compatible HTTP API vs gRPC on the same engine, same run");
  auto o = std::make_shared<HttpBenchOptions>();
  cmd->add_option("--config", o->config, "server config")->capture_default_str();
  cmd->add_option("--set", o->overrides, "override a server config key");
  cmd->add_option("--clients", o->clients, "transcription: concurrent clients per level")->delimiter(',');
  cmd->add_option("--duration", o->duration, "transcription: seconds per API and level")->check(CLI::Range(0.5, 3600.0));
  cmd->add_option("--rounds", o->rounds, "transcription: alternating rounds per level")->check(CLI::Range(1, 100));
  cmd->add_option("--requests", o->requests, "chat: measured requests per API")->check(CLI::Range(1, 100000));
  cmd->add_option("--streams", o->streams, "realtime: concurrent streams per level")->delimiter(',');
  cmd->add_option("--stream-seconds", o->stream_seconds, "realtime: seconds per API and level")->check(CLI::Range(1.0, 3600.0));
  cmd->add_option("--chunk-ms", o->chunk_ms, "realtime: audio per message")->check(CLI::Range(10.0, 1000.0));
  cmd->add_option("--parts", o->parts, "which parts: transcribe,chat,realtime");
  cmd->callback([o, &common] { RunHttpBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
