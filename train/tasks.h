// Training tasks: how a manifest entry becomes a prompt with placeholders, its media and the target
// the loss covers (MultimodalLM puts labels on the target only). A registry keyed by name; an
// unknown task lists the valid ones.
//
//   task     entry fields used                   default prompt template            target
//   asr      audio, text                         "<speech> Transcribe:"             text
//   sqa      audio (the spoken question),        "<speech> Answer:"                 response
//            response
//   caption  image, text                         "<image> Describe the image:"      text
//   vqa      image, prompt (question), response  "<image> {question}?"              response
//   text     text                                ""  (BOS only: plain LM data)      text
//   tts      text, units (+ unit_tokenizer)      "Say: {text}"                      units
//   interleaved words (with times), units          ""  (sequences built per epoch:    the whole
//            (+ unit_durations, unit_tokenizer)  train/interleave.h)                sequence
//
// A template may use {question} (the entry's prompt) and {text} (the entry's text), and a tts template
// {phonemes}: the entry's "phonemes" (audio::EspeakSynthesizer::Phonemize of its text with voice
// adapters::kPhonemeVoice, which the dataset adds to entries without them; TtsPipeline does the same at
// synthesis), so that the adapter reads pronunciations instead of spellings; a tts template may end
// in {words} (adapters/tts.h kWordsPlaceholder: a word-cued target, which needs the entry's word
// times). It must contain
// exactly the placeholders its task's media need (one <speech> for asr/sqa, one <image> for
// caption/vqa, none for text/tts). A tts entry's `units` is what `slm audio units encode --manifest`
// writes: a string of unit tokens "<u12><u5>..." (or a JSON array of unit ids), and
// `unit_tokenizer` the hash of the unit tokenizer that made them; the trainer checks both against
// the model's model.speech_units.
// Thread-safety: pure functions of their arguments.
#pragma once

#include <string>
#include <vector>

#include "core/manifest.h"

namespace slm::train {

struct TaskExample {
  std::string prompt;               // with placeholders
  std::string target;               // what the model must produce
  std::vector<std::string> audio;   // resolved paths, one per <speech>
  std::vector<std::string> images;  // resolved paths, one per <image>
  std::string unit_tokenizer;       // tts: the hash the entry's units were made with ("" = unknown)
  std::string reference_audio;      // tts: the entry's recording, if any (resolved path)
  int64_t max_unit = -1;            // tts, interleaved: the largest unit id
  int64_t num_units = 0;            // tts, interleaved: number of units
  std::vector<int64_t> units;       // tts, interleaved: the unit ids
  std::vector<int64_t> unit_durations;  // interleaved: frames per unit when deduplicated (else empty)
  bool word_cued = false;           // tts: the template ends in {words} (the target is WordCuedUnits)
};

std::vector<std::string> TaskNames();
// slm::Error listing the valid tasks for an unknown one.
const std::string& DefaultPromptTemplate(const std::string& task);
// slm::Error naming `task` when the template's placeholders do not fit the task.
void CheckPromptTemplate(const std::string& task, const std::string& prompt_template);

// slm::Error naming `where` ("file.jsonl: entry 'u1'") for a field the task needs that is missing
// or empty (an empty transcript, no audio path, ...).
TaskExample BuildTaskExample(const std::string& task, const std::string& prompt_template,
                             const manifest::Entry& entry, const std::string& base_dir,
                             const std::string& where);

}  // namespace slm::train
