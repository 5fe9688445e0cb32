#!/usr/bin/env bash
# Training speech for speech_encoder_closed_gpu.yaml: every sentence of the ASR task's closed domain
# (data/speech_encoder_closed/train/sentences.txt or $SENTENCES, written by the closed-vocabulary
# selection) spoken REPEATS times, by random voices other than +f5, synthesized by JOBS parallel
# `slm data synth` processes (one shard each, its own speaker seed), merged into one manifest.
# usage: scripts/gpu/encoder_data.sh OUT_DIR [REPEATS=3] [JOBS=nproc]   (SLM=path/to/slm)
set -euo pipefail
out=$1; repeats=${2:-3}; jobs=${3:-$(nproc)}
slm=${SLM:-build/cli/slm}
sentences=${SENTENCES:-data/speech_encoder_closed/train/sentences.txt}
[ -s "$sentences" ] || { echo "encoder_data.sh: no sentences at $sentences" >&2; exit 1; }
[ -e "$out/manifest.jsonl" ] && { echo "$out/manifest.jsonl exists; nothing to do"; exit 0; }
mkdir -p "$out"
work=$(mktemp -d "$out/.shards.XXXXXX")
for r in $(seq "$repeats"); do cat "$sentences"; done > "$work/all.txt"
split -n "l/$jobs" -d -a 3 "$work/all.txt" "$work/part"
pids=()
for part in "$work"/part*; do
  k=${part##*part}
  "$slm" data synth --text "$part" --out "$out/s$k" --seed "$((1000 + 10#$k))" --exclude-voices +f5 \
    > "$work/log$k" 2>&1 &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
if [ "$failed" != 0 ]; then tail -n 5 "$work"/log* >&2; echo "encoder_data.sh: a shard failed" >&2; exit 1; fi
for part in "$work"/part*; do
  k=${part##*part}
  sed -e "s#\"audio\":\"wav/#\"audio\":\"s$k/wav/#" -e "s#\"id\":\"#\"id\":\"s$k-#" "$out/s$k/manifest.jsonl"
done > "$work/manifest.jsonl"
mv "$work/manifest.jsonl" "$out/manifest.jsonl"
rm -rf "$work"
echo "$out/manifest.jsonl: $(wc -l < "$out/manifest.jsonl") utterances"
