// Audio in and out of the HTTP front-end: uploaded / base64 files decoded by libsndfile (WAV, MP3,
// FLAC, OGG, ...: audio/audio_io.h reads them in memory) and resampled to the model's rate; PCM16
// and WAV encoding of synthesized speech; PCM16 frames of the realtime WebSocket.
//
// Errors: ApiError 400 naming `param`: not an audio file (code invalid_audio), longer than
// `max_seconds` (audio_too_long), an odd PCM16 byte count (invalid_audio).
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

namespace slm::http {

// An encoded audio file -> mono float samples at `rate` Hz.
std::vector<float> DecodeAudioFile(const std::string& bytes, const std::string& param, int rate, double max_seconds);

// 16-bit little-endian PCM (samples clipped to [-1, 1]), and back.
std::string EncodePcm16(const std::vector<float>& samples);
std::vector<float> DecodePcm16(const std::string& bytes, const std::string& param);

// A whole 16-bit mono WAV file.
std::string EncodeWav(const std::vector<float>& samples, int rate);

}  // namespace slm::http
