#include "datagen/data_prep.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "audio/audio_io.h"
#include "audio/units.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/manifest.h"
#include "core/progress.h"
#include "datagen/shapes.h"
#include "datagen/speech_corpus.h"
#include "datagen/wordnet_corpus.h"
#include "text/scoring_words.h"
#include "text/tokenizer.h"

namespace slm::datagen {

namespace stdfs = std::filesystem;

void EnsureWordNetCorpus(const std::string& corpus_dir, const std::string& wordnet_dir) {
  if (stdfs::exists(corpus_dir + "/text/train.txt")) return;
  log::Info(Str("building the WordNet corpus in ", corpus_dir));
  WordNetCorpusOptions corpus;
  corpus.wordnet_dir = wordnet_dir;
  corpus.out_dir = corpus_dir;
  BuildWordNetCorpus(corpus);
}

namespace {

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  Check(in.good(), "cannot read '", path, "'");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
  return lines;
}

// A file under the WordNet corpus directory is built with the corpus when missing.
void EnsureCorpusFile(const std::string& path, const SpeechSynthesis& s, const std::string& purpose) {
  if (stdfs::exists(path)) return;
  const std::string corpus = stdfs::path(s.corpus_dir).lexically_normal().string();
  Check(stdfs::path(path).lexically_normal().string().rfind(corpus + "/", 0) == 0, "no file at '", path,
        "' (", purpose, ")");
  EnsureWordNetCorpus(s.corpus_dir, s.wordnet_dir);
  Check(stdfs::exists(path), "the WordNet corpus in '", s.corpus_dir, "' has no '", path, "'");
}

// The sentences of s.sentences that pass the closed-vocabulary selection, in file order.
std::vector<std::string> ClosedVocabularySentences(const SpeechSynthesis& s) {
  std::unordered_set<std::string> vocabulary;
  if (s.vocabulary_size > 0) {
    Check(!s.vocabulary_from.empty(), "synthesize.vocabulary_size needs synthesize.vocabulary_from");
    EnsureCorpusFile(s.vocabulary_from, s, "synthesize.vocabulary_from");
    std::unordered_map<std::string, int64_t> counts;
    for (const std::string& line : ReadLines(s.vocabulary_from))
      for (const std::string& w : text::ScoringWords(line)) ++counts[w];
    std::vector<std::pair<int64_t, std::string>> ranked;
    for (const auto& [word, n] : counts) ranked.emplace_back(-n, word);  // ties by spelling: deterministic
    std::sort(ranked.begin(), ranked.end());
    ranked.resize(std::min<size_t>(ranked.size(), static_cast<size_t>(s.vocabulary_size)));
    for (const auto& [n, word] : ranked) vocabulary.insert(word);
  }
  std::vector<std::string> chosen;
  for (const std::string& line : ReadLines(s.sentences)) {
    const std::vector<std::string> words = text::ScoringWords(line);
    if (words.empty() || (s.max_words > 0 && static_cast<int64_t>(words.size()) > s.max_words)) continue;
    if (s.vocabulary_size > 0 &&
        !std::all_of(words.begin(), words.end(), [&](const std::string& w) { return vocabulary.count(w) > 0; }))
      continue;
    chosen.push_back(line);
  }
  Check(!chosen.empty(), s.sentences, ": no sentence passes the closed-vocabulary selection (vocabulary_size ",
        s.vocabulary_size, ", max_words ", s.max_words, ")");
  return chosen;
}

}  // namespace

void EnsureSpeechManifest(const std::string& manifest_path, const SpeechSynthesis& s) {
  if (stdfs::exists(manifest_path)) return;
  EnsureCorpusFile(s.sentences, s, Str("the sentences to synthesize ", manifest_path, " from"));
  const std::string dir = stdfs::path(manifest_path).parent_path().string();
  Check(stdfs::path(manifest_path).filename() == "manifest.jsonl", manifest_path,
        ": a synthesized manifest must be named manifest.jsonl (SynthesizeCorpus writes that name)");
  std::string text_path = s.sentences;
  if (s.vocabulary_size > 0 || s.max_words > 0) {
    const std::vector<std::string> chosen = ClosedVocabularySentences(s);
    fs::MakeDirs(dir.empty() ? "." : dir);
    std::string text;
    for (const std::string& line : chosen) text += line + "\n";
    text_path = (dir.empty() ? std::string(".") : dir) + "/sentences.txt";
    fs::AtomicWriteString(text_path, text);
    log::Info(Str(s.sentences, ": ", chosen.size(), " sentences pass the closed-vocabulary selection (",
                  s.vocabulary_size, " words, at most ", s.max_words, " words each)"));
  }
  log::Info(Str("synthesizing ", s.count > 0 ? std::to_string(s.count) : std::string("all"),
                " utterances of ", text_path, " into ", dir));
  SpeechCorpusOptions options;
  options.text_path = text_path;
  options.out_dir = dir.empty() ? "." : dir;
  options.voices = s.voices;
  options.exclude_voices = s.exclude_voices;
  options.limit = s.count;
  options.seed = s.seed;
  options.quiet = true;
  const SpeechCorpusStats stats = SynthesizeCorpus(options);
  log::Info(Str(dir, ": ", stats.utterances, " utterances, ", std::lround(stats.audio_seconds),
                " s of speech in ", std::lround(stats.wall_seconds), " s"));
}

UnitsManifestStats EncodeUnitsManifest(const std::string& source_manifest, const std::string& out_manifest,
                                       const std::string& units_dir, const std::string& task, bool dedup,
                                       bool progress) {
  const audio::UnitTokenizer tokenizer = audio::UnitTokenizer::Load(units_dir);
  const audio::UnitFeatureExtractor extractor(tokenizer.Info());
  const manifest::Manifest m = manifest::Read(source_manifest);
  const std::string out_dir = std::filesystem::absolute(out_manifest).parent_path().string();
  fs::MakeDirs(out_dir);
  std::vector<manifest::Entry> entries;
  int64_t units_total = 0;
  ProgressBar bar("units", static_cast<int64_t>(m.entries.size()), !progress);
  for (const manifest::Entry& source : m.entries) {
    Check(!source.audio.empty(), source_manifest, ": entry '", source.id, "' has no audio");
    manifest::Entry e = source;
    const std::string audio_path = std::filesystem::absolute(m.AudioPath(source)).string();
    e.audio = std::filesystem::relative(audio_path, out_dir).string();
    if (!source.image.empty())
      e.image = std::filesystem::relative(std::filesystem::absolute(m.ImagePath(source)), out_dir).string();
    const std::vector<int64_t> ids = tokenizer.Assign(extractor.Frames(audio::Read(audio_path).samples));
    std::string text;
    nlohmann::json durations = nlohmann::json::array();
    if (dedup) {
      for (const audio::UnitRun& r : audio::Deduplicate(ids)) {
        text += text::SpeechUnitToken(r.unit);
        durations.push_back(r.frames);
      }
      e.extra["unit_durations"] = durations;
    } else {
      for (int64_t id : ids) text += text::SpeechUnitToken(id);
    }
    units_total += dedup ? static_cast<int64_t>(durations.size()) : static_cast<int64_t>(ids.size());
    e.extra["units"] = text;
    e.extra["unit_tokenizer"] = tokenizer.Hash();
    if (!task.empty()) e.task = task;
    entries.push_back(std::move(e));
    bar.Update(1);
  }
  bar.Finish();
  manifest::Write(out_manifest, entries);
  return {static_cast<int64_t>(entries.size()), units_total, tokenizer.Hash()};
}

void EnsureTextManifest(const std::string& manifest_path, const TextLines& t) {
  if (stdfs::exists(manifest_path)) return;
  if (!stdfs::exists(t.lines)) EnsureWordNetCorpus(t.corpus_dir, t.wordnet_dir);
  std::istringstream in(fs::ReadFile(t.lines));
  std::string line, out;
  int64_t seen = 0, written = 0;
  while (std::getline(in, line) && (t.count == 0 || written < t.count)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (seen++ < t.skip) continue;
    char id[32];
    std::snprintf(id, sizeof id, "t%06lld", static_cast<long long>(++written));
    out += nlohmann::json{{"id", id}, {"task", "text"}, {"text", line}}.dump() + "\n";
  }
  Check(written > 0, t.lines, ": no text lines after skipping ", t.skip);
  const std::string dir = stdfs::path(manifest_path).parent_path().string();
  fs::MakeDirs(dir.empty() ? "." : dir);
  fs::AtomicWriteString(manifest_path, out);
}

void EnsureSpokenQaManifest(const std::string& manifest_path, const SpokenQaSynthesis& q) {
  if (stdfs::exists(manifest_path)) return;
  Check(stdfs::path(manifest_path).filename() != "manifest.jsonl", manifest_path,
        ": a spoken-QA manifest needs another name than manifest.jsonl (the synthesizer writes that one)");
  if (!stdfs::exists(q.qa)) EnsureWordNetCorpus(q.corpus_dir, q.wordnet_dir);
  const manifest::Manifest pairs = manifest::Read(q.qa);
  std::vector<const manifest::Entry*> chosen;
  for (const manifest::Entry& e : pairs.entries) {
    if (q.count > 0 && static_cast<int64_t>(chosen.size()) >= q.count) break;
    const bool in_split = e.extra.contains("split") && e.extra["split"] == q.split;
    if (in_split && !e.prompt.empty() && !e.response.empty()) chosen.push_back(&e);
  }
  Check(!chosen.empty(), q.qa, ": no QA pair in split '", q.split, "'");
  const std::string dir = stdfs::path(manifest_path).parent_path().string();
  fs::MakeDirs(dir.empty() ? "." : dir);
  std::string questions;
  for (const manifest::Entry* e : chosen) questions += e->prompt + "\n";
  fs::AtomicWriteString(dir + "/questions.txt", questions);
  SpeechSynthesis speech;
  speech.sentences = dir + "/questions.txt";
  speech.seed = q.seed;
  speech.voices = q.voices;
  speech.exclude_voices = q.exclude_voices;
  stdfs::remove(dir + "/manifest.jsonl");  // a leftover of an interrupted run is redone
  EnsureSpeechManifest(dir + "/manifest.jsonl", speech);
  // Line i of questions.txt became utterance u<i>; skipped lines leave gaps.
  const manifest::Manifest spoken = manifest::Read(dir + "/manifest.jsonl");
  std::vector<manifest::Entry> out;
  for (const manifest::Entry& u : spoken.entries) {
    const size_t line = static_cast<size_t>(std::stoll(u.id.substr(1))) - 1;
    Check(line < chosen.size(), dir, "/manifest.jsonl: utterance '", u.id, "' has no question");
    manifest::Entry e = u;
    e.task = "sqa";
    e.prompt = chosen[line]->prompt;
    e.response = chosen[line]->response;
    e.words.clear();
    out.push_back(e);
  }
  manifest::Write(manifest_path, out);
  log::Info(Str(manifest_path, ": ", out.size(), " spoken questions"));
}

void EnsureShapes(const std::string& shapes_dir, int64_t count, uint64_t seed, int size, int threads,
                  bool progress, bool canonical_captions) {
  if (stdfs::exists(shapes_dir + "/caption_train.jsonl")) {
    const std::string stats_path = shapes_dir + "/stats.json";
    if (!stdfs::exists(stats_path)) return;  // a user's own dataset in the shapes layout
    const nlohmann::json stats = fs::ReadJson(stats_path);
    const bool canonical = stats.is_object() && stats.value("caption_order", std::string("drawn")) == "canonical";
    Check(canonical == canonical_captions, shapes_dir, " holds shapes captions in ",
          canonical ? "canonical" : "drawn", " order but the config asks for ",
          canonical_captions ? "canonical" : "drawn", " order: point the manifest at another directory");
    return;
  }
  log::Info(Str("generating ", count, " shapes images in ", shapes_dir));
  ShapesOptions shapes;
  shapes.out_dir = shapes_dir;
  shapes.count = count;
  shapes.seed = seed;
  shapes.size = size;
  shapes.threads = std::max(1, threads);
  shapes.progress = progress;
  shapes.canonical_captions = canonical_captions;
  GenerateShapes(shapes);
}

}  // namespace slm::datagen
