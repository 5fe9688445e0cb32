// slm bench stream-encoder: the cost of one more 160 ms chunk of a streamed utterance early on
// (--at, default 2 s into it) and late (20 s), for three ways of encoding it, all measured in the
// same run with the same weights:
//   incremental: audio/whisper_stream.h with the bounded left context (attention_left_chunks);
//   incremental_unbounded: the same with attention_left_chunks 0 (every earlier chunk cached);
//   reencode: the baseline, the offline forward of the whole utterance so far (what a server does
//             to refresh an interim without cached state).
// For each, the median seconds per chunk at every position and the ratio of the last to the first
// --at position: about 1 when the cost does not grow with the utterance. The cases are timed in
// interleaved rounds (median over rounds), so that load from other processes falls on every case
// alike. With --streams S > 1 the incremental way also runs S
// streams advancing one chunk each in one EncodeStreams call (the server's batching).
// Weights are random (timings do not depend on them) in the embedded encoder's shapes, or those of
// --model; chunking from --chunk-frames/--left-chunks (default: the model's, else 8 and 12).
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "audio/whisper_encoder.h"
#include "audio/whisper_stream.h"
#include "bench/bench_util.h"
#include "cli/command.h"
#include "core/device.h"
#include "core/error.h"
#include "core/json_report.h"
#include "core/strings.h"

namespace slm::bench {
namespace {

struct StreamEncoderBenchOptions {
  std::string model;  // "" = random weights in the embedded encoder's shapes
  int64_t chunk_frames = -1;
  int64_t left_chunks = -1;
  std::vector<double> at = {2.0, 20.0};  // seconds of audio already streamed
  std::vector<int64_t> streams = {1, 8};
  int repeats = 15;
  std::string device = "cpu";
  std::string dtype = "float32";
};

audio::WhisperEncoder MakeEncoder(const StreamEncoderBenchOptions& o, int64_t left_chunks) {
  audio::WhisperEncoderConfig c;
  if (!o.model.empty()) {
    c = audio::WhisperEncoderConfig::FromFile(o.model + "/config.json");
  } else {  // the embedded default's shapes (samples/configs/speech_encoder_stream.yaml)
    c.d_model = 192;
    c.encoder_layers = 4;
    c.encoder_attention_heads = 4;
    c.encoder_ffn_dim = 768;
    c.max_source_positions = 1500;
  }
  if (o.chunk_frames >= 0) c.attention_chunk_frames = o.chunk_frames;
  if (c.attention_chunk_frames == 0) c.attention_chunk_frames = 8;
  c.attention_left_chunks = left_chunks;
  torch::manual_seed(0);
  audio::WhisperEncoder encoder(c);
  if (!o.model.empty()) encoder->LoadWeights(o.model);
  encoder->to(ParseDevice(o.device), ParseDtype(o.dtype));
  encoder->Freeze();
  return encoder;
}

void RunStreamEncoderBench(const StreamEncoderBenchOptions& o, bool json) {
  Report report(json);
  const torch::Device device = ParseDevice(o.device);
  Check(!o.at.empty(), "--at needs at least one position");
  int64_t left = o.left_chunks;
  if (left < 0)
    left =
        o.model.empty()
            ? 12
            : audio::WhisperEncoderConfig::FromFile(o.model + "/config.json").attention_left_chunks;
  Check(left > 0, "--left-chunks must be > 0 (the bounded left context to compare), got ", left);
  audio::WhisperEncoder bounded = MakeEncoder(o, left);
  audio::WhisperEncoder unbounded = MakeEncoder(o, 0);  // same seed or file: same weights
  const audio::WhisperEncoderConfig& c = bounded->Config();
  const int64_t chunk = c.attention_chunk_frames;
  const int64_t chunk_features = 2 * chunk;  // feature frames (10 ms) per chunk
  const double chunk_seconds = chunk_features * 0.01;
  const auto options = torch::TensorOptions().dtype(ParseDtype(o.dtype)).device(device);
  torch::NoGradGuard no_grad;

  report.Line(Str("one more chunk of ", chunk_seconds * 1000, " ms (", chunk,
                  " encoder frames) of a streamed utterance, median of ", o.repeats, ", ",
                  torch::get_num_threads(), " threads on ", device.str(), " ", o.dtype));
  report.Set("device", device.str());
  report.Set("dtype", o.dtype);
  report.Set("threads", torch::get_num_threads());
  report.Set("model", o.model.empty() ? "random (embedded encoder shapes)" : o.model);
  report.Set("parameters", bounded->ParameterCount());
  report.Set("chunk_frames", chunk);
  report.Set("chunk_ms", chunk_seconds * 1000);
  report.Set("left_chunks", left);
  report.Set("left_context_ms", left * chunk_seconds * 1000);

  // The features of S utterances long enough for the last position plus one chunk.
  const int64_t streams_max = *std::max_element(o.streams.begin(), o.streams.end());
  Check(streams_max >= 1, "--streams must be >= 1");
  const double last = *std::max_element(o.at.begin(), o.at.end());
  Check(*std::min_element(o.at.begin(), o.at.end()) > 0, "--at positions must be > 0 seconds");
  // Chunks already streamed at `seconds`, and the feature frames that made them final.
  auto chunks_at = [&](double seconds) {
    return std::max<int64_t>(1, static_cast<int64_t>(seconds / chunk_seconds));
  };
  const int64_t total = 2 * (chunks_at(last) + 1) * chunk + 1;
  Check(total <= c.MaxInputFrames(), "--at ", last, " s is beyond what the encoder accepts (",
        c.MaxInputFrames() / 100.0, " s)");
  const torch::Tensor features = torch::randn({streams_max, total, c.num_mel_bins}, options);

  // Every case (way x position) is prepared first, then timed in interleaved rounds (each round
  // runs every case twice in a row, timing the second, in a rotating order), so that load from
  // other processes, which comes and goes, falls on early and late positions alike and the ratios
  // stay meaningful.
  struct Case {
    std::string key;  // report key prefix
    std::function<void()> body;
    std::vector<double> times;
  };
  std::vector<Case> cases;
  std::vector<std::shared_ptr<std::vector<audio::WhisperStreamState>>> keep_alive;
  const std::vector<std::string> way_keys = {"incremental", "incremental_unbounded", "reencode"};
  std::vector<int64_t> batched;
  for (int64_t streams : o.streams)
    if (streams > 1) batched.push_back(streams);
  for (double at : o.at) {
    const int64_t before = 2 * chunks_at(at) * chunk + 1;  // features that released those chunks
    const std::string where = Str(".at_", at, "s");
    for (int way = 0; way < 2; ++way) {
      audio::WhisperEncoder encoder = way == 0 ? bounded : unbounded;
      auto prepared = std::make_shared<std::vector<audio::WhisperStreamState>>();
      prepared->push_back(encoder->StartStream());
      encoder->EncodeChunks(prepared->front(), features[0].narrow(0, 0, before));
      keep_alive.push_back(prepared);
      const torch::Tensor next = features[0].narrow(0, before, chunk_features);
      cases.push_back({way_keys[way] + where,
                       [=]() mutable {
                         audio::WhisperStreamState state = prepared->front();  // a fork
                         const torch::Tensor out = encoder->EncodeChunks(state, next);
                         Check(out.size(0) == chunk,
                               "bench stream-encoder: expected one chunk, got ", out.size(0));
                         Sync(device);
                       },
                       {}});
    }
    const torch::Tensor so_far = features.narrow(0, 0, 1).narrow(1, 0, before + chunk_features);
    cases.push_back({way_keys[2] + where,
                     [=]() mutable {
                       bounded->forward(so_far);
                       Sync(device);
                     },
                     {}});
    for (int64_t streams : batched) {  // S streams at this position, one chunk each per call
      auto prepared = std::make_shared<std::vector<audio::WhisperStreamState>>();
      for (int64_t s = 0; s < streams; ++s) {
        prepared->push_back(bounded->StartStream());
        bounded->EncodeChunks(prepared->back(), features[s].narrow(0, 0, before));
      }
      keep_alive.push_back(prepared);
      cases.push_back({Str("incremental_batched.streams_", streams, where),
                       [=]() mutable {
                         std::vector<audio::WhisperStreamState> states = *prepared;
                         std::vector<audio::WhisperStreamStep> steps(streams);
                         for (int64_t s = 0; s < streams; ++s) {
                           steps[s].state = &states[s];
                           steps[s].features = features[s].narrow(0, before, chunk_features);
                         }
                         bounded->EncodeStreams(steps);
                         Sync(device);
                       },
                       {}});
    }
  }
  for (int round = 0; round < o.repeats; ++round)
    for (size_t i = 0; i < cases.size(); ++i) {
      Case& c = cases[(i + round) % cases.size()];
      c.body();  // warm: weights and activations in cache, as for a stream's back-to-back chunks
      const double start = NowSeconds();
      c.body();
      c.times.push_back(NowSeconds() - start);
    }
  auto median = [&](const std::string& key) {
    for (Case& c : cases)
      if (c.key == key) {
        std::vector<double> t = c.times;
        std::sort(t.begin(), t.end());
        return t[t.size() / 2];
      }
    throw Error("bench stream-encoder: no case " + key);
  };

  const std::string first = Str(".at_", o.at.front(), "s"), final = Str(".at_", o.at.back(), "s");
  for (const std::string& way : way_keys) {
    for (double at : o.at) {
      const double seconds = median(Str(way, ".at_", at, "s"));
      report.Set(Str(way, ".at_", at, "s.ms_per_chunk"), seconds * 1000);
      report.Set(Str(way, ".at_", at, "s.real_time_factor"), seconds / chunk_seconds);
    }
    report.Set(way + ".ratio_last_to_first", median(way + final) / median(way + first));
  }
  report.Set("speedup_vs_reencode_at_last",
             median("reencode" + final) / median("incremental" + final));
  for (int64_t streams : batched) {
    const std::string key = Str("incremental_batched.streams_", streams);
    for (double at : o.at) {
      const double seconds = median(Str(key, ".at_", at, "s"));
      report.Set(Str(key, ".at_", at, "s.ms_per_call"), seconds * 1000);
      report.Set(Str(key, ".at_", at, "s.ms_per_stream_chunk"), seconds * 1000 / streams);
    }
    report.Set(key + ".ratio_last_to_first", median(key + final) / median(key + first));
    report.Set(key + ".cost_vs_single_streams",
               median(key + final) / (streams * median("incremental" + final)));
  }
  report.Emit();
}

cli::Registrar registrar([](CLI::App& app, cli::Common& common) {
  auto* cmd =
      cli::Group(app, "bench", "benchmarks, each against a baseline measured in the same run")
          ->add_subcommand("stream-encoder",
                           "one more speech chunk: incremental encoding vs re-encoding, early vs "
                           "late in an utterance");
  auto o = std::make_shared<StreamEncoderBenchOptions>();
  cmd->add_option("--model", o->model,
                  "encoder directory for the shapes and weights (default: "
                  "random weights, the embedded encoder's shapes)");
  cmd->add_option("--chunk-frames", o->chunk_frames,
                  "encoder frames (20 ms) per chunk (default: the model's, else 8)");
  cmd->add_option("--left-chunks", o->left_chunks,
                  "left context in chunks (default: the model's, else 12)");
  cmd->add_option("--at", o->at, "seconds already streamed when the timed chunk arrives")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--streams", o->streams, "streams per batched call (1 = single streams only)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "timed rounds (median)")->check(CLI::Range(1, 1000));
  cmd->add_option("--device", o->device, "cpu|cuda|cuda:N|auto")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "float32|bfloat16|float16")->capture_default_str();
  cmd->callback([o, &common] { RunStreamEncoderBench(*o, common.json); });
});

}  // namespace
}  // namespace slm::bench
