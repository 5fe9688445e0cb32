#!/usr/bin/env python3
"""Baseline of `slm bench tokenize` (bench/bench_tokenize.cpp): Hugging Face `tokenizers`
encoding the same corpus, single-threaded, timed in the same run as slm's C++ Tokenizer.

Usage: tokenize_hf.py --out DIR [--families gpt2,llama3,...] [--lines N] [--repeats R]
       tokenize_hf.py --out DIR --tokenizer TOKENIZER_JSON --corpus TEXT_FILE [--repeats R]
Writes, per family (or for "custom"), DIR/<family>/tokenizer.json, corpus.json (the lines) and
ids.json (tokenizers' ids, for the mismatch count), and prints one JSON line:
  {"tokenizers_version", "families": {family: {"lines", "tokens", "encode_seconds",
   "encode_batch_seconds"}}}
encode_seconds: a Python loop of Tokenizer.encode(line, add_special_tokens=False) over the corpus;
encode_batch_seconds: one encode_batch_fast call (TOKENIZERS_PARALLELISM=false: one thread, no
per-line Python overhead). Each is the median of R timed runs after a warm-up run.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before tokenizers is imported: one thread

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
import hf_tokenizer_families as families  # noqa: E402
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def median_seconds(repeats, body):
    body()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        body()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(tok, lines, repeats):
    encode = tok.encode
    loop = median_seconds(repeats, lambda: [encode(line, add_special_tokens=False) for line in lines])
    batch = median_seconds(repeats, lambda: tok.encode_batch_fast(lines, add_special_tokens=False))
    ids = [e.ids for e in tok.encode_batch_fast(lines, add_special_tokens=False)]
    return ids, loop, batch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--families", default=",".join(families.FAMILIES))
    parser.add_argument("--lines", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokenizer")
    parser.add_argument("--corpus")
    args = parser.parse_args()

    if args.tokenizer:
        with open(args.corpus, encoding="utf-8") as f:
            work = {"custom": (args.tokenizer, [line.rstrip("\n") for line in f])}
    else:
        train = families.training_lines()
        work = {}
        for family in args.families.split(","):
            directory = os.path.join(args.out, family)
            families.write_family(family, directory, train)
            lines = families.make_corpus(args.lines, seed=11, tokens=families.corpus_tokens(family))
            work[family] = (os.path.join(directory, "tokenizer.json"), lines)

    results = {}
    for family, (path, lines) in work.items():
        directory = os.path.join(args.out, family)
        os.makedirs(directory, exist_ok=True)
        if os.path.abspath(path) != os.path.abspath(os.path.join(directory, "tokenizer.json")):
            shutil.copyfile(path, os.path.join(directory, "tokenizer.json"))
        tok = Tokenizer.from_file(path)
        ids, loop, batch = bench(tok, lines, args.repeats)
        with open(os.path.join(directory, "corpus.json"), "w", encoding="utf-8") as f:
            json.dump(lines, f, ensure_ascii=False)
        with open(os.path.join(directory, "ids.json"), "w", encoding="utf-8") as f:
            json.dump(ids, f)
        results[family] = {"lines": len(lines), "tokens": sum(map(len, ids)),
                           "encode_seconds": loop, "encode_batch_seconds": batch}
    print(json.dumps({"tokenizers_version": tokenizers.__version__, "families": results}))


if __name__ == "__main__":
    main()
