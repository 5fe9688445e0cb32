#include "vision/image.h"

#include <gtest/gtest.h>

#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "core/error.h"
#include "tests/test_util.h"

namespace slm::vision {
namespace {

using slm::testing::ErrorOf;
using slm::testing::TempDir;

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A PNG signature and IHDR chunk declaring width x height (no pixel data: only the header).
std::string PngHeader(uint32_t width, uint32_t height) {
  std::string b = "\x89PNG\r\n\x1a\n";
  b += std::string("\0\0\0\x0d", 4) + "IHDR";
  for (uint32_t v : {width, height})
    for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((v >> s) & 0xFF);
  b += std::string("\x08\x02\0\0\0", 5) + std::string("\0\0\0\0", 4);
  return b;
}

cv::Vec3b At(const cv::Mat& m, int r, int c) { return m.at<cv::Vec3b>(r, c); }

TEST(LoadImage, ColourPngIsRgb) {
  TempDir dir;
  cv::Mat bgr(20, 30, CV_8UC3, cv::Scalar(255, 0, 0));  // blue in OpenCV's BGR
  ASSERT_TRUE(cv::imwrite(dir.File("a.png"), bgr));
  const cv::Mat rgb = LoadImage(dir.File("a.png"));
  EXPECT_EQ(rgb.type(), CV_8UC3);
  EXPECT_EQ(rgb.rows, 20);
  EXPECT_EQ(rgb.cols, 30);
  EXPECT_EQ(At(rgb, 3, 4), cv::Vec3b(0, 0, 255));
}

TEST(LoadImage, GreyBecomesRgb) {
  TempDir dir;
  cv::Mat grey(10, 12, CV_8UC1, cv::Scalar(77));
  ASSERT_TRUE(cv::imwrite(dir.File("g.png"), grey));
  const cv::Mat rgb = LoadImage(dir.File("g.png"));
  EXPECT_EQ(rgb.type(), CV_8UC3);
  EXPECT_EQ(At(rgb, 5, 5), cv::Vec3b(77, 77, 77));
}

TEST(LoadImage, SixteenBitBecomesEightBit) {
  TempDir dir;
  cv::Mat deep(8, 8, CV_16UC3, cv::Scalar(65535, 257 * 100, 0));  // B, G, R
  ASSERT_TRUE(cv::imwrite(dir.File("d.png"), deep));
  const cv::Mat rgb = LoadImage(dir.File("d.png"));
  EXPECT_EQ(rgb.type(), CV_8UC3);
  EXPECT_EQ(At(rgb, 1, 1), cv::Vec3b(0, 100, 255));
  cv::Mat grey16(4, 4, CV_16UC1, cv::Scalar(257 * 42));
  ASSERT_TRUE(cv::imwrite(dir.File("g16.png"), grey16));
  EXPECT_EQ(At(LoadImage(dir.File("g16.png")), 0, 0), cv::Vec3b(42, 42, 42));
}

TEST(LoadImage, AlphaIsCompositedOnWhite) {
  TempDir dir;
  cv::Mat bgra(4, 4, CV_8UC4, cv::Scalar(0, 0, 255, 255));  // opaque red
  bgra.at<cv::Vec4b>(0, 0) = cv::Vec4b(0, 0, 255, 0);       // transparent -> white
  bgra.at<cv::Vec4b>(1, 1) = cv::Vec4b(0, 0, 0, 128);       // half black -> grey
  ASSERT_TRUE(cv::imwrite(dir.File("a.png"), bgra));
  const cv::Mat rgb = LoadImage(dir.File("a.png"));
  EXPECT_EQ(rgb.type(), CV_8UC3);
  EXPECT_EQ(At(rgb, 2, 2), cv::Vec3b(255, 0, 0));
  EXPECT_EQ(At(rgb, 0, 0), cv::Vec3b(255, 255, 255));
  const cv::Vec3b half = At(rgb, 1, 1);
  EXPECT_NEAR(half[0], 127, 1);
  EXPECT_EQ(half[0], half[1]);
}

TEST(LoadImage, BadFilesNameTheFile) {
  TempDir dir;
  const std::string missing = dir.File("missing.png");
  std::string e = ErrorOf([&] { LoadImage(missing); });
  EXPECT_NE(e.find(missing), std::string::npos) << e;
  EXPECT_NE(e.find("image file does not exist"), std::string::npos) << e;

  EXPECT_SLM_ERROR(LoadImage(dir.path()), "not a regular file");

  WriteBytes(dir.File("empty.png"), "");
  EXPECT_SLM_ERROR(LoadImage(dir.File("empty.png")), "empty.png: image file is empty");

  WriteBytes(dir.File("text.jpg"), "this is not an image at all, just some text");
  EXPECT_SLM_ERROR(LoadImage(dir.File("text.jpg")),
                   "text.jpg: not a supported image format (PNG, JPEG, BMP, WebP, TIFF or PNM; the "
                   "file starts with bytes 74 68 69 73 20 69 73 20)");

  WriteBytes(dir.File("truncated.png"), PngHeader(64, 64) + "garbage");
  EXPECT_SLM_ERROR(LoadImage(dir.File("truncated.png")), "truncated.png: not a readable image");

  WriteBytes(dir.File("zero.png"), PngHeader(0, 10));
  EXPECT_SLM_ERROR(LoadImage(dir.File("zero.png")), "zero.png: image has no pixels (0x10)");

  // Refused from the header alone: nothing of the 900-megapixel image is decoded.
  WriteBytes(dir.File("bomb.png"), PngHeader(30000, 30000));
  e = ErrorOf([&] { LoadImage(dir.File("bomb.png")); });
  EXPECT_NE(e.find("bomb.png: image is 30000x30000 = 900000000 pixels, more than the limit"),
            std::string::npos)
      << e;
}

// Fuzz finding (fuzz/regressions/image/): PNG header sizes reach 2^32 - 1, and width * height
// overflowed int64_t (undefined; it could wrap below the limit).
TEST(LoadImage, HugeHeaderSizesDoNotOverflowTheCheck) {
  const std::string png = PngHeader(0xBEBEBEBE, 0xBEBEBEBE);
  EXPECT_SLM_ERROR(DecodeImage(png, "images[0]"),
                   "images[0]: image is 3200171710x3200171710 = 10241098973484324100 pixels, more "
                   "than the limit");
  EXPECT_SLM_ERROR(DecodeImage(PngHeader(0xFFFFFFFF, 1), "x"), "more than the limit");
}

// Every supported format decodes, and its header's size is what OpenCV decodes: with a cap one
// pixel short, the message names the true size.
TEST(LoadImage, EverySupportedFormatDecodesAndIsSizedFromItsHeader) {
  const cv::Mat bgr(5, 7, CV_8UC3, cv::Scalar(10, 20, 30)), grey(5, 7, CV_8UC1, cv::Scalar(200));
  for (const std::string ext : {".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".pbm"}) {
    std::vector<unsigned char> encoded;
    ASSERT_TRUE(cv::imencode(ext, ext == ".pgm" || ext == ".pbm" ? grey : bgr, encoded)) << ext;
    const std::string bytes(encoded.begin(), encoded.end());
    const cv::Mat rgb = DecodeImage(bytes, ext);
    EXPECT_EQ(rgb.cols, 7) << ext;
    EXPECT_EQ(rgb.rows, 5) << ext;
    LoadImageOptions options;
    options.max_pixels = 34;
    EXPECT_SLM_ERROR(DecodeImage(bytes, ext, options), "image is 7x5 = 35 pixels, more than the limit");
  }
}

// A fuzz finding (fuzz/regressions/image/dicom_gdcm_abort): 135 bytes that OpenCV handed to its
// DICOM reader (GDCM), which aborted the process. Found by review and confirmed with the image
// target (ppm_bomb): a 20-byte PPM declaring 30000x30000, for which OpenCV allocated 2.7 GB before
// decoding (only PNG, JPEG, BMP and GIF headers were checked). Now only the supported formats
// reach OpenCV, each sized from its header first.
TEST(LoadImage, OtherFormatsAndBombsNeverReachADecoder) {
  std::string dicom(135, '\xff');
  dicom[1] = '\x2e';
  dicom.replace(128, 4, "DICM");
  EXPECT_SLM_ERROR(DecodeImage(dicom, "images[1]"), "images[1]: not a supported image format");
  const std::string pnm = "P6\n# comment\n30000 30000\n255\nabc";
  EXPECT_SLM_ERROR(DecodeImage(pnm, "p"), "p: image is 30000x30000 = 900000000 pixels, more than");
  std::string bmp = "BM" + std::string(24, '\0');
  bmp[14] = 40;
  for (int at : {18, 22}) bmp.replace(at, 4, std::string("\x30\x75\0\0", 4));  // 30000
  EXPECT_SLM_ERROR(DecodeImage(bmp, "b"), "b: image is 30000x30000");
  // VP8L: 14-bit width-1 and height-1, here 16384 x 16384.
  const std::string webp = "RIFF" + std::string(4, '\0') + "WEBPVP8L" + std::string(4, '\0') +
                           "\x2f\xff\xff\xff\x0f";
  EXPECT_SLM_ERROR(DecodeImage(webp, "w"), "w: image is 16384x16384");
  // Little-endian TIFF, first IFD at 8: ImageWidth and ImageLength as LONGs.
  std::string tiff("II*\0\x08\0\0\0\x02\0", 10);
  tiff += std::string("\x00\x01\x04\x00\x01\x00\x00\x00\x30\x75\x00\x00", 12);
  tiff += std::string("\x01\x01\x03\x00\x01\x00\x00\x00\x30\x75\x00\x00", 12);
  EXPECT_SLM_ERROR(DecodeImage(tiff, "t"), "t: image is 30000x30000");
  // JPEG: SOI, a JFIF APP0 segment, a fill byte, then SOF0 with height 30000 and width 20000.
  std::string jpeg("\xff\xd8\xff\xe0\x00\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xff", 21);
  jpeg += std::string("\xff\xc0\x00\x11\x08\x75\x30\x4e\x20\x03", 10) + std::string(20, '\0');
  EXPECT_SLM_ERROR(DecodeImage(jpeg, "j"), "j: image is 20000x30000");
  // A JPEG whose frame header cannot be found before the scan is not decoded at all.
  const std::string no_frame("\xff\xd8\xff\xda\x00\x02garbage", 13);
  EXPECT_SLM_ERROR(DecodeImage(no_frame, "n"), "n: not a readable image (a JPEG header without the image size)");
}

TEST(LoadImage, PixelCapAppliesAfterDecodingToo) {
  TempDir dir;
  ASSERT_TRUE(cv::imwrite(dir.File("a.ppm"), cv::Mat(20, 20, CV_8UC3, cv::Scalar(1, 2, 3))));
  LoadImageOptions options;
  options.max_pixels = 100;
  EXPECT_SLM_ERROR(LoadImage(dir.File("a.ppm"), options), "more than the limit of 100");
}

TEST(ClipPreprocess, ShapesForNonSquareImages) {
  for (auto [w, h] :
       {std::pair{300, 200}, std::pair{150, 260}, std::pair{224, 224}, std::pair{1000, 50}}) {
    cv::Mat rgb(h, w, CV_8UC3);
    cv::randu(rgb, 0, 256);
    const torch::Tensor x = ClipPreprocess(rgb);
    EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 224, 224})) << w << "x" << h;
    EXPECT_EQ(x.scalar_type(), torch::kFloat);
  }
}

TEST(ClipPreprocess, UniformImageIsNormalisedWithClipMeanAndStd) {
  cv::Mat rgb(300, 400, CV_8UC3, cv::Scalar(10, 128, 250));
  const torch::Tensor x = ClipPreprocess(rgb);
  const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
  const double stdev[3] = {0.26862954, 0.26130258, 0.27577711};
  const double value[3] = {10, 128, 250};
  for (int c = 0; c < 3; ++c) {
    const double expected = (value[c] / 255.0 - mean[c]) / stdev[c];
    EXPECT_NEAR(x[c].min().item<double>(), expected, 1e-5);
    EXPECT_NEAR(x[c].max().item<double>(), expected, 1e-5);
  }
}

TEST(ClipPreprocess, PilBicubicResize) {
  cv::Mat rgb(37, 53, CV_8UC3);
  cv::randu(rgb, 0, 256);
  const cv::Mat same = PilBicubicResize(rgb, 53, 37);
  EXPECT_EQ(cv::norm(same, rgb, cv::NORM_INF), 0.0);
  cv::Mat flat(40, 60, CV_8UC3, cv::Scalar(9, 99, 199));
  for (auto [w, h] : {std::pair{20, 13}, std::pair{90, 61}, std::pair{7, 200}}) {
    const cv::Mat out = PilBicubicResize(flat, w, h);
    EXPECT_EQ(out.cols, w);
    EXPECT_EQ(out.rows, h);
    EXPECT_EQ(cv::norm(out, cv::Mat(h, w, CV_8UC3, cv::Scalar(9, 99, 199)), cv::NORM_INF), 0.0);
  }
  ClipPreprocessOptions o;
  o.resample_backend = ClipResample::kPil;
  const torch::Tensor x = ClipPreprocess(rgb, o);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 224, 224}));
  // The two backends agree to within two grey levels (rounding between passes differs).
  EXPECT_LE((x - ClipPreprocess(rgb)).abs().max().item<double>(), 2.5 / 255 / 0.26);
}

TEST(ClipPreprocess, OptionsAndErrors) {
  ClipPreprocessOptions o;
  o.do_resize = false;
  o.do_center_crop = false;
  o.do_normalize = false;
  cv::Mat rgb(5, 7, CV_8UC3, cv::Scalar(255, 0, 51));
  const torch::Tensor x = ClipPreprocess(rgb, o);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 5, 7}));
  EXPECT_NEAR(x[0][0][0].item<float>(), 1.0f, 1e-7);
  EXPECT_NEAR(x[2][0][0].item<float>(), 0.2f, 1e-7);
  // A crop larger than the image pads with zeros, centred.
  o.do_center_crop = true;
  o.crop_height = 9;
  o.crop_width = 7;
  const torch::Tensor padded = ClipPreprocess(rgb, o);
  EXPECT_EQ(padded.sizes(), (std::vector<int64_t>{3, 9, 7}));
  EXPECT_EQ(padded[0][0][0].item<float>(), 0.0f);
  EXPECT_NEAR(padded[0][2][0].item<float>(), 1.0f, 1e-7);

  EXPECT_SLM_ERROR(ClipPreprocess(cv::Mat(4, 4, CV_8UC1)), "expected an 8-bit RGB image");
  EXPECT_SLM_ERROR(ClipPreprocess(cv::Mat()), "empty image");
}

TEST(ClipPreprocess, OptionsFromPreprocessorConfig) {
  const auto o = ClipPreprocessOptions::FromJson(
      nlohmann::json::parse(R"({"size": {"shortest_edge": 336}, "crop_size": {"height": 336,
        "width": 336}, "resample": 3, "image_mean": [0.5, 0.5, 0.5], "do_normalize": true,
        "image_processor_type": "CLIPImageProcessor"})"),
      "pp.json");
  EXPECT_EQ(o.shortest_edge, 336);
  EXPECT_EQ(o.crop_width, 336);
  EXPECT_EQ(o.image_mean[1], 0.5);
  EXPECT_EQ(o.image_std[0], 0.26862954);
  EXPECT_EQ(ClipPreprocessOptions::FromJson(nlohmann::json::parse(R"({"size": 256,
        "crop_size": 240})"),
                                            "p")
                .crop_height,
            240);
  EXPECT_SLM_ERROR(
      ClipPreprocessOptions::FromJson(nlohmann::json::parse(R"({"resample": 2})"), "pp.json"),
      "pp.json: \"resample\" must be 3 (bicubic)");
  EXPECT_SLM_ERROR(
      ClipPreprocessOptions::FromJson(nlohmann::json::parse(R"({"image_std": [1, 0, 1]})"), "p"),
      "\"image_std\" must be 3 positive numbers");
  EXPECT_SLM_ERROR(ClipPreprocessOptions::FromJson(
                       nlohmann::json::parse(R"({"size": {"height": 3, "width": 3}})"), "p"),
                   "must have \"shortest_edge\"");
  TempDir dir;
  WriteBytes(dir.File("bad.json"), "{nope");
  EXPECT_SLM_ERROR(ClipPreprocessOptions::FromFile(dir.File("bad.json")), "not valid JSON");
}

}  // namespace
}  // namespace slm::vision

namespace slm::vision {
namespace {

TEST(ClipPreprocess, OptionsWrittenAsJsonReadBack) {
  ClipPreprocessOptions o;
  o.shortest_edge = 64;
  o.crop_height = o.crop_width = 64;
  o.image_mean = {0.1, 0.2, 0.3};
  const ClipPreprocessOptions back = ClipPreprocessOptions::FromJson(o.ToJson(), "written");
  EXPECT_EQ(back.shortest_edge, 64);
  EXPECT_EQ(back.crop_width, 64);
  EXPECT_EQ(back.image_mean, o.image_mean);
  EXPECT_EQ(back.image_std, o.image_std);
  EXPECT_EQ(o.ToJson()["image_processor_type"], "CLIPImageProcessor");
}

}  // namespace
}  // namespace slm::vision
