#include "engine/transcriber.h"

#include <algorithm>

namespace slm::engine {

std::vector<ClipTranscript> Transcriber::Run(const std::vector<const std::vector<float>*>& clips) {
  torch::NoGradGuard no_grad;
  const audio::LogMel& mel = model_.Mel();
  const size_t min_samples = static_cast<size_t>(mel.Options().MinSamples());
  std::vector<ClipTranscript> out(clips.size());
  int64_t longest = 0;
  for (size_t i = 0; i < clips.size(); ++i) {
    if (clips[i]->size() < min_samples) {
      std::vector<float> padded = *clips[i];
      padded.resize(min_samples, 0.f);
      out[i].features = mel.Compute(padded);
    } else {
      out[i].features = mel.Compute(*clips[i]);  // [T, n_mels]
    }
    longest = std::max<int64_t>(longest, out[i].features.size(0));
  }
  const int64_t batch = static_cast<int64_t>(clips.size());
  const int64_t mels = out[0].features.size(1);
  torch::Tensor features = torch::zeros({batch, longest, mels});
  torch::Tensor lengths = torch::empty({batch}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t t = out[b].features.size(0);
    features[b].narrow(0, 0, t).copy_(out[b].features);
    lengths[b] = t;
  }
  audio::WhisperEncoderInput input;
  input.features = features;
  input.lengths = lengths;
  const audio::WhisperEncoderOutput encoded = model_.SpeechEncoder()->forward(input);
  const torch::Tensor logits = model_.Ctc()->forward(encoded.last_hidden_state).to(torch::kCPU, torch::kFloat);
  const torch::Tensor out_lengths = encoded.lengths.to(torch::kCPU);
  const audio::CtcLexiconDecoder* decoder = model_.SpeechDecoder();
  for (int64_t b = 0; b < batch; ++b) {
    const torch::Tensor own = logits[b].narrow(0, 0, out_lengths[b].item<int64_t>());
    out[b].transcript = decoder ? decoder->Decode(own) : audio::CtcGreedyWords(own);
  }
  return out;
}

bool Transcriber::Incremental() const {
  return model_.HasSpeech() && model_.SpeechEncoder()->Config().attention_chunk_frames > 0;
}

void Transcriber::Advance(std::vector<StreamStep>& steps) {
  torch::NoGradGuard no_grad;
  const audio::LogMel& mel = model_.Mel();
  const int rate = mel.Options().sample_rate;
  const size_t min_samples = static_cast<size_t>(mel.Options().MinSamples());
  std::vector<audio::WhisperStreamStep> encoder_steps;
  for (StreamStep& step : steps) {
    StreamTranscription& s = *step.stream;
    if (!s.mel) {
      s.mel = std::make_unique<audio::StreamingLogMel>(mel.Options());
      s.encoder = model_.SpeechEncoder()->StartStream();
    }
    s.mel->AcceptWaveform(rate, step.samples);
    s.samples_fed += static_cast<int64_t>(step.samples.size());
    if (step.finish) {
      // As the offline path: an utterance shorter than the front-end's window is zero-padded.
      if (static_cast<size_t>(s.samples_fed) < min_samples) {
        const std::vector<float> zeros(min_samples - s.samples_fed, 0.f);
        s.mel->AcceptWaveform(rate, zeros);
      }
      s.mel->InputFinished();
      s.finished = true;
    }
    audio::WhisperStreamStep e;
    e.state = &s.encoder;
    if (s.mel->NumFramesReady() > 0) e.features = s.mel->PopFrames();
    e.finish = step.finish;
    encoder_steps.push_back(e);
  }
  const std::vector<torch::Tensor> frames = model_.SpeechEncoder()->EncodeStreams(encoder_steps);
  const audio::CtcLexiconDecoder* decoder = model_.SpeechDecoder();
  for (size_t i = 0; i < steps.size(); ++i) {
    StreamTranscription& s = *steps[i].stream;
    if (decoder && !s.beam) s.beam = decoder->Start();
    if (frames[i].defined() && frames[i].size(0) > 0) {
      s.logits.push_back(model_.Ctc()->forward(frames[i].unsqueeze(0))[0].to(torch::kCPU, torch::kFloat));
      if (s.beam) s.beam->Advance(s.logits.back());
    }
    if (s.logits.empty()) steps[i].transcript = audio::CtcTranscript{};
    else if (s.beam && steps[i].finish) steps[i].transcript = s.beam->Finish();
    else if (s.beam && model_.BeamInterims()) steps[i].transcript = s.beam->Interim();
    else steps[i].transcript = audio::CtcGreedyWords(torch::cat(s.logits, 0));
  }
}

}  // namespace slm::engine
