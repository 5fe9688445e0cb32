#include "serve/grpc_status.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <string>

#include "core/error.h"

namespace slm::serve {
namespace {

TEST(GrpcStatusTest, SlmErrorIsInvalidArgumentWithItsMessage) {
  const grpc::Status status = ToGrpcStatus(slm::Error("sample_rate_hz 0 is not in [8000, 192000]"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "sample_rate_hz 0 is not in [8000, 192000]");
}

TEST(GrpcStatusTest, StatusErrorKeepsItsCode) {
  for (const grpc::StatusCode code :
       {grpc::StatusCode::NOT_FOUND, grpc::StatusCode::RESOURCE_EXHAUSTED,
        grpc::StatusCode::UNAUTHENTICATED, grpc::StatusCode::FAILED_PRECONDITION,
        grpc::StatusCode::UNIMPLEMENTED, grpc::StatusCode::UNAVAILABLE}) {
    const grpc::Status status = ToGrpcStatus(StatusError(code, "model 'x' is not served"));
    EXPECT_EQ(status.error_code(), code);
    EXPECT_EQ(status.error_message(), "model 'x' is not served");
  }
}

TEST(GrpcStatusTest, StatusErrorIsAnSlmError) {
  try {
    throw StatusError(grpc::StatusCode::RESOURCE_EXHAUSTED, "16 streams already open");
  } catch (const slm::Error& e) {  // code that catches slm::Error still sees it
    EXPECT_STREQ(e.what(), "16 streams already open");
    EXPECT_EQ(ToGrpcStatus(e).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
}

TEST(GrpcStatusTest, StatusErrorNeverReportsOk) {
  const StatusError error(grpc::StatusCode::OK, "not really fine");
  EXPECT_EQ(error.code(), grpc::StatusCode::UNKNOWN);
  EXPECT_FALSE(ToGrpcStatus(error).ok());
}

TEST(GrpcStatusTest, OtherExceptionsAreInternalWithoutDetails) {
  const std::string secret = "CUDA error at /home/build/kernels.cu:42 tensor [3, 4]";
  for (const grpc::Status& status :
       {ToGrpcStatus(std::runtime_error(secret)), ToGrpcStatus(std::logic_error(secret)),
        ToGrpcStatus(std::bad_alloc())}) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
    EXPECT_EQ(status.error_message().find("kernels.cu"), std::string::npos);
    EXPECT_EQ(status.error_message().find("bad_alloc"), std::string::npos);
    EXPECT_NE(status.error_message().find("internal server error"), std::string::npos);
  }
}

TEST(GrpcStatusTest, ExceptionPointerCoversEveryThrownType) {
  auto status_of = [](auto thrown) {
    try {
      throw thrown;
    } catch (...) {
      return ToGrpcStatus(std::current_exception());
    }
  };
  EXPECT_EQ(status_of(slm::Error("bad config")).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status_of(StatusError(grpc::StatusCode::NOT_FOUND, "no adapter 'asr2'")).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status_of(std::out_of_range("vector")).error_code(), grpc::StatusCode::INTERNAL);
  const grpc::Status odd = status_of(42);
  EXPECT_EQ(odd.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(odd.error_message().find("internal server error"), std::string::npos);
  EXPECT_TRUE(ToGrpcStatus(std::exception_ptr()).ok());
}

TEST(GrpcStatusTest, LongMessagesAreCutAtACharacterBoundary) {
  std::string message(kMaxStatusMessageBytes - 4, 'a');
  message += "\xC3\xA9\xC3\xA9\xC3\xA9";  // "ééé": the limit falls inside a character
  const grpc::Status status = ToGrpcStatus(slm::Error(message));
  const std::string& cut = status.error_message();
  EXPECT_LE(cut.size(), kMaxStatusMessageBytes);
  ASSERT_GE(cut.size(), 3u);
  EXPECT_EQ(cut.substr(cut.size() - 3), "...");
  EXPECT_EQ(cut.substr(0, cut.size() - 3), std::string(kMaxStatusMessageBytes - 4, 'a'));

  EXPECT_EQ(TruncateStatusMessage("short", 100), "short");
  EXPECT_EQ(TruncateStatusMessage("abcdefgh", 6), "abc...");
  EXPECT_EQ(TruncateStatusMessage("x\xE2\x96\x81yzw", 6), "x...");  // 3-byte character kept whole
  EXPECT_EQ(TruncateStatusMessage("abcdef", 2), "..");
}

}  // namespace
}  // namespace slm::serve
