// slm audio units train --manifest M.jsonl --out DIR [--k K] [--feature mel|encoder --encoder DIR --layer L]
// slm audio units encode --units DIR (--audio FILE [--out FILE.json] | --manifest M.jsonl --out M2.jsonl [--task T]) [--dedup]
// slm audio units train-decoder --units DIR --manifest M.jsonl --out DIR [--steps N] [--dim D] [--layers L]
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <iostream>

#include "audio/audio_io.h"
#include "audio/unit_decoder.h"
#include "audio/units.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json_report.h"
#include "core/log.h"
#include "core/manifest.h"
#include "core/progress.h"
#include "datagen/data_prep.h"
#include "text/tokenizer.h"
#include "train/unit_decoder_train.h"

namespace slm::cli {
namespace {

struct UnitsTrainCommand {
  std::string manifest, out;
  audio::UnitTokenizerInfo info;
  audio::KMeansOptions kmeans;
  int64_t max_utterances = 0;  // 0 = all
};

void RunUnitsTrain(const UnitsTrainCommand& c, bool json) {
  const manifest::Manifest m = manifest::Read(c.manifest);
  Check(!m.entries.empty(), c.manifest, ": no entries");
  const audio::UnitFeatureExtractor extractor(c.info);
  std::vector<torch::Tensor> frames;
  std::vector<torch::Tensor> per_utterance;
  const size_t count = c.max_utterances > 0 ? std::min<size_t>(c.max_utterances, m.entries.size()) : m.entries.size();
  ProgressBar bar("features", static_cast<int64_t>(count), json);
  for (size_t i = 0; i < count; ++i) {
    const manifest::Entry& e = m.entries[i];
    Check(!e.audio.empty(), c.manifest, ": entry '", e.id, "' has no audio");
    frames.push_back(extractor.Frames(audio::Read(m.AudioPath(e)).samples));
    bar.Update(1);
  }
  bar.Finish();
  const torch::Tensor all = torch::cat(frames);
  log::Info(Str("k-means: ", all.size(0), " frames of ", all.size(1), " features, k = ", c.kmeans.k));
  const audio::KMeansResult result = audio::TrainKMeans(all, c.kmeans);
  audio::UnitTokenizerInfo info = c.info;
  info.frame_rate_hz = extractor.FrameRateHz();
  info.inertia = result.inertia;
  const audio::UnitTokenizer tokenizer(result.centroids, info);
  tokenizer.Save(c.out);

  // Usage statistics: how many units are used, how evenly, and how long their runs are.
  torch::Tensor usage = torch::zeros({tokenizer.K()}, torch::kDouble);
  int64_t runs = 0, total = 0;
  for (const torch::Tensor& f : frames) {
    const std::vector<int64_t> ids = tokenizer.Assign(f);
    for (int64_t id : ids) usage[id] += 1;
    runs += static_cast<int64_t>(audio::Deduplicate(ids).size());
    total += static_cast<int64_t>(ids.size());
  }
  const torch::Tensor p = usage / usage.sum();
  const double entropy = -(p * torch::log(p.clamp_min(1e-12))).sum().item<double>();
  Report report(json);
  report.Set("out", c.out);
  report.Set("k", tokenizer.K());
  report.Set("feature", info.feature);
  report.Set("frames", all.size(0));
  report.Set("dim", all.size(1));
  report.Set("inertia", result.inertia);
  report.Set("reassigned", result.reassigned);
  report.Set("units_used", (usage > 0).sum().item<int64_t>());
  report.Set("unit_perplexity", std::exp(entropy));
  report.Set("frame_rate_hz", info.frame_rate_hz);
  report.Set("mean_run_frames", double(total) / std::max<int64_t>(1, runs));
  report.Set("units_per_second_deduplicated", info.frame_rate_hz * runs / std::max<int64_t>(1, total));
  report.Set("hash", tokenizer.Hash());
  report.Emit();
}

struct UnitsEncodeCommand {
  std::string units, audio, manifest, out;
  std::string task;  // --task: the new manifest's entries get this task (e.g. tts); empty = kept
  bool dedup = false;
};

void RunUnitsEncodeManifest(const UnitsEncodeCommand& c, bool json) {
  Check(!c.out.empty(), "--manifest needs --out (the new manifest)");
  const datagen::UnitsManifestStats stats = datagen::EncodeUnitsManifest(c.manifest, c.out, c.units, c.task, c.dedup, !json);
  Report report(json);
  report.Set("out", c.out);
  report.Set("entries", stats.entries);
  report.Set("units", stats.units);
  report.Set("tokenizer_hash", stats.tokenizer_hash);
  report.Emit();
}

void RunUnitsEncode(const UnitsEncodeCommand& c, bool json) {
  Check(c.audio.empty() != c.manifest.empty(), "give exactly one of --audio and --manifest");
  if (!c.manifest.empty()) return RunUnitsEncodeManifest(c, json);
  const audio::UnitTokenizer tokenizer = audio::UnitTokenizer::Load(c.units);
  const audio::UnitFeatureExtractor extractor(tokenizer.Info());
  const std::vector<int64_t> ids = tokenizer.Assign(extractor.Frames(audio::Read(c.audio).samples));
  nlohmann::json units = nlohmann::json::array(), durations = nlohmann::json::array();
  if (c.dedup) {
    for (const audio::UnitRun& r : audio::Deduplicate(ids)) {
      units.push_back(r.unit);
      durations.push_back(r.frames);
    }
  } else {
    units = ids;
  }
  // The unit file: units (and durations in frames when deduplicated) with the tokenizer's identity.
  nlohmann::json file = {{"tokenizer_hash", tokenizer.Hash()}, {"k", tokenizer.K()},
                         {"frame_rate_hz", tokenizer.Info().frame_rate_hz}, {"units", units}};
  if (c.dedup) file["durations"] = durations;
  if (!c.out.empty()) fs::AtomicWriteString(c.out, file.dump() + "\n");
  Report report(json);
  report.Set("audio", c.audio);
  report.Set("frames", static_cast<int64_t>(ids.size()));
  report.Set("units", static_cast<int64_t>(units.size()));
  report.Set("seconds", ids.size() / tokenizer.Info().frame_rate_hz);
  if (c.out.empty()) report.Set("unit_ids", units);
  else report.Set("out", c.out);
  report.Emit();
}

struct UnitsDecoderCommand {
  std::string units, manifest, out;
  audio::UnitDecoderConfig model;
  train::UnitDecoderTrainOptions train;
  int64_t max_utterances = 0;
};

void RunUnitsTrainDecoder(const UnitsDecoderCommand& c, bool json) {
  const audio::UnitTokenizer tokenizer = audio::UnitTokenizer::Load(c.units);
  const audio::UnitFeatureExtractor extractor(tokenizer.Info());
  audio::LogMelOptions mel_options;
  mel_options.normalization = audio::MelNormalization::kFixedFloor;
  const audio::LogMel mel(mel_options);
  const manifest::Manifest m = manifest::Read(c.manifest);
  const size_t count = c.max_utterances > 0 ? std::min<size_t>(c.max_utterances, m.entries.size()) : m.entries.size();
  Check(count > 0, c.manifest, ": no entries");
  std::vector<train::UnitDecoderExample> data;
  ProgressBar bar("units + mel", static_cast<int64_t>(count), json);
  for (size_t i = 0; i < count; ++i) {
    const std::vector<float> samples = audio::Read(m.AudioPath(m.entries[i])).samples;
    data.push_back({tokenizer.Assign(extractor.Frames(samples)), mel.Compute(samples)});
    bar.Update(1);
  }
  bar.Finish();
  audio::UnitDecoderConfig config = c.model;
  config.k = tokenizer.K();
  config.n_mels = mel_options.n_mels;
  config.upsample = static_cast<int64_t>(std::lround(mel_options.sample_rate / double(mel_options.hop_length) /
                                                     tokenizer.Info().frame_rate_hz));
  config.tokenizer_hash = tokenizer.Hash();
  torch::manual_seed(static_cast<int64_t>(c.train.seed));
  audio::UnitDecoder decoder(config);
  const train::UnitDecoderTrainResult r = train::TrainUnitDecoder(*decoder, data, c.train, json);
  decoder->Save(c.out);
  Report report(json);
  report.Set("out", c.out);
  report.Set("utterances", static_cast<int64_t>(data.size()));
  report.Set("upsample", config.upsample);
  report.Set("steps", r.steps);
  report.Set("train_l1", r.train_l1);
  report.Set("valid_l1", r.valid_l1);
  report.Set("valid_l1_mean_frame_baseline", r.mean_frame_l1);
  report.Set("seconds", r.seconds);
  report.Emit();
}

Registrar reg([](CLI::App& app, Common& common) {
  CLI::App* units = Group(app, "audio", "audio front-end and speech encoder tools")->add_subcommand("units", "discrete speech units (k-means)");
  units->require_subcommand(1);
  {
    auto c = std::make_shared<UnitsTrainCommand>();
    auto* cmd = units->add_subcommand("train", "train a k-means unit tokenizer on a manifest's audio");
    cmd->add_option("--manifest", c->manifest, "JSONL manifest with audio")->required();
    cmd->add_option("--out", c->out, "tokenizer directory")->required();
    cmd->add_option("--k", c->kmeans.k, "units")->check(CLI::Range(int64_t{2}, int64_t{100000}))->capture_default_str();
    cmd->add_option("--feature", c->info.feature, "mel | encoder")->check(CLI::IsMember({"mel", "encoder"}))->capture_default_str();
    cmd->add_option("--encoder", c->info.encoder, "speech encoder directory (--feature encoder)");
    cmd->add_option("--layer", c->info.layer, "encoder hidden state (0 = embeddings, -1 = last)")->capture_default_str();
    cmd->add_option("--iterations", c->kmeans.iterations, "mini-batch steps")->capture_default_str();
    cmd->add_option("--batch-size", c->kmeans.batch_size, "frames per step")->capture_default_str();
    cmd->add_option("--max-utterances", c->max_utterances, "first N utterances (0 = all)");
    cmd->add_option("--seed", c->kmeans.seed, "seed")->capture_default_str();
    cmd->callback([c, &common] { RunUnitsTrain(*c, common.json); });
  }
  {
    auto c = std::make_shared<UnitsEncodeCommand>();
    auto* cmd = units->add_subcommand("encode", "audio -> unit ids (one file, or every entry of a manifest)");
    cmd->add_option("--units", c->units, "tokenizer directory")->required();
    cmd->add_option("--audio", c->audio, "audio file (any rate)");
    cmd->add_option("--manifest", c->manifest, "add units to every entry of this manifest (written to --out)");
    cmd->add_flag("--dedup", c->dedup, "collapse repeated units (durations kept)");
    cmd->add_option("--task", c->task, "--manifest: set every entry's task (e.g. tts; default: kept)");
    cmd->add_option("--out", c->out, "the unit file (JSON) for --audio; the new manifest for --manifest");
    cmd->callback([c, &common] { RunUnitsEncode(*c, common.json); });
  }
  {
    auto c = std::make_shared<UnitsDecoderCommand>();
    c->train.steps = 1000;
    c->train.batch_size = 16;
    c->train.lr = 2e-3;
    c->train.warmup_steps = 50;
    c->train.log_every = 20;
    auto* cmd = units->add_subcommand("train-decoder", "train the unit-to-mel decoder on a manifest's audio");
    cmd->add_option("--units", c->units, "unit tokenizer directory")->required();
    cmd->add_option("--manifest", c->manifest, "JSONL manifest with audio")->required();
    cmd->add_option("--out", c->out, "decoder directory")->required();
    cmd->add_option("--steps", c->train.steps, "training steps")->capture_default_str();
    cmd->add_option("--batch-size", c->train.batch_size, "windows per step")->capture_default_str();
    cmd->add_option("--lr", c->train.lr, "peak learning rate")->capture_default_str();
    cmd->add_option("--window", c->train.window_units, "units per training window")->capture_default_str();
    cmd->add_option("--dim", c->model.dim, "channels")->capture_default_str();
    cmd->add_option("--layers", c->model.layers, "residual conv blocks")->capture_default_str();
    cmd->add_option("--kernel", c->model.kernel, "conv kernel (odd)")->capture_default_str();
    cmd->add_option("--max-utterances", c->max_utterances, "first N utterances (0 = all)");
    cmd->add_option("--seed", c->train.seed, "seed")->capture_default_str();
    cmd->callback([c, &common] { RunUnitsTrainDecoder(*c, common.json); });
  }
});

}  // namespace
}  // namespace slm::cli
