// The task registry owns each task's behaviour: its example builder, batching length, which source
// keys apply, its evaluator and the headline number experiments compare. The trainer and dataset
// only ask the task, so these tests pin what each task answers.
#include <gtest/gtest.h>

#include <cmath>

#include "adapters/multimodal.h"
#include "core/config.h"
#include "core/manifest.h"
#include "tests/test_util.h"
#include "train/dataset.h"
#include "train/evaluate.h"
#include "train/tasks.h"

namespace slm::train {
namespace {

const std::string kBackbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";

TEST(Tasks, EachTaskOwnsItsBuilderLengthEvaluatorAndHeadline) {
  const std::vector<std::string> generating = {"asr", "caption", "sqa", "text", "vqa"};
  for (const std::string& name : TaskNames()) {
    SCOPED_TRACE(name);
    const Task& task = GetTask(name);
    ASSERT_TRUE(task.build && task.length && task.evaluator);
    const std::unique_ptr<TaskEvaluator> evaluator = task.evaluator();
    ASSERT_NE(evaluator, nullptr);
    const bool text_target = std::find(generating.begin(), generating.end(), name) != generating.end();
    EXPECT_EQ(evaluator->Generates(), text_target);
    EXPECT_FALSE(task.headline.metric.empty());
  }
  EXPECT_EQ(TaskNames().size(), 7u);
  EXPECT_EQ(TasksWhere([](const Task& t) { return t.predicts_units; }), (std::vector<std::string>{"tts", "interleaved"}));
  EXPECT_EQ(TasksWhere([](const Task& t) { return t.interleaves; }), std::vector<std::string>{"interleaved"});
  EXPECT_EQ(TasksWhere([](const Task& t) { return t.speaks; }), std::vector<std::string>{"tts"});
  EXPECT_EQ(GetTask("asr").headline.metric, "wer");
  EXPECT_FALSE(GetTask("asr").headline.higher_is_better);
  EXPECT_EQ(GetTask("sqa").headline.metric, "ranking_accuracy");
  EXPECT_TRUE(GetTask("sqa").headline.higher_is_better);
  EXPECT_SLM_ERROR(GetTask("ars"), "unknown task 'ars'");
}

TEST(Tasks, BatchingLengthIsInputAudioElseTheTasksOwnMeasure) {
  TaskExample x;
  x.target = "hello world";
  x.num_units = 7;
  EXPECT_DOUBLE_EQ(GetTask("asr").length(x, 2.5), 250.0);        // centiseconds of audio
  EXPECT_DOUBLE_EQ(GetTask("text").length(x, 0.0), 11.0);        // characters of the target
  EXPECT_DOUBLE_EQ(GetTask("tts").length(x, 0.0), 11.0);         // its target string of unit tokens
  EXPECT_DOUBLE_EQ(GetTask("interleaved").length(x, 0.0), 7.0);  // units
}

TEST(Tasks, SourceKeysApplyToTheTasksThatHaveThem) {
  auto load = [](const std::string& yaml) {
    auto doc = config::Document::LoadString(yaml, "source.yaml");
    DataSourceConfig s;
    s.Load(doc.Root());
  };
  EXPECT_SLM_ERROR(load("{manifest: m.jsonl, task: asr, units_from: {manifest: a.jsonl, units: u}}"),
                   "units_from' applies to tasks tts and interleaved only");
  EXPECT_SLM_ERROR(load("{manifest: m.jsonl, task: text, max_units: 10}"),
                   "max_units' applies to tasks tts and interleaved only");
  EXPECT_SLM_ERROR(load("{manifest: m.jsonl, task: tts, interleave: {eta: 0.3}}"),
                   "interleave' applies to task interleaved only");
  EXPECT_NO_THROW(load("{manifest: m.jsonl, task: tts, max_units: 10}"));
}

// A text source through the backbone alone: the generic loop reports loss, exact match and
// samples, and the text task adds its perplexity; asr's early check asks for a CTC head.
TEST(Tasks, EvaluationIsTheTasksReportOnTopOfTheCommonOne) {
  testing::TempDir dir;
  std::vector<manifest::Entry> entries;
  for (const char* line : {"dog: a domesticated canine", "cat: a small feline", "tree: a tall plant"}) {
    manifest::Entry e;
    e.id = std::to_string(entries.size());
    e.text = line;
    entries.push_back(e);
  }
  manifest::Write(dir.File("text.jsonl"), entries);
  adapters::MultimodalConfig mc;
  mc.backbone = kBackbone;
  adapters::MultimodalLM model(mc);
  DataSourceConfig source;
  source.manifest = dir.File("text.jsonl");
  source.task = "text";
  const Dataset valid({source}, 0.0, 0.0, "data.valid", true, model.get());
  FeatureCache cache;
  EvalOptions eval;
  eval.max_new_tokens = 3;
  const nlohmann::json out = Evaluate(*model, valid, eval, cache);
  const nlohmann::json& r = out.at(source.manifest + " (text)");
  EXPECT_EQ(r["task"], "text");
  EXPECT_EQ(r["examples"], 3);
  const double loss = r["loss"].get<double>();
  EXPECT_GT(loss, 0.0);
  EXPECT_NEAR(r["perplexity"].get<double>(), std::exp(loss), 1e-9 * std::exp(loss));
  EXPECT_TRUE(r.contains("exact_match"));
  ASSERT_EQ(r["samples"].size(), 3u);
  EXPECT_EQ(r["samples"][0]["reference"], "dog: a domesticated canine");
  EXPECT_FALSE(r.contains("wer"));  // asr's numbers are asr's
  EXPECT_DOUBLE_EQ(out["loss"].get<double>(), loss);

  DataSourceConfig asr;
  asr.manifest = "unused.jsonl";
  asr.task = "asr";
  EXPECT_NO_THROW(CheckEvaluation(*model, {asr}, eval));  // the LM alone needs no CTC head
  eval.ctc_weight = 0.3;
  EXPECT_SLM_ERROR(CheckEvaluation(*model, {asr}, eval), "eval.ctc_weight");
}

}  // namespace
}  // namespace slm::train
