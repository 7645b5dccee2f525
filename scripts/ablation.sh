#!/usr/bin/env bash
# `make ablation`: does in-context learning come from M3W? On the sample web with naming stories
# (made-up names bound to objects differently on each page), pretrains a small causal LM on the
# shards' text, trains a Flamingo on it (frozen) with and without M3W (pairs only:
# `data.m3w=null`), evaluates both on novel-names and captioning, and prints the curves side by
# side. Stages 1-4 are `scripts/demo.sh --data-only` with PRETRAIN_LM=1 (reused when done).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"; export BIN
# Its own data (the sample web with 300 naming stories), LM and runs: the demo's stay as they are.
DATA="${ICL_DATA:-data/icl}"
SHARDS="$DATA/shards"
CONFIG="${ICL_CONFIG:-trainer/configs/icl.yaml}"   # reads data/icl/shards and runs/icl/lm
RUN_DIR="${ICL_RUN_DIR:-runs/icl/with_m3w}"
ABLATION_DIR="${ICL_ABLATION_DIR:-runs/icl}"
export DATA CONFIG RUN_DIR PRETRAIN_LM=1 LM_DIR="${ICL_LM_DIR:-runs/icl/lm}" WEB_NAMING_PAGES="${WEB_NAMING_PAGES:-300}"
SEEDS="${SEEDS:-0,1}"
unset RAY_ADDRESS
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}" NO_ALBUMENTATIONS_UPDATE=1 RAY_DEDUP_LOGS=0
start=$(date +%s)
stage() { printf '\n\033[1m[%s] %s\033[0m  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - start ))"; }

stage 1/4 "data and the pretrained LM (the demo's stages 1-4)"
scripts/demo.sh --data-only

train() {  # run_dir [overrides...]
  local run_dir=$1; shift
  if [ -e "$run_dir/final" ]; then echo "  reusing $run_dir/final (finished earlier)"; return; fi
  "$BIN/flamboyance" train --config "$CONFIG" "run_dir=$run_dir" "$@" 2>&1 \
    | grep --line-buffered -v "Failed to query Ray Train Controller actor state"
}
evaluate() {  # run_dir
  local out
  for task in novel-names captioning; do
    out="$1/eval_${task//-/_}_final.json"
    [ "$task" = captioning ] && out="$1/eval_final.json"
    [ -e "$out" ] && { echo "  reusing $out"; continue; }
    if [ "$task" = captioning ]; then
      "$BIN/flamboyance" eval --checkpoint "$1/final" --task captioning --data "$SHARDS/image_text/heldout" \
        --support-data "$SHARDS/image_text/train" --shots 0,4,8 --seeds "$SEEDS" --output "$out"
    else
      "$BIN/flamboyance" eval --checkpoint "$1/final" --task novel-names --limit 200 --shots 0,4,8 \
        --seeds "$SEEDS" --output "$out"
    fi
  done
}

stage 2/4 "train with M3W (the demo's run, $RUN_DIR)"
train "$RUN_DIR"
stage 3/4 "train without M3W: image-text and video-text pairs only ($ABLATION_DIR/no_m3w)"
train "$ABLATION_DIR/no_m3w" data.m3w=null
stage 4/4 "evaluate both, side by side"
evaluate "$RUN_DIR"
evaluate "$ABLATION_DIR/no_m3w"
"$BIN/python" scripts/demo_summary.py --compare "with M3W=$RUN_DIR" "without M3W=$ABLATION_DIR/no_m3w"
echo "ablation finished in $(( $(date +%s) - start ))s"
