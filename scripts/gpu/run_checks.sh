#!/usr/bin/env bash
# The GPU checks of issues 3-6 in one run on the lent GPU machine (device tool), from the bundle
# that scripts/gpu/make_bundle.sh packed here (carry build/gpu-bundle.tar.xz):
#   1. bf16 logits parity of the Llama backbone vs transformers on the GPU (issue 3)
#   2. TinyLlama-1.1B-shaped bf16 decode: slm vs transformers generate, same card (issue 3)
#   3. whisper-base / CLIP-ViT-B/16-shaped encoders in bf16 vs transformers (issue 4)
#   4. adapter training step, TinyLlama + whisper-base shapes, bf16 weights and bf16 autocast: slm vs
#      PyTorch eager, MFU (issue 5)
#   5. streaming load sweep with the TinyLlama-shaped model (issue 6)
#   6. interleaved vs speech-only training of interleaved_tiny.yaml, 3 seeds (issue 8; needs the data
#      of scripts/gpu/pack_interleave_data.sh, carried as out/gpu_data)
# Each step has its own time limit and writes its output to $OUT as it finishes, so a run cut short
# still returns what it measured. DEVICE=cpu QUICK=1 runs the same steps with tiny shapes (to test
# this script on a CPU machine).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/slm-gpu-out}; mkdir -p "$OUT"; export OUT
DEVICE=${DEVICE:-cuda}; QUICK=${QUICK:-0}
B=/tmp/slm-gpu; W=/tmp/slm-gpu-work; mkdir -p "$B" "$W"
[ -x "$B/bin/slm" ] || tar -C "$B" -xJf build/gpu-bundle.tar.xz
PY=${PY:-python3}
TORCH_LIB=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
# The bundle's Debian libraries are for our binaries only: Python (called directly or by a bench as
# its baseline) gets the machine's own libraries through a wrapper that drops LD_LIBRARY_PATH.
printf '#!/bin/sh\nunset LD_LIBRARY_PATH\nexec %s "$@"\n' "$(command -v $PY)" > "$B/python"; chmod +x "$B/python"
PY=$B/python
export LD_LIBRARY_PATH=$B/lib:$TORCH_LIB
export ESPEAK_DATA_PATH=$B  # espeak-ng reads $ESPEAK_DATA_PATH/espeak-ng-data
SLM=$B/bin/slm
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/steps.log"; }
STEPS=${STEPS:-parity decode encode train stream interleave}  # which steps to run
step() {  # step NAME SECONDS COMMAND...: stdout -> $OUT/NAME.out, stderr -> $OUT/errors.log
  local name=$1 limit=$2; shift 2
  case " $STEPS " in *" ${name%%_*} "*) ;; *) return ;; esac
  log "start $name"; local t0=$SECONDS
  echo "=== $name" >> "$OUT/errors.log"
  timeout "$limit" "$@" > "$OUT/$name.out" 2>> "$OUT/errors.log"; local rc=$?
  log "end $name rc=$rc $((SECONDS - t0)) s"; tail -3 "$OUT/$name.out"
}

{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
  $PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  ldd "$SLM" | grep -E 'not found|torch_cuda|imgcodecs' || true; } 2>&1 | tee -a "$OUT/steps.log"
name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
# Published dense bf16 peaks and memory bandwidths (NVIDIA data sheets).
case "$name" in
  *H200*) PEAK=989; BW=4800 ;;
  *H100*PCIe*) PEAK=756; BW=2000 ;;
  *H100*) PEAK=989; BW=3350 ;;
  *) PEAK=0; BW=0 ;;
esac
log "device '$name': bf16 peak ${PEAK} TFLOPS, memory ${BW} GB/s"

if [ "$QUICK" = 1 ]; then
  SHAPE="--hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 512 --prompt 16 --new 8"
  ENC="--preset tiny"; TRAIN="--preset tiny --batch-size 2 --steps 2"; STREAM="--duration 2 --max-streams 2"
  DTYPE=float32; IL_STEPS=4; IL_SEEDS="1"
else
  SHAPE="--hidden 2048 --layers 22 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 32000 --prompt 128 --new 128"
  ENC="--preset base"; TRAIN="--preset tinyllama --batch-size 16 --steps 10 --work-dir $W/tinyllama"
  STREAM="--preset tinyllama --work-dir $W/tinyllama --duration 5 --max-streams 256"
  DTYPE=bfloat16; IL_STEPS=${IL_STEPS:-2000}; IL_SEEDS=${IL_SEEDS:-1 2 3}
fi

step parity 120 bash -c "$PY tests/parity/make_llama_references.py --bf16 $W/parity $DEVICE &&
  SLM_PARITY_DIR=$W/parity $B/bin/parity_tests --gtest_filter='LlamaParityBf16.*'"
step decode_slm 150 $SLM bench decode --device $DEVICE --dtype $DTYPE $SHAPE --batch-sizes 1 --repeats 3 --bandwidth-gbs $BW --json
step decode_transformers 150 $PY scripts/gpu/decode_transformers.py $SHAPE --device $DEVICE --dtype $DTYPE --bandwidth-gbs $BW
step encode 200 $SLM bench encode $ENC --device $DEVICE --dtype $DTYPE --python $PY --json
step train 240 $SLM bench train $TRAIN --device $DEVICE --dtype $DTYPE --peak-tflops $PEAK --python $PY --json
# Mixed precision as most training runs use it: float32 weights, bf16 autocast.
step train_amp 240 $SLM bench train $TRAIN --device $DEVICE --dtype float32 --precision $DTYPE --peak-tflops $PEAK --python $PY --json
step stream 240 $SLM bench stream $STREAM --task respond --sweep --device $DEVICE --dtype $DTYPE --json
step interleave 420 bash scripts/gpu/interleave_runs.sh $SLM $W/interleave $DEVICE $IL_STEPS $IL_SEEDS
log "all steps done"
