#include "vision/image.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/hf_config.h"

namespace slm::vision {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

uint32_t Be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
uint32_t Be16(const unsigned char* p) { return (uint32_t(p[0]) << 8) | p[1]; }
uint32_t Le16(const unsigned char* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
int32_t Le32(const unsigned char* p) {
  return int32_t(uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) |
                 (uint32_t(p[3]) << 24));
}

uint32_t Le24(const unsigned char* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16); }

// What DecodeImage lets OpenCV decode: a format recognised by its signature, with the image size
// from its header (width/height -1 when the header does not give one).
struct Header {
  const char* format = nullptr;  // nullptr: not a supported format
  int64_t width = -1, height = -1;
};

// The first marker segment that starts a frame (SOFn) gives the size. Markers are scanned the way
// libjpeg's next_marker does it: bytes other than 0xFF are skipped, 0xFF fill bytes too, and
// standalone markers (RSTn, SOI, TEM) have no length. A scan (SOS) or EOI before any frame
// header leaves the size unknown.
void JpegSize(const std::vector<unsigned char>& b, Header& h) {
  size_t i = 2;
  while (i < b.size()) {
    if (b[i] != 0xFF) {
      ++i;
      continue;
    }
    while (i < b.size() && b[i] == 0xFF) ++i;
    if (i >= b.size()) return;
    const unsigned char marker = b[i++];
    if (marker == 0x00 || marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (marker == 0xD9 || marker == 0xDA || i + 2 > b.size()) return;
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 7 > b.size()) return;
      h.height = Be16(&b[i + 3]);
      h.width = Be16(&b[i + 5]);
      return;
    }
    i += Be16(&b[i]);  // the length counts its own two bytes
  }
}

// PNM (P1-P6): the magic, then width and height as decimal numbers, separated by whitespace and
// '#' comments.
void PnmSize(const std::vector<unsigned char>& b, Header& h) {
  size_t i = 2;
  int64_t values[2] = {-1, -1};
  for (int64_t& v : values) {
    while (i < b.size() && (std::isspace(b[i]) || b[i] == '#')) {
      if (b[i] == '#')
        while (i < b.size() && b[i] != '\n' && b[i] != '\r') ++i;
      else
        ++i;
    }
    size_t digits = 0;
    for (v = 0; i < b.size() && std::isdigit(b[i]) && digits < 10; ++i, ++digits) v = v * 10 + (b[i] - '0');
    if (digits == 0 || (i < b.size() && std::isdigit(b[i]))) return;  // none, or more than 10
  }
  h.width = values[0];
  h.height = values[1];
}

// TIFF: ImageWidth (256) and ImageLength (257) of the first image file directory, the image
// OpenCV decodes. BigTIFF is not supported.
void TiffSize(const std::vector<unsigned char>& b, Header& h) {
  const bool little = b[0] == 'I';
  const auto u16 = [&](uint64_t at) { return little ? Le16(&b[at]) : Be16(&b[at]); };
  const auto u32 = [&](uint64_t at) { return little ? uint32_t(Le32(&b[at])) : Be32(&b[at]); };
  const uint64_t ifd = u32(4);
  if (ifd + 2 > b.size()) return;
  const uint32_t entries = u16(ifd);
  for (uint64_t k = 0; k < entries && ifd + 2 + 12 * (k + 1) <= b.size(); ++k) {
    const uint64_t e = ifd + 2 + 12 * k;
    const uint32_t tag = u16(e), type = u16(e + 2);
    if ((tag != 256 && tag != 257) || (type != 3 && type != 4)) continue;  // 3 SHORT, 4 LONG
    const int64_t value = type == 3 ? u16(e + 8) : u32(e + 8);
    (tag == 256 ? h.width : h.height) = value;
  }
}

Header ReadHeader(const std::vector<unsigned char>& b) {
  Header h;
  const size_t n = b.size();
  const auto starts = [&](const char* magic, size_t at = 0) {
    const size_t len = std::strlen(magic);
    return n >= at + len && std::memcmp(b.data() + at, magic, len) == 0;
  };
  if (starts("\x89PNG\r\n\x1a\n")) {
    h.format = "PNG";
    if (n >= 24 && starts("IHDR", 12)) {
      h.width = Be32(&b[16]);
      h.height = Be32(&b[20]);
    }
  } else if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    h.format = "JPEG";
    JpegSize(b, h);
  } else if (starts("BM")) {
    h.format = "BMP";
    if (n >= 26) {
      if (Le32(&b[14]) == 12) {  // BITMAPCOREHEADER (OS/2 1.x): 16-bit sizes
        h.width = Le16(&b[18]);
        h.height = Le16(&b[20]);
      } else {  // a negative height means top-down rows
        h.width = std::abs(int64_t(Le32(&b[18])));
        h.height = std::abs(int64_t(Le32(&b[22])));
      }
    }
  } else if (starts("RIFF") && starts("WEBP", 8)) {
    h.format = "WebP";
    if (n >= 30 && starts("VP8 ", 12) && b[23] == 0x9D && b[24] == 0x01 && b[25] == 0x2A) {
      h.width = Le16(&b[26]) & 0x3FFF;
      h.height = Le16(&b[28]) & 0x3FFF;
    } else if (n >= 25 && starts("VP8L", 12) && b[20] == 0x2F) {
      const uint32_t bits = uint32_t(Le32(&b[21]));
      h.width = (bits & 0x3FFF) + 1;
      h.height = ((bits >> 14) & 0x3FFF) + 1;
    } else if (n >= 30 && starts("VP8X", 12)) {
      h.width = int64_t(Le24(&b[24])) + 1;
      h.height = int64_t(Le24(&b[27])) + 1;
    }
  } else if (starts("II*\0") || starts("MM\0*")) {
    h.format = "TIFF";
    if (n >= 8) TiffSize(b, h);
  } else if (n >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6' && std::isspace(b[2])) {
    h.format = "PNM";
    PnmSize(b, h);
  }
  return h;
}

void CheckPixels(int64_t width, int64_t height, const LoadImageOptions& options,
                 const std::string& path) {
  Check(width > 0 && height > 0, path, ": image has no pixels (", width, "x", height, ")");
  // Header dimensions reach 2^32 - 1 each, so their product overflows int64_t (not uint64_t).
  Check(width <= options.max_pixels && height <= options.max_pixels / width, path, ": image is ",
        width, "x", height, " = ", static_cast<uint64_t>(width) * static_cast<uint64_t>(height),
        " pixels, more than the limit of ", options.max_pixels);
}

// preprocessor_config.json values through the one Hugging Face config reader (core/hf_config.h).
using hf_config::Field;

// Pillow's Resample.c (ImagingResample, 8 bits per channel) for the bicubic filter.
struct PilCoefficients {
  std::vector<int> xmin, xsize;
  std::vector<int32_t> k;  // out_size x ksize, fixed point
  int ksize = 0;
};

double PilBicubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

constexpr int kPrecisionBits = 32 - 8 - 2;

PilCoefficients PilPrecompute(int in_size, int out_size) {
  const double support_base = 2.0;  // bicubic
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = support_base * filterscale;
  PilCoefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(out_size);
  c.xsize.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = PilBicubic((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      c.k[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.xmin[xx] = xmin;
    c.xsize[xx] = xmax;
  }
  return c;
}

uint8_t PilClip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One separable pass along `horizontal` (columns) or rows, 8-bit, any channel count.
cv::Mat PilPass(const cv::Mat& in, int out_size, bool horizontal) {
  const int channels = in.channels();
  const int in_size = horizontal ? in.cols : in.rows;
  const PilCoefficients c = PilPrecompute(in_size, out_size);
  cv::Mat out(horizontal ? in.rows : out_size, horizontal ? out_size : in.cols, in.type());
  for (int y = 0; y < out.rows; ++y) {
    uint8_t* dst = out.ptr<uint8_t>(y);
    for (int x = 0; x < out.cols; ++x) {
      const int o = horizontal ? x : y;
      const int32_t* k = &c.k[static_cast<size_t>(o) * c.ksize];
      for (int ch = 0; ch < channels; ++ch) {
        int64_t ss = int64_t(1) << (kPrecisionBits - 1);
        for (int i = 0; i < c.xsize[o]; ++i) {
          const int src = c.xmin[o] + i;
          const uint8_t v = horizontal ? in.ptr<uint8_t>(y)[src * channels + ch]
                                       : in.ptr<uint8_t>(src)[x * channels + ch];
          ss += int64_t(v) * k[i];
        }
        dst[x * channels + ch] = PilClip8(ss);
      }
    }
  }
  return out;
}

}  // namespace

cv::Mat PilBicubicResize(const cv::Mat& image, int width, int height) {
  Check(!image.empty() && image.depth() == CV_8U, "PilBicubicResize: expected an 8-bit image");
  Check(width > 0 && height > 0, "PilBicubicResize: target size must be positive");
  cv::Mat out = image.isContinuous() ? image : image.clone();
  // Pillow: horizontal pass first when the width changes, then vertical when the height does.
  if (width != out.cols) out = PilPass(out, width, /*horizontal=*/true);
  if (height != out.rows) out = PilPass(out, height, /*horizontal=*/false);
  return out;
}

cv::Mat ToRgb8(const cv::Mat& image, const std::string& where) {
  Check(!image.empty(), where, ": image has no pixels");
  cv::Mat eight;
  switch (image.depth()) {
    case CV_8U:
      eight = image;
      break;
    case CV_16U:
      image.convertTo(eight, CV_8U, 1.0 / 257.0);  // 65535 -> 255, rounded
      break;
    case CV_32F:
    case CV_64F:
      image.convertTo(eight, CV_8U, 255.0);  // saturating: [0, 1] -> [0, 255]
      break;
    default:
      throw Error(Str(where, ": unsupported pixel depth (OpenCV depth ", image.depth(),
                      "); expected 8-bit, 16-bit or float"));
  }
  const int channels = eight.channels();
  cv::Mat rgb;
  if (channels == 1) {
    cv::cvtColor(eight, rgb, cv::COLOR_GRAY2RGB);
  } else if (channels == 3) {
    cv::cvtColor(eight, rgb, cv::COLOR_BGR2RGB);
  } else if (channels == 2 || channels == 4) {
    // Alpha on white, as transformers' torchvision backend: floats in [0, 1], c * a + (1 - a),
    // back to uint8 as torchvision's to_dtype(scale=True) does (v * (256 - 1e-3), truncated).
    std::vector<cv::Mat> planes;
    cv::split(eight, planes);
    cv::Mat alpha;
    planes.back().convertTo(alpha, CV_32F, 1.0 / 255.0);
    const cv::Mat one_minus = 1.0f - alpha;
    std::vector<cv::Mat> out;
    const int colour = channels == 2 ? 1 : 3;
    for (int c = 0; c < colour; ++c) {
      cv::Mat v;
      planes[c].convertTo(v, CV_32F, 1.0 / 255.0);
      v = v.mul(alpha) + one_minus;
      v *= 256.0f - 1e-3f;
      cv::Mat truncated(v.size(), CV_8U);
      for (int r = 0; r < v.rows; ++r) {
        const float* src = v.ptr<float>(r);
        uint8_t* dst = truncated.ptr<uint8_t>(r);
        for (int x = 0; x < v.cols; ++x)
          dst[x] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, src[x])));
      }
      out.push_back(truncated);
    }
    if (colour == 1) {
      cv::cvtColor(out[0], rgb, cv::COLOR_GRAY2RGB);
    } else {
      cv::Mat bgr;
      cv::merge(out, bgr);
      cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    }
  } else {
    throw Error(Str(where, ": unsupported channel count ", channels, " (expected 1-4)"));
  }
  return rgb;
}

cv::Mat LoadImage(const std::string& path, const LoadImageOptions& options) {
  std::error_code ec;
  Check(stdfs::exists(path, ec), path, ": image file does not exist");
  Check(stdfs::is_regular_file(path, ec), path, ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  Check(in.good(), path, ": cannot open image file");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Check(!bytes.empty(), path, ": image file is empty");
  return DecodeImage(bytes, path, options);
}

cv::Mat DecodeImage(const std::string& data, const std::string& where, const LoadImageOptions& options) {
  Check(!data.empty(), where, ": image is empty");
  const std::vector<unsigned char> bytes(data.begin(), data.end());
  const Header header = ReadHeader(bytes);
  if (header.format == nullptr) {
    std::string start;
    for (size_t i = 0; i < std::min<size_t>(bytes.size(), 8); ++i) start += Str(i ? " " : "", std::hex, int(bytes[i]));
    throw Error(Str(where, ": not a supported image format (PNG, JPEG, BMP, WebP, TIFF or PNM; the file ",
                    "starts with bytes ", start, ")"));
  }
  Check(header.width >= 0 && header.height >= 0, where, ": not a readable image (a ", header.format,
        " header without the image size)");
  CheckPixels(header.width, header.height, options, where);
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(bytes, cv::IMREAD_UNCHANGED);  // also: no EXIF rotation
  } catch (const cv::Exception& e) {
    throw Error(Str(where, ": not a readable image (", e.what(), ")"));
  }
  Check(!decoded.empty(), where, ": not a readable image (corrupt or unsupported format)");
  CheckPixels(decoded.cols, decoded.rows, options, where);
  return ToRgb8(decoded, where);
}

ClipPreprocessOptions ClipPreprocessOptions::FromJson(const json& j, const std::string& where) {
  Check(j.is_object(), where, ": expected a JSON object");
  ClipPreprocessOptions o;
  auto positive = [&](const json& v, const std::string& key) {
    Check(v.is_number_integer() && v.get<int64_t>() > 0, where, ": \"", key,
          "\" must be a positive integer, got ", v.dump());
    return v.get<int64_t>();
  };
  o.do_resize = hf_config::OptionalBool(j, "do_resize", where, o.do_resize);
  o.do_center_crop = hf_config::OptionalBool(j, "do_center_crop", where, o.do_center_crop);
  o.do_rescale = hf_config::OptionalBool(j, "do_rescale", where, o.do_rescale);
  o.do_normalize = hf_config::OptionalBool(j, "do_normalize", where, o.do_normalize);
  if (const json* v = Field(j, "size")) {
    if (v->is_object()) {
      const json* s = Field(*v, "shortest_edge");
      Check(s != nullptr, where,
            ": \"size\" must have \"shortest_edge\" (CLIP resizes the shortest", " edge), got ",
            v->dump());
      o.shortest_edge = positive(*s, "size.shortest_edge");
    } else {
      o.shortest_edge = positive(*v, "size");
    }
  }
  if (const json* v = Field(j, "crop_size")) {
    if (v->is_object()) {
      const json* h = Field(*v, "height");
      const json* w = Field(*v, "width");
      Check(h && w, where, ": \"crop_size\" must have \"height\" and \"width\", got ", v->dump());
      o.crop_height = positive(*h, "crop_size.height");
      o.crop_width = positive(*w, "crop_size.width");
    } else {
      o.crop_height = o.crop_width = positive(*v, "crop_size");
    }
  }
  if (const json* v = Field(j, "resample"))
    Check(v->is_number_integer() && v->get<int>() == 3, where,
          ": \"resample\" must be 3 (bicubic), the only resampling implemented; got ", v->dump());
  if (const json* v = Field(j, "rescale_factor")) {
    Check(v->is_number() && v->get<double>() > 0, where,
          ": \"rescale_factor\" must be a positive number, got ", v->dump());
    o.rescale_factor = v->get<double>();
  }
  auto triple = [&](const char* key, std::vector<double>* out, bool positive_only) {
    if (const json* v = Field(j, key)) {
      bool ok = v->is_array() && v->size() == 3;
      for (size_t i = 0; ok && i < 3; ++i)
        ok = (*v)[i].is_number() && (!positive_only || (*v)[i].get<double>() > 0);
      Check(ok, where, ": \"", key, "\" must be 3 ", positive_only ? "positive " : "",
            "numbers, got ", v->dump());
      *out = v->get<std::vector<double>>();
    }
  };
  triple("image_mean", &o.image_mean, false);
  triple("image_std", &o.image_std, true);
  return o;
}

json ClipPreprocessOptions::ToJson() const {
  return {{"image_processor_type", "CLIPImageProcessor"},
          {"do_resize", do_resize},
          {"size", {{"shortest_edge", shortest_edge}}},
          {"resample", 3},
          {"do_center_crop", do_center_crop},
          {"crop_size", {{"height", crop_height}, {"width", crop_width}}},
          {"do_rescale", do_rescale},
          {"rescale_factor", rescale_factor},
          {"do_normalize", do_normalize},
          {"image_mean", image_mean},
          {"image_std", image_std},
          {"do_convert_rgb", true}};
}

ClipPreprocessOptions ClipPreprocessOptions::FromFile(const std::string& path) {
  return FromJson(fs::ReadJson(path), path);
}

// transformers' PIL/numpy backend: PIL resize, numpy center crop, float64 rescale stored as
// float32, float32 normalisation.
static torch::Tensor ClipPreprocessPil(const cv::Mat& rgb, const ClipPreprocessOptions& o) {
  cv::Mat image = rgb;
  if (o.do_resize) {
    const int64_t height = rgb.rows, width = rgb.cols;
    const int64_t short_side = std::min(height, width), long_side = std::max(height, width);
    const int64_t new_long = static_cast<int64_t>(static_cast<double>(o.shortest_edge * long_side) /
                                                  static_cast<double>(short_side));
    const int64_t new_h = width <= height ? new_long : o.shortest_edge;
    const int64_t new_w = width <= height ? o.shortest_edge : new_long;
    image = PilBicubicResize(rgb, static_cast<int>(new_w), static_cast<int>(new_h));
  }
  torch::Tensor x = torch::from_blob(image.data, {image.rows, image.cols, 3}, torch::kUInt8)
                        .permute({2, 0, 1})
                        .clone();
  if (o.do_center_crop) {
    const int64_t h = x.size(1), w = x.size(2);
    Check(o.crop_height <= h && o.crop_width <= w,
          "ClipPreprocess (PIL backend): crop larger than the resized image is not implemented");
    const int64_t top = (h - o.crop_height) / 2, left = (w - o.crop_width) / 2;
    x = x.slice(1, top, top + o.crop_height).slice(2, left, left + o.crop_width);
  }
  torch::Tensor out = o.do_rescale ? (x.to(torch::kDouble) * o.rescale_factor).to(torch::kFloat)
                                   : x.to(torch::kFloat);
  if (o.do_normalize) {
    const torch::Tensor mean = torch::tensor(o.image_mean, torch::kDouble).to(torch::kFloat);
    const torch::Tensor std = torch::tensor(o.image_std, torch::kDouble).to(torch::kFloat);
    out = (out - mean.view({3, 1, 1})) / std.view({3, 1, 1});
  }
  return out.contiguous();
}

torch::Tensor ClipPreprocess(const cv::Mat& rgb, const ClipPreprocessOptions& o) {
  Check(!rgb.empty() && rgb.rows > 0 && rgb.cols > 0, "ClipPreprocess: empty image");
  Check(rgb.type() == CV_8UC3, "ClipPreprocess: expected an 8-bit RGB image (CV_8UC3), got type ",
        rgb.type(), " with ", rgb.channels(), " channels (use LoadImage or ToRgb8)");
  Check(o.image_mean.size() == 3 && o.image_std.size() == 3,
        "ClipPreprocess: image_mean and image_std need 3 values");
  if (o.resample_backend == ClipResample::kPil) return ClipPreprocessPil(rgb, o);
  const cv::Mat contiguous = rgb.isContinuous() ? rgb : rgb.clone();
  // [H, W, 3] uint8 -> [1, 3, H, W]
  torch::Tensor image = torch::from_blob(contiguous.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8)
                            .permute({2, 0, 1})
                            .contiguous()
                            .unsqueeze(0);
  if (o.do_resize) {
    const int64_t height = rgb.rows, width = rgb.cols;
    const int64_t short_side = std::min(height, width), long_side = std::max(height, width);
    const int64_t new_short = o.shortest_edge;
    // Python: int(size * long / short), a float division truncated.
    const int64_t new_long = static_cast<int64_t>(static_cast<double>(new_short * long_side) /
                                                  static_cast<double>(short_side));
    const int64_t new_h = width <= height ? new_long : new_short;
    const int64_t new_w = width <= height ? new_short : new_long;
    if (new_h != height || new_w != width) {
      image =
          torch::nn::functional::interpolate(image, torch::nn::functional::InterpolateFuncOptions()
                                                        .size(std::vector<int64_t>{new_h, new_w})
                                                        .mode(torch::kBicubic)
                                                        .align_corners(false)
                                                        .antialias(true));
    } else {
      // torchvision resizes even to the same size; torch's kernel is then the identity.
    }
  }
  if (o.do_center_crop) {
    int64_t h = image.size(2), w = image.size(3);
    const int64_t ch = o.crop_height, cw = o.crop_width;
    if (cw > w || ch > h) {
      const int64_t left = cw > w ? (cw - w) / 2 : 0, top = ch > h ? (ch - h) / 2 : 0;
      const int64_t right = cw > w ? (cw - w + 1) / 2 : 0, bottom = ch > h ? (ch - h + 1) / 2 : 0;
      image = torch::constant_pad_nd(image, {left, right, top, bottom}, 0);
      h = image.size(2);
      w = image.size(3);
    }
    const int64_t top = static_cast<int64_t>((h - ch) / 2.0);
    const int64_t left = static_cast<int64_t>((w - cw) / 2.0);
    image = image.slice(2, top, top + ch).slice(3, left, left + cw);
  }
  torch::Tensor out;
  if (o.do_normalize) {
    torch::Tensor mean = torch::tensor(o.image_mean, torch::kFloat);
    torch::Tensor std = torch::tensor(o.image_std, torch::kFloat);
    if (o.do_rescale) {  // fused as transformers: mean / f, std / f (in float32)
      mean = mean * (1.0 / o.rescale_factor);
      std = std * (1.0 / o.rescale_factor);
    }
    out = (image.to(torch::kFloat) - mean.view({1, 3, 1, 1})) / std.view({1, 3, 1, 1});
  } else if (o.do_rescale) {
    out = image.to(torch::kFloat) * o.rescale_factor;
  } else {
    out = image.to(torch::kFloat);
  }
  return out.squeeze(0).contiguous();
}

}  // namespace slm::vision
