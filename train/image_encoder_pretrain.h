// `slm vision pretrain-encoder`: the embedded default image encoder. Trains a small CLIP ViT tower
// (vision/clip_vision.h) contrastively (CLIP's symmetric InfoNCE loss with a learned temperature)
// on the synthetic shapes data (datagen/shapes.h) against the captions as the frozen text backbone
// reads them: each caption's text feature pools the backbone's last hidden states over its tokens
// (text_pooling: mean, last, or both concatenated; computed once, under no-grad), mapped by a
// trainable text_projection; images go through
// the tower's pooler output and a visual_projection. So the tower learns features that line up
// with what the LM it will later be spliced into already "means" by a caption.
//
// Data: data.shapes_dir (GenerateShapes output; generated with data.count images of data.size
// pixels when missing), or with data.source "render" the same scenes drawn in memory. Images are preprocessed once with ClipPreprocess (shortest edge and crop =
// model.image_size, CLIP mean/std) and kept in memory.
//
// Evaluation: retrieval on the valid images: image->text top-1 and top-5 accuracy over the set of
// distinct valid captions, text->image top-1 over the valid images, next to the chance rate. A hit
// is a caption that describes the image's scene: "a red circle above a blue square" and "a blue
// square below a red circle" are the same scene (from the manifest's shape attributes). Also
// CLIP's in-batch view: top-1 among the captions of a pool of 64 images (chance ~1/64).
//
// Output (output_dir): config.json + model.safetensors ("vision_model.*" as CLIPModel, plus
// "visual_projection.weight", "text_projection.weight", "logit_scale"), preprocessor_config.json
// (CLIPImageProcessor keys), config.yaml, metrics.jsonl, result.json. LoadClipVision(output_dir)
// loads the tower. Deterministic for a fixed seed and thread count on the CPU. Not thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/config.h"
#include "train/runner.h"
#include "vision/clip_vision.h"

namespace slm::train {

struct ImageEncoderPretrainConfig : JobConfig {  // seed, threads, device, output_dir
  struct Data {
    // files: GenerateShapes output in shapes_dir (generated there when missing), read as PNGs.
    // render: the same scenes (same seed, count, size and valid split, so the same pixels) drawn
    // straight into memory, no files: for machines without an image codec or a large count.
    std::string source = "files";
    std::string shapes_dir = "data/shapes_encoder";
    int64_t count = 20000;  // images generated (files: when shapes_dir has none)
    int size = 64;
  } data;
  std::string text_backbone = "samples/models/backbone_tiny";  // HF dir with tokenizer.model
  std::string text_pooling = "mean_last";  // mean | last | mean_last of the backbone's states
  vision::ClipVisionConfig model;
  int64_t projection_dim = 128;
  LoopOptions train;  // steps, schedule, AdamW, clipping, grad_accum, precision (train/runner.h)
  struct Eval {
    int64_t every = 250;
    int64_t batch_size = 128;
  } eval;
  // On a CUDA `device` the preprocessed images and caption features are moved there once;
  // batches are gathered there. CUDA runs are not bitwise reproducible (cuBLAS/attention
  // reductions); the saved model is the same format.

  ImageEncoderPretrainConfig();  // the tiny defaults of samples/configs/image_encoder_tiny.yaml
  void Load(config::Node node);
};

struct RetrievalScores {
  double image_to_text_top1 = 0;
  double image_to_text_top5 = 0;
  double text_to_image_top1 = 0;
  double chance_top1 = 0;  // expected top-1 of a random caption ranking
  double pool_top1 = 0;    // image->text top-1 within pools of 64 images and their captions
  int64_t images = 0;
  int64_t distinct_captions = 0;
  nlohmann::json ToJson() const;
};

// parameters: tower + projections (the frozen backbone not counted).
struct ImageEncoderPretrainResult : JobResult {  // model_dir, parameters, seconds, the loop (train/runner.h)
  int64_t train_images = 0;
  double images_per_second = 0;
  RetrievalScores valid;
  nlohmann::json ToJson() const;
};

ImageEncoderPretrainResult PretrainImageEncoder(const ImageEncoderPretrainConfig& config,
                                                const std::string& effective_config_yaml,
                                                bool quiet = false);

}  // namespace slm::train
