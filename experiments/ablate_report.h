// The report of a forgetting-mitigation ablation grid: many multi-stage runs ("cells", a mitigation
// setting such as "none", "replay_0.05", "replay_0.05+l2", "lora_discount_0.5", run with several
// seeds), each summarised by its ForgettingReport (train/forgetting.h).
//
// WriteAblationReport(dir, runs, agreement) creates `dir` if needed and writes (each file atomically):
//   results.csv   header cell,mitigation,replay_ratio,seed,status,stage,stage_index,column,task,metric,
//                 higher_is_better,value; one line per (run, stage, column) with a value; a failed run
//                 gets one line with its status and empty stage..value fields. RFC 4180 quoting.
//   stages_<label>.png       per column (label sanitised to [A-Za-z0-9._-]): its metric after each
//                 stage, one line per cell (mean over the cell's ok runs).
//   forgetting_vs_replay.png mean forgetting over the replay ratio, one line per replay family
//                 ("replay_R" alone, "replay_R+l2", ...: the cell name after the ratio), a dashed line
//                 for cell "none"; written only when some replay cell has a defined forgetting.
//   report.md     per cell (input order): final-stage value per column, mean forgetting and BWT as
//                 "mean ± sample std" over the ok seeds (the mean alone for one seed, "–" for none);
//                 forgetting per column likewise; the failed runs with error and log path; the
//                 `agreement` paragraph; links to the plots.
// and returns the paths written, in that order. Values are in each metric's own units; a cell's mean
// forgetting / BWT is the mean over seeds of each run's relative mean over columns (ForgettingReport).
// slm::Error when `dir` or a file cannot be written or a PNG cannot be encoded.
//
// StudyAgreement(runs) compares the grid with the finding of "Analyzing Mitigation Strategies for
// Catastrophic Forgetting in End-to-End Training of Spoken Language Models" (2025): experience replay
// is the most effective single mitigation, and combining it with another is better still. Two checks
// on mean forgetting (lower = better): is the best cell a replay cell, and does each "replay_R+X"
// beat its "replay_R"? The text quotes the numbers, says what could not be compared (no "none", no
// replay cell, no combination or its base), and ends "Our results agree / partly agree / do not agree
// with the study." (or "could not be compared with the study." when neither check was possible).
// Deterministic: the same runs give the same text.
//
// Thread-safety: pure functions apart from the files written; not safe to run two on one `dir`.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "experiments/forgetting.h"

namespace slm::experiments {

struct AblationRun {      // one cell x seed
  std::string cell;        // e.g. "none", "replay_0.05", "replay_0.05+l2", "merge_linear"
  std::string mitigation;  // family label, e.g. "none", "replay", "replay+l2" (results.csv)
  double replay_ratio = 0;  // 0 without replay; the x of forgetting_vs_replay.png
  uint64_t seed = 0;
  std::string status;       // "ok" or "failed"
  std::string log;          // the cell's log (shown for failed runs)
  std::string error;        // one-line reason for failed runs
  ForgettingReport report;  // valid when status == "ok"
};

std::vector<std::string> WriteAblationReport(const std::string& dir, const std::vector<AblationRun>& runs,
                                             const std::string& agreement_paragraph);

std::string StudyAgreement(const std::vector<AblationRun>& runs);

// One 800x500 line chart as PNG (the look of the report's plots): each series a line with markers;
// non-finite y values are gaps; each boundary (label, x) a labelled dashed vertical line. Used for
// the in-stage evaluation curves of a multi-stage run (boundaries: where each stage starts).
struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
};
void WriteLineChart(const std::string& path, const std::string& title, const std::string& x_label,
                    const std::string& y_label, const std::vector<PlotSeries>& series,
                    const std::vector<std::pair<std::string, double>>& boundaries = {});

}  // namespace slm::experiments
