// slm::text::Regex: the split and replace patterns of Hugging Face tokenizer.json files, run with
// PCRE2 (libpcre2-dev) and its JIT. `tokenizers` compiles these patterns with Oniguruma; the
// patterns in use (GPT-2, Llama 3, Qwen2: \p{L}, \p{N}, (?i:...), \s+(?!\S)) need Unicode
// properties, case-insensitive groups and lookahead, which std::regex lacks.
//
// Oniguruma compatibility: the pattern is compiled with PCRE2_UTF | PCRE2_UCP, and \s / \S are
// rewritten to \p{White_Space} / \P{White_Space}, Oniguruma's definition (PCRE2's own \s also
// takes U+180E). Other escapes mean what PCRE2 says; the two engines agree on the constructs the
// model families above use.
//
// Errors: slm::Error naming `where` (e.g. "'tokenizer.json': pre_tokenizer.pattern.Regex") for a
// pattern PCRE2 rejects, and for a match that exhausts PCRE2's limits.
// Thread-safety: a compiled Regex is immutable; FindAll may be called concurrently (match data and
// JIT stacks are per thread).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace slm::text {

class Regex {
 public:
  Regex(std::string_view pattern, std::string where);
  Regex(Regex&& other) noexcept;
  Regex& operator=(Regex&& other) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex();

  // Appends [start, end) byte offsets of the matches in `text` (valid UTF-8), left to right and
  // without overlap, as Oniguruma's find_iter in the Rust `onig` crate reports them: an empty
  // match right where the previous match ended is skipped.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

  const std::string& Pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::string where_;
  pcre2_real_code_8* code_ = nullptr;
};

}  // namespace slm::text
