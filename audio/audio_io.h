// Audio file input/output (libsndfile) and resampling (soxr).
//
// Contract: samples are float32 in [-1, 1] (files with larger float values are passed through,
// never clipped, up to a magnitude of kMaxAbsSample), mono after Read (channels are averaged), at
// the file's rate or, with ReadOptions::target_rate, resampled to it. Supported: everything
// libsndfile reads (wav, flac, ogg/vorbis, aiff, ...), 1..kMaxChannels channels,
// kMinSampleRate..kMaxSampleRate Hz. Long files are decoded in blocks of ReadOptions::block_frames,
// so memory beyond the output is bounded by one block (times the channel count); nothing is
// allocated on the strength of a header's frame count beyond a bounded reservation.
//
// Errors (slm::Error, message names the file): missing/unreadable file, not an audio format, zero
// samples, NaN/Inf samples or samples beyond kMaxAbsSample (with the sample index), sample rate or
// channel count outside the supported range, duration over max_seconds.
// Thread-safety: all functions are reentrant; each call owns its libsndfile/soxr handles.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace slm::audio {

constexpr int kSampleRate = 16000;  // what every speech component consumes
constexpr int kMaxChannels = 64;
constexpr int kMinSampleRate = 1000;
constexpr int kMaxSampleRate = 384000;
// Float files may exceed [-1, 1], but values near float's limit overflow to infinity when channels
// are averaged or the filter resamples them; nothing real is this loud.
constexpr float kMaxAbsSample = 1e6f;

struct Waveform {
  std::vector<float> samples;  // mono
  int sample_rate = 0;         // Hz
  double Seconds() const { return sample_rate ? double(samples.size()) / sample_rate : 0.0; }
};

struct ReadOptions {
  int target_rate = kSampleRate;   // 0 keeps the file's rate
  int64_t block_frames = 1 << 16;  // frames decoded per block
  double max_seconds = 0;          // 0 = no limit
};

struct FileInfo {
  int sample_rate = 0;
  int channels = 0;
  // As the header says; INT64_MAX when it does not (libsndfile's SF_COUNT_MAX, e.g. a FLAC stream
  // with total_samples 0). Read checks max_seconds against it, or while decoding when unknown.
  int64_t frames = 0;
  std::string format;  // e.g. "WAV", "FLAC", "OGG"
};

// Header information only (validated like Read, without decoding).
FileInfo Probe(const std::string& path);
Waveform Read(const std::string& path, const ReadOptions& options = {});

// The same for an encoded audio file held in memory (a request's bytes), read in place through
// libsndfile's virtual I/O: no temporary file. `where` replaces "audio file '<path>'" in error
// messages (e.g. "request audio"). The bytes must stay alive and unchanged during the call.
FileInfo ProbeMemory(const std::string& bytes, const std::string& where);
Waveform ReadMemory(const std::string& bytes, const std::string& where, const ReadOptions& options = {});

enum class SampleFormat { kPcm16, kFloat32 };
// Writes mono audio; the container comes from the extension (.wav, .flac, .ogg). FLAC and OGG
// always store 16-bit/vorbis. Written atomically: a failure leaves an existing file untouched.
void Write(const std::string& path, const std::vector<float>& samples, int sample_rate,
           SampleFormat format = SampleFormat::kPcm16);

// Throws slm::Error naming `what` and the first bad index if any sample is NaN or Inf.
void CheckFinite(const float* samples, size_t count, const std::string& what);

// High-quality (soxr HQ) resampling of a whole signal. Same rate returns a copy.
std::vector<float> Resample(const std::vector<float>& samples, int from_rate, int to_rate);

// Streaming resampler for chunked input (the gRPC server, the synthesizer): Process() accepts any
// chunk size and returns the output available so far; Flush() drains the filter tail. The
// concatenated output equals a whole-signal Resample of the concatenated input up to soxr's
// streaming latency handling (identical length after Flush). Flush also ends the segment: the next
// Process starts a new signal (a stream's next utterance). Not thread-safe; one per stream.
class StreamResampler {
 public:
  StreamResampler(int from_rate, int to_rate);
  ~StreamResampler();
  StreamResampler(const StreamResampler&) = delete;
  StreamResampler& operator=(const StreamResampler&) = delete;
  std::vector<float> Process(const float* samples, size_t count);
  std::vector<float> Flush();

 private:
  int from_rate_, to_rate_;
  void* soxr_ = nullptr;  // soxr_t; nullptr when rates are equal (pass-through)
};

}  // namespace slm::audio
