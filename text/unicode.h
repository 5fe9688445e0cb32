// Unicode helpers for the tokenizers: UTF-8 coding, the character properties Hugging Face
// `tokenizers` (Rust) tests, Unicode normalization forms, and GPT-2's byte-to-unicode map.
//
// Properties and normalization come from ICU (libicu-dev) rather than hand-made tables: ICU is the
// reference implementation of the Unicode data, and it has both the normalization forms and the
// derived properties Rust's `char` methods and regex classes use (White_Space, Alphabetic,
// Join_Control, general categories); utf8proc would cover normalization and categories but not
// the derived properties.
//
// Malformed UTF-8 never reads out of bounds: decoders return U+FFFD for a bad sequence and consume
// at least one byte.
//
// Thread-safety: every function is thread-safe (ICU's normalizer instances are immutable
// singletons).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace slm::text::unicode {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// The code point starting at text[pos] and its length in bytes (>= 1); U+FFFD, 1 for a byte that
// does not start a well-formed sequence.
char32_t DecodeAt(std::string_view text, size_t pos, size_t* length);
// The code point that ends right before text[end] (end > 0) and its length.
char32_t DecodeBefore(std::string_view text, size_t end, size_t* length);
void AppendUtf8(std::string& out, char32_t c);

bool IsValidUtf8(std::string_view text);
// `text` with every ill-formed sequence replaced by U+FFFD, one per maximal subpart (the Unicode
// recommendation that Rust's String::from_utf8_lossy and Python's errors="replace" follow).
std::string ToValidUtf8(std::string_view text);

// Unicode White_Space: Rust's char::is_whitespace, regex \s.
bool IsWhiteSpace(char32_t c);
// Rust regex's Unicode \w: Alphabetic, marks, decimal digits, connector punctuation,
// Join_Control.
bool IsWordChar(char32_t c);
// Rust's char::is_alphanumeric / is_numeric: Alphabetic or general category N*; N*.
bool IsNumeric(char32_t c);

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
// `text` (valid UTF-8) in the normal form; text already in it is returned unchanged.
std::string Normalize(NormalForm form, std::string_view text);

// GPT-2's byte-level alphabet: the UTF-8 of the character byte b stands for.
std::string_view ByteLevelChar(uint8_t b);
// The byte a character stands for, -1 for characters outside the alphabet.
int ByteLevelByte(char32_t c);

}  // namespace slm::text::unicode
