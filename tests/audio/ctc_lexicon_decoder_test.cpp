// The lexicon + word-LM CTC beam search (audio/ctc_lexicon_decoder.h) on synthetic posteriors: a
// path whose greedy reading is misspelt is read as lexicon words; without an LM and with beam 1
// it reads as greedy; word spans and confidences; streaming equals one-shot decoding; errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "audio/ctc_lexicon_decoder.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

// Per-frame posteriors: each frame names its likely labels ("" = blank; ' ' = space); what is not
// named shares a 1e-4 floor. Returned as log-probabilities [T, kSize].
torch::Tensor Frames(const std::vector<std::vector<std::pair<char, float>>>& frames) {
  torch::Tensor p = torch::full({static_cast<int64_t>(frames.size()), CtcAlphabet::kSize}, 1e-4f);
  for (size_t t = 0; t < frames.size(); ++t)
    for (const auto& [c, prob] : frames[t]) {
      const int64_t id = c == '_' ? CtcAlphabet::kBlank : c == ' ' ? CtcAlphabet::kSpace : CtcAlphabet::Encode(std::string(1, c))[0];
      p[t][id] = prob;
    }
  return torch::log(p / p.sum(-1, true));
}

// Greedy "wat is a dgo": the 'h' of "what" loses to blank, "o" and "g" are swapped by a hair.
torch::Tensor Misspelt() {
  std::vector<std::vector<std::pair<char, float>>> f;
  auto letter = [&](char c) { f.push_back({{c, 0.9f}}); f.push_back({{'_', 0.9f}}); };
  letter('w');
  f.push_back({{'_', 0.55f}, {'h', 0.4f}});
  letter('a');
  letter('t');
  letter(' ');
  letter('i');
  letter('s');
  letter(' ');
  letter('a');
  letter(' ');
  letter('d');
  f.push_back({{'g', 0.5f}, {'o', 0.45f}});
  f.push_back({{'_', 0.9f}});
  f.push_back({{'o', 0.5f}, {'g', 0.45f}});
  f.push_back({{'_', 0.9f}});
  return Frames(f);
}

std::shared_ptr<const WordLm> Lm() {
  return std::make_shared<const WordLm>(WordLm::Build(
      {"what is a dog", "what is a cat", "a dog is an animal", "what was that", "is it a god"}, {3, 1, 0}));
}

TEST(CtcLexiconDecoderTest, TheLexiconAndLmReadAMisspeltPathAsWords) {
  const torch::Tensor lp = Misspelt();
  EXPECT_EQ(CtcGreedyWords(lp).text, "wat is a dgo");
  CtcBeamOptions options;
  options.beam = 8;
  const CtcTranscript t = CtcLexiconDecoder(Lm(), options).Decode(lp);
  EXPECT_EQ(t.text, "what is a dog");
  ASSERT_EQ(t.words.size(), 4u);
  int64_t previous_end = 0;
  for (const CtcWord& w : t.words) {
    EXPECT_GE(w.start_frame, previous_end) << w.text;
    EXPECT_GT(w.end_frame, w.start_frame) << w.text;
    EXPECT_GT(w.confidence, 0.f);
    EXPECT_LE(w.confidence, 1.f);
    previous_end = w.end_frame;
  }
  EXPECT_LE(previous_end, lp.size(0));
  // The spans are where the letters are: "what" from frame 0 ('w') to its 't' (frame 5).
  EXPECT_EQ(t.words[0].start_frame, 0);
  EXPECT_EQ(t.words[0].end_frame, 6);
  EXPECT_EQ(t.words[3].start_frame, CtcGreedyWords(lp).words[3].start_frame);
  EXPECT_GT(t.confidence, 0.f);
  // Words the greedy path read right keep their greedy spans and confidences.
  const CtcTranscript greedy = CtcGreedyWords(lp);
  for (size_t i : {1, 2}) {
    EXPECT_EQ(t.words[i].start_frame, greedy.words[i].start_frame);
    EXPECT_EQ(t.words[i].end_frame, greedy.words[i].end_frame);
    EXPECT_NEAR(t.words[i].confidence, greedy.words[i].confidence, 1e-5);
  }
}

TEST(CtcLexiconDecoderTest, WithoutLmAndBeamOneItReadsAsGreedy) {
  CtcBeamOptions options;
  options.beam = 1;
  const CtcLexiconDecoder plain(nullptr, options);
  const torch::Tensor misspelt = Misspelt();
  const CtcTranscript a = plain.Decode(misspelt), b = CtcGreedyWords(misspelt);
  EXPECT_EQ(a.text, b.text);
  ASSERT_EQ(a.words.size(), b.words.size());
  for (size_t i = 0; i < a.words.size(); ++i) {
    EXPECT_EQ(a.words[i].start_frame, b.words[i].start_frame);
    EXPECT_EQ(a.words[i].end_frame, b.words[i].end_frame);
    EXPECT_NEAR(a.words[i].confidence, b.words[i].confidence, 1e-5);
  }
  EXPECT_NEAR(a.confidence, b.confidence, 1e-5);
  // Peaked random posteriors (what a trained CTC head emits): same text.
  std::mt19937 rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    torch::manual_seed(trial);
    torch::Tensor logits = torch::randn({60, CtcAlphabet::kSize});
    for (int64_t t = 0; t < 60; ++t) logits[t][rng() % 3 == 0 ? rng() % CtcAlphabet::kSize : 0] += 8.f;
    EXPECT_EQ(plain.Decode(logits).text, CtcGreedyWords(logits).text) << trial;
  }
}

TEST(CtcLexiconDecoderTest, StreamingEqualsOneShotAndIsDeterministic) {
  CtcBeamOptions options;
  options.beam = 6;
  const CtcLexiconDecoder decoder(Lm(), options);
  const torch::Tensor lp = Misspelt();
  const CtcTranscript once = decoder.Decode(lp);
  EXPECT_EQ(decoder.Decode(lp).text, once.text);
  std::unique_ptr<CtcBeamStream> stream = decoder.Start();
  EXPECT_EQ(stream->Interim().text, "");
  for (int64_t at = 0; at < lp.size(0); at += 4)
    stream->Advance(lp.narrow(0, at, std::min<int64_t>(4, lp.size(0) - at)));
  stream->Advance(lp.narrow(0, 0, 0));
  EXPECT_EQ(stream->Frames(), lp.size(0));
  EXPECT_EQ(stream->Interim().text, once.text);
  const CtcTranscript streamed = stream->Finish();
  EXPECT_EQ(streamed.text, once.text);
  ASSERT_EQ(streamed.words.size(), once.words.size());
  for (size_t i = 0; i < once.words.size(); ++i) EXPECT_EQ(streamed.words[i].end_frame, once.words[i].end_frame);
  EXPECT_SLM_ERROR(stream->Advance(lp), "Advance after Finish");
  EXPECT_EQ(decoder.Start()->Finish().text, "");  // no frames, no words
}

TEST(CtcLexiconDecoderTest, WithoutACompleteWordNothingIsInvented) {
  // "xq" is no prefix of any word: the search keeps nothing of it.
  std::vector<std::vector<std::pair<char, float>>> f = {{{'x', 0.9f}}, {{'_', 0.9f}}, {{'q', 0.9f}}};
  EXPECT_EQ(CtcLexiconDecoder(Lm(), {}).Decode(Frames(f)).text, "");
}

TEST(CtcLexiconDecoderTest, BadInputIsAnError) {
  const CtcLexiconDecoder decoder(Lm(), {});
  EXPECT_SLM_ERROR(decoder.Decode(torch::zeros({5, 10})), "logits must be [T, 29]");
  EXPECT_SLM_ERROR(decoder.Decode(torch::zeros({5})), "logits must be [T, 29]");
  CtcBeamOptions bad;
  bad.beam = 0;
  EXPECT_SLM_ERROR(CtcLexiconDecoder(nullptr, bad), "beam: must be in [1, 4096]");
  bad = {};
  bad.blank_skip = 0;
  EXPECT_SLM_ERROR(CtcLexiconDecoder(nullptr, bad), "blank_skip");
  bad = {};
  bad.lm_weight = -1;
  EXPECT_SLM_ERROR(CtcLexiconDecoder(nullptr, bad), "lm_weight");
  // Any float dtype: half-precision logits read the same.
  EXPECT_EQ(decoder.Decode(Misspelt().to(torch::kHalf)).text, decoder.Decode(Misspelt()).text);
}

}  // namespace
}  // namespace slm::audio
