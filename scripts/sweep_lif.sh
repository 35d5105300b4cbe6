#!/usr/bin/env bash
# The tutorial's transfer-function grid (100 Rm x 100 tau_ref x 50 I, T=1000 ms, dt=1 ms) for
# three membrane capacitances: one mlplab-lif job each (every job is one vectorised call over its
# 500,000 neurons), then the report over the jobs' metrics.json. Extra arguments go to mlplab-lif,
# e.g. method=exact lif.dt=0.1 counts=closed_form, or lif.Rm={start:1,stop:1000,num:61,log:true}.
# LOG_DIR moves the outputs (default outputs/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.venv/bin"; [[ -x "$BIN/mlplab-lif" ]] || BIN=$(dirname "$(command -v mlplab-lif)")
LOG_DIR=${LOG_DIR:-$ROOT/outputs}
SWEEP="$LOG_DIR/lif/multiruns/$(date +%Y-%m-%d_%H-%M-%S)_cm$$"
status=0
"$BIN/mlplab-lif" -m mode=sweep lif.Cm=5,10,20 "paths.log_dir=$LOG_DIR" "hydra.sweep.dir=$SWEEP" \
  "$@" || status=$?
"$BIN/mlplab-report" "$SWEEP" "paths.log_dir=$LOG_DIR" metric=lif/distance_to_relu_median mode=min
exit "$status"
