#include "adapters/projector.h"

#include <cmath>
#include <functional>

#include "audio/ctc.h"
#include "core/module_weights.h"
#include "core/registry.h"

namespace slm::adapters {
namespace {

namespace F = torch::nn::functional;
using config::InRange;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

class LinearProjector : public ProjectorImpl {
 public:
  explicit LinearProjector(ProjectorSpec spec) : ProjectorImpl(std::move(spec)) {
    linear_ = register_module("linear", torch::nn::Linear(spec_.input_dim, spec_.output_dim));
  }

 protected:
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor&) override {
    return linear_->forward(x);
  }

 private:
  torch::nn::Linear linear_{nullptr};
};

class MlpProjector : public ProjectorImpl {
 public:
  explicit MlpProjector(ProjectorSpec spec) : ProjectorImpl(std::move(spec)) {
    const int64_t hidden = spec_.hidden_dim > 0 ? spec_.hidden_dim : spec_.output_dim;
    linear_1_ = register_module("linear_1", torch::nn::Linear(spec_.input_dim, hidden));
    linear_2_ = register_module("linear_2", torch::nn::Linear(hidden, spec_.output_dim));
  }

 protected:
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor&) override {
    return linear_2_->forward(torch::gelu(linear_1_->forward(x)));
  }

  torch::nn::Linear linear_1_{nullptr}, linear_2_{nullptr};
};

// RMSNorm with a learned scale, statistics in float32 (as Llama's; bf16 variance is too coarse).
class RmsNormImpl : public torch::nn::Module {
 public:
  explicit RmsNormImpl(int64_t dim, double eps = 1e-6) : eps_(eps) {
    weight = register_parameter("weight", torch::ones({dim}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor wide = x.to(torch::kFloat);
    return weight * (wide * torch::rsqrt(wide.pow(2).mean(-1, true) + eps_)).to(x.scalar_type());
  }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

class StackMlpProjector : public ProjectorImpl {
 public:
  explicit StackMlpProjector(ProjectorSpec spec) : ProjectorImpl(std::move(spec)) {
    const int64_t stacked = spec_.input_dim * spec_.stack;
    const int64_t hidden = spec_.hidden_dim > 0 ? spec_.hidden_dim : spec_.output_dim;
    ln_pre_ = register_module("ln_pre", RmsNorm(stacked));
    linear_1_ = register_module(
        "linear_1", torch::nn::Linear(torch::nn::LinearOptions(stacked, 2 * hidden).bias(false)));
    ln_mid_ = register_module("ln_mid", RmsNorm(hidden));
    linear_2_ = register_module(
        "linear_2",
        torch::nn::Linear(torch::nn::LinearOptions(hidden, spec_.output_dim).bias(false)));
  }
  int64_t OutputLength(int64_t t) const override { return CeilDiv(t, spec_.stack); }
  double Compression() const override { return static_cast<double>(spec_.stack); }

 protected:
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor&) override {
    const int64_t batch = x.size(0), steps = x.size(1), k = spec_.stack;
    const int64_t out = CeilDiv(steps, k);
    const torch::Tensor padded = F::pad(x, F::PadFuncOptions({0, 0, 0, out * k - steps}));
    const torch::Tensor stacked = padded.reshape({batch, out, k * x.size(2)});
    // SwiGLU as Ultravox: the first half is the value, the second the gate.
    const auto halves = linear_1_->forward(ln_pre_->forward(stacked)).chunk(2, -1);
    return linear_2_->forward(ln_mid_->forward(torch::silu(halves[1]) * halves[0]));
  }

 private:
  RmsNorm ln_pre_{nullptr}, ln_mid_{nullptr};
  torch::nn::Linear linear_1_{nullptr}, linear_2_{nullptr};
};

class ConvProjector : public ProjectorImpl {
 public:
  explicit ConvProjector(ProjectorSpec spec) : ProjectorImpl(std::move(spec)) {
    kernel_ = spec_.kernel_size > 0 ? spec_.kernel_size : spec_.stride + 1;
    const int64_t hidden = spec_.hidden_dim > 0 ? spec_.hidden_dim : spec_.output_dim;
    conv_ = register_module(
        "conv", torch::nn::Conv1d(
                    torch::nn::Conv1dOptions(spec_.input_dim, hidden, kernel_).stride(spec_.stride)));
    linear_ = register_module("linear", torch::nn::Linear(hidden, spec_.output_dim));
  }
  int64_t OutputLength(int64_t t) const override { return CeilDiv(t, spec_.stride); }
  double Compression() const override { return static_cast<double>(spec_.stride); }

 protected:
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor&) override {
    const int64_t steps = x.size(1), out = OutputLength(steps);
    // Output i looks at input frames [i*stride - left, i*stride - left + kernel): centred on its
    // step, zeros beyond either end.
    const int64_t left = std::max<int64_t>(0, (kernel_ - spec_.stride) / 2);
    const int64_t right = (out - 1) * spec_.stride + kernel_ - steps - left;
    torch::Tensor padded = x.transpose(1, 2);
    padded = F::pad(padded, F::PadFuncOptions({left, std::max<int64_t>(0, right)}));
    torch::Tensor y = conv_->forward(padded).transpose(1, 2);
    return linear_->forward(torch::gelu(y.slice(1, 0, out)));
  }

 private:
  int64_t kernel_ = 0;
  torch::nn::Conv1d conv_{nullptr};
  torch::nn::Linear linear_{nullptr};
};

// Multi-head attention with separate query and key/value widths (cross-attention reads encoder
// frames of input_dim), on torch's scaled_dot_product_attention.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t kv_dim, int64_t heads) : heads_(heads) {
    q_proj = register_module("q_proj", torch::nn::Linear(dim, dim));
    k_proj = register_module("k_proj", torch::nn::Linear(kv_dim, dim));
    v_proj = register_module("v_proj", torch::nn::Linear(kv_dim, dim));
    o_proj = register_module("o_proj", torch::nn::Linear(dim, dim));
  }
  // query [N, Q, dim], kv [N, K, kv_dim], mask [N, 1, 1, K] bool (true = attend) or undefined.
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& kv, const torch::Tensor& mask) {
    auto split = [&](const torch::Tensor& t) {
      return t.view({t.size(0), t.size(1), heads_, -1}).transpose(1, 2);
    };
    const torch::Tensor out = torch::scaled_dot_product_attention(
        split(q_proj(query)), split(k_proj(kv)), split(v_proj(kv)),
        mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt);
    return o_proj(out.transpose(1, 2).reshape({query.size(0), query.size(1), -1}));
  }
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(Attention);

class QFormerLayerImpl : public torch::nn::Module {
 public:
  QFormerLayerImpl(int64_t dim, int64_t kv_dim, int64_t heads) {
    self_attn_norm = register_module("self_attn_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    self_attn = register_module("self_attn", Attention(dim, dim, heads));
    cross_attn_norm = register_module("cross_attn_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    cross_attn = register_module("cross_attn", Attention(dim, kv_dim, heads));
    mlp_norm = register_module("mlp_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    fc1 = register_module("fc1", torch::nn::Linear(dim, 4 * dim));
    fc2 = register_module("fc2", torch::nn::Linear(4 * dim, dim));
  }
  torch::Tensor forward(torch::Tensor q, const torch::Tensor& frames, const torch::Tensor& mask) {
    const torch::Tensor normed = self_attn_norm(q);
    q = q + self_attn(normed, normed, torch::Tensor());
    q = q + cross_attn(cross_attn_norm(q), frames, mask);
    return q + fc2(torch::gelu(fc1(mlp_norm(q))));
  }
  torch::nn::LayerNorm self_attn_norm{nullptr}, cross_attn_norm{nullptr}, mlp_norm{nullptr};
  Attention self_attn{nullptr}, cross_attn{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(QFormerLayer);

class QFormerProjector : public ProjectorImpl {
 public:
  explicit QFormerProjector(ProjectorSpec spec) : ProjectorImpl(std::move(spec)) {
    hidden_ = spec_.hidden_dim > 0 ? spec_.hidden_dim : spec_.input_dim;
    Check(hidden_ % spec_.num_heads == 0, "projector 'qformer': num_heads (", spec_.num_heads,
          ") must divide the hidden size (", hidden_, ")");
    query_tokens_ = register_parameter("query_tokens",
                                       torch::randn({1, spec_.num_queries, hidden_}) * 0.02);
    // Where a frame sits inside its window; without it the queries could not tell order.
    frame_positions_ =
        register_parameter("frame_positions", torch::randn({spec_.window, spec_.input_dim}) * 0.02);
    layers_ = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < spec_.num_layers; ++i) {
      typed_.push_back(QFormerLayer(hidden_, spec_.input_dim, spec_.num_heads));
      layers_->push_back(typed_.back());
    }
    norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden_})));
    proj_ = register_module("proj", torch::nn::Linear(hidden_, spec_.output_dim));
  }
  int64_t OutputLength(int64_t t) const override {
    return CeilDiv(t, spec_.window) * spec_.num_queries;
  }
  double Compression() const override {
    return static_cast<double>(spec_.window) / static_cast<double>(spec_.num_queries);
  }

 protected:
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& frame_mask) override {
    const int64_t batch = x.size(0), steps = x.size(1), w = spec_.window;
    const int64_t windows = CeilDiv(steps, w), total = windows * w;
    torch::Tensor real = frame_mask.defined()
                             ? frame_mask.to(x.device())
                             : torch::ones({batch, steps}, torch::dtype(torch::kBool).device(x.device()));
    real = F::pad(real.to(torch::kLong), F::PadFuncOptions({0, total - steps})).to(torch::kBool);
    const torch::Tensor frames =
        (F::pad(x, F::PadFuncOptions({0, 0, 0, total - steps})).view({batch, windows, w, -1}) +
         frame_positions_.to(x.scalar_type()))
            .view({batch * windows, w, -1});
    torch::Tensor mask = real.view({batch * windows, w}).clone();
    // A window with no real frame (all padding) attends to its first frame, so its (discarded)
    // outputs stay finite instead of NaN.
    mask.select(1, 0).logical_or_(mask.any(1).logical_not());
    mask = mask.view({batch * windows, 1, 1, w});
    torch::Tensor q = query_tokens_.to(x.scalar_type()).expand({batch * windows, -1, -1});
    for (auto& layer : typed_) q = layer->forward(q, frames, mask);
    return proj_->forward(norm_->forward(q)).reshape({batch, windows * spec_.num_queries, -1});
  }

 private:
  int64_t hidden_ = 0;
  torch::Tensor query_tokens_, frame_positions_;
  torch::nn::ModuleList layers_{nullptr};
  std::vector<QFormerLayer> typed_;
  torch::nn::LayerNorm norm_{nullptr};
  torch::nn::Linear proj_{nullptr};
};

// CTC-guided soft tokens (LegoSLM-style): the speech encoder's own CTC head gives per-frame
// character posteriors; frames are segmented by greedy CTC (blank frames and repeats of the
// previous frame's best character dropped) and each kept frame becomes the posterior-weighted mix
// of the LM's input embeddings of those characters' pieces (blank excluded, renormalised), plus a
// trainable correction of the frame's features (the mlp projector's Linear -> GELU -> Linear, its
// last layer zero-initialised so training starts from the pure soft characters). The LM thus reads approximately the spelled
// transcript in its own embedding space. Bind() must provide the CTC head and character embeddings
// before use (MultimodalLM does, from the encoder directory and the backbone).
class CtcEmbedProjector : public MlpProjector {
 public:
  explicit CtcEmbedProjector(ProjectorSpec spec) : MlpProjector(std::move(spec)) {
    torch::NoGradGuard no_grad;
    linear_2_->weight.zero_();
    linear_2_->bias.zero_();
  }
  void Bind(const torch::Tensor& ctc_weight, const torch::Tensor& ctc_bias, const torch::Tensor& symbol_embeddings) {
    Check(ctc_weight.dim() == 2 && ctc_weight.size(1) == spec_.input_dim && ctc_bias.dim() == 1 &&
              ctc_bias.size(0) == ctc_weight.size(0) && symbol_embeddings.dim() == 2 &&
              symbol_embeddings.size(0) == ctc_weight.size(0) - 1 && symbol_embeddings.size(1) == spec_.output_dim,
          "projector 'ctc_embed': CTC head [", ctc_weight.sizes(), "] / [", ctc_bias.sizes(),
          "] and symbol embeddings [", symbol_embeddings.sizes(), "] do not fit input_dim ", spec_.input_dim,
          " and output_dim ", spec_.output_dim);
    ctc_weight_ = ctc_weight.detach();
    ctc_bias_ = ctc_bias.detach();
    symbols_ = symbol_embeddings.detach();
  }
  void BindWords(WordPieces pieces) {
    Check(spec_.units == "words", "projector 'ctc_embed': word pieces bound but units is '", spec_.units, "'");
    Check(pieces.encode && pieces.embed, "projector 'ctc_embed': word pieces need encode and embed");
    words_ = std::move(pieces);
  }
  ProjectorOutput Project(const torch::Tensor& features, const torch::Tensor& lengths) override {
    Check(symbols_.defined(), "projector 'ctc_embed' has no CTC head bound (MultimodalLM binds it)");
    const int64_t batch = features.size(0), steps = features.size(1);
    const torch::Tensor frame_lengths =
        lengths.defined() ? lengths.to(torch::kCPU, torch::kLong) : torch::full({batch}, steps, torch::kLong);
    torch::Tensor posteriors;
    {
      torch::NoGradGuard no_grad;  // the segmentation and the soft characters come from frozen parts
      posteriors = torch::softmax(torch::linear(features.to(ctc_weight_.scalar_type()), ctc_weight_, ctc_bias_)
                                      .to(torch::kFloat), -1);
    }
    const torch::Tensor best = posteriors.argmax(-1).to(torch::kCPU);
    if (spec_.units == "words") return ProjectWords(features, frame_lengths, best);
    std::vector<torch::Tensor> rows;
    std::vector<int64_t> out_lengths;
    int64_t longest = 1;
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<int64_t> keep = KeptFrames(best, b, frame_lengths[b].item<int64_t>());
      if (keep.empty()) keep.push_back(0);  // silence: one position, so the placeholder is never empty
      out_lengths.push_back(static_cast<int64_t>(keep.size()));
      longest = std::max(longest, static_cast<int64_t>(keep.size()));
      rows.push_back(torch::tensor(keep, torch::kLong).to(features.device()));
    }
    std::vector<torch::Tensor> padded;
    for (int64_t b = 0; b < batch; ++b) {
      const torch::Tensor p = posteriors[b].index_select(0, rows[b]).slice(1, 1);  // blank dropped
      const torch::Tensor soft = (p / p.sum(-1, true).clamp_min(1e-6)).to(symbols_.scalar_type()).matmul(symbols_);
      const torch::Tensor kept = features[b].index_select(0, rows[b]);
      const torch::Tensor row = soft.to(features.scalar_type()) + MlpProjector::Forward(kept, {});
      padded.push_back(torch::constant_pad_nd(row, {0, 0, 0, longest - row.size(0)}));
    }
    return {torch::stack(padded), torch::tensor(out_lengths, torch::kLong)};
  }

 protected:
  torch::Tensor Forward(const torch::Tensor& features, const torch::Tensor&) override {
    return Project(features, {}).embeds;
  }

 private:
  // units: words. best [B, T] greedy CTC symbols (CPU).
  ProjectorOutput ProjectWords(const torch::Tensor& features, const torch::Tensor& frame_lengths,
                               const torch::Tensor& best) {
    Check(words_.encode != nullptr, "projector 'ctc_embed' (units: words) has no word pieces bound");
    const int64_t batch = features.size(0);
    const auto ids = best.accessor<int64_t, 2>();
    std::vector<std::vector<int64_t>> row_pieces(batch), row_words(batch);  // piece ids; piece -> word
    std::vector<std::vector<std::vector<int64_t>>> word_frames(batch);      // kept frames per word
    for (int64_t b = 0; b < batch; ++b) {
      std::string word;
      std::vector<int64_t> frames;
      auto close = [&] {
        if (word.empty()) return;
        for (int64_t piece : words_.encode(word)) {
          row_pieces[b].push_back(piece);
          row_words[b].push_back(static_cast<int64_t>(word_frames[b].size()));
        }
        word_frames[b].push_back(frames);
        word.clear();
        frames.clear();
      };
      for (const int64_t t : KeptFrames(best, b, frame_lengths[b].item<int64_t>())) {
        const int64_t symbol = ids[b][t];
        if (symbol == audio::CtcAlphabet::kSpace) {
          close();
        } else {
          word += audio::CtcAlphabet::Decode({symbol});
          frames.push_back(t);
        }
      }
      close();
    }
    int64_t longest = 1;
    for (const auto& pieces : row_pieces) longest = std::max<int64_t>(longest, static_cast<int64_t>(pieces.size()));
    std::vector<torch::Tensor> padded;
    std::vector<int64_t> out_lengths;
    for (int64_t b = 0; b < batch; ++b) {
      torch::Tensor row;
      if (row_pieces[b].empty()) {  // nothing heard: the word-boundary piece alone
        torch::NoGradGuard no_grad;
        row = words_.embed(torch::tensor(std::vector<int64_t>{words_.empty_piece}, torch::kLong).to(features.device()))
                  .to(features.scalar_type());
      } else {
        torch::Tensor embeds;
        {
          torch::NoGradGuard no_grad;
          embeds = words_.embed(torch::tensor(row_pieces[b], torch::kLong).to(features.device()));
        }
        std::vector<torch::Tensor> means;
        for (const auto& frames : word_frames[b])
          means.push_back(features[b].index_select(0, torch::tensor(frames, torch::kLong).to(features.device())).mean(0));
        const torch::Tensor per_piece =
            torch::stack(means).index_select(0, torch::tensor(row_words[b], torch::kLong).to(features.device()));
        row = embeds.to(features.scalar_type()) + MlpProjector::Forward(per_piece, {});
      }
      out_lengths.push_back(row.size(0));
      padded.push_back(torch::constant_pad_nd(row, {0, 0, 0, longest - row.size(0)}));
    }
    return {torch::stack(padded), torch::tensor(out_lengths, torch::kLong)};
  }

  // Greedy CTC segmentation of row b of best [B, T] (CPU): the frames among the first n that
  // start a new non-blank symbol (blanks and repeats dropped).
  static std::vector<int64_t> KeptFrames(const torch::Tensor& best, int64_t b, int64_t n) {
    const auto ids = best.accessor<int64_t, 2>();
    std::vector<int64_t> keep;
    for (int64_t t = 0; t < n; ++t)
      if (ids[b][t] != audio::CtcAlphabet::kBlank && (t == 0 || ids[b][t] != ids[b][t - 1])) keep.push_back(t);
    return keep;
  }

  torch::Tensor ctc_weight_, ctc_bias_, symbols_;
  WordPieces words_;
};

using Factory = std::function<std::shared_ptr<ProjectorImpl>(const ProjectorSpec&)>;

struct ProjectorType {
  Factory make;
  // The spec keys (besides type/input_dim/output_dim) this type reads; others are unknown keys.
  std::function<void(config::Node&, ProjectorSpec&)> load;
};

void LoadHidden(config::Node& n, ProjectorSpec& s) {
  n.Read("hidden_dim", s.hidden_dim, InRange<int64_t>(0, 1 << 20));
}

const Registry<ProjectorType>& Projectors() {
  static const Registry<ProjectorType> registry = [] {
    Registry<ProjectorType> r("projector");
    r.Add("linear",
          {[](const ProjectorSpec& s) { return std::make_shared<LinearProjector>(s); },
           [](config::Node&, ProjectorSpec&) {}},
          "one affine map (LiMBeR)");
    r.Add("mlp", {[](const ProjectorSpec& s) { return std::make_shared<MlpProjector>(s); }, LoadHidden},
          "Linear-GELU-Linear (LLaVA-1.5)");
    r.Add("stack_mlp",
          {[](const ProjectorSpec& s) { return std::make_shared<StackMlpProjector>(s); },
           [](config::Node& n, ProjectorSpec& s) {
             LoadHidden(n, s);
             n.Read("stack", s.stack, InRange<int64_t>(1, 1024));
           }},
          "stack k frames, RMSNorm-SwiGLU MLP (Ultravox, SLAM-LLM)");
    r.Add("conv",
          {[](const ProjectorSpec& s) { return std::make_shared<ConvProjector>(s); },
           [](config::Node& n, ProjectorSpec& s) {
             LoadHidden(n, s);
             n.Read("stride", s.stride, InRange<int64_t>(1, 1024))
                 .Read("kernel_size", s.kernel_size, InRange<int64_t>(0, 4096));
           }},
          "strided Conv1d + GELU + Linear");
    r.Add("qformer",
          {[](const ProjectorSpec& s) { return std::make_shared<QFormerProjector>(s); },
           [](config::Node& n, ProjectorSpec& s) {
             LoadHidden(n, s);
             n.Read("window", s.window, InRange<int64_t>(1, 4096))
                 .Read("num_queries", s.num_queries, InRange<int64_t>(1, 4096))
                 .Read("num_layers", s.num_layers, InRange<int64_t>(1, 64))
                 .Read("num_heads", s.num_heads, InRange<int64_t>(1, 1024));
           }},
          "window-level Q-Former (SALMONN)");
    r.Add("ctc_embed",
          {[](const ProjectorSpec& s) { return std::make_shared<CtcEmbedProjector>(s); },
           [](config::Node& n, ProjectorSpec& s) {
             LoadHidden(n, s);
             n.Read("units", s.units, config::OneOf<std::string>({"characters", "words"}));
           }},
          "CTC-segmented soft characters in the LM's embedding space + a correction MLP (speech; LegoSLM)");
    return r;
  }();
  return registry;
}

}  // namespace

void ProjectorSpec::Load(config::Node node) {
  node.Read("type", type, config::OneOf<std::string>(ProjectorTypes()));
  node.Read("input_dim", input_dim, InRange<int64_t>(0, 1 << 20));
  node.Read("output_dim", output_dim, InRange<int64_t>(0, 1 << 20));
  Projectors().Get(type).load(node, *this);
}

int64_t ProjectorImpl::ParameterCount() const { return module_weights::CountParameters(*this); }

void ProjectorImpl::CheckInput(const torch::Tensor& features) const {
  Check(features.defined() && features.dim() == 3 && features.size(2) == spec_.input_dim &&
            features.size(1) > 0,
        "projector '", spec_.type, "' expects features [batch, frames, ", spec_.input_dim,
        "], got ", features.defined() ? Str(features.sizes()) : std::string("undefined"));
}

torch::Tensor ProjectorImpl::forward(const torch::Tensor& features) {
  CheckInput(features);
  return Forward(features, {});
}

ProjectorOutput ProjectorImpl::Project(const torch::Tensor& features, const torch::Tensor& lengths) {
  CheckInput(features);
  const int64_t batch = features.size(0), steps = features.size(1);
  ProjectorOutput out;
  if (!lengths.defined()) {
    out.embeds = Forward(features, {});
    out.lengths = torch::full({batch}, OutputLength(steps), torch::kLong);
    return out;
  }
  Check(lengths.dim() == 1 && lengths.size(0) == batch && !torch::isFloatingType(lengths.scalar_type()),
        "projector '", spec_.type, "': lengths must be an integer tensor [", batch, "], got ",
        lengths.sizes());
  const torch::Tensor cpu = lengths.to(torch::kCPU, torch::kLong);
  Check(cpu.min().item<int64_t>() >= 1 && cpu.max().item<int64_t>() <= steps, "projector '",
        spec_.type, "': lengths must be in [1, ", steps, "]");
  const torch::Tensor mask =
      (torch::arange(steps).unsqueeze(0) < cpu.unsqueeze(1)).to(features.device());
  out.embeds = Forward(features * mask.unsqueeze(-1).to(features.scalar_type()), mask);
  std::vector<int64_t> out_lengths;
  for (int64_t b = 0; b < batch; ++b) out_lengths.push_back(OutputLength(cpu[b].item<int64_t>()));
  out.lengths = torch::tensor(out_lengths, torch::kLong);
  return out;
}

std::shared_ptr<ProjectorImpl> MakeProjector(const ProjectorSpec& spec) {
  const auto& type = Projectors().Get(spec.type);
  Check(spec.input_dim > 0 && spec.output_dim > 0 && spec.hidden_dim >= 0, "projector '", spec.type,
        "': input_dim and output_dim must be positive (got ", spec.input_dim, ", ", spec.output_dim,
        ")");
  Check(spec.stack >= 1 && spec.stride >= 1 && spec.kernel_size >= 0 && spec.window >= 1 &&
            spec.num_queries >= 1 && spec.num_layers >= 1 && spec.num_heads >= 1,
        "projector '", spec.type, "': stack, stride, window, num_queries, num_layers and num_heads ",
        "must be >= 1");
  return type.make(spec);
}

std::vector<std::string> ProjectorTypes() { return Projectors().Names(); }

void BindCtcEmbed(ProjectorImpl& projector, const torch::Tensor& ctc_weight, const torch::Tensor& ctc_bias,
                  const torch::Tensor& symbol_embeddings) {
  auto* ctc = dynamic_cast<CtcEmbedProjector*>(&projector);
  Check(ctc != nullptr, "BindCtcEmbed: projector '", projector.Spec().type, "' is not ctc_embed");
  ctc->Bind(ctc_weight, ctc_bias, symbol_embeddings);
}

void BindCtcWords(ProjectorImpl& projector, WordPieces pieces) {
  auto* ctc = dynamic_cast<CtcEmbedProjector*>(&projector);
  Check(ctc != nullptr, "BindCtcWords: projector '", projector.Spec().type, "' is not ctc_embed");
  ctc->BindWords(std::move(pieces));
}

}  // namespace slm::adapters
