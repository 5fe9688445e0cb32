// Connectionist temporal classification over characters: the alphabet, a linear CTC head on top of
// an encoder and greedy decoding. This is what makes the project's own speech encoder carry
// phonetic content (train/speech_encoder_pretrain.h) and what its character error rate is
// measured with.
//
// Alphabet (fixed, so a checkpoint never needs a vocabulary file): index 0 = blank, 1 = space,
// 2 = apostrophe, 3..28 = 'a'..'z'. Text is normalised before encoding: ASCII lower case; every
// character that is not a letter or an apostrophe inside a word becomes a space (digits included:
// the espeak corpus spells no digits); apostrophes at word edges are dropped; spaces collapse.
//
// Thread-safety: all functions are pure; CtcHead::forward is safe from several threads in eval
// mode.
#pragma once

#include <torch/torch.h>

#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace slm::audio {

struct CtcAlphabet {
  static constexpr int64_t kBlank = 0;
  static constexpr int64_t kSpace = 1;  // the word boundary; 2 = apostrophe, 3.. = a-z
  static constexpr int64_t kSize = 29;
  // The normalised form of `text` (see above); "" when nothing speakable is left.
  static std::string Normalize(const std::string& text);
  // Ids in [1, kSize) of Normalize(text).
  static std::vector<int64_t> Encode(const std::string& text);
  // Text of ids; blank ids are skipped, an id outside [0, kSize) is an slm::Error.
  static std::string Decode(const std::vector<int64_t>& ids);
};

// Per-frame class scores of encoder states: Linear(d_model -> CtcAlphabet::kSize), parameters
// "weight" [kSize, d_model] and "bias" [kSize]. Input [B, T, d_model]; output logits [B, T, kSize]
// (same dtype).
class CtcHeadImpl : public torch::nn::Module {
 public:
  explicit CtcHeadImpl(int64_t d_model);
  torch::Tensor forward(const torch::Tensor& states);
  torch::nn::Linear proj{nullptr};
};
TORCH_MODULE(CtcHead);

// The CTC head saved next to an encoder (`slm audio pretrain-encoder` writes "ctc_head.weight" and
// "ctc_head.bias" into encoder_dir/model.safetensors), in eval mode without grad, on `device` in
// `dtype`. slm::Error naming `what` (the config key asking for it) and the file when the file or
// the tensors are missing ("... has no ctc_head.*") or the head is not [kSize, d_model].
CtcHead LoadCtcHead(const std::string& encoder_dir, int64_t d_model, const std::string& what,
                    torch::Device device = torch::kCPU, torch::ScalarType dtype = torch::kFloat);

// CTC prefix scores of one utterance (Graves 2008; Watanabe et al. 2017's hybrid CTC/attention
// decoding): for a symbol sequence h, Prefix(h) = log P(the CTC output starts with h | frames) and
// Full(h) = log P(the CTC output is exactly h | frames), both summed over every alignment, from
// per-frame log-probabilities log_probs [T, kSize] (blank at 0; any float dtype/device, copied to
// float64 on the CPU). Used to steer an LM's decoding by the encoder's CTC head. Each prefix's
// forward variables are cached, so scoring h after its prefix costs O(T) per new symbol. The empty
// sequence has Prefix 0 and Full = log P(all blank). Not thread-safe (the cache); one per utterance.
// slm::Error for a symbol outside [1, kSize) or log_probs not [T >= 1, kSize].
class CtcPrefixScorer {
 public:
  explicit CtcPrefixScorer(const torch::Tensor& log_probs);
  double Prefix(const std::vector<int64_t>& symbols);
  double Full(const std::vector<int64_t>& symbols);

 private:
  struct State {
    std::vector<double> non_blank, blank;  // log P(prefix, path ends at frame t in a symbol / blank)
    double prefix = 0;
  };
  const State& Get(const std::vector<int64_t>& symbols);
  std::vector<double> log_probs_;  // [T * kSize]
  int64_t frames_ = 0;
  std::map<std::vector<int64_t>, State> cache_;
};

// CTC loss (mean over the batch of the per-utterance negative log-likelihood divided by the target
// length, as torch's reduction="mean"); logits [B, T, V] any float dtype (computed in float32),
// frame_lengths [B], targets: one id sequence per row (ids in [1, V)). Utterances whose targets
// cannot fit their frames give +inf and are zeroed (zero_infinity), so one bad row cannot poison
// a batch.
torch::Tensor CtcLoss(const torch::Tensor& logits, const torch::Tensor& frame_lengths,
                      const std::vector<std::vector<int64_t>>& targets);

// Greedy (best-path) decoding: argmax per frame over the first frame_lengths[b] frames, repeated
// ids merged, blanks dropped. logits [B, T, V]; frame_lengths [B] integer (undefined = all T).
std::vector<std::vector<int64_t>> CtcGreedyDecode(const torch::Tensor& logits,
                                                  const torch::Tensor& frame_lengths);

// One word of a greedy CTC transcript with its span in encoder frames [start_frame, end_frame)
// (from its first character's first frame to its last character's last frame) and its confidence:
// the mean over its characters of the peak posterior of the emitted symbol.
struct CtcWord {
  std::string text;
  int64_t start_frame = 0;
  int64_t end_frame = 0;
  float confidence = 0;
};

struct CtcTranscript {
  std::string text;  // the words joined by single spaces (== CtcAlphabet::Decode of the best path)
  std::vector<CtcWord> words;
  float confidence = 0;  // mean peak posterior over every emitted character (spaces included); 0 if none
};

// Greedy decoding of one utterance with word spans: logits [T, V] of its real frames (any float
// dtype, any device). The best path is CtcGreedyDecode's; spaces separate words.
CtcTranscript CtcGreedyWords(const torch::Tensor& logits);

// Offline speech recognition with an encoder directory that carries a CTC head (the project's own
// ASR: round-trip intelligibility of synthesized speech, tests): 16 kHz samples -> log-mel with the
// encoder's feature options -> encoder -> greedy CTC text. Frozen, CPU by default. slm::Error as
// LoadWhisperEncoder / LoadCtcHead. Thread-safety: Transcribe is safe from several threads.
class CtcTranscriber {
 public:
  explicit CtcTranscriber(const std::string& encoder_dir, torch::Device device = torch::kCPU);
  // Whole clips up to the encoder's maximum length; slm::Error for a longer or empty clip.
  std::string Transcribe(const std::vector<float>& samples_16k) const;
  // The CTC head's logits of a clip, [T, kSize] float32 on the CPU (for another decoder, e.g.
  // audio/ctc_lexicon_decoder.h); same errors as Transcribe.
  torch::Tensor Logits(const std::vector<float>& samples_16k) const;

 private:
  mutable WhisperEncoder encoder_{nullptr};  // frozen; forward() does not change it
  mutable CtcHead head_{nullptr};
  std::unique_ptr<LogMel> mel_;
  torch::Device device_;
};

}  // namespace slm::audio
