#include "http/transcript_format.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "http/errors.h"
#include "http/sse.h"

namespace slm::http {

std::vector<Segment> Segments(const engine::Transcript& transcript, double audio_seconds) {
  std::vector<Segment> segments;
  if (transcript.words.empty()) {
    if (!transcript.text.empty()) segments.push_back({0.0, audio_seconds, transcript.text, {}});
    return segments;
  }
  for (const engine::Word& word : transcript.words) {
    const bool start_new = segments.empty() || word.start_seconds - segments.back().end >= kSegmentPauseSeconds ||
                           word.end_seconds - segments.back().start > kSegmentMaxSeconds ||
                           segments.back().words.size() >= kSegmentMaxWords;
    if (start_new) segments.push_back({word.start_seconds, word.end_seconds, "", {}});
    Segment& s = segments.back();
    s.text += (s.text.empty() ? "" : " ") + word.text;
    s.end = word.end_seconds;
    s.words.push_back(&word);
  }
  return segments;
}

TranscriptFormat ParseTranscriptFormat(const std::string& name) {
  if (name.empty() || name == "json") return TranscriptFormat::kJson;
  if (name == "text") return TranscriptFormat::kText;
  if (name == "verbose_json") return TranscriptFormat::kVerboseJson;
  if (name == "srt") return TranscriptFormat::kSrt;
  if (name == "vtt") return TranscriptFormat::kVtt;
  Fail(400, Str("response_format '", name, "' is not one of json, text, verbose_json, srt, vtt"), "response_format");
}

std::string SubtitleTime(double seconds, char separator) {
  const int64_t ms = std::max<int64_t>(0, std::llround(seconds * 1000));
  char out[32];
  std::snprintf(out, sizeof(out), "%02lld:%02lld:%02lld%c%03lld", static_cast<long long>(ms / 3600000),
                static_cast<long long>(ms / 60000 % 60), static_cast<long long>(ms / 1000 % 60), separator,
                static_cast<long long>(ms % 1000));
  return out;
}

std::string FormatTranscript(const engine::TranscribeResult& result, TranscriptFormat format, std::string* content_type) {
  const engine::Transcript& t = result.transcript;
  *content_type = "text/plain; charset=utf-8";
  const nlohmann::json usage = {{"type", "duration"}, {"seconds", std::ceil(result.audio_seconds)}};
  switch (format) {
    case TranscriptFormat::kJson:
      *content_type = "application/json";
      return JsonText({{"text", t.text}, {"usage", usage}});
    case TranscriptFormat::kText:
      return t.text + "\n";
    case TranscriptFormat::kVerboseJson: {
      *content_type = "application/json";
      nlohmann::json words = nlohmann::json::array(), segments = nlohmann::json::array();
      for (const engine::Word& w : t.words)
        words.push_back({{"word", w.text}, {"start", w.start_seconds}, {"end", w.end_seconds}, {"confidence", w.confidence}});
      int id = 0;
      for (const Segment& s : Segments(t, result.audio_seconds)) {
        double confidence = 0;
        for (const engine::Word* w : s.words) confidence += w->confidence;
        confidence = s.words.empty() ? t.confidence : confidence / s.words.size();
        segments.push_back({{"id", id++},
                            {"seek", 0},
                            {"start", s.start},
                            {"end", s.end},
                            {"text", s.text},
                            {"tokens", nlohmann::json::array()},
                            {"temperature", 0.0},
                            {"avg_logprob", std::log(std::max(1e-6, confidence))},
                            {"compression_ratio", 1.0},
                            {"no_speech_prob", 0.0}});
      }
      return JsonText({{"task", "transcribe"},
                       {"language", "english"},
                       {"duration", result.audio_seconds},
                       {"text", t.text},
                       {"words", words},
                       {"segments", segments},
                       {"usage", usage}});
    }
    case TranscriptFormat::kSrt:
    case TranscriptFormat::kVtt: {
      const bool srt = format == TranscriptFormat::kSrt;
      std::string out = srt ? "" : "WEBVTT\n\n";
      *content_type = srt ? "application/x-subrip; charset=utf-8" : "text/vtt; charset=utf-8";
      int index = 1;
      for (const Segment& s : Segments(t, result.audio_seconds)) {
        if (srt) out += std::to_string(index++) + "\n";
        out += SubtitleTime(s.start, srt ? ',' : '.') + " --> " + SubtitleTime(s.end, srt ? ',' : '.') + "\n" + s.text + "\n\n";
      }
      return out;
    }
  }
  return "";
}

}  // namespace slm::http
