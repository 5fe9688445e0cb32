// Language-model data: token streams packed into fixed-length windows, perplexity, and the unigram
// baseline that any trained LM must beat.
//
// Packing: every line of a text file becomes [bos] + tokens + [eos]; lines are concatenated into
// one stream, which is cut into consecutive, non-overlapping windows of `window` tokens. Inside a
// window token t+1 is predicted from tokens <= t, so a window yields window - 1 predictions and
// the first token of each window is context only. Evaluation uses every full window (plus the
// remainder as a shorter one), so perplexities of different models on the same file and window
// are over exactly the same predicted tokens, and the unigram baseline scores those same tokens.
// Thread-safety: pure functions over their arguments; the model must not be mutated concurrently.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "text/llama.h"

namespace slm::text {

// Concatenated token ids of a file, one line at a time through `encode_line` (which adds bos/eos
// as it sees fit). Blank lines are skipped; slm::Error if the file cannot be read or is empty.
std::vector<int64_t> TokenizeFile(const std::string& path,
                                  const std::function<std::vector<int64_t>(const std::string&)>& encode_line,
                                  int64_t max_lines = 0);

// Windows of `window` tokens: [num_windows, window] int64 (the tail shorter than 2 tokens dropped;
// a shorter tail becomes its own window when keep_tail, padded with -1 which is ignored).
torch::Tensor PackWindows(const std::vector<int64_t>& stream, int64_t window, bool keep_tail);

struct PerplexityResult {
  double mean_nll = 0;     // nats per predicted token
  double perplexity = 0;   // exp(mean_nll)
  int64_t predicted_tokens = 0;
};

// Perplexity of `model` over packed windows [N, W] (entries < 0 are padding and never predicted),
// evaluated in batches of `batch_size` under NoGradGuard on the model's device.
PerplexityResult Perplexity(LlamaModel& model, const torch::Tensor& windows, int64_t batch_size);

// A unigram model estimated on `train` (add-one smoothing over `vocab_size` ids) scored on the
// tokens that Perplexity() would predict for `windows`.
PerplexityResult UnigramPerplexity(const std::vector<int64_t>& train, const torch::Tensor& windows,
                                   int64_t vocab_size);

}  // namespace slm::text
