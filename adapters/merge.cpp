#include "adapters/merge.h"

#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"

namespace slm::adapters {
namespace {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

// PEFT's ties: trim each (already weighted) task vector to its top `density` share by magnitude,
// elect the sign of their sum per entry (>= 0 counts as +), average the entries that agree.
torch::Tensor Ties(const std::vector<torch::Tensor>& taus, double density) {
  std::vector<torch::Tensor> trimmed;
  for (const torch::Tensor& tau : taus) {
    const int64_t keep = static_cast<int64_t>(density * static_cast<double>(tau.numel()));
    torch::Tensor mask = torch::zeros({tau.numel()}, tau.options());
    if (keep > 0) mask.index_fill_(0, std::get<1>(tau.abs().flatten().topk(keep)), 1.0);
    trimmed.push_back(tau * mask.view(tau.sizes()));
  }
  const torch::Tensor stacked = torch::stack(trimmed);
  const torch::Tensor sign = torch::where(stacked.sum(0) >= 0, 1.0, -1.0).to(stacked.scalar_type());
  const torch::Tensor agree = (stacked.sign() == sign).to(stacked.scalar_type());
  return (stacked * agree).sum(0) / agree.sum(0).clamp_min(1.0);
}

struct LoraFiles {
  json config;
  std::map<std::string, torch::Tensor> tensors;  // float32
  double scale = 1;                              // lora_alpha / r
  int64_t rank = 0;
};

std::map<std::string, torch::Tensor> ReadAll(const std::string& path, torch::ScalarType* dtype = nullptr) {
  safetensors::Reader reader(path);
  std::map<std::string, torch::Tensor> out;
  for (const std::string& name : reader.Names()) {
    const torch::Tensor t = reader.Get(name);
    if (dtype != nullptr) *dtype = t.scalar_type();
    out[name] = t.to(torch::kFloat);
  }
  return out;
}

// Same names and shapes as the first input's, or an error naming the tensor and both inputs.
void CheckSameTensors(const std::map<std::string, torch::Tensor>& first, const std::map<std::string, torch::Tensor>& other,
                      const std::string& first_name, const std::string& other_name, bool compare_shapes) {
  for (const auto& [name, t] : first) {
    Check(other.count(name), "merge: '", other_name, "' has no tensor '", name, "' that '", first_name, "' has");
    Check(!compare_shapes || other.at(name).sizes() == t.sizes(), "merge: tensor '", name, "' is ", t.sizes(),
          " in '", first_name, "' but ", other.at(name).sizes(), " in '", other_name,
          "': the adapters belong to different models");
  }
  for (const auto& [name, t] : other)
    Check(first.count(name), "merge: '", other_name, "' has a tensor '", name, "' that '", first_name, "' lacks");
}

// model.backbone of the run directory the adapters sit in ("" when they do not).
std::string RunBackbone(const std::string& adapters) {
  const stdfs::path config = stdfs::path(adapters).lexically_normal().parent_path() / "config.yaml";
  if (!stdfs::is_regular_file(config)) return "";
  try {
    const YAML::Node root = YAML::LoadFile(config.string());
    if (root["model"] && root["model"]["backbone"]) return stdfs::weakly_canonical(root["model"]["backbone"].as<std::string>()).string();
  } catch (const YAML::Exception&) {
  }
  return "";
}

}  // namespace

void MergeConfig::Load(config::Node root) {
  auto m = root.Child("merge");
  m.Read("method", method, config::OneOf<std::string>({"linear", "ties"}))
      .Read("base", base)
      .Read("density", density, config::InRange(1e-9, 1.0))
      .Require("output", output);
  for (config::Node item : m.List("inputs")) {
    Input input;
    item.Require("adapters", input.adapters).Read("weight", input.weight, config::InRange(-1e6, 1e6));
    inputs.push_back(input);
  }
  if (inputs.size() < 2) m.Fail("inputs", "needs at least two adapter directories to merge");
}

json MergeResult::ToJson() const {
  return {{"output", output}, {"tensors", tensors}, {"lora_rank", lora_rank}, {"lora_alpha", lora_alpha}};
}

MergeResult MergeAdapters(const MergeConfig& c) {
  Check(c.inputs.size() >= 2, "merge: needs at least two adapter directories, got ", c.inputs.size());
  Check(c.density > 0 && c.density <= 1, "merge: density ", c.density, " is outside (0, 1]");
  Check(c.method == "linear" || c.method == "ties", "merge: unknown method '", c.method, "' (linear, ties)");
  const std::string& first = c.inputs[0].adapters;
  std::vector<std::string> dirs;
  for (const auto& input : c.inputs) dirs.push_back(input.adapters);
  if (!c.base.empty()) dirs.push_back(c.base);
  json specs;
  std::string backbone, backbone_of;
  for (const std::string& dir : dirs) {
    Check(stdfs::is_regular_file(dir + "/adapter_config.json"), "merge: '", dir,
          "' is not an adapters directory (no adapter_config.json)");
    const json s = fs::ReadJson(dir + "/adapter_config.json");
    if (specs.is_null()) specs = s;
    Check(s == specs, "merge: adapter_config.json of '", dir, "' (", s.dump(), ") differs from '", first, "' (",
          specs.dump(), "): other projectors or speech units");
    const std::string b = RunBackbone(dir);
    if (!b.empty() && !backbone.empty())
      Check(b == backbone, "merge: '", dir, "' was trained on the backbone '", b, "', '", backbone_of, "' on '", backbone, "'");
    if (!b.empty() && backbone.empty()) {
      backbone = b;
      backbone_of = dir;
    }
  }
  MergeResult result;
  result.output = c.output;
  fs::MakeDirs(c.output);

  // Adapter tensors (projectors, unit rows, fine-tuned encoders).
  if (stdfs::exists(first + "/adapters.safetensors")) {
    torch::ScalarType dtype = torch::kFloat;
    std::vector<std::map<std::string, torch::Tensor>> all;
    for (const auto& input : c.inputs) {
      Check(stdfs::exists(input.adapters + "/adapters.safetensors"), "merge: '", input.adapters,
            "' has no adapters.safetensors but '", first, "' has");
      all.push_back(ReadAll(input.adapters + "/adapters.safetensors", &dtype));
      CheckSameTensors(all[0], all.back(), first, input.adapters, true);
    }
    std::map<std::string, torch::Tensor> base;
    if (!c.base.empty()) {
      base = ReadAll(c.base + "/adapters.safetensors");
      CheckSameTensors(all[0], base, first, c.base, true);
    }
    std::vector<std::pair<std::string, torch::Tensor>> merged;
    for (const auto& [name, t0] : all[0]) {
      torch::Tensor out;
      if (c.method == "linear") {
        out = torch::zeros_like(t0);
        for (size_t i = 0; i < all.size(); ++i) out += c.inputs[i].weight * all[i].at(name);
      } else {
        const torch::Tensor origin = base.empty() ? torch::zeros_like(t0) : base.at(name);
        std::vector<torch::Tensor> taus;
        for (size_t i = 0; i < all.size(); ++i) taus.push_back(c.inputs[i].weight * (all[i].at(name) - origin));
        out = origin + Ties(taus, c.density);
      }
      merged.emplace_back(name, out.to(dtype));
      ++result.tensors;
    }
    safetensors::Save(c.output + "/adapters.safetensors", merged, {{"format", "pt"}});
  }

  // LoRA.
  if (specs.value("lora", false)) {
    std::vector<LoraFiles> loras;
    torch::ScalarType dtype = torch::kFloat;
    for (const auto& input : c.inputs) {
      LoraFiles l;
      const std::string dir = input.adapters + "/lora";
      Check(stdfs::is_regular_file(dir + "/adapter_config.json"), "merge: '", input.adapters, "' has no lora/");
      l.config = fs::ReadJson(dir + "/adapter_config.json");
      l.rank = l.config.at("r").get<int64_t>();
      l.scale = l.config.at("lora_alpha").get<double>() / static_cast<double>(l.rank);
      l.tensors = ReadAll(dir + "/adapter_model.safetensors", &dtype);
      if (!loras.empty()) {
        Check(l.config.at("target_modules") == loras[0].config.at("target_modules"), "merge: the LoRA of '",
              input.adapters, "' targets ", l.config.at("target_modules").dump(), ", '", first, "''s ",
              loras[0].config.at("target_modules").dump());
        CheckSameTensors(loras[0].tensors, l.tensors, first, input.adapters, false);
      }
      loras.push_back(std::move(l));
    }
    int64_t rank = 0;
    for (const LoraFiles& l : loras) rank = c.method == "linear" ? rank + l.rank : std::max(rank, l.rank);
    std::vector<std::pair<std::string, torch::Tensor>> merged;
    for (const auto& [name, a0] : loras[0].tensors) {
      const size_t at = name.find("lora_A");
      if (at == std::string::npos) continue;
      const std::string b_name = std::string(name).replace(at, 6, "lora_B");
      Check(loras[0].tensors.count(b_name), "merge: '", first, "/lora' has '", name, "' without '", b_name, "'");
      torch::Tensor a, b;
      if (c.method == "linear") {
        std::vector<torch::Tensor> as, bs;
        for (size_t i = 0; i < loras.size(); ++i) {
          as.push_back(loras[i].tensors.at(name));
          bs.push_back(c.inputs[i].weight * loras[i].scale * loras[i].tensors.at(b_name));
        }
        a = torch::cat(as, 0);
        b = torch::cat(bs, 1);
      } else {
        std::vector<torch::Tensor> taus;
        for (size_t i = 0; i < loras.size(); ++i)
          taus.push_back(c.inputs[i].weight * loras[i].scale *
                         torch::matmul(loras[i].tensors.at(b_name), loras[i].tensors.at(name)));
        const auto [u, s, vh] = torch::linalg_svd(Ties(taus, c.density), /*full_matrices=*/false);
        const int64_t r = std::min<int64_t>(rank, s.size(0));
        b = torch::zeros({u.size(0), rank});
        a = torch::zeros({rank, vh.size(1)});
        b.slice(1, 0, r).copy_(u.slice(1, 0, r) * s.slice(0, 0, r).unsqueeze(0));
        a.slice(0, 0, r).copy_(vh.slice(0, 0, r));
      }
      merged.emplace_back(name, a.to(dtype).contiguous());
      merged.emplace_back(b_name, b.to(dtype).contiguous());
      ++result.tensors;
    }
    json config = loras[0].config;
    config["r"] = rank;
    config["lora_alpha"] = static_cast<double>(rank);  // scaling 1: the weights and scales are in B
    fs::MakeDirs(c.output + "/lora");
    safetensors::Save(c.output + "/lora/adapter_model.safetensors", merged, {{"format", "pt"}});
    fs::AtomicWriteString(c.output + "/lora/adapter_config.json", config.dump(2) + "\n");
    result.lora_rank = rank;
    result.lora_alpha = static_cast<double>(rank);
  }

  json tasks = json::object();
  for (const auto& input : c.inputs)
    if (stdfs::is_regular_file(input.adapters + "/tasks.json")) {
      const json t = fs::ReadJson(input.adapters + "/tasks.json");
      if (t.contains("tasks") && t["tasks"].is_object())
        for (auto it = t["tasks"].begin(); it != t["tasks"].end(); ++it)
          if (!tasks.contains(it.key())) tasks[it.key()] = it.value();
    }
  fs::AtomicWriteString(c.output + "/tasks.json", json{{"tasks", tasks}}.dump(2) + "\n");
  json inputs = json::array();
  for (const auto& input : c.inputs) inputs.push_back({{"adapters", input.adapters}, {"weight", input.weight}});
  json record = {{"method", c.method}, {"inputs", inputs}, {"base", c.base}, {"density", c.density}};
  if (result.lora_rank > 0)
    record["load_with"] = {Str("model.lora.rank=", result.lora_rank), Str("model.lora.alpha=", result.lora_alpha)};
  fs::AtomicWriteString(c.output + "/merge.json", record.dump(2) + "\n");
  // Written last: a directory with adapter_config.json is a complete adapter.
  fs::AtomicWriteString(c.output + "/adapter_config.json", specs.dump(2) + "\n");
  return result;
}

}  // namespace slm::adapters
