"""Sweep results as a pandas DataFrame, and the report's tables and figures built from it.

    >>> from mlplab.report import load_sweep
    >>> frame = load_sweep("outputs/train/multiruns/<time>_<id>")
    >>> frame.groupby("model.depth")["test/acc"].mean()

One row per job of a multirun folder: its folder name (``job``), its ``status``, a column per
override (typed: ints stay ints, floats floats), a column per metric of its ``metrics.json``, its
wall time and its error. No Hydra here: a notebook reads a sweep with pandas alone. The console
script ``mlplab-report`` (:mod:`mlplab.tasks.report`) adds the jobs a sweep has not started yet,
which only Hydra's override grammar can list.
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from mlplab.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Statuses: metrics.json's own (ok, failed, diverged, interrupted, ...); missing: no metrics.json
# (still running, killed, or not started); unreadable: metrics.json is there but cannot be read.
OK, FAILED, MISSING, UNREADABLE = "ok", "failed", "missing", "unreadable"
# Order of the job groups in the tables: results first, then what went wrong, then the rest.
STATUS_ORDER = {OK: 0, FAILED: 1, "interrupted": 3, MISSING: 5, UNREADABLE: 6}
# Swept keys averaged over in the figures (mean and standard deviation), never drawn as lines.
AVERAGED_KEYS = ("seed",)
# More lines than this in one figure, and the other swept keys are averaged over instead.
MAX_SERIES = 12
# Heatmap axes (horizontal, vertical), and at most this many panels in one heatmap figure.
HEATMAP_KEYS = ("model.width", "model.depth")
MAX_PANELS = 6
# A numeric key with more distinct non-integer values than this is sampled from a range (an
# Optuna search), not a grid's list: the jobs get one scatter panel per key instead of lines.
MAX_GRID_FLOATS = 12
# At most this many scatter panels (searched keys) in one figure.
MAX_SCATTER_PANELS = 9
# A swept key drawn against another column: the construction has n_points - 1 ReLUs, and its
# error law is stated in ReLUs.
DRAW_AGAINST = {"n_points": "approx/num_relus"}
# Keys left out of figure titles: where outputs went and what was logged say nothing about the
# results, and the grid a sweep= option names is on the axes already.
UNTITLED = ("paths", "hydra", "logger", "callbacks", "figures", "sweep")
NUM_CLASSES = "data.num_classes"

# Readable names, with units, for figure axes and legends; other keys are shown as they are.
LABELS = {
    "test/acc": "test accuracy (%)",
    "val/acc": "validation accuracy (%)",
    "train/acc": "training accuracy (%)",
    "test/loss": "test loss (cross-entropy)",
    "val/loss": "validation loss (cross-entropy)",
    "train/loss": "training loss (cross-entropy)",
    "approx/max_error": "max error of the approximation",
    "approx/rms_error": "RMS error of the approximation",
    "learned/max_error": "max error of the trained MLP",
    "learned/rms_error": "RMS error of the trained MLP",
    "approx/train_max_error": "max error on the training points",
    "approx/num_relus": "number of ReLUs",
    "n_points": "training points",
    "model.width": "width (units per hidden layer)",
    "model.depth": "depth (hidden layers)",
    "model.activation": "activation",
    "model.param_budget": "parameter budget (weights and biases)",
    "optimizer.lr": "learning rate",
    "optimizer.weight_decay": "weight decay",
    "data.sigma": "spiral noise σ",
    "data.points_per_class": "points per class",
    "data.batch_size": "batch size",
    "data.val_fraction": "validation fraction",
    "trainer.max_epochs": "epochs",
    "lif.Cm": "membrane capacitance Cm (uF)",  # the tutorial's spelling, as the LIF figures
    "lif.Vth": "threshold Vth (V)",
    "lif.dt": "time step dt (ms)",
    "lif/distance_to_relu_median": "median distance to a ReLU (RMS / max rate)",
    "lif/distance_to_relu_min": "min distance to a ReLU (RMS / max rate)",
    "lif/distance_to_relu_max": "max distance to a ReLU (RMS / max rate)",
    "lif/max_abs_rate_error_hz": "max |simulated − analytic rate| (Hz)",
    "lif/mean_abs_rate_error_hz": "mean |simulated − analytic rate| (Hz)",
    "lif/mean_rate_hz": "mean rate (Hz)",
    "fit_time_s": "fit time (s)",
    "wall_time_s": "wall time (s)",
}
# Short names for legends and panel titles.
SHORT = {
    "model.width": "width",
    "model.depth": "depth",
    "model.activation": "activation",
    "model.param_budget": "budget",
    "optimizer.lr": "lr",
    "data.sigma": "σ",
    "approx/num_relus": "ReLUs",
    "lif.Cm": "Cm",
}


def label(key: str) -> str:
    """A readable axis label with units: ``test/acc`` -> ``test accuracy (%)``."""
    return LABELS.get(key, key)


def short(key: str) -> str:
    """A short name for legends: ``model.width`` -> ``width``."""
    return SHORT.get(key, key)


# --- reading a multirun folder ---------------------------------------------------------------


def natural_key(name: str) -> tuple:
    """Sort job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name))


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders under ``sweep_dir``: folders holding ``metrics.json`` or ``.hydra/``.

    Hidden folders (``.submitit``, ``.hydra``) are not searched, nor the inside of a job folder,
    nor a run folder of ``mlplab-report`` itself.
    """
    jobs = []
    for root, dirs, files in os.walk(sweep_dir):
        here = Path(root)
        if here != sweep_dir and ("metrics.json" in files or ".hydra" in dirs):
            if not _is_report_run(here):
                jobs.append(here)
            dirs[:] = []  # checkpoints/, tensorboard/ ... are parts of the job
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(jobs, key=lambda p: natural_key(p.relative_to(sweep_dir).as_posix()))


def _is_report_run(folder: Path) -> bool:
    try:
        return json.loads((folder / "metrics.json").read_text()).get("task") == "report"
    except (OSError, ValueError, AttributeError):
        return False


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def override_value(text: str) -> Any:
    """The value of one override's right-hand side: ``8`` -> 8, ``1e-3`` -> 0.001, ``'ReLU()'``
    -> ``ReLU()``, ``false`` -> False, ``null`` -> None.

    Scalars read as YAML, which writes them as Hydra's override grammar does (quotes included);
    ``1e-3`` is a float as in Hydra. A list, a dict or text YAML cannot read stays as written.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value):
        return float(value)
    if isinstance(value, list | dict) or (value is not None and not _is_scalar(value)):
        return text
    return value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["model.width=8", "+x=1", "~y"]`` -> ``{"model.width": 8, "x": 1}`` (no deletions)."""
    parsed: dict[str, Any] = {}
    for text in overrides:
        key, sep, value = str(text).partition("=")
        if sep:
            parsed[key.lstrip("+~")] = override_value(value)
    return parsed


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_job(job_dir: Path, name: str) -> dict[str, Any]:
    """One job's row: ``job``, ``status``, ``error``, ``wall_time_s``, ``overrides``, ``metrics``
    and ``num_classes`` (None when the record does not say).

    A job without ``metrics.json`` is ``missing`` and one whose file cannot be read is
    ``unreadable``, each with the reason in ``error`` and the overrides Hydra saved in
    ``.hydra/overrides.yaml``.
    """
    row: dict[str, Any] = {"job": name, "error": None, "wall_time_s": None, "num_classes": None}
    path = job_dir / "metrics.json"
    if not path.exists():
        why = "no metrics.json (still running, or killed)"
        return {**row, "status": MISSING, "error": why, "overrides": _saved_overrides(job_dir)}
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("it does not hold a JSON object")
        status, metrics = record.get("status"), record.get("metrics") or {}
        overrides = record.get("overrides", [])
        if not isinstance(status, str) or not status:
            raise ValueError(f"its status is {status!r}")
        if not isinstance(metrics, dict) or not isinstance(overrides, list):
            raise ValueError("it has no 'metrics' object or no 'overrides' list")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        why = f"metrics.json cannot be read: {_reason(err)}"
        return {**row, "status": UNREADABLE, "error": why, "overrides": _saved_overrides(job_dir)}
    wall = record.get("wall_time_s")
    hparams = record.get("hparams") if isinstance(record.get("hparams"), dict) else {}
    return {
        **row,
        "status": status,
        "error": None if status == OK else record.get("error"),
        "wall_time_s": float(wall) if _is_number(wall) else None,
        "overrides": parse_overrides(overrides),
        "metrics": {k: v for k, v in metrics.items() if v is None or _is_number(v)},
        "num_classes": hparams.get("data/num_classes") or _config_num_classes(job_dir),
    }


def _reason(err: BaseException) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON ({err.msg}, line {err.lineno})"
    if isinstance(err, UnicodeDecodeError):
        return "not text"
    if isinstance(err, OSError):
        return str(err.strerror)
    return str(err)


def _saved_overrides(job_dir: Path) -> dict[str, Any]:
    """The overrides Hydra saved when the job started (``.hydra/overrides.yaml``), if readable."""
    try:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return parse_overrides(overrides) if isinstance(overrides, list) else {}


def _config_num_classes(job_dir: Path) -> int | None:
    """``data.num_classes`` of the job's composed config, for records without hyper-parameters."""
    try:
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
        value = config["data"]["num_classes"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None
    return value if _is_number(value) else None


def load_sweep(
    sweep_dir: str | os.PathLike[str],
    expected: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """The jobs of a multirun folder as a DataFrame, one row per job, in job order.

    Columns: ``job`` (folder relative to ``sweep_dir``), ``status`` (see :data:`STATUS_ORDER`),
    one per override key (every key any job overrides, in the order they first appear; ints as
    ``Int64``, floats as ``float64``, text as strings), ``data.num_classes`` (when the jobs record
    it), one per metric (test/, val/, train/, then the others), ``wall_time_s`` and ``error``
    (the error line, or why a job has no results). ``frame.attrs`` holds ``sweep_dir`` and the
    lists ``overrides`` and ``metrics`` of those column names.

    Args:
        sweep_dir: A Hydra multirun folder (jobs may still be running).
        expected: Jobs the sweep will run, by folder name, with their overrides; those without
            a folder are added as ``missing`` (``mlplab-report`` reads them from multirun.yaml).

    Raises:
        ValueError: when ``sweep_dir`` is not a folder, or holds no job folder and nothing is
            expected.
    """
    folder = Path(sweep_dir).expanduser()
    if not folder.is_dir():
        raise ValueError("no such folder")
    rows = {
        path.relative_to(folder).as_posix(): read_job(path, path.relative_to(folder).as_posix())
        for path in find_job_dirs(folder)
    }
    if not rows and not expected:
        hint = " (it is a single run folder)" if (folder / "metrics.json").exists() else ""
        raise ValueError(f"holds no job folders (<job>/metrics.json or <job>/.hydra){hint}")
    for name, overrides in (expected or {}).items():
        if name not in rows:
            rows[name] = {"job": name, "status": MISSING, "error": "not started", "overrides": {}}
        if not rows[name]["overrides"]:  # killed before Hydra saved them, or not started
            rows[name]["overrides"] = dict(overrides)
    jobs = [rows[name] for name in sorted(rows, key=natural_key)]
    return _frame(jobs, folder)


def _frame(jobs: list[dict[str, Any]], sweep_dir: Path) -> pd.DataFrame:
    keys = list(dict.fromkeys(k for job in jobs for k in job["overrides"]))
    metrics = metric_keys({k for job in jobs for k in job.get("metrics", {})})
    columns: dict[str, pd.Series] = {
        "job": pd.Series([job["job"] for job in jobs], dtype="str"),
        "status": pd.Series([job["status"] for job in jobs], dtype="str"),
    }
    for key in keys:
        columns[key] = typed_column([job["overrides"].get(key) for job in jobs])
    classes = [job.get("num_classes") for job in jobs]
    if NUM_CLASSES not in columns and any(c is not None for c in classes):
        columns[NUM_CLASSES] = typed_column(classes)
    for metric in metrics:
        columns[metric] = typed_column([job.get("metrics", {}).get(metric) for job in jobs])
    columns["wall_time_s"] = pd.Series([job.get("wall_time_s") for job in jobs], dtype="float64")
    columns["error"] = pd.Series([job.get("error") for job in jobs], dtype="str")
    frame = pd.DataFrame(columns)
    frame.attrs.update(sweep_dir=str(sweep_dir), overrides=keys, metrics=metrics)
    return frame


def typed_column(values: Sequence[Any]) -> pd.Series:
    """A column of Python values, typed by what they all are: ints as nullable ``Int64`` (so a
    missing value does not turn them into floats), numbers as ``float64``, booleans as
    ``boolean``, text as ``str``; a mix stays ``object``. None is the missing value."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="boolean")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="Int64")
    if present and all(_is_number(v) for v in present):
        return pd.Series([math.nan if v is None else v for v in values], dtype="float64")
    if all(isinstance(v, str) for v in present):
        return pd.Series(values, dtype="str")
    return pd.Series(values, dtype="object")


def metric_keys(names: Sequence[str] | set[str], first: str | None = None) -> list[str]:
    """Metric names: ``first``, then test/, val/, train/, then the rest, each alphabetically."""
    rank = {"test": 0, "val": 1, "train": 2}

    def order(name: str) -> tuple:
        return (name != first, rank.get(name.split("/", 1)[0] if "/" in name else "", 3), name)

    return sorted(names, key=order)


# --- what a frame holds -----------------------------------------------------------------------


def swept_keys(frame: pd.DataFrame) -> list[str]:
    """Override columns whose value differs between jobs (missing values not counted)."""
    return [k for k in frame.attrs["overrides"] if frame[k].nunique(dropna=True) > 1]


def common_overrides(frame: pd.DataFrame) -> dict[str, Any]:
    """Overrides every job has with the same value."""
    same = {}
    for key in frame.attrs["overrides"]:
        column = frame[key]
        if column.notna().all() and column.nunique() == 1:
            same[key] = _python(column.iloc[0])
    return same


def _python(value: Any) -> Any:
    """A numpy or pandas scalar as the Python value (``np.int64(8)`` -> 8); NA as None."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def show(value: Any) -> str:
    """A value for a table cell or a title: floats to 4 significant digits, NA as empty."""
    value = _python(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def sort_jobs(frame: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Finished jobs best first by ``metric`` (``mode`` max or min; those without it after
    them), then the others by status (failed, diverged, interrupted, missing, unreadable), each
    group in job order.

    Raises:
        ValueError: for a mode other than max or min.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r} is invalid: must be max or min")
    value = frame[metric] if metric in frame else pd.Series(math.nan, index=frame.index)
    value = value.astype("float64")
    has = (frame["status"] == OK) & value.notna()
    order = pd.DataFrame(
        {
            "group": frame["status"].map(STATUS_ORDER).fillna(4),
            "missing_value": ~has,
            "value": (-value if mode == "max" else value).where(has, 0.0),
            "job": frame["job"].map(natural_key),
        }
    )
    return frame.loc[order.sort_values(["group", "missing_value", "value", "job"]).index]


def seed_statistics(frame: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Count, mean, standard deviation, min and max of ``metric`` over seeds, per setting of
    the other swept keys, best mean first; empty unless ``seed`` is swept."""
    keys = swept_keys(frame)
    if not any(k in keys for k in AVERAGED_KEYS) or metric not in frame:
        return pd.DataFrame()
    done = frame[(frame["status"] == OK) & frame[metric].notna()]
    others = [k for k in keys if k not in AVERAGED_KEYS]
    stats = ["count", "mean", "std", "min", "max"]
    if others:
        table = done.groupby(others, dropna=False, sort=False)[metric].agg(stats).reset_index()
    else:
        table = done[metric].agg(stats).to_frame().T.reset_index(drop=True)
    table = table.rename(columns={"count": "seeds"})
    return table.sort_values("mean", ascending=mode == "min", kind="stable", ignore_index=True)


def failure_label(row: pd.Series, keys: Sequence[str]) -> str:
    """``job 3 (model.width=0: <error>)``: the job, what it was run with, what went wrong."""
    assigned = ", ".join(f"{k}={show(row[k])}" for k in keys if show(row[k]))
    error = show(row["error"])
    return f"job {row['job']} ({assigned}: {error})" if assigned else f"job {row['job']} ({error})"


def one_line_summary(frame: pd.DataFrame, sweep_dir: str | os.PathLike[str], limit: int = 3) -> str:
    """``mlplab: 8 of 9 jobs ok in <dir>; failed: job 3 (model.width=0: ...)``."""
    ok = int((frame["status"] == OK).sum())
    line = f"mlplab: {ok} of {len(frame)} jobs ok in {sweep_dir}"
    keys = swept_keys(frame)
    for status, group in frame[frame["status"] != OK].groupby("status", sort=False):
        shown = [failure_label(row, keys) for _, row in group.head(limit).iterrows()]
        more = f" and {len(group) - limit} more" if len(group) > limit else ""
        line += f"; {status}: {', '.join(shown)}{more}"
    return line


# --- writing ----------------------------------------------------------------------------------


def write_text_atomic(path: Path, text: str) -> Path:
    """Write text to a temporary file beside ``path``, then rename: no reader sees half a file."""
    return atomic_write(path, lambda handle: handle.write(text), mode="w")


def summary_csv(frame: pd.DataFrame) -> str:
    """The frame as CSV (numbers at full precision, empty cells for missing values)."""
    return frame.to_csv(index=False, lineterminator="\n")


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (tabulate's, through pandas); floats to 4 significant digits, NA empty."""
    cells = frame.astype(object).where(frame.notna(), None)
    return cells.to_markdown(index=False, floatfmt=".4g", missingval="")


def summary_markdown(
    frame: pd.DataFrame, metric: str, mode: str, figures: Sequence[str] = ()
) -> str:
    """The report page: counts, the shared overrides, results, seed statistics, failures."""
    keys = swept_keys(frame)
    counts = frame["status"].value_counts()
    counts = counts[sorted(counts.index, key=lambda s: (STATUS_ORDER.get(s, 4), s))]
    order = "highest" if mode == "max" else "lowest"
    lines = [
        "# Sweep report",
        "",
        f"Folder: `{frame.attrs['sweep_dir']}`",
        "",
        f"{len(frame)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        f"Sorted by {metric}, {order} first.",
    ]
    same = common_overrides(frame)
    if same:
        lines += ["", "Every job: " + " ".join(f"`{k}={show(v)}`" for k, v in same.items())]
    done = frame[frame["status"] == OK]
    metrics = [
        m for m in metric_keys(frame.attrs["metrics"], first=metric) if done[m].notna().any()
    ]
    if len(done):
        table = done[["job", *keys, *metrics, "wall_time_s"]]
        lines += ["", "## Results", "", markdown_table(table)]
    spread = seed_statistics(frame, metric, mode)
    if len(spread):
        lines += ["", f"## {metric} across seeds", "", markdown_table(spread)]
    bad = frame[frame["status"] != OK]
    if len(bad):
        table = bad[["job", "status", *keys, "error"]]
        lines += ["", "## Failed or not finished", "", markdown_table(table)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def write_report(
    frame: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    metric: str = "test/acc",
    mode: str = "max",
    figures: bool = True,
    log_x: bool | str = "auto",
    log_y: bool | str = "auto",
) -> list[str]:
    """Write ``summary.csv``, ``summary.md`` and the figures (PNG) of a frame into ``out_dir``.

    The rows are sorted by ``metric`` (:func:`sort_jobs`). Returns the names of the files
    written, each written atomically.
    """
    from mlplab.viz import figure_to_png

    out = Path(out_dir).expanduser()
    frame = sort_jobs(frame, metric, mode)
    names: list[str] = []
    if figures:
        for stem, fig in sweep_figures(frame, metric, log_x, log_y, mode).items():
            figure_to_png(fig, out / f"{stem}.png")
            names.append(f"{stem}.png")
    write_text_atomic(out / "summary.csv", summary_csv(frame))
    write_text_atomic(out / "summary.md", summary_markdown(frame, metric, mode, names))
    return ["summary.csv", "summary.md", *names]


# --- figures ----------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A file-name-safe form: ``test/acc`` -> ``test_acc``, ``Tanh()`` -> ``Tanh``."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "all"


def wants_log(values: Sequence[float], log: bool | str) -> bool:
    """``auto``: a log axis for positive values spanning a factor 8 or more (widths, rates)."""
    values = [v for v in values if math.isfinite(v)]
    if log == "auto":
        return bool(values) and min(values) > 0 and max(values) / min(values) >= 8
    return bool(log)


def settings_title(
    frame: pd.DataFrame, what: str, spread: bool = True, width: int = 64, note: str = ""
) -> str:
    """``what``, then the settings every job shares (and the seeds averaged over: ``spread``,
    with their standard deviation), then ``note`` (:func:`not_shown`), wrapped."""
    fixed = [
        f"{short(k)}={show(v)}"
        for k, v in common_overrides(frame).items()
        if k.split(".", 1)[0] not in UNTITLED
    ]
    seeds = [k for k in AVERAGED_KEYS if k in swept_keys(frame)]
    for key in seeds:
        fixed.append(f"mean{' ± std' if spread else ''} over {frame[key].nunique()} {key}s")
    text = what + ("\n" + "; ".join(fixed) if fixed else "") + ("\n" + note if note else "")
    return "\n".join(textwrap.fill(part, width) for part in text.split("\n"))


def not_shown(frame: pd.DataFrame, done: pd.DataFrame, limit: int = 4) -> str:
    """``not shown: failed: jobs 0, 1``: the jobs of ``frame`` a figure of ``done`` leaves out,
    by status, so that a figure never hides them silently; empty when all are shown."""
    rest = frame[~frame["job"].isin(done["job"])]
    parts = []
    for status, group in rest.groupby("status", sort=False):
        jobs = [str(job) for job in group["job"]]
        more = f" and {len(jobs) - limit} more" if len(jobs) > limit else ""
        parts.append(f"{status}: job{'s' if len(jobs) > 1 else ''} {', '.join(jobs[:limit])}{more}")
    return f"not shown: {'; '.join(parts)}" if parts else ""


def chance_level(frame: pd.DataFrame, metric: str) -> float | None:
    """Chance accuracy in % (100 / number of classes) for an accuracy metric (``*/acc``) when
    every job has the same number of classes; None otherwise."""
    if not metric.endswith("/acc") or NUM_CLASSES not in frame:
        return None
    classes = frame[NUM_CLASSES].dropna().unique()
    return 100.0 / float(classes[0]) if len(classes) == 1 and classes[0] > 0 else None


def sweep_figures(
    frame: pd.DataFrame,
    metric: str,
    log_x: bool | str = "auto",
    log_y: bool | str = "auto",
    mode: str = "max",
) -> dict[str, Figure]:
    """Figures of a sweep's finished jobs, by file stem.

    A search whose jobs are not a grid (:func:`is_grid`: an Optuna study's trials) gets one
    figure, ``<metric>_vs_settings``: a scatter panel of the metric against each searched key
    (log axis where ``log_x`` says so, ``auto``: positive values spanning more than a decade),
    the best job (``mode``: max or min) marked, a chance line for accuracies. A grid gets:

    * ``<metric>_vs_<key>``: the metric against each swept numeric key (or the column of
      :data:`DRAW_AGAINST`), one line per setting of the other swept keys, mean and standard
      deviation over seeds; a chance line for accuracies; the least-squares slope in log-log.
    * ``<metric>_heatmap``: width x depth heatmaps, one panel per setting of the other swept
      keys, on one colour scale, when both are swept.
    """
    done = frame[(frame["status"] == OK) & frame[metric].notna()] if metric in frame else frame[:0]
    done = done.sort_values("job", key=lambda s: s.map(natural_key))
    figures: dict[str, Figure] = {}
    if done.empty:
        return figures
    keys = swept_keys(frame)
    if keys and not is_grid(frame, keys):
        figures[f"{slug(metric)}_vs_settings"] = _scatter(frame, done, metric, keys, mode, log_x)
        return figures
    for key in keys:
        x_key = DRAW_AGAINST.get(key, key)
        if key in AVERAGED_KEYS or x_key not in done or not _numeric(done[x_key]):
            continue
        if done[x_key].nunique() < 2:
            continue
        others = [k for k in keys if k not in (key, *AVERAGED_KEYS)]
        if others and done.groupby(others, dropna=False).ngroups > MAX_SERIES:
            others = []  # too many lines to tell apart: average over the other keys
        figures[f"{slug(metric)}_vs_{slug(x_key)}"] = _metric_vs(
            frame, done, metric, x_key, others, log_x, log_y
        )
    x_key, y_key = HEATMAP_KEYS
    if {x_key, y_key} <= set(keys) and _numeric(done[x_key]) and _numeric(done[y_key]):
        figures[f"{slug(metric)}_heatmap"] = _heatmaps(frame, done, metric, keys, log_x)
    return figures


def is_grid(frame: pd.DataFrame, keys: Sequence[str]) -> bool:
    """Whether the jobs' values of the swept ``keys`` form a grid, not samples of a search.

    A grid: at least half the combinations of the keys' values are jobs (all of them in a
    cartesian product; a few extra jobs, such as a width 0 tried once, add combinations that
    were not run), and no numeric key has more than :data:`MAX_GRID_FLOATS` distinct
    non-integer values. Jobs without values (not started yet) are left aside.
    """
    known = frame.dropna(subset=list(keys))
    sizes = [known[key].nunique() for key in keys]
    if 2 * len(known.drop_duplicates(subset=list(keys))) < math.prod(sizes):
        return False
    for key in keys:
        if _numeric(known[key]):
            values = known[key].astype(float).unique()
            if np.count_nonzero(values != np.round(values)) > MAX_GRID_FLOATS:
                return False
    return True


def spans_decades(values: Sequence[float], log: bool | str) -> bool:
    """``auto``: a log axis for positive values spanning more than a factor 10."""
    values = [v for v in values if math.isfinite(v)]
    if log == "auto":
        return bool(values) and min(values) > 0 and max(values) / min(values) > 10
    return bool(log) and bool(values) and min(values) > 0


def _scatter(
    frame: pd.DataFrame,
    done: pd.DataFrame,
    metric: str,
    keys: Sequence[str],
    mode: str,
    log_x: bool | str,
) -> Figure:
    from mlplab.viz import plot_metric_scatter

    params, logs = {}, []
    for key in list(keys)[:MAX_SCATTER_PANELS]:
        column = done[key]
        if _numeric(column):
            values = column.astype(float).to_numpy()
            if spans_decades(values.tolist(), log_x):
                logs.append(label(key))
        else:
            values = np.array([show(v) if pd.notna(v) else None for v in column], dtype=object)
        params[label(key)] = values
    y = done[metric].astype(float).to_numpy()
    best = int(np.nanargmax(y) if mode == "max" else np.nanargmin(y))
    chance = chance_level(done, metric)
    unit = " %" if metric.endswith("/acc") else ""
    return plot_metric_scatter(
        params,
        y,
        ylabel=label(metric),
        title=settings_title(
            frame,
            f"{label(metric)} of {len(done)} jobs against each searched setting",
            note=not_shown(frame, done),
        ),
        log_x=logs,
        best=best,
        best_label=f"best: job {done['job'].iloc[best]} ({show(y[best])}{unit})",
        hlines={f"chance (1/{100 / chance:g} = {chance:.3g} %)": chance} if chance else None,
    )


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _legend(keys: Sequence[str], setting: tuple) -> str:
    return ", ".join(f"{short(k)}={show(v)}" for k, v in zip(keys, setting, strict=True))


def _metric_vs(
    frame: pd.DataFrame,
    done: pd.DataFrame,
    metric: str,
    x_key: str,
    others: Sequence[str],
    log_x: bool | str,
    log_y: bool | str,
) -> Figure:
    from mlplab.viz import plot_metric_vs

    xs = sorted(done[x_key].dropna().unique().tolist())
    groups = done.groupby(list(others), dropna=False, sort=False) if others else [((), done)]
    series, spread = {}, {}
    for setting, group in groups:
        setting = setting if isinstance(setting, tuple) else (setting,)
        stats = group.groupby(x_key)[metric].agg(["mean", "std"]).reindex(xs)
        name = _legend(others, setting) or "_nolegend_"  # one line: the axis label says it
        series[name] = stats["mean"].to_numpy(dtype=float)
        spread[name] = stats["std"].to_numpy(dtype=float)
    with_spread = any(np.isfinite(s).any() for s in spread.values())
    log_x, log_y = wants_log(xs, log_x), wants_log(done[metric].astype(float).tolist(), log_y)
    chance = chance_level(done, metric)
    return plot_metric_vs(
        xs,
        series,
        xlabel=label(x_key),
        ylabel=label(metric),
        title=settings_title(
            frame, f"{label(metric)} against {label(x_key)}", note=not_shown(frame, done)
        ),
        log_x=log_x,
        log_y=log_y,
        errors=spread if with_spread else None,
        hlines={f"chance (1/{100 / chance:g} = {chance:.3g} %)": chance} if chance else None,
        fit_slope=log_x and log_y,
    )


def _heatmaps(
    frame: pd.DataFrame, done: pd.DataFrame, metric: str, keys: Sequence[str], log_x: bool | str
) -> Figure:
    from mlplab.viz import plot_heatmaps

    x_key, y_key = HEATMAP_KEYS
    xs = sorted(done[x_key].dropna().unique().tolist())
    ys = sorted(done[y_key].dropna().unique().tolist())
    others = [k for k in keys if k not in (x_key, y_key, *AVERAGED_KEYS)]
    groups = done.groupby(others, dropna=False, sort=False) if others else [((), done)]
    panels = {}
    for setting, group in list(groups)[:MAX_PANELS]:
        setting = setting if isinstance(setting, tuple) else (setting,)
        grid = group.pivot_table(index=y_key, columns=x_key, values=metric, aggfunc="mean")
        panels[_legend(others, setting)] = grid.reindex(index=ys, columns=xs).to_numpy(float)
    return plot_heatmaps(
        panels,
        xs,
        ys,
        xlabel=label(x_key),
        ylabel=label(y_key),
        title=settings_title(
            frame,
            f"{label(metric)} by {short(x_key)} and {short(y_key)}",
            False,
            note=not_shown(frame, done),
        ),
        cbar_label=label(metric),
        log_x=wants_log(xs, log_x),
        fmt="{:.1f}",
    )
