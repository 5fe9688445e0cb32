// The bounded left context of the block-causal WhisperEncoder (attention_left_chunks) and the
// incremental streaming encoder (audio/whisper_stream.h): whatever the chunking of the incoming
// features, the concatenated stream output equals the offline forward of the same block-causal
// model on the whole utterance; batched streams equal streams alone; bad input is named.
#include "audio/whisper_stream.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "audio/espeak_synth.h"
#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

constexpr int64_t kChunk = 4;  // output frames per chunk: 8 feature frames
constexpr int64_t kMels = 16;

WhisperEncoderConfig StreamConfig(int64_t left_chunks, int64_t layers = 2) {
  WhisperEncoderConfig c;
  c.d_model = 32;
  c.encoder_layers = layers;
  c.encoder_attention_heads = 4;
  c.encoder_ffn_dim = 48;
  c.num_mel_bins = kMels;
  c.max_source_positions = 100;  // 200 feature frames
  c.init_std = 0.2;
  c.attention_chunk_frames = kChunk;
  c.attention_left_chunks = left_chunks;
  return c;
}

WhisperEncoder StreamModel(int64_t left_chunks, uint64_t seed = 5, int64_t layers = 2) {
  torch::manual_seed(seed);
  WhisperEncoder model(StreamConfig(left_chunks, layers));
  model->Freeze();
  return model;
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.numel() == 0 && b.numel() == 0) return 0.0;
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

torch::Tensor Offline(WhisperEncoder& model, const torch::Tensor& features) {
  torch::NoGradGuard no_grad;
  return model->forward(features.unsqueeze(0)).squeeze(0);
}

// Streams `features` [T, n_mels] in pieces of the sizes `next_size` returns, then finishes;
// checks that releases come in whole chunks exactly when final; returns every released frame.
torch::Tensor Stream(WhisperEncoder& model, const torch::Tensor& features,
                     const std::function<int64_t()>& next_size) {
  WhisperStreamState state = model->StartStream();
  std::vector<torch::Tensor> pieces;
  int64_t fed = 0;
  while (fed < features.size(0)) {
    const int64_t n = std::min(next_size(), features.size(0) - fed);
    const torch::Tensor out = model->EncodeChunks(state, features.narrow(0, fed, n));
    fed += n;
    EXPECT_EQ(out.size(0) % kChunk, 0);
    EXPECT_EQ(state.OutputFrames(), (fed - 1) / (2 * kChunk) * kChunk) << fed << " frames fed";
    EXPECT_EQ(state.InputFrames(), fed);
    pieces.push_back(out);
  }
  pieces.push_back(model->Finish(state));
  EXPECT_TRUE(state.IsFinished());
  EXPECT_EQ(state.OutputFrames(), (features.size(0) + 1) / 2);
  return torch::cat(pieces, 0);
}

TEST(WhisperLeftContext, ConfigKeyRoundTripsAndIsValidated) {
  WhisperEncoderConfig c = StreamConfig(3);
  const nlohmann::json j = c.ToJson();
  EXPECT_EQ(j["attention_chunk_frames"], kChunk);
  EXPECT_EQ(j["attention_left_chunks"], 3);
  const WhisperEncoderConfig back = WhisperEncoderConfig::FromJson(j, "cfg.json");
  EXPECT_EQ(back.attention_chunk_frames, kChunk);
  EXPECT_EQ(back.attention_left_chunks, 3);
  EXPECT_FALSE(StreamConfig(0).ToJson().contains("attention_left_chunks"));
  nlohmann::json bad = j;
  bad["attention_left_chunks"] = -1;
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(bad, "cfg.json"),
                   "cfg.json: \"attention_left_chunks\" must not be negative");
  bad = j;
  bad.erase("attention_chunk_frames");
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(bad, "cfg.json"),
                   "\"attention_left_chunks\" (3) needs block-causal attention");
  bad["attention_left_chunks"] = "many";
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(bad, "cfg.json"),
                   "\"attention_left_chunks\" must be an integer");
  WhisperEncoder model = StreamModel(0);
  WhisperEncoderInput input;
  input.features = torch::randn({1, 20, kMels});
  input.attention_chunk_frames = 0;
  input.attention_left_chunks = 2;
  EXPECT_SLM_ERROR(model->forward(input), "attention_left_chunks 2 needs block-causal attention");
}

TEST(WhisperLeftContext, OutputsIgnoreAudioBeyondTheReceptiveField) {
  // Each layer looks L chunks back, so after N layers a frame depends on the audio of its own
  // chunk and the N*L before it (plus one feature frame of convolution context), and no further.
  torch::NoGradGuard no_grad;
  for (int64_t layers : {1, 2}) {
    const int64_t left = 2;
    WhisperEncoder model = StreamModel(left, 5, layers);
    const torch::Tensor audio = torch::randn({1, 120, kMels});  // 60 frames, 15 chunks
    const torch::Tensor base = model->forward(audio);
    const int64_t chunk = 12;                     // output frames 48..51
    const int64_t reach = chunk - layers * left;  // the earliest chunk that still matters
    // Audio that only touches chunks before `reach`: feature frames < 2 * reach * C - 2.
    torch::Tensor changed = audio.clone();
    changed.narrow(1, 0, 2 * reach * kChunk - 2).normal_();
    const torch::Tensor far = model->forward(changed);
    EXPECT_LE(
        MaxAbsDiff(far.narrow(1, chunk * kChunk, kChunk), base.narrow(1, chunk * kChunk, kChunk)),
        1e-5)
        << layers << " layers";
    // Audio inside the reach does matter (the check above is not vacuous).
    changed = audio.clone();
    changed.narrow(1, 2 * reach * kChunk, 2 * kChunk).normal_();
    EXPECT_GT(MaxAbsDiff(model->forward(changed).narrow(1, chunk * kChunk, kChunk),
                         base.narrow(1, chunk * kChunk, kChunk)),
              1e-3)
        << layers << " layers";
  }
}

TEST(WhisperLeftContext, LargeLeftContextIsFullBlockCausalAndPaddedRowsStayExact) {
  torch::NoGradGuard no_grad;
  const torch::Tensor audio = torch::randn({1, 90, kMels});  // 45 frames, 12 chunks
  WhisperEncoder unbounded = StreamModel(0);
  WhisperEncoder wide = StreamModel(11);  // same seed: same weights
  WhisperEncoder narrow = StreamModel(2);
  const torch::Tensor reference = unbounded->forward(audio);
  EXPECT_TRUE(torch::equal(wide->forward(audio), reference));
  EXPECT_GT(MaxAbsDiff(narrow->forward(audio), reference), 1e-3);
  // The input override selects the same masks.
  WhisperEncoderInput input;
  input.features = audio;
  input.attention_left_chunks = 0;
  EXPECT_TRUE(torch::equal(narrow->forward(input).last_hidden_state, reference));

  // A padded batch with a bounded left context: real frames equal the rows alone, padded frames
  // stay finite (a padded query far from every real key still sees itself).
  const torch::Tensor batch = torch::randn({3, 90, kMels});
  input.features = batch;
  input.attention_left_chunks = -1;
  input.lengths = torch::tensor(std::vector<int64_t>{90, 17, 61});
  const WhisperEncoderOutput out = narrow->forward(input);
  EXPECT_TRUE(torch::isfinite(out.last_hidden_state).all().item<bool>());
  for (int64_t row = 0; row < 3; ++row) {
    const int64_t n = input.lengths[row].item<int64_t>();
    const torch::Tensor alone = narrow->forward(batch.narrow(0, row, 1).narrow(1, 0, n));
    EXPECT_LE(MaxAbsDiff(out.last_hidden_state.narrow(0, row, 1).narrow(1, 0, (n + 1) / 2), alone),
              1e-5)
        << "row " << row;
  }
}

TEST(WhisperStream, AnyChunkingEqualsTheOfflineForward) {
  std::mt19937 random(11);
  for (int64_t left : {0, 2}) {
    WhisperEncoder model = StreamModel(left);
    for (int64_t length : {1, 2, 3, 7, 8, 9, 16, 17, 18, 33, 64, 101, 200}) {
      const torch::Tensor features = torch::randn({length, kMels});
      const torch::Tensor offline = Offline(model, features);
      const std::string label =
          "left " + std::to_string(left) + ", " + std::to_string(length) + " frames";
      const std::vector<std::pair<std::string, std::function<int64_t()>>> chunkings = {
          {"one frame at a time", [] { return int64_t{1}; }},
          {"one chunk at a time", [] { return 2 * kChunk; }},
          {"random sizes", [&] { return static_cast<int64_t>(random() % 23); }},
          {"all at once", [&] { return length; }}};
      for (const auto& [name, sizes] : chunkings) {
        const torch::Tensor streamed = Stream(model, features, sizes);
        ASSERT_EQ(streamed.sizes(), offline.sizes()) << label << ", " << name;
        EXPECT_LE(MaxAbsDiff(streamed, offline), 1e-5) << label << ", " << name;
      }
    }
  }
}

TEST(WhisperStream, CacheIsBoundedByTheLeftContext) {
  WhisperEncoder bounded = StreamModel(3);
  WhisperEncoder unbounded = StreamModel(0);
  WhisperStreamState a = bounded->StartStream(), b = unbounded->StartStream();
  EXPECT_EQ(a.InputFramesForNextChunk(), 2 * kChunk + 1);
  const torch::Tensor features = torch::randn({199, kMels});
  for (int64_t fed = 0; fed < 199; fed += 2 * kChunk) {
    const torch::Tensor piece = features.narrow(0, fed, std::min<int64_t>(2 * kChunk, 199 - fed));
    bounded->EncodeChunks(a, piece);
    unbounded->EncodeChunks(b, piece);
    EXPECT_LE(a.CachedFrames(), 3 * kChunk);
    EXPECT_EQ(b.CachedFrames(), b.OutputFrames());
    EXPECT_GT(a.InputFramesForNextChunk(), a.InputFrames());
  }
  EXPECT_EQ(a.CachedFrames(), 3 * kChunk);
  EXPECT_EQ(a.OutputFrames(), 96);
  bounded->Finish(a);
  EXPECT_EQ(a.CachedFrames(), 0);
}

TEST(WhisperStream, CtcTranscriptOfStreamedSpeechEqualsTheOfflineOne) {
  // Real speech (espeak-ng) through the streaming front-end in 160 ms pieces of audio, as the
  // server receives it, into the committed tiny encoder's weights run block-causally (chunks of
  // 160 ms, 12 chunks of left context): the greedy CTC transcript, its word times and confidences
  // equal those of the offline block-causal forward of the whole utterance.
  const std::string dir = std::string(SLM_SOURCE_DIR) + "/samples/models/speech_encoder_tiny";
  WhisperEncoderConfig config = WhisperEncoderConfig::FromFile(dir + "/config.json");
  config.attention_chunk_frames = 8;
  config.attention_left_chunks = 12;
  WhisperEncoder model(config, torch::TensorOptions().dtype(torch::kFloat), false);
  model->LoadWeights(dir);
  model->Freeze();
  CtcHead head = LoadCtcHead(dir, config.d_model, "test");
  VoiceSpec voice;
  voice.name = "en-us";
  const SynthResult speech = EspeakSynthesizer::Instance().Synthesize(
      "the cat sat on the mat and a dog ran home to eat its dinner while the birds sang in "
      "the tall green trees",
      voice);
  const std::vector<float> samples = Resample(speech.samples, kEspeakSampleRate, 16000);
  const LogMelOptions options = LoadEncoderFeatureOptions(dir);

  StreamingLogMel mel(options);
  WhisperStreamState state = model->StartStream();
  std::vector<torch::Tensor> frames;
  for (size_t at = 0; at < samples.size(); at += 2560) {  // 160 ms
    mel.AcceptWaveform(16000, samples.data() + at, std::min<size_t>(2560, samples.size() - at));
    frames.push_back(model->EncodeChunks(state, mel.PopFrames()));
  }
  mel.InputFinished();
  frames.push_back(model->EncodeChunks(state, mel.PopFrames()));
  frames.push_back(model->Finish(state));
  const torch::Tensor streamed = torch::cat(frames, 0);
  ASSERT_GT(streamed.size(0), 2 * 8 * 12);  // longer than the left context

  const torch::Tensor offline = Offline(model, LogMel(options).Compute(samples));
  ASSERT_EQ(streamed.sizes(), offline.sizes());
  EXPECT_LE(MaxAbsDiff(streamed, offline), 1e-4);
  torch::NoGradGuard no_grad;
  const CtcTranscript a = CtcGreedyWords(head(streamed.unsqueeze(0)).squeeze(0));
  const CtcTranscript b = CtcGreedyWords(head(offline.unsqueeze(0)).squeeze(0));
  EXPECT_FALSE(a.text.empty());
  EXPECT_EQ(a.text, b.text);
  ASSERT_EQ(a.words.size(), b.words.size());
  for (size_t i = 0; i < a.words.size(); ++i) {
    EXPECT_EQ(a.words[i].start_frame, b.words[i].start_frame) << i;
    EXPECT_EQ(a.words[i].end_frame, b.words[i].end_frame) << i;
    EXPECT_NEAR(a.words[i].confidence, b.words[i].confidence, 1e-4) << i;
  }
}

TEST(WhisperStream, BatchedStreamsEqualStreamsAlone) {
  // Streams at different positions, with caches of different lengths, releasing different
  // numbers of frames (some none, one finishing) in each batched call.
  for (int64_t left : {0, 2}) {
    WhisperEncoder model = StreamModel(left);
    const std::vector<int64_t> lengths = {150, 37, 90, 5};
    std::vector<torch::Tensor> audio;
    for (int64_t n : lengths) audio.push_back(torch::randn({n, kMels}));
    std::vector<WhisperStreamState> batched, alone;
    for (size_t s = 0; s < lengths.size(); ++s) {
      batched.push_back(model->StartStream());
      alone.push_back(model->StartStream());
    }
    std::vector<int64_t> fed(lengths.size(), 0);
    std::vector<torch::Tensor> batched_out(lengths.size(), torch::empty({0, 32}));
    std::mt19937 random(3);
    for (int round = 0; round < 40; ++round) {
      std::vector<WhisperStreamStep> steps;
      std::vector<size_t> who;
      for (size_t s = 0; s < lengths.size(); ++s) {
        if (batched[s].IsFinished() || random() % 4 == 0) continue;
        const int64_t n = std::min<int64_t>(random() % 20, lengths[s] - fed[s]);
        WhisperStreamStep step;
        step.state = &batched[s];
        step.features = audio[s].narrow(0, fed[s], n);
        step.finish = fed[s] + n == lengths[s] && random() % 2 == 0;
        fed[s] += n;
        steps.push_back(step);
        who.push_back(s);
      }
      const std::vector<torch::Tensor> outs = model->EncodeStreams(steps);
      ASSERT_EQ(outs.size(), steps.size());
      for (size_t i = 0; i < steps.size(); ++i) {
        const size_t s = who[i];
        torch::Tensor expected = model->EncodeChunks(alone[s], steps[i].features);
        if (steps[i].finish) expected = torch::cat({expected, model->Finish(alone[s])});
        ASSERT_EQ(outs[i].sizes(), expected.sizes()) << "stream " << s << ", round " << round;
        EXPECT_LE(MaxAbsDiff(outs[i], expected), 1e-5) << "stream " << s << ", round " << round;
        batched_out[s] = torch::cat({batched_out[s], outs[i]});
      }
    }
    for (size_t s = 0; s < lengths.size(); ++s) {
      if (!batched[s].IsFinished()) {
        const torch::Tensor rest =
            model->EncodeChunks(batched[s], audio[s].narrow(0, fed[s], lengths[s] - fed[s]));
        batched_out[s] = torch::cat({batched_out[s], rest, model->Finish(batched[s])});
      }
      EXPECT_LE(MaxAbsDiff(batched_out[s], Offline(model, audio[s])), 1e-5) << "stream " << s;
    }
  }
}

TEST(WhisperStream, CopiedStatesForkTheStream) {
  WhisperEncoder model = StreamModel(2);
  const torch::Tensor common = torch::randn({45, kMels});
  const torch::Tensor tail_a = torch::randn({30, kMels}), tail_b = torch::randn({52, kMels});
  WhisperStreamState a = model->StartStream();
  const torch::Tensor head = model->EncodeChunks(a, common);
  WhisperStreamState b = a;
  const torch::Tensor out_a = torch::cat({head, model->EncodeChunks(a, tail_a), model->Finish(a)});
  const torch::Tensor out_b = torch::cat({head, model->EncodeChunks(b, tail_b), model->Finish(b)});
  EXPECT_LE(MaxAbsDiff(out_a, Offline(model, torch::cat({common, tail_a}))), 1e-5);
  EXPECT_LE(MaxAbsDiff(out_b, Offline(model, torch::cat({common, tail_b}))), 1e-5);
}

TEST(WhisperStream, BadInputIsNamedAndChangesNothing) {
  WhisperEncoder model = StreamModel(2);
  WhisperEncoder other = StreamModel(2);
  WhisperStreamState state = model->StartStream();
  model->EncodeChunks(state, torch::randn({5, kMels}));
  EXPECT_SLM_ERROR(model->EncodeChunks(state, torch::randn({5, kMels + 1})),
                   "WhisperEncoder stream: features must be [T, n_mels=16], got [5, 17]");
  EXPECT_SLM_ERROR(model->EncodeChunks(state, torch::randn({1, 5, kMels})), "got [1, 5, 16]");
  EXPECT_SLM_ERROR(model->EncodeChunks(state, torch::ones({5, kMels}, torch::kLong)),
                   "features must be floating point");
  EXPECT_SLM_ERROR(other->EncodeChunks(state, torch::randn({5, kMels})),
                   "the state was started by another encoder");
  WhisperStreamState unstarted;
  EXPECT_FALSE(unstarted.IsStarted());
  EXPECT_SLM_ERROR(model->Finish(unstarted), "the state was not started");
  EXPECT_SLM_ERROR(model->EncodeChunks(state, torch::randn({196, kMels})),
                   "201 feature frames exceed the maximum of 200");
  // A batched call with one bad step leaves every state as it was.
  WhisperStreamState good = model->StartStream();
  std::vector<WhisperStreamStep> steps(2);
  steps[0].state = &good;
  steps[0].features = torch::randn({20, kMels});
  steps[1].state = &state;
  steps[1].features = torch::randn({3, 2});
  EXPECT_SLM_ERROR(model->EncodeStreams(steps), "WhisperEncoder stream (step 1 of 2): features");
  EXPECT_EQ(good.InputFrames(), 0);
  steps[1] = steps[0];
  EXPECT_SLM_ERROR(model->EncodeStreams(steps), "the same stream appears twice");
  steps[1].state = nullptr;
  EXPECT_SLM_ERROR(model->EncodeStreams(steps), "(step 1 of 2): no state given");
  EXPECT_EQ(good.InputFrames(), 0);
  EXPECT_EQ(state.InputFrames(), 5);
  // The stream still works after the errors, and ends once.
  const torch::Tensor rest = torch::randn({30, kMels});
  EXPECT_EQ(model->EncodeChunks(state, rest).size(0), 4 * kChunk);  // 35 frames: 4 chunks final
  EXPECT_EQ(model->Finish(state).size(0), 18 - 4 * kChunk);
  EXPECT_SLM_ERROR(model->EncodeChunks(state, rest), "the stream is finished");
  EXPECT_SLM_ERROR(model->Finish(state), "the stream is finished");
  // Nothing to stream without chunks; a moved encoder refuses its old streams.
  WhisperEncoderConfig full_attention = StreamConfig(0);
  full_attention.attention_chunk_frames = 0;
  WhisperEncoder full(full_attention);
  EXPECT_SLM_ERROR(full->StartStream(), "needs a block-causal encoder");
  WhisperStreamState before = model->StartStream();
  model->to(torch::kDouble);
  EXPECT_SLM_ERROR(model->EncodeChunks(before, rest),
                   "the encoder moved from cpu Float to cpu Double");
  // An empty stream finishes with no frames.
  WhisperStreamState empty = model->StartStream();
  EXPECT_EQ(model->Finish(empty).sizes(), (std::vector<int64_t>{0, 32}));
}

TEST(WhisperStream, DoublePrecisionMatchesClosely) {
  WhisperEncoder model = StreamModel(1);
  model->to(torch::kDouble);
  const torch::Tensor features = torch::randn({77, kMels}, torch::kDouble);
  const torch::Tensor streamed = Stream(model, features, [] { return int64_t{5}; });
  EXPECT_EQ(streamed.scalar_type(), torch::kDouble);
  EXPECT_LE(MaxAbsDiff(streamed, Offline(model, features)), 1e-12);
}

}  // namespace
}  // namespace slm::audio
