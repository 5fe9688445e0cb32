// Image decoding (vision/image.h: header size checks, OpenCV's imdecode, conversion to 8-bit RGB)
// of bytes in memory, with the options the server uses for request images (serve/service.cpp).
// Invariant beyond "only slm::Error naming the input": the result is a non-empty CV_8UC3 image
// within max_pixels.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "vision/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string where = "images[0]";
  const slm::vision::LoadImageOptions options;
  slm::fuzz::ExpectCleanRejection(where, [&] {
    const cv::Mat rgb = slm::vision::DecodeImage(bytes, where, options);
    SLM_FUZZ_ASSERT(!rgb.empty() && rgb.type() == CV_8UC3, std::to_string(rgb.type()));
    SLM_FUZZ_ASSERT(int64_t(rgb.rows) * rgb.cols <= options.max_pixels, "too many pixels");
  });
  return 0;
}
