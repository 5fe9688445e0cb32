// Speech through the official `openai` Python package (tests/http/openai_speech_check.py) against
// a server in process with a TTS adapter (made here: the committed sample models have none).
#include <cstdlib>

#include "tests/http/http_fixture.h"

namespace slm::http::testing_http {
namespace {

TEST_F(HttpTest, SlowOpenAiPythonPackageSpeaks) {
  const std::string python = SLM_PYTHON;
  if (::access(python.c_str(), X_OK) != 0) GTEST_SKIP() << "no " << python;
  const TtsAdapterFiles tts;
  serve::ServeConfig config = HttpTestConfig();
  config.adapters.push_back(tts.Entry());
  StartHttp(config);
  const std::string command = python + " " + kRoot + "/tests/http/openai_speech_check.py --base-url http://" +
                              server_->HttpAddress() + "/v1 --model tts";
  const int status = std::system(command.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) GTEST_SKIP() << "the openai package is not installed";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command;
}

}  // namespace
}  // namespace slm::http::testing_http
