#!/usr/bin/env bash
# Packs what step `dictionary` of scripts/gpu/run_checks.sh needs and the GPU machine cannot make
# (it has no WordNet package): the WordNet corpus, the 1000- and 3000-word dictionaries and the
# spoken questions' text and the voice's gloss pieces, into build/gpu-dictionary-data.tar.xz (carry it with the bundle).
# usage: scripts/gpu/make_dictionary_data.sh   (after scripts/build slm; SLM overrides the binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
slm=${SLM:-build/cli/slm}
[ -f data/wordnet/qa.jsonl ] || "$slm" data corpus --source wordnet --out data/wordnet
"$slm" data dictionary --corpus data/wordnet --words 1000 --out data/wordnet/dictionary.jsonl
"$slm" data dictionary --corpus data/wordnet --words 3000 --out data/wordnet/dictionary_3000.jsonl
[ -s data/speech_questions/questions.txt ] || { echo "no data/speech_questions/questions.txt: make it as samples/models/README.md (speech_encoder_dict) says" >&2; exit 1; }
python3 bench/dictionary_tts_text.py data/wordnet/dictionary.jsonl data  # the voice's gloss pieces (step voice)
tar -cJf build/gpu-dictionary-data.tar.xz data/wordnet/text data/wordnet/sentences data/wordnet/qa.jsonl \
  data/wordnet/dictionary.jsonl data/wordnet/dictionary_3000.jsonl data/speech_questions/questions.txt \
  data/tts_glosses.txt data/tts_glosses_heldout.txt
ls -la build/gpu-dictionary-data.tar.xz
