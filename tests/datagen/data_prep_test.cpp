// datagen/data_prep.h: offline generation that a training config triggers (here: the shapes data).
#include "datagen/data_prep.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::datagen {
namespace {

TEST(EnsureShapes, GeneratesOnceAndRefusesADirectoryOfTheOtherCaptionOrder) {
  testing::TempDir tmp;
  const std::string dir = tmp.File("shapes");
  EnsureShapes(dir, 20, 3, 32, 1, false, /*canonical_captions=*/true);
  ASSERT_TRUE(std::filesystem::exists(dir + "/caption_train.jsonl"));
  const std::string captions = fs::ReadFile(dir + "/caption_train.jsonl");
  EnsureShapes(dir, 20, 3, 32, 1, false, true);  // present and matching: left as it is
  EXPECT_EQ(fs::ReadFile(dir + "/caption_train.jsonl"), captions);
  EXPECT_SLM_ERROR(EnsureShapes(dir, 20, 3, 32, 1, false, false), "canonical order but the config asks for drawn");
  EXPECT_EQ(fs::ReadFile(dir + "/caption_train.jsonl"), captions);  // nothing was overwritten
  fs::AtomicWriteString(dir + "/stats.json", "{not json");
  EXPECT_SLM_ERROR(EnsureShapes(dir, 20, 3, 32, 1, false, true), "stats.json: not valid JSON");
}

}  // namespace
}  // namespace slm::datagen
