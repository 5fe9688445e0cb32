// A multi-speaker English speech corpus with word timings, synthesized offline by espeak-ng
// (`slm data synth`): the training data of the tiny CTC speech encoder and of the ASR adapters.
//
// Input: a UTF-8 text file, one sentence per line; blank lines are skipped and do not count.
// Output in `out_dir`:
//   wav/<id>.wav    16 kHz mono 16-bit PCM, exactly 0.1 s of silence before and after the speech
//   manifest.jsonl  one core/manifest.h entry per synthesized sentence, in input order:
//     {"id":"u000001","task":"asr","audio":"wav/u000001.wav","text":"the sentence as given",
//      "words":[{"word":"the","start":0.1,"end":0.21},...],
//      "speaker":"en-us+f2/r165/p48/g52","duration":2.31}
//   (`speaker` and `duration` (seconds) live in Entry::extra; word times are seconds, see
//   audio/espeak_synth.h for what start and end mean.)
// Ids number the non-blank lines (the first is u000001), so a skipped line leaves a gap instead of
// renaming later utterances, and the speaker of the i-th non-blank line depends only on (seed, i):
// the output is a pure function of (text file, voices, limit, seed), bit for bit, on any run.
//
// Speed: one process, including per-utterance process isolation (audio/espeak_synth.h; fork and
// exit dominate), resampling, alignment and writing, is well above the project's goal of 20 speech
// seconds per wall-clock second (`slm bench synth`, docs/BENCHMARKS.md), so no worker processes
// are used.
//
// Errors: slm::Error for a missing or unreadable text file, a file without non-blank lines, an
// unknown voice in `voices` (the message lists the valid ones), an output directory that cannot be
// written, or when every line fails. A single line that cannot be synthesized (nothing speakable,
// invalid UTF-8, espeak-ng crash) is skipped and reported in the stats.
// Thread-safety: may be called from several threads with different output directories.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "audio/espeak_synth.h"

namespace slm::datagen {

struct SpeechCorpusOptions {
  std::string text_path;
  std::string out_dir;
  std::vector<std::string> voices;          // empty = audio::AvailableEnglishVoices(); see SelectVoices
  std::vector<std::string> exclude_voices;  // left out of `voices` (a held-out speaker set)
  int64_t limit = 0;                // first `limit` non-blank lines; 0 = all
  uint64_t seed = 0;
  // One steady speaker per voice: espeak-ng's default rate, pitch and range instead of a random
  // prosody per utterance (a TTS corpus wants one predictable voice).
  bool fixed_prosody = false;
  bool quiet = false;  // no progress bar
};

// The voices of a corpus: `include` (empty = every English voice) minus `exclude`, in
// audio::AvailableEnglishVoices() order. An entry is a voice name ("en-us+f2") or "+variant", which stands
// for that variant on every English language voice ("+f5" -> "en+f5", "en-us+f5", ...), so a whole
// synthetic speaker can be held out of training and used alone for testing. slm::Error naming the
// entry when one matches no voice, or when nothing is left.
std::vector<std::string> SelectVoices(const std::vector<std::string>& include,
                                      const std::vector<std::string>& exclude);

struct SkippedLine {
  int64_t line = 0;  // 1-based line number in the text file
  std::string reason;
};

struct SpeechCorpusStats {
  int64_t lines = 0;         // non-blank lines considered (after `limit`)
  int64_t utterances = 0;    // written
  double audio_seconds = 0;  // total duration of the written audio
  double wall_seconds = 0;   // whole run: reading, synthesis, resampling, writing
  double SpeechSecondsPerSecond() const {
    return wall_seconds > 0 ? audio_seconds / wall_seconds : 0;
  }
  double RealTimeFactor() const { return audio_seconds > 0 ? wall_seconds / audio_seconds : 0; }
  std::map<std::string, int64_t> per_voice;  // utterances per voice name (e.g. "en-us+f2")
  std::vector<SkippedLine> skipped;
  std::string manifest_path;
};

// The speaker of the `index`-th (0-based) non-blank line: VoiceForSeed(seed * 1000003 + index).
audio::VoiceSpec CorpusVoice(uint64_t seed, int64_t index, const std::vector<std::string>& voices);

SpeechCorpusStats SynthesizeCorpus(const SpeechCorpusOptions& options);

}  // namespace slm::datagen
