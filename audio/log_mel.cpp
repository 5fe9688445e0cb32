#include "audio/log_mel.h"

#include <ATen/Parallel.h>
#include <kissfft/kiss_fftr.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "audio/audio_io.h"
#include "core/error.h"

namespace slm::audio {
namespace {

constexpr double kMelFloor = 1e-10;

// Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False).
double HzToMel(double hz) {
  constexpr double kMinLogHz = 1000.0, kMinLogMel = 15.0;
  const double log_step = 27.0 / std::log(6.4);
  return hz >= kMinLogHz ? kMinLogMel + std::log(hz / kMinLogHz) * log_step : 3.0 * hz / 200.0;
}

double MelToHz(double mel) {
  constexpr double kMinLogHz = 1000.0, kMinLogMel = 15.0;
  const double log_step = std::log(6.4) / 27.0;
  return mel >= kMinLogMel ? kMinLogHz * std::exp(log_step * (mel - kMinLogMel)) : 200.0 * mel / 3.0;
}

MelNormalization ParseNormalization(const std::string& name) {
  if (name == "whisper") return MelNormalization::kWhisper;
  if (name == "fixed_floor") return MelNormalization::kFixedFloor;
  return MelNormalization::kNone;
}

std::string NormalizationName(MelNormalization n) {
  switch (n) {
    case MelNormalization::kWhisper: return "whisper";
    case MelNormalization::kFixedFloor: return "fixed_floor";
    case MelNormalization::kNone: return "none";
  }
  return "none";
}

void Validate(const LogMelOptions& o) {
  Check(o.sample_rate >= kMinSampleRate && o.sample_rate <= kMaxSampleRate,
        "log-mel: sample_rate ", o.sample_rate, " Hz is unsupported");
  Check(o.n_fft >= 16 && o.n_fft % 2 == 0 && o.n_fft <= 16384,
        "log-mel: n_fft must be even and in [16, 16384], got ", o.n_fft);
  Check(o.hop_length >= 1 && o.hop_length <= o.n_fft, "log-mel: hop_length must be in [1, n_fft]");
  Check(o.n_mels >= 1 && o.n_mels <= 512, "log-mel: n_mels must be in [1, 512]");
  Check(o.f_min >= 0 && o.f_max > o.f_min && o.f_max <= o.sample_rate / 2.0,
        "log-mel: need 0 <= f_min < f_max <= sample_rate / 2");
}

}  // namespace

void LogMelOptions::Load(config::Node node) {
  node.Read("sample_rate", sample_rate, config::InRange(kMinSampleRate, kMaxSampleRate));
  node.Read("n_fft", n_fft, config::InRange(16, 16384));
  node.Read("hop_length", hop_length, config::InRange(1, 16384));
  node.Read("n_mels", n_mels, config::OneOf<int>({80, 128}));
  node.Read("f_min", f_min, config::InRange(0.0, 192000.0));
  node.Read("f_max", f_max, config::InRange(1.0, 192000.0));
  std::string norm = NormalizationName(normalization);
  node.Read("normalization", norm,
            config::OneOf<std::string>({"whisper", "fixed_floor", "none"}));
  normalization = ParseNormalization(norm);
  node.Read("floor_log10", floor_log10, config::InRange(-20.0, 10.0));
  try {
    Validate(*this);
  } catch (const Error& e) {
    node.Fail("n_fft", Str("is inconsistent: ", e.what()));
  }
}

torch::Tensor MelFilterBank(const LogMelOptions& o) {
  Validate(o);
  const int bins = o.n_fft / 2 + 1;
  const double mel_min = HzToMel(o.f_min), mel_max = HzToMel(o.f_max);
  std::vector<double> filter_hz(o.n_mels + 2);
  for (int i = 0; i < o.n_mels + 2; ++i)
    filter_hz[i] = MelToHz(mel_min + (mel_max - mel_min) * i / (o.n_mels + 1));
  auto bank = torch::zeros({bins, o.n_mels}, torch::kDouble);
  auto acc = bank.accessor<double, 2>();
  const double nyquist = o.sample_rate / 2;  // integer division, as transformers does
  for (int k = 0; k < bins; ++k) {
    const double f = nyquist * k / (bins - 1);
    for (int m = 0; m < o.n_mels; ++m) {
      const double down = (f - filter_hz[m]) / (filter_hz[m + 1] - filter_hz[m]);
      const double up = (filter_hz[m + 2] - f) / (filter_hz[m + 2] - filter_hz[m + 1]);
      const double area = 2.0 / (filter_hz[m + 2] - filter_hz[m]);
      acc[k][m] = std::max(0.0, std::min(down, up)) * area;
    }
  }
  return bank.to(torch::kFloat);
}

struct LogMel::Plan {
  kiss_fftr_cfg fft = nullptr;
  std::vector<float> window;
  // Sparse filters: filter m covers bins [first[m], first[m] + weights[m].size()).
  std::vector<int> first;
  std::vector<std::vector<float>> weights;
  ~Plan() {
    if (fft) kiss_fftr_free(fft);
  }
};

LogMel::LogMel(const LogMelOptions& options) : options_(options), plan_(std::make_unique<Plan>()) {
  Validate(options_);
  const int n = options_.n_fft;
  plan_->fft = kiss_fftr_alloc(n, 0, nullptr, nullptr);
  Check(plan_->fft != nullptr, "log-mel: KissFFT cannot plan a real FFT of size ", n);
  plan_->window.resize(n);
  for (int i = 0; i < n; ++i)  // periodic Hann, as torch.hann_window and np.hanning(n + 1)[:-1]
    plan_->window[i] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * M_PI * i / n));
  const torch::Tensor bank = MelFilterBank(options_);
  auto acc = bank.accessor<float, 2>();
  const int bins = n / 2 + 1;
  for (int m = 0; m < options_.n_mels; ++m) {
    int lo = 0, hi = bins - 1;
    while (lo < bins && acc[lo][m] == 0.0f) ++lo;
    while (hi >= lo && acc[hi][m] == 0.0f) --hi;
    plan_->first.push_back(lo);
    std::vector<float> w;
    for (int k = lo; k <= hi; ++k) w.push_back(acc[k][m]);
    plan_->weights.push_back(std::move(w));
  }
}

LogMel::~LogMel() = default;
LogMel::LogMel(LogMel&&) noexcept = default;
LogMel& LogMel::operator=(LogMel&&) noexcept = default;

namespace {

// kiss_fftr computes in its config's scratch buffer (tmpbuf), so one config must not serve two
// threads at once: each thread plans its own, once per FFT size.
kiss_fftr_cfg ThreadFft(int n) {
  struct Plans {
    std::map<int, kiss_fftr_cfg> by_size;
    ~Plans() {
      for (auto& [size, cfg] : by_size) kiss_fftr_free(cfg);
    }
  };
  thread_local Plans plans;
  kiss_fftr_cfg& cfg = plans.by_size[n];
  if (cfg == nullptr) cfg = kiss_fftr_alloc(n, 0, nullptr, nullptr);
  Check(cfg != nullptr, "log-mel: KissFFT cannot plan a real FFT of size ", n);
  return cfg;
}

}  // namespace

void LogMel::RawFrames(const float* padded, int64_t frames, float* out) const {
  const int n = options_.n_fft, bins = n / 2 + 1, hop = options_.hop_length;
  const int n_mels = options_.n_mels;
  std::vector<float> buffer(n);
  std::vector<kiss_fft_cpx> spectrum(bins);
  std::vector<float> power(bins);
  const float* window = plan_->window.data();
  const kiss_fftr_cfg fft = ThreadFft(n);
  for (int64_t t = 0; t < frames; ++t) {
    const float* frame = padded + t * hop;
    for (int i = 0; i < n; ++i) buffer[i] = frame[i] * window[i];
    kiss_fftr(fft, buffer.data(), spectrum.data());
    for (int k = 0; k < bins; ++k) power[k] = spectrum[k].r * spectrum[k].r + spectrum[k].i * spectrum[k].i;
    float* row = out + t * n_mels;
    for (int m = 0; m < n_mels; ++m) {
      const auto& w = plan_->weights[m];
      const float* p = power.data() + plan_->first[m];
      float sum = 0;  // <= ~40 non-negative terms: float accumulation loses < 1e-6 relative
      for (size_t j = 0; j < w.size(); ++j) sum += w[j] * p[j];
      row[m] = std::max(sum, static_cast<float>(kMelFloor));
    }
  }
  // One vectorised log10 over the whole block (LibTorch's SIMD kernel) instead of a scalar call
  // per value: the scalar log10 was a third of the front-end's time.
  torch::Tensor block = torch::from_blob(out, {frames * n_mels}, torch::kFloat);
  torch::log10_(block);
}

void LogMel::Normalize(float* values, int64_t frames) const {
  const int64_t count = frames * options_.n_mels;
  if (options_.normalization == MelNormalization::kNone || count == 0) return;
  float floor = static_cast<float>(options_.floor_log10);
  if (options_.normalization == MelNormalization::kWhisper) {
    float max_value = values[0];
    for (int64_t i = 1; i < count; ++i) max_value = std::max(max_value, values[i]);
    floor = max_value - 8.0f;
  }
  for (int64_t i = 0; i < count; ++i) values[i] = (std::max(values[i], floor) + 4.0f) / 4.0f;
}

torch::Tensor LogMel::Compute(const std::vector<float>& samples) const {
  return Compute(samples.data(), samples.size());
}

torch::Tensor LogMel::Compute(const float* samples, size_t count) const {
  const int64_t n = static_cast<int64_t>(count);
  const int half = options_.n_fft / 2;
  Check(n >= options_.MinSamples(), "log-mel: ", n, " samples is too short; at least ",
        options_.MinSamples(), " (", 1000.0 * options_.MinSamples() / options_.sample_rate,
        " ms) are needed");
  CheckFinite(samples, count, "log-mel input");
  std::vector<float> padded(n + 2 * half);
  for (int i = 0; i < half; ++i) padded[i] = samples[half - i];  // reflect, edge not repeated
  std::copy(samples, samples + n, padded.begin() + half);
  for (int i = 0; i < half; ++i) padded[half + n + i] = samples[n - 2 - i];
  const int64_t frames = NumFrames(n);
  torch::Tensor out = torch::empty({frames, options_.n_mels}, torch::kFloat);
  RawFrames(padded.data(), frames, out.data_ptr<float>());
  Normalize(out.data_ptr<float>(), frames);
  return out;
}

std::vector<torch::Tensor> LogMel::ComputeBatch(const std::vector<std::vector<float>>& signals) const {
  std::vector<torch::Tensor> out(signals.size());
  std::vector<std::string> errors(signals.size());
  at::parallel_for(0, static_cast<int64_t>(signals.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        out[i] = Compute(signals[i]);
      } catch (const Error& e) {
        errors[i] = e.what();
      }
    }
  });
  for (size_t i = 0; i < errors.size(); ++i)
    Check(errors[i].empty(), "signal ", i, " of the batch: ", errors[i]);
  return out;
}

torch::Tensor ComputeLogMelWithTorch(const std::vector<float>& samples, const LogMelOptions& o) {
  Validate(o);
  Check(static_cast<int64_t>(samples.size()) >= o.MinSamples(), "log-mel: too few samples");
  torch::NoGradGuard no_grad;
  auto x = torch::from_blob(const_cast<float*>(samples.data()), {static_cast<int64_t>(samples.size())},
                            torch::kFloat);
  auto window = torch::hann_window(o.n_fft, torch::kFloat);
  auto spectrum = torch::stft(x, o.n_fft, o.hop_length, o.n_fft, window, /*center=*/true, "reflect",
                              /*normalized=*/false, /*onesided=*/true, /*return_complex=*/true);
  auto power = spectrum.abs().pow(2).slice(1, 0, spectrum.size(1) - 1);  // [bins, frames]
  auto mel = torch::matmul(MelFilterBank(o).t(), power);                   // [n_mels, frames]
  auto log_mel = torch::clamp_min(mel, kMelFloor).log10().t().contiguous();
  switch (o.normalization) {
    case MelNormalization::kWhisper:
      log_mel = (torch::maximum(log_mel, log_mel.max() - 8.0) + 4.0) / 4.0;
      break;
    case MelNormalization::kFixedFloor:
      log_mel = (torch::clamp_min(log_mel, o.floor_log10) + 4.0) / 4.0;
      break;
    case MelNormalization::kNone:
      break;
  }
  return log_mel;
}

StreamingLogMel::StreamingLogMel(const LogMelOptions& options) : mel_(options) {
  Check(options.normalization != MelNormalization::kWhisper,
        "streaming log-mel needs a per-frame normalisation (fixed_floor or none): 'whisper' "
        "clamps at the maximum of the whole utterance, which a stream does not know yet");
}

void StreamingLogMel::AcceptWaveform(int sample_rate, const float* samples, size_t count) {
  const auto& o = mel_.Options();
  Check(!finished_, "streaming log-mel: audio after InputFinished() (call Reset() first)");
  Check(sample_rate == o.sample_rate, "streaming log-mel: got ", sample_rate, " Hz audio, expected ",
        o.sample_rate, " Hz (resample first)");
  if (count == 0) return;
  CheckFinite(samples, count, Str("streaming log-mel input (after ", samples_accepted_, " samples)"));
  samples_accepted_ += static_cast<int64_t>(count);
  const int half = o.n_fft / 2;
  if (!started_) {
    head_.insert(head_.end(), samples, samples + count);
    if (static_cast<int64_t>(head_.size()) < o.MinSamples()) return;
    padded_.resize(half);
    for (int i = 0; i < half; ++i) padded_[i] = head_[half - i];
    padded_.insert(padded_.end(), head_.begin(), head_.end());
    head_.clear();
    head_.shrink_to_fit();
    started_ = true;
  } else {
    padded_.insert(padded_.end(), samples, samples + count);
  }
  ComputeReady();
}

void StreamingLogMel::InputFinished() {
  if (finished_) return;
  const auto& o = mel_.Options();
  Check(samples_accepted_ >= o.MinSamples(), "streaming log-mel: the stream ended after ",
        samples_accepted_, " samples; at least ", o.MinSamples(), " are needed for one frame");
  const int half = o.n_fft / 2;
  // Reflect the tail: padded index (half + N + i) holds x[N - 2 - i].
  const int64_t n = samples_accepted_;
  for (int i = 0; i < half; ++i) {
    const int64_t source = (n - 2 - i) + half - padded_start_;  // padded index of x[N-2-i]
    padded_.push_back(padded_[source]);
  }
  total_frames_ = mel_.NumFrames(n);
  finished_ = true;
  ComputeReady();
}

void StreamingLogMel::ComputeReady() {
  const auto& o = mel_.Options();
  const int64_t available = padded_start_ + static_cast<int64_t>(padded_.size());
  int64_t last = finished_ ? total_frames_
                           : std::max<int64_t>(0, (available - o.n_fft) / o.hop_length + 1);
  if (finished_) last = std::min(last, (available - o.n_fft) / o.hop_length + 1);
  const int64_t count = last - frames_computed_;
  if (count <= 0) return;
  const size_t old = ready_.size();
  ready_.resize(old + count * o.n_mels);
  mel_.RawFrames(padded_.data() + (frames_computed_ * o.hop_length - padded_start_), count,
                 ready_.data() + old);
  mel_.Normalize(ready_.data() + old, count);
  frames_computed_ = last;
  // Drop samples no future frame reads; batched so that tiny chunks do not make this quadratic.
  const int64_t keep_from = frames_computed_ * o.hop_length;
  if (keep_from - padded_start_ >= 8192) {
    padded_.erase(padded_.begin(), padded_.begin() + (keep_from - padded_start_));
    padded_start_ = keep_from;
  }
}

int64_t StreamingLogMel::NumFramesReady() const {
  return static_cast<int64_t>(ready_.size()) / mel_.Options().n_mels;
}

torch::Tensor StreamingLogMel::PopFrames(int64_t max_frames) {
  const int n_mels = mel_.Options().n_mels;
  int64_t k = NumFramesReady();
  if (max_frames >= 0) k = std::min(k, max_frames);
  torch::Tensor out = torch::empty({k, n_mels}, torch::kFloat);
  std::copy(ready_.begin(), ready_.begin() + k * n_mels, out.data_ptr<float>());
  ready_.erase(ready_.begin(), ready_.begin() + k * n_mels);
  frames_emitted_ += k;
  return out;
}

void StreamingLogMel::Reset() {
  finished_ = false;
  started_ = false;
  samples_accepted_ = 0;
  head_.clear();
  padded_.clear();
  padded_start_ = 0;
  frames_computed_ = 0;
  frames_emitted_ = 0;
  total_frames_ = -1;
  ready_.clear();
}

}  // namespace slm::audio
