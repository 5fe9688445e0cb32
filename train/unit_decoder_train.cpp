#include "train/unit_decoder_train.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"

namespace slm::train {
namespace {

// Units and mel cut to the same span: n units and n * upsample frames.
std::pair<torch::Tensor, torch::Tensor> Aligned(const UnitDecoderExample& e, int64_t upsample, size_t index) {
  const int64_t units = static_cast<int64_t>(e.units.size());
  const int64_t n = std::min(units, e.mel.size(0) / upsample);
  Check(n >= 1 && std::abs(units * upsample - e.mel.size(0)) <= 2 * upsample + 2, "unit decoder data: example ",
        index, " has ", units, " units but ", e.mel.size(0), " mel frames (upsample ", upsample, ")");
  return {torch::tensor(e.units, torch::kLong).narrow(0, 0, n), e.mel.narrow(0, 0, n * upsample).to(torch::kFloat)};
}

}  // namespace

UnitDecoderTrainResult TrainUnitDecoder(audio::UnitDecoderImpl& decoder, const std::vector<UnitDecoderExample>& data,
                                        const UnitDecoderTrainOptions& o, bool quiet) {
  Check(!data.empty(), "unit decoder: no training examples");
  const auto start = std::chrono::steady_clock::now();
  const int64_t upsample = decoder.Config().upsample;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> all;
  for (size_t i = 0; i < data.size(); ++i) {
    all.push_back(Aligned(data[i], upsample, i));
    Check(all.back().first.max().item<int64_t>() < decoder.Config().k && all.back().first.min().item<int64_t>() >= 0,
          "unit decoder data: example ", i, " has units outside 0..", decoder.Config().k - 1);
  }
  const size_t valid_count = data.size() >= 2 ? std::max<size_t>(1, size_t(o.valid_fraction * data.size())) : 0;
  const std::vector<std::pair<torch::Tensor, torch::Tensor>> train(all.begin(), all.end() - valid_count),
      valid(all.end() - valid_count, all.end());
  torch::Tensor mean_frame = torch::zeros({decoder.Config().n_mels});
  int64_t frames = 0;
  for (const auto& [units, mel] : train) {
    mean_frame += mel.sum(0);
    frames += mel.size(0);
  }
  mean_frame /= std::max<int64_t>(1, frames);

  torch::Generator generator = at::detail::createCPUGenerator(o.seed);
  decoder.train();
  std::vector<torch::Tensor> parameters = decoder.parameters();
  auto optimizer = MakeAdamW(parameters, o);
  LoopHooks hooks;
  hooks.next = [&](TrainingState&, int64_t) -> std::optional<MicroBatch> {
    std::vector<torch::Tensor> unit_rows, mel_rows;
    int64_t real_values = 0;  // the loss's terms: the rows' unpadded mel values
    for (int64_t b = 0; b < o.batch_size; ++b) {
      const auto& [units, mel] = train[torch::randint(train.size(), {1}, generator).item<int64_t>()];
      const int64_t n = units.size(0), w = std::min(o.window_units, n);
      const int64_t offset = n > w ? torch::randint(n - w + 1, {1}, generator).item<int64_t>() : 0;
      torch::Tensor u = units.narrow(0, offset, w), m = mel.narrow(0, offset * upsample, w * upsample);
      if (w < o.window_units) {  // short utterance: pad with its last unit and frame, masked out below
        u = torch::cat({u, u.narrow(0, w - 1, 1).expand({o.window_units - w})});
        m = torch::cat({m, torch::full({(o.window_units - w) * upsample, m.size(1)}, std::nanf(""))});
      }
      real_values += w * upsample * m.size(1);
      unit_rows.push_back(u);
      mel_rows.push_back(m);
    }
    const torch::Tensor target = torch::stack(mel_rows);
    const torch::Tensor real = ~torch::isnan(target);
    const torch::Tensor predicted = decoder.forward(torch::stack(unit_rows));
    return MicroBatch{(predicted - target.nan_to_num()).abs().masked_select(real).mean(), o.batch_size,
                      real_values};
  };
  LoopSettings settings{"unit decoder", "l1"};
  settings.quiet = quiet;
  TrainingState state;
  TrainingLoop loop(o, settings, parameters, *optimizer, std::move(hooks));
  const LoopResult run = loop.Run(state, nullptr);
  UnitDecoderTrainResult result;
  result.steps = run.steps;
  result.train_l1 = run.recent_loss;
  result.training = run;
  decoder.eval();
  torch::NoGradGuard no_grad;
  double l1 = 0, baseline = 0;
  int64_t count = 0;
  for (const auto& [units, mel] : valid) {
    l1 += (decoder.forward(units.unsqueeze(0)).squeeze(0) - mel).abs().sum().item<double>();
    baseline += (mean_frame.unsqueeze(0) - mel).abs().sum().item<double>();
    count += mel.numel();
  }
  result.valid_l1 = count ? l1 / count : 0;
  result.mean_frame_l1 = count ? baseline / count : 0;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace slm::train
