#include "engine/answer_text.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "text/generate.h"

namespace slm::engine {

size_t IncompleteUtf8Tail(const std::string& s) {
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return need > back ? back : 0;
  }
  return 0;
}

TokenChooser::TokenChooser(const SamplingSettings& sampling, int64_t vocabulary, const std::vector<int64_t>& prompt_ids)
    : sampling_(sampling), vocabulary_(vocabulary), generator_(at::make_generator<at::CPUGeneratorImpl>(sampling.seed)) {
  if (sampling_.repetition_penalty != 1.0) {
    seen_ = torch::zeros({1, vocabulary_}, torch::kBool);
    auto a = seen_.accessor<bool, 2>();
    for (const int64_t id : prompt_ids)
      if (id >= 0 && id < vocabulary_) a[0][id] = true;
  }
}

int64_t TokenChooser::Choose(const torch::Tensor& all_logits) {
  const int64_t eligible = std::min(all_logits.size(-1), vocabulary_);
  torch::Tensor logits = all_logits.reshape({1, -1}).narrow(1, 0, eligible).to(torch::kCPU, torch::kFloat);
  if (seen_.defined()) logits = text::ApplyRepetitionPenalty(logits, seen_.narrow(1, 0, eligible), sampling_.repetition_penalty);
  int64_t token;
  if (sampling_.temperature <= 0) {
    token = logits.argmax(-1).item<int64_t>();
  } else {
    const torch::Tensor filtered =
        text::ApplySamplingFilters(logits, sampling_.temperature, sampling_.top_k, sampling_.top_p);
    token = torch::multinomial(filtered.softmax(-1), 1, /*replacement=*/false, generator_).item<int64_t>();
  }
  if (seen_.defined()) seen_[0][token] = true;
  return token;
}

TextStreamer::TextStreamer(const text::Tokenizer& tokenizer, std::vector<std::string> stop)
    : tokenizer_(tokenizer) {
  for (std::string& s : stop)
    if (!s.empty()) stop_.push_back(std::move(s));
}

std::string TextStreamer::Text() const {
  std::string full = tokenizer_.Decode(tokens_, /*skip_special_tokens=*/true);
  if (stopped_) return sent_;
  return full;
}

std::string TextStreamer::Add(int64_t token, bool* stopped) {
  *stopped = false;
  tokens_.push_back(token);
  std::string full = tokenizer_.Decode(tokens_, /*skip_special_tokens=*/true);
  size_t cut = std::string::npos;
  for (const std::string& stop : stop_) {
    const size_t at = full.find(stop);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    full.resize(cut);
    *stopped = stopped_ = true;
  }
  size_t safe = full.size();
  if (!*stopped) {
    safe -= IncompleteUtf8Tail(full);
    // Hold back a tail that may become a stop string.
    for (const std::string& stop : stop_)
      for (size_t k = std::min(stop.size() - 1, safe); k > 0; --k)
        if (full.compare(safe - k, k, stop, 0, k) == 0) {
          safe -= k;
          break;
        }
  }
  std::string delta;
  if (safe > sent_.size() && full.compare(0, sent_.size(), sent_) == 0) {
    delta = full.substr(sent_.size(), safe - sent_.size());
    sent_ += delta;
  }
  return delta;
}

}  // namespace slm::engine
