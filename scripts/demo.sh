#!/usr/bin/env bash
# `make demo`: the whole system end to end on the bundled sample web, on this machine.
#   sample web (127.0.0.1) -> crawl -> Beam ETL (m3w, image-text, video-text) -> shard stats + HTML
#   report -> Ray training (2 workers, tiny model) -> few-shot evaluation (untrained vs trained).
# With PRETRAIN_LM=1 (what `make ablation` sets, with CONFIG=trainer/configs/icl.yaml) a small
# causal LM is first pretrained on the shards' text and kept frozen in the Flamingo, and
# novel-names (naming objects in context with made-up names never seen in training) is evaluated too.
# A rerun reuses every finished stage; delete data/ and runs/ (`make clean`) to start over.
#   scripts/demo.sh --data-only   stops after the pretrained LM (what `make ablation` needs first)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"; export BIN
DATA="${DATA:-data}"
SHARDS="$DATA/shards"
RUN_DIR="${RUN_DIR:-runs/demo}"
LM_DIR="${LM_DIR:-runs/lm}"
PRETRAIN_LM="${PRETRAIN_LM:-0}"
LM_FLAGS="${LM_FLAGS:-}"   # extra `flamboyance pretrain-lm` options, e.g. --keys-on-text
DATA_ONLY=0; [ "${1:-}" = "--data-only" ] && DATA_ONLY=1
CONFIG="${CONFIG:-trainer/configs/demo.yaml}"
: "${WEB_PORT:=8765}" "${WEB_PAGES:=300}" "${WEB_NAMING_PAGES:=0}"
export WEB_PORT WEB_PAGES WEB_NAMING_PAGES
# Local Ray, never a cluster the shell happens to point at.
unset RAY_ADDRESS
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}" NO_ALBUMENTATIONS_UPDATE=1 RAY_DEDUP_LOGS=0
start=$(date +%s)
stage() { printf '\n\033[1m[%s] %s\033[0m  (%ss elapsed)\n' "$1" "$2" "$(( $(date +%s) - start ))"; }
done_mark() { [ -e "$1" ] && echo "  reusing $1 (finished earlier)"; }

stage 1/7 "crawl the sample web (served on 127.0.0.1:$WEB_PORT)"
if ! done_mark "$DATA/web/.done"; then
  mkdir -p "$DATA"
  printf 'http://127.0.0.1:%s/\n' "$WEB_PORT" > "$DATA/seeds.txt"
  scripts/with-sample-web.sh "$BIN/flamboyance" crawl "$DATA/seeds.txt" --out "$DATA/web" \
    --max-pages 1000 --same-host --allow-private-hosts --delay 0
  touch "$DATA/web/.done"
fi

stage 2/7 "Beam ETL: m3w, image-text and video-text shards"
run_etl() {  # job output
  if ! done_mark "$2/manifest.json" && ! done_mark "$2/train/manifest.json"; then
    "$BIN/flamboyance" etl "$1" --input "$DATA/web/*.warc.gz" --output "$2" --allow-private-hosts
  fi
}
export -f run_etl done_mark
export DATA
scripts/with-sample-web.sh bash -c "run_etl m3w $SHARDS/m3w && run_etl image-text $SHARDS/image_text && run_etl video-text $SHARDS/video_text"

stage 3/7 "shard statistics and the HTML report"
for d in "$SHARDS/m3w" "$SHARDS/image_text/train" "$SHARDS/image_text/heldout" "$SHARDS/video_text"; do
  echo "== $d"
  "$BIN/flamboyance" stats "$d" --json "$d/dataset_stats.json"
done
"$BIN/flamboyance" stats "$SHARDS/m3w" --report "$DATA/report" >/dev/null

stage 4/7 "pretrain the small causal LM on the shards' text (+ name-binding text)"
if [ "$PRETRAIN_LM" != 1 ]; then
  echo "  skipped: the demo's frozen LM is a tiny random one (PRETRAIN_LM=1 pretrains one; make ablation)"
elif ! done_mark "$LM_DIR/config.json"; then
  # shellcheck disable=SC2086  # LM_FLAGS: words on purpose
  "$BIN/flamboyance" pretrain-lm --output "$LM_DIR" --m3w "$SHARDS/m3w" --image-text "$SHARDS/image_text/train" $LM_FLAGS
fi
[ "$DATA_ONLY" = 1 ] && exit 0

stage 5/7 "train a Flamingo on the frozen LM, on a local Ray instance (2 workers)"
if ! done_mark "$RUN_DIR/final"; then
  # Ray's placement-group cleaner warns every few seconds that the state API (part of the
  # dashboard, which the local instance does not start) is unavailable; that line is noise here.
  "$BIN/flamboyance" train --config "$CONFIG" "run_dir=$RUN_DIR" 2>&1 \
    | grep --line-buffered -v "Failed to query Ray Train Controller actor state"
fi

stage 6/7 "few-shot evaluation, untrained vs trained: captioning (held-out split) and novel-names"
for which in init final; do
  if ! done_mark "$RUN_DIR/eval_$which.json"; then
    "$BIN/flamboyance" eval --checkpoint "$RUN_DIR/$which" --task captioning \
      --data "$SHARDS/image_text/heldout" --support-data "$SHARDS/image_text/train" \
      --shots 0,4,8 --seeds 0,1 --output "$RUN_DIR/eval_$which.json"
  fi
  if [ "$PRETRAIN_LM" = 1 ] && ! done_mark "$RUN_DIR/eval_novel_names_$which.json"; then
    "$BIN/flamboyance" eval --checkpoint "$RUN_DIR/$which" --task novel-names --limit 200 \
      --shots 0,4,8 --seeds 0,1 --output "$RUN_DIR/eval_novel_names_$which.json"
  fi
done

stage 7/7 "summary"
"$BIN/python" scripts/demo_summary.py --data "$DATA" --run-dir "$RUN_DIR"
echo "demo finished in $(( $(date +%s) - start ))s"
