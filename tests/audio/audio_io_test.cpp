#include "audio/audio_io.h"

#include <gtest/gtest.h>
#include <sndfile.h>

#include <cmath>
#include <fstream>
#include <random>

#include "audio/synthetic_signal.h"
#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

// Writes interleaved frames with libsndfile directly (bypassing our checks) to build test files.
void WriteRawSndfile(const std::string& path, int format, int rate, int channels,
                     const std::vector<float>& interleaved) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  sf_writef_float(f, interleaved.data(), static_cast<sf_count_t>(interleaved.size() / channels));
  sf_close(f);
}

// A minimal PCM WAV header with arbitrary (possibly absurd) fields followed by `frames` zeros.
void WriteWavHeader(const std::string& path, uint32_t rate, uint16_t channels, uint32_t frames) {
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  const uint32_t data_bytes = frames * channels * 2;
  out << "RIFF";
  u32(36 + data_bytes);
  out << "WAVEfmt ";
  u32(16);
  u16(1);
  u16(channels);
  u32(rate);
  u32(rate * channels * 2);
  u16(static_cast<uint16_t>(channels * 2));
  u16(16);
  out << "data";
  u32(data_bytes);
  out << std::string(data_bytes, '\0');
}

int ZeroCrossings(const std::vector<float>& x) {
  int count = 0;
  for (size_t i = 1; i < x.size(); ++i) count += (x[i - 1] < 0) != (x[i] < 0);
  return count;
}

TEST(AudioIo, Pcm16WavRoundTripWithinQuantisation) {
  testing::TempDir dir;
  const auto x = SpeechLikeSignal(1.0);
  Write(dir.File("a.wav"), x, 16000);
  const Waveform w = Read(dir.File("a.wav"));
  ASSERT_EQ(w.samples.size(), x.size());
  EXPECT_EQ(w.sample_rate, 16000);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(w.samples[i], x[i], 1.0 / 32768 + 1e-6);
  const FileInfo info = Probe(dir.File("a.wav"));
  EXPECT_EQ(info.format, "WAV");
  EXPECT_EQ(info.frames, 16000);
}

TEST(AudioIo, FloatWavIsExactAndFlacAndOggDecode) {
  testing::TempDir dir;
  const auto x = SineSignal(440, 0.5);
  Write(dir.File("f.wav"), x, 16000, SampleFormat::kFloat32);
  EXPECT_EQ(Read(dir.File("f.wav")).samples, x);
  Write(dir.File("f.flac"), x, 16000);
  const auto flac = Read(dir.File("f.flac"));
  ASSERT_EQ(flac.samples.size(), x.size());
  EXPECT_NEAR(flac.samples[100], x[100], 1e-4);
  Write(dir.File("f.ogg"), x, 16000);
  const auto ogg = Read(dir.File("f.ogg"));
  EXPECT_NEAR(double(ogg.samples.size()), double(x.size()), 0.01 * x.size());
  EXPECT_NEAR(ZeroCrossings(ogg.samples), ZeroCrossings(x), 10);  // still a 440 Hz tone
}

TEST(AudioIo, MultichannelIsAveragedAndResampledTo16k) {
  testing::TempDir dir;
  const int rate = 48000, channels = 8;
  const auto tone = SineSignal(440, 1.0, rate);
  std::vector<float> interleaved(tone.size() * channels);
  for (size_t i = 0; i < tone.size(); ++i)
    for (int c = 0; c < channels; ++c) interleaved[i * channels + c] = c % 2 ? tone[i] : 0.0f;
  WriteRawSndfile(dir.File("m.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, rate, channels, interleaved);
  const Waveform w = Read(dir.File("m.wav"));
  EXPECT_EQ(w.sample_rate, 16000);
  EXPECT_NEAR(double(w.samples.size()), 16000.0, 2.0);
  EXPECT_NEAR(ZeroCrossings(w.samples), 880, 3);
  float peak = 0;
  for (float v : w.samples) peak = std::max(peak, std::abs(v));
  EXPECT_NEAR(peak, 0.25f, 0.01f);  // half the channels carry the 0.5 tone
  ReadOptions keep;
  keep.target_rate = 0;
  EXPECT_EQ(Read(dir.File("m.wav"), keep).samples.size(), tone.size());
}

TEST(AudioIo, BlockSizeDoesNotChangeTheResult) {
  testing::TempDir dir;
  const auto x = SpeechLikeSignal(2.0, 22050);
  Write(dir.File("s.wav"), x, 22050, SampleFormat::kFloat32);
  ReadOptions big, small;
  small.block_frames = 777;
  EXPECT_EQ(Read(dir.File("s.wav"), big).samples, Read(dir.File("s.wav"), small).samples);
}

TEST(AudioIo, StreamResamplerMatchesWholeSignal) {
  const auto x = SpeechLikeSignal(1.5, 22050);
  const auto whole = Resample(x, 22050, 16000);
  StreamResampler stream(22050, 16000);
  std::vector<float> chunked;
  std::mt19937 rng(3);
  for (size_t i = 0; i < x.size();) {
    const size_t n = std::min<size_t>(x.size() - i, 1 + rng() % 3000);
    auto out = stream.Process(x.data() + i, n);
    chunked.insert(chunked.end(), out.begin(), out.end());
    i += n;
  }
  auto tail = stream.Flush();
  chunked.insert(chunked.end(), tail.begin(), tail.end());
  ASSERT_EQ(chunked.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) ASSERT_NEAR(chunked[i], whole[i], 1e-5) << i;
  EXPECT_NEAR(double(whole.size()), 1.5 * 16000, 2.0);
}

// A stream's next utterance after a Flush (EndOfUtterance) resamples as a fresh signal. Feeding
// soxr after its end of input used to copy from a null buffer (the converse fuzzer's finding).
TEST(AudioIo, StreamResamplerStartsAfreshAfterFlush) {
  const auto x = SpeechLikeSignal(0.5, 48000);
  const auto whole = Resample(x, 48000, 16000);
  StreamResampler stream(48000, 16000);
  for (int segment = 0; segment < 3; ++segment) {
    std::vector<float> out = stream.Process(x.data(), x.size());
    const std::vector<float> tail = stream.Flush();
    out.insert(out.end(), tail.begin(), tail.end());
    ASSERT_EQ(out.size(), whole.size()) << "segment " << segment;
    for (size_t i = 0; i < whole.size(); ++i) ASSERT_NEAR(out[i], whole[i], 1e-5) << "segment " << segment << " at " << i;
  }
  EXPECT_TRUE(stream.Process(nullptr, 0).empty());
  EXPECT_TRUE(stream.Flush().empty());
}

TEST(AudioIo, BadFilesGiveClearErrors) {
  testing::TempDir dir;
  EXPECT_SLM_ERROR(Read(dir.File("missing.wav")), "missing.wav': No such file");
  std::ofstream(dir.File("text.wav")) << "this is not audio at all, just some text";
  EXPECT_SLM_ERROR(Read(dir.File("text.wav")), "text.wav': cannot decode");
  std::ofstream(dir.File("empty.wav"));
  EXPECT_SLM_ERROR(Read(dir.File("empty.wav")), "empty file");
  WriteWavHeader(dir.File("zero.wav"), 16000, 1, 0);
  EXPECT_SLM_ERROR(Read(dir.File("zero.wav")), "zero.wav");
  WriteWavHeader(dir.File("fast.wav"), 1000000000u, 1, 100);
  EXPECT_SLM_ERROR(Read(dir.File("fast.wav")), "fast.wav");
  WriteWavHeader(dir.File("slow.wav"), 10, 1, 100);
  EXPECT_SLM_ERROR(Read(dir.File("slow.wav")), "sample rate 10 Hz is outside the supported range");
  WriteWavHeader(dir.File("wide.wav"), 16000, 200, 10);
  EXPECT_SLM_ERROR(Read(dir.File("wide.wav")), "wide.wav");
  std::vector<float> bad = SineSignal(440, 0.1);
  bad[123] = std::nanf("");
  WriteRawSndfile(dir.File("nan.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, bad);
  EXPECT_SLM_ERROR(Read(dir.File("nan.wav")), "sample 123 (channel 0) is NaN");
  bad[123] = INFINITY;
  WriteRawSndfile(dir.File("inf.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, bad);
  EXPECT_SLM_ERROR(Read(dir.File("inf.wav")), "is infinite");
  // Fuzz finding (fuzz/regressions/audio/): finite but huge float samples overflowed to Inf in
  // the resampler (and in the channel average).
  bad[123] = 3e38f;
  WriteRawSndfile(dir.File("loud.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 22050, 1, bad);
  EXPECT_SLM_ERROR(Read(dir.File("loud.wav")), "sample 123 (channel 0) is 3e+38, beyond the supported magnitude");
  EXPECT_SLM_ERROR(ReadMemory(fs::ReadFile(dir.File("loud.wav")), "request audio"),
                   "request audio: sample 123");
  bad[123] = 0.5f * kMaxAbsSample;  // loud, but still passed through
  WriteRawSndfile(dir.File("loud.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, bad);
  EXPECT_EQ(Read(dir.File("loud.wav")).samples[123], 0.5f * kMaxAbsSample);
  ReadOptions limit;
  limit.max_seconds = 0.05;
  EXPECT_SLM_ERROR(Read(dir.File("inf.wav"), limit), "longer than the limit");
  std::filesystem::create_directory(dir.File("adir.wav"));
  EXPECT_SLM_ERROR(Read(dir.File("adir.wav")), "not a regular file");
}

// The in-memory entry points decode exactly what the file ones decode, in every container, and
// name the caller's `where` instead of a path.
TEST(AudioIo, MemoryDecodingMatchesFiles) {
  testing::TempDir dir;
  const auto x = SpeechLikeSignal(0.7, 22050);
  for (const char* name : {"m.wav", "m.flac", "m.ogg"}) {
    Write(dir.File(name), x, 22050);
    const std::string bytes = fs::ReadFile(dir.File(name));
    const FileInfo file_info = Probe(dir.File(name));
    const FileInfo memory_info = ProbeMemory(bytes, "request audio");
    EXPECT_EQ(memory_info.format, file_info.format) << name;
    EXPECT_EQ(memory_info.frames, file_info.frames) << name;
    EXPECT_EQ(memory_info.sample_rate, 22050) << name;
    ReadOptions small;
    small.block_frames = 1000;  // several blocks, so reads continue from the virtual position
    EXPECT_EQ(ReadMemory(bytes, "request audio", small).samples, Read(dir.File(name)).samples) << name;
  }
  EXPECT_SLM_ERROR(ReadMemory("", "request audio"), "request audio: empty");
  EXPECT_SLM_ERROR(ProbeMemory("not audio at all, only some text", "request audio"),
                   "request audio: cannot decode");
  WriteWavHeader(dir.File("slow.wav"), 10, 1, 100);
  EXPECT_SLM_ERROR(ReadMemory(fs::ReadFile(dir.File("slow.wav")), "clip 3"),
                   "clip 3: sample rate 10 Hz is outside the supported range");
  std::string truncated = fs::ReadFile(dir.File("m.flac"));
  truncated.resize(truncated.size() / 2);
  const std::string message = testing::ErrorOf([&] { ReadMemory(truncated, "half.flac"); });
  if (!message.empty()) EXPECT_NE(message.find("half.flac"), std::string::npos) << message;
}

// Found by review, confirmed with the audio fuzz target (fuzz/regressions/audio/): a FLAC whose
// STREAMINFO gives total_samples 0 (unknown, as a streaming encoder writes it) made libsndfile
// report INT64_MAX frames, and reserving that escaped as std::length_error. Such a file decodes;
// its duration limit is checked as it decodes.
TEST(AudioIo, FlacOfUnknownLengthDecodesAndRespectsTheLimit) {
  testing::TempDir dir;
  Write(dir.File("long.flac"), std::vector<float>(16000 * 3, 0.25f), 16000);
  std::string bytes = fs::ReadFile(dir.File("long.flac"));
  // "fLaC", the 4-byte block header, then STREAMINFO: total_samples is the low 36 bits of bytes 13-17.
  ASSERT_EQ(bytes.substr(0, 4), "fLaC");
  bytes[8 + 13] = static_cast<char>(bytes[8 + 13] & 0xF0);
  for (int i = 14; i < 18; ++i) bytes[8 + i] = 0;
  EXPECT_EQ(ProbeMemory(bytes, "stream.flac").frames, INT64_MAX);
  const Waveform w = ReadMemory(bytes, "stream.flac");
  EXPECT_EQ(w.samples.size(), 16000u * 3);
  ReadOptions limit;
  limit.max_seconds = 2.0;
  limit.block_frames = 4000;
  EXPECT_SLM_ERROR(ReadMemory(bytes, "stream.flac", limit), "stream.flac: 2.25 s is longer than the limit of 2 s");
}

// Fuzz finding (fuzz/regressions/audio/flac_claims_ten_hours): 43 bytes of FLAC header claiming
// 570 million frames made Read reserve 2.3 GB before decoding anything (an out-of-memory report
// under libFuzzer's limit). The reservation no longer trusts the header; the file has no audio.
TEST(AudioIo, HeaderClaimsDoNotAllocate) {
  const std::string flac(
      "\x66\x4c\x61\x43\x00\x00\x00\x22\x10\x00\x10\x5b\x00\x00\xe5\x00\x00\xe5\x03\xe8\x00\xf0"
      "\x21\xff\x65\x59\xc6\x10\x28\x60\x00\x00\x00\x00\x00\x00\x00\x00\x4c\x41\x43\x23\x20", 43);
  EXPECT_EQ(ProbeMemory(flac, "claim.flac").frames, 570385753);
  ReadOptions no_limit;
  no_limit.target_rate = 0;
  EXPECT_SLM_ERROR(ReadMemory(flac, "claim.flac", no_limit), "claim.flac: contains no samples");
}

TEST(AudioIo, WriteRejectsBadInputAndKeepsOldFile) {
  testing::TempDir dir;
  const auto x = SineSignal(440, 0.1);
  Write(dir.File("keep.wav"), x, 16000);
  std::vector<float> bad = x;
  bad[5] = std::nanf("");
  EXPECT_SLM_ERROR(Write(dir.File("keep.wav"), bad, 16000), "sample 5 is NaN");
  EXPECT_EQ(Read(dir.File("keep.wav")).samples.size(), x.size());
  EXPECT_SLM_ERROR(Write(dir.File("x.mp9"), x, 16000), "unsupported extension '.mp9'");
  EXPECT_SLM_ERROR(Write(dir.File("x.wav"), {}, 16000), "no samples");
  EXPECT_SLM_ERROR(Write(dir.File("x.wav"), x, 0), "sample rate 0 Hz");
  EXPECT_SLM_ERROR(StreamResampler(0, 16000), "rates must be in");
}

}  // namespace
}  // namespace slm::audio
