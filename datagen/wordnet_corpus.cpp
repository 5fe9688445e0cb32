#include "datagen/wordnet_corpus.h"

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unordered_set>

#include "core/error.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/strings.h"

namespace slm::datagen {
namespace {

bool IsAsciiLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsVowel(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

bool AllDigits(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  return true;
}

int ParseCount(const std::string& token, int base, const char* what) {
  size_t used = 0;
  long value = -1;
  try {
    value = std::stol(token, &used, base);
  } catch (const std::exception&) {
    used = 0;
  }
  Check(used == token.size() && value >= 0, "bad ", what, " '", token, "'");
  return static_cast<int>(value);
}

// "galore(ip)" -> "galore", "domestic_dog" -> "domestic dog".
std::string CleanLemma(std::string word) {
  for (const char* marker : {"(a)", "(p)", "(ip)"}) {
    if (EndsWith(word, marker)) {
      word.resize(word.size() - std::strlen(marker));
      break;
    }
  }
  for (char& c : word)
    if (c == '_') c = ' ';
  return word;
}

// Splits a gloss at semicolons outside double quotes: the unquoted parts before the first quoted
// part form the definition; each quoted part is an example.
void SplitGloss(std::string_view gloss, Synset& synset) {
  std::vector<std::string> parts;
  std::string current;
  bool in_quote = false;
  for (char c : gloss) {
    if (c == '"') in_quote = !in_quote;
    if (c == ';' && !in_quote) {
      parts.push_back(Trim(current));
      current.clear();
    } else {
      current += c;
    }
  }
  parts.push_back(Trim(current));

  std::vector<std::string> definition_parts;
  for (const std::string& part : parts) {
    if (part.empty()) continue;
    if (part[0] == '"') {
      // Drop the quotes and anything after the closing one (attributions such as "- Shakespeare").
      const size_t close = part.rfind('"');
      const std::string example = Trim(close > 0 ? part.substr(1, close - 1) : part.substr(1));
      if (!example.empty()) synset.examples.push_back(example);
    } else if (synset.examples.empty()) {
      definition_parts.push_back(part);
    }
  }
  synset.definition = Join(definition_parts, "; ");
}

// splitmix64's finaliser: a cheap bijection that spreads every input bit over the output.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

bool StartsWithIndefinite(std::string_view answer) {
  for (const char* prefix : {"a ", "an ", "any ", "one ", "someone ", "something ", "somebody "})
    if (StartsWith(answer, prefix)) return true;
  return false;
}

// "the act of ...", "that which ...", "either of ...": a definite or pronoun start describes
// something that is not one of many, so the question takes no article.
bool StartsWithDeterminer(std::string_view answer) {
  for (const char* prefix : {"the ", "that ", "this ", "these ", "those ", "either ", "neither ",
                             "each ", "every ", "some ", "all ", "no ", "anything ", "everything "})
    if (StartsWith(answer, prefix)) return true;
  return false;
}

// Noun lexicographer files whose members are mostly countable things: animal, artifact, body,
// location, object, person, plant, shape (lexnames(5WN)).
bool IsCountableLexFile(int lex_filenum) {
  for (int countable : {5, 6, 8, 15, 17, 18, 20, 25})
    if (lex_filenum == countable) return true;
  return false;
}

// Abbreviations that a final period would otherwise disguise as the end of a sentence.
bool IsAbbreviation(std::string_view word) {
  const std::string lower = ToLower(word);
  for (const char* abbreviation :
       {"etc", "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "inc", "ltd", "cf", "approx"})
    if (lower == abbreviation) return true;
  return false;
}

// One whitespace-free token of a sentence body (a trailing comma already removed).
bool IsSpeakableWord(std::string_view word) {
  if (word.empty() || !IsAsciiLetter(word[0])) return false;
  int letters = 0;
  int upper = 0;
  for (size_t i = 0; i < word.size(); ++i) {
    const char c = word[i];
    if (IsAsciiLetter(c)) {
      ++letters;
      upper += IsUpper(c);
    } else if (c == '-') {
      if (i + 1 >= word.size() || !IsAsciiLetter(word[i - 1]) || !IsAsciiLetter(word[i + 1]))
        return false;
    } else if (c == '\'') {
      const bool inside = i + 1 < word.size() && IsAsciiLetter(word[i + 1]);
      const bool plural_possessive =
          i + 1 == word.size() && (word[i - 1] == 's' || word[i - 1] == 'S');
      if (!IsAsciiLetter(word[i - 1]) || !(inside || plural_possessive)) return false;
    } else {
      return false;
    }
  }
  return !(letters >= 2 && upper == letters);  // all-caps tokens are acronyms: read how?
}

constexpr const char* kDataFiles[][2] = {
    {"n", "data.noun"}, {"v", "data.verb"}, {"a", "data.adj"}, {"r", "data.adv"}};

void ValidateOptions(const WordNetCorpusOptions& options) {
  Check(!options.out_dir.empty(), "wordnet corpus: an output directory is required");
  const auto valid_fraction = [](double f) { return std::isfinite(f) && f >= 0 && f < 1; };
  Check(valid_fraction(options.valid_fraction), "wordnet corpus: valid fraction ",
        options.valid_fraction, " must be in [0, 1)");
  Check(valid_fraction(options.test_fraction), "wordnet corpus: test fraction ",
        options.test_fraction, " must be in [0, 1)");
  Check(options.valid_fraction + options.test_fraction < 1, "wordnet corpus: valid fraction ",
        options.valid_fraction, " + test fraction ", options.test_fraction,
        " leave nothing for training; their sum must be below 1");
  Check(std::filesystem::is_directory(options.wordnet_dir), "WordNet directory '",
        options.wordnet_dir,
        "' not found: install the Debian package with `apt-get install wordnet-base` or pass "
        "--wordnet-dir");
  for (const auto& file : kDataFiles) {
    const std::string path = (std::filesystem::path(options.wordnet_dir) / file[1]).string();
    Check(std::filesystem::is_regular_file(path), "WordNet data file '", path,
          "' not found: install the Debian package with `apt-get install wordnet-base` or pass "
          "--wordnet-dir pointing at a directory with data.noun, data.verb, data.adj, data.adv");
  }
}

// Accumulates the output of every synset in file order, deduplicating across splits.
class CorpusWriter {
 public:
  CorpusWriter(const WordNetCorpusOptions& options, WordNetCorpusStats& stats)
      : options_(options), stats_(stats) {}

  void Add(const Synset& synset) {
    const DataSplit split = SplitFor(synset.pos, synset.offset, options_.seed,
                                     options_.valid_fraction, options_.test_fraction);
    const int s = static_cast<int>(split);
    WordNetSplitCounts& counts = stats_.splits[s];
    ++stats_.synsets;
    ++counts.synsets;
    stats_.examples += static_cast<int64_t>(synset.examples.size());

    if (!synset.definition.empty())
      AddTextLine(Join(synset.words, ", ") + ": " + synset.definition, s);
    for (const std::string& example : synset.examples) AddTextLine(example, s);

    for (const std::string& example : synset.examples) AddSentence(example, s);
    if (!synset.definition.empty()) AddSentence(synset.definition, s);

    const std::optional<std::string> head = QuestionHead(synset);
    const std::string answer = AnswerFor(synset);
    if (!head || answer.empty()) {
      ++stats_.qa_skipped;
      return;
    }
    manifest::Entry entry;
    entry.id = Str("qa-", synset.pos, "-", synset.offset);
    entry.task = "qa";
    entry.prompt = QuestionFor(synset, *head, answer);
    entry.response = answer;
    entry.extra["split"] = SplitName(split);
    qa_.push_back(std::move(entry));
    ++counts.qa_pairs;
  }

  void Write() const {
    const std::filesystem::path out(options_.out_dir);
    fs::MakeDirs((out / "text").string());
    fs::MakeDirs((out / "sentences").string());
    for (DataSplit split : kDataSplits) {
      const std::string file = Str(SplitName(split), ".txt");
      fs::AtomicWriteString((out / "text" / file).string(), text_[static_cast<int>(split)]);
      fs::AtomicWriteString((out / "sentences" / file).string(),
                            sentences_[static_cast<int>(split)]);
    }
    manifest::Write((out / "qa.jsonl").string(), qa_);
  }

 private:
  void AddTextLine(const std::string& line, int split) {
    if (!seen_text_.insert(line).second) {
      ++stats_.duplicate_text_lines;
      return;
    }
    text_[split] += line;
    text_[split] += '\n';
    ++stats_.splits[split].text_lines;
  }

  void AddSentence(const std::string& raw, int split) {
    std::string sentence = NormalizeSentence(raw);
    if (!IsSpeakable(sentence)) {
      ++stats_.unspeakable_sentences;
      return;
    }
    if (!seen_sentences_.insert(sentence).second) {
      ++stats_.duplicate_sentences;
      return;
    }
    sentences_[split] += sentence;
    sentences_[split] += '\n';
    ++stats_.splits[split].sentences;
  }

  const WordNetCorpusOptions& options_;
  WordNetCorpusStats& stats_;
  std::array<std::string, 3> text_;
  std::array<std::string, 3> sentences_;
  std::vector<manifest::Entry> qa_;
  std::unordered_set<std::string> seen_text_;
  std::unordered_set<std::string> seen_sentences_;
};

}  // namespace

std::optional<Synset> ParseDataLine(const std::string& line, char pos) {
  if (StartsWith(line, "  ") || Trim(line).empty()) return std::nullopt;
  const size_t bar = line.find('|');
  Check(bar != std::string::npos, "no '|' before the gloss");
  const std::vector<std::string> fields = Split(std::string_view(line).substr(0, bar), " ");
  size_t next = 0;
  auto take = [&](const char* what) -> const std::string& {
    Check(next < fields.size(), "line ends before the ", what);
    return fields[next++];
  };

  Synset synset;
  synset.pos = pos;
  synset.offset = take("synset offset");
  Check(synset.offset.size() == 8 && AllDigits(synset.offset), "bad synset offset '", synset.offset,
        "'");
  const std::string& lex_filenum = take("lexicographer file number");
  Check(lex_filenum.size() == 2 && AllDigits(lex_filenum), "bad lexicographer file number '",
        lex_filenum, "'");
  synset.lex_filenum = std::stoi(lex_filenum);
  const std::string& ss_type = take("synset type");
  const bool type_matches =
      ss_type.size() == 1 && (ss_type[0] == pos || (pos == 'a' && ss_type[0] == 's'));
  Check(type_matches, "synset type '", ss_type, "' does not belong in a '", pos, "' data file");
  synset.ss_type = ss_type[0];

  const int word_count = ParseCount(take("word count"), 16, "word count");
  Check(word_count > 0, "a synset needs at least one word");
  for (int i = 0; i < word_count; ++i) {
    synset.words.push_back(CleanLemma(take("words")));
    take("lex_id of a word");
  }
  const int pointer_count = ParseCount(take("pointer count"), 10, "pointer count");
  for (int i = 0; i < pointer_count; ++i) {
    take("pointer symbol");
    const std::string& target = take("pointer target offset");
    Check(target.size() == 8 && AllDigits(target), "bad pointer target offset '", target, "'");
    take("pointer part of speech");
    take("pointer source/target");
  }
  if (pos == 'v' && next < fields.size()) {
    const int frame_count = ParseCount(take("frame count"), 10, "frame count");
    for (int i = 0; i < frame_count; ++i) {
      take("'+' of a frame");
      take("frame number");
      take("frame word number");
    }
  }
  Check(next == fields.size(), "unexpected field '", fields[next], "' after the pointers");

  SplitGloss(Trim(std::string_view(line).substr(bar + 1)), synset);
  Check(!synset.definition.empty() || !synset.examples.empty(), "empty gloss");
  return synset;
}

const char* SplitName(DataSplit split) {
  switch (split) {
    case DataSplit::kTrain:
      return "train";
    case DataSplit::kValid:
      return "valid";
    case DataSplit::kTest:
      return "test";
  }
  return "train";
}

DataSplit SplitFor(char pos, std::string_view offset, uint64_t seed, double valid_fraction,
                   double test_fraction) {
  // FNV-1a over pos and offset: a fixed function, unlike std::hash, so splits are reproducible.
  uint64_t hash = 0xcbf29ce484222325ULL;
  auto feed = [&hash](char c) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  };
  feed(pos);
  for (char c : offset) feed(c);
  const double u = static_cast<double>(Mix(hash ^ Mix(seed)) >> 11) * 0x1.0p-53;
  if (u < valid_fraction) return DataSplit::kValid;
  if (u < valid_fraction + test_fraction) return DataSplit::kTest;
  return DataSplit::kTrain;
}

std::string IndefiniteArticle(std::string_view word) {
  const std::string w = ToLower(Trim(word));
  if (w.empty()) return "a";
  for (const char* silent_h : {"hour", "honest", "honor", "honour", "heir"})
    if (StartsWith(w, silent_h)) return "an";
  // "you" and "w" sounds spelt with a vowel.
  for (const char* consonant_sound : {"eu", "ewe", "one", "once", "uni"})
    if (StartsWith(w, consonant_sound)) return "a";
  if (w[0] == 'u') {
    if (StartsWith(w, "un") || StartsWith(w, "um")) return "an";  // uncle, umbrella
    // u + single consonant + vowel reads "you": unit, urine, utensil, usage, uvula.
    const bool you_sound = w.size() >= 3 && IsAsciiLetter(w[1]) && !IsVowel(w[1]) && IsVowel(w[2]);
    return you_sound ? "a" : "an";
  }
  return IsVowel(w[0]) ? "an" : "a";
}

std::optional<std::string> QuestionHead(const Synset& synset) {
  for (const std::string& word : synset.words) {
    if (word.size() < 2 || word.size() > 32 || !IsAsciiLetter(word[0])) continue;
    bool natural = true;
    for (char c : word)
      natural = natural && (IsAsciiLetter(c) || c == ' ' || c == '-' || c == '\'');
    const std::vector<std::string> tokens = Split(word, " ");
    natural = natural && tokens.size() <= 4;
    for (const std::string& token : tokens) {
      int letters = 0;
      int upper = 0;
      for (char c : token) {
        letters += IsAsciiLetter(c);
        upper += IsUpper(c);
      }
      natural = natural && !(letters >= 2 && upper == letters);
    }
    if (natural) return word;
  }
  return std::nullopt;
}

std::string AnswerFor(const Synset& synset) {
  std::string answer = Trim(synset.definition);
  while (!answer.empty() && answer[0] == '(') {
    const size_t close = answer.find(')');
    if (close == std::string::npos) break;
    answer = Trim(std::string_view(answer).substr(close + 1));
  }
  return answer;
}

std::string QuestionFor(const Synset& synset, const std::string& head, const std::string& answer) {
  switch (synset.pos) {
    case 'n': {
      const bool proper = IsUpper(head[0]);
      const bool countable =
          StartsWithIndefinite(answer) ||
          (IsCountableLexFile(synset.lex_filenum) && !StartsWithDeterminer(answer));
      if (!proper && countable) return Str("what is ", IndefiniteArticle(head), " ", head);
      return Str("what is ", head);
    }
    case 'v':
      return Str("what does it mean to ", head);
    default:
      return Str("what does ", head, " mean");
  }
}

std::string NormalizeSentence(std::string_view raw) {
  std::string sentence = Join(Split(raw, " \t\r\n"), " ");
  std::string cleaned;
  cleaned.reserve(sentence.size() + 1);
  for (size_t i = 0; i < sentence.size(); ++i) {
    if (sentence[i] == ' ' && i + 1 < sentence.size() && sentence[i + 1] == ',') continue;
    cleaned += sentence[i];
  }
  if (cleaned.empty()) return cleaned;
  if (cleaned.back() == '!') cleaned.back() = '.';
  if (cleaned.back() != '.' && cleaned.back() != '?') cleaned += '.';
  if (cleaned[0] >= 'a' && cleaned[0] <= 'z') cleaned[0] = static_cast<char>(cleaned[0] - 32);
  return cleaned;
}

bool IsSpeakable(std::string_view sentence) {
  if (sentence.size() < 2 || !IsUpper(sentence[0])) return false;
  const char final_mark = sentence.back();
  if (final_mark != '.' && final_mark != '?') return false;
  const std::string_view body = sentence.substr(0, sentence.size() - 1);
  std::vector<std::string_view> words;
  size_t start = 0;
  while (start <= body.size()) {
    const size_t space = std::min(body.find(' ', start), body.size());
    words.push_back(body.substr(start, space - start));
    start = space + 1;
  }
  if (words.size() < 3 || words.size() > 16) return false;
  for (size_t i = 0; i < words.size(); ++i) {
    std::string_view word = words[i];
    // A comma ends a word that another word follows; an empty word means doubled spaces.
    if (!word.empty() && word.back() == ',' && i + 1 < words.size()) word.remove_suffix(1);
    if (!IsSpeakableWord(word)) return false;
  }
  return !(final_mark == '.' && IsAbbreviation(words.back()));
}

nlohmann::json WordNetCorpusStats::ToJson() const {
  nlohmann::json json;
  json["synsets"] = synsets;
  json["examples"] = examples;
  json["qa_skipped"] = qa_skipped;
  json["duplicate_text_lines"] = duplicate_text_lines;
  json["unspeakable_sentences"] = unspeakable_sentences;
  json["duplicate_sentences"] = duplicate_sentences;
  int64_t qa_pairs = 0;
  for (DataSplit split : kDataSplits) {
    const WordNetSplitCounts& counts = Of(split);
    const std::string name = SplitName(split);
    json["splits"][name] = {{"synsets", counts.synsets},
                            {"text_lines", counts.text_lines},
                            {"qa_pairs", counts.qa_pairs},
                            {"sentences", counts.sentences}};
    json["files"]["text/" + name + ".txt"] = counts.text_lines;
    json["files"]["sentences/" + name + ".txt"] = counts.sentences;
    qa_pairs += counts.qa_pairs;
  }
  json["files"]["qa.jsonl"] = qa_pairs;
  return json;
}

WordNetCorpusStats BuildWordNetCorpus(const WordNetCorpusOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  ValidateOptions(options);
  WordNetCorpusStats stats;
  CorpusWriter writer(options, stats);
  for (const auto& file : kDataFiles) {
    const std::string path = (std::filesystem::path(options.wordnet_dir) / file[1]).string();
    std::ifstream in(path);
    Check(static_cast<bool>(in), "cannot open WordNet data file '", path, "'");
    std::string line;
    int64_t line_number = 0;
    while (std::getline(in, line)) {
      ++line_number;
      std::optional<Synset> synset;
      try {
        synset = ParseDataLine(line, file[0][0]);
      } catch (const Error& e) {
        throw Error(Str(path, ":", line_number, ": malformed WordNet data line: ", e.what()));
      }
      if (synset) writer.Add(*synset);
    }
    Check(!in.bad(), "cannot read WordNet data file '", path, "'");
  }
  writer.Write();
  fs::AtomicWriteString((std::filesystem::path(options.out_dir) / "stats.json").string(),
                        stats.ToJson().dump(2) + "\n");
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace slm::datagen
