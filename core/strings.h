// Small string utilities shared by config validation, registries and text processing.
// All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace slm {

// Levenshtein distance between two byte strings (O(|a|*|b|) time, O(|b|) memory).
size_t EditDistance(std::string_view a, std::string_view b);

// The candidate closest to `name` by edit distance, or "" when none is within max(2, |name|/3):
// used for "did you mean ..." hints on misspelt keys and names.
std::string ClosestMatch(std::string_view name, const std::vector<std::string>& candidates);

// "a, b, c"
std::string Join(const std::vector<std::string>& items, std::string_view separator = ", ");

// "[2, 3, 4]": a tensor shape in error messages.
std::string ShapeString(const std::vector<int64_t>& shape);

// Splits on any character in `delimiters`, dropping empty pieces.
std::vector<std::string> Split(std::string_view text, std::string_view delimiters);

std::string Trim(std::string_view text);
std::string ToLower(std::string_view text);
bool StartsWith(std::string_view text, std::string_view prefix);
bool EndsWith(std::string_view text, std::string_view suffix);

// Byte offset of the first byte that does not begin a valid UTF-8 sequence (a stray continuation
// byte, a truncated sequence, an overlong form, a surrogate, a code point above U+10FFFF), or
// std::string_view::npos when all of `text` is valid UTF-8.
size_t FindInvalidUtf8(std::string_view text);

// Formats seconds as "1h02m03s" / "4m05s" / "6.7s" for progress output.
std::string FormatDuration(double seconds);
// `value` with exactly `digits` decimals ("12.35"), for human-readable report lines.
std::string Fixed(double value, int digits = 1);

}  // namespace slm
