#include "text/hf_normalizer.h"

#include <utility>
#include <vector>

#include "core/error.h"
#include "text/hf_pattern.h"
#include "text/unicode.h"

namespace slm::text::hf {
namespace {

class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(unicode::NormalForm form) : form_(form) {}
  void Apply(std::string& text) const override { text = unicode::Normalize(form_, text); }

 private:
  unicode::NormalForm form_;
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void Apply(std::string& text) const override {
    for (const auto& step : steps_) step->Apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

// Every match of the pattern becomes `content`.
class Replace : public Normalizer {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::string& text) const override {
    thread_local std::vector<Match> matches;
    matches.clear();
    pattern_.FindMatches(text, matches);
    bool any = false;
    for (const Match& m : matches) any = any || m.is_match;
    if (!any) return;
    std::string out;
    out.reserve(text.size());
    for (const Match& m : matches) {
      if (m.is_match) {
        out += content_;
      } else {
        out.append(text, m.start, m.end - m.start);
      }
    }
    text = std::move(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// `prepend` before any non-empty text.
class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prepend) : prepend_(std::move(prepend)) {}
  void Apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

// Unicode whitespace off either end.
class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void Apply(std::string& text) const override {
    size_t begin = 0;
    size_t end = text.size();
    size_t length = 0;
    while (left_ && begin < end && unicode::IsWhiteSpace(unicode::DecodeAt(text, begin, &length))) {
      begin += length;
    }
    while (right_ && end > begin &&
           unicode::IsWhiteSpace(unicode::DecodeBefore(text, end, &length))) {
      end -= length;
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_;
  bool right_;
};

// Every byte as its GPT-2 byte-level character.
class ByteLevel : public Normalizer {
 public:
  void Apply(std::string& text) const override {
    std::string out;
    out.reserve(text.size() * 2);
    for (const char c : text) out += unicode::ByteLevelChar(static_cast<uint8_t>(c));
    text = std::move(out);
  }
};

}  // namespace

std::unique_ptr<Normalizer> ParseNormalizer(const json& node, const std::string& path,
                                            const JsonContext& ctx) {
  const std::string type = ctx.Type(node, path);
  if (type == "NFC") return std::make_unique<UnicodeForm>(unicode::NormalForm::kNFC);
  if (type == "NFD") return std::make_unique<UnicodeForm>(unicode::NormalForm::kNFD);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(unicode::NormalForm::kNFKC);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(unicode::NormalForm::kNFKD);
  if (type == "Sequence") {
    const json& items = ctx.Array(node, path, "normalizers");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < items.size(); ++i) {
      steps.push_back(ParseNormalizer(items[i], Item(Child(path, "normalizers"), i), ctx));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  if (type == "Replace") {
    Pattern pattern =
        Pattern::Parse(ctx.Required(node, path, "pattern"), Child(path, "pattern"), ctx);
    std::string content = ctx.String(ctx.Required(node, path, "content"), Child(path, "content"));
    return std::make_unique<Replace>(std::move(pattern), std::move(content));
  }
  if (type == "Prepend") {
    return std::make_unique<Prepend>(
        ctx.String(ctx.Required(node, path, "prepend"), Child(path, "prepend")));
  }
  if (type == "Strip") {
    return std::make_unique<Strip>(ctx.Bool(node, path, "strip_left", true),
                                   ctx.Bool(node, path, "strip_right", true));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  ctx.Unsupported(Child(path, "type"), type,
                  "NFC, NFD, NFKC, NFKD, Replace, Prepend, Strip, ByteLevel, Sequence");
}

}  // namespace slm::text::hf
