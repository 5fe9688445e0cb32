"""Hugging Face tokenizer.json files of the model families slm reads, trained here by the
`tokenizers` package (nothing downloaded), and a generated multilingual test corpus.

Used by make_hf_tokenizer_references.py (the parity references) and bench/tokenize_hf.py (the
`slm bench tokenize` baseline). Everything is deterministic for a given seed.

Families (each a tokenizer.json as the real conversions write them):
  gpt2      ByteLevel pre-tokenizer with GPT-2's regex, ByteLevel decoder and post-processor,
            merges stored as "a b" strings; added tokens with lstrip / rstrip / single_word flags
  llama3    Split(Llama 3 regex, Isolated) + ByteLevel(use_regex=false), BPE with ignore_merges,
            Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)] post-processor
  qwen2     NFC normalizer, Split(Qwen2 regex) + ByteLevel(use_regex=false), ByteLevel
            post-processor; a `normalized` added token
  llama2    sentencepiece-style legacy Llama 2 / Mistral conversion: Prepend("▁") + Replace(" ",
            "▁") normalizer, no pre-tokenizer, BPE with byte_fallback and fuse_unk over <0xNN>
            pieces, Replace/ByteFallback/Fuse/Strip decoder, TemplateProcessing(<s> $A)
  metaspace sentencepiece-style newer conversion: NFKC normalizer, Metaspace(prepend_scheme=first,
            split=false) pre-tokenizer and decoder, TemplateProcessing(<s> $A </s>), added tokens
            with rstrip / lstrip
"""
import json
import os
import random

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

FAMILIES = ["gpt2", "llama3", "qwen2", "llama2", "metaspace"]

# slm's markers and speech units, added by the tests like TokenizerOptions does.
MARKERS = ["<speech>", "<image>", "<text>"]
NUM_SPEECH_UNITS = 8
SLM_TOKENS = MARKERS + [f"<u{i}>" for i in range(NUM_SPEECH_UNITS)]

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

WORDS = """the of and to in is was he for it with as his on be at by had are but from or have an
they which one you were her all she there would their we him been has when who will more no if out
so said what up its about into than them can only other new some could time these two may then do
first any my now such like our over man me even most made after also did many before must through
back years where much your way well down should because each just those people how too little state
good very make world still own see men work long get here between both life being under never day
same another know while last might us great old year off come since against go came right used take
three model token language speech image text audio train data weight layer vector matrix embed loss
Transcribe Describe Hello World Paris London Tokyo Python Rust Tensor GPU CPU NLP AI""".split()

CJK = ["東京は日本の首都です。", "我爱自然语言处理。", "한국어 텍스트입니다", "漢字とひらがなとカタカナ",
       "今天天气很好，我们去公园吧！", "私は学生です", "大规模语言模型", "서울특별시", "ｶﾀｶﾅ", "〈括弧〉「引用」"]
ARABIC = ["مرحبا بالعالم", "اللغة العربية جميلة", "كتاب", "السَّلَامُ عَلَيْكُمْ", "١٢٣٤٥", "الذكاء الاصطناعي"]
DEVANAGARI = ["नमस्ते दुनिया", "हिन्दी भाषा", "क्षत्रिय", "संस्कृतम्", "१२३", "भारत"]
OTHER = ["Привет, как дела?", "Ελληνικά γράμματα", "שלום עולם", "ภาษาไทย", "Straße", "Ærøskøbing",
         "crème brûlée", "naïve café", "İstanbul ılık", "Ǆemal ǅ", "ﬁne ﬂow", "ＡＢＣ１２３", "①②③",
         "Ⅻ ½ ™ ㍿", "e\u0301 A\u030a n\u0303", "cafe\u0301", "\u1e9b\u0323", "Å Å", "ǰ̣"]
EMOJI = ["🙂", "🚀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈", "👩🏾\u200d💻", "❤\ufe0f",
         "🇯🇵", "🧑\u200d🤝\u200d🧑", "1\ufe0f\u20e3", "🤖🤖🤖", "😀😃😄"]
CODE = ["def f(x):\n    return x**2", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
        "if x != None and y >= 3:", "    print(f\"{name!r}\")", "#include <vector>",
        "SELECT * FROM t WHERE id=42;", "std::vector<int64_t> ids;", "x = [1, 2, 3]  # comment",
        "return {\"key\": value};", "\tfoo();\n\tbar();", "a->b && c || !d", "// TODO(me): fix",
        "<div class=\"x\">&amp;</div>", "s = 'don''t'", "$HOME/bin:$PATH", "0x1F; 1e-9; 3.14f"]
SPACES = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\n\t", "\u00a0",
          "\u3000", "\u2003", "\u180e", "\u200b", "\u2028", "\u0085", "\x0b", "\x0c", " \t \n"]
CONTRACTIONS = ["DON'T", "I'LL", "you're", "He'S", "WE'VE", "it's", "I'm", "they'D", "She'll",
                "'s", "'ſ", "O'Neil", "rock'n'roll", "'T", "CAN'T", "I'M", "YOU'RE", "it'S", "'LL"]


def _random_run(rng, low, high, size):
    return "".join(chr(rng.randint(low, high)) for _ in range(size))


def _fragment(rng):
    kind = rng.randrange(12)
    if kind <= 2:
        n = rng.randint(1, 12)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words = [w.upper() for w in words]
        return " ".join(words) + rng.choice(["", ".", "!", "?", ",", ":", ";", " ..."])
    if kind == 3:
        return rng.choice(CJK) if rng.random() < 0.6 else rng.choice(
            [_random_run(rng, 0x4E00, 0x9FFF, rng.randint(1, 8)),
             _random_run(rng, 0xAC00, 0xD7A3, rng.randint(1, 5)),
             _random_run(rng, 0x3041, 0x3096, rng.randint(1, 6))])
    if kind == 4:
        return rng.choice(ARABIC) if rng.random() < 0.7 else _random_run(rng, 0x0621, 0x064A, 5)
    if kind == 5:
        return rng.choice(DEVANAGARI) if rng.random() < 0.7 else _random_run(rng, 0x0905, 0x094D, 5)
    if kind == 6:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
    if kind == 7:
        return rng.choice(CODE)
    if kind == 8:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
    if kind == 9:
        return " ".join(rng.choice(CONTRACTIONS) for _ in range(rng.randint(1, 3)))
    if kind == 10:
        return rng.choice(OTHER)
    return rng.choice(SPACES) * rng.randint(1, 4)


def random_line(rng):
    n = rng.randint(1, 8)
    parts = [_fragment(rng) for _ in range(n)]
    line = ""
    for part in parts:
        line += part + rng.choice([" ", " ", " ", "", "\n", "  ", "\t", ", "])
    if rng.random() < 0.5:
        line = line.rstrip(" ")
    return line


def boundary_lines(tokens):
    """Every added token at the start, the end, alone, doubled, and between spaces."""
    lines = []
    for t in tokens:
        lines += [t, t + "hello", "hello" + t, " " + t + " ", t + t, t + " world", "a " + t,
                  "x" + t + "y", t + "\n", "  " + t + "  end", "DON'T" + t + "I'LL", "東京" + t + "🙂",
                  "dear " + t + " dear"]
    return lines


def make_corpus(n_lines, seed, tokens):
    """n_lines random lines, then boundary lines for `tokens`, a few edge cases."""
    rng = random.Random(seed)
    lines = [random_line(rng) for _ in range(n_lines)]
    lines += boundary_lines(tokens)
    lines += ["", " ", "\n", "a", "'", "a" * 300, " " * 50, "\t" * 20 + "x", "1" * 100,
              "🙂" * 40, "dear", "dear dear", "mydear dear!", "hello world", "hello  world"]
    return lines


def family_added_tokens(family):
    """The added tokens a family's tokenizer.json declares (AddedToken objects)."""
    special = lambda t, **kw: AddedToken(t, special=True, normalized=False, **kw)
    if family == "gpt2":
        return [special("<|endoftext|>"), special("<mask>", lstrip=True),
                AddedToken("[TOOL]", special=False, normalized=False, rstrip=True),
                AddedToken("dear", special=False, normalized=True, single_word=True)]
    if family == "llama3":
        names = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eot_id|>"]
        names += [f"<|reserved_special_token_{i}|>" for i in range(4)]
        return [special(t) for t in names]
    if family == "qwen2":
        return [special("<|endoftext|>"), special("<|im_start|>"), special("<|im_end|>"),
                AddedToken("<tool_call>", special=False, normalized=False),
                AddedToken("café", special=False, normalized=True)]
    if family == "llama2":
        return [special("<unk>"), special("<s>"), special("</s>"),
                AddedToken("world", special=False, normalized=True)]
    if family == "metaspace":
        return [special("<unk>"), special("<s>"), special("</s>"),
                special("[INST]", rstrip=True), special("[/INST]", lstrip=True)]
    raise ValueError(family)


def corpus_tokens(family):
    return [t.content for t in family_added_tokens(family)] + SLM_TOKENS


def _byte_level_tokenizer(pre_tokenizer, normalizer=None):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    return tok


def _train(tok, lines, vocab_size, **trainer_args):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, **trainer_args)
    tok.train_from_iterator(lines, trainer=trainer)


def _sentencepiece_style(lines, vocab_size):
    """A BPE trained on ▁-prefixed words, then laid out like a Llama 2 conversion: <unk> <s> </s>,
    the 256 <0xNN> byte pieces, then the learned pieces; byte_fallback and fuse_unk on."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    _train(tok, lines, vocab_size, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120)
    data = json.loads(tok.to_str())
    learned = sorted(data["model"]["vocab"].items(), key=lambda item: item[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in learned:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    data["model"].update(vocab=vocab, byte_fallback=True, fuse_unk=True, unk_token="<unk>")
    data["added_tokens"] = []
    return data


def _finish(data, family):
    """Adds the family's added tokens through tokenizers itself, so the ids are its own."""
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_tokens(family_added_tokens(family))
    return json.loads(tok.to_str())


def build_family(family, train_lines):
    """The tokenizer.json of a family as a dict."""
    if family == "gpt2":
        tok = _byte_level_tokenizer(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        _train(tok, train_lines, 3000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        return _legacy_merges(_finish(json.loads(tok.to_str()), family))
    if family in ("llama3", "qwen2"):
        pattern = LLAMA3_PATTERN if family == "llama3" else QWEN2_PATTERN
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(pattern=__import__("tokenizers").Regex(pattern), behavior="isolated",
                                 invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
        tok = _byte_level_tokenizer(pre, normalizers.NFC() if family == "qwen2" else None)
        _train(tok, train_lines, 3000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        data = json.loads(tok.to_str())
        if family == "llama3":
            data["model"]["ignore_merges"] = True
            _add_unmerged_words(data)
            data = _finish(data, family)
            bos = next(t["id"] for t in data["added_tokens"] if t["content"] == "<|begin_of_text|>")
            data["post_processor"] = {
                "type": "Sequence", "processors": [
                    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                     "use_regex": True},
                    {"type": "TemplateProcessing",
                     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                {"Sequence": {"id": "A", "type_id": 0}}],
                     "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}},
                              {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                              {"Sequence": {"id": "B", "type_id": 1}}],
                     "special_tokens": {"<|begin_of_text|>": {
                         "id": "<|begin_of_text|>", "ids": [bos], "tokens": ["<|begin_of_text|>"]}}}]}
            return data
        data["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False,
                                  "trim_offsets": False, "use_regex": False}
        return _finish(data, family)
    if family == "llama2":
        data = _sentencepiece_style(train_lines, 2500)
        data["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        data["pre_tokenizer"] = None
        data["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        data["post_processor"] = _template(["<s>"], [], {"<s>": 1})
        return _legacy_merges(_finish(data, family))
    if family == "metaspace":
        data = _sentencepiece_style(train_lines, 2500)
        data["normalizer"] = {"type": "NFKC"}
        data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                 "split": False}
        data["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                           "split": False}
        data["post_processor"] = _template(["<s>"], ["</s>"], {"<s>": 1, "</s>": 2})
        return _finish(data, family)
    raise ValueError(family)


def _add_unmerged_words(data):
    """Whole words the merges do not build (as in tiktoken conversions), so that ignore_merges
    decides: with it a pre-token that is such a word is one token."""
    byte_chars = {}
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    n = 0
    for b in range(256):
        byte_chars[b] = chr(b) if b in printable else chr(256 + n)
        n += b not in printable
    vocab = data["model"]["vocab"]
    for word in [" the", " model", " token", "Hello", " World", "東京", " DON", "LL", " 2024",
                 "ing", " language", " Python", "🙂", "   ", "\n\n"]:
        mapped = "".join(byte_chars[b] for b in word.encode("utf-8"))
        if mapped not in vocab:
            vocab[mapped] = len(vocab)


def _legacy_merges(data):
    """Merges as "a b" strings, as files written before tokenizers 0.20 store them."""
    data["model"]["merges"] = [f"{a} {b}" for a, b in data["model"]["merges"]]
    return data


def _template(before, after, ids):
    single = [{"SpecialToken": {"id": t, "type_id": 0}} for t in before]
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    single += [{"SpecialToken": {"id": t, "type_id": 0}} for t in after]
    pair = single + [{"Sequence": {"id": "B", "type_id": 1}}]
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in ids.items()}}


def write_family(family, directory, train_lines):
    """Writes <directory>/tokenizer.json; returns the tokenizers.Tokenizer loaded from it."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(build_family(family, train_lines), f, ensure_ascii=False, indent=1)
    return Tokenizer.from_file(path)


def with_slm_tokens(tokenizer):
    """The tokenizer plus slm's markers and units, added as special tokens (what slm's
    TokenizerOptions with num_speech_units=NUM_SPEECH_UNITS does)."""
    tokenizer.add_special_tokens(SLM_TOKENS)
    return tokenizer


def training_lines(seed=7, n=4000):
    rng = random.Random(seed)
    return [random_line(rng) for _ in range(n)]
