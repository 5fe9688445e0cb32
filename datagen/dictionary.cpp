#include "datagen/dictionary.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "core/strings.h"
#include "datagen/wordnet_corpus.h"

namespace slm::datagen {
namespace {

namespace stdfs = std::filesystem;

// Lexicographer files of things one can point at (lexnames(5WN)).
bool IsConcreteLexFile(int lex_filenum) {
  static const std::set<int> kConcrete = {5 /*animal*/, 6 /*artifact*/, 8 /*body*/, 13 /*food*/,
                                          17 /*object*/, 20 /*plant*/};
  return kConcrete.count(lex_filenum) > 0;
}

std::ifstream OpenOrFail(const std::string& path, const std::string& hint) {
  std::ifstream in(path);
  Check(in.good(), "cannot read '", path, "'", hint);
  return in;
}

struct IndexLine {
  std::string lemma;
  int64_t tagsense_count = 0;
  std::vector<std::string> offsets;  // sense order: the first is the most frequent
};

// One line of index.{noun,verb,adj,adv} (wndb(5WN)): lemma pos synset_cnt p_cnt [ptr_symbol...]
// sense_cnt tagsense_cnt synset_offset...; nullopt for the license header.
std::optional<IndexLine> ParseIndexLine(const std::string& line, const std::string& where) {
  if (line.empty() || line[0] == ' ') return std::nullopt;
  const std::vector<std::string> f = Split(line, " ");
  auto number = [&](size_t i, const char* what) {
    Check(i < f.size(), where, ": truncated index line (no ", what, ")");
    try {
      size_t used = 0;
      const long long v = std::stoll(f[i], &used);
      Check(used == f[i].size() && v >= 0, where, ": ", what, " '", f[i], "' is not a count");
      return static_cast<int64_t>(v);
    } catch (const std::logic_error&) {
      throw Error(Str(where, ": ", what, " '", f[i], "' is not a count"));
    }
  };
  IndexLine out;
  Check(f.size() >= 6, where, ": truncated index line");
  out.lemma = f[0];
  const int64_t synsets = number(2, "synset_cnt");
  const int64_t pointers = number(3, "p_cnt");
  const size_t tag_at = 4 + static_cast<size_t>(pointers) + 1;
  out.tagsense_count = number(tag_at, "tagsense_cnt");
  Check(f.size() == tag_at + 1 + static_cast<size_t>(synsets), where, ": expected ", synsets,
        " synset offsets after tagsense_cnt, found ", static_cast<int64_t>(f.size()) - static_cast<int64_t>(tag_at) - 1);
  out.offsets.assign(f.begin() + static_cast<std::ptrdiff_t>(tag_at) + 1, f.end());
  return out;
}

template <typename Fn>
void ForEachIndexLine(const std::string& path, Fn fn) {
  std::ifstream in = OpenOrFail(path, " (install Debian's wordnet-base, or set --wordnet-dir)");
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (auto parsed = ParseIndexLine(line, Str(path, ":", number))) fn(*parsed);
  }
}

bool IsPlainWord(const std::string& lemma) {
  return lemma.size() >= 3 && std::all_of(lemma.begin(), lemma.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

void CountWords(const std::string& path, std::unordered_map<std::string, int64_t>& counts) {
  std::ifstream in = OpenOrFail(path, " (build the corpus with `slm data corpus --source wordnet --out DIR`)");
  std::string line, word;
  while (std::getline(in, line)) {
    word.clear();
    for (const char raw : line + " ") {
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(raw)));
      if (c >= 'a' && c <= 'z') {
        word += c;
      } else if (!word.empty()) {
        ++counts[word];
        word.clear();
      }
    }
  }
}

}  // namespace

std::vector<manifest::Entry> SelectDictionary(const DictionaryOptions& options) {
  Check(options.words >= 1, "the dictionary needs at least one word, got ", options.words);
  const std::string qa_path = options.corpus_dir + "/qa.jsonl";
  Check(stdfs::is_regular_file(qa_path), "no corpus at '", options.corpus_dir,
        "' (missing qa.jsonl); build it with `slm data corpus --source wordnet --out ", options.corpus_dir, "`");
  std::unordered_map<std::string, manifest::Entry> qa_by_id;
  for (manifest::Entry& e : manifest::Read(qa_path).entries) qa_by_id.emplace(e.id, std::move(e));

  // The lexicographer file of every noun synset (data.noun), keyed by offset.
  std::unordered_map<std::string, int> lex_file;
  {
    const std::string path = options.wordnet_dir + "/data.noun";
    std::ifstream in = OpenOrFail(path, " (install Debian's wordnet-base, or set --wordnet-dir)");
    std::string line;
    int64_t number = 0;
    while (std::getline(in, line)) {
      ++number;
      try {
        if (auto synset = ParseDataLine(line, 'n')) lex_file[synset->offset] = synset->lex_filenum;
      } catch (const Error& e) {
        throw Error(Str(path, ":", number, ": ", e.what()));
      }
    }
  }
  // Sense-tagged occurrences of each lemma as a verb, adjective or adverb.
  std::unordered_map<std::string, int64_t> other_pos_tags;
  for (const char* pos : {"verb", "adj", "adv"})
    ForEachIndexLine(options.wordnet_dir + "/index." + pos, [&](const IndexLine& l) {
      int64_t& best = other_pos_tags[l.lemma];
      best = std::max(best, l.tagsense_count);
    });
  std::unordered_map<std::string, int64_t> counts;
  CountWords(options.corpus_dir + "/text/train.txt", counts);
  CountWords(options.corpus_dir + "/sentences/train.txt", counts);

  struct Candidate {
    int64_t count;
    std::string word;
    const manifest::Entry* qa;
  };
  std::vector<Candidate> candidates;
  ForEachIndexLine(options.wordnet_dir + "/index.noun", [&](const IndexLine& l) {
    if (!IsPlainWord(l.lemma) || l.offsets.empty()) return;
    const auto lex = lex_file.find(l.offsets[0]);
    if (lex == lex_file.end() || !IsConcreteLexFile(lex->second)) return;
    const auto qa = qa_by_id.find("qa-n-" + l.offsets[0]);
    if (qa == qa_by_id.end()) return;
    if (qa->second.prompt != "what is a " + l.lemma && qa->second.prompt != "what is an " + l.lemma) return;
    const auto other = other_pos_tags.find(l.lemma);
    if (other != other_pos_tags.end() && other->second > l.tagsense_count) return;
    const auto c = counts.find(l.lemma);
    candidates.push_back({c == counts.end() ? 0 : c->second, l.lemma, &qa->second});
  });
  Check(static_cast<int64_t>(candidates.size()) >= options.words, "the dictionary asks for ", options.words,
        " words but only ", candidates.size(), " nouns of ", options.wordnet_dir, " qualify");
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return a.count != b.count ? a.count > b.count : a.word < b.word;
  });
  std::vector<manifest::Entry> out;
  for (int64_t i = 0; i < options.words; ++i) {
    const Candidate& c = candidates[static_cast<size_t>(i)];
    manifest::Entry e = *c.qa;
    e.extra["word"] = c.word;
    e.extra["rank"] = i;
    e.extra["count"] = c.count;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace slm::datagen
