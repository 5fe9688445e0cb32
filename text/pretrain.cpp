#include "text/pretrain.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/metrics_log.h"
#include "core/progress.h"
#include "text/lm_data.h"
#include "text/tokenizer.h"
#include "text/wordnet_corpus.h"

namespace slm::text {
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

}  // namespace

PretrainConfig::PretrainConfig() {
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

void PretrainConfig::Load(config::Node node) {
  auto d = node.Child("data");
  d.Read("corpus_dir", data.corpus_dir)
      .Read("wordnet_dir", data.wordnet_dir)
      .Read("build_if_missing", data.build_if_missing)
      .Read("max_train_lines", data.max_train_lines, InRange<int64_t>(0, int64_t{1} << 40));
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
  node.Read("seed", seed).Read("threads", threads, InRange(0, 1024)).Read("output_dir", output_dir);
}

nlohmann::json PretrainResult::ToJson() const {
  return {{"model_dir", model_dir},
          {"steps", steps},
          {"train_tokens_seen", train_tokens_seen},
          {"seconds", seconds},
          {"tokens_per_second", tokens_per_second},
          {"final_train_loss", final_train_loss},
          {"valid_perplexity", valid_perplexity},
          {"test_perplexity", test_perplexity},
          {"unigram_valid_perplexity", unigram_valid_perplexity},
          {"unigram_test_perplexity", unigram_test_perplexity},
          {"parameters", parameters},
          {"stopped_by_time_limit", stopped_by_time_limit}};
}

PretrainResult Pretrain(const PretrainConfig& c, const std::string& effective_config_yaml, bool quiet) {
  const auto start = std::chrono::steady_clock::now();
  SetThreads(c.threads);
  torch::manual_seed(c.seed);
  fs::MakeDirs(c.output_dir);
  fs::AtomicWriteString(c.output_dir + "/config.yaml", effective_config_yaml);
  const MetricsLog metrics(c.output_dir + "/metrics.jsonl");

  // 1. Corpus.
  const std::string text_dir = c.data.corpus_dir + "/text";
  if (!std::filesystem::exists(text_dir + "/train.txt")) {
    Check(c.data.build_if_missing, "no corpus at '", text_dir,
          "/train.txt'; run `slm data corpus --source wordnet --out ", c.data.corpus_dir,
          "` or set data.build_if_missing: true");
    log::Info(Str("building the WordNet corpus in ", c.data.corpus_dir));
    WordNetCorpusOptions corpus;
    corpus.wordnet_dir = c.data.wordnet_dir;
    corpus.out_dir = c.data.corpus_dir;
    BuildWordNetCorpus(corpus);
  }

  // 2. Tokenizer, trained on the training split only.
  TokenizerTrainOptions tok_options;
  tok_options.input = text_dir + "/train.txt";
  tok_options.out_dir = c.output_dir;
  tok_options.vocab_size = c.tokenizer.vocab_size;
  tok_options.model_type = c.tokenizer.model_type;
  tok_options.seed = static_cast<uint32_t>(c.seed);
  tok_options.num_threads = std::max(1, c.threads);
  const Tokenizer tokenizer = TrainTokenizer(tok_options);
  auto encode = [&](const std::string& line) { return tokenizer.Encode(line, true, true); };
  const std::vector<int64_t> train_stream = TokenizeFile(text_dir + "/train.txt", encode, c.data.max_train_lines);
  const std::vector<int64_t> valid_stream = TokenizeFile(text_dir + "/valid.txt", encode);
  const std::vector<int64_t> test_stream = TokenizeFile(text_dir + "/test.txt", encode);
  const int64_t window = c.train.seq_len + 1;
  const torch::Tensor train_windows = PackWindows(train_stream, window, false);
  torch::Tensor valid_windows = PackWindows(valid_stream, window, true);
  if (c.eval.max_windows > 0 && valid_windows.size(0) > c.eval.max_windows)
    valid_windows = valid_windows.slice(0, 0, c.eval.max_windows);
  const torch::Tensor test_windows = PackWindows(test_stream, window, true);

  // 3. Model.
  LlamaConfig model_config = c.model;
  model_config.vocab_size = tokenizer.VocabSize();
  model_config.bos_token_id = tokenizer.BosId();
  model_config.eos_token_ids = {tokenizer.EosId()};
  model_config.pad_token_id = tokenizer.PadId();
  model_config.Validate(c.output_dir + "/config.yaml");
  LlamaModel model(model_config);
  InitWeights(model, c.train.init_std);
  model->train();

  const auto optimizer = MakeAdamW(model->parameters(), c.train);

  PretrainResult result;
  result.model_dir = c.output_dir;
  result.parameters = model->ParameterCount();
  log::Info(Str("pretraining ", result.parameters, " parameters on ", train_stream.size(),
                " train tokens (", train_windows.size(0), " windows of ", window, "), vocab ",
                model_config.vocab_size));

  // 4. Train.
  torch::Generator generator = at::detail::createCPUGenerator(c.seed);
  torch::Tensor order = torch::randperm(train_windows.size(0), generator);
  int64_t cursor = 0;
  ProgressBar bar("pretrain", c.train.steps, quiet);
  double loss_ema = 0;
  for (int64_t step = 0; step < c.train.steps; ++step) {
    if (c.train.max_minutes > 0 && SecondsSince(start) > c.train.max_minutes * 60) {
      result.stopped_by_time_limit = true;
      log::Warn(Str("stopping at step ", step, ": train.max_minutes (", c.train.max_minutes, ") reached"));
      break;
    }
    if (cursor + c.train.batch_size > order.size(0)) {  // new epoch
      order = torch::randperm(train_windows.size(0), generator);
      cursor = 0;
    }
    const torch::Tensor batch = train_windows.index_select(0, order.slice(0, cursor, cursor + c.train.batch_size));
    cursor += c.train.batch_size;
    const double lr = c.train.LearningRate(step);
    SetLearningRate(*optimizer, lr);

    LlamaInput input;
    input.input_ids = batch;
    const torch::Tensor logits = model->forward(input).logits;
    const torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.slice(1, 0, -1).reshape({-1, logits.size(-1)}), batch.slice(1, 1).reshape({-1}));
    optimizer->zero_grad();
    loss.backward();
    const double grad_norm = ClipGradients(model->parameters(), c.train);
    optimizer->step();

    const double loss_value = loss.item<double>();
    Check(std::isfinite(loss_value), "pretraining diverged: loss is ", loss_value, " at step ", step,
          " (lower train.lr or raise warmup_steps)");
    loss_ema = step == 0 ? loss_value : 0.95 * loss_ema + 0.05 * loss_value;
    result.steps = step + 1;
    result.train_tokens_seen += batch.numel();
    result.final_train_loss = loss_value;
    bar.Update(1, Str("loss ", std::round(loss_ema * 1000) / 1000));
    if ((step + 1) % c.train.log_every == 0) {
      metrics.Append({{"step", step + 1}, {"loss", loss_value}, {"loss_ema", loss_ema},
                                    {"lr", lr}, {"grad_norm", grad_norm},
                                    {"tokens_per_second", result.train_tokens_seen / SecondsSince(start)},
                                    {"elapsed_seconds", SecondsSince(start)}});
    }
    if ((step + 1) % c.eval.every == 0 && step + 1 < c.train.steps) {
      const PerplexityResult valid = Perplexity(model, valid_windows, c.eval.batch_size);
      metrics.Append({{"step", step + 1}, {"valid_perplexity", valid.perplexity},
                                    {"valid_nll", valid.mean_nll}});
      model->train();
    }
  }
  bar.Finish();
  const double train_seconds = SecondsSince(start);

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
  result.seconds = SecondsSince(start);
  result.tokens_per_second = result.train_tokens_seen / train_seconds;

  // 6. The Hugging Face directory.
  model->SaveWeights(c.output_dir);
  nlohmann::json generation = {{"bos_token_id", model_config.bos_token_id},
                               {"eos_token_id", model_config.eos_token_ids[0]},
                               {"do_sample", false},
                               {"max_new_tokens", 64}};
  if (model_config.pad_token_id >= 0) generation["pad_token_id"] = model_config.pad_token_id;
  fs::AtomicWriteString(c.output_dir + "/generation_config.json", generation.dump(2) + "\n");
  metrics.Append({{"final", result.ToJson()}});
  fs::AtomicWriteString(c.output_dir + "/result.json", result.ToJson().dump(2) + "\n");
  return result;
}

}  // namespace slm::text
