#include "train/data_prep.h"

#include <cmath>
#include <filesystem>

#include "audio/speech_corpus.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/log.h"
#include "text/wordnet_corpus.h"
#include "vision/shapes.h"

namespace slm::train {

namespace stdfs = std::filesystem;

void EnsureWordNetCorpus(const std::string& corpus_dir, const std::string& wordnet_dir) {
  if (stdfs::exists(corpus_dir + "/text/train.txt")) return;
  log::Info(Str("building the WordNet corpus in ", corpus_dir));
  text::WordNetCorpusOptions corpus;
  corpus.wordnet_dir = wordnet_dir;
  corpus.out_dir = corpus_dir;
  text::BuildWordNetCorpus(corpus);
}

void EnsureSpeechManifest(const std::string& manifest_path, const SpeechSynthesis& s) {
  if (stdfs::exists(manifest_path)) return;
  if (!stdfs::exists(s.sentences)) {
    const std::string corpus = stdfs::path(s.corpus_dir).lexically_normal().string();
    const std::string sentences = stdfs::path(s.sentences).lexically_normal().string();
    Check(sentences.rfind(corpus + "/", 0) == 0, "no sentences at '", s.sentences,
          "' to synthesize ", manifest_path, " from");
    EnsureWordNetCorpus(s.corpus_dir, s.wordnet_dir);
    Check(stdfs::exists(s.sentences), "the WordNet corpus in '", s.corpus_dir, "' has no '",
          s.sentences, "'");
  }
  const std::string dir = stdfs::path(manifest_path).parent_path().string();
  Check(stdfs::path(manifest_path).filename() == "manifest.jsonl", manifest_path,
        ": a synthesized manifest must be named manifest.jsonl (SynthesizeCorpus writes that name)");
  log::Info(Str("synthesizing ", s.count > 0 ? std::to_string(s.count) : std::string("all"),
                " utterances of ", s.sentences, " into ", dir));
  audio::SpeechCorpusOptions options;
  options.text_path = s.sentences;
  options.out_dir = dir.empty() ? "." : dir;
  options.voices = s.voices;
  options.limit = s.count;
  options.seed = s.seed;
  options.quiet = true;
  const audio::SpeechCorpusStats stats = audio::SynthesizeCorpus(options);
  log::Info(Str(dir, ": ", stats.utterances, " utterances, ", std::lround(stats.audio_seconds),
                " s of speech in ", std::lround(stats.wall_seconds), " s"));
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
                  bool progress) {
  if (stdfs::exists(shapes_dir + "/caption_train.jsonl")) return;
  log::Info(Str("generating ", count, " shapes images in ", shapes_dir));
  vision::ShapesOptions shapes;
  shapes.out_dir = shapes_dir;
  shapes.count = count;
  shapes.seed = seed;
  shapes.size = size;
  shapes.threads = std::max(1, threads);
  shapes.progress = progress;
  vision::GenerateShapes(shapes);
}

}  // namespace slm::train
