// Transcripts from the speech encoder's CTC head, two ways:
//  - Run: whole clips in one padded encoder batch (Transcribe requests, and streams when the
//    encoder has full attention, which must see the whole utterance so far at every interim);
//  - Advance: a block-causal encoder (attention_chunk_frames > 0, audio/whisper_stream.h) encodes
//    only what arrived since the stream's last step, several streams per encoder call. The
//    stream keeps a StreamingLogMel (frames bit-identical to the offline front-end for any
//    chunking), the encoder's stream state (bounded left context of keys/values per layer) and the
//    CTC logits of every frame so far, so each step costs about the same however long the
//    utterance already is, and the final transcript equals the offline encoding of the utterance
//    by the same model.
// Either way: log-mel with the encoder's own feature options, the CTC head, then words with times
// and confidences: greedy (audio::CtcGreedyWords) or, when the model has a word LM
// (ServedModel::SpeechDecoder), the lexicon + LM beam search (audio/ctc_lexicon_decoder.h). A
// stream's search advances with its frames (CtcBeamStream), so a step costs the new frames only;
// interims read the best prefix so far (or greedy, model.speech_lm.interim false), finals complete
// the search.
//
// Thread-safety: one thread at a time per object (the engine's encode thread); the modules it runs
// are frozen and may be used by other threads meanwhile. A StreamTranscription belongs to one
// stream and is used by that one thread.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "audio/ctc.h"
#include "audio/log_mel.h"
#include "audio/whisper_stream.h"
#include "engine/served_model.h"

namespace slm::engine {

struct ClipTranscript {
  torch::Tensor features;  // [T, n_mels] float32 CPU (Run only)
  audio::CtcTranscript transcript;
};

// The incremental state of one utterance (Advance).
struct StreamTranscription {
  std::unique_ptr<audio::StreamingLogMel> mel;
  audio::WhisperStreamState encoder;
  std::vector<torch::Tensor> logits;  // the CTC head's outputs per released frame, [n, V] float32 CPU
  std::unique_ptr<audio::CtcBeamStream> beam;  // with a word LM: the search over those frames
  int64_t samples_fed = 0;
  bool finished = false;
};

struct StreamStep {
  StreamTranscription* stream = nullptr;
  std::vector<float> samples;  // the utterance's samples since the last step
  bool finish = false;         // the utterance ended after them
  audio::CtcTranscript transcript;  // out: the whole utterance so far
};

class Transcriber {
 public:
  explicit Transcriber(ServedModel& model) : model_(model) {}
  // Whether streams are transcribed incrementally (the encoder is block-causal).
  bool Incremental() const;
  // One transcript per clip (mono samples at the model's sample rate; a clip shorter than the
  // front-end's window is zero-padded to it). Throws what the modules throw.
  std::vector<ClipTranscript> Run(const std::vector<const std::vector<float>*>& clips);
  // Advances every step's stream by its samples in one encoder call and fills its transcript.
  // Throws what the modules throw; a stream whose step failed must not be advanced again.
  void Advance(std::vector<StreamStep>& steps);

 private:
  ServedModel& model_;
};

}  // namespace slm::engine
