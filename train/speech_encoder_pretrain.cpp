#include "train/speech_encoder_pretrain.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/manifest.h"
#include "datagen/data_prep.h"
#include "train/metrics.h"

namespace slm::train {
namespace {

namespace stdfs = std::filesystem;
using config::InRange;

struct Utterance {
  std::string id;
  std::string text;          // as in the manifest
  torch::Tensor features;    // [T, n_mels] float32
  std::vector<int64_t> target;
  double seconds = 0;
};

struct Split {
  std::vector<Utterance> utterances;
  int64_t skipped_long = 0, skipped_empty = 0;
  double seconds = 0;
};

// The manifest of one split, synthesized from the corpus's sentences when it is missing.
std::string EnsureSplit(const SpeechEncoderPretrainConfig& c, const std::string& split, int64_t count,
                        uint64_t seed_offset) {
  const std::string manifest = c.data.speech_dir + "/" + split + "/manifest.jsonl";
  if (!stdfs::exists(manifest))
    Check(c.data.build_if_missing || stdfs::exists(c.data.corpus_dir + "/sentences/" + split + ".txt"),
          "no sentences at '", c.data.corpus_dir, "/sentences/", split, ".txt'; run `slm data corpus --out ",
          c.data.corpus_dir, "` or set data.build_if_missing: true");
  datagen::SpeechSynthesis synthesis;
  synthesis.sentences = c.data.corpus_dir + "/sentences/" + split + ".txt";
  synthesis.count = count;
  synthesis.seed = c.seed * 7919 + seed_offset;
  synthesis.voices = c.data.voices;
  synthesis.exclude_voices = c.data.exclude_voices;
  synthesis.vocabulary_from = c.data.corpus_dir + "/sentences/train.txt";
  synthesis.vocabulary_size = c.data.vocabulary_size;
  synthesis.max_words = c.data.max_words;
  synthesis.corpus_dir = c.data.corpus_dir;
  synthesis.wordnet_dir = c.data.wordnet_dir;
  datagen::EnsureSpeechManifest(manifest, synthesis);
  return manifest;
}

Split LoadSplit(const std::string& manifest_path, const audio::LogMel& mel, double max_seconds,
                int64_t limit) {
  const manifest::Manifest m = manifest::Read(manifest_path);
  Split split;
  for (const manifest::Entry& e : m.entries) {
    if (limit > 0 && static_cast<int64_t>(split.utterances.size()) >= limit) break;
    Check(!e.audio.empty(), manifest_path, ": utterance '", e.id, "' has no \"audio\"");
    const audio::Waveform wave = audio::Read(fs::Resolve(m.base_dir, e.audio));
    Utterance u;
    u.id = e.id;
    u.text = e.text;
    u.seconds = wave.Seconds();
    u.target = audio::CtcAlphabet::Encode(e.text);
    if (u.target.empty()) {
      ++split.skipped_empty;
      continue;
    }
    if (max_seconds > 0 && u.seconds > max_seconds) {
      ++split.skipped_long;
      continue;
    }
    u.features = mel.Compute(wave.samples);
    split.seconds += u.seconds;
    split.utterances.push_back(std::move(u));
  }
  Check(!split.utterances.empty(), manifest_path, ": no usable utterance (", split.skipped_long,
        " longer than data.max_seconds, ", split.skipped_empty, " without letters)");
  return split;
}

struct Batch {
  torch::Tensor features;  // [B, T, n_mels]
  torch::Tensor lengths;   // [B]
  std::vector<std::vector<int64_t>> targets;
  std::vector<const Utterance*> utterances;
};

// lead_crop_frames > 0 (training): each row starts 0..lead_crop_frames frames later, uniformly, so
// that the encoder also hears utterances whose first word starts at once (the synthesized corpus
// always has the same silent margin; a recording or a stream often has none).
Batch MakeBatch(const std::vector<Utterance>& data, const std::vector<int64_t>& indices,
                int64_t lead_crop_frames = 0, torch::Generator* generator = nullptr) {
  Batch batch;
  std::vector<int64_t> crops;
  for (int64_t i : indices) {
    const int64_t most = std::min(lead_crop_frames, data[i].features.size(0) / 4);
    crops.push_back(most > 0 && generator != nullptr ? torch::randint(most + 1, {1}, *generator).item<int64_t>() : 0);
  }
  int64_t longest = 0;
  for (size_t row = 0; row < indices.size(); ++row)
    longest = std::max(longest, data[indices[row]].features.size(0) - crops[row]);
  const int64_t mels = data[indices[0]].features.size(1);
  batch.features = torch::zeros({static_cast<int64_t>(indices.size()), longest, mels});
  std::vector<int64_t> lengths;
  for (size_t row = 0; row < indices.size(); ++row) {
    const Utterance& u = data[indices[row]];
    const int64_t frames = u.features.size(0) - crops[row];
    batch.features[row].slice(0, 0, frames).copy_(u.features.slice(0, crops[row]));
    lengths.push_back(frames);
    batch.targets.push_back(u.target);
    batch.utterances.push_back(&u);
  }
  batch.lengths = torch::tensor(lengths, torch::kLong);
  return batch;
}

// Epoch order: shuffle, then sort within pools of 50 batches by length and shuffle the batches,
// so padding stays small without making the order deterministic in length.
std::vector<std::vector<int64_t>> EpochBatches(const std::vector<Utterance>& data, int64_t batch_size,
                                               torch::Generator& generator) {
  const int64_t n = static_cast<int64_t>(data.size());
  const torch::Tensor perm = torch::randperm(n, generator);
  std::vector<int64_t> order(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n);
  const int64_t pool = batch_size * 50;
  std::vector<std::vector<int64_t>> batches;
  for (int64_t start = 0; start < n; start += pool) {
    const int64_t end = std::min(n, start + pool);
    std::sort(order.begin() + start, order.begin() + end, [&](int64_t a, int64_t b) {
      return data[a].features.size(0) < data[b].features.size(0);
    });
    for (int64_t b = start; b + batch_size <= end; b += batch_size)
      batches.emplace_back(order.begin() + b, order.begin() + b + batch_size);
  }
  const torch::Tensor shuffle = torch::randperm(static_cast<int64_t>(batches.size()), generator);
  std::vector<std::vector<int64_t>> shuffled;
  for (int64_t i = 0; i < shuffle.size(0); ++i) shuffled.push_back(batches[shuffle[i].item<int64_t>()]);
  return shuffled;
}

// SpecAugment: zeroes random frequency bands and time spans of each row (in place), inside the
// row's real frames.
void MaskFeatures(Batch& batch, const SpeechEncoderPretrainConfig::Train& t,
                  torch::Generator& generator) {
  auto uniform = [&](int64_t high) {  // integer in [0, high)
    if (high <= 0) return int64_t{0};
    return torch::randint(high, {1}, generator).item<int64_t>();
  };
  const int64_t mels = batch.features.size(2);
  for (int64_t row = 0; row < batch.features.size(0); ++row) {
    const int64_t length = batch.lengths[row].item<int64_t>();
    for (int64_t m = 0; m < t.freq_masks; ++m) {
      const int64_t width = uniform(t.freq_mask_width + 1);
      const int64_t start = uniform(mels - width + 1);
      batch.features[row].slice(1, start, start + width).zero_();
    }
    for (int64_t m = 0; m < t.time_masks; ++m) {
      const int64_t width = std::min(uniform(t.time_mask_width + 1), length / 5);
      const int64_t start = uniform(length - width + 1);
      batch.features[row].slice(0, start, start + width).zero_();
    }
  }
}

// Corruptions of the kind a unit decoder's output shows (issue 7's round trip): a log-mel smoothed
// over time or frequency and small per-bin errors. An encoder trained on espeak-ng's exact,
// deterministic spectra otherwise stops hearing speech under a 3-frame blur (docs/BENCHMARKS.md
// "Speech output"). Each row independently: with train.blur_prob a 1-2-1 (or, half the time,
// 1-2-3-2-1) filter over time, with train.blur_prob the same over mel bins, then Gaussian noise of a
// standard deviation drawn uniformly from [0, train.noise_std]. Padding frames stay zero.
void CorruptFeatures(Batch& batch, const SpeechEncoderPretrainConfig::Train& t,
                     torch::Generator& generator) {
  if (t.blur_prob <= 0 && t.noise_std <= 0) return;
  auto uniform01 = [&]() { return torch::rand({1}, generator).item<double>(); };
  auto smooth = [](const torch::Tensor& x, int64_t dim, bool wide) {  // x: [T, M], edges replicated
    const int64_t n = x.size(dim);
    if (n < 3) return x;
    const torch::Tensor prev = torch::cat({x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)}, dim);
    const torch::Tensor next = torch::cat({x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)}, dim);
    torch::Tensor y = (prev + 2 * x + next) / 4;
    if (!wide) return y;
    const torch::Tensor prev2 = torch::cat({y.narrow(dim, 0, 1), y.narrow(dim, 0, n - 1)}, dim);
    const torch::Tensor next2 = torch::cat({y.narrow(dim, 1, n - 1), y.narrow(dim, n - 1, 1)}, dim);
    return (prev2 + y + next2) / 3;  // 1-2-1 then 1-1-1: 1-3-4-3-1 / 12, a 5-tap smoothing
  };
  for (int64_t row = 0; row < batch.features.size(0); ++row) {
    const int64_t length = batch.lengths[row].item<int64_t>();
    torch::Tensor frames = batch.features[row].slice(0, 0, length);
    torch::Tensor x = frames.clone();
    if (t.blur_prob > 0 && uniform01() < t.blur_prob) x = smooth(x, 0, uniform01() < 0.5);
    if (t.blur_prob > 0 && uniform01() < t.blur_prob) x = smooth(x, 1, uniform01() < 0.5);
    if (t.noise_std > 0) {
      const double sigma = uniform01() * t.noise_std;
      x = x + sigma * torch::randn(x.sizes(), generator, x.options());
    }
    frames.copy_(x);
  }
}

struct Scores {
  EditCounts chars, words;
  std::vector<std::pair<std::string, std::string>> examples;  // (reference, hypothesis)
};

Scores Evaluate(audio::WhisperEncoder& encoder, audio::CtcHead& head, const std::vector<Utterance>& data,
                int64_t batch_size, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  encoder->eval();
  head->eval();
  Scores scores;
  std::vector<int64_t> order(data.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  for (size_t start = 0; start < order.size(); start += batch_size) {
    const std::vector<int64_t> indices(order.begin() + start,
                                       order.begin() + std::min(order.size(), start + batch_size));
    const Batch batch = MakeBatch(data, indices);
    audio::WhisperEncoderInput input;
    input.features = batch.features.to(device);
    input.lengths = batch.lengths;
    const audio::WhisperEncoderOutput out = encoder->forward(input);
    const auto decoded = audio::CtcGreedyDecode(head(out.last_hidden_state), out.lengths);
    for (size_t row = 0; row < indices.size(); ++row) {
      const std::string reference = audio::CtcAlphabet::Normalize(batch.utterances[row]->text);
      const std::string hypothesis = audio::CtcAlphabet::Decode(decoded[row]);
      scores.chars += CharErrors(reference, hypothesis);
      scores.words += WordErrors(reference, hypothesis);
      scores.examples.emplace_back(reference, hypothesis);
    }
  }
  encoder->train();
  head->train();
  return scores;
}

}  // namespace

SpeechEncoderPretrainConfig::SpeechEncoderPretrainConfig() {
  output_dir = "runs/speech_encoder_tiny";
  features.normalization = audio::MelNormalization::kFixedFloor;
  model.d_model = 192;
  model.encoder_layers = 4;
  model.encoder_attention_heads = 4;
  model.encoder_ffn_dim = 768;
  model.num_mel_bins = 80;
  model.max_source_positions = 1500;
}

void SpeechEncoderPretrainConfig::Load(config::Node node) {
  auto d = node.Child("data");
  d.Read("corpus_dir", data.corpus_dir)
      .Read("wordnet_dir", data.wordnet_dir)
      .Read("build_if_missing", data.build_if_missing)
      .Read("speech_dir", data.speech_dir)
      .Read("train_utterances", data.train_utterances, InRange<int64_t>(1, int64_t{1} << 30))
      .Read("valid_utterances", data.valid_utterances, InRange<int64_t>(1, int64_t{1} << 30))
      .Read("test_utterances", data.test_utterances, InRange<int64_t>(1, int64_t{1} << 30))
      .Read("max_seconds", data.max_seconds, InRange(0.0, 600.0))
      .Read("voices", data.voices)
      .Read("exclude_voices", data.exclude_voices)
      .Read("vocabulary_size", data.vocabulary_size, InRange<int64_t>(0, int64_t{1} << 30))
      .Read("max_words", data.max_words, InRange<int64_t>(0, 1 << 20))
      .Read("extra_train_manifests", data.extra_train_manifests);
  node.Read("init_from", init_from);
  if (!init_from.empty()) {
    for (const char* key : {"model", "features"})
      if (node.Has(key))
        node.Fail(key, Str("cannot be given with init_from (the encoder's shape and features come from '", init_from, "')"));
    Check(stdfs::is_regular_file(init_from + "/config.json"), "init_from: '", init_from,
          "' is not a speech encoder directory (no config.json)");
    features = audio::LoadEncoderFeatureOptions(init_from);
    model = audio::WhisperEncoderConfig::FromFile(init_from + "/config.json");
  }
  features.Load(node.Child("features"));
  auto m = node.Child("model");
  m.Read("d_model", model.d_model, InRange<int64_t>(4, 65536))
      .Read("encoder_layers", model.encoder_layers, InRange<int64_t>(1, 256))
      .Read("encoder_attention_heads", model.encoder_attention_heads, InRange<int64_t>(1, 512))
      .Read("encoder_ffn_dim", model.encoder_ffn_dim, InRange<int64_t>(1, 262144))
      .Read("max_source_positions", model.max_source_positions, InRange<int64_t>(1, 1 << 20))
      .Read("attention_chunk_frames", model.attention_chunk_frames, InRange<int64_t>(0, 1 << 20))
      .Read("attention_left_chunks", model.attention_left_chunks, InRange<int64_t>(0, 1 << 20));
  model.num_mel_bins = features.n_mels;
  if (model.d_model % model.encoder_attention_heads != 0)
    m.Fail("encoder_attention_heads", Str("must divide d_model (", model.d_model, ")"));
  if (model.d_model % 2 != 0) m.Fail("d_model", "must be even (sinusoidal positions)");
  if (model.attention_left_chunks > 0 && model.attention_chunk_frames == 0)
    m.Fail("attention_left_chunks", "needs block-causal attention (attention_chunk_frames > 0)");
  auto t = node.Child("train");
  train.Load(t);
  t.Read("freq_masks", train.freq_masks, InRange<int64_t>(0, 100))
      .Read("freq_mask_width", train.freq_mask_width, InRange<int64_t>(0, 128))
      .Read("time_masks", train.time_masks, InRange<int64_t>(0, 100))
      .Read("time_mask_width", train.time_mask_width, InRange<int64_t>(0, 10000))
      .Read("blur_prob", train.blur_prob, InRange(0.0, 1.0))
      .Read("noise_std", train.noise_std, InRange(0.0, 10.0))
      .Read("lead_crop_frames", train.lead_crop_frames, InRange<int64_t>(0, 1000));
  auto e = node.Child("eval");
  e.Read("every", eval.every, InRange<int64_t>(1, int64_t{1} << 40))
      .Read("batch_size", eval.batch_size, InRange<int64_t>(1, 1 << 16));
  LoadJobKeys(node);
  if (data.max_seconds * features.sample_rate / features.hop_length > model.MaxInputFrames())
    d.Fail("max_seconds", Str("gives more feature frames than the encoder accepts (",
                              model.MaxInputFrames(), " = 2 * model.max_source_positions)"));
}

nlohmann::json SpeechEncoderPretrainResult::ToJson() const {
  nlohmann::json j = JobResult::ToJson();
  j.update({{"train_utterances", train_utterances},
            {"train_audio_seconds", train_audio_seconds},
            {"audio_seconds_per_second", audio_seconds_per_second},
            {"valid_cer", valid_cer},
            {"test_cer", test_cer},
            {"test_wer", test_wer},
            {"test_utterances", test_utterances}});
  return j;
}

SpeechEncoderPretrainResult PretrainSpeechEncoder(const SpeechEncoderPretrainConfig& c,
                                                  const std::string& effective_config_yaml,
                                                  bool quiet) {
  const Job job(c.Options(effective_config_yaml));

  // 1. Data: synthesized once, features in memory.
  const audio::LogMel mel(c.features);
  Split train = LoadSplit(EnsureSplit(c, "train", c.data.train_utterances, 0), mel,
                          c.data.max_seconds, c.data.train_utterances);
  for (const std::string& extra : c.data.extra_train_manifests) {
    Split more = LoadSplit(extra, mel, c.data.max_seconds, 0);
    for (Utterance& u : more.utterances) train.utterances.push_back(std::move(u));
    train.seconds += more.seconds;
    train.skipped_long += more.skipped_long;
    train.skipped_empty += more.skipped_empty;
  }
  const Split valid = LoadSplit(EnsureSplit(c, "valid", c.data.valid_utterances, 1), mel, 0,
                                c.data.valid_utterances);
  const Split test = LoadSplit(EnsureSplit(c, "test", c.data.test_utterances, 2), mel, 0,
                               c.data.test_utterances);
  Check(static_cast<int64_t>(train.utterances.size()) >= c.train.batch_size, "only ",
        train.utterances.size(), " training utterances for train.batch_size ", c.train.batch_size);
  for (const Split* split : {&valid, &test})
    for (const Utterance& u : split->utterances)
      Check(u.features.size(0) <= c.model.MaxInputFrames(), "held-out utterance '", u.id, "' (",
            u.seconds, " s) is longer than the encoder accepts; raise model.max_source_positions");
  log::Info(Str("speech encoder data: ", train.utterances.size(), " train utterances (",
                std::lround(train.seconds), " s; ", train.skipped_long, " longer than ",
                c.data.max_seconds, " s skipped), ", valid.utterances.size(), " valid, ",
                test.utterances.size(), " test"));

  // 2. Model.
  const torch::Device device = ParseDevice(c.device);
  audio::WhisperEncoder encoder{nullptr};
  audio::CtcHead head{nullptr};
  if (!c.init_from.empty()) {
    encoder = audio::LoadWhisperEncoder(c.init_from);
    head = audio::LoadCtcHead(c.init_from, encoder->Config().d_model, "init_from");
    for (auto* module : {static_cast<torch::nn::Module*>(encoder.get()), static_cast<torch::nn::Module*>(head.get())})
      for (auto& p : module->parameters()) p.set_requires_grad(true);
  } else {
    encoder = audio::WhisperEncoder(c.model);
    head = audio::CtcHead(c.model.d_model);
  }
  encoder->to(device);
  head->to(device);
  encoder->train();
  head->train();
  std::vector<torch::Tensor> trainable;
  for (auto* module : {static_cast<torch::nn::Module*>(encoder.get()),
                       static_cast<torch::nn::Module*>(head.get())})
    for (auto& p : module->named_parameters()) {
      // Whisper's sinusoidal positions stay fixed, as in Whisper.
      if (p.key().find("embed_positions") != std::string::npos) p.value().set_requires_grad(false);
      else trainable.push_back(p.value());
    }
  const auto optimizer = MakeAdamW(trainable, c.train);

  SpeechEncoderPretrainResult result;
  result.model_dir = c.output_dir;
  result.parameters = encoder->ParameterCount() + head->proj->weight.numel() + head->proj->bias.numel();
  result.train_utterances = static_cast<int64_t>(train.utterances.size());
  log::Info(Str("training a ", result.parameters, "-parameter encoder + CTC head"));

  // 3. Train.
  const Precision precision(c.train.precision, c.device);
  torch::Generator generator = at::detail::createCPUGenerator(c.seed);
  std::vector<std::vector<int64_t>> epoch = EpochBatches(train.utterances, c.train.batch_size, generator);
  size_t cursor = 0;
  LoopHooks hooks;
  hooks.next = [&](TrainingState&, int64_t) -> std::optional<MicroBatch> {
    if (cursor >= epoch.size()) {
      epoch = EpochBatches(train.utterances, c.train.batch_size, generator);
      cursor = 0;
    }
    Batch batch = MakeBatch(train.utterances, epoch[cursor++], c.train.lead_crop_frames, &generator);
    CorruptFeatures(batch, c.train, generator);
    MaskFeatures(batch, c.train, generator);
    for (const Utterance* u : batch.utterances) result.train_audio_seconds += u->seconds;
    audio::WhisperEncoderInput input;
    input.features = batch.features.to(device);
    input.lengths = batch.lengths;
    const AutocastGuard scope = precision.Scope();
    const audio::WhisperEncoderOutput out = encoder->forward(input);
    const int64_t frames = batch.lengths.sum().item<int64_t>();
    return MicroBatch{audio::CtcLoss(head(out.last_hidden_state), out.lengths, batch.targets),
                      static_cast<int64_t>(batch.utterances.size()), frames};
  };
  hooks.log_fields = [&](const TrainingState&, double seconds) {
    return nlohmann::json{{"audio_seconds_per_second", result.train_audio_seconds / seconds}};
  };
  hooks.evaluate = [&](const TrainingState& state) {
    const Scores v = Evaluate(encoder, head, valid.utterances, c.eval.batch_size, device);
    log::Info(Str("step ", state.step, ": valid CER ", v.chars.Rate(), ", WER ", v.words.Rate()));
    return nlohmann::json{{"valid_cer", v.chars.Rate()}, {"valid_wer", v.words.Rate()}};
  };
  LoopSettings settings{"speech encoder", "ctc", c.eval.every};
  settings.quiet = quiet;
  TrainingState state;
  TrainingLoop loop(c.train, settings, trainable, *optimizer, std::move(hooks));
  const LoopResult run = loop.Run(state, &job);
  result.training = run;

  // 4. Final evaluation on unseen sentences.
  const Scores v = Evaluate(encoder, head, valid.utterances, c.eval.batch_size, device);
  const Scores t = Evaluate(encoder, head, test.utterances, c.eval.batch_size, device);
  result.valid_cer = v.chars.Rate();
  result.test_cer = t.chars.Rate();
  result.test_wer = t.words.Rate();
  result.test_utterances = static_cast<int64_t>(test.utterances.size());
  result.seconds = job.Seconds();
  result.audio_seconds_per_second = result.train_audio_seconds / std::max(1e-9, run.seconds);

  // 5. The model directory (saved from the CPU, the same bytes wherever it trained).
  encoder->to(torch::kCPU);
  head->to(torch::kCPU);
  encoder->SaveWeights(c.output_dir, {{"ctc_head.weight", head->proj->weight},
                                      {"ctc_head.bias", head->proj->bias}});
  audio::SaveEncoderFeatureOptions(c.output_dir, c.features);
  std::string samples;
  for (size_t i = 0; i < std::min<size_t>(20, t.examples.size()); ++i)
    samples += "REF: " + t.examples[i].first + "\nHYP: " + t.examples[i].second + "\n\n";
  fs::AtomicWriteString(c.output_dir + "/samples.txt", samples);
  job.Finish(result.ToJson());
  return result;
}

}  // namespace slm::train
