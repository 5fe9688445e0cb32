#include "text/lm_data.h"

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/strings.h"

namespace slm::text {

namespace {

// The result of `tokens` (> 0) predictions that cost `total_nll` nats together.
PerplexityResult FromNll(double total_nll, int64_t tokens) {
  PerplexityResult r;
  r.mean_nll = total_nll / tokens;
  r.perplexity = std::exp(r.mean_nll);
  r.predicted_tokens = tokens;
  return r;
}

}  // namespace

std::vector<int64_t> TokenizeFile(const std::string& path,
                                  const std::function<std::vector<int64_t>(const std::string&)>& encode_line,
                                  int64_t max_lines) {
  std::ifstream in(path);
  Check(in.good(), "cannot open text file '", path, "'");
  std::vector<int64_t> stream;
  std::string line;
  int64_t lines = 0;
  while (std::getline(in, line)) {
    if (Trim(line).empty()) continue;
    const std::vector<int64_t> ids = encode_line(line);
    stream.insert(stream.end(), ids.begin(), ids.end());
    if (max_lines > 0 && ++lines >= max_lines) break;
  }
  Check(!stream.empty(), "text file '", path, "' has no text");
  return stream;
}

torch::Tensor PackWindows(const std::vector<int64_t>& stream, int64_t window, bool keep_tail) {
  Check(window >= 2, "window must be at least 2 tokens, got ", window);
  const int64_t full = static_cast<int64_t>(stream.size()) / window;
  const int64_t tail = static_cast<int64_t>(stream.size()) - full * window;
  const bool with_tail = keep_tail && tail >= 2;
  const int64_t rows = full + (with_tail ? 1 : 0);
  Check(rows > 0, "a stream of ", stream.size(), " tokens fills no window of ", window);
  torch::Tensor out = torch::full({rows, window}, -1, torch::kLong);
  std::copy(stream.begin(), stream.begin() + full * window + (with_tail ? tail : 0),
            out.data_ptr<int64_t>());
  return out;
}

PerplexityResult Perplexity(LlamaModel& model, const torch::Tensor& windows, int64_t batch_size) {
  Check(windows.dim() == 2 && windows.size(1) >= 2, "perplexity needs windows [N, W>=2]");
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const torch::Device device = model->parameters().front().device();
  double total_nll = 0;
  int64_t total = 0;
  for (int64_t start = 0; start < windows.size(0); start += batch_size) {
    const torch::Tensor batch = windows.slice(0, start, std::min(start + batch_size, windows.size(0)));
    const torch::Tensor valid = batch.ge(0);
    LlamaInput input;
    input.input_ids = batch.clamp_min(0).to(device);
    input.attention_mask = valid.to(torch::kLong).to(device);
    const torch::Tensor logits = model->forward(input).logits;  // [b, W, V] float32
    const torch::Tensor targets = batch.slice(1, 1).to(device);
    const torch::Tensor nll = torch::nn::functional::cross_entropy(
        logits.slice(1, 0, -1).reshape({-1, logits.size(-1)}), targets.reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1).reduction(torch::kSum));
    total_nll += nll.item<double>();
    total += targets.ge(0).sum().item<int64_t>();
  }
  if (was_training) model->train();
  Check(total > 0, "perplexity: no token to predict");
  return FromNll(total_nll, total);
}

PerplexityResult UnigramPerplexity(const std::vector<int64_t>& train, const torch::Tensor& windows,
                                   int64_t vocab_size) {
  std::vector<double> counts(vocab_size, 1.0);  // add-one smoothing
  for (int64_t id : train) {
    Check(id >= 0 && id < vocab_size, "unigram baseline: token id ", id, " outside the vocabulary");
    counts[id] += 1.0;
  }
  const double total_count = static_cast<double>(train.size()) + static_cast<double>(vocab_size);
  const torch::Tensor targets = windows.slice(1, 1).contiguous();
  const int64_t* t = targets.data_ptr<int64_t>();
  double nll = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < targets.numel(); ++i) {
    if (t[i] < 0) continue;
    Check(t[i] < vocab_size, "unigram baseline: token id ", t[i], " outside the vocabulary");
    nll -= std::log(counts[t[i]] / total_count);
    ++n;
  }
  Check(n > 0, "unigram baseline: no token to predict");
  return FromNll(nll, n);
}

}  // namespace slm::text
