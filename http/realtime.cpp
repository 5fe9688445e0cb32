#include "http/realtime.h"

#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "http/audio_codec.h"
#include "http/base64.h"
#include "http/errors.h"
#include "http/json_fields.h"
#include "http/sse.h"

namespace slm::http {

using nlohmann::json;

namespace {

constexpr int kMinRate = 8000, kMaxRate = 192000;

// An error in a client event: becomes an `error` event, the session goes on.
struct EventError {
  std::string code, message, param;
};

[[noreturn]] void Bad(const std::string& param, const std::string& message, const std::string& code = "invalid_value") {
  throw EventError{code, message, param};
}

const json* Find(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

int Rate(const json& value, const std::string& param) {
  if (!value.is_number_integer() || value.get<int64_t>() < kMinRate || value.get<int64_t>() > kMaxRate)
    Bad(param, Str(param, ": expected a sample rate in ", kMinRate, "..", kMaxRate, " Hz, got ", JsonText(value)));
  return value.get<int>();
}

}  // namespace

RealtimeSession::RealtimeSession(engine::Engine& engine, std::shared_ptr<MessageSink> sink, Spawn spawn, Metrics& metrics,
                                 std::string id)
    : engine_(engine), sink_(std::move(sink)), spawn_(std::move(spawn)), metrics_(metrics), id_(std::move(id)) {
  metrics_.StreamOpened("realtime");
}

RealtimeSession::~RealtimeSession() { metrics_.StreamClosed("realtime"); }

std::string RealtimeSession::NextEventId() { return Str("event_", id_, "_", next_event_.fetch_add(1)); }

json RealtimeSession::SessionJson() const {
  const engine::ModelInfo info = engine_.Info();
  json modalities = settings_.audio_out ? json::array({"text", "audio"}) : json::array({"text"});
  json turn = settings_.endpointing_ms < 0
                  ? json(nullptr)
                  : json{{"type", "server_vad"},
                         {"silence_duration_ms",
                          settings_.endpointing_ms == 0 ? engine_.Config().endpointing_silence_ms : settings_.endpointing_ms}};
  return {{"id", "sess_" + id_},
          {"object", "realtime.session"},
          {"type", settings_.respond ? "realtime" : "transcription"},
          {"model", settings_.model.empty() ? info.name : settings_.model},
          {"output_modalities", modalities},
          {"max_output_tokens", settings_.max_answer_tokens == 0 ? engine_.Config().max_answer_tokens : settings_.max_answer_tokens},
          {"audio",
           {{"input",
             {{"format", {{"type", "audio/pcm"}, {"rate", settings_.input_rate}}},
              {"turn_detection", turn},
              {"transcription", {{"model", info.name}}}}},
            {"output",
             {{"format", {{"type", "audio/pcm"}, {"rate", settings_.output_rate}}},
              {"voice", settings_.voice.empty() ? "default" : settings_.voice}}}}},
          {"voices", info.voices},
          {"max_respond_seconds", info.max_respond_seconds}};
}

void RealtimeSession::Start() {
  std::lock_guard<std::mutex> lock(mutex_);
  sink_->Post(JsonText({{"type", "session.created"}, {"event_id", NextEventId()}, {"session", SessionJson()}}));
}

void RealtimeSession::PostError(const std::string& code, const std::string& message, const std::string& param,
                                const std::string& event_id) {
  metrics_.CountError(400, code);
  json error = {{"type", code == "unknown_event" || code == "invalid_json" ? "invalid_request_error" : "invalid_request_error"},
                {"code", code},
                {"message", message},
                {"param", param.empty() ? json(nullptr) : json(param)},
                {"event_id", event_id.empty() ? json(nullptr) : json(event_id)}};
  if (code == "resource_exhausted") error["type"] = "rate_limit_error";
  sink_->Post(JsonText({{"type", "error"}, {"event_id", NextEventId()}, {"error", error}}));
}

void RealtimeSession::OnText(const std::string& text) {
  json event;
  try {
    event = json::parse(text);
  } catch (const json::parse_error& e) {
    PostError("invalid_json", Str("the event is not valid JSON (", e.what(), ")"), "", "");
    return;
  }
  const std::string event_id = event.is_object() && event.contains("event_id") && event["event_id"].is_string()
                                   ? event["event_id"].get<std::string>()
                                   : std::string();
  try {
    Handle(event);
  } catch (const EventError& e) {
    PostError(e.code, e.message, e.param, event_id);
  } catch (const ApiError& e) {
    PostError(e.code(), e.what(), e.param(), event_id);
  } catch (const std::exception& e) {
    const ApiError error = ApiErrorOf(e);
    PostError(error.code(), error.what(), error.param(), event_id);
  }
}

void RealtimeSession::OnBinary() {
  PostError("invalid_event", "binary messages are not events: send JSON text (audio goes base64 in input_audio_buffer.append)",
            "", "");
}

void RealtimeSession::Handle(const json& event) {
  if (!event.is_object()) Bad("", Str("an event must be a JSON object, got ", TypeName(event)), "invalid_event");
  const json* type = Find(event, "type");
  if (type == nullptr || !type->is_string()) Bad("type", "the event has no string `type`", "invalid_event");
  const std::string name = type->get<std::string>();
  if (name == "session.update" || name == "transcription_session.update") return Update(event);
  if (name == "input_audio_buffer.append") return Append(event);
  if (name == "input_audio_buffer.commit") return Commit(event);
  if (name == "response.create") {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!settings_.respond)
      Bad("type", "response.create: this is a transcription session; session.update with type \"realtime\" answers every "
                  "utterance",
          "invalid_value");
    return;  // every utterance of a realtime session is answered without it
  }
  if (name == "input_audio_buffer.clear" || name == "response.cancel" || name == "conversation.item.create" ||
      name == "conversation.item.delete" || name == "conversation.item.truncate" || name == "output_audio_buffer.clear")
    Bad("type", Str("'", name, "' is not supported by this server (audio that was appended is already being transcribed)"),
        "unsupported_event");
  Bad("type", Str("unknown event type '", name, "' (this server takes session.update, input_audio_buffer.append, ",
                  "input_audio_buffer.commit, response.create)"),
      "unknown_event");
}

void RealtimeSession::Update(const json& event) {
  const json* session = Find(event, "session");
  // vLLM's session.update carries `model` at the top level.
  const json& s = session != nullptr ? *session : event;
  if (!s.is_object()) Bad("session", "session: expected an object");
  std::lock_guard<std::mutex> lock(mutex_);
  Settings next = settings_;
  if (const json* type = Find(s, "type")) {
    if (*type == "realtime") next.respond = true;
    else if (*type == "transcription") next.respond = false;
    else Bad("session.type", Str("session.type: ", JsonText(*type), " is not \"realtime\" or \"transcription\""));
  }
  if (const json* model = Find(s, "model"); model != nullptr && !model->is_null()) {
    if (!model->is_string()) Bad("session.model", "session.model: expected a string");
    const std::string name = model->get<std::string>();
    if (name.empty() || name == engine_.Model().Name()) {
      next.model = name;
      next.adapter.clear();
    } else if (engine_.Model().Find(name)) {
      next.model = next.adapter = name;
    } else {
      std::string names = engine_.Model().Name();
      for (const engine::AdapterRef& a : engine_.Model().Adapters()) names += ", " + a->name;
      Bad("session.model", Str("session.model: unknown model '", name, "' (this server has: ", names, ")"), "model_not_found");
    }
  }
  const json* modalities = Find(s, "output_modalities");
  if (modalities == nullptr) modalities = Find(s, "modalities");
  if (modalities != nullptr && !modalities->is_null()) {
    if (!modalities->is_array()) Bad("session.output_modalities", "session.output_modalities: expected an array");
    next.audio_out = false;
    for (const json& m : *modalities) {
      if (m == "audio") next.audio_out = true;
      else if (m != "text") Bad("session.output_modalities", Str("session.output_modalities: ", JsonText(m), " is not text or audio"));
    }
    if (next.audio_out && engine_.Model().Voices().empty())
      Bad("session.output_modalities", "session.output_modalities: this server has no speech synthesizer", "unsupported");
  }
  const json* audio = Find(s, "audio");
  const json* input = audio ? Find(*audio, "input") : nullptr;
  const json* output = audio ? Find(*audio, "output") : nullptr;
  if (const json* format = input ? Find(*input, "format") : nullptr; format != nullptr && !format->is_null()) {
    const json* type = Find(*format, "type");
    if (type != nullptr && *type != "audio/pcm")
      Bad("session.audio.input.format.type", Str("session.audio.input.format.type: ", JsonText(*type), " is not \"audio/pcm\""));
    if (const json* rate = Find(*format, "rate")) next.input_rate = Rate(*rate, "session.audio.input.format.rate");
  }
  if (const json* legacy = Find(s, "input_audio_format"); legacy != nullptr && !legacy->is_null() && *legacy != "pcm16")
    Bad("session.input_audio_format", Str("session.input_audio_format: ", JsonText(*legacy), " is not \"pcm16\""));
  const json* turn = input ? Find(*input, "turn_detection") : nullptr;
  if (turn == nullptr) turn = Find(s, "turn_detection");
  if (turn != nullptr) {
    if (turn->is_null()) {
      next.endpointing_ms = -1;
    } else {
      const json* type = Find(*turn, "type");
      if (type != nullptr && *type != "server_vad")
        Bad("session.audio.input.turn_detection.type",
            Str("turn_detection.type: ", JsonText(*type), " is not supported (server_vad, or null for commits only)"));
      next.endpointing_ms = 0;
      if (const json* silence = Find(*turn, "silence_duration_ms"); silence != nullptr && !silence->is_null()) {
        if (!silence->is_number_integer() || silence->get<int64_t>() < 1 || silence->get<int64_t>() > 60000)
          Bad("session.audio.input.turn_detection.silence_duration_ms", "turn_detection.silence_duration_ms: expected 1..60000");
        next.endpointing_ms = silence->get<int>();
      }
    }
  }
  if (const json* format = output ? Find(*output, "format") : nullptr; format != nullptr && !format->is_null())
    if (const json* rate = Find(*format, "rate")) next.output_rate = Rate(*rate, "session.audio.output.format.rate");
  const json* voice = output ? Find(*output, "voice") : nullptr;
  if (voice == nullptr) voice = Find(s, "voice");
  if (voice != nullptr && !voice->is_null()) {
    if (!voice->is_string()) Bad("session.audio.output.voice", "voice: expected a string");
    const std::vector<std::string> voices = engine_.Model().Voices();
    const std::string v = voice->get<std::string>();
    if (v != "default" && std::find(voices.begin(), voices.end(), v) == voices.end())
      Bad("session.audio.output.voice", Str("voice '", v, "' is not served (voices: ", Join(voices), ")"));
    next.voice = v == "default" ? "" : v;
  }
  const json* max = Find(s, "max_output_tokens");
  if (max == nullptr) max = Find(s, "max_response_output_tokens");
  if (max != nullptr && !max->is_null()) {
    if (*max == "inf") next.max_answer_tokens = 0;
    else if (max->is_number_integer() && max->get<int64_t>() >= 1 && max->get<int64_t>() <= 1 << 20) next.max_answer_tokens = max->get<int>();
    else Bad("session.max_output_tokens", "max_output_tokens: expected a positive integer or \"inf\"");
  }
  if (stream_) EndStream();
  settings_ = next;
  open_failed_ = false;
  sink_->Post(JsonText({{"type", "session.updated"}, {"event_id", NextEventId()}, {"session", SessionJson()}}));
}

bool RealtimeSession::OpenStream() {
  if (stream_) {
    if (engine_.Result(*stream_).ok()) return true;
    stream_.reset();  // it failed (an error event said why); audio goes to a new stream
  }
  if (open_failed_ || ended_) return false;
  engine::StreamSettings s;
  s.request_id = "rt-" + id_;
  s.respond = settings_.respond;
  s.interim = true;
  s.endpointing_ms = settings_.endpointing_ms;
  s.max_answer_tokens = settings_.max_answer_tokens;
  s.adapter = settings_.adapter;
  s.answer_audio = settings_.respond && settings_.audio_out;
  s.answer_audio_rate = settings_.output_rate;
  s.cancelled = [gone = gone_] { return gone->load(); };
  std::shared_ptr<engine::Engine::Stream> stream;
  const engine::Status status = engine_.Open(std::move(s), &stream);
  if (!status.ok()) {
    open_failed_ = true;
    throw EventError{ToLower(engine::CodeName(status.code)), status.message, "session"};
  }
  stream_ = stream;
  resampler_ = std::make_unique<audio::StreamResampler>(settings_.input_rate, engine_.Model().SampleRate());
  queue_.push_back({stream, settings_});
  work_.notify_all();
  if (!writer_started_) {
    writer_started_ = true;
    spawn_([self = shared_from_this()] { self->WriterLoop(); });
  }
  return true;
}

void RealtimeSession::EndStream() {
  if (!stream_) return;
  const std::vector<float> tail = resampler_->Flush();
  engine_.Feed(*stream_, tail.data(), tail.size());
  engine_.HalfClose(*stream_);
  stream_.reset();
  resampler_.reset();
  pending_samples_ = 0;
}

void RealtimeSession::Append(const json& event) {
  const json* audio = Find(event, "audio");
  if (audio == nullptr || !audio->is_string()) Bad("audio", "input_audio_buffer.append: `audio` (base64 PCM16) is missing");
  const std::vector<float> samples = DecodePcm16(Base64Decode(audio->get<std::string>(), "audio"), "audio");
  std::lock_guard<std::mutex> lock(mutex_);
  if (ended_) Bad("type", "the server is draining: no new audio is taken", "draining");
  if (!OpenStream()) return;  // the failure was reported once; commit or session.update retries
  const std::vector<float> resampled = resampler_->Process(samples.data(), samples.size());
  engine_.Feed(*stream_, resampled.data(), resampled.size());
  pending_samples_ += static_cast<int64_t>(samples.size());
}

void RealtimeSession::Commit(const json& event) {
  const json* final_flag = Find(event, "final");
  const bool last = final_flag != nullptr && final_flag->is_boolean() && final_flag->get<bool>();
  std::lock_guard<std::mutex> lock(mutex_);
  open_failed_ = false;
  if (!stream_) return;  // nothing appended yet (vLLM's clients commit once before their audio)
  if (last) return EndStream();
  if (pending_samples_ == 0) return;
  const std::vector<float> tail = resampler_->Flush();
  engine_.Feed(*stream_, tail.data(), tail.size());
  engine_.EndUtterance(*stream_);
  resampler_ = std::make_unique<audio::StreamResampler>(settings_.input_rate, engine_.Model().SampleRate());
  pending_samples_ = 0;
}

void RealtimeSession::OnClose() {
  gone_->store(true);
  std::lock_guard<std::mutex> lock(mutex_);
  ended_ = true;
  const engine::Status why{engine::Code::kCancelled, "the client closed the connection"};
  for (const Queued& q : queue_) engine_.Abort(*q.stream, why);
  stream_.reset();
  work_.notify_all();
}

void RealtimeSession::OnDrain() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (ended_) return;
  EndStream();
  ended_ = true;
  work_.notify_all();
  if (!writer_started_ || writer_done_) sink_->Close();
}

void RealtimeSession::WriterLoop() {
  while (true) {
    Queued next;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_.wait(lock, [&] { return !queue_.empty() || ended_; });
      if (queue_.empty()) {
        writer_done_ = true;
        if (!gone_->load()) sink_->Close();
        return;
      }
      next = queue_.front();
    }
    Drain(next);
    engine_.Close(*next.stream);
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.pop_front();
  }
}

void RealtimeSession::Drain(const Queued& q) {
  static std::atomic<int64_t> streams{0};
  const int64_t stream_number = streams.fetch_add(1);
  engine::Engine::Stream& stream = *q.stream;
  const Settings& settings = q.settings;
  bool ok = !gone_->load();
  auto send = [&](json event) {
    if (!ok) return;
    event["event_id"] = NextEventId();
    if (!sink_->Send(JsonText(event))) {
      ok = false;
      gone_->store(true);
      engine_.Abort(stream, {engine::Code::kCancelled, "the client stopped reading"});
    }
  };
  int current = -1;
  std::string sent, answer, item, response;
  bool spoke = false;
  engine::StreamEvent e;
  while (engine_.Next(stream, &e)) {
    if (!ok) continue;
    if (e.utterance != current) {
      current = e.utterance;
      sent.clear();
      answer.clear();
      spoke = false;
      item = Str("item_", id_, "_", stream_number, "_", current);
      response = Str("resp_", id_, "_", stream_number, "_", current);
      send({{"type", "input_audio_buffer.speech_started"}, {"item_id", item}});
    }
    switch (e.kind) {
      case engine::StreamEvent::Kind::kInterim: {
        std::string delta;
        if (StartsWith(e.interim.text, sent)) {
          delta = e.interim.text.substr(sent.size());
          sent = e.interim.text;
        }
        const double end_ms = e.interim.audio_end_seconds * 1000;
        send({{"type", "conversation.item.input_audio_transcription.delta"},
              {"item_id", item},
              {"content_index", 0},
              {"delta", delta},
              {"transcript", e.interim.text},
              {"stability", e.interim.stability},
              {"audio_end_ms", end_ms}});
        if (!delta.empty()) send({{"type", "transcription.delta"}, {"delta", delta}});
        break;
      }
      case engine::StreamEvent::Kind::kFinal: {
        const engine::Transcript& t = e.final;
        json words = json::array();
        for (const engine::Word& w : t.words)
          words.push_back({{"word", w.text}, {"start", w.start_seconds}, {"end", w.end_seconds}, {"confidence", w.confidence}});
        send({{"type", "input_audio_buffer.speech_stopped"}, {"item_id", item}, {"audio_end_ms", t.end_seconds * 1000}});
        send({{"type", "input_audio_buffer.committed"}, {"item_id", item}, {"previous_item_id", nullptr}});
        send({{"type", "conversation.item.input_audio_transcription.completed"},
              {"item_id", item},
              {"content_index", 0},
              {"transcript", t.text},
              {"confidence", t.confidence},
              {"words", words},
              {"audio_start_ms", t.start_seconds * 1000},
              {"audio_end_ms", t.end_seconds * 1000},
              {"end_reason", t.end_reason == engine::EndReason::kEndpoint        ? "endpoint"
                             : t.end_reason == engine::EndReason::kMaxDuration   ? "max_duration"
                             : t.end_reason == engine::EndReason::kHalfClose     ? "end_of_audio"
                                                                                 : "commit"}});
        send({{"type", "transcription.done"}, {"text", t.text}});
        if (settings.respond)
          send({{"type", "response.created"},
                {"response", {{"id", response}, {"object", "realtime.response"}, {"status", "in_progress"}, {"output", json::array()}}}});
        break;
      }
      case engine::StreamEvent::Kind::kToken:
        if (e.token.text.empty()) break;
        answer += e.token.text;
        send({{"type", "response.output_text.delta"},
              {"response_id", response},
              {"item_id", item},
              {"output_index", 0},
              {"content_index", 0},
              {"delta", e.token.text}});
        break;
      case engine::StreamEvent::Kind::kAudio:
        spoke = true;
        send({{"type", "response.output_audio.delta"},
              {"response_id", response},
              {"item_id", item},
              {"output_index", 0},
              {"content_index", 0},
              {"delta", Base64Encode(EncodePcm16(e.audio.samples))},
              {"sample_rate", e.audio.sample_rate}});
        break;
      case engine::StreamEvent::Kind::kSummary: {
        const engine::UtteranceSummary& s = e.summary;
        if (!settings.respond) break;
        if (s.tokens > 0) metrics_.ObserveFirstToken("/v1/realtime", s.first_answer_token_ms / 1000.0);
        send({{"type", "response.output_text.done"},
              {"response_id", response},
              {"item_id", item},
              {"output_index", 0},
              {"content_index", 0},
              {"text", answer}});
        if (spoke)
          send({{"type", "response.output_audio.done"}, {"response_id", response}, {"item_id", item}, {"output_index", 0}, {"content_index", 0}});
        const bool cut = s.finish == engine::FinishReason::kMaxTokens;
        json content = json::array({{{"type", "output_text"}, {"text", answer}}});
        send({{"type", "response.done"},
              {"response",
               {{"id", response},
                {"object", "realtime.response"},
                {"status", cut ? "incomplete" : "completed"},
                {"status_details", cut ? json{{"type", "incomplete"}, {"reason", "max_output_tokens"}} : json(nullptr)},
                {"output", json::array({{{"id", item + "_answer"}, {"type", "message"}, {"role", "assistant"}, {"content", content}}})},
                {"usage", {{"output_tokens", s.tokens}, {"input_audio_seconds", s.audio_seconds}}},
                {"model", s.model},
                {"adapter", s.adapter},
                {"latency",
                 {{"first_interim_ms", s.first_interim_ms},
                  {"final_after_end_of_audio_ms", s.final_after_end_of_audio_ms},
                  {"first_answer_token_ms", s.first_answer_token_ms},
                  {"total_ms", s.total_ms}}}}}});
        break;
      }
    }
  }
  const engine::Status status = engine_.Result(stream);
  if (!status.ok() && ok && !gone_->load()) {
    const ApiError error(HttpStatusOf(status.code), status.message, "", ToLower(engine::CodeName(status.code)));
    metrics_.CountError(error.status(), error.code());
    send({{"type", "error"},
          {"error", {{"type", error.type()}, {"code", error.code()}, {"message", status.message}, {"param", nullptr}, {"event_id", nullptr}}}});
  }
}

}  // namespace slm::http
