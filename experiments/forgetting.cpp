#include "experiments/forgetting.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "train/tasks.h"

namespace slm::experiments {
namespace {

std::string Significant(const std::optional<double>& value) {
  if (!value) return "–";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.4g", *value);
  return buffer;
}

nlohmann::json OrNull(const std::optional<double>& value) { return value ? nlohmann::json(*value) : nlohmann::json(); }

std::optional<double> MeanOfDefined(const std::vector<std::optional<double>>& values) {
  double sum = 0;
  int count = 0;
  for (const auto& v : values) {
    if (v) sum += *v, ++count;
  }
  return count ? std::optional<double>(sum / count) : std::nullopt;
}

// The task named by a key's "(<task>)" suffix: the trainer's source keys carry it even if a
// hand-written evaluation omits the "task" member.
std::string TaskFromKey(const std::string& key) {
  const size_t open = key.rfind(" (");
  if (open == std::string::npos || key.back() != ')') return "";
  return key.substr(open + 2, key.size() - open - 3);
}

std::string ManifestFromKey(const std::string& key, const std::string& task) {
  const std::string suffix = " (" + task + ")";
  return key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0 ? key.substr(0, key.size() - suffix.size()) : key;
}

}  // namespace

TaskMetric DefaultMetric(const std::string& task) {
  const std::vector<std::string> known = train::TaskNames();
  return std::find(known.begin(), known.end(), task) != known.end() ? train::GetTask(task).headline
                                                                    : TaskMetric{"loss", false};
}

ForgettingReport BuildForgettingReport(const std::vector<std::pair<std::string, nlohmann::json>>& rows,
                                       const std::map<std::string, TaskMetric>& overrides) {
  Check(!rows.empty(), "forgetting report: no evaluations given (one per stage is needed)");
  ForgettingReport report;
  std::map<std::string, size_t> column_of;
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& [stage, evaluation] = rows[r];
    Check(evaluation.is_object(), "forgetting report: the evaluation after stage '", stage, "' is not a JSON object");
    report.stages.push_back(stage);
    for (const auto& [key, source] : evaluation.items()) {
      if (!source.is_object() || column_of.count(key)) continue;
      std::string task = source.contains("task") && source["task"].is_string() ? source["task"].get<std::string>()
                                                                                 : TaskFromKey(key);
      Check(!task.empty(), "forgetting report: stage '", stage, "': source '", key,
            "' names no task (no \"task\" member, no \"(<task>)\" suffix)");
      column_of[key] = report.columns.size();
      report.columns.push_back(key);
      report.tasks.push_back(task);
      const auto override_it = overrides.find(task);
      report.metrics.push_back(override_it == overrides.end() ? DefaultMetric(task) : override_it->second);
      report.first_stage.push_back(static_cast<int>(r));
    }
  }
  const size_t n = report.columns.size();
  for (size_t c = 0; c < n; ++c) {
    const auto& task = report.tasks[c];
    const bool shared = std::count(report.tasks.begin(), report.tasks.end(), task) > 1;
    report.labels.push_back(shared ? task + ": " + ManifestFromKey(report.columns[c], task) : task);
  }

  for (const auto& [stage, evaluation] : rows) {
    auto& row = report.values.emplace_back(n);
    for (size_t c = 0; c < n; ++c) {
      const auto source = evaluation.find(report.columns[c]);
      if (source == evaluation.end() || !source->is_object()) continue;
      const auto& metric = report.metrics[c].metric;
      const auto value = source->find(metric);
      Check(value != source->end() && value->is_number(), "forgetting report: stage '", stage, "': source '",
            report.columns[c], "' has no numeric '", metric, "' (choose another metric for task '", report.tasks[c],
            "')");
      row[c] = value->get<double>();
    }
  }

  const size_t last = rows.size() - 1;
  report.forgetting.resize(n);
  report.relative_forgetting.resize(n);
  report.backward_transfer_terms.resize(n);
  std::vector<std::optional<double>> relative_terms(n);
  for (size_t c = 0; c < n; ++c) {
    const size_t first = report.first_stage[c];
    const auto& final_value = report.values[last][c];
    if (first == last || !final_value) continue;
    const bool higher = report.metrics[c].higher_is_better;
    // Best in the metric's sense, so that "worse than best" reads the same for WER and accuracy.
    double best = *report.values[first][c];
    for (size_t r = first; r < last; ++r) {
      if (const auto& v = report.values[r][c]) best = higher ? std::max(best, *v) : std::min(best, *v);
    }
    const double initial = *report.values[first][c];
    report.forgetting[c] = higher ? best - *final_value : *final_value - best;
    report.backward_transfer_terms[c] = higher ? *final_value - initial : initial - *final_value;
    // Relative to the value it is measured from, so that tasks on different scales weigh alike.
    if (best != 0) report.relative_forgetting[c] = *report.forgetting[c] / std::abs(best);
    if (initial != 0) relative_terms[c] = *report.backward_transfer_terms[c] / std::abs(initial);
  }
  report.mean_forgetting = MeanOfDefined(report.relative_forgetting);
  report.backward_transfer = MeanOfDefined(relative_terms);
  return report;
}

nlohmann::json ForgettingReport::ToJson() const {
  auto optional_array = [](const std::vector<std::optional<double>>& values) {
    auto array = nlohmann::json::array();
    for (const auto& v : values) array.push_back(OrNull(v));
    return array;
  };
  auto metric_array = nlohmann::json::array();
  for (const auto& m : metrics)
    metric_array.push_back({{"metric", m.metric}, {"higher_is_better", m.higher_is_better}});
  auto value_rows = nlohmann::json::array();
  for (const auto& row : values) value_rows.push_back(optional_array(row));
  return {{"stages", stages},
          {"columns", columns},
          {"labels", labels},
          {"tasks", tasks},
          {"metrics", metric_array},
          {"first_stage", first_stage},
          {"values", value_rows},
          {"forgetting", optional_array(forgetting)},
          {"relative_forgetting", optional_array(relative_forgetting)},
          {"backward_transfer_terms", optional_array(backward_transfer_terms)},
          {"backward_transfer", OrNull(backward_transfer)},
          {"mean_forgetting", OrNull(mean_forgetting)}};
}

std::string ForgettingReport::ToMarkdown() const {
  std::string out = "| stage |";
  for (size_t c = 0; c < columns.size(); ++c)
    out += Str(" ", labels[c], " ", metrics[c].metric, metrics[c].higher_is_better ? " ↑" : " ↓", " |");
  out += "\n|---|";
  for (size_t c = 0; c < columns.size(); ++c) out += "---|";
  out += "\n";
  auto add_row = [&](const std::string& label, const std::vector<std::optional<double>>& cells) {
    out += "| " + label + " |";
    for (const auto& v : cells) out += " " + Significant(v) + " |";
    out += "\n";
  };
  for (size_t r = 0; r < stages.size(); ++r) add_row(stages[r], values[r]);
  add_row("forgetting", forgetting);
  add_row("relative forgetting", relative_forgetting);
  return out + Str("\nBWT (relative): ", Significant(backward_transfer),
                   " · mean relative forgetting: ", Significant(mean_forgetting), "\n");
}

}  // namespace slm::experiments
