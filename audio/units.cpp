#include "audio/units.h"

#include <algorithm>
#include <filesystem>

#include "core/checksum.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"

namespace slm::audio {
namespace {

namespace stdfs = std::filesystem;

// Squared distances [N, K] via |x|^2 - 2 x.c + |c|^2 (one matmul), clamped at 0 against rounding.
torch::Tensor SquaredDistances(const torch::Tensor& x, const torch::Tensor& c) {
  return (x.pow(2).sum(1, true) - 2 * x.matmul(c.t()) + c.pow(2).sum(1).unsqueeze(0)).clamp_min(0);
}

void CheckFrames(const torch::Tensor& frames, const std::string& what) {
  Check(frames.defined() && frames.dim() == 2 && frames.size(0) > 0 && frames.size(1) > 0, what,
        ": frames must be [N, D] with N, D > 0, got ", frames.defined() ? frames.sizes() : c10::IntArrayRef{});
  Check(frames.is_floating_point(), what, ": frames must be floating point");
}

std::string CentroidHash(const torch::Tensor& centroids) {
  const torch::Tensor c = centroids.to(torch::kCPU, torch::kFloat).contiguous();
  return Sha256(std::string(static_cast<const char*>(c.data_ptr()), c.numel() * sizeof(float)));
}

}  // namespace

void KMeansOptions::Validate() const {
  Check(k >= 1, "k-means: k must be >= 1, got ", k);
  Check(iterations >= 0, "k-means: iterations must be >= 0, got ", iterations);
  Check(batch_size >= 1, "k-means: batch_size must be >= 1, got ", batch_size);
  Check(init_sample >= 1, "k-means: init_sample must be >= 1, got ", init_sample);
  Check(reassign_after >= 1, "k-means: reassign_after must be >= 1, got ", reassign_after);
}

torch::Tensor KMeansPlusPlus(const torch::Tensor& frames, int64_t k, torch::Generator& generator) {
  CheckFrames(frames, "k-means++");
  const int64_t n = frames.size(0);
  Check(k >= 1 && k <= n, "k-means++: k = ", k, " needs 1..", n, " frames");
  const torch::Tensor x = frames.to(torch::kFloat);
  std::vector<int64_t> chosen;
  chosen.push_back(torch::randint(n, {1}, generator, torch::kLong).item<int64_t>());
  torch::Tensor nearest = SquaredDistances(x, x[chosen[0]].unsqueeze(0)).squeeze(1);  // [N]
  for (int64_t i = 1; i < k; ++i) {
    const double total = nearest.sum().item<double>();
    int64_t next;
    if (total <= 0) {  // every frame coincides with a chosen one: any other row will do
      next = torch::randint(n, {1}, generator, torch::kLong).item<int64_t>();
    } else {
      next = torch::multinomial(nearest.to(torch::kCPU, torch::kDouble), 1, false, generator).item<int64_t>();
    }
    chosen.push_back(next);
    nearest = torch::minimum(nearest, SquaredDistances(x, x[next].unsqueeze(0)).squeeze(1));
  }
  return x.index_select(0, torch::tensor(chosen, torch::kLong).to(x.device())).clone();
}

torch::Tensor NearestCentroid(const torch::Tensor& frames, const torch::Tensor& centroids) {
  return SquaredDistances(frames.to(centroids.dtype()), centroids).argmin(1);
}

double Inertia(const torch::Tensor& frames, const torch::Tensor& centroids) {
  return std::get<0>(SquaredDistances(frames.to(centroids.dtype()), centroids).min(1)).mean().item<double>();
}

KMeansResult TrainKMeans(const torch::Tensor& frames, const KMeansOptions& options) {
  options.Validate();
  CheckFrames(frames, "k-means");
  const int64_t n = frames.size(0), k = options.k;
  Check(n >= k, "k-means: ", n, " frames cannot make ", k, " clusters");
  Check(torch::isfinite(frames).all().item<bool>(), "k-means: the frames contain NaN or Inf");
  torch::NoGradGuard no_grad;
  torch::Generator generator = at::detail::createCPUGenerator(options.seed);
  const torch::Tensor x = frames.to(torch::kFloat);
  const torch::Device device = x.device();
  auto sample = [&](int64_t count) {
    if (count >= n) return x;
    return x.index_select(0, torch::randperm(n, generator, torch::kLong).narrow(0, 0, count).to(device));
  };
  KMeansResult result;
  torch::Tensor centroids = KMeansPlusPlus(sample(options.init_sample), k, generator);
  torch::Tensor counts = torch::zeros({k}, x.options());
  torch::Tensor idle = torch::zeros({k}, torch::dtype(torch::kLong).device(device));
  for (int64_t step = 0; step < options.iterations; ++step) {
    const torch::Tensor batch = sample(options.batch_size);
    const torch::Tensor assign = NearestCentroid(batch, centroids);
    const torch::Tensor batch_counts = torch::bincount(assign, {}, k).to(x.dtype());
    const torch::Tensor sums = torch::zeros_like(centroids).index_add_(0, assign, batch);
    // Per centroid: c <- c * v / (v + m) + sum / (v + m), v = frames seen so far, m = this batch's.
    const torch::Tensor total = counts + batch_counts;
    const torch::Tensor hit = batch_counts > 0;
    const torch::Tensor updated = (centroids * counts.unsqueeze(1) + sums) / total.clamp_min(1).unsqueeze(1);
    centroids = torch::where(hit.unsqueeze(1), updated, centroids);
    counts = total;
    idle = torch::where(hit, torch::zeros_like(idle), idle + 1);
    const torch::Tensor dead = (idle >= options.reassign_after).nonzero().squeeze(1);
    if (dead.numel() > 0) {
      // Re-seed from the frames the current centroids explain worst.
      const torch::Tensor far = std::get<0>(SquaredDistances(batch, centroids).min(1));
      const int64_t m = std::min<int64_t>(dead.numel(), batch.size(0));
      const torch::Tensor worst = std::get<1>(far.topk(m));
      centroids.index_copy_(0, dead.narrow(0, 0, m), batch.index_select(0, worst));
      counts.index_fill_(0, dead.narrow(0, 0, m), 0);
      idle.index_fill_(0, dead.narrow(0, 0, m), 0);
      result.reassigned += m;
    }
  }
  result.centroids = centroids.contiguous();
  result.inertia = Inertia(x, result.centroids);
  return result;
}

std::vector<UnitRun> Deduplicate(const std::vector<int64_t>& units) {
  std::vector<UnitRun> runs;
  for (int64_t u : units) {
    if (!runs.empty() && runs.back().unit == u) ++runs.back().frames;
    else runs.push_back({u, 1});
  }
  return runs;
}

UnitTokenizer::UnitTokenizer(torch::Tensor centroids, UnitTokenizerInfo info)
    : centroids_(centroids.to(torch::kCPU, torch::kFloat).contiguous()), info_(std::move(info)) {
  Check(centroids_.dim() == 2 && centroids_.size(0) >= 1 && centroids_.size(1) >= 1,
        "unit tokenizer: centroids must be [K, D], got ", centroids_.sizes());
  Check(info_.feature == "mel" || info_.feature == "encoder", "unit tokenizer: feature must be mel or encoder, got '",
        info_.feature, "'");
  hash_ = CentroidHash(centroids_);
}

void UnitTokenizer::Save(const std::string& dir) const {
  fs::MakeDirs(dir);
  safetensors::Save(dir + "/units.safetensors", {{"centroids", centroids_}}, {{"format", "pt"}});
  const nlohmann::json j = {{"k", K()},
                            {"dim", Dim()},
                            {"feature", info_.feature},
                            {"encoder", info_.encoder},
                            {"layer", info_.layer},
                            {"frame_rate_hz", info_.frame_rate_hz},
                            {"inertia", info_.inertia},
                            {"hash", hash_}};
  fs::AtomicWriteString(dir + "/units.json", j.dump(2) + "\n");
}

UnitTokenizer UnitTokenizer::Load(const std::string& dir) {
  const std::string json_path = dir + "/units.json", weights = dir + "/units.safetensors";
  Check(stdfs::is_regular_file(json_path), "unit tokenizer '", dir, "': no units.json");
  Check(stdfs::is_regular_file(weights), "unit tokenizer '", dir, "': no units.safetensors");
  const nlohmann::json j = fs::ReadJson(json_path);
  UnitTokenizerInfo info;
  int64_t k = 0, dim = 0;
  std::string hash;
  try {
    k = j.at("k").get<int64_t>();
    dim = j.at("dim").get<int64_t>();
    info.feature = j.at("feature").get<std::string>();
    info.encoder = j.value("encoder", std::string());
    info.layer = j.value("layer", int64_t{-1});
    info.frame_rate_hz = j.at("frame_rate_hz").get<double>();
    info.inertia = j.value("inertia", 0.0);
    hash = j.at("hash").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(Str(json_path, ": ", e.what()));
  }
  safetensors::Reader reader(weights);
  Check(reader.Has("centroids"), weights, ": no tensor 'centroids'");
  const torch::Tensor centroids = reader.Get("centroids");
  Check(centroids.dim() == 2 && centroids.size(0) == k && centroids.size(1) == dim, weights, ": centroids are ",
        centroids.sizes(), " but units.json says k ", k, ", dim ", dim);
  UnitTokenizer tokenizer(centroids, info);
  Check(tokenizer.Hash() == hash, weights, ": centroid hash ", tokenizer.Hash().substr(0, 12),
        " does not match units.json's ", hash.substr(0, 12), " (files from different tokenizers?)");
  return tokenizer;
}

std::vector<int64_t> UnitTokenizer::Assign(const torch::Tensor& frames) const {
  CheckFrames(frames, "unit tokenizer");
  Check(frames.size(1) == Dim(), "unit tokenizer: frames have ", frames.size(1), " features, the tokenizer ", Dim(),
        " (", info_.feature, ")");
  const torch::Tensor ids = NearestCentroid(frames.to(torch::kCPU, torch::kFloat), centroids_).contiguous();
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

UnitFeatureExtractor::UnitFeatureExtractor(const UnitTokenizerInfo& info) : info_(info) {
  if (info_.feature == "mel") {
    LogMelOptions options;
    options.normalization = MelNormalization::kFixedFloor;
    mel_ = std::make_unique<LogMel>(options);
    frame_rate_hz_ = double(options.sample_rate) / options.hop_length;
    return;
  }
  Check(info_.feature == "encoder", "unit features: feature must be mel or encoder, got '", info_.feature, "'");
  Check(!info_.encoder.empty(), "unit features: feature 'encoder' needs an encoder directory");
  encoder_ = LoadWhisperEncoder(info_.encoder);
  encoder_->Freeze();
  const int64_t layers = encoder_->Config().encoder_layers;
  Check(info_.layer >= -1 && info_.layer <= layers, "unit features: layer ", info_.layer, " is outside -1..", layers,
        " (hidden states of ", info_.encoder, ")");
  const LogMelOptions options = LoadEncoderFeatureOptions(info_.encoder);
  mel_ = std::make_unique<LogMel>(options);
  frame_rate_hz_ = double(options.sample_rate) / options.hop_length / 2;  // conv2 has stride 2
}

torch::Tensor UnitFeatureExtractor::Frames(const std::vector<float>& samples) const {
  std::vector<float> padded = samples;
  const size_t min_samples = static_cast<size_t>(mel_->Options().MinSamples());
  if (padded.size() < min_samples) padded.resize(min_samples, 0.f);
  const torch::Tensor mel = mel_->Compute(padded);
  if (encoder_.is_empty()) return mel;
  torch::NoGradGuard no_grad;
  WhisperEncoderInput input;
  input.features = mel.unsqueeze(0);
  input.output_hidden_states = true;
  const WhisperEncoderOutput out = encoder_->forward(input);
  const torch::Tensor state = info_.layer < 0 ? out.last_hidden_state : out.hidden_states.at(info_.layer);
  return state.squeeze(0).to(torch::kCPU, torch::kFloat).contiguous();
}

}  // namespace slm::audio
