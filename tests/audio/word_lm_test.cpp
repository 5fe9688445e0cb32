// The word n-gram LM (audio/word_lm.h): interpolated Kneser-Ney probabilities against a hand
// computation, normalisation after pruning, the ARPA round trip and every defect of a file named
// with its file and line.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "audio/word_lm.h"
#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

// Sum over every word that can follow (all but <s>) of P(w | state): 1 for a proper distribution.
double Mass(const WordLm& lm, const WordLmState& state) {
  double sum = 0;
  for (int32_t w = 0; w < lm.VocabularySize(); ++w)
    if (w != WordLm::kBos) sum += std::exp(double(lm.Score(state, w)));
  return sum;
}

TEST(WordLmTest, BigramKneserNeyMatchesAHandComputation) {
  // <s> a b </s> / <s> a c </s> / <s> b c </s>; normalisation lower-cases and drops punctuation.
  const WordLm lm = WordLm::Build({"A b.", "a c", "b, c", ""}, {2, 1, 0});
  ASSERT_EQ(lm.VocabularySize(), 6);  // <unk> <s> </s> a b c
  const int32_t a = lm.Id("a"), b = lm.Id("b");
  EXPECT_GE(lm.Id("c"), 0);
  // Continuation counts: a 1 (after <s>), b 2, c 2, </s> 2; D1 = n1/(n1+2n2) = 1/7 over
  // {<s>:3, a:1, b:2, c:2, </s>:2}; 7 continuation tokens, 4 types, 5 predictable words.
  const double d1 = 1.0 / 7, uniform = d1 * 4 / 7 / 5;
  const double p_a = (1 - d1) / 7 + uniform, p_b = (2 - d1) / 7 + uniform, p_unk = uniform;
  EXPECT_NEAR(p_a + 3 * p_b + p_unk, 1.0, 1e-9);
  // Bigrams {<s>a:2, ab:1, b</s>:1, ac:1, c</s>:2, <s>b:1, bc:1}: n1 = 5, n2 = 2, D2 = 5/9.
  const double d2 = 5.0 / 9;
  WordLmState after_a;
  lm.Score(lm.Begin(), a, &after_a);
  EXPECT_NEAR(std::exp(lm.Score(lm.Begin(), a)), (2 - d2) / 3 + d2 * 2 / 3 * p_a, 1e-6);
  EXPECT_NEAR(std::exp(lm.Score(after_a, b)), (1 - d2) / 2 + d2 * 2 / 2 * p_b, 1e-6);
  // "a </s>" was never seen: backoff weight of "a" (= its interpolation weight) times P1(</s>).
  EXPECT_NEAR(std::exp(lm.End(after_a)), d2 * p_b, 1e-6);
  EXPECT_NEAR(std::exp(lm.Score(after_a, WordLm::kUnk)), d2 * p_unk, 1e-6);
  EXPECT_NEAR(Mass(lm, lm.Begin()), 1.0, 1e-5);
  EXPECT_NEAR(Mass(lm, after_a), 1.0, 1e-5);
  EXPECT_EQ(lm.Id("d"), -1);
  EXPECT_NEAR(lm.SentenceScore("a b"), lm.Score(lm.Begin(), a) + lm.Score(after_a, b) +
                                           lm.End(WordLmState{{-1, b}}), 1e-5);
}

std::vector<std::string> Corpus() {
  std::vector<std::string> s;
  const char* nouns[] = {"dog", "cat", "bird", "tree", "car", "house"};
  const char* verbs[] = {"is", "was", "has"};
  for (int i = 0; i < 60; ++i)
    s.push_back(std::string("what ") + verbs[i % 3] + " a " + nouns[i % 6] + (i % 4 ? " today" : ""));
  s.push_back("the dog's bone");
  return s;
}

TEST(WordLmTest, PrunedTrigramStaysNormalisedAndSurvivesTheArpaRoundTrip) {
  for (const int64_t min_count : {1, 3}) {
    const WordLm lm = WordLm::Build(Corpus(), {3, min_count, 0});
    EXPECT_EQ(lm.Order(), 3);
    WordLmState s = lm.Begin();
    EXPECT_NEAR(Mass(lm, s), 1.0, 1e-4);
    for (const char* w : {"what", "is", "a", "dog"}) {
      lm.Score(s, lm.Id(w), &s);
      EXPECT_NEAR(Mass(lm, s), 1.0, 1e-4) << w << " min_count " << min_count;
    }
    if (min_count == 3) {
      EXPECT_LT(lm.Count(3), WordLm::Build(Corpus(), {3, 1, 0}).Count(3));
    }
    testing::TempDir dir;
    lm.Save(dir.File("lm.arpa"));
    const WordLm back = WordLm::Load(dir.path());  // a directory means its lm.arpa
    ASSERT_EQ(back.VocabularySize(), lm.VocabularySize());
    for (int n = 1; n <= 3; ++n) EXPECT_EQ(back.Count(n), lm.Count(n));
    for (const std::string& sentence : Corpus())
      EXPECT_NEAR(back.SentenceScore(sentence), lm.SentenceScore(sentence), 1e-3) << sentence;
    EXPECT_NEAR(back.SentenceScore("a bird has the dog's car"), lm.SentenceScore("a bird has the dog's car"), 1e-3);
  }
}

TEST(WordLmTest, MaxVocabularyKeepsTheMostFrequentWords) {
  const WordLm lm = WordLm::Build(Corpus(), {2, 1, 4});
  EXPECT_EQ(lm.VocabularySize(), 3 + 4);
  EXPECT_GE(lm.Id("a"), 0);
  EXPECT_GE(lm.Id("what"), 0);
  EXPECT_EQ(lm.Id("bone"), -1);
  EXPECT_TRUE(std::isfinite(lm.SentenceScore("what is a bone")));  // as <unk>
}

TEST(WordLmTest, BadOptionsAndEmptyTextAreErrors) {
  EXPECT_SLM_ERROR(WordLm::Build(Corpus(), {4, 1, 0}), "order must be 1, 2 or 3");
  EXPECT_SLM_ERROR(WordLm::Build(Corpus(), {2, 0, 0}), "min_count");
  EXPECT_SLM_ERROR(WordLm::Build({"", "123 !"}, {2, 1, 0}), "no words");
}

TEST(WordLmTest, DefectiveFilesAreErrorsNamingFileAndLine) {
  testing::TempDir dir;
  const std::string good =
      "# comment\n\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-99\t<s>\t-0.3\n-0.5\t</s>\n-0.4\tdog\t-0.2\n"
      "-0.6\tcat\t-0.1\n\n\\2-grams:\n-0.2\t<s> dog\n-0.1\tdog </s>\n\n\\end\\\n";
  const std::string path = dir.File("lm.arpa");
  fs::AtomicWriteString(path, good);
  const WordLm lm = WordLm::Load(path);
  EXPECT_EQ(lm.Order(), 2);
  EXPECT_NEAR(lm.Score(lm.Begin(), lm.Id("dog")), -0.2 * std::log(10.0), 1e-5);
  // Backoff: "cat" after <s> = bow(<s>) + P(cat).
  EXPECT_NEAR(lm.Score(lm.Begin(), lm.Id("cat")), (-0.3 - 0.6) * std::log(10.0), 1e-5);
  EXPECT_LT(lm.Score(lm.Begin(), WordLm::kUnk), -200);  // not listed: "never"

  auto expect = [&](const std::string& text, const std::string& message) {
    fs::AtomicWriteString(path, text);
    EXPECT_SLM_ERROR(WordLm::Load(path), message);
    EXPECT_SLM_ERROR(WordLm::Load(path), path);
  };
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  expect(good.substr(0, good.find("\\end\\")), "truncated: no '\\end\\' line");
  expect(good.substr(0, good.find("-0.1\tdog </s>")), "lm.arpa:14: truncated: the header promises 2 2-grams, found 1");
  expect(with("-0.4\tdog", "x\tdog"), "lm.arpa:9: expected a log10 probability (a finite number <= 0), got 'x'");
  expect(with("-0.4\tdog", "0.4\tdog"), "lm.arpa:9: expected a log10 probability");
  expect(with("\\data\\", "\\dada\\"), "not an ARPA language model");
  expect(with("ngram 2=2\n", "ngram 2=2\nngram 3=0\nngram 4=0\n"), "order 4 is not supported");
  expect(with("ngram 2=2", "ngram 2=two"), "bad n-gram count 'two'");
  expect(with("-0.6\tcat", "-0.6\tCat"), "lm.arpa:10: word 'Cat' is not a normalised CTC word");
  expect(with("<s> dog", "<s> cow"), "lm.arpa:13: word 'cow' is not among the 1-grams");
  expect(with("-0.1\tdog </s>", "-0.1\tdog </s>\t-0.3"), "highest order (2) has a backoff weight");
  expect(with("-0.6\tcat", "-0.6\tdog"), "word 'dog' is listed twice");
  expect(with("-99\t<s>", "-99\t<unk>"), "must list <s> and </s>");
  EXPECT_SLM_ERROR(WordLm::Load(dir.File("missing.arpa")), "missing.arpa' does not exist");
}

}  // namespace
}  // namespace slm::audio
