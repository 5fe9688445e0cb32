#include "train/runner.h"

#include <cmath>

#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/strings.h"
#include "core/timer.h"

namespace slm::train {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

void LoopOptions::Load(config::Node& node) {
  OptimOptions::Load(node);
  node.Read("grad_accum", grad_accum, config::InRange<int64_t>(1, 1 << 16))
      .Read("precision", precision, config::OneOf<std::string>({"float32", "bfloat16", "float16"}));
}

Precision::Precision(const std::string& precision, const std::string& device)
    : device_(ParseDevice(device)), dtype_(ParseDtype(precision)), enabled_(precision != "float32") {}

json TrainingState::ToJson() const {
  return {{"step", step},
          {"epoch", epoch},
          {"cursor", cursor},
          {"examples_seen", examples_seen},
          {"target_tokens_seen", target_tokens_seen},
          {"loss_ema", loss_ema}};
}

TrainingState TrainingState::FromJson(const json& j, const std::string& where) {
  TrainingState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.epoch = j.at("epoch").get<int64_t>();
    s.cursor = j.at("cursor").get<int64_t>();
    s.examples_seen = j.at("examples_seen").get<int64_t>();
    s.target_tokens_seen = j.at("target_tokens_seen").get<int64_t>();
    s.loss_ema = j.at("loss_ema").get<double>();
  } catch (const json::exception& e) {
    throw Error(Str(where, ": invalid training state (", e.what(), ")"));
  }
  return s;
}

Job::Job(const JobOptions& options) : options_(options), start_(Clock::now()) {
  SetThreads(options_.threads);
  torch::manual_seed(options_.seed);
  if (options_.output_dir.empty() || !options_.writer) return;
  fs::MakeDirs(options_.output_dir);
  fs::AtomicWriteString(options_.output_dir + "/config.yaml", options_.effective_config_yaml);
  metrics_ = std::make_unique<MetricsLog>(options_.output_dir + "/metrics.jsonl", !options_.append_metrics);
}

void Job::Log(const json& record) const {
  if (metrics_) metrics_->Append(record);
}

void Job::Finish(const json& result) const {
  if (!metrics_) return;
  metrics_->Append({{"final", result}});
  fs::AtomicWriteString(options_.output_dir + "/result.json", result.dump(2) + "\n");
}

double Job::Seconds() const { return SecondsSince(start_); }

json LoopResult::ToJson() const {
  return {{"steps", steps},
          {"steps_this_run", steps_this_run},
          {"final_loss", final_loss},
          {"recent_loss", recent_loss},
          {"seconds", seconds},
          {"examples", examples},
          {"tokens", tokens},
          {"stopped_by_time_limit", stopped_by_time_limit},
          {"stopped_by_data", stopped_by_data}};
}

void JobConfig::LoadJobKeys(config::Node& node) {
  node.Read("seed", seed).Read("threads", threads, config::InRange(0, 1024)).Read("output_dir", output_dir);
  node.Read("device", device, config::Validator<std::string>(DeviceNameProblem));
}

JobOptions JobConfig::Options(const std::string& effective_config_yaml) const {
  return {output_dir, effective_config_yaml, seed, threads};
}

json JobResult::ToJson() const {
  return {{"model_dir", model_dir},
          {"parameters", parameters},
          {"seconds", seconds},
          {"steps", training.steps},
          {"final_train_loss", training.final_loss},
          {"stopped_by_time_limit", training.stopped_by_time_limit},
          {"training", training.ToJson()}};
}

TrainingLoop::TrainingLoop(const LoopOptions& options, LoopSettings settings, std::vector<torch::Tensor> parameters,
                           torch::optim::Optimizer& optimizer, LoopHooks hooks, Distributed* dist)
    : options_(options),
      settings_(std::move(settings)),
      parameters_(std::move(parameters)),
      optimizer_(optimizer),
      hooks_(std::move(hooks)),
      dist_(dist != nullptr && dist->World() > 1 ? dist : nullptr) {
  Check(static_cast<bool>(hooks_.next), "TrainingLoop: the job gave no `next` hook");
}

bool TrainingLoop::Step(TrainingState& state, double* loss_out, double* grad_norm_out, double* lr_out) {
  const double lr = options_.LearningRate(state.step);
  SetLearningRate(optimizer_, lr);
  optimizer_.zero_grad();
  double step_loss = 0;
  for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
    const std::optional<MicroBatch> batch = hooks_.next(state, micro);
    if (!batch) return false;
    // The global batch's mean over its loss terms: each rank weights its own mean by its share of
    // the terms, and the gradients are summed over ranks.
    const double global_tokens = dist_ ? dist_->AllReduceSum(static_cast<double>(batch->tokens))
                                       : static_cast<double>(batch->tokens);
    const double share = dist_ ? (global_tokens > 0 ? batch->tokens / global_tokens : 0.0) : 1.0;
    const double weight = share / static_cast<double>(options_.grad_accum);
    torch::Tensor loss;
    if (batch->loss.defined()) loss = weight == 1.0 ? batch->loss : batch->loss * weight;
    const double mine = loss.defined() ? loss.item<double>() : 0.0;
    const double value = dist_ ? dist_->AllReduceSum(mine) : mine;
    if (!std::isfinite(value))
      throw Error(Str(settings_.name, " diverged: non-finite loss (", value, ") at step ", state.step,
                      hooks_.describe_failure ? hooks_.describe_failure(state) : std::string(), " (",
                      settings_.divergence_hint, ")"));
    if (loss.defined()) loss.backward();
    step_loss += value;
    state.examples_seen += batch->examples;
    state.target_tokens_seen += static_cast<int64_t>(global_tokens);
    examples_ += batch->examples;
    tokens_ += static_cast<int64_t>(global_tokens);
  }
  if (hooks_.penalty) {
    const torch::Tensor penalty = hooks_.penalty();
    if (penalty.defined()) {
      (dist_ ? penalty / dist_->World() : penalty).backward();
      step_loss += penalty.item<double>();
    }
  }
  if (dist_) dist_->AllReduceGradients(parameters_);
  // Without clipping the norm is only needed for the steps that are logged.
  const bool logged = (state.step + 1) % options_.log_every == 0;
  const double grad_norm = options_.grad_clip > 0 || logged ? ClipGradients(parameters_, options_) : 0.0;
  optimizer_.step();
  state.loss_ema = state.step == 0 ? step_loss : 0.95 * state.loss_ema + 0.05 * step_loss;
  ++state.step;
  if (loss_out) *loss_out = step_loss;
  if (grad_norm_out) *grad_norm_out = grad_norm;
  if (lr_out) *lr_out = lr;
  return true;
}

LoopResult TrainingLoop::Run(TrainingState& state, const Job* job) {
  const auto start = Clock::now();
  const int64_t first_step = state.step;
  examples_ = tokens_ = 0;
  LoopResult result;
  ProgressBar bar(settings_.name, options_.steps, settings_.quiet);
  bar.Update(state.step, "");
  double window_sum = 0;
  int64_t window_count = 0;
  auto log = [&](const json& record) {
    if (job != nullptr) job->Log(record);
  };
  while (state.step < options_.steps) {
    if (options_.max_minutes > 0 && SecondsSince(start) > options_.max_minutes * 60) {
      result.stopped_by_time_limit = true;
      log::Warn(Str(settings_.name, ": stopping at step ", state.step, ": train.max_minutes (",
                    options_.max_minutes, ") reached"));
      break;
    }
    double loss = 0, grad_norm = 0, lr = 0;
    if (!Step(state, &loss, &grad_norm, &lr)) {
      result.stopped_by_data = true;
      break;
    }
    result.final_loss = loss;
    window_sum += loss;
    ++window_count;
    bar.Update(1, Str(settings_.loss_name, " ", std::round(state.loss_ema * 1000) / 1000));
    const bool boundary = state.step % options_.log_every == 0;
    if (boundary || state.step == options_.steps) {
      result.recent_loss = window_sum / window_count;
      window_sum = 0;
      window_count = 0;
    }
    if (boundary) {
      const double seconds = SecondsSince(start);
      json record = {{"step", state.step},
                     {"loss", loss},
                     {"loss_ema", state.loss_ema},
                     {"lr", lr},
                     {"grad_norm", grad_norm},
                     {"examples_per_second", examples_ / seconds},
                     {"tokens_per_second", tokens_ / seconds},
                     {"elapsed_seconds", job != nullptr ? job->Seconds() : seconds}};
      if (hooks_.log_fields) record.update(hooks_.log_fields(state, seconds));
      log(record);
    }
    if (hooks_.evaluate && settings_.eval_every > 0 && state.step % settings_.eval_every == 0 &&
        state.step < options_.steps) {
      json record = hooks_.evaluate(state);
      if (!record.is_null()) {
        record["step"] = state.step;
        log(record);
      }
    }
    if (hooks_.checkpoint && settings_.checkpoint_every > 0 && state.step % settings_.checkpoint_every == 0)
      hooks_.checkpoint(state);
  }
  if (window_count > 0) result.recent_loss = window_sum / window_count;
  bar.Finish();
  result.steps = state.step;
  result.steps_this_run = state.step - first_step;
  result.seconds = SecondsSince(start);
  result.examples = examples_;
  result.tokens = tokens_;
  return result;
}

}  // namespace slm::train
