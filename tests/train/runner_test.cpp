// The training runner on a linear model: what every job gets from it (gradient accumulation equals
// the larger batch, the non-finite stop before the update, the data running out, the cadence of
// evaluations, checkpoints and metrics records, the run directory's files).
#include "train/runner.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::train {
namespace {

// y = x . w_true; the model is one Linear without bias, trained on fixed rows.
struct Linear {
  torch::nn::Linear layer{torch::nn::LinearOptions(4, 1).bias(false)};
  torch::Tensor x, y;
  explicit Linear(int64_t rows) {
    torch::manual_seed(3);
    layer->weight.data().zero_();
    x = torch::randn({rows, 4});
    y = x.matmul(torch::tensor({1.0f, -2.0f, 0.5f, 3.0f}));
  }
  torch::Tensor Loss(int64_t begin, int64_t end) {
    return (layer(x.slice(0, begin, end)).squeeze(1) - y.slice(0, begin, end)).pow(2).mean();
  }
};

LoopOptions Options(int64_t steps) {
  LoopOptions o;
  o.steps = steps;
  o.lr = 0.05;
  o.warmup_steps = 0;
  o.min_lr_ratio = 1.0;
  o.weight_decay = 0;
  o.log_every = 2;
  return o;
}

LoopSettings Quiet() {
  LoopSettings s;
  s.quiet = true;
  return s;
}

TEST(TrainingLoop, TwoAccumulatedHalvesEqualOneBatch) {
  Linear whole(8), halves(8);
  LoopOptions one = Options(5), two = Options(5);
  two.grad_accum = 2;
  auto optimizer_whole = MakeAdamW(whole.layer->parameters(), one);
  auto optimizer_halves = MakeAdamW(halves.layer->parameters(), two);
  LoopHooks a, b;
  a.next = [&](TrainingState&, int64_t) -> std::optional<MicroBatch> { return MicroBatch{whole.Loss(0, 8), 8, 8}; };
  b.next = [&](TrainingState&, int64_t micro) -> std::optional<MicroBatch> {
    return MicroBatch{halves.Loss(micro * 4, micro * 4 + 4), 4, 4};
  };
  TrainingLoop la(one, Quiet(), whole.layer->parameters(), *optimizer_whole, a);
  TrainingLoop lb(two, Quiet(), halves.layer->parameters(), *optimizer_halves, b);
  TrainingState sa, sb;
  const LoopResult ra = la.Run(sa, nullptr), rb = lb.Run(sb, nullptr);
  EXPECT_EQ(ra.steps, 5);
  EXPECT_EQ(rb.steps, 5);
  EXPECT_EQ(sa.examples_seen, 40);
  EXPECT_EQ(sb.examples_seen, 40);
  EXPECT_NEAR(ra.final_loss, rb.final_loss, 1e-5);
  EXPECT_TRUE(torch::allclose(whole.layer->weight, halves.layer->weight, 1e-5, 1e-6));
  EXPECT_GT(whole.layer->weight.abs().sum().item<double>(), 0.1);  // it did train
}

TEST(TrainingLoop, ANonFiniteLossStopsBeforeTheUpdate) {
  Linear m(8);
  auto optimizer = MakeAdamW(m.layer->parameters(), Options(10));
  LoopHooks hooks;
  hooks.next = [&](TrainingState& s, int64_t) -> std::optional<MicroBatch> {
    torch::Tensor loss = m.Loss(0, 8);
    if (s.step == 3) loss = loss * std::numeric_limits<float>::quiet_NaN();
    return MicroBatch{loss, 8, 8};
  };
  hooks.describe_failure = [](const TrainingState&) { return std::string(", batch of examples q7"); };
  LoopSettings settings = Quiet();
  settings.name = "toy";
  settings.divergence_hint = "lower train.lr";
  TrainingLoop loop(Options(10), settings, m.layer->parameters(), *optimizer, hooks);
  TrainingState state;
  try {
    loop.Run(state, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("toy diverged: non-finite loss (nan) at step 3, batch of examples q7 "
                                         "(lower train.lr)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(state.step, 3);
  EXPECT_TRUE(torch::isfinite(m.layer->weight).all().item<bool>());
}

TEST(TrainingLoop, DataRunningOutEndsTheRunWithoutAHalfStep) {
  Linear m(8);
  LoopOptions o = Options(100);
  o.grad_accum = 2;
  auto optimizer = MakeAdamW(m.layer->parameters(), o);
  int64_t served = 0;
  LoopHooks hooks;
  hooks.next = [&](TrainingState&, int64_t) -> std::optional<MicroBatch> {
    if (served == 5) return std::nullopt;  // the fifth micro-batch would be half of step 3
    ++served;
    return MicroBatch{m.Loss(0, 8), 8, 8};
  };
  TrainingLoop loop(o, Quiet(), m.layer->parameters(), *optimizer, hooks);
  TrainingState state;
  const LoopResult r = loop.Run(state, nullptr);
  EXPECT_TRUE(r.stopped_by_data);
  EXPECT_FALSE(r.stopped_by_time_limit);
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(state.examples_seen, 5 * 8);  // the fifth was seen, its update discarded
}

TEST(TrainingLoop, JobFilesAndTheCadenceOfRecordsEvaluationsAndCheckpoints) {
  testing::TempDir dir;
  const std::string run = dir.File("run");
  Linear m(8);
  LoopOptions o = Options(7);
  o.log_every = 3;
  auto optimizer = MakeAdamW(m.layer->parameters(), o);
  std::vector<int64_t> evaluated, checkpointed;
  LoopHooks hooks;
  hooks.next = [&](TrainingState&, int64_t) -> std::optional<MicroBatch> { return MicroBatch{m.Loss(0, 8), 8, 8}; };
  hooks.log_fields = [](const TrainingState& s, double) { return nlohmann::json{{"own", s.step * 10}}; };
  hooks.evaluate = [&](const TrainingState& s) {
    evaluated.push_back(s.step);
    return nlohmann::json{{"valid", 1.5}};
  };
  hooks.checkpoint = [&](const TrainingState& s) { checkpointed.push_back(s.step); };
  LoopSettings settings = Quiet();
  settings.eval_every = 2;
  settings.checkpoint_every = 3;
  {
    const Job job({run, "a: 1\n", 5, 1});
    TrainingLoop loop(o, settings, m.layer->parameters(), *optimizer, hooks);
    TrainingState state;
    const LoopResult r = loop.Run(state, &job);
    job.Finish({{"steps", r.steps}, {"training", r.ToJson()}});
    EXPECT_EQ(r.steps, 7);
    // Steps 3 and 6 close a log window; step 7 (the last) closes the short one.
    EXPECT_GT(r.recent_loss, 0);
  }
  EXPECT_EQ(evaluated, (std::vector<int64_t>{2, 4, 6}));  // not at the last step: the job evaluates then
  EXPECT_EQ(checkpointed, (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(fs::ReadFile(run + "/config.yaml"), "a: 1\n");
  std::vector<nlohmann::json> records;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(records.size(), 2u + 3u + 1u);  // steps 3 and 6, three evaluations, the final record
  int logged = 0;
  for (const auto& r : records)
    if (r.contains("loss")) {
      ++logged;
      EXPECT_EQ(r["own"], r["step"].get<int64_t>() * 10);
      for (const char* key : {"loss_ema", "lr", "grad_norm", "examples_per_second", "elapsed_seconds"})
        EXPECT_TRUE(r.contains(key)) << key;
    }
  EXPECT_EQ(logged, 2);
  EXPECT_EQ(records.back()["final"]["training"]["steps"], 7);
  EXPECT_EQ(nlohmann::json::parse(fs::ReadFile(run + "/result.json"))["steps"], 7);

  // A resumed run appends to metrics.jsonl; a non-writing rank writes nothing.
  {
    JobOptions resumed{run, "a: 1\n", 5, 1};
    resumed.append_metrics = true;
    const Job job(resumed);
    job.Log({{"more", 1}});
    JobOptions other{dir.File("rank1"), "", 5, 1};
    other.writer = false;
    const Job silent(other);
    silent.Log({{"x", 1}});
    silent.Finish({{"x", 1}});
  }
  std::ifstream again(run + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(again, line);) ++lines;
  EXPECT_EQ(lines, 7);
  EXPECT_FALSE(std::filesystem::exists(dir.File("rank1")));
}

TEST(TrainingLoop, LoopKeysAreReadAndChecked) {
  auto doc = config::Document::LoadString("train: {steps: 5, grad_accum: 4, precision: bfloat16}\n", "t.yaml");
  LoopOptions o;
  auto node = doc.Root().Child("train");
  o.Load(node);
  EXPECT_EQ(o.grad_accum, 4);
  EXPECT_EQ(o.precision, "bfloat16");
  auto bad = config::Document::LoadString("train: {precision: fp8}\n", "t.yaml");
  auto bad_node = bad.Root().Child("train");
  EXPECT_SLM_ERROR(LoopOptions().Load(bad_node), "precision");
  auto zero = config::Document::LoadString("train: {grad_accum: 0}\n", "t.yaml");
  auto zero_node = zero.Root().Child("train");
  EXPECT_SLM_ERROR(LoopOptions().Load(zero_node), "grad_accum");
}

}  // namespace
}  // namespace slm::train
