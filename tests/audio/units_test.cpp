// Speech-unit k-means (audio/units.h) on synthetic clusters whose answer is known.
#include "audio/units.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <set>

#include "tests/test_util.h"

namespace slm::audio {
namespace {

// `per` points around each of `centers` rows (std `spread`), in cluster order; labels out.
torch::Tensor Blobs(const torch::Tensor& centers, int64_t per, double spread, std::vector<int64_t>* labels) {
  torch::manual_seed(1);
  std::vector<torch::Tensor> parts;
  for (int64_t c = 0; c < centers.size(0); ++c) {
    parts.push_back(centers[c].unsqueeze(0) + spread * torch::randn({per, centers.size(1)}));
    labels->insert(labels->end(), per, c);
  }
  return torch::cat(parts);
}

TEST(KMeans, RecoversSeparatedClustersExactly) {
  torch::manual_seed(0);
  const torch::Tensor centers = 10 * torch::randn({6, 8});
  std::vector<int64_t> labels;
  const torch::Tensor frames = Blobs(centers, 300, 0.3, &labels);
  KMeansOptions options;
  options.k = 6;
  options.iterations = 100;
  options.batch_size = 256;
  options.seed = 3;
  const KMeansResult result = TrainKMeans(frames, options);
  ASSERT_EQ(result.centroids.sizes(), (std::vector<int64_t>{6, 8}));
  // Every true cluster maps to one unit, and different clusters to different units.
  const torch::Tensor assign = NearestCentroid(frames, result.centroids);
  std::set<int64_t> used;
  for (int64_t c = 0; c < 6; ++c) {
    const torch::Tensor mine = assign.narrow(0, c * 300, 300);
    const int64_t unit = mine[0].item<int64_t>();
    EXPECT_TRUE((mine == unit).all().item<bool>()) << "cluster " << c;
    used.insert(unit);
    // Its centroid is the cluster's mean, up to sampling noise.
    EXPECT_LT((result.centroids[unit] - centers[c]).abs().max().item<double>(), 0.15) << "cluster " << c;
  }
  EXPECT_EQ(used.size(), 6u);
  EXPECT_NEAR(result.inertia, 8 * 0.3 * 0.3, 0.1);  // D x variance per point
}

TEST(KMeans, PlusPlusSeedingBeatsUniformSeedingAndIsReproducible) {
  torch::manual_seed(0);
  const torch::Tensor centers = 10 * torch::randn({20, 4});
  std::vector<int64_t> labels;
  const torch::Tensor frames = Blobs(centers, 50, 0.2, &labels);
  double plus = 0, uniform = 0;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    torch::Generator g = at::detail::createCPUGenerator(seed);
    plus += Inertia(frames, KMeansPlusPlus(frames, 20, g));
    uniform += Inertia(frames, frames.index_select(0, torch::randperm(frames.size(0), g).narrow(0, 0, 20)));
  }
  EXPECT_LT(plus, 0.5 * uniform);
  KMeansOptions options;
  options.k = 20;
  options.iterations = 20;
  options.batch_size = 128;
  options.seed = 9;
  EXPECT_TRUE(torch::equal(TrainKMeans(frames, options).centroids, TrainKMeans(frames, options).centroids));
}

TEST(KMeans, ReseedsCentroidsThatAttractNothing) {
  // 2 real clusters and k = 4: without re-seeding two centroids could stay empty forever.
  const torch::Tensor centers = torch::tensor({{0.0, 0.0}, {100.0, 100.0}});
  std::vector<int64_t> labels;
  const torch::Tensor frames = Blobs(centers, 400, 1.0, &labels);
  KMeansOptions options;
  options.k = 4;
  options.iterations = 200;
  options.batch_size = 64;
  options.reassign_after = 5;
  const KMeansResult result = TrainKMeans(frames, options);
  const torch::Tensor counts = torch::bincount(NearestCentroid(frames, result.centroids), {}, 4);
  EXPECT_TRUE((counts > 0).all().item<bool>()) << counts;
}

TEST(KMeans, RejectsBadInput) {
  KMeansOptions options;
  options.k = 5;
  EXPECT_SLM_ERROR(TrainKMeans(torch::randn({3, 2}), options), "3 frames cannot make 5 clusters");
  EXPECT_SLM_ERROR(TrainKMeans(torch::randn({10}), options), "frames must be [N, D]");
  torch::Tensor bad = torch::randn({10, 2});
  bad[4][1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_SLM_ERROR(TrainKMeans(bad, options), "NaN or Inf");
  options.k = 0;
  EXPECT_SLM_ERROR(TrainKMeans(torch::randn({10, 2}), options), "k must be >= 1");
}

TEST(Units, DeduplicateCollapsesRuns) {
  const std::vector<UnitRun> runs = Deduplicate({3, 3, 7, 3, 3, 3});
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].unit, 3);
  EXPECT_EQ(runs[0].frames, 2);
  EXPECT_EQ(runs[1].unit, 7);
  EXPECT_EQ(runs[1].frames, 1);
  EXPECT_EQ(runs[2].frames, 3);
  EXPECT_TRUE(Deduplicate({}).empty());
}

TEST(Units, TokenizerRoundTripsAndDetectsForeignOrTamperedFiles) {
  testing::TempDir dir;
  UnitTokenizerInfo info;
  info.feature = "mel";
  info.frame_rate_hz = 100;
  const UnitTokenizer tokenizer(torch::tensor({{0.f, 0.f}, {1.f, 1.f}, {5.f, 5.f}}), info);
  tokenizer.Save(dir.path());
  const UnitTokenizer loaded = UnitTokenizer::Load(dir.path());
  EXPECT_EQ(loaded.K(), 3);
  EXPECT_EQ(loaded.Hash(), tokenizer.Hash());
  EXPECT_EQ(loaded.Assign(torch::tensor({{0.9f, 1.2f}, {4.f, 6.f}, {-1.f, 0.f}})), (std::vector<int64_t>{1, 2, 0}));
  EXPECT_SLM_ERROR(loaded.Assign(torch::zeros({2, 3})), "frames have 3 features, the tokenizer 2");
  // Centroids from another tokenizer under this units.json: the hash says so.
  UnitTokenizer(torch::tensor({{0.f, 0.f}, {2.f, 2.f}, {5.f, 5.f}}), info).Save(dir.File("other"));
  std::filesystem::copy_file(dir.File("other/units.safetensors"), dir.File("units.safetensors"),
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_SLM_ERROR(UnitTokenizer::Load(dir.path()), "does not match units.json");
  EXPECT_SLM_ERROR(UnitTokenizer::Load(dir.File("missing")), "no units.json");
}

}  // namespace
}  // namespace slm::audio
