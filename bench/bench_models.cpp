#include "bench/bench_models.h"

#include <torch/torch.h>

#include <filesystem>

#include "audio/ctc.h"
#include "audio/whisper_encoder.h"
#include "core/error.h"
#include "text/llama.h"

namespace slm::bench {

TinyLlamaShapes WriteTinyLlamaShapes(const std::string& work_dir) {
  namespace stdfs = std::filesystem;
  TinyLlamaShapes out{work_dir + "/backbone", work_dir + "/encoder", work_dir + "/encoder_stream"};
  if (stdfs::exists(out.backbone + "/model.safetensors") && stdfs::exists(out.encoder + "/model.safetensors") &&
      stdfs::exists(out.encoder_stream + "/model.safetensors"))
    return out;
  torch::manual_seed(0);
  text::LlamaConfig l;  // TinyLlama-1.1B
  l.vocab_size = 32000;
  l.hidden_size = 2048;
  l.intermediate_size = 5632;
  l.num_hidden_layers = 22;
  l.num_attention_heads = 32;
  l.num_key_value_heads = 4;
  l.max_position_embeddings = 2048;
  l.rms_norm_eps = 1e-5;
  l.torch_dtype = "bfloat16";
  text::LlamaModel backbone(l);
  backbone->to(torch::kBFloat16);  // half the bytes on disk; each side casts to its dtype
  backbone->SaveWeights(out.backbone);
  // The starter tokenizer (its ids are < 32000) with the <speech> marker.
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "added_tokens.json"}) {
    const std::string from = std::string("samples/models/backbone_tiny/") + f;
    Check(stdfs::exists(from), "the TinyLlama-shaped benchmark models need the repository root as working directory (",
          from, " not found)");
    stdfs::copy_file(from, out.backbone + "/" + f, stdfs::copy_options::overwrite_existing);
  }
  audio::WhisperEncoderConfig w;  // whisper-base encoder
  w.d_model = 512;
  w.encoder_layers = 6;
  w.encoder_attention_heads = 8;
  w.encoder_ffn_dim = 2048;
  audio::CtcHead head(w.d_model);
  audio::LogMelOptions mel;
  mel.normalization = audio::MelNormalization::kFixedFloor;
  for (const std::string& dir : {out.encoder, out.encoder_stream}) {
    if (dir == out.encoder_stream) {
      w.attention_chunk_frames = 8;
      w.attention_left_chunks = 12;
    }
    audio::WhisperEncoder(w)->SaveWeights(dir, {{"ctc_head.weight", head->proj->weight.detach()},
                                                {"ctc_head.bias", head->proj->bias.detach()}});
    audio::SaveEncoderFeatureOptions(dir, mel);
  }
  return out;
}

}  // namespace slm::bench
