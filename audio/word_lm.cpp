#include "audio/word_lm.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "audio/ctc.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/strings.h"

namespace slm::audio {
namespace {

constexpr int kIdBits = 21;  // three ids per 64-bit key
constexpr int32_t kMaxWords = (1 << kIdBits) - 1;
constexpr double kLn10 = 2.302585092994045684;
constexpr float kLog10Floor = -99.f;  // ARPA's "never": <s> as a predicted word

void Unpack(uint64_t key, int n, int32_t* ids) {
  for (int i = n - 1; i >= 0; --i) {
    ids[i] = static_cast<int32_t>(key & kMaxWords);
    key >>= kIdBits;
  }
}

bool IsSpellable(const std::string& word) {
  return !word.empty() && word.find(' ') == std::string::npos && CtcAlphabet::Normalize(word) == word;
}

}  // namespace

uint64_t WordLm::Key(const int32_t* ids, int n) {
  uint64_t key = 0;
  for (int i = 0; i < n; ++i) key = (key << kIdBits) | static_cast<uint64_t>(ids[i]);
  return key;
}

int32_t WordLm::AddWord(const std::string& word) {
  const auto [it, inserted] = ids_.emplace(word, static_cast<int32_t>(words_.size()));
  if (inserted) words_.push_back(word);
  return it->second;
}

int32_t WordLm::Id(const std::string& word) const {
  const auto it = ids_.find(word);
  return it == ids_.end() ? -1 : it->second;
}

int64_t WordLm::Count(int n) const {
  if (n == 1) return static_cast<int64_t>(unigrams_.size());
  if (n < 1 || n > order_) return 0;
  return static_cast<int64_t>(ngrams_[n - 2].size());
}

const WordLm::Entry* WordLm::Find(const int32_t* ids, int n) const {
  if (n == 1) return &unigrams_[ids[0]];
  const auto& table = ngrams_[n - 2];
  const auto it = table.find(Key(ids, n));
  return it == table.end() ? nullptr : &it->second;
}

float WordLm::Query(const int32_t* ctx, int n, int32_t w) const {
  float backoff = 0;
  int32_t ids[3];
  for (int k = std::min(n, order_ - 1); k >= 1; --k) {
    std::copy(ctx + n - k, ctx + n, ids);
    ids[k] = w;
    if (const Entry* e = Find(ids, k + 1)) return backoff + e->logp;
    if (const Entry* c = Find(ctx + n - k, k)) backoff += c->backoff;
  }
  return backoff + unigrams_[w].logp;
}

WordLmState WordLm::Begin() const {
  WordLmState s;
  if (order_ >= 2) s.words[1] = kBos;
  return s;
}

float WordLm::Score(const WordLmState& state, int32_t word, WordLmState* next) const {
  int32_t ctx[2];
  int n = 0;
  for (int i = 3 - order_; i < 2; ++i)  // the last order-1 remembered words
    if (i >= 0 && state.words[i] >= 0) ctx[n++] = state.words[i];
  const float score = Query(ctx, n, word);
  if (next != nullptr) {
    WordLmState s;
    if (order_ == 3) s.words = {state.words[1], word};
    else if (order_ == 2) s.words = {-1, word};
    *next = s;
  }
  return score;
}

double WordLm::SentenceScore(const std::string& sentence) const {
  WordLmState state = Begin();
  double total = 0;
  const std::string text = CtcAlphabet::Normalize(sentence);
  for (const std::string& w : Split(text, " ")) {
    if (w.empty()) continue;
    const int32_t id = Id(w);
    total += Score(state, id < 0 ? kUnk : id, &state);
  }
  return total + End(state);
}

WordLm WordLm::Build(const std::vector<std::string>& sentences, const WordLmOptions& options) {
  const int N = options.order;
  Check(N >= 1 && N <= 3, "WordLm: order must be 1, 2 or 3, got ", N);
  Check(options.min_count >= 1, "WordLm: min_count must be at least 1, got ", options.min_count);
  Check(options.max_vocabulary >= 0, "WordLm: max_vocabulary must be >= 0, got ", options.max_vocabulary);

  std::vector<std::vector<std::string>> tokenized;
  std::map<std::string, int64_t> frequency;
  for (const std::string& s : sentences) {
    std::vector<std::string> words;
    for (const std::string& w : Split(CtcAlphabet::Normalize(s), " "))
      if (!w.empty()) words.push_back(w), ++frequency[w];
    if (!words.empty()) tokenized.push_back(std::move(words));
  }
  Check(!frequency.empty(), "WordLm: the training text has no words");
  std::vector<std::pair<std::string, int64_t>> vocabulary(frequency.begin(), frequency.end());
  if (options.max_vocabulary > 0 && static_cast<int64_t>(vocabulary.size()) > options.max_vocabulary) {
    std::stable_sort(vocabulary.begin(), vocabulary.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    vocabulary.resize(options.max_vocabulary);
    std::sort(vocabulary.begin(), vocabulary.end());
  }
  Check(vocabulary.size() + 3 <= static_cast<size_t>(kMaxWords), "WordLm: more than ", kMaxWords - 3,
        " words; set max_vocabulary");

  WordLm lm;
  lm.order_ = N;
  lm.AddWord("<unk>"), lm.AddWord("<s>"), lm.AddWord("</s>");
  for (const auto& [word, count] : vocabulary) lm.AddWord(word);

  // Raw counts per order (raw[n-1]: n-grams).
  std::vector<std::unordered_map<uint64_t, int64_t>> raw(N);
  std::vector<int32_t> seq;
  for (const auto& words : tokenized) {
    seq.assign(1, kBos);
    for (const std::string& w : words) {
      const int32_t id = lm.Id(w);
      seq.push_back(id < 0 ? kUnk : id);
    }
    seq.push_back(kEos);
    for (size_t i = 0; i < seq.size(); ++i)
      for (int n = 1; n <= N && i + n <= seq.size(); ++n) ++raw[n - 1][Key(&seq[i], n)];
  }
  // Kneser-Ney counts: raw for the highest order and for n-grams that start with <s>; else the
  // number of distinct words seen before the n-gram.
  std::vector<std::unordered_map<uint64_t, int64_t>> adjusted(N);
  adjusted[N - 1] = raw[N - 1];
  int32_t ids[3];
  for (int n = N - 1; n >= 1; --n) {
    for (const auto& [key, count] : raw[n]) {
      Unpack(key, n + 1, ids);
      ++adjusted[n - 1][Key(ids + 1, n)];
    }
    for (const auto& [key, count] : raw[n - 1]) {
      Unpack(key, n, ids);
      if (ids[0] == kBos) adjusted[n - 1][key] = count;
    }
  }
  std::vector<double> discount(N);
  for (int n = 1; n <= N; ++n) {
    int64_t n1 = 0, n2 = 0;
    for (const auto& [key, a] : adjusted[n - 1]) n1 += a == 1, n2 += a == 2;
    discount[n - 1] = n1 > 0 && n2 > 0 ? std::clamp(double(n1) / (n1 + 2.0 * n2), 0.05, 0.95) : 0.5;
  }
  // Per context of each order >= 2: the sum of its continuations' counts and how many there are.
  struct Context { double total = 0; int64_t types = 0; };
  std::vector<std::unordered_map<uint64_t, Context>> contexts(N);
  for (int n = 2; n <= N; ++n)
    for (const auto& [key, a] : adjusted[n - 1]) {
      Context& c = contexts[n - 1][key >> kIdBits];
      c.total += a, ++c.types;
    }
  double unigram_total = 0;
  int64_t unigram_types = 0;
  for (const auto& [key, a] : adjusted[0])
    if (key != static_cast<uint64_t>(kBos)) unigram_total += a, ++unigram_types;
  const double predictable = lm.VocabularySize() - 1;  // every word but <s>

  // The unpruned interpolated probability of ids[n-1] after ids[0..n-2].
  auto probability = [&](auto& self, const int32_t* g, int n) -> double {
    const double d = discount[n - 1];
    if (n == 1) {
      const auto it = adjusted[0].find(Key(g, 1));
      const double a = it == adjusted[0].end() ? 0 : it->second;
      return std::max(a - d, 0.0) / unigram_total + d * unigram_types / unigram_total / predictable;
    }
    const double lower = self(self, g + 1, n - 1);
    const auto ctx = contexts[n - 1].find(Key(g, n - 1));
    if (ctx == contexts[n - 1].end()) return lower;
    const auto it = adjusted[n - 1].find(Key(g, n));
    const double a = it == adjusted[n - 1].end() ? 0 : it->second;
    return (std::max(a - d, 0.0) + d * ctx->second.types * lower) / ctx->second.total;
  };

  lm.unigrams_.resize(lm.VocabularySize());
  for (int32_t id = 0; id < lm.VocabularySize(); ++id)
    lm.unigrams_[id].logp = id == kBos ? kLog10Floor * kLn10 : std::log(probability(probability, &id, 1));
  lm.ngrams_.resize(N - 1);
  for (int n = 2; n <= N; ++n) {
    for (const auto& [key, count] : raw[n - 1]) {
      if (count < options.min_count) continue;
      Unpack(key, n, ids);
      lm.ngrams_[n - 2][key].logp = static_cast<float>(std::log(probability(probability, ids, n)));
    }
    // Backoff weights of the (n-1)-gram contexts, so that each context's distribution sums to
    // one over what is kept: (1 - kept mass) / (1 - the lower order's mass on the kept words).
    std::unordered_map<uint64_t, std::pair<double, double>> mass;
    for (const auto& [key, e] : lm.ngrams_[n - 2]) {
      Unpack(key, n, ids);
      auto& m = mass[key >> kIdBits];
      m.first += std::exp(double(e.logp));
      m.second += std::exp(double(lm.Query(ids + 1, n - 2, ids[n - 1])));
    }
    for (const auto& [ctx, m] : mass) {
      Unpack(ctx, n - 1, ids);
      Entry* entry = n == 2 ? &lm.unigrams_[ids[0]] : &lm.ngrams_[n - 3].at(ctx);
      entry->backoff = static_cast<float>(std::log(std::max(1 - m.first, 1e-12) / std::max(1 - m.second, 1e-12)));
    }
  }
  return lm;
}

void WordLm::Save(const std::string& path) const {
  fs::AtomicWrite(path, [&](std::FILE* f) {
    std::fprintf(f, "# slm word LM (audio/word_lm.h): interpolated Kneser-Ney, order %d, log10, %d words\n\n",
                 order_, VocabularySize());
    std::fprintf(f, "\\data\\\n");
    for (int n = 1; n <= order_; ++n) std::fprintf(f, "ngram %d=%lld\n", n, static_cast<long long>(Count(n)));
    auto write = [&](const int32_t* g, int n, const Entry& e) {
      std::fprintf(f, "%.6f", e.logp / kLn10);
      for (int i = 0; i < n; ++i) std::fprintf(f, "%c%s", i == 0 ? '\t' : ' ', words_[g[i]].c_str());
      if (n < order_) std::fprintf(f, "\t%.6f", e.backoff / kLn10);
      std::fprintf(f, "\n");
    };
    std::fprintf(f, "\n\\1-grams:\n");
    for (int32_t id = 0; id < VocabularySize(); ++id) write(&id, 1, unigrams_[id]);
    for (int n = 2; n <= order_; ++n) {
      std::fprintf(f, "\n\\%d-grams:\n", n);
      std::vector<uint64_t> keys;
      for (const auto& [key, e] : ngrams_[n - 2]) keys.push_back(key);
      std::sort(keys.begin(), keys.end());  // deterministic files
      int32_t ids[3];
      for (uint64_t key : keys) {
        Unpack(key, n, ids);
        write(ids, n, ngrams_[n - 2].at(key));
      }
    }
    std::fprintf(f, "\n\\end\\\n");
  });
}

WordLm WordLm::Load(const std::string& file_or_dir) {
  const std::string path =
      std::filesystem::is_directory(file_or_dir) ? file_or_dir + "/" + kWordLmFile : file_or_dir;
  Check(std::filesystem::is_regular_file(path), "word LM '", path, "' does not exist");
  const std::string text = fs::ReadFile(path);
  std::vector<std::string> lines;  // empty lines kept: messages name line numbers
  for (size_t start = 0; start < text.size();) {
    const size_t end = std::min(text.find('\n', start), text.size());
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  size_t at = 0;  // next line index; its number is at + 1
  auto fail = [&](size_t line, const std::string& message) -> void {
    throw Error(Str(path, ":", line + 1, ": ", message));
  };
  auto next_content = [&]() -> bool {  // skips blank lines
    while (at < lines.size() && Trim(lines[at]).empty()) ++at;
    return at < lines.size();
  };
  while (at < lines.size() && Trim(lines[at]) != "\\data\\") ++at;
  Check(at < lines.size(), path, ": not an ARPA language model (no \\data\\ line)");
  ++at;
  std::vector<int64_t> counts;
  while (next_content() && StartsWith(Trim(lines[at]), "ngram ")) {
    const std::string spec = Trim(lines[at]).substr(6);
    const size_t eq = spec.find('=');
    char* end = nullptr;
    errno = 0;
    const long n = eq == std::string::npos ? 0 : std::strtol(spec.c_str(), &end, 10);
    if (eq == std::string::npos || end != spec.c_str() + eq || n != static_cast<long>(counts.size()) + 1)
      fail(at, Str("expected 'ngram ", counts.size() + 1, "=<count>', got '", Trim(lines[at]), "'"));
    const std::string count_text = spec.substr(eq + 1);
    const long long count = std::strtoll(count_text.c_str(), &end, 10);
    if (count_text.empty() || *end != '\0' || errno != 0 || count < 0)
      fail(at, Str("bad n-gram count '", count_text, "'"));
    counts.push_back(count);
    ++at;
  }
  if (counts.empty()) fail(at, "the \\data\\ section lists no 'ngram N=<count>' lines");
  if (counts.size() > 3) fail(at - 1, Str("order ", counts.size(), " is not supported (orders 1 to 3)"));

  WordLm lm;
  lm.order_ = static_cast<int>(counts.size());
  lm.AddWord("<unk>"), lm.AddWord("<s>"), lm.AddWord("</s>");
  lm.unigrams_.resize(3);
  std::vector<bool> listed(3, false);
  lm.ngrams_.resize(lm.order_ - 1);
  auto number = [&](const std::string& field, const char* what) -> float {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(field.c_str(), &end);
    if (field.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v) || v > 0)
      fail(at, Str("expected a log10 ", what, " (a finite number <= 0), got '", field, "'"));
    return static_cast<float>(v * kLn10);
  };
  for (int n = 1; n <= lm.order_; ++n) {
    if (!next_content()) fail(at, Str("truncated: expected the \\", n, "-grams: section"));
    if (Trim(lines[at]) != Str("\\", n, "-grams:"))
      fail(at, Str("expected '\\", n, "-grams:', got '", Trim(lines[at]), "'"));
    ++at;
    for (int64_t i = 0; i < counts[n - 1]; ++i) {
      if (!next_content() || StartsWith(Trim(lines[at]), "\\"))
        fail(at, Str("truncated: the header promises ", counts[n - 1], " ", n, "-grams, found ", i));
      std::vector<std::string> fields;
      for (const std::string& f : Split(lines[at], " \t\r"))
        if (!f.empty()) fields.push_back(f);
      const bool has_backoff = static_cast<int>(fields.size()) == n + 2;
      if (static_cast<int>(fields.size()) != n + 1 && !has_backoff)
        fail(at, Str("expected a log10 probability, ", n, " word", n > 1 ? "s" : "",
                     n < lm.order_ ? " and an optional backoff weight" : "", ", got '", Trim(lines[at]), "'"));
      if (has_backoff && n == lm.order_) fail(at, Str("an n-gram of the highest order (", n, ") has a backoff weight"));
      Entry e;
      e.logp = number(fields[0], "probability");
      if (has_backoff) {
        char* end = nullptr;
        const double b = std::strtod(fields[n + 1].c_str(), &end);
        if (*end != '\0' || !std::isfinite(b))
          fail(at, Str("expected a log10 backoff weight, got '", fields[n + 1], "'"));
        e.backoff = static_cast<float>(b * kLn10);
      }
      int32_t ids[3];
      for (int k = 0; k < n; ++k) {
        const std::string& w = fields[1 + k];
        if (n == 1) {
          if (w != "<s>" && w != "</s>" && w != "<unk>" && !IsSpellable(w))
            fail(at, Str("word '", w, "' is not a normalised CTC word (a-z and inner apostrophes)"));
          if (lm.VocabularySize() >= kMaxWords) fail(at, Str("more than ", kMaxWords, " words"));
          ids[0] = lm.AddWord(w);
          if (static_cast<size_t>(ids[0]) < listed.size() && listed[ids[0]]) fail(at, Str("word '", w, "' is listed twice"));
          listed.resize(std::max<size_t>(listed.size(), ids[0] + 1), false);
          listed[ids[0]] = true;
        } else {
          ids[k] = lm.Id(w);
          if (ids[k] < 0) fail(at, Str("word '", w, "' is not among the 1-grams"));
        }
      }
      if (n == 1) {
        lm.unigrams_.resize(lm.VocabularySize());
        lm.unigrams_[ids[0]] = e;
        ++at;
        continue;
      }
      if (n > 2 && lm.Find(ids, n - 1) == nullptr)
        fail(at, Str("the context of this ", n, "-gram is not among the ", n - 1, "-grams"));
      if (!lm.ngrams_[n - 2].emplace(Key(ids, n), e).second) fail(at, "this n-gram is listed twice");
      ++at;
    }
  }
  if (!next_content() || Trim(lines[at]) != "\\end\\")
    fail(std::min(at, lines.size()), at < lines.size() ? Str("expected '\\end\\', got '", Trim(lines[at]), "'")
                                                       : std::string("truncated: no '\\end\\' line"));
  if (!listed[kBos] || !listed[kEos]) throw Error(Str(path, ": the 1-grams must list <s> and </s>"));
  if (!listed[kUnk]) lm.unigrams_[kUnk].logp = kLog10Floor * kLn10;
  return lm;
}

}  // namespace slm::audio
