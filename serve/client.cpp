#include "serve/client.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "serve/protocol.h"

namespace slm::serve {

namespace v1 = slm::v1;
using Clock = std::chrono::steady_clock;

std::shared_ptr<grpc::Channel> MakeChannel(const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options.ca_file.empty()) {
    std::ifstream in(options.ca_file, std::ios::binary);
    Check(in.good(), "--ca: cannot read '", options.ca_file, "'");
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

void Authorize(grpc::ClientContext& context, const ChannelOptions& options) {
  if (!options.token.empty()) context.AddMetadata("authorization", "Bearer " + options.token);
}

StreamResult StreamAudio(const std::shared_ptr<grpc::Channel>& channel, const ChannelOptions& options,
                         const StreamRequest& request,
                         const std::function<void(const TimedResponse&)>& on_response) {
  StreamResult result;
  v1::Speech::Stub stub(channel);
  grpc::ClientContext context;
  Authorize(context, options);
  if (request.deadline_seconds > 0)
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                std::chrono::duration<double>(request.deadline_seconds)));
  auto stream = stub.Converse(&context);
  const size_t chunk = std::max<size_t>(1, static_cast<size_t>(request.sample_rate * request.chunk_ms / 1000.0));
  result.audio_seconds = double(request.samples.size()) / request.sample_rate;

  std::mutex mutex;
  std::vector<std::pair<double, double>> sent;  // (audio end seconds, send time ms)
  const Clock::time_point start = Clock::now();
  auto since_start = [&] { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); };

  std::thread sender([&] {
    v1::ConverseRequest message;
    v1::StreamConfig* config = message.mutable_config();
    *config = request.config;
    config->set_encoding(request.encoding);
    config->set_sample_rate_hz(request.sample_rate);
    if (!stream->Write(message)) return;
    for (size_t begin = 0; begin < request.samples.size(); begin += chunk) {
      const size_t count = std::min(chunk, request.samples.size() - begin);
      const double audio_end = double(begin + count) / request.sample_rate;
      if (request.realtime) {
        // Chunk k leaves once its audio has "happened": at the end time of its last sample.
        const auto due = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(audio_end));
        std::this_thread::sleep_until(due);
      }
      v1::ConverseRequest audio;
      audio.set_audio(EncodePcm(request.samples.data() + begin, count, request.encoding));
      {
        std::lock_guard<std::mutex> lock(mutex);
        sent.emplace_back(audio_end, since_start());
      }
      if (!stream->Write(audio)) return;
    }
    if (request.end_of_utterance) {
      v1::ConverseRequest end;
      end.mutable_end_of_utterance();
      stream->Write(end);
    }
    stream->WritesDone();
  });

  v1::ConverseResponse response;
  while (stream->Read(&response)) {
    TimedResponse timed;
    timed.arrival_ms = since_start();
    timed.response = response;
    {
      std::lock_guard<std::mutex> lock(mutex);
      const double last_send = sent.empty() ? 0.0 : sent.back().second;
      if (response.has_interim_transcript()) {
        const double end = response.interim_transcript().audio_end_seconds();
        // The chunk holding the interim's last sample (times are relative to the stream start).
        double send_time = last_send;
        for (const auto& [audio_end, at] : sent)
          if (audio_end + 1e-6 >= end) {
            send_time = at;
            break;
          }
        result.interim_latency_ms.push_back(timed.arrival_ms - send_time);
      } else if (response.has_final_transcript()) {
        result.final_latency_ms = timed.arrival_ms - last_send;
        result.final_text += (result.final_text.empty() ? "" : " | ") + response.final_transcript().text();
      } else if (response.has_answer_token()) {
        if (result.first_token_latency_ms < 0) result.first_token_latency_ms = timed.arrival_ms - last_send;
        result.answer_text += response.answer_token().text();
      } else if (response.has_answer_audio()) {
        const v1::AudioChunk& chunk = response.answer_audio();
        if (result.first_audio_latency_ms < 0) result.first_audio_latency_ms = timed.arrival_ms - last_send;
        result.answer_audio_rate = chunk.sample_rate_hz();
        const std::vector<float> samples = DecodePcm(chunk.audio(), chunk.encoding(), "AudioChunk");
        result.answer_audio.insert(result.answer_audio.end(), samples.begin(), samples.end());
      }
    }
    if (on_response) on_response(timed);
    result.responses.push_back(std::move(timed));
  }
  sender.join();
  result.status = stream->Finish();
  result.wall_seconds = since_start() / 1000.0;
  return result;
}

}  // namespace slm::serve
