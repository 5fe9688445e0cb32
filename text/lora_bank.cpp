#include "text/lora_bank.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/strings.h"
#include "text/llama.h"

namespace slm::text {
namespace {

// "model.layers.{l}.{self_attn|mlp}.{target}.lora_{A|B}.weight" -> (l, target index, is_a);
// false for anything else.
bool ParseLoraName(const std::string& name, int64_t* layer, int64_t* target, bool* is_a) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return false;
  size_t at = prefix.size();
  size_t dot = name.find('.', at);
  if (dot == std::string::npos || dot == at) return false;
  const std::string number = name.substr(at, dot - at);
  if (!std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  *layer = std::stoll(number);
  const std::string rest = name.substr(dot + 1);
  for (size_t t = 0; t < kLoraTargets.size(); ++t) {
    const std::string module = (t < 4 ? "self_attn." : "mlp.") + std::string(kLoraTargets[t]);
    if (rest == module + ".lora_A.weight" || rest == module + ".lora_B.weight") {
      *target = static_cast<int64_t>(t);
      *is_a = rest == module + ".lora_A.weight";
      return true;
    }
  }
  return false;
}

}  // namespace

LoraBank::LoraBank(const LlamaConfig& config, int64_t capacity, int64_t rank, const torch::TensorOptions& options)
    : capacity_(capacity), rank_(rank), options_(options.requires_grad(false)) {
  Check(capacity >= 2, "LoraBank: capacity must be >= 2 (slot 0 is 'no LoRA'), got ", capacity);
  Check(rank >= 1, "LoraBank: rank must be >= 1, got ", rank);
  const int64_t hidden = config.hidden_size;
  const int64_t q = config.num_attention_heads * config.HeadDim();
  const int64_t kv = config.num_key_value_heads * config.HeadDim();
  const int64_t inner = config.intermediate_size;
  const std::array<Shape, kLoraTargets.size()> layer = {
      Shape{hidden, q}, Shape{hidden, kv}, Shape{hidden, kv}, Shape{q, hidden},
      Shape{hidden, inner}, Shape{hidden, inner}, Shape{inner, hidden}};
  shapes_.assign(config.num_hidden_layers, layer);
  a_.resize(config.num_hidden_layers);
  b_.resize(config.num_hidden_layers);
}

void LoraBank::Set(int64_t slot, const std::map<std::string, torch::Tensor>& lora, double factor) {
  Check(slot >= 1 && slot < capacity_, "LoraBank: slot must be in [1, ", capacity_, "), got ", slot);
  // Check everything first, so that a bad adapter leaves the slot as it was.
  struct Pair {
    torch::Tensor a, b;
  };
  std::map<std::pair<int64_t, int64_t>, Pair> pairs;
  for (const auto& [name, tensor] : lora) {
    int64_t layer = 0, target = 0;
    bool is_a = false;
    Check(ParseLoraName(name, &layer, &target, &is_a), "LoraBank: '", name, "' is not a LoRA parameter name");
    Check(layer < static_cast<int64_t>(shapes_.size()), "LoraBank: '", name, "' names layer ", layer,
          " but the backbone has ", shapes_.size());
    const Shape& shape = shapes_[layer][target];
    Check(tensor.dim() == 2, "LoraBank: '", name, "' must be a matrix, got ", tensor.dim(), " dimensions");
    const int64_t r = is_a ? tensor.size(0) : tensor.size(1);
    Check(r >= 1 && r <= rank_, "LoraBank: '", name, "' has rank ", r, "; this bank holds ranks up to ", rank_);
    if (is_a)
      Check(tensor.size(1) == shape.in, "LoraBank: '", name, "' is [", tensor.size(0), ", ", tensor.size(1),
            "], expected [r, ", shape.in, "]");
    else
      Check(tensor.size(0) == shape.out, "LoraBank: '", name, "' is [", tensor.size(0), ", ", tensor.size(1),
            "], expected [", shape.out, ", r]");
    (is_a ? pairs[{layer, target}].a : pairs[{layer, target}].b) = tensor;
  }
  for (const auto& [key, pair] : pairs) {
    const std::string where = Str("layer ", key.first, " ", kLoraTargets[key.second]);
    Check(pair.a.defined() && pair.b.defined(), "LoraBank: ", where, " has lora_", pair.a.defined() ? "A" : "B",
          " without its partner");
    Check(pair.a.size(0) == pair.b.size(1), "LoraBank: ", where, ": lora_A has rank ", pair.a.size(0),
          " but lora_B ", pair.b.size(1));
  }
  torch::NoGradGuard no_grad;
  Clear(slot);
  for (const auto& [key, pair] : pairs) {
    const auto [layer, target] = key;
    const Shape& shape = shapes_[layer][target];
    if (!a_[layer][target].defined()) {
      a_[layer][target] = torch::zeros({capacity_, rank_, shape.in}, options_);
      b_[layer][target] = torch::zeros({capacity_, shape.out, rank_}, options_);
      ++generation_;
    }
    const int64_t r = pair.a.size(0);
    a_[layer][target][slot].narrow(0, 0, r).copy_(pair.a);
    // The factor is folded into B in float32, then cast, as LlamaModel's merge computes B A.
    b_[layer][target][slot].narrow(1, 0, r).copy_(pair.b.to(torch::kFloat) * factor);
  }
}

void LoraBank::Clear(int64_t slot) {
  Check(slot >= 0 && slot < capacity_, "LoraBank: slot must be in [0, ", capacity_, "), got ", slot);
  torch::NoGradGuard no_grad;
  for (size_t l = 0; l < a_.size(); ++l)
    for (size_t t = 0; t < kLoraTargets.size(); ++t)
      if (a_[l][t].defined()) {
        a_[l][t][slot].zero_();
        b_[l][t][slot].zero_();
      }
}

}  // namespace slm::text
