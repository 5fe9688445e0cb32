#include "adapters/tts.h"

#include <algorithm>

#include "audio/espeak_synth.h"
#include "core/error.h"
#include "core/strings.h"
#include "core/timer.h"

namespace slm::adapters {
namespace {

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool CuesArePhonemes(const std::string& prompt_template) { return EndsWith(prompt_template, kWordPhonemesPlaceholder); }

bool IsWordCued(const std::string& prompt_template) {
  return EndsWith(prompt_template, kWordsPlaceholder) || CuesArePhonemes(prompt_template);
}

void CheckTtsTemplate(const std::string& prompt_template) {
  for (const char* cue : {kWordsPlaceholder, kWordPhonemesPlaceholder}) {
    const size_t at = prompt_template.find(cue);
    Check(at == std::string::npos || at + std::string(cue).size() == prompt_template.size(),
          "tts: the prompt template \"", prompt_template, "\" has ", cue,
          " before its end (it stands for the words said after the prompt)");
  }
  Check(prompt_template.find("{text}") != std::string::npos ||
            prompt_template.find(kPhonemesPlaceholder) != std::string::npos || IsWordCued(prompt_template),
        "tts: the prompt template \"", prompt_template, "\" has no {text}, {phonemes}, {words} or {word_phonemes}");
}

std::string TtsPrompt(const std::string& prompt_template, const std::string& text, const std::string& phonemes) {
  std::string prompt = prompt_template;
  if (IsWordCued(prompt)) {
    prompt.resize(prompt.size() -
                  std::string(CuesArePhonemes(prompt) ? kWordPhonemesPlaceholder : kWordsPlaceholder).size());
    while (!prompt.empty() && prompt.back() == ' ') prompt.pop_back();
  }
  for (const auto& [key, value] :
       {std::pair<std::string, std::string>{"{text}", text}, {kPhonemesPlaceholder, phonemes}})
    for (size_t at = prompt.find(key); at != std::string::npos; at = prompt.find(key, at + value.size()))
      prompt.replace(at, key.size(), value);
  return prompt;
}

std::vector<int64_t> WordCueTokens(const text::Tokenizer& tokenizer, const std::string& word,
                                   const std::string& phonemes) {
  return tokenizer.Encode(phonemes.empty() ? word : phonemes, false, false);
}

void TtsOptions::Validate() const {
  CheckTtsTemplate(prompt_template);
  Check(max_characters >= 1, "tts: max_characters must be >= 1, got ", max_characters);
  Check(max_text_characters >= 1, "tts: max_text_characters must be >= 1, got ", max_text_characters);
  Check(max_units >= 1, "tts: max_units must be >= 1, got ", max_units);
  Check(max_word_units >= 1, "tts: max_word_units must be >= 1, got ", max_word_units);
  Check(stream_units >= 1, "tts: stream_units must be >= 1, got ", stream_units);
  Check(temperature >= 0, "tts: temperature must be >= 0, got ", temperature);
  Check(top_k >= 0, "tts: top_k must be >= 0, got ", top_k);
}

std::vector<std::string> SplitText(const std::string& text, int64_t max_characters) {
  Check(max_characters >= 1, "SplitText: max_characters must be >= 1");
  std::vector<std::string> pieces;
  std::string rest = Trim(text);
  const size_t limit = static_cast<size_t>(max_characters);
  while (!rest.empty()) {
    if (rest.size() <= limit) {
      pieces.push_back(rest);
      break;
    }
    // The last sentence end within the limit, else the last space, else a hard cut.
    size_t cut = std::string::npos;
    for (size_t i = limit; i-- > 0;) {
      if (std::string(".!?;:").find(rest[i]) != std::string::npos) {
        cut = i + 1;
        break;
      }
    }
    if (cut == std::string::npos || cut < limit / 4) {
      const size_t space = rest.rfind(' ', limit);
      cut = space != std::string::npos && space > 0 ? space : limit;
    }
    const std::string piece = Trim(rest.substr(0, cut));
    if (!piece.empty()) pieces.push_back(piece);
    rest = Trim(rest.substr(cut));
  }
  return pieces;
}

namespace {

audio::UnitDecoder LoadDecoder(MultimodalLMImpl& model, const std::string& decoder_dir) {
  const std::string dir = decoder_dir.empty() ? model.Config().unit_decoder : decoder_dir;
  Check(!dir.empty(), "tts: no unit decoder (model.unit_decoder, or give one)");
  audio::UnitDecoder decoder(audio::UnitDecoderImpl::Load(dir, model.SpeechUnitsHash()));
  decoder->to(model.Backbone()->parameters().front().device());
  decoder->eval();
  return decoder;
}

std::shared_ptr<const audio::Vocoder> DefaultVocoder() {
  audio::LogMelOptions features;
  features.normalization = audio::MelNormalization::kFixedFloor;
  return std::make_shared<audio::GriffinLimVocoder>(features);
}

}  // namespace

TtsPipeline::TtsPipeline(MultimodalLM model, const std::string& decoder_dir)
    : TtsPipeline(model, LoadDecoder(*model, decoder_dir), DefaultVocoder()) {}

TtsPipeline::TtsPipeline(MultimodalLM model, audio::UnitDecoder decoder, std::shared_ptr<const audio::Vocoder> vocoder)
    : model_(std::move(model)), decoder_(std::move(decoder)), vocoder_(std::move(vocoder)) {
  Check(model_->SpeechUnits() > 0, "tts: the model has no speech units (model.speech_units): it cannot speak");
  Check(decoder_->Config().tokenizer_hash == model_->SpeechUnitsHash(), "tts: the unit decoder was trained for the ",
        "unit tokenizer ", decoder_->Config().tokenizer_hash, ", the model speaks the units of ",
        model_->SpeechUnitsHash());
  Check(decoder_->Config().k == model_->SpeechUnits(), "tts: the unit decoder reads ", decoder_->Config().k,
        " units, the model speaks ", model_->SpeechUnits());
  Check(vocoder_ != nullptr, "tts: no vocoder");
}

std::vector<float> TtsPipeline::Speak(const std::vector<int64_t>& units) {
  return vocoder_->Synthesize(decoder_->Decode(units));
}

TtsResult TtsPipeline::Synthesize(const std::string& text, const TtsOptions& options, const AudioChunkCallback& on_chunk) {
  options.Validate();
  const double start = NowSeconds();
  Check(static_cast<int64_t>(text.size()) <= options.max_text_characters, "tts: the text has ", text.size(),
        " characters; the limit is ", options.max_text_characters, " (max_text_characters)");
  const std::vector<std::string> pieces = SplitText(text, options.max_characters);
  Check(!pieces.empty(), "tts: the text is empty");
  const text::Tokenizer& tokenizer = model_->Tokenizer();
  for (const std::string& piece : pieces) {
    int64_t known = 0;
    // Unknown characters become the unknown id or, with sentencepiece's byte fallback, byte pieces
    // "<0xE2>": neither says anything a TTS model learned to pronounce.
    for (const int64_t id : tokenizer.Encode(piece, false, false)) {
      const std::string p = tokenizer.IdToPiece(id);
      const bool byte = p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p.back() == '>';
      if (id != tokenizer.UnkId() && p != "\xE2\x96\x81" && !byte) ++known;
    }
    Check(known > 0, "tts: the tokenizer knows no character of \"", piece.substr(0, 80),
          "\" (only unknown characters): nothing to say");
  }

  std::vector<std::string> phonemes(pieces.size());
  const bool prompt_has_phonemes = options.prompt_template.find(kPhonemesPlaceholder) != std::string::npos;
  if (prompt_has_phonemes) {
    phonemes = audio::EspeakSynthesizer::Instance().Phonemize(pieces, kPhonemeVoice);
    for (size_t i = 0; i < pieces.size(); ++i)
      Check(!phonemes[i].empty(), "tts: espeak-ng finds nothing to pronounce in \"", pieces[i].substr(0, 80), "\"");
  }

  TtsResult result;
  result.sample_rate = vocoder_->SampleRate();
  result.pieces = static_cast<int64_t>(pieces.size());
  text::GenerationOptions generation;
  generation.max_new_tokens = options.max_units;
  generation.temperature = options.temperature;
  generation.top_k = options.top_k;
  generation.seed = options.seed;
  generation.lora = options.lora;
  for (int64_t u = 0; u < model_->SpeechUnits(); ++u) generation.allowed_token_ids.push_back(model_->UnitTokenId(u));
  // Mel frames the conv decoder may still revise when more units follow: held back until the end.
  const audio::UnitDecoderConfig& dc = decoder_->Config();
  const int64_t lookahead = dc.layers * (dc.kernel / 2);

  auto emit = [&](const std::vector<float>& samples) {
    if (samples.empty()) return;
    if (result.chunks == 0) result.first_chunk_seconds = NowSeconds() - start;
    ++result.chunks;
    result.samples.insert(result.samples.end(), samples.begin(), samples.end());
    if (on_chunk) on_chunk(samples);
  };
  for (size_t p = 0; p < pieces.size(); ++p) {
    const std::string prompt = TtsPrompt(options.prompt_template, pieces[p], phonemes[p]);
    std::vector<int64_t> units;
    int64_t emitted = 0;  // mel frames already vocoded
    auto flush = [&](bool last) {
      if (units.empty()) return;
      const torch::Tensor mel = decoder_->Decode(units);
      const int64_t ready = last ? mel.size(0) : std::max<int64_t>(0, mel.size(0) - lookahead);
      if (ready <= emitted) return;
      emit(vocoder_->Synthesize(mel.narrow(0, emitted, ready - emitted)));
      emitted = ready;
    };
    const int64_t positions = model_->Backbone()->Config().max_position_embeddings;
    std::vector<int64_t> ids = tokenizer.EncodeWithSpecialTokens(prompt);
    // A long (phoneme) prompt leaves fewer of the backbone's positions for units.
    Check(static_cast<int64_t>(ids.size()) < positions, "tts: the prompt for \"", pieces[p].substr(0, 80),
          "\" fills the backbone's ", positions, " positions; lower max_characters");
    auto say = [&](int64_t, int64_t token) {
      const int64_t unit = model_->UnitOfToken(token);
      if (unit >= 0) {
        units.push_back(unit);
        ids.push_back(token);
      }
      if (static_cast<int64_t>(units.size()) % options.stream_units == 0) flush(false);
      return true;
    };
    std::string finish = "stop";
    if (!IsWordCued(options.prompt_template)) {
      MultimodalExample example;
      example.prompt = prompt;
      generation.max_new_tokens = std::min<int64_t>(options.max_units, positions - static_cast<int64_t>(ids.size()));
      finish = model_->Generate({example}, generation, say).finish_reasons.at(0);
    } else {
      // Word by word (IsWordCued): the cue "<text> word <speech>", then units until the model
      // asks for the next word or ends. An early end does not skip words: the next cue follows.
      text::GenerationOptions word = generation;
      word.stop_token_ids = tokenizer.EosIds();
      word.stop_token_ids.push_back(tokenizer.AddedTokenId(text::kTextMarker));
      std::vector<std::string> words;
      std::vector<size_t> word_begin;  // byte offset of each word in the piece
      for (const audio::WordToken& t : audio::WordTokens(pieces[p]))
        if (!t.word.empty()) {
          words.push_back(t.word);
          word_begin.push_back(t.byte_begin);
        }
      Check(!words.empty(), "tts: \"", pieces[p].substr(0, 80), "\" has no words to say (only punctuation)");
      std::vector<std::string> word_phonemes(words.size());
      if (CuesArePhonemes(options.prompt_template))
        word_phonemes = audio::EspeakSynthesizer::Instance().Phonemize(words, kPhonemeVoice);
      size_t context_first = 0;  // the first word said in the current context
      for (size_t w = 0; w < words.size(); ++w) {
        std::vector<int64_t> cue{tokenizer.AddedTokenId(text::kTextMarker)};
        for (const int64_t id : WordCueTokens(tokenizer, words[w], word_phonemes[w])) cue.push_back(id);
        cue.push_back(tokenizer.AddedTokenId(text::kSpeechMarker));
        // A piece longer than the backbone's positions hold goes on in a fresh context: the prompt
        // of the words not yet said, as if they were a piece of their own, so nothing is cut off.
        if (w > context_first &&
            positions - static_cast<int64_t>(ids.size() + cue.size()) < options.max_word_units) {
          const std::string rest = pieces[p].substr(word_begin[w]);
          std::string rest_phonemes;
          if (prompt_has_phonemes)
            rest_phonemes = audio::EspeakSynthesizer::Instance().Phonemize({rest}, kPhonemeVoice).at(0);
          ids = tokenizer.EncodeWithSpecialTokens(TtsPrompt(options.prompt_template, rest, rest_phonemes));
          context_first = w;
          ++result.contexts;
        }
        ids.insert(ids.end(), cue.begin(), cue.end());
        const int64_t room =
            std::min<int64_t>(options.max_word_units, positions - static_cast<int64_t>(ids.size()));
        if (room <= 0) {
          finish = "length";
          break;
        }
        word.max_new_tokens = room;
        MultimodalExample example;
        example.tokens = ids;
        finish = model_->Generate({example}, word, say).finish_reasons.at(0);
      }
    }
    flush(true);
    result.units += static_cast<int64_t>(units.size());
    result.unit_ids.insert(result.unit_ids.end(), units.begin(), units.end());
    result.finish_reasons.push_back(finish);
  }
  result.seconds = NowSeconds() - start;
  return result;
}

}  // namespace slm::adapters
