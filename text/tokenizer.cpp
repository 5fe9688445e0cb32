#include "text/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "core/strings.h"
#include "text/hf_tokenizer.h"
#include "text/sentencepiece_model.h"
#include "text/unicode.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

constexpr const char* kModelFile = "tokenizer.model";
constexpr const char* kJsonFile = "tokenizer.json";
constexpr const char* kAddedTokensFile = "added_tokens.json";
constexpr const char* kTokenizerConfigFile = "tokenizer_config.json";

std::string JoinPath(const std::string& dir, const std::string& name) {
  return (stdfs::path(dir) / name).string();
}

// The parsed file, or nullopt when it does not exist.
std::optional<json> ReadJsonFile(const std::string& path) {
  std::error_code ec;
  if (!stdfs::exists(path, ec)) return std::nullopt;
  try {
    return json::parse(fs::ReadFile(path));
  } catch (const json::exception& e) {
    throw Error(Str("cannot parse '", path, "' as JSON: ", e.what()));
  }
}

// A token-id value of a config file: an integer, or null (= not set).
std::optional<int64_t> IdValue(const json& value, const std::string& where) {
  if (value.is_null()) return std::nullopt;
  Check(value.is_number_integer(), where, " must be an integer token id or null, got ",
        value.dump());
  return value.get<int64_t>();
}

// tokenizer_config.json writes special tokens as "<s>" or as {"content": "<s>", ...}.
std::optional<std::string> TokenString(const json& value, const std::string& where) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  throw Error(
      Str(where, " must be a token string, {\"content\": ...} or null, got ", value.dump()));
}

// A tiktoken BPE file: lines of "<base64 token> <rank>" (Llama 3's original/tokenizer.model).
// sentencepiece models are binary protobufs, whose first byte is a field tag (0x0A).
bool IsTiktokenFile(const std::string& bytes) {
  const size_t end = std::min(bytes.find('\n'), bytes.size());
  if (end == 0 || end == bytes.size()) return false;
  const std::string_view line = std::string_view(bytes).substr(0, end);
  const size_t space = line.find(' ');
  if (space == 0 || space == std::string_view::npos || space + 1 == line.size()) return false;
  for (size_t i = 0; i < space; ++i) {
    const char c = line[i];
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/' && c != '=') {
      return false;
    }
  }
  for (size_t i = space + 1; i < line.size(); ++i) {
    const bool carriage_return = line[i] == '\r' && i + 1 == line.size();
    if (!std::isdigit(static_cast<unsigned char>(line[i])) && !carriage_return) return false;
  }
  return true;
}

[[noreturn]] void RefuseTiktoken(const std::string& path) {
  throw Error(
      Str("'", path, "' is a tiktoken BPE file (lines of 'base64-token rank', like ",
          "Llama 3's original/tokenizer.model), not a sentencepiece model: slm does not ",
          "read the tiktoken format, which carries neither the split regex nor the special ",
          "tokens. Load the Hugging Face tokenizer.json of the same checkpoint instead"));
}

std::unique_ptr<TokenizerModel> LoadSentencePieceFile(const std::string& path) {
  std::error_code ec;
  Check(stdfs::is_regular_file(path, ec), "tokenizer model '", path, "' is not a regular file");
  std::string bytes = fs::ReadFile(path);
  if (IsTiktokenFile(bytes)) RefuseTiktoken(path);
  return std::make_unique<SentencePieceModel>(std::move(bytes), path);
}

}  // namespace

std::vector<std::string> DefaultMarkers() { return {kSpeechMarker, kImageMarker, kTextMarker}; }

std::string SpeechUnitToken(int64_t unit) { return Str("<u", unit, ">"); }

Tokenizer::Tokenizer(std::unique_ptr<TokenizerModel> model) : model_(std::move(model)) {
  model_vocab_size_ = model_->VocabSize();
  vocab_size_ = model_vocab_size_;
  const SpecialTokenIds ids = model_->DefaultSpecialIds();
  bos_id_ = ids.bos;
  if (ids.eos >= 0) eos_ids_ = {ids.eos};
  pad_id_ = ids.pad;
  unk_id_ = ids.unk;
}

Tokenizer Tokenizer::Load(const std::string& path, const TokenizerOptions& options) {
  std::error_code ec;
  if (!stdfs::is_directory(path, ec)) {
    Check(stdfs::exists(path, ec), "tokenizer '", path, "' not found: give a model directory ",
          "containing tokenizer.model or tokenizer.json, or the path of a sentencepiece .model ",
          "file or a tokenizer.json");
    std::string dir = stdfs::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    const bool json_file = EndsWith(path, ".json");
    Check(options.format != TokenizerFormat::kSentencePiece || !json_file, "tokenizer '", path,
          "' is a JSON file, but a sentencepiece model was asked for (TokenizerOptions.format)");
    Check(options.format != TokenizerFormat::kTokenizerJson || json_file, "tokenizer '", path,
          "' is not a .json file, but a tokenizer.json was asked for (TokenizerOptions.format)");
    if (json_file) return Build(LoadHfTokenizerModel(path), dir, options);
    return Build(LoadSentencePieceFile(path), dir, options);
  }
  const std::string model_path = JoinPath(path, kModelFile);
  const std::string json_path = JoinPath(path, kJsonFile);
  const bool has_model = stdfs::exists(model_path, ec);
  const bool has_json = stdfs::exists(json_path, ec);
  switch (options.format) {
    case TokenizerFormat::kSentencePiece:
      Check(has_model, "missing '", model_path, "' (TokenizerOptions.format asks for the ",
            "sentencepiece tokenizer.model)");
      return Build(LoadSentencePieceFile(model_path), path, options);
    case TokenizerFormat::kTokenizerJson:
      Check(has_json, "missing '", json_path, "' (TokenizerOptions.format asks for the Hugging ",
            "Face tokenizer.json)");
      return Build(LoadHfTokenizerModel(json_path), path, options);
    case TokenizerFormat::kAuto:
      break;
  }
  if (has_model) {
    // A tiktoken tokenizer.model next to a tokenizer.json: the JSON has everything it lacks.
    if (has_json && stdfs::is_regular_file(model_path, ec) &&
        IsTiktokenFile(fs::ReadFile(model_path))) {
      return Build(LoadHfTokenizerModel(json_path), path, options);
    }
    return Build(LoadSentencePieceFile(model_path), path, options);
  }
  if (has_json) return Build(LoadHfTokenizerModel(json_path), path, options);
  throw Error(Str("missing '", model_path, "': a Llama-family checkpoint directory needs its ",
                  "sentencepiece tokenizer.model, or a Hugging Face tokenizer.json (or train one ",
                  "with `slm text train-tokenizer`)"));
}

Tokenizer Tokenizer::Build(std::unique_ptr<TokenizerModel> model, const std::string& side_dir,
                           const TokenizerOptions& options) {
  Tokenizer tokenizer(std::move(model));
  tokenizer.ReadAddedTokenFiles(side_dir);
  std::set<std::string> seen;
  for (const std::string& marker : options.markers) {
    Check(!marker.empty(), "tokenizer '", tokenizer.Source(), "': empty marker in the options");
    Check(seen.insert(marker).second, "tokenizer '", tokenizer.Source(), "': marker '", marker,
          "' is listed twice in the options");
    tokenizer.EnsureToken(marker);
  }
  Check(options.num_speech_units >= 0, "tokenizer '", tokenizer.Source(),
        "': num_speech_units must be >= 0, got ", options.num_speech_units);
  for (int64_t unit = 0; unit < options.num_speech_units; ++unit) {
    tokenizer.EnsureToken(SpeechUnitToken(unit));
  }
  tokenizer.IndexAddedTokens();
  for (const int64_t id :
       {tokenizer.bos_id_, tokenizer.EosId(), tokenizer.pad_id_, tokenizer.unk_id_}) {
    Check(id < tokenizer.vocab_size_, "tokenizer '", tokenizer.Source(),
          "' names the special token id ", id, ", outside its ids [0, ", tokenizer.vocab_size_,
          ")");
  }
  if (!side_dir.empty()) tokenizer.ReadSpecialIds(side_dir);
  return tokenizer;
}

void Tokenizer::AddToken(const AddedToken& token, const std::string& origin) {
  Check(!token.content.empty(), origin, ": an added token has empty content");
  Check(token.id >= 0, origin, ": added token '", token.content, "' has a negative id ", token.id);
  Check(added_ids_.count(token.content) == 0, origin, ": added token '", token.content,
        "' is defined twice");
  if (token.id < model_vocab_size_) {
    const std::string piece = model_->IdToPiece(token.id);
    Check(piece == token.content, origin, ": added token '", token.content, "' has id ", token.id,
          ", but that id is the piece '", piece, "' of ", model_->Describe(),
          " (was the file written for a different model file?)");
  } else {
    Check(token.id == vocab_size_, origin, ": added token '", token.content, "' has id ", token.id,
          ", but ids after the model's vocabulary must be consecutive: the next ", "free id is ",
          vocab_size_, " (", model_->Describe(), " has ", model_vocab_size_, " pieces)");
    ++vocab_size_;
  }
  added_ids_[token.content] = token.id;
  added_.push_back(token);
}

void Tokenizer::EnsureToken(const std::string& content) {
  if (added_ids_.count(content) != 0) return;
  const std::optional<int64_t> model_id = model_->FindPiece(content);
  AddToken({content, model_id ? *model_id : vocab_size_, true}, Str("tokenizer '", Source(), "'"));
}

void Tokenizer::ReadAddedTokenFiles(const std::string& dir) {
  // id -> token and the file each came from; the model file and both side files may list the
  // same tokens.
  std::map<int64_t, std::pair<AddedToken, std::string>> by_id;
  std::map<std::string, std::pair<int64_t, std::string>> by_content;
  // carries_flags: the file states `special` and the matching flags (tokenizer.json,
  // tokenizer_config.json), so a later one overrides an earlier one; added_tokens.json has ids
  // only.
  auto merge = [&](const AddedToken& token, const std::string& file, bool carries_flags) {
    auto id_it = by_id.find(token.id);
    if (id_it != by_id.end()) {
      Check(id_it->second.first.content == token.content, "added token id ", token.id, " is '",
            id_it->second.first.content, "' in '", id_it->second.second, "' but '", token.content,
            "' in '", file, "'");
    }
    auto content_it = by_content.find(token.content);
    if (content_it != by_content.end()) {
      Check(content_it->second.first == token.id, "added token '", token.content, "' has id ",
            content_it->second.first, " in '", content_it->second.second, "' but ", token.id,
            " in '", file, "'");
    }
    by_content[token.content] = {token.id, file};
    if (id_it == by_id.end() || carries_flags) by_id[token.id] = {token, file};
  };

  for (const AddedToken& token : model_->FileAddedTokens()) merge(token, Source(), true);
  if (!dir.empty()) {
    const std::string added_path = JoinPath(dir, kAddedTokensFile);
    if (std::optional<json> added = ReadJsonFile(added_path)) {
      Check(added->is_object(), "'", added_path,
            "' must be a JSON object mapping token strings to ids, like {\"<u0>\": 32000}");
      for (const auto& [content, id] : added->items()) {
        Check(id.is_number_integer(), "'", added_path, "': the id of '", content,
              "' must be an integer, got ", id.dump());
        merge({content, id.get<int64_t>(), true}, added_path, false);
      }
    }
    const std::string config_path = JoinPath(dir, kTokenizerConfigFile);
    if (std::optional<json> config = ReadJsonFile(config_path)) {
      Check(config->is_object(), "'", config_path, "' must be a JSON object");
      if (config->contains("added_tokens_decoder") &&
          !(*config)["added_tokens_decoder"].is_null()) {
        const json& decoder = (*config)["added_tokens_decoder"];
        Check(decoder.is_object(), "'", config_path,
              "': added_tokens_decoder must be an object {\"<id>\": {\"content\": ...}}");
        for (const auto& item : decoder.items()) {
          // Named references, not a structured binding: the lambda below captures them, which
          // C++17 forbids for structured bindings (clang rejects it, g++ accepts it).
          const std::string& key = item.key();
          const json& entry = item.value();
          int64_t id = -1;
          size_t used = 0;
          try {
            id = std::stoll(key, &used);
          } catch (const std::exception&) {
            used = 0;  // not a number, or out of int64 range
          }
          Check(!key.empty() && used == key.size(), "'", config_path,
                "': added_tokens_decoder key '", key, "' is not an integer id");
          Check(entry.is_object() && entry.contains("content") && entry["content"].is_string(), "'",
                config_path, "': added_tokens_decoder[\"", key,
                "\"] must be an object with a string \"content\"");
          AddedToken token{entry["content"].get<std::string>(), id, true};
          auto flag = [&](const char* name, bool* value) {
            if (!entry.contains(name)) return;
            Check(entry[name].is_boolean(), "'", config_path, "': added_tokens_decoder[\"", key,
                  "\"].", name, " must be true or false");
            *value = entry[name].get<bool>();
          };
          flag("special", &token.special);
          flag("single_word", &token.single_word);
          flag("lstrip", &token.lstrip);
          flag("rstrip", &token.rstrip);
          flag("normalized", &token.normalized);
          merge(token, config_path, true);
        }
      }
    }
  }
  // In id order, so that ids after the vocabulary are checked for gaps.
  for (const auto& [id, token_and_file] : by_id) {
    AddToken(token_and_file.first, Str("'", token_and_file.second, "'"));
  }
}

void Tokenizer::IndexAddedTokens() {
  std::sort(added_.begin(), added_.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  added_index_.clear();
  std::vector<AddedTokenMatcher::Entry> raw;
  std::vector<AddedTokenMatcher::Entry> normalized;
  const bool hf_rules = model_->HfAddedTokenRules();
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& token = added_[i];
    added_index_[token.id] = i;
    AddedTokenMatcher::Entry entry{token.content, token.id, token.single_word, token.lstrip,
                                   token.rstrip};
    if (hf_rules && token.normalized) {
      // tokenizers matches a normalized token by its normalized form.
      if (model_->HasNormalizer()) entry.pattern = model_->Normalize(token.content);
      if (!entry.pattern.empty()) normalized.push_back(std::move(entry));
    } else {
      raw.push_back(std::move(entry));
    }
  }
  raw_matcher_.Build(std::move(raw));
  normalized_matcher_.Build(std::move(normalized));
  num_speech_units_ = 0;
  while (added_ids_.count(SpeechUnitToken(num_speech_units_)) != 0) ++num_speech_units_;
}

int64_t Tokenizer::ResolveTokenString(const std::string& content, const std::string& where) const {
  auto it = added_ids_.find(content);
  if (it != added_ids_.end()) return it->second;
  const std::optional<int64_t> id = model_->FindPiece(content);
  Check(id.has_value(), where, ": token '", content, "' is neither a piece of ", model_->Describe(),
        " nor an added token");
  return *id;
}

void Tokenizer::ReadSpecialIds(const std::string& dir) {
  auto check_range = [&](int64_t id, const std::string& where) {
    Check(id >= 0 && id < vocab_size_, where, " = ", id, " is out of range: the tokenizer '",
          Source(), "' has ids [0, ", vocab_size_, ") (", model_vocab_size_, " ", Format(),
          " pieces + ", vocab_size_ - model_vocab_size_,
          " added tokens); is the config for a different tokenizer?");
    return id;
  };
  // config.json, then generation_config.json: HF ids, eos may be a list.
  for (const char* name : {"config.json", "generation_config.json"}) {
    const std::string path = JoinPath(dir, name);
    std::optional<json> config = ReadJsonFile(path);
    if (!config) continue;
    Check(config->is_object(), "'", path, "' must be a JSON object");
    auto where = [&](const std::string& key) { return Str("'", path, "': ", key); };
    if (config->contains("bos_token_id")) {
      if (auto id = IdValue((*config)["bos_token_id"], where("bos_token_id"))) {
        bos_id_ = check_range(*id, where("bos_token_id"));
      }
    }
    if (config->contains("eos_token_id")) {
      const json& eos = (*config)["eos_token_id"];
      if (eos.is_array()) {
        Check(!eos.empty(), where("eos_token_id"), " is an empty list");
        std::vector<int64_t> ids;
        for (size_t i = 0; i < eos.size(); ++i) {
          const std::string item = Str(where("eos_token_id"), "[", i, "]");
          std::optional<int64_t> id = IdValue(eos[i], item);
          Check(id.has_value(), item, " must be an integer token id, got null");
          ids.push_back(check_range(*id, item));
        }
        eos_ids_ = ids;
      } else if (auto id = IdValue(eos, where("eos_token_id"))) {
        eos_ids_ = {check_range(*id, where("eos_token_id"))};
      }
    }
    if (config->contains("pad_token_id")) {
      if (auto id = IdValue((*config)["pad_token_id"], where("pad_token_id"))) {
        pad_id_ = check_range(*id, where("pad_token_id"));
      }
    }
  }
  // tokenizer_config.json: token strings, the tokenizer's own word on its special tokens.
  const std::string path = JoinPath(dir, kTokenizerConfigFile);
  std::optional<json> config = ReadJsonFile(path);
  if (!config) return;
  auto string_of = [&](const char* key) -> std::optional<int64_t> {
    if (!config->contains(key)) return std::nullopt;
    const std::string where = Str("'", path, "': ", key);
    std::optional<std::string> content = TokenString((*config)[key], where);
    if (!content) return std::nullopt;
    return ResolveTokenString(*content, where);
  };
  if (auto id = string_of("bos_token")) bos_id_ = *id;
  if (auto id = string_of("pad_token")) pad_id_ = *id;
  if (auto id = string_of("unk_token")) unk_id_ = *id;
  if (auto id = string_of("eos_token")) {
    // The primary EOS goes first; ids from the model configs stay as further stop tokens.
    eos_ids_.erase(std::remove(eos_ids_.begin(), eos_ids_.end(), *id), eos_ids_.end());
    eos_ids_.insert(eos_ids_.begin(), *id);
  }
}

void Tokenizer::EncodeText(std::string_view text, std::vector<int64_t>& ids) const {
  std::string repaired;
  if (model_->NeedsValidUtf8() && !unicode::IsValidUtf8(text)) {
    repaired = unicode::ToValidUtf8(text);
    text = repaired;
  }
  const bool normalize = model_->HasNormalizer();
  raw_matcher_.Split(text, [&](size_t offset, size_t length, int64_t id) {
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    const std::string_view segment = text.substr(offset, length);
    if (!normalize && normalized_matcher_.Empty()) {
      model_->Encode(segment, offset == 0, ids);
      return;
    }
    const std::string normalized = normalize ? model_->Normalize(segment) : std::string(segment);
    const std::string_view view = normalized;
    normalized_matcher_.Split(view, [&](size_t sub_offset, size_t sub_length, int64_t sub_id) {
      if (sub_id >= 0) {
        ids.push_back(sub_id);
      } else {
        model_->Encode(view.substr(sub_offset, sub_length), offset == 0 && sub_offset == 0, ids);
      }
    });
  });
}

std::vector<int64_t> Tokenizer::Encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int64_t> ids;
  if (add_bos) {
    Check(bos_id_ >= 0, "tokenizer '", Source(), "' has no BOS token; encode with add_bos=false");
    ids.push_back(bos_id_);
  }
  EncodeText(text, ids);
  if (add_eos) {
    Check(EosId() >= 0, "tokenizer '", Source(), "' has no EOS token; encode with add_eos=false");
    ids.push_back(EosId());
  }
  return ids;
}

std::vector<int64_t> Tokenizer::EncodeWithSpecialTokens(std::string_view text) const {
  std::vector<int64_t> ids;
  EncodeText(text, ids);
  return model_->PostProcess(ids, {bos_id_, EosId(), pad_id_, unk_id_});
}

void Tokenizer::CheckId(int64_t id, const char* what) const {
  Check(id >= 0 && id < vocab_size_, what, ": id ", id, " is out of range for the tokenizer '",
        Source(), "', whose ids are in [0, ", vocab_size_, ")");
}

const AddedToken* Tokenizer::FindAdded(int64_t id) const {
  auto it = added_index_.find(id);
  return it == added_index_.end() ? nullptr : &added_[it->second];
}

bool Tokenizer::IsSpecial(int64_t id) const {
  CheckId(id, "IsSpecial");
  if (const AddedToken* token = FindAdded(id)) return token->special;
  if (id == bos_id_ || id == pad_id_) return true;
  if (std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end()) return true;
  return id < model_vocab_size_ && model_->IsControl(id);
}

std::string Tokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    Check(ids[i] >= 0 && ids[i] < vocab_size_, "cannot decode id ", ids[i], " at position ", i,
          " with the tokenizer '", Source(), "': ids must be in [0, ", vocab_size_,
          ") (was the text encoded with a different tokenizer?)");
  }
  std::vector<DecodeToken> tokens;
  tokens.reserve(ids.size());
  for (const int64_t id : ids) {
    DecodeToken token;
    token.id = id;
    token.added = FindAdded(id);
    token.special = IsSpecial(id);
    token.skip = skip_special_tokens && token.special;
    tokens.push_back(token);
  }
  return model_->Decode(tokens);
}

BatchEncoding Tokenizer::BatchEncode(const std::vector<std::string>& texts,
                                     const BatchEncodeOptions& options) const {
  Check(options.max_length >= 0, "BatchEncode: max_length must be >= 0 (0 = no limit), got ",
        options.max_length);
  std::vector<std::vector<int64_t>> rows;
  rows.reserve(texts.size());
  int64_t longest = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    rows.push_back(Encode(texts[i], options.add_bos, options.add_eos));
    const int64_t length = static_cast<int64_t>(rows.back().size());
    Check(options.max_length == 0 || length <= options.max_length, "BatchEncode: text ", i, " has ",
          length, " tokens, more than max_length=", options.max_length,
          " (nothing is truncated silently: shorten the text or raise max_length)");
    longest = std::max(longest, length);
  }
  const int64_t batch = static_cast<int64_t>(rows.size());
  BatchEncoding encoding;
  encoding.input_ids = torch::full({batch, longest}, PaddingId(), torch::kLong);
  encoding.attention_mask = torch::zeros({batch, longest}, torch::kLong);
  auto ids = encoding.input_ids.accessor<int64_t, 2>();
  auto mask = encoding.attention_mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = static_cast<int64_t>(rows[b].size());
    const int64_t offset = options.padding_side == PaddingSide::kLeft ? longest - length : 0;
    for (int64_t t = 0; t < length; ++t) {
      ids[b][offset + t] = rows[b][t];
      mask[b][offset + t] = 1;
    }
  }
  return encoding;
}

std::string Tokenizer::IdToPiece(int64_t id) const {
  CheckId(id, "IdToPiece");
  if (const AddedToken* token = FindAdded(id)) return token->content;
  return model_->IdToPiece(id);
}

int64_t Tokenizer::PieceToId(std::string_view piece) const {
  auto it = added_ids_.find(std::string(piece));
  if (it != added_ids_.end()) return it->second;
  return model_->FindPiece(piece).value_or(unk_id_);
}

const SentencePiece& Tokenizer::Model() const {
  const auto* spm = dynamic_cast<const SentencePieceModel*>(model_.get());
  Check(spm != nullptr, "tokenizer '", Source(), "' is a ", Format(),
        " tokenizer, not a sentencepiece model");
  return spm->Processor();
}

int64_t Tokenizer::AddedTokenId(std::string_view content) const {
  auto it = added_ids_.find(std::string(content));
  if (it != added_ids_.end()) return it->second;
  std::vector<std::string> names;
  for (const AddedToken& token : added_) {
    if (names.size() == 12) {
      names.push_back(Str("... (", added_.size(), " in all)"));
      break;
    }
    names.push_back(token.content);
  }
  throw Error(Str("'", content, "' is not an added token of the tokenizer '", Source(),
                  "' (added tokens: ", names.empty() ? "none" : Join(names), ")"));
}

int64_t Tokenizer::SpeechUnitId(int64_t unit) const {
  Check(unit >= 0 && unit < num_speech_units_, "speech unit ", unit,
        " has no token: the tokenizer '", Source(), "' reserves ", num_speech_units_,
        " units (TokenizerOptions.num_speech_units)");
  return added_ids_.at(SpeechUnitToken(unit));
}

int64_t Tokenizer::PaddingId() const {
  if (pad_id_ >= 0) return pad_id_;
  if (EosId() >= 0) return EosId();
  return unk_id_;
}

void Tokenizer::Save(const std::string& dir) const {
  fs::MakeDirs(dir);
  model_->Save(dir);
  std::error_code ec;
  if (dynamic_cast<const SentencePieceModel*>(model_.get()) == nullptr) {
    // Load(dir) would read a sentencepiece tokenizer.model left there before the tokenizer.json.
    stdfs::remove(JoinPath(dir, kModelFile), ec);
  }

  nlohmann::ordered_json beyond = nlohmann::ordered_json::object();
  nlohmann::ordered_json decoder = nlohmann::ordered_json::object();
  for (const AddedToken& token : added_) {
    if (token.id >= model_vocab_size_) beyond[token.content] = token.id;
    decoder[std::to_string(token.id)] = {
        {"content", token.content},         {"lstrip", token.lstrip},
        {"normalized", token.normalized},   {"rstrip", token.rstrip},
        {"single_word", token.single_word}, {"special", token.special}};
  }
  fs::AtomicWriteString(JoinPath(dir, kAddedTokensFile), beyond.dump(2) + "\n");

  const std::string config_path = JoinPath(dir, kTokenizerConfigFile);
  nlohmann::ordered_json config;
  if (stdfs::exists(config_path, ec)) {
    try {
      config = nlohmann::ordered_json::parse(fs::ReadFile(config_path));
    } catch (const json::exception& e) {
      throw Error(Str("cannot update '", config_path, "': it is not valid JSON: ", e.what()));
    }
    Check(config.is_object(), "cannot update '", config_path, "': it is not a JSON object");
  } else {
    config = model_->DefaultTokenizerConfig();
  }
  auto token_or_null = [&](int64_t id) -> nlohmann::ordered_json {
    return id >= 0 ? nlohmann::ordered_json(IdToPiece(id)) : nlohmann::ordered_json(nullptr);
  };
  config["bos_token"] = token_or_null(bos_id_);
  config["eos_token"] = token_or_null(EosId());
  config["unk_token"] = token_or_null(unk_id_);
  config["pad_token"] = token_or_null(pad_id_);
  config["added_tokens_decoder"] = decoder;
  fs::AtomicWriteString(config_path, config.dump(2) + "\n");
}

Tokenizer TrainTokenizer(const TokenizerTrainOptions& options) {
  Check(!options.out_dir.empty(), "tokenizer training: no output directory given");
  // The pieces byte_fallback needs, before sentencepiece reports it in its own terms.
  const int required = 256 + 3 + static_cast<int>(options.markers.size());
  Check(options.vocab_size > required, "tokenizer training on '", options.input, "': vocab_size ",
        options.vocab_size, " is too small: byte fallback needs 256 byte ",
        "pieces + 3 special tokens + ", options.markers.size(), " markers = ", required,
        ", plus one piece per distinct character of the corpus; use at least ", required + 100);
  fs::MakeDirs(options.out_dir);
  SentencePieceTrainOptions spm;
  spm.input = options.input;
  spm.model_prefix = JoinPath(options.out_dir, "tokenizer");
  spm.vocab_size = options.vocab_size;
  spm.model_type = options.model_type;
  spm.character_coverage = options.character_coverage;
  spm.user_defined_symbols = options.markers;
  spm.unk_id = 0;  // Llama's layout: <unk>, <s>, </s>, no pad
  spm.bos_id = 1;
  spm.eos_id = 2;
  spm.pad_id = -1;
  spm.hard_vocab_limit = options.hard_vocab_limit;
  spm.byte_fallback = true;
  spm.input_sentence_size = options.input_sentence_size;
  spm.seed = options.seed;
  spm.num_threads = options.num_threads;
  SentencePiece::Train(spm);

  const std::string model_path = JoinPath(options.out_dir, kModelFile);
  auto model = std::make_unique<SentencePieceModel>(fs::ReadFile(model_path), model_path);
  TokenizerOptions load_options;
  load_options.markers = options.markers;
  // Side files of an older tokenizer in out_dir describe a different model: ignore and replace.
  Tokenizer tokenizer = Tokenizer::Build(std::move(model), "", load_options);
  tokenizer.Save(options.out_dir);
  return tokenizer;
}

}  // namespace slm::text
