// metrics.jsonl of a run directory: one JSON object per line, appended and flushed per record so
// that a crash loses at most the record being written and never corrupts earlier lines.
// Not thread-safe (one writer per file).
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace slm {

class MetricsLog {
 public:
  // truncate = true starts a fresh file (a new run); false appends (a resumed run).
  explicit MetricsLog(std::string path, bool truncate = true) : path_(std::move(path)) {
    std::ofstream out(path_, truncate ? std::ios::trunc : std::ios::app);
    Check(out.good(), "cannot write metrics to '", path_, "'");
  }
  void Append(const nlohmann::json& record) const {
    std::ofstream out(path_, std::ios::app);
    Check(out.good(), "cannot append to '", path_, "'");
    out << record.dump() << "\n";
    out.flush();
    Check(out.good(), "writing '", path_, "' failed (disk full?)");
  }
  const std::string& Path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace slm
