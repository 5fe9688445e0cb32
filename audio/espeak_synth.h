// English speech with word timings from espeak-ng: the source of the project's offline ASR/TTS
// training data (`slm data synth`, datagen/speech_corpus.h).
//
// Units: SynthResult::samples are float32 mono at kSampleRate (16 kHz), already resampled from
// espeak-ng's native kEspeakSampleRate (22050 Hz); word times are seconds from the first sample of
// SynthResult::samples, rounded to whole milliseconds (the audio length is a whole number of
// milliseconds too, so a rounded time never passes the end). NativeSpeech stays at 22050 Hz and
// counts in samples.
//
// Alignment comes from espeak-ng's espeakEVENT_WORD events. Verified on espeak-ng 1.51 (Debian 12):
//   - `sample` is the word's first sample at 22050 Hz, counted from the start of the espeak_Synth
//     call; `audio_position` is the same instant in whole milliseconds (sample * 1000 / 22050,
//     truncated), so `sample` is the precise one and the only one used here.
//   - `text_position` is 1-based and counts Unicode code points, not bytes ("café naïve": the
//     second word starts at code point 6, byte 7).
//   - `length` is unreliable ("don't" reports 3) and is not used.
//   - espeak's words are not the text's words: "$5.50" or "100,000" yield several events, "e-mail"
//     or "U.S.A." one, "&" in "a & b" none (spoken "a-and"), and the event of a word that follows
//     a punctuation-only token points at that token ("x -- y": y's event is at "--"). Events are
//     therefore mapped onto the text's whitespace tokens by character position (WordTokens
//     below), each to the first word token at or after it, so the result's words always follow
//     the input's tokens in order.
//   - The pause at a comma or full stop lies before the next word's event, i.e. inside the previous
//     word's span; that is why word ends are trimmed back over trailing silence.
//
// Isolation and determinism: espeak-ng keeps synthesis state in globals that no API call resets
// (the pitch flutter index, the glottal phase, rand()-driven breath noise; calling
// espeak_Initialize again does not reset them and espeak_Terminate deadlocks in
// AUDIO_OUTPUT_SYNCHRONOUS mode on 1.51), so in one process the same text and voice sound slightly
// different (a few samples longer or shorter, another waveform) depending on what was synthesized
// before. The synthesizer therefore initializes espeak-ng once per process and never synthesizes
// in that process: every call forks a child that synthesizes from the pristine initialized state
// and sends the PCM and events back through a pipe. Output is a pure function of (text,
// VoiceSpec), bit for bit, whatever ran before, and an espeak-ng crash or hang on odd input
// becomes an slm::Error instead of killing the caller. The price is the fork: copying the page
// tables of a process that has LibTorch loaded costs far more than espeak-ng's own synthesis of a
// sentence, yet `slm data synth` stays well above the speed the project needs (`slm bench synth`
// measures both; numbers in docs/BENCHMARKS.md, "Speech synthesis").
//
// Thread-safety: EspeakSynthesizer is a process-wide singleton (espeak-ng's state is global, one
// synthesizer per process; docs/HAZARDS.md hazard 6). After its one-time initialization its parent-side state is
// read-only, so Synthesize and the other const methods may be called from several threads at
// once; each call runs in its own child process. The child only allocates, calls espeak-ng and
// write(2); if a multithreaded parent forks while another thread holds a lock the child needs,
// the child is killed at its deadline and the call fails with slm::Error rather than hanging.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "audio/audio_io.h"
#include "core/manifest.h"

namespace slm::audio {

constexpr int kEspeakSampleRate = 22050;  // espeak-ng's only output rate (Hz)

// One synthetic speaker. `name` is an espeak-ng language voice, optionally with a variant:
// "en-us", "en-gb-x-rp+f2" (AvailableEnglishVoices lists the valid ones).
struct VoiceSpec {
  std::string name;
  int rate_wpm = 175;  // espeakRATE, words per minute (espeak accepts 80..450)
  int pitch = 50;      // espeakPITCH 0..100: base pitch relative to the voice's own range
  int range = 50;      // espeakRANGE 0..100: intonation range (0 = monotone)
  // "en-us+f2/r165/p48/g50": the manifest's `speaker`. Every parameter that changes the sound is
  // in the label, so two utterances with equal labels come from the same synthetic speaker.
  std::string Label() const;
};

// A deterministic, well-spread speaker for `seed`: a voice from `voices` (uniform), rate
// 140..200 wpm, pitch 30..70, range 30..80. Nearby seeds give unrelated speakers (the seed is
// hashed), so per-utterance seeds seed*K+index give a corpus many speakers. slm::Error if `voices`
// is empty.
VoiceSpec VoiceForSeed(uint64_t seed, const std::vector<std::string>& voices);

// English voices this machine's espeak-ng can speak with, sorted: every English language voice by
// the name espeak_SetVoiceByName accepts, its file name ("en" is British English, "en-029",
// "en-gb-scotland", "en-gb-x-rp", "en-us", "en-us-nyc", ...), alone and combined
// with each human-sounding variant installed in espeak-ng-data/voices/!v ("+m1".."+m8",
// "+f1".."+f5", "+klatt", named ones such as "+Annie"). MBROLA voices are left out (they need
// separately installed diphone data), and so are novelty variants (robots, whisper, croak).
std::vector<std::string> AvailableEnglishVoices();

// Throws slm::Error unless `name` is in AvailableEnglishVoices(); the message lists the valid names
// (as bases x variants) and suggests the closest one.
void CheckEnglishVoice(const std::string& name);

// A whitespace-separated token of a text, as the synthesizer sees it.
struct WordToken {
  size_t byte_begin = 0, byte_end = 0;   // [begin, end) in the UTF-8 text
  int64_t char_begin = 0, char_end = 0;  // [begin, end) in code points, 0-based
  // The token with surrounding punctuation that is not spoken removed: . , ; : ! ? " ' ( ) [ ] { }
  // - _ and the Unicode quotes, dashes and ellipsis. Spoken symbols ($ % & # @ + = / *) stay:
  // "(don't," -> "don't", "$5.50." -> "$5.50", "well-known" -> "well-known". Empty for a
  // punctuation-only token such as "--".
  std::string word;
};
// Splits UTF-8 text on ASCII whitespace. slm::Error if the text is not valid UTF-8.
std::vector<WordToken> WordTokens(const std::string& text);

struct SynthResult {
  // Mono float32 at espeak-ng's own level, except that utterances whose peak would pass 0.9
  // (-0.9 dBFS; loud variants reach espeak's int16 ceiling and resampling overshoots it) are
  // scaled down to that peak, so 16-bit files never clip.
  std::vector<float> samples;
  int sample_rate = kSampleRate;
  // One per token of WordTokens(text) with a non-empty `word`, in text order; punctuation-only
  // tokens ("--", "...") are pauses and have none. start < end <= next start, all within
  // [0, duration]. A word starts where espeak-ng starts it (never before the first audible sample)
  // and ends where its sound stops (short-time energy), so pauses belong to no word. A token that
  // espeak-ng folds into its neighbour ("a & b" is spoken "a-and b") gets a share of the
  // neighbour's span in proportion to its length.
  std::vector<manifest::Word> words;
  double Seconds() const { return sample_rate ? double(samples.size()) / sample_rate : 0.0; }
};

// espeak-ng's output before resampling, alignment and trimming (benchmarks, diagnostics).
struct NativeSpeech {
  struct WordEvent {
    int64_t text_position = 0;  // 1-based code point where espeak's word starts
    int64_t sample = 0;         // first sample of the word at kEspeakSampleRate
  };
  std::vector<int16_t> pcm;  // mono at kEspeakSampleRate
  std::vector<WordEvent> word_events;
};

// Throughput of bare espeak-ng: synthesis calls back to back in one process, nothing else.
struct NativeRate {
  int64_t utterances = 0;
  double audio_seconds = 0;  // at kEspeakSampleRate, untrimmed
  double synth_seconds = 0;  // wall time inside espeak_Synth (voice set-up included)
  double AudioSecondsPerSecond() const {
    return synth_seconds > 0 ? audio_seconds / synth_seconds : 0;
  }
};

class EspeakSynthesizer {
 public:
  // The process's synthesizer; the first call initializes espeak-ng (slm::Error if its data
  // cannot be found). Do not call espeak-ng elsewhere in the process.
  static const EspeakSynthesizer& Instance();

  EspeakSynthesizer(const EspeakSynthesizer&) = delete;
  EspeakSynthesizer& operator=(const EspeakSynthesizer&) = delete;

  // Speech for `text` (UTF-8) at 16 kHz with word times. The audio has exactly kSilenceMargin of
  // silence before the first and after the last audible sample (espeak's own edges are trimmed or
  // zero-padded), so every utterance of a corpus is framed alike. slm::Error for: empty or
  // whitespace-only text, invalid UTF-8, text without words ("...", "--") or that espeak-ng does
  // not speak, an unknown voice, rate/pitch/range out of range, or an espeak-ng failure (crash,
  // hang past the deadline).
  SynthResult Synthesize(const std::string& text, const VoiceSpec& voice) const;

  // espeak-ng's raw output for `text` (same isolation and errors as Synthesize, except that text
  // without speakable characters returns a near-empty `pcm` and no events).
  NativeSpeech SynthesizeNative(const std::string& text, const VoiceSpec& voice) const;

  // The baseline for `slm bench synth`: in a single child process, synthesizes texts[i % size]
  // with voice_for(i) for i = 0, 1, ... until at least `min_audio_seconds` of audio exist, without
  // per-utterance isolation, resampling, alignment or writing. `voice_for` is called in the child
  // (a fork, so it may capture anything). slm::Error if `texts` is empty or a voice is invalid.
  NativeRate MeasureNativeRate(const std::vector<std::string>& texts,
                               const std::function<VoiceSpec(int64_t)>& voice_for,
                               double min_audio_seconds) const;

  // Grapheme-to-phoneme: each text's phonemes as espeak-ng's voice `voice` would speak them, in
  // espeak-ng's ASCII phoneme names ("@", "eI", "tS", stress marks ' and , on the stressed vowel)
  // separated by single spaces, with "_" where espeak-ng ends a clause (a pause at , ; : . ! ?).
  // "An expedition." -> "a# n ,E k s p @ d 'I S @ n". All texts in one isolated child (one fork for
  // the whole list, which is what makes phonemizing a corpus cheap). A text without anything speakable gives "". slm::Error
  // for invalid UTF-8 or an unknown voice.
  std::vector<std::string> Phonemize(const std::vector<std::string>& texts, const std::string& voice) const;

  const std::vector<std::string>& EnglishVoices() const { return english_voices_; }

  // Seconds of silence before the first and after the last audible sample of a SynthResult.
  static constexpr double kSilenceMargin = 0.1;

 private:
  EspeakSynthesizer();
  std::vector<std::string> english_voices_;
  std::vector<std::string> english_bases_;
  std::vector<std::string> english_variants_;
  friend void CheckEnglishVoice(const std::string& name);
};

}  // namespace slm::audio
