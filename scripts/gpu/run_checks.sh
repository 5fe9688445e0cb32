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
#   7. the closed-vocabulary speech encoder trained on the GPU (speech_encoder_closed_gpu.yaml, issue 5;
#      needs data/wordnet/sentences and data/speech_encoder_closed/train/sentences.txt carried); its
#      speech is synthesized on CPU cores 2-15 from the start, while the earlier steps run
#   8. asr_tiny.yaml's adapters trained on the GPU for more steps than its CPU budget (a diagnostic:
#      does the LM alone keep improving with steps?); needs data/wordnet/sentences and
#      data/asr/train/sentences.txt carried; its training speech is synthesized here first
#   9. the tiny image tower trained on the GPU: the recipe and two variants at once (image_encoder_tiny_gpu.yaml)
#  10. the serving engine's decoder (issue 22): 64 concurrent answers vs transformers generate of the
#      same prompts as a padded batch, batch-1 roofline, 4 LoRA adapters mixed vs 1 (slm bench engine);
#      the stream sweeps (step 5) go to 256 RESPOND and 512 TRANSCRIBE streams
#  11. the spoken dictionary's models (issue 25; needs build/gpu-dictionary-data.tar.xz carried, made by
#      scripts/gpu/make_dictionary_data.sh): backbone_dict.yaml's recipe and the larger 3000-word
#      backbone_dict_gpu.yaml trained on the GPU side by side, then the served encoder continued
#      (speech_encoder_dict.yaml) on 3x the spoken questions and 4x the sentences synthesized on the
#      CPU cores meanwhile; each run's typed exact match / test CER is in its result.json
#  12. the spoken dictionary's voice (issue 25; the same carried data): tts_dict.yaml on 2x the
#      one-voice sentences, 12000 steps of 32 on the GPU; its round trip in result.json, the adapter in voice.tar

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
STEPS=${STEPS:-engine stream parity decode encode train interleave encoder asr vision dictionary voice}  # which steps to run
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
  ENC="--preset tiny"; TRAIN="--preset tiny --steps 2"; TB=2; STREAM="--duration 2 --max-streams 2"
  ENGINE="--preset tiny --prompt 16 --new 8"; ROWS=4; ADAPTERS=2; STREAM_T="$STREAM"
  DTYPE=float32; IL_STEPS=4; IL_SEEDS="1"; ENC_REPEATS=1; ENC_SENTENCES=20; ASR_STEPS=2; ASR_MINUTES=1
  ENC_SET=(--set train.steps=6 --set train.batch_size=4 --set eval.every=3 --set data.valid_utterances=8
    --set data.test_utterances=8 --set device=cpu)
else
  SHAPE="--hidden 2048 --layers 22 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 32000 --prompt 128 --new 128"
  ENC="--preset base"; TRAIN="--preset tinyllama --steps 10 --work-dir $W/tinyllama"; TB=16
  STREAM="--preset tinyllama --work-dir $W/tinyllama --duration 5 --max-streams 256"
  STREAM_T="--preset tinyllama --work-dir $W/tinyllama --duration 5 --max-streams 512"
  ENGINE="--preset tinyllama --work-dir $W/tinyllama --prompt 128 --new 128"; ROWS=64; ADAPTERS=4
  DTYPE=bfloat16; IL_STEPS=${IL_STEPS:-2000}; IL_SEEDS=${IL_SEEDS:-1 2 3}; ENC_REPEATS=3; ENC_SENTENCES=0
  ASR_STEPS=${ASR_STEPS:-6000}; ASR_MINUTES=${ASR_MINUTES:-2.5}
  ENC_SET=()
fi

# The encoder's speech is synthesized on cores 2-15 while steps 1-6 run (they use a core or two).
ENC_DATA=$W/encoder/train
case " $STEPS " in *" encoder "*)
  mkdir -p "$W/encoder"
  src=data/speech_encoder_closed/train/sentences.txt
  if [ "$ENC_SENTENCES" -gt 0 ]; then head -n "$ENC_SENTENCES" "$src" > "$W/encoder/sentences.txt"
  else cp "$src" "$W/encoder/sentences.txt"; fi
  pin=""; command -v taskset >/dev/null && [ "$(nproc)" -ge 8 ] && pin="taskset -c 2-$(($(nproc) - 1))"
  log "encoder data: synthesizing in the background ($pin)"
  SLM=$SLM SENTENCES=$W/encoder/sentences.txt $pin bash scripts/gpu/encoder_data.sh "$ENC_DATA" "$ENC_REPEATS" \
    $(($(nproc) > 2 ? $(nproc) - 2 : 1)) > "$W/encoder/data.log" 2>&1 &
  ENC_PID=$! ;;
esac

step engine 300 $SLM bench engine $ENGINE --rows $ROWS --adapters $ADAPTERS --device $DEVICE --dtype $DTYPE --python $PY \
  --bandwidth-gbs $BW --json
step engine_b1 120 $SLM bench engine $ENGINE --rows 1 --adapters 0 --no-transformers --device $DEVICE --dtype $DTYPE \
  --bandwidth-gbs $BW --json
step stream 240 $SLM bench stream $STREAM --task respond --sweep --device $DEVICE --dtype $DTYPE --json
step stream_transcribe 240 $SLM bench stream $STREAM_T --task transcribe --sweep --device $DEVICE --dtype $DTYPE --json
step parity 120 bash -c "$PY tests/parity/make_llama_references.py --bf16 $W/parity $DEVICE &&
  SLM_PARITY_DIR=$W/parity $B/bin/parity_tests --gtest_filter='LlamaParityBf16.*'"
step decode_slm 150 $SLM bench decode --device $DEVICE --dtype $DTYPE $SHAPE --batch-sizes 1 --repeats 3 --bandwidth-gbs $BW --json
step decode_transformers 150 $PY scripts/gpu/decode_transformers.py $SHAPE --device $DEVICE --dtype $DTYPE --bandwidth-gbs $BW
step encode 200 $SLM bench encode $ENC --device $DEVICE --dtype $DTYPE --python $PY --json
step train 240 $SLM bench train $TRAIN --batch-size $TB --device $DEVICE --dtype $DTYPE --peak-tflops $PEAK --python $PY --json
# Larger batches: the same per-step host work over more device work.
step train_b32 240 $SLM bench train $TRAIN --batch-size $((2 * TB)) --device $DEVICE --dtype $DTYPE \
  --peak-tflops $PEAK --python $PY --json
# Where the device time goes (Kineto), in its own step so that a profiler failure costs no timing.
step train_profile 240 bash -c "for b in $TB $((2 * TB)); do $SLM bench train $TRAIN --batch-size \$b \
  --device $DEVICE --dtype $DTYPE --peak-tflops $PEAK --python none --json --profile-steps 3; done"
# What running the LM's last layer at the target positions only saves on the device: the step with
# the whole last layer (--full-last-layer) and without, alternating, at both batch sizes.
step train_lastlayer 240 bash -c "for b in $TB $((2 * TB)); do for f in '' --full-last-layer '' --full-last-layer; do \
  $SLM bench train $TRAIN --batch-size \$b --device $DEVICE --dtype $DTYPE --peak-tflops $PEAK --python none --json \$f | tail -n 1; done; done"
# Mixed precision as most training runs use it: float32 weights, bf16 autocast.
step train_amp 240 $SLM bench train $TRAIN --batch-size $TB --device $DEVICE --dtype float32 --precision $DTYPE --peak-tflops $PEAK --python $PY --json
step interleave 420 bash scripts/gpu/interleave_runs.sh $SLM $W/interleave $DEVICE $IL_STEPS $IL_SEEDS
case " $STEPS " in *" encoder "*)
  log "waiting for the encoder data"; wait "$ENC_PID"; log "encoder data rc=$?: $(tail -3 "$W/encoder/data.log")"
  step encoder 480 $SLM audio pretrain-encoder --config samples/configs/speech_encoder_closed_gpu.yaml \
    --set data.speech_dir=$W/encoder --set output_dir=$W/encoder/run "${ENC_SET[@]}"
  tar -C "$W/encoder" -cf "$OUT/encoder.tar" run ;;
esac
case " $STEPS " in *" asr "*)
  head -n 8000 data/asr/train/sentences.txt > "$W/asr_sentences.txt"
  SLM=$SLM SENTENCES=$W/asr_sentences.txt bash scripts/gpu/encoder_data.sh data/asr/train 1 "$(nproc)" | tee -a "$OUT/steps.log"
  step asr 420 $SLM train --config samples/configs/asr_tiny.yaml --set model.device=$DEVICE --set train.steps=$ASR_STEPS \
    --set train.max_minutes=$ASR_MINUTES --set eval.every=0 --set eval.max_examples=100 --set checkpoint.every=0 \
    --set output_dir=$W/asr --set threads=4
  cp "$W/asr/metrics.jsonl" "$OUT/asr_metrics.jsonl" ;;
esac
# The image tower on the GPU (image_encoder_tiny_gpu.yaml): the recipe and two variants side by side on the
# one GPU (each alone leaves it mostly idle): finer patches (4 px: 256 tokens), a wider, deeper tower.
# 4 CPU threads each: OpenMP threads beyond the cores (3 x 8 on 16) stalled the data preparation for minutes.
case " $STEPS " in *" vision "*)
  mkdir -p "$W/vision"; pids=()
  for v in ${VIS_VARIANTS:-p8 p4 wide}; do
    case $v in
      p8) VSET=() ;;
      p4) VSET=(--set model.patch_size=4 --set train.steps=${VIS_P4_STEPS:-4000} --set train.batch_size=256) ;;
      wide) VSET=(--set model.hidden_size=256 --set model.intermediate_size=1024 --set model.num_hidden_layers=6
        --set train.steps=${VIS_WIDE_STEPS:-6000}) ;;
    esac
    [ "$QUICK" = 1 ] && VSET+=(--set data.count=600 --set train.steps=4 --set train.batch_size=8 --set eval.every=2 --set device=cpu)
    log "start vision_$v"
    timeout 600 $SLM vision pretrain-encoder --config samples/configs/image_encoder_tiny_gpu.yaml \
      --set output_dir=$W/vision/$v --set train.max_minutes=${VIS_MINUTES:-6} --set threads=4 "${VSET[@]}" \
      > "$OUT/vision_$v.out" 2> "$OUT/vision_$v.err" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; log "vision run rc=$?"; done
  tar -C "$W/vision" -cf "$OUT/vision.tar" . ;;
esac
case " $STEPS " in *" dictionary "*)
  [ -f data/wordnet/dictionary_3000.jsonl ] || tar -xJf build/gpu-dictionary-data.tar.xz
  if [ "$QUICK" = 1 ]; then
    DB=(--set train.steps=4 --set eval.every=2 --set device=cpu --set threads=1); DG=(--set train.steps=4 --set eval.every=2
      --set device=cpu --set model.hidden_size=64 --set model.intermediate_size=128 --set model.num_hidden_layers=2
      --set model.num_attention_heads=4 --set data.qa_repeat=1 --set threads=1 --set train.batch_size=4)
    DQ=20; DS=40; DE=(--set train.steps=4 --set eval.every=2 --set device=cpu --set data.valid_utterances=8 --set data.test_utterances=8)
  else
    DB=(--set device=$DEVICE --set threads=4); DG=(--set device=$DEVICE); DQ=0; DS=16000
    DE=(--set device=$DEVICE --set train.steps=8000 --set train.batch_size=64 --set train.max_minutes=6 --set eval.every=2000
      --set threads=4)
  fi
  # Speech first, on the CPU cores, while both backbones train.
  mkdir -p "$W/dict"
  q=data/speech_questions/questions.txt; [ "$DQ" -gt 0 ] && { head -n "$DQ" "$q" > "$W/dict/q.txt"; q=$W/dict/q.txt; }
  SLM=$SLM SENTENCES=$q bash scripts/gpu/encoder_data.sh "$W/dict/questions" 3 $(($(nproc) > 2 ? $(nproc) - 2 : 1)) \
    > "$W/dict/data.log" 2>&1 &
  DATA_PID=$!
  step dictionary_backbone 480 $SLM text pretrain --config samples/configs/backbone_dict.yaml --set output_dir=$W/dict/backbone "${DB[@]}" &
  B1=$!
  step dictionary_backbone_gpu 480 $SLM text pretrain --config samples/configs/backbone_dict_gpu.yaml --set output_dir=$W/dict/backbone_gpu "${DG[@]}"
  wait $B1; wait $DATA_PID; log "dictionary speech rc=$?: $(tail -2 "$W/dict/data.log")"
  step dictionary_encoder 480 $SLM audio pretrain-encoder --config samples/configs/speech_encoder_dict.yaml \
    --set init_from=samples/models/speech_encoder_dict --set data.speech_dir=$W/dict/speech --set data.train_utterances=$DS \
    --set "data.extra_train_manifests=[$W/dict/questions/manifest.jsonl]" --set output_dir=$W/dict/encoder "${DE[@]}"
  for r in backbone backbone_gpu encoder; do [ -f "$W/dict/$r/result.json" ] && cp "$W/dict/$r/result.json" "$OUT/dictionary_$r.json"; done
  tar -C "$W/dict" -cf "$OUT/dictionary.tar" --exclude='*/wav' --exclude=questions --exclude=speech . ;;
esac
case " $STEPS " in *" voice "*)
  # The spoken dictionary's voice (samples/configs/tts_dict.yaml) trained on the GPU for longer and
  # on 2x the one-voice sentences: its data made here on the CPU cores as the config's header says,
  # the committed units and decoder kept (so the adapter drops into serve.yaml as it is).
  [ -f data/tts_glosses.txt ] || tar -xJf build/gpu-dictionary-data.tar.xz
  V=$W/voice; mkdir -p "$V"
  if [ "$QUICK" = 1 ]; then
    VN=24; VV=8; VT=(--set train.steps=4 --set model.device=cpu --set eval.max_examples=2 --set threads=1)
  else
    VN=12000; VV=300; VT=(--set model.device=$DEVICE --set train.steps=12000 --set train.batch_size=32
      --set train.max_minutes=7 --set eval.max_examples=80 --set threads=4)
  fi
  {
    head -n "$VN" data/wordnet/sentences/train.txt > "$V/sentences.txt"
    head -n "$VV" data/wordnet/sentences/valid.txt > "$V/valid.txt"
    head -n "$VN" data/tts_glosses.txt > "$V/glosses.txt"
    for d in sentences valid glosses; do
      $SLM data synth --text "$V/$d.txt" --out "$V/$d" --voices en-us --fixed-prosody &&
        $SLM audio units encode --units samples/models/speech_units_voice --manifest "$V/$d/manifest.jsonl" \
          --out "$V/$d/manifest_units.jsonl" --task tts || exit 1
    done
  } > "$V/data.log" 2>&1; log "voice data rc=$?: $(tail -1 "$V/data.log")"
  step voice 600 $SLM train --config samples/configs/tts_dict.yaml --set output_dir=$V/run \
    --set "data.train=[{manifest: $V/sentences/manifest_units.jsonl, task: tts, prompt: 'Say: {text} {word_phonemes}', max_units: 200}, {manifest: $V/glosses/manifest_units.jsonl, task: tts, prompt: 'Say: {text} {word_phonemes}', max_units: 200}]" \
    --set "data.valid=[{manifest: $V/valid/manifest_units.jsonl, task: tts, prompt: 'Say: {text} {word_phonemes}', max_units: 130}]" \
    "${VT[@]}"
  [ -f "$V/run/result.json" ] && cp "$V/run/result.json" "$OUT/voice_result.json"
  tar -C "$V/run" -cf "$OUT/voice.tar" adapters result.json metrics.jsonl 2>/dev/null ;;
esac
log "all steps done"
