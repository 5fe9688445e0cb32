#include "text/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "text/llama_layers.h"

namespace slm::text {

using namespace detail;
using nlohmann::json;
namespace stdfs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// LoRA

void LoraOptions::Validate() const {
  Check(rank >= 1, "lora.rank must be >= 1, got ", rank);
  Check(alpha > 0, "lora.alpha must be positive, got ", alpha);
  Check(dropout >= 0 && dropout < 1, "lora.dropout must be in [0, 1), got ", dropout);
  Check(!target_modules.empty(), "lora.target_modules must name at least one projection");
  std::set<std::string> seen;
  for (const std::string& t : target_modules) {
    const auto& valid = LoraTargetNames();
    Check(std::find(valid.begin(), valid.end(), t) != valid.end(), "lora.target_modules: unknown module '",
          t, "' (valid: ", Join(valid, ", "), ")");
    Check(seen.insert(t).second, "lora.target_modules names '", t, "' twice");
  }
}

void LoraOptions::Load(config::Node node) {
  node.Read("rank", rank, config::InRange<int64_t>(1, 65536))
      .Read("alpha", alpha, config::InRange(1e-9, 1e9))
      .Read("dropout", dropout, config::InRange(0.0, 0.999))
      .Read("target_modules", target_modules);
  try {
    Validate();
  } catch (const Error& e) {
    node.Fail("target_modules", e.what());
  }
}

void LlamaModelImpl::AddLora(const LoraOptions& options) {
  Check(!has_lora_, "LlamaModel: LoRA was already added");
  options.Validate();
  lora_ = options;
  const double factor = lora_scale_ * options.alpha / static_cast<double>(options.rank);
  for (ProjectionImpl* p : parts_->LoraProjections(options)) p->AddLora(options.rank, options.dropout, factor);
  has_lora_ = true;
  lora_merged_ = false;
}

bool LlamaModelImpl::HasLora() const { return has_lora_; }

const LoraOptions& LlamaModelImpl::Lora() const {
  Check(has_lora_, "LlamaModel: the model has no LoRA");
  return lora_;
}

std::vector<torch::Tensor> LlamaModelImpl::LoraParameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& named : named_parameters())
    if (IsLoraName(named.key())) out.push_back(named.value());
  return out;
}

void LlamaModelImpl::SetLoraScale(double scale) {
  Check(std::isfinite(scale) && scale >= 0, "LoRA scale must be finite and >= 0, got ", scale);
  const bool merged = lora_merged_;
  if (merged) UnmergeLora();
  lora_scale_ = scale;
  if (has_lora_) {
    const double factor = scale * lora_.alpha / static_cast<double>(lora_.rank);
    for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->lora_factor = factor;
  }
  if (merged) MergeLora();
}

void LlamaModelImpl::MergeLora() {
  Check(has_lora_, "LlamaModel: MergeLora without LoRA");
  Check(!lora_merged_, "LlamaModel: LoRA is already merged");
  for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->Merge(true);
  lora_merged_ = true;
}

void LlamaModelImpl::UnmergeLora() {
  Check(has_lora_, "LlamaModel: UnmergeLora without LoRA");
  Check(lora_merged_, "LlamaModel: LoRA is not merged");
  for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->Merge(false);
  lora_merged_ = false;
}

namespace {
const char kPeftPrefix[] = "base_model.model.";
}  // namespace

void LlamaModelImpl::SaveLora(const std::string& adapter_dir) const {
  Check(has_lora_, "LlamaModel: SaveLora without LoRA");
  fs::MakeDirs(adapter_dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& named : named_parameters())
    if (IsLoraName(named.key()))
      tensors.emplace_back(kPeftPrefix + named.key(), named.value().detach());
  safetensors::Save(adapter_dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  const json config = {{"peft_type", "LORA"},
                       {"task_type", "CAUSAL_LM"},
                       {"r", lora_.rank},
                       {"lora_alpha", lora_.alpha},
                       {"lora_dropout", lora_.dropout},
                       {"target_modules", lora_.target_modules},
                       {"bias", "none"},
                       {"fan_in_fan_out", false},
                       {"inference_mode", false}};
  fs::AtomicWriteString(adapter_dir + "/adapter_config.json", config.dump(2) + "\n");
}

LoraAdapter ReadLoraAdapter(const LlamaConfig& model, const std::string& adapter_dir) {
  const std::string config_path = adapter_dir + "/adapter_config.json";
  const std::string weights_path = adapter_dir + "/adapter_model.safetensors";
  Check(stdfs::is_regular_file(config_path), "'", adapter_dir, "' has no adapter_config.json");
  const json config = fs::ReadJson(config_path);
  LoraAdapter adapter;
  LoraOptions& options = adapter.options;
  try {
    Check(config.value("peft_type", std::string("LORA")) == "LORA", "peft_type must be \"LORA\"");
    options.rank = config.at("r").get<int64_t>();
    options.alpha = config.at("lora_alpha").get<double>();
    options.dropout = config.value("lora_dropout", 0.0);
    const json& targets = config.at("target_modules");
    options.target_modules = targets.is_string() ? std::vector<std::string>{targets.get<std::string>()}
                                                 : targets.get<std::vector<std::string>>();
    Check(config.value("bias", std::string("none")) == "none", "only bias \"none\" is supported");
    options.Validate();
  } catch (const json::exception& e) {
    throw Error(Str(config_path, ": invalid LoRA config (", e.what(), ")"));
  } catch (const Error& e) {
    throw Error(Str(config_path, ": ", e.what()));
  }
  const auto file = safetensors::Checkpoint::File(weights_path);
  // Shapes follow from the options and the model's geometry, so everything is checked before
  // anything is read.
  const int64_t hidden = model.hidden_size, inner = model.intermediate_size;
  const int64_t q = model.num_attention_heads * model.HeadDim(), kv = model.num_key_value_heads * model.HeadDim();
  const std::map<std::string, std::pair<int64_t, int64_t>> in_out = {
      {"q_proj", {hidden, q}},         {"k_proj", {hidden, kv}},      {"v_proj", {hidden, kv}}, {"o_proj", {q, hidden}},
      {"gate_proj", {hidden, inner}}, {"up_proj", {hidden, inner}}, {"down_proj", {inner, hidden}}};
  safetensors::Plan plan;
  for (const std::string& target : options.target_modules) {
    const bool mlp = target == "gate_proj" || target == "up_proj" || target == "down_proj";
    const auto [in, out] = in_out.at(target);
    for (int64_t layer = 0; layer < model.num_hidden_layers; ++layer) {
      const std::string base = Str(kPeftPrefix, "model.layers.", layer, mlp ? ".mlp." : ".self_attn.", target);
      plan.tensors.push_back({base + ".lora_A.weight", {options.rank, in}});
      plan.tensors.push_back({base + ".lora_B.weight", {out, options.rank}});
    }
  }
  plan.unexpected_hint = " (not a LoRA weight of this model's targets)";
  // The first missing tensor is named alone (the message tests/text/lora_test.cpp expects), then
  // the plan checks shapes, dtypes and unexpected tensors.
  for (const safetensors::Expected& e : plan.tensors)
    Check(file.Source(e.name) != nullptr, weights_path, ": missing tensor '", e.name, "'");
  file.Verify(plan);
  for (const safetensors::Expected& e : plan.tensors)
    adapter.weights[e.name.substr(std::strlen(kPeftPrefix))] = file.Get(e.name);
  return adapter;
}

void LlamaModelImpl::LoadLora(const std::string& adapter_dir) {
  const std::string config_path = adapter_dir + "/adapter_config.json";
  LoraAdapter adapter = ReadLoraAdapter(config_, adapter_dir);
  const LoraOptions& options = adapter.options;
  if (has_lora_) {
    Check(options.rank == lora_.rank && options.target_modules == lora_.target_modules, config_path,
          ": rank ", options.rank, " / targets ", Join(options.target_modules, ","),
          " differ from the model's LoRA (rank ", lora_.rank, " / ", Join(lora_.target_modules, ","), ")");
    Check(!lora_merged_, "LlamaModel: unmerge LoRA before loading another adapter");
  }
  if (!has_lora_) AddLora(options);
  torch::NoGradGuard no_grad;
  for (const auto& named : named_parameters())
    if (IsLoraName(named.key())) named.value().copy_(adapter.weights.at(named.key()));
  lora_.dropout = options.dropout;
  lora_.alpha = options.alpha;
  for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->lora_dropout = options.dropout;
  SetLoraScale(lora_scale_);  // alpha may differ from a previously added LoRA's
}

}  // namespace slm::text
