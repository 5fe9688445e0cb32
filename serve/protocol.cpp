#include "serve/protocol.h"

#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "audio/audio_io.h"
#include "core/strings.h"

namespace slm::serve {

namespace v1 = slm::v1;
using engine::Code;
using engine::Fail;

std::string EncodePcm(const float* samples, size_t count, v1::AudioEncoding encoding) {
  std::string bytes;
  if (encoding == v1::FLOAT32) {
    bytes.assign(reinterpret_cast<const char*>(samples), count * sizeof(float));
    return bytes;
  }
  bytes.resize(count * 2);
  for (size_t i = 0; i < count; ++i) {
    const float x = std::clamp(samples[i], -1.f, 1.f);
    const auto v = static_cast<int16_t>(std::lrint(x * 32767.f));
    bytes[2 * i] = static_cast<char>(v & 0xFF);
    bytes[2 * i + 1] = static_cast<char>((v >> 8) & 0xFF);
  }
  return bytes;
}

void CheckModel(const engine::Engine& engine, const std::string& name, const std::string& field) {
  const std::string& served = const_cast<engine::Engine&>(engine).Model().Name();
  if (!name.empty() && name != served)
    Fail(Code::kNotFound, Str(field, ": unknown model '", name, "' (this server has: ", served, ")"));
}

// The path of the first string field of `descriptor` whose bytes in `wire` are not UTF-8 as
// protobuf demands it (core's FindInvalidUtf8: no overlong forms, surrogates, code points above
// U+10FFFF or truncated sequences), or "".
namespace {

std::string BadUtf8Field(const google::protobuf::Descriptor* descriptor, const std::string& wire, const std::string& prefix) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(wire)) return "";
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& f = fields.field(i);
    if (f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const google::protobuf::FieldDescriptor* field = descriptor->FindFieldByNumber(f.number());
    if (field == nullptr) continue;
    const std::string path = prefix + field->name();
    if (field->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
        FindInvalidUtf8(f.length_delimited()) != std::string_view::npos)
      return path;
    if (field->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      const std::string inner = BadUtf8Field(field->message_type(), f.length_delimited(), path + ".");
      if (!inner.empty()) return inner;
    }
  }
  return "";
}

// What every answer's summary reports the same way (engine::UtteranceSummary and GenerateSummary
// into v1::UtteranceSummary and GenerateSummary): time, tokens, why it ended, who answered.
template <class Summary, class Proto>
void SetAnswerOutcome(const Summary& s, Proto* summary) {
  summary->set_total_ms(s.total_ms);
  summary->set_tokens_generated(s.tokens);
  summary->set_finish_reason(static_cast<v1::FinishReason>(s.finish));
  summary->set_model(s.model);
  summary->set_adapter(s.adapter);
}

}  // namespace

v1::AudioChunk ToProto(const engine::AudioOut& audio, v1::AudioEncoding encoding) {
  v1::AudioChunk chunk;
  chunk.set_sample_rate_hz(audio.sample_rate);
  chunk.set_encoding(encoding);
  chunk.set_audio(EncodePcm(audio.samples.data(), audio.samples.size(), encoding));
  chunk.set_start_seconds(audio.start_seconds);
  return chunk;
}

void ToProto(const engine::Transcript& t, v1::FinalTranscript* f) {
  f->set_text(t.text);
  f->set_is_final(true);
  f->set_confidence(t.confidence);
  for (const engine::Word& w : t.words) {
    v1::WordInfo* info = f->add_words();
    info->set_word(w.text);
    info->set_start_seconds(w.start_seconds);
    info->set_end_seconds(w.end_seconds);
    info->set_confidence(w.confidence);
  }
  f->set_start_seconds(t.start_seconds);
  f->set_end_seconds(t.end_seconds);
  f->set_end_reason(static_cast<v1::UtteranceEnd>(t.end_reason));
}

v1::AnswerToken ToProto(const engine::Token& token) {
  v1::AnswerToken out;
  out.set_text(token.text);
  out.set_token_id(static_cast<int32_t>(token.id));
  out.set_index(token.index);
  return out;
}

v1::ConverseResponse ToProto(const engine::StreamEvent& event, const std::string& request_id, v1::AudioEncoding audio) {
  v1::ConverseResponse response;
  response.set_request_id(request_id);
  response.set_utterance_index(event.utterance);
  switch (event.kind) {
    case engine::StreamEvent::Kind::kInterim: {
      v1::InterimTranscript* interim = response.mutable_interim_transcript();
      interim->set_text(event.interim.text);
      interim->set_stability(event.interim.stability);
      interim->set_is_final(false);
      interim->set_audio_end_seconds(event.interim.audio_end_seconds);
      break;
    }
    case engine::StreamEvent::Kind::kFinal:
      ToProto(event.final, response.mutable_final_transcript());
      break;
    case engine::StreamEvent::Kind::kToken:
      *response.mutable_answer_token() = ToProto(event.token);
      break;
    case engine::StreamEvent::Kind::kAudio:
      *response.mutable_answer_audio() = ToProto(event.audio, audio);
      break;
    case engine::StreamEvent::Kind::kSummary: {
      const engine::UtteranceSummary& s = event.summary;
      v1::UtteranceSummary* summary = response.mutable_summary();
      summary->set_first_interim_ms(s.first_interim_ms);
      summary->set_final_after_end_of_audio_ms(s.final_after_end_of_audio_ms);
      summary->set_first_answer_token_ms(s.first_answer_token_ms);
      summary->set_audio_seconds_processed(s.audio_seconds);
      SetAnswerOutcome(s, summary);
      break;
    }
  }
  return response;
}

v1::GenerateResponse ToProto(const engine::GenerateEvent& event, const std::string& request_id) {
  v1::GenerateResponse response;
  response.set_request_id(request_id);
  if (event.kind == engine::GenerateEvent::Kind::kToken) {
    *response.mutable_token() = ToProto(event.token);
  } else {
    v1::GenerateSummary* summary = response.mutable_summary();
    summary->set_first_token_ms(event.summary.first_token_ms);
    summary->set_prompt_tokens(event.summary.prompt_tokens);
    SetAnswerOutcome(event.summary, summary);
  }
  return response;
}

v1::SynthesizeResponse ToProto(const engine::SynthesizeEvent& event, const std::string& request_id,
                               v1::AudioEncoding encoding) {
  v1::SynthesizeResponse response;
  response.set_request_id(request_id);
  if (event.kind == engine::SynthesizeEvent::Kind::kAudio) {
    *response.mutable_audio() = ToProto(event.audio, encoding);
  } else {
    v1::SynthesizeSummary* summary = response.mutable_summary();
    summary->set_audio_seconds(event.summary.audio_seconds);
    summary->set_first_audio_ms(event.summary.first_audio_ms);
    summary->set_total_ms(event.summary.total_ms);
  }
  return response;
}

v1::AudioEncoding OutputEncoding(v1::AudioEncoding requested, const std::string& field) {
  if (requested == v1::AUDIO_ENCODING_UNSPECIFIED) return v1::LINEAR16;
  if (requested != v1::LINEAR16 && requested != v1::FLOAT32)
    Fail(Code::kInvalidArgument, Str(field, " must be LINEAR16 or FLOAT32, got ", requested));
  return requested;
}

void ParseRequest(const std::string& bytes, google::protobuf::Message* message, const std::string& where) {
  if (message->ParseFromString(bytes)) return;
  const std::string field = BadUtf8Field(message->GetDescriptor(), bytes, "");
  if (!field.empty()) Fail(Code::kInvalidArgument, Str(where, ": field '", field, "' is not valid UTF-8"));
  Fail(Code::kInvalidArgument, Str(where, ": not a valid ", message->GetDescriptor()->full_name(),
                                         " (the bytes do not parse as protobuf)"));
}

std::vector<float> DecodePcm(const std::string& bytes, v1::AudioEncoding encoding, const std::string& where) {
  std::vector<float> samples;
  if (encoding == v1::LINEAR16) {
    if (bytes.size() % 2 != 0)
      Fail(Code::kInvalidArgument, Str(where, ": ", bytes.size(), " bytes is not a whole number of LINEAR16 ",
                                             "samples (2 bytes each)"));
    samples.resize(bytes.size() / 2);
    for (size_t i = 0; i < samples.size(); ++i) {
      const auto lo = static_cast<uint8_t>(bytes[2 * i]), hi = static_cast<uint8_t>(bytes[2 * i + 1]);
      samples[i] = static_cast<int16_t>(static_cast<uint16_t>(lo | (hi << 8))) / 32768.0f;
    }
  } else if (encoding == v1::FLOAT32) {
    if (bytes.size() % 4 != 0)
      Fail(Code::kInvalidArgument, Str(where, ": ", bytes.size(), " bytes is not a whole number of FLOAT32 ",
                                             "samples (4 bytes each)"));
    samples.resize(bytes.size() / 4);
    // little-endian hosts only (x86-64, arm64); an empty chunk has no buffer to copy into
    if (!bytes.empty()) std::memcpy(samples.data(), bytes.data(), bytes.size());
    for (size_t i = 0; i < samples.size(); ++i)
      if (!std::isfinite(samples[i]))
        Fail(Code::kInvalidArgument, Str(where, ": FLOAT32 sample ", i, " is ", std::isnan(samples[i]) ? "NaN" : "infinite"));
      else if (std::fabs(samples[i]) > audio::kMaxAbsSample)
        Fail(Code::kInvalidArgument, Str(where, ": FLOAT32 sample ", i, " is ", samples[i], ", beyond +-", audio::kMaxAbsSample,
                                         " (samples are nominally in [-1, 1])"));
  } else {
    const std::string name = v1::AudioEncoding_Name(encoding);
    Fail(Code::kInvalidArgument, Str(where, ": encoding must be LINEAR16 or FLOAT32, got ",
                                           name.empty() ? std::to_string(static_cast<int>(encoding)) : name));
  }
  return samples;
}

}  // namespace slm::serve
