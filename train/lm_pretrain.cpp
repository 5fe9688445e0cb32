#include "train/lm_pretrain.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/manifest.h"
#include "datagen/wordnet_corpus.h"
#include "text/generate.h"
#include "text/lm_data.h"
#include "text/qa_text.h"
#include "text/tokenizer.h"

namespace slm::train {

using namespace text;

namespace {

using config::InRange;

// GPT-2/Llama-style initialisation: N(0, std) for matrices, with the residual output projections
// scaled by 1/sqrt(2 * layers) so that the residual stream's variance does not grow with depth.
void InitWeights(LlamaModel& model, double std) {
  torch::NoGradGuard no_grad;
  const double residual_std = std / std::sqrt(2.0 * model->Config().num_hidden_layers);
  for (auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    if (p.value().dim() == 1) {
      if (name.find("norm") != std::string::npos) p.value().fill_(1.0);
      else p.value().zero_();  // biases
      continue;
    }
    const bool residual = name.find("o_proj") != std::string::npos ||
                          name.find("down_proj") != std::string::npos;
    p.value().normal_(0.0, residual ? residual_std : std);
  }
}

// The training stream with qa_repeat copies of every QA line (BOS ... EOS, like the text lines)
// inserted at seeded random line boundaries of the text, so that each copy sits in a different
// window position and the text around it differs.
std::vector<int64_t> MixQaLines(const std::vector<int64_t>& text, const std::vector<manifest::Entry>& qa,
                                int64_t repeat, const Tokenizer& tokenizer, uint64_t seed) {
  std::vector<std::vector<int64_t>> lines;
  for (const manifest::Entry& e : qa) lines.push_back(tokenizer.Encode(QaTrainingText(e.prompt, e.response), true, true));
  std::vector<size_t> boundaries;  // positions in `text` where a line starts
  const int64_t bos = tokenizer.BosId();
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == bos) boundaries.push_back(i);
  boundaries.push_back(text.size());
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<std::pair<size_t, size_t>> inserts;  // (boundary position, line index)
  for (int64_t r = 0; r < repeat; ++r)
    for (size_t l = 0; l < lines.size(); ++l)
      inserts.emplace_back(boundaries[std::uniform_int_distribution<size_t>(0, boundaries.size() - 1)(rng)], l);
  std::sort(inserts.begin(), inserts.end());
  std::vector<int64_t> out;
  out.reserve(text.size() + inserts.size() * 24);
  size_t at = 0;
  for (const auto& [position, line] : inserts) {
    out.insert(out.end(), text.begin() + static_cast<std::ptrdiff_t>(at), text.begin() + static_cast<std::ptrdiff_t>(position));
    at = position;
    out.insert(out.end(), lines[line].begin(), lines[line].end());
  }
  out.insert(out.end(), text.begin() + static_cast<std::ptrdiff_t>(at), text.end());
  return out;
}

// Typed questions answered greedily: the fraction whose answer equals the reference after
// NormalizeAnswer.
double QaExactMatch(LlamaModel& model, const Tokenizer& tokenizer, const std::vector<manifest::Entry>& qa,
                    int64_t batch_size) {
  torch::NoGradGuard no_grad;
  model->eval();
  int64_t right = 0;
  for (size_t begin = 0; begin < qa.size(); begin += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(qa.size(), begin + static_cast<size_t>(batch_size));
    std::vector<std::vector<int64_t>> prompts;
    int64_t longest_answer = 0;
    for (size_t i = begin; i < end; ++i) {
      prompts.push_back(tokenizer.Encode(QaPromptText(qa[i].prompt), true, false));
      longest_answer = std::max<int64_t>(longest_answer, static_cast<int64_t>(tokenizer.Encode(qa[i].response, false, false).size()));
    }
    GenerationOptions options;
    options.max_new_tokens = longest_answer + 4;
    const GenerationResult generated = Generate(model, prompts, options);
    for (size_t i = begin; i < end; ++i)
      right += NormalizeAnswer(tokenizer.Decode(generated.tokens[i - begin], true)) == NormalizeAnswer(qa[i].response);
  }
  return static_cast<double>(right) / static_cast<double>(qa.size());
}

}  // namespace

LmPretrainConfig::LmPretrainConfig() {
  output_dir = "runs/backbone_tiny";
  model.vocab_size = 0;  // from the tokenizer
  model.hidden_size = 256;
  model.intermediate_size = 688;
  model.num_hidden_layers = 4;
  model.num_attention_heads = 4;
  model.num_key_value_heads = 2;
  model.max_position_embeddings = 256;
  model.rms_norm_eps = 1e-5;
  model.rope_theta = 10000.0;
  model.tie_word_embeddings = true;
}

void LmPretrainConfig::Load(config::Node node) {
  auto d = node.Child("data");
  d.Read("corpus_dir", data.corpus_dir)
      .Read("wordnet_dir", data.wordnet_dir)
      .Read("build_if_missing", data.build_if_missing)
      .Read("max_train_lines", data.max_train_lines, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("qa_file", data.qa_file)
      .Read("qa_repeat", data.qa_repeat, InRange<int64_t>(1, 100000));
  node.Read("init_from", init_from);
  if (!init_from.empty()) {
    for (const char* key : {"tokenizer", "model"})
      if (node.Has(key))
        node.Fail(key, Str("cannot be given with init_from (the tokenizer and the architecture come from '",
                           init_from, "')"));
  }
  auto t = node.Child("tokenizer");
  t.Read("vocab_size", tokenizer.vocab_size, InRange(300, 262144));
  t.Read("model_type", tokenizer.model_type, config::OneOf<std::string>({"unigram", "bpe"}));
  auto m = node.Child("model");
  m.Read("hidden_size", model.hidden_size, InRange<int64_t>(8, 65536))
      .Read("intermediate_size", model.intermediate_size, InRange<int64_t>(8, 262144))
      .Read("num_hidden_layers", model.num_hidden_layers, InRange<int64_t>(1, 256))
      .Read("num_attention_heads", model.num_attention_heads, InRange<int64_t>(1, 512))
      .Read("num_key_value_heads", model.num_key_value_heads, InRange<int64_t>(1, 512))
      .Read("max_position_embeddings", model.max_position_embeddings, InRange<int64_t>(2, 1 << 20))
      .Read("rope_theta", model.rope_theta, InRange(1.0, 1e9))
      .Read("rms_norm_eps", model.rms_norm_eps, InRange(1e-12, 1e-2))
      .Read("tie_word_embeddings", model.tie_word_embeddings);
  if (model.hidden_size % model.num_attention_heads != 0)
    m.Fail("num_attention_heads", Str("must divide hidden_size (", model.hidden_size, ")"));
  if (model.num_attention_heads % model.num_key_value_heads != 0)
    m.Fail("num_key_value_heads", Str("must divide num_attention_heads (", model.num_attention_heads, ")"));
  auto tr = node.Child("train");
  train.Load(tr);
  tr.Read("seq_len", train.seq_len, InRange<int64_t>(2, 1 << 20))
      .Read("init_std", train.init_std, InRange(1e-6, 1.0));
  if (train.seq_len + 1 > model.max_position_embeddings)
    tr.Fail("seq_len", Str("+ 1 must not exceed model.max_position_embeddings (",
                           model.max_position_embeddings, ")"));
  auto e = node.Child("eval");
  e.Read("every", eval.every, InRange<int64_t>(1, int64_t{1} << 40))
      .Read("max_windows", eval.max_windows, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("batch_size", eval.batch_size, InRange<int64_t>(1, 1 << 16));
  LoadJobKeys(node);
}

nlohmann::json LmPretrainResult::ToJson() const {
  nlohmann::json j = JobResult::ToJson();
  j.update({{"train_tokens_seen", train_tokens_seen},
          {"tokens_per_second", tokens_per_second},
          {"valid_perplexity", valid_perplexity},
          {"test_perplexity", test_perplexity},
          {"unigram_valid_perplexity", unigram_valid_perplexity},
          {"unigram_test_perplexity", unigram_test_perplexity},
          {"qa_questions", qa_questions},
          {"qa_exact_match", qa_exact_match}});
  return j;
}

LmPretrainResult PretrainLm(const LmPretrainConfig& c, const std::string& effective_config_yaml, bool quiet) {
  const Job job(c.Options(effective_config_yaml));

  // 1. Corpus.
  const std::string text_dir = c.data.corpus_dir + "/text";
  if (!std::filesystem::exists(text_dir + "/train.txt")) {
    Check(c.data.build_if_missing, "no corpus at '", text_dir,
          "/train.txt'; run `slm data corpus --source wordnet --out ", c.data.corpus_dir,
          "` or set data.build_if_missing: true");
    log::Info(Str("building the WordNet corpus in ", c.data.corpus_dir));
    datagen::WordNetCorpusOptions corpus;
    corpus.wordnet_dir = c.data.wordnet_dir;
    corpus.out_dir = c.data.corpus_dir;
    datagen::BuildWordNetCorpus(corpus);
  }

  // 2. Tokenizer: trained on the training split only, or the init_from model's.
  std::optional<Tokenizer> loaded_tokenizer;
  if (!c.init_from.empty()) {
    Check(std::filesystem::is_regular_file(c.init_from + "/config.json"), "init_from: '", c.init_from,
          "' is not a Hugging Face model directory (no config.json)");
    loaded_tokenizer = Tokenizer::Load(c.init_from);
    for (const char* file : {"tokenizer.model", "tokenizer_config.json", "added_tokens.json", "tokenizer.json"})
      if (std::filesystem::is_regular_file(c.init_from + "/" + file))
        fs::AtomicWriteString(c.output_dir + "/" + file, fs::ReadFile(c.init_from + "/" + file));
  } else {
    TokenizerTrainOptions tok_options;
    tok_options.input = text_dir + "/train.txt";
    tok_options.out_dir = c.output_dir;
    tok_options.vocab_size = c.tokenizer.vocab_size;
    tok_options.model_type = c.tokenizer.model_type;
    tok_options.seed = static_cast<uint32_t>(c.seed);
    tok_options.num_threads = std::max(1, c.threads);
    loaded_tokenizer = TrainTokenizer(tok_options);
  }
  const Tokenizer& tokenizer = *loaded_tokenizer;
  auto encode = [&](const std::string& line) { return tokenizer.Encode(line, true, true); };
  std::vector<int64_t> train_stream = TokenizeFile(text_dir + "/train.txt", encode, c.data.max_train_lines);
  const std::vector<int64_t> valid_stream = TokenizeFile(text_dir + "/valid.txt", encode);
  const std::vector<int64_t> test_stream = TokenizeFile(text_dir + "/test.txt", encode);
  std::vector<manifest::Entry> qa;
  if (!c.data.qa_file.empty()) {
    qa = manifest::Read(c.data.qa_file).entries;
    Check(!qa.empty(), "data.qa_file: '", c.data.qa_file, "' has no entries");
    for (size_t i = 0; i < qa.size(); ++i)
      Check(!qa[i].prompt.empty() && !qa[i].response.empty(), c.data.qa_file, ":", i + 1,
            ": a QA entry needs a prompt and a response");
    train_stream = MixQaLines(train_stream, qa, c.data.qa_repeat, tokenizer, c.seed);
  }
  const int64_t window = c.train.seq_len + 1;
  const torch::Tensor train_windows = PackWindows(train_stream, window, false);
  torch::Tensor valid_windows = PackWindows(valid_stream, window, true);
  if (c.eval.max_windows > 0 && valid_windows.size(0) > c.eval.max_windows)
    valid_windows = valid_windows.slice(0, 0, c.eval.max_windows);
  const torch::Tensor test_windows = PackWindows(test_stream, window, true);

  // 3. Model.
  LlamaModel model{nullptr};
  LlamaConfig model_config;
  if (!c.init_from.empty()) {
    model = LoadLlama(c.init_from);
    model_config = model->Config();
    Check(c.train.seq_len + 1 <= model_config.max_position_embeddings, "train.seq_len + 1 (", c.train.seq_len + 1,
          ") exceeds init_from's max_position_embeddings (", model_config.max_position_embeddings, ")");
    for (auto& p : model->parameters()) p.set_requires_grad(true);
  } else {
    model_config = c.model;
    model_config.vocab_size = tokenizer.VocabSize();
    model_config.bos_token_id = tokenizer.BosId();
    model_config.eos_token_ids = {tokenizer.EosId()};
    model_config.pad_token_id = tokenizer.PadId();
    model_config.Validate(c.output_dir + "/config.yaml");
    model = LlamaModel(model_config);
    InitWeights(model, c.train.init_std);
  }
  const torch::Device device = ParseDevice(c.device);
  model->to(device);
  model->train();

  const auto optimizer = MakeAdamW(model->parameters(), c.train);

  LmPretrainResult result;
  result.model_dir = c.output_dir;
  result.parameters = model->ParameterCount();
  log::Info(Str("pretraining ", result.parameters, " parameters on ", train_stream.size(),
                " train tokens (", train_windows.size(0), " windows of ", window, "), vocab ",
                model_config.vocab_size));

  // 4. Train.
  const Precision precision(c.train.precision, c.device);
  torch::Generator generator = at::detail::createCPUGenerator(c.seed);
  torch::Tensor order = torch::randperm(train_windows.size(0), generator);
  int64_t cursor = 0;
  LoopHooks hooks;
  hooks.next = [&](TrainingState&, int64_t) -> std::optional<MicroBatch> {
    if (cursor + c.train.batch_size > order.size(0)) {  // new epoch
      order = torch::randperm(train_windows.size(0), generator);
      cursor = 0;
    }
    const torch::Tensor batch = train_windows.index_select(0, order.slice(0, cursor, cursor + c.train.batch_size));
    cursor += c.train.batch_size;
    LlamaInput input;
    const torch::Tensor ids = batch.to(device);
    input.input_ids = ids;
    const AutocastGuard scope = precision.Scope();
    const torch::Tensor logits = model->forward(input).logits;
    return MicroBatch{torch::nn::functional::cross_entropy(logits.slice(1, 0, -1).reshape({-1, logits.size(-1)}),
                                                           ids.slice(1, 1).reshape({-1})),
                      batch.size(0), batch.numel()};
  };
  hooks.evaluate = [&](const TrainingState&) {
    const AutocastGuard scope = precision.Scope();
    const PerplexityResult valid = Perplexity(model, valid_windows, c.eval.batch_size);
    model->train();
    return nlohmann::json{{"valid_perplexity", valid.perplexity}, {"valid_nll", valid.mean_nll}};
  };
  LoopSettings settings{"pretrain", "loss", c.eval.every};
  settings.divergence_hint = "lower train.lr or raise train.warmup_steps";
  settings.quiet = quiet;
  TrainingState state;
  TrainingLoop loop(c.train, settings, model->parameters(), *optimizer, std::move(hooks));
  const LoopResult run = loop.Run(state, &job);
  result.train_tokens_seen = run.tokens;
  result.training = run;

  // 5. Final evaluation and the unigram baseline on the same predicted tokens.
  model->eval();
  const PerplexityResult valid = Perplexity(model, valid_windows, c.eval.batch_size);
  const PerplexityResult test = Perplexity(model, test_windows, c.eval.batch_size);
  result.valid_perplexity = valid.perplexity;
  result.test_perplexity = test.perplexity;
  result.unigram_valid_perplexity =
      UnigramPerplexity(train_stream, valid_windows, model_config.vocab_size).perplexity;
  result.unigram_test_perplexity =
      UnigramPerplexity(train_stream, test_windows, model_config.vocab_size).perplexity;
  if (!qa.empty()) {
    result.qa_questions = static_cast<int64_t>(qa.size());
    result.qa_exact_match = QaExactMatch(model, tokenizer, qa, c.eval.batch_size);
    log::Info(Str("typed questions of ", c.data.qa_file, ": ", result.qa_exact_match * 100, "% answered exactly"));
  }
  result.seconds = job.Seconds();
  result.tokens_per_second = result.train_tokens_seen / std::max(1e-9, run.seconds);

  // 6. The Hugging Face directory (from the CPU: the same bytes wherever it trained).
  model->to(torch::kCPU);
  model->SaveWeights(c.output_dir);
  nlohmann::json generation = {{"bos_token_id", model_config.bos_token_id},
                               {"eos_token_id", model_config.eos_token_ids[0]},
                               {"do_sample", false},
                               {"max_new_tokens", 64}};
  if (model_config.pad_token_id >= 0) generation["pad_token_id"] = model_config.pad_token_id;
  fs::AtomicWriteString(c.output_dir + "/generation_config.json", generation.dump(2) + "\n");
  job.Finish(result.ToJson());
  return result;
}

}  // namespace slm::train
