// MultimodalLM on the committed starter backbone (samples/models/backbone_tiny, whose tokenizer has
// the <speech>/<image> markers) with small random speech and image encoders saved to a temporary
// directory: splicing, labels, padding in both directions, the frozen/trainable split, generation,
// adapters on disk, the summary and every input error.
#include "adapters/multimodal.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::adapters {
namespace {

const std::string kBackbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";

// A small Whisper-shaped speech encoder (d_model 32, one layer, 4 s at most).
audio::WhisperEncoderConfig SmallWhisper() {
  audio::WhisperEncoderConfig w;
  w.d_model = 32;
  w.encoder_layers = 1;
  w.encoder_attention_heads = 2;
  w.encoder_ffn_dim = 64;
  w.max_source_positions = 200;
  return w;
}

// Random encoders written once per test binary run.
struct Encoders {
  slm::testing::TempDir dir;
  std::string speech, image;
  Encoders() {
    torch::manual_seed(5);
    speech = dir.File("speech");
    audio::WhisperEncoder(SmallWhisper())->SaveWeights(speech);
    audio::LogMelOptions mel;
    mel.normalization = audio::MelNormalization::kFixedFloor;
    audio::SaveEncoderFeatureOptions(speech, mel);
    vision::ClipVisionConfig c;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.image_size = 32;
    c.patch_size = 8;
    image = dir.File("image");
    vision::ClipVisionModel(c)->SaveWeights(image);
  }
};

const Encoders& SharedEncoders() {
  static const Encoders encoders;
  return encoders;
}

MultimodalConfig Config(bool lora = false) {
  MultimodalConfig c;
  c.backbone = kBackbone;
  c.speech.encoder = SharedEncoders().speech;
  c.speech.projector.stack = 2;
  c.image.encoder = SharedEncoders().image;
  c.lora_enabled = lora;
  return c;
}

MultimodalExample Example(int64_t frames, const std::string& target, uint64_t seed) {
  torch::manual_seed(seed);
  MultimodalExample e;
  e.prompt = "<speech> Transcribe and look at <image> now:";
  e.speech = {torch::randn({frames, 80})};
  e.images = {torch::randn({3, 32, 32})};
  e.target = target;
  return e;
}

TEST(MultimodalLM, SplicesEncoderOutputsAtPlaceholdersAndLabelsOnlyTargets) {
  MultimodalLM model(Config());
  const MultimodalExample ex = Example(40, "a red circle", 1);
  const MultimodalBatch batch = model->Prepare({ex}, text::PaddingSide::kRight);
  const auto& tok = model->Tokenizer();
  const auto prompt = tok.Encode(ex.prompt, true, false);
  const auto target = tok.Encode(ex.target, false, true);
  // 40 frames -> 20 encoder frames -> stack 2 -> 10 positions; 16 patches for a 32x32 image.
  const int64_t speech_positions = 10, image_positions = 16;
  EXPECT_DOUBLE_EQ(model->SpeechPositionsPerSecond(), 25.0);
  const int64_t expected_length = static_cast<int64_t>(prompt.size()) - 2 + speech_positions +
                                  image_positions + static_cast<int64_t>(target.size());
  ASSERT_EQ(batch.lengths, std::vector<int64_t>{expected_length});
  EXPECT_EQ(batch.target_tokens, static_cast<int64_t>(target.size()));
  EXPECT_EQ(target.back(), tok.EosId());
  // Position 0 is BOS, then the speech slot.
  const auto embeds = batch.inputs_embeds[0].detach();
  const auto bos = model->Backbone()->EmbedTokens(torch::tensor({{tok.BosId()}}))[0][0];
  EXPECT_TRUE(torch::allclose(embeds[0], bos));
  torch::NoGradGuard no_grad;
  audio::WhisperEncoderInput in;
  in.features = ex.speech[0].unsqueeze(0);
  const auto speech = model->SpeechProjector()->forward(model->SpeechEncoder()->forward(in).last_hidden_state)[0];
  EXPECT_TRUE(torch::allclose(embeds.slice(0, 1, 1 + speech_positions), speech, 1e-5, 1e-6));
  // The image slot follows the text between the placeholders.
  const int64_t between = 0;
  int64_t marker_index = -1;
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] == tok.AddedTokenId("<image>")) marker_index = static_cast<int64_t>(i);
  ASSERT_GT(marker_index, 1);
  const int64_t image_start = marker_index - 1 + speech_positions + between;
  const auto image = model->ImageProjector()->forward(
      model->ImageEncoder()->Features(ex.images[0].unsqueeze(0)))[0];
  EXPECT_TRUE(torch::allclose(embeds.slice(0, image_start, image_start + image_positions), image, 1e-5, 1e-6));
  // Labels: -100 up to the target, then the target ids.
  const auto labels = batch.labels[0];
  const int64_t target_start = expected_length - static_cast<int64_t>(target.size());
  EXPECT_EQ(labels.slice(0, 0, target_start).eq(-100).all().item<bool>(), true);
  EXPECT_TRUE(torch::equal(labels.slice(0, target_start), torch::tensor(target, torch::kLong)));
}

TEST(MultimodalLM, PaddedBatchLossEqualsTokenWeightedRowLosses) {
  MultimodalLM model(Config());
  const std::vector<MultimodalExample> rows = {Example(60, "a red circle above a blue square", 1),
                                               Example(17, "a star", 2)};
  torch::NoGradGuard no_grad;
  const MultimodalBatch both = model->Prepare(rows, text::PaddingSide::kRight);
  double weighted = 0;
  for (const auto& row : rows) {
    const MultimodalBatch one = model->Prepare({row}, text::PaddingSide::kRight);
    weighted += model->Loss(one).item<double>() * one.target_tokens;
  }
  EXPECT_NEAR(model->Loss(both).item<double>(), weighted / both.target_tokens, 1e-4);
  EXPECT_EQ(both.attention_mask.sum().item<int64_t>(), both.lengths[0] + both.lengths[1]);
}

TEST(MultimodalLM, OnlyProjectorsAndLoraTrain) {
  for (bool lora : {false, true}) {
    MultimodalLM model(Config(lora));
    model->train();
    EXPECT_TRUE(model->SpeechEncoder()->IsFrozen());
    EXPECT_TRUE(model->ImageEncoder()->IsFrozen());
    EXPECT_EQ(model->Backbone()->IsFrozen(), !lora);  // LoRA keeps the backbone in train mode
    const MultimodalBatch batch = model->Prepare({Example(30, "a blue square", 3)}, text::PaddingSide::kRight);
    model->Loss(batch).backward();
    int64_t with_grad = 0;
    for (const auto& named : model->named_parameters()) {
      const std::string& name = named.key();
      const bool trainable = name.rfind("speech_projector.", 0) == 0 ||
                             name.rfind("image_projector.", 0) == 0 || name.find(".lora_") != std::string::npos;
      EXPECT_EQ(named.value().requires_grad(), trainable) << name;
      if (named.value().grad().defined()) ++with_grad;
      if (!trainable) EXPECT_FALSE(named.value().grad().defined()) << name;
    }
    EXPECT_EQ(with_grad, static_cast<int64_t>(model->TrainableParameters().size()));
    const ModelSummary s = model->Summary();
    int64_t trainable = 0;
    for (const auto& p : model->TrainableParameters()) trainable += p.numel();
    EXPECT_EQ(s.trainable_parameters, trainable);
    EXPECT_EQ(s.total_parameters, s.trainable_parameters + s.frozen_parameters);
    EXPECT_EQ(s.training_state_bytes, trainable * 12);
  }
}

TEST(MultimodalLM, ProjectorsLearnThroughTheFrozenBackbone) {
  MultimodalLM model(Config());
  model->train();
  torch::optim::Adam optimizer(model->TrainableParameters(), torch::optim::AdamOptions(3e-3));
  const std::vector<MultimodalExample> rows = {Example(30, "a green triangle", 4), Example(24, "a red star", 5)};
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    const torch::Tensor loss = model->Loss(model->Prepare(rows, text::PaddingSide::kRight));
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, 0.5 * first) << first << " -> " << last;
}

TEST(MultimodalLM, BatchedGenerationEqualsOneByOne) {
  MultimodalLM model(Config());
  model->eval();
  const std::vector<MultimodalExample> rows = {Example(50, "", 6), Example(12, "", 7)};
  text::GenerationOptions options;
  options.max_new_tokens = 6;
  options.ignore_stop_tokens = true;
  const text::GenerationResult batch = model->Generate(rows, options);
  for (size_t i = 0; i < rows.size(); ++i)
    EXPECT_EQ(batch.tokens[i], model->Generate({rows[i]}, options).tokens[0]) << i;
}

TEST(MultimodalLM, AdaptersRoundTripAndMustMatch) {
  slm::testing::TempDir tmp;
  MultimodalLM model(Config(true));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->TrainableParameters()) p.normal_(0, 0.05);
  }
  model->SaveAdapters(tmp.File("adapters"));
  const MultimodalExample ex = Example(20, "two shapes", 8);
  torch::NoGradGuard no_grad;
  const double loss = model->Loss(model->Prepare({ex}, text::PaddingSide::kRight)).item<double>();
  MultimodalLM loaded(Config(true));
  loaded->LoadAdapters(tmp.File("adapters"));
  EXPECT_NEAR(loaded->Loss(loaded->Prepare({ex}, text::PaddingSide::kRight)).item<double>(), loss, 1e-5);
  MultimodalConfig other = Config(true);
  other.speech.projector.stack = 4;
  MultimodalLM mismatched(other);
  EXPECT_SLM_ERROR(mismatched->LoadAdapters(tmp.File("adapters")), "\"speech_projector\" is");
  MultimodalLM no_lora(Config(false));
  EXPECT_SLM_ERROR(no_lora->LoadAdapters(tmp.File("adapters")), "has LoRA but the model has none");
}

TEST(MultimodalLM, FineTunedEncodersTrainAndTravelWithTheAdapters) {
  slm::testing::TempDir tmp;
  MultimodalConfig tuned = Config();
  tuned.speech.train_encoder = tuned.image.train_encoder = true;
  MultimodalLM model(tuned);
  model->train();
  EXPECT_FALSE(model->SpeechEncoder()->is_training());  // no dropout, whatever the mode
  const MultimodalExample ex = Example(30, "a blue square", 3);
  model->Loss(model->Prepare({ex}, text::PaddingSide::kRight)).backward();
  int64_t encoder_tensors = 0;
  for (auto* encoder : {static_cast<torch::nn::Module*>(model->SpeechEncoder().get()),
                        static_cast<torch::nn::Module*>(model->ImageEncoder().get())})
    for (const auto& named : encoder->named_parameters()) {
      ++encoder_tensors;
      EXPECT_TRUE(named.value().requires_grad()) << named.key();
      // The image features come from the penultimate layer: the last one and post_layernorm get none.
      const bool unused = named.key().find("layers.1.") != std::string::npos || named.key().find("post_layernorm") != std::string::npos;
      EXPECT_EQ(named.value().grad().defined(), !unused) << named.key();
    }
  // Gradient reaches the first layers of both encoders (not only their last norms).
  EXPECT_GT(model->SpeechEncoder()->named_parameters()["model.encoder.conv1.weight"].grad().abs().sum().item<double>(), 0);
  EXPECT_GT(model->ImageEncoder()->named_parameters()["vision_model.embeddings.patch_embedding.weight"]
                .grad().abs().sum().item<double>(), 0);
  MultimodalLM frozen_model(Config());
  EXPECT_EQ(model->TrainableParameters().size(),
            frozen_model->TrainableParameters().size() + static_cast<size_t>(encoder_tensors));

  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->TrainableParameters()) p.add_(torch::randn_like(p) * 0.02);
  }
  model->SaveAdapters(tmp.File("tuned"));
  torch::NoGradGuard no_grad;
  const double loss = model->Loss(model->Prepare({ex}, text::PaddingSide::kRight)).item<double>();
  MultimodalLM loaded(tuned);
  loaded->LoadAdapters(tmp.File("tuned"));
  EXPECT_NEAR(loaded->Loss(loaded->Prepare({ex}, text::PaddingSide::kRight)).item<double>(), loss, 1e-5);
  EXPECT_GT(std::abs(frozen_model->Loss(frozen_model->Prepare({ex}, text::PaddingSide::kRight)).item<double>() - loss), 1e-4);
  EXPECT_SLM_ERROR(frozen_model->LoadAdapters(tmp.File("tuned")), "\"speech_encoder\" but the model has none fine-tuned");
  frozen_model->SaveAdapters(tmp.File("frozen"));
  EXPECT_SLM_ERROR(loaded->LoadAdapters(tmp.File("frozen")), "has no fine-tuned \"speech_encoder\"");
}

// A small random speech encoder saved in `dir` with the given CTC head [29, 32] / [29], and a
// config over it with the test backbone and a projector of `projector_type`.
MultimodalConfig WithCtcHeadEncoder(const std::string& dir, const torch::Tensor& head_w, const torch::Tensor& head_b,
                                    const std::string& projector_type) {
  audio::WhisperEncoder encoder(SmallWhisper());
  encoder->SaveWeights(dir, {{"ctc_head.weight", head_w}, {"ctc_head.bias", head_b}});
  audio::LogMelOptions mel;
  mel.normalization = audio::MelNormalization::kFixedFloor;
  audio::SaveEncoderFeatureOptions(dir, mel);
  MultimodalConfig c;
  c.backbone = kBackbone;
  c.speech.encoder = dir;
  c.speech.projector.type = projector_type;
  return c;
}

// ctc_embed: the encoder's CTC head segments the frames and each kept frame starts as the LM's
// embedding of its character's piece (the correction MLP is zero-initialised).
TEST(MultimodalLM, CtcEmbedTurnsCtcSegmentsIntoCharacterEmbeddings) {
  slm::testing::TempDir tmp;
  torch::manual_seed(9);
  // A head that reads the sign of feature 0: positive -> 'a' (symbol 3), else blank.
  torch::Tensor head_w = torch::zeros({29, 32}), head_b = torch::zeros({29});
  head_w[3][0] = 100.0;
  head_b[0] = 1.0;
  MultimodalConfig c = WithCtcHeadEncoder(tmp.File("enc"), head_w, head_b, "ctc_embed");
  c.speech.projector.hidden_dim = 16;
  MultimodalLM model(c);
  model->eval();
  // Frames 0,1 'a' | 2 blank | 3 'a' | 4,5 blank | 6 'a' -> three segments; frame 7 is padding.
  torch::Tensor features = -torch::ones({2, 8, 32});
  for (int64_t t : {0, 1, 3, 6}) features[0][t][0] = 1.0;
  const ProjectorOutput out = model->SpeechProjector()->Project(features, torch::tensor({7, 8}));
  EXPECT_EQ(out.lengths[0].item<int64_t>(), 3);
  EXPECT_EQ(out.lengths[1].item<int64_t>(), 1);  // nothing spoken: one position
  const int64_t a = model->Tokenizer().PieceToId("a");
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = model->Backbone()->EmbedTokens(torch::tensor({a}))[0];
  for (int64_t i = 0; i < 3; ++i) EXPECT_TRUE(torch::allclose(out.embeds[0][i], expected, 1e-4, 1e-5)) << i;
  // An encoder without a CTC head cannot feed ctc_embed.
  MultimodalConfig no_head = Config();
  no_head.image.encoder.clear();
  no_head.speech.projector = c.speech.projector;
  no_head.speech.projector.input_dim = no_head.speech.projector.output_dim = 0;
  EXPECT_SLM_ERROR(MultimodalLM{no_head}, "has no ctc_head");
}

// ctc_embed with units: words: the greedy transcript's words enter as the LM's own pieces, each
// piece plus the correction of its word's mean frame.
TEST(MultimodalLM, CtcEmbedWordsGivesTheLmItsOwnPiecesPerWord) {
  slm::testing::TempDir tmp;
  torch::manual_seed(9);
  // Feature 0 -> 'a' (symbol 3), feature 1 -> 'b' (4), feature 2 -> space (1), else blank.
  torch::Tensor head_w = torch::zeros({29, 32}), head_b = torch::zeros({29});
  head_w[3][0] = head_w[4][1] = head_w[1][2] = 100.0;
  head_b[0] = 1.0;
  MultimodalConfig c = WithCtcHeadEncoder(tmp.File("enc"), head_w, head_b, "ctc_embed");
  c.speech.projector.units = "words";
  c.speech.projector.hidden_dim = 16;
  MultimodalLM model(c);
  model->eval();
  // Row 0: "ba" | space | "a" (frame 6 repeats 'a' after a blank: a new character) -> "ba aa".
  torch::Tensor features = -torch::ones({2, 8, 32});
  for (auto [t, f] : std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {1, 0}, {2, 2}, {3, 0}, {5, 0}}) features[0][t][f] = 1.0;
  const ProjectorOutput out = model->SpeechProjector()->Project(features, torch::tensor({7, 8}));
  std::vector<int64_t> pieces = model->Tokenizer().Encode("ba", false, false);
  const std::vector<int64_t> second = model->Tokenizer().Encode("aa", false, false);
  pieces.insert(pieces.end(), second.begin(), second.end());
  ASSERT_EQ(out.lengths[0].item<int64_t>(), static_cast<int64_t>(pieces.size()));
  EXPECT_EQ(out.lengths[1].item<int64_t>(), 1);  // nothing heard: the word-boundary piece
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = model->Backbone()->EmbedTokens(torch::tensor(pieces));
  EXPECT_TRUE(torch::allclose(out.embeds[0].slice(0, 0, pieces.size()), expected, 1e-4, 1e-5));
  const torch::Tensor boundary = model->Backbone()->EmbedTokens(torch::tensor({model->Tokenizer().PieceToId("\xE2\x96\x81")}));
  EXPECT_TRUE(torch::allclose(out.embeds[1][0], boundary[0], 1e-4, 1e-5));

  // The correction depends on each word's frames: with a non-zero last layer the two words move
  // differently, every piece of one word alike.
  for (auto& named : model->SpeechProjector()->named_parameters())
    if (named.key().find("linear_2") != std::string::npos) named.value().normal_(0, 0.1);
  const torch::Tensor shift = model->SpeechProjector()->Project(features, torch::tensor({7, 8})).embeds[0].slice(0, 0, pieces.size()) - expected;
  const int64_t first_word = static_cast<int64_t>(model->Tokenizer().Encode("ba", false, false).size());
  for (int64_t i = 1; i < static_cast<int64_t>(pieces.size()); ++i)
    EXPECT_EQ(torch::allclose(shift[i], shift[0], 1e-5, 1e-6), i < first_word) << i;

  // The saved spec records the units; a characters model refuses words adapters.
  model->SaveAdapters(tmp.File("words"));
  MultimodalConfig characters = c;
  characters.speech.projector.units = "characters";
  MultimodalLM other(characters);
  EXPECT_SLM_ERROR(other->LoadAdapters(tmp.File("words")), "\"speech_projector\" is");
  auto doc = config::Document::LoadString("type: ctc_embed\nunits: letters\n", "p.yaml");
  ProjectorSpec spec;
  EXPECT_SLM_ERROR(spec.Load(doc.Root()), "letters");
}

// CTC-guided decoding: with a CTC head that hears "a" in every frame and a large weight, the
// random LM's continuation is steered to exactly that transcript and then stops (the LM alone says
// something else); the LM-free CTC transcript is "a" too.
TEST(MultimodalLM, CtcGuidedDecodingFollowsTheCtcTranscript) {
  slm::testing::TempDir tmp;
  torch::manual_seed(5);
  torch::Tensor head_w = torch::zeros({29, 32}), head_b = torch::zeros({29});
  head_b[3] = 8.0;  // 'a' everywhere (collapses to one "a")
  MultimodalLM model(WithCtcHeadEncoder(tmp.File("enc"), head_w, head_b, "mlp"));
  model->eval();
  MultimodalExample ex;
  ex.prompt = "<speech> Transcribe:";
  ex.speech = {torch::randn({40, 80})};
  text::GenerationOptions o;
  o.max_new_tokens = 8;
  const text::GenerationResult guided = model->Generate({ex, ex}, o, nullptr, {100.0, 4});
  for (int64_t row = 0; row < 2; ++row) {
    EXPECT_EQ(audio::CtcAlphabet::Normalize(model->Tokenizer().Decode(guided.tokens[row], true)), "a") << row;
    EXPECT_EQ(guided.finish_reasons[row], "stop") << row;
  }
  const text::GenerationResult alone = model->Generate({ex}, o);
  EXPECT_NE(audio::CtcAlphabet::Normalize(model->Tokenizer().Decode(alone.tokens[0], true)), "a");
  EXPECT_EQ(model->CtcTranscripts({ex}), std::vector<std::string>{"a"});

  MultimodalExample two = ex;
  two.prompt = "<speech> <speech> Transcribe:";
  two.speech.push_back(ex.speech[0]);
  EXPECT_SLM_ERROR(model->Generate({two}, o, nullptr, {1.0, 4}), "example 0 has 2 speech clips");
  MultimodalConfig headless = Config();
  headless.image.encoder.clear();
  MultimodalLM no_head(headless);
  EXPECT_SLM_ERROR(no_head->Generate({ex}, o, nullptr, {1.0, 4}), "has no ctc_head");
}

TEST(MultimodalLM, InputErrorsNameTheExample) {
  MultimodalLM model(Config());
  MultimodalExample two = Example(20, "x", 9);
  two.prompt = "<speech> and <speech> again <image>";
  EXPECT_SLM_ERROR(model->Prepare({Example(20, "x", 1), two}, text::PaddingSide::kRight),
                   "example 1: the prompt has 2 <speech> placeholder(s) but 1 speech input(s)");
  MultimodalExample bad = Example(20, "x", 1);
  bad.speech[0] = torch::randn({20, 64});
  EXPECT_SLM_ERROR(model->Prepare({bad}, text::PaddingSide::kRight),
                   "example 0, speech 0: features must be log-mel [frames, 80], got [20, 64]");
  bad = Example(20, "x", 1);
  bad.images[0] = torch::randn({3, 64, 64});
  EXPECT_SLM_ERROR(model->Prepare({bad}, text::PaddingSide::kRight), "pixels must be [3, 32, 32]");
  EXPECT_SLM_ERROR(model->Prepare({Example(20, "", 1)}, text::PaddingSide::kRight), "empty target");
  EXPECT_SLM_ERROR(model->Prepare({Example(401, "x", 1)}, text::PaddingSide::kRight),
                   "401 frames exceed the encoder's 400");
  MultimodalExample long_text = Example(20, "x", 1);
  long_text.target = std::string(3000, 'a') + " b";
  for (int i = 0; i < 400; ++i) long_text.target += " word";
  EXPECT_SLM_ERROR(model->Prepare({long_text}, text::PaddingSide::kRight), "exceed the backbone's max_position_embeddings");

  MultimodalConfig speech_only = Config();
  speech_only.image.encoder.clear();
  MultimodalLM no_image(speech_only);
  EXPECT_SLM_ERROR(no_image->Prepare({Example(20, "x", 1)}, text::PaddingSide::kRight),
                   "example 0: the prompt has 0 <image> placeholder(s) but 1 image(s) were given (the model has no image encoder)");
}

TEST(MultimodalLM, ConfigFillsDimensionsAndRejectsMismatches) {
  auto doc = config::Document::LoadString(
      "model:\n  backbone: " + kBackbone + "\n  speech:\n    encoder: " + SharedEncoders().speech +
          "\n    projector: {type: qformer, window: 10, num_queries: 2, num_heads: 2}\n"
          "  lora: {enabled: true, rank: 4, target_modules: [q_proj]}\n",
      "m.yaml");
  MultimodalConfig c;
  c.Load(doc.Root().Child("model"));
  doc.CheckAllConsumed();
  MultimodalLM model(c);
  EXPECT_EQ(model->SpeechProjector()->Spec().input_dim, 32);
  EXPECT_EQ(model->SpeechProjector()->Spec().output_dim, 256);
  EXPECT_DOUBLE_EQ(model->SpeechPositionsPerSecond(), 10.0);  // 50 frames/s, 5 frames per position
  EXPECT_TRUE(model->Backbone()->HasLora());
  EXPECT_FALSE(model->HasImage());

  MultimodalConfig wrong = Config();
  wrong.speech.projector.output_dim = 128;
  EXPECT_SLM_ERROR(MultimodalLM built(wrong), "model.speech.projector.output_dim is 128 but the backbone's hidden_size is 256");
  auto typo = config::Document::LoadString("model:\n  backbone: x\n  speach: {}\n", "t.yaml");
  MultimodalConfig t;
  t.Load(typo.Root().Child("model"));
  EXPECT_SLM_ERROR(typo.CheckAllConsumed(), "unknown key 'model.speach'");
}

}  // namespace
}  // namespace slm::adapters

namespace slm::adapters {
namespace {

// The loss against an independent computation: full logits, shifted by one, cross-entropy over the
// target tokens only.
TEST(MultimodalLM, LossIsNextTokenCrossEntropyOverTargets) {
  MultimodalLM model(Config());
  torch::NoGradGuard no_grad;
  const MultimodalBatch batch = model->Prepare(
      {Example(30, "a red circle above a star", 1), Example(14, "a dog", 2)}, text::PaddingSide::kRight);
  text::LlamaInput input;
  input.inputs_embeds = batch.inputs_embeds;
  input.attention_mask = batch.attention_mask;
  const torch::Tensor logits = model->Backbone()->forward(input).logits;  // [B, T, V]
  const torch::Tensor expected = torch::nn::functional::cross_entropy(
      logits.slice(1, 0, -1).reshape({-1, logits.size(-1)}), batch.labels.slice(1, 1).reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  EXPECT_NEAR(model->Loss(batch).item<double>(), expected.item<double>(), 1e-5);
}

}  // namespace
}  // namespace slm::adapters
