#include "audio/ctc_lexicon_decoder.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>

#include "audio/ctc_words.h"
#include "core/error.h"

namespace slm::audio {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kLetters = CtcAlphabet::kSize - 2;  // apostrophe and a-z: the trie's edge labels

inline float LogAdd(float a, float b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  return a > b ? a + std::log1p(std::exp(b - a)) : b + std::log1p(std::exp(a - b));
}

}  // namespace

void CtcBeamOptions::Validate() const {
  Check(beam >= 1 && beam <= 4096, "beam: must be in [1, 4096], got ", beam);
  Check(std::isfinite(lm_weight) && lm_weight >= 0, "lm_weight: must be a finite number >= 0, got ", lm_weight);
  Check(std::isfinite(word_bonus), "word_bonus: must be a finite number, got ", word_bonus);
  Check(char_threshold <= 0, "char_threshold: must be a ln-probability <= 0, got ", char_threshold);
  Check(blank_skip > 0 && blank_skip <= 1, "blank_skip: must be in (0, 1], got ", blank_skip);
}

CtcLexiconDecoder::CtcLexiconDecoder(std::shared_ptr<const WordLm> lm, const CtcBeamOptions& options)
    : lm_(std::move(lm)), options_(options) {
  options_.Validate();
  trie_.emplace_back();
  if (!lm_) return;
  // Build with dense child arrays, then flatten into sorted edge lists (a fraction of the memory).
  std::vector<std::array<int32_t, kLetters>> children(1);
  children[0].fill(-1);
  std::vector<int32_t> parent(1, -1), word(1, -1);
  int64_t spellable = 0;
  for (int32_t id = WordLm::kEos + 1; id < lm_->VocabularySize(); ++id) {
    const std::vector<int64_t> labels = CtcAlphabet::Encode(lm_->Word(id));
    if (labels.empty() || std::count(labels.begin(), labels.end(), CtcAlphabet::kSpace) > 0) continue;
    int32_t node = 0;
    for (const int64_t label : labels) {
      int32_t& child = children[node][label - 2];
      if (child < 0) {
        child = static_cast<int32_t>(children.size());
        children.emplace_back().fill(-1);
        parent.push_back(node);
        word.push_back(-1);
      }
      node = children[node][label - 2];
    }
    word[node] = id;
    ++spellable;
  }
  Check(spellable > 0, "CtcLexiconDecoder: the LM's vocabulary has no word the CTC alphabet can spell");
  std::vector<float> lookahead(children.size(), kNegInf);
  for (size_t n = children.size(); n-- > 1;) {  // children come after their parents
    if (word[n] >= 0) {
      const int32_t w = word[n];
      lookahead[n] = std::max(lookahead[n], lm_->Score(WordLmState{}, w));
    }
    lookahead[parent[n]] = std::max(lookahead[parent[n]], lookahead[n]);
  }
  trie_.assign(children.size(), TrieNode{});
  for (size_t n = 0; n < children.size(); ++n) {
    trie_[n].first_edge = static_cast<int32_t>(edges_.size());
    for (int l = 0; l < kLetters; ++l)
      if (children[n][l] >= 0) edges_.push_back({static_cast<int8_t>(l + 2), children[n][l]});
    trie_[n].edges = static_cast<int32_t>(edges_.size()) - trie_[n].first_edge;
    trie_[n].word = word[n];
    trie_[n].lookahead = n == 0 ? 0.f : lookahead[n];
  }
}

int32_t CtcLexiconDecoder::TrieChild(int32_t node, int64_t label) const {
  const TrieNode& t = trie_[node];
  for (int32_t e = t.first_edge; e < t.first_edge + t.edges; ++e)
    if (edges_[e].label == label) return edges_[e].child;
  return -1;
}

CtcTranscript CtcLexiconDecoder::Decode(const torch::Tensor& logits) const {
  CtcBeamStream stream(*this);
  stream.Advance(logits);
  return stream.Finish();
}

std::unique_ptr<CtcBeamStream> CtcLexiconDecoder::Start() const { return std::make_unique<CtcBeamStream>(*this); }

CtcBeamStream::CtcBeamStream(const CtcLexiconDecoder& decoder) : decoder_(decoder) {
  Prefix root;
  if (decoder_.lm_) root.state = decoder_.lm_->Begin();
  prefixes_.push_back(root);
  beam_.push_back({0, 0.f, kNegInf});
}

int32_t CtcBeamStream::Extend(int32_t prefix, int8_t label) {
  const uint64_t key = (static_cast<uint64_t>(prefix) << 5) | static_cast<uint64_t>(label);
  const auto it = children_.find(key);
  if (it != children_.end()) return it->second;
  const Prefix p = prefixes_[prefix];  // a copy: push_back below may reallocate
  const WordLm* lm = decoder_.lm_.get();
  Prefix q = p;
  q.parent = prefix;
  q.label = label;
  int32_t result = -1;
  if (label == CtcAlphabet::kSpace) {
    const int32_t word = lm ? decoder_.trie_[p.trie].word : -1;
    if (p.partial > 0 && (!lm || word >= 0)) {
      if (lm) q.lm = p.lm + lm->Score(p.state, word, &q.state);
      q.words = p.words + 1;
      q.trie = 0;
      q.partial = 0;
      result = static_cast<int32_t>(prefixes_.size());
    }
  } else {
    const int32_t child = lm ? decoder_.TrieChild(p.trie, label) : 0;
    if (child >= 0) {
      q.trie = child;
      q.partial = p.partial + 1;
      result = static_cast<int32_t>(prefixes_.size());
    }
  }
  if (result >= 0) prefixes_.push_back(q);
  children_.emplace(key, result);
  return result;
}

float CtcBeamStream::Score(const Hyp& h) const {
  const Prefix& p = prefixes_[h.prefix];
  const CtcBeamOptions& o = decoder_.options_;
  const float lookahead = p.partial > 0 ? decoder_.trie_[p.trie].lookahead : 0.f;
  return LogAdd(h.blank, h.non_blank) + o.lm_weight * (p.lm + lookahead) + o.word_bonus * p.words;
}

void CtcBeamStream::Advance(const torch::Tensor& logits) {
  Check(!finished_, "CtcBeamStream: Advance after Finish");
  Check(logits.dim() == 2 && logits.size(1) == CtcAlphabet::kSize, "CtcBeamStream: logits must be [T, ",
        CtcAlphabet::kSize, "], got ", logits.sizes());
  if (logits.size(0) == 0) return;
  const torch::Tensor lp = torch::log_softmax(logits.to(torch::kCPU, torch::kFloat), -1).contiguous();
  const float* data = lp.data_ptr<float>();
  const size_t at = log_probs_.size();
  log_probs_.insert(log_probs_.end(), data, data + lp.numel());
  const CtcBeamOptions& o = decoder_.options_;
  const float skip_below = std::log(o.blank_skip);
  std::vector<Hyp> next;
  std::unordered_map<int32_t, size_t> slot;
  std::vector<int8_t> candidates;
  std::vector<float> scores;
  std::vector<size_t> order;
  for (int64_t t = 0; t < lp.size(0); ++t, ++frames_) {
    const float* f = log_probs_.data() + at + t * CtcAlphabet::kSize;
    candidates.clear();
    const bool skip = o.blank_skip < 1 && f[CtcAlphabet::kBlank] > skip_below;
    if (!skip)
      for (int8_t c = 1; c < CtcAlphabet::kSize; ++c)
        if (f[c] >= o.char_threshold) candidates.push_back(c);
    next.clear();
    slot.clear();
    auto add = [&](int32_t prefix, float blank, float non_blank) {
      const auto [it, inserted] = slot.emplace(prefix, next.size());
      if (inserted) next.push_back({prefix, kNegInf, kNegInf});
      Hyp& h = next[it->second];
      h.blank = LogAdd(h.blank, blank);
      h.non_blank = LogAdd(h.non_blank, non_blank);
    };
    for (const Hyp& h : beam_) {
      const float total = LogAdd(h.blank, h.non_blank);
      const int8_t last = prefixes_[h.prefix].label;
      add(h.prefix, total + f[CtcAlphabet::kBlank], last >= 0 ? h.non_blank + f[last] : kNegInf);
      // A space before the first word, or after a blank that follows a word boundary, is silence
      // (greedy decoding drops it too), not a second boundary.
      if (prefixes_[h.prefix].partial == 0) add(h.prefix, h.blank + f[CtcAlphabet::kSpace], kNegInf);
      for (const int8_t c : candidates) {
        const int32_t child = Extend(h.prefix, c);
        if (child < 0) continue;
        // A repeated label needs a blank in between; without one it is the same label held.
        add(child, kNegInf, (c == last ? h.blank : total) + f[c]);
      }
    }
    scores.resize(next.size());
    for (size_t i = 0; i < next.size(); ++i) scores[i] = Score(next[i]);
    order.resize(next.size());
    std::iota(order.begin(), order.end(), 0);
    const size_t keep = std::min<size_t>(order.size(), static_cast<size_t>(o.beam));
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](size_t a, size_t b) {
      return scores[a] != scores[b] ? scores[a] > scores[b] : next[a].prefix < next[b].prefix;
    });
    beam_.clear();
    for (size_t i = 0; i < keep; ++i) beam_.push_back(next[order[i]]);
  }
}

std::vector<int64_t> CtcBeamStream::Labels(int32_t prefix) const {
  std::vector<int64_t> labels;
  for (int32_t p = prefix; p > 0; p = prefixes_[p].parent) labels.push_back(prefixes_[p].label);
  std::reverse(labels.begin(), labels.end());
  while (!labels.empty() && labels.back() == CtcAlphabet::kSpace) labels.pop_back();
  return labels;
}

CtcTranscript CtcBeamStream::Interim() const {
  if (beam_.empty() || frames_ == 0) return {};
  return Align(Labels(beam_.front().prefix));
}

CtcTranscript CtcBeamStream::Finish() {
  Check(!finished_, "CtcBeamStream: Finish called twice");
  finished_ = true;
  if (frames_ == 0) return {};
  const WordLm* lm = decoder_.lm_.get();
  const CtcBeamOptions& o = decoder_.options_;
  int32_t best = -1;
  float best_score = kNegInf;
  for (const Hyp& h : beam_) {
    const Prefix& p = prefixes_[h.prefix];
    float lm_score = p.lm;
    int32_t words = p.words;
    WordLmState state = p.state;
    if (p.partial > 0) {
      const int32_t word = lm ? decoder_.trie_[p.trie].word : -1;
      if (lm && word < 0) continue;  // ends inside a word: not a sentence of the lexicon
      if (lm) lm_score += lm->Score(state, word, &state);
      ++words;
    }
    if (lm) lm_score += lm->End(state);
    const float score = LogAdd(h.blank, h.non_blank) + o.lm_weight * lm_score + o.word_bonus * words;
    if (best < 0 || score > best_score) best = h.prefix, best_score = score;
  }
  if (best >= 0) return Align(Labels(best));
  // Every surviving prefix ends inside a word: keep the best one's complete words.
  std::vector<int64_t> labels = Labels(beam_.front().prefix);
  while (!labels.empty() && labels.back() != CtcAlphabet::kSpace) labels.pop_back();
  while (!labels.empty() && labels.back() == CtcAlphabet::kSpace) labels.pop_back();
  return Align(labels);
}

CtcTranscript CtcBeamStream::Align(std::vector<int64_t> labels) const {
  if (labels.empty()) return {};
  const int64_t T = frames_, L = static_cast<int64_t>(labels.size()), S = 2 * L + 1;
  auto symbol = [&](int64_t s) { return s % 2 == 0 ? CtcAlphabet::kBlank : labels[s / 2]; };
  auto lp = [&](int64_t t, int64_t s) { return log_probs_[t * CtcAlphabet::kSize + symbol(s)]; };
  // CTC Viterbi: the best single path that reads `labels`; back[t * S + s] = states stepped back.
  std::vector<float> dp(S, kNegInf), prev(S);
  std::vector<int8_t> back(static_cast<size_t>(T * S), 0);
  dp[0] = lp(0, 0);
  if (S > 1) dp[1] = lp(0, 1);
  for (int64_t t = 1; t < T; ++t) {
    std::swap(dp, prev);
    for (int64_t s = 0; s < S; ++s) {
      float best = prev[s];
      int8_t step = 0;
      if (s >= 1 && prev[s - 1] > best) best = prev[s - 1], step = 1;
      if (s >= 2 && symbol(s) != CtcAlphabet::kBlank && symbol(s) != symbol(s - 2) && prev[s - 2] > best)
        best = prev[s - 2], step = 2;
      dp[s] = best == kNegInf ? kNegInf : best + lp(t, s);
      back[t * S + s] = step;
    }
  }
  int64_t s = dp[S - 1] >= (S >= 2 ? dp[S - 2] : kNegInf) ? S - 1 : S - 2;
  std::vector<int64_t> first(L, -1), last(L, -1);
  std::vector<float> peak(L, 0.f);
  if (dp[s] != kNegInf) {
    for (int64_t t = T - 1; t >= 0; --t) {
      if (s % 2 == 1) {
        const int64_t i = s / 2;
        if (last[i] < 0) last[i] = t;
        first[i] = t;
        peak[i] = std::max(peak[i], std::exp(lp(t, s)));
      }
      s -= back[t * S + s];
    }
  }
  // (A sequence the frames cannot carry, which the search never produces, gets empty spans at 0.)
  std::vector<CtcChar> chars;
  for (int64_t i = 0; i < L; ++i) {
    const int64_t first_frame = std::max<int64_t>(first[i], 0);
    chars.push_back({labels[i], first_frame, std::max<int64_t>(last[i], first_frame - 1), peak[i]});
  }
  return TranscriptOfChars(chars);
}

}  // namespace slm::audio
