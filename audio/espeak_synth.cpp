#include "audio/espeak_synth.h"

#include <espeak-ng/speak_lib.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/strings.h"

namespace slm::audio {
namespace {

// Variants (espeak-ng-data/voices/!v) that sound like a person. Left out on purpose: whisper,
// whisperf and caleb (unvoiced), croak, Demonic, the robots (robosoft*, UniRobot, anikaRobot),
// announcer, Tweaky, fast (a speed preset that fights espeakRATE) and a few extreme ones.
const char* const kHumanVariants[] = {
    "m1",      "m2",     "m3",     "m4",      "m5",      "m6",    "m7",     "m8",
    "f1",      "f2",     "f3",     "f4",      "f5",      "klatt", "klatt2", "klatt3",
    "Alex",    "Andy",   "Annie",  "Denis",   "Gene",    "Jacky", "Lee",    "Mario",
    "Michael", "Mike",   "aunty",  "belinda", "boris",   "david", "ed",     "grandma",
    "grandpa", "john",   "linda",  "max",     "norbert", "paul",  "pedro",  "quincy",
    "rob",     "robert", "shelby", "steph",   "travis",  "victor"};

constexpr int kRateMin = espeakRATE_MINIMUM, kRateMax = espeakRATE_MAXIMUM;

// Alignment works at 16 kHz.
constexpr int64_t kFrame = 80;            // 5 ms: resolution of the energy analysis
constexpr int64_t kMinWordSamples = 160;  // 10 ms: keeps start < end after rounding to ms
constexpr int64_t kSamplesPerMs = kSampleRate / 1000;
// A frame is silent when its RMS is 40 dB below the loudest frame of the utterance: espeak's
// pauses are digital zeros or a faint echo tail. Stop closures inside a word may fall below it too;
// that is harmless because only silence at the end of a word's span is trimmed.
constexpr double kSilenceRatio = 0.01;
constexpr float kMaxPeak = 0.9f;  // -0.9 dBFS

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// ---- UTF-8 and tokens ----------------------------------------------------------------------

// Length of the UTF-8 sequence starting at text[i], or 0 if it is not valid UTF-8.
size_t Utf8Length(const std::string& text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = byte(i);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  if (n == 2 && c < 0xc2) return 0;  // overlong
  if (n == 3 && c == 0xe0 && byte(i + 1) < 0xa0) return 0;
  if (n == 3 && c == 0xed && byte(i + 1) >= 0xa0) return 0;  // surrogates
  if (n == 4 &&
      (c > 0xf4 || (c == 0xf0 && byte(i + 1) < 0x90) || (c == 0xf4 && byte(i + 1) >= 0x90)))
    return 0;
  return n;
}

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Punctuation that espeak-ng reads as a pause or not at all, so it belongs to no word.
bool IsSilentPunctuation(const std::string& ch) {
  static const std::set<std::string> kSilent = {
      ".",      ",",      ";",      ":",      "!",      "?",      "\"",     "'",
      "(",      ")",      "[",      "]",      "{",      "}",      "-",      "_",
      "\u2018", "\u2019", "\u201c", "\u201d", "\u00ab", "\u00bb", "\u2039", "\u203a",
      "\u2013", "\u2014", "\u2026", "\u00a1", "\u00bf"};
  return kSilent.count(ch) > 0;
}

std::string StripSilentPunctuation(const std::string& token) {
  std::vector<std::string> chars;
  for (size_t i = 0; i < token.size();) {
    const size_t n = Utf8Length(token, i);
    chars.push_back(token.substr(i, n));
    i += n;
  }
  size_t begin = 0, end = chars.size();
  while (begin < end && IsSilentPunctuation(chars[begin])) ++begin;
  while (end > begin && IsSilentPunctuation(chars[end - 1])) --end;
  std::string word;
  for (size_t k = begin; k < end; ++k) word += chars[k];
  return word;
}

std::string Quoted(const std::string& text) {
  constexpr size_t kMax = 60;
  return "'" + (text.size() <= kMax ? text : text.substr(0, kMax) + "...") + "'";
}

// ---- the forked child ----------------------------------------------------------------------

// espeak-ng's callback is a bare function pointer, set once in the parent; in the (single-threaded)
// child this global is where it delivers audio and events.
struct Capture {
  std::vector<int16_t> pcm;
  std::vector<NativeSpeech::WordEvent> events;
};
Capture* g_capture = nullptr;

int SynthCallback(short* wav, int count, espeak_EVENT* events) {
  if (!g_capture) return 0;
  if (wav && count > 0) g_capture->pcm.insert(g_capture->pcm.end(), wav, wav + count);
  for (espeak_EVENT* e = events; e && e->type != espeakEVENT_LIST_TERMINATED; ++e)
    if (e->type == espeakEVENT_WORD) g_capture->events.push_back({e->text_position, e->sample});
  return 0;  // 0 = continue synthesis
}

// Child side: selects the voice and parameters, then synthesizes. Throws on espeak errors.
void ChildSynthesize(const std::string& text, const VoiceSpec& voice, Capture& capture) {
  Check(espeak_SetVoiceByName(voice.name.c_str()) == EE_OK, "espeak-ng rejected voice '",
        voice.name, "'");
  espeak_SetParameter(espeakRATE, voice.rate_wpm, 0);
  espeak_SetParameter(espeakPITCH, voice.pitch, 0);
  espeak_SetParameter(espeakRANGE, voice.range, 0);
  g_capture = &capture;
  const espeak_ERROR rc = espeak_Synth(text.c_str(), text.size() + 1, 0, POS_CHARACTER, 0,
                                       espeakCHARS_UTF8, nullptr, nullptr);
  g_capture = nullptr;
  Check(rc == EE_OK, "espeak-ng synthesis failed (error ", static_cast<int>(rc), ")");
}

void AppendRaw(std::string& out, const void* data, size_t bytes) {
  out.append(static_cast<const char*>(data), bytes);
}
template <typename T>
void AppendValue(std::string& out, const T& value) {
  AppendRaw(out, &value, sizeof value);
}

// Reads what AppendRaw/AppendValue wrote; the bytes come from our own child, so a short message
// means the child died mid-write.
class Reader {
 public:
  explicit Reader(const std::string& data) : data_(data) {}
  template <typename T>
  T Value() {
    T value;
    Raw(&value, sizeof value);
    return value;
  }
  void Raw(void* out, size_t bytes) {
    Check(pos_ + bytes <= data_.size(), "espeak-ng child sent a truncated result");
    std::memcpy(out, data_.data() + pos_, bytes);
    pos_ += bytes;
  }

 private:
  const std::string& data_;
  size_t pos_ = 0;
};

std::string SerializeSpeech(const Capture& capture) {
  std::string out;
  AppendValue(out, static_cast<uint64_t>(capture.pcm.size()));
  AppendValue(out, static_cast<uint64_t>(capture.events.size()));
  AppendRaw(out, capture.pcm.data(), capture.pcm.size() * sizeof(int16_t));
  AppendRaw(out, capture.events.data(), capture.events.size() * sizeof(NativeSpeech::WordEvent));
  return out;
}

NativeSpeech DeserializeSpeech(const std::string& data) {
  Reader reader(data);
  NativeSpeech speech;
  speech.pcm.resize(reader.Value<uint64_t>());
  speech.word_events.resize(reader.Value<uint64_t>());
  reader.Raw(speech.pcm.data(), speech.pcm.size() * sizeof(int16_t));
  reader.Raw(speech.word_events.data(),
             speech.word_events.size() * sizeof(NativeSpeech::WordEvent));
  return speech;
}

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Runs `work` in a forked child of this process and returns the bytes it produced. The message is
// framed ('O' or 'E', 8-byte length, payload) so that the parent knows when it is complete without
// waiting for EOF, which a sibling child forked by another thread could delay by inheriting the
// pipe. Exceptions in the child come back as slm::Error; a crash, an exit without a message or a
// run past `deadline_seconds` (the child is then killed) is an slm::Error naming `what`.
std::string RunIsolated(const std::function<std::string()>& work, double deadline_seconds,
                        const std::string& what) {
  int fds[2];
  Check(pipe2(fds, O_CLOEXEC) == 0, what, ": cannot create a pipe: ", std::strerror(errno));
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(fds[0]);
    close(fds[1]);
    throw Error(Str(what, ": cannot fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    // Child: never return into the caller's stack, never run atexit handlers or static
    // destructors (they belong to the parent, e.g. gtest's); die with the parent.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(fds[0]);
    char kind = 'O';
    std::string payload;
    try {
      payload = work();
    } catch (const std::exception& e) {
      kind = 'E';
      payload = e.what();
    } catch (...) {
      kind = 'E';
      payload = "unknown error";
    }
    const uint64_t size = payload.size();
    const bool ok = WriteAll(fds[1], &kind, 1) &&
                    WriteAll(fds[1], reinterpret_cast<const char*>(&size), sizeof size) &&
                    WriteAll(fds[1], payload.data(), payload.size());
    _exit(ok ? 0 : 3);
  }
  close(fds[1]);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000));
  std::string message;
  uint64_t expected = 0;
  bool complete = false, timed_out = false;
  char buffer[1 << 16];
  while (!complete) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    const ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF (or error) before the message was complete
    message.append(buffer, static_cast<size_t>(n));
    if (expected == 0 && message.size() >= 1 + sizeof(uint64_t))
      std::memcpy(&expected, message.data() + 1, sizeof expected);
    complete =
        message.size() >= 1 + sizeof(uint64_t) && message.size() == 1 + sizeof(uint64_t) + expected;
  }
  close(fds[0]);
  if (!complete) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Check(!timed_out, what, ": espeak-ng did not finish within ", deadline_seconds, " s (killed)");
  if (!complete) {
    if (WIFSIGNALED(status))
      throw Error(Str(what, ": espeak-ng crashed (signal ", WTERMSIG(status), ", ",
                      strsignal(WTERMSIG(status)), ")"));
    throw Error(Str(what, ": espeak-ng child exited without a result"));
  }
  std::string payload = message.substr(1 + sizeof(uint64_t));
  if (message[0] == 'E') throw Error(Str(what, ": ", payload));
  return payload;
}

// ---- alignment (16 kHz) ----------------------------------------------------------------------

struct Energy {
  std::vector<bool> active;  // per kFrame frame
  int64_t speech_begin = 0;  // first sample of the first active frame
  int64_t speech_end = 0;    // one past the last active frame (clipped to the signal)
};

Energy AnalyzeEnergy(const std::vector<float>& samples) {
  const int64_t n = static_cast<int64_t>(samples.size());
  const int64_t frames = (n + kFrame - 1) / kFrame;
  std::vector<double> rms(frames, 0.0);
  double peak = 0;
  for (int64_t f = 0; f < frames; ++f) {
    const int64_t begin = f * kFrame, end = std::min(n, begin + kFrame);
    double sum = 0;
    for (int64_t i = begin; i < end; ++i) sum += double(samples[i]) * samples[i];
    rms[f] = std::sqrt(sum / double(end - begin));
    peak = std::max(peak, rms[f]);
  }
  Check(peak > 0, "espeak-ng produced only silence");
  Energy energy;
  energy.active.resize(frames);
  int64_t first = -1, last = -1;
  for (int64_t f = 0; f < frames; ++f) {
    energy.active[f] = rms[f] >= peak * kSilenceRatio;
    if (energy.active[f]) {
      if (first < 0) first = f;
      last = f;
    }
  }
  energy.speech_begin = first * kFrame;
  energy.speech_end = std::min(n, (last + 1) * kFrame);
  return energy;
}

struct AlignedWord {
  std::string word;
  int64_t chars = 1;   // weight when sharing a span
  int64_t start = -1;  // samples at 16 kHz; -1 = espeak gave this token no event
  int64_t end = -1;
};

// Starts for tokens without an event of their own: the span from the previous timed word's start
// to the next timed word's start is shared by the previous word and the untimed run, in
// proportion to their lengths in characters.
void FillMissingStarts(std::vector<AlignedWord>& words, const Energy& energy) {
  const int64_t n = static_cast<int64_t>(words.size());
  for (int64_t i = 0; i < n;) {
    if (words[i].start >= 0) {
      ++i;
      continue;
    }
    int64_t run_end = i;
    while (run_end < n && words[run_end].start < 0) ++run_end;
    const int64_t prev = i - 1;  // -1 when the run opens the utterance
    const int64_t span_begin = prev >= 0 ? words[prev].start : energy.speech_begin;
    const int64_t span_end = run_end < n ? words[run_end].start : energy.speech_end;
    const int64_t first_member = prev >= 0 ? prev : i;
    int64_t total = 0;
    for (int64_t k = first_member; k < run_end; ++k) total += words[k].chars;
    int64_t before = 0;
    for (int64_t k = first_member; k < run_end; ++k) {
      if (k >= i)
        words[k].start =
            span_begin + (std::max<int64_t>(0, span_end - span_begin) * before) / total;
      before += words[k].chars;
    }
    i = run_end;
  }
}

// Word spans from espeak's events: starts from events (mapped onto whitespace tokens), ends at the
// next word's start trimmed back over silent frames.
std::vector<AlignedWord> AlignWords(const std::string& text, const NativeSpeech& speech,
                                    const Energy& energy, int64_t total_samples) {
  const std::vector<WordToken> tokens = WordTokens(text);
  // Only tokens with a word count: espeak reads the rest as pauses. An event belongs to the first
  // word token at or after its position, because espeak points the event of a word that follows a
  // punctuation-only token at that token ("x -- y": y's event is at "--").
  std::vector<AlignedWord> words;
  std::vector<int64_t> word_char_end;
  for (const auto& token : tokens) {
    if (token.word.empty()) continue;
    AlignedWord w;
    w.word = token.word;
    w.chars = std::max<int64_t>(1, token.char_end - token.char_begin);
    words.push_back(std::move(w));
    word_char_end.push_back(token.char_end);
  }
  Check(!words.empty(), "nothing to speak in ", Quoted(text), ": it has no words");
  for (const auto& event : speech.word_events) {
    const int64_t position = event.text_position - 1;  // 0-based code point
    const auto it = std::upper_bound(word_char_end.begin(), word_char_end.end(), position);
    const size_t k =
        it == word_char_end.end() ? words.size() - 1 : size_t(it - word_char_end.begin());
    const int64_t sample = std::llround(double(event.sample) * kSampleRate / kEspeakSampleRate);
    words[k].start = words[k].start < 0 ? sample : std::min(words[k].start, sample);
  }
  FillMissingStarts(words, energy);

  // Strictly increasing starts, inside the audible part, at least kMinWordSamples apart.
  const int64_t n = static_cast<int64_t>(words.size());
  for (int64_t i = 0; i < n; ++i) {
    int64_t lower = energy.speech_begin;
    if (i > 0) lower = std::max(lower, words[i - 1].start + kMinWordSamples);
    words[i].start = std::max(words[i].start, lower);
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    const int64_t upper = (i + 1 < n ? words[i + 1].start : energy.speech_end) - kMinWordSamples;
    words[i].start = std::min(words[i].start, upper);
  }
  Check(words[0].start >= energy.speech_begin, "cannot fit ", n, " words into ",
        double(energy.speech_end - energy.speech_begin) / kSampleRate, " s of speech");

  for (int64_t i = 0; i < n; ++i) {
    const int64_t hard_end = i + 1 < n ? words[i + 1].start : energy.speech_end;
    int64_t end = std::min(hard_end, total_samples);
    // Walk back over the silent frames that lie wholly before `end`: the frame straddling `end`
    // usually holds the next word's onset and must not stop the walk.
    for (int64_t f = end / kFrame - 1; f >= 0 && !energy.active[f]; --f) {
      if (f * kFrame < words[i].start + kMinWordSamples) break;
      end = f * kFrame;
    }
    words[i].end = std::max(end, words[i].start + kMinWordSamples);
  }
  return words;
}

double SamplesToRoundedSeconds(int64_t samples) {
  return double((samples + kSamplesPerMs / 2) / kSamplesPerMs) / 1000.0;
}

}  // namespace

// ---- public API --------------------------------------------------------------------------------

std::string VoiceSpec::Label() const { return Str(name, "/r", rate_wpm, "/p", pitch, "/g", range); }

VoiceSpec VoiceForSeed(uint64_t seed, const std::vector<std::string>& voices) {
  Check(!voices.empty(), "VoiceForSeed: the list of voices is empty");
  uint64_t state = SplitMix64(seed);
  const auto next = [&state](uint64_t modulus) {
    state = SplitMix64(state);
    return state % modulus;
  };
  VoiceSpec spec;
  spec.name = voices[next(voices.size())];
  spec.rate_wpm = 140 + static_cast<int>(next(61));
  spec.pitch = 30 + static_cast<int>(next(41));
  spec.range = 30 + static_cast<int>(next(51));
  return spec;
}

std::vector<std::string> AvailableEnglishVoices() {
  return EspeakSynthesizer::Instance().EnglishVoices();
}

void CheckEnglishVoice(const std::string& name) {
  const EspeakSynthesizer& synth = EspeakSynthesizer::Instance();
  const auto& voices = synth.english_voices_;
  if (std::binary_search(voices.begin(), voices.end(), name)) return;
  // espeak-ng calls British English "en"; "en-gb" is the name people try first.
  const size_t plus = name.find('+');
  std::string closest = name.substr(0, plus) == "en-gb"
                            ? "en" + (plus == std::string::npos ? "" : name.substr(plus))
                            : ClosestMatch(name, voices);
  if (!closest.empty() && !std::binary_search(voices.begin(), voices.end(), closest))
    closest = ClosestMatch(name, voices);
  throw Error(
      Str("unknown voice '", name, "'", closest.empty() ? "" : " (did you mean '" + closest + "'?)",
          ": valid voices are BASE or BASE+VARIANT with BASE one of ", Join(synth.english_bases_),
          " and VARIANT one of ", Join(synth.english_variants_)));
}

std::vector<WordToken> WordTokens(const std::string& text) {
  std::vector<WordToken> tokens;
  int64_t chars = 0;
  bool in_token = false;
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8Length(text, i);
    Check(n > 0, "text is not valid UTF-8 (bad byte 0x", std::hex,
          int(static_cast<unsigned char>(text[i])), std::dec, " at byte ", i, ")");
    const bool space = n == 1 && IsAsciiSpace(text[i]);
    if (!space && !in_token) {
      tokens.push_back(WordToken{i, i, chars, chars, ""});
      in_token = true;
    } else if (space && in_token) {
      in_token = false;
    }
    i += n;
    ++chars;
    if (in_token) {
      tokens.back().byte_end = i;
      tokens.back().char_end = chars;
    }
  }
  for (auto& t : tokens)
    t.word = StripSilentPunctuation(text.substr(t.byte_begin, t.byte_end - t.byte_begin));
  return tokens;
}

const EspeakSynthesizer& EspeakSynthesizer::Instance() {
  static const EspeakSynthesizer instance;  // thread-safe one-time initialization
  return instance;
}

EspeakSynthesizer::EspeakSynthesizer() {
  // DONT_EXIT: without it espeak-ng calls exit() when its data directory is missing.
  const int rate =
      espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, nullptr, espeakINITIALIZE_DONT_EXIT);
  Check(rate == kEspeakSampleRate, "espeak-ng could not be initialized (",
        rate < 0 ? "its data directory was not found; install the espeak-ng-data package"
                 : Str("unexpected sample rate ", rate, " Hz"),
        ")");
  espeak_SetSynthCallback(SynthCallback);

  std::set<std::string> bases;
  for (const espeak_VOICE* const* v = espeak_ListVoices(nullptr); v && *v; ++v) {
    const std::string identifier = (*v)->identifier ? (*v)->identifier : "";
    if (identifier.rfind("mb/", 0) == 0) continue;  // MBROLA: needs external diphone data
    // espeak_SetVoiceByName finds a language voice by its file name (case-insensitively), not by
    // its language codes: "gmw/en" lists "en-gb" first, but only "en" selects it.
    const size_t slash = identifier.rfind('/');
    const std::string file =
        ToLower(slash == std::string::npos ? identifier : identifier.substr(slash + 1));
    if (file == "en" || file.rfind("en-", 0) == 0) bases.insert(file);
  }
  std::set<std::string> installed_variants;
  espeak_VOICE variant_query{};
  variant_query.languages = "variant";
  for (const espeak_VOICE* const* v = espeak_ListVoices(&variant_query); v && *v; ++v) {
    const std::string identifier = (*v)->identifier ? (*v)->identifier : "";
    const size_t slash = identifier.rfind('/');
    installed_variants.insert(slash == std::string::npos ? identifier
                                                         : identifier.substr(slash + 1));
  }
  Check(!bases.empty(), "espeak-ng has no English voice installed (package espeak-ng-data)");
  english_bases_.assign(bases.begin(), bases.end());
  for (const char* variant : kHumanVariants)
    if (installed_variants.count(variant)) english_variants_.push_back(variant);
  for (const auto& base : english_bases_) {
    english_voices_.push_back(base);
    for (const auto& variant : english_variants_) english_voices_.push_back(base + "+" + variant);
  }
  std::sort(english_voices_.begin(), english_voices_.end());
}

NativeSpeech EspeakSynthesizer::SynthesizeNative(const std::string& text,
                                                 const VoiceSpec& voice) const {
  CheckEnglishVoice(voice.name);
  Check(voice.rate_wpm >= kRateMin && voice.rate_wpm <= kRateMax, "voice rate ", voice.rate_wpm,
        " wpm is outside ", kRateMin, "..", kRateMax);
  Check(voice.pitch >= 0 && voice.pitch <= 100, "voice pitch ", voice.pitch, " is outside 0..100");
  Check(voice.range >= 0 && voice.range <= 100, "voice range ", voice.range, " is outside 0..100");
  WordTokens(text);  // validates UTF-8 before espeak-ng sees it
  // espeak-ng needs well under 0.1 s per sentence; a minute plus 20 ms per byte only stops a hang.
  const double deadline = 60.0 + 0.02 * double(text.size());
  const std::string bytes = RunIsolated(
      [&] {
        Capture capture;
        ChildSynthesize(text, voice, capture);
        return SerializeSpeech(capture);
      },
      deadline, Str("synthesizing ", Quoted(text), " with ", voice.Label()));
  return DeserializeSpeech(bytes);
}

SynthResult EspeakSynthesizer::Synthesize(const std::string& text, const VoiceSpec& voice) const {
  Check(!Trim(text).empty(), "nothing to synthesize: the text is empty");
  const std::vector<WordToken> tokens = WordTokens(text);
  Check(
      std::any_of(tokens.begin(), tokens.end(), [](const WordToken& t) { return !t.word.empty(); }),
      "nothing to speak in ", Quoted(text), ": it has no words, only punctuation");
  const NativeSpeech speech = SynthesizeNative(text, voice);
  Check(!speech.word_events.empty(), "espeak-ng finds nothing to speak in ", Quoted(text));

  std::vector<float> native(speech.pcm.size());
  for (size_t i = 0; i < native.size(); ++i) native[i] = speech.pcm[i] / 32768.0f;
  std::vector<float> samples = Resample(native, kEspeakSampleRate, kSampleRate);
  // Loud variants ("ed", "Gene") reach espeak's int16 ceiling and the resampling filter overshoots
  // it, which 16-bit files would clip: attenuate those utterances to kMaxPeak, leave the rest.
  float peak = 0;
  for (float x : samples) peak = std::max(peak, std::abs(x));
  if (peak > kMaxPeak)
    for (float& x : samples) x *= kMaxPeak / peak;
  const Energy energy = AnalyzeEnergy(samples);
  const std::vector<AlignedWord> words =
      AlignWords(text, speech, energy, static_cast<int64_t>(samples.size()));

  // Exactly kSilenceMargin of silence before the first and after the last audible sample: espeak's
  // own edges vary by voice (~10 ms, more after some final consonants), so trim or pad with zeros.
  // The length is then rounded up to a whole millisecond so that times rounded to ms never pass
  // the end.
  const int64_t margin = static_cast<int64_t>(kSilenceMargin * kSampleRate);
  const int64_t begin = energy.speech_begin - margin;  // may be negative: leading zeros
  const int64_t length =
      (energy.speech_end + margin - begin + kSamplesPerMs - 1) / kSamplesPerMs * kSamplesPerMs;
  SynthResult result;
  result.sample_rate = kSampleRate;
  result.samples.assign(static_cast<size_t>(length), 0.0f);
  const int64_t total = static_cast<int64_t>(samples.size());
  for (int64_t i = std::max<int64_t>(0, begin); i < std::min(total, begin + length); ++i)
    result.samples[static_cast<size_t>(i - begin)] = samples[static_cast<size_t>(i)];
  for (const auto& w : words)
    result.words.push_back(manifest::Word{w.word, SamplesToRoundedSeconds(w.start - begin),
                                          SamplesToRoundedSeconds(w.end - begin)});
  return result;
}

std::vector<std::string> EspeakSynthesizer::Phonemize(const std::vector<std::string>& texts,
                                                       const std::string& voice) const {
  CheckEnglishVoice(voice);
  size_t bytes_in = 0;
  for (const std::string& text : texts) {
    WordTokens(text);  // validates UTF-8 before espeak-ng sees it
    bytes_in += text.size();
  }
  if (texts.empty()) return {};
  const std::string bytes = RunIsolated(
      [&] {
        Check(espeak_SetVoiceByName(voice.c_str()) == EE_OK, "espeak-ng rejected voice '", voice, "'");
        std::string out;
        for (const std::string& text : texts) {
          std::string phonemes;
          const void* at = text.c_str();
          // One clause per call; `at` becomes null at the end of the text.
          while (at != nullptr) {
            const char* clause = espeak_TextToPhonemes(&at, espeakCHARS_UTF8, /*ASCII names, ' ' between*/ ' ' << 8);
            const std::string c = clause ? Trim(clause) : "";
            if (c.empty()) continue;
            phonemes += (phonemes.empty() ? "" : " _ ") + c;
          }
          // espeak-ng puts two spaces between words; one separator everywhere keeps tokens uniform.
          std::string single;
          for (const char ch : phonemes)
            if (ch != ' ' || (!single.empty() && single.back() != ' ')) single += ch;
          AppendValue(out, static_cast<uint64_t>(single.size()));
          AppendRaw(out, single.data(), single.size());
        }
        return out;
      },
      60.0 + 0.01 * double(bytes_in), Str("phonemizing ", texts.size(), " text(s) with ", voice));
  Reader reader(bytes);
  std::vector<std::string> result(texts.size());
  for (std::string& r : result) {
    r.resize(reader.Value<uint64_t>());
    reader.Raw(r.data(), r.size());
  }
  return result;
}

NativeRate EspeakSynthesizer::MeasureNativeRate(const std::vector<std::string>& texts,
                                                const std::function<VoiceSpec(int64_t)>& voice_for,
                                                double min_audio_seconds) const {
  Check(!texts.empty(), "MeasureNativeRate: no texts");
  // Validate the voices the child will meet first, so a bad voice is a clear error up front.
  CheckEnglishVoice(voice_for(0).name);
  const std::string bytes = RunIsolated(
      [&] {
        NativeRate rate;
        double audio = 0, synth = 0;
        for (int64_t i = 0; audio < min_audio_seconds; ++i) {
          const VoiceSpec voice = voice_for(i);
          Capture capture;
          capture.pcm.reserve(kEspeakSampleRate * 10);
          const auto t0 = std::chrono::steady_clock::now();
          ChildSynthesize(texts[static_cast<size_t>(i) % texts.size()], voice, capture);
          synth += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          audio += double(capture.pcm.size()) / kEspeakSampleRate;
          rate.utterances = i + 1;
          Check(!capture.events.empty(), "espeak-ng speaks nothing in ",
                Quoted(texts[static_cast<size_t>(i) % texts.size()]));
        }
        rate.audio_seconds = audio;
        rate.synth_seconds = synth;
        std::string out;
        AppendValue(out, rate);
        return out;
      },
      120.0 + min_audio_seconds, "measuring espeak-ng's native rate");
  Reader reader(bytes);
  return reader.Value<NativeRate>();
}

}  // namespace slm::audio
