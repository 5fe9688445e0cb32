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
#include "core/hf_config.h"
#include "core/safetensors.h"
#include "core/strings.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kRopeTypes = {"default", "linear", "llama3"};
const std::vector<std::string> kConfigDtypes = {"float32", "bfloat16", "float16", "float64"};
const std::vector<std::string> kLayerTypes = {"full_attention", "sliding_attention"};

// config.json values through the one Hugging Face config reader (core/hf_config.h).
using hf_config::AsInt;
using hf_config::AsNumber;
using hf_config::AsString;
using hf_config::CheckPositive;
using hf_config::Field;
using hf_config::OptionalBool;
using hf_config::OptionalInt;
using hf_config::OptionalNumber;
using hf_config::RequiredInt;

// The family config.json declares: model_type when present (architectures, when also present,
// must name that family's causal-LM class), else the first architecture slm knows.
const ModelFamily& FamilyOf(const json& object, const std::string& where) {
  const json* model_type = Field(object, "model_type");
  const json* architectures = Field(object, "architectures");
  Check(model_type || architectures, where,
        ": neither \"model_type\" nor \"architectures\" says what model this is (supported model types: ",
        SupportedModelTypes(), ")");
  std::vector<std::string> classes;
  if (architectures) {
    Check(architectures->is_array(), where, ": \"architectures\" must be a list of strings, got ",
          architectures->dump());
    for (const json& name : *architectures) classes.push_back(AsString(name, "architectures", where));
  }
  if (model_type) {
    const ModelFamily& family = FindModelFamily(AsString(*model_type, "model_type", where), where);
    if (architectures && std::find(classes.begin(), classes.end(), family.architecture) == classes.end())
      throw Error(Str(where, ": architectures ", architectures->dump(), " is not supported for model_type \"",
                      family.model_type, "\" (slm runs ", family.architecture, ")"));
    return family;
  }
  for (const std::string& name : classes)
    if (const ModelFamily* family = FamilyOfArchitecture(name)) return *family;
  std::vector<std::string> known;
  for (const ModelFamily& f : ModelFamilies()) known.push_back(f.architecture);
  throw Error(Str(where, ": architectures ", architectures->dump(), " is not supported (supported: ", Join(known),
                  ")"));
}

// A window key where null means "none" and an absent key the family's default.
int64_t WindowOrNone(const json& object, const std::string& key, const std::string& where, int64_t fallback) {
  if (!object.contains(key)) return fallback;
  if (object.at(key).is_null()) return 0;
  const int64_t window = AsInt(object.at(key), key, where);
  Check(window > 0, where, ": \"", key, "\" must be positive or null, got ", window);
  return window;
}

// A soft-capping value: null = off, absent = the family's default.
double CapOrNone(const json& object, const std::string& key, const std::string& where, double fallback) {
  if (!object.contains(key)) return fallback;
  if (object.at(key).is_null()) return 0.0;
  const double cap = AsNumber(object.at(key), key, where);
  Check(cap > 0, where, ": \"", key, "\" must be positive or null, got ", cap);
  return cap;
}

std::vector<std::string> LayerTypes(const json& object, const std::string& where) {
  std::vector<std::string> types;
  const json* value = Field(object, "layer_types");
  if (!value) return types;
  Check(value->is_array(), where, ": \"layer_types\" must be a list of strings, got ", value->dump());
  for (const json& t : *value) types.push_back(AsString(t, "layer_types", where));
  return types;
}

// The family's sliding-window keys into config.sliding_window / layer_types.
void ParseSlidingWindow(const json& object, const std::string& where, const ModelFamily& family, LlamaConfig& c) {
  switch (family.sliding) {
    case SlidingWindowKeys::kNone:
      return;
    case SlidingWindowKeys::kAllLayers:
      // MistralForCausalLM ignores layer_types (transformers warns and keeps every layer alike).
      c.sliding_window = WindowOrNone(object, "sliding_window", where, family.default_sliding_window);
      return;
    case SlidingWindowKeys::kQwen: {
      // As Qwen2Config.__post_init__: the window exists only with use_sliding_window; layer_types,
      // when absent, slide the layers from max_window_layers on.
      const bool use = OptionalBool(object, "use_sliding_window", where, false);
      const int64_t window = WindowOrNone(object, "sliding_window", where, family.default_sliding_window);
      c.sliding_window = use ? window : 0;
      c.layer_types = LayerTypes(object, where);
      if (c.layer_types.empty() && c.sliding_window > 0) {
        const int64_t first = OptionalInt(object, "max_window_layers", where, 28);
        for (int64_t l = 0; l < c.num_hidden_layers; ++l)
          c.layer_types.push_back(l >= first ? "sliding_attention" : "full_attention");
      }
      const bool any = std::find(c.layer_types.begin(), c.layer_types.end(), "sliding_attention") != c.layer_types.end();
      Check(!any || c.sliding_window > 0, where,
            ": \"layer_types\" names sliding_attention layers but there is no window (\"use_sliding_window\" is ",
            use ? "true and \"sliding_window\" null" : "false", ")");
      return;
    }
    case SlidingWindowKeys::kLayerTypes: {
      c.sliding_window = WindowOrNone(object, "sliding_window", where, family.default_sliding_window);
      c.layer_types = LayerTypes(object, where);
      if (c.layer_types.empty())
        for (int64_t l = 0; l < c.num_hidden_layers; ++l)
          c.layer_types.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
      return;
    }
  }
}

// gemma2's keys beyond Llama's.
void ParseGemma(const json& object, const std::string& where, LlamaConfig& c) {
  Check(!OptionalBool(object, "use_bidirectional_attention", where, false), where,
        ": \"use_bidirectional_attention\": true is not supported (slm runs causal decoders only)");
  c.query_pre_attn_scalar = OptionalNumber(object, "query_pre_attn_scalar", where, 256.0);
  CheckPositive(c.query_pre_attn_scalar, "query_pre_attn_scalar", where);
  c.attn_logit_softcapping = CapOrNone(object, "attn_logit_softcapping", where, 50.0);
  c.final_logit_softcapping = CapOrNone(object, "final_logit_softcapping", where, 30.0);
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
        ": \"partial_rotary_factor\" other than 1 is not supported, got ", partial_top);
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
        "partial_rotary_factor\" other than 1 is not supported, got ", partial);

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
  CheckPositive(vocab_size, "vocab_size", where);
  CheckPositive(hidden_size, "hidden_size", where);
  CheckPositive(intermediate_size, "intermediate_size", where);
  CheckPositive(num_hidden_layers, "num_hidden_layers", where);
  CheckPositive(num_attention_heads, "num_attention_heads", where);
  CheckPositive(num_key_value_heads, "num_key_value_heads", where);
  CheckPositive(max_position_embeddings, "max_position_embeddings", where);
  Check(head_dim >= 0, where, ": \"head_dim\" must be positive, got ", head_dim);
  Check(head_dim > 0 || hidden_size % num_attention_heads == 0, where, ": hidden_size (",
        hidden_size, ") is not a multiple of num_attention_heads (", num_attention_heads, ")");
  Check(num_attention_heads % num_key_value_heads == 0, where, ": num_attention_heads (",
        num_attention_heads, ") is not a multiple of num_key_value_heads (", num_key_value_heads,
        ")");
  Check(HeadDim() % 2 == 0, where, ": the head dimension (", HeadDim(),
        ") must be even for rotary embeddings");
  CheckPositive(rms_norm_eps, "rms_norm_eps", where);
  CheckPositive(rope_theta, "rope_theta", where);
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

  // Options the family's transformers class cannot express would make SaveWeights write a config
  // that loads as a different model.
  const ModelFamily& family = FindModelFamily(model_type, where);
  const std::vector<std::string>& acts = SupportedActivations();
  Check(std::find(acts.begin(), acts.end(), hidden_act) != acts.end(), where, ": ", family.activation_key, " \"",
        hidden_act, "\" is not supported (supported: ", Join(acts), ")");
  Check(!attention_bias || family.reads_attention_bias, where, ": \"attention_bias\" is not an option of ",
        family.model_type);
  Check(!mlp_bias || family.reads_mlp_bias, where, ": \"mlp_bias\" is not an option of ", family.model_type);
  Check(family.gemma || (query_pre_attn_scalar == 0 && attn_logit_softcapping == 0 && final_logit_softcapping == 0),
        where, ": query_pre_attn_scalar and logit soft-capping are gemma2 options, not ", family.model_type, "'s");
  Check(query_pre_attn_scalar >= 0 && attn_logit_softcapping >= 0 && final_logit_softcapping >= 0, where,
        ": query_pre_attn_scalar and the soft-capping values must not be negative");
  Check(sliding_window >= 0, where, ": \"sliding_window\" must not be negative, got ", sliding_window);
  Check(family.sliding != SlidingWindowKeys::kNone || (sliding_window == 0 && layer_types.empty()), where,
        ": ", family.model_type, " has no sliding-window attention (\"sliding_window\", \"layer_types\")");
  Check(family.sliding != SlidingWindowKeys::kAllLayers || layer_types.empty(), where, ": ", family.model_type,
        " applies \"sliding_window\" to every layer; it has no \"layer_types\"");
  if (!layer_types.empty()) {
    Check(static_cast<int64_t>(layer_types.size()) == num_hidden_layers, where, ": \"layer_types\" has ",
          layer_types.size(), " entries for ", num_hidden_layers, " layers");
    for (const std::string& type : layer_types) {
      Check(std::find(kLayerTypes.begin(), kLayerTypes.end(), type) != kLayerTypes.end(), where,
            ": layer type \"", type, "\" in \"layer_types\" is not supported (supported: ", Join(kLayerTypes), ")");
      Check(type != "sliding_attention" || sliding_window > 0, where,
            ": \"layer_types\" names sliding_attention layers but \"sliding_window\" is not set");
    }
  }
}

const ModelFamily& LlamaConfig::Family() const { return FindModelFamily(model_type, "LlamaConfig"); }

int64_t LlamaConfig::LayerWindow(int64_t layer) const {
  if (sliding_window <= 0) return 0;
  if (!layer_types.empty()) return layer_types.at(layer) == "sliding_attention" ? sliding_window : 0;
  switch (Family().sliding) {
    case SlidingWindowKeys::kAllLayers:
      return sliding_window;
    case SlidingWindowKeys::kLayerTypes:
      return layer % 2 == 0 ? sliding_window : 0;
    default:
      return 0;
  }
}

bool LlamaConfig::HasSlidingLayers() const {
  for (int64_t l = 0; l < num_hidden_layers; ++l)
    if (LayerWindow(l) > 0) return true;
  return false;
}

double LlamaConfig::AttentionScale() const {
  return 1.0 / std::sqrt(query_pre_attn_scalar > 0 ? query_pre_attn_scalar : static_cast<double>(HeadDim()));
}

// Keys this code does not read are ignored: Hugging Face configs carry many that do not change
// the computation (use_cache, pretraining_tp, transformers_version, _name_or_path, generation
// hints, attention_dropout). Every key that does change it is read and checked, or refused
// (quantization_config, unsupported activations, partial rotary factors, unknown rope types or
// rope keys, unknown layer types). Absent keys take the family's transformers default.
LlamaConfig LlamaConfig::FromJson(const json& object, const std::string& where) {
  Check(object.is_object(), where, ": a config must be a JSON object, got ", object.type_name());
  const ModelFamily& family = FamilyOf(object, where);
  Check(Field(object, "quantization_config") == nullptr, where,
        ": quantized checkpoints (\"quantization_config\") are not supported");

  LlamaConfig c;
  c.model_type = family.model_type;
  // Gemma 2 configs written by older transformers carry both keys; the class reads its own.
  const std::string act_key = Field(object, family.activation_key) ? family.activation_key : "hidden_act";
  c.hidden_act = Field(object, act_key) ? AsString(*Field(object, act_key), act_key, where) : family.default_activation;
  const std::vector<std::string>& acts = SupportedActivations();
  Check(std::find(acts.begin(), acts.end(), c.hidden_act) != acts.end(), where, ": ", act_key, " \"", c.hidden_act,
        "\" is not supported (supported: ", Join(acts), ")");
  c.vocab_size = RequiredInt(object, "vocab_size", where);
  c.hidden_size = RequiredInt(object, "hidden_size", where);
  c.intermediate_size = RequiredInt(object, "intermediate_size", where);
  c.num_hidden_layers = RequiredInt(object, "num_hidden_layers", where);
  c.num_attention_heads = RequiredInt(object, "num_attention_heads", where);
  c.num_key_value_heads = OptionalInt(object, "num_key_value_heads", where, c.num_attention_heads);
  c.head_dim = OptionalInt(object, "head_dim", where, family.default_head_dim);
  Check(Field(object, "head_dim") == nullptr || c.head_dim > 0, where,
        ": \"head_dim\" must be positive, got ", c.head_dim);
  c.max_position_embeddings =
      OptionalInt(object, "max_position_embeddings", where, family.default_max_position_embeddings);
  c.rms_norm_eps = OptionalNumber(object, "rms_norm_eps", where, 1e-6);
  ParseRope(object, where, c);
  c.tie_word_embeddings = OptionalBool(object, "tie_word_embeddings", where, family.default_tie_word_embeddings);
  if (family.reads_attention_bias) c.attention_bias = OptionalBool(object, "attention_bias", where, false);
  if (family.reads_mlp_bias) c.mlp_bias = OptionalBool(object, "mlp_bias", where, false);
  ParseSlidingWindow(object, where, family, c);
  if (family.gemma) ParseGemma(object, where, c);
  // Special tokens as transformers' config classes: an absent key takes the family's default, an
  // explicit null means none. Llama 1/2 configs wrote "pad_token_id": -1 for "none", which is
  // what -1 means here too.
  auto special = [&](const char* key, int64_t fallback) {
    return object.contains(key) ? OptionalInt(object, key, where, -1) : fallback;
  };
  c.bos_token_id = special("bos_token_id", family.default_bos_token_id);
  c.pad_token_id = special("pad_token_id", family.default_pad_token_id);
  c.eos_token_ids.clear();
  if (!object.contains("eos_token_id") && family.default_eos_token_id >= 0)
    c.eos_token_ids.push_back(family.default_eos_token_id);
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
  const ModelFamily& family = Family();
  json out = {{"architectures", {family.architecture}},
              {"model_type", family.model_type},
              {"vocab_size", vocab_size},
              {"hidden_size", hidden_size},
              {"intermediate_size", intermediate_size},
              {"num_hidden_layers", num_hidden_layers},
              {"num_attention_heads", num_attention_heads},
              {"num_key_value_heads", num_key_value_heads},
              {"head_dim", HeadDim()},
              {family.activation_key, hidden_act},
              {"max_position_embeddings", max_position_embeddings},
              {"rms_norm_eps", rms_norm_eps},
              {"rope_theta", rope_theta},
              {"rope_scaling", rope},
              {"tie_word_embeddings", tie_word_embeddings},
              {"attention_dropout", 0.0},
              {"bos_token_id", optional_id(bos_token_id)},
              {"eos_token_id", eos},
              {"pad_token_id", optional_id(pad_token_id)},
              {"torch_dtype", torch_dtype},
              {"initializer_range", initializer_range},
              {"use_cache", true}};
  if (family.reads_attention_bias) out["attention_bias"] = attention_bias;
  if (family.reads_mlp_bias) out["mlp_bias"] = mlp_bias;
  std::vector<std::string> types;
  for (int64_t l = 0; l < num_hidden_layers; ++l)
    types.push_back(LayerWindow(l) > 0 ? "sliding_attention" : "full_attention");
  const json window = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  switch (family.sliding) {
    case SlidingWindowKeys::kNone:
      break;
    case SlidingWindowKeys::kAllLayers:
      out["sliding_window"] = window;
      break;
    case SlidingWindowKeys::kQwen:
      out["use_sliding_window"] = HasSlidingLayers();
      out["sliding_window"] = window;
      out["max_window_layers"] = num_hidden_layers;
      out["layer_types"] = types;
      break;
    case SlidingWindowKeys::kLayerTypes:
      out["sliding_window"] = window;
      out["layer_types"] = types;
      break;
  }
  if (family.gemma) {
    auto cap = [](double value) { return value > 0 ? json(value) : json(nullptr); };
    // Gemma2Config declares it an int (its configs hold 256, 144, ...).
    const double scalar = query_pre_attn_scalar > 0 ? query_pre_attn_scalar : static_cast<double>(HeadDim());
    out["query_pre_attn_scalar"] =
        scalar == std::floor(scalar) ? json(static_cast<int64_t>(scalar)) : json(scalar);
    out["attn_logit_softcapping"] = cap(attn_logit_softcapping);
    out["final_logit_softcapping"] = cap(final_logit_softcapping);
  }
  return out;
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
