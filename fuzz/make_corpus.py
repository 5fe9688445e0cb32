#!/usr/bin/env python3
"""Writes the committed seed corpora fuzz/corpus/<target>/ (small valid examples of each format).

Deterministic; run with the project's virtualenv (Pillow draws the images, libsndfile is called
through ctypes for the audio containers):  .venv/bin/python fuzz/make_corpus.py
Existing seeds are replaced; inputs libFuzzer added to a working copy are not affected
(scripts/fuzz fuzzes a copy under build-fuzz/).
"""
import ctypes
import io
import json
import math
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def config_seeds():
    with open(os.path.join(ROOT, "samples", "configs", "serve.yaml"), encoding="utf-8") as f:
        put("config", "serve.yaml", f.read())
    put("config", "minimal.yaml", "model: {backbone: samples/models/backbone_tiny}\n")
    put("config", "overrides.yaml",
        "--set limits.max_streams=4\n--set model.adapters[0].name=sqa\n"
        "--set model.adapters[0].run=runs/sqa\n--set streaming.interim_interval_ms=100\n"
        "model:\n  backbone: b\n  adapters:\n    - {name: x, run: r}\n")
    put("config", "tasks.yaml",
        "listen: 0.0.0.0:0\nmodel:\n  name: m\n  backbone: b\n  dtype: bfloat16\n  adapters:\n"
        "    - name: cap\n      config: c.yaml\n      adapters: a\n"
        "      tasks: {caption: \"<image> Describe the image:\", qa: '<image> {question}'}\n"
        "auth: {token: secret}\ntls: {cert: c.pem, key: k.pem}\n")
    put("config", "anchors.yaml",
        "model: &m\n  backbone: b\n  adapters: &list\n    - &a {name: a, run: r}\n"
        "limits: {max_streams: 8, max_answer_tokens: 4, max_answer_tokens_limit: 8}\n"
        "batching: {max_batch: 2, max_wait_ms: 0}\n")
    put("config", "errors.yaml",
        "--set limits.max_streams=[1, 2]\nmodel:\n  backbone: b\n  unknwon: 1\nlimits: 3\n")


def manifest_seeds():
    put("manifest", "asr.jsonl",
        '{"id":"u1","task":"asr","audio":"wav/u1.wav","text":"the cat","words":'
        '[{"word":"the","start":0.0,"end":0.11},{"word":"cat","start":0.12,"end":0.4}],'
        '"speaker":"en-us+f2"}\n\n'
        '{"id":"u2","task":"asr","audio":"/abs/u2.flac","text":"hello"}\n')
    put("manifest", "caption.jsonl",
        '{"id":"i1","task":"caption","image":"img/i1.png","text":"a red circle above a blue square"}\n'
        '{"id":"q1","task":"sqa","audio":"wav/q1.wav","prompt":"what is a dog","response":"an animal",'
        '"split":"train","attributes":{"colour":["red"],"n":2}}\n')
    put("manifest", "tts.jsonl",
        '{"id":"t1","task":"tts","text":"hi there","units":"<u3><u17><u5>","duration":1.25}\r\n'
        '  \t\r\n{"id":"t2","task":"tts","text":"\\u00e9t\\u00e9 \\ud83d\\ude00","words":null}\n')


def le64(n):
    return struct.pack("<Q", n)


def safetensors_file(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)] -> a safetensors file as the reference writes it."""
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    text = json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * ((8 - (8 + len(text)) % 8) % 8)
    return le64(len(text)) + text.encode() + blob, text.encode(), blob


def safetensors_seeds():
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    cases = {
        "f32_2x3": [("w", "F32", [2, 3], f32)],
        "mixed": [("a.bias", "BF16", [4], bytes(8)), ("a.weight", "F16", [2, 2], bytes(8)),
                  ("ids", "I64", [3], struct.pack("<3q", 1, -2, 3)), ("mask", "BOOL", [5], bytes(5)),
                  ("u", "U8", [3], b"\x01\x02\x03"), ("d", "F64", [1], struct.pack("<d", 0.5)),
                  ("s", "I16", [2], bytes(4)), ("c", "I8", [1], b"\x7f"), ("i", "I32", [], bytes(4))],
        "empty_tensor": [("e", "F32", [0, 4], b""), ("x", "I32", [1], bytes(4))],
        "no_tensors": [],
    }
    for name, tensors in cases.items():
        raw, header, blob = safetensors_file(tensors, {"format": "pt"} if name == "mixed" else None)
        put("safetensors", name + ".safetensors", raw)  # a whole file (first byte: length)
        put("safetensors", name + ".framed", header + b"\0" + blob)  # '{' + header, NUL, data
    # Unaligned data (odd header length, no padding): the reader copies instead of mapping.
    raw, header, blob = safetensors_file([("o", "F32", [2], struct.pack("<2f", 1, 2))], pad=False)
    put("safetensors", "unaligned.safetensors", raw)


def audio_seeds():
    sf = ctypes.CDLL("libsndfile.so.1")

    class SF_INFO(ctypes.Structure):
        _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int),
                    ("channels", ctypes.c_int), ("format", ctypes.c_int),
                    ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]

    sf.sf_open.restype = ctypes.c_void_p
    sf.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(SF_INFO)]
    sf.sf_writef_float.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64]
    sf.sf_close.argtypes = [ctypes.c_void_p]
    SFM_WRITE = 0x20
    WAV, AIFF, AU, W64, CAF, FLAC, OGG, RF64 = (0x010000, 0x020000, 0x030000, 0x0B0000, 0x180000,
                                                0x170000, 0x200000, 0x220000)
    PCM_16, PCM_24, PCM_U8, FLOAT, ULAW, IMA_ADPCM, MS_ADPCM, VORBIS, GSM610 = (
        0x0002, 0x0003, 0x0005, 0x0006, 0x0010, 0x0012, 0x0013, 0x0060, 0x0020)
    cases = [("pcm16.wav", WAV | PCM_16, 8000, 1), ("float_stereo.wav", WAV | FLOAT, 16000, 2),
             ("u8.wav", WAV | PCM_U8, 11025, 1), ("ima_adpcm.wav", WAV | IMA_ADPCM, 8000, 1),
             ("ms_adpcm.wav", WAV | MS_ADPCM, 8000, 2), ("gsm.wav", WAV | GSM610, 8000, 1),
             ("pcm24.aiff", AIFF | PCM_24, 22050, 1), ("ulaw.au", AU | ULAW, 8000, 1),
             ("pcm16.w64", W64 | PCM_16, 8000, 1), ("float.caf", CAF | FLOAT, 44100, 1),
             ("pcm16.rf64", RF64 | PCM_16, 8000, 3), ("pcm16.flac", FLAC | PCM_16, 16000, 1),
             ("vorbis.ogg", OGG | VORBIS, 16000, 1)]
    tmp = os.path.join(OUT, ".tmp_audio")
    os.makedirs(tmp, exist_ok=True)
    for name, fmt, rate, channels in cases:
        frames = rate // 40  # 25 ms
        samples = [0.5 * math.sin(2 * math.pi * 440 * (i // channels) / rate) * (1 + i % channels)
                   / channels for i in range(frames * channels)]
        info = SF_INFO(0, rate, channels, fmt, 0, 0)
        path = os.path.join(tmp, name)
        handle = sf.sf_open(path.encode(), SFM_WRITE, ctypes.byref(info))
        if not handle:
            sys.exit(f"libsndfile cannot write {name}")
        buf = (ctypes.c_float * len(samples))(*samples)
        sf.sf_writef_float(handle, buf, frames)
        sf.sf_close(handle)
        with open(path, "rb") as f:
            put("audio", name, f.read())
    shutil.rmtree(tmp)


def image_seeds():
    from PIL import Image
    def img(mode, size, fill):
        im = Image.new(mode, size, fill)
        for x in range(size[0]):
            for y in range(size[1]):
                if (x + y) % 3 == 0:
                    im.putpixel((x, y), fill if isinstance(fill, int) else tuple(255 - c for c in fill))
        return im

    def save(name, im, fmt, **kw):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        put("image", name, buf.getvalue())

    save("rgb.png", img("RGB", (7, 5), (200, 30, 40)), "PNG")
    save("rgba.png", img("RGBA", (5, 4), (10, 200, 30, 128)), "PNG")
    save("grey_alpha.png", img("LA", (4, 4), (90, 200)), "PNG")
    save("grey16.png", img("I;16", (4, 3), 40000), "PNG")
    save("palette.png", img("RGB", (6, 6), (1, 2, 250)).convert("P"), "PNG")
    save("rgb.jpg", img("RGB", (16, 8), (120, 60, 30)), "JPEG", quality=80)
    save("grey_progressive.jpg", img("L", (9, 9), 77), "JPEG", progressive=True)
    save("rgb.bmp", img("RGB", (3, 3), (5, 6, 7)), "BMP")
    save("rgb.gif", img("RGB", (4, 4), (250, 0, 0)), "GIF")
    save("rgb.tiff", img("RGB", (4, 4), (0, 250, 0)), "TIFF")
    save("grey16.tiff", img("I;16", (3, 3), 1000), "TIFF")
    save("rgb.webp", img("RGB", (6, 6), (0, 0, 250)), "WEBP", lossless=True)
    save("rgb.ppm", img("RGB", (3, 2), (9, 8, 7)), "PPM")


def tokenizer_seeds():
    texts = {
        "plain": "Transcribe the audio: the quick brown fox.",
        "markers": "<speech> Transcribe:<image>a <text> b<speech><speech>",
        "units": "<u0><u17> <u31><u32> <u3>x",
        "utf8": "été naïve 日本語 😀 \u2047 ▁word",
        "invalid_utf8": b"ab\xff\xfe\xc3(\xe2\x82 <spe\x80ech>",
        "whitespace": "  \t\n\r  a  \u00a0 b ",
    }
    for i, (name, text) in enumerate(texts.items()):
        data = text.encode() if isinstance(text, str) else text
        put("tokenizer", "encode_" + name, bytes([0 | ((i % 4) << 6)]) + data)
    put("tokenizer", "decode_ids", bytes([1]) + struct.pack("<10h", 1, 3, 100, 4, 2, 0, 255, 5, 8000, 8040))
    put("tokenizer", "decode_bad_id", bytes([1 | 64]) + struct.pack("<3h", 10, -3, 32000))
    put("tokenizer", "batch", bytes([2 | 128]) + "a b c\n<speech> hi\n\nlonger line of some words".encode())


def main():
    for target in ("config", "manifest", "safetensors", "audio", "image", "tokenizer"):
        shutil.rmtree(os.path.join(OUT, target), ignore_errors=True)
    config_seeds()
    manifest_seeds()
    safetensors_seeds()
    audio_seeds()
    image_seeds()
    tokenizer_seeds()


if __name__ == "__main__":
    main()
