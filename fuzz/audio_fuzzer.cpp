// Audio decoding (audio/audio_io.h: libsndfile through our wrapper, then channel averaging,
// NaN/Inf checks and soxr resampling to 16 kHz) of bytes in memory, with the limits the server
// uses for a Transcribe request (serve/serve_config.h: max_file_seconds), then once more with no
// duration limit (the library's default) at the file's own rate. Invariants beyond "only slm::Error
// naming the input": what Read returns is non-empty, finite, at the target rate and within the
// duration limit.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "audio/audio_io.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string where = "fuzz audio";
  slm::fuzz::ExpectCleanRejection(where, [&] {
    const slm::audio::FileInfo info = slm::audio::ProbeMemory(bytes, where);
    SLM_FUZZ_ASSERT(info.frames > 0 && info.channels >= 1 && info.sample_rate > 0, info.format);
    slm::audio::ReadOptions options;
    options.max_seconds = 60.0;
    options.block_frames = 4096;
    const slm::audio::Waveform w = slm::audio::ReadMemory(bytes, where, options);
    SLM_FUZZ_ASSERT(w.sample_rate == slm::audio::kSampleRate, info.format);
    SLM_FUZZ_ASSERT(w.Seconds() <= options.max_seconds + 1.0, info.format);
    for (const float v : w.samples) SLM_FUZZ_ASSERT(std::isfinite(v), info.format);
  });
  // The library's defaults as the data tools use them: no duration limit, the file's own rate.
  slm::fuzz::ExpectCleanRejection(where, [&] {
    slm::audio::ReadOptions options;
    options.target_rate = 0;
    const slm::audio::Waveform w = slm::audio::ReadMemory(bytes, where, options);
    SLM_FUZZ_ASSERT(!w.samples.empty(), "Read returned no samples");
  });
  return 0;
}
