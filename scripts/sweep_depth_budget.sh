#!/usr/bin/env bash
# Deeper or wider at a fixed parameter budget (model.param_budget=100): depths 1..5, every
# hidden layer as wide as the budget allows, then the report (test accuracy against depth).
# Extra arguments go to mlplab-train, e.g. model.param_budget=200 model.depth=1,2,3,4,5,6.
# LAUNCHER=basic runs the jobs one after another; LOG_DIR moves the outputs (default outputs/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.venv/bin"; [[ -x "$BIN/mlplab-train" ]] || BIN=$(dirname "$(command -v mlplab-train)")
LOG_DIR=${LOG_DIR:-$ROOT/outputs}
SWEEP="$LOG_DIR/train/multiruns/$(date +%Y-%m-%d_%H-%M-%S)_depth_budget$$"
status=0
"$BIN/mlplab-train" -m experiment=depth_budget \
  "hydra/launcher=${LAUNCHER:-joblib}" "paths.log_dir=$LOG_DIR" "hydra.sweep.dir=$SWEEP" "$@" \
  || status=$?
"$BIN/mlplab-report" "$SWEEP" "paths.log_dir=$LOG_DIR"
exit "$status"
