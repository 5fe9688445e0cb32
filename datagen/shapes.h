// Synthetic shapes: images of two coloured shapes in a spatial relation, with captions and visual
// questions, drawn offline with OpenCV (docs/ARCHITECTURE.md, "Data generators": the tiny CLIP-style image
// encoder and the captioning adapters are trained on them without any download).
//
// GenerateShapes writes under options.out_dir:
//   img/s000001.png ...            size x size 8-bit RGB PNGs;
//   caption_{train,valid}.jsonl    core/manifest.h entries {"id":"s000001","task":"caption",
//                                  "image":"img/s000001.png","text":"a red circle above a blue
//                                  square","attributes":{"shapes":[{"shape":"circle","color":
//                                  "red"},{"shape":"square","color":"blue"}],"relation":"above"}};
//   vqa_{train,valid}.jsonl        entries {"id":"s000001-q0","task":"vqa","image":...,
//                                  "prompt":"what color is the circle","response":"red"};
//   stats.json                     ShapesStats::ToJson().
// Every file is written atomically (core/fs.h), the images first and the manifests last, so a
// manifest never names an image that is missing or half written.
//
// Determinism: image i (0-based, id s<i+1>) is drawn from SceneSeed(options.seed, i) alone, so the
// output is identical for any number of threads; the last ValidCount(count, valid_fraction)
// images form the valid split (scenes are independent draws, so this is an unbiased sample).
//
// Geometry contract: shapes[0] <relation> shapes[1] holds for the shapes' circumscribed circles
// with a gap of at least 2 pixels between them, and the offset across the relation's axis is at
// most half the offset along it, so "above" never looks like "left of". Background colours keep
// a colour distance of at least 110 (RGB, 0..255) from both shapes, so shapes stay visible on
// light, dark, gradient and noisy backgrounds.
//
// Thread-safety: everything here is a pure function of its arguments except GenerateShapes,
// which writes into its output directory (using options.threads worker threads internally).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/manifest.h"

namespace slm::datagen {

enum class Shape { kCircle, kSquare, kTriangle, kStar, kDiamond, kCross };
enum class Color { kRed, kGreen, kBlue, kYellow, kPurple, kOrange, kWhite, kBlack };
// "a above b": a's bottom is above b's top, in image coordinates (y grows downwards).
enum class Relation { kAbove, kBelow, kLeftOf, kRightOf };

inline constexpr int kShapeCount = 6;
inline constexpr int kColorCount = 8;
inline constexpr int kRelationCount = 4;

// The words captions and answers use: "circle", "red", "left of".
const char* ShapeName(Shape shape);
const char* ColorName(Color color);
const char* RelationName(Relation relation);
// The nominal colour of a name (drawn colours are jittered by at most 12 per channel).
cv::Vec3b NominalRgb(Color color);

struct PlacedShape {
  Shape shape = Shape::kCircle;
  Color color = Color::kRed;
  cv::Vec3b rgb;           // the colour actually drawn: NominalRgb(color) with a small jitter
  cv::Point2f center;      // pixels, (0, 0) = top-left corner of the image
  float radius = 0;        // pixels, of the circumscribed circle
  float rotation_deg = 0;  // counter-clockwise; 0 for circles
};

enum class Background { kFlat, kGradient, kNoise };

struct ShapeScene {
  std::array<PlacedShape, 2> shapes;
  Relation relation = Relation::kAbove;  // shapes[0] <relation> shapes[1]
  Background background = Background::kFlat;
  cv::Vec3b background_from;  // RGB; the flat colour, or the gradient's start
  cv::Vec3b background_to;    // RGB; the gradient's end (== background_from when flat)
  float gradient_angle_deg = 0;
  float noise_sigma = 0;  // Gaussian pixel noise over the whole image, 0..255 scale
  uint64_t noise_seed = 0;
};

// The per-image seed of image `index` of a dataset generated with `seed`: a hash of both, so that
// datasets of different seeds do not share images.
uint64_t SceneSeed(uint64_t seed, int64_t index);

// Draws a scene for a size x size image from a std::mt19937_64 seeded with `seed`: two shapes
// that differ in kind or colour, a random relation, radius 9%..18% of the size, rotation (none
// for circles, up to 15 degrees for squares, diamonds and crosses so that they stay recognisable,
// any for triangles and stars), background style and colours. Throws slm::Error for a size
// outside [32, 512].
ShapeScene SampleScene(uint64_t seed, int size);

// Renders the scene anti-aliased: a size x size CV_8UC3 image in OpenCV's BGR channel order
// (ready for cv::imwrite). Deterministic for a given scene.
cv::Mat RenderScene(const ShapeScene& scene, int size);

// "a red circle above a blue square", "an orange star left of a white cross".
std::string Caption(const ShapeScene& scene);

// The same scene named in canonical order: the upper shape first for a vertical pair, the left one
// for a horizontal pair, so the relation is "above" or "left of" (shapes swapped and the relation
// turned around when it was "below" or "right of"; the pixels do not change). Which shape a
// drawn caption names first is a coin flip the image cannot tell; a small captioner trained on
// canonical captions does not have to learn that ambiguity (docs/BENCHMARKS.md, captioning).
ShapeScene CanonicalOrder(const ShapeScene& scene);

// Question/answer pairs that the image alone answers unambiguously, in a fixed order:
//   "how many shapes are there" -> "two";
//   "what color is the circle" -> "red"           (only for a kind that occurs once);
//   "what shape is the red one" -> "circle"       (only for a colour that occurs once);
//   "what shape is above the blue square" -> "circle", and the converse for the other shape;
//   "where is the red circle" -> "above the blue square", and the converse;
//   "is the red circle above the blue square" -> "yes", "is the blue square above the red circle"
//   -> "no".
std::vector<std::pair<std::string, std::string>> Questions(const ShapeScene& scene);

// The caption manifest entry GenerateShapes writes for image `index` (0-based) showing `scene`:
// {"id":"s<index+1>","task":"caption","image":"img/s<index+1>.png","text":Caption(scene),
// "attributes":{...}} as described at the top of this file.
manifest::Entry CaptionEntry(const ShapeScene& scene, int64_t index);

struct ShapesOptions {
  std::string out_dir;
  int64_t count = 2000;  // images, > 0
  uint64_t seed = 0;
  int size = 64;                // pixels per side, 32..512
  double valid_fraction = 0.1;  // in [0, 1)
  bool canonical_captions = false;  // caption manifests name scenes in CanonicalOrder
  int threads = 2;              // drawing + PNG encoding workers, >= 1
  bool progress = true;         // a core/progress.h bar on stderr
};

// Images in the valid split: round(count * valid_fraction), at least 1 when the fraction is
// positive and count >= 2, and never all of them.
int64_t ValidCount(int64_t count, double valid_fraction);

struct ShapesStats {
  int64_t train_images = 0;
  int64_t valid_images = 0;
  int64_t train_questions = 0;
  int64_t valid_questions = 0;
  std::array<int64_t, kShapeCount> shapes{};        // occurrences, indexed by Shape
  std::array<int64_t, kColorCount> colors{};        // indexed by Color
  std::array<int64_t, kRelationCount> relations{};  // indexed by Relation (as drawn)
  bool canonical_captions = false;                   // written as "caption_order": "canonical"
  double seconds = 0;
  double ImagesPerSecond() const;
  // Counts and histograms by name; leaves out timings so that stats.json is deterministic.
  nlohmann::json ToJson() const;
};

// Generates the dataset described at the top of this file. Throws slm::Error for count <= 0, a
// size outside [32, 512], a valid fraction outside [0, 1), threads < 1, or an output directory
// that cannot be created or written (the message names the path).
ShapesStats GenerateShapes(const ShapesOptions& options);

}  // namespace slm::datagen
