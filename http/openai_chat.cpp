// POST /v1/chat/completions (http/endpoints.h): OpenAI's messages -> one engine Generate request.
//
// The prompt: the messages' contents in order, one line each, without role labels (the served
// backbones have no chat template); in a message, text parts as they are and each media part as
// its marker ("<speech>" for input_audio, "<image>" for image_url), separated by spaces. A message
// that is one media part and nothing else takes the prompt the adapter was trained with for that
// medium (its tasks.json template holding only that marker, e.g. sqa's "<speech> Answer:"), so an
// audio question gets the answer the spoken-QA task gives (the same as a RESPOND stream); for an
// adapter whose sqa template holds "{transcript}", the audio is transcribed first and the
// transcript fills the template, as a RESPOND stream does.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/strings.h"
#include "http/audio_codec.h"
#include "http/base64.h"
#include "http/endpoints.h"
#include "http/errors.h"
#include "http/json_fields.h"
#include "http/sse.h"
#include "vision/image.h"

namespace slm::http {

namespace {

constexpr int kPcmRate = 24000;  // OpenAI's pcm16 audio output

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Chat {
  engine::GenerateSettings settings;
  std::string model;
  bool stream = false, include_usage = false;
  bool audio_out = false;
  std::string voice, audio_format = "wav";
};

// The adapter's template for a message that is one `marker` and nothing else, or "".
std::string MediaTemplate(const engine::AdapterRef& adapter, const std::string& marker) {
  if (!adapter) return "";
  std::vector<std::pair<std::string, std::string>> tasks(adapter->tasks.begin(), adapter->tasks.end());
  std::stable_partition(tasks.begin(), tasks.end(), [](const auto& t) { return t.first == "sqa"; });
  for (const auto& [task, prompt] : tasks) {
    const size_t at = prompt.find(marker);
    if (at != std::string::npos && prompt.find(marker, at + 1) == std::string::npos &&
        prompt.find('{') == std::string::npos && prompt.find(marker == "<speech>" ? "<image>" : "<speech>") == std::string::npos)
      return prompt;
  }
  return "";
}

// "data:<type>;base64,<data>" -> the bytes; ApiError naming `path` otherwise.
std::string DataUrl(const std::string& url, const std::string& path) {
  if (!StartsWith(url, "data:"))
    Fail(400, Str(path, ": only data: URLs are accepted (this server fetches nothing), got '", url.substr(0, 40), "'"), path);
  const size_t comma = url.find(',');
  if (comma == std::string::npos || url.substr(0, comma).find(";base64") == std::string::npos)
    Fail(400, Str(path, ": a data: URL must be base64 (data:<type>;base64,<data>)"), path);
  return Base64Decode(std::string_view(url).substr(comma + 1), path);
}

std::string RenderMessages(const Context& c, const json& messages, const engine::AdapterRef& adapter,
                           engine::GenerateSettings* settings) {
  if (!messages.is_array() || messages.empty())
    Fail(400, Str("messages: expected a non-empty array, got ", TypeName(messages)), "messages");
  const int rate = c.engine.Model().SampleRate();
  const double max_seconds = std::min(c.engine.Config().max_file_seconds, c.engine.Model().MaxSpeechSeconds());
  std::vector<std::string> lines;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string path = Str("messages[", i, "]");
    const json& m = messages[i];
    if (!m.is_object()) Fail(400, Str(path, ": expected an object, got ", TypeName(m)), path);
    const std::string role = ReqString(m, "role", path + ".role");
    if (role != "system" && role != "developer" && role != "user" && role != "assistant")
      Fail(400, Str(path, ".role: '", role, "' is not system, developer, user or assistant"), path + ".role");
    const auto content = m.find("content");
    if (content == m.end() || content->is_null()) continue;
    if (content->is_string()) {
      lines.push_back(content->get<std::string>());
      continue;
    }
    if (!content->is_array())
      Fail(400, Str(path, ".content: expected a string or an array of parts, got ", TypeName(*content)), path + ".content");
    std::vector<std::string> pieces;
    bool text = false;
    for (size_t j = 0; j < content->size(); ++j) {
      const std::string where = Str(path, ".content[", j, "]");
      const json& part = (*content)[j];
      if (!part.is_object()) Fail(400, Str(where, ": expected an object, got ", TypeName(part)), where);
      const std::string type = ReqString(part, "type", where + ".type");
      if (type == "text") {
        pieces.push_back(ReqString(part, "text", where + ".text"));
        text = true;
      } else if (type == "input_audio" || type == "audio_url") {
        std::string bytes;
        if (type == "input_audio") {
          const auto audio = part.find("input_audio");
          if (audio == part.end() || !audio->is_object())
            Fail(400, Str(where, ".input_audio: expected an object {data, format}"), where + ".input_audio");
          const std::string format = OptString(*audio, "format", where + ".input_audio.format").value_or("wav");
          static const std::vector<std::string> kFormats = {"wav", "mp3", "flac", "ogg"};
          if (std::find(kFormats.begin(), kFormats.end(), format) == kFormats.end())
            Fail(400, Str(where, ".input_audio.format: '", format, "' is not wav, mp3, flac or ogg"), where + ".input_audio.format");
          std::string data = ReqString(*audio, "data", where + ".input_audio.data");
          bytes = StartsWith(data, "data:") ? DataUrl(data, where + ".input_audio.data")
                                            : Base64Decode(data, where + ".input_audio.data");
        } else {
          const auto url = part.find("audio_url");
          if (url == part.end() || !url->is_object()) Fail(400, Str(where, ".audio_url: expected an object {url}"), where);
          bytes = DataUrl(ReqString(*url, "url", where + ".audio_url.url"), where + ".audio_url.url");
        }
        settings->audio.push_back(DecodeAudioFile(bytes, where, rate, max_seconds));
        pieces.push_back("<speech>");
      } else if (type == "image_url") {
        const auto url = part.find("image_url");
        if (url == part.end() || !url->is_object()) Fail(400, Str(where, ".image_url: expected an object {url}"), where);
        const std::string bytes = DataUrl(ReqString(*url, "url", where + ".image_url.url"), where + ".image_url.url");
        try {
          settings->images.push_back(vision::DecodeImage(bytes, where + ".image_url"));
        } catch (const engine::StatusError&) {
          throw;
        } catch (const Error& e) {
          Fail(400, e.what(), where + ".image_url", "invalid_image");
        }
        pieces.push_back("<image>");
      } else {
        Fail(400, Str(where, ".type: '", type, "' is not supported (text, input_audio, image_url)"), where + ".type");
      }
    }
    if (!text && pieces.size() == 1) {
      const std::string prompt = MediaTemplate(adapter, pieces[0]);
      if (!prompt.empty()) pieces[0] = prompt;
    }
    lines.push_back(Join(pieces, " "));
  }
  return Join(lines, "\n");
}

// `cancelled`: the client left (the transcription of a transcript adapter's audio stops then).
Chat ParseChat(const Context& c, const json& body, const engine::Cancelled& cancelled) {
  Chat chat;
  chat.model = ReqString(body, "model", "model");
  engine::AdapterRef adapter;
  if (chat.model != c.engine.Model().Name()) {
    adapter = c.engine.Model().Find(chat.model);
    if (!adapter)
      Fail(404, Str("model: unknown model '", chat.model, "' (this server has: ", ServedNames(c.engine), ")"), "model",
           "model_not_found");
    chat.settings.adapter = chat.model;
  }
  engine::GenerateSettings& s = chat.settings;
  s.request_id = c.request_id;
  if (const auto n = OptInteger(body, "n", "n"); n && *n != 1) Fail(400, "n: only 1 choice per request is supported", "n");
  if (OptBool(body, "logprobs", "logprobs").value_or(false)) Fail(400, "logprobs are not supported", "logprobs");
  for (const char* key : {"tools", "functions"})
    if (body.contains(key) && !body[key].is_null() && !(body[key].is_array() && body[key].empty()))
      Fail(400, Str(key, ": tool calls are not supported"), key);
  std::optional<int64_t> max_tokens = OptInteger(body, "max_completion_tokens", "max_completion_tokens");
  if (!max_tokens) max_tokens = OptInteger(body, "max_tokens", "max_tokens");
  if (max_tokens) {
    if (*max_tokens < 1) Fail(400, Str("max_tokens must be at least 1, got ", *max_tokens), "max_tokens");
    s.max_new_tokens = static_cast<int>(std::min<int64_t>(*max_tokens, INT32_MAX));
  }
  s.sampling.temperature = OptNumber(body, "temperature", "temperature").value_or(0.0);
  if (!(s.sampling.temperature >= 0 && s.sampling.temperature <= 2))
    Fail(400, Str("temperature must be in [0, 2], got ", s.sampling.temperature), "temperature");
  s.sampling.top_p = OptNumber(body, "top_p", "top_p").value_or(1.0);
  if (!(s.sampling.top_p > 0 && s.sampling.top_p <= 1)) Fail(400, Str("top_p must be in (0, 1], got ", s.sampling.top_p), "top_p");
  s.sampling.top_k = OptInteger(body, "top_k", "top_k").value_or(0);
  if (s.sampling.top_k < 0) Fail(400, Str("top_k must be >= 0, got ", s.sampling.top_k), "top_k");
  s.sampling.repetition_penalty = OptNumber(body, "repetition_penalty", "repetition_penalty").value_or(1.0);
  if (!(s.sampling.repetition_penalty > 0))
    Fail(400, Str("repetition_penalty must be > 0, got ", s.sampling.repetition_penalty), "repetition_penalty");
  s.sampling.seed = static_cast<uint64_t>(OptInteger(body, "seed", "seed").value_or(0));
  if (const auto stop = body.find("stop"); stop != body.end() && !stop->is_null()) {
    if (stop->is_string()) {
      s.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array() && stop->size() <= 4) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) Fail(400, Str("stop[", i, "]: expected a string, got ", TypeName((*stop)[i])), "stop");
        s.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      Fail(400, "stop: expected a string or an array of up to 4 strings", "stop");
    }
    s.stop.erase(std::remove(s.stop.begin(), s.stop.end(), std::string()), s.stop.end());
  }
  chat.stream = OptBool(body, "stream", "stream").value_or(false);
  if (const auto options = body.find("stream_options"); options != body.end() && options->is_object())
    chat.include_usage = OptBool(*options, "include_usage", "stream_options.include_usage").value_or(false);
  if (const auto modalities = body.find("modalities"); modalities != body.end() && !modalities->is_null()) {
    if (!modalities->is_array()) Fail(400, "modalities: expected an array such as [\"text\", \"audio\"]", "modalities");
    for (const json& m : *modalities) {
      if (m == "audio") chat.audio_out = true;
      else if (m != "text") Fail(400, Str("modalities: '", JsonText(m), "' is not text or audio"), "modalities");
    }
  }
  if (chat.audio_out) {
    if (c.engine.Model().Voices().empty())
      Fail(400, "modalities: this server has no speech synthesizer (no adapter trained for task tts)", "modalities",
           "unsupported");
    const auto audio = body.find("audio");
    if (audio != body.end() && audio->is_object()) {
      chat.voice = OptString(*audio, "voice", "audio.voice").value_or("");
      chat.audio_format = OptString(*audio, "format", "audio.format").value_or("wav");
    }
    if (chat.audio_format != "wav" && chat.audio_format != "pcm16")
      Fail(400, Str("audio.format '", chat.audio_format, "' is not supported here (wav, pcm16)"), "audio.format");
    if (chat.stream && chat.audio_format != "pcm16")
      Fail(400, "audio.format must be pcm16 when stream is true", "audio.format");
    const std::vector<std::string> voices = c.engine.Model().Voices();
    if (!chat.voice.empty() && std::find(voices.begin(), voices.end(), chat.voice) == voices.end())
      Fail(400, Str("audio.voice '", chat.voice, "' is not served (voices: ", Join(voices), ")"), "audio.voice");
  }
  s.prompt = RenderMessages(c, body.contains("messages") ? body["messages"] : json(), adapter, &s);
  if (adapter && adapter->answers_transcript && s.prompt == "<speech>" && s.audio.size() == 1) {
    // An adapter that answers spoken questions from their transcripts (engine/served_model.h): the
    // same transcript and prompt as a RESPOND stream of that audio.
    engine::TranscribeResult heard;
    Require(c.engine.Transcribe(std::move(s.audio[0]), cancelled, &heard), "messages");
    s.audio.clear();
    s.prompt = engine::FillTranscript(adapter->tasks.at("sqa"), heard.transcript.text);
  }
  return chat;
}

const char* FinishName(engine::FinishReason reason) {
  return reason == engine::FinishReason::kMaxTokens ? "length" : "stop";
}

// Speaks `text`; calls `chunk` with each piece of audio (false from it stops).
template <class OnChunk>
void Speak(const Context& c, const Chat& chat, const std::string& text, Exchange& exchange, OnChunk chunk) {
  engine::SynthesizeSettings settings;
  settings.request_id = c.request_id;
  settings.text = text;
  settings.voice = chat.voice == "default" ? "" : chat.voice;
  settings.sample_rate = chat.audio_format == "pcm16" ? kPcmRate : 0;
  settings.cancelled = [&exchange] { return exchange.ClientGone(); };
  std::shared_ptr<engine::Engine::SynthesizeJob> job;
  Require(c.engine.StartSynthesize(std::move(settings), &job), "modalities");
  engine::SynthesizeEvent event;
  bool wanted = true;
  while (wanted && c.engine.Next(*job, &event))
    if (event.kind == engine::SynthesizeEvent::Kind::kAudio) wanted = chunk(event.audio);
  const engine::Status status = c.engine.Result(*job);
  c.engine.Close(*job);
  Require(status, "modalities");
}

}  // namespace

void ChatCompletions(const Context& c, const Request& request, Exchange& exchange) {
  const engine::Cancelled client_gone = [&exchange] { return exchange.ClientGone(); };
  Chat chat = ParseChat(c, ParseJsonObject(request.body), client_gone);
  chat.settings.cancelled = client_gone;
  const std::string id = "chatcmpl-" + c.request_id;
  const std::string audio_id = "audio-" + c.request_id;
  const int64_t created = UnixTime();
  const bool stream = chat.stream, include_usage = chat.include_usage, audio_out = chat.audio_out;
  std::shared_ptr<engine::Engine::GenerateJob> job;
  Require(c.engine.StartGenerate(std::move(chat.settings), &job));
  struct CloseJob {
    engine::Engine& engine;
    std::shared_ptr<engine::Engine::GenerateJob>& job;
    ~CloseJob() { engine.Close(*job); }
  } close_job{c.engine, job};

  auto chunk = [&](const json& delta, const json& finish) {
    return SseEvent({{"id", id},
                     {"object", "chat.completion.chunk"},
                     {"created", created},
                     {"model", chat.model},
                     {"choices", json::array({{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}})}});
  };
  std::string text;
  engine::GenerateSummary summary;
  engine::GenerateEvent event;
  bool first = true;
  if (stream) {
    if (!exchange.BeginStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}})) return;
    if (!exchange.Write(chunk(audio_out ? json{{"role", "assistant"}, {"content", nullptr}} : json{{"role", "assistant"}, {"content", ""}},
                              nullptr)))
      return;
  }
  while (c.engine.Next(*job, &event)) {
    if (event.kind == engine::GenerateEvent::Kind::kSummary) {
      summary = event.summary;
      continue;
    }
    if (event.token.text.empty()) continue;
    text += event.token.text;
    if (!stream) continue;
    const json delta = audio_out ? json{{"audio", {{"id", audio_id}, {"transcript", event.token.text}}}}
                                 : json{{"content", event.token.text}};
    if (!exchange.Write(chunk(delta, nullptr))) return;
    if (first) {
      first = false;
      c.metrics.ObserveFirstToken(request.path, std::chrono::duration<double>(Clock::now() - c.arrived).count());
    }
  }
  const engine::Status status = c.engine.Result(*job);
  if (!status.ok()) {
    if (!stream) Require(status);
    const ApiError error(HttpStatusOf(status.code), status.message, "", ToLower(engine::CodeName(status.code)));
    c.metrics.CountError(error.status(), error.code());
    exchange.Write("data: " + ErrorBody(error) + "\n\n");
    exchange.EndStream();
    return;
  }
  const json usage = {{"prompt_tokens", summary.prompt_tokens},
                      {"completion_tokens", summary.tokens},
                      {"total_tokens", summary.prompt_tokens + summary.tokens}};
  const bool speak = audio_out && text.find_first_not_of(" \t\r\n") != std::string::npos;
  if (stream) {
    if (speak)
      Speak(c, chat, text, exchange, [&](const engine::AudioOut& audio) {
        return exchange.Write(chunk({{"audio", {{"id", audio_id}, {"data", Base64Encode(EncodePcm16(audio.samples))}}}}, nullptr));
      });
    if (!exchange.Write(chunk(json::object(), FinishName(summary.finish)))) return;
    if (include_usage)
      exchange.Write(SseEvent(
          {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", chat.model}, {"choices", json::array()}, {"usage", usage}}));
    exchange.Write(SseDone());
    exchange.EndStream();
    return;
  }
  json message = {{"role", "assistant"}, {"content", text}};
  if (audio_out) {
    std::vector<float> samples;
    int rate = kPcmRate;
    if (speak)
      Speak(c, chat, text, exchange, [&](const engine::AudioOut& audio) {
        samples.insert(samples.end(), audio.samples.begin(), audio.samples.end());
        rate = audio.sample_rate;
        return true;
      });
    const std::string bytes = chat.audio_format == "pcm16" ? EncodePcm16(samples) : EncodeWav(samples, rate);
    message["content"] = nullptr;
    message["audio"] = {{"id", audio_id}, {"data", Base64Encode(bytes)}, {"expires_at", created + 3600}, {"transcript", text}};
  }
  Response response;
  response.body = JsonText({{"id", id},
                            {"object", "chat.completion"},
                            {"created", created},
                            {"model", chat.model},
                            {"choices", json::array({{{"index", 0}, {"message", message}, {"finish_reason", FinishName(summary.finish)}}})},
                            {"usage", usage}});
  exchange.Reply(std::move(response));
}

}  // namespace slm::http
