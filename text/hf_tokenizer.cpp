#include "text/hf_tokenizer.h"

#include <filesystem>
#include <map>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "text/bpe.h"
#include "text/hf_decoder.h"
#include "text/hf_json.h"
#include "text/hf_normalizer.h"
#include "text/hf_pretokenizer.h"

namespace slm::text {
namespace {

using hf::Child;
using hf::Item;
using hf::json;
using hf::JsonContext;

// The special tokens a post-processor puts around the sequence (for encode with special tokens),
// and the BOS/EOS they imply.
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void Apply(std::vector<int64_t>& ids) const = 0;
  // The first token before / the last token after the sequence, -1 if none.
  virtual int64_t Bos() const { return -1; }
  virtual int64_t Eos() const { return -1; }
};

class NoSpecialTokens : public PostProcessor {  // ByteLevel: offsets only
 public:
  void Apply(std::vector<int64_t>&) const override {}
};

class AroundSequence : public PostProcessor {  // TemplateProcessing, Bert, Roberta
 public:
  AroundSequence(std::vector<int64_t> before, std::vector<int64_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void Apply(std::vector<int64_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }
  int64_t Bos() const override { return before_.empty() ? -1 : before_.front(); }
  int64_t Eos() const override { return after_.empty() ? -1 : after_.back(); }

 private:
  std::vector<int64_t> before_;
  std::vector<int64_t> after_;
};

class PostSequence : public PostProcessor {
 public:
  explicit PostSequence(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::vector<int64_t>& ids) const override {
    for (const auto& step : steps_) step->Apply(ids);
  }
  int64_t Bos() const override {
    int64_t bos = -1;
    for (const auto& step : steps_) bos = step->Bos() >= 0 ? step->Bos() : bos;
    return bos;
  }
  int64_t Eos() const override {
    int64_t eos = -1;
    for (const auto& step : steps_) eos = step->Eos() >= 0 ? step->Eos() : eos;
    return eos;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

std::vector<int64_t> TemplateTokenIds(const json& special_tokens, const std::string& name,
                                      const std::string& path, const JsonContext& ctx) {
  const std::string tokens_path = Child(path, "special_tokens");
  auto it = special_tokens.find(name);
  if (it == special_tokens.end()) {
    ctx.Fail(tokens_path, Str("has no entry for the template's special token '", name, "'"));
  }
  const std::string entry_path = Child(tokens_path, name);
  const json& ids = ctx.Array(*it, entry_path, "ids");
  std::vector<int64_t> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    out.push_back(ctx.Int(ids[i], Item(Child(entry_path, "ids"), i)));
    if (out.back() < 0) ctx.Fail(Item(Child(entry_path, "ids"), i), "must be >= 0");
  }
  return out;
}

// ["[CLS]", 101] of BertProcessing / RobertaProcessing.
int64_t TokenPairId(const json& node, const std::string& path, const char* key,
                    const JsonContext& ctx) {
  const json& pair = ctx.Required(node, path, key);
  const std::string where = Child(path, key);
  if (!pair.is_array() || pair.size() != 2) ctx.Fail(where, "must be [\"token\", id]");
  const int64_t id = ctx.Int(pair[1], Item(where, 1));
  if (id < 0) ctx.Fail(Item(where, 1), "must be >= 0");
  return id;
}

std::unique_ptr<PostProcessor> ParsePostProcessor(const json& node, const std::string& path,
                                                  const JsonContext& ctx) {
  const std::string type = ctx.Type(node, path);
  if (type == "ByteLevel") return std::make_unique<NoSpecialTokens>();
  if (type == "Sequence") {
    const json& items = ctx.Array(node, path, "processors");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < items.size(); ++i) {
      steps.push_back(ParsePostProcessor(items[i], Item(Child(path, "processors"), i), ctx));
    }
    return std::make_unique<PostSequence>(std::move(steps));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    return std::make_unique<AroundSequence>(
        std::vector<int64_t>{TokenPairId(node, path, "cls", ctx)},
        std::vector<int64_t>{TokenPairId(node, path, "sep", ctx)});
  }
  if (type == "TemplateProcessing") {
    const json& single = ctx.Array(node, path, "single");
    const json& special_tokens = ctx.Required(node, path, "special_tokens");
    ctx.RequireObject(special_tokens, Child(path, "special_tokens"));
    std::vector<int64_t> before;
    std::vector<int64_t> after;
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string piece_path = Item(Child(path, "single"), i);
      const json& piece = single[i];
      if (const json* sequence = ctx.Optional(piece, "Sequence")) {
        const std::string id =
            ctx.String(ctx.Required(*sequence, Child(piece_path, "Sequence"), "id"),
                       Child(Child(piece_path, "Sequence"), "id"));
        if (id != "A")
          ctx.Fail(piece_path, "the single-sequence template can only hold sequence A");
        if (seen_sequence) ctx.Fail(piece_path, "the sequence appears twice in the template");
        seen_sequence = true;
      } else if (const json* special = ctx.Optional(piece, "SpecialToken")) {
        const std::string special_path = Child(piece_path, "SpecialToken");
        const std::string name =
            ctx.String(ctx.Required(*special, special_path, "id"), Child(special_path, "id"));
        const std::vector<int64_t> ids = TemplateTokenIds(special_tokens, name, path, ctx);
        (seen_sequence ? after : before)
            .insert((seen_sequence ? after : before).end(), ids.begin(), ids.end());
      } else {
        ctx.Fail(piece_path, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    if (!seen_sequence) ctx.Fail(Child(path, "single"), "has no sequence ($A)");
    return std::make_unique<AroundSequence>(std::move(before), std::move(after));
  }
  ctx.Unsupported(Child(path, "type"), type,
                  "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence");
}

// model.merges[i] as its two tokens: "a b" or ["a", "b"]; nullopt for a "#version" line.
std::optional<std::pair<std::string, std::string>> MergePair(const json& item,
                                                             const std::string& path,
                                                             const JsonContext& ctx) {
  if (item.is_string()) {
    const std::string line = item.get<std::string>();
    if (line.rfind("#version", 0) == 0) return std::nullopt;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      ctx.Fail(path, Str("must be two tokens separated by one space, got '", line, "'"));
    }
    return std::make_pair(line.substr(0, space), line.substr(space + 1));
  }
  if (item.is_array() && item.size() == 2 && item[0].is_string() && item[1].is_string()) {
    return std::make_pair(item[0].get<std::string>(), item[1].get<std::string>());
  }
  ctx.Fail(path, Str("must be \"a b\" or [\"a\", \"b\"], got ", item.dump().substr(0, 80)));
}

std::unique_ptr<Bpe> ParseBpe(const json& model, const JsonContext& ctx) {
  const std::string path = "model";
  ctx.RequireObject(model, path);
  if (const json* type = ctx.Optional(model, "type")) {
    const std::string name = ctx.String(*type, Child(path, "type"));
    if (name != "BPE") ctx.Unsupported(Child(path, "type"), name, "BPE");
  } else if (ctx.Optional(model, "merges") == nullptr) {
    ctx.Fail(Child(path, "type"), "is missing (supported: BPE)");
  }
  if (const json* dropout = ctx.Optional(model, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      ctx.Fail(Child(path, "dropout"),
               Str("must be null: BPE dropout samples merges at random (training only), got ",
                   dropout->dump()));
    }
  }
  BpeOptions options;
  if (const json* unk = ctx.Optional(model, "unk_token")) {
    options.unk_token = ctx.String(*unk, Child(path, "unk_token"));
  }
  if (const json* prefix = ctx.Optional(model, "continuing_subword_prefix")) {
    options.continuing_subword_prefix =
        ctx.String(*prefix, Child(path, "continuing_subword_prefix"));
  }
  if (const json* suffix = ctx.Optional(model, "end_of_word_suffix")) {
    options.end_of_word_suffix = ctx.String(*suffix, Child(path, "end_of_word_suffix"));
  }
  options.fuse_unk = ctx.Bool(model, path, "fuse_unk", false);
  options.byte_fallback = ctx.Bool(model, path, "byte_fallback", false);
  options.ignore_merges = ctx.Bool(model, path, "ignore_merges", false);

  const std::string vocab_path = Child(path, "vocab");
  const json& vocab = ctx.Required(model, path, "vocab");
  ctx.RequireObject(vocab, vocab_path);
  std::vector<std::string> pieces;
  std::unordered_map<std::string, int32_t> ids;
  ids.reserve(vocab.size());
  for (const auto& [piece, value] : vocab.items()) {
    const int64_t id = ctx.Int(value, Child(vocab_path, piece));
    if (id < 0 || id > INT32_MAX - 1)
      ctx.Fail(Child(vocab_path, piece), Str("id ", id, " is out of range"));
    if (piece.empty()) ctx.Fail(vocab_path, "has an empty token");
    if (static_cast<size_t>(id) >= pieces.size()) pieces.resize(static_cast<size_t>(id) + 1);
    if (!pieces[static_cast<size_t>(id)].empty()) {
      ctx.Fail(vocab_path, Str("id ", id, " is given to both '", pieces[static_cast<size_t>(id)],
                               "' and '", piece, "'"));
    }
    pieces[static_cast<size_t>(id)] = piece;
    ids.emplace(piece, static_cast<int32_t>(id));
  }

  const std::string merges_path = Child(path, "merges");
  const json* merges_node = ctx.Optional(model, "merges");
  if (merges_node == nullptr) ctx.Fail(merges_path, "is missing: a BPE model needs its merges");
  if (!merges_node->is_array()) ctx.Fail(merges_path, "must be a list");
  std::vector<BpeMerge> merges;
  merges.reserve(merges_node->size());
  const size_t prefix_length = options.continuing_subword_prefix.size();
  for (size_t i = 0; i < merges_node->size(); ++i) {
    const std::string item_path = Item(merges_path, i);
    const auto pair = MergePair((*merges_node)[i], item_path, ctx);
    if (!pair) continue;
    const auto& [left, right] = *pair;
    auto id_of = [&](const std::string& token, const char* what) {
      auto it = ids.find(token);
      if (it == ids.end()) ctx.Fail(item_path, Str(what, " '", token, "' is not in model.vocab"));
      return it->second;
    };
    const int32_t left_id = id_of(left, "the token");
    const int32_t right_id = id_of(right, "the token");
    if (right.size() < prefix_length) {
      ctx.Fail(item_path, Str("'", right, "' lacks the continuing_subword_prefix"));
    }
    const int32_t merged_id = id_of(left + right.substr(prefix_length), "the merged token");
    merges.push_back({left_id, right_id, merged_id});
  }
  return std::make_unique<Bpe>(std::move(pieces), merges, std::move(options), ctx.File());
}

class HfTokenizerModel : public TokenizerModel {
 public:
  HfTokenizerModel(const std::string& path, std::string bytes);

  const char* Format() const override { return "tokenizer.json"; }
  const std::string& Source() const override { return source_; }
  int64_t VocabSize() const override { return bpe_->Size(); }
  std::string IdToPiece(int64_t id) const override { return bpe_->Piece(id); }
  std::optional<int64_t> FindPiece(std::string_view piece) const override {
    return bpe_->Find(piece);
  }
  bool IsControl(int64_t) const override { return false; }
  SpecialTokenIds DefaultSpecialIds() const override { return special_ids_; }
  std::vector<AddedToken> FileAddedTokens() const override { return added_; }
  bool HfAddedTokenRules() const override { return true; }
  bool NeedsValidUtf8() const override { return true; }
  bool HasNormalizer() const override { return normalizer_ != nullptr; }
  std::string Normalize(std::string_view segment) const override {
    std::string text(segment);
    if (normalizer_ != nullptr) normalizer_->Apply(text);
    return text;
  }
  void Encode(std::string_view normalized, bool at_text_start,
              std::vector<int64_t>& ids) const override;
  std::vector<int64_t> PostProcess(const std::vector<int64_t>& ids,
                                   const SpecialTokenIds&) const override {
    std::vector<int64_t> out = ids;
    if (post_processor_ != nullptr) post_processor_->Apply(out);
    return out;
  }
  std::string Decode(const std::vector<DecodeToken>& tokens) const override;
  void Save(const std::string& dir) const override {
    fs::AtomicWriteString((std::filesystem::path(dir) / "tokenizer.json").string(), bytes_);
  }
  nlohmann::ordered_json DefaultTokenizerConfig() const override {
    return {{"tokenizer_class", "PreTrainedTokenizerFast"},
            {"clean_up_tokenization_spaces", false}};
  }

 private:
  void ParseAddedTokens(const json& root, const JsonContext& ctx);

  std::string source_;
  std::string bytes_;
  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Bpe> bpe_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<hf::Decoder> decoder_;
  std::vector<AddedToken> added_;
  SpecialTokenIds special_ids_;
};

HfTokenizerModel::HfTokenizerModel(const std::string& path, std::string bytes)
    : source_(path), bytes_(std::move(bytes)) {
  const JsonContext ctx(path);
  json root;
  try {
    root = json::parse(bytes_);
  } catch (const json::exception& e) {
    throw Error(Str("cannot parse '", path, "' as JSON: ", e.what()));
  }
  ctx.RequireObject(root, "");
  if (const json* version = ctx.Optional(root, "version")) {
    const std::string value = ctx.String(*version, "version");
    if (value != "1.0") ctx.Unsupported("version", value, "1.0");
  }
  bpe_ = ParseBpe(ctx.Required(root, "", "model"), ctx);
  if (const json* node = ctx.Optional(root, "normalizer")) {
    normalizer_ = hf::ParseNormalizer(*node, "normalizer", ctx);
  }
  if (const json* node = ctx.Optional(root, "pre_tokenizer")) {
    pre_tokenizer_ = hf::ParsePreTokenizer(*node, "pre_tokenizer", ctx);
  }
  if (const json* node = ctx.Optional(root, "post_processor")) {
    post_processor_ = ParsePostProcessor(*node, "post_processor", ctx);
  }
  if (const json* node = ctx.Optional(root, "decoder")) {
    decoder_ = hf::ParseDecoder(*node, "decoder", ctx);
  }
  ParseAddedTokens(root, ctx);

  auto id_of = [&](const std::string& content) -> int64_t {
    for (const AddedToken& token : added_) {
      if (token.content == content) return token.id;
    }
    return bpe_->Find(content).value_or(-1);
  };
  if (const json* model = ctx.Optional(root, "model")) {
    if (const json* unk = ctx.Optional(*model, "unk_token"))
      special_ids_.unk = id_of(unk->get<std::string>());
  }
  if (post_processor_ != nullptr) {
    special_ids_.bos = post_processor_->Bos();
    special_ids_.eos = post_processor_->Eos();
  }
}

void HfTokenizerModel::ParseAddedTokens(const json& root, const JsonContext& ctx) {
  const json* list = ctx.Optional(root, "added_tokens");
  if (list == nullptr) return;
  if (!list->is_array()) ctx.Fail("added_tokens", "must be a list");
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string path = Item("added_tokens", i);
    const json& entry = (*list)[i];
    AddedToken token;
    token.content = ctx.String(ctx.Required(entry, path, "content"), Child(path, "content"));
    token.id = ctx.Int(ctx.Required(entry, path, "id"), Child(path, "id"));
    // tokenizers' AddedToken defaults.
    token.special = ctx.Bool(entry, path, "special", false);
    token.single_word = ctx.Bool(entry, path, "single_word", false);
    token.lstrip = ctx.Bool(entry, path, "lstrip", false);
    token.rstrip = ctx.Bool(entry, path, "rstrip", false);
    token.normalized = ctx.Bool(entry, path, "normalized", true);
    // tokenizers gives a token the model's vocabulary holds the model's id, whatever the file says.
    if (std::optional<int64_t> id = bpe_->Find(token.content)) token.id = *id;
    added_.push_back(std::move(token));
  }
}

void HfTokenizerModel::Encode(std::string_view normalized, bool at_text_start,
                              std::vector<int64_t>& ids) const {
  if (normalized.empty()) return;
  if (pre_tokenizer_ == nullptr) {
    bpe_->Tokenize(normalized, false, ids);
    return;
  }
  thread_local hf::PreTokens tokens;
  tokens.Reset(normalized, at_text_start);
  pre_tokenizer_->Apply(tokens);
  for (const hf::PreTokenSpan& span : tokens.pieces) {
    bpe_->Tokenize(tokens.Piece(span), tokens.byte_level, ids);
  }
}

std::string HfTokenizerModel::Decode(const std::vector<DecodeToken>& tokens) const {
  std::vector<std::string> strings;
  strings.reserve(tokens.size());
  for (const DecodeToken& token : tokens) {
    if (token.skip) continue;
    if (token.added != nullptr) {
      // tokenizers decodes a normalized added token as its normalized form.
      strings.push_back(token.added->normalized ? Normalize(token.added->content)
                                                : token.added->content);
    } else if (!bpe_->Piece(token.id).empty()) {  // ids the vocabulary skips decode to nothing
      strings.push_back(bpe_->Piece(token.id));
    }
  }
  std::string text;
  if (decoder_ != nullptr) {
    decoder_->Apply(strings);
    for (const std::string& s : strings) text += s;
  } else {
    for (size_t i = 0; i < strings.size(); ++i) {
      if (i > 0) text += ' ';
      text += strings[i];
    }
  }
  return text;
}

}  // namespace

std::unique_ptr<TokenizerModel> LoadHfTokenizerModel(const std::string& path) {
  std::error_code ec;
  Check(std::filesystem::is_regular_file(path, ec), "tokenizer.json '", path,
        "' does not exist or is not a regular file");
  return std::make_unique<HfTokenizerModel>(path, fs::ReadFile(path));
}

}  // namespace slm::text
