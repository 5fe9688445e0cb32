#include "datagen/speech_corpus.h"

#include <chrono>
#include <cstdio>

#include "core/error.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/progress.h"
#include "core/strings.h"

namespace slm::datagen {

using audio::AvailableEnglishVoices;
using audio::CheckEnglishVoice;
using audio::EspeakSynthesizer;
using audio::SynthResult;
using audio::VoiceForSeed;
using audio::VoiceSpec;

namespace {

struct Line {
  int64_t number = 0;  // 1-based line number in the file
  std::string text;
};

std::vector<Line> ReadSentences(const std::string& path) {
  std::string content;
  try {
    content = fs::ReadFile(path);
  } catch (const Error& e) {
    throw Error(Str("speech corpus text file: ", e.what()));
  }
  std::vector<Line> lines;
  int64_t number = 0;
  for (size_t begin = 0; begin < content.size();) {
    size_t end = content.find('\n', begin);
    if (end == std::string::npos) end = content.size();
    ++number;
    std::string text = Trim(std::string_view(content).substr(begin, end - begin));
    if (!text.empty()) lines.push_back(Line{number, std::move(text)});
    begin = end + 1;
  }
  return lines;
}

std::string UtteranceId(int64_t index) {
  char id[32];
  std::snprintf(id, sizeof id, "u%06lld", static_cast<long long>(index + 1));
  return id;
}

}  // namespace

VoiceSpec CorpusVoice(uint64_t seed, int64_t index, const std::vector<std::string>& voices) {
  return VoiceForSeed(seed * 1000003ULL + static_cast<uint64_t>(index), voices);
}

std::vector<std::string> SelectVoices(const std::vector<std::string>& include,
                                      const std::vector<std::string>& exclude) {
  const std::vector<std::string>& all = AvailableEnglishVoices();
  auto matches = [](const std::string& entry, const std::string& voice) {
    if (entry.empty() || entry[0] != '+') return entry == voice;
    return voice.size() > entry.size() && voice.compare(voice.size() - entry.size(), entry.size(), entry) == 0;
  };
  auto expand = [&](const std::vector<std::string>& entries, const char* what) {
    std::vector<bool> chosen(all.size(), false);
    for (const std::string& entry : entries) {
      bool any = false;
      for (size_t v = 0; v < all.size(); ++v)
        if (matches(entry, all[v])) chosen[v] = any = true;
      if (!any) CheckEnglishVoice(entry);  // lists the valid names
      Check(any, what, ": '", entry, "' matches no English espeak-ng voice");
    }
    return chosen;
  };
  std::vector<bool> in = include.empty() ? std::vector<bool>(all.size(), true) : expand(include, "voices");
  const std::vector<bool> out = expand(exclude, "exclude_voices");
  std::vector<std::string> voices;
  for (size_t v = 0; v < all.size(); ++v)
    if (in[v] && !out[v]) voices.push_back(all[v]);
  Check(!voices.empty(), "no voice left after excluding exclude_voices from voices");
  return voices;
}

SpeechCorpusStats SynthesizeCorpus(const SpeechCorpusOptions& options) {
  const auto start_time = std::chrono::steady_clock::now();
  Check(!options.text_path.empty(), "speech corpus: no text file given");
  Check(!options.out_dir.empty(), "speech corpus: no output directory given");
  Check(options.limit >= 0, "speech corpus: limit must be >= 0, got ", options.limit);

  const EspeakSynthesizer& synthesizer = EspeakSynthesizer::Instance();
  const std::vector<std::string> voices = SelectVoices(options.voices, options.exclude_voices);

  std::vector<Line> lines = ReadSentences(options.text_path);
  Check(!lines.empty(), "text file '", options.text_path,
        "' has no sentences (expected one sentence per line)");
  if (options.limit > 0 && static_cast<int64_t>(lines.size()) > options.limit)
    lines.resize(static_cast<size_t>(options.limit));

  const std::string wav_dir = options.out_dir + "/wav";
  fs::MakeDirs(wav_dir);

  SpeechCorpusStats stats;
  stats.lines = static_cast<int64_t>(lines.size());
  stats.manifest_path = options.out_dir + "/manifest.jsonl";
  std::vector<manifest::Entry> entries;
  entries.reserve(lines.size());
  ProgressBar progress("synth", stats.lines, options.quiet);
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& line = lines[i];
    VoiceSpec voice = CorpusVoice(options.seed, static_cast<int64_t>(i), voices);
    if (options.fixed_prosody) {
      const VoiceSpec defaults;
      voice.rate_wpm = defaults.rate_wpm;
      voice.pitch = defaults.pitch;
      voice.range = defaults.range;
    }
    SynthResult speech;
    try {
      speech = synthesizer.Synthesize(line.text, voice);
    } catch (const Error& e) {
      // One unspeakable sentence must not cost a long run; it is reported instead.
      stats.skipped.push_back(SkippedLine{line.number, e.what()});
      progress.Update(1);
      continue;
    }
    manifest::Entry entry;
    entry.id = UtteranceId(static_cast<int64_t>(i));
    entry.task = "asr";
    entry.audio = "wav/" + entry.id + ".wav";
    entry.text = line.text;
    entry.words = std::move(speech.words);
    entry.extra["speaker"] = voice.Label();
    entry.extra["duration"] = speech.Seconds();
    // A write failure (disk full, permissions) is fatal: every later line would fail the same way.
    audio::Write(options.out_dir + "/" + entry.audio, speech.samples, speech.sample_rate);
    stats.audio_seconds += speech.Seconds();
    ++stats.per_voice[voice.name];
    ++stats.utterances;
    entries.push_back(std::move(entry));
    progress.Update(1, Str(FormatDuration(stats.audio_seconds), " of speech"));
  }
  progress.Finish();
  if (stats.utterances == 0) {
    const SkippedLine& first = stats.skipped.front();
    throw Error(Str("none of the ", stats.lines, " sentences in '", options.text_path,
                    "' could be synthesized; line ", first.line, ": ", first.reason));
  }
  manifest::Write(stats.manifest_path, entries);
  stats.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  return stats;
}

}  // namespace slm::datagen
