#!/usr/bin/env bash
# How fast does the ReLU construction converge? One mlplab-approx job per number of training
# points; each job writes <outputs>/approx/multiruns/<time>_<id>/<job>/metrics.json, and for sin
# on [0, 2pi] the max error falls like N^-2. Extra arguments are passed on, e.g. fit=learned.
# Compare the jobs with `tensorboard --logdir outputs/approx` (HPARAMS tab).
set -euo pipefail
cd "$(dirname "$0")/.."
approx=.venv/bin/mlplab-approx
[[ -x "$approx" ]] || approx=mlplab-approx
"$approx" -m n_points=8,16,32,64,128 "$@"
