// Base64 (RFC 4648, standard alphabet) for audio in JSON: OpenAI's input_audio.data, realtime
// input_audio_buffer.append / audio deltas, chat completions' audio output.
//
// Decode is strict: every character must be of the alphabet ('=' only as padding at the end);
// padding may be left out; whitespace is not allowed. A failure throws ApiError 400 naming `param`
// and the offset of the first bad character. Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace slm::http {

std::string Base64Encode(std::string_view bytes);
std::string Base64Decode(std::string_view text, const std::string& param);

}  // namespace slm::http
