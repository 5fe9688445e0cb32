// Datasets for adapter training: one or more JSONL manifests, each with a task (train/tasks.h), a
// prompt template, a mixing weight and an optional limit. Media are checked up front: entries
// whose audio/image file is missing or unreadable, or whose audio is longer than the speech
// encoder accepts, are skipped and counted; more than `max_missing_fraction` of a source missing is
// an error naming the first missing file (a wrong path should not train on nothing).
//
// Epochs: source s contributes round(weight_s * size_s) items per epoch (weight 1 = each entry
// once, 0.5 = a random half, 2 = twice), shuffled with a generator seeded by (seed, epoch) alone,
// so any epoch's order can be recomputed (resume needs no saved order). Batches are length-
// bucketed: items sorted by length inside pools of 50 batches, batches then shuffled. Batches hold
// batch_size examples, or fewer when a padded-length budget is given (train.batch_frames).
//
// Features: log-mel of each audio file and pixels of each image are computed once and cached in
// memory (FeatureCache), so the second epoch reads no audio and computes no mel.
// Workers: Prefetcher materializes the next batches on background threads while the model trains
// on the current one (reading, resampling, log-mel, image decoding).
// Thread-safety: a Dataset is immutable after construction; FeatureCache is internally locked;
// a Prefetcher belongs to one thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/multimodal.h"
#include "core/config.h"
#include "datagen/data_prep.h"
#include "train/interleave.h"
#include "train/tasks.h"

namespace slm::train {

struct DataSourceConfig {
  std::string manifest;
  std::string task = "asr";
  double weight = 1.0;
  std::string prompt;  // template; empty = the task's default
  int64_t limit = 0;   // first `limit` usable entries (after `skip`); 0 = all
  int64_t skip = 0;    // leave out the first `skip` usable entries (a held-out tail of one manifest)
  int64_t max_units = 0;  // tts, interleaved: leave out entries with more units (counted as too long); 0 = no limit
  // A fixed subset of the usable entries (after skip/limit and the media checks), drawn once:
  //   sample: N   N entries drawn with sample_seed, without replacement (with replacement when N is
  //               more than the usable entries): e.g. a replay quota of an earlier stage's data;
  //   pick: [i..] exactly these usable-entry positions (repeats allowed): e.g. a replay buffer.
  // slm::Error when a pick is outside the usable entries. Each chosen entry is then one item.
  int64_t sample = 0;
  uint64_t sample_seed = 0;
  std::vector<int64_t> pick;
  InterleaveOptions interleave;  // task interleaved: span selection, stream shares, packing
  // Optional generation when the manifest does not exist yet (datagen/data_prep.h):
  //   synthesize: {sentences: FILE, count: N, seed: S, voices: [..]}   (espeak-ng speech)
  //   shapes: {count: N, seed: S, size: PX, caption_order: drawn|canonical}
  //                                                                     (shapes images; the manifest
  //                                                                     must sit in the shapes dir)
  bool synthesize = false;
  datagen::SpeechSynthesis synthesis;
  //   synthesize_qa: {qa: FILE, split: S, count: N, seed: S}         (spoken questions, sqa entries)
  bool synthesize_qa = false;
  datagen::SpokenQaSynthesis qa;
  //   text_from: {lines: FILE, count: N, skip: K}                    (task text: lines of a text file)
  //   units_from: {manifest: M, units: DIR, dedup: false}              (tts, interleaved: M's entries
  //     with their speech units, EncodeUnitsManifest; with synthesize, M is what is synthesized)
  bool text_from = false;
  datagen::TextLines text;
  std::string units_from_manifest, units_from_dir;
  bool units_from_dedup = false;
  bool shapes = false;
  int64_t shapes_count = 2000;
  uint64_t shapes_seed = 0;
  int shapes_size = 64;
  bool shapes_canonical = false;  // shapes.caption_order: canonical (datagen::CanonicalOrder)
  void Load(config::Node node);
  // The template in use (prompt or the task's default).
  std::string PromptTemplate() const;
};

// Generates what a source's generation keys ask for and its manifest lacks (synthesize,
// synthesize_qa, shapes, text_from, units_from); a no-op for existing manifests. Not thread-safe
// for one manifest: prepare every source once before processes share them (slm ablate does).
// Dataset never generates: the trainer prepares its sources before it reads them.
void PrepareSource(const DataSourceConfig& source, int threads, bool progress);
void PrepareSources(const std::vector<DataSourceConfig>& sources, int threads, bool progress);

struct DatasetItem {
  int source = 0;
  std::string id;
  std::string where;  // "manifest.jsonl: entry 'u1'"
  manifest::Entry entry;
  TaskExample example;
  double length = 0;  // bucketing key: audio seconds * 100, units (interleaved), else target characters
  std::shared_ptr<const AlignedUtterance> aligned;  // task interleaved, and word-cued tts
};

struct SourceStats {
  std::string manifest;
  int64_t entries = 0, used = 0, missing = 0, too_long = 0;
  int64_t bad_alignment = 0;  // interleaved entries skipped by AlignUtterance's checks
  int64_t selected = 0;       // items the source contributes: used, or its sample / pick
};

// The ids interleaved sequences use, from the model's tokenizer and unit vocabulary (speech
// "units"; "frames": no unit ids). slm::Error when the model has no model.speech_units (units) or
// no speech encoder (frames), or its tokenizer lacks the <speech>/<text> markers.
InterleaveIds InterleaveIdsOf(const adapters::MultimodalLMImpl& model, const std::string& speech = "units");

// Frames mode: the log-mel frames [T', n_mels] of a clip of [start, end] seconds of a recording's
// log-mel `mel` at `rate` frames per second (at least 2 frames, clamped to the recording).
torch::Tensor ClipFeatures(const torch::Tensor& mel, const std::pair<double, double>& clip, double rate);

class FeatureCache {
 public:
  torch::Tensor Get(const std::string& key, const std::function<torch::Tensor()>& compute);
  size_t Size() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, torch::Tensor> cache_;
};

class Dataset {
 public:
  // max_audio_seconds: 0 = no limit (no speech encoder), else longer clips are skipped.
  // model: needed by interleaved sources (its tokenizer pre-tokenizes the words, its unit frame
  // rate maps word times to units); their entries whose alignment fails AlignUtterance's checks
  // (no words, overlapping words, times past the audio or the units) are skipped and counted
  // (SourceStats::bad_alignment, a warning naming the first); none left is an slm::Error.
  // Reads the sources' manifests as they are: a missing manifest of a source that generates its
  // data is an slm::Error that says to prepare it first (PrepareSources).
  Dataset(const std::vector<DataSourceConfig>& sources, double max_missing_fraction,
          double max_audio_seconds, const std::string& what, bool quiet = true,
          const adapters::MultimodalLMImpl* model = nullptr);

  size_t Size() const { return items_.size(); }
  const DatasetItem& Item(size_t i) const { return items_.at(i); }
  const std::vector<SourceStats>& Stats() const { return stats_; }
  const std::vector<DataSourceConfig>& Sources() const { return sources_; }
  // Items source s contributes to every epoch: round(weight x its selected entries).
  int64_t ItemsPerEpoch(size_t s) const;
  // tts targets must be units of the model's unit tokenizer: slm::Error naming the entry for units
  // made by another tokenizer (hash) or a unit id >= k.
  void CheckSpeechUnits(int64_t k, const std::string& hash) const;

  // The epoch's batches. Interleaved items are batched by LM positions instead: consecutive items
  // of the shuffled order whose epoch sequences add up to at most batch_size x context_length
  // positions, so every step sees about batch_size packed rows whatever streams the epoch drew.
  // With budget > 0, a batch also stops growing before its padded size
  // (examples x the longest one's length, in DatasetItem::length units: 10 ms speech frames, else
  // target characters) would exceed `budget` (a longer single example still forms its own batch);
  // batch_size stays the cap on examples.
  std::vector<std::vector<int64_t>> EpochBatches(uint64_t seed, int64_t epoch, int64_t batch_size,
                                                 double budget = 0) const;
  // The examples of `indices` (targets included), features through `cache`. Interleaved items
  // become their epoch's sequences (train/interleave.h EpochSequence), packed first-fit into rows
  // of their source's context length in LM positions (pre-tokenized examples; in frames mode with
  // the log-mel of each speech span as clips), after the other examples: a batch of interleaved
  // items gives as many examples as rows.
  std::vector<adapters::MultimodalExample> Materialize(const std::vector<int64_t>& indices,
                                                       adapters::MultimodalLMImpl& model,
                                                       FeatureCache& cache, int64_t epoch = 0) const;
  // What epoch `epoch` makes of the interleaved items (streams, token shares, spans, switches);
  // empty stats without interleaved sources.
  SequenceStats InterleaveStats(const adapters::MultimodalLMImpl& model, int64_t epoch) const;
  // Draw probabilities of the streams of source s (interleaved sources; empty otherwise).
  const std::vector<double>& StreamProbabilitiesOf(size_t s) const { return stream_probabilities_.at(s); }

 private:
  std::vector<DataSourceConfig> sources_;
  std::vector<DatasetItem> items_;
  std::vector<std::vector<int64_t>> by_source_;
  std::vector<SourceStats> stats_;
  std::vector<std::vector<double>> stream_probabilities_;
  const adapters::MultimodalLMImpl* model_ = nullptr;  // interleaved sources: the ids and context
};

// Batches materialized ahead on up to `workers` background threads, keyed by the caller's batch
// position (e.g. epoch and cursor). Materialize is a pure function of the indices, so what Get
// returns does not depend on the worker count or timing: training results and exact resume are the
// same with 0 workers (everything inline) or many. An exception in a worker surfaces from Get.
class Prefetcher {
 public:
  Prefetcher(const Dataset& data, adapters::MultimodalLMImpl& model, FeatureCache& cache, int workers);
  ~Prefetcher();  // waits for the batches still being made
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Keys are (epoch << 32) + position: the epoch reaches Materialize.
  // Starts materializing `indices` for `key` unless it is scheduled already or `workers` batches
  // are in flight (then it is made inline when asked for).
  void Ahead(int64_t key, const std::vector<int64_t>& indices);
  // The batch of `key`: the scheduled one, or made now. Batches scheduled for smaller keys are
  // dropped (positions the caller skipped, e.g. the end of an epoch).
  std::vector<adapters::MultimodalExample> Get(int64_t key, const std::vector<int64_t>& indices);

 private:
  const Dataset& data_;
  adapters::MultimodalLMImpl& model_;
  FeatureCache& cache_;
  int workers_;
  std::map<int64_t, std::future<std::vector<adapters::MultimodalExample>>> pending_;
};

}  // namespace slm::train
