#include "train/lm_pretrain.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/fs.h"
#include "core/manifest.h"
#include "datagen/wordnet_corpus.h"
#include "tests/test_util.h"
#include "text/generate.h"
#include "text/tokenizer.h"

namespace slm::train {
namespace {

using namespace text;
using datagen::BuildWordNetCorpus;
using datagen::WordNetCorpusOptions;

const char* kTinyConfig = R"(
data: {build_if_missing: false, max_train_lines: 4000}
tokenizer: {vocab_size: 600}
model: {hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4,
        num_key_value_heads: 2, max_position_embeddings: 80}
train: {steps: 200, batch_size: 16, seq_len: 32, lr: 0.02, warmup_steps: 20, log_every: 20}
eval: {every: 100, max_windows: 64}
threads: 1
)";

TEST(PretrainConfig, StrictKeysAndConsistency) {
  auto doc = config::Document::LoadString("train: {stpes: 5}\n", "p.yaml");
  LmPretrainConfig config;
  config.Load(doc.Root());
  EXPECT_SLM_ERROR(doc.CheckAllConsumed(), "p.yaml:1: unknown key 'train.stpes' (did you mean 'train.steps'?)");
  auto long_seq = config::Document::LoadString("train: {seq_len: 300}\n", "p.yaml");
  EXPECT_SLM_ERROR(LmPretrainConfig().Load(long_seq.Root()), "key 'train.seq_len' + 1 must not exceed");
  auto heads = config::Document::LoadString("model: {num_attention_heads: 3}\n", "p.yaml");
  EXPECT_SLM_ERROR(LmPretrainConfig().Load(heads.Root()), "must divide hidden_size");
  auto device = config::Document::LoadString("device: tpu\n", "p.yaml");
  EXPECT_SLM_ERROR(LmPretrainConfig().Load(device.Root()), "device");
  // The committed recipes are valid as written.
  for (const char* recipe : {"backbone_tiny.yaml", "backbone_dict.yaml", "backbone_dict_gpu.yaml"}) {
    auto sample = config::Document::LoadFile(std::string(SLM_SOURCE_DIR) + "/samples/configs/" + recipe);
    LmPretrainConfig c;
    c.Load(sample.Root());
    sample.CheckAllConsumed();
  }
}

TEST(PretrainConfig, MissingCorpusSaysHowToMakeIt) {
  testing::TempDir dir;
  auto doc = config::Document::LoadString(kTinyConfig, "p.yaml");
  doc.ApplyOverride("data.corpus_dir=" + dir.File("nothing"));
  doc.ApplyOverride("output_dir=" + dir.File("out"));
  LmPretrainConfig config;
  config.Load(doc.Root());
  EXPECT_SLM_ERROR(PretrainLm(config, "", true), "run `slm data corpus --source wordnet --out");
}

// Trains a tiny model on a slice of the real WordNet corpus: the result must beat the unigram
// baseline and be a loadable Hugging Face directory.
TEST(PretrainSlow, TinyModelBeatsUnigramAndLoadsBack) {
  if (!std::filesystem::exists("/usr/share/wordnet/data.noun")) GTEST_SKIP() << "wordnet-base missing";
  testing::TempDir dir;
  WordNetCorpusOptions corpus;
  corpus.out_dir = dir.File("corpus");
  BuildWordNetCorpus(corpus);
  auto doc = config::Document::LoadString(kTinyConfig, "tiny.yaml");
  doc.ApplyOverride("data.corpus_dir=" + corpus.out_dir);
  doc.ApplyOverride("output_dir=" + dir.File("model"));
  LmPretrainConfig config;
  config.Load(doc.Root());
  doc.CheckAllConsumed();
  const LmPretrainResult r = PretrainLm(config, doc.EffectiveYaml(), true);
  EXPECT_EQ(r.training.steps, 200);
  EXPECT_LT(r.valid_perplexity, 0.8 * r.unigram_valid_perplexity);
  EXPECT_LT(r.test_perplexity, 0.8 * r.unigram_test_perplexity);
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model",
                           "generation_config.json", "config.yaml", "metrics.jsonl", "result.json"})
    EXPECT_TRUE(std::filesystem::exists(dir.File("model") + "/" + file)) << file;
  const Tokenizer tokenizer = Tokenizer::Load(dir.File("model"));
  LlamaModel model = LoadLlama(dir.File("model"));
  model->Freeze();
  EXPECT_EQ(model->Config().vocab_size, tokenizer.VocabSize());
  GenerationOptions options;
  options.max_new_tokens = 8;
  options.ignore_stop_tokens = true;
  const GenerationResult g = Generate(model, {tokenizer.Encode("a small", true, false)}, options);
  EXPECT_EQ(g.tokens[0].size(), 8u);
  // metrics.jsonl: one record per log_every steps, the evaluations, and the final summary.
  std::ifstream metrics(dir.File("model") + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 10 + 1 + 1);

  // Continued pretraining from that model with three QA pairs to learn by heart: the tokenizer
  // is the first model's, and the typed questions are answered exactly.
  std::vector<manifest::Entry> qa(3);
  const char* const pairs[3][2] = {{"what is a dog", "a domestic animal"},
                                   {"what is a lamp", "a source of light"},
                                   {"what is a boat", "a vessel for travel on water"}};
  for (int i = 0; i < 3; ++i) {
    qa[i].id = "q" + std::to_string(i);
    qa[i].task = "qa";
    qa[i].prompt = pairs[i][0];
    qa[i].response = pairs[i][1];
  }
  manifest::Write(dir.File("qa.jsonl"), qa);
  auto more = config::Document::LoadString(
      "init_from: " + dir.File("model") + "\ndata: {build_if_missing: false, max_train_lines: 500, qa_file: " +
          dir.File("qa.jsonl") + ", qa_repeat: 200}\ntrain: {steps: 300, batch_size: 16, seq_len: 32, lr: 0.01, "
          "warmup_steps: 10}\neval: {every: 1000, max_windows: 16}\nthreads: 1\n",
      "more.yaml");
  more.ApplyOverride("data.corpus_dir=" + corpus.out_dir);
  more.ApplyOverride("output_dir=" + dir.File("more"));
  LmPretrainConfig continued;
  continued.Load(more.Root());
  more.CheckAllConsumed();
  const LmPretrainResult q = PretrainLm(continued, more.EffectiveYaml(), true);
  EXPECT_EQ(q.qa_questions, 3);
  EXPECT_EQ(q.qa_exact_match, 1.0);
  EXPECT_EQ(fs::ReadFile(dir.File("more/tokenizer.model")), fs::ReadFile(dir.File("model/tokenizer.model")));
  EXPECT_EQ(LoadLlama(dir.File("more"))->Config().hidden_size, 64);
}

TEST(PretrainConfig, InitFromTakesTheArchitectureFromTheCheckpoint) {
  auto doc = config::Document::LoadString("init_from: some/model\nmodel: {hidden_size: 64}\n", "p.yaml");
  EXPECT_SLM_ERROR(LmPretrainConfig().Load(doc.Root()), "cannot be given with init_from");
  testing::TempDir dir;
  auto missing = config::Document::LoadString(std::string("") +
                                                  "init_from: " + dir.File("nothing") + "\noutput_dir: " + dir.File("out") + "\n",
                                              "p.yaml");
  LmPretrainConfig config;
  config.Load(missing.Root());
  config.data.build_if_missing = false;
  fs::MakeDirs(dir.File("corpus/text"));
  for (const char* split : {"train", "valid", "test"})
    fs::AtomicWriteString(dir.File(std::string("corpus/text/") + split + ".txt"), "a line of text\n");
  config.data.corpus_dir = dir.File("corpus");
  EXPECT_SLM_ERROR(PretrainLm(config, "", true), "is not a Hugging Face model directory");
}

}  // namespace
}  // namespace slm::train
