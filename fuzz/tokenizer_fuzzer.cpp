// The tokenizer (text/tokenizer.h) of the committed tiny backbone with 32 speech-unit tokens
// added, on untrusted text and ids. The first input byte picks the operation, the rest is its
// argument:
//   0: Encode(text) with BOS/EOS from bits 6-7, then Decode of the result, both ways of
//      skip_special_tokens (a request's prompt, a transcript);
//   1: Decode of 16-bit little-endian ids, in and out of range (ids from a model or a client);
//   2: BatchEncode of the '\n'-separated lines, padding side and a length limit from bits 6-7.
// Invariants beyond "only slm::Error": Encode of any bytes succeeds with ids in [0, VocabSize());
// Decode of ids in range succeeds; out of range fails naming the position; the batch is the
// per-line encodings padded.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "text/tokenizer.h"

namespace {

const slm::text::Tokenizer& Tiny() {
  static const slm::text::Tokenizer tokenizer = [] {
    slm::text::TokenizerOptions options;
    options.num_speech_units = 32;
    return slm::text::Tokenizer::Load(SLM_SOURCE_DIR "/samples/models/backbone_tiny", options);
  }();
  return tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const slm::text::Tokenizer& tok = Tiny();
  const uint8_t op = data[0] & 0x3f, flags = data[0] >> 6;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (op == 0) {
    slm::fuzz::ExpectCleanRejection("", [&] {
      const std::vector<int64_t> ids = tok.Encode(rest, flags & 1, flags & 2);
      for (const int64_t id : ids)
        SLM_FUZZ_ASSERT(id >= 0 && id < tok.VocabSize(), std::to_string(id));
      (void)tok.Decode(ids, true);
      (void)tok.Decode(ids, false);
    });
  } else if (op == 1) {
    std::vector<int64_t> ids;
    bool in_range = true;
    for (size_t i = 0; i + 1 < rest.size(); i += 2) {
      ids.push_back(int16_t(uint16_t(uint8_t(rest[i])) | uint16_t(uint8_t(rest[i + 1])) << 8));
      in_range = in_range && ids.back() >= 0 && ids.back() < tok.VocabSize();
    }
    try {
      (void)tok.Decode(ids, flags & 1);
      SLM_FUZZ_ASSERT(in_range, "Decode accepted an id out of range");
    } catch (const slm::Error& e) {
      SLM_FUZZ_ASSERT(!in_range, std::string("Decode of valid ids failed: ") + e.what());
      SLM_FUZZ_ASSERT(std::string(e.what()).find(" at position ") != std::string::npos, e.what());
    }
  } else if (op == 2) {
    std::vector<std::string> lines;
    for (size_t start = 0; start <= rest.size();) {
      const size_t end = std::min(rest.find('\n', start), rest.size());
      lines.emplace_back(rest.substr(start, end - start));
      start = end + 1;
    }
    slm::text::BatchEncodeOptions options;
    options.padding_side = flags & 1 ? slm::text::PaddingSide::kRight : slm::text::PaddingSide::kLeft;
    options.max_length = flags & 2 ? 16 : 0;
    slm::fuzz::ExpectCleanRejection("BatchEncode", [&] {
      const slm::text::BatchEncoding batch = tok.BatchEncode(lines, options);
      SLM_FUZZ_ASSERT(batch.input_ids.size(0) == int64_t(lines.size()), "rows");
      const auto mask = batch.attention_mask.sum(1);
      for (size_t i = 0; i < lines.size(); ++i)
        SLM_FUZZ_ASSERT(mask[i].item<int64_t>() == int64_t(tok.Encode(lines[i], true, false).size()),
                        "row " + std::to_string(i));
    });
  }
  return 0;
}
