"""mlplab-approx: build a 1-D function out of ReLUs (Coding Exercise 1) and measure the error.

The target comes from an allowlist, the N training points are evenly spaced as in the tutorial,
and the construction is scored on a dense grid. ``fit=learned`` also trains an MLP with the same
number of ReLUs by gradient descent on the same points, so the two errors can be compared.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from torch import Tensor

from mlplab.approx.learned import evaluate_mlp, fit_relu_mlp
from mlplab.approx.relu import approximate_function, evaluate_relu_sum, relu_weights
from mlplab.approx.targets import TARGETS
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError

log = logging.getLogger("mlplab")

FIT_MODES = ("constructed", "learned")
# The ReLU activation matrix is (n_points - 1) x eval_points float64 values: 20M is 160 MB.
MAX_RELU_ACTS = 20_000_000
# Points of the learned loss curve sent to the logger; the full curve is in the PNG.
LOSS_CURVE_POINTS = 500

_PI_MULTIPLE = re.compile(
    r"^(?P<sign>[+-]?)(?P<coef>\d+(?:\.\d*)?|\.\d+)?\*?pi(?:/(?P<div>\d+(?:\.\d*)?|\.\d+))?$"
)
_BOUND_ALLOWED = "must be a finite number or a multiple of pi such as pi, 2pi, -pi/2, 0.5*pi"


def parse_bound(value: object) -> float:
    """An x-range end: a finite number, or a multiple of pi written ``[-][k][*]pi[/d]``.

    YAML cannot compute ``2*pi``, so this small parser reads such literals; nothing is evaluated.

    Raises:
        ValueError: For anything else (the message says what is allowed).
    """
    if isinstance(value, bool):
        raise ValueError(_BOUND_ALLOWED)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = "".join(value.split()).lower()
        match = _PI_MULTIPLE.match(text)
        if match is None:
            raise ValueError(_BOUND_ALLOWED)
        coef = float(match["coef"]) if match["coef"] else 1.0
        div = float(match["div"]) if match["div"] else 1.0
        if div == 0:
            raise ValueError(_BOUND_ALLOWED)
        number = (-1.0 if match["sign"] == "-" else 1.0) * coef * math.pi / div
    else:
        raise ValueError(_BOUND_ALLOWED)
    if not math.isfinite(number):
        raise ValueError(_BOUND_ALLOWED)
    return number


@dataclass(frozen=True)
class ApproxSpec:
    """The checked settings of one approximation run."""

    target: str
    x_min: float
    x_max: float
    n_points: int
    eval_points: int
    fit: str
    steps: int
    lr: float
    seed: int


def validate_approx_config(cfg: DictConfig) -> ApproxSpec:
    """Check every value the run uses before any work starts; raise ConfigError naming the key."""
    target = common.check_choice(cfg, "target", sorted(TARGETS))
    x_min = common.check_with(cfg, "x_min", parse_bound)
    x_max = common.check_with(cfg, "x_max", parse_bound)
    if x_min >= x_max:
        raise ConfigError(
            "x_max", common.get(cfg, "x_max"), f"must be greater than x_min={x_min!r}"
        )
    n_points = common.check_int(cfg, "n_points", minimum=2)
    eval_points = common.check_int(cfg, "eval_points", minimum=2)
    if (n_points - 1) * eval_points > MAX_RELU_ACTS:
        raise ConfigError(
            "eval_points",
            eval_points,
            f"(n_points - 1) * eval_points must be <= {MAX_RELU_ACTS} (n_points={n_points})",
        )
    fit = common.check_choice(cfg, "fit", FIT_MODES)
    steps = common.check_int(cfg, "learned.steps", minimum=1)
    lr = common.check_float(cfg, "learned.lr", low=0.0, low_open=True)
    seed = common.check_int(cfg, "seed", minimum=0)
    return ApproxSpec(target, x_min, x_max, n_points, eval_points, fit, steps, lr, seed)


def _errors(estimate: Tensor, truth: Tensor) -> tuple[float, float]:
    """Max and root-mean-square absolute error."""
    diff = (estimate - truth).abs()
    return diff.max().item(), diff.square().mean().sqrt().item()


def approximate(spec: ApproxSpec) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Build (and with ``fit=learned`` also train) the approximation and measure its errors.

    Returns:
        ``(metrics, curves)``: flat metrics ``approx/*`` (and ``learned/*``), and the tensors to
        plot: ``x``, ``y_true``, ``y_hat``, ``relu_acts``, ``x_train``, ``y_train`` (and
        ``y_learned``, ``losses``).
    """
    target = TARGETS[spec.target]
    # float64: at a few hundred points the interpolation error nears float32's resolution.
    x_train = torch.linspace(spec.x_min, spec.x_max, spec.n_points, dtype=torch.float64)
    y_train = target(x_train)
    y_hat, relu_acts, x = approximate_function(x_train, y_train, num_points=spec.eval_points)
    y_true = target(x)
    max_error, rms_error = _errors(y_hat, y_true)
    biases, weights = relu_weights(x_train, y_train)
    train_max_error, _ = _errors(evaluate_relu_sum(x_train, biases, weights, y_train[0]), y_train)
    metrics = {
        "approx/max_error": max_error,
        "approx/rms_error": rms_error,
        "approx/train_max_error": train_max_error,
        "approx/num_relus": spec.n_points - 1,
        "approx/spacing": (spec.x_max - spec.x_min) / (spec.n_points - 1),
    }
    curves = {
        "x": x,
        "y_true": y_true,
        "y_hat": y_hat,
        "relu_acts": relu_acts,
        "x_train": x_train,
        "y_train": y_train,
    }
    if spec.fit == "learned":
        started = time.perf_counter()
        net, losses = fit_relu_mlp(x_train, y_train, spec.steps, spec.lr, spec.seed)
        fit_time = time.perf_counter() - started
        y_learned = evaluate_mlp(net, x)
        learned_max, learned_rms = _errors(y_learned, y_true)
        train_max, train_rms = _errors(evaluate_mlp(net, x_train), y_train)
        metrics.update(
            {
                "learned/max_error": learned_max,
                "learned/rms_error": learned_rms,
                "learned/train_max_error": train_max,
                "learned/train_rms_error": train_rms,
                "learned/final_loss": losses[-1].item(),
                "learned/fit_time_s": round(fit_time, 4),
            }
        )
        curves["y_learned"], curves["losses"] = y_learned, losses
    return metrics, curves


def approx_figure(
    spec: ApproxSpec,
    metrics: dict[str, float],
    curves: dict[str, Tensor],
    settings: str | None = None,
) -> Figure:
    """The tutorial's two panels (basis functions; truth vs estimate), plus the learned curve.

    ``settings`` (the run's overrides), when given, is a last line of the title.
    """
    from mlplab.viz import plot_function_approximation

    title = (
        f"{spec.target} on [{spec.x_min:.4g}, {spec.x_max:.4g}], {spec.n_points} points: "
        f"max error {metrics['approx/max_error']:.3g}"
    )
    if "y_learned" in curves:
        title += f" (learned {metrics['learned/max_error']:.3g})"
    if settings:
        title += f"\n{settings}"
    fig = plot_function_approximation(
        curves["x"],
        curves["relu_acts"],
        curves["y_hat"],
        y_true=curves["y_true"],
        x_train=curves["x_train"],
        y_train=curves["y_train"],
        title=title,
    )
    if "y_learned" in curves:
        # plot_function_approximation draws no learned curve; add it to the bottom panel.
        ax = fig.axes[1]
        ax.plot(curves["x"].numpy(), curves["y_learned"].numpy(), "--", label="learned (Adam)")
        ax.legend()
    return fig


def hparams_of(spec: ApproxSpec) -> dict[str, Any]:
    """The hyper-parameters shown in TensorBoard's HPARAMS tab."""
    hparams = asdict(spec)
    if spec.fit != "learned":
        del hparams["steps"], hparams["lr"]
    return hparams


def _log_run(
    cfg: DictConfig,
    spec: ApproxSpec,
    metrics: dict[str, float],
    curves: dict[str, Tensor],
    output_dir: Path,
) -> None:
    """Save the figures as PNG and send scalars, figures and hparams to the configured logger."""
    from mlplab.tasks.dashboard import settings_title
    from mlplab.tasks.runtime import build_logger, log_figures, log_hparams, tensorboard_of
    from mlplab.viz import plot_training_loss

    settings = settings_title()  # the run's overrides: a sweep's figures tell themselves apart
    figures = {"approx": approx_figure(spec, metrics, curves, settings)}
    if "losses" in curves:
        figures["learned_loss"] = plot_training_loss(
            curves["losses"],
            ylabel="Mean squared error",
            title=f"Learned fit: training loss\n{settings}",
        )
    logger = build_logger(cfg.get("logger"))
    writer = tensorboard_of(logger)
    # Final values go at the last optimizer step, after the learned loss curve.
    final_step = spec.steps if "losses" in curves else 0
    log_figures(figures, output_dir, writer, step=final_step)
    if logger is None:
        return
    if "losses" in curves:
        losses = curves["losses"]
        every = max(1, math.ceil(len(losses) / LOSS_CURVE_POINTS))
        for step in range(0, len(losses), every):
            logger.log_metrics({"learned/loss": losses[step].item()}, step=step)
    logger.log_metrics(metrics, step=final_step)
    # The HPARAMS entry is what lets TensorBoard compare the jobs of a multirun side by side.
    log_hparams(logger, hparams_of(spec), cfg)
    logger.save()


def _approx_body(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    spec = validate_approx_config(cfg)
    # The loggers' Lightning import, now, while start-up still keeps the collector off.
    import mlplab.tasks.runtime  # noqa: F401

    common.settle_gc()
    metrics, curves = approximate(spec)
    print(
        f"{spec.target} on [{spec.x_min:.6g}, {spec.x_max:.6g}] with {spec.n_points - 1} ReLUs: "
        f"max error {metrics['approx/max_error']:.4g}, RMS error {metrics['approx/rms_error']:.4g}"
    )
    if spec.fit == "learned":
        print(
            f"learned by Adam ({spec.steps} steps): max error {metrics['learned/max_error']:.4g}, "
            f"RMS error {metrics['learned/rms_error']:.4g}"
        )
    _log_run(cfg, spec, metrics, curves, output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="approx")
def _hydra_main(cfg: DictConfig) -> float | None:
    return common.run_task(cfg, _approx_body)


def main() -> None:
    """Console script ``mlplab-approx``."""
    common.console_main(_hydra_main, "approx")


if __name__ == "__main__":
    from mlplab.tasks.cli import run_main

    run_main(main)
