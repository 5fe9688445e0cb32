// Log-mel features compatible with Whisper's front-end (and Hugging Face's WhisperFeatureExtractor):
//   16 kHz mono float32 -> frames of n_fft=400 samples every hop=160 samples (10 ms), periodic Hann
//   window, centred frames (the signal is reflect-padded by n_fft/2 on both sides), |rfft|^2,
//   Slaney-scale mel filters with Slaney area normalisation (0..8000 Hz, 80 or 128 bins),
//   log10(max(mel, 1e-10)); the last centred frame is dropped, so N samples give N / hop frames.
// Normalisation, then:
//   kWhisper    : clamp at (utterance max - 8), then (x + 4) / 4. Needs the whole utterance
//                 (the maximum), so it is offline only. This is what Whisper checkpoints expect.
//   kFixedFloor : clamp at `floor_log10`, then (x + 4) / 4. Per frame, so streaming output equals
//                 offline output exactly; the project's own encoders are trained with it.
//   kNone       : raw log10 mel.
// Output: torch::Tensor [frames, n_mels] float32 on CPU (time-major; Whisper's HF layout is the
// transpose [n_mels, frames]).
//
// FFTs run through KissFFT (kiss_fftr); the mel projection is a sparse dot product per filter.
// A LogMel object is immutable after construction, so Compute/ComputeBatch may run concurrently
// from several threads on one object. StreamingLogMel is one stream's state: not thread-safe.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace slm::audio {

enum class MelNormalization { kWhisper, kFixedFloor, kNone };

struct LogMelOptions {
  int sample_rate = 16000;
  int n_fft = 400;
  int hop_length = 160;
  int n_mels = 80;
  double f_min = 0.0;
  double f_max = 8000.0;
  MelNormalization normalization = MelNormalization::kWhisper;
  double floor_log10 = -8.0;  // kFixedFloor only
  // Keys: sample_rate, n_fft, hop_length, n_mels (80|128), f_min, f_max,
  // normalization (whisper|fixed_floor|none), floor_log10.
  void Load(config::Node node);
  // Samples the first frame needs before anything can be emitted (reflect padding): n_fft/2 + 1.
  int MinSamples() const { return n_fft / 2 + 1; }
};

// Slaney mel filter bank as in librosa / transformers' mel_filter_bank(norm="slaney",
// mel_scale="slaney"): float32 [n_fft/2 + 1, n_mels], computed in double precision.
torch::Tensor MelFilterBank(const LogMelOptions& options);

class LogMel {
 public:
  explicit LogMel(const LogMelOptions& options = {});
  ~LogMel();
  LogMel(LogMel&&) noexcept;
  LogMel& operator=(LogMel&&) noexcept;

  const LogMelOptions& Options() const { return options_; }
  // Frames produced for `num_samples` samples: num_samples / hop_length.
  int64_t NumFrames(int64_t num_samples) const { return num_samples / options_.hop_length; }

  // Whole signal at options.sample_rate -> [frames, n_mels]. slm::Error for fewer than
  // MinSamples() samples or non-finite samples.
  torch::Tensor Compute(const std::vector<float>& samples) const;
  torch::Tensor Compute(const float* samples, size_t count) const;
  // Several signals, spread over LibTorch's intra-op threads; result i belongs to signal i.
  std::vector<torch::Tensor> ComputeBatch(const std::vector<std::vector<float>>& signals) const;

  // Building blocks shared with StreamingLogMel (so the two paths are identical by construction):
  // log10 mel of `frames` consecutive frames of an already reflect-padded signal, where frame t
  // starts at padded[t * hop]; writes frames * n_mels floats to `out`.
  void RawFrames(const float* padded, int64_t frames, float* out) const;
  // Applies the normalisation in place to [frames, n_mels] raw log-mel values.
  void Normalize(float* values, int64_t frames) const;

 private:
  struct Plan;
  LogMelOptions options_;
  std::unique_ptr<Plan> plan_;
};

// The same features through LibTorch (torch::stft + dense mel matmul), as transformers computes
// them: the independent reference in tests and the baseline of `slm bench mel`.
torch::Tensor ComputeLogMelWithTorch(const std::vector<float>& samples, const LogMelOptions& options);

// Streaming log-mel: accepts audio in chunks of any size and emits frames as soon as their samples
// have arrived (frame t needs samples up to t*hop + n_fft/2); the frames at the very end, which
// need the reflected tail, are emitted after InputFinished(). The concatenated frames equal
// LogMel::Compute on the concatenated samples bit for bit. Requires a per-frame normalisation
// (kFixedFloor or kNone): kWhisper is rejected because it depends on the utterance maximum.
// Memory is bounded: samples no longer needed by a future frame are dropped.
class StreamingLogMel {
 public:
  explicit StreamingLogMel(const LogMelOptions& options);
  // sample_rate must equal options.sample_rate (resample upstream with audio::StreamResampler).
  void AcceptWaveform(int sample_rate, const float* samples, size_t count);
  void AcceptWaveform(int sample_rate, const std::vector<float>& samples) {
    AcceptWaveform(sample_rate, samples.data(), samples.size());
  }
  // No more audio: makes the final frames ready. slm::Error if fewer than MinSamples() arrived.
  void InputFinished();
  bool IsFinished() const { return finished_; }
  // Frames computed and not yet taken.
  int64_t NumFramesReady() const;
  // Takes up to max_frames (all when < 0) ready frames: [k, n_mels] float32.
  torch::Tensor PopFrames(int64_t max_frames = -1);
  int64_t FramesEmitted() const { return frames_emitted_; }
  int64_t SamplesAccepted() const { return samples_accepted_; }
  void Reset();

 private:
  void ComputeReady();
  LogMel mel_;
  bool finished_ = false;
  bool started_ = false;        // start reflection built (MinSamples() arrived)
  int64_t samples_accepted_ = 0;
  std::vector<float> head_;     // samples held until the start reflection can be built
  std::vector<float> padded_;   // reflect-padded signal, starting at padded index padded_start_
  int64_t padded_start_ = 0;
  int64_t frames_computed_ = 0;
  int64_t frames_emitted_ = 0;
  int64_t total_frames_ = -1;   // known after InputFinished
  std::vector<float> ready_;    // computed frames not yet popped, row-major [k, n_mels]
};

}  // namespace slm::audio
