#!/usr/bin/env python3
"""Round trip of the served voice (issue 25's speech-out targets).

Starts `slm serve --config CONFIG` on free loopback ports and, for each gloss of the dictionary's
held-out words (`slm data dictionary` entries whose split is not train: the glosses the TTS adapter
of samples/configs/tts_dict.yaml never heard), through the server's OpenAI-compatible HTTP API:
  - speaks it with the served synthesizer (POST /v1/audio/speech, response_format pcm: 16-bit mono
    24 kHz, streamed; the first bytes' arrival is the first audio chunk, the whole response over
    the audio's length the real-time factor, one request at a time);
  - speaks it with espeak-ng's en-us voice, the voice the adapter learnt from (the reference);
  - transcribes both with the served recognizer (POST /v1/audio/transcriptions) and scores word
    and character error rates against the gloss.
The round-trip WER ratio (ours / espeak-ng's) is the number the issue bounds (<= 1.3x).

Usage (after scripts/build slm and `slm data dictionary`):
  .venv/bin/python bench/eval_tts_roundtrip.py --json docs/results/tts_roundtrip.json
Nothing is downloaded; everything runs on this machine.
"""
import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_spoken_qa import REPO, Server, edit_distance, speak, words, write_json  # noqa: E402

PCM_RATE = 24000


def pcm_to_wav(pcm, rate):
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def synthesize(server, model, text):
    """(wav bytes, first chunk seconds, total seconds, audio seconds) of the served voice."""
    body = json.dumps({"model": model, "input": text, "response_format": "pcm"}).encode()
    request = urllib.request.Request(server.http + "/v1/audio/speech", data=body,
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = None
    pcm = bytearray()
    with urllib.request.urlopen(request, timeout=300) as response:
        while True:
            piece = response.read1(65536)
            if not piece:
                break
            if first is None:
                first = time.perf_counter() - start
            pcm += piece
    total = time.perf_counter() - start
    return pcm_to_wav(bytes(pcm), PCM_RATE), first, total, len(pcm) / 2 / PCM_RATE


class Score:
    def __init__(self):
        self.word_errors = self.words = self.char_errors = self.chars = 0

    def add(self, reference, heard):
        r, h = words(reference), words(heard)
        self.word_errors += edit_distance(r, h)
        self.words += len(r)
        rc, hc = " ".join(r), " ".join(h)
        self.char_errors += edit_distance(rc, hc)
        self.chars += len(rc)

    def wer(self):
        return self.word_errors / max(1, self.words)

    def cer(self):
        return self.char_errors / max(1, self.chars)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slm", default=os.path.join(REPO, "build/cli/slm"))
    p.add_argument("--config", default="samples/configs/serve.yaml")
    p.add_argument("--set", action="append", default=[], help="config override for the server (repeatable)")
    p.add_argument("--dictionary", default=os.path.join(REPO, "data/wordnet/dictionary.jsonl"))
    p.add_argument("--splits", default="valid,test", help="dictionary splits whose glosses are spoken")
    p.add_argument("--limit", type=int, default=0, help="first N glosses (0 = all)")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice of the reference")
    p.add_argument("--keep", help="write every wav to this directory")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    splits = set(args.splits.split(","))
    glosses = [e["response"] for e in map(json.loads, open(args.dictionary)) if e.get("split") in splits]
    if args.limit:
        glosses = glosses[:args.limit]
    if not glosses:
        sys.exit(f"{args.dictionary}: no glosses in splits {sorted(splits)}")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)

    ours, reference = Score(), Score()
    firsts, rtfs, samples = [], [], []
    audio_ours = audio_ref = compute = 0.0
    with Server(args.slm, args.config, args.set) as server, tempfile.TemporaryDirectory() as tmp:
        model = json.loads(urllib.request.urlopen(server.http + "/v1/models").read())["data"][0]["id"]
        for i, gloss in enumerate(glosses):
            wav, first, total, seconds = synthesize(server, model, gloss)
            ref_wav = speak(gloss, args.voice, os.path.join(tmp, "ref.wav"))
            heard, ref_heard = server.transcribe(wav), server.transcribe(ref_wav)
            ours.add(gloss, heard)
            reference.add(gloss, ref_heard)
            firsts.append(first)
            rtfs.append(total / seconds)
            audio_ours += seconds
            compute += total
            with wave.open(io.BytesIO(ref_wav)) as w:
                audio_ref += w.getnframes() / w.getframerate()
            if args.keep:
                open(os.path.join(args.keep, f"g{i:03d}.wav"), "wb").write(wav)
                open(os.path.join(args.keep, f"g{i:03d}_espeak.wav"), "wb").write(ref_wav)
            samples.append({"text": gloss, "heard": heard, "espeak_heard": ref_heard, "audio_seconds": seconds,
                            "first_chunk_seconds": first, "real_time_factor": total / seconds})
            print(f"[{i + 1}/{len(glosses)}] {gloss}\n    ours:   {heard}\n    espeak: {ref_heard}", flush=True)

    firsts.sort()
    result = {
        "config": args.config, "overrides": args.set, "glosses": len(glosses), "splits": sorted(splits),
        "round_trip_wer": ours.wer(), "round_trip_cer": ours.cer(),
        "espeak_round_trip_wer": reference.wer(), "espeak_round_trip_cer": reference.cer(),
        "wer_ratio": ours.wer() / max(1e-9, reference.wer()),
        "cer_ratio": ours.cer() / max(1e-9, reference.cer()),
        "duration_ratio": audio_ours / max(1e-9, audio_ref),
        "real_time_factor": compute / max(1e-9, audio_ours),
        "real_time_factor_max": max(rtfs),
        "first_chunk_seconds_p50": statistics.median(firsts),
        "first_chunk_seconds_p95": firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))],
        "first_chunk_seconds_max": firsts[-1],
        "samples": samples,
    }
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
