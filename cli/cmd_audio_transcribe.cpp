// slm audio transcribe --encoder DIR FILE...: greedy CTC transcripts of audio files with a speech
// encoder directory that carries a CTC head (`slm audio pretrain-encoder` output, the project's
// own ASR). The listen check of synthesized speech (issue 7) and of vocoder round trips; resampled
// to 16 kHz first. One "file: transcript" line each (--json: {"transcripts": {file: text}}).
#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "cli/command.h"
#include "core/json_report.h"

namespace slm::cli {
namespace {

struct TranscribeCommand {
  std::string encoder;
  std::vector<std::string> files;
};

Registrar reg([](CLI::App& app, Common& common) {
  auto c = std::make_shared<TranscribeCommand>();
  auto* cmd = Group(app, "audio", "audio front-end and speech encoder tools")
                  ->add_subcommand("transcribe", "greedy CTC transcripts with an encoder's CTC head");
  cmd->add_option("--encoder", c->encoder, "speech encoder directory with a CTC head")->required();
  cmd->add_option("files", c->files, "audio files (.wav, .flac, .ogg)")->required();
  cmd->callback([c, &common] {
    const audio::CtcTranscriber asr(c->encoder);
    Report report(common.json);
    nlohmann::json transcripts = nlohmann::json::object();
    for (const std::string& file : c->files) {
      const audio::Waveform wave = audio::Read(file);
      const std::string text = asr.Transcribe(audio::Resample(wave.samples, wave.sample_rate, 16000));
      transcripts[file] = text;
      report.Line(file + ": " + text);
    }
    report.Set("transcripts", transcripts);
    report.Emit();
  });
});

}  // namespace
}  // namespace slm::cli
