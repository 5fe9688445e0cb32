#include "train/metrics.h"

#include <gtest/gtest.h>

namespace slm::train {
namespace {

TEST(Metrics, NormalisationIgnoresCaseAndPunctuation) {
  EXPECT_EQ(NormalizeForScoring("  The well-known CAT, don't 'quote'!  "),
            "the well known cat don't quote");
  EXPECT_EQ(NormalizeForScoring("..."), "");
}

TEST(Metrics, WordErrorBreakdown) {
  // ref: the cat sat on the mat ; hyp: the bat sat the mat down
  const EditCounts c = WordErrors("The cat sat on the mat.", "the bat sat the mat down");
  EXPECT_EQ(c.reference_length, 6);
  EXPECT_EQ(c.substitutions, 1);  // cat -> bat
  EXPECT_EQ(c.deletions, 1);      // on
  EXPECT_EQ(c.insertions, 1);     // down
  EXPECT_DOUBLE_EQ(c.Rate(), 0.5);
  EXPECT_DOUBLE_EQ(WordErrors("Hello, world", "hello world").Rate(), 0.0);
}

TEST(Metrics, CorpusRateSumsEditsNotRatios) {
  EditCounts total;
  total += WordErrors("a b c d e f g h i j", "a b c d e f g h i j");  // 0 / 10
  total += WordErrors("x", "y");                                      // 1 / 1
  EXPECT_NEAR(total.Rate(), 1.0 / 11.0, 1e-12);  // a mean of ratios would say 0.5
}

TEST(Metrics, CharacterErrorRateAndEmptyReference) {
  EXPECT_DOUBLE_EQ(CharErrors("abcd", "abed").Rate(), 0.25);
  EXPECT_DOUBLE_EQ(WordErrors("", "").Rate(), 0.0);
  EXPECT_DOUBLE_EQ(WordErrors("", "extra words").Rate(), 1.0);
  EXPECT_DOUBLE_EQ(WordErrors("one two", "").Rate(), 1.0);
}

TEST(Metrics, CaptionAttributesNormaliseThePhrasing) {
  const std::vector<std::string> scene = {"red", "circle", "above", "blue", "square"};
  EXPECT_EQ(CaptionAttributes("a red circle above a blue square"), scene);
  EXPECT_EQ(CaptionAttributes("A blue square below a red circle."), scene);
  EXPECT_EQ(CaptionAttributes("an orange star right of a white cross"),
            (std::vector<std::string>{"white", "cross", "left of", "orange", "star"}));
  // The relation slot scores the axis: "above" for a horizontal pair is wrong, and turning the
  // phrase around swaps which shape is first.
  const auto wrong_axis = CaptionAttributes("a red circle left of a blue square");
  EXPECT_EQ(wrong_axis[2], "left of");
  EXPECT_EQ(CaptionAttributes("a blue square above a red circle")[0], "blue");
  // Not a caption of the template: no attributes (all count wrong).
  EXPECT_TRUE(CaptionAttributes("a red circle").empty());
  EXPECT_TRUE(CaptionAttributes("red circle above a blue square").empty());
  EXPECT_TRUE(CaptionAttributes("a red circle above a blue square and more").empty());
  EXPECT_EQ(kCaptionAttributeNames.size(), scene.size());
}

}  // namespace
}  // namespace slm::train
