"""mlplab-report: tables and figures for a multirun folder (the Hydra entry point).

    mlplab-report outputs/train/multiruns/<time>_<id>
    mlplab-report sweep_dir=<folder> metric=val/acc mode=max

Reads the sweep with :func:`mlplab.report.load_sweep` (every job's ``metrics.json``), adds the
jobs the sweep has not started yet (from its ``multirun.yaml``, read with Hydra's override
parser), and writes ``summary.csv``, ``summary.md`` and the figures with
:func:`mlplab.report.write_report`. A sweep still running is reported as far as it got; a job
whose ``metrics.json`` is missing or unreadable is listed with the reason, never fatal.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlplab import report
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError


def expected_jobs(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """The jobs the sweep will run, by folder name, read from ``<sweep_dir>/multirun.yaml``.

    Known for the grid sweepers (mlplab's and Hydra's basic one: the grid, in job order) and
    for Optuna (``n_trials`` jobs, overrides not known in advance); empty when the folder names
    are not job numbers or the file is missing or unreadable.
    """
    try:
        hydra_cfg = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
        if OmegaConf.to_container(hydra_cfg.sweep, resolve=False).get("subdir") != (
            "${hydra.job.num}"
        ):
            return {}
        sweeper = OmegaConf.to_container(hydra_cfg.sweeper, resolve=False)
        choice = str(hydra_cfg.runtime.choices["hydra/sweeper"])  # the hydra/sweeper option
        if choice in ("mlplab_grid", "basic"):
            params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
            return dict(enumerate_grid([*params, *hydra_cfg.overrides.task]))
        if "optuna" in choice.lower() or "optuna" in str(sweeper.get("_target_", "")).lower():
            return {str(i): {} for i in range(int(sweeper.get("n_trials", 0)))}
    except Exception:  # no multirun.yaml, or one we cannot read: report the folders as found
        return {}
    return {}


def sweep_objective(sweep_dir: Path) -> tuple[str | None, str | None]:
    """The metric the sweep optimised and its direction, from ``<sweep_dir>/multirun.yaml``.

    The metric is the sweep's ``optimized_metric`` (``val/acc`` for an Optuna study, whose test
    split stays unseen while searching); the direction is the Optuna study's (``maximize`` ->
    ``max``), else None. ``(None, None)`` when the file is missing or unreadable.
    """
    try:
        cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
        metric = OmegaConf.select(cfg, "optimized_metric", default=None)
        direction = OmegaConf.select(cfg, "hydra.sweeper.direction", default=None)
    except Exception:  # no multirun.yaml, or one we cannot read
        return None, None
    modes = {"maximize": "max", "minimize": "min"}
    return (str(metric) if metric else None), modes.get(str(direction))


def default_mode(metric: str) -> str:
    """``max`` for an accuracy (a name ending in ``acc`` or ``accuracy``), else ``min`` (losses,
    errors, distances, times)."""
    return "max" if metric.rsplit("/", 1)[-1] in ("acc", "accuracy") else "min"


def enumerate_grid(overrides: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``["a=1,2", "b=x"]`` -> ``[("0", {"a": 1, "b": "x"}), ("1", {"a": 2, "b": "x"})]``.

    The grid sweeper's jobs in their order (:func:`hydra_plugins.mlplab_grid_sweeper.sweeper.
    grid`, which is also Hydra's basic sweeper's grid), overrides parsed by Hydra's own parser.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.mlplab_grid_sweeper.sweeper import grid

    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    return [(str(num), report.parse_overrides(job)) for num, job in enumerate(grid(parsed))]


def make_report(
    sweep_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str] | None = None,
    metric: str = "test/acc",
    mode: str = "max",
    figures: bool = True,
    log_x: bool | str = "auto",
    log_y: bool | str = "auto",
) -> dict[str, Any]:
    """Write ``summary.csv``, ``summary.md`` and the figures of a multirun folder.

    Returns:
        Counts of jobs by status (``jobs/<status>``, ``jobs/total``), the best value of
        ``metric`` and its job, the files written and where.

    Raises:
        ConfigError: naming ``sweep_dir`` (no such folder, no jobs) or ``metric`` (no finished
            job reports it).
    """
    sweep = Path(sweep_dir).expanduser()
    try:
        frame = report.load_sweep(sweep, expected_jobs(sweep))
    except ValueError as err:
        raise ConfigError("sweep_dir", str(sweep_dir), f"must be a multirun folder: {err}") from err
    done = frame[frame["status"] == report.OK]
    known = [m for m in frame.attrs["metrics"] if done[m].notna().any()]
    if len(done) and metric not in known:
        raise ConfigError("metric", metric, f"must be one of {', '.join(known)}")
    out = Path(report_dir).expanduser() if report_dir is not None else sweep
    files = report.write_report(frame, out, metric, mode, figures, log_x, log_y)
    best = report.sort_jobs(frame, metric, mode).iloc[0] if len(done) else None
    has_best = best is not None and metric in frame and report.show(best[metric]) != ""
    result: dict[str, Any] = {
        f"jobs/{status}": int(count) for status, count in frame["status"].value_counts().items()
    }
    result["jobs/total"] = len(frame)
    result[f"best/{metric}"] = float(best[metric]) if has_best else None
    result["best/job"] = best["job"] if has_best else None
    result["files"] = files
    result["report_dir"] = str(out)
    return result


def _report_body(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "sweep_dir") or cfg.sweep_dir is None:
        raise ConfigError("sweep_dir", "???", "give the multirun folder: mlplab-report <folder>")
    sweep_dir = common.get(cfg, "sweep_dir")
    if not isinstance(sweep_dir, str | int):
        raise ConfigError("sweep_dir", sweep_dir, "must be a path to a multirun folder")
    metric = common.get(cfg, "metric")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError("metric", metric, "must be a metric name such as test/acc, or null")
    mode = None if cfg.get("mode") is None else common.check_choice(cfg, "mode", ["max", "min"])
    swept_metric, swept_mode = sweep_objective(Path(str(sweep_dir)).expanduser())
    if metric is None:  # the sweep's own objective: an Optuna study ranks by val/acc, not test
        metric = swept_metric or "test/acc"
        mode = mode or swept_mode
    mode = mode or default_mode(metric)
    draw = common.check_bool(cfg, "figures")
    log_x = common.get(cfg, "log_x")
    if log_x not in ("auto", True, False):
        raise ConfigError("log_x", log_x, "must be auto, true or false")
    log_y = common.get(cfg, "log_y")
    if log_y not in ("auto", True, False):
        raise ConfigError("log_y", log_y, "must be auto, true or false")
    report_dir = common.get(cfg, "report_dir")
    if report_dir is not None and not isinstance(report_dir, str):
        raise ConfigError("report_dir", report_dir, "must be a folder path or null")
    common.settle_gc()
    result = make_report(str(sweep_dir), report_dir, metric, mode, draw, log_x, log_y)
    print(
        f"mlplab-report: {result['jobs/total']} jobs, {result.get('jobs/ok', 0)} ok; wrote "
        f"{', '.join(result['files'])} in {result['report_dir']}"
    )
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def _hydra_main(cfg: DictConfig) -> float | None:
    return common.run_task(cfg, _report_body)


def hydra_quote(text: str) -> str:
    """Quote a string for Hydra's override grammar, so paths with spaces or ``=`` pass whole."""
    # Backslashes are literal in Hydra's quoted strings except right before a quote.
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def positional_to_sweep_dir(argv: Sequence[str]) -> list[str]:
    """``mlplab-report <folder> metric=val/acc`` -> ``sweep_dir='<folder>' metric=val/acc``.

    A word without ``=`` that is not an option is the multirun folder; Hydra-style ``key=value``
    arguments pass unchanged.

    Raises:
        ConfigError: for more than one folder, or a folder given both ways.
    """
    words = [a for a in argv if "=" not in a and not a.startswith("-")]
    if not words:
        return list(argv)
    if len(words) > 1:
        raise ConfigError("sweep_dir", " ".join(words), "give one multirun folder")
    if any(a.split("=", 1)[0] == "sweep_dir" for a in argv if "=" in a):
        raise ConfigError("sweep_dir", words[0], "give the folder once, not also as sweep_dir=")
    return [f"sweep_dir={hydra_quote(a)}" if a in words else a for a in argv]


def main() -> None:
    """Console script ``mlplab-report``."""
    # A word after an option that takes a value (--config-name x) is not the folder.
    argv = sys.argv[1:]
    takes_value = {
        "-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "-c", "--cfg",
        "-p", "--package", "--info",
    }  # fmt: skip
    head, rest = [], []
    skip = False
    for arg in argv:
        if skip or arg in takes_value:
            head.append(arg)
            skip = arg in takes_value
            continue
        rest.append(arg)
    try:
        sys.argv[1:] = head + positional_to_sweep_dir(rest)
    except ConfigError as err:
        print(f"mlplab-report: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    common.console_main(_hydra_main, "report")


if __name__ == "__main__":
    from mlplab.tasks.cli import run_main

    run_main(main)
