#include "core/config.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace slm::config {
namespace {

struct Optim {
  double lr = 1e-3;
  int warmup = 100;
  std::string schedule = "cosine";
  void Load(Node n) {
    n.Read("lr", lr, InRange(0.0, 10.0));
    n.Read("warmup", warmup, InRange(0, 1000000));
    n.Read("schedule", schedule, OneOf<std::string>({"cosine", "linear", "constant"}));
  }
};

struct RunConfig {
  std::string name = "run";
  int64_t steps = 10;
  bool bf16 = false;
  std::vector<int> layers;
  Optim optimizer;
  void Load(Node n) {
    n.Read("name", name).Read("steps", steps, InRange<int64_t>(1, 1000000));
    n.Read("bf16", bf16).Read("layers", layers);
    optimizer.Load(n.Child("optimizer"));
  }
};

RunConfig LoadRun(Document& doc) {
  RunConfig run;
  run.Load(doc.Root());
  doc.CheckAllConsumed();
  return run;
}

TEST(Config, DefaultsFileAndOverridesInOrder) {
  auto doc = Document::LoadString("steps: 50\noptimizer:\n  lr: 0.01\n", "run.yaml");
  doc.ApplyOverride("optimizer.lr=0.5");
  doc.ApplyOverride("layers=[1, 2, 3]");
  RunConfig run = LoadRun(doc);
  EXPECT_EQ(run.steps, 50);             // file
  EXPECT_DOUBLE_EQ(run.optimizer.lr, 0.5);  // --set beats file
  EXPECT_EQ(run.optimizer.warmup, 100);     // default
  EXPECT_EQ(run.layers, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(run.name, "run");
}

TEST(Config, EffectiveConfigHasDefaultsAndRoundTrips) {
  auto doc = Document::LoadString("steps: 7\n", "run.yaml");
  LoadRun(doc);
  const std::string yaml = doc.EffectiveYaml();
  EXPECT_NE(yaml.find("warmup: 100"), std::string::npos) << yaml;
  auto again = Document::LoadString(yaml, "effective.yaml");
  RunConfig run = LoadRun(again);
  EXPECT_EQ(run.steps, 7);
  EXPECT_EQ(run.optimizer.schedule, "cosine");
}

// Lists of maps (data sources) come back as lists, so a run's saved config.yaml loads again.
TEST(Config, EffectiveConfigKeepsListsOfMaps) {
  auto doc = Document::LoadString(
      "sources:\n  - {path: a.jsonl, weight: 2}\n  - {path: b.jsonl}\ntags: [x, y]\n", "run.yaml");
  auto read = [](Document& d) {
    std::vector<std::pair<std::string, double>> out;
    for (Node item : d.Root().List("sources")) {
      std::string path;
      double weight = 1.0;
      item.Require("path", path).Read("weight", weight);
      out.emplace_back(path, weight);
    }
    std::vector<std::string> tags;
    d.Root().Read("tags", tags);
    d.CheckAllConsumed();
    return std::make_pair(out, tags);
  };
  const auto first = read(doc);
  auto again = Document::LoadString(doc.EffectiveYaml(), "effective.yaml");
  const auto second = read(again);
  EXPECT_EQ(second, first) << doc.EffectiveYaml();
  EXPECT_EQ(second.first.size(), 2u);
  EXPECT_DOUBLE_EQ(second.first[1].second, 1.0);  // the default is written out too
}

TEST(Config, UnknownKeyNamesKeyFileLineAndSuggestion) {
  auto doc = Document::LoadString("steps: 5\noptimizer:\n  lr: 0.1\n  warmpu: 3\n", "run.yaml");
  RunConfig run;
  run.Load(doc.Root());
  EXPECT_SLM_ERROR(doc.CheckAllConsumed(), "run.yaml:4: unknown key 'optimizer.warmpu'");
  EXPECT_SLM_ERROR(doc.CheckAllConsumed(), "did you mean 'optimizer.warmup'");
}

TEST(Config, WrongTypeNamesKeyFileAndLine) {
  auto doc = Document::LoadString("steps: 5\noptimizer:\n  lr: fast\n", "run.yaml");
  EXPECT_SLM_ERROR(LoadRun(doc), "run.yaml:3: key 'optimizer.lr' expected a number, got 'fast'");
  auto doc2 = Document::LoadString("steps: 2.5\n", "b.yaml");
  EXPECT_SLM_ERROR(LoadRun(doc2), "b.yaml:1: key 'steps' expected an integer");
  auto doc3 = Document::LoadString("optimizer: 3\n", "c.yaml");
  EXPECT_SLM_ERROR(LoadRun(doc3), "key 'optimizer' expected a map");
  auto doc4 = Document::LoadString("bf16: maybe\n", "d.yaml");
  EXPECT_SLM_ERROR(LoadRun(doc4), "key 'bf16' expected a boolean");
}

TEST(Config, OutOfRangeAndNotOneOf) {
  auto doc = Document::LoadString("steps: 0\n", "run.yaml");
  EXPECT_SLM_ERROR(LoadRun(doc), "run.yaml:1: key 'steps' must be in [1, 1000000] (got '0')");
  auto doc2 = Document::LoadString("optimizer: {schedule: cosin}\n", "run.yaml");
  EXPECT_SLM_ERROR(LoadRun(doc2), "must be one of: cosine, linear, constant");
}

TEST(Config, OverrideErrorsNameTheAssignment) {
  auto doc = Document::LoadString("steps: 5\n", "run.yaml");
  doc.ApplyOverride("optimizer.lr=-1");
  EXPECT_SLM_ERROR(LoadRun(doc), "--set optimizer.lr=-1: key 'optimizer.lr' must be in");
  auto doc2 = Document::LoadString("steps: 5\n", "run.yaml");
  doc2.ApplyOverride("optimiser.lr=1");
  EXPECT_SLM_ERROR(LoadRun(doc2), "--set optimiser.lr=1: unknown key 'optimiser'");
  auto doc3 = Document::LoadString("steps: 5\n", "run.yaml");
  EXPECT_SLM_ERROR(doc3.ApplyOverride("no-equals-sign"), "must look like key.path=value");
  EXPECT_SLM_ERROR(doc3.ApplyOverride("steps.x=1"), "'steps' is not a map");
}

TEST(Config, DuplicateKeysAndBadYamlAreRejected) {
  EXPECT_SLM_ERROR(Document::LoadString("steps: 1\nsteps: 2\n", "dup.yaml"),
                   "dup.yaml:2: key 'steps' appears twice");
  EXPECT_SLM_ERROR(Document::LoadString("steps: [1, 2\n", "bad.yaml"), "bad.yaml:");
  EXPECT_SLM_ERROR(Document::LoadString("- 1\n- 2\n", "list.yaml"), "top level must be a map");
  EXPECT_SLM_ERROR(Document::LoadFile("/nonexistent/run.yaml"), "cannot open '/nonexistent/run.yaml'");
}

TEST(Config, RequiredKeyAndListsOfMaps) {
  auto doc = Document::LoadString("stages:\n  - {name: asr, steps: 3}\n  - {name: tts, stepz: 4}\n",
                                  "s.yaml");
  auto stages = doc.Root().List("stages");
  ASSERT_EQ(stages.size(), 2u);
  std::string name;
  int steps = 0;
  stages[0].Require("name", name).Read("steps", steps);
  EXPECT_EQ(name, "asr");
  EXPECT_EQ(steps, 3);
  stages[1].Require("name", name);
  EXPECT_SLM_ERROR(stages[1].Require("steps", steps), "key 'stages[1].steps' is required");
  stages[1].Read("steps", steps);
  EXPECT_SLM_ERROR(doc.CheckAllConsumed(), "s.yaml:3: unknown key 'stages[1].stepz'");
}

}  // namespace
}  // namespace slm::config

namespace slm::config {
namespace {

TEST(Config, CheckAllConsumedUnderOneSection) {
  auto doc = Document::LoadString("model:\n  size: 3\n  sise: 4\ntrain:\n  steps: 9\n", "s.yaml");
  int size = 0;
  doc.Root().Child("model").Read("size", size);
  // Only the model section is checked: train.steps belongs to another reader.
  EXPECT_SLM_ERROR(doc.CheckAllConsumed("model"), "unknown key 'model.sise' (did you mean 'model.size'?)");
  EXPECT_NO_THROW(doc.CheckAllConsumed("absent"));
  auto ok = Document::LoadString("model:\n  size: 3\ntrain:\n  steps: 9\n", "t.yaml");
  ok.Root().Child("model").Read("size", size);
  EXPECT_NO_THROW(ok.CheckAllConsumed("model"));
  EXPECT_SLM_ERROR(ok.CheckAllConsumed(), "unknown key 'train'");
  EXPECT_EQ(size, 3);
}

}  // namespace
}  // namespace slm::config
