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

// Fuzz findings (fuzz/regressions/config/): yaml-cpp kept invalid UTF-8 in a scalar, but its
// emitter wrote U+FFFD instead, so the saved effective config differed from the one used.
TEST(Config, InvalidUtf8IsRejectedWithItsLine) {
  EXPECT_SLM_ERROR(Document::LoadString("steps: 5\nname: \"a\xAF" "b\"\n", "run.yaml"),
                   "config error: run.yaml:2: not valid UTF-8 (byte 17)");
  auto doc = Document::LoadString("steps: 5\n", "run.yaml");
  EXPECT_SLM_ERROR(doc.ApplyOverride("name=caf\xC3"), "--set 'name=caf\xC3': not valid UTF-8");
  auto ok = Document::LoadString("name: \"caf\xC3\xA9 \xF0\x9F\x98\x80\"\n", "run.yaml");
  EXPECT_EQ(LoadRun(ok).name, "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

// Fuzz finding: "--set a[x]=1" let std::stoll's std::invalid_argument escape; an index far past
// the end built that many empty items.
TEST(Config, OverrideKeyPartsAreValidated) {
  auto doc = Document::LoadString("steps: 5\nsources:\n  - {path: a}\n", "run.yaml");
  for (const char* bad : {"sources[x].path=1", "sources[-1].path=1", "sources[].path=1", "[0]=1",
                          "sources]=1", "sources[0]x.path=1", "sources[123456].path=1"})
    EXPECT_SLM_ERROR(doc.ApplyOverride(bad), "malformed key");
  EXPECT_SLM_ERROR(doc.ApplyOverride("sources[2].path=c"),
                   "'sources[2]' is past the end of the list (1 items)");
  EXPECT_SLM_ERROR(doc.ApplyOverride("steps[0]=1"), "'steps' is not a list");
  EXPECT_SLM_ERROR(doc.ApplyOverride("sources.path=1"), "'sources' is not a map");
  EXPECT_SLM_ERROR(doc.ApplyOverride("sources[0].path.x=1"), "'sources[0].path' is not a map");
  doc.ApplyOverride("sources[1].path=b");  // appends
  doc.ApplyOverride("sources[0].path=z");  // changes
  doc.ApplyOverride("fresh[0].path=f");    // a new list
  std::vector<std::string> paths;
  for (Node item : doc.Root().List("sources")) {
    std::string path;
    item.Require("path", path);
    paths.push_back(path);
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"z", "b"}));
}

// Keys are the parts of dotted paths, so a key with '.', '[' or ']' (or an empty or non-string
// key) could not be addressed by --set or written to the effective config as it was read.
TEST(Config, KeysMustBePlainNames) {
  EXPECT_SLM_ERROR(Document::LoadString("tasks:\n  a.b: x\n", "t.yaml"),
                   "t.yaml:2: key 'tasks.a.b' contains '.', '[' or ']'");
  EXPECT_SLM_ERROR(Document::LoadString("tasks: {\"c[1]\": x}\n", "t.yaml"), "key 'tasks.c[1]' contains");
  EXPECT_SLM_ERROR(Document::LoadString("\"\": 1\n", "t.yaml"), "keys must be non-empty strings");
  EXPECT_SLM_ERROR(Document::LoadString("? [a, b]\n: 1\n", "t.yaml"), "a key under '' is a list");
}

// Found by review, confirmed with the config fuzz target (fuzz/regressions/config/alias_expansion):
// nine levels of nine aliases are 400 bytes that stand for 9^9 values, and the load-time walk
// over them hung. A document (or a --set value) may hold kMaxValues values, aliases expanded.
TEST(Config, AliasExpansionIsBounded) {
  std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 9; ++i) {
    yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 9; ++k) yaml += (k ? ", *a" : "*a") + std::to_string(i - 1);
    yaml += "]\n";
  }
  EXPECT_SLM_ERROR(Document::LoadString(yaml, "laughs.yaml"), "laughs.yaml: more than 100000 values");
  auto doc = Document::LoadString("steps: 1\n", "run.yaml");
  std::string value = "[&b0 [x, x, x, x, x, x, x, x, x, x]";
  for (int i = 1; i < 6; ++i) {
    value += ", &b" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) value += (k ? ", *b" : "*b") + std::to_string(i - 1);
    value += "]";
  }
  EXPECT_SLM_ERROR(doc.ApplyOverride("layers=" + value + "]"), "more than 100000 values");
  auto small = Document::LoadString("base: &b [1, 2]\nlayers: *b\n", "run.yaml");
  std::vector<int> layers;
  small.Root().Read("layers", layers);
  EXPECT_EQ(layers, (std::vector<int>{1, 2}));  // aliases still work
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
