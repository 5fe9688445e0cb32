// Multi-stage training (train/stages.h) and the ablation runner (train/ablate.h) on a miniature:
// the committed starter backbone, a random tiny speech encoder, noise "speech" with transcripts as
// two ASR stages after a text stage. Stages carry adapters, replay draws what it says it draws,
// mitigations combine, resume skips finished stages, and bad configs fail naming the place.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "audio/audio_io.h"
#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/safetensors.h"
#include "tests/test_util.h"
#include "tests/train/tiny_encoder.h"
#include "experiments/ablate.h"
#include "experiments/stages.h"

namespace slm::experiments {

using namespace train;
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
const std::string kBackbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";

struct StagesMini {
  testing::TempDir dir;
  std::string encoder;
  StagesMini() {
    torch::manual_seed(5);
    encoder = testing_support::SaveTinySpeechEncoder(dir.File("encoder"));
    stdfs::create_directories(dir.File("wav"));
    const std::vector<std::string> words = {"red", "dog", "blue", "cat", "green", "star", "tree", "sun",
                                            "snow", "road", "bird", "sea", "sky", "hill", "lake", "rain"};
    // Two speech sets (a: 10 + 2 valid, b: 6 + 2 valid) and text lines (8 + 2 valid).
    auto speech = [&](const std::string& name, size_t first, size_t n) {
      std::vector<manifest::Entry> entries;
      for (size_t i = first; i < first + n; ++i) {
        const torch::Tensor noise = torch::randn({6000}) * 0.1;
        const std::string wav = "wav/" + name + std::to_string(i) + ".wav";
        audio::Write(dir.File(wav), std::vector<float>(noise.data_ptr<float>(), noise.data_ptr<float>() + 6000), 16000);
        manifest::Entry e;
        e.id = name + std::to_string(i);
        e.task = "asr";
        e.audio = wav;
        e.text = "the " + words[i % words.size()];
        entries.push_back(e);
      }
      manifest::Write(dir.File(name + ".jsonl"), entries);
    };
    speech("a", 0, 10);
    speech("a_valid", 10, 2);
    speech("b", 0, 6);
    speech("b_valid", 6, 2);
    std::string text;
    for (size_t i = 0; i < 10; ++i) text += "dog: a domestic animal number " + std::to_string(i) + "\n";
    fs::AtomicWriteString(dir.File("lines.txt"), text);
  }
  // A three-stage config: llm (text, evaluate_only) -> a -> b; `extra` is appended (top level).
  std::string Yaml(const std::string& out, const std::string& extra = "", int steps = 2) const {
    return "model:\n  backbone: " + kBackbone + "\n  speech:\n    encoder: " + encoder +
           "\n    projector: {type: stack_mlp, stack: 2, hidden_dim: 64}\n"
           "  lora: {enabled: true, rank: 4, alpha: 8, target_modules: [q_proj, v_proj]}\n"
           "train: {steps: " + std::to_string(steps) + ", batch_size: 4, lr: 0.003, warmup_steps: 1, log_every: 1}\n"
           "eval: {max_new_tokens: 4, batch_size: 4}\ncheckpoint: {every: 0, keep: 1}\nthreads: 1\nseed: 3\n"
           "output_dir: " + out + "\n"
           "stages:\n"
           "  - name: llm\n    evaluate_only: true\n    data:\n"
           "      train: [{manifest: " + dir.File("text_train.jsonl") + ", task: text, text_from: {lines: " +
           dir.File("lines.txt") + ", count: 8}}]\n"
           "      valid: [{manifest: " + dir.File("text_valid.jsonl") + ", task: text, text_from: {lines: " +
           dir.File("lines.txt") + ", skip: 8}}]\n"
           "  - name: a\n    data:\n      train: [{manifest: " + dir.File("a.jsonl") + ", task: asr}]\n"
           "      valid: [{manifest: " + dir.File("a_valid.jsonl") + ", task: asr}]\n"
           "  - name: b\n    train: {trainable: [lora]}\n    data:\n      train: [{manifest: " + dir.File("b.jsonl") +
           ", task: asr}]\n      valid: [{manifest: " + dir.File("b_valid.jsonl") + ", task: asr}]\n" + extra;
  }
  StagesConfig Config(const std::string& out, const std::string& extra = "", int steps = 2,
                      const std::vector<std::string>& overrides = {}) const {
    auto doc = config::Document::LoadString(Yaml(out, extra, steps), "stages.yaml");
    doc.ApplyOverrides(overrides);
    StagesConfig c;
    c.Load(doc);
    return c;
  }
};

const StagesMini& Mini() {
  static const StagesMini m;
  return m;
}

torch::Tensor Tensor(const std::string& adapters, const std::string& prefix) {
  safetensors::Reader r(adapters + "/adapters.safetensors");
  std::vector<torch::Tensor> all;
  for (const auto& name : r.Names())
    if (name.rfind(prefix, 0) == 0) all.push_back(r.Get(name).flatten());
  return torch::cat(all);
}

TEST(Stages, RunCarriesAdaptersReplaysAndReportsForgetting) {
  testing::TempDir out;
  const StagesConfig c =
      Mini().Config(out.File("run"), "replay: {mode: quota, ratio: 0.5, ratios: {llm: 0.25}}\n", 2, {"eval.every=1"});
  ASSERT_EQ(c.stages.size(), 3u);
  // Valid sets accumulate: stage b sees text, a and b.
  EXPECT_EQ(c.stages[2].config.data.valid.size(), 3u);
  EXPECT_EQ(c.stages[1].config.init_adapters, out.File("run") + "/stages/0-llm/adapters");
  const StagesResult r = RunStages(c, false, true);
  ASSERT_EQ(r.report.stages.size(), 3u);
  EXPECT_EQ(r.report.columns.size(), 3u);
  // Row 0: only text; row 2: all three.
  EXPECT_TRUE(r.report.values[0][0].has_value());
  EXPECT_FALSE(r.report.values[0][1].has_value());
  EXPECT_TRUE(r.report.values[2][1].has_value());
  for (const char* file : {"config.yaml", "stages.json", "forgetting.json", "forgetting.md", "curve_0_text.png",
                           "curve_2_asr.png"})
    EXPECT_TRUE(stdfs::exists(out.File("run/") + file)) << file;
  // eval.every = 1 in 2-step stages: one evaluation inside each trained stage (the last step is the end's).
  const json stages = fs::ReadJson(out.File("run/stages.json"));
  EXPECT_EQ(stages["stages"][1]["curve"].size(), 1u);
  EXPECT_EQ(stages["stages"][0]["curve"].size(), 0u);
  // Stage b (6 items) replays round(0.25 * 6) = 2 text lines and round(0.5 * 6) = 3 utterances of a.
  const json replay = fs::ReadJson(out.File("run/stages/2-b/replay.json"));
  ASSERT_EQ(replay["replayed"].size(), 2u);
  EXPECT_EQ(replay["stage_items"], 6);
  EXPECT_EQ(replay["replayed"][0]["from_stage"], "llm");
  EXPECT_EQ(replay["replayed"][0]["count"], 2);
  EXPECT_EQ(replay["replayed"][1]["count"], 3);
  EXPECT_NEAR(replay["replayed"][1]["share"].get<double>(), 3.0 / 11.0, 1e-9);
  const json result = fs::ReadJson(out.File("run/stages/2-b/result.json"));
  ASSERT_EQ(result["data"].size(), 3u);  // b, then the two replay sources
  EXPECT_EQ(result["data"][2]["selected"], 3);
  // The stage config is a plain training config with the replay sources written out.
  const std::string stage_yaml = fs::ReadFile(out.File("run/stages/2-b/config.yaml"));
  EXPECT_NE(stage_yaml.find("sample: 3"), std::string::npos) << stage_yaml;
  // Stage b trains LoRA only: its projector is stage a's; stage a's differs from the fresh one.
  const std::string s0 = out.File("run/stages/0-llm/adapters"), s1 = out.File("run/stages/1-a/adapters"),
                    s2 = out.File("run/stages/2-b/adapters");
  EXPECT_TRUE(torch::equal(Tensor(s1, "speech_projector"), Tensor(s2, "speech_projector")));
  EXPECT_FALSE(torch::equal(Tensor(s0, "speech_projector"), Tensor(s1, "speech_projector")));
  // Finished stages are skipped on resume; without resume the directory is refused.
  const auto before = stdfs::last_write_time(out.File("run/stages/1-a/result.json"));
  const StagesResult again = RunStages(c, true, true);
  EXPECT_EQ(stdfs::last_write_time(out.File("run/stages/1-a/result.json")), before);
  EXPECT_EQ(again.report.values[2][1], r.report.values[2][1]);
  EXPECT_SLM_ERROR(RunStages(c, false, true), "already holds a multi-stage run");
}

TEST(Stages, EvaluationOnlyVariantsReuseStagesDiscountAndMerge) {
  testing::TempDir out;
  RunStages(Mini().Config(out.File("none")), false, true);
  auto doc = config::Document::LoadString(
      Mini().Yaml(out.File("variant"), "reuse_stages_from: " + out.File("none") +
                                           "\nmerge: {method: linear, weights: {a: 0.5, b: 0.5}}\n"),
      "variant.yaml");
  doc.ApplyOverride("eval.lora_discount=0");
  StagesConfig variant;
  variant.Load(doc);
  const StagesResult r = RunStages(variant, false, true);
  ASSERT_EQ(r.report.stages.back(), "merged");
  EXPECT_EQ(fs::ReadJson(out.File("variant/stages/1-a/result.json"))["steps"], 0);
  // Discount 0 removes LoRA: the stage adapters are the reused ones, the text scores equal the backbone's.
  EXPECT_TRUE(torch::equal(Tensor(out.File("none/stages/2-b/adapters"), "speech_projector"),
                           Tensor(out.File("variant/stages/2-b/adapters"), "speech_projector")));
  EXPECT_NEAR(*r.report.values[2][0], *r.report.values[0][0], 1e-6);
  EXPECT_TRUE(stdfs::exists(out.File("variant/merged/adapters/merge.json")));
}

TEST(Stages, ReservoirReplaysTheBuffer) {
  testing::TempDir out;
  const StagesConfig c = Mini().Config(out.File("run"), "replay: {mode: reservoir, buffer_size: 5}\n", 1);
  RunStages(c, false, true);
  auto replayed = [&](const std::string& stage) {
    const json replay = fs::ReadJson(out.File("run/stages/" + stage + "/replay.json"));
    int64_t total = 0;
    for (const json& d : replay["replayed"]) total += d["count"].get<int64_t>();
    return total;
  };
  EXPECT_EQ(replayed("1-a"), 5);  // 8 text lines seen: the buffer is full
  EXPECT_EQ(replayed("2-b"), 5);
  // The buffer's positions are written into the stage config (a resumed stage replays the same).
  auto doc = config::Document::LoadFile(out.File("run/stages/2-b/config.yaml"));
  TrainConfig stage;
  stage.Load(doc.Root());
  size_t picked = 0;
  for (const DataSourceConfig& source : stage.data.train) picked += source.pick.size();
  EXPECT_EQ(picked, 5u);
}

TEST(Stages, BadConfigsNameTheProblem) {
  testing::TempDir dir;
  const std::string out = dir.File("run");
  auto load = [&](const std::string& yaml) {
    auto doc = config::Document::LoadString(yaml, "stages.yaml");
    StagesConfig c;
    c.Load(doc);
    return c;
  };
  std::string y = Mini().Yaml(out);
  std::string bad = y;
  bad.replace(bad.find("task: asr"), 9, "task: asrr");
  EXPECT_SLM_ERROR(load(bad), "stage 'a'");
  EXPECT_SLM_ERROR(load(bad), "must be one of");
  EXPECT_SLM_ERROR(load(y + "replay: {mode: quota, ratio: 1.5}\n"), "replay.ratio");
  EXPECT_SLM_ERROR(load(y + "replay: {mode: quota, ratios: {c: 0.1}}\n"), "no stage is named 'c'");
  EXPECT_SLM_ERROR(load(y + "replay: {mode: quota, ratios: {a: -0.1}}\n"), "must be in [0, 1]");
  EXPECT_SLM_ERROR(load(y + "replay: {mode: reservoir}\n"), "needs buffer_size");
  EXPECT_SLM_ERROR(load(y + "merge: {weights: {a: 1, zz: 1}}\n"), "no stage is named 'zz'");
  std::string twice = y;
  twice.replace(twice.find("name: b"), 7, "name: a");
  EXPECT_SLM_ERROR(load(twice), "listed twice");
  std::string typo = y;
  typo.replace(typo.find("    train: {trainable"), 9, "    trian:");
  EXPECT_SLM_ERROR(load(typo), "trian");
  std::string part = y;
  part.replace(part.find("trainable: [lora]"), 17, "trainable: [image_projector]");
  EXPECT_SLM_ERROR(RunStages(load(part), false, true), "no image_projector");
}

TEST(Stages, SampleAndPickSelectUsableEntries) {
  auto source = [](const std::string& yaml) {
    auto doc = config::Document::LoadString(yaml, "s.yaml");
    DataSourceConfig s;
    s.Load(doc.Root());
    return s;
  };
  const std::string m = Mini().dir.File("a.jsonl");
  const Dataset without(std::vector<DataSourceConfig>{source("{manifest: " + m + ", task: asr, sample: 6, sample_seed: 2}")},
                        0.0, 0.0, "t");
  std::set<std::string> ids;
  for (size_t i = 0; i < without.Size(); ++i) ids.insert(without.Item(i).id);
  EXPECT_EQ(without.Stats()[0].selected, 6);
  // Items are the selected entries once each (no replacement).
  std::vector<int64_t> order;
  for (const auto& batch : without.EpochBatches(1, 0, 100)) order.insert(order.end(), batch.begin(), batch.end());
  std::set<std::string> drawn;
  for (int64_t i : order) drawn.insert(without.Item(i).id);
  EXPECT_EQ(order.size(), 6u);
  EXPECT_EQ(drawn.size(), 6u);
  const Dataset with(std::vector<DataSourceConfig>{source("{manifest: " + m + ", task: asr, sample: 25}")}, 0.0, 0.0, "t");
  EXPECT_EQ(with.Stats()[0].selected, 25);
  const Dataset picked(std::vector<DataSourceConfig>{source("{manifest: " + m + ", task: asr, pick: [0, 0, 9]}")}, 0.0, 0.0, "t");
  EXPECT_EQ(picked.Stats()[0].selected, 3);
  EXPECT_SLM_ERROR(Dataset(std::vector<DataSourceConfig>{source("{manifest: " + m + ", task: asr, pick: [10]}")}, 0.0, 0.0, "t"),
                   "pick 10 is outside its 10 usable entries");
  EXPECT_SLM_ERROR(source("{manifest: " + m + ", sample: 2, pick: [1]}"), "not both");
}

TEST(Ablate, GridRecordsFailedCellsAndGoesOn) {
  testing::TempDir out;
  const std::string base = out.File("base.yaml");
  fs::AtomicWriteString(base, Mini().Yaml(out.File("unused"), "", 1));
  const std::string grid = "base: " + base + "\noutput_dir: " + out.File("grid") +
                           "\nseeds: [1]\njobs: 2\ncells:\n  - name: none\n"
                           "  - {name: broken, set: [train.lr=fast]}\n"
                           "  - {name: broken_eval, eval_of: broken, set: [eval.lora_discount=0.5]}\n"
                           "  - {name: replay_0.5, mitigation: replay, replay_ratio: 0.5, set: [replay.mode=quota, replay.ratio=0.5]}\n";
  auto doc = config::Document::LoadString(grid, "grid.yaml");
  AblationConfig c;
  c.Load(doc.Root(), false);
  doc.CheckAllConsumed();
  c.executable = std::string(SLM_BINARY_DIR) + "/cli/slm";
  const AblationResult r = RunAblation(c, true);
  ASSERT_EQ(r.runs.size(), 4u);
  EXPECT_EQ(r.runs[0].status, "ok");
  EXPECT_EQ(r.runs[1].status, "failed");
  EXPECT_NE(r.runs[1].error.find("train.lr"), std::string::npos) << r.runs[1].error;
  EXPECT_EQ(r.runs[2].status, "failed");
  EXPECT_NE(r.runs[2].error.find("'broken'"), std::string::npos) << r.runs[2].error;
  EXPECT_EQ(r.runs[3].status, "ok");
  EXPECT_EQ(r.failed, 2);
  const std::string report = fs::ReadFile(out.File("grid/report.md"));
  EXPECT_NE(report.find(out.File("grid/runs/broken/seed1.log")), std::string::npos);
  EXPECT_TRUE(stdfs::exists(out.File("grid/results.csv")));
  // Again: finished cells are skipped, the failed one runs (and fails) again.
  const AblationResult again = RunAblation(c, true);
  EXPECT_EQ(again.skipped, 2);
  EXPECT_EQ(again.ran, 1);
}

TEST(Ablate, ACellKilledByASignalIsRecordedWithIt) {
  testing::TempDir out;
  const std::string base = out.File("base.yaml");
  fs::AtomicWriteString(base, Mini().Yaml(out.File("unused"), "", 1));
  // A stand-in for a cell that crashes: the "slm" it runs kills itself with SIGSEGV.
  const std::string crash = out.File("crash.sh");
  fs::AtomicWriteString(crash, "#!/bin/sh\necho 'about to crash'\nkill -SEGV $$\n");
  stdfs::permissions(crash, stdfs::perms::owner_all);
  auto doc = config::Document::LoadString("base: " + base + "\noutput_dir: " + out.File("grid") +
                                              "\nseeds: [1]\ncells: [{name: none}]\n",
                                          "grid.yaml");
  AblationConfig c;
  c.Load(doc.Root(), false);
  c.executable = crash;
  const AblationResult r = RunAblation(c, true);
  ASSERT_EQ(r.runs.size(), 1u);
  EXPECT_EQ(r.runs[0].status, "failed");
  EXPECT_NE(r.runs[0].error.find("exit code 139 (signal 11)"), std::string::npos) << r.runs[0].error;
  EXPECT_NE(r.runs[0].error.find("about to crash"), std::string::npos) << r.runs[0].error;
  EXPECT_NE(fs::ReadFile(out.File("grid/report.md")).find("signal 11"), std::string::npos);
}

TEST(Ablate, ConfigErrors) {
  auto load = [](const std::string& yaml, bool quick = false) {
    auto doc = config::Document::LoadString(yaml, "grid.yaml");
    AblationConfig c;
    c.Load(doc.Root(), quick);
    return c;
  };
  const std::string base = "base: " + std::string(SLM_SOURCE_DIR) + "/samples/configs/stages_quick.yaml\n";
  EXPECT_SLM_ERROR(load(base + "cells: [{name: a, eval_of: b}]\n"), "no earlier cell is named 'b'");
  EXPECT_SLM_ERROR(load(base + "cells: [{name: a}, {name: a}]\n"), "listed twice");
  EXPECT_SLM_ERROR(load(base + "cells: []\n"), "lists no cell");
  EXPECT_SLM_ERROR(load(base + "cells: [{name: a}]\nquick: {cells: [zz]}\n"), "no cell is named 'zz'");
  EXPECT_SLM_ERROR(load(base + "cells: [{name: a}]\n", true), "needs a quick: section");
  EXPECT_SLM_ERROR(load("base: /nonexistent.yaml\ncells: [{name: a}]\n"), "does not exist");
  EXPECT_EQ(load(base + "cells: [{name: replay_0.1}]\n").cells[0].mitigation, "replay");
}

}  // namespace
}  // namespace slm::experiments
