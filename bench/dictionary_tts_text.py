#!/usr/bin/env python3
"""Text for the spoken dictionary's voice (samples/configs/tts_dict.yaml).

Reads a dictionary manifest (`slm data dictionary`) and writes, into OUT_DIR:
  tts_glosses.txt          the glosses of the train-split words, cut into pieces of at most
                           --max-characters characters the way the synthesizer cuts text
                           (adapters/tts.h SplitText: after . ! ? ; : where possible, else at a
                           space), one piece per line: what the TTS adapter learns to say;
  tts_glosses_heldout.txt  the glosses of the other splits, whole: never trained on (the round
                           trip of bench/eval_tts_roundtrip.py speaks these).
Usage: python3 bench/dictionary_tts_text.py data/wordnet/dictionary.jsonl data
"""
import argparse
import json
import os


def split_text(text, limit):
    pieces, rest = [], text.strip()
    while rest:
        if len(rest) <= limit:
            pieces.append(rest)
            break
        cut = None
        for i in range(limit - 1, -1, -1):
            if rest[i] in ".!?;:":
                cut = i + 1
                break
        if cut is None or cut < limit // 4:
            space = rest.rfind(" ", 0, limit + 1)
            cut = space if space > 0 else limit
        piece = rest[:cut].strip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:].strip()
    return pieces


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dictionary")
    p.add_argument("out_dir")
    p.add_argument("--max-characters", type=int, default=60)
    args = p.parse_args()
    train, held_out = [], []
    with open(args.dictionary) as f:
        for n, line in enumerate(f, 1):
            try:
                entry = json.loads(line)
                gloss, split = entry["response"], entry["split"]
            except (ValueError, KeyError) as e:
                raise SystemExit(f"{args.dictionary}:{n}: not a dictionary entry ({e})")
            if split == "train":
                train += split_text(gloss, args.max_characters)
            else:
                held_out.append(gloss)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, lines in (("tts_glosses.txt", train), ("tts_glosses_heldout.txt", held_out)):
        with open(os.path.join(args.out_dir, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    print(f"{len(train)} training pieces, {len(held_out)} held-out glosses -> {args.out_dir}")


if __name__ == "__main__":
    main()
