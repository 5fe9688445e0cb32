#!/usr/bin/env python3
"""Reference token ids from the Python `sentencepiece` package and transformers, for the C++
Tokenizer parity test (tests/parity/tokenizer_parity_test.cpp).

Usage: make_tokenizer_references.py OUT_DIR
Writes into OUT_DIR/tokenizer/:
  corpus.txt              deterministic training text (generated here)
  unigram.model, bpe.model
                          sentencepiece models trained by the Python package on corpus.txt, Llama
                          style (unk/bos/eos = 0/1/2, byte fallback) with the multimodal markers as
                          user_defined_symbols
  references.json         {"models": {"unigram": {...}, "bpe": {...}}}, each with
                          "vocab_size", "bos_id", "eos_id", "unk_id", "pad_id",
                          "sentences": [{"text", "ids", "pieces", "decoded"}] from sentencepiece,
                          "with_added_tokens": {"num_speech_units", "vocab_size",
                             "sentences": [{"text", "ids"}]} from transformers' sentencepiece
                             tokenizer with the markers and speech units registered as added
                             special tokens (null with "skipped" when transformers lacks it)

Usage: make_tokenizer_references.py --check-cpp OUT_DIR
Checks the model the C++ parity test trained with slm's TrainTokenizer (OUT_DIR/tokenizer/cpp/)
against the Python package: the ids C++ wrote for each sentence must equal Python's.
"""
import json
import os
import random
import sys

import sentencepiece as spm

MARKERS = ["<speech>", "<image>", "<text>"]
NUM_SPEECH_UNITS = 8

# Plain text: no added token in it, so sentencepiece alone is the reference.
SENTENCES = [
    "the cat reads a red book.",
    "Hello, World! How are you today?",
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "  both  sides  ",
    "multiple    inner     spaces and\ttabs",
    "numbers 0123456789, 3.14159 and -42 and 1,000,000",
    "punctuation: ;:()[]{}<>/\\|@#$%^&*_+=~`'\"?!",
    "a crème brûlée for the naïve café owner",
    "Straße, Ærøskøbing, Ŝ, ğ, ł, œ",
    "東京 と 大阪 は 日本 の 都市 です",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "emoji 🙂🚀 and symbols ™ © ∑ ∞",
    "combining e\u0301 vs precomposed \u00e9",
    "full-width １２３ ＡＢＣ and ligature \ufb01ne",
    "zero\u200bwidth and non\u00a0breaking",
    "UPPER lower MiXeD",
    "unseen words: xylophone quixotic zephyr",
    "<speech without closing and <u3 and u7> are plain text",
    "a\nnew line",
    "the old farmer repairs the broken radio before dinner.",
]

# Text with added tokens: transformers splits on them first (its "legacy" Llama behaviour).
MARKER_SENTENCES = [
    "<speech> Transcribe:",
    "<speech> Transcribe: the cat reads a red book.",
    "<image>What is in the picture?",
    "Describe <image> please",
    "before<speech>after",
    "<speech><image><text>",
    "<u0><u1><u7> the units",
    "units <u3> inside <u5>text",
    "<u10> is not a unit here, <u1>0 is",
    "<text> café 東京 🙂 <speech>",
    "  <speech>  spaced  ",
]


def write_corpus(path):
    rng = random.Random(1234)
    subjects = ["the cat", "a small dog", "my neighbour", "the old farmer", "every student",
                "the café owner", "a naïve tourist", "her brother", "the engineer", "a child"]
    verbs = ["reads", "watches", "builds", "paints", "finds", "carries", "cooks", "repairs",
             "answers", "describes"]
    objects = ["a red book", "the blue house", "seven apples", "12 old bikes", "the wooden table",
               "a strange letter", "a crème brûlée", "twelve green cups", "3.5 kilograms",
               "the broken radio"]
    tails = ["every morning.", "before dinner!", "in the garden?", "near the river,",
             "with great care.", "on sunday.", "(quietly)", "at 10:30;", "again and again.",
             "without a word."]
    extra = ["Hello, World!", "How are you today?", "東京 は 都市 です", "Straße", "Привет",
             "numbers 0 1 2 3 4 5 6 7 8 9"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(600):
            line = " ".join(rng.choice(words) for words in (subjects, verbs, objects, tails))
            if i % 7 == 0:
                line += " " + rng.choice(extra)
            f.write(line + "\n")


def train(corpus, prefix, model_type):
    spm.set_random_generator_seed(7)
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type=model_type, vocab_size=700,
        hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=MARKERS,
        input_sentence_size=0, num_threads=1, minloglevel=2)


def hf_added_tokens_references(model_path):
    try:
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
    except ImportError as e:  # transformers without the sentencepiece backend
        return {"skipped": f"transformers has no SentencePieceBackend: {e}"}

    class Tokenizer(SentencePieceBackend):
        vocab_files_names = {"vocab_file": "tokenizer.model"}

    tokenizer = Tokenizer(vocab_file=model_path, bos_token="<s>", eos_token="</s>",
                          unk_token="<unk>", legacy=True)
    units = [f"<u{i}>" for i in range(NUM_SPEECH_UNITS)]
    tokenizer.add_tokens(MARKERS + units, special_tokens=True)
    return {
        "num_speech_units": NUM_SPEECH_UNITS,
        "vocab_size": len(tokenizer),
        "token_ids": {t: tokenizer.convert_tokens_to_ids(t) for t in MARKERS + units},
        "sentences": [{"text": text, "ids": tokenizer.encode(text, add_special_tokens=False)}
                      for text in MARKER_SENTENCES],
    }


def make(out_dir):
    out = os.path.join(out_dir, "tokenizer")
    os.makedirs(out, exist_ok=True)
    corpus = os.path.join(out, "corpus.txt")
    write_corpus(corpus)
    models = {}
    for model_type in ("unigram", "bpe"):
        prefix = os.path.join(out, model_type)
        train(corpus, prefix, model_type)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        sentences = []
        for text in SENTENCES:
            ids = sp.encode(text)
            sentences.append({"text": text, "ids": ids, "pieces": sp.encode(text, out_type=str),
                              "decoded": sp.decode(ids)})
        models[model_type] = {
            "vocab_size": sp.vocab_size(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
            "unk_id": sp.unk_id(), "pad_id": sp.pad_id(),
            "marker_ids": {m: sp.piece_to_id(m) for m in MARKERS},
            "sentences": sentences,
            "with_added_tokens": hf_added_tokens_references(prefix + ".model"),
        }
    with open(os.path.join(out, "references.json"), "w", encoding="utf-8") as f:
        json.dump({"models": models, "markers": MARKERS}, f, ensure_ascii=False, indent=1)
    print(f"wrote {out}: {len(SENTENCES)} sentences x {len(models)} models, "
          f"{len(MARKER_SENTENCES)} sentences with added tokens")


def check_cpp(out_dir):
    """The C++ side trained cpp/tokenizer.model and wrote its ids to cpp/cpp_ids.json."""
    cpp = os.path.join(out_dir, "tokenizer", "cpp")
    with open(os.path.join(cpp, "cpp_ids.json"), encoding="utf-8") as f:
        written = json.load(f)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(cpp, "tokenizer.model"))
    failures = 0
    for marker, cpp_id in written["marker_ids"].items():
        if sp.piece_to_id(marker) != cpp_id:
            print(f"marker {marker}: python {sp.piece_to_id(marker)} != c++ {cpp_id}")
            failures += 1
    for item in written["sentences"]:
        ids = sp.encode(item["text"])
        if ids != item["ids"]:
            print(f"{item['text']!r}: python {ids} != c++ {item['ids']}")
            failures += 1
        if sp.decode(ids) != item["decoded"]:
            print(f"{item['text']!r}: python decodes {sp.decode(ids)!r}, c++ {item['decoded']!r}")
            failures += 1
    n = len(written["sentences"])
    if failures:
        print(f"{failures} mismatches between the C++-trained model and Python sentencepiece")
        return 1
    print(f"C++-trained tokenizer.model: Python sentencepiece gives identical ids and text on "
          f"{n} sentences; byte_fallback={sp.is_byte(sp.piece_to_id('<0x41>'))}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check-cpp":
        sys.exit(check_cpp(sys.argv[2]))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    make(sys.argv[1])
