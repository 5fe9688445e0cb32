#include "datagen/wordnet_corpus.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/strings.h"
#include "tests/test_util.h"

namespace slm::datagen {
namespace {

namespace stdfs = std::filesystem;

// Real lines of WordNet 3.0 (pointer lists shortened, counts adjusted) plus one synthetic
// synset whose only lemma has a digit.
const char* const kLicense =
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  \n";
const char* const kDog =
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 %p 02158846 "
    "n 0000 | a member of the genus Canis (probably descended from the common wolf) that has been "
    "domesticated by man since prehistoric times; occurs in many breeds; \"the dog barked all "
    "night\"  ";
const char* const kWater =
    "14845743 27 n 02 water 0 H2O 0 001 @ 14618834 n 0000 | binary compound that occurs at room "
    "temperature as a clear colorless odorless tasteless liquid; widely used as a solvent  ";
const char* const kUmbrella =
    "04507155 06 n 01 umbrella 0 002 @ 02951843 n 0000 ~ 03415252 n 0000 | a lightweight "
    "handheld collapsible canopy  ";
const char* const kLieutenant =
    "10092978 18 n 01 1st_lieutenant 0 001 @ 10259348 n 0000 | a commissioned officer in the Army "
    "or Air Force or Marines ranking above a 2nd lieutenant and below a captain  ";
const char* const kBreathe =
    "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 002 * 00005041 v 0000 ~ "
    "00002573 v 0000 02 + 02 00 + 08 00 | draw air into, and expel out of, the lungs; \"I can "
    "breathe better when the air is clean\"; \"The patient is respiring\"  ";
const char* const kAble =
    "00001740 00 a 01 able 0 001 ! 00002098 a 0101 | (usually followed by `to') having the "
    "necessary means or skill or know-how or authority to do something; \"able to swim\"; \"she "
    "was able to program her computer\"  ";
const char* const kGalore =
    "00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance; "
    "\"abounding confidence\"; \"whiskey galore\"  ";
const char* const kCappella =
    "00001740 02 r 01 a_cappella 0 000 | without musical accompaniment; \"they performed a "
    "cappella\"  ";
const char* const kAnnoDomini =
    "00001837 02 r 03 AD 0 A.D. 0 anno_Domini 0 000 | in the Christian era; used before dates "
    "after the supposed year Christ was born; \"in AD 200\"  ";

using slm::testing::TempDir;

std::string Lines(std::initializer_list<const char*> lines) {
  std::string text;
  for (const char* line : lines) text += std::string(line) + "\n";
  return text;
}

// Writes the fixture WordNet files into `dir`.
void WriteFixture(const std::string& dir) {
  fs::MakeDirs(dir);
  fs::AtomicWriteString(dir + "/data.noun",
                        kLicense + Lines({kDog, kWater, kUmbrella, kLieutenant}));
  fs::AtomicWriteString(dir + "/data.verb", kLicense + Lines({kBreathe}));
  fs::AtomicWriteString(dir + "/data.adj", kLicense + Lines({kAble, kGalore}));
  fs::AtomicWriteString(dir + "/data.adv", kLicense + Lines({kCappella, kAnnoDomini}));
}

using slm::testing::ErrorOf;

TEST(WordNetParseTest, ParsesNounWordsDefinitionAndExamples) {
  const std::optional<Synset> dog = ParseDataLine(kDog, 'n');
  ASSERT_TRUE(dog.has_value());
  EXPECT_EQ(dog->pos, 'n');
  EXPECT_EQ(dog->ss_type, 'n');
  EXPECT_EQ(dog->offset, "02084071");
  EXPECT_EQ(dog->lex_filenum, 5);
  EXPECT_EQ(dog->words, (std::vector<std::string>{"dog", "domestic dog", "Canis familiaris"}));
  EXPECT_EQ(dog->definition,
            "a member of the genus Canis (probably descended from the common wolf) that has been "
            "domesticated by man since prehistoric times; occurs in many breeds");
  EXPECT_EQ(dog->examples, (std::vector<std::string>{"the dog barked all night"}));
}

TEST(WordNetParseTest, ParsesVerbFramesAndAdjectiveSatellitesWithMarkers) {
  const std::optional<Synset> breathe = ParseDataLine(kBreathe, 'v');
  ASSERT_TRUE(breathe.has_value());
  EXPECT_EQ(breathe->words,
            (std::vector<std::string>{"breathe", "take a breath", "respire", "suspire"}));
  EXPECT_EQ(breathe->definition, "draw air into, and expel out of, the lungs");
  EXPECT_EQ(breathe->examples,
            (std::vector<std::string>{"I can breathe better when the air is clean",
                                      "The patient is respiring"}));

  const std::optional<Synset> galore = ParseDataLine(kGalore, 'a');
  ASSERT_TRUE(galore.has_value());
  EXPECT_EQ(galore->ss_type, 's');
  EXPECT_EQ(galore->words, (std::vector<std::string>{"abounding", "galore"}));
  EXPECT_EQ(galore->definition, "existing in abundance");
  EXPECT_EQ(galore->examples.size(), 2u);
}

TEST(WordNetParseTest, GlossQuotesKeepSemicolonsAndDropAttributions) {
  const std::optional<Synset> synset = ParseDataLine(
      "00000001 00 n 01 saying 0 000 | a short pithy remark; \"wit; brevity\" - Polonius; "
      "\"plain one\"",
      'n');
  ASSERT_TRUE(synset.has_value());
  EXPECT_EQ(synset->definition, "a short pithy remark");
  EXPECT_EQ(synset->examples, (std::vector<std::string>{"wit; brevity", "plain one"}));
}

TEST(WordNetParseTest, LicenseHeaderAndBlankLinesAreNotSynsets) {
  EXPECT_FALSE(ParseDataLine("  1 This software and database is being provided to you", 'n'));
  EXPECT_FALSE(ParseDataLine("", 'n'));
}

TEST(WordNetParseTest, MalformedLinesNameTheDefect) {
  // Pointer count says 2, one pointer present.
  EXPECT_NE(ErrorOf([] {
              ParseDataLine("02084071 05 n 01 dog 0 002 @ 02083346 n 0000 | a dog", 'n');
            }).find("pointer"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseDataLine("02084071 05 n 01 dog 0 000 a dog", 'n'); }).find("'|'"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] {
              ParseDataLine("02084071 05 v 01 dog 0 000 | a dog", 'n');
            }).find("synset type 'v'"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] {
              ParseDataLine("2084071 05 n 01 dog 0 000 | a dog", 'n');
            }).find("bad synset offset '2084071'"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] {
              ParseDataLine("02084071 05 n zz dog 0 000 | a dog", 'n');
            }).find("bad word count 'zz'"),
            std::string::npos);
}

TEST(WordNetTextTest, IndefiniteArticleFollowsTheSound) {
  const std::map<std::string, std::string> expected = {
      {"dog", "a"},      {"abstraction", "an"},   {"umbrella", "an"}, {"uncle", "an"},
      {"unit", "a"},     {"unicorn", "a"},        {"utensil", "a"},   {"urban area", "an"},
      {"hour", "an"},    {"honest broker", "an"}, {"heir", "an"},     {"house", "a"},
      {"european", "a"}, {"one-liner", "a"},      {"Ewe", "a"},       {"elephant", "an"},
      {"island", "an"},  {"orange", "an"},        {"yacht", "a"}};
  for (const auto& [word, article] : expected) EXPECT_EQ(IndefiniteArticle(word), article) << word;
}

Synset Of(char pos, int lex_filenum) {
  Synset synset;
  synset.pos = pos;
  synset.lex_filenum = lex_filenum;
  return synset;
}

TEST(WordNetTextTest, QuestionsReadNaturally) {
  const Synset artifact = Of('n', 6);
  const Synset animal = Of('n', 5);
  const Synset substance = Of('n', 27);
  const Synset act = Of('n', 4);
  EXPECT_EQ(QuestionFor(animal, "dog", "a member of the genus Canis"), "what is a dog");
  EXPECT_EQ(QuestionFor(Of('n', 9), "abstraction", "a general concept"), "what is an abstraction");
  EXPECT_EQ(QuestionFor(artifact, "umbrella", "a lightweight handheld collapsible canopy"),
            "what is an umbrella");
  // No determiner: countable for animals and artifacts, mass for substances and acts.
  EXPECT_EQ(QuestionFor(animal, "colobus", "arboreal monkey of western and central Africa"),
            "what is a colobus");
  EXPECT_EQ(QuestionFor(artifact, "awl", "pointed tool for marking surfaces"), "what is an awl");
  EXPECT_EQ(QuestionFor(substance, "water", "binary compound that occurs at room temperature"),
            "what is water");
  EXPECT_EQ(QuestionFor(act, "skywriting", "writing formed in the sky by smoke"),
            "what is skywriting");
  EXPECT_EQ(QuestionFor(artifact, "ironware", "the metal parts of something"), "what is ironware");
  EXPECT_EQ(QuestionFor(Of('n', 15), "Paris", "a city in France"), "what is Paris");
  EXPECT_EQ(QuestionFor(Of('v', 29), "breathe", "draw air into"), "what does it mean to breathe");
  EXPECT_EQ(QuestionFor(Of('a', 0), "able", "having the necessary means"), "what does able mean");
  EXPECT_EQ(QuestionFor(Of('r', 2), "a cappella", "without musical accompaniment"),
            "what does a cappella mean");
}

TEST(WordNetTextTest, QuestionHeadSkipsAcronymsDigitsAndLongNames) {
  Synset synset;
  synset.words = {"AD", "A.D.", "anno Domini"};
  EXPECT_EQ(QuestionHead(synset), "anno Domini");
  synset.words = {"1st lieutenant"};
  EXPECT_EQ(QuestionHead(synset), std::nullopt);
  synset.words = {"Order of the Holy Roman Empire", "x"};
  EXPECT_EQ(QuestionHead(synset), std::nullopt);
  synset.words = {"jack-o'-lantern"};
  EXPECT_EQ(QuestionHead(synset), "jack-o'-lantern");
}

TEST(WordNetTextTest, AnswerDropsLeadingQualifiers) {
  Synset synset;
  synset.definition = "(usually followed by `to') having the necessary means; or skill";
  EXPECT_EQ(AnswerFor(synset), "having the necessary means; or skill");
  synset.definition = "(botany) (rare) a leaf";
  EXPECT_EQ(AnswerFor(synset), "a leaf");
}

TEST(WordNetTextTest, NormalizeSentenceCleansUpRawText) {
  EXPECT_EQ(NormalizeSentence("  the dog  barked ,\tall night! "), "The dog barked, all night.");
  EXPECT_EQ(NormalizeSentence("is it late?"), "Is it late?");
  EXPECT_EQ(NormalizeSentence("it ended."), "It ended.");
  EXPECT_EQ(NormalizeSentence("   "), "");
}

TEST(WordNetTextTest, SpeakableSentences) {
  for (const char* sentence :
       {"The dog barked all night.", "Draw air into, and expel out of, the lungs.",
        "Is that the boys' dog?", "She's a well-known actor.", "Able to swim.",
        "I can breathe better when the air is clean."}) {
    EXPECT_TRUE(IsSpeakable(sentence)) << sentence;
  }
  for (const char* sentence : {
           "Too short.",  // 2 words
           "One two three four five six seven eight nine ten eleven twelve thirteen fourteen "
           "fifteen sixteen seventeen.",      // 17 words
           "He lived in the USA for years.",  // all-caps token
           "He was born in 1990.",            // digits
           "A (small) dog barked.",           // parentheses
           "The dog barked; it was late.",    // semicolon
           "He said \"go away\" twice.",      // quotes
           "The word 'sweet' is nice.",       // quoting apostrophes
           "He bought apples, pears, etc.",   // abbreviation before the dot
           "He met Dr. Smith there.",         // dotted abbreviation
           "the dog barked all night.",       // lower-case start
           "The dog barked all night",        // no final mark
           "The dog  barked loudly.",         // doubled space
           "Wait - the dog barked.",          // free-standing hyphen
           "The dog barked all night!",       // only . and ? end a sentence
           "The dog barked,.",                // comma before the final mark
           "Caf\xc3\xa9 food is good.",       // non-ASCII letters
       }) {
    EXPECT_FALSE(IsSpeakable(sentence)) << sentence;
  }
}

TEST(WordNetSplitTest, DeterministicAndNearTheRequestedFractions) {
  int counts[3] = {0, 0, 0};
  int changed = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string offset = Str(10000000 + i * 137);
    const DataSplit split = SplitFor('n', offset, 3, 0.05, 0.05);
    EXPECT_EQ(split, SplitFor('n', offset, 3, 0.05, 0.05));
    ++counts[static_cast<int>(split)];
    changed += split != SplitFor('n', offset, 4, 0.05, 0.05);
    EXPECT_EQ(SplitFor('v', offset, 3, 0.0, 0.0), DataSplit::kTrain);
  }
  EXPECT_NEAR(counts[1] / 20000.0, 0.05, 0.01);
  EXPECT_NEAR(counts[2] / 20000.0, 0.05, 0.01);
  EXPECT_GT(changed, 1000);  // another seed reshuffles
  EXPECT_STREQ(SplitName(DataSplit::kValid), "valid");
}

TEST(WordNetCorpusTest, BuildsExactOutputsFromFixture) {
  TempDir temp;
  WriteFixture(temp.File("wordnet"));
  WordNetCorpusOptions options;
  options.wordnet_dir = temp.File("wordnet");
  options.out_dir = temp.File("out");
  options.valid_fraction = 0;
  options.test_fraction = 0;
  const WordNetCorpusStats stats = BuildWordNetCorpus(options);

  EXPECT_EQ(
      fs::ReadFile(temp.File("out/text/train.txt")),
      Lines({"dog, domestic dog, Canis familiaris: a member of the genus Canis (probably "
             "descended from the common wolf) that has been domesticated by man since "
             "prehistoric times; occurs in many breeds",
             "the dog barked all night",
             "water, H2O: binary compound that occurs at room temperature as a clear "
             "colorless odorless tasteless liquid; widely used as a solvent",
             "umbrella: a lightweight handheld collapsible canopy",
             "1st lieutenant: a commissioned officer in the Army or Air Force or Marines "
             "ranking above a 2nd lieutenant and below a captain",
             "breathe, take a breath, respire, suspire: draw air into, and expel out of, "
             "the lungs",
             "I can breathe better when the air is clean", "The patient is respiring",
             "able: (usually followed by `to') having the necessary means or skill or "
             "know-how or authority to do something",
             "able to swim", "she was able to program her computer",
             "abounding, galore: existing in abundance", "abounding confidence", "whiskey galore",
             "a cappella: without musical accompaniment", "they performed a cappella",
             "AD, A.D., anno Domini: in the Christian era; used before dates after the "
             "supposed year Christ was born",
             "in AD 200"}));
  EXPECT_EQ(fs::ReadFile(temp.File("out/sentences/train.txt")),
            Lines({"The dog barked all night.", "A lightweight handheld collapsible canopy.",
                   "I can breathe better when the air is clean.", "The patient is respiring.",
                   "Draw air into, and expel out of, the lungs.", "Able to swim.",
                   "She was able to program her computer.", "Existing in abundance.",
                   "They performed a cappella.", "Without musical accompaniment."}));
  for (const char* empty :
       {"text/valid.txt", "text/test.txt", "sentences/valid.txt", "sentences/test.txt"})
    EXPECT_EQ(fs::ReadFile(temp.File(Str("out/", empty))), "") << empty;

  const manifest::Manifest qa = manifest::Read(temp.File("out/qa.jsonl"));
  std::vector<std::string> rendered;
  for (const manifest::Entry& e : qa.entries) {
    EXPECT_EQ(e.task, "qa");
    EXPECT_EQ(e.extra.value("split", ""), "train");
    rendered.push_back(Str(e.id, " | ", e.prompt, " | ", e.response));
  }
  EXPECT_EQ(rendered,
            (std::vector<std::string>{
                "qa-n-02084071 | what is a dog | a member of the genus Canis (probably descended "
                "from the common wolf) that has been domesticated by man since prehistoric "
                "times; occurs in many breeds",
                "qa-n-14845743 | what is water | binary compound that occurs at room "
                "temperature as a clear colorless odorless tasteless liquid; widely used as a "
                "solvent",
                "qa-n-04507155 | what is an umbrella | a lightweight handheld collapsible canopy",
                "qa-v-00001740 | what does it mean to breathe | draw air into, and expel out of, "
                "the lungs",
                "qa-a-00001740 | what does able mean | having the necessary means or skill or "
                "know-how or authority to do something",
                "qa-a-00014358 | what does abounding mean | existing in abundance",
                "qa-r-00001740 | what does a cappella mean | without musical accompaniment",
                "qa-r-00001837 | what does anno Domini mean | in the Christian era; used before "
                "dates after the supposed year Christ was born"}));

  EXPECT_EQ(stats.synsets, 9);
  EXPECT_EQ(stats.examples, 9);
  EXPECT_EQ(stats.qa_skipped, 1);  // 1st lieutenant
  EXPECT_EQ(stats.Of(DataSplit::kTrain).synsets, 9);
  EXPECT_EQ(stats.Of(DataSplit::kTrain).text_lines, 18);
  EXPECT_EQ(stats.Of(DataSplit::kTrain).qa_pairs, 8);
  EXPECT_EQ(stats.Of(DataSplit::kTrain).sentences, 10);
  EXPECT_EQ(stats.Of(DataSplit::kValid).synsets, 0);
  const nlohmann::json written = nlohmann::json::parse(fs::ReadFile(temp.File("out/stats.json")));
  EXPECT_EQ(written, stats.ToJson());
  EXPECT_EQ(written["files"]["qa.jsonl"], 8);
  EXPECT_EQ(written["files"]["sentences/train.txt"], 10);
  EXPECT_EQ(written["splits"]["train"]["text_lines"], 18);
}

TEST(WordNetCorpusTest, DuplicateLinesAreKeptOnceInTheirFirstSplit) {
  TempDir temp;
  WriteFixture(temp.File("wordnet"));
  // A second synset with the dog's example sentence.
  fs::AtomicWriteString(
      temp.File("wordnet/data.noun"),
      kLicense + Lines({kDog,
                        "02084072 05 n 01 hound 0 000 | a dog used in hunting; \"the dog "
                        "barked all night\""}));
  WordNetCorpusOptions options;
  options.wordnet_dir = temp.File("wordnet");
  options.out_dir = temp.File("out");
  options.valid_fraction = 0;
  options.test_fraction = 0;
  const WordNetCorpusStats stats = BuildWordNetCorpus(options);
  EXPECT_EQ(stats.duplicate_text_lines, 1);
  EXPECT_EQ(stats.duplicate_sentences, 1);
  const std::string text = fs::ReadFile(temp.File("out/text/train.txt"));
  EXPECT_EQ(text.find("the dog barked all night\n"), text.rfind("the dog barked all night\n"));
}

TEST(WordNetCorpusTest, SameSeedSameFilesAndSplitsFollowSynsets) {
  TempDir temp;
  WriteFixture(temp.File("wordnet"));
  WordNetCorpusOptions options;
  options.wordnet_dir = temp.File("wordnet");
  options.seed = 11;
  options.valid_fraction = 0.3;
  options.test_fraction = 0.3;
  options.out_dir = temp.File("a");
  BuildWordNetCorpus(options);
  options.out_dir = temp.File("b");
  BuildWordNetCorpus(options);
  for (const char* file :
       {"text/train.txt", "text/valid.txt", "text/test.txt", "qa.jsonl", "sentences/train.txt",
        "sentences/valid.txt", "sentences/test.txt", "stats.json"}) {
    EXPECT_EQ(fs::ReadFile(temp.File(Str("a/", file))), fs::ReadFile(temp.File(Str("b/", file))))
        << file;
  }
  // Every question sits in its synset's split, and the synset's example is in that split's text.
  const manifest::Manifest qa = manifest::Read(temp.File("a/qa.jsonl"));
  ASSERT_EQ(qa.entries.size(), 8u);
  std::set<std::string> splits_used;
  for (const manifest::Entry& e : qa.entries) {
    const char pos = e.id[3];
    const std::string offset = e.id.substr(5);
    const std::string split = SplitName(SplitFor(pos, offset, 11, 0.3, 0.3));
    EXPECT_EQ(e.extra.value("split", ""), split) << e.id;
    splits_used.insert(split);
    if (e.id == "qa-r-00001740") {
      EXPECT_NE(
          fs::ReadFile(temp.File("a/text/" + split + ".txt")).find("they performed a cappella\n"),
          std::string::npos);
      EXPECT_NE(fs::ReadFile(temp.File("a/sentences/" + split + ".txt"))
                    .find("They performed a cappella.\n"),
                std::string::npos);
    }
  }
  EXPECT_GE(splits_used.size(), 2u);
}

TEST(WordNetCorpusTest, ErrorsNameThePathAndTheFix) {
  TempDir temp;
  WordNetCorpusOptions options;
  options.out_dir = temp.File("out");
  options.wordnet_dir = temp.File("no_wordnet");
  std::string message = ErrorOf([&] { BuildWordNetCorpus(options); });
  EXPECT_NE(message.find(temp.File("no_wordnet")), std::string::npos) << message;
  EXPECT_NE(message.find("apt-get install wordnet-base"), std::string::npos) << message;

  WriteFixture(temp.File("wordnet"));
  stdfs::remove(temp.File("wordnet/data.adv"));
  options.wordnet_dir = temp.File("wordnet");
  message = ErrorOf([&] { BuildWordNetCorpus(options); });
  EXPECT_NE(message.find(temp.File("wordnet/data.adv")), std::string::npos) << message;
  EXPECT_NE(message.find("apt-get install wordnet-base"), std::string::npos) << message;
  EXPECT_FALSE(stdfs::exists(temp.File("out")));  // nothing written before the inputs are checked

  WriteFixture(temp.File("wordnet"));
  fs::AtomicWriteString(temp.File("wordnet/data.verb"),
                        kLicense + Lines({kBreathe, "00002325 29 v 01 respire 1 005 $ | x"}));
  message = ErrorOf([&] { BuildWordNetCorpus(options); });
  EXPECT_NE(message.find(temp.File("wordnet/data.verb") + ":4: malformed WordNet data line"),
            std::string::npos)
      << message;

  WriteFixture(temp.File("wordnet"));
  options.valid_fraction = 0.6;
  options.test_fraction = 0.4;
  message = ErrorOf([&] { BuildWordNetCorpus(options); });
  EXPECT_NE(message.find("sum must be below 1"), std::string::npos) << message;

  options.valid_fraction = 0.05;
  options.test_fraction = 0.05;
  fs::AtomicWriteString(temp.File("a_file"), "x");
  options.out_dir = temp.File("a_file/out");
  message = ErrorOf([&] { BuildWordNetCorpus(options); });
  EXPECT_NE(message.find(temp.File("a_file/out")), std::string::npos) << message;
}

// The real package, when installed: plausible sizes and leak-free splits.
TEST(WordNetCorpusTest, SystemWordNetGivesPlausibleLeakFreeCorpus) {
  if (!stdfs::exists("/usr/share/wordnet/data.noun")) GTEST_SKIP() << "wordnet-base missing";
  TempDir temp;
  WordNetCorpusOptions options;
  options.out_dir = temp.File("out");
  const WordNetCorpusStats stats = BuildWordNetCorpus(options);
  EXPECT_EQ(stats.synsets, 117659);  // WordNet 3.0
  EXPECT_GT(stats.Of(DataSplit::kTrain).text_lines, 50000);
  EXPECT_GT(stats.Of(DataSplit::kTrain).sentences, 20000);
  EXPECT_GT(stats.Of(DataSplit::kTest).sentences, 1000);
  EXPECT_LT(stats.seconds, 30.0);

  const manifest::Manifest qa = manifest::Read(temp.File("out/qa.jsonl"));
  EXPECT_GT(qa.entries.size(), 50000u);
  std::map<std::string, std::set<std::string>> synsets_by_split;
  for (const manifest::Entry& e : qa.entries) {
    const std::string split = e.extra.value("split", "");
    ASSERT_TRUE(split == "train" || split == "valid" || split == "test") << e.id;
    EXPECT_TRUE(synsets_by_split[split].insert(e.id).second) << "duplicate id " << e.id;
  }
  for (const std::string& id : synsets_by_split["test"]) {
    EXPECT_EQ(synsets_by_split["train"].count(id), 0u) << id;
    EXPECT_EQ(synsets_by_split["valid"].count(id), 0u) << id;
  }
  EXPECT_NEAR(synsets_by_split["test"].size() / double(qa.entries.size()), 0.05, 0.01);

  auto line_set = [&](const std::string& file) {
    std::set<std::string> lines;
    std::istringstream in(fs::ReadFile(temp.File("out/" + file)));
    for (std::string line; std::getline(in, line);) lines.insert(line);
    return lines;
  };
  const std::set<std::string> train_sentences = line_set("sentences/train.txt");
  const std::set<std::string> test_sentences = line_set("sentences/test.txt");
  for (const std::string& sentence : test_sentences) {
    EXPECT_EQ(train_sentences.count(sentence), 0u) << sentence;
    EXPECT_TRUE(IsSpeakable(sentence)) << sentence;
  }
  const std::set<std::string> train_text = line_set("text/train.txt");
  for (const std::string& line : line_set("text/test.txt"))
    EXPECT_EQ(train_text.count(line), 0u) << line;
}

}  // namespace
}  // namespace slm::datagen
