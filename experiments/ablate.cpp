#include "experiments/ablate.h"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/process.h"
#include "experiments/stages.h"

namespace slm::experiments {

using namespace train;
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

struct CellRun {
  size_t cell = 0;
  uint64_t seed = 0;
  std::string dir, log;
  int state = 0;  // 0 waiting, 1 running, 2 done, 3 failed
  std::string error;
};

// The reason a failed cell gives: the last line of its log that names an error, else the last line.
std::string LastError(const std::string& log, int code) {
  std::string last, error;
  if (stdfs::exists(log)) {
    std::istringstream in(fs::ReadFile(log));
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      last = line;
      if (line.find("rror") != std::string::npos) error = line;
    }
  }
  const std::string why = !error.empty() ? error : last;
  return Str("exit code ", code, code > 128 ? Str(" (signal ", code - 128, ")") : std::string(),
             why.empty() ? std::string() : ": " + why);
}

}  // namespace

void AblationConfig::Load(config::Node root, bool quick) {
  root.Require("base", base)
      .Read("output_dir", output_dir)
      .Read("seeds", seeds)
      .Read("threads", threads, config::InRange(1, 256))
      .Read("jobs", jobs, config::InRange(0, 256))
      .Read("set", set);
  std::set<std::string> names;
  for (config::Node n : root.List("cells")) {
    AblationCell cell;
    n.Require("name", cell.name, config::Validator<std::string>([](const std::string& v) {
       return !v.empty() && v.find_first_of("/ \t") == std::string::npos ? std::string()
                                                                          : std::string("must be a name without '/' or spaces");
     })).Read("set", cell.set)
        .Read("mitigation", cell.mitigation)
        .Read("replay_ratio", cell.replay_ratio, config::InRange(0.0, 1.0))
        .Read("eval_of", cell.eval_of);
    if (!names.insert(cell.name).second) n.Fail("name", Str("cell '", cell.name, "' is listed twice"));
    if (!cell.eval_of.empty() && !names.count(cell.eval_of))
      n.Fail("eval_of", Str("no earlier cell is named '", cell.eval_of, "'"));
    if (cell.mitigation.empty()) cell.mitigation = cell.name.substr(0, cell.name.find('_'));
    cells.push_back(cell);
  }
  if (cells.empty()) root.Fail("cells", "lists no cell");
  if (seeds.empty()) root.Fail("seeds", "lists no seed");
  if (root.Has("quick")) {
    config::Node q = root.Child("quick");
    std::string quick_base = base;
    std::vector<uint64_t> quick_seeds = seeds;
    std::vector<std::string> quick_cells, quick_set;
    q.Read("base", quick_base).Read("seeds", quick_seeds).Read("cells", quick_cells).Read("set", quick_set);
    for (const std::string& name : quick_cells)
      if (!names.count(name)) q.Fail("cells", Str("no cell is named '", name, "'"));
    if (quick) {
      base = quick_base;
      seeds = quick_seeds;
      set.insert(set.end(), quick_set.begin(), quick_set.end());
      if (!quick_cells.empty()) {
        std::vector<AblationCell> kept;
        for (const AblationCell& cell : cells)
          if (std::count(quick_cells.begin(), quick_cells.end(), cell.name)) kept.push_back(cell);
        for (const AblationCell& cell : kept)
          if (!cell.eval_of.empty() && !std::count(quick_cells.begin(), quick_cells.end(), cell.eval_of))
            q.Fail("cells", Str("cell '", cell.name, "' evaluates '", cell.eval_of, "', which the quick grid leaves out"));
        cells = kept;
      }
    }
  } else if (quick) {
    root.Fail("quick", "--quick needs a quick: section");
  }
  Check(stdfs::exists(base), "ablation base config '", base, "' does not exist");
}

json AblationResult::ToJson() const {
  json list = json::array();
  for (const AblationRun& r : runs)
    list.push_back({{"cell", r.cell}, {"seed", r.seed}, {"status", r.status}, {"log", r.log}, {"error", r.error}});
  return {{"output_dir", output_dir}, {"ran", ran}, {"skipped", skipped}, {"failed", failed},
          {"seconds", seconds}, {"runs", list}, {"files", files}};
}

AblationResult RunAblation(const AblationConfig& c, bool quiet) {
  const auto start = std::chrono::steady_clock::now();
  // The base config is checked once here (every cell would fail on it), and gives the metrics.
  StagesConfig base;
  {
    auto doc = config::Document::LoadFile(c.base);
    doc.ApplyOverrides(c.set);
    Check(StagesConfig::IsStaged(doc), "ablation base '", c.base, "' lists no stages:");
    base.Load(doc);
  }
  // Data is generated once, here: cells running at once must not generate the same files.
  for (const StagesConfig::Stage& stage : base.stages)
    for (const auto* sources : {&stage.config.data.train, &stage.config.data.valid})
      for (const DataSourceConfig& source : *sources) PrepareSource(source, c.threads, !quiet);
  fs::MakeDirs(c.output_dir);
  std::vector<CellRun> jobs;
  std::map<std::pair<std::string, uint64_t>, size_t> index;
  for (size_t i = 0; i < c.cells.size(); ++i)
    for (const uint64_t seed : c.seeds) {
      CellRun job;
      job.cell = i;
      job.seed = seed;
      job.dir = Str(c.output_dir, "/runs/", c.cells[i].name, "/seed", seed);
      job.log = job.dir + ".log";
      index[{c.cells[i].name, seed}] = jobs.size();
      jobs.push_back(job);
    }
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int parallel = c.jobs > 0 ? c.jobs : std::max(1, hardware / c.threads);
  AblationResult result;
  result.output_dir = c.output_dir;
  for (CellRun& job : jobs)
    if (stdfs::exists(job.dir + "/stages.json")) {
      job.state = 2;
      ++result.skipped;
    }
  std::map<pid_t, size_t> running;
  while (true) {
    // Start what is ready: waiting, and its eval_of cell (same seed) done.
    for (size_t j = 0; j < jobs.size() && static_cast<int>(running.size()) < parallel; ++j) {
      CellRun& job = jobs[j];
      if (job.state != 0) continue;
      const AblationCell& cell = c.cells[job.cell];
      std::string reuse;
      if (!cell.eval_of.empty()) {
        const CellRun& of = jobs[index.at({cell.eval_of, job.seed})];
        if (of.state == 3) {
          job.state = 3;
          job.error = Str("not run: cell '", cell.eval_of, "' (seed ", job.seed, "), whose stages it evaluates, failed");
          continue;
        }
        if (of.state != 2) continue;
        reuse = of.dir;
      }
      fs::MakeDirs(stdfs::path(job.dir).parent_path().string());
      ChildSpec spec;
      spec.executable = c.executable;
      spec.log_path = job.log;
      spec.argv = {"slm", "--threads", std::to_string(c.threads), "train", "--config", c.base, "--resume"};
      std::vector<std::string> assignments = c.set;
      assignments.insert(assignments.end(), cell.set.begin(), cell.set.end());
      assignments.push_back("output_dir=" + job.dir);
      assignments.push_back(Str("seed=", job.seed));
      assignments.push_back(Str("threads=", c.threads));
      if (!reuse.empty()) assignments.push_back("reuse_stages_from=" + reuse);
      for (const std::string& a : assignments) {
        spec.argv.push_back("--set");
        spec.argv.push_back(a);
      }
      std::string command;
      for (const std::string& a : spec.argv) command += (command.empty() ? "" : " ") + a;
      fs::AtomicWriteString(job.dir + ".cmd", command + "\n");
      running[StartChild(spec)] = j;
      job.state = 1;
      ++result.ran;
      if (!quiet) log::Info(Str("ablate: started ", cell.name, " seed ", job.seed, " (log ", job.log, ")"));
    }
    if (running.empty()) break;
    const auto [pid, code] = WaitAnyChild();
    if (pid < 0) break;
    auto it = running.find(pid);
    if (it == running.end()) continue;
    CellRun& job = jobs[it->second];
    running.erase(it);
    if (code == 0 && stdfs::exists(job.dir + "/stages.json")) {
      job.state = 2;
    } else {
      job.state = 3;
      job.error = LastError(job.log, code);
    }
    if (!quiet)
      log::Info(Str("ablate: ", c.cells[job.cell].name, " seed ", job.seed, job.state == 2 ? " done" : " FAILED: " + job.error));
  }
  for (const CellRun& job : jobs) {
    const AblationCell& cell = c.cells[job.cell];
    AblationRun run;
    run.cell = cell.name;
    run.mitigation = cell.mitigation;
    run.replay_ratio = cell.replay_ratio;
    run.seed = job.seed;
    run.log = job.log;
    run.status = job.state == 2 ? "ok" : "failed";
    run.error = job.error;
    if (job.state == 2) {
      try {
        const json stages = fs::ReadJson(job.dir + "/stages.json");
        std::vector<std::pair<std::string, json>> rows;
        for (const json& s : stages.at("stages")) rows.emplace_back(s.at("stage").get<std::string>(), s.at("eval"));
        run.report = BuildForgettingReport(rows, base.metrics);
      } catch (const std::exception& e) {
        run.status = "failed";
        run.error = Str(job.dir, "/stages.json: ", e.what());
      }
    }
    if (run.status == "failed") ++result.failed;
    result.runs.push_back(run);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string agreement =
      Str("Grid: ", jobs.size(), " runs (", result.ran, " run now, ", result.skipped, " finished before, ", result.failed,
          " failed), ", parallel, " at a time with ", c.threads, " thread(s) each; this invocation took ",
          static_cast<int64_t>(result.seconds / 60), " min ", static_cast<int64_t>(result.seconds) % 60, " s.\n\n",
          StudyAgreement(result.runs));
  result.files = WriteAblationReport(c.output_dir, result.runs, agreement);
  fs::AtomicWriteString(c.output_dir + "/ablation.json", result.ToJson().dump(2) + "\n");
  return result;
}

}  // namespace slm::experiments
