#include "datagen/shapes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <opencv2/imgcodecs.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "tests/test_util.h"

namespace slm::datagen {
namespace {

namespace stdfs = std::filesystem;

using slm::testing::TempDir;

using slm::testing::ErrorOf;

bool SameScene(const ShapeScene& a, const ShapeScene& b) {
  for (int i = 0; i < 2; ++i) {
    const PlacedShape& x = a.shapes[i];
    const PlacedShape& y = b.shapes[i];
    if (x.shape != y.shape || x.color != y.color || x.rgb != y.rgb || x.center != y.center ||
        x.radius != y.radius || x.rotation_deg != y.rotation_deg)
      return false;
  }
  return a.relation == b.relation && a.background == b.background &&
         a.background_from == b.background_from && a.background_to == b.background_to &&
         a.gradient_angle_deg == b.gradient_angle_deg && a.noise_sigma == b.noise_sigma &&
         a.noise_seed == b.noise_seed;
}

PlacedShape Make(Shape shape, Color color, float x, float y) {
  PlacedShape placed;
  placed.shape = shape;
  placed.color = color;
  placed.rgb = NominalRgb(color);
  placed.center = {x, y};
  placed.radius = 8;
  return placed;
}

// Centroid of the pixels (BGR image) within `tolerance` of `rgb`; count = how many.
cv::Point2d ColorCentroid(const cv::Mat& bgr, const cv::Vec3b& rgb, double tolerance, int* count) {
  double sx = 0, sy = 0;
  *count = 0;
  for (int y = 0; y < bgr.rows; ++y)
    for (int x = 0; x < bgr.cols; ++x) {
      const cv::Vec3b p = bgr.at<cv::Vec3b>(y, x);
      const double d = std::sqrt(std::pow(p[2] - rgb[0], 2) + std::pow(p[1] - rgb[1], 2) +
                                 std::pow(p[0] - rgb[2], 2));
      if (d < tolerance) {
        sx += x;
        sy += y;
        ++*count;
      }
    }
  return *count ? cv::Point2d(sx / *count, sy / *count) : cv::Point2d(-1, -1);
}

TEST(ShapesSceneTest, SamplingIsDeterministicPerSeed) {
  EXPECT_TRUE(SameScene(SampleScene(42, 64), SampleScene(42, 64)));
  EXPECT_FALSE(SameScene(SampleScene(42, 64), SampleScene(43, 64)));
  EXPECT_EQ(SceneSeed(0, 5), SceneSeed(0, 5));
  EXPECT_NE(SceneSeed(0, 1), SceneSeed(1, 0));  // seeds do not just shift the image sequence
}

TEST(ShapesSceneTest, GeometrySatisfiesTheRelationForEverySize) {
  int relations[kRelationCount] = {};
  for (int size : {32, 64, 200, 512}) {
    for (uint64_t seed = 0; seed < 500; ++seed) {
      const ShapeScene scene = SampleScene(SceneSeed(9, seed), size);
      const PlacedShape& a = scene.shapes[0];
      const PlacedShape& b = scene.shapes[1];
      ASSERT_FALSE(a.shape == b.shape && a.color == b.color) << seed;
      for (const PlacedShape& s : scene.shapes) {
        EXPECT_GE(s.radius, 0.09f * size - 1e-3f);
        EXPECT_LE(s.radius, 0.18f * size + 1e-3f);
        EXPECT_GE(s.center.x - s.radius, 0.f);
        EXPECT_GE(s.center.y - s.radius, 0.f);
        EXPECT_LE(s.center.x + s.radius, float(size));
        EXPECT_LE(s.center.y + s.radius, float(size));
      }
      const float gap = a.radius + b.radius + 2.f - 1e-3f;
      const float dx = b.center.x - a.center.x;  // > 0: a is left of b
      const float dy = b.center.y - a.center.y;  // > 0: a is above b
      switch (scene.relation) {
        case Relation::kAbove:
          EXPECT_GE(dy, gap);
          EXPECT_LE(std::abs(dx), 0.5f * dy + 1e-3f);
          break;
        case Relation::kBelow:
          EXPECT_GE(-dy, gap);
          EXPECT_LE(std::abs(dx), -0.5f * dy + 1e-3f);
          break;
        case Relation::kLeftOf:
          EXPECT_GE(dx, gap);
          EXPECT_LE(std::abs(dy), 0.5f * dx + 1e-3f);
          break;
        case Relation::kRightOf:
          EXPECT_GE(-dx, gap);
          EXPECT_LE(std::abs(dy), -0.5f * dx + 1e-3f);
          break;
      }
      ++relations[static_cast<int>(scene.relation)];
    }
  }
  for (int count : relations) EXPECT_GT(count, 350);  // all four relations are drawn
  EXPECT_NE(ErrorOf([] { SampleScene(1, 31); }).find("size 31"), std::string::npos);
}

TEST(ShapesRenderTest, PixelsOfEachShapeSitWhereTheSceneSaysAndTheRelationHolds) {
  int checked = 0;
  for (uint64_t seed = 0; seed < 80; ++seed) {
    const ShapeScene scene = SampleScene(SceneSeed(1, seed), 64);
    const cv::Mat image = RenderScene(scene, 64);
    ASSERT_EQ(image.rows, 64);
    ASSERT_EQ(image.cols, 64);
    ASSERT_EQ(image.type(), CV_8UC3);
    if (scene.shapes[0].color == scene.shapes[1].color) continue;
    cv::Point2d centroid[2];
    for (int i = 0; i < 2; ++i) {
      const PlacedShape& s = scene.shapes[i];
      int count = 0;
      centroid[i] = ColorCentroid(image, s.rgb, 45, &count);
      // At least a third of the circumscribed disc: the thinnest shape (star) covers ~35%.
      EXPECT_GT(count, 0.3 * M_PI * s.radius * s.radius * 0.6) << "seed " << seed;
      EXPECT_NEAR(centroid[i].x, s.center.x, 1.5) << "seed " << seed << " shape " << i;
      EXPECT_NEAR(centroid[i].y, s.center.y, 1.5) << "seed " << seed << " shape " << i;
    }
    const double dx = centroid[1].x - centroid[0].x;
    const double dy = centroid[1].y - centroid[0].y;
    switch (scene.relation) {
      case Relation::kAbove:
        EXPECT_GT(dy, std::abs(dx)) << "seed " << seed;
        break;
      case Relation::kBelow:
        EXPECT_GT(-dy, std::abs(dx)) << "seed " << seed;
        break;
      case Relation::kLeftOf:
        EXPECT_GT(dx, std::abs(dy)) << "seed " << seed;
        break;
      case Relation::kRightOf:
        EXPECT_GT(-dx, std::abs(dy)) << "seed " << seed;
        break;
    }
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

TEST(ShapesRenderTest, RenderingIsDeterministicAndBackgroundsVary) {
  const ShapeScene scene = SampleScene(7, 96);
  const cv::Mat first = RenderScene(scene, 96);
  const cv::Mat second = RenderScene(scene, 96);
  EXPECT_EQ(cv::norm(first, second, cv::NORM_INF), 0.0);

  int styles[3] = {};
  double darkest = 255, lightest = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const ShapeScene s = SampleScene(SceneSeed(2, seed), 64);
    ++styles[static_cast<int>(s.background)];
    const cv::Vec3b& rgb = s.background_from;
    const double level = (rgb[0] + rgb[1] + rgb[2]) / 3.0;
    darkest = std::min(darkest, level);
    lightest = std::max(lightest, level);
  }
  for (int count : styles) EXPECT_GT(count, 40);
  EXPECT_LT(darkest, 60);
  EXPECT_GT(lightest, 190);
}

TEST(ShapesTextTest, CaptionAndQuestionsForAFixedScene) {
  ShapeScene scene;
  scene.shapes = {Make(Shape::kCircle, Color::kRed, 32, 12),
                  Make(Shape::kSquare, Color::kBlue, 32, 50)};
  scene.relation = Relation::kAbove;
  EXPECT_EQ(Caption(scene), "a red circle above a blue square");
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"how many shapes are there", "two"},
      {"what color is the circle", "red"},
      {"what color is the square", "blue"},
      {"what shape is the red one", "circle"},
      {"what shape is the blue one", "square"},
      {"what shape is above the blue square", "circle"},
      {"what shape is below the red circle", "square"},
      {"where is the red circle", "above the blue square"},
      {"where is the blue square", "below the red circle"},
      {"is the red circle above the blue square", "yes"},
      {"is the blue square above the red circle", "no"}};
  EXPECT_EQ(Questions(scene), expected);
}

TEST(ShapesTextTest, AmbiguousQuestionsAreLeftOutAndArticlesFollowTheColour) {
  ShapeScene scene;
  scene.shapes = {Make(Shape::kStar, Color::kOrange, 12, 32),
                  Make(Shape::kStar, Color::kWhite, 50, 32)};
  scene.relation = Relation::kLeftOf;
  EXPECT_EQ(Caption(scene), "an orange star left of a white star");
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"how many shapes are there", "two"},
      {"what shape is the orange one", "star"},
      {"what shape is the white one", "star"},
      {"what shape is left of the white star", "star"},
      {"what shape is right of the orange star", "star"},
      {"where is the orange star", "left of the white star"},
      {"where is the white star", "right of the orange star"},
      {"is the orange star left of the white star", "yes"},
      {"is the white star left of the orange star", "no"}};
  EXPECT_EQ(Questions(scene), expected);

  scene.shapes = {Make(Shape::kDiamond, Color::kGreen, 32, 50),
                  Make(Shape::kCross, Color::kGreen, 32, 12)};
  scene.relation = Relation::kBelow;
  EXPECT_EQ(Caption(scene), "a green diamond below a green cross");
  const auto questions = Questions(scene);
  for (const auto& qa : questions) EXPECT_EQ(qa.first.find(" one"), std::string::npos) << qa.first;
  EXPECT_EQ(questions[1],
            std::make_pair(std::string("what color is the diamond"), std::string("green")));
}

TEST(ShapesTextTest, ValidCountRoundsAndKeepsBothSplitsNonEmpty) {
  EXPECT_EQ(ValidCount(20, 0.1), 2);
  EXPECT_EQ(ValidCount(2000, 0.1), 200);
  EXPECT_EQ(ValidCount(3, 0.01), 1);
  EXPECT_EQ(ValidCount(10, 0.99), 9);
  EXPECT_EQ(ValidCount(10, 0.0), 0);
  EXPECT_EQ(ValidCount(1, 0.5), 0);
}

TEST(ShapesGenerateTest, WritesReadablePngsAndManifests) {
  TempDir temp;
  ShapesOptions options;
  options.out_dir = temp.File("out");
  options.count = 20;
  options.seed = 5;
  options.progress = false;
  const ShapesStats stats = GenerateShapes(options);
  EXPECT_EQ(stats.train_images, 18);
  EXPECT_EQ(stats.valid_images, 2);

  int pngs = 0;
  for (const auto& entry : stdfs::directory_iterator(temp.File("out/img"))) {
    EXPECT_EQ(entry.path().extension(), ".png");
    const cv::Mat image = cv::imread(entry.path().string(), cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(image.empty()) << entry.path();
    EXPECT_EQ(image.rows, 64);
    EXPECT_EQ(image.cols, 64);
    EXPECT_EQ(image.type(), CV_8UC3);
    ++pngs;
  }
  EXPECT_EQ(pngs, 20);

  const manifest::Manifest train = manifest::Read(temp.File("out/caption_train.jsonl"));
  const manifest::Manifest valid = manifest::Read(temp.File("out/caption_valid.jsonl"));
  ASSERT_EQ(train.entries.size(), 18u);
  ASSERT_EQ(valid.entries.size(), 2u);
  const manifest::Entry& first = train.entries[0];
  const ShapeScene scene0 = SampleScene(SceneSeed(5, 0), 64);
  EXPECT_EQ(first.id, "s000001");
  EXPECT_EQ(first.task, "caption");
  EXPECT_EQ(first.image, "img/s000001.png");
  EXPECT_EQ(first.text, Caption(scene0));
  EXPECT_EQ(first.extra["attributes"]["relation"], RelationName(scene0.relation));
  EXPECT_EQ(first.extra["attributes"]["shapes"][1]["color"], ColorName(scene0.shapes[1].color));
  EXPECT_EQ(first.extra["attributes"]["shapes"][0]["shape"], ShapeName(scene0.shapes[0].shape));
  EXPECT_TRUE(stdfs::exists(train.ImagePath(first)));
  EXPECT_EQ(valid.entries[1].id, "s000020");
  // The PNG on disk is the rendered scene, pixel for pixel (PNG is lossless).
  const cv::Mat read_back = cv::imread(train.ImagePath(first), cv::IMREAD_COLOR);
  EXPECT_EQ(cv::norm(read_back, RenderScene(scene0, 64), cv::NORM_INF), 0.0);

  const manifest::Manifest vqa_train = manifest::Read(temp.File("out/vqa_train.jsonl"));
  const manifest::Manifest vqa_valid = manifest::Read(temp.File("out/vqa_valid.jsonl"));
  EXPECT_EQ(static_cast<int64_t>(vqa_train.entries.size()), stats.train_questions);
  EXPECT_EQ(static_cast<int64_t>(vqa_valid.entries.size()), stats.valid_questions);
  const auto questions0 = Questions(scene0);
  EXPECT_EQ(vqa_train.entries[0].id, "s000001-q0");
  EXPECT_EQ(vqa_train.entries[0].task, "vqa");
  EXPECT_EQ(vqa_train.entries[0].image, "img/s000001.png");
  EXPECT_EQ(vqa_train.entries[0].prompt, "how many shapes are there");
  EXPECT_EQ(vqa_train.entries[0].response, "two");
  EXPECT_EQ(vqa_train.entries[questions0.size() - 1].prompt, questions0.back().first);
  EXPECT_EQ(vqa_valid.entries[0].image, "img/s000019.png");

  const nlohmann::json written = nlohmann::json::parse(fs::ReadFile(temp.File("out/stats.json")));
  EXPECT_EQ(written, stats.ToJson());
  EXPECT_EQ(written["images"], 20);
  int64_t shapes = 0;
  for (const auto& [name, count] : written["shapes"].items()) shapes += count.get<int64_t>();
  EXPECT_EQ(shapes, 40);
}

TEST(ShapesGenerateTest, OutputDoesNotDependOnThreads) {
  TempDir temp;
  ShapesOptions options;
  options.count = 12;
  options.seed = 3;
  options.size = 40;
  options.progress = false;
  options.threads = 1;
  options.out_dir = temp.File("one");
  GenerateShapes(options);
  options.threads = 3;
  options.out_dir = temp.File("three");
  GenerateShapes(options);
  for (const char* file : {"caption_train.jsonl", "caption_valid.jsonl", "vqa_train.jsonl",
                           "vqa_valid.jsonl", "stats.json", "img/s000001.png", "img/s000012.png"})
    EXPECT_EQ(fs::ReadFile(temp.File(Str("one/", file))),
              fs::ReadFile(temp.File(Str("three/", file))))
        << file;
}

TEST(ShapesTextTest, CanonicalOrderNamesTheUpperOrLeftShapeFirst) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const ShapeScene scene = SampleScene(SceneSeed(9, static_cast<int64_t>(seed)), 64);
    const ShapeScene canonical = CanonicalOrder(scene);
    ASSERT_TRUE(canonical.relation == Relation::kAbove || canonical.relation == Relation::kLeftOf);
    const bool turned = scene.relation == Relation::kBelow || scene.relation == Relation::kRightOf;
    EXPECT_EQ(canonical.shapes[0].center, scene.shapes[turned ? 1 : 0].center);
    EXPECT_EQ(canonical.shapes[1].center, scene.shapes[turned ? 0 : 1].center);
    // The first-named shape really is the upper (left) one.
    if (canonical.relation == Relation::kAbove)
      EXPECT_LT(canonical.shapes[0].center.y, canonical.shapes[1].center.y);
    else
      EXPECT_LT(canonical.shapes[0].center.x, canonical.shapes[1].center.x);
    if (!turned) EXPECT_EQ(Caption(canonical), Caption(scene));
  }
}

TEST(ShapesGenerateTest, CanonicalCaptionsChangeOnlyTheCaptionManifests) {
  TempDir temp;
  ShapesOptions options;
  options.count = 30;
  options.seed = 4;
  options.progress = false;
  options.out_dir = temp.File("drawn");
  GenerateShapes(options);
  options.canonical_captions = true;
  options.out_dir = temp.File("canonical");
  const ShapesStats stats = GenerateShapes(options);
  EXPECT_EQ(stats.ToJson()["caption_order"], "canonical");
  EXPECT_FALSE(nlohmann::json::parse(fs::ReadFile(temp.File("drawn/stats.json"))).contains("caption_order"));
  for (const char* file : {"vqa_train.jsonl", "vqa_valid.jsonl", "img/s000001.png", "img/s000030.png"})
    EXPECT_EQ(fs::ReadFile(temp.File(Str("drawn/", file))), fs::ReadFile(temp.File(Str("canonical/", file))))
        << file;
  const manifest::Manifest train = manifest::Read(temp.File("canonical/caption_train.jsonl"));
  int turned = 0;
  for (size_t i = 0; i < train.entries.size(); ++i) {
    const ShapeScene scene = SampleScene(SceneSeed(4, static_cast<int64_t>(i)), 64);
    const manifest::Entry& e = train.entries[i];
    EXPECT_EQ(e.text, Caption(CanonicalOrder(scene)));
    const std::string relation = e.extra["attributes"]["relation"];
    EXPECT_TRUE(relation == "above" || relation == "left of") << relation;
    EXPECT_EQ(e.extra["attributes"]["shapes"][0]["color"], ColorName(CanonicalOrder(scene).shapes[0].color));
    turned += scene.relation == Relation::kBelow || scene.relation == Relation::kRightOf;
  }
  EXPECT_GT(turned, 0);
}

TEST(ShapesGenerateTest, BadOptionsAreExplained) {
  TempDir temp;
  ShapesOptions options;
  options.out_dir = temp.File("out");
  options.progress = false;
  auto error_with = [&](const std::function<void(ShapesOptions&)>& change) {
    ShapesOptions changed = options;
    change(changed);
    return ErrorOf([&] { GenerateShapes(changed); });
  };
  EXPECT_NE(
      error_with([](ShapesOptions& o) { o.count = 0; }).find("image count 0 must be positive"),
      std::string::npos);
  EXPECT_NE(error_with([](ShapesOptions& o) { o.size = 16; }).find("size 16 px is out of range"),
            std::string::npos);
  EXPECT_NE(error_with([](ShapesOptions& o) { o.size = 1024; }).find("[32, 512]"),
            std::string::npos);
  EXPECT_NE(error_with([](ShapesOptions& o) { o.valid_fraction = 1.0; }).find("valid fraction"),
            std::string::npos);
  EXPECT_NE(error_with([](ShapesOptions& o) { o.threads = 0; }).find("threads 0"),
            std::string::npos);
  EXPECT_NE(error_with([](ShapesOptions& o) { o.out_dir = ""; }).find("output directory"),
            std::string::npos);
  fs::AtomicWriteString(temp.File("a_file"), "x");
  const std::string message =
      error_with([&](ShapesOptions& o) { o.out_dir = temp.File("a_file/out"); });
  EXPECT_NE(message.find(temp.File("a_file/out")), std::string::npos) << message;
  EXPECT_FALSE(stdfs::exists(temp.File("out")));  // bad options fail before anything is written
}

}  // namespace
}  // namespace slm::datagen
