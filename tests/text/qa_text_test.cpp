#include "text/qa_text.h"

#include <gtest/gtest.h>

namespace slm::text {
namespace {

TEST(QaText, OneTextFormatForQuestionsAndAnswers) {
  EXPECT_EQ(QaPromptText(" what is a dog "), "what is a dog?");
  EXPECT_EQ(QaTrainingText("what is a dog", "a member of the genus Canis "), "what is a dog? a member of the genus Canis");
  EXPECT_EQ(NormalizeAnswer("  A member of\tthe  genus Canis. "), "a member of the genus canis");
  EXPECT_EQ(NormalizeAnswer("light;"), "light");
  EXPECT_EQ(NormalizeAnswer(""), "");
}

}  // namespace
}  // namespace slm::text
