// A transcript (engine/types.h) in the response formats of OpenAI's POST /v1/audio/transcriptions:
// json, text, verbose_json (segments and word timestamps), srt and vtt.
//
// Segments (verbose_json's `segments`, the subtitle cues) group the words: a new one starts after a
// pause of kSegmentPauseSeconds or more, or when the segment would pass kSegmentMaxSeconds or
// kSegmentMaxWords. A transcript without words is one segment over the whole audio.
// Thread-safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "engine/types.h"

namespace slm::http {

inline constexpr double kSegmentPauseSeconds = 0.6;
inline constexpr double kSegmentMaxSeconds = 7.0;
inline constexpr size_t kSegmentMaxWords = 14;

struct Segment {
  double start = 0, end = 0;
  std::string text;
  std::vector<const engine::Word*> words;
};

std::vector<Segment> Segments(const engine::Transcript& transcript, double audio_seconds);

enum class TranscriptFormat { kJson, kText, kVerboseJson, kSrt, kVtt };
// ApiError 400 (param response_format) for another name.
TranscriptFormat ParseTranscriptFormat(const std::string& name);

// The response body and its content type.
std::string FormatTranscript(const engine::TranscribeResult& result, TranscriptFormat format, std::string* content_type);

// "00:01:02,345" (srt) or "00:01:02.345" (vtt).
std::string SubtitleTime(double seconds, char separator);

}  // namespace slm::http
