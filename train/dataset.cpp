#include "train/dataset.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "adapters/tts.h"
#include "audio/audio_io.h"
#include "audio/espeak_synth.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace slm::train {
namespace {

namespace stdfs = std::filesystem;
using config::InRange;

// A template with {phonemes}: this task's entries without "phonemes" get espeak-ng's, all in one
// child process (Phonemize), before BuildTaskExample reads them.
void AddPhonemes(const DataSourceConfig& src, manifest::Manifest& m) {
  if (src.PromptTemplate().find(adapters::kPhonemesPlaceholder) == std::string::npos) return;
  std::vector<manifest::Entry*> missing;
  std::vector<std::string> texts;
  for (manifest::Entry& e : m.entries)
    if ((e.task.empty() || e.task == src.task) && !e.extra.contains("phonemes") && !e.text.empty()) {
      missing.push_back(&e);
      texts.push_back(e.text);
    }
  const std::vector<std::string> phonemes = audio::EspeakSynthesizer::Instance().Phonemize(texts, adapters::kPhonemeVoice);
  for (size_t i = 0; i < missing.size(); ++i) missing[i]->extra["phonemes"] = phonemes[i];
}

// A word-cued tts item as one pre-tokenized row: BOS + its prompt, then WordCuedUnits (scored).
adapters::MultimodalExample WordCuedRow(const DatasetItem& item, const text::Tokenizer& tokenizer,
                                        const InterleaveIds& ids) {
  adapters::MultimodalExample e;
  e.tokens = tokenizer.EncodeWithSpecialTokens(item.example.prompt);
  e.score_from = static_cast<int64_t>(e.tokens.size());
  const std::vector<int64_t> said = WordCuedUnits(*item.aligned, ids);
  e.tokens.insert(e.tokens.end(), said.begin(), said.end());
  return e;
}

}  // namespace

void DataSourceConfig::Load(config::Node node) {
  node.Require("manifest", manifest)
      .Read("task", task, config::OneOf<std::string>(TaskNames()))
      .Read("weight", weight, InRange(0.0, 1000.0))
      .Read("prompt", prompt)
      .Read("limit", limit, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("skip", skip, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("max_units", max_units, InRange<int64_t>(0, int64_t{1} << 30))
      .Read("sample", sample, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("sample_seed", sample_seed)
      .Read("pick", pick);
  if (sample > 0 && !pick.empty()) node.Fail("pick", "a source has sample or pick, not both");
  for (const int64_t i : pick)
    if (i < 0) node.Fail("pick", Str("positions are usable-entry indices >= 0, got ", i));
  const Task& kind = GetTask(task);
  auto only = [&](const char* key, bool Task::*has) {
    const std::vector<std::string> tasks = TasksWhere([has](const Task& t) { return t.*has; });
    node.Fail(key, Str("applies to task", tasks.size() > 1 ? "s " : " ", Join(tasks, " and "), " only"));
  };
  if (max_units > 0 && !kind.predicts_units) only("max_units", &Task::predicts_units);
  if (node.Has("interleave")) {
    if (!kind.interleaves) only("interleave", &Task::interleaves);
    interleave.Load(node.Child("interleave"));
  }
  if (node.Has("synthesize")) {
    auto s = node.Child("synthesize");
    synthesize = true;
    s.Require("sentences", synthesis.sentences)
        .Read("count", synthesis.count, InRange<int64_t>(0, int64_t{1} << 30))
        .Read("seed", synthesis.seed)
        .Read("voices", synthesis.voices)
        .Read("exclude_voices", synthesis.exclude_voices)
        .Read("vocabulary_from", synthesis.vocabulary_from)
        .Read("vocabulary_size", synthesis.vocabulary_size, InRange<int64_t>(0, int64_t{1} << 30))
        .Read("max_words", synthesis.max_words, InRange<int64_t>(0, 1 << 20))
        .Read("corpus_dir", synthesis.corpus_dir);
    if (synthesis.vocabulary_size > 0 && synthesis.vocabulary_from.empty())
      s.Fail("vocabulary_size", "needs vocabulary_from (the text whose most frequent words form the vocabulary)");
  }
  if (node.Has("synthesize_qa")) {
    auto q = node.Child("synthesize_qa");
    synthesize_qa = true;
    q.Read("qa", qa.qa)
        .Read("split", qa.split, config::OneOf<std::string>({"train", "valid", "test"}))
        .Read("count", qa.count, InRange<int64_t>(0, int64_t{1} << 30))
        .Read("seed", qa.seed)
        .Read("voices", qa.voices)
        .Read("exclude_voices", qa.exclude_voices)
        .Read("corpus_dir", qa.corpus_dir);
  }
  if (node.Has("shapes")) {
    auto s = node.Child("shapes");
    shapes = true;
    s.Read("count", shapes_count, InRange<int64_t>(2, int64_t{1} << 30))
        .Read("seed", shapes_seed)
        .Read("size", shapes_size, InRange(32, 512));
    std::string order = "drawn";
    s.Read("caption_order", order, config::OneOf<std::string>({"drawn", "canonical"}));
    shapes_canonical = order == "canonical";
  }
  if (node.Has("text_from")) {
    auto t = node.Child("text_from");
    text_from = true;
    t.Require("lines", text.lines)
        .Read("count", text.count, InRange<int64_t>(0, int64_t{1} << 40))
        .Read("skip", text.skip, InRange<int64_t>(0, int64_t{1} << 40))
        .Read("corpus_dir", text.corpus_dir);
  }
  if (node.Has("units_from")) {
    auto u = node.Child("units_from");
    u.Require("manifest", units_from_manifest).Require("units", units_from_dir).Read("dedup", units_from_dedup);
    if (!kind.predicts_units) only("units_from", &Task::predicts_units);
    if (units_from_manifest == manifest) u.Fail("manifest", "must differ from the source's own manifest");
  }
  if (int(synthesize) + int(synthesize_qa) + int(shapes) + int(text_from) > 1)
    node.Fail("shapes", "a source has at most one of synthesize, synthesize_qa, shapes and text_from");
  try {
    CheckPromptTemplate(task, PromptTemplate());
  } catch (const Error& e) {
    node.Fail("prompt", e.what());
  }
}

std::string DataSourceConfig::PromptTemplate() const {
  return prompt.empty() ? DefaultPromptTemplate(task) : prompt;
}

void Dataset::CheckSpeechUnits(int64_t k, const std::string& hash) const {
  for (const DatasetItem& item : items_) {
    const TaskExample& x = item.example;
    if (x.max_unit < 0) continue;
    Check(k > 0, item.where, ": a ", sources_[item.source].task, " example needs a model with model.speech_units");
    Check(x.unit_tokenizer.empty() || x.unit_tokenizer == hash, item.where, ": its units come from the unit tokenizer ",
          x.unit_tokenizer, ", the model's (model.speech_units) is ", hash);
    Check(x.max_unit < k, item.where, ": unit ", x.max_unit, " is outside the model's ", k, " units");
  }
}

torch::Tensor FeatureCache::Get(const std::string& key, const std::function<torch::Tensor()>& compute) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  torch::Tensor value = compute();
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.emplace(key, value).first->second;
}

size_t FeatureCache::Size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_.size();
}

InterleaveIds InterleaveIdsOf(const adapters::MultimodalLMImpl& model, const std::string& speech) {
  if (speech == "frames")
    Check(model.HasSpeech(), "task interleaved with interleave.speech: frames needs a model with a speech encoder");
  else
    Check(model.SpeechUnits() > 0, "task interleaved needs a model with model.speech_units (the units are tokens)");
  const text::Tokenizer& tok = model.Tokenizer();
  InterleaveIds ids;
  ids.bos = tok.BosId();
  ids.eos = tok.EosId();
  ids.speech_marker = tok.AddedTokenId(text::kSpeechMarker);
  ids.text_marker = tok.AddedTokenId(text::kTextMarker);
  if (speech != "frames") ids.unit = [&model](int64_t unit) { return model.UnitTokenId(unit); };
  return ids;
}

namespace {

int64_t ContextLength(const InterleaveOptions& o, const adapters::MultimodalLMImpl& model) {
  const int64_t max_positions = model.Backbone()->Config().max_position_embeddings;
  Check(o.context_length <= max_positions, "interleave.context_length ", o.context_length,
        " exceeds the backbone's max_position_embeddings ", max_positions);
  return o.context_length > 0 ? o.context_length : max_positions;
}

// Frames mode: the log-mel frames [first, end) of a clip of [start, end] seconds (at least 2, the
// encoder's stride), not yet clamped to the recording's frames.
std::pair<int64_t, int64_t> ClipFrames(const std::pair<double, double>& clip, double rate) {
  const int64_t first = static_cast<int64_t>(std::floor(clip.first * rate));
  return {first, std::max(first + 2, static_cast<int64_t>(std::ceil(clip.second * rate)))};
}

}  // namespace

torch::Tensor ClipFeatures(const torch::Tensor& mel, const std::pair<double, double>& clip, double rate) {
  auto [first, end] = ClipFrames(clip, rate);
  end = std::min(end, mel.size(0));
  first = std::max<int64_t>(0, std::min(first, end - 2));
  return mel.slice(0, first, end);
}

namespace {

// LM positions of a sequence: its ids, plus in frames mode the projected frames of each clip (an
// upper bound: clamping a clip to the recording only shortens it).
int64_t Positions(const AlignedUtterance& u, const std::vector<int64_t>& ids, const std::vector<bool>& speech,
                  const InterleaveOptions& o, const adapters::MultimodalLMImpl& model) {
  int64_t positions = static_cast<int64_t>(ids.size());
  if (o.speech == "frames")
    for (const auto& clip : SpeechClips(u, speech)) {
      const auto [first, end] = ClipFrames(clip, model.SpeechFeatureRate());
      positions += model.SpeechPositions(end - first);
    }
  return positions;
}

// One interleaved item in one epoch: its ids, its clips (frames mode) and its LM positions. The
// stats count tokens in positions.
struct EpochItem {
  std::vector<int64_t> ids;
  std::vector<std::pair<double, double>> clips;
  int64_t positions = 0;
};

EpochItem MakeEpochItem(const AlignedUtterance& u, const InterleaveOptions& o, const std::vector<double>& p,
                        int64_t epoch, const InterleaveIds& ids, const adapters::MultimodalLMImpl& model,
                        SequenceStats* stats = nullptr) {
  SequenceStats local;
  std::vector<bool> speech;
  EpochItem item;
  item.ids = EpochSequence(u, o, p, epoch, ids, &local, &speech);
  item.positions = Positions(u, item.ids, speech, o, model);
  if (o.speech == "frames") item.clips = SpeechClips(u, speech);
  if (stats) {
    for (int s = 0; s < 3; ++s)
      if (local.sequences[s] > 0) local.tokens[s] = item.positions;
    stats->Add(local);
  }
  return item;
}

}  // namespace

void PrepareSource(const DataSourceConfig& src, int threads, bool progress) {
  const bool units = !src.units_from_manifest.empty();
  if (units && stdfs::exists(src.manifest)) return;
  if (src.synthesize) datagen::EnsureSpeechManifest(units ? src.units_from_manifest : src.manifest, src.synthesis);
  if (src.synthesize_qa) datagen::EnsureSpokenQaManifest(src.manifest, src.qa);
  if (src.text_from) datagen::EnsureTextManifest(src.manifest, src.text);
  if (src.shapes)
    datagen::EnsureShapes(stdfs::path(src.manifest).parent_path().string(), src.shapes_count, src.shapes_seed, src.shapes_size,
                 threads, progress, src.shapes_canonical);
  if (units) datagen::EncodeUnitsManifest(src.units_from_manifest, src.manifest, src.units_from_dir, src.task,
                                 src.units_from_dedup, progress);
}

void PrepareSources(const std::vector<DataSourceConfig>& sources, int threads, bool progress) {
  for (const DataSourceConfig& source : sources) PrepareSource(source, threads, progress);
}

Dataset::Dataset(const std::vector<DataSourceConfig>& sources, double max_missing_fraction,
                 double max_audio_seconds, const std::string& what, bool quiet,
                 const adapters::MultimodalLMImpl* model)
    : sources_(sources), model_(model) {
  Check(!sources.empty(), what, ": no data sources");
  for (size_t s = 0; s < sources.size(); ++s) {
    const DataSourceConfig& src = sources[s];
    const bool generates = src.synthesize || src.synthesize_qa || src.text_from || src.shapes ||
                           !src.units_from_manifest.empty();
    Check(!generates || stdfs::exists(src.manifest), what, "[", s, "]: '", src.manifest,
          "' does not exist yet; the source generates it: prepare the sources first (PrepareSources)");
    manifest::Manifest m = manifest::Read(src.manifest);
    AddPhonemes(src, m);
    SourceStats stats;
    int64_t skipped = 0;
    stats.manifest = src.manifest;
    stats.entries = static_cast<int64_t>(m.entries.size());
    std::string first_missing, first_bad_alignment;
    std::vector<int64_t> mine;
    const Task& task = GetTask(src.task);
    const bool interleaved = task.interleaves;
    const bool frames = interleaved && src.interleave.speech == "frames";
    const bool word_cued = task.speaks && adapters::IsWordCued(src.PromptTemplate());
    std::function<std::vector<int64_t>(const std::string&)> tokenize;
    std::optional<InterleaveIds> ids;
    int64_t context = 0;
    if (interleaved || word_cued) {
      Check(model != nullptr, what, ": task ", src.task, " (", src.manifest, ") needs the model's tokenizer");
      try {
        ids = InterleaveIdsOf(*model, src.interleave.speech);
      } catch (const Error& e) {
        throw Error(Str(what, ": ", src.manifest, ": ", e.what()));
      }
      if (interleaved) context = ContextLength(src.interleave, *model);
      tokenize = [model](const std::string& word) { return model->Tokenizer().Encode(word, false, false); };
      if (word_cued && adapters::CuesArePhonemes(src.PromptTemplate())) {
        // Phoneme cues: every distinct word pronounced once, in one espeak-ng child.
        std::set<std::string> distinct;
        for (const manifest::Entry& e : m.entries)
          if (e.task.empty() || e.task == src.task)
            for (const manifest::Word& w : e.words) distinct.insert(w.word);
        const std::vector<std::string> words(distinct.begin(), distinct.end());
        const std::vector<std::string> said = audio::EspeakSynthesizer::Instance().Phonemize(words, adapters::kPhonemeVoice);
        auto phonemes = std::make_shared<std::map<std::string, std::string>>();
        for (size_t i = 0; i < words.size(); ++i) (*phonemes)[words[i]] = said[i];
        tokenize = [model, phonemes](const std::string& word) {
          const auto it = phonemes->find(word);
          return adapters::WordCueTokens(model->Tokenizer(), word, it == phonemes->end() ? "" : it->second);
        };
      }
    }
    for (const manifest::Entry& e : m.entries) {
      if (src.limit > 0 && stats.used >= src.limit) break;
      if (!e.task.empty() && e.task != src.task) continue;  // mixed manifests: this task's entries
      DatasetItem item;
      item.source = static_cast<int>(s);
      item.id = e.id;
      item.where = Str(src.manifest, ": entry '", e.id, "'");
      item.example = BuildTaskExample(src.task, src.PromptTemplate(), e, m.base_dir, item.where);
      item.entry = e;
      bool ok = true;
      double seconds = 0;
      for (const std::string& path : item.example.audio) {
        try {
          const audio::FileInfo info = audio::Probe(path);
          seconds += double(info.frames) / std::max(1, info.sample_rate);
        } catch (const Error&) {
          ok = false;
          if (first_missing.empty()) first_missing = path;
        }
      }
      for (const std::string& path : item.example.images)
        if (!stdfs::is_regular_file(path)) {
          ok = false;
          if (first_missing.empty()) first_missing = path;
        }
      if (!ok) {
        ++stats.missing;
        continue;
      }
      if ((max_audio_seconds > 0 && seconds > max_audio_seconds) ||
          (src.max_units > 0 && item.example.num_units > src.max_units)) {
        ++stats.too_long;
        continue;
      }
      if (interleaved || word_cued) {
        try {
          double audio_seconds = -1;
          if (!item.example.reference_audio.empty()) {
            const audio::FileInfo info = audio::Probe(item.example.reference_audio);
            audio_seconds = double(info.frames) / std::max(1, info.sample_rate);
          }
          item.aligned = std::make_shared<const AlignedUtterance>(AlignUtterance(
              e.id, e.words, frames ? std::vector<int64_t>{} : item.example.units, item.example.unit_durations,
              frames ? 0.0 : model->SpeechUnitsFrameRate(), audio_seconds, tokenize, item.where));
        } catch (const Error& error) {
          ++stats.bad_alignment;
          if (first_bad_alignment.empty()) first_bad_alignment = error.what();
          continue;
        }
      }
      // A tts example whose prompt and units outgrow the backbone would stop training mid-run.
      if (task.speaks && model != nullptr) {
        const text::Tokenizer& tokenizer = model->Tokenizer();
        const size_t positions = word_cued ? WordCuedRow(item, tokenizer, *ids).tokens.size()
                                           : tokenizer.EncodeWithSpecialTokens(item.example.prompt).size() +
                                                 tokenizer.Encode(item.example.target, false, true).size();
        if (static_cast<int64_t>(positions) > model->Backbone()->Config().max_position_embeddings) {
          ++stats.too_long;
          continue;
        }
      }
      if (frames) {  // a speech-only sequence must fit a row: clips are never cut
        const AlignedUtterance& u = *item.aligned;
        const std::vector<bool> all(u.Words(), true);
        if (Positions(u, BuildSequence(u, all, *ids), all, src.interleave, *model) > context) {
          ++stats.too_long;
          continue;
        }
      }
      if (skipped < src.skip) {
        ++skipped;
        continue;
      }
      item.length = task.length(item.example, seconds);
      mine.push_back(static_cast<int64_t>(items_.size()));
      items_.push_back(std::move(item));
      ++stats.used;
    }
    const double considered = double(stats.used + stats.missing + stats.too_long);
    Check(considered == 0 || stats.missing <= max_missing_fraction * considered, what, ": ",
          stats.missing, " of ", static_cast<int64_t>(considered), " entries of ", src.manifest,
          " have missing or unreadable media (first: '", first_missing,
          "'), more than data.max_missing_fraction = ", max_missing_fraction);
    if (stats.missing > 0)
      log::Warn(Str(what, ": skipped ", stats.missing, " entries of ", src.manifest,
                    " with missing or unreadable media (first: '", first_missing, "')"));
    if (stats.too_long > 0)
      log::Warn(Str(what, ": skipped ", stats.too_long, " entries of ", src.manifest, " longer than ",
                    src.max_units > 0 ? Str(src.max_units, " units (max_units)", task.speaks ? " or the backbone's positions" : "")
                    : task.speaks ? std::string("the backbone's positions")
                                      : Str(max_audio_seconds, " s (the speech encoder's limit)")));
    if (stats.bad_alignment > 0)
      log::Warn(Str(what, ": skipped ", stats.bad_alignment, " entries of ", src.manifest,
                    " whose word alignment does not fit their units (first: ", first_bad_alignment, ")"));
    Check(stats.used > 0, what, ": no usable entry in ", src.manifest, " for task '", src.task, "'",
          first_bad_alignment.empty() ? std::string() : Str(" (", first_bad_alignment, ")"));
    if (!src.pick.empty()) {
      std::vector<int64_t> picked;
      for (const int64_t i : src.pick) {
        Check(i < stats.used, what, ": ", src.manifest, ": pick ", i, " is outside its ", stats.used, " usable entries");
        picked.push_back(mine[i]);
      }
      mine = std::move(picked);
    } else if (src.sample > 0) {
      std::mt19937_64 rng(src.sample_seed * 0x9E3779B97F4A7C15ull + 17);
      std::vector<int64_t> drawn;
      if (src.sample <= stats.used) {  // without replacement: a partial Fisher-Yates shuffle
        for (int64_t i = 0; i < src.sample; ++i) {
          std::uniform_int_distribution<int64_t> pick(i, stats.used - 1);
          std::swap(mine[i], mine[pick(rng)]);
        }
        drawn.assign(mine.begin(), mine.begin() + src.sample);
      } else {
        std::uniform_int_distribution<int64_t> pick(0, stats.used - 1);
        for (int64_t i = 0; i < src.sample; ++i) drawn.push_back(mine[pick(rng)]);
      }
      mine = std::move(drawn);
    }
    stats.selected = static_cast<int64_t>(mine.size());
    std::vector<double> probabilities;
    if (interleaved) {
      // Mean sequence length per stream over the source (interleaved: one draw of spans per item).
      double mean[3] = {0, 0, 0};
      for (const int64_t i : mine) {
        const AlignedUtterance& u = *items_[i].aligned;
        std::mt19937_64 rng(InterleaveSeed(src.interleave.seed, -1, u.id));
        const std::vector<bool> masks[3] = {std::vector<bool>(u.Words(), false),
                                            SelectSpeechWords(u.Words(), src.interleave, rng),
                                            std::vector<bool>(u.Words(), true)};
        for (int k = 0; k < 3; ++k)
          mean[k] += double(Positions(u, BuildSequence(u, masks[k], *ids), masks[k], src.interleave, *model));
      }
      for (double& m : mean) m /= double(mine.size());
      probabilities = StreamProbabilities(src.interleave, mean);
      if (!quiet)
        log::Info(Str(what, ": ", src.manifest, " interleaved streams drawn with p = ", probabilities[0], " text / ",
                      probabilities[1], " interleaved / ", probabilities[2], " speech (mean tokens ", mean[0], " / ",
                      mean[1], " / ", mean[2], " positions)"));
    }
    stream_probabilities_.push_back(std::move(probabilities));
    stats_.push_back(stats);
    by_source_.push_back(std::move(mine));
  }
}

int64_t Dataset::ItemsPerEpoch(size_t s) const {
  return static_cast<int64_t>(std::llround(sources_.at(s).weight * static_cast<double>(by_source_.at(s).size())));
}

std::vector<std::vector<int64_t>> Dataset::EpochBatches(uint64_t seed, int64_t epoch,
                                                        int64_t batch_size, double budget) const {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003ull + static_cast<uint64_t>(epoch));
  std::vector<int64_t> order;
  for (size_t s = 0; s < sources_.size(); ++s) {
    const auto& items = by_source_[s];
    const int64_t n = static_cast<int64_t>(items.size());
    const int64_t wanted = ItemsPerEpoch(s);
    for (int64_t taken = 0; taken < wanted; taken += n) {
      const torch::Tensor perm = torch::randperm(n, generator);
      for (int64_t i = 0; i < std::min(n, wanted - taken); ++i) order.push_back(items[perm[i].item<int64_t>()]);
    }
  }
  const torch::Tensor mix = torch::randperm(static_cast<int64_t>(order.size()), generator);
  std::vector<int64_t> shuffled, interleaved;
  for (int64_t i = 0; i < mix.size(0); ++i) {
    const int64_t index = order[mix[i].item<int64_t>()];
    (items_[index].aligned && !items_[index].example.word_cued ? interleaved : shuffled).push_back(index);
  }
  std::vector<std::vector<int64_t>> batches;
  if (!interleaved.empty()) {
    // Per interleaved source, once per epoch rather than once per item.
    std::map<int, std::pair<InterleaveIds, int64_t>> per_source;  // ids, context length
    for (size_t s = 0; s < sources_.size(); ++s)
      if (!stream_probabilities_[s].empty())
        per_source.emplace(static_cast<int>(s), std::make_pair(InterleaveIdsOf(*model_, sources_[s].interleave.speech),
                                                               ContextLength(sources_[s].interleave, *model_)));
    std::vector<int64_t> batch;
    int64_t tokens = 0, budget = 0;
    for (const int64_t index : interleaved) {
      const DatasetItem& item = items_[index];
      const DataSourceConfig& src = sources_[item.source];
      const auto& [ids, context] = per_source.at(item.source);
      const int64_t length = std::min<int64_t>(
          context, MakeEpochItem(*item.aligned, src.interleave, stream_probabilities_[item.source], epoch, ids, *model_)
                       .positions);
      if (batch.empty()) budget = batch_size * context;
      if (!batch.empty() && tokens + length > budget) {
        batches.push_back(std::move(batch));
        batch.clear();
        tokens = 0;
        budget = batch_size * context;
      }
      batch.push_back(index);
      tokens += length;
    }
    if (!batch.empty()) batches.push_back(std::move(batch));
  }
  const int64_t pool = batch_size * 50;
  const int64_t total = static_cast<int64_t>(shuffled.size());
  for (int64_t start = 0; start < total; start += pool) {
    const int64_t end = std::min(total, start + pool);
    std::stable_sort(shuffled.begin() + start, shuffled.begin() + end,
                     [&](int64_t a, int64_t b) { return items_[a].length < items_[b].length; });
    for (int64_t b = start; b < end;) {
      int64_t e = b + 1;  // sorted ascending: the newest item is the longest
      while (e < end && e - b < batch_size && (budget <= 0 || (e - b + 1) * items_[shuffled[e]].length <= budget)) ++e;
      batches.emplace_back(shuffled.begin() + b, shuffled.begin() + e);
      b = e;
    }
  }
  const torch::Tensor perm = torch::randperm(static_cast<int64_t>(batches.size()), generator);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < perm.size(0); ++i) out.push_back(batches[perm[i].item<int64_t>()]);
  return out;
}

std::vector<adapters::MultimodalExample> Dataset::Materialize(const std::vector<int64_t>& indices,
                                                              adapters::MultimodalLMImpl& model,
                                                              FeatureCache& cache, int64_t epoch) const {
  std::vector<adapters::MultimodalExample> out;
  std::map<int, std::vector<int64_t>> interleaved;  // by source, in order
  for (int64_t index : indices) {
    const DatasetItem& item = items_.at(index);
    if (item.example.word_cued) {
      out.push_back(WordCuedRow(item, model.Tokenizer(), InterleaveIdsOf(model)));
      continue;
    }
    if (item.aligned) {
      interleaved[item.source].push_back(index);
      continue;
    }
    adapters::MultimodalExample e;
    e.prompt = item.example.prompt;
    e.target = item.example.target;
    for (const std::string& path : item.example.audio)
      e.speech.push_back(cache.Get("mel:" + path, [&] { return model.SpeechFeatures(audio::Read(path).samples); }));
    for (const std::string& path : item.example.images)
      e.images.push_back(cache.Get("img:" + path, [&] { return model.ImagePixels(path); }));
    out.push_back(std::move(e));
  }
  for (const auto& [source, members] : interleaved) {
    const DataSourceConfig& src = sources_[source];
    const InterleaveIds ids = InterleaveIdsOf(model, src.interleave.speech);
    const int64_t context = ContextLength(src.interleave, model);
    std::vector<EpochItem> made;
    std::vector<int64_t> lengths;
    for (const int64_t index : members) {
      made.push_back(MakeEpochItem(*items_[index].aligned, src.interleave, stream_probabilities_[source], epoch, ids, model));
      lengths.push_back(made.back().positions);
    }
    for (const std::vector<size_t>& row : PackByLength(lengths, context)) {
      adapters::MultimodalExample e;
      for (const size_t k : row) {
        const EpochItem& m = made[k];
        // Units mode cuts an overlong sequence to the row (frames mode never has one: filtered on load).
        const int64_t keep = std::min<int64_t>(context, static_cast<int64_t>(m.ids.size()));
        e.tokens.insert(e.tokens.end(), m.ids.begin(), m.ids.begin() + keep);
        if (m.clips.empty()) continue;
        const std::string& path = items_[members[k]].example.reference_audio;
        const torch::Tensor mel =
            cache.Get("mel:" + path, [&] { return model.SpeechFeatures(audio::Read(path).samples); });
        for (const auto& clip : m.clips) e.speech.push_back(ClipFeatures(mel, clip, model.SpeechFeatureRate()));
      }
      out.push_back(std::move(e));
    }
  }
  return out;
}

SequenceStats Dataset::InterleaveStats(const adapters::MultimodalLMImpl& model, int64_t epoch) const {
  SequenceStats stats;
  for (size_t s = 0; s < sources_.size(); ++s) {
    if (stream_probabilities_[s].empty()) continue;
    const InterleaveIds ids = InterleaveIdsOf(model, sources_[s].interleave.speech);
    const int64_t context = ContextLength(sources_[s].interleave, model);
    for (const int64_t i : by_source_[s]) {
      const EpochItem m =
          MakeEpochItem(*items_[i].aligned, sources_[s].interleave, stream_probabilities_[s], epoch, ids, model, &stats);
      if (m.positions > context) ++stats.truncated;
    }
  }
  return stats;
}

Prefetcher::Prefetcher(const Dataset& data, adapters::MultimodalLMImpl& model, FeatureCache& cache,
                       int workers)
    : data_(data), model_(model), cache_(cache), workers_(std::max(0, workers)) {}

Prefetcher::~Prefetcher() {
  for (auto& [key, batch] : pending_)
    if (batch.valid()) batch.wait();
}

void Prefetcher::Ahead(int64_t key, const std::vector<int64_t>& indices) {
  if (pending_.count(key) || static_cast<int>(pending_.size()) >= workers_ || indices.empty()) return;
  pending_.emplace(key, std::async(std::launch::async, [this, indices, key] {
                     return data_.Materialize(indices, model_, cache_, key >> 32);
                   }));
}

std::vector<adapters::MultimodalExample> Prefetcher::Get(int64_t key, const std::vector<int64_t>& indices) {
  while (!pending_.empty() && pending_.begin()->first < key) {
    pending_.begin()->second.wait();  // a skipped position: its work is discarded
    pending_.erase(pending_.begin());
  }
  auto it = pending_.find(key);
  if (it == pending_.end()) return data_.Materialize(indices, model_, cache_, key >> 32);
  std::future<std::vector<adapters::MultimodalExample>> batch = std::move(it->second);
  pending_.erase(it);
  return batch.get();
}

}  // namespace slm::train
