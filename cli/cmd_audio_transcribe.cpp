// slm audio transcribe --encoder DIR FILE...: greedy CTC transcripts of audio files with a speech
// encoder directory that carries a CTC head (`slm audio pretrain-encoder` output, the project's
// own ASR). The listen check of synthesized speech (issue 7) and of vocoder round trips; resampled
// to 16 kHz first. One "file: transcript" line each (--json: {"transcripts": {file: text}}).
// --stream transcribes as the server hears audio: pieces of --chunk-ms through the streaming
// log-mel and the incremental encoder (audio/whisper_stream.h; a block-causal encoder only), the
// same transcript as the offline path up to float rounding.
// --lm PATH decodes with the lexicon + word-LM beam search (audio/ctc_lexicon_decoder.h) instead of
// greedy CTC (--beam, --lm-weight, --word-bonus as in the serve config's model.speech_lm).
#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "audio/ctc_lexicon_decoder.h"
#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/json_report.h"

namespace slm::cli {
namespace {

struct TranscribeCommand {
  std::string encoder;
  std::vector<std::string> files;
  bool stream = false;
  int chunk_ms = 160;
  std::string lm;
  audio::CtcBeamOptions beam;
};

// The incremental path: the same greedy CTC over the frames the stream releases piece by piece.
class StreamingTranscriber {
 public:
  StreamingTranscriber(const std::string& dir, int chunk_ms)
      : encoder_(audio::LoadWhisperEncoder(dir)),
        options_(audio::LoadEncoderFeatureOptions(dir)),
        piece_(static_cast<size_t>(options_.sample_rate) * chunk_ms / 1000) {
    encoder_->Freeze();
    head_ = audio::LoadCtcHead(dir, encoder_->Config().d_model, "--encoder");
    Check(piece_ > 0, "--chunk-ms must be positive, got ", chunk_ms);
  }
  torch::Tensor Logits(const std::vector<float>& samples) {
    torch::NoGradGuard no_grad;
    audio::StreamingLogMel mel(options_);
    audio::WhisperStreamState state = encoder_->StartStream();
    std::vector<torch::Tensor> frames;
    for (size_t at = 0; at < samples.size(); at += piece_) {
      mel.AcceptWaveform(options_.sample_rate, samples.data() + at,
                         std::min(piece_, samples.size() - at));
      frames.push_back(encoder_->EncodeChunks(state, mel.PopFrames()));
    }
    mel.InputFinished();
    frames.push_back(encoder_->EncodeChunks(state, mel.PopFrames()));
    frames.push_back(encoder_->Finish(state));
    return head_(torch::cat(frames).unsqueeze(0))[0].to(torch::kFloat);
  }

 private:
  audio::WhisperEncoder encoder_;
  audio::LogMelOptions options_;
  size_t piece_;
  audio::CtcHead head_{nullptr};
};

Registrar reg([](CLI::App& app, Common& common) {
  auto c = std::make_shared<TranscribeCommand>();
  auto* cmd = Group(app, "audio", "audio front-end and speech encoder tools")
                  ->add_subcommand("transcribe", "greedy CTC transcripts with an encoder's CTC head");
  cmd->add_option("--encoder", c->encoder, "speech encoder directory with a CTC head")->required();
  cmd->add_option("files", c->files, "audio files (.wav, .flac, .ogg)")->required();
  cmd->add_flag("--stream", c->stream,
                "incremental: audio in --chunk-ms pieces through the streaming encoder");
  cmd->add_option("--chunk-ms", c->chunk_ms, "audio per piece with --stream")
      ->capture_default_str();
  cmd->add_option("--lm", c->lm, "word LM (ARPA file or directory): lexicon + LM beam search instead of greedy");
  cmd->add_option("--beam", c->beam.beam, "beam width with --lm")->capture_default_str();
  cmd->add_option("--lm-weight", c->beam.lm_weight, "LM weight (alpha) with --lm")->capture_default_str();
  cmd->add_option("--word-bonus", c->beam.word_bonus, "per-word bonus (beta) with --lm")->capture_default_str();
  cmd->callback([c, &common] {
    std::unique_ptr<audio::CtcLexiconDecoder> decoder;
    if (!c->lm.empty()) {
      try {
        decoder = std::make_unique<audio::CtcLexiconDecoder>(
            std::make_shared<const audio::WordLm>(audio::WordLm::Load(c->lm)), c->beam);
      } catch (const Error& e) {
        throw Error(Str("--lm: ", e.what()));
      }
    }
    std::unique_ptr<audio::CtcTranscriber> offline;
    std::unique_ptr<StreamingTranscriber> streaming;
    if (c->stream) streaming = std::make_unique<StreamingTranscriber>(c->encoder, c->chunk_ms);
    else offline = std::make_unique<audio::CtcTranscriber>(c->encoder);
    Report report(common.json);
    nlohmann::json transcripts = nlohmann::json::object();
    for (const std::string& file : c->files) {
      const audio::Waveform wave = audio::Read(file);
      const std::vector<float> samples = audio::Resample(wave.samples, wave.sample_rate, 16000);
      const torch::Tensor logits = c->stream ? streaming->Logits(samples) : offline->Logits(samples);
      const std::string text = decoder ? decoder->Decode(logits).text : audio::CtcGreedyWords(logits).text;
      transcripts[file] = text;
      report.Line(file + ": " + text);
    }
    report.Set("transcripts", transcripts);
    report.Emit();
  });
});

}  // namespace
}  // namespace slm::cli
