// Stand-in for OpenCV's imgcodecs on the GPU machine, where Debian's libopencv_imgcodecs would
// bring GDAL and ~150 MB of dependencies into the carried bundle. The GPU checks feed tensors,
// never image files; any call that would decode or encode an image says so instead of crashing.
#include <opencv2/core.hpp>

#include <string>
#include <vector>

namespace cv {

Mat imdecode(InputArray, int) {
  CV_Error(Error::StsNotImplemented, "image decoding is not available in the GPU bundle (imgcodecs stub)");
}

bool imencode(const String&, InputArray, std::vector<uchar>&, const std::vector<int>&) {
  CV_Error(Error::StsNotImplemented, "image encoding is not available in the GPU bundle (imgcodecs stub)");
}

}  // namespace cv
