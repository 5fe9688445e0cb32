#include "audio/whisper_encoder.h"

#include "audio/whisper_encoder_parts.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "core/hf_config.h"
#include "core/module_weights.h"
#include "core/safetensors.h"
#include "core/strings.h"

namespace slm::audio {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

const char kPrefix[] = "model.encoder.";

std::string Shape(torch::IntArrayRef shape) {
  std::vector<std::string> dims;
  for (int64_t d : shape) dims.push_back(std::to_string(d));
  return "[" + Join(dims) + "]";
}

// config.json values through the one Hugging Face config reader (core/hf_config.h).
using hf_config::CheckPositive;
using hf_config::Field;

torch::nn::Linear MakeLinear(int64_t in, int64_t out, bool bias, const torch::TensorOptions& o) {
  torch::nn::Linear linear(torch::nn::LinearOptions(in, out).bias(bias));
  linear->to(o.device(), c10::typeMetaToScalarType(o.dtype()));
  return linear;
}

torch::nn::LayerNorm MakeNorm(int64_t dim, const torch::TensorOptions& o) {
  torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
  norm->to(o.device(), c10::typeMetaToScalarType(o.dtype()));
  return norm;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Submodules (audio/whisper_encoder_parts.h)

namespace detail {

EncoderLayerImpl::EncoderLayerImpl(const WhisperEncoderConfig& c, const torch::TensorOptions& o)
    : heads_(c.encoder_attention_heads), head_dim_(c.HeadDim()) {
  attn = register_module("self_attn", std::make_shared<torch::nn::Module>());
  q_proj = attn->register_module("q_proj", MakeLinear(c.d_model, c.d_model, true, o));
  k_proj = attn->register_module("k_proj", MakeLinear(c.d_model, c.d_model, false, o));
  v_proj = attn->register_module("v_proj", MakeLinear(c.d_model, c.d_model, true, o));
  out_proj = attn->register_module("out_proj", MakeLinear(c.d_model, c.d_model, true, o));
  self_attn_layer_norm = register_module("self_attn_layer_norm", MakeNorm(c.d_model, o));
  fc1 = register_module("fc1", MakeLinear(c.d_model, c.encoder_ffn_dim, true, o));
  fc2 = register_module("fc2", MakeLinear(c.encoder_ffn_dim, c.d_model, true, o));
  final_layer_norm = register_module("final_layer_norm", MakeNorm(c.d_model, o));
}

torch::Tensor EncoderLayerImpl::Forward(const torch::Tensor& x, const torch::Tensor& past_keys,
                                        const torch::Tensor& past_values, const torch::Tensor& mask,
                                        torch::Tensor* keys_out, torch::Tensor* values_out) {
  const int64_t batch = x.size(0);
  const int64_t steps = x.size(1);
  const torch::Tensor h = self_attn_layer_norm(x);
  // As transformers: the query is scaled before the product, the attention itself unscaled.
  const double scaling = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  auto heads = [&](const torch::Tensor& t) {
    return t.view({batch, t.size(1), heads_, head_dim_}).transpose(1, 2);
  };
  // Without autograd (a frozen encoder) scaling, activation and residual sums go into tensors this
  // layer just made instead of fresh ones (on the CPU a fresh [B*T, 4*d_model] block is page
  // faults and a pass over memory); x + o == o + x bitwise, so both ways give the same values.
  const bool in_place = !torch::GradMode::is_enabled();
  torch::Tensor q = q_proj(h);
  q = in_place ? q.mul_(scaling) : q * scaling;
  torch::Tensor k = k_proj(h), v = v_proj(h);
  if (keys_out != nullptr) *keys_out = k;
  if (values_out != nullptr) *values_out = v;
  if (past_keys.defined() && past_keys.size(1) > 0) {
    k = torch::cat({past_keys, k}, 1);
    v = torch::cat({past_values, v}, 1);
  }
  const torch::Tensor attended = torch::scaled_dot_product_attention(
      heads(q), heads(k), heads(v),
      mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt, 0.0, false, 1.0);
  torch::Tensor o = out_proj(attended.transpose(1, 2).reshape({batch, steps, heads_ * head_dim_}));
  const torch::Tensor y = in_place ? o.add_(x) : x + o;
  torch::Tensor f = fc2(Gelu(fc1(final_layer_norm(y)), in_place));
  return in_place ? f.add_(y) : y + f;
}

EncoderImpl::EncoderImpl(const WhisperEncoderConfig& c, const torch::TensorOptions& o) {
  const auto dtype = c10::typeMetaToScalarType(o.dtype());
  conv1 = register_module(
      "conv1",
      torch::nn::Conv1d(torch::nn::Conv1dOptions(c.num_mel_bins, c.d_model, 3).padding(1)));
  conv2 = register_module(
      "conv2",
      torch::nn::Conv1d(torch::nn::Conv1dOptions(c.d_model, c.d_model, 3).stride(2).padding(1)));
  conv1->to(o.device(), dtype);
  conv2->to(o.device(), dtype);
  // Not trained (transformers sets requires_grad False on it), but a parameter so it loads.
  auto positions = register_module("embed_positions", std::make_shared<torch::nn::Module>());
  embed_positions = positions->register_parameter(
      "weight", torch::empty({c.max_source_positions, c.d_model}, o), /*requires_grad=*/false);
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.encoder_layers; ++i) {
    typed_layers.push_back(EncoderLayer(c, o));
    layers->push_back(typed_layers.back());
  }
  layer_norm = register_module("layer_norm", MakeNorm(c.d_model, o));
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Config

void WhisperEncoderConfig::Validate(const std::string& where) const {
  CheckPositive(d_model, "d_model", where);
  CheckPositive(encoder_layers, "encoder_layers", where);
  CheckPositive(encoder_attention_heads, "encoder_attention_heads", where);
  CheckPositive(encoder_ffn_dim, "encoder_ffn_dim", where);
  CheckPositive(num_mel_bins, "num_mel_bins", where);
  CheckPositive(max_source_positions, "max_source_positions", where);
  Check(d_model % encoder_attention_heads == 0, where, ": \"d_model\" (", d_model,
        ") is not a multiple of \"encoder_attention_heads\" (", encoder_attention_heads, ")");
  Check(d_model % 2 == 0 && d_model >= 4, where,
        ": \"d_model\" must be even and >= 4 for sinusoidal positions, got ", d_model);
  Check(attention_chunk_frames >= 0, where,
        ": \"attention_chunk_frames\" must not be negative, got ", attention_chunk_frames);
  Check(attention_left_chunks >= 0, where,
        ": \"attention_left_chunks\" must not be negative, got ", attention_left_chunks);
  Check(attention_left_chunks == 0 || attention_chunk_frames > 0, where,
        ": \"attention_left_chunks\" (", attention_left_chunks,
        ") needs block-causal attention (\"attention_chunk_frames\" > 0)");
  Check(init_std >= 0, where, ": \"init_std\" must not be negative, got ", init_std);
}

WhisperEncoderConfig WhisperEncoderConfig::FromJson(const json& object, const std::string& where) {
  Check(object.is_object(), where, ": a config must be a JSON object, got ", object.type_name());
  const json* type = Field(object, "model_type");
  Check(type != nullptr, where, ": missing required key \"model_type\" (must be \"whisper\")");
  Check(type->is_string() && type->get<std::string>() == "whisper", where, ": model_type ",
        type->dump(), " is not supported (supported: \"whisper\")");
  Check(Field(object, "quantization_config") == nullptr, where,
        ": quantized checkpoints (\"quantization_config\") are not supported");
  const std::string act = hf_config::OptionalString(object, "activation_function", where, "gelu");
  Check(act == "gelu", where, ": activation_function \"", act,
        "\" is not supported (Whisper uses \"gelu\")");

  WhisperEncoderConfig c;
  c.d_model = hf_config::RequiredInt(object, "d_model", where);
  c.encoder_layers = hf_config::RequiredInt(object, "encoder_layers", where);
  c.encoder_attention_heads = hf_config::RequiredInt(object, "encoder_attention_heads", where);
  c.encoder_ffn_dim = hf_config::RequiredInt(object, "encoder_ffn_dim", where);
  c.num_mel_bins = hf_config::RequiredInt(object, "num_mel_bins", where);
  c.max_source_positions = hf_config::OptionalInt(object, "max_source_positions", where, 1500);
  c.attention_chunk_frames = hf_config::OptionalInt(object, "attention_chunk_frames", where, 0);
  c.attention_left_chunks = hf_config::OptionalInt(object, "attention_left_chunks", where, 0);
  c.init_std = hf_config::OptionalNumber(object, "init_std", where, c.init_std);
  c.Validate(where);
  return c;
}

WhisperEncoderConfig WhisperEncoderConfig::FromFile(const std::string& path) {
  Check(stdfs::is_regular_file(path), "missing model config: '", path, "' does not exist");
  return FromJson(fs::ReadJson(path), path);
}

json WhisperEncoderConfig::ToJson() const {
  json j = {{"model_type", "whisper"},
            {"architectures", {"WhisperModel"}},
            {"activation_function", "gelu"},
            {"d_model", d_model},
            {"encoder_layers", encoder_layers},
            {"encoder_attention_heads", encoder_attention_heads},
            {"encoder_ffn_dim", encoder_ffn_dim},
            {"num_mel_bins", num_mel_bins},
            {"max_source_positions", max_source_positions},
            {"init_std", init_std}};
  if (attention_chunk_frames > 0) j["attention_chunk_frames"] = attention_chunk_frames;
  if (attention_left_chunks > 0) j["attention_left_chunks"] = attention_left_chunks;
  return j;
}

namespace {
const char* NormalizationKey(MelNormalization n) {
  switch (n) {
    case MelNormalization::kWhisper:
      return "whisper";
    case MelNormalization::kFixedFloor:
      return "fixed_floor";
    default:
      return "none";
  }
}
}  // namespace

LogMelOptions LoadEncoderFeatureOptions(const std::string& model_dir) {
  LogMelOptions options;
  const std::string path = model_dir + "/preprocessor_config.json";
  if (!stdfs::exists(path)) return options;
  const json object = fs::ReadJson(path);
  Check(object.is_object(), path, ": must be a JSON object");
  auto integer = [&](const char* key, int& field) {
    const json* value = Field(object, key);
    if (value == nullptr) return;
    Check(value->is_number_integer() && value->get<int64_t>() > 0 && value->get<int64_t>() < (1 << 20),
          path, ": \"", key, "\" must be a positive integer, got ", value->dump());
    field = value->get<int>();
  };
  integer("feature_size", options.n_mels);
  integer("sampling_rate", options.sample_rate);
  integer("hop_length", options.hop_length);
  integer("n_fft", options.n_fft);
  if (const json* norm = Field(object, "slm_normalization")) {
    const std::string name = norm->is_string() ? norm->get<std::string>() : norm->dump();
    if (name == "whisper") options.normalization = MelNormalization::kWhisper;
    else if (name == "fixed_floor") options.normalization = MelNormalization::kFixedFloor;
    else if (name == "none") options.normalization = MelNormalization::kNone;
    else
      throw Error(Str(path, ": \"slm_normalization\" must be \"whisper\", \"fixed_floor\" or ",
                      "\"none\", got ", norm->dump()));
  }
  options.floor_log10 =
      hf_config::OptionalNumber(object, "slm_floor_log10", path, options.floor_log10);
  Check(options.n_mels == 80 || options.n_mels == 128, path,
        ": \"feature_size\" must be 80 or 128, got ", options.n_mels);
  Check(options.n_fft % 2 == 0 && options.hop_length <= options.n_fft, path,
        ": n_fft must be even and >= hop_length (n_fft ", options.n_fft, ", hop_length ",
        options.hop_length, ")");
  return options;
}

void SaveEncoderFeatureOptions(const std::string& model_dir, const LogMelOptions& o) {
  const json object = {{"feature_extractor_type", "WhisperFeatureExtractor"},
                       {"feature_size", o.n_mels},
                       {"sampling_rate", o.sample_rate},
                       {"hop_length", o.hop_length},
                       {"n_fft", o.n_fft},
                       {"padding_value", 0.0},
                       {"return_attention_mask", true},
                       {"slm_normalization", NormalizationKey(o.normalization)},
                       {"slm_floor_log10", o.floor_log10}};
  fs::MakeDirs(model_dir);
  fs::AtomicWriteString(model_dir + "/preprocessor_config.json", object.dump(2) + "\n");
}

torch::Tensor WhisperSinusoids(int64_t length, int64_t channels) {
  Check(channels % 2 == 0 && channels >= 4,
        "WhisperSinusoids: channels must be even and >= 4, got ", channels);
  // transformers: exp(-increment * arange(C/2)) and arange(length) * inv, both float32.
  const double increment = std::log(10000.0) / static_cast<double>(channels / 2 - 1);
  const torch::Tensor inv = torch::exp(torch::arange(channels / 2, torch::kLong) * (-increment));
  const torch::Tensor scaled =
      torch::arange(length, torch::kLong).view({-1, 1}) * inv.view({1, -1});
  return torch::cat({scaled.sin(), scaled.cos()}, 1);
}

// ---------------------------------------------------------------------------------------------
// WhisperEncoderImpl

namespace {
uint64_t NextEncoderId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}
}  // namespace

WhisperEncoderImpl::WhisperEncoderImpl(const WhisperEncoderConfig& config)
    : WhisperEncoderImpl(config, torch::TensorOptions().dtype(torch::kFloat), true) {}

WhisperEncoderImpl::WhisperEncoderImpl(const WhisperEncoderConfig& config,
                                       const torch::TensorOptions& options, bool init_weights)
    : config_(config), id_(NextEncoderId()), parts_(std::make_shared<Parts>()) {
  config_.Validate("WhisperEncoderConfig");
  Check(torch::isFloatingType(c10::typeMetaToScalarType(options.dtype())),
        "WhisperEncoder: parameters need a floating-point dtype, got ", options.dtype().name());
  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  parts_->encoder = model->register_module("encoder", detail::Encoder(config_, options));
  if (!init_weights) return;
  torch::NoGradGuard no_grad;
  for (auto& named : named_parameters()) {
    const std::string& name = named.key();
    torch::Tensor& p = named.value();
    if (EndsWith(name, "embed_positions.weight")) {
      p.copy_(WhisperSinusoids(config_.max_source_positions, config_.d_model));
    } else if (EndsWith(name, "norm.weight")) {
      p.fill_(1.0);
    } else if (EndsWith(name, ".bias")) {
      p.zero_();
    } else {
      p.normal_(0.0, config_.init_std);
    }
  }
}

torch::Tensor WhisperEncoderImpl::forward(const torch::Tensor& features) {
  WhisperEncoderInput input;
  input.features = features;
  return forward(input).last_hidden_state;
}

WhisperEncoderOutput WhisperEncoderImpl::forward(const WhisperEncoderInput& input) {
  detail::Encoder& enc = parts_->encoder;
  const torch::Tensor& weight = enc->conv1->weight;
  const auto dtype = weight.scalar_type();
  const auto device = weight.device();
  Check(input.features.defined(), "WhisperEncoder: features are undefined");
  Check(input.features.dim() == 3 && input.features.size(2) == config_.num_mel_bins,
        "WhisperEncoder: features must be [B, T, n_mels=", config_.num_mel_bins, "], got ",
        Shape(input.features.sizes()));
  const int64_t batch = input.features.size(0);
  const int64_t steps = input.features.size(1);
  Check(batch > 0 && steps > 0, "WhisperEncoder: empty input ", Shape(input.features.sizes()));
  Check(steps <= config_.MaxInputFrames(), "WhisperEncoder: ", steps,
        " feature frames exceed the maximum of ", config_.MaxInputFrames(),
        " (2 * max_source_positions = ", config_.max_source_positions, " positions)");
  const int64_t out_steps = (steps - 1) / 2 + 1;

  // Input lengths per row, from `lengths` or a prefix `mask`.
  Check(!(input.lengths.defined() && input.mask.defined()),
        "WhisperEncoder: give lengths or mask, not both");
  torch::Tensor lengths;
  if (input.mask.defined()) {
    Check(input.mask.dim() == 2 && input.mask.size(0) == batch && input.mask.size(1) == steps,
          "WhisperEncoder: mask must be [B, T] = ", Shape({batch, steps}), ", got ",
          Shape(input.mask.sizes()));
    const torch::Tensor real = input.mask.to(torch::kCPU).ne(0);
    lengths = real.sum(1).to(torch::kLong);
    const torch::Tensor prefix = torch::arange(steps).unsqueeze(0) < lengths.unsqueeze(1);
    Check(torch::equal(prefix, real),
          "WhisperEncoder: mask must mark a prefix of each row (real frames first, then padding)");
  } else if (input.lengths.defined()) {
    Check(input.lengths.dim() == 1 && input.lengths.size(0) == batch,
          "WhisperEncoder: lengths must be [B] = [", batch, "], got ",
          Shape(input.lengths.sizes()));
    Check(!torch::isFloatingType(input.lengths.scalar_type()),
          "WhisperEncoder: lengths must be integers, got ", input.lengths.scalar_type());
    lengths = input.lengths.to(torch::kCPU, torch::kLong);
  }
  if (lengths.defined()) {
    const int64_t low = lengths.min().item<int64_t>();
    const int64_t high = lengths.max().item<int64_t>();
    Check(low >= 1 && high <= steps, "WhisperEncoder: lengths must be in [1, T=", steps, "], got ",
          low < 1 ? low : high);
  }
  const torch::Tensor out_lengths = lengths.defined()
                                        ? (lengths - 1).div(2, "floor") + 1
                                        : torch::full({batch}, out_steps, torch::kLong);
  const bool padded = lengths.defined() && lengths.min().item<int64_t>() < steps;

  // Convolutions over [B, n_mels, T]. Padded frames are zeroed before each convolution, so the
  // last real frames see zeros exactly as at the end of an unpadded row.
  torch::Tensor x = input.features.to(device, dtype).transpose(1, 2);
  torch::Tensor in_keep, mid_keep;
  if (padded) {
    in_keep =
        (torch::arange(steps).unsqueeze(0) < lengths.unsqueeze(1)).to(device, dtype).unsqueeze(1);
    x = x * in_keep;
  }
  // Without autograd (a frozen encoder) the activations go in place.
  const bool in_place = !torch::GradMode::is_enabled();
  x = detail::Gelu(enc->conv1(x), in_place);
  if (padded) x = x * in_keep;
  x = detail::Gelu(enc->conv2(x), in_place).transpose(1, 2);
  torch::Tensor hidden = x + enc->embed_positions.slice(0, 0, out_steps);

  // Attention mask [B, 1, T', T'] (true = attend): keys beyond a row's length are hidden, and in
  // chunked mode keys in later chunks (and, with a left context, in chunks too far back). Every
  // real query sees itself. Padded queries see at least frame 0, or with a left context
  // themselves, so no row is fully masked (no NaN).
  const int64_t chunk = input.attention_chunk_frames >= 0 ? input.attention_chunk_frames
                                                          : config_.attention_chunk_frames;
  const int64_t left = input.attention_left_chunks >= 0 ? input.attention_left_chunks
                                                        : config_.attention_left_chunks;
  Check(input.attention_left_chunks < 0 || input.attention_left_chunks == 0 || chunk > 0,
        "WhisperEncoder: attention_left_chunks ", input.attention_left_chunks,
        " needs block-causal attention (attention_chunk_frames > 0)");
  torch::Tensor mask;
  const torch::Tensor positions = torch::arange(out_steps, torch::kLong);
  if (padded)
    mask = (positions.unsqueeze(0) < out_lengths.unsqueeze(1)).view({batch, 1, 1, out_steps});
  const bool bounded = chunk > 0 && left > 0 && out_steps > chunk * (left + 1);
  if (chunk > 0 && out_steps > chunk) {
    const torch::Tensor causal =
        detail::BlockCausalMask(positions.unsqueeze(1), positions.unsqueeze(0), chunk,
                                bounded ? left : 0)
            .view({1, 1, out_steps, out_steps});
    mask = mask.defined() ? mask.logical_and(causal) : causal;
    if (padded && bounded)
      mask = mask.logical_or(
          torch::eye(out_steps, torch::kBool).view({1, 1, out_steps, out_steps}));
  }
  if (mask.defined()) mask = mask.to(device);

  WhisperEncoderOutput output;
  if (input.output_hidden_states) output.hidden_states.push_back(hidden);
  for (detail::EncoderLayer& layer : enc->typed_layers) {
    hidden = layer(hidden, mask);
    if (input.output_hidden_states) output.hidden_states.push_back(hidden);
  }
  output.last_hidden_state = enc->layer_norm(hidden);
  output.lengths = out_lengths.to(device);
  output.mask = (positions.unsqueeze(0) < out_lengths.unsqueeze(1)).to(device);
  return output;
}

void WhisperEncoderImpl::Freeze() { module_weights::Freeze(*this); }

bool WhisperEncoderImpl::IsFrozen() const { return module_weights::IsFrozen(*this); }

int64_t WhisperEncoderImpl::ParameterCount() const { return module_weights::CountParameters(*this); }

void WhisperEncoderImpl::LoadWeights(const std::string& model_dir) {
  const safetensors::Checkpoint checkpoint(model_dir);
  // WhisperForConditionalGeneration checkpoints (the hub's) store "model.encoder.*", a bare
  // WhisperModel "encoder.*"; when a file holds both, "model.encoder.*" wins.
  bool prefixed = false, bare = false;
  for (const auto& [name, reader] : checkpoint.Sources()) {
    prefixed = prefixed || StartsWith(name, kPrefix);
    bare = bare || StartsWith(name, "encoder.");
  }
  const std::string stored = bare && !prefixed ? "encoder." : kPrefix;
  safetensors::Plan plan;
  plan.ExpectParameters(*this, [&](const std::string& name) { return stored + name.substr(std::strlen(kPrefix)); });
  plan.what = "Whisper encoder tensor";
  plan.ignore = [](const std::string&) { return true; };  // the decoder, proj_out, a CTC head
  checkpoint.Load(plan);
}

void WhisperEncoderImpl::SaveWeights(
    const std::string& model_dir,
    const std::vector<std::pair<std::string, torch::Tensor>>& extra) const {
  const module_weights::NamedTensors tensors = module_weights::ParametersAndExtra(
      *this, extra, [](const std::string& name) { return StartsWith(name, kPrefix) || StartsWith(name, "encoder."); },
      "WhisperEncoder", "the encoder's");
  json config = config_.ToJson();
  const auto dtype = tensors.front().second.scalar_type();
  config["torch_dtype"] = dtype == torch::kBFloat16 ? "bfloat16"
                          : dtype == torch::kHalf   ? "float16"
                                                    : "float32";
  module_weights::WriteModelDirectory(model_dir, tensors, config);
}

WhisperEncoder LoadWhisperEncoder(const std::string& model_dir, torch::Device device,
                                  torch::ScalarType dtype) {
  WhisperEncoder model(WhisperEncoderConfig::FromFile(hf_config::ConfigPath(model_dir)),
                       torch::TensorOptions().dtype(dtype).device(device), /*init_weights=*/false);
  model->LoadWeights(model_dir);
  return model;
}

}  // namespace slm::audio
