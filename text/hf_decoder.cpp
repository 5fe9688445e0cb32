#include "text/hf_decoder.h"

#include <utility>

#include "core/error.h"
#include "text/hf_pattern.h"
#include "text/unicode.h"

namespace slm::text::hf {
namespace {

class Sequence : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void Apply(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->Apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Tokens of byte-level characters back to bytes; a token with any other character is taken as
// it is. One token: the bytes as text, ill-formed UTF-8 replaced.
class ByteLevel : public Decoder {
 public:
  void Apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t begin = bytes.size();
      bool mapped = true;
      for (size_t pos = 0; pos < token.size();) {
        size_t length = 0;
        const int byte = unicode::ByteLevelByte(unicode::DecodeAt(token, pos, &length));
        if (byte < 0) {
          mapped = false;
          break;
        }
        bytes += static_cast<char>(byte);
        pos += length;
      }
      if (!mapped) {
        bytes.resize(begin);
        bytes += token;
      }
    }
    tokens.assign(1, unicode::ToValidUtf8(bytes));
  }
};

// The replacement character becomes a space, except in the first token where it is dropped
// (unless the prefix scheme is "never").
class Metaspace : public Decoder {
 public:
  Metaspace(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void Apply(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& token = tokens[i];
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          if (i != 0 || !strip_first_) out += ' ';
          pos += replacement_.size();
        } else {
          out += token[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class Replace : public Decoder {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::vector<std::string>& tokens) const override {
    std::vector<Match> matches;
    for (std::string& token : tokens) {
      matches.clear();
      pattern_.FindMatches(token, matches);
      std::string out;
      for (const Match& m : matches) {
        if (m.is_match) {
          out += content_;
        } else {
          out.append(token, m.start, m.end - m.start);
        }
      }
      token = std::move(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Runs of "<0xNN>" tokens become their bytes when those form valid UTF-8, else one U+FFFD each.
class ByteFallback : public Decoder {
 public:
  void Apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (unicode::IsValidUtf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < count; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (std::string& token : tokens) {
      int byte = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
        byte = HexByte(token[3], token[4]);
      }
      if (byte >= 0) {
        bytes += static_cast<char>(byte);
        ++count;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int HexByte(char high, char low) {
    const int h = HexDigit(high);
    const int l = HexDigit(low);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class Fuse : public Decoder {
 public:
  void Apply(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

// Up to `start` leading and `stop` trailing copies of one character off every token.
class Strip : public Decoder {
 public:
  Strip(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Apply(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      size_t begin = 0;
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0; ++i) {
        begin += content_.size();
      }
      size_t end = token.size();
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_;
  size_t stop_;
};

std::string OneChar(const json& node, const std::string& path, const char* key,
                    const JsonContext& ctx) {
  const std::string where = Child(path, key);
  std::string value = ctx.String(ctx.Required(node, path, key), where);
  size_t length = 0;
  if (value.empty() || !unicode::IsValidUtf8(value) ||
      (unicode::DecodeAt(value, 0, &length), length != value.size())) {
    ctx.Fail(where, Str("must be one character, got '", value, "'"));
  }
  return value;
}

size_t Count(const json& node, const std::string& path, const char* key, const JsonContext& ctx) {
  const int64_t value = ctx.Int(ctx.Required(node, path, key), Child(path, key));
  if (value < 0) ctx.Fail(Child(path, key), "must be >= 0");
  return static_cast<size_t>(value);
}

}  // namespace

std::unique_ptr<Decoder> ParseDecoder(const json& node, const std::string& path,
                                      const JsonContext& ctx) {
  const std::string type = ctx.Type(node, path);
  if (type == "Sequence") {
    const json& items = ctx.Array(node, path, "decoders");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < items.size(); ++i) {
      steps.push_back(ParseDecoder(items[i], Item(Child(path, "decoders"), i), ctx));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "Metaspace") {
    bool never = false;
    if (const json* scheme = ctx.Optional(node, "prepend_scheme")) {
      const std::string name = ctx.String(*scheme, Child(path, "prepend_scheme"));
      if (name != "always" && name != "first" && name != "never") {
        ctx.Unsupported(Child(path, "prepend_scheme"), name, "always, first, never");
      }
      never = name == "never";
    }
    if (!ctx.Bool(node, path, "add_prefix_space", true)) never = true;
    return std::make_unique<Metaspace>(OneChar(node, path, "replacement", ctx), !never);
  }
  if (type == "Replace") {
    Pattern pattern =
        Pattern::Parse(ctx.Required(node, path, "pattern"), Child(path, "pattern"), ctx);
    return std::make_unique<Replace>(
        std::move(pattern),
        ctx.String(ctx.Required(node, path, "content"), Child(path, "content")));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") {
    return std::make_unique<Strip>(OneChar(node, path, "content", ctx),
                                   Count(node, path, "start", ctx), Count(node, path, "stop", ctx));
  }
  ctx.Unsupported(Child(path, "type"), type,
                  "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence");
}

}  // namespace slm::text::hf
