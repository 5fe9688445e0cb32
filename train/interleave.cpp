#include "train/interleave.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace slm::train {

using config::InRange;

void InterleaveOptions::Load(config::Node node) {
  node.Read("selection", selection, config::OneOf<std::string>({"poisson", "random", "span"}))
      .Read("lambda", lambda, InRange(0.0, 1000.0))
      .Read("eta", eta, InRange(0.0, 1.0))
      .Read("p", p, InRange(0.0, 1.0))
      .Read("span", span, InRange<int64_t>(1, 100000))
      .Read("speech", speech, config::OneOf<std::string>({"units", "frames"}))
      .Read("context_length", context_length, InRange<int64_t>(0, int64_t{1} << 24))
      .Read("seed", seed);
  if (node.Has("shares")) {
    auto s = node.Child("shares");
    s.Read("text", text_share, InRange(0.0, 1.0))
        .Read("interleaved", interleaved_share, InRange(0.0, 1.0))
        .Read("speech", speech_share, InRange(0.0, 1.0));
    if (text_share + interleaved_share + speech_share <= 0)
      s.Fail("text", "the three shares (text, interleaved, speech) must not all be 0");
  }
}

const char* StreamName(Stream s) {
  switch (s) {
    case Stream::kText: return "text";
    case Stream::kInterleaved: return "interleaved";
    case Stream::kSpeech: return "speech";
  }
  return "?";
}

AlignedUtterance AlignUtterance(const std::string& id, const std::vector<manifest::Word>& words,
                                const std::vector<int64_t>& units, const std::vector<int64_t>& durations,
                                double frame_rate_hz, double audio_seconds,
                                const std::function<std::vector<int64_t>(const std::string&)>& tokenize,
                                const std::string& where) {
  constexpr double kSlack = 0.010;  // seconds: aligners round times
  Check(!words.empty(), where, ": no \"words\" (task interleaved and word-cued tts need word times)");
  const bool frames_mode = frame_rate_hz <= 0;
  Check(frames_mode || !units.empty(), where, ": no \"units\"");
  Check(!frames_mode || audio_seconds >= 0, where, ": speech spans as frames need the recording (\"audio\")");
  Check(durations.empty() || durations.size() == units.size(), where, ": ", durations.size(),
        " unit_durations for ", units.size(), " units");
  AlignedUtterance u;
  u.id = id;
  u.units = units;
  int64_t frame = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    u.unit_start.push_back(frame);
    const int64_t d = durations.empty() ? 1 : durations[i];
    Check(d >= 1, where, ": unit_durations[", i, "] is ", d, " (frames, must be >= 1)");
    frame += d;
  }
  const int64_t total_frames = frame;
  for (size_t i = 0; i < words.size(); ++i) {
    const manifest::Word& w = words[i];
    Check(!w.word.empty(), where, ": words[", i, "] has no text");
    if (i + 1 < words.size())
      Check(w.end <= words[i + 1].start + kSlack, where, ": words[", i, "] '", w.word, "' [", w.start, ", ", w.end,
            "] overlaps words[", i + 1, "] '", words[i + 1].word, "' starting at ", words[i + 1].start);
    Check(audio_seconds < 0 || w.end <= audio_seconds + kSlack, where, ": words[", i, "] '", w.word, "' ends at ",
          w.end, " s, after the end of the audio (", audio_seconds, " s)");
    u.word_seconds.emplace_back(w.start, w.end);
    u.word_tokens.push_back(tokenize(w.word));
    if (frames_mode) continue;
    const int64_t first = static_cast<int64_t>(std::floor(w.start * frame_rate_hz));
    const int64_t end = std::max(first + 1, static_cast<int64_t>(std::ceil(w.end * frame_rate_hz - 1e-9)));
    Check(end <= total_frames + 1, where, ": words[", i, "] '", w.word, "' ends at ", w.end, " s but the ",
          units.size(), " units cover only ", total_frames / frame_rate_hz, " s (", total_frames, " frames at ",
          frame_rate_hz, " Hz): the unit sequence is shorter than the alignment implies");
    u.word_frames.emplace_back(first, end);
  }
  return u;
}

uint64_t InterleaveSeed(uint64_t seed, int64_t epoch, const std::string& id) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the id
  for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
  auto mix = [](uint64_t x) {  // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  return mix(mix(mix(seed) ^ static_cast<uint64_t>(epoch)) ^ h);
}

std::vector<bool> SelectSpeechWords(int64_t n, const InterleaveOptions& o, std::mt19937_64& rng) {
  std::vector<bool> speech(static_cast<size_t>(std::max<int64_t>(0, n)), false);
  if (n <= 0) return speech;
  if (o.selection == "random") {
    std::bernoulli_distribution coin(o.p);
    for (int64_t i = 0; i < n; ++i) speech[i] = coin(rng);
    return speech;
  }
  int64_t wanted = std::llround(o.eta * static_cast<double>(n));
  wanted = n >= 2 ? std::clamp<int64_t>(wanted, 1, n - 1) : 1;
  std::poisson_distribution<int64_t> poisson(std::max(1e-9, o.lambda));
  auto free_at = [&](int64_t s, int64_t len) {  // [s, s+len) free and not touching a span
    if (s > 0 && speech[s - 1]) return false;
    if (s + len < n && speech[s + len]) return false;
    for (int64_t i = s; i < s + len; ++i)
      if (speech[i]) return false;
    return true;
  };
  int64_t chosen = 0;
  for (int attempt = 0; chosen < wanted && attempt < 1000; ++attempt) {
    int64_t len = o.selection == "span" ? o.span : std::max<int64_t>(1, poisson(rng));
    len = std::min(len, wanted - chosen);
    std::vector<int64_t> starts;
    for (; len >= 1; --len) {
      for (int64_t s = 0; s + len <= n; ++s)
        if (free_at(s, len)) starts.push_back(s);
      if (!starts.empty()) break;
    }
    if (starts.empty()) break;  // no room left without touching a span
    const int64_t s = starts[std::uniform_int_distribution<size_t>(0, starts.size() - 1)(rng)];
    for (int64_t i = s; i < s + len; ++i) speech[i] = true;
    chosen += len;
  }
  return speech;
}

void SequenceStats::Add(const SequenceStats& o) {
  for (int s = 0; s < 3; ++s) {
    sequences[s] += o.sequences[s];
    tokens[s] += o.tokens[s];
  }
  text_tokens += o.text_tokens;
  unit_tokens += o.unit_tokens;
  marker_tokens += o.marker_tokens;
  words += o.words;
  speech_words += o.speech_words;
  speech_spans += o.speech_spans;
  switches += o.switches;
  truncated += o.truncated;
}

nlohmann::json SequenceStats::ToJson() const {
  const double all = std::max<int64_t>(1, tokens[0] + tokens[1] + tokens[2]);
  nlohmann::json j;
  for (int s = 0; s < 3; ++s) {
    j["sequences"][StreamName(Stream(s))] = sequences[s];
    j["token_share"][StreamName(Stream(s))] = tokens[s] / all;
  }
  j["tokens"] = {{"text", text_tokens}, {"units", unit_tokens}, {"markers", marker_tokens}};
  j["speech_word_share"] = words ? double(speech_words) / words : 0.0;
  j["mean_span_words"] = speech_spans ? double(speech_words) / speech_spans : 0.0;
  j["switches_per_sequence"] = sequences[1] ? double(switches) / sequences[1] : 0.0;
  j["truncated"] = truncated;
  return j;
}

void AppendSpan(const AlignedUtterance& u, int64_t first, int64_t last, bool speech, const InterleaveIds& ids,
                std::vector<int64_t>& out, SequenceStats* stats) {
  if (first >= last) return;
  if (!speech) {
    for (int64_t w = first; w < last; ++w) {
      out.insert(out.end(), u.word_tokens[w].begin(), u.word_tokens[w].end());
      if (stats) stats->text_tokens += static_cast<int64_t>(u.word_tokens[w].size());
    }
    return;
  }
  if (!ids.unit) return;  // frames mode: the caller splices the span's audio after the marker
  const int64_t a = u.word_frames[first].first, b = u.word_frames[last - 1].second;
  auto begin = std::lower_bound(u.unit_start.begin(), u.unit_start.end(), a);
  auto end = std::lower_bound(u.unit_start.begin(), u.unit_start.end(), b);
  for (auto it = begin; it != end; ++it) out.push_back(ids.unit(u.units[it - u.unit_start.begin()]));
  if (stats) stats->unit_tokens += static_cast<int64_t>(end - begin);
}

std::vector<int64_t> BuildSequence(const AlignedUtterance& u, const std::vector<bool>& speech,
                                   const InterleaveIds& ids, SequenceStats* stats) {
  std::vector<int64_t> out = {ids.bos};
  const int64_t n = u.Words();
  int64_t runs = 0;
  for (int64_t first = 0; first < n;) {
    int64_t last = first + 1;
    while (last < n && speech[last] == speech[first]) ++last;
    out.push_back(speech[first] ? ids.speech_marker : ids.text_marker);
    AppendSpan(u, first, last, speech[first], ids, out, stats);
    if (stats && speech[first]) {
      stats->speech_words += last - first;
      ++stats->speech_spans;
    }
    ++runs;
    first = last;
  }
  out.push_back(ids.eos);
  if (stats) {
    stats->marker_tokens += runs;
    stats->words += n;
    stats->switches += std::max<int64_t>(0, runs - 1);
  }
  return out;
}

std::vector<int64_t> WordCuedUnits(const AlignedUtterance& u, const InterleaveIds& ids) {
  Check(static_cast<bool>(ids.unit), "word-cued tts needs unit ids (not frames mode)");
  std::vector<int64_t> out;
  size_t next = 0;  // first unit not yet said
  for (int64_t w = 0; w < u.Words(); ++w) {
    out.push_back(ids.text_marker);
    out.insert(out.end(), u.word_tokens[w].begin(), u.word_tokens[w].end());
    out.push_back(ids.speech_marker);
    const bool last = w + 1 == u.Words();
    const int64_t end_frame = last ? std::numeric_limits<int64_t>::max() : u.word_frames[w + 1].first;
    for (; next < u.units.size() && u.unit_start[next] < end_frame; ++next) out.push_back(ids.unit(u.units[next]));
  }
  out.push_back(ids.eos);
  return out;
}

std::vector<std::pair<double, double>> SpeechClips(const AlignedUtterance& u, const std::vector<bool>& speech) {
  std::vector<std::pair<double, double>> clips;
  for (int64_t first = 0; first < u.Words();) {
    int64_t last = first + 1;
    while (last < u.Words() && speech[last] == speech[first]) ++last;
    if (speech[first]) clips.emplace_back(u.word_seconds[first].first, u.word_seconds[last - 1].second);
    first = last;
  }
  return clips;
}

std::vector<double> StreamProbabilities(const InterleaveOptions& o, const double mean_tokens[3]) {
  const double shares[3] = {o.text_share, o.interleaved_share, o.speech_share};
  std::vector<double> q(3, 0.0);
  double sum = 0;
  for (int s = 0; s < 3; ++s) {
    q[s] = shares[s] > 0 && mean_tokens[s] > 0 ? shares[s] / mean_tokens[s] : 0.0;
    sum += q[s];
  }
  Check(sum > 0, "interleave: every stream with a share has empty sequences");
  for (double& x : q) x /= sum;
  return q;
}

std::vector<int64_t> EpochSequence(const AlignedUtterance& u, const InterleaveOptions& options,
                                   const std::vector<double>& probabilities, int64_t epoch,
                                   const InterleaveIds& ids, SequenceStats* stats, std::vector<bool>* speech_words) {
  std::mt19937_64 rng(InterleaveSeed(options.seed, epoch, u.id));
  const double draw = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  Stream stream = Stream::kSpeech;
  double cumulative = 0;
  for (int s = 0; s < 3; ++s) {
    cumulative += probabilities[s];
    if (probabilities[s] > 0 && draw < cumulative) {
      stream = Stream(s);
      break;
    }
  }
  if (probabilities[2] <= 0 && stream == Stream::kSpeech)  // rounding at the top end
    stream = probabilities[1] > 0 ? Stream::kInterleaved : Stream::kText;
  const int64_t n = u.Words();
  std::vector<bool> speech(n, stream == Stream::kSpeech);
  if (stream == Stream::kInterleaved) speech = SelectSpeechWords(n, options, rng);
  // Only interleaved sequences count towards the span statistics.
  SequenceStats local;
  std::vector<int64_t> out = BuildSequence(u, speech, ids, &local);
  if (speech_words) *speech_words = speech;
  if (stats) {
    const int s = static_cast<int>(stream);
    stats->sequences[s] += 1;
    stats->tokens[s] += static_cast<int64_t>(out.size());
    stats->text_tokens += local.text_tokens;
    stats->unit_tokens += local.unit_tokens;
    stats->marker_tokens += local.marker_tokens;
    if (stream == Stream::kInterleaved) {
      stats->words += local.words;
      stats->speech_words += local.speech_words;
      stats->speech_spans += local.speech_spans;
      stats->switches += local.switches;
    }
  }
  return out;
}

std::vector<std::vector<size_t>> PackByLength(const std::vector<int64_t>& lengths, int64_t context) {
  Check(context > 0, "interleave: context length ", context);
  std::vector<std::vector<size_t>> rows;
  std::vector<int64_t> used;
  for (size_t i = 0; i < lengths.size(); ++i) {
    size_t r = 0;
    while (r < rows.size() && used[r] + lengths[i] > context) ++r;
    if (r == rows.size()) {
      rows.emplace_back();
      used.push_back(0);
    }
    rows[r].push_back(i);
    used[r] += lengths[i];
  }
  return rows;
}

}  // namespace slm::train
