#include "experiments/stages.h"

#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <set>

#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "experiments/ablate_report.h"
#include "train/checkpoint.h"

namespace slm::experiments {

using namespace train;
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using config::InRange;

const std::set<std::string> kRunKeys = {"stages", "replay", "merge", "report", "reuse_stages_from"};

// a's map with b's keys on top; maps merge key by key, anything else is replaced. The nodes are
// shared with the inputs (their line numbers stay), the maps are new (the inputs stay unchanged).
YAML::Node Overlay(const YAML::Node& a, const YAML::Node& b) {
  if (!a || !a.IsMap() || !b || !b.IsMap()) return b ? b : a;
  YAML::Node out(YAML::NodeType::Map);
  for (const auto& kv : a) {
    const std::string key = kv.first.as<std::string>();
    out[key] = b[key] ? Overlay(kv.second, b[key]) : kv.second;
  }
  for (const auto& kv : b)
    if (!a[kv.first.as<std::string>()]) out[kv.first.as<std::string>()] = kv.second;
  return out;
}

YAML::Node Without(const YAML::Node& map, const std::set<std::string>& keys) {
  YAML::Node out(YAML::NodeType::Map);
  if (!map || !map.IsMap()) return out;
  for (const auto& kv : map)
    if (!keys.count(kv.first.as<std::string>())) out[kv.first.as<std::string>()] = kv.second;
  return out;
}

// map[key] = value without writing through a node `map` shares with another document: `map[key] =`
// on an existing key assigns to that (shared) node.
template <typename T>
void Put(YAML::Node& map, const std::string& key, const T& value) {
  map.remove(key);
  map[key] = value;
}

std::string StageDir(const std::string& output_dir, size_t k, const std::string& name) {
  return Str(output_dir, "/stages/", k, "-", name);
}

// A stage's document with `replay` (earlier stages' source maps) appended to its train sources.
YAML::Node StageYaml(const YAML::Node& stage, const std::vector<YAML::Node>& replay) {
  YAML::Node out = Without(stage, {});
  if (replay.empty()) return out;
  YAML::Node data = Without(out["data"], {});
  YAML::Node train(YAML::NodeType::Sequence);
  for (const auto& s : data["train"]) train.push_back(s);
  for (const auto& s : replay) train.push_back(s);
  Put(data, "train", train);
  Put(out, "data", data);
  return out;
}

TrainConfig LoadStageConfig(const YAML::Node& yaml, const std::string& where, std::string* effective = nullptr) {
  config::Document doc = config::Document::FromNode(yaml, where);
  TrainConfig c;
  c.Load(doc.Root());
  doc.CheckAllConsumed();
  if (effective) *effective = doc.EffectiveYaml();
  return c;
}

struct ReplayPlan {
  std::vector<YAML::Node> sources;  // earlier stages' train sources with `sample` or `pick`
  json drawn = json::array();       // per source: from_stage, manifest, task, count, usable, share
  int64_t stage_items = 0;          // the stage's own items per epoch
  int64_t replayed = 0;             // sum of the counts
};

// What stage k replays of stages 0..k-1 (train/stages.h, "Replay"). The sizes of each stage's
// sources are read once (a Dataset of them, checked as training will) and kept for later stages.
class ReplayPlanner {
 public:
  explicit ReplayPlanner(const StagesConfig& c) : c_(c) {}

  ReplayPlan Plan(size_t k) {
    ReplayPlan plan;
    plan.stage_items = Sizes(k).epoch_items;
    std::vector<std::vector<std::vector<int64_t>>> picks(k);  // reservoir: [stage][source] positions
    if (c_.replay.mode == "reservoir") {
      // Algorithm R over every earlier stage's examples, each stage's in a seeded order.
      std::mt19937_64 rng(c_.seed * 7919 + 11);
      std::vector<std::tuple<size_t, size_t, int64_t>> buffer;
      int64_t seen = 0;
      for (size_t e = 0; e < k; ++e) {
        std::vector<std::tuple<size_t, size_t, int64_t>> stream;
        for (size_t s = 0; s < Sizes(e).usable.size(); ++s)
          for (int64_t i = 0; i < Sizes(e).usable[s]; ++i) stream.emplace_back(e, s, i);
        std::shuffle(stream.begin(), stream.end(), rng);
        for (const auto& item : stream) {
          if (seen < c_.replay.buffer_size) buffer.push_back(item);
          else if (const int64_t j = std::uniform_int_distribution<int64_t>(0, seen)(rng); j < c_.replay.buffer_size)
            buffer[j] = item;
          ++seen;
        }
        picks[e].resize(Sizes(e).usable.size());
      }
      for (const auto& [e, s, i] : buffer) picks[e][s].push_back(i);
    }
    for (size_t e = 0; e < k; ++e) {
      const std::vector<int64_t>& sizes = Sizes(e).usable;
      int64_t total = 0;
      for (const int64_t n : sizes) total += n;
      const std::string& name = c_.stages[e].name;
      const double ratio = c_.replay.ratios.count(name) ? c_.replay.ratios.at(name) : c_.replay.ratio;
      const int64_t quota = std::llround(ratio * plan.stage_items);
      int64_t given = 0;
      const YAML::Node sources = c_.stages[e].yaml["data"]["train"];
      for (size_t s = 0; s < sizes.size(); ++s) {
        YAML::Node source = Without(sources[s], {"sample", "sample_seed", "pick", "weight"});
        int64_t count = 0;
        if (c_.replay.mode == "quota") {  // split over the stage's sources by their sizes
          count = s + 1 == sizes.size() ? quota - given : quota * sizes[s] / std::max<int64_t>(1, total);
          given += count;
          Put(source, "sample", count);
          Put(source, "sample_seed", c_.seed * 1000003 + k * 1009 + e * 101 + s);
        } else {
          count = static_cast<int64_t>(picks[e][s].size());
          std::sort(picks[e][s].begin(), picks[e][s].end());
          Put(source, "pick", YAML::Node(picks[e][s]));
        }
        if (count == 0) continue;
        plan.sources.push_back(source);
        const DataSourceConfig& config = c_.stages[e].config.data.train[s];
        plan.drawn.push_back({{"from_stage", name}, {"manifest", config.manifest}, {"task", config.task},
                              {"count", count}, {"usable", sizes[s]}, {"with_replacement", count > sizes[s]}});
      }
    }
    for (const json& d : plan.drawn) plan.replayed += d["count"].get<int64_t>();
    for (json& d : plan.drawn) d["share"] = double(d["count"].get<int64_t>()) / double(plan.stage_items + plan.replayed);
    return plan;
  }

 private:
  struct SourceSizes {
    std::vector<int64_t> usable;  // per train source
    int64_t epoch_items = 0;      // the stage's items per epoch
  };

  const SourceSizes& Sizes(size_t k) {
    if (auto it = sizes_.find(k); it != sizes_.end()) return it->second;
    const TrainConfig& tc = c_.stages[k].config;
    if (!model_) model_.emplace(tc.model);  // interleaved sources need its tokenizer and unit rate
    PrepareSources(tc.data.train, tc.threads, false);
    const Dataset data(tc.data.train, tc.data.max_missing_fraction, (*model_)->MaxSpeechSeconds(), "replay", true,
                       model_->get());
    SourceSizes sizes;
    for (size_t s = 0; s < data.Stats().size(); ++s) {
      sizes.usable.push_back(data.Stats()[s].selected);
      sizes.epoch_items += data.ItemsPerEpoch(s);
    }
    return sizes_[k] = sizes;
  }

  const StagesConfig& c_;
  std::optional<adapters::MultimodalLM> model_;
  std::map<size_t, SourceSizes> sizes_;
};

json ReadResult(const std::string& dir) { return fs::ReadJson(dir + "/result.json"); }

// Evaluations inside a stage (eval.every): {step, eval} from its metrics.jsonl.
json Curve(const std::string& dir) {
  json curve = json::array();
  if (!stdfs::exists(dir + "/metrics.jsonl")) return curve;
  std::istringstream in(fs::ReadFile(dir + "/metrics.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    const json record = json::parse(line, nullptr, false);
    if (record.is_object() && record.contains("eval") && record.contains("step"))
      curve.push_back({{"step", record["step"]}, {"eval", record["eval"]}});
  }
  return curve;
}

// With in-stage evaluations (eval.every), per column its metric over the global step (the stages
// one after another, each stage's end included): where the stability gap shows.
void WriteCurves(const StagesResult& result) {
  const ForgettingReport& r = result.report;
  bool any = false;
  for (const json& s : result.stages) any = any || (s.contains("curve") && !s["curve"].empty());
  if (!any) return;
  std::vector<std::pair<std::string, double>> starts;  // where each trained stage begins
  int64_t step = 0;
  for (const json& s : result.stages) {
    if (s.value("stage", "") == "merged") continue;
    if (s.value("steps", int64_t{0}) > 0) starts.emplace_back(s.value("stage", std::string()), double(step));
    step += s.value("steps", int64_t{0});
  }
  for (size_t c = 0; c < r.columns.size(); ++c) {
    PlotSeries series{r.labels[c] + " " + r.metrics[c].metric, {}, {}};
    int64_t offset = 0;
    auto add = [&](int64_t step, const json& eval) {
      if (!eval.contains(r.columns[c])) return;
      const json& v = eval[r.columns[c]];
      if (!v.contains(r.metrics[c].metric) || !v[r.metrics[c].metric].is_number()) return;
      series.x.push_back(double(offset + step));
      series.y.push_back(v[r.metrics[c].metric].get<double>());
    };
    for (const json& s : result.stages) {
      if (s.value("stage", "") == "merged") continue;
      for (const json& point : s.value("curve", json::array())) add(point["step"].get<int64_t>(), point["eval"]);
      add(s.value("steps", int64_t{0}), s["eval"]);
      offset += s.value("steps", int64_t{0});
    }
    std::string stages;
    for (const json& s : result.stages) stages += (stages.empty() ? "" : " -> ") + s.value("stage", std::string());
    WriteLineChart(Str(result.output_dir, "/curve_", c, "_", r.tasks[c], ".png"),
                   Str(r.labels[c], ": ", r.metrics[c].metric, " during training (", stages, ")"), "step (all stages)",
                   r.metrics[c].metric, {series}, starts);
  }
}

}  // namespace

bool StagesConfig::IsStaged(config::Document& doc) { return doc.Root().Has("stages"); }

void StagesConfig::Load(config::Document& doc) {
  config::Node root = doc.Root();
  source = doc.Source();
  yaml = YAML::Dump(root.Raw()) + "\n";
  root.Read("output_dir", output_dir).Read("seed", seed).Read("reuse_stages_from", reuse_stages_from);
  const YAML::Node base = Without(root.Raw(), kRunKeys);
  std::vector<config::Node> nodes = root.List("stages");
  if (nodes.empty()) root.Fail("stages", "lists no stage");
  std::set<std::string> names;
  YAML::Node valid(YAML::NodeType::Sequence);
  std::set<std::string> valid_keys;
  for (size_t k = 0; k < nodes.size(); ++k) {
    config::Node n = nodes[k];
    Stage stage;
    n.Require("name", stage.name, config::Validator<std::string>([](const std::string& v) {
       return !v.empty() && v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") == std::string::npos
                  ? std::string()
                  : std::string("must be a non-empty name of a-z, 0-9, _ and -");
     })).Read("evaluate_only", stage.evaluate_only);
    if (!names.insert(stage.name).second) n.Fail("name", Str("stage '", stage.name, "' is listed twice"));
    const YAML::Node raw = n.Raw();
    YAML::Node yaml = Overlay(base, Without(raw, {"name", "evaluate_only"}));
    // The valid sets accumulate: every task seen so far (each manifest and task once).
    YAML::Node data = Without(yaml["data"], {});
    if (raw["data"] && raw["data"]["valid"] && raw["data"]["valid"].IsSequence())
      for (const auto& s : raw["data"]["valid"]) {
        const std::string key = Str(s["manifest"] ? s["manifest"].as<std::string>() : "", " (",
                                    s["task"] ? s["task"].as<std::string>() : "asr", ")");
        if (valid_keys.insert(key).second) valid.push_back(s);
      }
    YAML::Node seen(YAML::NodeType::Sequence);  // a copy: later stages add to `valid`
    for (const auto& s : valid) seen.push_back(s);
    if (seen.size() > 0) Put(data, "valid", seen);
    Put(yaml, "data", data);
    Put(yaml, "output_dir", StageDir(output_dir, k, stage.name));
    Put(yaml, "seed", seed);
    if (k > 0) Put(yaml, "init_adapters", StageDir(output_dir, k - 1, stages.back().name) + "/adapters");
    stage.config = LoadStageConfig(yaml, Str(source, " (stage '", stage.name, "')"));
    stage.yaml = yaml;
    stages.push_back(std::move(stage));
  }
  if (valid.size() == 0) root.Fail("stages", "no stage lists data.valid: there is nothing to measure forgetting on");

  config::Node r = root.Child("replay");
  r.Read("mode", replay.mode, config::OneOf<std::string>({"none", "quota", "reservoir"}))
      .Read("ratio", replay.ratio, InRange(0.0, 1.0))
      .Read("buffer_size", replay.buffer_size, InRange<int64_t>(0, int64_t{1} << 40));
  if (root.Raw()["replay"] && root.Raw()["replay"]["ratios"]) {
    config::Node ratios = r.Child("ratios");
    for (const std::string& name : ratios.Keys()) {
      double value = 0;
      ratios.Read(name, value, InRange(0.0, 1.0));
      if (!names.count(name)) ratios.Fail(name, Str("no stage is named '", name, "'"));
      if (name == stages.back().name) ratios.Fail(name, "the last stage is never replayed");
      replay.ratios[name] = value;
    }
  }
  if (replay.mode == "reservoir" && replay.buffer_size == 0)
    r.Fail("buffer_size", "replay mode reservoir needs buffer_size > 0");

  if (root.Has("merge")) {
    config::Node m = root.Child("merge");
    adapters::MergeConfig mc;
    mc.output = output_dir + "/merged/adapters";
    m.Read("method", mc.method, config::OneOf<std::string>({"linear", "ties"}))
        .Read("density", mc.density, InRange(1e-6, 1.0));
    config::Node weights = m.Child("weights");
    for (const std::string& name : weights.Keys()) {
      double w = 0;
      weights.Read(name, w, InRange(-10.0, 10.0));
      if (!names.count(name)) weights.Fail(name, Str("no stage is named '", name, "'"));
      merge_weights[name] = w;
    }
    if (merge_weights.size() < 2) m.Fail("weights", "needs a weight for at least two stages");
    merge = mc;
  }
  config::Node metric_node = root.Child("report").Child("metrics");
  for (const std::string& task : metric_node.Keys()) {
    std::string metric;
    metric_node.Read(task, metric);
    TaskMetric m = DefaultMetric(task);
    m.metric = metric;
    m.higher_is_better = metric.find("accuracy") != std::string::npos || metric == "exact_match" ||
                         metric.find("->") != std::string::npos;
    metrics[task] = m;
  }
  for (const char* section : {"replay", "merge", "report"}) doc.CheckAllConsumed(section);
}

json StagesResult::ToJson() const {
  return {{"output_dir", output_dir}, {"stages", stages}, {"forgetting", report.ToJson()}, {"seconds", seconds}};
}

namespace {

adapters::MultimodalLM LoadModel(const TrainConfig& config, const std::string& adapters_dir) {
  SetThreads(config.threads);
  torch::manual_seed(config.seed);  // fresh adapters are the ones a run with this seed starts from
  adapters::MultimodalLM model(config.model);
  if (!adapters_dir.empty()) model->LoadAdapters(adapters_dir);
  return model;
}


}  // namespace

json EvaluateAdapters(const TrainConfig& config, const std::string& adapters_dir) {
  adapters::MultimodalLM model = LoadModel(config, adapters_dir);
  return EvaluateValid(config, *model);
}

StagesResult RunStages(const StagesConfig& c, bool resume, bool quiet) {
  const auto start = std::chrono::steady_clock::now();
  fs::MakeDirs(c.output_dir);
  if (!resume)
    for (size_t k = 0; k < c.stages.size(); ++k)
      Check(!stdfs::exists(StageDir(c.output_dir, k, c.stages[k].name)), "'", c.output_dir,
            "' already holds a multi-stage run; pass --resume to continue it or choose another output_dir");
  if (!c.reuse_stages_from.empty())
    Check(stdfs::is_directory(c.reuse_stages_from + "/stages"), "reuse_stages_from: '", c.reuse_stages_from,
          "' holds no multi-stage run (no stages/ directory)");
  fs::AtomicWriteString(c.output_dir + "/config.yaml", c.yaml);
  StagesResult result;
  result.output_dir = c.output_dir;
  std::vector<std::pair<std::string, json>> rows;
  ReplayPlanner planner(c);
  for (size_t k = 0; k < c.stages.size(); ++k) {
    const StagesConfig::Stage& stage = c.stages[k];
    const std::string dir = StageDir(c.output_dir, k, stage.name);
    json record = {{"stage", stage.name}, {"dir", dir}};
    if (!stdfs::exists(dir + "/result.json")) {
      // Replay sources of the earlier stages, written into this stage's config.
      std::vector<YAML::Node> replay;
      if (c.replay.mode != "none" && k > 0 && !stage.evaluate_only && c.reuse_stages_from.empty()) {
        const ReplayPlan plan = planner.Plan(k);
        replay = plan.sources;
        log::Info(Str("stage ", stage.name, ": replaying ", plan.replayed, " examples of earlier stages next to ",
                      plan.stage_items, " of its own (", c.replay.mode, ")"));
        fs::MakeDirs(dir);
        fs::AtomicWriteString(
            dir + "/replay.json",
            json{{"mode", c.replay.mode}, {"stage_items", plan.stage_items}, {"replayed", plan.drawn}}.dump(2) + "\n");
      }
      std::string effective;
      const TrainConfig config = LoadStageConfig(StageYaml(stage.yaml, replay),
                                                 Str(c.source, " (stage '", stage.name, "')"), &effective);
      if (!c.reuse_stages_from.empty() || stage.evaluate_only) {
        // Nothing trains: the adapters are reused (or the starting ones kept) and evaluated.
        const std::string reused = c.reuse_stages_from.empty()
                                       ? std::string()
                                       : StageDir(c.reuse_stages_from, k, stage.name) + "/adapters";
        if (!reused.empty()) Check(stdfs::is_directory(reused), "reuse_stages_from: '", reused, "' is missing");
        const std::string from = !reused.empty() ? reused : config.init_adapters;
        fs::MakeDirs(dir);
        fs::AtomicWriteString(dir + "/config.yaml", effective);
        adapters::MultimodalLM model = LoadModel(config, from);
        model->SaveAdapters(dir + "/adapters");  // what the next stage and merging start from
        const json eval = EvaluateValid(config, *model);
        fs::AtomicWriteString(dir + "/result.json",
                              json{{"steps", 0}, {"evaluate_only", true}, {"adapters_from", from}, {"eval", eval}}.dump(2) + "\n");
      } else {
        const bool stage_resume = resume && !LatestCheckpoint(dir).empty();
        if (!stage_resume && stdfs::exists(dir)) {
          // A stage that stopped before its first checkpoint starts again (its replay.json stays).
          for (const char* leftover : {"metrics.jsonl", "config.yaml", "start_weights.safetensors"})
            stdfs::remove(dir + "/" + leftover);
        }
        log::Info(Str("stage ", k, " '", stage.name, "': ", config.train.steps, " steps into ", dir));
        Train(config, effective, stage_resume, quiet);
      }
    } else {
      log::Info(Str("stage ", k, " '", stage.name, "' is done (", dir, "/result.json)"));
    }
    const json done = ReadResult(dir);
    record["steps"] = done.value("steps", 0);
    record["seconds"] = done.value("seconds", 0.0);
    record["data"] = done.value("data", json());
    if (stdfs::exists(dir + "/replay.json")) record["replay"] = fs::ReadJson(dir + "/replay.json");
    record["eval"] = done.at("eval");
    record["curve"] = Curve(dir);
    rows.emplace_back(stage.name, done.at("eval"));
    result.stages.push_back(record);
  }
  if (c.merge) {
    adapters::MergeConfig mc = *c.merge;
    mc.inputs.clear();
    for (size_t k = 0; k < c.stages.size(); ++k)
      if (c.merge_weights.count(c.stages[k].name))
        mc.inputs.push_back({StageDir(c.output_dir, k, c.stages[k].name) + "/adapters", c.merge_weights.at(c.stages[k].name)});
    const adapters::MergeResult merged = adapters::MergeAdapters(mc);
    TrainConfig last = c.stages.back().config;  // its valid sources are every stage's
    if (merged.lora_rank > 0) {
      last.model.lora.rank = merged.lora_rank;
      last.model.lora.alpha = merged.lora_alpha;
    }
    const json eval = EvaluateAdapters(last, merged.output);
    rows.emplace_back("merged", eval);
    result.stages.push_back({{"stage", "merged"}, {"dir", merged.output}, {"merge", merged.ToJson()}, {"eval", eval}});
  }
  result.report = BuildForgettingReport(rows, c.metrics);
  WriteCurves(result);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fs::AtomicWriteString(c.output_dir + "/stages.json", result.ToJson().dump(2) + "\n");
  fs::AtomicWriteString(c.output_dir + "/forgetting.json", result.report.ToJson().dump(2) + "\n");
  fs::AtomicWriteString(c.output_dir + "/forgetting.md", result.report.ToMarkdown());
  return result;
}

}  // namespace slm::experiments
