#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers' WhisperEncoder, for the C++ speech encoder parity
test (tests/parity/whisper_encoder_parity_test.cpp).

    make_whisper_encoder_references.py OUT_DIR

OUT_DIR/whisper_tiny_random/ holds a small randomly initialised WhisperForConditionalGeneration
(torch.manual_seed) as save_pretrained writes it (config.json + model.safetensors with
"model.encoder.*" and the decoder, the layout of the hub's Whisper checkpoints) and
reference.safetensors with, in float32, eval mode and attn_implementation="eager":
  full.input_features [1, 80, 3000] / full.last_hidden_state [1, 1500, 64]
      model.encoder(input_features).last_hidden_state: the 30 s input Whisper expects
  short<T>.input_features [1, 80, T] / short<T>.last_hidden_state [1, ceil(T/2), 64], T = 400, 401
      transformers' encoder refuses anything but 3000 frames, so these run its own modules
      (conv1, conv2, embed_positions, layers, layer_norm) in its forward's order with the position
      table sliced to ceil(T/2) rows; the same manual pass is checked against model.encoder on the
      full input first.
  sinusoids [1500, 64]: transformers' sinusoids() (what a fresh model's embed_positions holds)
OUT_DIR/whisper_tiny_random_bare/ is the same model's WhisperModel part saved alone (tensors named
"encoder.*", "decoder.*"), which the C++ loader accepts too.
Features are in HF layout [B, n_mels, T]; the C++ encoder takes [B, T, n_mels].
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import WhisperConfig, WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import sinusoids

SEED = 4242


def manual_encoder(encoder, features):
    """transformers' WhisperEncoder.forward without its 3000-frame check."""
    gelu = torch.nn.functional.gelu
    x = gelu(encoder.conv2(gelu(encoder.conv1(features)))).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        x = layer(x, None)
    return encoder.layer_norm(x)


def main():
    out_dir = os.path.join(sys.argv[1], "whisper_tiny_random")
    os.makedirs(out_dir, exist_ok=True)
    config = WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, vocab_size=256,
        num_mel_bins=80, max_source_positions=1500, max_target_positions=64,
        pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3,
        suppress_tokens=None, begin_suppress_tokens=None,
        # Larger than Whisper's 0.02 so that every block changes the output visibly.
        init_std=0.1, attn_implementation="eager")
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir)
    model.model.save_pretrained(out_dir + "_bare")
    encoder = model.model.encoder

    g = torch.Generator().manual_seed(SEED + 1)
    tensors = {"sinusoids": sinusoids(1500, 64).float().contiguous()}
    with torch.no_grad():
        full = torch.randn(1, 80, 3000, generator=g) * 0.7
        ref = encoder(full).last_hidden_state
        manual = manual_encoder(encoder, full)
        diff = (ref - manual).abs().max().item()
        assert diff == 0.0, f"manual encoder pass differs from transformers' by {diff}"
        tensors["full.input_features"] = full.contiguous()
        tensors["full.last_hidden_state"] = ref.float().contiguous()
        for steps in (400, 401):
            short = torch.randn(1, 80, steps, generator=g) * 0.7
            tensors[f"short{steps}.input_features"] = short.contiguous()
            tensors[f"short{steps}.last_hidden_state"] = manual_encoder(encoder, short).contiguous()
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"))
    print(f"wrote {out_dir}: full output std {ref.std().item():.3f}")


if __name__ == "__main__":
    main()
