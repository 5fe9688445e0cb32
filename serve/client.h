// Client side of slm.v1.Speech for `slm client stream` and `slm bench stream`: dials a server and
// streams audio in real-time-sized chunks, recording when each chunk was sent and each response
// arrived, so that latencies are measured the way Riva's streaming client measures them: an
// interim's latency is its arrival time minus the send time of the chunk holding the end of the
// audio it covers (InterimTranscript.audio_end_seconds); the final's is its arrival minus the send
// time of the last chunk (the end of the utterance's audio); the answer's first token likewise.
//
// Thread-safety: StreamAudio may run on many threads at once over one channel (gRPC channels are
// thread-safe); each call uses two threads (a sender and the caller reading).
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "serve/protocol.h"
#include "slm/v1/speech.grpc.pb.h"

namespace slm::serve {

struct ChannelOptions {
  std::string server = "127.0.0.1:50051";  // host:port
  std::string token;                       // bearer token, sent as "authorization" metadata
  std::string ca_file;                     // TLS with this root certificate; empty = plaintext
};
std::shared_ptr<grpc::Channel> MakeChannel(const ChannelOptions& options);
// Adds the bearer token of `options` (if any) to a call.
void Authorize(grpc::ClientContext& context, const ChannelOptions& options);

struct StreamRequest {
  std::vector<float> samples;  // mono, [-1, 1]
  int sample_rate = 16000;
  slm::v1::AudioEncoding encoding = slm::v1::LINEAR16;
  double chunk_ms = 160;
  bool realtime = true;  // pace chunks at the audio's duration; false sends as fast as possible
  slm::v1::StreamConfig config;  // encoding and sample_rate_hz are filled from the fields above
  // Send EndOfUtterance after the last chunk (else half-close ends it).
  bool end_of_utterance = false;
  double deadline_seconds = 0;  // 0 = none
};

struct TimedResponse {
  double arrival_ms = 0;  // since the first chunk was sent
  slm::v1::ConverseResponse response;
};

struct StreamResult {
  grpc::Status status;
  std::vector<TimedResponse> responses;
  std::vector<double> interim_latency_ms;  // one per interim transcript
  double final_latency_ms = -1;            // per utterance would be a list; this is the last final
  double first_token_latency_ms = -1;      // first answer token after the last chunk; -1 = none
  double audio_seconds = 0;
  double wall_seconds = 0;
  std::string final_text, answer_text;
  // respond_with_audio: the spoken answers' samples (mono, [-1, 1], at answer_audio_rate Hz; 0 =
  // none came) and the first AudioChunk's arrival after the last chunk was sent; -1 = none.
  std::vector<float> answer_audio;
  int answer_audio_rate = 0;
  double first_audio_latency_ms = -1;
};

// Streams one request and collects everything; `on_response` (optional) sees each response as it
// arrives, on the calling thread.

StreamResult StreamAudio(const std::shared_ptr<grpc::Channel>& channel, const ChannelOptions& options,
                         const StreamRequest& request,
                         const std::function<void(const TimedResponse&)>& on_response = nullptr);

}  // namespace slm::serve
