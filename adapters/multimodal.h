// MultimodalLM: the frozen text backbone with speech and image inputs spliced into its input
// embeddings through trainable projectors (and optional LoRA on the backbone).
//
//   "<speech> Transcribe:" --Tokenizer--> [BOS, <speech>, ▁Trans, cribe, :]
//   (with a chat format, the prompt is the user turn of its layout: ChatFormat::EncodePrompt)
//   speech log-mel --WhisperEncoder (frozen, no-grad)--> [T/2, d] --projector--> [N, H]
//   inputs_embeds = [E(BOS), speech_0 .. speech_{N-1}, E(▁Trans), E(cribe), E(:), E(target)...]
//
// Each "<speech>" / "<image>" placeholder in a prompt (several allowed, in any order) is replaced
// by the projected encoder output of the next clip / image of the example, so a placeholder takes
// as many positions as its projector outputs (ProjectorImpl::OutputLength). The target text (with
// EOS) follows the prompt; labels are -100 everywhere except on target tokens, so the loss covers
// only what the model must produce.
//
// Batching: rows of different lengths are padded (right for training, left for generation) with
// zero embeddings and attention_mask 0; positions count real positions only (the backbone's
// cumsum(mask) - 1), so a row's logits equal that row alone. Encoders run once per batch on all
// clips / images of all rows (padded, with lengths), under no-grad.
//
// Frozen vs trainable: backbone, tokenizer embeddings and both encoders are frozen (no grad, eval
// mode, no optimizer state); only the projectors (and LoRA when enabled, and the unit rows of
// model.speech_units) are trainable
// (TrainableParameters). Gradients flow from the loss through the frozen backbone into the
// projectors. An encoder with `train_encoder` (a branch's config) is fine-tuned too: its
// parameters join TrainableParameters and the adapters, and it runs with autograd (still in eval
// mode: the encoders have no dropout). A frozen encoder runs under no-grad.
//
// Devices and dtypes: everything lives on `device` in `dtype` (config model.device / model.dtype);
// encoders may be loaded in the same dtype. Speech features are log-mel [T, n_mels] float32 as the
// speech encoder's preprocessor_config.json describes (SpeechFeatures), images CLIP pixel values
// [3, S, S] (ImagePixels).
//
// Thread-safety: Prepare/Loss/Generate mutate nothing but must not run concurrently with training
// steps on the same model; concurrent inference calls are safe in eval mode.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/projector.h"
#include "audio/ctc.h"
#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"
#include "core/config.h"
#include "text/chat_format.h"
#include "text/ctc_guide.h"
#include "text/generate.h"
#include "text/llama.h"
#include "text/tokenizer.h"
#include "vision/clip_vision.h"
#include "vision/image.h"

namespace slm::adapters {

struct SpeechBranchConfig {
  std::string encoder;  // Whisper-style encoder directory; empty = no speech input
  ProjectorSpec projector;
  int64_t attention_chunk_frames = -1;  // -1 = the encoder's own setting; 0 = full attention
  // Fine-tune the encoder with the adapters (its weights then belong to the adapters); default frozen.
  bool train_encoder = false;
};

struct ImageBranchConfig {
  std::string encoder;  // CLIP vision directory; empty = no image input
  vision::ClipFeatureOptions features;  // layer (default -2 = penultimate), keep_class_token
  ProjectorSpec projector;
  bool train_encoder = false;  // as SpeechBranchConfig::train_encoder
};

struct MultimodalConfig {
  std::string backbone;  // Llama directory with tokenizer.model
  // A unit tokenizer directory (audio/units.h; `slm audio units train`): the model then reads and
  // speaks its K units as tokens "<u0>".."<uK-1>" (a TTS adapter). Their embedding and LM-head
  // rows are new, trainable and saved with the adapters; the base vocabulary stays frozen.
  std::string speech_units;
  // The unit-to-mel decoder (audio/unit_decoder.h; `slm audio units train-decoder`) that turns the
  // units into speech: not part of the LM, read by `slm tts` and the server's Synthesize.
  std::string unit_decoder;
  SpeechBranchConfig speech;
  ImageBranchConfig image;
  bool lora_enabled = false;
  text::LoraOptions lora;
  std::string device = "cpu";
  std::string dtype = "float32";
  // How prompts and targets are laid out for the backbone (text/chat_format.h): "auto" (the
  // backbone's tokenizer_config.json chat_template, "none" without one), a built-in name (none,
  // llama3, chatml, mistral, gemma), or "custom" with custom_chat_format (a map in the config).
  std::string chat_format = "auto";
  text::ChatFormat custom_chat_format;

  MultimodalConfig();  // projector defaults: speech stack_mlp (stack 4), image mlp
  // The `model` section: backbone, speech_units, unit_decoder, speech {encoder, projector {...}, attention_chunk_frames},
  // image {encoder, feature_layer, keep_class_token, projector {...}}, lora {enabled, rank, alpha,
  // dropout, target_modules}, device, dtype, chat_format (a name or a custom format's map). Projector input_dim/output_dim may be omitted: they
  // come from the encoder and the backbone (a given value must match them).
  void Load(config::Node node);
};

struct MultimodalExample {
  std::string prompt;                  // text with "<speech>" / "<image>" placeholders
  std::vector<torch::Tensor> speech;   // one log-mel [T, n_mels] per "<speech>", in order
  std::vector<torch::Tensor> images;   // one pixel tensor [3, S, S] per "<image>", in order
  std::string target;                  // text to predict; empty for generation
  // A pre-tokenized row instead of prompt/target/images (packed interleaved sequences,
  // train/interleave.h): the ids as they are (BOS included). With `speech` clips, each "<speech>"
  // id is kept and followed by the next clip's projected frames (continuous speech spans; the
  // markers must match the clips in number); without, nothing is spliced. Labels are the ids
  // themselves from token index score_from on (BOS ids excluded: a packed row's sequence starts
  // are not predictable; spliced frames are never labelled), so the loss / TargetNll cover those.
  std::vector<int64_t> tokens;
  int64_t score_from = 1;
};

struct MultimodalBatch {
  torch::Tensor inputs_embeds;   // [B, T, hidden] model dtype/device
  torch::Tensor attention_mask;  // [B, T] int64 (device), 1 = real
  torch::Tensor labels;          // [B, T] int64 (CPU), the token at t for target positions, else -100
  std::vector<int64_t> lengths;  // real positions per row
  int64_t target_tokens = 0;     // labels != -100
};

struct ComponentSummary {
  std::string name;
  int64_t parameters = 0;
  int64_t trainable = 0;
  int64_t bytes = 0;  // parameter storage in their dtype
};

struct ModelSummary {
  std::vector<ComponentSummary> components;
  int64_t total_parameters = 0;
  int64_t trainable_parameters = 0;
  int64_t frozen_parameters = 0;
  int64_t parameter_bytes = 0;
  // Training-time extra memory of the trainable part: fp32 gradients + AdamW's two fp32 moments.
  int64_t training_state_bytes = 0;
  nlohmann::json ToJson() const;
};

// Frozen parts several MultimodalLMs share: a server serving several adapters over one resident
// backbone loads each directory once. Filled lazily by the constructor below, keyed by directory.
// The backbone carries at most one LoRA structure: every model with LoRA over it must use the
// same options, and whoever runs the models swaps the LoRA weights between them (serve/).
// Not thread-safe: build the models on one thread.
struct SharedComponents {
  std::string backbone_dir;
  std::shared_ptr<text::Tokenizer> tokenizer;
  text::LlamaModel backbone{nullptr};
  std::map<std::string, audio::WhisperEncoder> speech_encoders;
  std::map<std::string, vision::ClipVisionModel> image_encoders;
};

// CTC-guided decoding of a transcription (MultimodalLM::Generate; the algorithm is
// text/ctc_guide.h's).
using CtcGuide = text::CtcGuideOptions;

class MultimodalLMImpl : public torch::nn::Module {
 public:
  // Loads backbone, tokenizer and the configured encoders (frozen), builds fresh projectors and
  // adds LoRA when enabled. slm::Error for missing directories, dimension mismatches, a tokenizer
  // without the "<speech>" / "<image>" markers a branch needs.
  explicit MultimodalLMImpl(const MultimodalConfig& config);
  // The same, taking backbone, tokenizer and frozen encoders from `shared` (loading and adding
  // them when absent). slm::Error when config.backbone differs from shared->backbone_dir, or when
  // the LoRA options differ from the LoRA the shared backbone already carries. An encoder the
  // config fine-tunes (train_encoder) is never shared: its weights belong to this model.
  MultimodalLMImpl(const MultimodalConfig& config, SharedComponents* shared);

  // Builds the batch of `examples` (see the header comment). side: kRight for training, kLeft for
  // generation. slm::Error naming the example for placeholder/input count mismatches, features of
  // the wrong shape, a row longer than max_position_embeddings, an empty target with kRight.
  MultimodalBatch Prepare(const std::vector<MultimodalExample>& examples, text::PaddingSide side);
  // Mean cross-entropy over the target tokens (the backbone's logits only at target positions).
  // prune_last_layer: text::LlamaInput::prune_last_layer (the same loss either way).
  torch::Tensor Loss(const MultimodalBatch& batch, bool prune_last_layer = true);
  // Per row: the summed negative log-likelihood of its target tokens [B] (float32) and their count
  // (likelihood ranking of candidate answers).
  std::pair<torch::Tensor, std::vector<int64_t>> TargetNll(const MultimodalBatch& batch);
  // Greedy/sampled continuation of each example's prompt (targets ignored), KV-cached. With
  // ctc.weight > 0 (transcription; each example has exactly one speech clip and the speech encoder
  // a CTC head), decoding is CTC-guided as in hybrid CTC/attention ASR (text::CtcGuidedDecoding,
  // text/ctc_guide.h): the LM's candidates are rescored by the CTC head's prefix scores of each
  // clip (audio::CtcPrefixScorer) and the best one is taken; other tokens are excluded. slm::Error
  // when the encoder has no CTC head or an example has no or several clips.
  text::GenerationResult Generate(const std::vector<MultimodalExample>& examples,
                                  const text::GenerationOptions& options,
                                  const text::TokenCallback& callback = nullptr, const CtcGuide& ctc = {});

  // Loads the speech encoder's CTC head now if it is not loaded yet (CtcGuide and CtcTranscripts
  // load it on first use), so that a run can fail at its start rather than at its first
  // evaluation; slm::Error naming `what` without a speech encoder or a head.
  void RequireCtcHead(const std::string& what);
  // The speech encoder's own greedy CTC transcript of each example's one clip (lower case, as
  // audio::CtcAlphabet::Decode); no LM. slm::Error as for CtcGuide.
  std::vector<std::string> CtcTranscripts(const std::vector<MultimodalExample>& examples);

  // Log-mel features of 16 kHz mono samples, with the speech encoder's feature options.
  torch::Tensor SpeechFeatures(const std::vector<float>& samples) const;
  // CLIP pixel values of an image file, with the image encoder's preprocessing.
  torch::Tensor ImagePixels(const std::string& image_path) const;
  // The same for an 8-bit RGB image (vision::LoadImage / vision::DecodeImage).
  torch::Tensor ImagePixels(const cv::Mat& rgb8) const;

  // Training mode reaches the projectors (and the LoRA branches); the frozen encoders stay in
  // eval mode whatever `on` is, and so does the backbone unless it carries LoRA.
  void train(bool on = true) override;

  std::vector<torch::Tensor> TrainableParameters() const;
  ModelSummary Summary() const;
  // The trained weights only: adapter_dir/adapters.safetensors ("speech_projector.*",
  // "image_projector.*", and "speech_encoder.*" / "image_encoder.*" for fine-tuned encoders),
  // adapter_config.json (the projector specs, which encoders were fine-tuned) and, with LoRA,
  // adapter_dir/lora (PEFT format). LoadAdapters checks the specs match this model and every
  // tensor's shape before changing anything.
  void SaveAdapters(const std::string& adapter_dir) const;
  // load_lora = false leaves the adapter's LoRA (adapter_dir/lora, if any) to the caller, whatever
  // model.lora says: a server reads it into a text::LoraBank with text::ReadLoraAdapter instead of
  // the shared backbone's one LoRA structure.
  void LoadAdapters(const std::string& adapter_dir, bool load_lora = true);

  const MultimodalConfig& Config() const { return config_; }
  text::LlamaModel& Backbone() { return backbone_; }
  const text::LlamaModel& Backbone() const { return backbone_; }
  const text::Tokenizer& Tokenizer() const { return *tokenizer_; }
  // The resolved model.chat_format: prompts are its user turn, targets end with its stop token,
  // and Generate stops on its StopTokenIds.
  const text::ChatFormat& ChatFormat() const { return chat_format_; }
  bool HasSpeech() const { return !speech_encoder_.is_empty(); }
  bool HasImage() const { return !image_encoder_.is_empty(); }
  audio::WhisperEncoder& SpeechEncoder() { return speech_encoder_; }
  vision::ClipVisionModel& ImageEncoder() { return image_encoder_; }
  std::shared_ptr<ProjectorImpl> SpeechProjector() const { return speech_projector_; }
  std::shared_ptr<ProjectorImpl> ImageProjector() const { return image_projector_; }
  // LM positions per second of speech (encoder frame rate / projector compression).
  double SpeechPositionsPerSecond() const;
  // Log-mel frames per second of SpeechFeatures, and the LM positions `feature_frames` frames take
  // (an upper bound for projectors whose length depends on content). slm::Error without speech.
  double SpeechFeatureRate() const;
  int64_t SpeechPositions(int64_t feature_frames) const;
  // Positions `example`'s prompt takes in the backbone (BOS, text, each clip's and image's
  // projected frames), without running any encoder: exact for fixed-rate projectors, an upper
  // bound for content-dependent ones (ctc_embed). For a pre-tokenized row, its tokens plus its
  // clips. Lets a server refuse a request that cannot fit before it joins a batch. slm::Error for
  // placeholder/input count mismatches (as Prepare).
  int64_t PromptPositions(const MultimodalExample& example) const;
  // The longest clip the speech encoder accepts, in seconds (0 without speech input).
  double MaxSpeechSeconds() const;
  // With model.speech_units: K, the unit tokenizer's hash, and the token id of unit u (0 <= u < K).
  int64_t SpeechUnits() const { return num_units_; }
  const std::string& SpeechUnitsHash() const { return units_hash_; }
  double SpeechUnitsFrameRate() const { return units_frame_rate_hz_; }  // unit frames per second
  int64_t UnitTokenId(int64_t unit) const;
  // Token id -> unit, or -1 for a token that is not a unit.
  int64_t UnitOfToken(int64_t token_id) const;

 private:
  // Per placeholder occurrence across the batch: [N_i, hidden] embeddings, in example order.
  std::vector<torch::Tensor> EncodeSpeech(const std::vector<MultimodalExample>& examples);
  // The speech encoder over every clip of the batch, padded (last_hidden_state undefined without
  // clips); under no-grad unless the encoder is fine-tuned.
  audio::WhisperEncoderOutput EncodeSpeechFrames(const std::vector<MultimodalExample>& examples);
  // The CTC head's log-probabilities [B, T', kSize] (float32, CPU) of each example's one clip and
  // the real frames per row [B]; loads the head on first use (slm::Error naming `what` without one).
  std::pair<torch::Tensor, torch::Tensor> CtcLogProbs(const std::vector<MultimodalExample>& examples,
                                                      const std::string& what);
  // CtcGuide: options whose logits processor is text::CtcGuidedDecoding over the CTC head's scores
  // of each prompt's clip.
  text::GenerationOptions WithCtcGuide(const std::vector<MultimodalExample>& prompts,
                                       text::GenerationOptions options, const CtcGuide& ctc);
  std::vector<torch::Tensor> EncodeImages(const std::vector<MultimodalExample>& examples);
  // ctc_embed: binds the encoder directory's CTC head and the backbone's character embeddings.
  void BindCtcHead();
  // The modules whose weights adapters.safetensors holds, by tensor-name prefix: the projectors and
  // the fine-tuned encoders.
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> AdapterModules() const;

  MultimodalConfig config_;
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_ = torch::kFloat;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  text::ChatFormat chat_format_;
  text::LlamaModel backbone_{nullptr};
  audio::WhisperEncoder speech_encoder_{nullptr};
  vision::ClipVisionModel image_encoder_{nullptr};
  std::shared_ptr<ProjectorImpl> speech_projector_, image_projector_;
  std::unique_ptr<audio::LogMel> mel_;
  // ctc_head_ and spoken_vocabulary_ are built on first use by CTC-guided decoding.
  std::mutex ctc_head_mutex_;
  audio::CtcHead ctc_head_{nullptr};
  std::shared_ptr<const text::SpokenVocabulary> spoken_vocabulary_;
  vision::ClipPreprocessOptions image_preprocess_;
  int64_t speech_marker_ = -1, image_marker_ = -1;
  int64_t num_units_ = 0, first_unit_id_ = -1;
  std::string units_hash_;
  double units_frame_rate_hz_ = 0;
};
TORCH_MODULE(MultimodalLM);

}  // namespace slm::adapters
