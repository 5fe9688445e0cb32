// slm bench soak: minutes of mixed load against the server in process (the serve config's models),
// with the process's resident memory sampled every second: spoken questions (RESPOND streams),
// transcription streams, streams cancelled half way, Transcribe and Generate calls (greedy and
// sampled), and bad requests (a malformed message in a stream, an over-long prompt, a chunk that is
// not whole samples). Reports the RSS curve per interval, the outcome counts, and whether memory
// plateaus: the growth over the second half of the run, against its first half. The baseline of
// the comparison is the run's own first half.
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/support/sync_stream.h>

#include "audio/espeak_synth.h"
#include "bench/bench_serve_config.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/config.h"
#include "core/json_report.h"
#include "core/strings.h"
#include "serve/client.h"
#include "serve/server.h"

namespace slm::bench {
namespace {

namespace v1 = slm::v1;

struct SoakOptions {
  std::string config = "samples/configs/serve.yaml";
  std::vector<std::string> overrides;
  double minutes = 3;
  int clients = 8;
  double sample_seconds = 1;
};

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

std::string Linear16(const std::vector<float>& samples) {
  return serve::EncodePcm(samples.data(), samples.size(), v1::LINEAR16);
}

void RunSoak(const SoakOptions& o, bool json) {
  Report report(json);
  serve::ServeConfig config = LoadServeConfig(o.config, o.overrides);
  config.listen = "127.0.0.1:0";
  config.http.listen.clear();  // gRPC only
  config.max_streams = std::max(config.max_streams, 4 * o.clients);
  config.max_generates = std::max(config.max_generates, 4 * o.clients);
  config.max_transcribes = std::max(config.max_transcribes, 4 * o.clients);
  serve::Server server(config);
  server.Load();
  serve::ChannelOptions channel_options;
  channel_options.server = server.Address();
  auto channel = serve::MakeChannel(channel_options);
  auto stub = v1::Speech::NewStub(channel);

  std::vector<std::vector<float>> questions;
  const auto& voices = audio::AvailableEnglishVoices();
  for (int i = 0; i < 6; ++i)
    questions.push_back(audio::EspeakSynthesizer::Instance()
                            .Synthesize(std::vector<std::string>{"what is a dog", "what is a lantern", "what is music",
                                                                 "what is a river", "what is a violin", "what is bread"}[i],
                                        audio::VoiceForSeed(200 + i, voices))
                            .samples);
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "word ";

  std::mutex mutex;
  std::map<std::string, int64_t> outcomes;  // "kind code" -> count
  auto count = [&](const std::string& kind, grpc::StatusCode code) {
    std::lock_guard<std::mutex> lock(mutex);
    ++outcomes[kind + " " + std::to_string(static_cast<int>(code))];
  };
  std::atomic<bool> stop{false};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::pair<double, int64_t>> curve;  // seconds, RSS bytes
  std::thread sampler([&] {
    while (!stop) {
      curve.push_back({std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ResidentBytes()});
      std::this_thread::sleep_for(std::chrono::duration<double>(o.sample_seconds));
    }
  });
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c)
    clients.emplace_back([&, c] {
      std::mt19937 rng(c);
      while (!stop) {
        const int kind = rng() % 9;
        const std::vector<float>& q = questions[rng() % questions.size()];
        if (kind <= 2) {  // a stream: respond, transcribe with interims, or cancelled half way
          serve::StreamRequest request;
          request.samples = q;
          request.realtime = false;
          request.config.set_task(kind == 0 ? v1::RESPOND : v1::TRANSCRIBE);
          request.config.set_interim_results(true);
          if (kind == 2) request.deadline_seconds = 0.05;
          count(kind == 0 ? "respond" : kind == 1 ? "transcribe_stream" : "cancelled_stream",
                serve::StreamAudio(channel, channel_options, request).status.error_code());
        } else if (kind == 3) {
          grpc::ClientContext context;
          v1::TranscribeRequest request;
          request.set_audio(Linear16(q));
          request.set_encoding(v1::LINEAR16);
          request.set_sample_rate_hz(16000);
          v1::TranscribeResponse response;
          count("transcribe", stub->Transcribe(&context, request, &response).error_code());
        } else if (kind <= 5) {
          grpc::ClientContext context;
          v1::GenerateRequest request;
          request.set_prompt(kind == 4 ? "a small domesticated" : long_prompt);  // the second is too long
          request.set_max_new_tokens(24);
          request.set_temperature(rng() % 2 ? 0.0 : 0.9);
          request.set_seed(rng());
          auto reader = stub->Generate(&context, request);
          v1::GenerateResponse response;
          while (reader->Read(&response)) {
          }
          count(kind == 4 ? "generate" : "generate_too_long", reader->Finish().error_code());
        } else {  // a stream that turns malformed, or sends half a sample
          grpc::ClientContext context;
          const grpc::internal::RpcMethod method("/slm.v1.Speech/Converse", grpc::internal::RpcMethod::BIDI_STREAMING,
                                                 channel);
          std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
              grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel.get(), method,
                                                                                                   &context));
          v1::ConverseRequest first;
          first.mutable_config()->set_encoding(v1::LINEAR16);
          first.mutable_config()->set_sample_rate_hz(16000);
          v1::ConverseRequest audio;
          audio.set_audio(Linear16(q).substr(0, kind == 6 ? 6400 : 6401));
          for (const std::string& bytes : {first.SerializeAsString(), audio.SerializeAsString(), std::string("\x12\x80", 2)}) {
            grpc::Slice slice(bytes);
            if (!stream->Write(grpc::ByteBuffer(&slice, 1))) break;
          }
          stream->WritesDone();
          grpc::ByteBuffer ignored;
          while (stream->Read(&ignored)) {
          }
          count("bad_stream", stream->Finish().error_code());
        }
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(o.minutes * 60));
  stop = true;
  for (auto& t : clients) t.join();
  sampler.join();
  server.Drain(2);

  // Curve per interval of a tenth of the run: the largest RSS seen in it.
  nlohmann::json table = nlohmann::json::array();
  const double duration = o.minutes * 60;
  std::vector<double> peaks(10, 0);
  for (const auto& [t, rss] : curve) {
    const size_t k = std::min<size_t>(9, static_cast<size_t>(t / duration * 10));
    peaks[k] = std::max(peaks[k], rss / 1048576.0);
  }
  for (int k = 0; k < 10; ++k) {
    table.push_back({{"until_seconds", duration * (k + 1) / 10}, {"peak_rss_mib", peaks[k]}});
    report.Line(Str("until ", Fixed(duration * (k + 1) / 10, 0), " s: peak RSS ", Fixed(peaks[k], 1), " MiB"));
  }
  const double first_half = *std::max_element(peaks.begin(), peaks.begin() + 5);
  const double second_half = *std::max_element(peaks.begin() + 5, peaks.end());
  report.Set("rss_curve", table);
  report.Set("peak_rss_first_half_mib", first_half);
  report.Set("peak_rss_second_half_mib", second_half);
  report.Set("second_half_growth", second_half / first_half);
  // A plateau: the second half adds under 5% to the first half's peak.
  report.Set("plateau", second_half <= first_half * 1.05);
  nlohmann::json counts;
  int64_t total = 0;
  for (const auto& [key, n] : outcomes) {
    counts[key] = n;
    total += n;
  }
  report.Set("outcomes_by_kind_and_code", counts);
  report.Set("requests", total);
  report.Set("minutes", o.minutes);
  report.Set("clients", o.clients);
  report.Line(Str(total, " requests by ", o.clients, " clients in ", o.minutes, " min; peak RSS first half ",
                  Fixed(first_half, 1), " MiB, second half ", Fixed(second_half, 1), " MiB"));
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd = cli::Group(app, "bench", "benchmarks")
                  ->add_subcommand("soak", "minutes of mixed good and bad requests; resident memory sampled");
  auto o = std::make_shared<SoakOptions>();
  cmd->add_option("--config", o->config, "server config")->capture_default_str();
  cmd->add_option("--set", o->overrides, "override a server config key");
  cmd->add_option("--minutes", o->minutes, "duration")->check(CLI::Range(0.05, 600.0))->capture_default_str();
  cmd->add_option("--clients", o->clients, "concurrent clients")->check(CLI::Range(1, 512))->capture_default_str();
  cmd->callback([o, &common] { RunSoak(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
