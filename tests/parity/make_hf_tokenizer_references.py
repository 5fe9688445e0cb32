#!/usr/bin/env python3
"""Reference ids and text from Hugging Face `tokenizers` for the C++ tokenizer.json parity test
(tests/parity/hf_tokenizer_parity_test.cpp).

Usage: make_hf_tokenizer_references.py OUT_DIR [--lines N]
Writes into OUT_DIR/hf_tokenizer/:
  <family>/tokenizer.json  one file per family of hf_tokenizer_families.py, trained here
  <family>/references.json {"tokenizers_version", "vocab_size" (with slm's tokens),
                            "slm_token_ids": {token: id},
                            "lines": [corpus lines],
                            "ids": [encode(line, add_special_tokens=False)],
                            "ids_special": [encode(line, add_special_tokens=True)],
                            "decoded": [decode(ids_special, skip_special_tokens=False)],
                            "decoded_skip": [decode(ids_special, skip_special_tokens=True)],
                            "random_ids": [[id, ...]] (random ids, partial characters included),
                            "random_decoded", "random_decoded_skip"}
The corpus has N (default 10000) generated lines plus every added token at string boundaries;
slm's markers and speech units are added to each tokenizer as special tokens.
"""
import json
import os
import random
import sys

import tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_tokenizer_families as families  # noqa: E402


def main():
    args = sys.argv[1:]
    lines_wanted = 10000
    if "--lines" in args:
        i = args.index("--lines")
        lines_wanted = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    out = os.path.join(args[0], "hf_tokenizer")
    train = families.training_lines()
    total = 0
    for family in families.FAMILIES:
        directory = os.path.join(out, family)
        tok = families.with_slm_tokens(families.write_family(family, directory, train))
        lines = families.make_corpus(lines_wanted, seed=11, tokens=families.corpus_tokens(family))
        ids = [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
        ids_special = [e.ids for e in tok.encode_batch(lines, add_special_tokens=True)]
        vocab_size = tok.get_vocab_size(with_added_tokens=True)
        rng = random.Random(5)
        random_ids = [[rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))]
                      for _ in range(3000)]
        references = {
            "tokenizers_version": tokenizers.__version__,
            "vocab_size": vocab_size,
            "slm_token_ids": {t: tok.token_to_id(t) for t in families.SLM_TOKENS},
            "lines": lines,
            "ids": ids,
            "ids_special": ids_special,
            "decoded": tok.decode_batch(ids_special, skip_special_tokens=False),
            "decoded_skip": tok.decode_batch(ids_special, skip_special_tokens=True),
            "random_ids": random_ids,
            "random_decoded": tok.decode_batch(random_ids, skip_special_tokens=False),
            "random_decoded_skip": tok.decode_batch(random_ids, skip_special_tokens=True),
        }
        with open(os.path.join(directory, "references.json"), "w", encoding="utf-8") as f:
            json.dump(references, f, ensure_ascii=False)
        total += len(lines)
        print(f"{family}: {len(lines)} lines, {sum(map(len, ids))} tokens, vocab {vocab_size}")
    print(f"wrote {out}: {total} lines over {len(families.FAMILIES)} families "
          f"(tokenizers {tokenizers.__version__})")


if __name__ == "__main__":
    main()
