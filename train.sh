#!/usr/bin/env bash
# Generate the data if needed, then train a model and test it once (BERT4Rec by default; --CONFIG_PATH
# bert_train/sasrec_config_ml-1m.json trains SASRec, bert_train/mostpop_config.json scores the popularity baseline).
#
#   ./train.sh -local y [data options] [trainrec.py flags]    one machine, one process
#   ./train.sh -local n [data options] [trainrec.py flags]    data-parallel via paddle.distributed.launch
#
# Data options (consumed here, passed to bert_train/gen_data_fin.py):
#   --data_name NAME     dataset folder under the data root (default ml-1m; downloaded from GroupLens if missing)
#   --raw_path PATH      use a local ratings file/zip/folder or a `user item` sequence file instead of downloading
#   --data_root DIR      where generated datasets live (default: <repo>/data)
#   --holdout H          valid_test (default: early stopping on validation) or test (paper protocol)
# Environment: PYTHON (default python), NPROC (processes for -local n, default 2), NODES_IPS
# (comma-separated hosts for a multi-machine -local n run, passed to --ips).
# Everything else is passed to trainrec.py (see `python trainrec.py --help`).
set -euo pipefail

usage() {
  echo "usage: ./train.sh -local y|n [--data_name NAME] [--raw_path PATH] [--data_root DIR] [--holdout H] [trainrec.py flags]" >&2
  exit 2
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
LOCAL=""
DATA_NAME="ml-1m"
RAW_PATH=""
DATA_ROOT="$HERE/data"
HOLDOUT="valid_test"
PASS=()

while [ $# -gt 0 ]; do
  case "$1" in
    -local|--local) [ $# -ge 2 ] || usage; LOCAL="$2"; shift 2 ;;
    --data_name) [ $# -ge 2 ] || usage; DATA_NAME="$2"; shift 2 ;;
    --raw_path) [ $# -ge 2 ] || usage; RAW_PATH="$2"; shift 2 ;;
    --data_root) [ $# -ge 2 ] || usage; DATA_ROOT="$2"; shift 2 ;;
    --holdout) [ $# -ge 2 ] || usage; HOLDOUT="$2"; shift 2 ;;
    -local=*|--local=*) LOCAL="${1#*=}"; shift ;;
    --data_name=*) DATA_NAME="${1#*=}"; shift ;;
    --raw_path=*) RAW_PATH="${1#*=}"; shift ;;
    --data_root=*) DATA_ROOT="${1#*=}"; shift ;;
    --holdout=*) HOLDOUT="${1#*=}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --*) PASS+=("$1"); shift ;;
    *) if [ ${#PASS[@]} -gt 0 ]; then PASS+=("$1"); shift; else echo "train.sh: unexpected argument '$1'" >&2; usage; fi ;;
  esac
done
case "$LOCAL" in
  y|n) ;;
  "") echo "train.sh: -local y|n is required" >&2; usage ;;
  *) echo "train.sh: -local must be y or n, got '$LOCAL'" >&2; usage ;;
esac
case "$HOLDOUT" in valid_test|test) ;; *) echo "train.sh: --holdout must be valid_test or test" >&2; usage ;; esac

DATA_DIR="$DATA_ROOT/$DATA_NAME"
GEN=("$PYTHON" "$HERE/bert_train/gen_data_fin.py" --data_name "$DATA_NAME" --output_dir "$DATA_DIR" --holdout "$HOLDOUT")
[ -n "$RAW_PATH" ] && GEN+=(--raw_path "$RAW_PATH")
# A no-op when the data is already generated with the same input and options.
"${GEN[@]}"

TRAIN=("$HERE/trainrec.py" --DATA_DIR "$DATA_DIR")
if [ "$HOLDOUT" = "test" ]; then TRAIN+=(--VALIDATION_DATA_DIR none); fi
if [ "$LOCAL" = "y" ]; then
  exec "$PYTHON" "${TRAIN[@]}" "${PASS[@]+"${PASS[@]}"}"
fi
LAUNCH=("$PYTHON" -m paddle.distributed.launch --nproc_per_node "${NPROC:-2}" --log_dir "${LOG_DIR:-$HERE/log}")
[ -n "${NODES_IPS:-}" ] && LAUNCH+=(--ips "$NODES_IPS")
exec "${LAUNCH[@]}" "${TRAIN[@]}" "${PASS[@]+"${PASS[@]}"}"
