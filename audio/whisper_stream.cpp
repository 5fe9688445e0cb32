// WhisperEncoderImpl's incremental encoding (contract in audio/whisper_stream.h).
//
// Output frame i is conv2 over conv1 frames 2i-1, 2i, 2i+1, and conv1 frame t over feature frames
// t-1, t, t+1. So output frames i0 .. i0+n-1 need exactly feature frames 2*i0-2 .. 2*i0+2n
// (2n+3 frames): conv1 without padding over them gives conv1 frames 2*i0-1 .. 2*i0+2n-1, and conv2
// without padding over those gives the n outputs. The offline forward's zero padding is where the
// window leaves the utterance: feature frames before 0 or from the end on are zero, and so are
// conv1 frames there (the offline forward pads conv1's output with zeros, it does not convolve
// zero features), which is why they are zeroed after conv1 rather than computed.
#include "audio/whisper_stream.h"

#include <algorithm>
#include <set>
#include <string>

#include "audio/whisper_encoder.h"
#include "audio/whisper_encoder_parts.h"
#include "core/error.h"

namespace slm::audio {

WhisperStreamState WhisperEncoderImpl::StartStream() const {
  Check(config_.attention_chunk_frames > 0,
        "WhisperEncoder::StartStream: incremental encoding needs a block-causal encoder "
        "(\"attention_chunk_frames\" > 0 in its config.json); this one attends over the whole "
        "utterance, so every output frame changes with new audio");
  const torch::Tensor& weight = parts_->encoder->conv1->weight;
  WhisperStreamState state;
  state.model_id_ = id_;
  state.device_ = weight.device();
  state.dtype_ = weight.scalar_type();
  state.chunk_frames_ = config_.attention_chunk_frames;
  state.pending_ = torch::empty({0, config_.num_mel_bins}, weight.options());
  const torch::Tensor empty = torch::empty({0, config_.d_model}, weight.options());
  state.keys_.assign(config_.encoder_layers, empty);
  state.values_.assign(config_.encoder_layers, empty);
  return state;
}

torch::Tensor WhisperEncoderImpl::EncodeChunks(WhisperStreamState& state,
                                               const torch::Tensor& features) {
  WhisperStreamStep step;
  step.state = &state;
  step.features = features;
  return EncodeStreams({step}).front();
}

torch::Tensor WhisperEncoderImpl::Finish(WhisperStreamState& state) {
  WhisperStreamStep step;
  step.state = &state;
  step.finish = true;
  return EncodeStreams({step}).front();
}

std::vector<torch::Tensor> WhisperEncoderImpl::EncodeStreams(
    const std::vector<WhisperStreamStep>& steps) {
  torch::NoGradGuard no_grad;  // caches must not hold autograd graphs
  detail::Encoder& enc = parts_->encoder;
  const torch::Tensor& weight = enc->conv1->weight;
  const torch::Device device = weight.device();
  const torch::ScalarType dtype = weight.scalar_type();
  const int64_t chunk = config_.attention_chunk_frames;
  const int64_t left = config_.attention_left_chunks;
  const int64_t d_model = config_.d_model;
  const int64_t mels = config_.num_mel_bins;
  Check(chunk > 0,
        "WhisperEncoder::EncodeStreams: incremental encoding needs a block-causal "
        "encoder (\"attention_chunk_frames\" > 0)");

  // 1. Every step is checked before any state changes.
  struct Work {
    WhisperStreamState* state;
    torch::Tensor features;  // new frames in the model's dtype on its device, or undefined
    int64_t start = 0;       // first output frame to release
    int64_t count = 0;       // output frames to release
  };
  std::vector<Work> work;
  std::set<const WhisperStreamState*> seen;
  for (size_t i = 0; i < steps.size(); ++i) {
    const WhisperStreamStep& step = steps[i];
    const std::string where =
        steps.size() == 1 ? std::string("WhisperEncoder stream")
                          : Str("WhisperEncoder stream (step ", i, " of ", steps.size(), ")");
    Check(step.state != nullptr, where, ": no state given");
    const WhisperStreamState& s = *step.state;
    Check(s.model_id_ != 0, where, ": the state was not started (use the encoder's StartStream())");
    Check(s.model_id_ == id_, where,
          ": the state was started by another encoder (a stream belongs to the encoder whose "
          "StartStream() made it)");
    Check(s.device_ == device && s.dtype_ == dtype, where, ": the encoder moved from ", s.device_,
          " ", s.dtype_, " to ", device, " ", dtype, " since the stream started");
    Check(!s.finished_, where, ": the stream is finished (its input ended); start a new one");
    Check(seen.insert(&s).second, where, ": the same stream appears twice in one call");
    int64_t added = 0;
    if (step.features.defined()) {
      Check(step.features.dim() == 2 && step.features.size(1) == mels, where,
            ": features must be [T, n_mels=", mels, "], got ", step.features.sizes());
      Check(torch::isFloatingType(step.features.scalar_type()), where,
            ": features must be floating point, got ", step.features.scalar_type());
      added = step.features.size(0);
    }
    const int64_t total = s.input_frames_ + added;
    Check(total <= config_.MaxInputFrames(), where, ": ", total,
          " feature frames exceed the maximum of ", config_.MaxInputFrames(),
          " (2 * max_source_positions = ", config_.max_source_positions,
          " positions); finish the stream before");
    // Releasable outputs: everything at the end, else whole chunks whose look-ahead arrived.
    const int64_t ready = step.finish ? (total + 1) / 2
                          : total > 0 ? (total - 1) / (2 * chunk) * chunk
                                      : 0;
    Work w;
    w.state = step.state;
    if (added > 0) w.features = step.features.to(device, dtype);
    w.start = s.output_frames_;
    w.count = std::max<int64_t>(0, ready - s.output_frames_);
    work.push_back(w);
  }

  // 2. Take the new frames in.
  for (size_t i = 0; i < work.size(); ++i) {
    WhisperStreamState& s = *work[i].state;
    if (work[i].features.defined()) {
      s.pending_ = torch::cat({s.pending_, work[i].features}, 0);
      s.input_frames_ += work[i].features.size(0);
    }
    if (steps[i].finish) s.finished_ = true;
  }

  std::vector<torch::Tensor> results(work.size());
  std::vector<size_t> active;  // steps that release frames
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].count > 0)
      active.push_back(i);
    else
      results[i] = torch::empty({0, d_model}, weight.options());
  }
  const int64_t batch = static_cast<int64_t>(active.size());
  if (batch > 0) {
    int64_t released = 0, cached = 0;  // the largest release and cache: the padded sizes
    for (size_t i : active) {
      released = std::max(released, work[i].count);
      cached = std::max(cached, work[i].state->CachedFrames());
    }

    // 3. Convolutions over each stream's window (feature frames 2*start-2 .. 2*start+2*count).
    const int64_t window = 2 * released + 3;
    torch::Tensor x = torch::zeros({batch, window, mels}, weight.options());
    std::vector<float> keep(batch * (window - 2), 0.0f);  // conv1 frames inside the utterance
    std::vector<int64_t> positions(batch * released, 0);  // embed_positions rows
    for (int64_t b = 0; b < batch; ++b) {
      const Work& w = work[active[b]];
      const WhisperStreamState& s = *w.state;
      const int64_t first = 2 * w.start - 2;  // feature index of window row 0
      const int64_t from = std::max<int64_t>(first, 0);
      const int64_t to = std::min(s.input_frames_, first + 2 * w.count + 3);
      if (to > from)
        x[b].narrow(0, from - first, to - from)
            .copy_(s.pending_.narrow(0, from - s.pending_start_, to - from));
      for (int64_t c = 0; c < 2 * w.count + 1; ++c) {
        const int64_t t = first + 1 + c;  // conv1 frame index of column c
        keep[b * (window - 2) + c] = t >= 0 && t < s.input_frames_ ? 1.0f : 0.0f;
      }
      for (int64_t k = 0; k < released; ++k)
        positions[b * released + k] =
            std::min(w.start + std::min(k, w.count - 1), config_.max_source_positions - 1);
    }
    torch::Tensor y = torch::conv1d(x.transpose(1, 2), enc->conv1->weight, enc->conv1->bias);
    y = detail::Gelu(y, true).mul_(
        torch::from_blob(keep.data(), {batch, 1, window - 2}, torch::kFloat).to(device, dtype));
    y = detail::Gelu(torch::conv1d(y, enc->conv2->weight, enc->conv2->bias, 2), true);
    const torch::Tensor rows = torch::tensor(positions, torch::kLong).to(device);
    torch::Tensor hidden =
        y.transpose(1, 2) + enc->embed_positions.index_select(0, rows).view({batch, released, -1});

    // 4. Attention mask over [cached keys (left-aligned, padded) | new keys] for the new queries.
    std::vector<int64_t> query_pos(batch * released), key_pos(batch * (cached + released));
    std::vector<uint8_t> key_real(batch * (cached + released), 0);
    for (int64_t b = 0; b < batch; ++b) {
      const Work& w = work[active[b]];
      const int64_t held = w.state->CachedFrames();
      for (int64_t k = 0; k < released; ++k) query_pos[b * released + k] = w.start + k;
      for (int64_t m = 0; m < cached; ++m) {
        key_pos[b * (cached + released) + m] = w.start - held + m;
        key_real[b * (cached + released) + m] = m < held;
      }
      for (int64_t k = 0; k < released; ++k) {
        key_pos[b * (cached + released) + cached + k] = w.start + k;
        key_real[b * (cached + released) + cached + k] = k < w.count;
      }
    }
    const torch::Tensor q_pos = torch::tensor(query_pos).view({batch, released, 1});
    const torch::Tensor k_pos = torch::tensor(key_pos).view({batch, 1, cached + released});
    const torch::Tensor k_real =
        torch::tensor(key_real, torch::kUInt8).to(torch::kBool).view({batch, 1, cached + released});
    torch::Tensor mask = detail::BlockCausalMask(q_pos, k_pos, chunk, left).logical_and(k_real);
    // Every query sees its own frame, padded ones included (no fully masked row, no NaN).
    mask.narrow(2, cached, released).logical_or_(torch::eye(released, torch::kBool).unsqueeze(0));
    mask = mask.all().item<bool>() ? torch::Tensor() : mask.unsqueeze(1).to(device);

    // 5. The layers, each with its cached keys/values; the caches take the new frames' keys.
    for (size_t layer = 0; layer < enc->typed_layers.size(); ++layer) {
      torch::Tensor past_keys, past_values;
      bool same_length = true;  // no padding needed: stack the caches as they are
      for (int64_t b = 0; b < batch; ++b)
        same_length = same_length && work[active[b]].state->keys_[layer].size(0) == cached;
      if (cached > 0 && same_length) {
        std::vector<torch::Tensor> held_keys, held_values;
        for (int64_t b = 0; b < batch; ++b) {
          held_keys.push_back(work[active[b]].state->keys_[layer]);
          held_values.push_back(work[active[b]].state->values_[layer]);
        }
        past_keys = batch == 1 ? held_keys[0].unsqueeze(0) : torch::stack(held_keys);
        past_values = batch == 1 ? held_values[0].unsqueeze(0) : torch::stack(held_values);
      } else if (cached > 0) {
        past_keys = torch::zeros({batch, cached, d_model}, weight.options());
        past_values = torch::zeros({batch, cached, d_model}, weight.options());
        for (int64_t b = 0; b < batch; ++b) {
          const WhisperStreamState& s = *work[active[b]].state;
          const int64_t held = s.keys_[layer].size(0);
          if (held == 0) continue;
          past_keys[b].narrow(0, 0, held).copy_(s.keys_[layer]);
          past_values[b].narrow(0, 0, held).copy_(s.values_[layer]);
        }
      }
      torch::Tensor keys, values;
      hidden =
          enc->typed_layers[layer]->Forward(hidden, past_keys, past_values, mask, &keys, &values);
      for (int64_t b = 0; b < batch; ++b) {
        const Work& w = work[active[b]];
        WhisperStreamState& s = *w.state;
        if (s.finished_) continue;
        // Fresh tensors (cat), never written in place: copies of a state stay independent.
        torch::Tensor k = torch::cat({s.keys_[layer], keys[b].narrow(0, 0, w.count)}, 0);
        torch::Tensor v = torch::cat({s.values_[layer], values[b].narrow(0, 0, w.count)}, 0);
        // The next chunk sees the last `left` chunks: older keys are never needed again.
        if (left > 0 && k.size(0) > left * chunk) {
          k = k.narrow(0, k.size(0) - left * chunk, left * chunk);
          v = v.narrow(0, v.size(0) - left * chunk, left * chunk);
        }
        s.keys_[layer] = k;
        s.values_[layer] = v;
      }
    }
    const torch::Tensor out = enc->layer_norm(hidden);
    for (int64_t b = 0; b < batch; ++b)
      results[active[b]] = out[b].narrow(0, 0, work[active[b]].count);
  }

  // 6. Advance the states: keep the two feature frames before the next output's window.
  for (const Work& w : work) {
    WhisperStreamState& s = *w.state;
    s.output_frames_ = w.start + w.count;
    if (s.finished_) {  // nothing more to encode: free the memory
      s.pending_ = torch::empty({0, mels}, weight.options());
      const torch::Tensor empty = torch::empty({0, d_model}, weight.options());
      s.keys_.assign(s.keys_.size(), empty);
      s.values_.assign(s.values_.size(), empty);
      continue;
    }
    const int64_t keep_from = std::max<int64_t>(0, 2 * s.output_frames_ - 2);
    if (keep_from > s.pending_start_) {
      s.pending_ = s.pending_.narrow(0, keep_from - s.pending_start_, s.input_frames_ - keep_from);
      s.pending_start_ = keep_from;
    }
  }
  return results;
}

}  // namespace slm::audio
