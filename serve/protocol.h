// slm.v1 messages <-> the engine's types, without gRPC's server or client: request parsing with
// errors that name the message and field, PCM decoding and encoding, and the translation of engine
// events to responses. Shared by the gRPC service (serve/service.h), the Converse protocol
// (serve/converse_session.h) and the clients; links protobuf, never grpc++.
//
// Errors are engine::StatusError with the code the request should end with (INVALID_ARGUMENT,
// NOT_FOUND), naming the message ("message 3") or field ("config.encoding").
// Thread-safety: free functions without shared state.
#pragma once

#include <google/protobuf/message.h>

#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/types.h"
#include "slm/v1/speech.pb.h"

namespace slm::serve {

// Parses `bytes` as `message`. A failure throws StatusError INVALID_ARGUMENT naming `where` and,
// when a string field is not valid UTF-8, the field's path ("config.request_id").
void ParseRequest(const std::string& bytes, google::protobuf::Message* message, const std::string& where);

// Raw audio bytes -> float samples. INVALID_ARGUMENT for a byte count that is not whole samples,
// NaN/Inf floats or floats beyond audio::kMaxAbsSample, and encodings other than LINEAR16 and
// FLOAT32 (named by number when unknown), naming `where`.
std::vector<float> DecodePcm(const std::string& bytes, slm::v1::AudioEncoding encoding, const std::string& where);
// Float samples in [-1, 1] (clamped) -> raw bytes: LINEAR16 little-endian, or FLOAT32 as is. What
// clients send and what Synthesize returns.
std::string EncodePcm(const float* samples, size_t count, slm::v1::AudioEncoding encoding);

// NOT_FOUND when `name` is set and is not the served model's name; `field` names the field.
void CheckModel(const engine::Engine& engine, const std::string& name, const std::string& field);
// The encoding of answer audio: LINEAR16 for unspecified; INVALID_ARGUMENT (naming `field`) for
// anything but LINEAR16 and FLOAT32.
slm::v1::AudioEncoding OutputEncoding(slm::v1::AudioEncoding requested, const std::string& field);

slm::v1::AudioChunk ToProto(const engine::AudioOut& audio, slm::v1::AudioEncoding encoding);
void ToProto(const engine::Transcript& transcript, slm::v1::FinalTranscript* out);
slm::v1::AnswerToken ToProto(const engine::Token& token);
slm::v1::ConverseResponse ToProto(const engine::StreamEvent& event, const std::string& request_id,
                                  slm::v1::AudioEncoding answer_audio);
// One event of a Generate / Synthesize job -> the response that carries it, tagged with request_id.
slm::v1::GenerateResponse ToProto(const engine::GenerateEvent& event, const std::string& request_id);
slm::v1::SynthesizeResponse ToProto(const engine::SynthesizeEvent& event, const std::string& request_id,
                                    slm::v1::AudioEncoding encoding);

}  // namespace slm::serve
