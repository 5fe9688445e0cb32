// The serving engine's configuration: the model section, limits, streaming, batching and KV-cache
// keys of a serve config (`slm serve --config samples/configs/serve.yaml`; every key is in
// docs/CONFIG.md, "serve"). Front-ends extend it with their transport keys (serve/serve_config.h).
// Units: seconds, milliseconds and tokens as the names say.
//
//   model: {name, description, backbone, speech_encoder, device, dtype, adapters: [...],
//           speech_lm: {path, beam, lm_weight, word_bonus, char_threshold, interim}}
//   limits: {max_streams, max_generates, max_transcribes, max_syntheses, max_utterance_seconds,
//            max_file_seconds, max_synthesis_characters, max_answer_tokens, max_answer_tokens_limit}
//   streaming: {endpointing_silence_ms, speech_threshold_dbfs, interim_interval_ms}
//   batching: {max_batch, max_wait_ms, prefill_chunk_tokens, queue_timeout_seconds}
//   kv_cache: {block_size, tokens, memory_fraction, cuda_graphs}
//   adapters: {max_loaded, max_lora_rank}
//   threads: 1
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/config.h"

namespace slm::engine {

struct AdapterEntry {
  std::string name;
  std::string run;       // a training run directory (config.yaml, adapters/); may be empty when
  std::string config;    //   config (the training config with the `model` section) and
  std::string adapters;  //   adapters (the adapter directory) are both given,
                         //   or when all three are empty: a prompt-only entry (below)
  // task -> prompt template (with its placeholder); empty = adapters/tasks.json (the trainer
  // writes it). An sqa template may hold "{transcript}": the engine puts the utterance's final
  // transcript there (a spoken question answered from its transcript, by the backbone reading
  // text). A prompt-only entry (no run, config or adapters) is the frozen backbone with these
  // templates: its tasks may not need trained inputs (no "<speech>" / "<image>").
  std::map<std::string, std::string> tasks;
  bool PromptOnly() const { return run.empty() && config.empty() && adapters.empty(); }
  // Reads {name, run | config + adapters | tasks alone} (strict).
  void Load(config::Node node);
};

// The served recognizer's word LM (audio/ctc_lexicon_decoder.h): transcripts by lexicon + LM
// beam search instead of greedy CTC. Empty path = greedy.
struct SpeechLmConfig {
  std::string path;             // an ARPA file or a directory with lm.arpa (audio/word_lm.h)
  int beam = 16;                // prefixes kept per encoder frame
  double lm_weight = 0.6;       // alpha, on the LM's ln-probabilities
  double word_bonus = 0.0;      // beta, ln units per word
  double char_threshold = -8.0; // ln: characters less likely in a frame are not tried
  bool interim = true;          // interim transcripts from the beam too (false: greedy interims)
  // Reads the keys above (strict); slm::Error naming the key and file for a path that does not exist.
  void Load(config::Node node);
};

struct EngineConfig {
  std::string model_name = "tiny";
  std::string model_description;
  std::string backbone;
  std::string speech_encoder;  // empty = no audio requests
  std::string device = "cpu";
  std::string dtype = "float32";
  std::vector<AdapterEntry> adapters;
  SpeechLmConfig speech_lm;

  int max_streams = 16;                     // concurrent Converse streams; more are refused
  int max_generates = 16;                   // concurrent Generate requests
  int max_transcribes = 16;                 // concurrent Transcribe requests (running or queued)
  int max_syntheses = 8;                    // concurrent Synthesize requests
  double max_utterance_seconds = 20.0;      // longer utterances end with MAX_DURATION
  double max_file_seconds = 60.0;           // Transcribe
  int64_t max_synthesis_characters = 2000;  // Synthesize: longer text is refused
  int max_answer_tokens = 32;               // default for RESPOND / Generate
  int max_answer_tokens_limit = 128;        // clamp of requested values

  int endpointing_silence_ms = 600;      // default trailing silence ending an utterance
  double speech_threshold_dbfs = -45.0;  // 10 ms frames louder than this are speech
  int interim_interval_ms = 320;         // new audio between interim transcripts

  int max_batch = 16;                   // rows per encoder batch and per decode step
  int max_wait_ms = 5;                  // how long an idle scheduler waits to gather a batch
  int prefill_chunk_tokens = 256;       // prompt positions prefilled per scheduler step
  double queue_timeout_seconds = 10.0;  // an answer waiting this long for KV memory fails

  int kv_block_size = 16;            // positions per KV block
  int64_t kv_tokens = 0;             // pool size in positions; 0 = from kv_memory_fraction (CUDA) or
                                     // max_batch full contexts (CPU)
  double kv_memory_fraction = 0.5;   // CUDA: share of the free device memory after loading
  bool cuda_graphs = true;           // CUDA: replay decode steps as captured graphs

  int max_loaded_adapters = 8;  // bank slots for adapters loaded at once (LoRA or not)
  int max_lora_rank = 0;        // the largest LoRA rank an adapter may have; 0 = the largest of
                                // the adapters served from the start (at least 8)

  int threads = 1;  // LibTorch intra-op threads

  // Strict load of the engine's keys from the root of a serve config (the header comment).
  void Load(config::Node root);
};

}  // namespace slm::engine
