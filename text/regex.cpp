#include "text/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace slm::text {
namespace {

// \s and \S as Oniguruma defines them (see the header); every other escape pair is copied.
std::string ToPcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out += pattern[i];
      continue;
    }
    const char next = pattern[++i];
    if (next == 's') {
      out += "\\p{White_Space}";
    } else if (next == 'S') {
      out += "\\P{White_Space}";
    } else {
      out += '\\';
      out += next;
    }
  }
  return out;
}

std::string ErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) return Str("error ", code);
  return reinterpret_cast<const char*>(buffer);
}

// Per-thread match state: match data for one pair of offsets and a JIT stack large enough for
// long whitespace runs under \s+(?!\S).
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  Check(state.data != nullptr && state.context != nullptr && state.stack != nullptr,
        "PCRE2 could not allocate its match data");
  return state;
}

}  // namespace

Regex::Regex(std::string_view pattern, std::string where)
    : pattern_(pattern), where_(std::move(where)) {
  const std::string translated = ToPcre2(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  Check(code_ != nullptr, where_, ": cannot compile the regular expression '", pattern_,
        "': ", ErrorMessage(error), " (at offset ", offset, " of its PCRE2 form '", translated,
        "')");
  // Without JIT support PCRE2 interprets the pattern: slower, same matches.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

Regex::Regex(Regex&& other) noexcept
    : pattern_(std::move(other.pattern_)), where_(std::move(other.where_)), code_(other.code_) {
  other.code_ = nullptr;
}

Regex& Regex::operator=(Regex&& other) noexcept {
  if (this != &other) {
    pcre2_code_free(code_);
    pattern_ = std::move(other.pattern_);
    where_ = std::move(other.where_);
    code_ = other.code_;
    other.code_ = nullptr;
  }
  return *this;
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const {
  ThreadMatchState& state = MatchState();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  bool have_previous = false;
  size_t previous_end = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code_, subject, text.size(), start, PCRE2_NO_UTF_CHECK, state.data,
                               state.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    Check(rc >= 0, where_, ": matching the regular expression '", pattern_,
          "' failed: ", ErrorMessage(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const size_t match_start = ovector[0];
    const size_t match_end = ovector[1];
    if (match_start == match_end && have_previous && previous_end == match_end) {
      // Step over one character and search again.
      if (start >= text.size()) return;
      size_t step = 1;
      while (start + step < text.size() &&
             (static_cast<unsigned char>(text[start + step]) & 0xC0) == 0x80) {
        ++step;
      }
      start += step;
      continue;
    }
    matches.emplace_back(match_start, match_end);
    have_previous = true;
    previous_end = match_end;
    start = match_end;
  }
}

}  // namespace slm::text
