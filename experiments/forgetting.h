// Catastrophic forgetting of a multi-stage run (e.g. text -> asr -> tts -> sqa): the stage x task
// matrix of evaluation results, and per task how much was lost by the end.
//
// Input: one row per finished stage, in training order: (stage label, the trainer's Evaluate()
// JSON after that stage). Each object-valued member of an evaluation is one source, keyed
// "<manifest> (<task>)", with a "task" member and numeric metrics; other members ("loss",
// "lora_discount") are not sources. A column is one source key; columns are the union over rows in
// order of first appearance (within one evaluation in key order, as nlohmann::json sorts keys).
// Each column follows one metric of its task (DefaultMetric, or an override per task), in that
// metric's own units (WER as a fraction, perplexity as is); nothing is normalised.
//
// Forgetting of a column (Chaudhry et al. 2018, in the metric's "worse" direction): last value
// minus the best value over the rows from the one that introduced it up to, not including, the last
// (lower-is-better: last - min; higher-is-better: max - last). Positive = forgot; negative = the
// task kept improving. Backward-transfer term (Lopez-Paz & Ranzato 2017): change from the
// introducing row to the last, signed so that positive = improved. Both are undefined for a column
// the last stage introduced or the last row lacks. Tasks are on different scales (WER, perplexity),
// so the summaries are relative: mean forgetting is the mean over columns of forgetting / |best|
// (relative_forgetting), BWT the mean of term / |introducing value|; compare runs on the same tasks.
//
// Thread-safety: pure functions; ForgettingReport is a plain value.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "train/tasks.h"

namespace slm::experiments {

// Which number of a task's evaluation a report follows, and which way is better.
using train::TaskMetric;  // train/tasks.h

// The task's headline (train/tasks.h Task::headline: asr wer, sqa ranking_accuracy, ...); a task
// the registry does not know (a hand-written evaluation): loss (lower).
TaskMetric DefaultMetric(const std::string& task);

struct ForgettingReport {
  std::vector<std::string> stages;   // row labels, in training order
  std::vector<std::string> columns;  // source keys "<manifest> (<task>)"
  // Short column labels: the task, or "<task>: <manifest>" when the task has several sources.
  std::vector<std::string> labels;
  std::vector<std::string> tasks;      // per column
  std::vector<TaskMetric> metrics;     // per column
  std::vector<int> first_stage;        // per column: the row (stage) that introduced it
  std::vector<std::vector<std::optional<double>>> values;  // [row][column]; nullopt = not evaluated
  std::vector<std::optional<double>> forgetting;              // per column, positive = forgot
  std::vector<std::optional<double>> relative_forgetting;      // forgetting / |best|
  std::vector<std::optional<double>> backward_transfer_terms;  // per column, positive = improved
  std::optional<double> backward_transfer;  // BWT: mean of the defined terms, each / |introducing value|
  std::optional<double> mean_forgetting;    // mean of the defined relative_forgetting values

  // The fields above under the same names; nullopt as null, metrics as {"metric", "higher_is_better"}.
  nlohmann::json ToJson() const;
  // Rows = stages, columns = "<label> <metric> ↓|↑", values to 4 significant digits ("–" where
  // missing), then a "forgetting" row and a line with BWT and mean forgetting.
  std::string ToMarkdown() const;
};

// `overrides`: task -> metric to follow instead of DefaultMetric. slm::Error when `rows` is empty,
// an evaluation is not an object, a source's task is unknown (no "task" member and no "(<task>)"
// key suffix), or a column's metric is missing or not a number in an evaluation that has the
// source (the message names the stage, the source and the metric).
ForgettingReport BuildForgettingReport(const std::vector<std::pair<std::string, nlohmann::json>>& rows,
                                       const std::map<std::string, TaskMetric>& overrides = {});

}  // namespace slm::experiments
