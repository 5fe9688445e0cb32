#include "audio/ctc.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>

#include "audio/ctc_words.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/strings.h"

namespace slm::audio {

std::string CtcAlphabet::Normalize(const std::string& text) {
  std::string letters;
  letters.reserve(text.size());
  for (unsigned char c : text) {
    if (std::isalpha(c)) {
      letters.push_back(static_cast<char>(std::tolower(c)));
    } else if (c == '\'') {
      letters.push_back('\'');
    } else {
      letters.push_back(' ');
    }
  }
  // Apostrophes survive only between two letters ("don't"), never at word edges ('tis, dogs').
  std::string out;
  out.reserve(letters.size());
  for (size_t i = 0; i < letters.size(); ++i) {
    char c = letters[i];
    if (c == '\'') {
      const bool inside = i > 0 && std::isalpha(static_cast<unsigned char>(letters[i - 1])) &&
                          i + 1 < letters.size() &&
                          std::isalpha(static_cast<unsigned char>(letters[i + 1]));
      if (!inside) c = ' ';
    }
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out.push_back(c);
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::vector<int64_t> CtcAlphabet::Encode(const std::string& text) {
  std::vector<int64_t> ids;
  for (char c : Normalize(text)) {
    if (c == ' ') ids.push_back(1);
    else if (c == '\'') ids.push_back(2);
    else ids.push_back(3 + (c - 'a'));
  }
  return ids;
}

std::string CtcAlphabet::Decode(const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids) {
    Check(id >= 0 && id < kSize, "CTC id ", id, " is outside the alphabet [0, ", kSize, ")");
    if (id == kBlank) continue;
    out.push_back(id == 1 ? ' ' : id == 2 ? '\'' : static_cast<char>('a' + (id - 3)));
  }
  return out;
}

CtcHeadImpl::CtcHeadImpl(int64_t d_model) {
  Check(d_model > 0, "CtcHead: d_model must be positive, got ", d_model);
  proj = register_module("proj", torch::nn::Linear(d_model, CtcAlphabet::kSize));
}

torch::Tensor CtcHeadImpl::forward(const torch::Tensor& states) {
  Check(states.dim() == 3 && states.size(2) == proj->weight.size(1), "CtcHead: states must be [B, T, ",
        proj->weight.size(1), "], got ", states.sizes());
  return proj->forward(states);
}

CtcHead LoadCtcHead(const std::string& encoder_dir, int64_t d_model, const std::string& what, torch::Device device,
                    torch::ScalarType dtype) {
  const std::string weights = encoder_dir + "/model.safetensors";
  Check(std::filesystem::exists(weights), what, ": no ", weights);
  safetensors::Reader reader(weights);
  Check(reader.Has("ctc_head.weight") && reader.Has("ctc_head.bias"), what, " needs an encoder saved with its CTC ",
        "head (`slm audio pretrain-encoder`); ", weights, " has no ctc_head.*");
  CtcHead head(d_model);
  const std::vector<int64_t> expected = {CtcAlphabet::kSize, d_model};
  Check(reader.Info("ctc_head.weight").shape == expected && reader.Info("ctc_head.bias").shape.size() == 1 &&
            reader.Info("ctc_head.bias").shape[0] == CtcAlphabet::kSize,
        weights, ": ctc_head.weight must be [", CtcAlphabet::kSize, " characters, ", d_model, "]");
  torch::NoGradGuard no_grad;
  reader.CopyInto("ctc_head.weight", head->proj->weight);
  reader.CopyInto("ctc_head.bias", head->proj->bias);
  head->to(device, dtype);
  head->eval();
  for (torch::Tensor& p : head->parameters()) p.set_requires_grad(false);
  return head;
}

namespace {
constexpr double kNegInf = -std::numeric_limits<double>::infinity();
double LogAdd(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  return std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
}
}  // namespace

CtcPrefixScorer::CtcPrefixScorer(const torch::Tensor& log_probs) {
  Check(log_probs.defined() && log_probs.dim() == 2 && log_probs.size(0) >= 1 &&
            log_probs.size(1) == CtcAlphabet::kSize,
        "CtcPrefixScorer: log_probs must be [T >= 1, ", CtcAlphabet::kSize, "], got ",
        log_probs.defined() ? Str(log_probs.sizes()) : std::string("undefined"));
  const torch::Tensor cpu = log_probs.detach().to(torch::kCPU, torch::kDouble).contiguous();
  frames_ = cpu.size(0);
  log_probs_.assign(cpu.data_ptr<double>(), cpu.data_ptr<double>() + cpu.numel());
  State empty;
  empty.non_blank.assign(frames_, kNegInf);
  empty.blank.resize(frames_);
  double sum = 0;
  for (int64_t t = 0; t < frames_; ++t) empty.blank[t] = sum += log_probs_[t * CtcAlphabet::kSize + CtcAlphabet::kBlank];
  empty.prefix = 0;
  cache_.emplace(std::vector<int64_t>{}, std::move(empty));
}

const CtcPrefixScorer::State& CtcPrefixScorer::Get(const std::vector<int64_t>& symbols) {
  if (auto it = cache_.find(symbols); it != cache_.end()) return it->second;
  const int64_t c = symbols.back();
  Check(c > CtcAlphabet::kBlank && c < CtcAlphabet::kSize, "CtcPrefixScorer: symbol ", c, " outside [1, ",
        CtcAlphabet::kSize, ")");
  const std::vector<int64_t> shorter(symbols.begin(), symbols.end() - 1);
  const State& g = Get(shorter);
  const bool repeat = !shorter.empty() && shorter.back() == c;
  auto y = [&](int64_t t, int64_t k) { return log_probs_[t * CtcAlphabet::kSize + k]; };
  State h;
  h.non_blank.assign(frames_, kNegInf);
  h.blank.assign(frames_, kNegInf);
  // Frame 0 can emit c only as the first symbol.
  h.non_blank[0] = shorter.empty() ? y(0, c) : kNegInf;
  double prefix = h.non_blank[0];
  for (int64_t t = 1; t < frames_; ++t) {
    // Paths for g that end by frame t-1 and may start c at t (a repeated symbol needs a blank between).
    const double before = repeat ? g.blank[t - 1] : LogAdd(g.blank[t - 1], g.non_blank[t - 1]);
    h.non_blank[t] = LogAdd(h.non_blank[t - 1], before) + y(t, c);
    h.blank[t] = LogAdd(h.blank[t - 1], h.non_blank[t - 1]) + y(t, CtcAlphabet::kBlank);
    prefix = LogAdd(prefix, before + y(t, c));
  }
  h.prefix = prefix;
  return cache_.emplace(symbols, std::move(h)).first->second;
}

double CtcPrefixScorer::Prefix(const std::vector<int64_t>& symbols) { return Get(symbols).prefix; }

double CtcPrefixScorer::Full(const std::vector<int64_t>& symbols) {
  const State& s = Get(symbols);
  return LogAdd(s.non_blank[frames_ - 1], s.blank[frames_ - 1]);
}

torch::Tensor CtcLoss(const torch::Tensor& logits, const torch::Tensor& frame_lengths,
                      const std::vector<std::vector<int64_t>>& targets) {
  Check(logits.dim() == 3, "CtcLoss: logits must be [B, T, V], got ", logits.sizes());
  const int64_t batch = logits.size(0);
  Check(static_cast<int64_t>(targets.size()) == batch, "CtcLoss: ", targets.size(),
        " target sequences for a batch of ", batch);
  Check(frame_lengths.dim() == 1 && frame_lengths.size(0) == batch,
        "CtcLoss: frame_lengths must be [", batch, "], got ", frame_lengths.sizes());
  std::vector<int64_t> flat, target_lengths;
  for (const auto& row : targets) {
    Check(!row.empty(), "CtcLoss: an empty target sequence (nothing to transcribe)");
    for (int64_t id : row)
      Check(id > 0 && id < logits.size(2), "CtcLoss: target id ", id, " outside [1, ",
            logits.size(2), ")");
    flat.insert(flat.end(), row.begin(), row.end());
    target_lengths.push_back(static_cast<int64_t>(row.size()));
  }
  // torch's ctc_loss wants [T, B, V] log-probabilities.
  const torch::Tensor log_probs = torch::log_softmax(logits.to(torch::kFloat), -1).transpose(0, 1);
  return torch::ctc_loss(log_probs, torch::tensor(flat, torch::kLong).to(logits.device()),
                         frame_lengths.to(torch::kCPU, torch::kLong),
                         torch::tensor(target_lengths, torch::kLong), CtcAlphabet::kBlank,
                         at::Reduction::Mean, /*zero_infinity=*/true);
}

std::vector<std::vector<int64_t>> CtcGreedyDecode(const torch::Tensor& logits,
                                                  const torch::Tensor& frame_lengths) {
  Check(logits.dim() == 3, "CtcGreedyDecode: logits must be [B, T, V], got ", logits.sizes());
  const torch::Tensor best = logits.argmax(-1).to(torch::kCPU, torch::kLong).contiguous();
  const int64_t batch = best.size(0), steps = best.size(1);
  torch::Tensor lengths = frame_lengths.defined()
                              ? frame_lengths.to(torch::kCPU, torch::kLong).contiguous()
                              : torch::full({batch}, steps, torch::kLong);
  Check(lengths.dim() == 1 && lengths.size(0) == batch, "CtcGreedyDecode: frame_lengths must be [",
        batch, "], got ", lengths.sizes());
  std::vector<std::vector<int64_t>> out(batch);
  const int64_t* ids = best.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = std::min(steps, std::max<int64_t>(0, lengths[b].item<int64_t>()));
    int64_t previous = -1;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t id = ids[b * steps + t];
      if (id != previous && id != CtcAlphabet::kBlank) out[b].push_back(id);
      previous = id;
    }
  }
  return out;
}

CtcTranscript CtcGreedyWords(const torch::Tensor& logits) {
  Check(logits.dim() == 2, "CtcGreedyWords: logits must be [T, V], got ", logits.sizes());
  const auto [peak, best] = torch::softmax(logits.to(torch::kCPU, torch::kFloat), -1).max(-1);
  const torch::Tensor ids_t = best.to(torch::kLong).contiguous(), peak_t = peak.contiguous();
  const int64_t* ids = ids_t.data_ptr<int64_t>();
  const float* p = peak_t.data_ptr<float>();
  // Characters of the best path: symbol, first and last frame, peak posterior.
  std::vector<CtcChar> chars;
  int64_t previous = -1;
  for (int64_t t = 0; t < ids_t.size(0); ++t) {
    const int64_t id = ids[t];
    if (id != CtcAlphabet::kBlank) {
      if (id != previous) chars.push_back({id, t, t, p[t]});
      else chars.back().last = t, chars.back().peak = std::max(chars.back().peak, p[t]);
    }
    previous = id;
  }
  return TranscriptOfChars(chars);
}

CtcTranscript TranscriptOfChars(const std::vector<CtcChar>& chars) {
  CtcTranscript out;
  double total = 0;
  CtcWord word;
  double word_sum = 0;
  int64_t word_chars = 0;
  auto close_word = [&] {
    if (word_chars == 0) return;
    word.confidence = static_cast<float>(word_sum / word_chars);
    out.words.push_back(word);
    word = CtcWord{};
    word_sum = 0;
    word_chars = 0;
  };
  for (const CtcChar& c : chars) {
    total += c.peak;
    if (c.id == CtcAlphabet::kSpace) {
      close_word();
      continue;
    }
    if (word_chars == 0) word.start_frame = c.first;
    word.text += CtcAlphabet::Decode({c.id});
    word.end_frame = c.last + 1;
    word_sum += c.peak;
    ++word_chars;
  }
  close_word();
  for (const CtcWord& w : out.words) out.text += (out.text.empty() ? "" : " ") + w.text;
  out.confidence = chars.empty() ? 0.f : static_cast<float>(total / chars.size());
  return out;
}

CtcTranscriber::CtcTranscriber(const std::string& encoder_dir, torch::Device device) : device_(device) {
  encoder_ = LoadWhisperEncoder(encoder_dir, device);
  encoder_->Freeze();
  head_ = LoadCtcHead(encoder_dir, encoder_->Config().d_model, "CtcTranscriber", device, torch::kFloat);
  mel_ = std::make_unique<LogMel>(LoadEncoderFeatureOptions(encoder_dir));
}

torch::Tensor CtcTranscriber::Logits(const std::vector<float>& samples_16k) const {
  Check(!samples_16k.empty(), "CtcTranscriber: empty audio");
  torch::NoGradGuard no_grad;
  const torch::Tensor features = mel_->Compute(samples_16k);
  const int64_t frames = std::min<int64_t>(features.size(0), 2 * encoder_->Config().max_source_positions);
  Check(features.size(0) <= frames, "CtcTranscriber: ", features.size(0), " frames are more than the encoder's ", frames);
  return head_->forward(encoder_->forward(features.unsqueeze(0).to(device_)))[0].to(torch::kCPU, torch::kFloat);
}

std::string CtcTranscriber::Transcribe(const std::vector<float>& samples_16k) const {
  return CtcAlphabet::Decode(CtcGreedyDecode(Logits(samples_16k).unsqueeze(0), {})[0]);
}

}  // namespace slm::audio
