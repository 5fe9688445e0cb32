#include "serve/model.h"

#include <filesystem>

#include "audio/units.h"
#include "audio/whisper_encoder.h"
#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/strings.h"

namespace slm::serve {
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

}  // namespace

ServedModel::ServedModel(const ServeConfig& config)
    : name_(config.model_name), description_(config.model_description) {
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
    Check(stdfs::is_regular_file(entry.config), "model.adapters '", entry.name, "': config '", entry.config,
          "' does not exist");
    config::Document doc = config::Document::LoadFile(entry.config);
    adapters::MultimodalConfig& model_config = model_configs.emplace_back();
    model_config.Load(doc.Root().Child("model"));
    model_config.device = config.device;
    model_config.dtype = config.dtype;
    if (!model_config.speech_units.empty())
      tokenizer_options.num_speech_units = std::max(tokenizer_options.num_speech_units,
                                                    audio::UnitTokenizer::Load(model_config.speech_units).K());
  }
  shared_.tokenizer = std::make_shared<text::Tokenizer>(text::Tokenizer::Load(config.backbone, tokenizer_options));
  shared_.backbone = text::LoadLlama(config.backbone, device, dtype);
  shared_.backbone->Freeze();

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

  for (size_t i = 0; i < config.adapters.size(); ++i) {
    const AdapterEntry& entry = config.adapters[i];
    const adapters::MultimodalConfig& model_config = model_configs[i];
    Check(stdfs::is_directory(entry.adapters), "model.adapters '", entry.name, "': adapter directory '",
          entry.adapters, "' does not exist");
    auto adapter = std::make_unique<ServedAdapter>();
    adapter->name = entry.name;
    adapter->tasks = ReadTasks(entry);
    try {
      adapter->model = adapters::MultimodalLM(model_config, &shared_);
      adapter->model->LoadAdapters(entry.adapters);
    } catch (const Error& e) {
      throw Error(Str("model.adapters '", entry.name, "' (", entry.adapters, "): ", e.what()));
    }
    adapter->model->eval();
    for (torch::Tensor& p : adapter->model->parameters()) p.set_requires_grad(false);
    if (shared_.backbone->HasLora() && model_config.lora_enabled)
      for (const torch::Tensor& p : shared_.backbone->LoraParameters()) adapter->lora.push_back(p.detach().clone());
    std::vector<std::string> tasks;
    for (const auto& [task, prompt] : adapter->tasks) tasks.push_back(task);
    log::Info(Str("adapter '", entry.name, "' loaded from ", entry.adapters, " (tasks: ", Join(tasks), ")"));
    if (synthesizer_ == nullptr && adapter->HasTask("tts")) {
      Check(!model_config.unit_decoder.empty(), "model.adapters '", entry.name,
            "': a tts adapter needs model.unit_decoder in ", entry.config, " to be served");
      synthesizer_ = std::make_unique<adapters::TtsPipeline>(adapter->model);
      synthesizer_adapter_ = adapter.get();
      synthesis_options_.prompt_template = adapter->tasks.at("tts");
      synthesis_options_.max_text_characters = config.max_synthesis_characters;
      log::Info(Str("speech synthesis by adapter '", entry.name, "' (", adapter->model->SpeechUnits(), " units, decoder ",
                    model_config.unit_decoder, ")"));
    }
    adapters_.push_back(std::move(adapter));
  }
  shared_.backbone->eval();
}

std::vector<std::string> ServedModel::Voices() const {
  if (synthesizer_ == nullptr) return {};
  return {"default"};
}

int64_t ServedModel::TextVocabulary() const {
  return std::min<int64_t>(shared_.tokenizer->VocabSize(), shared_.backbone->Config().vocab_size);
}

bool ServedModel::HasImages() const {
  for (const auto& a : adapters_)
    if (a->model->HasImage()) return true;
  return false;
}

int64_t ServedModel::ContextLength() const { return shared_.backbone->Config().max_position_embeddings; }

const ServedAdapter* ServedModel::Find(const std::string& name) const {
  for (const auto& a : adapters_)
    if (a->name == name) return a.get();
  return nullptr;
}

const ServedAdapter* ServedModel::DefaultFor(const std::string& task) const {
  for (const auto& a : adapters_)
    if (a->HasTask(task)) return a.get();
  return nullptr;
}

void ServedModel::Activate(const ServedAdapter* adapter) {
  if (activated_ && adapter == active_) return;
  text::LlamaModel& backbone = shared_.backbone;
  if (backbone->HasLora()) {
    if (adapter != nullptr && !adapter->lora.empty()) {
      torch::NoGradGuard no_grad;
      const std::vector<torch::Tensor> params = backbone->LoraParameters();
      for (size_t i = 0; i < params.size(); ++i) params[i].copy_(adapter->lora[i]);
      backbone->SetLoraScale(1.0);
    } else {
      backbone->SetLoraScale(0.0);
    }
  }
  active_ = adapter;
  activated_ = true;
}

}  // namespace slm::serve
