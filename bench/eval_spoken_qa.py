#!/usr/bin/env python3
"""Spoken-dictionary evaluation of a served model (issue 25's spoken-QA targets).

Starts `slm serve --config CONFIG` on free loopback ports and asks, through its OpenAI-compatible
HTTP API, questions "what is a(n) X" taken from a dictionary manifest (`slm data dictionary`):
  - typed: a chat completion whose message is the question as text ("what is a lantern?", the
    format the backbone learnt, text/qa_text.h), the text upper bound;
  - spoken: the question synthesized by espeak-ng with each voice of a set (seen voices, and the
    held-out `+f5` voice that no speech model of the project trained on) and sent as one
    input_audio part, exactly what a RESPOND stream or the web page gets; its transcript is also
    taken from /v1/audio/transcriptions to report how often the question itself was heard right.
An answer is right when it equals the manifest's response after normalization (lower case,
whitespace collapsed, final . ; , dropped: text/qa_text.h NormalizeAnswer).

Usage (after scripts/build slm and `slm data dictionary`):
  .venv/bin/python bench/eval_spoken_qa.py --questions 200 --json docs/results/spoken_qa.json
Nothing is downloaded; everything runs on this machine.
"""
import argparse
import base64
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEN_VOICES = ["en-us", "en", "en+m3", "en-us+f2", "en+m7"]
HELD_OUT_VOICES = ["en-us+f5"]


def normalize(text):
    text = " ".join(text.lower().split())
    while text and text[-1] in " .;,":
        text = text[:-1]
    return text


def words(text):
    return re.findall(r"[a-z']+", text.lower())


def edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


class Server:
    def __init__(self, slm, config, sets):
        self.command = [slm, "serve", "--config", config, "--set", "listen=127.0.0.1:0",
                        "--set", "http.listen=127.0.0.1:0"]
        for s in sets:
            self.command += ["--set", s]
        self.http = None

    def __enter__(self):
        self.log = tempfile.NamedTemporaryFile(prefix="slm-eval-", suffix=".log", delete=False)
        self.process = subprocess.Popen(self.command, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                if line.startswith("http on "):
                    self.http = "http://" + line.split()[2]
                if line.startswith("serving on "):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(180) or self.http is None:
            self.__exit__()
            sys.exit("the server did not start; its log: " + open(self.log.name, errors="replace").read()[-3000:])
        return self

    def __exit__(self, *args):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        os.unlink(self.log.name)

    def post(self, path, body, content_type="application/json"):
        request = urllib.request.Request(self.http + path, data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def chat(self, model, content, max_tokens):
        body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": content}]}
        answer = self.post("/v1/chat/completions", json.dumps(body).encode())
        return answer["choices"][0]["message"]["content"]

    def transcribe(self, wav):
        boundary = "slm-eval-boundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode() + wav + f"\r\n--{boundary}--\r\n".encode()
        return self.post("/v1/audio/transcriptions", body, f"multipart/form-data; boundary={boundary}")["text"]


def write_json(path, data):
    """Writes data as indented JSON to path, making its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def speak(text, voice, path):
    subprocess.run(["espeak-ng", "-v", voice, "-w", path, text], check=True, capture_output=True)
    with open(path, "rb") as f:
        return f.read()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slm", default=os.path.join(REPO, "build/cli/slm"))
    p.add_argument("--config", default="samples/configs/serve.yaml")
    p.add_argument("--set", action="append", default=[], help="serve config overrides (key=value)")
    p.add_argument("--model", default="sqa", help="the adapter to ask")
    p.add_argument("--dictionary", default="data/wordnet/dictionary.jsonl")
    p.add_argument("--questions", type=int, default=200, help="words drawn from the dictionary (seeded)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seen-voices", default=",".join(SEEN_VOICES))
    p.add_argument("--held-out-voices", default=",".join(HELD_OUT_VOICES))
    p.add_argument("--label", default="", help="a name for this model in the report")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args()

    path = os.path.join(REPO, args.dictionary)
    if not os.path.exists(path):
        sys.exit(f"{path} does not exist; make it with `slm data dictionary --corpus data/wordnet --words 1000 "
                 f"--out {args.dictionary}`")
    entries = [json.loads(line) for line in open(path) if line.strip()]
    random.Random(args.seed).shuffle(entries)
    entries = entries[:args.questions]
    sets = {"seen voices": args.seen_voices.split(","), "held-out voice": args.held_out_voices.split(",")}
    report = {"config": args.config, "sets": args.set, "model": args.model, "label": args.label,
              "questions": len(entries), "results": {}}
    folder = tempfile.mkdtemp(prefix="slm-eval-qa-")
    start = time.time()
    with Server(args.slm, args.config, args.set) as server:
        typed_right = 0
        for e in entries:
            answer = server.chat(args.model, e["prompt"] + "?", args.max_tokens)
            typed_right += normalize(answer) == normalize(e["response"])
        report["results"]["typed"] = {"answered": len(entries), "exact_match": typed_right / len(entries)}
        for name, voices in sets.items():
            right = heard = 0
            errors = reference_words = 0
            examples = []
            for i, e in enumerate(entries):
                voice = voices[i % len(voices)]
                wav = speak(e["prompt"], voice, os.path.join(folder, "q.wav"))
                transcript = server.transcribe(wav)
                content = [{"type": "input_audio",
                            "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}]
                answer = server.chat(args.model, content, args.max_tokens)
                ok = normalize(answer) == normalize(e["response"])
                right += ok
                heard += words(transcript) == words(e["prompt"])
                errors += edit_distance(words(e["prompt"]), words(transcript))
                reference_words += len(words(e["prompt"]))
                if len(examples) < 5:
                    examples.append({"voice": voice, "question": e["prompt"], "transcript": transcript,
                                     "answer": answer, "right": ok})
            report["results"][name] = {"voices": voices, "answered": len(entries),
                                       "exact_match": right / len(entries),
                                       "question_heard_exactly": heard / len(entries),
                                       "question_wer": errors / max(1, reference_words), "examples": examples}
    report["seconds"] = time.time() - start
    typed = report["results"]["typed"]["exact_match"]
    print(f"{args.label or args.config}: {len(entries)} questions, model '{args.model}'")
    print(f"  typed:          exact match {typed:.1%}")
    for name in sets:
        r = report["results"][name]
        ratio = r["exact_match"] / typed if typed > 0 else float("nan")
        r["spoken_over_typed"] = ratio
        print(f"  {name + ':':15s} exact match {r['exact_match']:.1%} ({ratio:.2f}x typed), question heard exactly "
              f"{r['question_heard_exactly']:.1%}, question WER {r['question_wer']:.1%}")
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
