// Projectors: the small trainable maps from an encoder's feature space into the frozen LM's input
// embedding space, chosen by name in config through a registry (an unknown name is an error that
// lists the valid ones; a key that the chosen type does not use is an unknown-key error).
//
// Shape contract of every projector:
//   input  features [B, T, input_dim] (any float dtype; encoder frames or image patches) and
//          optionally lengths [B] (real frames per row, the rest is padding)
//   output embeds   [B, OutputLength(T), output_dim] (same dtype/device) and lengths [B] =
//          OutputLength(length) per row.
// Padded input frames never influence real output positions: Project() zeroes them first (so a
// stack or convolution at a row's end sees zeros, exactly as the same row alone), and the Q-Former
// masks them out of cross-attention. So row b of a padded batch equals that row run alone.
//
// Registered types (the time compression = input frames per output position):
//   linear    LiMBeR: one affine map ("linear.*").                                    compression 1
//   mlp       LLaVA-1.5: Linear-GELU-Linear ("linear_1", "linear_2" as Hugging Face's
//             LlavaMultiModalProjector, so its weights load unchanged).               compression 1
//   stack_mlp Ultravox / SLAM-LLM: concatenate `stack` consecutive frames (the end zero-padded),
//             RMSNorm, Linear -> SwiGLU -> RMSNorm -> Linear, no biases ("ln_pre", "linear_1",
//             "ln_mid", "linear_2" as Ultravox's projector).                     compression stack
//   conv      strided Conv1d (kernel_size, stride; the end zero-padded so that
//             OutputLength(T) = ceil(T / stride)) -> GELU -> Linear ("conv", "linear").
//                                                                                compression stride
//   qformer   SALMONN's window-level Q-Former: frames cut into windows of `window` frames (the
//             last one partial, masked), `num_queries` learned queries per window pass through
//             `num_layers` pre-LN blocks [self-attention over the queries, cross-attention to the
//             window's frames, GELU MLP], then a Linear to output_dim.
//                                                              compression window / num_queries
//   ctc_embed speech only: the encoder's CTC head segments frames (greedy CTC: blank frames and
//             repeats dropped, so about one position per spoken character) and each kept frame
//             becomes the posterior-weighted mix of the LM's embeddings of the character pieces,
//             plus a zero-initialised Linear-GELU-Linear correction ("linear_1", "linear_2")
//             (LegoSLM-style). Needs an encoder saved with its CTC head (`slm audio
//             pretrain-encoder`); OutputLength(T) = T is only an upper bound.
//             With `units: words` the greedy CTC transcript is cut into words at the space symbol
//             and each word enters as the LM's own pieces for it (its tokenizer, its input
//             embeddings), plus the correction of the mean of the word's kept frames, added to each
//             of its pieces: the LM reads words it knows instead of spelling them out, and the
//             correction still carries how the word sounded. A transcript with no word gives one
//             position (the word-boundary piece "▁").
// OutputRate(input_rate) = input_rate / Compression(): e.g. the Whisper encoder's 50 frames/s
// through stack_mlp with stack 4 gives 12.5 LM positions per second of speech.
//
// Thread-safety: forward()/Project() on one module from several threads is safe in eval mode.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace slm::adapters {

struct ProjectorSpec {
  std::string type = "mlp";
  int64_t input_dim = 0;
  int64_t output_dim = 0;
  int64_t hidden_dim = 0;   // 0 = output_dim (mlp, stack_mlp, conv), input_dim (qformer)
  int64_t stack = 4;        // stack_mlp: frames per output position
  int64_t kernel_size = 0;  // conv: 0 = stride + 1 (odd overlap around each step)
  int64_t stride = 2;       // conv
  int64_t window = 8;       // qformer: frames per window
  int64_t num_queries = 1;  // qformer: output positions per window
  int64_t num_layers = 2;   // qformer
  int64_t num_heads = 4;    // qformer: must divide the hidden size
  std::string units = "characters";  // ctc_embed: characters | words
  // Reads type, input_dim, output_dim and the keys the chosen type uses (strict, ranges checked).
  // input_dim/output_dim may be left out (0): MultimodalLM fills them from its encoder and
  // backbone; MakeProjector rejects a spec where they are still 0.
  void Load(config::Node node);
};

struct ProjectorOutput {
  torch::Tensor embeds;   // [B, N, output_dim]
  torch::Tensor lengths;  // [B] int64, real output positions per row
};

class ProjectorImpl : public torch::nn::Module {
 public:
  // Features [B, T, input_dim], all frames real.
  torch::Tensor forward(const torch::Tensor& features);
  // Padded batch: lengths [B] integer in [1, T] (undefined = all T). Virtual because ctc_embed's
  // output length depends on the content, not only on T.
  virtual ProjectorOutput Project(const torch::Tensor& features, const torch::Tensor& lengths);

  // Output positions for T input frames.
  virtual int64_t OutputLength(int64_t input_frames) const { return input_frames; }
  // Input frames per output position (may be fractional for a Q-Former with several queries).
  virtual double Compression() const { return 1.0; }
  double OutputRate(double input_frames_per_second) const {
    return input_frames_per_second / Compression();
  }
  const ProjectorSpec& Spec() const { return spec_; }
  int64_t ParameterCount() const;

 protected:
  explicit ProjectorImpl(ProjectorSpec spec) : spec_(std::move(spec)) {}
  // features [B, T, input_dim] with padded frames zeroed; frame_mask [B, T] bool (true = real) or
  // undefined when every frame is real.
  virtual torch::Tensor Forward(const torch::Tensor& features, const torch::Tensor& frame_mask) = 0;
  ProjectorSpec spec_;

 private:
  // Throws slm::Error naming the projector if features are not [B, T, input_dim].
  void CheckInput(const torch::Tensor& features) const;
};

// Creates the registered projector `spec.type`; slm::Error for an unknown type or bad dimensions.
std::shared_ptr<ProjectorImpl> MakeProjector(const ProjectorSpec& spec);
std::vector<std::string> ProjectorTypes();
// Gives a ctc_embed projector the CTC head (weight [V, input_dim], bias [V], index 0 = blank) and
// the LM input embeddings of symbols 1..V-1 [V-1, output_dim]; slm::Error for another type or
// mismatched shapes.
void BindCtcEmbed(ProjectorImpl& projector, const torch::Tensor& ctc_weight, const torch::Tensor& ctc_bias,
                  const torch::Tensor& symbol_embeddings);
// For `units: words`, also: the LM's pieces for one lower-case word (no BOS/EOS), the LM's input
// embeddings of piece ids [N] -> [N, output_dim] (frozen; called under no-grad) and the piece that
// stands for an empty transcript. Called from Project() on the caller's thread.
struct WordPieces {
  std::function<std::vector<int64_t>(const std::string&)> encode;
  std::function<torch::Tensor(const torch::Tensor&)> embed;
  int64_t empty_piece = 0;
};
void BindCtcWords(ProjectorImpl& projector, WordPieces pieces);

}  // namespace slm::adapters
