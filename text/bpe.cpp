#include "text/bpe.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <utility>

#include "core/error.h"
#include "text/unicode.h"

namespace slm::text {
namespace {

// Words this long or longer are not cached (tokenizers' limit; long words rarely repeat).
constexpr size_t kMaxCachedWordBytes = 256;
// Cached words per thread and Bpe instance; a full cache starts over.
constexpr size_t kCacheCapacity = 1 << 15;
// Bpe instances with a cache in one thread; the oldest goes first.
constexpr size_t kCachedInstances = 8;

uint64_t MixBits(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  key *= 0xc4ceb9fe1a85ec53ULL;
  key ^= key >> 33;
  return key;
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::atomic<uint64_t> next_cache_id{1};

// Word -> ids, keys and ids in append-only storage that Clear() recycles.
class WordCache {
 public:
  const std::pair<uint32_t, uint32_t>* Find(std::string_view word) const {
    auto it = map_.find(word);
    return it == map_.end() ? nullptr : &it->second;
  }
  const int32_t* Ids(uint32_t offset) const { return ids_.data() + offset; }
  void Insert(std::string_view word, const std::vector<int32_t>& ids) {
    if (map_.size() >= kCacheCapacity) Clear();
    const std::string_view key = StoreKey(word);
    map_.emplace(
        key, std::make_pair(static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(ids.size())));
    ids_.insert(ids_.end(), ids.begin(), ids.end());
  }

 private:
  static constexpr size_t kBlockBytes = 1 << 16;
  std::string_view StoreKey(std::string_view word) {
    if (blocks_.empty() || block_used_ + word.size() > kBlockBytes) {
      if (next_block_ == blocks_.size()) blocks_.push_back(std::make_unique<char[]>(kBlockBytes));
      ++next_block_;
      block_used_ = 0;
    }
    char* at = blocks_[next_block_ - 1].get() + block_used_;
    std::copy(word.begin(), word.end(), at);
    block_used_ += word.size();
    return {at, word.size()};
  }
  void Clear() {
    map_.clear();
    ids_.clear();
    next_block_ = 0;
    block_used_ = kBlockBytes;
  }

  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> map_;
  std::vector<int32_t> ids_;
  std::vector<std::unique_ptr<char[]>> blocks_;
  size_t next_block_ = 0;  // blocks in use
  size_t block_used_ = kBlockBytes;
};

struct ThreadCaches {
  uint64_t last_id = 0;
  WordCache* last = nullptr;
  std::map<uint64_t, std::unique_ptr<WordCache>> by_id;
};

WordCache& LocalCache(uint64_t cache_id) {
  thread_local ThreadCaches caches;
  if (caches.last_id == cache_id) return *caches.last;
  std::unique_ptr<WordCache>& slot = caches.by_id[cache_id];
  if (!slot) {
    slot = std::make_unique<WordCache>();
    if (caches.by_id.size() > kCachedInstances) {
      // Ids grow with construction: the smallest other id belongs to the oldest instance.
      auto victim = caches.by_id.begin();
      if (victim->first == cache_id) ++victim;
      caches.by_id.erase(victim);
    }
  }
  caches.last_id = cache_id;
  caches.last = caches.by_id[cache_id].get();
  return *caches.last;
}

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t length;  // bytes; 0 once merged into the symbol on its left
};

struct QueuedMerge {
  uint32_t rank;
  uint32_t pos;
  int32_t merged;
};

// Min-heap order: lowest rank first, then leftmost position.
bool Later(const QueuedMerge& a, const QueuedMerge& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

}  // namespace

Bpe::Bpe(std::vector<std::string> pieces, const std::vector<BpeMerge>& merges, BpeOptions options,
         std::string source)
    : pieces_(std::move(pieces)),
      options_(std::move(options)),
      source_(std::move(source)),
      cache_id_(next_cache_id.fetch_add(1)) {
  ids_.reserve(pieces_.size());
  for (size_t id = 0; id < pieces_.size(); ++id) {
    if (!pieces_[id].empty()) ids_.emplace(pieces_[id], static_cast<int32_t>(id));
  }
  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  pairs_.assign(capacity, PairSlot{});
  pair_mask_ = capacity - 1;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    InsertPair(merges[rank].left, merges[rank].right, static_cast<uint32_t>(rank),
               merges[rank].merged);
  }
  if (options_.unk_token) {
    if (std::optional<int64_t> id = Find(*options_.unk_token)) unk_id_ = static_cast<int32_t>(*id);
  }
  static const char* kHex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const std::string piece = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
    const std::optional<int64_t> id = Find(piece);
    byte_pieces_[b] = id ? static_cast<int32_t>(*id) : -1;
  }
}

std::optional<int64_t> Bpe::Find(std::string_view piece) const {
  auto it = ids_.find(piece);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const Bpe::PairSlot* Bpe::FindPair(int32_t left, int32_t right) const {
  const uint64_t key = PairKey(left, right);
  for (uint64_t i = MixBits(key) & pair_mask_;; i = (i + 1) & pair_mask_) {
    const PairSlot& slot = pairs_[i];
    if (slot.key == key) return &slot;
    if (slot.merged < 0) return nullptr;
  }
}

void Bpe::InsertPair(int32_t left, int32_t right, uint32_t rank, int32_t merged) {
  const uint64_t key = PairKey(left, right);
  for (uint64_t i = MixBits(key) & pair_mask_;; i = (i + 1) & pair_mask_) {
    PairSlot& slot = pairs_[i];
    if (slot.merged < 0 || slot.key == key) {
      slot = {key, rank, merged};
      return;
    }
  }
}

int32_t Bpe::UnkId() const {
  Check(unk_id_ >= 0, "tokenizer '", source_, "': a word needs the unknown token '",
        *options_.unk_token, "', which is not in model.vocab");
  return unk_id_;
}

void Bpe::MergeWord(std::string_view text, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<QueuedMerge> queue;
  thread_local std::string piece;
  symbols.clear();
  queue.clear();
  auto add = [&](int32_t id, uint32_t length) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, length});
  };
  // A pending unk: its id and the bytes it covers (fuse_unk grows it).
  int32_t unk = -1;
  uint32_t unk_length = 0;
  const bool decorate =
      !options_.continuing_subword_prefix.empty() || !options_.end_of_word_suffix.empty();
  for (size_t pos = 0; pos < text.size();) {
    size_t char_length = 0;
    unicode::DecodeAt(text, pos, &char_length);
    std::string_view s = text.substr(pos, char_length);
    if (decorate) {
      piece.clear();
      if (pos > 0) piece += options_.continuing_subword_prefix;
      piece += s;
      if (pos + char_length == text.size()) piece += options_.end_of_word_suffix;
      s = piece;
    }
    pos += char_length;
    auto found = ids_.find(s);
    if (found != ids_.end()) {
      if (unk >= 0) {
        add(unk, unk_length);
        unk = -1;
      }
      add(found->second, static_cast<uint32_t>(char_length));
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (const char c : s) all = all && byte_pieces_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (const char c : s) add(byte_pieces_[static_cast<uint8_t>(c)], 1);
        continue;
      }
    }
    if (!options_.unk_token) continue;  // no unk token: the character is dropped
    if (unk >= 0 && options_.fuse_unk) {
      unk_length += static_cast<uint32_t>(char_length);
    } else {
      if (unk >= 0) add(unk, unk_length);
      unk = UnkId();
      unk_length = static_cast<uint32_t>(char_length);
    }
  }
  if (unk >= 0) add(unk, unk_length);

  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const PairSlot* pair = FindPair(symbols[i].id, symbols[i + 1].id)) {
      queue.push_back({pair->rank, static_cast<uint32_t>(i), pair->merged});
    }
  }
  std::make_heap(queue.begin(), queue.end(), Later);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), Later);
    const QueuedMerge top = queue.back();
    queue.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.length == 0 || left.next < 0) continue;
    const Symbol right = symbols[static_cast<size_t>(left.next)];
    // A stale entry: the pair at this position no longer makes this token.
    const PairSlot* current = FindPair(left.id, right.id);
    if (current == nullptr || current->merged != top.merged) continue;
    symbols[static_cast<size_t>(left.next)].length = 0;
    left.id = top.merged;
    left.length += right.length;
    left.next = right.next;
    if (right.next >= 0)
      symbols[static_cast<size_t>(right.next)].prev = static_cast<int32_t>(top.pos);
    if (left.prev >= 0) {
      if (const PairSlot* pair = FindPair(symbols[static_cast<size_t>(left.prev)].id, left.id)) {
        queue.push_back({pair->rank, static_cast<uint32_t>(left.prev), pair->merged});
        std::push_heap(queue.begin(), queue.end(), Later);
      }
    }
    if (left.next >= 0) {
      if (const PairSlot* pair = FindPair(left.id, symbols[static_cast<size_t>(left.next)].id)) {
        queue.push_back({pair->rank, top.pos, pair->merged});
        std::push_heap(queue.begin(), queue.end(), Later);
      }
    }
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.length != 0) out.push_back(symbol.id);
  }
}

void Bpe::Encode(std::string_view text, std::vector<int32_t>& out) const {
  if (options_.ignore_merges) {
    auto found = ids_.find(text);
    if (found != ids_.end()) {
      out.push_back(found->second);
      return;
    }
  }
  MergeWord(text, out);
}

void Bpe::Tokenize(std::string_view word, bool byte_level, std::vector<int64_t>& ids) const {
  if (word.empty()) return;
  WordCache& cache = LocalCache(cache_id_);
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    if (const auto* hit = cache.Find(word)) {
      const int32_t* cached = cache.Ids(hit->first);
      ids.insert(ids.end(), cached, cached + hit->second);
      return;
    }
  }
  thread_local std::vector<int32_t> result;
  thread_local std::string mapped;
  result.clear();
  if (byte_level) {
    mapped.clear();
    for (const char c : word) mapped += unicode::ByteLevelChar(static_cast<uint8_t>(c));
    Encode(mapped, result);
  } else {
    Encode(word, result);
  }
  ids.insert(ids.end(), result.begin(), result.end());
  if (cacheable) cache.Insert(word, result);
}

}  // namespace slm::text
