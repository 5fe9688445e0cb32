// The adapter trainer end to end on a miniature setup (the committed starter backbone, a random
// tiny speech encoder, noise "speech" with short transcripts): tasks and data sources, epochs,
// checkpoints (round trip, corruption, a full disk), exact resume after SIGKILL, a diverging run,
// and config errors.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "audio/audio_io.h"
#include "core/checksum.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/safetensors.h"
#include "datagen/data_prep.h"
#include "tests/test_util.h"
#include "tests/train/tiny_encoder.h"
#include "train/checkpoint.h"
#include "train/dataset.h"
#include "train/distributed.h"
#include "train/tasks.h"
#include "train/trainer.h"

namespace slm::train {
namespace {

namespace stdfs = std::filesystem;
const std::string kBackbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";

// A random encoder, 12 noise clips with transcripts (train) and 4 (valid).
struct Miniature {
  testing::TempDir dir;
  std::string encoder, train_manifest, valid_manifest;
  Miniature() {
    torch::manual_seed(4);
    encoder = testing_support::SaveTinySpeechEncoder(dir.File("encoder"));
    const std::vector<std::string> texts = {"a red circle", "the dog", "blue square", "a cat sat",
                                            "green", "two stars", "a big tree", "the sun",
                                            "cold snow", "he ran", "she reads", "we walk",
                                            "a bird", "the sea", "dark sky", "old road"};
    stdfs::create_directories(dir.File("wav"));
    std::vector<manifest::Entry> train, valid;
    for (size_t i = 0; i < texts.size(); ++i) {
      const int samples = 6000 + 1500 * static_cast<int>(i % 5);
      const torch::Tensor noise = torch::randn({samples}) * 0.1;
      std::vector<float> wave(noise.data_ptr<float>(), noise.data_ptr<float>() + samples);
      const std::string name = "wav/c" + std::to_string(i) + ".wav";
      audio::Write(dir.File(name), wave, 16000);
      manifest::Entry e;
      e.id = "c" + std::to_string(i);
      e.task = "asr";
      e.audio = name;
      e.text = texts[i];
      (i < 12 ? train : valid).push_back(e);
    }
    train_manifest = dir.File("train.jsonl");
    valid_manifest = dir.File("valid.jsonl");
    manifest::Write(train_manifest, train);
    manifest::Write(valid_manifest, valid);
  }
  std::string Yaml(const std::string& out, int64_t steps, const std::string& extra = "") const {
    return "model:\n  backbone: " + kBackbone + "\n  speech:\n    encoder: " + encoder +
           "\n    projector: {type: stack_mlp, stack: 2, hidden_dim: 64}\n"
           "data:\n  train:\n    - {manifest: " + train_manifest + ", task: asr}\n"
           "  valid:\n    - {manifest: " + valid_manifest + ", task: asr}\n"
           "train: {steps: " + std::to_string(steps) + ", batch_size: 4, lr: 0.003, warmup_steps: 2, log_every: 1}\n"
           "eval: {max_new_tokens: 6}\ncheckpoint: {every: 1, keep: 3}\nthreads: 1\nseed: 3\noutput_dir: " + out + "\n" + extra;
  }
  TrainConfig Config(const std::string& out, int64_t steps, const std::string& extra = "") const {
    auto doc = config::Document::LoadString(Yaml(out, steps, extra), "mini.yaml");
    TrainConfig c;
    c.Load(doc.Root());
    doc.CheckAllConsumed();
    return c;
  }
};

const Miniature& Mini() {
  static const Miniature m;
  return m;
}

torch::Tensor AdapterWeights(const std::string& run) {
  safetensors::Reader r(run + "/adapters/adapters.safetensors");
  std::vector<torch::Tensor> all;
  for (const auto& name : r.Names()) all.push_back(r.Get(name).flatten());
  return torch::cat(all);
}

std::vector<double> Losses(const std::string& metrics_path);

TEST(Tasks, TemplatesAndRequiredFields) {
  EXPECT_EQ(DefaultPromptTemplate("asr"), "<speech> Transcribe:");
  EXPECT_NO_THROW(CheckPromptTemplate("vqa", "<image> Q: {question}"));
  EXPECT_SLM_ERROR(CheckPromptTemplate("asr", "Transcribe:"), "has 0 <speech> and 0 <image> placeholder(s); the task needs 1 and 0");
  EXPECT_SLM_ERROR(DefaultPromptTemplate("asrr"), "unknown task 'asrr'");
  manifest::Entry e;
  e.id = "q1";
  e.image = "img/a.png";
  e.prompt = "what color is the circle";
  e.response = "red";
  const TaskExample x = BuildTaskExample("vqa", "<image> {question}?", e, "/data", "m.jsonl: entry 'q1'");
  EXPECT_EQ(x.prompt, "<image> what color is the circle?");
  EXPECT_EQ(x.images, std::vector<std::string>{"/data/img/a.png"});
  EXPECT_EQ(x.target, "red");
  e.response.clear();
  EXPECT_SLM_ERROR(BuildTaskExample("vqa", "<image> {question}?", e, "/data", "m.jsonl: entry 'q1'"),
                   "m.jsonl: entry 'q1': task 'vqa' needs a non-empty \"response\"");
}

TEST(DataPrep, ClosedVocabularySelectsSentencesOfTheMostFrequentWords) {
  testing::TempDir dir;
  // Word counts: the 5, a 4, cat 3, dog 3, sat 2, mat 1, zebra 1 (ties rank by spelling).
  std::ofstream(dir.File("vocab.txt")) << "The cat sat.\nThe dog sat.\nA cat, a dog.\nThe cat!\n"
                                          "A dog and the mat.\nA zebra the\n";
  std::ofstream(dir.File("sentences.txt")) << "The cat.\nA zebra.\nThe dog sat on the mat.\n\n"
                                               "A dog sat.\nThe cat the dog the cat the dog.\n";
  datagen::SpeechSynthesis s;
  s.sentences = dir.File("sentences.txt");
  s.vocabulary_from = dir.File("vocab.txt");
  s.vocabulary_size = 5;  // the, a, cat, dog, sat
  s.max_words = 4;
  s.seed = 2;
  s.voices = {"en-us"};
  datagen::EnsureSpeechManifest(dir.File("out/manifest.jsonl"), s);
  std::ifstream chosen(dir.File("out/sentences.txt"));
  std::stringstream text;
  text << chosen.rdbuf();
  EXPECT_EQ(text.str(), "The cat.\nA dog sat.\n");  // "zebra"/"on"/"mat" out of vocabulary, last line too long
  const manifest::Manifest m = manifest::Read(dir.File("out/manifest.jsonl"));
  ASSERT_EQ(m.entries.size(), 2u);
  EXPECT_EQ(m.entries[1].text, "A dog sat.");
  s.vocabulary_size = 1;
  EXPECT_SLM_ERROR(datagen::EnsureSpeechManifest(dir.File("none/manifest.jsonl"), s),
                   "no sentence passes the closed-vocabulary selection");
  EXPECT_FALSE(stdfs::exists(dir.File("none/manifest.jsonl")));
  auto doc = config::Document::LoadString(
      "manifest: m/manifest.jsonl\nsynthesize: {sentences: s.txt, vocabulary_size: 10}\n", "source.yaml");
  DataSourceConfig source;
  EXPECT_SLM_ERROR(source.Load(doc.Root()), "vocabulary_size");
}

TEST(Dataset, ReadsPreparedDataAndNeverGeneratesIt) {
  testing::TempDir dir;
  std::ofstream(dir.File("sentences.txt")) << "The cat sat.\nA dog ran.\n";
  auto doc = config::Document::LoadString("task: asr\nmanifest: " + dir.File("speech/manifest.jsonl") +
                                              "\nsynthesize: {sentences: " + dir.File("sentences.txt") +
                                              ", voices: [en-us], seed: 2}\n",
                                          "source.yaml");
  DataSourceConfig source;
  source.Load(doc.Root());
  EXPECT_SLM_ERROR(Dataset({source}, 0.0, 0.0, "data.train"),
                   "data.train[0]: '" + dir.File("speech/manifest.jsonl") + "' does not exist yet; the source "
                   "generates it: prepare the sources first (PrepareSources)");
  EXPECT_FALSE(stdfs::exists(dir.File("speech")));  // nothing was generated
  PrepareSources({source}, 1, false);
  const Dataset d({source}, 0.0, 0.0, "data.train");
  EXPECT_EQ(d.Size(), 2u);
}

TEST(Dataset, EpochsAreDeterministicWeightedAndSkipMissingMedia) {
  DataSourceConfig s;
  s.manifest = Mini().train_manifest;
  const Dataset d({s}, 0.0, 0.0, "data.train");
  EXPECT_EQ(d.Size(), 12u);
  const auto a = d.EpochBatches(3, 0, 4), b = d.EpochBatches(3, 0, 4), c = d.EpochBatches(3, 1, 4);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  size_t seen = 0;
  for (const auto& batch : a) seen += batch.size();
  EXPECT_EQ(seen, 12u);
  // A padded-length budget (0.375..0.75 s clips = 37.5..75 frames): smaller batches, same items.
  const auto budgeted = d.EpochBatches(3, 0, 4, 150.0);
  std::vector<int64_t> all;
  for (const auto& batch : budgeted) {
    double longest = 0;
    for (int64_t i : batch) longest = std::max(longest, d.Item(i).length);
    EXPECT_TRUE(batch.size() == 1 || batch.size() * longest <= 150.0) << batch.size() << " x " << longest;
    EXPECT_LE(batch.size(), 4u);
    all.insert(all.end(), batch.begin(), batch.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, std::vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_GT(budgeted.size(), a.size());
  EXPECT_EQ(budgeted, d.EpochBatches(3, 0, 4, 150.0));
  s.weight = 0.5;
  const Dataset half({s}, 0.0, 0.0, "data.train");
  seen = 0;
  for (const auto& batch : half.EpochBatches(3, 0, 4)) seen += batch.size();
  EXPECT_EQ(seen, 6u);
  // Clips longer than the encoder allows are skipped and counted.
  s.weight = 1;
  const Dataset short_only({s}, 0.0, 0.5, "data.train");
  EXPECT_EQ(short_only.Stats()[0].too_long, 12 - static_cast<int64_t>(short_only.Size()));
  // Missing media: skipped under the allowed fraction, fatal above it.
  testing::TempDir tmp;
  auto entries = manifest::Read(Mini().train_manifest).entries;
  for (auto& e : entries) e.audio = Mini().dir.File(e.audio);
  entries[0].audio = tmp.File("gone.wav");
  manifest::Write(tmp.File("m.jsonl"), entries);
  s.manifest = tmp.File("m.jsonl");
  EXPECT_EQ(Dataset({s}, 0.1, 0.0, "data.train").Size(), 11u);
  EXPECT_SLM_ERROR(Dataset({s}, 0.0, 0.0, "data.train"),
                   "1 of 12 entries of " + tmp.File("m.jsonl") + " have missing or unreadable media (first: '" +
                       tmp.File("gone.wav") + "')");
}

TEST(Checkpoint, RoundTripCorruptionAndFullDisk) {
  testing::TempDir tmp;
  const TrainConfig c = Mini().Config(tmp.File("run"), 3);
  const TrainResult r = Train(c, "x: 1\n", false, true);
  EXPECT_EQ(r.steps, 3);
  const std::string latest = LatestCheckpoint(tmp.File("run"));
  EXPECT_EQ(stdfs::path(latest).filename(), "step-000003");
  EXPECT_TRUE(stdfs::exists(tmp.File("run/checkpoints/step-000001")));
  adapters::MultimodalLM model(c.model);
  EXPECT_EQ(LoadCheckpoint(latest, *model, nullptr).step, 3);
  // The loaded projector is the trained one, not a fresh initialisation.
  const safetensors::Reader saved(latest + "/adapters/adapters.safetensors");
  EXPECT_TRUE(torch::equal(model->SpeechProjector()->named_parameters()["linear_2.weight"],
                           saved.Get("speech_projector.linear_2.weight")));
  // A flipped byte is caught by the digest.
  stdfs::copy(latest, tmp.File("copy"), stdfs::copy_options::recursive);
  {
    std::fstream f(tmp.File("copy/optimizer.pt"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  EXPECT_SLM_ERROR(LoadCheckpoint(tmp.File("copy"), *model, nullptr),
                   "'optimizer.pt' does not match its SHA-256 in SHA256SUMS (corrupt checkpoint)");
  stdfs::copy_file(latest + "/optimizer.pt", tmp.File("copy/optimizer.pt"),
                   stdfs::copy_options::overwrite_existing);
  stdfs::remove(tmp.File("copy/state.json"));
  EXPECT_SLM_ERROR(LoadCheckpoint(tmp.File("copy"), *model, nullptr), "'state.json' is listed in SHA256SUMS but missing");
  // A full disk while saving: the error says so and `latest` still names the last good one.
  torch::optim::Adam optimizer(model->TrainableParameters());
  TrainingState state;
  state.step = 4;
  signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit tiny = old;
  tiny.rlim_cur = 4096;
  setrlimit(RLIMIT_FSIZE, &tiny);
  std::string message;
  try {
    SaveCheckpoint(tmp.File("run"), state, *model, optimizer, 3);
  } catch (const Error& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_NE(message.find("the previous checkpoint is intact"), std::string::npos) << message;
  EXPECT_EQ(LatestCheckpoint(tmp.File("run")), latest);
  EXPECT_FALSE(stdfs::exists(tmp.File("run/checkpoints/step-000004")));
  EXPECT_EQ(LoadCheckpoint(latest, *model, nullptr).step, 3);
  // Keep: at most 3 step directories.
  int directories = 0;
  for (const auto& entry : stdfs::directory_iterator(tmp.File("run/checkpoints")))
    directories += entry.is_directory() && entry.path().filename().string().rfind("step-", 0) == 0;
  EXPECT_EQ(directories, 3);
}

TEST(TrainerSlow, ResumeAfterSigkillReproducesTheUninterruptedRun) {
  testing::TempDir tmp;
  const int64_t steps = 8;
  const TrainConfig straight = Mini().Config(tmp.File("straight"), steps);
  const TrainResult a = Train(straight, "x: 1\n", false, true);
  const TrainConfig killed = Mini().Config(tmp.File("killed"), steps);
  // The child trains; the parent kills it with SIGKILL once a middle checkpoint exists.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      Train(killed, "x: 1\n", false, true);
    } catch (...) {
    }
    _exit(0);
  }
  const std::string pointer = tmp.File("killed/checkpoints/latest");
  for (int i = 0; i < 600; ++i) {
    if (stdfs::exists(pointer) && fs::ReadFile(pointer) >= "step-000003") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  const std::string at = fs::ReadFile(pointer);
  ASSERT_LT(at, "step-000008") << "the child finished before it was killed";
  const TrainResult b = Train(killed, "x: 1\n", true, true);
  EXPECT_TRUE(b.resumed);
  EXPECT_GE(b.resumed_from_step, 3);
  EXPECT_EQ(b.steps, steps);
  EXPECT_TRUE(torch::equal(AdapterWeights(tmp.File("straight")), AdapterWeights(tmp.File("killed"))));
  EXPECT_DOUBLE_EQ(a.final_loss, b.final_loss);
  EXPECT_EQ(a.eval.dump(), b.eval.dump());
}

TEST(Trainer, DivergenceStopsWithStepAndExamples) {
  testing::TempDir tmp;
  TrainConfig c = Mini().Config(tmp.File("run"), 30, "");
  c.train.lr = 1e30;
  c.train.grad_clip = 0;
  c.train.warmup_steps = 0;
  std::string message;
  try {
    Train(c, "x: 1\n", false, true);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("non-finite loss"), std::string::npos) << message;
  EXPECT_NE(message.find("batch of examples c"), std::string::npos) << message;
  EXPECT_NE(message.find("the last good checkpoint is " + tmp.File("run/checkpoints/step-")), std::string::npos) << message;
}

// Forgetting mitigations inside one run: L2 towards the starting weights keeps the adapters near
// them (and the penalty is logged); the LoRA discount scales LoRA at evaluation only.
TEST(Trainer, L2TowardsTheStartKeepsTheAdaptersNearIt) {
  testing::TempDir tmp;
  TrainConfig free_run = Mini().Config(tmp.File("free"), 6);
  TrainConfig held = Mini().Config(tmp.File("held"), 6);
  held.train.l2_to_start = 1000.0;
  Train(free_run, "", false, true);
  Train(held, "", false, true);
  ASSERT_TRUE(stdfs::exists(tmp.File("held/start_weights.safetensors")));
  EXPECT_FALSE(stdfs::exists(tmp.File("free/start_weights.safetensors")));
  // Both start from the same fresh adapters (same seed): the drift from them.
  safetensors::Reader start(tmp.File("held/start_weights.safetensors"));
  std::vector<torch::Tensor> parts;
  for (size_t i = 0; i < start.Names().size(); ++i) parts.push_back(start.Get(Str("p", i)).flatten());
  const torch::Tensor origin = torch::cat(parts);
  auto trained = [&](const TrainConfig& c) {  // in TrainableParameters order, as the start weights
    adapters::MultimodalLM m(c.model);
    m->LoadAdapters(c.output_dir + "/adapters");
    std::vector<torch::Tensor> flat;
    for (const torch::Tensor& p : m->TrainableParameters()) flat.push_back(p.detach().flatten());
    return torch::cat(flat);
  };
  const torch::Tensor w_free = trained(free_run), w_held = trained(held);
  ASSERT_EQ(w_free.numel(), origin.numel());
  const double drift_free = (w_free - origin).norm().item<double>();
  const double drift_held = (w_held - origin).norm().item<double>();
  EXPECT_LT(drift_held, 0.5 * drift_free) << drift_held << " vs " << drift_free;
  bool logged = false;
  std::ifstream metrics(tmp.File("held/metrics.jsonl"));
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("l2_penalty") && j["step"].get<int64_t>() > 1) logged |= j["l2_penalty"].get<double>() > 0;
  }
  EXPECT_TRUE(logged);
  // --resume needs the saved start weights.
  stdfs::remove(tmp.File("held/start_weights.safetensors"));
  held.train.steps = 8;
  EXPECT_SLM_ERROR(Train(held, "", true, true), "start_weights.safetensors' is missing");
}

TEST(Trainer, LoraDiscountScalesLoraAtEvaluationOnly) {
  adapters::MultimodalConfig mc;
  mc.backbone = kBackbone;
  mc.speech.encoder = Mini().encoder;
  mc.speech.projector.type = "mlp";
  mc.lora_enabled = true;
  mc.lora.rank = 4;
  mc.lora.target_modules = {"q_proj", "v_proj"};
  adapters::MultimodalLM model(mc);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(1);
    for (torch::Tensor& p : model->Backbone()->LoraParameters()) p.normal_(0.0, 0.2);
  }
  DataSourceConfig source;
  source.manifest = Mini().valid_manifest;
  source.task = "asr";
  const Dataset valid({source}, 0.0, 0.0, "data.valid");
  FeatureCache cache;
  EvalOptions eval;
  eval.max_new_tokens = 2;
  const double scale = model->Backbone()->LoraScale();
  auto loss = [&](double discount) {
    eval.lora_discount = discount;
    return Evaluate(*model, valid, eval, cache)["loss"].get<double>();
  };
  const double full = loss(1.0), half = loss(0.5), none = loss(0.0);
  EXPECT_DOUBLE_EQ(model->Backbone()->LoraScale(), scale);  // restored
  model->Backbone()->SetLoraScale(0.0);
  eval.lora_discount = 1.0;
  EXPECT_DOUBLE_EQ(Evaluate(*model, valid, eval, cache)["loss"].get<double>(), none);
  model->Backbone()->SetLoraScale(scale * 0.5);
  EXPECT_DOUBLE_EQ(Evaluate(*model, valid, eval, cache)["loss"].get<double>(), half);
  EXPECT_NE(full, half);
  EXPECT_NE(half, none);
}

TEST(Trainer, ConfigErrorsAndRunDirectoryGuards) {
  testing::TempDir tmp;
  auto doc = config::Document::LoadString(Mini().Yaml(tmp.File("run"), 2, "evall: {}\n"), "m.yaml");
  TrainConfig c;
  c.Load(doc.Root());
  EXPECT_SLM_ERROR(doc.CheckAllConsumed(), "unknown key 'evall' (did you mean 'eval'?)");
  auto bad_prompt = config::Document::LoadString(
      "model: {backbone: x}\ndata:\n  train:\n    - {manifest: m.jsonl, task: asr, prompt: \"Transcribe:\"}\n",
      "p.yaml");
  TrainConfig p;
  EXPECT_SLM_ERROR(p.Load(bad_prompt.Root()), "needs 1 and 0");
  const TrainConfig ok = Mini().Config(tmp.File("run"), 1);
  EXPECT_SLM_ERROR(Train(ok, "", true, true), "has no checkpoint to resume from");
  Train(ok, "", false, true);
  EXPECT_SLM_ERROR(Train(ok, "", false, true), "pass --resume to continue it");
  // CTC-guided evaluation with an encoder that has no CTC head: refused before the first step.
  TrainConfig guided = ok;
  guided.eval.ctc_weight = 1.0;
  guided.output_dir = tmp.File("guided");
  EXPECT_SLM_ERROR(Train(guided, "", false, true), "eval.ctc_weight");
  EXPECT_FALSE(std::filesystem::exists(tmp.File("guided/checkpoints")));
  TrainConfig missing = ok;
  missing.data.train[0].manifest = tmp.File("nope.jsonl");
  missing.output_dir = tmp.File("run2");
  EXPECT_SLM_ERROR(Train(missing, "", false, true), "nope.jsonl");
  auto bf16_weights = config::Document::LoadString(
      "model: {backbone: x, dtype: bfloat16}\ndata:\n  train:\n    - {manifest: m.jsonl}\ntrain: {precision: bfloat16}\n",
      "b.yaml");
  TrainConfig b;
  EXPECT_SLM_ERROR(b.Load(bf16_weights.Root()), "needs model.dtype float32");
}

// The effective config a run saves (config.yaml) loads again as the same run.
TEST(Trainer, SavedEffectiveConfigLoadsAgain) {
  auto doc = config::Document::LoadString(Mini().Yaml("/tmp/unused", 3), "mini.yaml");
  TrainConfig first;
  first.Load(doc.Root());
  doc.CheckAllConsumed();
  auto again = config::Document::LoadString(doc.EffectiveYaml(), "config.yaml");
  TrainConfig second;
  second.Load(again.Root());
  again.CheckAllConsumed();
  ASSERT_EQ(second.data.train.size(), 1u);
  ASSERT_EQ(second.data.valid.size(), 1u);
  EXPECT_EQ(second.data.train[0].manifest, first.data.train[0].manifest);
  EXPECT_EQ(second.data.valid[0].task, "asr");
  EXPECT_EQ(second.train.steps, 3);
  EXPECT_EQ(second.model.speech.projector.stack, 2);
}

// Data workers only move work off the training thread: 0 (inline) and 3 workers train the same
// weights bit for bit (this caught KissFFT plans shared between threads, audio/log_mel.cpp).
TEST(Trainer, DataWorkersDoNotChangeTheRun) {
  testing::TempDir tmp;
  TrainConfig inline_run = Mini().Config(tmp.File("w0"), 5);
  inline_run.data.workers = 0;
  TrainConfig threaded = Mini().Config(tmp.File("w3"), 5);
  threaded.data.workers = 3;
  Train(inline_run, "", false, true);
  Train(threaded, "", false, true);
  EXPECT_TRUE(torch::equal(AdapterWeights(inline_run.output_dir), AdapterWeights(threaded.output_dir)))
      << (AdapterWeights(inline_run.output_dir) - AdapterWeights(threaded.output_dir)).abs().max().item<double>();
}

// CUDA ranks use NCCL, one GPU each: without a visible GPU (or without NCCL in the build) joining
// is refused with the reason, before any rendezvous is attempted.
TEST(Distributed, CudaRanksNeedAGpuEachAndNccl) {
  EXPECT_EQ(Distributed::FromEnvironment("cuda").World(), 1);  // one process: nothing to join
  if (torch::cuda::device_count() > 0) GTEST_SKIP() << "a GPU is visible: rank 1 would wait for rank 0";
  setenv("WORLD_SIZE", "2", 1);
  setenv("RANK", "1", 1);
  std::string message;
  try {
    Distributed::FromEnvironment("cuda");
  } catch (const Error& e) {
    message = e.what();
  }
  unsetenv("WORLD_SIZE");
  unsetenv("RANK");
  EXPECT_TRUE(message.find("no CUDA device is visible to rank 1") != std::string::npos ||
              message.find("needs ProcessGroupNCCL") != std::string::npos)
      << message;
}

// bfloat16 autocast (CPU here, CUDA in production): the forward passes really run in bf16 (the
// losses differ from float32) yet follow the float32 curve closely; weights stay float32.
TEST(Trainer, Bfloat16AutocastFollowsTheFloat32Curve) {
  testing::TempDir tmp;
  const TrainConfig fp32 = Mini().Config(tmp.File("fp32"), 4);
  TrainConfig bf16 = Mini().Config(tmp.File("bf16"), 4);
  bf16.train.precision = "bfloat16";
  const TrainResult a = Train(fp32, "", false, true);
  const TrainResult b = Train(bf16, "", false, true);
  const auto la = Losses(fp32.output_dir + "/metrics.jsonl"), lb = Losses(bf16.output_dir + "/metrics.jsonl");
  ASSERT_EQ(la.size(), 4u);
  ASSERT_EQ(lb.size(), 4u);
  EXPECT_NE(la[0], lb[0]);
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(lb[i], la[i], 0.03 * la[i]) << "step " << i + 1;
  EXPECT_NEAR(b.eval["loss"].get<double>(), a.eval["loss"].get<double>(), 0.03 * a.eval["loss"].get<double>());
  safetensors::Reader weights(bf16.output_dir + "/adapters/adapters.safetensors");
  for (const std::string& name : weights.Names()) EXPECT_EQ(weights.Get(name).scalar_type(), torch::kFloat) << name;
  // The guard leaves no autocast state behind.
  EXPECT_FALSE(at::autocast::is_autocast_enabled(c10::DeviceType::CPU));
}

}  // namespace
}  // namespace slm::train

namespace slm::train {
namespace {

std::vector<double> Losses(const std::string& metrics_path) {
  std::vector<double> losses;
  std::istringstream in(fs::ReadFile(metrics_path));
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record.contains("loss") && record.contains("step")) losses.push_back(record["loss"].get<double>());
  }
  return losses;
}

// Two processes on c10d Gloo with the global batch split between them follow the loss curve of one
// process with the same global batch.
TEST(TrainerSlow, TwoRanksFollowTheSingleProcessLossCurve) {
  testing::TempDir tmp;
  const int64_t steps = 5;
  const TrainConfig single = Mini().Config(tmp.File("one"), steps);
  Train(single, "x: 1\n", false, true);
  const TrainConfig parallel = Mini().Config(tmp.File("two"), steps);
  const int port = 21000 + static_cast<int>(getpid() % 20000);
  std::vector<pid_t> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      setenv("RANK", std::to_string(rank).c_str(), 1);
      setenv("WORLD_SIZE", "2", 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      int code = 0;
      try {
        Train(parallel, "x: 1\n", false, true);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
        code = 1;
      }
      _exit(code);
    }
    ranks.push_back(pid);
  }
  for (pid_t pid : ranks) {
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a rank failed";
  }
  const std::vector<double> one = Losses(tmp.File("one/metrics.jsonl"));
  const std::vector<double> two = Losses(tmp.File("two/metrics.jsonl"));
  ASSERT_EQ(one.size(), static_cast<size_t>(steps));
  ASSERT_EQ(two.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(two[i], one[i], 1e-5) << "step " << i + 1;
  // Rank 0 alone wrote the run's files; both checkpoints hold the same adapters within rounding.
  EXPECT_LT((AdapterWeights(tmp.File("one")) - AdapterWeights(tmp.File("two"))).abs().max().item<double>(), 1e-5);
}

}  // namespace
}  // namespace slm::train
