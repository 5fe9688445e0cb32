// Text-to-speech through a TTS adapter (issue: speech out). The pipeline:
//
//   text --split into pieces of <= max_characters--> "Say: {text}" prompt per piece
//        --MultimodalLM (model.speech_units; generation restricted to unit tokens and EOS; a
//          word-cued template feeds "<text> cue <speech>" per word and lets the LM say that word's
//          units until it asks for the next word)--> units
//        --audio::UnitDecoder--> log-mel frames --audio::Vocoder (Griffin-Lim by default)--> samples
//
// Units are frame-level (the unit tokenizer's frame rate, e.g. 50 Hz for encoder units): the LM
// speaks every frame's unit, so durations need no separate model. Audio is produced in chunks of
// `stream_units` units as they are generated (the decoder re-reads the units so far, the new frames
// are vocoded); the callback receives each chunk, and the result's samples are exactly their
// concatenation, with or without a callback.
//
// Bad input (slm::Error, naming the limit or the problem): empty or whitespace-only text, text
// longer than max_text_characters, text in which the tokenizer knows no character (only unknown
// or byte-fallback pieces), a decoder made for another unit tokenizer (hash), a model without speech units.
// Thread-safety: one Synthesize at a time per pipeline (the model is shared state).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "adapters/multimodal.h"
#include "audio/unit_decoder.h"
#include "audio/vocoder.h"

namespace slm::adapters {

// A prompt template with {phonemes} instead of (or besides) {text} gets each piece's pronunciation:
// audio::EspeakSynthesizer::Phonemize(piece, kPhonemeVoice), the grapheme-to-phoneme front-end of a
// TTS adapter trained on phonemes (train/tasks.h).
constexpr char kPhonemesPlaceholder[] = "{phonemes}";
constexpr char kPhonemeVoice[] = "en-us";
// A template that ends in {words} or {word_phonemes} makes a word-cued adapter (train/interleave.h
// WordCuedUnits): after the prompt, each word of the piece is given as "<text> cue <speech>" and the
// LM says that word's units until it asks for the next word (<text>) or ends (EOS). The cue is the
// word as written ({words}) or its phonemes ({word_phonemes}: Phonemize of the word alone, the word
// as written when espeak-ng gives none). The cue in front of its units keeps a small LM aligned
// with the text; the prompt itself is the template without the final placeholder.
constexpr char kWordsPlaceholder[] = "{words}";
constexpr char kWordPhonemesPlaceholder[] = "{word_phonemes}";

// The prompt of a template for one piece: {text} and {phonemes} filled, a final {words} /
// {word_phonemes} (and the space before it) removed.
std::string TtsPrompt(const std::string& prompt_template, const std::string& text, const std::string& phonemes);
bool IsWordCued(const std::string& prompt_template);
bool CuesArePhonemes(const std::string& prompt_template);  // ends in {word_phonemes}
// slm::Error naming the template when it has nothing to say or a cue placeholder before its end.
void CheckTtsTemplate(const std::string& prompt_template);
// The tokens of one word's cue: its phonemes when given (CuesArePhonemes), else the word as written.
std::vector<int64_t> WordCueTokens(const text::Tokenizer& tokenizer, const std::string& word,
                                   const std::string& phonemes);

struct TtsOptions {
  // Must contain {text} or {phonemes}, or end in {words} / {word_phonemes} (only there).
  std::string prompt_template = "Say: {text}";
  int64_t max_characters = 200;         // text pieces synthesized one by one (sentence, then word boundaries)
  int64_t max_text_characters = 20000;  // longer text is rejected
  // Not word-cued: units per piece (also at most the positions the prompt leaves).
  int64_t max_units = 220;
  // Word-cued: units per word. A piece is never cut: when fewer positions than this are left
  // before a word, the LM goes on from a fresh prompt of the words not yet said.
  int64_t max_word_units = 100;
  int64_t stream_units = 25;            // units per audio chunk (>= 1)
  double temperature = 0;               // 0 = greedy
  int64_t top_k = 0;
  uint64_t seed = 0;
  // Set in code: per-row LoRA of a text::LoraBank for the adapter's generation (a server whose
  // backbone serves several adapters at once); null = the backbone's own LoRA as it is.
  const text::RowLora* lora = nullptr;
  void Validate() const;  // slm::Error naming the option
};

struct TtsResult {
  std::vector<float> samples;  // mono, at sample_rate
  int sample_rate = 16000;
  int64_t units = 0;           // generated over all pieces
  std::vector<int64_t> unit_ids;  // those units, in order
  int64_t pieces = 0;          // text pieces
  int64_t chunks = 0;          // audio chunks delivered
  double first_chunk_seconds = 0;  // from the call to the first chunk
  double seconds = 0;              // the whole call
  std::vector<std::string> finish_reasons;  // per piece: "stop" (EOS) or "length" (max_units)
  int64_t contexts = 0;  // word-cued: fresh contexts opened inside pieces that did not fit one
};

using AudioChunkCallback = std::function<void(const std::vector<float>& samples)>;

// Pieces of at most `max_characters` characters: cut after sentence ends (. ! ? ; :) where
// possible, else at spaces, else inside a word; whitespace trimmed, empty pieces dropped.
std::vector<std::string> SplitText(const std::string& text, int64_t max_characters);

class TtsPipeline {
 public:
  // slm::Error when the model has no speech units or the decoder's tokenizer hash / unit count
  // differs from the model's.
  TtsPipeline(MultimodalLM model, audio::UnitDecoder decoder, std::shared_ptr<const audio::Vocoder> vocoder);
  // The default pipeline: the unit decoder in `decoder_dir` (empty = the model's model.unit_decoder;
  // its tokenizer hash checked against the model's units, loaded on the model's device) and
  // Griffin-Lim over fixed-floor log-mel. slm::Error naming what is missing.
  explicit TtsPipeline(MultimodalLM model, const std::string& decoder_dir = "");
  TtsResult Synthesize(const std::string& text, const TtsOptions& options,
                       const AudioChunkCallback& on_chunk = nullptr);
  // Units -> speech without the LM (decoder, then vocoder): the resynthesis of known units, e.g. a
  // recording's own units, which bounds what the LM's units can sound like. slm::Error for no units
  // or ids outside the decoder's range.
  std::vector<float> Speak(const std::vector<int64_t>& units);
  MultimodalLM& Model() { return model_; }
  int SampleRate() const { return vocoder_->SampleRate(); }

 private:
  MultimodalLM model_;
  audio::UnitDecoder decoder_;
  std::shared_ptr<const audio::Vocoder> vocoder_;
};

}  // namespace slm::adapters
