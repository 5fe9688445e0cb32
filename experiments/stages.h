// Multi-stage training without forgetting: a training config with `stages:` (docs/CONFIG.md).
//
//   model, train, eval, checkpoint, data.{max_missing_fraction, workers, interleave}, threads,
//   init_adapters:  shared by every stage; a stage's own keys override them key by key
//   stages:         [{name, data: {train, valid}, train: {...}, eval: {...}, checkpoint: {...},
//                     evaluate_only: false}, ...] in training order
//   replay:         {mode: none | quota | reservoir, ratio: 0.05, ratios: {<stage>: r}, buffer_size: N}
//   merge:          {method: linear | ties, weights: {<stage>: w}, density: 0.2}   (optional)
//   report:         {metrics: {<task>: <metric>}}   (which number the forgetting report follows)
//   reuse_stages_from: DIR   (evaluation-only variants, e.g. a LoRA discount: take the stage adapters
//                             of a finished run with the same training instead of training)
//   output_dir, seed
//
// Stage k is a complete single-stage run in output_dir/stages/<k>-<name>/ (config.yaml as `slm eval
// --config` takes it, metrics.jsonl, checkpoints, adapters/, result.json) that starts from stage
// k-1's adapters, so adapters, LoRA and unit rows carry over; train.trainable picks what a stage
// trains. Its valid set is the valid sources of stages 0..k (every task seen so far); the
// evaluation that ends the stage is row k of the forgetting report, and eval.every adds
// evaluations inside the stage (the stability gap; stages.json "curve"). A stage with
// evaluate_only trains nothing: stage 0 "llm" stands for the untouched backbone, its valid set
// measures text retention and its train sources are what replay draws as text.
//
// Replay, quota mode (the study's): stage k's data gets, for each earlier stage s, round(ratio_s *
// N_k) examples of s's own train sources (N_k: stage k's items per epoch; ratio_s: ratios[s] or
// ratio), drawn once without replacement (with replacement when s has fewer) and split over s's
// sources by their usable entries; each keeps its own task and prompt, and all are shuffled with
// stage k's data. Reservoir mode: a buffer of buffer_size examples, reservoir-sampled (Algorithm R)
// from the stream of every earlier stage's examples in a seeded order; stage k replays the buffer.
// Both are written into the stage's config.yaml as `sample`/`pick` sources (so a resumed stage
// draws the same); replay.json and result.json "data" hold the counts and the mixture.
// Mitigations combine: train.l2_to_start pulls towards the weights each stage started from,
// eval.lora_discount applies to every evaluation, merge adds a last row "merged" (the stage
// adapters merged by adapters/merge.h, evaluated like a stage).
//
// Output: output_dir/config.yaml (the document as run), stages.json (per stage: dir, steps,
// seconds, replay counts, eval, curve), forgetting.json and forgetting.md (train/forgetting.h), and
// with eval.every > 0 curve_<k>_<task>.png: each column's metric over the steps of all stages (the
// stability gap: a dip when a stage starts, and its recovery). Resume: a stage with result.json is done;
// one with checkpoints continues (with `resume`); without `resume` an output_dir that holds a run
// is an error. Not thread-safe (one run per process).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "adapters/merge.h"
#include "core/config.h"
#include "experiments/forgetting.h"
#include "train/trainer.h"

namespace slm::experiments {

struct ReplayConfig {
  std::string mode = "none";              // none | quota | reservoir
  double ratio = 0.05;                    // quota: per earlier stage
  std::map<std::string, double> ratios;   // quota: per earlier stage by name (overrides ratio)
  int64_t buffer_size = 0;                // reservoir
};

struct StagesConfig {
  struct Stage {
    std::string name;
    bool evaluate_only = false;
    train::TrainConfig config;  // complete, replay sources not yet added (they need the data's sizes)
    YAML::Node yaml;     // the stage's assembled document
  };
  std::string source;  // the config file, for messages
  std::string yaml;    // the whole document as loaded (overrides applied): output_dir/config.yaml
  std::vector<Stage> stages;
  ReplayConfig replay;
  std::optional<adapters::MergeConfig> merge;  // inputs: the stages with a weight
  std::map<std::string, double> merge_weights;
  std::map<std::string, TaskMetric> metrics;
  std::string reuse_stages_from;
  std::string output_dir = "runs/stages";
  uint64_t seed = 1;

  // True when the document lists stages.
  static bool IsStaged(config::Document& doc);
  // Reads and checks everything (every stage's config is assembled and loaded, so a bad key or an
  // unknown task fails here with the file and line); slm::Error otherwise.
  void Load(config::Document& doc);
};

struct StagesResult {
  std::string output_dir;
  nlohmann::json stages = nlohmann::json::array();
  ForgettingReport report;
  double seconds = 0;
  nlohmann::json ToJson() const;
};

StagesResult RunStages(const StagesConfig& config, bool resume, bool quiet = false);

// Loads `adapters_dir` ("" = fresh adapters, initialised with config.seed) into config.model and
// evaluates on config.data.valid (Evaluate): what `slm eval` does.
nlohmann::json EvaluateAdapters(const train::TrainConfig& config, const std::string& adapters_dir);

}  // namespace slm::experiments
