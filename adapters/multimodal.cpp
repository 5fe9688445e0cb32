#include "adapters/multimodal.h"

#include <algorithm>
#include <filesystem>
#include <optional>

#include "audio/ctc.h"
#include "audio/units.h"
#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "text/model_inspect.h"

namespace slm::adapters {
namespace {

namespace stdfs = std::filesystem;
using config::InRange;
using nlohmann::json;

constexpr int64_t kIgnore = -100;

int64_t Count(const std::vector<int64_t>& ids, int64_t id) {
  return static_cast<int64_t>(std::count(ids.begin(), ids.end(), id));
}

// Projector dims left at 0 come from the models; given ones must agree.
void FillDims(ProjectorSpec& spec, int64_t input_dim, int64_t output_dim, const std::string& where) {
  Check(spec.input_dim == 0 || spec.input_dim == input_dim, where, ".projector.input_dim is ",
        spec.input_dim, " but the encoder's features have ", input_dim, " channels");
  Check(spec.output_dim == 0 || spec.output_dim == output_dim, where, ".projector.output_dim is ",
        spec.output_dim, " but the backbone's hidden_size is ", output_dim);
  spec.input_dim = input_dim;
  spec.output_dim = output_dim;
}

int64_t Bytes(const torch::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

ComponentSummary Summarize(const std::string& name, const std::vector<torch::Tensor>& params) {
  ComponentSummary c;
  c.name = name;
  for (const torch::Tensor& p : params) {
    c.parameters += p.numel();
    if (p.requires_grad()) c.trainable += p.numel();
    c.bytes += Bytes(p);
  }
  return c;
}

json SpecJson(const ProjectorSpec& s) {
  json spec = {{"type", s.type},     {"input_dim", s.input_dim},   {"output_dim", s.output_dim},
               {"hidden_dim", s.hidden_dim}, {"stack", s.stack},   {"kernel_size", s.kernel_size},
               {"stride", s.stride}, {"window", s.window},         {"num_queries", s.num_queries},
               {"num_layers", s.num_layers}, {"num_heads", s.num_heads}};
  // Written only when not the default, so adapters saved before the key existed still match.
  if (s.units != "characters") spec["units"] = s.units;
  return spec;
}

// A frozen encoder: the shared one for `dir` (loaded on first use), or a private one when the
// model fine-tunes it (its weights then belong to this model's adapters).
template <class Holder, class Load>
Holder SharedOrOwn(std::map<std::string, Holder>& shared, const std::string& dir, bool fine_tuned, Load load) {
  if (!fine_tuned && shared.count(dir)) return shared.at(dir);
  Holder encoder = load();
  encoder->Freeze();
  if (!fine_tuned) shared.emplace(dir, encoder);
  return encoder;
}

}  // namespace

MultimodalConfig::MultimodalConfig() {
  speech.projector.type = "stack_mlp";
  speech.projector.stack = 4;
  image.projector.type = "mlp";
}

void MultimodalConfig::Load(config::Node node) {
  node.Require("backbone", backbone);
  node.Read("speech_units", speech_units).Read("unit_decoder", unit_decoder);
  if (node.Has("speech")) {
    auto s = node.Child("speech");
    s.Require("encoder", speech.encoder);
    s.Read("attention_chunk_frames", speech.attention_chunk_frames, InRange<int64_t>(-1, 1 << 20))
        .Read("train_encoder", speech.train_encoder);
    if (s.Has("projector")) speech.projector.Load(s.Child("projector"));
  }
  if (node.Has("image")) {
    auto i = node.Child("image");
    i.Require("encoder", image.encoder);
    i.Read("feature_layer", image.features.layer, InRange<int64_t>(-1024, 1024))
        .Read("keep_class_token", image.features.keep_class_token)
        .Read("train_encoder", image.train_encoder);
    if (i.Has("projector")) image.projector.Load(i.Child("projector"));
  }
  if (node.Has("lora")) {
    auto l = node.Child("lora");
    l.Read("enabled", lora_enabled);
    lora.Load(l);
  }
  node.Read("device", device).Read("dtype", dtype,
                                   config::OneOf<std::string>({"float32", "bfloat16", "float16"}));
  if (node.Has("chat_format") && node.Raw()["chat_format"].IsMap()) {
    custom_chat_format = text::ChatFormat::FromConfig(node.Child("chat_format"));
    chat_format = "custom";
  } else {
    std::vector<std::string> names = text::ChatFormat::BuiltinNames();
    names.insert(names.begin(), "auto");
    node.Read("chat_format", chat_format, config::OneOf<std::string>(names));
  }
}

nlohmann::json ModelSummary::ToJson() const {
  json parts = json::array();
  for (const ComponentSummary& c : components)
    parts.push_back({{"name", c.name}, {"parameters", c.parameters}, {"trainable", c.trainable},
                     {"bytes", c.bytes}});
  return {{"components", parts},
          {"total_parameters", total_parameters},
          {"trainable_parameters", trainable_parameters},
          {"frozen_parameters", frozen_parameters},
          {"parameter_bytes", parameter_bytes},
          {"training_state_bytes", training_state_bytes}};
}

MultimodalLMImpl::MultimodalLMImpl(const MultimodalConfig& config) : MultimodalLMImpl(config, nullptr) {}

MultimodalLMImpl::MultimodalLMImpl(const MultimodalConfig& config, SharedComponents* shared) : config_(config) {
  device_ = ParseDevice(config_.device);
  dtype_ = ParseDtype(config_.dtype);
  Check(!config_.backbone.empty(), "model.backbone: no backbone directory given");
  SharedComponents own;
  SharedComponents& parts = shared != nullptr ? *shared : own;
  std::optional<audio::UnitTokenizer> units;
  if (!config_.speech_units.empty()) {
    units.emplace(audio::UnitTokenizer::Load(config_.speech_units));
    num_units_ = units->K();
    units_hash_ = units->Hash();
    units_frame_rate_hz_ = units->Info().frame_rate_hz;
  }
  if (parts.backbone.is_empty()) {
    parts.backbone_dir = config_.backbone;
    text::TokenizerOptions tokenizer_options;
    tokenizer_options.num_speech_units = num_units_;
    parts.tokenizer = std::make_shared<text::Tokenizer>(text::Tokenizer::Load(config_.backbone, tokenizer_options));
    parts.backbone = text::LoadLlama(config_.backbone, device_, dtype_);
    parts.backbone->Freeze();
    text::CheckTokenizerFitsModel(*parts.tokenizer, parts.backbone->Config(), "model.backbone '" + config_.backbone + "'");
  }
  Check(stdfs::weakly_canonical(parts.backbone_dir) == stdfs::weakly_canonical(config_.backbone),
        "model.backbone '", config_.backbone, "' differs from the shared backbone '", parts.backbone_dir, "'");
  tokenizer_ = parts.tokenizer;
  chat_format_ = config_.chat_format == "custom"
                     ? config_.custom_chat_format
                     : text::ChatFormat::Resolve(config_.chat_format, config_.backbone, "model.chat_format");
  backbone_ = register_module("backbone", parts.backbone);
  const int64_t hidden = backbone_->Config().hidden_size;
  if (num_units_ > 0) {
    // Unit u is token first + u; the new rows cover every id past the base vocabulary up to the
    // last unit (markers the base model lacks included: they are spliced over, never predicted).
    Check(tokenizer_->NumSpeechUnits() >= num_units_, "model.speech_units: the shared tokenizer reserves ",
          tokenizer_->NumSpeechUnits(), " units, the unit tokenizer '", config_.speech_units, "' has ", num_units_);
    first_unit_id_ = tokenizer_->SpeechUnitId(0);
    const int64_t base = backbone_->Config().vocab_size;
    Check(first_unit_id_ >= base, "model.speech_units: the tokenizer of '", config_.backbone, "' gives unit 0 the id ",
          first_unit_id_, " inside the base vocabulary of ", base);
    const int64_t extra = tokenizer_->SpeechUnitId(num_units_ - 1) + 1 - base;
    if (backbone_->ExtraVocabulary() == 0) backbone_->AddVocabulary(extra);
    Check(backbone_->ExtraVocabulary() == extra, "model.speech_units: the shared backbone already has ",
          backbone_->ExtraVocabulary(), " extra vocabulary rows, this model needs ", extra);
  }

  if (!config_.speech.encoder.empty()) {
    speech_encoder_ = register_module(
        "speech_encoder", SharedOrOwn(parts.speech_encoders, config_.speech.encoder, config_.speech.train_encoder,
                                      [&] { return audio::LoadWhisperEncoder(config_.speech.encoder, device_, dtype_); }));
    if (config_.speech.train_encoder)
      for (torch::Tensor& p : speech_encoder_->parameters()) p.set_requires_grad(true);
    const audio::LogMelOptions features = audio::LoadEncoderFeatureOptions(config_.speech.encoder);
    Check(features.n_mels == speech_encoder_->Config().num_mel_bins, config_.speech.encoder,
          ": preprocessor_config.json has ", features.n_mels, " mel bins, the encoder expects ",
          speech_encoder_->Config().num_mel_bins);
    mel_ = std::make_unique<audio::LogMel>(features);
    FillDims(config_.speech.projector, speech_encoder_->Config().d_model, hidden, "model.speech");
    speech_projector_ = register_module("speech_projector", MakeProjector(config_.speech.projector));
    speech_projector_->to(device_, dtype_);
    if (config_.speech.projector.type == "ctc_embed") BindCtcHead();
    speech_marker_ = tokenizer_->AddedTokenId(text::kSpeechMarker);
  }
  if (!config_.image.encoder.empty()) {
    image_encoder_ = register_module(
        "image_encoder", SharedOrOwn(parts.image_encoders, config_.image.encoder, config_.image.train_encoder,
                                     [&] { return vision::LoadClipVision(config_.image.encoder, device_, dtype_); }));
    if (config_.image.train_encoder)
      for (torch::Tensor& p : image_encoder_->parameters()) p.set_requires_grad(true);
    const std::string pre = config_.image.encoder + "/preprocessor_config.json";
    if (stdfs::exists(pre)) {
      image_preprocess_ = vision::ClipPreprocessOptions::FromFile(pre);
    } else {
      image_preprocess_.shortest_edge = image_encoder_->Config().image_size;
      image_preprocess_.crop_height = image_preprocess_.crop_width = image_encoder_->Config().image_size;
    }
    FillDims(config_.image.projector, image_encoder_->Config().hidden_size, hidden, "model.image");
    image_projector_ = register_module("image_projector", MakeProjector(config_.image.projector));
    image_projector_->to(device_, dtype_);
    image_marker_ = tokenizer_->AddedTokenId(text::kImageMarker);
  }
  if (config_.lora_enabled) {
    if (!backbone_->HasLora()) {
      backbone_->AddLora(config_.lora);
    } else {
      const text::LoraOptions& have = backbone_->Lora();
      Check(have.rank == config_.lora.rank && have.alpha == config_.lora.alpha &&
                have.target_modules == config_.lora.target_modules,
            "model.lora (rank ", config_.lora.rank, ", alpha ", config_.lora.alpha, ") differs from the LoRA the ",
            "shared backbone already carries (rank ", have.rank, ", alpha ", have.alpha,
            "): adapters over one backbone must use the same LoRA rank, alpha and target_modules");
    }
  }
}

double MultimodalLMImpl::SpeechPositionsPerSecond() const {
  Check(speech_projector_ != nullptr, "the model has no speech input");
  // Whisper: one encoder frame per two feature frames.
  const double frames_per_second =
      static_cast<double>(mel_->Options().sample_rate) / mel_->Options().hop_length / 2.0;
  return speech_projector_->OutputRate(frames_per_second);
}

double MultimodalLMImpl::SpeechFeatureRate() const {
  Check(mel_ != nullptr, "the model has no speech input");
  return static_cast<double>(mel_->Options().sample_rate) / mel_->Options().hop_length;
}

int64_t MultimodalLMImpl::SpeechPositions(int64_t feature_frames) const {
  Check(speech_projector_ != nullptr, "the model has no speech input");
  return speech_projector_->OutputLength((feature_frames + 1) / 2);  // Whisper's stride-2 conv
}

int64_t MultimodalLMImpl::PromptPositions(const MultimodalExample& example) const {
  const std::vector<int64_t> ids =
      example.tokens.empty() ? chat_format_.EncodePrompt(*tokenizer_, example.prompt) : example.tokens;
  const int64_t speech_slots = speech_marker_ >= 0 ? Count(ids, speech_marker_) : 0;
  const int64_t image_slots = image_marker_ >= 0 ? Count(ids, image_marker_) : 0;
  Check(speech_slots == static_cast<int64_t>(example.speech.size()), "the prompt has ", speech_slots,
        " <speech> placeholder(s) but ", example.speech.size(), " speech input(s) were given");
  Check(example.tokens.empty() ? image_slots == static_cast<int64_t>(example.images.size()) : example.images.empty(),
        "the prompt has ", image_slots, " <image> placeholder(s) but ", example.images.size(), " image(s) were given");
  // A marker of a pre-tokenized row stays in place; in a prompt it is replaced.
  int64_t positions = static_cast<int64_t>(ids.size());
  if (example.tokens.empty()) positions -= speech_slots + image_slots;
  for (const torch::Tensor& clip : example.speech) positions += SpeechPositions(clip.defined() ? clip.size(0) : 0);
  if (!example.images.empty()) {
    const int64_t tokens = image_encoder_->Config().NumPatches() + (config_.image.features.keep_class_token ? 1 : 0);
    positions += static_cast<int64_t>(example.images.size()) * image_projector_->OutputLength(tokens);
  }
  return positions;
}

double MultimodalLMImpl::MaxSpeechSeconds() const {
  if (speech_encoder_.is_empty()) return 0.0;
  const double frames_per_second =
      static_cast<double>(mel_->Options().sample_rate) / mel_->Options().hop_length;
  return speech_encoder_->Config().MaxInputFrames() / frames_per_second;
}

torch::Tensor MultimodalLMImpl::SpeechFeatures(const std::vector<float>& samples) const {
  Check(mel_ != nullptr, "the model has no speech input (model.speech.encoder)");
  return mel_->Compute(samples);
}

torch::Tensor MultimodalLMImpl::ImagePixels(const std::string& image_path) const {
  Check(!image_encoder_.is_empty(), "the model has no image input (model.image.encoder)");
  return ImagePixels(vision::LoadImage(image_path));
}

torch::Tensor MultimodalLMImpl::ImagePixels(const cv::Mat& rgb8) const {
  Check(!image_encoder_.is_empty(), "the model has no image input (model.image.encoder)");
  return vision::ClipPreprocess(rgb8, image_preprocess_);
}

std::vector<torch::Tensor> MultimodalLMImpl::EncodeSpeech(const std::vector<MultimodalExample>& examples) {
  const audio::WhisperEncoderOutput encoded = EncodeSpeechFrames(examples);
  if (!encoded.last_hidden_state.defined()) return {};
  const ProjectorOutput projected = speech_projector_->Project(encoded.last_hidden_state, encoded.lengths);
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < projected.embeds.size(0); ++i)
    out.push_back(projected.embeds[i].slice(0, 0, projected.lengths[i].item<int64_t>()));
  return out;
}

audio::WhisperEncoderOutput MultimodalLMImpl::EncodeSpeechFrames(const std::vector<MultimodalExample>& examples) {
  std::vector<const torch::Tensor*> clips;
  for (size_t e = 0; e < examples.size(); ++e)
    for (size_t c = 0; c < examples[e].speech.size(); ++c) {
      const torch::Tensor& f = examples[e].speech[c];
      Check(!speech_encoder_.is_empty(), "example ", e, " has speech but the model has no speech encoder");
      const int64_t mels = speech_encoder_->Config().num_mel_bins;
      Check(f.defined() && f.dim() == 2 && f.size(1) == mels && f.size(0) > 0, "example ", e,
            ", speech ", c, ": features must be log-mel [frames, ", mels, "], got ",
            f.defined() ? Str(f.sizes()) : std::string("undefined"));
      Check(f.size(0) <= speech_encoder_->Config().MaxInputFrames(), "example ", e, ", speech ", c,
            ": ", f.size(0), " frames exceed the encoder's ", speech_encoder_->Config().MaxInputFrames(),
            " (", MaxSpeechSeconds(), " s)");
      clips.push_back(&f);
    }
  if (clips.empty()) return {};
  int64_t longest = 0;
  for (const torch::Tensor* f : clips) longest = std::max(longest, f->size(0));
  torch::Tensor features = torch::zeros({static_cast<int64_t>(clips.size()), longest, clips[0]->size(1)});
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < clips.size(); ++i) {
    features[i].slice(0, 0, clips[i]->size(0)).copy_(*clips[i]);
    lengths.push_back(clips[i]->size(0));
  }
  audio::WhisperEncoderOutput encoded;
  {
    // A frozen encoder keeps no graph.
    const std::optional<torch::NoGradGuard> no_grad =
        config_.speech.train_encoder ? std::nullopt : std::make_optional<torch::NoGradGuard>();
    audio::WhisperEncoderInput input;
    input.features = features.to(device_, dtype_);
    input.lengths = torch::tensor(lengths, torch::kLong);
    input.attention_chunk_frames = config_.speech.attention_chunk_frames;
    encoded = speech_encoder_->forward(input);
  }
  return encoded;
}

std::vector<torch::Tensor> MultimodalLMImpl::EncodeImages(const std::vector<MultimodalExample>& examples) {
  std::vector<torch::Tensor> pixels;
  for (size_t e = 0; e < examples.size(); ++e)
    for (size_t i = 0; i < examples[e].images.size(); ++i) {
      Check(!image_encoder_.is_empty(), "example ", e, " has images but the model has no image encoder");
      const torch::Tensor& p = examples[e].images[i];
      const int64_t size = image_encoder_->Config().image_size;
      Check(p.defined() && p.dim() == 3 && p.size(0) == 3 && p.size(1) == size && p.size(2) == size,
            "example ", e, ", image ", i, ": pixels must be [3, ", size, ", ", size, "], got ",
            p.defined() ? Str(p.sizes()) : std::string("undefined"));
      pixels.push_back(p);
    }
  if (pixels.empty()) return {};
  torch::Tensor features;
  {
    const std::optional<torch::NoGradGuard> no_grad =
        config_.image.train_encoder ? std::nullopt : std::make_optional<torch::NoGradGuard>();
    features = image_encoder_->Features(torch::stack(pixels).to(device_, dtype_), config_.image.features);
  }
  const torch::Tensor projected = image_projector_->forward(features);
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < projected.size(0); ++i) out.push_back(projected[i]);
  return out;
}

MultimodalBatch MultimodalLMImpl::Prepare(const std::vector<MultimodalExample>& examples,
                                         text::PaddingSide side) {
  Check(!examples.empty(), "MultimodalLM: an empty batch");
  const bool training = side == text::PaddingSide::kRight;
  // Placeholders first, so a mismatch is reported before any encoder runs.
  std::vector<std::vector<int64_t>> prompts, targets;
  for (size_t e = 0; e < examples.size(); ++e) {
    const MultimodalExample& ex = examples[e];
    if (!ex.tokens.empty()) {
      Check(ex.images.empty() && ex.prompt.empty() && ex.target.empty(), "example ", e,
            ": a pre-tokenized row (tokens) takes no prompt, target or images");
      Check(ex.speech.empty() || Count(ex.tokens, speech_marker_) == static_cast<int64_t>(ex.speech.size()),
            "example ", e, ": a pre-tokenized row with ", ex.speech.size(), " speech clip(s) has ",
            speech_marker_ >= 0 ? Count(ex.tokens, speech_marker_) : 0, " <speech> marker(s)",
            speech_marker_ < 0 ? " (the model has no speech encoder)" : "");
      Check(ex.score_from >= 0 && ex.score_from < static_cast<int64_t>(ex.tokens.size()), "example ", e,
            ": score_from ", ex.score_from, " outside its ", ex.tokens.size(), " tokens");
      prompts.emplace_back();
      targets.emplace_back();
      continue;
    }
    prompts.push_back(chat_format_.EncodePrompt(*tokenizer_, ex.prompt));
    const int64_t speech_slots = speech_marker_ >= 0 ? Count(prompts.back(), speech_marker_) : 0;
    const int64_t image_slots = image_marker_ >= 0 ? Count(prompts.back(), image_marker_) : 0;
    Check(speech_slots == static_cast<int64_t>(ex.speech.size()), "example ", e, ": the prompt has ",
          speech_slots, " <speech> placeholder(s) but ", ex.speech.size(), " speech input(s) were given",
          speech_marker_ < 0 && !ex.speech.empty() ? " (the model has no speech encoder)" : "");
    Check(image_slots == static_cast<int64_t>(ex.images.size()), "example ", e, ": the prompt has ",
          image_slots, " <image> placeholder(s) but ", ex.images.size(), " image(s) were given",
          image_marker_ < 0 && !ex.images.empty() ? " (the model has no image encoder)" : "");
    if (training) {
      Check(!ex.target.empty(), "example ", e, ": empty target (nothing to learn)");
      targets.push_back(chat_format_.EncodeAnswer(*tokenizer_, ex.target));
    } else {
      targets.emplace_back();
    }
  }
  const std::vector<torch::Tensor> speech = EncodeSpeech(examples);
  const std::vector<torch::Tensor> images = EncodeImages(examples);

  // Rows: embeddings and labels, placeholders replaced in order. The text runs of every row are
  // embedded by one lookup after the layout is known (one host-to-device copy and one kernel for
  // the batch instead of a few per row: on a GPU each small copy waits for the queued work).
  struct Part {
    torch::Tensor embeds;  // an encoder's output; undefined = ids [offset, offset + length)
    int64_t offset = 0, length = 0;
  };
  std::vector<int64_t> all_ids;
  auto text = [&all_ids](const std::vector<int64_t>& ids) {
    Part part{torch::Tensor(), static_cast<int64_t>(all_ids.size()), static_cast<int64_t>(ids.size())};
    all_ids.insert(all_ids.end(), ids.begin(), ids.end());
    return part;
  };
  const int64_t max_positions = backbone_->Config().max_position_embeddings;
  size_t next_speech = 0, next_image = 0;
  std::vector<std::vector<Part>> row_parts;
  std::vector<std::vector<int64_t>> row_labels;
  MultimodalBatch batch;
  for (size_t e = 0; e < examples.size(); ++e) {
    std::vector<Part> parts;
    std::vector<int64_t> labels;
    std::vector<int64_t> run;  // text ids waiting to be embedded
    auto flush = [&] {
      if (run.empty()) return;
      parts.push_back(text(run));
      labels.insert(labels.end(), run.size(), kIgnore);
      run.clear();
    };
    if (!examples[e].tokens.empty()) {
      // Text runs are embedded as they are; with speech clips, each <speech> id is followed by the
      // next clip's projected frames (unlabelled).
      const std::vector<int64_t>& ids = examples[e].tokens;
      const bool splice = !examples[e].speech.empty();
      for (size_t t = 0; t < ids.size(); ++t) {
        const bool scored = static_cast<int64_t>(t) >= examples[e].score_from && ids[t] != tokenizer_->BosId();
        run.push_back(ids[t]);
        labels.push_back(scored ? ids[t] : kIgnore);
        batch.target_tokens += scored ? 1 : 0;
        if (splice && ids[t] == speech_marker_) {
          // flush() labels its run as ignored; this run's labels are already in place.
          parts.push_back(text(run));
          run.clear();
          const torch::Tensor& inserted = speech[next_speech++];
          parts.push_back(Part{inserted});
          labels.insert(labels.end(), inserted.size(0), kIgnore);
        }
      }
      if (!run.empty()) parts.push_back(text(run));
      run.clear();
    }
    for (int64_t id : prompts[e]) {
      if (id == speech_marker_ || id == image_marker_) {
        flush();
        const torch::Tensor& inserted = id == speech_marker_ ? speech[next_speech++] : images[next_image++];
        parts.push_back(Part{inserted});
        labels.insert(labels.end(), inserted.size(0), kIgnore);
      } else {
        run.push_back(id);
      }
    }
    flush();
    if (!targets[e].empty()) {
      parts.push_back(text(targets[e]));
      labels.insert(labels.end(), targets[e].begin(), targets[e].end());
      batch.target_tokens += static_cast<int64_t>(targets[e].size());
    }
    const int64_t length = static_cast<int64_t>(labels.size());
    Check(length <= max_positions, "example ", e, ": ", length, " positions (prompt, inputs",
          training ? " and target" : "", ") exceed the backbone's max_position_embeddings ",
          max_positions);
    row_parts.push_back(std::move(parts));
    row_labels.push_back(std::move(labels));
    batch.lengths.push_back(length);
  }
  const torch::Tensor table =
      all_ids.empty() ? torch::Tensor()
                      : backbone_->EmbedTokens(torch::tensor(all_ids, torch::kLong).unsqueeze(0))[0];
  std::vector<torch::Tensor> rows;
  for (const std::vector<Part>& parts : row_parts) {
    std::vector<torch::Tensor> pieces;
    for (const Part& part : parts)
      pieces.push_back(part.embeds.defined() ? part.embeds : table.narrow(0, part.offset, part.length));
    rows.push_back(torch::cat(pieces, 0));
  }

  // Padding: zero embeddings, mask 0, label -100.
  const int64_t width = *std::max_element(batch.lengths.begin(), batch.lengths.end());
  const int64_t count = static_cast<int64_t>(rows.size());
  std::vector<torch::Tensor> padded;
  torch::Tensor mask = torch::zeros({count, width}, torch::kLong);
  torch::Tensor labels = torch::full({count, width}, kIgnore, torch::kLong);
  for (int64_t b = 0; b < count; ++b) {
    const int64_t n = batch.lengths[b], pad = width - n;
    const int64_t start = training ? 0 : pad;
    torch::Tensor row = rows[b];
    if (pad > 0) {
      const torch::Tensor zeros = torch::zeros({pad, row.size(1)}, row.options().requires_grad(false));
      row = training ? torch::cat({row, zeros}) : torch::cat({zeros, row});
    }
    padded.push_back(row);
    mask[b].slice(0, start, start + n).fill_(1);
    labels[b].slice(0, start, start + n).copy_(torch::tensor(row_labels[b], torch::kLong));
  }
  batch.inputs_embeds = torch::stack(padded);
  batch.attention_mask = mask.to(device_);
  batch.labels = labels;
  return batch;
}

namespace {

// Positions whose successor is a target (padded per row; padding points at 0 with label ignored).
std::pair<torch::Tensor, torch::Tensor> TargetPositions(const MultimodalBatch& batch) {
  const torch::Tensor next = batch.labels.slice(1, 1);  // [B, T-1]
  const torch::Tensor wanted = next.ne(kIgnore);
  const int64_t keep = std::max<int64_t>(1, wanted.sum(1).max().item<int64_t>());
  const int64_t count = next.size(0);
  torch::Tensor positions = torch::zeros({count, keep}, torch::kLong);
  torch::Tensor targets = torch::full({count, keep}, kIgnore, torch::kLong);
  for (int64_t b = 0; b < count; ++b) {
    const torch::Tensor where = wanted[b].nonzero().view(-1);
    const int64_t n = where.size(0);
    positions[b].slice(0, 0, n).copy_(where);
    targets[b].slice(0, 0, n).copy_(next[b].index_select(0, where));
  }
  return {positions, targets};
}

// The batch's mask, or none when every row fills the width: the backbone then uses SDPA's own
// causal pattern (the flash kernel on CUDA) instead of an explicit all-true mask.
torch::Tensor MaskUnlessFull(const MultimodalBatch& batch) {
  const int64_t width = batch.inputs_embeds.size(1);
  const bool full = static_cast<int64_t>(batch.lengths.size()) == batch.inputs_embeds.size(0) &&
                    std::all_of(batch.lengths.begin(), batch.lengths.end(),
                                [&](int64_t n) { return n == width; });
  return full ? torch::Tensor() : batch.attention_mask;
}

}  // namespace

std::pair<torch::Tensor, std::vector<int64_t>> MultimodalLMImpl::TargetNll(const MultimodalBatch& batch) {
  const auto [positions, targets] = TargetPositions(batch);
  text::LlamaInput input;
  input.inputs_embeds = batch.inputs_embeds;
  input.attention_mask = MaskUnlessFull(batch);
  input.logits_positions = positions;
  const torch::Tensor logits = backbone_->forward(input).logits;  // [B, K, V]
  const torch::Tensor per_token = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), targets.view(-1).to(logits.device()),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnore).reduction(torch::kNone));
  std::vector<int64_t> counts;
  for (int64_t b = 0; b < targets.size(0); ++b) counts.push_back(targets[b].ne(kIgnore).sum().item<int64_t>());
  return {per_token.view({targets.size(0), -1}).sum(1).to(torch::kCPU), counts};
}

torch::Tensor MultimodalLMImpl::Loss(const MultimodalBatch& batch, bool prune_last_layer) {
  Check(batch.target_tokens > 0, "MultimodalLM::Loss: the batch has no target tokens");
  // Logits at position t predict the token at t + 1: only positions whose successor is a target.
  const auto [positions, targets] = TargetPositions(batch);
  // Copied before the forward is queued: a host-to-device copy after it would wait for the whole
  // forward on the device before the backward could be queued.
  const torch::Tensor device_targets = targets.view(-1).to(batch.inputs_embeds.device());
  text::LlamaInput input;
  input.inputs_embeds = batch.inputs_embeds;
  input.attention_mask = MaskUnlessFull(batch);
  input.logits_positions = positions;
  input.prune_last_layer = prune_last_layer;
  const torch::Tensor logits = backbone_->forward(input).logits;  // [B, K, V] float32
  return torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}), device_targets,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnore));
}

text::GenerationResult MultimodalLMImpl::Generate(const std::vector<MultimodalExample>& examples,
                                                  const text::GenerationOptions& options,
                                                  const text::TokenCallback& callback, const CtcGuide& ctc) {
  torch::NoGradGuard no_grad;
  std::vector<MultimodalExample> prompts = examples;
  for (auto& e : prompts) e.target.clear();
  const MultimodalBatch batch = Prepare(prompts, text::PaddingSide::kLeft);
  text::GenerationOptions o = options;
  if (o.stop_token_ids.empty()) o.stop_token_ids = chat_format_.StopTokenIds(*tokenizer_);
  if (ctc.weight > 0) o = WithCtcGuide(prompts, std::move(o), ctc);
  return text::GenerateFromEmbeds(backbone_, batch.inputs_embeds, batch.attention_mask, o, callback);
}

void MultimodalLMImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (!speech_encoder_.is_empty()) speech_encoder_->eval();
  if (!image_encoder_.is_empty()) image_encoder_->eval();
  if (!config_.lora_enabled) backbone_->eval();
}

std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> MultimodalLMImpl::AdapterModules() const {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> out;
  if (speech_projector_) out.emplace_back("speech_projector", speech_projector_);
  if (!speech_encoder_.is_empty() && config_.speech.train_encoder)
    out.emplace_back("speech_encoder", speech_encoder_.ptr());
  if (image_projector_) out.emplace_back("image_projector", image_projector_);
  if (!image_encoder_.is_empty() && config_.image.train_encoder)
    out.emplace_back("image_encoder", image_encoder_.ptr());
  if (num_units_ > 0) out.emplace_back("unit_vocab", backbone_->named_children()["extra_vocab"]);
  return out;
}

int64_t MultimodalLMImpl::UnitTokenId(int64_t unit) const {
  Check(num_units_ > 0, "MultimodalLM: no model.speech_units");
  Check(unit >= 0 && unit < num_units_, "speech unit ", unit, " is outside the unit vocabulary [0, ", num_units_, ")");
  return first_unit_id_ + unit;
}

int64_t MultimodalLMImpl::UnitOfToken(int64_t token_id) const {
  if (num_units_ == 0 || token_id < first_unit_id_ || token_id >= first_unit_id_ + num_units_) return -1;
  return token_id - first_unit_id_;
}

std::vector<torch::Tensor> MultimodalLMImpl::TrainableParameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& [prefix, module] : AdapterModules())
    for (const torch::Tensor& p : module->parameters()) out.push_back(p);
  if (config_.lora_enabled)
    for (const torch::Tensor& p : backbone_->LoraParameters()) out.push_back(p);
  return out;
}

ModelSummary MultimodalLMImpl::Summary() const {
  ModelSummary s;
  std::vector<torch::Tensor> base;
  for (const auto& [name, p] : backbone_->BaseParameters()) base.push_back(p);
  s.components.push_back(Summarize("backbone", base));
  if (config_.lora_enabled) s.components.push_back(Summarize("lora", backbone_->LoraParameters()));
  if (!speech_encoder_.is_empty()) {
    s.components.push_back(Summarize("speech_encoder", speech_encoder_->parameters()));
    s.components.push_back(Summarize("speech_projector (" + config_.speech.projector.type + ")",
                                     speech_projector_->parameters()));
  }
  if (!image_encoder_.is_empty()) {
    s.components.push_back(Summarize("image_encoder", image_encoder_->parameters()));
    s.components.push_back(Summarize("image_projector (" + config_.image.projector.type + ")",
                                     image_projector_->parameters()));
  }
  if (num_units_ > 0)
    s.components.push_back(Summarize(Str("unit_vocab (", num_units_, " units)"), backbone_->ExtraVocabularyParameters()));
  for (const ComponentSummary& c : s.components) {
    s.total_parameters += c.parameters;
    s.trainable_parameters += c.trainable;
    s.parameter_bytes += c.bytes;
  }
  s.frozen_parameters = s.total_parameters - s.trainable_parameters;
  s.training_state_bytes = s.trainable_parameters * 4 * 3;
  return s;
}

void MultimodalLMImpl::SaveAdapters(const std::string& adapter_dir) const {
  fs::MakeDirs(adapter_dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  json specs = json::object();
  if (speech_projector_) specs["speech_projector"] = SpecJson(speech_projector_->Spec());
  if (image_projector_) specs["image_projector"] = SpecJson(image_projector_->Spec());
  if (num_units_ > 0) specs["speech_units"] = {{"k", num_units_}, {"hash", units_hash_}};
  for (const auto& [prefix, module] : AdapterModules()) {
    for (const auto& named : module->named_parameters())
      tensors.emplace_back(prefix + "." + named.key(), named.value().detach());
    if (prefix.find("_encoder") != std::string::npos) specs[prefix] = "fine-tuned";
  }
  Check(!tensors.empty() || config_.lora_enabled, "MultimodalLM: no adapters to save");
  if (!tensors.empty()) safetensors::Save(adapter_dir + "/adapters.safetensors", tensors, {{"format", "pt"}});
  if (config_.lora_enabled) {
    backbone_->SaveLora(adapter_dir + "/lora");
    specs["lora"] = true;
  }
  fs::AtomicWriteString(adapter_dir + "/adapter_config.json", specs.dump(2) + "\n");
}

void MultimodalLMImpl::LoadAdapters(const std::string& adapter_dir, bool load_lora) {
  const std::string config_path = adapter_dir + "/adapter_config.json";
  Check(stdfs::is_regular_file(config_path), "'", adapter_dir, "' has no adapter_config.json");
  const json specs = fs::ReadJson(config_path);
  Check(specs.is_object(), config_path, ": must be a JSON object");
  std::vector<std::pair<std::string, std::shared_ptr<ProjectorImpl>>> projectors;
  if (speech_projector_) projectors.emplace_back("speech_projector", speech_projector_);
  if (image_projector_) projectors.emplace_back("image_projector", image_projector_);
  const auto modules = AdapterModules();
  for (const auto& [name, projector] : projectors) {
    Check(specs.contains(name), config_path, ": no \"", name, "\" but the model has one");
    Check(specs[name] == SpecJson(projector->Spec()), config_path, ": \"", name, "\" is ",
          specs[name].dump(), " but the model's is ", SpecJson(projector->Spec()).dump());
  }
  for (const auto& [name, ours] : {std::pair<std::string, bool>{"speech_projector", speech_projector_ != nullptr},
                                   {"image_projector", image_projector_ != nullptr},
                                   {"speech_encoder", !speech_encoder_.is_empty() && config_.speech.train_encoder},
                                   {"image_encoder", !image_encoder_.is_empty() && config_.image.train_encoder}}) {
    Check(!specs.contains(name) || ours, config_path, ": has \"", name, "\" but the model has none",
          name.find("_encoder") != std::string::npos ? " fine-tuned (model.*.train_encoder)" : "");
    Check(specs.contains(name) || !ours || name.find("_encoder") == std::string::npos, config_path,
          ": has no fine-tuned \"", name, "\" but the model trains one (model.*.train_encoder)");
  }
  if (num_units_ > 0 || specs.contains("speech_units")) {
    Check(specs.contains("speech_units") && num_units_ > 0, config_path,
          num_units_ > 0 ? ": has no \"speech_units\" but the model speaks units (model.speech_units)"
                         : ": has \"speech_units\" but the model has none (model.speech_units)");
    const json& u = specs["speech_units"];
    Check(u.is_object() && u.value("k", int64_t{-1}) == num_units_ && u.value("hash", std::string()) == units_hash_,
          config_path, ": its speech units (", u.dump(), ") are not the model's unit tokenizer '", config_.speech_units,
          "' (k ", num_units_, ", hash ", units_hash_, "): the adapter was trained with other units");
  }
  const bool lora = specs.value("lora", false) && load_lora;
  Check(!load_lora || lora == config_.lora_enabled, config_path, lora ? ": has LoRA but the model has none (model.lora.enabled)"
                                                        : ": has no LoRA but the model has one");
  safetensors::Plan plan;
  for (const auto& [prefix, module] : modules)
    plan.ExpectParameters(*module, [prefix = prefix](const std::string& name) { return prefix + "." + name; });
  std::optional<safetensors::Checkpoint> weights;
  if (!modules.empty()) {
    weights.emplace(safetensors::Checkpoint::File(adapter_dir + "/adapters.safetensors"));
    weights->Verify(plan);
  }
  if (lora) backbone_->LoadLora(adapter_dir + "/lora");  // checks everything before changing
  if (weights) weights->Load(plan);
}

}  // namespace slm::adapters
