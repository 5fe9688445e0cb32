#include "engine/served_model.h"

#include <filesystem>

#include "audio/units.h"
#include "audio/whisper_encoder.h"
#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/strings.h"
#include "engine/status.h"

namespace slm::engine {
namespace {

namespace stdfs = std::filesystem;

std::map<std::string, std::string> ReadTasks(const AdapterEntry& entry) {
  if (!entry.tasks.empty()) return entry.tasks;
  const std::string path = entry.adapters + "/tasks.json";
  Check(stdfs::is_regular_file(path), "model.adapters '", entry.name, "': ", path,
        " does not exist (the trainer writes it; or list the adapter's `tasks` in the serve config)");
  const nlohmann::json j = fs::ReadJson(path);
  Check(j.is_object() && j.contains("tasks") && j["tasks"].is_object() && !j["tasks"].empty(), path,
        ": expected {\"tasks\": {\"<task>\": \"<prompt template>\", ...}}");
  std::map<std::string, std::string> tasks;
  for (auto it = j["tasks"].begin(); it != j["tasks"].end(); ++it) {
    Check(it.value().is_string(), path, ": the prompt of task '", it.key(), "' must be a string");
    tasks[it.key()] = it.value().get<std::string>();
  }
  return tasks;
}

adapters::MultimodalConfig ReadModelConfig(const AdapterEntry& entry, const EngineConfig& config) {
  if (entry.PromptOnly()) {  // the frozen backbone with the entry's templates
    adapters::MultimodalConfig model_config;
    model_config.backbone = config.backbone;
    model_config.device = config.device;
    model_config.dtype = config.dtype;
    model_config.lora_enabled = false;
    return model_config;
  }
  Check(stdfs::is_regular_file(entry.config), "model.adapters '", entry.name, "': config '", entry.config,
        "' does not exist");
  config::Document doc = config::Document::LoadFile(entry.config);
  adapters::MultimodalConfig model_config;
  model_config.Load(doc.Root().Child("model"));
  model_config.device = config.device;
  model_config.dtype = config.dtype;
  // The adapter's LoRA goes into the bank, never into the shared backbone (header comment).
  model_config.lora_enabled = false;
  return model_config;
}

std::string LoraDir(const AdapterEntry& entry) { return entry.adapters + "/lora"; }
bool HasLora(const AdapterEntry& entry) { return stdfs::is_regular_file(LoraDir(entry) + "/adapter_config.json"); }

}  // namespace

std::string FillTranscript(const std::string& prompt, const std::string& transcript) {
  std::string out = prompt;
  for (size_t at = out.find(kTranscriptPlaceholder); at != std::string::npos;
       at = out.find(kTranscriptPlaceholder, at + transcript.size()))
    out.replace(at, kTranscriptPlaceholder.size(), transcript);
  return out;
}

ServedModel::ServedModel(const EngineConfig& config)
    : config_(config), name_(config.model_name), description_(config.model_description) {
  torch::NoGradGuard no_grad;
  const torch::Device device = ParseDevice(config.device);
  const torch::ScalarType dtype = ParseDtype(config.dtype);
  Check(stdfs::is_directory(config.backbone), "model.backbone: '", config.backbone, "' is not a directory");
  shared_.backbone_dir = config.backbone;
  // Every adapter's `model` section, read once: the shared tokenizer needs the unit tokens of a
  // TTS adapter, if one is served, before any adapter is built.
  std::vector<adapters::MultimodalConfig> model_configs;
  text::TokenizerOptions tokenizer_options;
  for (const AdapterEntry& entry : config.adapters) {
    model_configs.push_back(ReadModelConfig(entry, config));
    if (!model_configs.back().speech_units.empty())
      tokenizer_options.num_speech_units = std::max(
          tokenizer_options.num_speech_units, audio::UnitTokenizer::Load(model_configs.back().speech_units).K());
  }
  shared_.tokenizer = std::make_shared<text::Tokenizer>(text::Tokenizer::Load(config.backbone, tokenizer_options));
  shared_.backbone = text::LoadLlama(config.backbone, device, dtype);
  shared_.backbone->Freeze();

  // The bank's rank: the configured maximum, or the largest rank of the adapters served from the
  // start (at least kDefaultBankRank, so that adapters loaded later usually fit).
  int64_t rank = config.max_lora_rank;
  if (rank == 0) {
    rank = kDefaultBankRank;
    for (const AdapterEntry& entry : config.adapters)
      if (HasLora(entry)) {
        try {
          rank = std::max(rank, text::ReadLoraAdapter(shared_.backbone->Config(), LoraDir(entry)).options.rank);
        } catch (const Error& e) {
          throw Error(Str("model.adapters '", entry.name, "': ", e.what()));
        }
      }
  }
  bank_ = std::make_unique<text::LoraBank>(shared_.backbone->Config(), config.max_loaded_adapters + 1, rank,
                                           torch::TensorOptions().dtype(dtype).device(device));
  slot_used_.assign(config.max_loaded_adapters + 1, false);
  slot_used_[0] = true;

  if (!config.speech_encoder.empty()) {
    const std::string& dir = config.speech_encoder;
    Check(stdfs::is_directory(dir), "model.speech_encoder: '", dir, "' is not a directory");
    encoder_ = audio::LoadWhisperEncoder(dir, device, dtype);
    encoder_->Freeze();
    shared_.speech_encoders.emplace(dir, encoder_);
    ctc_ = audio::LoadCtcHead(dir, encoder_->Config().d_model, "model.speech_encoder (the server's transcripts)",
                              device, dtype);
    const audio::LogMelOptions features = audio::LoadEncoderFeatureOptions(dir);
    Check(features.normalization != audio::MelNormalization::kWhisper, "model.speech_encoder: ", dir,
          " uses Whisper's per-utterance normalisation, which cannot stream; streaming needs a fixed-floor encoder");
    mel_ = std::make_unique<audio::LogMel>(features);
    sample_rate_ = features.sample_rate;
    seconds_per_frame_ = 2.0 * features.hop_length / features.sample_rate;  // conv2 has stride 2
    max_speech_seconds_ = double(encoder_->Config().MaxInputFrames() - 1) * features.hop_length / features.sample_rate;
  }
  if (!config.speech_lm.path.empty()) {
    Check(HasSpeech(), "model.speech_lm needs model.speech_encoder");
    audio::CtcBeamOptions options;
    options.beam = config.speech_lm.beam;
    options.lm_weight = static_cast<float>(config.speech_lm.lm_weight);
    options.word_bonus = static_cast<float>(config.speech_lm.word_bonus);
    options.char_threshold = static_cast<float>(config.speech_lm.char_threshold);
    try {
      auto lm = std::make_shared<const audio::WordLm>(audio::WordLm::Load(config.speech_lm.path));
      speech_decoder_ = std::make_unique<const audio::CtcLexiconDecoder>(lm, options);
      log::Info(Str("transcripts by lexicon + word LM beam search (", config.speech_lm.path, ": order ", lm->Order(),
                    ", ", lm->VocabularySize(), " words; beam ", options.beam, ")"));
    } catch (const Error& e) {
      throw Error(Str("model.speech_lm.path: ", e.what()));
    }
  }

  Check(static_cast<int>(config.adapters.size()) <= config.max_loaded_adapters, "model.adapters lists ",
        config.adapters.size(), " adapters but adapters.max_loaded is ", config.max_loaded_adapters);
  for (size_t i = 0; i < config.adapters.size(); ++i) {
    std::shared_ptr<ServedAdapter> adapter = Build(config.adapters[i], model_configs[i]);
    if (synthesizer_ == nullptr && adapter->HasTask("tts")) {
      Check(!model_configs[i].unit_decoder.empty(), "model.adapters '", adapter->name,
            "': a tts adapter needs model.unit_decoder in ", config.adapters[i].config, " to be served");
      synthesizer_ = std::make_unique<adapters::TtsPipeline>(adapter->model);
      synthesizer_adapter_ = adapter;
      synthesis_options_.prompt_template = adapter->tasks.at("tts");
      synthesis_options_.max_text_characters = config.max_synthesis_characters;
      if (adapter->has_lora) {
        synthesis_lora_.bank = bank_.get();
        synthesis_lora_.slots = torch::full({1}, adapter->slot, torch::TensorOptions(torch::kLong).device(device));
        synthesis_options_.lora = &synthesis_lora_;
      }
      log::Info(Str("speech synthesis by adapter '", adapter->name, "' (", adapter->model->SpeechUnits(),
                    " units, decoder ", model_configs[i].unit_decoder, ")"));
    }
    adapters_.push_back(std::move(adapter));
  }
  shared_.backbone->eval();
  // One pass now builds the fused projections (a lazy, mutating step) before several engine
  // threads run the backbone at once.
  text::LlamaInput warm;
  warm.input_ids = torch::zeros({1, 1}, torch::kLong);
  shared_.backbone->forward(warm);
}

std::shared_ptr<ServedAdapter> ServedModel::Build(const AdapterEntry& entry,
                                                  const adapters::MultimodalConfig& model_config) {
  Check(entry.PromptOnly() || stdfs::is_directory(entry.adapters), "model.adapters '", entry.name,
        "': adapter directory '", entry.adapters, "' does not exist");
  auto adapter = std::make_shared<ServedAdapter>();
  adapter->name = entry.name;
  adapter->tasks = ReadTasks(entry);
  torch::NoGradGuard no_grad;
  try {
    adapter->model = adapters::MultimodalLM(model_config, &shared_);
    if (!entry.PromptOnly()) adapter->model->LoadAdapters(entry.adapters, /*load_lora=*/false);
  } catch (const Error& e) {
    throw Error(Str("model.adapters '", entry.name, "' (", entry.adapters, "): ", e.what()));
  }
  adapter->model->eval();
  for (torch::Tensor& p : adapter->model->parameters()) p.set_requires_grad(false);
  {
    std::lock_guard<std::mutex> lock(registry_mutex_);
    adapter->slot = FreeSlot();
    if (adapter->slot == 0)
      Fail(Code::kResourceExhausted, Str("model.adapters '", entry.name, "': all ", config_.max_loaded_adapters,
                                         " adapter slots are in use (adapters.max_loaded)"));
    slot_used_[adapter->slot] = true;
  }
  // The slot goes back when anything below fails.
  struct SlotGuard {
    ServedModel* model;
    int64_t slot;
    bool keep = false;
    ~SlotGuard() {
      if (keep) return;
      std::lock_guard<std::mutex> lock(model->registry_mutex_);
      model->slot_used_[slot] = false;
    }
  } guard{this, adapter->slot};
  if (HasLora(entry)) {
    text::LoraAdapter lora;
    try {
      lora = text::ReadLoraAdapter(shared_.backbone->Config(), LoraDir(entry));
    } catch (const Error& e) {
      throw Error(Str("model.adapters '", entry.name, "': ", e.what()));
    }
    Check(lora.options.rank <= bank_->Rank(), "model.adapters '", entry.name, "': LoRA rank ", lora.options.rank,
          " is above the ", bank_->Rank(), " this server holds (adapters.max_lora_rank)");
    std::unique_lock<std::shared_mutex> lock(bank_mutex_);
    bank_->Set(adapter->slot, lora.weights, lora.options.alpha / lora.options.rank);
    adapter->has_lora = true;
  }
  if (adapter->HasTask("sqa")) {
    const std::string& sqa = adapter->tasks.at("sqa");
    adapter->answers_transcript = sqa.find(kTranscriptPlaceholder) != std::string::npos;
    const bool hears = sqa.find("<speech>") != std::string::npos;
    Check(adapter->answers_transcript || hears, "model.adapters '", entry.name, "': the sqa prompt '", sqa,
          "' has neither <speech> nor ", kTranscriptPlaceholder, ": a spoken question could not reach the backbone");
    Check(!hears || adapter->model->HasSpeech(), "model.adapters '", entry.name,
          "': trained for sqa but has no speech input");
    adapters::MultimodalExample question;
    question.prompt = FillTranscript(sqa, "");
    if (hears) question.speech = {torch::zeros({1, 1})};
    adapter->sqa_text_positions =
        adapter->model->PromptPositions(question) - (hears ? adapter->model->SpeechPositions(1) : 0);
    adapter->speech_positions_per_second =
        (hears ? adapter->model->SpeechPositionsPerSecond() : 0) +
        (adapter->answers_transcript ? kTranscriptPositionsPerSecond : 0);
    adapter->context = ContextLength();
    const double seconds = adapter->RespondSeconds(config_.max_answer_tokens);
    Check(seconds >= kMinRespondSeconds, "model.adapters '", entry.name, "': the backbone's context of ",
          ContextLength(), " positions minus the sqa prompt (", adapter->sqa_text_positions,
          ") minus limits.max_answer_tokens (", config_.max_answer_tokens, ") leaves ", seconds,
          " s of speech for a spoken question (", adapter->speech_positions_per_second,
          " positions/s), less than ", kMinRespondSeconds, " s; lower limits.max_answer_tokens");
  }
  std::vector<std::string> tasks;
  for (const auto& [task, prompt] : adapter->tasks) tasks.push_back(task);
  log::Info(Str("adapter '", entry.name, "' loaded from ", entry.adapters, " (tasks: ", Join(tasks),
                adapter->has_lora ? "; LoRA" : "", ")"));
  guard.keep = true;
  return adapter;
}

int64_t ServedModel::FreeSlot() const {
  for (size_t s = 1; s < slot_used_.size(); ++s)
    if (!slot_used_[s]) return static_cast<int64_t>(s);
  return 0;
}

void ServedModel::LoadAdapter(const AdapterEntry& entry) {
  {
    std::lock_guard<std::mutex> lock(registry_mutex_);
    for (const auto& a : adapters_)
      if (a->name == entry.name) Fail(Code::kFailedPrecondition, Str("adapter '", entry.name, "' is already loaded"));
  }
  const adapters::MultimodalConfig model_config = ReadModelConfig(entry, config_);
  Check(model_config.speech_units.empty(), "model.adapters '", entry.name,
        "': a tts adapter can only be served from the start (its unit tokens belong to the shared tokenizer)");
  std::shared_ptr<ServedAdapter> adapter = Build(entry, model_config);
  std::lock_guard<std::mutex> lock(registry_mutex_);
  for (const auto& a : adapters_)
    if (a->name == entry.name) {
      slot_used_[adapter->slot] = false;  // a concurrent load of the same name won
      Fail(Code::kFailedPrecondition, Str("adapter '", entry.name, "' is already loaded"));
    }
  adapters_.push_back(std::move(adapter));
}

void ServedModel::UnloadAdapter(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  auto it = std::find_if(adapters_.begin(), adapters_.end(), [&](const auto& a) { return a->name == name; });
  if (it == adapters_.end()) Fail(Code::kNotFound, Str("adapter '", name, "' is not loaded"));
  if (*it == synthesizer_adapter_)
    Fail(Code::kFailedPrecondition, Str("adapter '", name, "' is the speech synthesizer and stays loaded"));
  retired_.push_back(*it);
  adapters_.erase(it);
  log::Info(Str("adapter '", name, "' unloaded"));
}

void ServedModel::ReleaseRetired() {
  std::vector<int64_t> free;
  {
    std::lock_guard<std::mutex> lock(registry_mutex_);
    for (auto it = retired_.begin(); it != retired_.end();) {
      if (it->use_count() > 1) {
        ++it;
        continue;
      }
      free.push_back((*it)->slot);
      it = retired_.erase(it);
    }
  }
  if (free.empty()) return;
  std::unique_lock<std::shared_mutex> bank(bank_mutex_);
  for (const int64_t slot : free) bank_->Clear(slot);
  bank.unlock();
  std::lock_guard<std::mutex> lock(registry_mutex_);
  for (const int64_t slot : free) slot_used_[slot] = false;
}

std::vector<std::string> ServedModel::Voices() const {
  if (synthesizer_ == nullptr) return {};
  return {"default"};
}

int64_t ServedModel::TextVocabulary() const {
  return std::min<int64_t>(shared_.tokenizer->VocabSize(), shared_.backbone->Config().vocab_size);
}

bool ServedModel::HasImages() const {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  for (const auto& a : adapters_)
    if (a->model->HasImage()) return true;
  return false;
}

int64_t ServedModel::ContextLength() const { return shared_.backbone->Config().max_position_embeddings; }

AdapterRef ServedModel::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  for (const auto& a : adapters_)
    if (a->name == name) return a;
  return nullptr;
}

AdapterRef ServedModel::DefaultFor(const std::string& task) const {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  for (const auto& a : adapters_)
    if (a->HasTask(task)) return a;
  return nullptr;
}

std::vector<AdapterRef> ServedModel::Adapters() const {
  std::lock_guard<std::mutex> lock(registry_mutex_);
  return {adapters_.begin(), adapters_.end()};
}

ModelInfo ServedModel::Info() const {
  ModelInfo info;
  info.name = name_;
  info.description = description_;
  info.accepts_audio = HasSpeech();
  info.accepts_images = HasImages();
  info.context_length = ContextLength();
  info.voices = Voices();
  const AdapterRef default_sqa = DefaultFor("sqa");
  if (default_sqa)
    info.max_respond_seconds =
        std::min(default_sqa->RespondSeconds(config_.max_answer_tokens), config_.max_utterance_seconds);
  for (const AdapterRef& a : Adapters()) {
    AdapterInfo adapter;
    adapter.name = a->name;
    for (const auto& [task, prompt] : a->tasks) adapter.tasks.push_back(task);
    adapter.is_default = a == default_sqa;
    info.adapters.push_back(adapter);
  }
  return info;
}

}  // namespace slm::engine
