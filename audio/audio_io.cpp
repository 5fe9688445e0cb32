#include "audio/audio_io.h"

#include <sndfile.h>
#include <soxr.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/strings.h"

namespace slm::audio {
namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const {
    if (f) sf_close(f);
  }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

std::string FormatName(int format) {
  SF_FORMAT_INFO info{};
  info.format = format & SF_FORMAT_TYPEMASK;
  if (sf_command(nullptr, SFC_GET_FORMAT_INFO, &info, sizeof info) == 0 && info.name) {
    std::string name = info.name;
    return name.substr(0, name.find(' '));
  }
  return "unknown";
}

// libsndfile's virtual I/O over bytes in memory (read-only; seeking past the end is allowed, as
// with lseek, and reads there return nothing).
struct MemoryFile {
  const std::string* bytes = nullptr;
  sf_count_t position = 0;
};

sf_count_t MemoryLength(void* user) {
  return static_cast<sf_count_t>(static_cast<MemoryFile*>(user)->bytes->size());
}

sf_count_t MemorySeek(sf_count_t offset, int whence, void* user) {
  auto* m = static_cast<MemoryFile*>(user);
  sf_count_t base = 0;
  if (whence == SEEK_CUR) {
    base = m->position;
  } else if (whence == SEEK_END) {
    base = MemoryLength(user);
  } else if (whence != SEEK_SET) {
    return -1;
  }
  // Offsets come from the file's own headers: overflow and negative targets are refused.
  if (offset > 0 && base > INT64_MAX - offset) return -1;
  if (base + offset < 0) return -1;
  m->position = base + offset;
  return m->position;
}

sf_count_t MemoryRead(void* destination, sf_count_t count, void* user) {
  auto* m = static_cast<MemoryFile*>(user);
  const sf_count_t size = MemoryLength(user);
  if (count <= 0 || m->position >= size) return 0;
  const sf_count_t n = std::min(count, size - m->position);
  std::memcpy(destination, m->bytes->data() + m->position, static_cast<size_t>(n));
  m->position += n;
  return n;
}

sf_count_t MemoryWrite(const void*, sf_count_t, void*) { return 0; }

sf_count_t MemoryTell(void* user) { return static_cast<MemoryFile*>(user)->position; }

// What is being decoded: a file, or bytes in memory (which must outlive the SNDFILE).
struct Source {
  std::string label;  // "audio file '<path>'" or the caller's name for the bytes
  std::string path;   // empty for memory
  MemoryFile memory;
};

Source FileSource(const std::string& path) { return Source{Str("audio file '", path, "'"), path, {}}; }

Source MemorySource(const std::string& bytes, const std::string& where) {
  Source source{where, "", {}};
  source.memory.bytes = &bytes;
  return source;
}

SndfilePtr Open(Source& source, SF_INFO& info) {
  const std::string& label = source.label;
  info = SF_INFO{};
  SNDFILE* f = nullptr;
  if (source.memory.bytes == nullptr) {
    struct stat st {};
    if (stat(source.path.c_str(), &st) != 0) throw Error(Str(label, ": ", std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) throw Error(Str(label, ": not a regular file"));
    if (st.st_size == 0) throw Error(Str(label, ": empty file (0 bytes)"));
    f = sf_open(source.path.c_str(), SFM_READ, &info);
  } else {
    if (source.memory.bytes->empty()) throw Error(Str(label, ": empty (0 bytes)"));
    static SF_VIRTUAL_IO io{MemoryLength, MemorySeek, MemoryRead, MemoryWrite, MemoryTell};
    source.memory.position = 0;
    f = sf_open_virtual(&io, SFM_READ, &info, &source.memory);
  }
  if (!f)
    throw Error(Str(label, ": cannot decode (", sf_strerror(nullptr),
                    "); supported: wav, flac, ogg/vorbis, aiff and other libsndfile formats"));
  SndfilePtr file(f);
  Check(info.samplerate >= kMinSampleRate && info.samplerate <= kMaxSampleRate, label,
        ": sample rate ", info.samplerate, " Hz is outside the supported range ", kMinSampleRate,
        "..", kMaxSampleRate, " Hz");
  Check(info.channels >= 1 && info.channels <= kMaxChannels, label, ": ", info.channels,
        " channels is outside the supported range 1..", kMaxChannels);
  Check(info.frames > 0, label, ": contains no samples");
  return file;
}

struct SoxrDeleter {
  void operator()(void* s) const {
    if (s) soxr_delete(static_cast<soxr_t>(s));
  }
};

}  // namespace

void CheckFinite(const float* samples, size_t count, const std::string& what) {
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(samples[i]))
      throw Error(Str(what, ": sample ", i, " is ", std::isnan(samples[i]) ? "NaN" : "infinite"));
}

namespace {

FileInfo ProbeSource(Source& source) {
  SF_INFO info;
  SndfilePtr file = Open(source, info);
  return FileInfo{info.samplerate, info.channels, static_cast<int64_t>(info.frames),
                  FormatName(info.format)};
}

Waveform ReadSource(Source& source, const ReadOptions& options) {
  const std::string& label = source.label;
  Check(options.block_frames > 0, label, ": block_frames must be positive");
  Check(options.target_rate == 0 ||
            (options.target_rate >= kMinSampleRate && options.target_rate <= kMaxSampleRate),
        label, ": target rate ", options.target_rate, " Hz is unsupported");
  SF_INFO info;
  SndfilePtr file = Open(source, info);
  // libsndfile reports SF_COUNT_MAX frames when the container does not say (a FLAC stream written
  // without seeking back, total_samples = 0): the length is then known only by decoding.
  const bool length_known = info.frames < SF_COUNT_MAX;
  const auto check_duration = [&](int64_t frames) {
    const double seconds = double(frames) / info.samplerate;
    Check(seconds <= options.max_seconds, label, ": ", seconds, " s is longer than the limit of ",
          options.max_seconds, " s");
  };
  if (options.max_seconds > 0 && length_known) check_duration(info.frames);
  const int channels = info.channels;
  const int out_rate = options.target_rate ? options.target_rate : info.samplerate;
  std::unique_ptr<StreamResampler> resampler;
  if (out_rate != info.samplerate) resampler = std::make_unique<StreamResampler>(info.samplerate, out_rate);

  Waveform out;
  out.sample_rate = out_rate;
  // The header's count is a claim, not a fact (a 43-byte FLAC can claim ten hours): at most
  // kReserveLimit samples are reserved up front, and the vector grows past that only as real
  // audio decodes.
  constexpr double kReserveLimit = 1 << 24;
  const double expected = length_known ? double(info.frames) * out_rate / info.samplerate : 0.0;
  out.samples.reserve(static_cast<size_t>(std::min(expected, kReserveLimit)) + 16);
  std::vector<float> block(static_cast<size_t>(options.block_frames) * channels);
  std::vector<float> mono(static_cast<size_t>(options.block_frames));
  int64_t position = 0;
  while (true) {
    const sf_count_t got = sf_readf_float(file.get(), block.data(), options.block_frames);
    if (got <= 0) break;
    for (sf_count_t i = 0; i < got; ++i) {
      float sum = 0;
      for (int c = 0; c < channels; ++c) {
        const float v = block[i * channels + c];
        if (!std::isfinite(v))
          throw Error(Str(label, ": sample ", position + i, " (channel ", c, ") is ",
                          std::isnan(v) ? "NaN" : "infinite"));
        if (std::abs(v) > kMaxAbsSample)
          throw Error(Str(label, ": sample ", position + i, " (channel ", c, ") is ", v,
                          ", beyond the supported magnitude ", kMaxAbsSample,
                          " (audio is expected in [-1, 1])"));
        sum += v;
      }
      mono[i] = sum / channels;
    }
    position += got;
    if (options.max_seconds > 0 && !length_known) check_duration(position);
    if (resampler) {
      auto chunk = resampler->Process(mono.data(), static_cast<size_t>(got));
      out.samples.insert(out.samples.end(), chunk.begin(), chunk.end());
    } else {
      out.samples.insert(out.samples.end(), mono.begin(), mono.begin() + got);
    }
  }
  if (sf_error(file.get()) != SF_ERR_NO_ERROR)
    throw Error(Str(label, ": decode error after ", position, " frames: ", sf_strerror(file.get())));
  Check(position > 0, label, ": contains no samples");
  if (resampler) {
    auto tail = resampler->Flush();
    out.samples.insert(out.samples.end(), tail.begin(), tail.end());
  }
  return out;
}

}  // namespace

FileInfo Probe(const std::string& path) {
  Source source = FileSource(path);
  return ProbeSource(source);
}

Waveform Read(const std::string& path, const ReadOptions& options) {
  Source source = FileSource(path);
  return ReadSource(source, options);
}

FileInfo ProbeMemory(const std::string& bytes, const std::string& where) {
  Source source = MemorySource(bytes, where);
  return ProbeSource(source);
}

Waveform ReadMemory(const std::string& bytes, const std::string& where, const ReadOptions& options) {
  Source source = MemorySource(bytes, where);
  return ReadSource(source, options);
}

void Write(const std::string& path, const std::vector<float>& samples, int sample_rate,
           SampleFormat format) {
  Check(sample_rate >= kMinSampleRate && sample_rate <= kMaxSampleRate, "cannot write '", path,
        "': sample rate ", sample_rate, " Hz is outside ", kMinSampleRate, "..", kMaxSampleRate);
  Check(!samples.empty(), "cannot write '", path, "': no samples");
  CheckFinite(samples.data(), samples.size(), Str("cannot write '", path, "'"));
  const std::string ext = ToLower(path.substr(path.find_last_of('.') == std::string::npos
                                                  ? path.size()
                                                  : path.find_last_of('.')));
  SF_INFO info{};
  info.samplerate = sample_rate;
  info.channels = 1;
  if (ext == ".wav") {
    info.format = SF_FORMAT_WAV | (format == SampleFormat::kFloat32 ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16);
  } else if (ext == ".flac") {
    info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  } else if (ext == ".ogg") {
    info.format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
  } else {
    throw Error(Str("cannot write '", path, "': unsupported extension '", ext,
                    "' (use .wav, .flac or .ogg)"));
  }
  Check(sf_format_check(&info), "cannot write '", path, "': libsndfile rejects this format");
  // Write next to the target, then rename: an existing file is never left half-written.
  const std::string temp = path + ".tmp." + std::to_string(getpid());
  SNDFILE* raw = sf_open(temp.c_str(), SFM_WRITE, &info);
  if (!raw) throw Error(Str("cannot write '", path, "': ", sf_strerror(nullptr)));
  sf_command(raw, SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const sf_count_t written = sf_writef_float(raw, samples.data(), static_cast<sf_count_t>(samples.size()));
  const std::string write_error = sf_strerror(raw);
  const int close_rc = sf_close(raw);
  if (written != static_cast<sf_count_t>(samples.size()) || close_rc != 0) {
    std::remove(temp.c_str());
    throw Error(Str("cannot write '", path, "': ", write_error));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp.c_str());
    throw Error(Str("cannot write '", path, "': ", std::strerror(err)));
  }
}

std::vector<float> Resample(const std::vector<float>& samples, int from_rate, int to_rate) {
  StreamResampler resampler(from_rate, to_rate);
  std::vector<float> out = resampler.Process(samples.data(), samples.size());
  std::vector<float> tail = resampler.Flush();
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

StreamResampler::StreamResampler(int from_rate, int to_rate) : from_rate_(from_rate), to_rate_(to_rate) {
  Check(from_rate >= kMinSampleRate && from_rate <= kMaxSampleRate && to_rate >= kMinSampleRate &&
            to_rate <= kMaxSampleRate,
        "resampling ", from_rate, " Hz -> ", to_rate, " Hz: rates must be in ", kMinSampleRate, "..",
        kMaxSampleRate, " Hz");
  if (from_rate == to_rate) return;
  soxr_error_t error = nullptr;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  soxr_ = soxr_create(from_rate, to_rate, 1, &error, &io, &quality, nullptr);
  if (error) {
    soxr_ = nullptr;
    throw Error(Str("soxr: cannot resample ", from_rate, " -> ", to_rate, " Hz: ", error));
  }
}

StreamResampler::~StreamResampler() { SoxrDeleter()(soxr_); }

std::vector<float> StreamResampler::Process(const float* samples, size_t count) {
  if (!soxr_) return std::vector<float>(samples, samples + count);
  std::vector<float> out;
  const double ratio = double(to_rate_) / from_rate_;
  std::vector<float> buffer(static_cast<size_t>(count * ratio) + 64);
  size_t consumed = 0;
  while (consumed < count) {
    size_t idone = 0, odone = 0;
    soxr_error_t error = soxr_process(static_cast<soxr_t>(soxr_), samples + consumed, count - consumed,
                                      &idone, buffer.data(), buffer.size(), &odone);
    if (error) throw Error(Str("soxr: resampling failed: ", error));
    out.insert(out.end(), buffer.begin(), buffer.begin() + odone);
    consumed += idone;
    if (idone == 0 && odone == 0) break;
  }
  return out;
}

std::vector<float> StreamResampler::Flush() {
  if (!soxr_) return {};
  std::vector<float> out;
  std::vector<float> buffer(4096);
  while (true) {
    size_t odone = 0;
    soxr_error_t error =
        soxr_process(static_cast<soxr_t>(soxr_), nullptr, 0, nullptr, buffer.data(), buffer.size(), &odone);
    if (error) throw Error(Str("soxr: flushing failed: ", error));
    if (odone == 0) break;
    out.insert(out.end(), buffer.begin(), buffer.begin() + odone);
  }
  // soxr is at end of input now and must not be fed again (it copies from a null buffer): back to
  // the initial state, so that the next segment (a stream's next utterance) starts afresh.
  if (soxr_error_t error = soxr_clear(static_cast<soxr_t>(soxr_))) throw Error(Str("soxr: reset failed: ", error));
  return out;
}

}  // namespace slm::audio
