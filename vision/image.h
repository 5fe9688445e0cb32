// Image loading and CLIP preprocessing.
//
// LoadImage decodes PNG, JPEG, BMP, WebP, TIFF and PNM (P1-P6) with OpenCV's imgcodecs into an
// 8-bit RGB cv::Mat (CV_8UC3, RGB order, not OpenCV's BGR):
//   - grey (1 channel) is replicated to RGB;
//   - 16-bit images are scaled to 8 bits (v / 257, rounded); float images are taken as [0, 1];
//   - an alpha channel is composited on white (out = c * a + (1 - a)), which is what transformers'
//     CLIPImageProcessor (torchvision backend) does to RGBA input; grey+alpha likewise;
//   - EXIF orientation is not applied (neither PIL.Image.open nor transformers applies it);
//   - every failure is an slm::Error naming the file: missing, not a regular file, empty, not one
//     of those formats, not decodable, 0 pixels, or more than max_pixels pixels. The format is
//     recognised by its signature and the dimensions are read from its header *before* any
//     decoder runs, so a 30000x30000 bomb is refused without allocating it, and no other codec
//     OpenCV was built with (DICOM, JPEG 2000, Sun raster, HDR, ...) ever sees request bytes
//     (its DICOM reader aborts the process on some malformed input).
//
// ClipPreprocess reproduces transformers' CLIPImageProcessor (transformers 5: the torchvision
// backend, `image_processing_backends.TorchvisionBackend`) on CPU:
//   1. resize so the shortest edge is `shortest_edge` (the long edge int(size * long / short)),
//   with
//      torch's antialiased bicubic on uint8 (`interpolate(mode=bicubic, antialias=True)`, what
//      torchvision's resize runs natively on CPU uint8 tensors) -> uint8;
//   2. center crop to crop_height x crop_width (top = int((h - ch) / 2); zero padding if smaller);
//   3. rescale by rescale_factor and normalise, fused as HF does: (x - mean / f) / (std / f) in
//      float32.
// With resample_backend = kPil the PIL backend is reproduced instead (CLIPImageProcessorPil, the
// "slow" processor of transformers 4.x that LLaVA-1.5 was trained with): Pillow's separable
// bicubic (a = -0.5, support scaled by the downscale factor, 22-bit fixed-point weights, horizontal
// pass then vertical, uint8 rounding between passes), implemented here (PilBicubicResize). The two
// bicubics differ by a grey level at some pixels. The default is transformers 5's default.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace slm::vision {

struct LoadImageOptions {
  int64_t max_pixels = 100'000'000;  // width * height above this is refused
};

// 8-bit RGB (CV_8UC3) image of `path`; slm::Error naming the file for anything unusable.
cv::Mat LoadImage(const std::string& path, const LoadImageOptions& options = {});
// The same for an encoded image file held in memory (PNG, JPEG, ...); `where` names it in errors.
cv::Mat DecodeImage(const std::string& bytes, const std::string& where, const LoadImageOptions& options = {});

// Any 8-bit or 16-bit image with 1-4 channels in OpenCV's channel order (grey, grey+alpha, BGR,
// BGRA) -> 8-bit RGB with the rules above. `where` names the source in errors.
cv::Mat ToRgb8(const cv::Mat& image, const std::string& where);

// Which library's bicubic the resize reproduces.
enum class ClipResample {
  kTorchvision,  // transformers 5 CLIPImageProcessor (torchvision backend): torch AA bicubic, uint8
  kPil,          // CLIPImageProcessorPil / transformers 4's slow processor (LLaVA): Pillow's
                 // Image.resize(BICUBIC, reducing_gap=None), 8-bit fixed point, then float64
                 // rescale -> float32 and float32 (x - mean) / std as transformers' numpy path
};

struct ClipPreprocessOptions {
  ClipResample resample_backend = ClipResample::kTorchvision;
  bool do_resize = true;
  int64_t shortest_edge = 224;
  bool do_center_crop = true;
  int64_t crop_height = 224;
  int64_t crop_width = 224;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<double> image_mean = {0.48145466, 0.4578275, 0.40821073};
  std::vector<double> image_std = {0.26862954, 0.26130258, 0.27577711};

  // From a Hugging Face preprocessor_config.json object (size {"shortest_edge"} or an int,
  // crop_size {"height","width"} or an int, resample must be 3 = bicubic when given). Missing keys
  // keep CLIP's defaults; invalid values are an slm::Error naming `where` and the key.
  static ClipPreprocessOptions FromJson(const nlohmann::json& json, const std::string& where);
  static ClipPreprocessOptions FromFile(const std::string& preprocessor_config_path);
  // A CLIPImageProcessor preprocessor_config.json object (resample 3 = bicubic) that FromJson and
  // transformers read back to these options.
  nlohmann::json ToJson() const;
};

// Pillow's Image.resize(size, BICUBIC) of an 8-bit image (any channel count), as Resample.c.
cv::Mat PilBicubicResize(const cv::Mat& image, int width, int height);

// [3, crop_height, crop_width] float32 pixel values of an 8-bit RGB image (CV_8UC3).
torch::Tensor ClipPreprocess(const cv::Mat& rgb, const ClipPreprocessOptions& options = {});

}  // namespace slm::vision
