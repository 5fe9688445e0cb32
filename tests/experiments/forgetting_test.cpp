#include "experiments/forgetting.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>

#include "core/fs.h"
#include "tests/test_util.h"
#include "experiments/ablate_report.h"

namespace slm::experiments {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

constexpr char kAsr[] = "data/asr/valid/manifest.jsonl (asr)";
constexpr char kSqa[] = "data/sqa/valid/sqa.jsonl (sqa)";
constexpr char kText[] = "data/text/valid.jsonl (text)";
constexpr char kTts[] = "data/tts/valid.jsonl (tts)";

Json Source(const std::string& task, const std::string& metric, double value) {
  return {{"task", task}, {metric, value}, {"loss", 1.0}, {"examples", 10}};
}

// text -> asr -> tts, as the trainer would evaluate after each stage.
std::vector<std::pair<std::string, Json>> ThreeStages() {
  return {{"text", {{kText, Source("text", "perplexity", 40)}, {"loss", 3.7}}},
          {"asr", {{kText, Source("text", "perplexity", 45)}, {kAsr, Source("asr", "wer", 0.5)}, {"loss", 2.9}}},
          {"tts",
           {{kText, Source("text", "perplexity", 42)},
            {kAsr, Source("asr", "wer", 0.7)},
            {kTts, Source("tts", "loss", 2.1)},
            {"lora_discount", 0.5}}}};
}

TEST(Forgetting, HandComputedMatrix) {
  const auto r = BuildForgettingReport(ThreeStages());
  EXPECT_EQ(r.stages, (std::vector<std::string>{"text", "asr", "tts"}));
  // Within an evaluation, nlohmann::json orders keys, so asr precedes text in row 2.
  EXPECT_EQ(r.columns, (std::vector<std::string>{kText, kAsr, kTts}));
  EXPECT_EQ(r.labels, (std::vector<std::string>{"text", "asr", "tts"}));
  EXPECT_EQ(r.first_stage, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(r.metrics[1].metric, "wer");
  EXPECT_FALSE(r.values[0][1].has_value());
  EXPECT_DOUBLE_EQ(*r.values[1][1], 0.5);
  // asr: 0.5 -> 0.7 lower-is-better: forgot 0.2, BWT term -0.2.
  EXPECT_NEAR(*r.forgetting[1], 0.2, 1e-12);
  EXPECT_NEAR(*r.backward_transfer_terms[1], -0.2, 1e-12);
  // text: 40, 45, 42: best earlier is 40, so forgetting 2; BWT 40 - 42 = -2.
  EXPECT_NEAR(*r.forgetting[0], 2.0, 1e-12);
  EXPECT_NEAR(*r.backward_transfer_terms[0], -2.0, 1e-12);
  // tts was introduced by the last stage: nothing to forget yet.
  EXPECT_FALSE(r.forgetting[2].has_value());
  EXPECT_FALSE(r.backward_transfer_terms[2].has_value());
  // The summaries are relative: text 2 / 40, asr 0.2 / 0.5.
  EXPECT_NEAR(*r.relative_forgetting[0], 0.05, 1e-12);
  EXPECT_NEAR(*r.mean_forgetting, (0.05 + 0.4) / 2, 1e-12);
  EXPECT_NEAR(*r.backward_transfer, -(0.05 + 0.4) / 2, 1e-12);

  const Json j = r.ToJson();
  EXPECT_TRUE(j["forgetting"][2].is_null());
  EXPECT_TRUE(j["values"][0][1].is_null());
  EXPECT_EQ(j["metrics"][0]["metric"], "perplexity");
  const std::string md = r.ToMarkdown();
  EXPECT_THAT(md, HasSubstr("| stage | text perplexity ↓ | asr wer ↓ | tts loss ↓ |"));
  EXPECT_THAT(md, HasSubstr("| text | 40 | – | – |"));
  EXPECT_THAT(md, HasSubstr("| forgetting | 2 | 0.2 | – |"));
  EXPECT_THAT(md, HasSubstr("| relative forgetting | 0.05 | 0.4 | – |"));
  EXPECT_THAT(md, HasSubstr("BWT (relative): -0.225 · mean relative forgetting: 0.225"));
}

TEST(Forgetting, HigherIsBetterAndOverride) {
  const std::vector<std::pair<std::string, Json>> rows = {
      {"sqa", {{kSqa, {{"task", "sqa"}, {"ranking_accuracy", 0.30}, {"loss", 3.9}}}}},
      {"asr", {{kSqa, {{"task", "sqa"}, {"ranking_accuracy", 0.40}, {"loss", 3.5}}}}},
      {"tts", {{kSqa, {{"task", "sqa"}, {"ranking_accuracy", 0.25}, {"loss", 4.0}}}}}};
  const auto r = BuildForgettingReport(rows);
  EXPECT_TRUE(r.metrics[0].higher_is_better);
  EXPECT_NEAR(*r.forgetting[0], 0.15, 1e-12);                // best 0.40, last 0.25
  EXPECT_NEAR(*r.backward_transfer_terms[0], -0.05, 1e-12);  // 0.25 - 0.30
  const auto by_loss = BuildForgettingReport(rows, {{"sqa", {"loss", false}}});
  EXPECT_EQ(by_loss.metrics[0].metric, "loss");
  EXPECT_NEAR(*by_loss.forgetting[0], 0.5, 1e-12);  // 4.0 - 3.5
  EXPECT_NEAR(*by_loss.backward_transfer, -0.1 / 3.9, 1e-12);  // (3.9 - 4.0) / 3.9
}

TEST(Forgetting, SeveralSourcesOfOneTaskAndDefaults) {
  const auto r = BuildForgettingReport(
      {{"asr", {{"a.jsonl (asr)", Source("asr", "wer", 0.4)}, {"b.jsonl (asr)", Source("asr", "wer", 0.6)}}}});
  EXPECT_EQ(r.labels, (std::vector<std::string>{"asr: a.jsonl", "asr: b.jsonl"}));
  EXPECT_FALSE(r.mean_forgetting.has_value());
  EXPECT_FALSE(r.backward_transfer.has_value());
  EXPECT_EQ(DefaultMetric("interleaved").metric, "S->T");
  EXPECT_TRUE(DefaultMetric("vqa").higher_is_better);
  EXPECT_EQ(DefaultMetric("something_new").metric, "loss");
}

TEST(Forgetting, MissingMetricNamesStageAndSource) {
  auto rows = ThreeStages();
  rows[2].second[kAsr].erase("wer");
  const std::string message = testing::ErrorOf([&] { BuildForgettingReport(rows); });
  EXPECT_THAT(message, HasSubstr("stage 'tts'"));
  EXPECT_THAT(message, HasSubstr(kAsr));
  EXPECT_THAT(message, HasSubstr("'wer'"));
  rows[2].second[kAsr]["wer"] = "n/a";
  EXPECT_SLM_ERROR(BuildForgettingReport(rows), "no numeric 'wer'");
  EXPECT_SLM_ERROR(BuildForgettingReport({}), "no evaluations");
}

// A two-stage asr -> sqa run whose asr WER goes from 0.5 to `final_wer`, sqa accuracy 0.3.
AblationRun OkRun(const std::string& cell, double ratio, uint64_t seed, double final_wer) {
  return {cell, cell.rfind("replay", 0) == 0 ? "replay" : cell, ratio, seed, "ok", "runs/" + cell + ".log", "",
          BuildForgettingReport(
              {{"asr", {{kAsr, Source("asr", "wer", 0.5)}}},
               {"sqa", {{kAsr, Source("asr", "wer", final_wer)}, {kSqa, Source("sqa", "ranking_accuracy", 0.3)}}}})};
}

TEST(AblationReport, WritesCsvMarkdownAndPlots) {
  std::vector<AblationRun> runs = {OkRun("none", 0, 1, 0.7),         OkRun("none", 0, 2, 0.9),
                                   OkRun("replay_0.05", 0.05, 1, 0.6), OkRun("replay_0.1", 0.1, 1, 0.55),
                                   OkRun("replay_0.05+l2", 0.05, 1, 0.52)};
  runs.push_back(
      {"replay_0.1+l2", "replay+l2", 0.1, 1, "failed", "runs/replay_0.1+l2/seed1.log", "CUDA out of memory", {}});
  testing::TempDir tmp;
  const std::string dir = tmp.File("grid");
  const auto files = WriteAblationReport(dir, runs, StudyAgreement(runs));

  for (const char* name : {"results.csv", "report.md", "stages_asr.png", "stages_sqa.png", "forgetting_vs_replay.png"})
    EXPECT_NE(std::find(files.begin(), files.end(), dir + "/" + name), files.end()) << name;
  for (const auto& file : files) {
    ASSERT_TRUE(std::filesystem::exists(file)) << file;
    if (std::filesystem::path(file).extension() != ".png") continue;
    const cv::Mat image = cv::imread(file);
    EXPECT_EQ(image.cols, 800) << file;
    EXPECT_EQ(image.rows, 500) << file;
  }

  const std::string csv = fs::ReadFile(dir + "/results.csv");
  EXPECT_EQ(csv.rfind("cell,mitigation,replay_ratio,seed,status,stage,stage_index,column,task,metric,higher_is_better,value\n", 0),
            0u);
  // 5 ok runs x 3 values (asr twice, sqa once) + 1 failed line + header.
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5 * 3 + 1 + 1);
  EXPECT_THAT(csv, HasSubstr("replay_0.1+l2,replay+l2,0.1,1,failed,,,,,,,\n"));
  EXPECT_THAT(csv, HasSubstr("none,none,0,2,ok,sqa,1," + std::string(kAsr) + ",asr,wer,false,0.9\n"));

  const std::string md = fs::ReadFile(dir + "/report.md");
  EXPECT_THAT(md, HasSubstr("CUDA out of memory"));
  EXPECT_THAT(md, HasSubstr("runs/replay_0.1+l2/seed1.log"));
  // none: final WER 0.7 and 0.9 -> 0.8 ± 0.1414 (sample std); relative forgetting 0.2 / 0.5 and 0.4 / 0.5
  // -> 0.6 ± 0.2828.
  EXPECT_THAT(md, HasSubstr("| none | 2/2 | 0.8 ± 0.1414 | 0.3 ± 0 | 0.6 ± 0.2828 | -0.6 ± 0.2828 |"));
  EXPECT_THAT(md, HasSubstr("| replay_0.1+l2 | 0/1 | – | – | – | – |"));
  EXPECT_THAT(md, HasSubstr("![asr: wer after each stage (lower is better)](stages_asr.png)"));
  EXPECT_THAT(md, HasSubstr("Our results agree with the study."));
}

TEST(AblationReport, CsvQuotesFieldsWithCommasAndQuotes) {
  AblationRun failed{"a,b", "x\"y", 0, 3, "failed", "log", "boom", {}};
  testing::TempDir tmp;
  WriteAblationReport(tmp.path(), {failed}, "n/a");
  EXPECT_THAT(fs::ReadFile(tmp.File("results.csv")), HasSubstr("\n\"a,b\",\"x\"\"y\",0,3,failed,,,,,,,\n"));
  EXPECT_THAT(fs::ReadFile(tmp.File("report.md")), HasSubstr("none (no finished run)"));
}

TEST(AblationReport, StudyAgreementWhenReplayAndCombinationWin) {
  const std::vector<AblationRun> runs = {OkRun("none", 0, 1, 0.9), OkRun("replay_0.05", 0.05, 1, 0.6),
                                         OkRun("replay_0.05+l2", 0.05, 1, 0.55), OkRun("lora_discount_0.5", 0, 1, 0.8)};
  const std::string text = StudyAgreement(runs);
  EXPECT_THAT(text, HasSubstr("Our results agree with the study."));
  EXPECT_THAT(text, Not(HasSubstr("do not")));
  // sqa is introduced by the last stage, so a run's mean forgetting is its relative asr forgetting:
  // none (0.9 - 0.5) / 0.5.
  EXPECT_THAT(text, HasSubstr("The best cell is replay_0.05+l2 (0.1), a replay cell."));
  EXPECT_THAT(text, HasSubstr("Without mitigation: none (0.8)."));
  EXPECT_THAT(text, HasSubstr("replay_0.05+l2 (0.1) beats replay_0.05 (0.2)"));
}

TEST(AblationReport, StudyAgreementWhenNoMitigationWins) {
  const std::string text =
      StudyAgreement({OkRun("none", 0, 1, 0.55), OkRun("replay_0.05", 0.05, 1, 0.7), OkRun("merge_linear", 0, 1, 0.6)});
  EXPECT_THAT(text, HasSubstr("Our results do not agree with the study."));
  EXPECT_THAT(text, HasSubstr("not a replay cell; the best replay cell is replay_0.05 (0.4)"));
  EXPECT_THAT(text, HasSubstr("No replay combination"));
}

TEST(AblationReport, StudyAgreementWithMissingCells) {
  const std::string partial = StudyAgreement({OkRun("replay_0.05", 0.05, 1, 0.6), OkRun("replay_0.1+l2", 0.1, 1, 0.5)});
  EXPECT_THAT(partial, HasSubstr("no finished \"none\" cell"));
  EXPECT_THAT(partial, HasSubstr("replay_0.1+l2 could not be compared"));
  EXPECT_THAT(partial, HasSubstr("Our results agree with the study as far as they could be compared."));
  AblationRun failed{"none", "none", 0, 1, "failed", "log", "boom", {}};
  EXPECT_THAT(StudyAgreement({failed}), HasSubstr("could not be compared with the study."));
}

}  // namespace
}  // namespace slm::experiments
