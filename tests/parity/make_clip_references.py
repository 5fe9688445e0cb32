#!/usr/bin/env python3
"""References for the C++ CLIP image encoder (tests/parity/clip_parity_test.cpp).

Writes into OUT_DIR (default build/parity):
  clip_tiny_random/            a randomly initialised small transformers CLIPVisionModel
                               (save_pretrained: config.json + model.safetensors)
  clip_images/image_{i}.png    deterministic test images (numpy drawings, pure-Python PNG writer)
  clip_references.safetensors  pixel_values_{i} [3, 224, 224] (CLIPImageProcessor defaults) and,
                               for the batch of all images' pixel values: hidden_state_{l}
                               (l = 0..num_layers), last_hidden_state, pooler_output

Preprocessing: transformers 5's CLIPImageProcessor is the torchvision backend; it needs
torchvision (and PIL for its base class). When it cannot be instantiated (neither is installed in
this project's .venv and nothing may be downloaded), the same steps are run here with the same torch
calls the backend makes on CPU (see image_processing_backends.TorchvisionBackend: resize ->
torchvision resize of a uint8 tensor = torch interpolate(bicubic, antialias=True) natively on uint8;
center_crop; fused rescale+normalize with mean/std divided by rescale_factor in float32). The
metadata key "preprocessor" records which one produced the references.
"""
import os
import struct
import sys
import zlib

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def make_image(width, height, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3), np.float64)
    img[..., 0] = 255 * x / max(width - 1, 1)
    img[..., 1] = 255 * y / max(height - 1, 1)
    img[..., 2] = 127 + 120 * np.sin(x / 7.0 + seed) * np.cos(y / 11.0)
    for _ in range(4):  # sharp-edged discs and boxes, plus a little noise
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(10, min(width, height) / 3)
        colour = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        else:
            mask = (abs(x - cx) < r) & (abs(y - cy) < r / 2)
        img[mask] = colour
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def replica_preprocess(rgb):
    """transformers' TorchvisionBackend._preprocess with CLIP defaults, on CPU."""
    x = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()[None]  # [1, 3, H, W] uint8
    height, width = x.shape[-2:]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = 224, int(224 * long / short)
    new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
    if (new_h, new_w) != (height, width):
        x = torch.nn.functional.interpolate(x, size=[new_h, new_w], mode="bicubic",
                                            align_corners=False, antialias=True)
    h, w = x.shape[-2:]
    top, left = int((h - 224) / 2.0), int((w - 224) / 2.0)
    x = x[..., top:top + 224, left:left + 224]
    mean = torch.tensor(MEAN) * (1.0 / (1 / 255))
    std = torch.tensor(STD) * (1.0 / (1 / 255))
    x = x.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
    return x[0]


def pil_bicubic_resize(rgb, width, height):
    """Pillow's Image.resize(BICUBIC, reducing_gap=None) for 8-bit images, ported from
    src/libImaging/Resample.c (Pillow cannot be installed here): 22-bit fixed-point weights of the
    a = -0.5 cubic with the support scaled by the downscale factor, horizontal pass then vertical,
    rounding to uint8 between the passes."""
    bits = 32 - 8 - 2

    def cubic(x):
        a = -0.5
        x = abs(x)
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0

    def coefficients(in_size, out_size):
        scale = in_size / out_size
        filterscale = max(scale, 1.0)
        support = 2.0 * filterscale
        matrix = np.zeros((out_size, in_size), np.int64)
        for xx in range(out_size):
            center = (xx + 0.5) * scale
            xmin = max(int(center - support + 0.5), 0)
            xmax = min(int(center + support + 0.5), in_size) - xmin
            w = [cubic((x + xmin - center + 0.5) / filterscale) for x in range(xmax)]
            ww = sum(w)
            for x in range(xmax):
                v = w[x] / ww if ww != 0.0 else w[x]
                matrix[xx, xmin + x] = int(-0.5 + v * (1 << bits)) if v < 0 else int(0.5 + v * (1 << bits))
        return matrix

    def finish(acc):
        return np.clip((acc + (1 << (bits - 1))) >> bits, 0, 255).astype(np.uint8)

    img = rgb.astype(np.int64)
    if width != img.shape[1]:
        img = finish(np.einsum("ox,yxc->yoc", coefficients(img.shape[1], width), img)).astype(np.int64)
    if height != img.shape[0]:
        img = finish(np.einsum("oy,yxc->oxc", coefficients(img.shape[0], height), img)).astype(np.int64)
    return img.astype(np.uint8)


def pil_backend_preprocess(rgb):
    """transformers' PilBackend._preprocess (CLIPImageProcessorPil) with CLIP defaults."""
    height, width = rgb.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = 224, int(224 * long / short)
    new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
    img = pil_bicubic_resize(rgb, new_w, new_h).transpose(2, 0, 1)
    top, left = (img.shape[1] - 224) // 2, (img.shape[2] - 224) // 2
    img = img[:, top:top + 224, left:left + 224]
    img = (img.astype(np.float64) * (1 / 255)).astype(np.float32)
    img = (img - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray(img))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../build/parity")
    os.makedirs(os.path.join(out, "clip_images"), exist_ok=True)
    images = [make_image(300, 200, 1), make_image(150, 260, 2), make_image(700, 500, 3)]
    for i, img in enumerate(images):
        write_png(os.path.join(out, "clip_images", f"image_{i}.png"), img)

    try:
        from transformers import CLIPImageProcessor
        processor = CLIPImageProcessor()
        pixels = [processor(torch.from_numpy(img).permute(2, 0, 1), return_tensors="pt")["pixel_values"][0]
                  for img in images]
        preprocessor = "transformers.CLIPImageProcessor"
    except ImportError as e:
        print(f"CLIPImageProcessor unavailable ({str(e).strip().splitlines()[0]}); using the replica "
              "of its torchvision backend")
        pixels = [replica_preprocess(img) for img in images]
        preprocessor = "replica of TorchvisionBackend (torch interpolate bicubic antialias uint8)"

    torch.manual_seed(0)
    config = CLIPVisionConfig(image_size=224, patch_size=32, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu")
    config._attn_implementation = "eager"
    model = CLIPVisionModel(config).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model_dir = os.path.join(out, "clip_tiny_random")
    model.save_pretrained(model_dir, safe_serialization=True)

    batch = torch.stack(pixels)
    with torch.no_grad():
        result = model(pixel_values=batch, output_hidden_states=True)
    tensors = {f"pixel_values_{i}": p.contiguous() for i, p in enumerate(pixels)}
    for i, img in enumerate(images):  # the PIL backend (our port of Pillow's resampling)
        tensors[f"pixel_values_pil_{i}"] = pil_backend_preprocess(img)
        print(f"image_{i}: PIL vs torchvision backend max abs diff "
              f"{(tensors[f'pixel_values_pil_{i}'] - pixels[i]).abs().max().item():.4f}")
    for l, h in enumerate(result.hidden_states):
        tensors[f"hidden_state_{l}"] = h.clone()
    tensors["last_hidden_state"] = result.last_hidden_state.clone()
    tensors["pooler_output"] = result.pooler_output.contiguous()
    save_file(tensors, os.path.join(out, "clip_references.safetensors"),
              metadata={"preprocessor": preprocessor})
    print(f"wrote {len(images)} images, {model_dir}, clip_references.safetensors ({preprocessor})")


if __name__ == "__main__":
    main()
