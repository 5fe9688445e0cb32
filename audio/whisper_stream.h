// Incremental (streaming) encoding with a block-causal audio::WhisperEncoder: each call encodes
// only the audio that arrived since the last one, and its result equals the offline forward of the
// whole utterance (same model, same mask) up to float rounding.
//
// Needs attention_chunk_frames = C > 0 (audio/whisper_encoder.h). Output frames are released a
// whole chunk at a time, as soon as they are final: the first K chunks (K*C output frames) once
// 2*K*C + 1 feature frames have arrived (the convolutions look one feature frame ahead). At the end
// of the input (finish) the rest, ceil(T/2) - K*C frames, come out, with the zero padding the
// offline forward gives the end of a row. Concatenating every call's output gives exactly the
// offline output's ceil(T/2) frames, in order, whatever the chunking of the incoming features.
//
// Per stream the state holds what the next chunk needs and nothing else: the last two feature
// frames before it (the convolutions' left context) plus the features that do not yet complete a
// chunk, and per layer the already projected keys and values of the earlier frames it attends to.
// With attention_left_chunks = L > 0 that is the last L chunks (L*C frames per layer), so the cost
// of a chunk does not grow with the length of the utterance; with L = 0 (unlimited left context)
// the cache, and the attention cost, grow with it. Positions index `embed_positions`, so a stream
// holds at most 2 * max_source_positions feature frames (as the offline forward): beyond that the
// call is an slm::Error; cut the utterance (finish it) before.
//
// Batching: WhisperEncoderImpl::EncodeStreams advances several streams in one encoder call
// (one convolution, one attention and one FFN batch per layer). Streams may be at different
// positions, hold caches of different lengths and release different numbers of frames; each is
// padded to the largest, so the call costs about (number of streams) x (largest release + largest
// cache): batch streams that release the same amount (e.g. one chunk each, the usual case when
// audio arrives in real time) for no waste.
//
// Thread-safety: a state belongs to one stream and is not thread-safe. Several threads may encode
// different states with one frozen encoder at the same time. A state is a value: copying it forks
// the stream (cached tensors are never modified in place, so the copies do not interfere).
// Computation runs without autograd, in the encoder's dtype on its device.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace slm::audio {

class WhisperEncoderImpl;

class WhisperStreamState {
 public:
  // Not started: use WhisperEncoderImpl::StartStream().
  WhisperStreamState() = default;

  bool IsStarted() const { return model_id_ != 0; }
  // After a call with finish: no more input is accepted.
  bool IsFinished() const { return finished_; }
  // Feature frames received so far.
  int64_t InputFrames() const { return input_frames_; }
  // Output frames released so far (also the position of the next one).
  int64_t OutputFrames() const { return output_frames_; }
  // Feature frames the stream must have received in all before the next chunk is released.
  int64_t InputFramesForNextChunk() const { return 2 * (output_frames_ + chunk_frames_) + 1; }
  // Key/value frames cached per layer: at most attention_left_chunks * attention_chunk_frames
  // with a bounded left context.
  int64_t CachedFrames() const { return keys_.empty() ? 0 : keys_.front().size(0); }

 private:
  friend class WhisperEncoderImpl;
  uint64_t model_id_ = 0;  // the encoder this stream belongs to (0 = not started)
  torch::Device device_ = torch::kCPU;
  torch::ScalarType dtype_ = torch::kFloat;
  int64_t chunk_frames_ = 0;
  int64_t input_frames_ = 0;
  int64_t output_frames_ = 0;
  bool finished_ = false;
  // Feature frames [P, n_mels] from index pending_start_ = max(0, 2 * output_frames_ - 2) on.
  torch::Tensor pending_;
  int64_t pending_start_ = 0;
  // Per layer [K, d_model]: projected keys / values of output frames OutputFrames() - K .. - 1.
  std::vector<torch::Tensor> keys_, values_;
};

// One stream's share of a WhisperEncoderImpl::EncodeStreams call.
struct WhisperStreamStep {
  WhisperStreamState* state = nullptr;
  // New feature frames [T_new, n_mels] (T_new >= 0; undefined = none), the next ones of the
  // stream: log-mel frames as audio::StreamingLogMel gives them with the encoder's own feature
  // options (LoadEncoderFeatureOptions). Any floating dtype, any device (converted).
  torch::Tensor features;
  // The input ends after these frames: release every remaining output frame.
  bool finish = false;
};

}  // namespace slm::audio
