// What goes into and comes out of the serving engine (engine/engine.h), free of any transport:
// the gRPC front-end (serve/) and an HTTP one translate these to their own messages. Times are in
// seconds for positions in audio (from the first sample of the stream or request) and in
// milliseconds for latencies; audio is mono float samples in [-1, 1].
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace slm::engine {

// Why an utterance ended (numbered as slm.v1.UtteranceEnd).
enum class EndReason { kUnspecified = 0, kEndOfUtteranceMessage = 1, kEndpoint = 2, kHalfClose = 3, kMaxDuration = 4 };
// Why an answer stopped (numbered as slm.v1.FinishReason).
enum class FinishReason { kUnspecified = 0, kEndOfSequence = 1, kMaxTokens = 2, kStopString = 3 };

// Called by the engine (on its worker threads) to learn whether the client went away; must be
// cheap and must not block.
using Cancelled = std::function<bool()>;

struct Word {
  std::string text;
  double start_seconds = 0, end_seconds = 0;
  float confidence = 0;
};

struct Transcript {
  std::string text;
  float confidence = 0;
  std::vector<Word> words;
  double start_seconds = 0, end_seconds = 0;
  EndReason end_reason = EndReason::kUnspecified;
};

struct Interim {
  std::string text;          // the whole utterance so far, not a delta
  float stability = 0;       // share of the text in common with the previous interim
  double audio_end_seconds = 0;
};

// One generated token: `text` is what it adds to the answer (empty while a UTF-8 character is
// incomplete or a stop string may be starting; the bytes follow with a later token).
struct Token {
  std::string text;
  int64_t id = 0;
  int index = 0;
};

struct AudioOut {
  std::vector<float> samples;
  int sample_rate = 0;
  double start_seconds = 0;  // of the first sample, from the start of the synthesized audio
};

struct UtteranceSummary {
  double first_interim_ms = 0;             // first audio -> first interim (0: none)
  double final_after_end_of_audio_ms = 0;  // end of audio -> final transcript
  double first_answer_token_ms = 0;        // end of audio -> first answer token (0: none)
  double total_ms = 0;                     // first audio -> this summary
  double audio_seconds = 0;
  int tokens = 0;
  FinishReason finish = FinishReason::kUnspecified;
  std::string model, adapter;  // adapter: the one that answered (empty for transcripts only)
};

// One message of a Converse stream, in the order the API documents: per utterance interims, one
// final, answer tokens and audio, one summary.
struct StreamEvent {
  enum class Kind { kInterim, kFinal, kToken, kAudio, kSummary };
  Kind kind = Kind::kInterim;
  int utterance = 0;
  Interim interim;
  Transcript final;
  Token token;
  AudioOut audio;
  UtteranceSummary summary;
};

struct GenerateSummary {
  double first_token_ms = 0, total_ms = 0;  // from the request's arrival
  int prompt_tokens = 0;                     // positions of the prompt (media included)
  int tokens = 0;
  FinishReason finish = FinishReason::kUnspecified;
  std::string model, adapter;
};

struct GenerateEvent {
  enum class Kind { kToken, kSummary };
  Kind kind = Kind::kToken;
  Token token;
  GenerateSummary summary;
};

struct SynthesizeSummary {
  double audio_seconds = 0, first_audio_ms = 0, total_ms = 0;
};

struct SynthesizeEvent {
  enum class Kind { kAudio, kSummary };
  Kind kind = Kind::kAudio;
  AudioOut audio;
  SynthesizeSummary summary;
};

struct StreamSettings {
  std::string request_id;        // for logs
  bool respond = false;          // answer each utterance (spoken QA)
  bool interim = false;          // send interim transcripts
  int endpointing_ms = 0;        // 0 = the server's default, < 0 = no endpointing
  int max_answer_tokens = 0;     // 0 = the server's default; clamped to its limit
  std::string adapter;           // empty = the default adapter of the task
  bool answer_audio = false;     // also speak the answer
  int answer_audio_rate = 0;     // 0 = the synthesizer's rate
  Cancelled cancelled;
};

struct SamplingSettings {
  double temperature = 0;  // 0 = greedy
  int64_t top_k = 0;       // 0 = off
  double top_p = 1.0;      // 1 = off
  double repetition_penalty = 1.0;
  uint64_t seed = 0;
};

struct GenerateSettings {
  std::string request_id;
  // Text with "<image>" / "<speech>" markers for `images` / `audio` (in order; images without a
  // marker are placed before the text).
  std::string prompt;
  // Instead of `prompt`: the prompt as token ids (BOS included), without media (an API's
  // pre-tokenized prompt).
  std::vector<int64_t> prompt_ids;
  std::vector<cv::Mat> images;              // 8-bit RGB
  std::vector<std::vector<float>> audio;    // mono at the model's sample rate
  std::string adapter;                      // empty = the plain backbone (or, with images, the first image adapter)
  int max_new_tokens = 0;                   // 0 = default; clamped to the limit
  SamplingSettings sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;  // decode max_new_tokens whatever the model says (benchmarks)
  Cancelled cancelled;
};

struct SynthesizeSettings {
  std::string request_id;
  std::string text;
  std::string voice;    // empty = default
  int sample_rate = 0;  // 0 = the synthesizer's rate
  Cancelled cancelled;
};

struct TranscribeResult {
  Transcript transcript;
  double audio_seconds = 0;
};

// What ListModels / GET /v1/models report.
struct AdapterInfo {
  std::string name;
  std::vector<std::string> tasks;
  bool is_default = false;  // the default for spoken QA
};
struct ModelInfo {
  std::string name, description;
  bool accepts_audio = false, accepts_images = false;
  int64_t context_length = 0;
  double max_respond_seconds = 0;  // longest spoken question an answer fits after (0: no RESPOND)
  std::vector<AdapterInfo> adapters;
  std::vector<std::string> voices;
};

}  // namespace slm::engine
