#include "datagen/dictionary.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "tests/test_util.h"

namespace slm::datagen {
namespace {

// A WordNet directory and a corpus small enough to reason about: dog and cat (animals), umbrella
// and lantern (artifacts), water (a substance: not concrete), down (a noun that is mostly an
// adverb), hut (an artifact whose first sense has no "what is a hut" question in the corpus).
void WriteFixture(const testing::TempDir& temp) {
  const std::string wn = temp.File("wordnet");
  fs::MakeDirs(wn);
  const std::string license = "  1 This software and database is being provided to you  \n";
  fs::AtomicWriteString(wn + "/data.noun",
                        license +
                            "02084071 05 n 01 dog 0 000 | a member of the genus Canis  \n"
                            "02121620 05 n 01 cat 0 000 | feline mammal usually having thick soft fur  \n"
                            "04507155 06 n 01 umbrella 0 000 | a lightweight handheld collapsible canopy  \n"
                            "03640988 06 n 01 lantern 0 000 | light in a transparent protective case  \n"
                            "14845743 27 n 01 water 0 000 | binary compound that occurs as a clear liquid  \n"
                            "01000001 06 n 01 down 0 000 | soft fine feathers  \n"
                            "01000002 06 n 01 hut 0 000 | temporary military shelter  \n");
  fs::AtomicWriteString(wn + "/index.noun",
                        license +
                            "dog n 1 0 1 5 02084071  \n"
                            "cat n 1 0 1 3 02121620  \n"
                            "umbrella n 1 0 1 1 04507155  \n"
                            "lantern n 1 0 1 0 03640988  \n"
                            "water n 1 0 1 9 14845743  \n"
                            "down n 1 0 1 1 01000001  \n"
                            "hut n 1 0 1 1 01000002  \n");
  fs::AtomicWriteString(wn + "/index.verb", license + "dog v 1 0 1 2 01111111  \n");
  fs::AtomicWriteString(wn + "/index.adj", license);
  fs::AtomicWriteString(wn + "/index.adv", license + "down r 1 0 1 7 00222222  \n");

  const std::string corpus = temp.File("corpus");
  fs::MakeDirs(corpus + "/text");
  fs::MakeDirs(corpus + "/sentences");
  std::vector<manifest::Entry> qa;
  auto add = [&](const std::string& offset, const std::string& prompt, const std::string& response) {
    manifest::Entry e;
    e.id = "qa-n-" + offset;
    e.task = "qa";
    e.prompt = prompt;
    e.response = response;
    e.extra["split"] = "train";
    qa.push_back(e);
  };
  add("02084071", "what is a dog", "a member of the genus Canis");
  add("02121620", "what is a cat", "feline mammal usually having thick soft fur");
  add("04507155", "what is an umbrella", "a lightweight handheld collapsible canopy");
  add("03640988", "what is a lantern", "light in a transparent protective case");
  add("14845743", "what is water", "binary compound that occurs as a clear liquid");
  add("01000001", "what is a down", "soft fine feathers");
  add("01000002", "what is a shelter", "temporary military shelter");
  manifest::Write(corpus + "/qa.jsonl", qa);
  // Counts: cat 3, lantern 2 (Lantern capitalised once), dog 1, umbrella 1, down 5, water 4.
  fs::AtomicWriteString(corpus + "/text/train.txt", "the cat and the cat, a lantern\ndown down down water water\n");
  fs::AtomicWriteString(corpus + "/sentences/train.txt", "A cat saw a dog. Lantern light.\nUmbrella down, down. Water water.\n");
}

DictionaryOptions Options(const testing::TempDir& temp, int64_t words) {
  DictionaryOptions options;
  options.wordnet_dir = temp.File("wordnet");
  options.corpus_dir = temp.File("corpus");
  options.words = words;
  return options;
}

TEST(Dictionary, PicksConcreteNounsByCorpusCountAndKeepsTheCorpusAnswers) {
  testing::TempDir temp;
  WriteFixture(temp);
  const std::vector<manifest::Entry> entries = SelectDictionary(Options(temp, 4));
  ASSERT_EQ(entries.size(), 4u);
  std::vector<std::string> words;
  for (const manifest::Entry& e : entries) words.push_back(e.extra["word"].get<std::string>());
  // water: substance; down: mostly an adverb; hut: the corpus asks about "shelter" instead.
  EXPECT_EQ(words, (std::vector<std::string>{"cat", "lantern", "dog", "umbrella"}));
  EXPECT_EQ(entries[0].extra["count"].get<int64_t>(), 3);
  EXPECT_EQ(entries[1].extra["rank"].get<int64_t>(), 1);
  EXPECT_EQ(entries[1].prompt, "what is a lantern");
  EXPECT_EQ(entries[1].response, "light in a transparent protective case");
  EXPECT_EQ(entries[3].prompt, "what is an umbrella");
  EXPECT_EQ(entries[3].id, "qa-n-04507155");
  EXPECT_EQ(entries[3].extra["split"].get<std::string>(), "train");
}

TEST(Dictionary, TooFewNounsAndMissingFilesAreNamed) {
  testing::TempDir temp;
  WriteFixture(temp);
  EXPECT_SLM_ERROR(SelectDictionary(Options(temp, 5)), "asks for 5 words but only 4 nouns");
  DictionaryOptions no_corpus = Options(temp, 1);
  no_corpus.corpus_dir = temp.File("nowhere");
  EXPECT_SLM_ERROR(SelectDictionary(no_corpus), "slm data corpus --source wordnet --out");
  DictionaryOptions no_wordnet = Options(temp, 1);
  no_wordnet.wordnet_dir = temp.File("nowhere");
  EXPECT_SLM_ERROR(SelectDictionary(no_wordnet), "wordnet-base");
}

TEST(Dictionary, MalformedIndexLineNamesFileAndLine) {
  testing::TempDir temp;
  WriteFixture(temp);
  fs::AtomicWriteString(temp.File("wordnet/index.noun"), "  1 license  \ndog n 1 0 1 x 02084071  \n");
  EXPECT_SLM_ERROR(SelectDictionary(Options(temp, 1)), "index.noun:2: tagsense_cnt 'x' is not a count");
  fs::AtomicWriteString(temp.File("wordnet/index.noun"), "dog n 2 0 2 1 02084071  \n");
  EXPECT_SLM_ERROR(SelectDictionary(Options(temp, 1)), "index.noun:1: expected 2 synset offsets");
}

}  // namespace
}  // namespace slm::datagen
