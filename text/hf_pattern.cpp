#include "text/hf_pattern.h"

#include <algorithm>

#include "core/error.h"

namespace slm::text::hf {

SplitBehavior ParseSplitBehavior(const json& node, const std::string& path,
                                 const JsonContext& ctx) {
  const std::string name = ctx.String(node, path);
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  ctx.Unsupported(path, name, "Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

Pattern Pattern::Parse(const json& node, const std::string& path, const JsonContext& ctx) {
  ctx.RequireObject(node, path);
  if (const json* literal = ctx.Optional(node, "String")) {
    std::string text = ctx.String(*literal, Child(path, "String"));
    if (text.empty()) ctx.Fail(Child(path, "String"), "an empty pattern is not supported");
    return Literal(std::move(text));
  }
  if (const json* regex = ctx.Optional(node, "Regex")) {
    const std::string where = Child(path, "Regex");
    Pattern pattern;
    pattern.regex_ = std::make_shared<const Regex>(ctx.String(*regex, where),
                                                   Str("'", ctx.File(), "': ", where));
    return pattern;
  }
  ctx.Fail(path, Str("must be {\"String\": ...} or {\"Regex\": ...}, got ", node.dump()));
}

Pattern Pattern::Literal(std::string text) {
  Pattern pattern;
  pattern.literal_ = std::move(text);
  return pattern;
}

void Pattern::FindMatches(std::string_view text, std::vector<Match>& out) const {
  size_t previous = 0;
  auto add = [&](size_t start, size_t end) {
    if (previous != start) out.push_back({previous, start, false});
    out.push_back({start, end, true});
    previous = end;
  };
  if (regex_ != nullptr) {
    thread_local std::vector<std::pair<size_t, size_t>> found;
    found.clear();
    regex_->FindAll(text, found);
    for (const auto& [start, end] : found) add(start, end);
  } else {
    for (size_t at = text.find(literal_); at != std::string_view::npos;
         at = text.find(literal_, at + literal_.size())) {
      add(at, at + literal_.size());
    }
  }
  if (previous != text.size()) out.push_back({previous, text.size(), false});
}

void ApplySplitBehavior(const std::vector<Match>& matches, SplitBehavior behavior, bool invert,
                        std::vector<std::pair<size_t, size_t>>& out) {
  thread_local std::vector<std::pair<std::pair<size_t, size_t>, bool>> pieces;  // (span, remove)
  pieces.clear();
  auto flag = [&](const Match& m) { return m.is_match != invert; };
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Match& m : matches) pieces.push_back({{m.start, m.end}, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Match& m : matches) pieces.push_back({{m.start, m.end}, flag(m)});
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Match& m : matches) {
        const bool is_match = flag(m);
        if (is_match == previous_match && !pieces.empty()) {
          pieces.back().first.second = m.end;
        } else {
          pieces.push_back({{m.start, m.end}, false});
        }
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Match& m : matches) {
        const bool is_match = flag(m);
        if (is_match && !previous_match && !pieces.empty()) {
          pieces.back().first.second = m.end;
        } else {
          pieces.push_back({{m.start, m.end}, false});
        }
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (size_t i = matches.size(); i-- > 0;) {
        const Match& m = matches[i];
        const bool is_match = flag(m);
        if (is_match && !previous_match && !pieces.empty()) {
          pieces.back().first.first = m.start;
        } else {
          pieces.push_back({{m.start, m.end}, false});
        }
        previous_match = is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
  }
  for (const auto& [span, remove] : pieces) {
    if (!remove && span.second > span.first) out.push_back(span);
  }
}

}  // namespace slm::text::hf
