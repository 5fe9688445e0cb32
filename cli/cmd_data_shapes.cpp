// `slm data shapes --out DIR`: synthetic shape images with captions and visual QA
// (datagen/shapes.h).
#include <memory>
#include <string>

#include "cli/command.h"
#include "core/json_report.h"
#include "datagen/shapes.h"

namespace {

slm::cli::Registrar reg([](CLI::App& app, slm::cli::Common& common) {
  CLI::App* cmd = slm::cli::Group(app, "data", "make training data offline")
                      ->add_subcommand("shapes",
                                       "synthetic images of two shapes in a spatial "
                                       "relation, with captions and QA");
  auto options = std::make_shared<slm::datagen::ShapesOptions>();
  cmd->add_option("--out", options->out_dir, "output directory")->required();
  cmd->add_option("--count", options->count, "number of images")->capture_default_str();
  cmd->add_option("--seed", options->seed, "random seed (same seed, same dataset)")
      ->capture_default_str();
  cmd->add_option("--size", options->size, "image side in pixels (32..512)")->capture_default_str();
  cmd->add_option("--valid-fraction", options->valid_fraction,
                  "fraction of images in the valid split")
      ->capture_default_str();
  cmd->add_flag("--canonical-captions", options->canonical_captions,
               "captions name the upper / left shape first (\"above\" / \"left of\" only)");
  cmd->callback([options, &common] {
    // --threads sizes LibTorch's pool elsewhere; here it bounds the drawing workers.
    if (common.threads > 0) options->threads = common.threads;
    const slm::datagen::ShapesStats stats = slm::datagen::GenerateShapes(*options);
    slm::Report report(common.json);
    report.Set("out", options->out_dir);
    report.Set("train.images", stats.train_images);
    report.Set("train.questions", stats.train_questions);
    report.Set("valid.images", stats.valid_images);
    report.Set("valid.questions", stats.valid_questions);
    report.Set("files",
               nlohmann::json::array({"img/", "caption_train.jsonl", "caption_valid.jsonl",
                                      "vqa_train.jsonl", "vqa_valid.jsonl", "stats.json"}));
    report.Set("seconds", stats.seconds);
    report.Set("images_per_second", stats.ImagesPerSecond());
    report.Emit();
  });
});

}  // namespace
