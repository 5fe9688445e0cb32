#!/usr/bin/env bash
# Packs the interleaving data of samples/configs/interleaved_tiny.yaml for the GPU machine into
# out/gpu_data (an ignored path the device call carries): the three units manifests without their
# "audio" field (units mode needs no recordings; the wavs would not fit the carry limit) and the
# unit tokenizer. Run after the data preparation in the config's header.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf out/gpu_data; mkdir -p out/gpu_data
for d in tts_voice tts_voice_more tts_voice_valid; do
  mkdir -p out/gpu_data/$d
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line); e.pop("audio", None); print(json.dumps(e))' data/$d/manifest_interleaved.jsonl \
    > out/gpu_data/$d/manifest_interleaved.jsonl
done
cp -r runs/tts_voice_units out/gpu_data/tts_voice_units
du -sh out/gpu_data
