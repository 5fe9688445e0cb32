#include "text/llama.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "core/strings.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kRopeTypes = {"default", "linear", "llama3"};
const std::vector<std::string> kConfigDtypes = {"float32", "bfloat16", "float16", "float64"};
const char kSupportedArchitecture[] =
    "supported: model_type \"llama\" / architectures [\"LlamaForCausalLM\"]";

// ---------------------------------------------------------------------------------------------
// config.json helpers. JSON null counts as absent, as transformers treats it (e.g.
// "rope_scaling": null, "pad_token_id": null).

const json* Field(const json& object, const std::string& key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

int64_t AsInt(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_number_integer(), where, ": \"", key, "\" must be an integer, got ", value.dump());
  return value.get<int64_t>();
}

double AsNumber(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_number(), where, ": \"", key, "\" must be a number, got ", value.dump());
  return value.get<double>();
}

bool AsBool(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_boolean(), where, ": \"", key, "\" must be true or false, got ", value.dump());
  return value.get<bool>();
}

std::string AsString(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_string(), where, ": \"", key, "\" must be a string, got ", value.dump());
  return value.get<std::string>();
}

int64_t RequiredInt(const json& object, const std::string& key, const std::string& where) {
  const json* value = Field(object, key);
  Check(value != nullptr, where, ": missing required key \"", key, "\"");
  return AsInt(*value, key, where);
}

// `prefix` names the enclosing dict in messages ("rope_parameters.").
int64_t OptionalInt(const json& object, const std::string& key, const std::string& where,
                    int64_t fallback, const std::string& prefix = "") {
  const json* value = Field(object, key);
  return value ? AsInt(*value, prefix + key, where) : fallback;
}

double OptionalNumber(const json& object, const std::string& key, const std::string& where,
                      double fallback, const std::string& prefix = "") {
  const json* value = Field(object, key);
  return value ? AsNumber(*value, prefix + key, where) : fallback;
}

bool OptionalBool(const json& object, const std::string& key, const std::string& where,
                  bool fallback) {
  const json* value = Field(object, key);
  return value ? AsBool(*value, key, where) : fallback;
}

void CheckArchitecture(const json& object, const std::string& where) {
  const json* model_type = Field(object, "model_type");
  const json* architectures = Field(object, "architectures");
  Check(model_type || architectures, where,
        ": neither \"model_type\" nor \"architectures\" says what model this is (",
        kSupportedArchitecture, ")");
  if (model_type) {
    const std::string type = AsString(*model_type, "model_type", where);
    Check(type == "llama", where, ": model_type \"", type, "\" is not supported (",
          kSupportedArchitecture, ")");
  }
  if (architectures) {
    Check(architectures->is_array(), where, ": \"architectures\" must be a list of strings, got ",
          architectures->dump());
    bool causal_lm = false;
    for (const json& name : *architectures)
      causal_lm |= AsString(name, "architectures", where) == "LlamaForCausalLM";
    Check(causal_lm, where, ": architectures ", architectures->dump(), " is not supported (",
          kSupportedArchitecture, ")");
  }
}

// rope_theta and the scaling variant. transformers 5 writes one "rope_parameters" dict holding
// rope_type and rope_theta; older configs have a top-level "rope_theta" plus "rope_scaling" (null
// or a dict whose type is under "rope_type" or the legacy "type"). Like transformers'
// standardize_rope_params, values inside the dict win over the top-level ones.
void ParseRope(const json& object, const std::string& where, LlamaConfig& config) {
  const json* parameters = Field(object, "rope_parameters");
  const json* scaling = Field(object, "rope_scaling");
  Check(!(parameters && scaling), where,
        ": both \"rope_parameters\" and \"rope_scaling\" are given; keep one");
  const std::string dict_key = parameters ? "rope_parameters" : "rope_scaling";
  const json* dict = parameters ? parameters : scaling;

  config.rope_theta = OptionalNumber(object, "rope_theta", where, 10000.0);
  const double partial_top = OptionalNumber(object, "partial_rotary_factor", where, 1.0);
  Check(partial_top == 1.0, where,
        ": \"partial_rotary_factor\" other than 1 is not supported by Llama, got ", partial_top);
  const int64_t top_level_original =
      OptionalInt(object, "original_max_position_embeddings", where, 0);
  RopeScaling& rope = config.rope_scaling;
  rope = RopeScaling();
  rope.original_max_position_embeddings =
      top_level_original > 0 ? top_level_original : config.max_position_embeddings;
  if (!dict) return;

  Check(dict->is_object(), where, ": \"", dict_key, "\" must be an object or null, got ",
        dict->dump());
  const std::vector<std::string> known = {"rope_type",
                                          "type",
                                          "rope_theta",
                                          "factor",
                                          "low_freq_factor",
                                          "high_freq_factor",
                                          "original_max_position_embeddings",
                                          "partial_rotary_factor"};
  for (auto it = dict->begin(); it != dict->end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) != known.end()) continue;
    const std::string hint = ClosestMatch(it.key(), known);
    throw Error(Str(where, ": unknown key \"", dict_key, ".", it.key(), "\"",
                    hint.empty() ? "" : Str(" (did you mean \"", hint, "\"?)")));
  }
  const std::string key_prefix = dict_key + ".";
  const json* type = Field(*dict, "rope_type");
  if (!type) type = Field(*dict, "type");
  if (type) rope.rope_type = AsString(*type, key_prefix + "rope_type", where);
  Check(std::find(kRopeTypes.begin(), kRopeTypes.end(), rope.rope_type) != kRopeTypes.end(), where,
        ": rope type \"", rope.rope_type, "\" is not supported (supported: ", Join(kRopeTypes),
        ")");
  config.rope_theta = OptionalNumber(*dict, "rope_theta", where, config.rope_theta, key_prefix);
  const double partial = OptionalNumber(*dict, "partial_rotary_factor", where, 1.0, key_prefix);
  Check(partial == 1.0, where, ": \"", key_prefix,
        "partial_rotary_factor\" other than 1 is not supported by Llama, got ", partial);

  auto required_number = [&](const std::string& key) {
    const json* value = Field(*dict, key);
    Check(value != nullptr, where, ": rope type \"", rope.rope_type, "\" needs \"", key_prefix, key,
          "\"");
    return AsNumber(*value, key_prefix + key, where);
  };
  if (rope.rope_type == "linear") {
    rope.factor = required_number("factor");
  } else if (rope.rope_type == "llama3") {
    rope.factor = required_number("factor");
    rope.low_freq_factor = required_number("low_freq_factor");
    rope.high_freq_factor = required_number("high_freq_factor");
    rope.original_max_position_embeddings =
        OptionalInt(*dict, "original_max_position_embeddings", where,
                    rope.original_max_position_embeddings, key_prefix);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LlamaConfig

void LlamaConfig::Validate(const std::string& where) const {
  auto positive = [&](int64_t value, const char* key) {
    Check(value > 0, where, ": \"", key, "\" must be positive, got ", value);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(max_position_embeddings, "max_position_embeddings");
  Check(head_dim >= 0, where, ": \"head_dim\" must be positive, got ", head_dim);
  Check(head_dim > 0 || hidden_size % num_attention_heads == 0, where, ": hidden_size (",
        hidden_size, ") is not a multiple of num_attention_heads (", num_attention_heads, ")");
  Check(num_attention_heads % num_key_value_heads == 0, where, ": num_attention_heads (",
        num_attention_heads, ") is not a multiple of num_key_value_heads (", num_key_value_heads,
        ")");
  Check(HeadDim() % 2 == 0, where, ": the head dimension (", HeadDim(),
        ") must be even for rotary embeddings");
  Check(rms_norm_eps > 0, where, ": \"rms_norm_eps\" must be positive, got ", rms_norm_eps);
  Check(rope_theta > 0, where, ": \"rope_theta\" must be positive, got ", rope_theta);
  Check(initializer_range >= 0, where, ": \"initializer_range\" must not be negative, got ",
        initializer_range);
  const RopeScaling& rope = rope_scaling;
  Check(std::find(kRopeTypes.begin(), kRopeTypes.end(), rope.rope_type) != kRopeTypes.end(), where,
        ": rope type \"", rope.rope_type, "\" is not supported (supported: ", Join(kRopeTypes),
        ")");
  if (rope.rope_type != "default")
    Check(rope.factor > 0, where, ": rope scaling \"factor\" must be positive, got ", rope.factor);
  if (rope.rope_type == "llama3") {
    Check(rope.low_freq_factor > 0, where,
          ": rope scaling \"low_freq_factor\" must be positive, got ", rope.low_freq_factor);
    Check(rope.high_freq_factor > rope.low_freq_factor, where,
          ": rope scaling \"high_freq_factor\" (", rope.high_freq_factor,
          ") must exceed \"low_freq_factor\" (", rope.low_freq_factor, ")");
    Check(rope.original_max_position_embeddings > 0, where,
          ": rope scaling \"original_max_position_embeddings\" must be positive, got ",
          rope.original_max_position_embeddings);
  }
  auto token = [&](int64_t id, const char* key, bool optional) {
    Check((optional && id == -1) || (id >= 0 && id < vocab_size), where, ": \"", key, "\" ", id,
          " is outside the vocabulary of ", vocab_size);
  };
  token(bos_token_id, "bos_token_id", true);
  token(pad_token_id, "pad_token_id", true);
  for (int64_t id : eos_token_ids) token(id, "eos_token_id", false);
  Check(std::find(kConfigDtypes.begin(), kConfigDtypes.end(), torch_dtype) != kConfigDtypes.end(),
        where, ": dtype \"", torch_dtype, "\" is not supported (supported: ", Join(kConfigDtypes),
        ")");
}

// Keys this code does not read are ignored: Hugging Face configs carry many that do not change
// the computation (use_cache, pretraining_tp, transformers_version, _name_or_path, generation
// hints). Every key that does change it is read and checked, or refused (quantization_config,
// hidden_act other than silu, partial rotary factors, unknown rope types or rope keys).
LlamaConfig LlamaConfig::FromJson(const json& object, const std::string& where) {
  Check(object.is_object(), where, ": a config must be a JSON object, got ", object.type_name());
  CheckArchitecture(object, where);
  Check(Field(object, "quantization_config") == nullptr, where,
        ": quantized checkpoints (\"quantization_config\") are not supported");
  if (const json* act = Field(object, "hidden_act")) {
    const std::string name = AsString(*act, "hidden_act", where);
    Check(name == "silu", where, ": hidden_act \"", name, "\" is not supported (Llama uses silu)");
  }

  LlamaConfig c;
  c.vocab_size = RequiredInt(object, "vocab_size", where);
  c.hidden_size = RequiredInt(object, "hidden_size", where);
  c.intermediate_size = RequiredInt(object, "intermediate_size", where);
  c.num_hidden_layers = RequiredInt(object, "num_hidden_layers", where);
  c.num_attention_heads = RequiredInt(object, "num_attention_heads", where);
  c.num_key_value_heads = OptionalInt(object, "num_key_value_heads", where, c.num_attention_heads);
  c.head_dim = OptionalInt(object, "head_dim", where, 0);
  Check(Field(object, "head_dim") == nullptr || c.head_dim > 0, where,
        ": \"head_dim\" must be positive, got ", c.head_dim);
  c.max_position_embeddings = OptionalInt(object, "max_position_embeddings", where, 2048);
  c.rms_norm_eps = OptionalNumber(object, "rms_norm_eps", where, 1e-6);
  ParseRope(object, where, c);
  c.tie_word_embeddings = OptionalBool(object, "tie_word_embeddings", where, false);
  c.attention_bias = OptionalBool(object, "attention_bias", where, false);
  c.mlp_bias = OptionalBool(object, "mlp_bias", where, false);
  // Special tokens as transformers' LlamaConfig: an absent key takes its default (bos 1, eos 2,
  // no pad), an explicit null means none. Llama 1/2 configs wrote "pad_token_id": -1 for "none",
  // which is what -1 means here too.
  const bool has_bos = object.contains("bos_token_id");
  c.bos_token_id = OptionalInt(object, "bos_token_id", where, has_bos ? -1 : 1);
  c.pad_token_id = OptionalInt(object, "pad_token_id", where, -1);
  if (object.contains("eos_token_id")) c.eos_token_ids.clear();
  if (const json* eos = Field(object, "eos_token_id")) {
    if (eos->is_array()) {
      for (const json& id : *eos) c.eos_token_ids.push_back(AsInt(id, "eos_token_id", where));
    } else {
      Check(eos->is_number_integer(), where,
            ": \"eos_token_id\" must be an integer or a list of integers, got ", eos->dump());
      c.eos_token_ids.push_back(eos->get<int64_t>());
    }
  }
  // transformers 5 writes "dtype"; 4.x wrote "torch_dtype".
  const json* dtype = Field(object, "dtype");
  const std::string dtype_key = dtype ? "dtype" : "torch_dtype";
  if (!dtype) dtype = Field(object, "torch_dtype");
  if (dtype) c.torch_dtype = AsString(*dtype, dtype_key, where);
  c.initializer_range = OptionalNumber(object, "initializer_range", where, 0.02);
  c.Validate(where);
  return c;
}

LlamaConfig LlamaConfig::FromFile(const std::string& config_json_path) {
  Check(stdfs::is_regular_file(config_json_path), "missing model config: '", config_json_path,
        "' does not exist");
  return FromJson(fs::ReadJson(config_json_path), config_json_path);
}

json LlamaConfig::ToJson() const {
  json rope = nullptr;  // transformers 4.x and 5.x both read a null rope_scaling as no scaling
  if (rope_scaling.rope_type == "linear") {
    rope = {{"rope_type", "linear"}, {"factor", rope_scaling.factor}};
  } else if (rope_scaling.rope_type == "llama3") {
    rope = {{"rope_type", "llama3"},
            {"factor", rope_scaling.factor},
            {"low_freq_factor", rope_scaling.low_freq_factor},
            {"high_freq_factor", rope_scaling.high_freq_factor},
            {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
  }
  json eos = nullptr;
  if (eos_token_ids.size() == 1) {
    eos = eos_token_ids[0];
  } else if (!eos_token_ids.empty()) {
    eos = eos_token_ids;
  }
  auto optional_id = [](int64_t id) { return id >= 0 ? json(id) : json(nullptr); };
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab_size},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"num_key_value_heads", num_key_value_heads},
          {"head_dim", HeadDim()},
          {"hidden_act", "silu"},
          {"max_position_embeddings", max_position_embeddings},
          {"rms_norm_eps", rms_norm_eps},
          {"rope_theta", rope_theta},
          {"rope_scaling", rope},
          {"tie_word_embeddings", tie_word_embeddings},
          {"attention_bias", attention_bias},
          {"attention_dropout", 0.0},
          {"mlp_bias", mlp_bias},
          {"bos_token_id", optional_id(bos_token_id)},
          {"eos_token_id", eos},
          {"pad_token_id", optional_id(pad_token_id)},
          {"torch_dtype", torch_dtype},
          {"initializer_range", initializer_range},
          {"use_cache", true}};
}

// ---------------------------------------------------------------------------------------------
// Rotary frequencies: the float32 operation sequence of transformers' rope init functions
// (`1.0 / x` there is reciprocal(); `c / t` with a Python scalar is t.reciprocal() * c).

torch::Tensor RopeInverseFrequencies(const LlamaConfig& config) {
  const int64_t dim = config.HeadDim();
  const torch::Tensor exponent =
      torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat) / static_cast<double>(dim);
  torch::Tensor inv_freq = torch::pow(config.rope_theta, exponent).reciprocal();
  const RopeScaling& rope = config.rope_scaling;
  if (rope.rope_type == "linear") return inv_freq / rope.factor;
  if (rope.rope_type != "llama3") return inv_freq;

  // Llama 3.1: wavelengths beyond the original context are stretched by `factor`, those shorter
  // than original / high_freq_factor are kept, and the band between is interpolated smoothly.
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  const torch::Tensor wavelen = inv_freq.reciprocal() * (2 * M_PI);
  torch::Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  const torch::Tensor smooth = (wavelen.reciprocal() * old_context - rope.low_freq_factor) /
                               (rope.high_freq_factor - rope.low_freq_factor);
  const torch::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  const torch::Tensor medium = torch::logical_not(wavelen < high_freq_wavelen) &
                               torch::logical_not(wavelen > low_freq_wavelen);
  return torch::where(medium, smoothed, scaled);
}

}  // namespace slm::text
