#!/usr/bin/env bash
# Width x depth x activation grid (27 jobs) at the tutorial's settings, one job per core, then
# the report. Extra arguments go to mlplab-train, e.g. trainer.max_epochs=20 model.width=8,16.
# LAUNCHER=basic runs the jobs one after another; LOG_DIR moves the outputs (default outputs/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.venv/bin"; [[ -x "$BIN/mlplab-train" ]] || BIN=$(dirname "$(command -v mlplab-train)")
LOG_DIR=${LOG_DIR:-$ROOT/outputs}
SWEEP="$LOG_DIR/train/multiruns/$(date +%Y-%m-%d_%H-%M-%S)_arch$$"
status=0
"$BIN/mlplab-train" -m experiment=tutorial sweep=arch "hydra/launcher=${LAUNCHER:-joblib}" \
  "paths.log_dir=$LOG_DIR" "hydra.sweep.dir=$SWEEP" "$@" || status=$?
"$BIN/mlplab-report" "$SWEEP" "paths.log_dir=$LOG_DIR"
exit "$status"
