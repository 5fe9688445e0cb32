#include "audio/ctc.h"
#include "audio/espeak_synth.h"
#include "audio/whisper_encoder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/test_util.h"

namespace slm::audio {
namespace {

TEST(CtcAlphabet, NormalizesEncodesAndDecodes) {
  EXPECT_EQ(CtcAlphabet::Normalize("  Don't STOP -- the well-known 'dogs' 42!"),
            "don't stop the well known dogs");
  EXPECT_EQ(CtcAlphabet::Normalize("?!"), "");
  const auto ids = CtcAlphabet::Encode("A b'c");
  EXPECT_EQ(ids, (std::vector<int64_t>{3, 1, 4, 2, 5}));
  EXPECT_EQ(CtcAlphabet::Decode({0, 3, 0, 1, 28}), "a z");
  EXPECT_SLM_ERROR(CtcAlphabet::Decode({29}), "CTC id 29 is outside the alphabet [0, 29)");
}

TEST(Ctc, GreedyDecodingMergesRepeatsAndDropsBlanks) {
  // Frames: a a _ a b b _ _ (then padding that must be ignored).
  const std::vector<int64_t> path = {3, 3, 0, 3, 4, 4, 0, 0, 5, 5};
  torch::Tensor logits = torch::zeros({1, 10, CtcAlphabet::kSize});
  for (int64_t t = 0; t < 10; ++t) logits[0][t][path[t]] = 5.0;
  const auto decoded = CtcGreedyDecode(logits, torch::tensor({8}));
  EXPECT_EQ(CtcAlphabet::Decode(decoded[0]), "aab");
  EXPECT_EQ(CtcAlphabet::Decode(CtcGreedyDecode(logits, {})[0]), "aabc");
}

TEST(Ctc, LossMatchesTorchAndSurvivesImpossibleTargets) {
  torch::manual_seed(0);
  const auto logits = torch::randn({2, 12, CtcAlphabet::kSize});
  const std::vector<std::vector<int64_t>> targets = {{3, 4, 5}, {6, 6}};
  const auto ours = CtcLoss(logits, torch::tensor({12, 9}), targets);
  const auto reference = torch::ctc_loss(torch::log_softmax(logits, -1).transpose(0, 1),
                                         torch::tensor({3, 4, 5, 6, 6}), torch::tensor({12, 9}),
                                         torch::tensor({3, 2}), 0, at::Reduction::Mean, true);
  EXPECT_NEAR(ours.item<double>(), reference.item<double>(), 1e-6);
  // 3 frames cannot hold "aaa" (repeats need blanks between): zeroed, not inf.
  const auto impossible = CtcLoss(logits.slice(0, 0, 1), torch::tensor({3}), {{3, 3, 3}});
  EXPECT_TRUE(std::isfinite(impossible.item<double>()));
  EXPECT_SLM_ERROR(CtcLoss(logits, torch::tensor({12, 9}), {{3}}), "1 target sequences for a batch of 2");
  EXPECT_SLM_ERROR(CtcLoss(logits, torch::tensor({12, 9}), {{3}, {0}}), "target id 0 outside [1, 29)");
}

TEST(Ctc, HeadLearnsToTranscribeFixedFeatures) {
  torch::manual_seed(1);
  CtcHead head(16);
  const auto states = torch::randn({2, 20, 16});
  const std::vector<std::string> texts = {"cab", "bad a"};
  std::vector<std::vector<int64_t>> targets;
  for (const auto& t : texts) targets.push_back(CtcAlphabet::Encode(t));
  torch::optim::Adam optimizer(head->parameters(), torch::optim::AdamOptions(0.05));
  for (int step = 0; step < 300; ++step) {
    const auto loss = CtcLoss(head(states), torch::tensor({20, 20}), targets);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  }
  torch::NoGradGuard no_grad;
  const auto decoded = CtcGreedyDecode(head(states), torch::tensor({20, 20}));
  EXPECT_EQ(CtcAlphabet::Decode(decoded[0]), "cab");
  EXPECT_EQ(CtcAlphabet::Decode(decoded[1]), "bad a");
}

}  // namespace
}  // namespace slm::audio

namespace slm::audio {
namespace {

TEST(CtcGreedyWords, GivesWordsWithFrameSpansAndPeakConfidence) {
  // Best path: _ c c _ a t ␣ ␣ d o g _  -> "cat" frames [1, 6), "dog" frames [8, 11).
  const std::string path = "_cc_at  dog_";
  torch::Tensor logits = torch::zeros({static_cast<int64_t>(path.size()), CtcAlphabet::kSize});
  for (size_t t = 0; t < path.size(); ++t) {
    const int64_t id = path[t] == '_'   ? CtcAlphabet::kBlank
                       : path[t] == ' ' ? 1  // space
                                        : CtcAlphabet::Encode(std::string(1, path[t])).at(0);
    logits[t][id] = path[t] == 'c' && t == 1 ? 2.0 : 5.0;  // frame 1 is less sure than frame 2
  }
  const CtcTranscript out = CtcGreedyWords(logits);
  EXPECT_EQ(out.text, "cat dog");
  ASSERT_EQ(out.words.size(), 2u);
  EXPECT_EQ(out.words[0].text, "cat");
  EXPECT_EQ(out.words[0].start_frame, 1);
  EXPECT_EQ(out.words[0].end_frame, 6);
  EXPECT_EQ(out.words[1].text, "dog");
  EXPECT_EQ(out.words[1].start_frame, 8);
  EXPECT_EQ(out.words[1].end_frame, 11);
  // Peak posterior of a letter with logit 5 against 28 zeros.
  const double peak = std::exp(5.0) / (std::exp(5.0) + 28);
  EXPECT_NEAR(out.words[1].confidence, peak, 1e-5);
  EXPECT_NEAR(out.words[0].confidence, peak, 1e-5);  // "c" peaks at frame 2
  EXPECT_NEAR(out.confidence, peak, 1e-5);
  // Agrees with CtcGreedyDecode.
  EXPECT_EQ(CtcAlphabet::Decode(CtcGreedyDecode(logits.unsqueeze(0), {})[0]), out.text);
  EXPECT_TRUE(CtcGreedyWords(torch::zeros({4, CtcAlphabet::kSize})).words.empty());  // all blank
  EXPECT_SLM_ERROR(CtcGreedyWords(torch::zeros({2, 3, 4})), "must be [T, V]");
}

}  // namespace
}  // namespace slm::audio

namespace slm::audio {
namespace {

TEST(LoadCtcHead, ReadsTheHeadSavedWithAnEncoderAndNamesWhatIsWrong) {
  testing::TempDir tmp;
  WhisperEncoderConfig c;
  c.d_model = 32;
  c.encoder_layers = 1;
  c.encoder_attention_heads = 2;
  c.encoder_ffn_dim = 64;
  c.num_mel_bins = 80;
  c.max_source_positions = 16;
  const torch::Tensor w = torch::randn({CtcAlphabet::kSize, 32}), b = torch::randn({CtcAlphabet::kSize});
  WhisperEncoder(c)->SaveWeights(tmp.File("good"), {{"ctc_head.weight", w}, {"ctc_head.bias", b}});
  const CtcHead head = LoadCtcHead(tmp.File("good"), 32, "test");
  EXPECT_TRUE(torch::equal(head->proj->weight, w));
  EXPECT_TRUE(torch::equal(head->proj->bias, b));
  EXPECT_FALSE(head->proj->weight.requires_grad());
  EXPECT_SLM_ERROR(LoadCtcHead(tmp.File("good"), 48, "model.x"), "ctc_head.weight must be [29 characters, 48]");
  WhisperEncoder(c)->SaveWeights(tmp.File("bare"));
  EXPECT_SLM_ERROR(LoadCtcHead(tmp.File("bare"), 32, "model.x"), "model.x needs an encoder saved with its CTC head");
  EXPECT_SLM_ERROR(LoadCtcHead(tmp.File("missing"), 32, "model.x"), "model.x: no ");
}

}  // namespace
}  // namespace slm::audio

namespace slm::audio {
namespace {

// The project's own ASR end to end (what the tts evaluation listens with): espeak-ng speech of a
// sentence through the committed tiny encoder's CTC head, which the encoder was trained to read.
TEST(CtcTranscriber, TranscribesSpeechAndRefusesEmptyOrOverlongAudio) {
  const std::string dir = std::string(SLM_SOURCE_DIR) + "/samples/models/speech_encoder_tiny";
  const CtcTranscriber asr(dir);
  VoiceSpec voice;
  voice.name = "en-us";
  const SynthResult speech = EspeakSynthesizer::Instance().Synthesize("a dog is an animal", voice);
  const std::string heard = asr.Transcribe(speech.samples);
  EXPECT_FALSE(heard.empty());
  // Greedy CTC of the tiny encoder: most letters right (23% CER on held-out speech).
  int64_t same = 0;
  const std::string said = "a dog is an animal";
  for (size_t i = 0; i < std::min(heard.size(), said.size()); ++i) same += heard[i] == said[i];
  EXPECT_GE(same, 5) << heard;
  EXPECT_SLM_ERROR(asr.Transcribe({}), "CtcTranscriber: empty audio");
  EXPECT_SLM_ERROR(asr.Transcribe(std::vector<float>(16000 * 60, 0.0f)), "more than the encoder's");
  EXPECT_THROW(CtcTranscriber("/nonexistent/encoder"), Error);
}

}  // namespace
}  // namespace slm::audio


namespace slm::audio {
namespace {
// Prefix scores against brute force: every one of the 29^4 paths of a 4-frame utterance, collapsed,
// checked for starting with (or being) the sequence; and Full against torch's ctc_loss on a longer
// utterance (an independent implementation of the same sum).
TEST(CtcPrefixScorer, MatchesEnumeratedPathsAndTorchCtcLoss) {
  torch::manual_seed(3);
  const int64_t v = CtcAlphabet::kSize;
  const torch::Tensor short_lp = torch::log_softmax(torch::randn({4, v}, torch::kDouble) * 2, -1);
  CtcPrefixScorer scorer(short_lp);
  const std::vector<std::vector<int64_t>> sequences = {{}, {5}, {5, 5}, {5, 7}, {1, 5, 1}, {3, 4, 5, 6}};
  std::vector<double> prefix(sequences.size(), 0), full(sequences.size(), 0);
  const auto lp = short_lp.accessor<double, 2>();
  for (int64_t path = 0; path < v * v * v * v; ++path) {
    int64_t rest = path;
    std::vector<int64_t> symbols(4);
    double logp = 0;
    for (int64_t t = 0; t < 4; ++t) {
      symbols[t] = rest % v;
      rest /= v;
      logp += lp[t][symbols[t]];
    }
    std::vector<int64_t> out;
    for (int64_t t = 0; t < 4; ++t)
      if (symbols[t] != 0 && (t == 0 || symbols[t] != symbols[t - 1])) out.push_back(symbols[t]);
    for (size_t i = 0; i < sequences.size(); ++i) {
      const auto& s = sequences[i];
      if (out.size() >= s.size() && std::equal(s.begin(), s.end(), out.begin())) prefix[i] += std::exp(logp);
      if (out == s) full[i] += std::exp(logp);
    }
  }
  for (size_t i = 0; i < sequences.size(); ++i) {
    EXPECT_NEAR(scorer.Prefix(sequences[i]), std::log(prefix[i]), 1e-9) << i;
    EXPECT_NEAR(scorer.Full(sequences[i]), std::log(full[i]), 1e-9) << i;
  }

  const torch::Tensor long_lp = torch::log_softmax(torch::randn({60, v}, torch::kDouble), -1);
  CtcPrefixScorer long_scorer(long_lp);
  const std::vector<int64_t> target = {3, 3, 4, 1, 7, 2, 9, 9, 9, 12};
  const double nll = torch::ctc_loss(long_lp.unsqueeze(1), torch::tensor(target).unsqueeze(0), torch::tensor({60}),
                                     torch::tensor({static_cast<int64_t>(target.size())}), 0, at::Reduction::None)
                         .item<double>();
  EXPECT_NEAR(long_scorer.Full(target), -nll, 1e-7);
  EXPECT_GE(long_scorer.Prefix(target), long_scorer.Full(target));  // a prefix covers the exact output
  EXPECT_SLM_ERROR(long_scorer.Prefix({0}), "outside [1, 29)");
  EXPECT_SLM_ERROR(CtcPrefixScorer(torch::zeros({5, 28})), "must be [T >= 1, 29]");
}

}  // namespace
}  // namespace slm::audio
