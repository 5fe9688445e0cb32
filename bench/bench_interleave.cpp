// slm bench interleave --config FILE [--set k=v] [--batches N] [--steps N]: does the interleaving
// data pipeline keep the trainer fed? Both sides on the config's own model and training data, one
// thread each, same run:
//   pipeline: epoch batching (every item's stream and spans drawn to size the batches by tokens)
//             plus Materialize of `--batches` batches (sequence building, first-fit packing), in
//             examples (utterances) per second;
//   baseline "trainer step": Prepare + forward + backward + AdamW on `--steps` of those batches,
//             in examples per second (what `slm train` does per step, minus data preparation).
// Goal (issue 8): the pipeline alone >= 5x the trainer's examples/s, so that one data worker
// (data.workers) hides it.
#include <memory>
#include <numeric>
#include <string>

#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/device.h"
#include "core/json_report.h"
#include "core/optim.h"
#include "train/dataset.h"
#include "train/trainer.h"

namespace {

struct BenchInterleaveOptions {
  slm::cli::ConfigArgs config;
  int64_t batches = 200;
  int64_t steps = 10;
};

static slm::cli::Registrar registrar([](CLI::App& app, slm::cli::Common& common) {
  CLI::App* cmd = slm::cli::Group(app, "bench",
                                  "benchmarks (each prints a ratio against a named baseline measured in the "
                                  "same run)")
                      ->add_subcommand("interleave", "interleaved data pipeline vs the trainer step it feeds");
  auto opts = std::make_shared<BenchInterleaveOptions>();
  opts->config.Add(cmd, "samples/configs/interleaved_tiny.yaml");
  cmd->add_option("--batches", opts->batches, "batches the pipeline materializes")->check(CLI::Range(1, 1000000));
  cmd->add_option("--steps", opts->steps, "training steps timed for the baseline")->check(CLI::Range(1, 100000));
  cmd->callback([opts, &common] {
    using slm::Check;
    const auto c = opts->config.Load<slm::train::TrainConfig>();
    slm::SetThreads(1);
    slm::adapters::MultimodalLM model(c.model);
    slm::train::PrepareSources(c.data.train, 1, false);
    const slm::train::Dataset data(c.data.train, c.data.max_missing_fraction, model->MaxSpeechSeconds(), "data.train",
                                   true, model.get());
    slm::train::FeatureCache cache;

    // Pipeline: batching of two epochs, then Materialize of the first `batches` batches.
    const double pipeline_start = slm::bench::NowSeconds();
    std::vector<std::vector<int64_t>> batches = data.EpochBatches(c.seed, 0, c.train.batch_size, c.train.batch_frames);
    const double batching_seconds = slm::bench::NowSeconds() - pipeline_start;
    int64_t examples = 0, rows = 0, tokens = 0, made = 0;
    for (int64_t epoch = 0; made < opts->batches; ++epoch) {
      if (epoch > 0) batches = data.EpochBatches(c.seed, epoch, c.train.batch_size, c.train.batch_frames);
      for (size_t b = 0; b < batches.size() && made < opts->batches; ++b, ++made) {
        const auto out = data.Materialize(batches[b], *model, cache, epoch);
        examples += static_cast<int64_t>(batches[b].size());
        rows += static_cast<int64_t>(out.size());
        for (const auto& e : out) tokens += static_cast<int64_t>(e.tokens.size());
      }
    }
    const double pipeline_seconds = slm::bench::NowSeconds() - pipeline_start;
    const double pipeline_rate = examples / std::max(1e-9, pipeline_seconds);

    // Baseline: the trainer step on the first batches of epoch 0 (one warm-up step untimed).
    batches = data.EpochBatches(c.seed, 0, c.train.batch_size, c.train.batch_frames);
    Check(!batches.empty(), "no batches");
    model->train();
    const std::vector<torch::Tensor> parameters = model->TrainableParameters();
    const auto optimizer = slm::MakeAdamW(parameters, c.train);
    auto step = [&](const std::vector<int64_t>& batch) {
      const auto examples_in = data.Materialize(batch, *model, cache, 0);
      const slm::adapters::MultimodalBatch prepared = [&] {
        const slm::AutocastGuard precision = slm::train::PrecisionScope(c);
        return model->Prepare(examples_in, slm::text::PaddingSide::kRight);
      }();
      optimizer->zero_grad();
      torch::Tensor loss;
      {
        const slm::AutocastGuard precision = slm::train::PrecisionScope(c);
        loss = model->Loss(prepared);
      }
      loss.backward();
      slm::ClipGradients(parameters, c.train);
      optimizer->step();
    };
    step(batches[0]);
    int64_t trained = 0;
    double train_seconds = 0;
    for (int64_t s = 0; s < opts->steps; ++s) {
      const auto& batch = batches[static_cast<size_t>(s + 1) % batches.size()];
      const double start = slm::bench::NowSeconds();
      step(batch);
      train_seconds += slm::bench::NowSeconds() - start;
      trained += static_cast<int64_t>(batch.size());
    }
    const double trainer_rate = trained / std::max(1e-9, train_seconds);

    slm::Report report(common.json);
    report.Set("bench", "interleave");
    report.Set("baseline", "trainer step (Prepare + forward + backward + AdamW) on the same batches, 1 thread");
    report.Set("config", opts->config.config);
    report.Set("pipeline.batches", made);
    report.Set("pipeline.examples", examples);
    report.Set("pipeline.packed_rows", rows);
    report.Set("pipeline.tokens", tokens);
    report.Set("pipeline.epoch_batching_seconds", batching_seconds);
    report.Set("pipeline.seconds", pipeline_seconds);
    report.Set("pipeline.examples_per_second", pipeline_rate);
    report.Set("pipeline.tokens_per_second", tokens / std::max(1e-9, pipeline_seconds));
    report.Set("trainer.steps", opts->steps);
    report.Set("trainer.examples_per_second", trainer_rate);
    report.Set("ratio_pipeline_vs_trainer", pipeline_rate / std::max(1e-9, trainer_rate));
    report.Set("goal_ratio", 5);
    report.Set("meets_goal", pipeline_rate >= 5 * trainer_rate);
    report.Emit();
  });
});

}  // namespace
