#include "text/model_inspect.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "text/chat_format.h"
#include "text/tokenizer.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

std::string Size(double bytes) {
  char text[32];
  if (bytes >= 1e9)
    std::snprintf(text, sizeof(text), "%.2f GB", bytes / 1e9);
  else if (bytes >= 1e6)
    std::snprintf(text, sizeof(text), "%.1f MB", bytes / 1e6);
  else
    std::snprintf(text, sizeof(text), "%.1f KB", bytes / 1e3);
  return text;
}

std::string Count(int64_t n) {
  char text[32];
  if (n >= 1000000000)
    std::snprintf(text, sizeof(text), "%.2f B", n / 1e9);
  else
    std::snprintf(text, sizeof(text), "%.1f M", n / 1e6);
  return text;
}

// Bytes one position of the KV cache takes in bf16 over all layers (keys and values).
int64_t KvBytesPerToken(const LlamaConfig& c) { return 2 * c.num_hidden_layers * c.num_key_value_heads * c.HeadDim() * 2; }

void ReadCheckpoint(ModelInspection& out) {
  const safetensors::Checkpoint checkpoint(out.dir);
  std::map<std::string, ShardSummary> shards;
  const bool tied = out.config && out.config->tie_word_embeddings;
  for (const auto& [name, reader] : checkpoint.Sources()) {
    const safetensors::TensorInfo& info = reader->Info(name);
    ShardSummary& shard = shards[stdfs::path(reader->Path()).filename().string()];
    shard.file = stdfs::path(reader->Path()).filename().string();
    shard.tensors += 1;
    shard.bytes += static_cast<int64_t>(info.end - info.begin);
    out.weight_bytes += static_cast<int64_t>(info.end - info.begin);
    out.dtypes[info.dtype] += 1;
    // Counted as transformers counts parameters: a tied head is the embedding, rotary buffers are
    // not parameters.
    if ((tied && name == "lm_head.weight") || EndsWith(name, "rotary_emb.inv_freq")) continue;
    int64_t numel = 1;
    for (int64_t d : info.shape) numel *= d;
    out.parameters += numel;
  }
  for (auto& [file, shard] : shards) out.shards.push_back(shard);
}

}  // namespace

void CheckTokenizerFitsModel(const Tokenizer& tokenizer, const LlamaConfig& config, const std::string& where) {
  Check(tokenizer.ModelVocabSize() <= config.vocab_size, where, ": the tokenizer '", tokenizer.Source(), "' has ",
        tokenizer.ModelVocabSize(), " tokens but \"vocab_size\" in config.json gives the model only ", config.vocab_size,
        " embedding rows (a tokenizer of another model?)");
  for (const AddedToken& token : tokenizer.Backend().FileAddedTokens())
    Check(token.id < config.vocab_size, where, ": the tokenizer '", tokenizer.Source(), "' has the added token '",
          token.content, "' at id ", token.id, ", beyond the ", config.vocab_size,
          " embedding rows of \"vocab_size\" in config.json");
}

ModelInspection InspectModel(const std::string& dir) {
  Check(stdfs::is_directory(dir), "model inspect: '", dir, "' is not a directory");
  ModelInspection out;
  out.dir = dir;
  auto attempt = [&](auto&& step) {
    try {
      step();
      return true;
    } catch (const Error& e) {
      out.problems.push_back(e.what());
      return false;
    }
  };

  const std::string config_path = dir + "/config.json";
  bool config_read = false;
  if (!stdfs::is_regular_file(config_path)) {
    out.problems.push_back(Str("'", dir, "' has no config.json (not a Hugging Face model directory)"));
  } else {
    attempt([&] {
      const json raw = fs::ReadJson(config_path);
      if (raw.is_object()) {
        if (raw.contains("model_type") && raw["model_type"].is_string()) out.model_type = raw["model_type"];
        if (raw.contains("architectures") && raw["architectures"].is_array())
          for (const json& a : raw["architectures"])
            if (a.is_string()) out.architectures.push_back(a);
      }
      config_read = true;
      out.config = LlamaConfig::FromJson(raw, config_path);
    });
  }
  const bool checkpoint_read = attempt([&] { ReadCheckpoint(out); });
  if (out.config && checkpoint_read) {
    attempt([&] {
      // On the meta device: shapes without memory, whatever the model's size.
      LlamaModel meta(*out.config, torch::TensorOptions().device(torch::kMeta), /*init_weights=*/false);
      meta->CheckWeights(dir);
    });
  }

  std::optional<Tokenizer> tokenizer;
  attempt([&] {
    TokenizerOptions options;
    options.markers.clear();  // the directory's tokenizer as it is
    tokenizer.emplace(Tokenizer::Load(dir, options));
  });
  if (tokenizer) {
    out.tokenizer_format = tokenizer->Format();
    out.tokenizer_vocab = tokenizer->VocabSize();
    out.tokenizer_model_vocab = tokenizer->ModelVocabSize();
    const std::vector<std::pair<std::string, int64_t>> ids = {
        {"bos", tokenizer->BosId()}, {"eos", tokenizer->EosId()}, {"pad", tokenizer->PadId()}, {"unk", tokenizer->UnkId()}};
    for (const auto& [name, id] : ids)
      out.special_tokens[name] = id >= 0 ? json{{"id", id}, {"token", tokenizer->IdToPiece(id)}} : json(nullptr);
    if (out.config) attempt([&] { CheckTokenizerFitsModel(*tokenizer, *out.config, dir); });
  }

  // The chat format does not decide support: model.chat_format can always set one.
  try {
    const ChatFormat format = ChatFormat::FromModelDir(dir, "model.chat_format");
    out.chat_format = format.name;
    out.stop_tokens = format.stop;
    if (tokenizer) format.StopTokenIds(*tokenizer);
  } catch (const Error& e) {
    out.notes.push_back(e.what());
  }
  out.supported = out.problems.empty() && config_read && out.config.has_value() && checkpoint_read && tokenizer;
  return out;
}

json ModelInspection::ToJson() const {
  json out = {{"dir", dir},
              {"model_type", model_type},
              {"architectures", architectures},
              {"supported", supported},
              {"problems", problems},
              {"notes", notes},
              {"parameters", parameters},
              {"dtypes", dtypes},
              {"weight_bytes", weight_bytes},
              {"tokenizer", {{"format", tokenizer_format}, {"vocab_size", tokenizer_vocab},
                             {"model_vocab_size", tokenizer_model_vocab}, {"special_tokens", special_tokens}}},
              {"chat_format", chat_format.empty() ? json(nullptr) : json(chat_format)},
              {"stop_tokens", stop_tokens}};
  json shard_list = json::array();
  for (const ShardSummary& s : shards) shard_list.push_back({{"file", s.file}, {"tensors", s.tensors}, {"bytes", s.bytes}});
  out["shards"] = shard_list;
  if (config) {
    const LlamaConfig& c = *config;
    std::vector<int64_t> sliding;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      if (c.LayerWindow(l) > 0) sliding.push_back(l);
    out["architecture"] = {{"family", c.model_type},
                           {"class", c.Family().architecture},
                           {"layers", c.num_hidden_layers},
                           {"hidden_size", c.hidden_size},
                           {"intermediate_size", c.intermediate_size},
                           {"attention_heads", c.num_attention_heads},
                           {"kv_heads", c.num_key_value_heads},
                           {"head_dim", c.HeadDim()},
                           {"vocab_size", c.vocab_size},
                           {"context", c.max_position_embeddings},
                           {"activation", c.hidden_act},
                           {"rope_theta", c.rope_theta},
                           {"rope_scaling", c.rope_scaling.rope_type},
                           {"tied_embeddings", c.tie_word_embeddings},
                           {"qkv_bias", c.QkvBias()},
                           {"qk_norm", c.Family().qk_norm},
                           {"sliding_window", c.sliding_window},
                           {"sliding_layers", sliding},
                           {"attn_logit_softcapping", c.attn_logit_softcapping},
                           {"final_logit_softcapping", c.final_logit_softcapping},
                           {"declared_dtype", c.torch_dtype}};
    out["memory"] = {{"weights_bf16_bytes", parameters * 2}, {"kv_cache_bf16_bytes_per_token", KvBytesPerToken(c)}};
  }
  return out;
}

std::vector<std::string> ModelInspection::Lines() const {
  std::vector<std::string> lines;
  lines.push_back("model: " + dir);
  if (config) {
    const LlamaConfig& c = *config;
    std::string arch = Str(c.model_type, " (", c.Family().architecture, "): ", c.num_hidden_layers, " layers, hidden ",
                           c.hidden_size, ", ", c.num_attention_heads, " heads / ", c.num_key_value_heads, " kv heads x ",
                           c.HeadDim(), ", MLP ", c.intermediate_size, " ", c.hidden_act, ", vocab ", c.vocab_size,
                           ", context ", c.max_position_embeddings, ", rope theta ", c.rope_theta);
    if (c.rope_scaling.rope_type != "default") arch += Str(" (", c.rope_scaling.rope_type, " x", c.rope_scaling.factor, ")");
    if (c.tie_word_embeddings) arch += ", tied embeddings";
    if (c.QkvBias()) arch += ", q/k/v bias";
    if (c.Family().qk_norm) arch += ", q/k norm";
    if (c.final_logit_softcapping > 0 || c.attn_logit_softcapping > 0)
      arch += Str(", soft-capping ", c.attn_logit_softcapping, " / ", c.final_logit_softcapping);
    lines.push_back("architecture: " + arch);
    std::vector<std::string> sliding;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      if (c.LayerWindow(l) > 0) sliding.push_back(std::to_string(l));
    lines.push_back(sliding.empty() ? "sliding window: none"
                                    : Str("sliding window: ", c.sliding_window, " on ", sliding.size(), " of ",
                                          c.num_hidden_layers, " layers (", Join(sliding, ","), ")"));
  } else {
    lines.push_back(Str("architecture: model_type '", model_type, "', architectures [", Join(architectures), "]"));
  }
  if (!shards.empty()) {
    std::vector<std::string> kinds, files;
    for (const auto& [dtype, n] : dtypes) kinds.push_back(Str(dtype, " x ", n));
    for (const ShardSummary& s : shards) files.push_back(s.file);
    lines.push_back(Str("parameters: ", parameters, " (", Count(parameters), ")"));
    lines.push_back(Str("weights: ", Join(kinds), " tensors, ", Size(static_cast<double>(weight_bytes)), " in ",
                        shards.size(), shards.size() == 1 ? " file: " : " files: ", Join(files)));
  }
  if (!tokenizer_format.empty()) {
    lines.push_back(Str("tokenizer: ", tokenizer_format, ", ", tokenizer_vocab, " ids (", tokenizer_model_vocab,
                        " in the model vocabulary + ", tokenizer_vocab - tokenizer_model_vocab, " added)"));
    std::vector<std::string> specials;
    for (const char* name : {"bos", "eos", "pad", "unk"}) {
      const json& t = special_tokens.at(name);
      specials.push_back(t.is_null() ? Str(name, " none")
                                     : Str(name, " ", t["token"].get<std::string>(), " (", t["id"].get<int64_t>(), ")"));
    }
    lines.push_back("special tokens: " + Join(specials));
  }
  lines.push_back(chat_format.empty() ? "chat format: not recognised (set model.chat_format)"
                  : stop_tokens.empty() ? "chat format: " + chat_format
                                        : Str("chat format: ", chat_format, " (stop ", Join(stop_tokens), ")"));
  if (config)
    lines.push_back(Str("memory: weights ", Size(2.0 * parameters), " in bf16 (", Size(4.0 * parameters),
                        " in float32), KV cache ", Size(static_cast<double>(KvBytesPerToken(*config))),
                        " per token in bf16"));
  lines.push_back(supported ? "supported: yes" : "supported: no");
  for (const std::string& p : problems) lines.push_back("  problem: " + p);
  for (const std::string& n : notes) lines.push_back("note: " + n);
  return lines;
}

}  // namespace slm::text
