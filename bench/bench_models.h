// Model directories the benchmarks share. TinyLlama-1.1B-shaped backbone + whisper-base-shaped
// speech encoder with random weights: the shapes the issues' GPU goals name, written once to a
// work directory (reused when present) that both the C++ side and transformers load.
//
// Layout: work_dir/backbone (Hugging Face Llama directory: config.json, model.safetensors in
// bfloat16, the starter tokenizer), work_dir/encoder (Whisper encoder with a random CTC head
// "ctc_head.*" and fixed-floor log-mel options, so the server can stream with it),
// work_dir/encoder_stream (the same shapes block-causal: chunks of 8 frames (160 ms), 12 chunks of
// left context, so the server encodes streams incrementally).
// Needs the repository root as working directory (the starter tokenizer). Not thread-safe.
#pragma once

#include <string>

namespace slm::bench {

struct TinyLlamaShapes {
  std::string backbone;  // work_dir/backbone
  std::string encoder;   // work_dir/encoder
  std::string encoder_stream;  // work_dir/encoder_stream
};
TinyLlamaShapes WriteTinyLlamaShapes(const std::string& work_dir);

}  // namespace slm::bench
