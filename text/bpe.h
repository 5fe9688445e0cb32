// slm::text::Bpe: the byte-pair-encoding model of Hugging Face tokenizer.json files, with
// `tokenizers`' exact merge order: a word starts as its characters (each looked up in the
// vocabulary, else as <0xNN> byte pieces with byte_fallback, else as unk, consecutive unks fused
// with fuse_unk), then repeatedly the adjacent pair of lowest merge rank is merged, the leftmost
// one among equal ranks, with `tokenizers`' priority-queue bookkeeping (a queued merge is applied
// when its pair still produces the same token). With ignore_merges a word that is itself in the
// vocabulary is one token (Llama 3).
//
// Each thread keeps a bounded cache of word -> ids per Bpe instance: natural text repeats its
// words, and a hit skips the merges entirely.
//
// Errors: slm::Error (naming the model file) when a word needs the unk token and the vocabulary
// has no such piece, as `tokenizers` fails then.
// Thread-safety: immutable after construction; Tokenize may be called concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace slm::text {

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;  // "" = none; before every character but the first
  std::string end_of_word_suffix;         // "" = none; after the last character
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

// Merge `left` + `right` -> `merged` (ids); the position in the merge list is the rank.
struct BpeMerge {
  int32_t left = 0;
  int32_t right = 0;
  int32_t merged = 0;
};

class Bpe {
 public:
  // pieces[id] is the vocabulary ("" for ids it skips; pieces are distinct). Merge ids must be
  // vocabulary ids; a pair listed twice keeps its last rank, as in `tokenizers`. `source` names
  // the model in messages.
  Bpe(std::vector<std::string> pieces, const std::vector<BpeMerge>& merges, BpeOptions options,
      std::string source);
  Bpe(const Bpe&) = delete;
  Bpe& operator=(const Bpe&) = delete;

  // Appends the ids of one pre-token (valid UTF-8). byte_level: the word's bytes are first
  // mapped to GPT-2's byte-level characters (the map of a final ByteLevel pre-tokenizer).
  void Tokenize(std::string_view word, bool byte_level, std::vector<int64_t>& ids) const;

  int64_t Size() const { return static_cast<int64_t>(pieces_.size()); }
  const std::string& Piece(int64_t id) const { return pieces_[static_cast<size_t>(id)]; }
  std::optional<int64_t> Find(std::string_view piece) const;

 private:
  struct PairSlot {
    uint64_t key = ~uint64_t{0};
    uint32_t rank = 0;
    int32_t merged = -1;
  };
  const PairSlot* FindPair(int32_t left, int32_t right) const;
  void InsertPair(int32_t left, int32_t right, uint32_t rank, int32_t merged);
  // The ids of `text` (already byte-level mapped when that applies) before caching.
  void Encode(std::string_view text, std::vector<int32_t>& out) const;
  void MergeWord(std::string_view text, std::vector<int32_t>& out) const;
  int32_t UnkId() const;

  std::vector<std::string> pieces_;
  std::unordered_map<std::string_view, int32_t> ids_;  // views into pieces_
  std::vector<PairSlot> pairs_;                        // open addressing, size a power of two
  uint64_t pair_mask_ = 0;
  BpeOptions options_;
  int32_t unk_id_ = -1;
  int32_t byte_pieces_[256];  // ids of "<0xNN>", -1 where the vocabulary has none
  std::string source_;
  uint64_t cache_id_ = 0;  // tells this instance's per-thread cache apart from others'
};

}  // namespace slm::text
