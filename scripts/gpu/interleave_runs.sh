#!/usr/bin/env bash
# Issue 8's comparison on a GPU: samples/configs/interleaved_tiny.yaml trained with interleaving
# (the config's stream shares) and on speech-only sequences, for several seeds, all runs at once on
# one card. Data: the units manifests and unit tokenizer packed by scripts/gpu/pack_interleave_data.sh
# (carried as out/gpu_data). Usage: interleave_runs.sh SLM WORK_DIR DEVICE STEPS SEEDS...
# Each run's metrics.jsonl, result.json and log go into $OUT/il_runs.tgz. Env: IL_LIMIT (seconds
# each training may take, default 330, so that the copies happen inside the caller's time limit),
# IL_EXTRA (more --set options, e.g. a smaller evaluation for a CPU test), IL_MODES (default "mix speech";
# also morespeech: shares 0.1/0.5/0.4, eta5: half the words of interleaved sequences spoken).
# Everything is also packed into $OUT/il_runs.tgz (the device returns a limited number of files).
set -u
SLM=$1 W=$2 DEVICE=$3 STEPS=$4; shift 4
cd "$(dirname "$0")/../.."
mkdir -p "$W/il"
sed -e 's#data/tts_voice#out/gpu_data/tts_voice#g' -e 's#runs/tts_voice_units#out/gpu_data/tts_voice_units#' \
  samples/configs/interleaved_tiny.yaml > "$W/il/config.yaml"
every=$((STEPS / 4))
pids=()
for seed in "$@"; do
  for mode in ${IL_MODES:-mix speech}; do
    case $mode in  # mix: the config as it is; the others change the stream shares or the spans
      speech) extra=(--set data.interleave.shares.text=0 --set data.interleave.shares.interleaved=0) ;;
      morespeech) extra=(--set data.interleave.shares.text=0.1 --set data.interleave.shares.interleaved=0.5
                         --set data.interleave.shares.speech=0.4) ;;
      eta5) extra=(--set data.interleave.eta=0.5) ;;
      *) extra=() ;;
    esac
    run=$W/il/${mode}_s$seed
    rm -rf "$run"
    timeout "${IL_LIMIT:-330}" "$SLM" train --config "$W/il/config.yaml" --set output_dir="$run" --set seed="$seed" --set model.device="$DEVICE" \
      --set train.steps="$STEPS" --set eval.every="$every" --set checkpoint.every="$STEPS" --set threads=2 \
      "${extra[@]}" ${IL_EXTRA:-} --json > "$run.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
tar -C "$W/il" -czf "$OUT/il_runs.tgz" $(cd "$W/il" && ls -d *_s*/metrics.jsonl *_s*/result.json *.log 2>/dev/null)
exit $status
