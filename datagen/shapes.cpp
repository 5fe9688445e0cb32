#include "datagen/shapes.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <mutex>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/progress.h"

namespace slm::datagen {
namespace {

constexpr int kMinSize = 32;
constexpr int kMaxSize = 512;
constexpr float kMinRadiusFraction = 0.09f;
constexpr float kMaxRadiusFraction = 0.18f;
constexpr float kMinGapPixels = 2.0f;
constexpr double kMinBackgroundDistance = 110.0;
constexpr int kColorJitter = 12;
// Sub-pixel precision of OpenCV's drawing functions: coordinates are multiplied by 2^kShift.
constexpr int kShift = 4;
constexpr double kPi = 3.14159265358979323846;

struct Palette {
  const char* name;
  cv::Vec3b rgb;
};
// Chosen to be pairwise far apart (RGB distance > 100) so that names stay unambiguous after
// jitter; "black" is a very dark grey so that a black shape on a black background cannot happen.
const Palette kPalette[kColorCount] = {{"red", {220, 30, 30}},     {"green", {30, 170, 50}},
                                       {"blue", {30, 70, 225}},    {"yellow", {250, 225, 40}},
                                       {"purple", {140, 40, 170}}, {"orange", {255, 130, 0}},
                                       {"white", {245, 245, 245}}, {"black", {25, 25, 25}}};

double Distance(const cv::Vec3b& a, const cv::Vec3b& b) {
  double sum = 0;
  for (int c = 0; c < 3; ++c) sum += (double(a[c]) - b[c]) * (double(a[c]) - b[c]);
  return std::sqrt(sum);
}

cv::Vec3b Mix(const cv::Vec3b& from, const cv::Vec3b& to, double t) {
  cv::Vec3b out;
  for (int c = 0; c < 3; ++c) out[c] = cv::saturate_cast<uchar>(from[c] + (to[c] - from[c]) * t);
  return out;
}

// The smallest distance between the shapes' colours and any colour of the background's range.
double BackgroundContrast(const cv::Vec3b& from, const cv::Vec3b& to,
                          const std::array<PlacedShape, 2>& shapes) {
  double contrast = 1e9;
  for (double t = 0; t <= 1.0; t += 0.125)
    for (const PlacedShape& shape : shapes)
      contrast = std::min(contrast, Distance(Mix(from, to, t), shape.rgb));
  return contrast;
}

const char* Article(const char* word) {
  const char c = word[0];
  return (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u') ? "an" : "a";
}

Relation Converse(Relation relation) {
  switch (relation) {
    case Relation::kAbove:
      return Relation::kBelow;
    case Relation::kBelow:
      return Relation::kAbove;
    case Relation::kLeftOf:
      return Relation::kRightOf;
    case Relation::kRightOf:
      return Relation::kLeftOf;
  }
  return relation;
}

std::string Describe(const PlacedShape& shape) {
  return Str(ColorName(shape.color), " ", ShapeName(shape.shape));
}

// Outline of a non-circle shape as unit-circle vertices (before rotation and scaling).
std::vector<cv::Point2f> UnitOutline(Shape shape) {
  std::vector<cv::Point2f> points;
  auto polar = [&points](double radius, double degrees) {
    const double a = degrees * kPi / 180.0;
    points.emplace_back(static_cast<float>(radius * std::cos(a)),
                        static_cast<float>(radius * std::sin(a)));
  };
  switch (shape) {
    case Shape::kSquare:
      for (int k = 0; k < 4; ++k) polar(1.0, 45.0 + 90.0 * k);
      break;
    case Shape::kTriangle:
      for (int k = 0; k < 3; ++k) polar(1.0, -90.0 + 120.0 * k);
      break;
    case Shape::kStar:
      for (int k = 0; k < 10; ++k) polar(k % 2 == 0 ? 1.0 : 0.45, -90.0 + 36.0 * k);
      break;
    case Shape::kDiamond:
      points = {{0.f, -1.f}, {0.62f, 0.f}, {0.f, 1.f}, {-0.62f, 0.f}};
      break;
    case Shape::kCross: {
      const float w = 0.3f;                    // half the arm width
      const float l = std::sqrt(1.f - w * w);  // arm length: corners on the unit circle
      points = {{-w, -l}, {w, -l}, {w, -w}, {l, -w}, {l, w},   {w, w},
                {w, l},   {-w, l}, {-w, w}, {-l, w}, {-l, -w}, {-w, -w}};
      break;
    }
    case Shape::kCircle:
      break;
  }
  return points;
}

void DrawShape(cv::Mat& image, const PlacedShape& shape) {
  const cv::Scalar bgr(shape.rgb[2], shape.rgb[1], shape.rgb[0]);
  const double scale = 1 << kShift;
  if (shape.shape == Shape::kCircle) {
    // A disc covers its whole circumscribed circle; shrink it to look as big as the polygons.
    const cv::Point center(cvRound(shape.center.x * scale), cvRound(shape.center.y * scale));
    cv::circle(image, center, cvRound(shape.radius * 0.85 * scale), bgr, cv::FILLED, cv::LINE_AA,
               kShift);
    return;
  }
  // Counter-clockwise on screen, where y grows downwards.
  const double a = shape.rotation_deg * kPi / 180.0;
  const double cos_a = std::cos(a);
  const double sin_a = std::sin(a);
  std::vector<cv::Point> polygon;
  for (const cv::Point2f& p : UnitOutline(shape.shape)) {
    const double x = (p.x * cos_a + p.y * sin_a) * shape.radius + shape.center.x;
    const double y = (-p.x * sin_a + p.y * cos_a) * shape.radius + shape.center.y;
    polygon.emplace_back(cvRound(x * scale), cvRound(y * scale));
  }
  const std::vector<std::vector<cv::Point>> polygons = {polygon};
  cv::fillPoly(image, polygons, bgr, cv::LINE_AA, kShift);
}

void ValidateSize(int size) {
  Check(size >= kMinSize && size <= kMaxSize, "shapes: image size ", size,
        " px is out of range; it must be in [", kMinSize, ", ", kMaxSize, "]");
}

std::string ImageId(int64_t index) {
  char id[32];
  std::snprintf(id, sizeof(id), "s%06lld", static_cast<long long>(index + 1));
  return id;
}

}  // namespace

const char* ShapeName(Shape shape) {
  switch (shape) {
    case Shape::kCircle:
      return "circle";
    case Shape::kSquare:
      return "square";
    case Shape::kTriangle:
      return "triangle";
    case Shape::kStar:
      return "star";
    case Shape::kDiamond:
      return "diamond";
    case Shape::kCross:
      return "cross";
  }
  return "circle";
}

const char* ColorName(Color color) { return kPalette[static_cast<int>(color)].name; }

cv::Vec3b NominalRgb(Color color) { return kPalette[static_cast<int>(color)].rgb; }

const char* RelationName(Relation relation) {
  switch (relation) {
    case Relation::kAbove:
      return "above";
    case Relation::kBelow:
      return "below";
    case Relation::kLeftOf:
      return "left of";
    case Relation::kRightOf:
      return "right of";
  }
  return "above";
}

uint64_t SceneSeed(uint64_t seed, int64_t index) {
  // splitmix64 steps: consecutive (seed, index) pairs map to unrelated generator states.
  auto mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  return mix(mix(seed) ^ static_cast<uint64_t>(index));
}

ShapeScene SampleScene(uint64_t seed, int size) {
  ValidateSize(size);
  std::mt19937_64 rng(seed);
  auto uniform = [&rng](double low, double high) {
    return std::uniform_real_distribution<double>(low, high)(rng);
  };
  auto pick = [&rng](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };

  ShapeScene scene;
  scene.shapes[0].shape = static_cast<Shape>(pick(kShapeCount));
  scene.shapes[0].color = static_cast<Color>(pick(kColorCount));
  do {
    scene.shapes[1].shape = static_cast<Shape>(pick(kShapeCount));
    scene.shapes[1].color = static_cast<Color>(pick(kColorCount));
  } while (scene.shapes[1].shape == scene.shapes[0].shape &&
           scene.shapes[1].color == scene.shapes[0].color);
  scene.relation = static_cast<Relation>(pick(kRelationCount));

  for (PlacedShape& shape : scene.shapes) {
    const cv::Vec3b nominal = NominalRgb(shape.color);
    for (int c = 0; c < 3; ++c)
      shape.rgb[c] =
          cv::saturate_cast<uchar>(nominal[c] + pick(2 * kColorJitter + 1) - kColorJitter);
    shape.radius = static_cast<float>(uniform(kMinRadiusFraction, kMaxRadiusFraction) * size);
    switch (shape.shape) {
      case Shape::kCircle:
        shape.rotation_deg = 0;
        break;
      case Shape::kTriangle:
      case Shape::kStar:
        shape.rotation_deg = static_cast<float>(uniform(0, 360));
        break;
      default:  // a square turned 45 degrees would be a diamond, a cross an "x"
        shape.rotation_deg = static_cast<float>(uniform(-15, 15));
    }
  }

  // Place along the relation's axis first ("above"/"below": y, else x), the shape that comes
  // first on that axis ("leading") at least r0 + r1 + gap before the other, then across the axis
  // within half the along-axis distance. Every interval below is non-empty for radii in
  // [9%, 18%] of the size, so no rejection loop is needed.
  const bool vertical = scene.relation == Relation::kAbove || scene.relation == Relation::kBelow;
  const bool first_leads =
      scene.relation == Relation::kAbove || scene.relation == Relation::kLeftOf;
  PlacedShape& leading = scene.shapes[first_leads ? 0 : 1];
  PlacedShape& trailing = scene.shapes[first_leads ? 1 : 0];
  const double margin_leading = leading.radius + 1.0;
  const double margin_trailing = trailing.radius + 1.0;
  const double min_distance = leading.radius + trailing.radius + kMinGapPixels;
  const double along_leading =
      uniform(margin_leading, std::max(margin_leading, size - margin_trailing - min_distance));
  const double along_trailing =
      uniform(std::max(margin_trailing, along_leading + min_distance), size - margin_trailing);
  const double spread = 0.5 * (along_trailing - along_leading);
  const double across_leading = uniform(margin_leading, size - margin_leading);
  const double across_trailing = uniform(std::max(margin_trailing, across_leading - spread),
                                         std::min(size - margin_trailing, across_leading + spread));
  auto place = [vertical](PlacedShape& shape, double along, double across) {
    shape.center = vertical ? cv::Point2f(float(across), float(along))
                            : cv::Point2f(float(along), float(across));
  };
  place(leading, along_leading, across_leading);
  place(trailing, along_trailing, across_trailing);

  scene.background = static_cast<Background>(pick(3));
  scene.gradient_angle_deg = static_cast<float>(uniform(0, 360));
  scene.noise_sigma =
      scene.background == Background::kNoise ? static_cast<float>(uniform(4, 12)) : 0.f;
  scene.noise_seed = rng();
  // Light, dark and mid-tone backgrounds with a tint; retried until both shapes stand out.
  auto sample_background = [&]() {
    const double level = uniform(0, 255);
    cv::Vec3b colour;
    for (int c = 0; c < 3; ++c) colour[c] = cv::saturate_cast<uchar>(level + uniform(-30, 30));
    return colour;
  };
  bool found = false;
  for (int attempt = 0; attempt < 64 && !found; ++attempt) {
    scene.background_from = sample_background();
    scene.background_to = scene.background == Background::kGradient
                              ? Mix(scene.background_from, sample_background(), 0.6)
                              : scene.background_from;
    found = BackgroundContrast(scene.background_from, scene.background_to, scene.shapes) >=
            kMinBackgroundDistance;
  }
  if (!found) {  // rare colour pairs: take the flat colour of a coarse grid that contrasts most
    double best = -1;
    for (int r = 0; r <= 255; r += 51)
      for (int g = 0; g <= 255; g += 51)
        for (int b = 0; b <= 255; b += 51) {
          const cv::Vec3b colour(static_cast<uchar>(r), static_cast<uchar>(g),
                                 static_cast<uchar>(b));
          const double contrast = BackgroundContrast(colour, colour, scene.shapes);
          if (contrast > best) {
            best = contrast;
            scene.background_from = scene.background_to = colour;
          }
        }
    if (scene.background == Background::kGradient) scene.background = Background::kFlat;
  }
  return scene;
}

cv::Mat RenderScene(const ShapeScene& scene, int size) {
  ValidateSize(size);
  cv::Mat image(size, size, CV_8UC3);
  const double a = scene.gradient_angle_deg * kPi / 180.0;
  const double dx = std::cos(a);
  const double dy = std::sin(a);
  // Project onto the gradient direction and normalise to [0, 1] over the image's extent.
  const double half_extent = 0.5 * (size - 1) * (std::abs(dx) + std::abs(dy));
  const double middle = 0.5 * (size - 1);
  for (int y = 0; y < size; ++y) {
    cv::Vec3b* row = image.ptr<cv::Vec3b>(y);
    for (int x = 0; x < size; ++x) {
      const double t = scene.background == Background::kGradient
                           ? 0.5 + 0.5 * ((x - middle) * dx + (y - middle) * dy) / half_extent
                           : 0.0;
      const cv::Vec3b rgb = Mix(scene.background_from, scene.background_to, t);
      row[x] = cv::Vec3b(rgb[2], rgb[1], rgb[0]);
    }
  }
  for (const PlacedShape& shape : scene.shapes) DrawShape(image, shape);
  if (scene.noise_sigma > 0) {
    cv::Mat noise(size, size, CV_32FC3);
    cv::RNG rng(scene.noise_seed);
    rng.fill(noise, cv::RNG::NORMAL, 0.0, scene.noise_sigma);
    cv::Mat noisy;
    image.convertTo(noisy, CV_32FC3);
    noisy += noise;
    noisy.convertTo(image, CV_8UC3);  // saturates to [0, 255]
  }
  return image;
}

std::string Caption(const ShapeScene& scene) {
  const PlacedShape& a = scene.shapes[0];
  const PlacedShape& b = scene.shapes[1];
  return Str(Article(ColorName(a.color)), " ", Describe(a), " ", RelationName(scene.relation), " ",
             Article(ColorName(b.color)), " ", Describe(b));
}

ShapeScene CanonicalOrder(const ShapeScene& scene) {
  ShapeScene canonical = scene;
  if (scene.relation == Relation::kBelow || scene.relation == Relation::kRightOf) {
    std::swap(canonical.shapes[0], canonical.shapes[1]);
    canonical.relation = Converse(scene.relation);
  }
  return canonical;
}

std::vector<std::pair<std::string, std::string>> Questions(const ShapeScene& scene) {
  const PlacedShape& a = scene.shapes[0];
  const PlacedShape& b = scene.shapes[1];
  const char* relation = RelationName(scene.relation);
  const char* converse = RelationName(Converse(scene.relation));
  std::vector<std::pair<std::string, std::string>> questions;
  questions.emplace_back("how many shapes are there", "two");
  if (a.shape != b.shape) {
    for (const PlacedShape* s : {&a, &b})
      questions.emplace_back(Str("what color is the ", ShapeName(s->shape)), ColorName(s->color));
  }
  if (a.color != b.color) {
    for (const PlacedShape* s : {&a, &b})
      questions.emplace_back(Str("what shape is the ", ColorName(s->color), " one"),
                             ShapeName(s->shape));
  }
  questions.emplace_back(Str("what shape is ", relation, " the ", Describe(b)), ShapeName(a.shape));
  questions.emplace_back(Str("what shape is ", converse, " the ", Describe(a)), ShapeName(b.shape));
  questions.emplace_back(Str("where is the ", Describe(a)), Str(relation, " the ", Describe(b)));
  questions.emplace_back(Str("where is the ", Describe(b)), Str(converse, " the ", Describe(a)));
  questions.emplace_back(Str("is the ", Describe(a), " ", relation, " the ", Describe(b)), "yes");
  questions.emplace_back(Str("is the ", Describe(b), " ", relation, " the ", Describe(a)), "no");
  return questions;
}

int64_t ValidCount(int64_t count, double valid_fraction) {
  if (count < 2 || valid_fraction <= 0) return 0;
  const int64_t rounded = std::llround(static_cast<double>(count) * valid_fraction);
  return std::clamp<int64_t>(rounded, 1, count - 1);
}

double ShapesStats::ImagesPerSecond() const {
  return seconds > 0 ? static_cast<double>(train_images + valid_images) / seconds : 0.0;
}

nlohmann::json ShapesStats::ToJson() const {
  nlohmann::json json;
  json["images"] = train_images + valid_images;
  json["splits"]["train"] = {{"images", train_images}, {"questions", train_questions}};
  json["splits"]["valid"] = {{"images", valid_images}, {"questions", valid_questions}};
  for (int i = 0; i < kShapeCount; ++i)
    json["shapes"][ShapeName(static_cast<Shape>(i))] = shapes[i];
  for (int i = 0; i < kColorCount; ++i)
    json["colors"][ColorName(static_cast<Color>(i))] = colors[i];
  for (int i = 0; i < kRelationCount; ++i)
    json["relations"][RelationName(static_cast<Relation>(i))] = relations[i];
  if (canonical_captions) json["caption_order"] = "canonical";
  return json;
}

manifest::Entry CaptionEntry(const ShapeScene& scene, int64_t index) {
  manifest::Entry caption;
  caption.id = ImageId(index);
  caption.task = "caption";
  caption.image = "img/" + caption.id + ".png";
  caption.text = Caption(scene);
  nlohmann::json shapes = nlohmann::json::array();
  for (const PlacedShape& shape : scene.shapes)
    shapes.push_back({{"shape", ShapeName(shape.shape)}, {"color", ColorName(shape.color)}});
  caption.extra["attributes"] = {{"shapes", shapes}, {"relation", RelationName(scene.relation)}};
  return caption;
}

ShapesStats GenerateShapes(const ShapesOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  Check(!options.out_dir.empty(), "shapes: an output directory is required");
  Check(options.count > 0, "shapes: image count ", options.count, " must be positive");
  ValidateSize(options.size);
  Check(std::isfinite(options.valid_fraction) && options.valid_fraction >= 0 &&
            options.valid_fraction < 1,
        "shapes: valid fraction ", options.valid_fraction, " must be in [0, 1)");
  Check(options.threads >= 1, "shapes: threads ", options.threads, " must be at least 1");

  const std::filesystem::path out(options.out_dir);
  const std::string image_dir = (out / "img").string();
  fs::MakeDirs(image_dir);
  Check(access(image_dir.c_str(), W_OK) == 0, "shapes: output directory '", image_dir,
        "' is not writable");

  // Workers take indices from a shared counter; each image depends only on its index, so the
  // result does not depend on which worker draws it.
  std::vector<ShapeScene> scenes(static_cast<size_t>(options.count));
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&]() {
    try {
      for (int64_t i = next++; i < options.count && !failed; i = next++) {
        scenes[i] = SampleScene(SceneSeed(options.seed, i), options.size);
        std::vector<uchar> png;
        Check(cv::imencode(".png", RenderScene(scenes[i], options.size), png),
              "shapes: PNG encoding failed for image ", ImageId(i));
        fs::AtomicWriteString((out / "img" / (ImageId(i) + ".png")).string(),
                              std::string(png.begin(), png.end()));
        ++done;
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
  };
  std::vector<std::thread> workers;
  const int thread_count = static_cast<int>(std::min<int64_t>(options.threads, options.count));
  for (int t = 0; t < thread_count; ++t) workers.emplace_back(work);
  {
    ProgressBar progress("shapes", options.count, !options.progress);
    int64_t shown = 0;
    while (!failed && shown < options.count) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const int64_t now = done;
      if (now > shown) progress.Update(now - shown);
      shown = now;
    }
    for (std::thread& worker : workers) worker.join();
    if (!error) progress.Finish();
  }
  if (error) std::rethrow_exception(error);

  ShapesStats stats;
  const int64_t valid_begin = options.count - ValidCount(options.count, options.valid_fraction);
  std::vector<manifest::Entry> captions[2];
  std::vector<manifest::Entry> vqa[2];
  for (int64_t i = 0; i < options.count; ++i) {
    const ShapeScene& scene = scenes[i];
    const int split = i >= valid_begin ? 1 : 0;
    const std::string id = ImageId(i);
    const std::string image = "img/" + id + ".png";

    for (const PlacedShape& shape : scene.shapes) {
      ++stats.shapes[static_cast<int>(shape.shape)];
      ++stats.colors[static_cast<int>(shape.color)];
    }
    captions[split].push_back(CaptionEntry(options.canonical_captions ? CanonicalOrder(scene) : scene, i));
    ++stats.relations[static_cast<int>(scene.relation)];

    const auto questions = Questions(scene);
    for (size_t q = 0; q < questions.size(); ++q) {
      manifest::Entry entry;
      entry.id = Str(id, "-q", q);
      entry.task = "vqa";
      entry.image = image;
      entry.prompt = questions[q].first;
      entry.response = questions[q].second;
      vqa[split].push_back(std::move(entry));
    }
    (split ? stats.valid_images : stats.train_images) += 1;
    (split ? stats.valid_questions : stats.train_questions) +=
        static_cast<int64_t>(questions.size());
  }
  const char* split_names[2] = {"train", "valid"};
  for (int split = 0; split < 2; ++split) {
    manifest::Write((out / Str("caption_", split_names[split], ".jsonl")).string(),
                    captions[split]);
    manifest::Write((out / Str("vqa_", split_names[split], ".jsonl")).string(), vqa[split]);
  }
  stats.canonical_captions = options.canonical_captions;
  fs::AtomicWriteString((out / "stats.json").string(), stats.ToJson().dump(2) + "\n");
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace slm::datagen
