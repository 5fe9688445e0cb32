#include "text/hf_pretokenizer.h"

#include <utility>

#include "core/error.h"
#include "text/hf_pattern.h"
#include "text/regex.h"
#include "text/unicode.h"

namespace slm::text::hf {
namespace {

// GPT-2's split regex, which ByteLevel(use_regex=true) applies.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Rewrites every piece: write(piece, out) appends its new text; empty results are dropped.
template <typename Write>
void Rewrite(PreTokens& tokens, Write&& write) {
  thread_local std::string out;
  thread_local std::vector<PreTokenSpan> pieces;
  out.clear();
  pieces.clear();
  for (const PreTokenSpan& span : tokens.pieces) {
    const size_t begin = out.size();
    write(tokens.Piece(span), span, out);
    if (out.size() > begin) pieces.push_back({begin, out.size(), span.at_start});
  }
  tokens.storage.swap(out);
  tokens.text = tokens.storage;
  tokens.pieces.swap(pieces);
}

// Applies a pending byte-level map, so that a later step sees the mapped characters.
void Materialize(PreTokens& tokens) {
  if (!tokens.byte_level) return;
  Rewrite(tokens, [](std::string_view piece, const PreTokenSpan&, std::string& out) {
    for (const char c : piece) out += unicode::ByteLevelChar(static_cast<uint8_t>(c));
  });
  tokens.byte_level = false;
}

// Cuts every piece where find(piece, matches) says, following the behaviour.
template <typename Find>
void SplitPieces(PreTokens& tokens, SplitBehavior behavior, bool invert, Find&& find) {
  thread_local std::vector<PreTokenSpan> pieces;
  thread_local std::vector<Match> matches;
  thread_local std::vector<std::pair<size_t, size_t>> kept;
  pieces.clear();
  for (const PreTokenSpan& span : tokens.pieces) {
    matches.clear();
    kept.clear();
    find(tokens.Piece(span), matches);
    ApplySplitBehavior(matches, behavior, invert, kept);
    for (const auto& [start, end] : kept) {
      pieces.push_back({span.begin + start, span.begin + end, span.at_start && start == 0});
    }
  }
  tokens.pieces.swap(pieces);
}

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void Apply(PreTokens& tokens) const override {
    for (const auto& step : steps_) step->Apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, bool defer_map)
      : add_prefix_space_(add_prefix_space), defer_map_(defer_map) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern, "the ByteLevel pre-tokenizer");
  }
  void Apply(PreTokens& tokens) const override {
    Materialize(tokens);
    if (add_prefix_space_) {
      Rewrite(tokens, [](std::string_view piece, const PreTokenSpan&, std::string& out) {
        if (piece.front() != ' ') out += ' ';
        out += piece;
      });
    }
    if (regex_ != nullptr) {
      SplitPieces(tokens, SplitBehavior::kIsolated, false,
                  [&](std::string_view piece, std::vector<Match>& matches) {
                    thread_local std::vector<std::pair<size_t, size_t>> found;
                    found.clear();
                    regex_->FindAll(piece, found);
                    size_t previous = 0;
                    for (const auto& [start, end] : found) {
                      if (previous != start) matches.push_back({previous, start, false});
                      matches.push_back({start, end, true});
                      previous = end;
                    }
                    if (previous != piece.size())
                      matches.push_back({previous, piece.size(), false});
                  });
    }
    tokens.byte_level = true;
    if (!defer_map_) Materialize(tokens);
  }

 private:
  bool add_prefix_space_;
  bool defer_map_;
  std::unique_ptr<Regex> regex_;
};

class Split : public PreTokenizer {
 public:
  Split(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void Apply(PreTokens& tokens) const override {
    Materialize(tokens);
    SplitPieces(tokens, behavior_, invert_,
                [&](std::string_view piece, std::vector<Match>& matches) {
                  pattern_.FindMatches(piece, matches);
                });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class Metaspace : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void Apply(PreTokens& tokens) const override {
    Materialize(tokens);
    Rewrite(tokens, [&](std::string_view piece, const PreTokenSpan& span, std::string& out) {
      const size_t begin = out.size();
      for (const char c : piece) {
        if (c == ' ') {
          out += replacement_;
        } else {
          out += c;
        }
      }
      const bool starts = out.compare(begin, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && span.at_start))) {
        out.insert(begin, replacement_);
      }
    });
    if (split_) {
      const Pattern pattern = Pattern::Literal(replacement_);
      SplitPieces(tokens, SplitBehavior::kMergedWithNext, false,
                  [&](std::string_view piece, std::vector<Match>& matches) {
                    pattern.FindMatches(piece, matches);
                  });
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void Apply(PreTokens& tokens) const override {
    Materialize(tokens);
    SplitPieces(tokens, individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false,
                [](std::string_view piece, std::vector<Match>& matches) {
                  FindCharMatches(piece, unicode::IsNumeric, matches);
                });
  }

 private:
  bool individual_;
};

class WhitespaceSplit : public PreTokenizer {
 public:
  void Apply(PreTokens& tokens) const override {
    Materialize(tokens);
    SplitPieces(tokens, SplitBehavior::kRemoved, false,
                [](std::string_view piece, std::vector<Match>& matches) {
                  FindCharMatches(piece, unicode::IsWhiteSpace, matches);
                });
  }
};

// Metaspace's "replacement": one character.
std::string Replacement(const json& node, const std::string& path, const JsonContext& ctx) {
  const std::string where = Child(path, "replacement");
  std::string replacement = ctx.String(ctx.Required(node, path, "replacement"), where);
  size_t length = 0;
  if (replacement.empty() || !unicode::IsValidUtf8(replacement) ||
      (unicode::DecodeAt(replacement, 0, &length), length != replacement.size())) {
    ctx.Fail(where, Str("must be one character, got '", replacement, "'"));
  }
  return replacement;
}

PrependScheme ParsePrependScheme(const json& node, const std::string& path,
                                 const JsonContext& ctx) {
  PrependScheme scheme = PrependScheme::kAlways;
  if (const json* value = ctx.Optional(node, "prepend_scheme")) {
    const std::string name = ctx.String(*value, Child(path, "prepend_scheme"));
    if (name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      ctx.Unsupported(Child(path, "prepend_scheme"), name, "always, first, never");
    }
  }
  // Older files say add_prefix_space instead; false must agree with the scheme.
  if (!ctx.Bool(node, path, "add_prefix_space", true)) {
    if (scheme != PrependScheme::kNever && ctx.Optional(node, "prepend_scheme") != nullptr) {
      ctx.Fail(Child(path, "add_prefix_space"), "false does not match prepend_scheme");
    }
    scheme = PrependScheme::kNever;
  }
  return scheme;
}

}  // namespace

void PreTokens::Reset(std::string_view segment, bool at_start) {
  text = segment;
  storage.clear();
  pieces.clear();
  byte_level = false;
  if (!segment.empty()) pieces.push_back({0, segment.size(), at_start});
}

std::unique_ptr<PreTokenizer> ParsePreTokenizer(const json& node, const std::string& path,
                                                const JsonContext& ctx, bool last) {
  const std::string type = ctx.Type(node, path);
  if (type == "Sequence") {
    const std::string items_path = Child(path, "pretokenizers");
    const json& items = ctx.Array(node, path, "pretokenizers");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < items.size(); ++i) {
      steps.push_back(
          ParsePreTokenizer(items[i], Item(items_path, i), ctx, last && i + 1 == items.size()));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevel>(ctx.Bool(node, path, "add_prefix_space", true),
                                       ctx.Bool(node, path, "use_regex", true), last);
  }
  if (type == "Split") {
    Pattern pattern =
        Pattern::Parse(ctx.Required(node, path, "pattern"), Child(path, "pattern"), ctx);
    const SplitBehavior behavior =
        ParseSplitBehavior(ctx.Required(node, path, "behavior"), Child(path, "behavior"), ctx);
    return std::make_unique<Split>(std::move(pattern), behavior,
                                   ctx.Bool(node, path, "invert", false));
  }
  if (type == "Metaspace") {
    return std::make_unique<Metaspace>(Replacement(node, path, ctx),
                                       ParsePrependScheme(node, path, ctx),
                                       ctx.Bool(node, path, "split", true));
  }
  if (type == "Digits") {
    return std::make_unique<Digits>(ctx.Bool(node, path, "individual_digits", false));
  }
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  ctx.Unsupported(Child(path, "type"), type,
                  "ByteLevel, Split, Metaspace, Digits, WhitespaceSplit, Sequence");
}

}  // namespace slm::text::hf
