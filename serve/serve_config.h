// The server's configuration (`slm serve --config samples/configs/serve.yaml`), validated strictly
// like every slm config (a misspelt key is an error naming file and line). Every key is documented
// in docs/CONFIG.md ("serve"). Units: seconds, milliseconds and bytes as the names say.
//
//   listen: 127.0.0.1:50051          # host:port; port 0 picks a free one (printed at start)
//   model:                           # the one resident model
//     name: tiny
//     description: "..."
//     backbone: samples/models/backbone_tiny
//     speech_encoder: samples/models/speech_encoder_tiny   # its CTC head gives the transcripts
//     device: cpu
//     dtype: float32
//     adapters:                      # several adapters over the one backbone, picked by name
//       - {name: sqa, run: runs/sqa_tiny}          # run/config.yaml + run/adapters (+ tasks.json)
//       - {name: cap, run: runs/caption_tiny, adapters: runs/caption_tiny/checkpoints/latest/adapters,
//          tasks: {caption: "<image> Describe the image:"}}
//   limits: {max_streams, max_message_bytes, max_utterance_seconds, max_answer_tokens, ...}
//   streaming: {endpointing_silence_ms, speech_threshold_dbfs, interim_interval_ms}
//   batching: {max_batch, max_wait_ms}
//   auth: {token: "..."}             # or token_env: NAME (the token from an environment variable)
//   tls: {cert: FILE, key: FILE}
//   drain_seconds: 10
//   threads: 1                       # LibTorch intra-op threads of the scheduler
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/config.h"

namespace slm::serve {

struct AdapterEntry {
  std::string name;
  std::string run;       // a training run directory (config.yaml, adapters/); may be empty when
  std::string config;    //   config (the training config with the `model` section) and
  std::string adapters;  //   adapters (the adapter directory) are both given
  // task -> prompt template (with its placeholder); empty = adapters/tasks.json (the trainer
  // writes it).
  std::map<std::string, std::string> tasks;
};

struct ServeConfig {
  std::string listen = "127.0.0.1:50051";

  std::string model_name = "tiny";
  std::string model_description;
  std::string backbone;
  std::string speech_encoder;  // empty = no audio RPCs
  std::string device = "cpu";
  std::string dtype = "float32";
  std::vector<AdapterEntry> adapters;

  int max_streams = 16;                       // concurrent Converse streams; more are rejected
  int64_t max_message_bytes = 4 << 20;        // any request message
  int64_t max_chunk_bytes = 1 << 20;          // one audio message of a stream
  double max_utterance_seconds = 20.0;        // longer utterances end with MAX_DURATION
  double max_file_seconds = 60.0;             // Transcribe
  int64_t max_synthesis_characters = 2000;    // Synthesize: longer text is refused
  int max_answer_tokens = 32;                 // default for RESPOND / Generate
  int max_answer_tokens_limit = 128;          // clamp of requested values

  int endpointing_silence_ms = 600;           // default trailing silence ending an utterance
  double speech_threshold_dbfs = -45.0;       // 10 ms frames louder than this are speech
  int interim_interval_ms = 320;              // new audio between interim transcripts

  int max_batch = 16;                         // rows per encoder batch and per decode step
  int max_wait_ms = 5;                        // how long the scheduler waits for more work

  std::string auth_token;                     // empty = no authentication
  std::string tls_cert, tls_key;              // both or neither
  double drain_seconds = 10.0;                // SIGTERM: time given to open streams
  int threads = 1;

  // Strict load of the whole document root (see the header comment).
  void Load(config::Node root);
};

}  // namespace slm::serve
