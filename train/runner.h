// The one training runner: every training job (`slm text pretrain`, `slm audio pretrain`,
// `slm vision pretrain`, `slm audio units train-decoder`, `slm train`) is a Job (the run
// directory's preamble and result) around a TrainingLoop (the optimizer steps). A job supplies its
// model's parameters, an optimizer and hooks (the next micro-batch's loss, an extra penalty, the
// evaluation, the checkpoint); the loop owns what the jobs share and must not each get differently:
// the learning-rate schedule, gradient accumulation, mixed precision, the all-reduce of gradients
// across ranks, clipping, the non-finite loss stop, the time limit, the loss EMA, progress and the
// metrics records, and the cadence of evaluations and checkpoints.
//
// Not thread-safe: one Job and one TrainingLoop per process, driven from one thread (a job's hooks
// may use worker threads of their own).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/autocast.h"
#include "core/config.h"
#include "core/metrics_log.h"
#include "core/optim.h"
#include "train/distributed.h"

namespace slm::train {

// The `train:` keys every job reads: core/optim.h's schedule, AdamW and clipping keys plus
//   grad_accum  micro-batches per optimizer step (their losses are averaged, one update)
//   precision   float32 | bfloat16 | float16: autocast of the forward passes (the hooks enter it
//               with Precision::Scope) over float32 master weights
struct LoopOptions : OptimOptions {
  int64_t grad_accum = 1;
  std::string precision = "float32";
  void Load(config::Node& node);
};

// What a job's hooks enter around their forward passes (and evaluations): autocast to the
// configured dtype on the model's device, or nothing for float32.
class Precision {
 public:
  Precision(const std::string& precision, const std::string& device);
  AutocastGuard Scope() const { return AutocastGuard(device_, dtype_, enabled_); }
  bool Enabled() const { return enabled_; }

 private:
  torch::Device device_;
  torch::ScalarType dtype_;
  bool enabled_;
};

// Where a run is: restored from a checkpoint by --resume, advanced by the loop. epoch and cursor
// belong to the job's data order (the loop only carries them into checkpoints).
struct TrainingState {
  int64_t step = 0;    // optimizer steps done
  int64_t epoch = 0;   // the epoch the next batch comes from
  int64_t cursor = 0;  // the next batch's index in that epoch
  int64_t examples_seen = 0;
  int64_t target_tokens_seen = 0;
  double loss_ema = 0;
  nlohmann::json ToJson() const;
  static TrainingState FromJson(const nlohmann::json& json, const std::string& where);
};

// A training job's preamble and end: sets the intra-op threads and the global seed, creates
// output_dir with config.yaml (the effective config) and metrics.jsonl, and at the end writes the
// result into metrics.jsonl ({"final": ...}) and output_dir/result.json. A job without an
// output_dir writes nothing; `writer` = false (ranks other than the main one) writes nothing either.
struct JobOptions {
  std::string output_dir;
  std::string effective_config_yaml;
  uint64_t seed = 0;
  int threads = 0;            // 0 = LibTorch's default
  bool append_metrics = false;  // a resumed run continues its metrics.jsonl
  bool writer = true;
};

struct LoopResult {
  int64_t steps = 0;             // state.step at the end
  int64_t steps_this_run = 0;
  double final_loss = 0;         // the last step's loss (penalty included)
  double recent_loss = 0;        // mean loss of the steps since the last log_every boundary (or the last window)
  double seconds = 0;            // the loop's wall time
  int64_t examples = 0, tokens = 0;  // this run's, all ranks
  bool stopped_by_time_limit = false;
  bool stopped_by_data = false;
  nlohmann::json ToJson() const;
};

// The top-level keys of a pretraining job's config: its seed, intra-op threads (0 = LibTorch's
// default), where the model trains (cpu | cuda | cuda:N | auto, core/device.h) and its run
// directory. (slm train reads seed, threads and output_dir alike and places its model by
// model.device.)
struct JobConfig {
  uint64_t seed = 1;
  int threads = 0;
  std::string device = "cpu";
  std::string output_dir;
  // seed, threads (0..1024), device and output_dir, each optional; config errors name the key.
  void LoadJobKeys(config::Node& node);
  // The Job these keys describe; `effective_config_yaml` becomes config.yaml.
  JobOptions Options(const std::string& effective_config_yaml) const;
};

// What every pretraining job's result (result.json) holds first: where the model went, its
// trainable parameter count, the job's wall time (data preparation and evaluation included) and
// the loop's account. ToJson also writes the loop's steps, last loss ("final_train_loss") and
// time-limit stop at the top, where readers of result.json find them.
struct JobResult {
  std::string model_dir;
  int64_t parameters = 0;
  double seconds = 0;
  LoopResult training;
  nlohmann::json ToJson() const;
};

class Job {
 public:
  explicit Job(const JobOptions& options);
  void Log(const nlohmann::json& record) const;
  void Finish(const nlohmann::json& result) const;
  double Seconds() const;  // since the job began (data preparation included)
  const std::string& OutputDir() const { return options_.output_dir; }

 private:
  JobOptions options_;
  std::unique_ptr<MetricsLog> metrics_;
  std::chrono::steady_clock::time_point start_;
};

// One micro-batch's contribution to a step, from the job's `next` hook.
struct MicroBatch {
  torch::Tensor loss;     // scalar mean loss of this rank's examples; undefined if it has none
  int64_t examples = 0;   // examples in the micro-batch (all ranks together)
  int64_t tokens = 0;     // loss terms of this rank's examples: ranks are weighted by their share
};

struct LoopHooks {
  // The next micro-batch's forward pass (`micro` in [0, grad_accum)); std::nullopt ends the run
  // before this step's update (the data ran out, e.g. max_epochs). Required.
  std::function<std::optional<MicroBatch>(TrainingState& state, int64_t micro)> next;
  // An extra loss added once per step (e.g. L2 towards the start weights); undefined = none.
  // Every rank computes the same penalty; its gradient counts once.
  std::function<torch::Tensor()> penalty;
  // Fields added to each metrics record (every log_every steps), e.g. a throughput in the job's
  // own unit; `seconds` is the loop's time so far.
  std::function<nlohmann::json(const TrainingState& state, double seconds)> log_fields;
  // The evaluation every eval_every steps (not at the last step: the job evaluates at the end);
  // its fields are logged with the step. Null = none.
  std::function<nlohmann::json(const TrainingState& state)> evaluate;
  // Called every checkpoint_every steps, after the optimizer step.
  std::function<void(const TrainingState& state)> checkpoint;
  // Said after "non-finite loss (x) at step N" when the loss diverges (e.g. the batch's ids).
  std::function<std::string(const TrainingState& state)> describe_failure;
};

struct LoopSettings {
  std::string name = "train";     // the progress bar's label
  std::string loss_name = "loss";  // shown on the progress bar
  int64_t eval_every = 0;          // 0 = no evaluation inside the loop
  int64_t checkpoint_every = 0;    // 0 = no checkpoint inside the loop
  std::string divergence_hint = "lower train.lr or raise train.warmup_steps";
  bool quiet = false;
};

// The optimizer steps of a job. Each step: learning rate from the schedule, grad_accum
// micro-batches (each loss scaled by its rank's token share and 1/grad_accum, backward), the
// penalty, the gradients summed over ranks, clipping, the optimizer step. The loss of each
// micro-batch is checked before its backward: a non-finite one stops the run with slm::Error
// (the step, the job's description, the hint) so that the weights stay those of the last good step.
// max_minutes counts from the loop's start (data preparation and model loading are not limited).
class TrainingLoop {
 public:
  // `dist` may be null (a single process); `parameters` are what the optimizer updates.
  TrainingLoop(const LoopOptions& options, LoopSettings settings, std::vector<torch::Tensor> parameters,
               torch::optim::Optimizer& optimizer, LoopHooks hooks, Distributed* dist = nullptr);

  // One optimizer step; false if the data ran out before it (nothing was updated). The step's
  // loss (summed over micro-batches, penalty included) goes to *loss.
  bool Step(TrainingState& state, double* loss = nullptr, double* grad_norm = nullptr, double* lr = nullptr);
  // Steps until options.steps (from state.step), the data ends or max_minutes, with the progress
  // bar, the metrics records through `job` (may be null), evaluations and checkpoints.
  LoopResult Run(TrainingState& state, const Job* job);

 private:
  LoopOptions options_;
  LoopSettings settings_;
  std::vector<torch::Tensor> parameters_;
  torch::optim::Optimizer& optimizer_;
  LoopHooks hooks_;
  Distributed* dist_;
  int64_t examples_ = 0, tokens_ = 0;  // this run's
};

}  // namespace slm::train
