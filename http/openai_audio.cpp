// POST /v1/audio/transcriptions and POST /v1/audio/speech (http/endpoints.h).
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/strings.h"
#include "http/audio_codec.h"
#include "http/base64.h"
#include "http/endpoints.h"
#include "http/errors.h"
#include "http/json_fields.h"
#include "http/multipart.h"
#include "http/sse.h"
#include "http/transcript_format.h"

namespace slm::http {

namespace {

// OpenAI's pcm output format: 16-bit mono at 24 kHz.
constexpr int kPcmRate = 24000;

const std::vector<std::pair<std::string, std::string>> kSseHeaders = {{"Cache-Control", "no-cache"},
                                                                       {"X-Accel-Buffering", "no"}};

bool ParseFormBool(const std::string& value, const std::string& param) {
  const std::string v = ToLower(Trim(value));
  if (v.empty() || v == "false" || v == "0") return false;
  if (v == "true" || v == "1") return true;
  Fail(400, Str(param, ": expected true or false, got '", value, "'"), param);
}

// The transcript cut into deltas at spaces; their concatenation is the text itself.
std::vector<std::string> Deltas(const std::string& text) {
  std::vector<std::string> out;
  size_t from = 0;
  while (from < text.size()) {
    size_t next = text.find(' ', from + 1);
    if (next == std::string::npos) next = text.size();
    out.push_back(text.substr(from, next - from));
    from = next;
  }
  return out;
}

}  // namespace

void Transcriptions(const Context& c, const Request& request, Exchange& exchange) {
  const std::vector<FormPart> parts = ParseMultipart(request.Header("content-type"), request.body);
  auto field = [&](const std::string& name) {
    const FormPart* part = FindPart(parts, name);
    return part ? std::string(part->data) : std::string();
  };
  const FormPart* file = FindPart(parts, "file");
  if (file == nullptr) Fail(400, "file: missing (send the audio as the multipart field `file`)", "file", "missing_field");
  const std::string model = field("model");
  if (!model.empty() && model != c.engine.Model().Name())
    Fail(404, Str("model: unknown model '", model, "' for transcription (this server transcribes with '",
                  c.engine.Model().Name(), "')"),
         "model", "model_not_found");
  const TranscriptFormat format = ParseTranscriptFormat(field("response_format"));
  const bool stream = ParseFormBool(field("stream"), "stream");
  if (stream && format != TranscriptFormat::kJson && format != TranscriptFormat::kText)
    Fail(400, "stream: streamed transcripts are events (transcript.text.delta); use response_format json or text",
         "stream");
  for (const FormPart& part : parts)
    if (part.name == "timestamp_granularities[]" || part.name == "timestamp_granularities") {
      const std::string v(part.data);
      if (v != "word" && v != "segment")
        Fail(400, Str(part.name, ": '", v, "' is not word or segment"), "timestamp_granularities");
    }
  if (!c.engine.Model().HasSpeech()) Fail(400, "this server's model has no speech encoder", "model");
  const double max_seconds = std::min(c.engine.Config().max_file_seconds, c.engine.Model().MaxSpeechSeconds());
  std::vector<float> samples = DecodeAudioFile(std::string(file->data), "file", c.engine.Model().SampleRate(), max_seconds);

  engine::TranscribeResult result;
  Require(c.engine.Transcribe(std::move(samples), [&exchange] { return exchange.ClientGone(); }, &result), "file");
  if (!stream) {
    Response response;
    response.body = FormatTranscript(result, format, &response.content_type);
    exchange.Reply(std::move(response));
    return;
  }
  if (!exchange.BeginStream(200, "text/event-stream", kSseHeaders)) return;
  for (const std::string& delta : Deltas(result.transcript.text))
    if (!exchange.Write(SseEvent({{"type", "transcript.text.delta"}, {"delta", delta}}))) return;
  exchange.Write(SseEvent({{"type", "transcript.text.done"},
                           {"text", result.transcript.text},
                           {"usage", {{"type", "duration"}, {"seconds", std::ceil(result.audio_seconds)}}}}));
  exchange.EndStream();
}

void Speech(const Context& c, const Request& request, Exchange& exchange) {
  const nlohmann::json body = ParseJsonObject(request.body);
  const std::string model = ReqString(body, "model", "model");
  const std::string input = ReqString(body, "input", "input");
  const std::string voice = OptString(body, "voice", "voice").value_or("");
  const std::string format = OptString(body, "response_format", "response_format").value_or("wav");
  if (format != "wav" && format != "pcm")
    Fail(400, Str("response_format '", format, "' is not supported here (wav, pcm)"), "response_format");
  const double speed = OptNumber(body, "speed", "speed").value_or(1.0);
  if (std::fabs(speed - 1.0) > 1e-9) Fail(400, Str("speed: only 1.0 is supported, got ", speed), "speed");
  const std::string stream_format = OptString(body, "stream_format", "stream_format").value_or("audio");
  if (stream_format != "audio" && stream_format != "sse")
    Fail(400, Str("stream_format '", stream_format, "' is not audio or sse"), "stream_format");
  // The request's shape first (a malformed request is the client's mistake on any server), then
  // whether this server can speak.
  const engine::AdapterRef synthesizer = c.engine.Model().SynthesizerAdapter();
  if (c.engine.Model().Voices().empty())
    Fail(400, "this server has no speech synthesizer (no adapter trained for task tts)", "model", "unsupported");
  if (model != c.engine.Model().Name() && !(synthesizer && model == synthesizer->name))
    Fail(404, Str("model: unknown model '", model, "' for speech (this server speaks with '", c.engine.Model().Name(), "'",
                  synthesizer ? " or '" + synthesizer->name + "'" : std::string(), ")"),
         "model", "model_not_found");

  engine::SynthesizeSettings settings;
  settings.request_id = c.request_id;
  settings.text = input;
  settings.voice = voice == "default" ? "" : voice;
  settings.sample_rate = format == "pcm" || stream_format == "sse" ? kPcmRate : 0;
  settings.cancelled = [&exchange] { return exchange.ClientGone(); };
  std::shared_ptr<engine::Engine::SynthesizeJob> job;
  Require(c.engine.StartSynthesize(std::move(settings), &job), "input");
  struct CloseJob {
    engine::Engine& engine;
    std::shared_ptr<engine::Engine::SynthesizeJob>& job;
    ~CloseJob() { engine.Close(*job); }
  } close_job{c.engine, job};

  engine::SynthesizeEvent event;
  if (format == "wav" && stream_format == "audio") {
    std::vector<float> samples;
    int rate = 0;
    while (c.engine.Next(*job, &event))
      if (event.kind == engine::SynthesizeEvent::Kind::kAudio) {
        samples.insert(samples.end(), event.audio.samples.begin(), event.audio.samples.end());
        rate = event.audio.sample_rate;
      }
    Require(c.engine.Result(*job), "input");
    if (rate == 0) Fail(500, "the synthesizer produced no audio");
    Response response;
    response.content_type = "audio/wav";
    response.body = EncodeWav(samples, rate);
    exchange.Reply(std::move(response));
    return;
  }
  const bool sse = stream_format == "sse";
  bool started = false;
  while (c.engine.Next(*job, &event)) {
    if (event.kind != engine::SynthesizeEvent::Kind::kAudio) continue;
    if (!started) {
      started = true;
      if (!exchange.BeginStream(200, sse ? "text/event-stream" : "audio/pcm", sse ? kSseHeaders : decltype(kSseHeaders){}))
        return;
    }
    const std::string pcm = EncodePcm16(event.audio.samples);
    if (!exchange.Write(sse ? SseEvent({{"type", "speech.audio.delta"}, {"audio", Base64Encode(pcm)}}) : pcm)) return;
  }
  const engine::Status status = c.engine.Result(*job);
  if (!started) {
    Require(status, "input");
    Fail(500, "the synthesizer produced no audio");
  }
  if (!status.ok()) {
    // The status line is gone: an SSE client gets an error event; a raw PCM stream just ends short.
    if (sse) exchange.Write(SseEvent({{"type", "error"}, {"error", nlohmann::json::parse(ErrorBody(ApiError(HttpStatusOf(status.code), status.message)))["error"]}}));
  } else if (sse) {
    exchange.Write(SseEvent({{"type", "speech.audio.done"},
                             {"usage", {{"input_tokens", 0}, {"output_tokens", 0}, {"total_tokens", 0}}}}));
  }
  exchange.EndStream();
}

}  // namespace slm::http
