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
// Each task owns its behaviour (Task below): how an entry becomes an example and its loss target,
// the example's batching length, which source keys apply to it, and how a valid source of it is
// evaluated (train/evaluate.h). The trainer and the dataset ask the task; they never test its name.
// Thread-safety: the registry is built once on first use; lookups and the functions are then
// read-only and thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/manifest.h"

namespace slm::train {

class TaskEvaluator;  // train/evaluate.h

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

// A number of an evaluation report (train/evaluate.h) and which way is better.
struct TaskMetric {
  std::string metric;
  bool higher_is_better = false;
};

struct Task {
  std::string prompt;  // the default prompt template
  int speech = 0;      // <speech> placeholders its template must hold
  int images = 0;      // <image> placeholders its template must hold
  // The target is speech units (the model needs model.speech_units): max_units and units_from apply.
  bool predicts_units = false;
  // Sequences are built per epoch from word-aligned utterances (train/interleave.h): the source's
  // interleave keys apply and its items carry an AlignedUtterance.
  bool interleaves = false;
  // Text to speech: the template is a tts template (adapters/tts.h: {phonemes}, {words}), filled by
  // adapters::TtsPrompt, and an example must fit the backbone's positions (prompt + units).
  bool speaks = false;
  // The entry as an example (media resolved against the manifest's directory, the loss target);
  // slm::Error naming `where` for a missing or malformed field. The prompt is filled in afterwards.
  std::function<TaskExample(const manifest::Entry&, const std::string& base_dir, const std::string& where)> build;
  // Batching length (Dataset::EpochBatches sorts and budgets by it): centiseconds of input audio
  // when the example has any (`audio_seconds` > 0), else the task's own measure of its target.
  std::function<double(const TaskExample&, double audio_seconds)> length;
  // A fresh evaluator for one valid source of this task (train/evaluate.h).
  std::function<std::unique_ptr<TaskEvaluator>()> evaluator;
  // The report's headline number: what forgetting and ablation tables compare across stages.
  TaskMetric headline{"loss", false};
};

// slm::Error listing the valid tasks for an unknown one.
const Task& GetTask(const std::string& name);
std::vector<std::string> TaskNames();  // sorted
// The tasks `has` holds for, in the order of the table above (for messages: "tts and interleaved").
std::vector<std::string> TasksWhere(const std::function<bool(const Task&)>& has);
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
