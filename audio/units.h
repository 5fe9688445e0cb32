// Discrete speech units: k-means over speech frames (HuBERT/SIMS-style units for the LM to read
// and speak). A UnitTokenizer maps frames [T, D] (log-mel frames at 100 Hz, or a frozen speech
// encoder's hidden states at 50 Hz) to unit ids [T] in [0, K) by nearest centroid (squared
// Euclidean distance); Deduplicate collapses runs into (unit, duration) pairs.
//
// Training (TrainKMeans): k-means++ initialisation (Arthur & Vassilvitskii 2007) on a sample of the
// frames, then mini-batch k-means (Sculley 2010: per-centroid learning rate 1 / count, applied to
// batch means), with centroids that attract nothing for a while re-seeded from the batch. All of it
// runs with LibTorch on the frames' device (CPU or CUDA); the CPU generator seeded by `seed` makes
// runs reproducible.
//
// On disk (a directory): units.safetensors {"centroids": [K, D] float32} and units.json {"k", "dim",
// "feature" ("mel" | "encoder"), "encoder" (directory, for "encoder"), "layer" (hidden-state index,
// for "encoder"), "frame_rate_hz", "inertia", "hash"}; `hash` is the SHA-256 of the centroid bytes,
// the tokenizer's identity: unit files and TTS adapters record it, and Load checks it.
//
// Thread-safety: a UnitTokenizer is immutable after construction; Assign may run concurrently.
#pragma once

#include <torch/torch.h>

#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace slm::audio {

struct KMeansOptions {
  int64_t k = 200;
  int64_t iterations = 300;     // mini-batch steps
  int64_t batch_size = 4096;    // frames per step
  int64_t init_sample = 20000;  // frames k-means++ chooses from (all when fewer)
  int64_t reassign_after = 20;  // re-seed a centroid that attracted nothing for this many steps
  uint64_t seed = 0;
  // slm::Error naming the option for k < 1, non-positive sizes.
  void Validate() const;
};

struct KMeansResult {
  torch::Tensor centroids;  // [K, D] float32
  double inertia = 0;       // mean squared distance of the frames to their centroid
  int64_t reassigned = 0;   // centroids re-seeded during training
};

// k-means++ seeding: `k` rows of `frames` [N, D] (N >= k), the first uniformly, each next one with
// probability proportional to its squared distance to the nearest chosen row.
torch::Tensor KMeansPlusPlus(const torch::Tensor& frames, int64_t k, torch::Generator& generator);
// Nearest centroid per frame: frames [N, D], centroids [K, D] -> [N] int64.
torch::Tensor NearestCentroid(const torch::Tensor& frames, const torch::Tensor& centroids);
// Mean over frames of the squared distance to the nearest centroid.
double Inertia(const torch::Tensor& frames, const torch::Tensor& centroids);
// k-means++ then mini-batch k-means over frames [N, D] float (N >= k). slm::Error for bad shapes,
// N < k, non-finite frames.
KMeansResult TrainKMeans(const torch::Tensor& frames, const KMeansOptions& options);

struct UnitRun {
  int64_t unit = 0;
  int64_t frames = 0;  // duration in frames (>= 1)
};
// Collapses repeated units: [3, 3, 7, 3] -> {(3, 2), (7, 1), (3, 1)}.
std::vector<UnitRun> Deduplicate(const std::vector<int64_t>& units);

struct UnitTokenizerInfo {
  std::string feature = "mel";  // mel | encoder
  std::string encoder;          // encoder directory (feature "encoder")
  int64_t layer = -1;           // encoder hidden-state index (0 = embeddings, -1 = last layer)
  double frame_rate_hz = 100;
  double inertia = 0;
};

class UnitTokenizer {
 public:
  UnitTokenizer(torch::Tensor centroids, UnitTokenizerInfo info);
  // Reads and checks a directory (see the header comment): slm::Error naming the file for a missing
  // file or key, centroids whose shape disagrees with units.json, or a hash that does not match.
  static UnitTokenizer Load(const std::string& dir);
  // Writes units.safetensors and units.json (each atomically).
  void Save(const std::string& dir) const;

  int64_t K() const { return centroids_.size(0); }
  int64_t Dim() const { return centroids_.size(1); }
  const UnitTokenizerInfo& Info() const { return info_; }
  const std::string& Hash() const { return hash_; }
  const torch::Tensor& Centroids() const { return centroids_; }
  // frames [T, Dim()] -> unit ids. slm::Error for a wrong feature dimension.
  std::vector<int64_t> Assign(const torch::Tensor& frames) const;

 private:
  torch::Tensor centroids_;
  UnitTokenizerInfo info_;
  std::string hash_;
};

// The frames a tokenizer reads, from 16 kHz mono samples: "mel" = 80-bin fixed-floor log-mel
// (LogMelOptions defaults otherwise, 100 frames/s); "encoder" = hidden state `layer` of the frozen
// Whisper-style encoder in `encoder` (its own log-mel options, 50 frames/s). Loads the encoder once.
// Thread-safety: Frames may run concurrently (frozen modules, immutable LogMel).
class UnitFeatureExtractor {
 public:
  explicit UnitFeatureExtractor(const UnitTokenizerInfo& info);
  torch::Tensor Frames(const std::vector<float>& samples) const;  // [T, D] float32 (CPU)
  double FrameRateHz() const { return frame_rate_hz_; }

 private:
  UnitTokenizerInfo info_;
  std::unique_ptr<LogMel> mel_;
  mutable WhisperEncoder encoder_{nullptr};  // frozen; forward() does not change it
  double frame_rate_hz_ = 100;
};

}  // namespace slm::audio
