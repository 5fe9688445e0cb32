// The resident model of a server: one frozen backbone (+ tokenizer), the speech encoder with its
// CTC head (streaming transcripts and word times) and any number of trained adapters over that one
// backbone (adapters::SharedComponents: each directory is loaded once).
//
// Adapters: each entry of ServeConfig::adapters is a training run (its config.yaml's `model`
// section, its adapters/ directory, and adapters/tasks.json: the tasks it was trained for with
// their prompt templates). LoRA adapters share the backbone's one LoRA structure; Activate()
// copies an adapter's LoRA weights into it (or sets the LoRA scale to 0 for an adapter without
// LoRA and for the plain backbone), so consecutive forward passes of one adapter cost nothing
// extra and switching costs one copy of the LoRA weights (the scheduler groups rows by adapter).
//
// Transcripts come from the speech encoder's CTC head, not from an ASR adapter: on the embedded
// default the CTC head is the more accurate of the two (docs/BENCHMARKS.md: 67.7% vs 79.3% WER),
// streams for free and gives word times. Answers (task RESPOND) come from an adapter trained for
// `sqa`; Generate uses the plain backbone, or an adapter when a request names one (images need an
// adapter with an image branch).
//
// Thread-safety: constructed on one thread; afterwards only the engine's scheduler thread runs
// the modules and calls Activate. Lookups (Find, DefaultFor, Info) are safe from any thread.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "adapters/multimodal.h"
#include "adapters/tts.h"
#include "audio/ctc.h"
#include "audio/log_mel.h"
#include "serve/serve_config.h"

namespace slm::serve {

struct ServedAdapter {
  std::string name;
  std::map<std::string, std::string> tasks;  // task -> prompt template
  mutable adapters::MultimodalLM model{nullptr};  // run (scheduler thread only) through const lookups
  std::vector<torch::Tensor> lora;  // snapshot of the backbone's LoRA parameters for this adapter
  bool HasTask(const std::string& task) const { return tasks.count(task) > 0; }
};

class ServedModel {
 public:
  // Loads everything; slm::Error naming the config key / directory for anything missing or
  // mismatched (an adapter over another backbone, a speech encoder without CTC head, ...).
  explicit ServedModel(const ServeConfig& config);

  const std::string& Name() const { return name_; }
  const std::string& Description() const { return description_; }
  bool HasSpeech() const { return !encoder_.is_empty(); }
  bool HasImages() const;
  int64_t ContextLength() const;
  const std::vector<std::unique_ptr<ServedAdapter>>& Adapters() const { return adapters_; }
  // nullptr when no adapter has that name.
  const ServedAdapter* Find(const std::string& name) const;
  // The first adapter (config order) trained for `task`, or nullptr.
  const ServedAdapter* DefaultFor(const std::string& task) const;

  // Scheduler thread only (see above).
  void Activate(const ServedAdapter* adapter);  // nullptr = the plain backbone
  text::LlamaModel& Backbone() { return shared_.backbone; }
  const text::Tokenizer& Tokenizer() const { return *shared_.tokenizer; }
  audio::WhisperEncoder& SpeechEncoder() { return encoder_; }
  audio::CtcHead& Ctc() { return ctc_; }
  const audio::LogMel& Mel() const { return *mel_; }
  int SampleRate() const { return sample_rate_; }
  // Seconds of audio per encoder output frame (the CTC frame rate).
  double SecondsPerFrame() const { return seconds_per_frame_; }
  // Longest input the speech encoder accepts, in seconds.
  double MaxSpeechSeconds() const { return max_speech_seconds_; }
  // The speech synthesizer: the first adapter trained for task tts (model.speech_units and
  // model.unit_decoder in its config), or nullptr. Scheduler thread only; Activate(SynthesizerAdapter())
  // before using it.
  adapters::TtsPipeline* Synthesizer() { return synthesizer_.get(); }
  const ServedAdapter* SynthesizerAdapter() const { return synthesizer_adapter_; }
  // What every synthesis starts from: the TTS adapter's "tts" prompt, limits.max_synthesis_characters.
  const adapters::TtsOptions& SynthesisOptions() const { return synthesis_options_; }
  // Voices Synthesize accepts ({"default"} with a synthesizer, else none).
  std::vector<std::string> Voices() const;
  // Ids an answer may use: the tokenizer's ids below the base vocabulary (a TTS adapter's unit
  // rows belong to speech, not to text answers).
  int64_t TextVocabulary() const;

 private:
  std::string name_, description_;
  adapters::SharedComponents shared_;
  audio::WhisperEncoder encoder_{nullptr};
  audio::CtcHead ctc_{nullptr};
  std::unique_ptr<audio::LogMel> mel_;
  int sample_rate_ = 16000;
  double seconds_per_frame_ = 0.02;
  double max_speech_seconds_ = 30;
  std::vector<std::unique_ptr<ServedAdapter>> adapters_;
  std::unique_ptr<adapters::TtsPipeline> synthesizer_;
  const ServedAdapter* synthesizer_adapter_ = nullptr;
  adapters::TtsOptions synthesis_options_;
  const ServedAdapter* active_ = nullptr;
  bool activated_ = false;
};

}  // namespace slm::serve
