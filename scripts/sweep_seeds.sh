#!/usr/bin/env bash
# The tutorial's run with five seeds (data, split, initial weights and batch order all follow
# the seed), then the report with the test accuracy's mean and spread across seeds.
# Extra arguments go to mlplab-train, e.g. seed=1,2,3 model.activation=Tanh().
# LAUNCHER=basic runs the jobs one after another; LOG_DIR moves the outputs (default outputs/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.venv/bin"; [[ -x "$BIN/mlplab-train" ]] || BIN=$(dirname "$(command -v mlplab-train)")
LOG_DIR=${LOG_DIR:-$ROOT/outputs}
SWEEP="$LOG_DIR/train/multiruns/$(date +%Y-%m-%d_%H-%M-%S)_seeds$$"
status=0
"$BIN/mlplab-train" -m experiment=tutorial seed=1,2,3,4,5 "hydra/launcher=${LAUNCHER:-joblib}" \
  "paths.log_dir=$LOG_DIR" "hydra.sweep.dir=$SWEEP" "$@" || status=$?
"$BIN/mlplab-report" "$SWEEP" "paths.log_dir=$LOG_DIR"
exit "$status"
