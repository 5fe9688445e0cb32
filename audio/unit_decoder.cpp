#include "audio/unit_decoder.h"

#include <filesystem>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"

namespace slm::audio {
namespace {

struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t dim, int64_t kernel)
      : norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})))),
        conv(register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(dim, dim, kernel).padding(kernel / 2)))) {}
  torch::Tensor forward(const torch::Tensor& x) {  // [B, T, d]
    return x + torch::gelu(conv(norm(x).transpose(1, 2)).transpose(1, 2));
  }
  torch::nn::LayerNorm norm;
  torch::nn::Conv1d conv;
};
TORCH_MODULE(Block);

}  // namespace

void UnitDecoderConfig::Validate() const {
  Check(k >= 1, "unit decoder: k must be >= 1, got ", k);
  Check(dim >= 1 && layers >= 0, "unit decoder: dim must be >= 1 and layers >= 0");
  Check(kernel >= 1 && kernel % 2 == 1, "unit decoder: kernel must be odd and >= 1, got ", kernel);
  Check(n_mels >= 1 && upsample >= 1, "unit decoder: n_mels and upsample must be >= 1");
}

UnitDecoderImpl::UnitDecoderImpl(const UnitDecoderConfig& config) : config_(config) {
  config_.Validate();
  embed_ = register_module("embed", torch::nn::Embedding(config_.k, config_.dim));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.layers; ++i) blocks_->push_back(Block(config_.dim, config_.kernel));
  out_ = register_module("out", torch::nn::Linear(config_.dim, config_.n_mels));
}

torch::Tensor UnitDecoderImpl::forward(const torch::Tensor& units) {
  Check(units.dim() == 2, "unit decoder: units must be [B, T], got ", units.sizes());
  torch::Tensor x = embed_(units);  // [B, T, d]
  if (config_.upsample > 1) x = x.repeat_interleave(config_.upsample, 1);
  for (const auto& block : *blocks_) x = block->as<BlockImpl>()->forward(x);
  return out_(x);
}

torch::Tensor UnitDecoderImpl::Decode(const std::vector<int64_t>& units) {
  Check(!units.empty(), "unit decoder: no units");
  for (size_t i = 0; i < units.size(); ++i)
    Check(units[i] >= 0 && units[i] < config_.k, "unit decoder: unit ", i, " is ", units[i], ", outside 0..",
          config_.k - 1, " of this decoder's tokenizer");
  torch::NoGradGuard no_grad;
  const torch::Device device = embed_->weight.device();
  return forward(torch::tensor(units, torch::kLong).unsqueeze(0).to(device)).squeeze(0).to(torch::kCPU, torch::kFloat);
}

void UnitDecoderImpl::Save(const std::string& dir) const {
  fs::MakeDirs(dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& named : named_parameters()) tensors.emplace_back(named.key(), named.value().detach().to(torch::kCPU));
  safetensors::Save(dir + "/decoder.safetensors", tensors, {{"format", "pt"}});
  const nlohmann::json j = {{"k", config_.k},           {"dim", config_.dim},         {"layers", config_.layers},
                            {"kernel", config_.kernel}, {"n_mels", config_.n_mels}, {"upsample", config_.upsample},
                            {"tokenizer_hash", config_.tokenizer_hash}};
  fs::AtomicWriteString(dir + "/decoder.json", j.dump(2) + "\n");
}

UnitDecoderConfig UnitDecoderConfig::Read(const std::string& dir, const std::string& expected_hash,
                                          const std::string& what) {
  const std::string json_path = dir + "/decoder.json";
  Check(std::filesystem::is_regular_file(json_path), what, " '", dir,
        "': no decoder.json (`slm audio units train-decoder` writes one)");
  const nlohmann::json j = fs::ReadJson(json_path);
  UnitDecoderConfig c;
  try {
    c.k = j.at("k").get<int64_t>();
    c.dim = j.at("dim").get<int64_t>();
    c.layers = j.at("layers").get<int64_t>();
    c.kernel = j.at("kernel").get<int64_t>();
    c.n_mels = j.at("n_mels").get<int64_t>();
    c.upsample = j.at("upsample").get<int64_t>();
    c.tokenizer_hash = j.at("tokenizer_hash").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(Str(json_path, ": ", e.what()));
  }
  Check(expected_hash.empty() || expected_hash == c.tokenizer_hash, what, " '", dir,
        "' was trained on the units of tokenizer ", c.tokenizer_hash.substr(0, 12), ", not ",
        expected_hash.substr(0, 12));
  return c;
}

std::shared_ptr<UnitDecoderImpl> UnitDecoderImpl::Load(const std::string& dir, const std::string& expected_hash) {
  auto decoder = std::make_shared<UnitDecoderImpl>(UnitDecoderConfig::Read(dir, expected_hash));
  decoder->LoadWeights(dir);
  decoder->eval();
  return decoder;
}

void UnitDecoderImpl::LoadWeights(const std::string& dir) {
  safetensors::Plan plan;
  plan.ExpectParameters(*this);
  safetensors::Checkpoint::File(dir + "/decoder.safetensors").Load(plan);
}

std::vector<int64_t> ExpandRuns(const std::vector<UnitRun>& runs) {
  std::vector<int64_t> ids;
  for (const UnitRun& r : runs) ids.insert(ids.end(), static_cast<size_t>(r.frames), r.unit);
  return ids;
}

}  // namespace slm::audio
