// slm serve --config samples/configs/serve.yaml [--set k=v ...]
// slm client stream --server ADDR --audio FILE [--realtime] [--task respond] [--interim] [--json]
// slm client transcribe --server ADDR --audio FILE [--json]
// slm client models --server ADDR [--json]
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "audio/audio_io.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "serve/client.h"
#include "serve/grpc_status.h"
#include "serve/server.h"
#include "serve/service.h"

namespace slm::cli {
namespace {

namespace v1 = slm::v1;

std::atomic<int> g_signal{0};
extern "C" void OnSignal(int signal) { g_signal.store(signal); }

void RunServe(const serve::ServeConfig& config) {
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  serve::Server server(config);
  log::Info(Str("listening on ", server.Address(), " (health NOT_SERVING while the model loads)"));
  server.Load();
  // The HTTP line comes first, so whoever waits for "serving on" has both.
  if (!server.HttpAddress().empty())
    std::cout << "http on " << server.HttpAddress() << (server.Http()->Tls() ? " (https, wss)" : "") << std::endl;
  // One line on stdout that scripts wait for.
  std::cout << "serving on " << server.Address() << std::endl;
  while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  log::Info(Str("signal ", g_signal.load(), ": draining (up to ", config.drain_seconds, " s)"));
  const nlohmann::json stats = server.GetEngine()->Stats();
  server.Drain(config.drain_seconds);
  std::cout << "drained; engine: " << stats.dump() << std::endl;
}

struct ClientArgs {
  serve::ChannelOptions channel;
  std::string audio;
  bool realtime = false;
  bool interim = false;
  std::string task = "transcribe";
  std::string adapter;
  std::string encoding = "linear16";
  int rate = 0;  // 0 = the file's rate
  double chunk_ms = 160;
  int endpointing_ms = -1;
  int max_answer_tokens = 0;
  double deadline = 0;
  std::string answer_audio;  // respond: write the spoken answer to this WAV
};

void AddChannelOptions(CLI::App* cmd, serve::ChannelOptions& channel) {
  cmd->add_option("--server", channel.server, "server address host:port")->capture_default_str();
  cmd->add_option("--token", channel.token, "bearer token (or env SLM_TOKEN)")->envname("SLM_TOKEN");
  cmd->add_option("--ca", channel.ca_file, "TLS: the server's root certificate (PEM); default plaintext");
}

void RunStream(const ClientArgs& args, bool json) {
  audio::ReadOptions read;
  read.target_rate = args.rate;  // 0 keeps the file's rate: the server resamples
  const audio::Waveform wave = audio::Read(args.audio, read);
  serve::StreamRequest request;
  request.samples = wave.samples;
  request.sample_rate = wave.sample_rate;
  request.encoding = args.encoding == "float32" ? v1::FLOAT32 : v1::LINEAR16;
  request.chunk_ms = args.chunk_ms;
  request.realtime = args.realtime;
  request.deadline_seconds = args.deadline;
  request.config.set_task(args.task == "respond" ? v1::RESPOND : v1::TRANSCRIBE);
  request.config.set_interim_results(args.interim);
  request.config.set_endpointing_silence_ms(args.endpointing_ms);
  request.config.set_max_answer_tokens(args.max_answer_tokens);
  request.config.set_adapter(args.adapter);
  if (!args.answer_audio.empty()) {
    Check(args.task == "respond", "--answer-audio needs --task respond");
    request.config.set_respond_with_audio(true);
    request.config.set_output_encoding(v1::FLOAT32);
  }
  auto channel = serve::MakeChannel(args.channel);
  bool answering = false, spoken = false;
  const serve::StreamResult result =
      serve::StreamAudio(channel, args.channel, request, [&](const serve::TimedResponse& t) {
        if (json) return;
        const v1::ConverseResponse& r = t.response;
        const std::string at = "[" + Fixed(t.arrival_ms / 1000.0, 2) + " s] ";
        if (r.has_interim_transcript()) {
          std::cout << at << "interim   " << r.interim_transcript().text() << "  (stability "
                    << Fixed(r.interim_transcript().stability(), 2) << ")" << std::endl;
        } else if (r.has_final_transcript()) {
          const v1::FinalTranscript& f = r.final_transcript();
          std::cout << at << "final     " << f.text() << "  (confidence " << Fixed(f.confidence(), 2) << ", "
                    << v1::UtteranceEnd_Name(f.end_reason()) << ")" << std::endl;
          std::cout << "           words:";
          for (const v1::WordInfo& w : f.words())
            std::cout << " " << w.word() << "@" << Fixed(w.start_seconds(), 2) << "-" << Fixed(w.end_seconds(), 2);
          std::cout << std::endl;
        } else if (r.has_answer_token()) {
          if (!answering) std::cout << at << "answer    ";
          answering = true;
          std::cout << r.answer_token().text() << std::flush;
        } else if (r.has_answer_audio()) {
          if (!spoken) {
            if (answering) std::cout << std::endl;
            answering = false;
            std::cout << at << "spoken    first audio chunk of the answer" << std::endl;
          }
          spoken = true;
        } else if (r.has_summary()) {
          if (answering) std::cout << std::endl;
          answering = spoken = false;
          const v1::UtteranceSummary& s = r.summary();
          std::cout << at << "summary   utterance " << r.utterance_index() << ": " << Fixed(s.audio_seconds_processed(), 2)
                    << " s audio, first interim " << Fixed(s.first_interim_ms()) << " ms, final "
                    << Fixed(s.final_after_end_of_audio_ms()) << " ms after the audio ended";
          if (s.tokens_generated() > 0)
            std::cout << ", first answer token " << Fixed(s.first_answer_token_ms()) << " ms, " << s.tokens_generated()
                      << " tokens (" << v1::FinishReason_Name(s.finish_reason()) << ", adapter " << s.adapter() << ")";
          std::cout << std::endl;
        }
      });
  if (!result.status.ok())
    throw Error(Str("the server answered ", serve::StatusCodeName(result.status.error_code()), ": ",
                    result.status.error_message()));
  Report report(json);
  report.Set("request_id", result.responses.empty() ? "" : result.responses[0].response.request_id());
  report.Set("transcript", result.final_text);
  if (request.config.task() == v1::RESPOND) report.Set("answer", result.answer_text);
  report.Set("audio_seconds", result.audio_seconds);
  report.Set("interim_transcripts", static_cast<int64_t>(result.interim_latency_ms.size()));
  report.Set("final_latency_ms", result.final_latency_ms);
  if (result.first_token_latency_ms >= 0) report.Set("first_answer_token_latency_ms", result.first_token_latency_ms);
  if (!args.answer_audio.empty()) {
    Check(result.answer_audio_rate > 0, "the server sent no answer audio");
    audio::Write(args.answer_audio, result.answer_audio, result.answer_audio_rate);
    report.Set("answer_audio", args.answer_audio);
    report.Set("answer_audio_seconds", double(result.answer_audio.size()) / result.answer_audio_rate);
    report.Set("first_answer_audio_latency_ms", result.first_audio_latency_ms);
  }
  report.Set("wall_seconds", result.wall_seconds);
  if (json) {
    nlohmann::json events = nlohmann::json::array();
    for (const serve::TimedResponse& t : result.responses) {
      events.push_back({{"arrival_ms", t.arrival_ms}, {"response", t.response.ShortDebugString()}});
    }
    report.Set("responses", events);
  }
  report.Emit();
}

void RunTranscribe(const ClientArgs& args, bool json) {
  std::ifstream in(args.audio, std::ios::binary);
  Check(in.good(), "--audio: cannot read '", args.audio, "'");
  std::stringstream bytes;
  bytes << in.rdbuf();
  auto channel = serve::MakeChannel(args.channel);
  v1::Speech::Stub stub(channel);
  grpc::ClientContext context;
  serve::Authorize(context, args.channel);
  v1::TranscribeRequest request;
  request.set_audio(bytes.str());
  request.set_adapter(args.adapter);
  v1::TranscribeResponse response;
  const grpc::Status status = stub.Transcribe(&context, request, &response);
  if (!status.ok())
    throw Error(Str("the server answered ", serve::StatusCodeName(status.error_code()), ": ", status.error_message()));
  Report report(json);
  report.Set("transcript", response.transcript().text());
  report.Set("confidence", response.transcript().confidence());
  nlohmann::json words = nlohmann::json::array();
  for (const v1::WordInfo& w : response.transcript().words())
    words.push_back({{"word", w.word()}, {"start", w.start_seconds()}, {"end", w.end_seconds()}, {"confidence", w.confidence()}});
  report.Set("words", words);
  report.Set("audio_seconds", response.audio_seconds());
  report.Set("processing_ms", response.processing_ms());
  report.Emit();
}

struct SynthesizeArgs {
  serve::ChannelOptions channel;
  std::string text, out, voice;
  int rate = 0;
};

// Synthesize: writes the streamed audio to a WAV file and reports latency and length.
void RunSynthesize(const SynthesizeArgs& args, bool json) {
  auto channel = serve::MakeChannel(args.channel);
  v1::Speech::Stub stub(channel);
  grpc::ClientContext context;
  serve::Authorize(context, args.channel);
  v1::SynthesizeRequest request;
  request.set_text(args.text);
  request.set_voice(args.voice);
  request.set_sample_rate_hz(args.rate);
  request.set_encoding(v1::FLOAT32);
  const auto start = std::chrono::steady_clock::now();
  auto reader = stub.Synthesize(&context, request);
  v1::SynthesizeResponse response;
  std::vector<float> samples;
  int rate = 0;
  int64_t chunks = 0;
  double first_chunk_ms = -1;
  v1::SynthesizeSummary summary;
  while (reader->Read(&response)) {
    if (response.has_audio()) {
      if (first_chunk_ms < 0)
        first_chunk_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      rate = response.audio().sample_rate_hz();
      const std::vector<float> chunk = serve::DecodePcm(response.audio().audio(), v1::FLOAT32, "AudioChunk");
      samples.insert(samples.end(), chunk.begin(), chunk.end());
      ++chunks;
    }
    if (response.has_summary()) summary = response.summary();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok())
    throw Error(Str("the server answered ", serve::StatusCodeName(status.error_code()), ": ", status.error_message()));
  Check(rate > 0, "the server sent no audio");
  audio::Write(args.out, samples, rate);
  Report report(json);
  report.Set("out", args.out);
  report.Set("chunks", chunks);
  report.Set("audio_seconds", summary.audio_seconds());
  report.Set("sample_rate", rate);
  report.Set("first_chunk_ms_client", first_chunk_ms);
  report.Set("first_audio_ms_server", summary.first_audio_ms());
  report.Set("total_ms_server", summary.total_ms());
  report.Emit();
}

void RunModels(const serve::ChannelOptions& options, bool json) {
  auto channel = serve::MakeChannel(options);
  v1::Speech::Stub stub(channel);
  grpc::ClientContext context;
  serve::Authorize(context, options);
  v1::ListModelsResponse response;
  const grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok())
    throw Error(Str("the server answered ", serve::StatusCodeName(status.error_code()), ": ", status.error_message()));
  Report report(json);
  nlohmann::json models = nlohmann::json::array();
  for (const v1::ModelInfo& m : response.models()) {
    nlohmann::json adapters = nlohmann::json::array();
    for (const v1::AdapterInfo& a : m.adapters())
      adapters.push_back({{"name", a.name()}, {"tasks", std::vector<std::string>(a.tasks().begin(), a.tasks().end())},
                          {"is_default", a.is_default()}});
    models.push_back({{"name", m.name()}, {"description", m.description()}, {"accepts_audio", m.accepts_audio()},
                      {"accepts_images", m.accepts_images()}, {"context_length", m.context_length()},
                      {"adapters", adapters}});
  }
  report.Set("models", models);
  nlohmann::json voices = nlohmann::json::array();
  for (const std::string& v : response.voices()) voices.push_back(v);
  report.Set("voices", voices);
  report.Emit();
}

Registrar reg([](CLI::App& app, Common& common) {
  AddConfigJob<serve::ServeConfig>(&app, "serve", "serve streaming speech queries over gRPC (slm.v1.Speech)",
                                   "samples/configs/serve.yaml", common,
                                   [](const serve::ServeConfig& config, const std::string&, bool) {
                                     RunServe(config);
                                     struct Done {
                                       nlohmann::json ToJson() const { return {{"drained", true}}; }
                                     };
                                     return Done{};
                                   });

  CLI::App* client = Group(app, "client", "talk to a running `slm serve`");
  {
    auto args = std::make_shared<ClientArgs>();
    auto* cmd = client->add_subcommand("stream", "stream an audio file (Converse) and print partials and results");
    AddChannelOptions(cmd, args->channel);
    cmd->add_option("--audio", args->audio, "audio file (any rate, WAV/FLAC/OGG)")->required();
    cmd->add_flag("--realtime", args->realtime, "send chunks at the pace of the audio");
    cmd->add_flag("--interim", args->interim, "ask for interim transcripts");
    cmd->add_option("--task", args->task, "transcribe | respond")->check(CLI::IsMember({"transcribe", "respond"}));
    cmd->add_option("--adapter", args->adapter, "adapter name (ListModels); default: the server's");
    cmd->add_option("--encoding", args->encoding, "linear16 | float32")->check(CLI::IsMember({"linear16", "float32"}));
    cmd->add_option("--rate", args->rate, "resample to this rate before sending (0 = the file's rate)");
    cmd->add_option("--chunk-ms", args->chunk_ms, "audio per message, ms")->check(CLI::Range(1.0, 10000.0));
    cmd->add_option("--endpointing-ms", args->endpointing_ms,
                    "trailing silence ending an utterance (0 = server default, -1 = off: end at the end of the file)");
    cmd->add_option("--max-answer-tokens", args->max_answer_tokens, "0 = server default");
    cmd->add_option("--deadline", args->deadline, "seconds; 0 = none");
    cmd->add_option("--answer-audio", args->answer_audio,
                    "respond: ask for the answer spoken too (respond_with_audio) and write it to this WAV");
    cmd->callback([args, &common] { RunStream(*args, common.json); });
  }
  {
    auto args = std::make_shared<ClientArgs>();
    auto* cmd = client->add_subcommand("transcribe", "transcribe a whole audio file (Transcribe)");
    AddChannelOptions(cmd, args->channel);
    cmd->add_option("--audio", args->audio, "audio file")->required();
    cmd->callback([args, &common] { RunTranscribe(*args, common.json); });
  }
  {
    auto args = std::make_shared<SynthesizeArgs>();
    auto* cmd = client->add_subcommand("synthesize", "speak text (Synthesize) and write the streamed audio to a WAV");
    AddChannelOptions(cmd, args->channel);
    cmd->add_option("--text", args->text, "what to say")->required();
    cmd->add_option("--out", args->out, "output WAV")->required();
    cmd->add_option("--voice", args->voice, "a voice from `slm client models` (default: the server's)");
    cmd->add_option("--rate", args->rate, "sample rate in Hz (0 = the synthesizer's)");
    cmd->callback([args, &common] { RunSynthesize(*args, common.json); });
  }
  {
    auto options = std::make_shared<serve::ChannelOptions>();
    auto* cmd = client->add_subcommand("models", "list the server's models and adapters (ListModels)");
    AddChannelOptions(cmd, *options);
    cmd->callback([options, &common] { RunModels(*options, common.json); });
  }
});

}  // namespace
}  // namespace slm::cli
