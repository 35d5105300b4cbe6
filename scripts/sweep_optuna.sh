#!/usr/bin/env bash
# Optuna (TPE) search over learning rate, width, depth and activation, maximising the
# validation accuracy (20 trials, 2 at a time), then the report sorted by val/acc.
# Extra arguments go to mlplab-train, e.g. hydra.sweeper.n_trials=50 trainer.max_epochs=30.
# LAUNCHER=basic runs the trials one after another; LOG_DIR moves the outputs (default outputs/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.venv/bin"; [[ -x "$BIN/mlplab-train" ]] || BIN=$(dirname "$(command -v mlplab-train)")
LOG_DIR=${LOG_DIR:-$ROOT/outputs}
SWEEP="$LOG_DIR/train/multiruns/$(date +%Y-%m-%d_%H-%M-%S)_optuna$$"
status=0
"$BIN/mlplab-train" -m hparams_search=optuna "hydra/launcher=${LAUNCHER:-joblib}" \
  "paths.log_dir=$LOG_DIR" "hydra.sweep.dir=$SWEEP" "$@" || status=$?
"$BIN/mlplab-report" "$SWEEP" metric=val/acc "paths.log_dir=$LOG_DIR"
exit "$status"
