// `slm ablate --config FILE [--quick]`: a grid of multi-stage runs (train/stages.h), one per cell
// (a mitigation setting) and seed, then a report (train/ablate_report.h). Config keys:
//
//   base:        the multi-stage config every cell starts from
//   output_dir:  runs/<cell>/seed<k>/ (each a multi-stage run), runs/<cell>/seed<k>.log, report.md,
//                results.csv, *.png, ablation.json
//   seeds:       [1, 2]
//   threads:     LibTorch threads per cell (1); jobs: cells at once (0 = cores / threads)
//   set:         `--set` assignments for every cell
//   cells:       [{name, set: [...], mitigation, replay_ratio, eval_of}]
//                  set           the cell's own assignments (e.g. replay.mode=quota, replay.ratio=0.1)
//                  mitigation    the family the plots group by (default: the name up to its first '_')
//                  replay_ratio  the x of the forgetting-vs-replay plot (0 = no replay)
//                  eval_of       an evaluation-only variant (a LoRA discount, merging) of that cell's
//                                trained stages, same seed (reuse_stages_from): nothing retrains
//   quick:       {base, seeds, cells: [names], set: [...]}: what --quick changes (a grid for tests)
//
// A cell runs as a child process (`slm train --config base --set ... --resume`), so one that fails
// or crashes is recorded as failed with its log and exit code and the grid goes on (cells that
// evaluate it fail too, naming it). A cell whose stages.json exists is done and skipped, so running
// the grid again resumes it. Not thread-safe (one grid per process).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.h"
#include "experiments/ablate_report.h"

namespace slm::experiments {

struct AblationCell {
  std::string name;
  std::vector<std::string> set;
  std::string mitigation;
  double replay_ratio = 0;
  std::string eval_of;
};

struct AblationConfig {
  std::string base;
  std::string output_dir = "runs/replay_ablation";
  std::vector<uint64_t> seeds = {1, 2};
  int threads = 1;
  int jobs = 0;
  std::vector<std::string> set;
  std::vector<AblationCell> cells;
  std::string executable = "/proc/self/exe";  // the slm binary the cells run (tests name it)
  // `quick` selects the quick grid (a section of the same file).
  void Load(config::Node root, bool quick);
};

struct AblationResult {
  std::string output_dir;
  std::vector<AblationRun> runs;
  int64_t ran = 0, skipped = 0, failed = 0;
  double seconds = 0;
  std::vector<std::string> files;
  nlohmann::json ToJson() const;
};

AblationResult RunAblation(const AblationConfig& config, bool quiet = false);

}  // namespace slm::experiments
