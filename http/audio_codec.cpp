#include "http/audio_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "audio/audio_io.h"
#include "core/error.h"
#include "http/errors.h"

namespace slm::http {

std::vector<float> DecodeAudioFile(const std::string& bytes, const std::string& param, int rate, double max_seconds) {
  if (bytes.empty()) Fail(400, param + ": the audio is empty", param, "invalid_audio");
  audio::FileInfo info;
  try {
    info = audio::ProbeMemory(bytes, param);
  } catch (const Error& e) {
    Fail(400, Str(param, ": not a readable audio file (", e.what(), "); send WAV, MP3, FLAC or OGG"), param, "invalid_audio");
  }
  const double seconds = double(info.frames) / info.sample_rate;
  if (seconds > max_seconds)
    Fail(400, Str(param, ": ", seconds, " s of audio is longer than this server's limit of ", max_seconds, " s per request"),
         param, "audio_too_long");
  audio::ReadOptions options;
  options.target_rate = rate;
  options.max_seconds = max_seconds;
  try {
    return audio::ReadMemory(bytes, param, options).samples;
  } catch (const Error& e) {
    Fail(400, Str(param, ": ", e.what()), param, "invalid_audio");
  }
}

std::string EncodePcm16(const std::vector<float>& samples) {
  std::string bytes(samples.size() * 2, '\0');
  for (size_t i = 0; i < samples.size(); ++i) {
    const float s = std::isfinite(samples[i]) ? std::clamp(samples[i], -1.0f, 1.0f) : 0.0f;
    const auto v = static_cast<int16_t>(std::lrint(s * 32767.0f));
    bytes[2 * i] = static_cast<char>(v & 0xFF);
    bytes[2 * i + 1] = static_cast<char>((v >> 8) & 0xFF);
  }
  return bytes;
}

std::vector<float> DecodePcm16(const std::string& bytes, const std::string& param) {
  if (bytes.size() % 2 != 0)
    Fail(400, Str(param, ": ", bytes.size(), " bytes is not a whole number of 16-bit samples"), param, "invalid_audio");
  std::vector<float> samples(bytes.size() / 2);
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto lo = static_cast<uint8_t>(bytes[2 * i]), hi = static_cast<uint8_t>(bytes[2 * i + 1]);
    samples[i] = static_cast<int16_t>(static_cast<uint16_t>(lo | (hi << 8))) / 32768.0f;
  }
  return samples;
}

std::string EncodeWav(const std::vector<float>& samples, int rate) {
  const std::string pcm = EncodePcm16(samples);
  std::string out;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  auto u16 = [&](uint16_t v) {
    out += static_cast<char>(v & 0xFF);
    out += static_cast<char>(v >> 8);
  };
  out += "RIFF";
  u32(static_cast<uint32_t>(36 + pcm.size()));
  out += "WAVEfmt ";
  u32(16);
  u16(1);  // PCM
  u16(1);  // mono
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate * 2));
  u16(2);
  u16(16);
  out += "data";
  u32(static_cast<uint32_t>(pcm.size()));
  out += pcm;
  return out;
}

}  // namespace slm::http
