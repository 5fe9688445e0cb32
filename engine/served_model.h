// The resident model of a server: one frozen backbone (+ tokenizer), the speech encoder with its
// CTC head (streaming transcripts and word times) and trained adapters over that one backbone
// (adapters::SharedComponents: each directory is loaded once), loadable and unloadable while
// serving.
//
// Adapters: each is a training run (its config.yaml's `model` section, its adapters/ directory,
// and adapters/tasks.json: the tasks it was trained for with their prompt templates). Every
// adapter gets a slot of one text::LoraBank: its LoRA (any rank up to adapters.max_lora_rank, any
// target projections) is read from its directory into the bank, never into the shared backbone,
// so rows of different adapters share one backbone forward (the engine passes each row's slot).
// The backbone's own LoRA structure stays unused.
//
// Answer budget (spoken QA): for an adapter trained for `sqa`, RespondSeconds(n) is the longest
// question whose answer of n tokens still fits: context - the sqa prompt's text positions - n
// positions are left for speech, at the projector's rate. The engine cuts a RESPOND stream's
// utterances there. The constructor refuses a configuration whose default answer length
// (limits.max_answer_tokens) leaves less than kMinRespondSeconds (naming the keys): a server must
// not accept questions it can never answer.
//
// Answers from transcripts: an sqa template with "{transcript}" (engine/config.h AdapterEntry) is
// filled with the utterance's final transcript; without "<speech>" no speech reaches the backbone,
// so a prompt-only entry (the frozen backbone alone) can answer spoken questions as typed ones.
//
// Transcripts come from the speech encoder's CTC head, not from an ASR adapter (it streams for
// free and gives word times), decoded greedily or, with model.speech_lm, by the lexicon + word-LM
// beam search (SpeechDecoder()); answers (RESPOND) come from an adapter trained for `sqa`.
//
// Thread-safety: lookups (Find, DefaultFor, Adapters, Info) and LoadAdapter/UnloadAdapter are
// safe from any thread. A forward pass that reads the bank holds BankLock() shared; LoadAdapter
// takes it exclusively while it writes the bank. The modules themselves are frozen; concurrent
// forward passes on them are safe (the fused projections are built at load, before any thread
// runs).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "adapters/multimodal.h"
#include "adapters/tts.h"
#include "audio/ctc.h"
#include "audio/ctc_lexicon_decoder.h"
#include "audio/log_mel.h"
#include "engine/config.h"
#include "engine/types.h"
#include "text/lora_bank.h"

namespace slm::engine {

inline constexpr double kMinRespondSeconds = 1.0;
// Budget of a transcript in the prompt: fast speech is about 3 words a second and a word of the
// tiny tokenizers about 2 tokens; the margin keeps the cut on the safe side.
inline constexpr double kTranscriptPositionsPerSecond = 8.0;
inline constexpr int64_t kDefaultBankRank = 8;

inline const std::string kTranscriptPlaceholder = "{transcript}";
// `prompt` with every "{transcript}" replaced by `transcript`.
std::string FillTranscript(const std::string& prompt, const std::string& transcript);

struct ServedAdapter {
  std::string name;
  std::map<std::string, std::string> tasks;  // task -> prompt template
  mutable adapters::MultimodalLM model{nullptr};  // run on engine threads through const lookups
  int64_t slot = 0;                 // bank slot
  bool has_lora = false;
  // sqa adapters: the positions of the sqa prompt without its speech, and of one second of speech
  // (for a "{transcript}" template: of one second of transcript, kTranscriptPositionsPerSecond).
  int64_t sqa_text_positions = 0;
  double speech_positions_per_second = 0;
  bool answers_transcript = false;  // the sqa template holds "{transcript}"
  int64_t context = 0;
  bool HasTask(const std::string& task) const { return tasks.count(task) > 0; }
  // The longest spoken question whose answer of `answer_tokens` tokens still fits the context
  // (see the header comment); 0 without sqa.
  double RespondSeconds(int answer_tokens) const {
    if (speech_positions_per_second <= 0) return 0;
    return std::max<double>(0, context - sqa_text_positions - answer_tokens) / speech_positions_per_second;
  }
};
using AdapterRef = std::shared_ptr<const ServedAdapter>;

class ServedModel {
 public:
  // Loads everything; slm::Error naming the config key / directory for anything missing or
  // mismatched (an adapter over another backbone, a speech encoder without CTC head, limits the
  // model cannot honour, ...).
  explicit ServedModel(const EngineConfig& config);

  const std::string& Name() const { return name_; }
  const std::string& Description() const { return description_; }
  bool HasSpeech() const { return !encoder_.is_empty(); }
  bool HasImages() const;
  int64_t ContextLength() const;
  // nullptr when no adapter has that name.
  AdapterRef Find(const std::string& name) const;
  // The first adapter (load order) trained for `task`, or nullptr.
  AdapterRef DefaultFor(const std::string& task) const;
  std::vector<AdapterRef> Adapters() const;
  ModelInfo Info() const;

  // Loads an adapter while serving (slm::Error naming the entry and what is wrong; a name in use
  // or no free bank slot: StatusError kFailedPrecondition / kResourceExhausted). A tts adapter
  // can only be served from the start (its unit tokens are part of the shared tokenizer).
  void LoadAdapter(const AdapterEntry& entry);
  // New requests for it get NOT_FOUND at once; requests already running keep it until they end
  // (its bank slot is reused only after ReleaseRetired() sees nobody holds it). StatusError
  // kNotFound for an unknown name, kFailedPrecondition for the synthesizer's adapter.
  void UnloadAdapter(const std::string& name);
  // Clears the bank slots of unloaded adapters nobody holds any more. Call between forward passes
  // that read the bank (the engine's decode thread does).
  void ReleaseRetired();

  text::LlamaModel& Backbone() { return shared_.backbone; }
  const text::Tokenizer& Tokenizer() const { return *shared_.tokenizer; }
  const text::LoraBank& Bank() const { return *bank_; }
  std::shared_mutex& BankLock() { return bank_mutex_; }
  audio::WhisperEncoder& SpeechEncoder() { return encoder_; }
  audio::CtcHead& Ctc() { return ctc_; }
  // The beam-search decoder of model.speech_lm, or nullptr (greedy transcripts). Immutable.
  const audio::CtcLexiconDecoder* SpeechDecoder() const { return speech_decoder_.get(); }
  bool BeamInterims() const { return config_.speech_lm.interim; }
  const audio::LogMel& Mel() const { return *mel_; }
  int SampleRate() const { return sample_rate_; }
  double SecondsPerFrame() const { return seconds_per_frame_; }  // per encoder output frame
  double MaxSpeechSeconds() const { return max_speech_seconds_; }  // the encoder's longest input
  // The speech synthesizer: the first adapter trained for task tts, or nullptr.
  adapters::TtsPipeline* Synthesizer() { return synthesizer_.get(); }
  AdapterRef SynthesizerAdapter() const { return synthesizer_adapter_; }
  const adapters::TtsOptions& SynthesisOptions() const { return synthesis_options_; }
  std::vector<std::string> Voices() const;  // {"default"} with a synthesizer, else none
  // Ids an answer may use: the tokenizer's ids below the base vocabulary (a TTS adapter's unit
  // rows belong to speech, not to text answers).
  int64_t TextVocabulary() const;

 private:
  std::shared_ptr<ServedAdapter> Build(const AdapterEntry& entry, const adapters::MultimodalConfig& model_config);
  int64_t FreeSlot() const;  // registry lock held; 0 = none

  const EngineConfig config_;
  std::string name_, description_;
  adapters::SharedComponents shared_;
  audio::WhisperEncoder encoder_{nullptr};
  audio::CtcHead ctc_{nullptr};
  std::unique_ptr<audio::LogMel> mel_;
  std::unique_ptr<const audio::CtcLexiconDecoder> speech_decoder_;
  int sample_rate_ = 16000;
  double seconds_per_frame_ = 0.02;
  double max_speech_seconds_ = 30;
  std::unique_ptr<text::LoraBank> bank_;
  std::shared_mutex bank_mutex_;
  mutable std::mutex registry_mutex_;
  std::vector<std::shared_ptr<ServedAdapter>> adapters_;  // load order
  std::vector<std::shared_ptr<ServedAdapter>> retired_;   // unloaded, slot not yet reused
  std::vector<bool> slot_used_;
  std::unique_ptr<adapters::TtsPipeline> synthesizer_;
  AdapterRef synthesizer_adapter_;
  adapters::TtsOptions synthesis_options_;
  text::RowLora synthesis_lora_;  // the synthesizer's bank slot, when it has LoRA
};

}  // namespace slm::engine
