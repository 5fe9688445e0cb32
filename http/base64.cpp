#include "http/base64.h"

#include <array>

#include "core/error.h"
#include "http/errors.h"

namespace slm::http {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::array<int8_t, 256> DecodeTable() {
  std::array<int8_t, 256> table;
  table.fill(-1);
  for (int i = 0; i < 64; ++i) table[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return table;
}

}  // namespace

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) | uint8_t(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string Base64Decode(std::string_view text, const std::string& param) {
  static const std::array<int8_t, 256> table = DecodeTable();
  size_t end = text.size();
  while (end > 0 && text.size() - end < 2 && text[end - 1] == '=') --end;
  std::string out;
  out.reserve(end / 4 * 3 + 3);
  uint32_t accumulator = 0;
  int bits = 0;
  for (size_t i = 0; i < end; ++i) {
    const int8_t v = table[static_cast<unsigned char>(text[i])];
    if (v < 0) {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      const std::string shown = c >= 0x20 && c < 0x7f ? std::string("'") + char(c) + "'" : Str("byte 0x", std::hex, int(c));
      Fail(400, Str(param, ": not valid base64 (", shown, " at offset ", i, ")"), param, "invalid_base64");
    }
    accumulator = (accumulator << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((accumulator >> bits) & 0xFF);
    }
  }
  if (end % 4 == 1) Fail(400, Str(param, ": not valid base64 (", end, " characters: a length of 4n+1 is never valid)"), param,
                         "invalid_base64");
  if (end < text.size() && text.size() % 4 != 0)
    Fail(400, Str(param, ": not valid base64 (padded to ", text.size(), " characters, not a multiple of 4)"), param,
         "invalid_base64");
  return out;
}

}  // namespace slm::http
