"""mlplab-report: a table and figures for a multirun folder.

    mlplab-report outputs/train/multiruns/<time>_<id>
    mlplab-report sweep_dir=<folder> metric=val/acc mode=max

Reads every job's ``metrics.json`` (and the sweep's own definition in ``multirun.yaml``), writes
``summary.csv`` and ``summary.md`` into the folder, and draws the metric against each swept number
and width x depth heatmaps. A sweep that is still running is reported as far as it got; a job
whose ``metrics.json`` is missing, partial or malformed is listed with the reason, never fatal.

The functions below take paths and plain values (no Hydra config), so a notebook can call
:func:`collect_jobs` and :func:`sort_jobs` directly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OK, FAILED, RUNNING, PENDING, SKIPPED = "ok", "failed", "running", "pending", "skipped"
# Order of the job groups in the tables: results first, then what did not produce any.
STATUS_ORDER = {OK: 0, FAILED: 1, RUNNING: 2, PENDING: 3, SKIPPED: 4}
# Swept keys averaged over (not drawn as separate lines or heatmaps) in the figures.
AVERAGED_KEYS = ("seed",)
# More lines than this in one metric-vs figure, and the others keys are averaged over instead.
MAX_SERIES = 12
# Heatmap axes: (horizontal, vertical).
HEATMAP_KEYS = ("model.width", "model.depth")
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@dataclass
class Job:
    """One job of a multirun, as far as its folder tells.

    Attributes:
        name: Folder name relative to the multirun folder (the job number by default).
        status: ``ok`` or ``failed`` (from metrics.json), ``running`` (folder without
            metrics.json: still running, or killed), ``pending`` (in the sweep, no folder yet),
            ``skipped`` (metrics.json unreadable; ``error`` says why).
        overrides: The job's command-line overrides, parsed to values (``model.width`` -> 8).
        metrics: Final metrics (None for values that were not finite).
        error: The job's error line, or why it is not reported.
        wall_time_s: Wall time of the task body.
    """

    name: str
    status: str
    overrides: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_time_s: float | None = None

    def value(self, metric: str) -> float:
        """The metric as a float; NaN when missing or not a number."""
        value = self.metrics.get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return math.nan
        return float(value)


# --- reading a multirun folder ---------------------------------------------------------------


def natural_key(name: str) -> tuple:
    """Sort job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name))


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders under ``sweep_dir``: folders holding ``metrics.json`` or ``.hydra/``.

    Hidden folders (``.submitit``, ``.hydra``) are not searched, nor the inside of a job folder.
    """
    jobs = []
    for root, dirs, files in os.walk(sweep_dir):
        here = Path(root)
        if here != sweep_dir and ("metrics.json" in files or ".hydra" in dirs):
            if _is_report_run(here):
                dirs[:] = []
                continue
            jobs.append(here)
            dirs[:] = []  # checkpoints/, tensorboard/ ... are parts of the job
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(jobs, key=lambda p: natural_key(p.relative_to(sweep_dir).as_posix()))


def _is_report_run(folder: Path) -> bool:
    """A run folder of mlplab-report itself (when hydra.run.dir was put inside the sweep)."""
    try:
        return json.loads((folder / "metrics.json").read_text()).get("task") == "report"
    except (OSError, ValueError, AttributeError):
        return False


_PARSER: Any = None


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["model.width=8", "model.activation='ReLU()'"]`` -> ``{"model.width": 8, ...}``.

    Values are read with Hydra's own override grammar, so quoting is undone exactly as Hydra
    does it; an override Hydra cannot parse is split at its first ``=`` and kept as text.
    """
    global _PARSER
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if _PARSER is None:
        _PARSER = OverridesParser.create()
    parsed: dict[str, Any] = {}
    for text in overrides:
        text = str(text)
        try:
            override = _PARSER.parse_override(text)
            key = override.key_or_group + (f"@{override.package}" if override.package else "")
            value = override.value()
            if isinstance(value, list | dict):  # a list value: keep it readable in one cell
                value = override.get_value_element_as_str()
        except Exception:  # Hydra's grammar errors have no common base class worth naming
            key, _, value = text.partition("=")
            key = key.lstrip("+~")
        parsed[key] = value
    return parsed


def read_job(job_dir: Path, name: str) -> Job:
    """The :class:`Job` of one folder; a bad ``metrics.json`` gives status ``skipped``."""
    path = job_dir / "metrics.json"
    if not path.exists():
        return Job(
            name,
            RUNNING,
            overrides=_overrides_yaml(job_dir),
            error="no metrics.json yet (still running, or killed)",
        )
    try:
        record = json.loads(path.read_text())
    except UnicodeDecodeError:
        return _skipped(job_dir, name, "metrics.json is not text")
    except json.JSONDecodeError as err:
        return _skipped(
            job_dir, name, f"metrics.json is not valid JSON ({err.msg}, line {err.lineno})"
        )
    except OSError as err:
        return _skipped(job_dir, name, f"metrics.json cannot be read ({err.strerror})")
    if not isinstance(record, dict):
        return _skipped(job_dir, name, "metrics.json does not hold a JSON object")
    status = record.get("status")
    metrics = record.get("metrics", {})
    overrides = record.get("overrides", [])
    if status not in (OK, FAILED):
        return _skipped(job_dir, name, f"metrics.json has status {status!r}, not 'ok' or 'failed'")
    if not isinstance(metrics, dict):
        return _skipped(job_dir, name, "metrics.json has no 'metrics' object")
    if not isinstance(overrides, list):
        return _skipped(job_dir, name, "metrics.json has no 'overrides' list")
    wall = record.get("wall_time_s")
    return Job(
        name,
        status,
        overrides=parse_overrides(overrides),
        metrics=metrics,
        error=record.get("error") if status == FAILED else None,
        wall_time_s=float(wall) if isinstance(wall, int | float) else None,
    )


def _skipped(job_dir: Path, name: str, why: str) -> Job:
    return Job(name, SKIPPED, overrides=_overrides_yaml(job_dir), error=why)


def _overrides_yaml(job_dir: Path) -> dict[str, Any]:
    """The overrides Hydra saved when the job started (``.hydra/overrides.yaml``), if readable."""
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # missing or broken: the job is still listed, without its overrides
        return {}
    return parse_overrides(overrides) if isinstance(overrides, list) else {}


def expected_jobs(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """The jobs the sweep will run, by folder name, read from ``<sweep_dir>/multirun.yaml``.

    Known for Hydra's basic sweeper (the grid, in job order) and for Optuna (``n_trials``
    jobs, overrides not known in advance); empty when the folder names are not job numbers or
    the file is missing or unreadable.
    """
    try:
        master = OmegaConf.load(sweep_dir / "multirun.yaml")
        hydra_cfg = master.hydra
        if OmegaConf.to_container(hydra_cfg.sweep, resolve=False).get("subdir") != (
            "${hydra.job.num}"
        ):
            return {}
        sweeper = OmegaConf.to_container(hydra_cfg.sweeper, resolve=False)
        target = str(sweeper.get("_target_", ""))
        if target == BASIC_SWEEPER:
            return _basic_sweeper_jobs(sweeper, list(hydra_cfg.overrides.task))
        if "optuna" in target.lower():
            return {str(i): {} for i in range(int(sweeper.get("n_trials", 0)))}
    except Exception:  # no multirun.yaml, or one we cannot read: report the folders as found
        return {}
    return {}


def _basic_sweeper_jobs(sweeper: dict[str, Any], task_overrides: list[str]) -> dict[str, dict]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *task_overrides])
    batches = BasicSweeper.split_arguments(overrides, None)
    return {str(i): parse_overrides(job) for i, job in enumerate(batches[0])}


def collect_jobs(sweep_dir: str | os.PathLike[str]) -> list[Job]:
    """Every job of a multirun folder: finished, failed, running, not yet started, unreadable.

    Raises:
        ValueError: when ``sweep_dir`` is not a folder or holds no job folders.
    """
    sweep_dir = Path(sweep_dir).expanduser()
    if not sweep_dir.is_dir():
        raise ValueError("no such folder")
    found = {d.relative_to(sweep_dir).as_posix(): d for d in find_job_dirs(sweep_dir)}
    expected = expected_jobs(sweep_dir)
    if not found and not expected:
        hint = " (it is a single run folder)" if (sweep_dir / "metrics.json").exists() else ""
        raise ValueError(f"holds no job folders (<job>/metrics.json or <job>/.hydra){hint}")
    jobs = {name: read_job(path, name) for name, path in found.items()}
    for name, overrides in expected.items():
        if name not in jobs:
            jobs[name] = Job(name, PENDING, overrides=overrides, error="not started yet")
        elif not jobs[name].overrides:  # a job killed before Hydra saved its overrides
            jobs[name].overrides = overrides
    return sorted(jobs.values(), key=lambda job: natural_key(job.name))


# --- tabulating -------------------------------------------------------------------------------


def swept_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs between jobs (in the order they first appear)."""
    keys: list[str] = []
    for job in jobs:
        keys.extend(k for k in job.overrides if k not in keys)
    return [k for k in keys if len({_hashable(job.overrides.get(k)) for job in jobs}) > 1]


def common_overrides(jobs: Sequence[Job]) -> dict[str, Any]:
    """Overrides every job has with the same value."""
    if not jobs:
        return {}
    first = jobs[0].overrides
    return {
        k: v
        for k, v in first.items()
        if all(k in job.overrides and _hashable(job.overrides[k]) == _hashable(v) for job in jobs)
    }


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, list | dict) else (type(value).__name__, value)


def metric_keys(jobs: Sequence[Job], first: str | None = None) -> list[str]:
    """Metric names reported by the jobs: ``first``, then test/, val/, train/, then the rest."""
    names = {k for job in jobs for k in job.metrics}
    rank = {"test/": 0, "val/": 1, "train/": 2}

    def order(name: str) -> tuple:
        return (name != first, rank.get(name.split("/", 1)[0] + "/", 3), name)

    return sorted(names | ({first} if first and names else set()), key=order)


def sort_jobs(jobs: Sequence[Job], metric: str, mode: str = "max") -> list[Job]:
    """Finished jobs best first by ``metric`` (``mode`` max or min), then those without it,
    then failed, running, pending and skipped jobs in job order."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode={mode!r} is invalid: must be max or min")
    sign = -1.0 if mode == "max" else 1.0

    def order(job: Job) -> tuple:
        value = job.value(metric)
        has = job.status == OK and math.isfinite(value)
        return (
            STATUS_ORDER[job.status],
            not has,
            sign * value if has else 0.0,
            natural_key(job.name),
        )

    return sorted(jobs, key=order)


def summary_rows(jobs: Sequence[Job], keys: Sequence[str], metrics: Sequence[str]) -> list[dict]:
    """One dict per job: job, status, each key, each metric, wall_time_s, error."""
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name, "status": job.status}
        row.update({k: job.overrides.get(k) for k in keys})
        row.update({m: job.metrics.get(m) for m in metrics})
        row["wall_time_s"] = job.wall_time_s
        row["error"] = job.error
        rows.append(row)
    return rows


def seed_statistics(jobs: Sequence[Job], metric: str, mode: str = "max") -> list[dict[str, Any]]:
    """Mean, standard deviation, min and max of ``metric`` over seeds, per setting of the other
    swept keys (best mean first); empty unless ``seed`` is swept."""
    keys = swept_keys(jobs)
    if not any(k in keys for k in AVERAGED_KEYS):
        return []
    others = [k for k in keys if k not in AVERAGED_KEYS]
    groups: dict[tuple, list[float]] = {}
    for job in sorted(jobs, key=lambda j: natural_key(j.name)):
        if job.status == OK and math.isfinite(job.value(metric)):
            setting = tuple(_show(job.overrides.get(k)) for k in others)
            groups.setdefault(setting, []).append(job.value(metric))
    rows = [
        {
            **dict(zip(others, setting, strict=True)),
            "seeds": len(values),
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else math.nan,
            "min": min(values),
            "max": max(values),
        }
        for setting, values in groups.items()
    ]
    return sorted(rows, key=lambda row: -row["mean"] if mode == "max" else row["mean"])


def failure_label(job: Job, keys: Sequence[str]) -> str:
    """``3 (model.width=0: <error>)``: the job, what it was run with, and what went wrong."""
    assigned = ", ".join(f"{k}={_show(job.overrides[k])}" for k in keys if k in job.overrides)
    detail = f"{assigned}: {job.error}" if assigned else str(job.error)
    return f"{job.name} ({detail})"


def one_line_summary(jobs: Sequence[Job], sweep_dir: str | os.PathLike[str], limit: int = 3) -> str:
    """``mlplab: 8 of 9 jobs ok in <dir>; failed: 3 (model.width=0: ...)``."""
    ok = [job for job in jobs if job.status == OK]
    bad = [job for job in jobs if job.status != OK]
    line = f"mlplab: {len(ok)} of {len(jobs)} jobs ok in {sweep_dir}"
    by_status: dict[str, list[Job]] = {}
    for job in bad:
        by_status.setdefault(job.status, []).append(job)
    keys = swept_keys(jobs)
    for status, group in by_status.items():
        shown = [failure_label(job, keys) for job in group[:limit]]
        more = f" and {len(group) - limit} more" if len(group) > limit else ""
        line += f"; {status}: {', '.join(shown)}{more}"
    return line


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --- writing ----------------------------------------------------------------------------------


def write_text_atomic(path: Path, text: str) -> Path:
    """Write to a temporary file beside ``path``, then rename: no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def summary_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of :func:`summary_rows` (numbers at full precision, empty cells for None)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def summary_markdown(
    jobs: Sequence[Job],
    sweep_dir: Path,
    metric: str,
    mode: str,
    figures: Sequence[str] = (),
) -> str:
    """The report page: counts, the results table, failed jobs, unfinished jobs, figures."""
    keys = swept_keys(jobs)
    metrics = metric_keys([j for j in jobs if j.status == OK], first=metric)
    counts = {s: sum(job.status == s for job in jobs) for s in STATUS_ORDER}
    order = "highest" if mode == "max" else "lowest"
    lines = [
        "# Sweep report",
        "",
        f"Folder: `{sweep_dir}`",
        "",
        f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        f"Sorted by {metric}, {order} first.",
    ]
    same = common_overrides(jobs)
    if same:
        lines += ["", "Every job: " + " ".join(f"`{k}={_show(v)}`" for k, v in same.items())]
    done = [job for job in jobs if job.status == OK]
    if done:
        header = ["job", *keys, *metrics, "wall_time_s"]
        lines += ["", "## Results", "", *_table(header, [_cells(j, keys, metrics) for j in done])]
    spread = seed_statistics(jobs, metric, mode)
    if spread:
        header = list(spread[0])
        body = [[_show(v) for v in row.values()] for row in spread]
        lines += ["", f"## {metric} across seeds", "", *_table(header, body)]
    failed = [job for job in jobs if job.status == FAILED]
    if failed:
        header = ["job", *keys, "error"]
        body = [[j.name, *(_show(j.overrides.get(k)) for k in keys), j.error or ""] for j in failed]
        lines += ["", "## Failed", "", *_table(header, body)]
    other = [job for job in jobs if job.status in (RUNNING, PENDING, SKIPPED)]
    if other:
        header = ["job", "status", *keys, "reason"]
        body = [
            [j.name, j.status, *(_show(j.overrides.get(k)) for k in keys), j.error or ""]
            for j in other
        ]
        lines += ["", "## Not finished or unreadable", "", *_table(header, body)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _cells(job: Job, keys: Sequence[str], metrics: Sequence[str]) -> list[str]:
    overrides = [_show(job.overrides.get(k)) for k in keys]
    values = [_show(job.metrics.get(m)) for m in metrics]
    return [job.name, *overrides, *values, _show(job.wall_time_s)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Iterable[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


# --- figures ----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _wants_log(values: Sequence[float], log: bool | str) -> bool:
    """``auto``: a log axis for positive values spanning a factor 8 or more (widths, rates)."""
    if log == "auto":
        return min(values) > 0 and max(values) / min(values) >= 8
    return bool(log)


def _label(job: Job, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_show(job.overrides.get(k))}" for k in keys)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def slug(text: str) -> str:
    """A file-name-safe form: ``test/acc`` -> ``test_acc``, ``Tanh()`` -> ``Tanh``."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "all"


def sweep_figures(
    jobs: Sequence[Job],
    metric: str,
    log_x: bool | str = "auto",
    log_y: bool = False,
) -> dict[str, Figure]:
    """Figures of a sweep's finished jobs, by file stem.

    * ``<metric>_vs_<key>``: the metric against each swept numeric key, one line per setting of
      the other swept keys (averaged over seeds; over everything else beyond 12 lines).
    * ``<metric>_heatmap_<setting>``: width x depth heatmaps, one per setting of the other keys,
      when both are swept.
    """
    from mlplab.viz import plot_heatmap, plot_metric_vs

    keys = swept_keys(jobs)
    done = [j for j in jobs if j.status == OK and math.isfinite(j.value(metric))]
    done.sort(key=lambda job: natural_key(job.name))  # lines and heatmaps in sweep order
    figures: dict[str, Figure] = {}
    if not done:
        return figures
    for key in keys:
        if key in AVERAGED_KEYS:
            continue
        xs = sorted({j.overrides.get(key) for j in done if _is_number(j.overrides.get(key))})
        if len(xs) < 2 or any(not _is_number(j.overrides.get(key)) for j in done):
            continue
        others = [k for k in keys if k != key and k not in AVERAGED_KEYS]
        if len({_label(j, others) for j in done}) > MAX_SERIES:
            others = []
        groups: dict[str, dict[Any, list[float]]] = {}
        for job in done:
            cell = groups.setdefault(_label(job, others) or metric, {})
            cell.setdefault(job.overrides[key], []).append(job.value(metric))
        series = {label: [_mean(g.get(x, [])) for x in xs] for label, g in groups.items()}
        figures[f"{slug(metric)}_vs_{slug(key)}"] = plot_metric_vs(
            xs,
            series,
            xlabel=key,
            ylabel=metric,
            title=f"{metric} against {key}",
            log_x=_wants_log(xs, log_x),
            log_y=log_y,
        )
    x_key, y_key = HEATMAP_KEYS
    if x_key in keys and y_key in keys:
        figures.update(_heatmaps(done, keys, metric, x_key, y_key, log_x, plot_heatmap))
    return figures


def _heatmaps(
    done: Sequence[Job],
    keys: Sequence[str],
    metric: str,
    x_key: str,
    y_key: str,
    log_x: bool | str,
    plot_heatmap: Any,
) -> dict[str, Figure]:
    numeric = [
        j for j in done if _is_number(j.overrides.get(x_key)) and _is_number(j.overrides.get(y_key))
    ]
    if not numeric:
        return {}
    xs = sorted({j.overrides[x_key] for j in numeric})
    ys = sorted({j.overrides[y_key] for j in numeric})
    others = [k for k in keys if k not in (x_key, y_key) and k not in AVERAGED_KEYS]
    settings: dict[str, list[Job]] = {}
    for job in numeric:
        settings.setdefault(_label(job, others), []).append(job)
    figures = {}
    for setting, group in list(settings.items())[:MAX_SERIES]:
        values = [
            [
                _mean(
                    [
                        j.value(metric)
                        for j in group
                        if (j.overrides[x_key], j.overrides[y_key]) == (x, y)
                    ]
                )
                for x in xs
            ]
            for y in ys
        ]
        name = f"{slug(metric)}_heatmap"
        if setting:
            name += "_" + slug("_".join(_show(group[0].overrides.get(k)) for k in others))
        figures[name] = plot_heatmap(
            values,
            xs,
            ys,
            xlabel=x_key,
            ylabel=y_key,
            title=f"{metric}" + (f", {setting}" if setting else ""),
            cbar_label=metric,
            log_x=_wants_log(xs, log_x),
            log_y=False,
            fmt="{:.1f}",
        )
    return figures


# --- the task ---------------------------------------------------------------------------------


def make_report(
    sweep_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str] | None = None,
    metric: str = "test/acc",
    mode: str = "max",
    figures: bool = True,
    log_x: bool | str = "auto",
    log_y: bool = False,
) -> dict[str, Any]:
    """Write ``summary.csv``, ``summary.md`` and the figures of a multirun folder.

    Returns:
        Counts of jobs by status, the best value of ``metric`` and the files written.

    Raises:
        ConfigError: naming ``sweep_dir`` (no such folder, no jobs) or ``metric`` (no finished
            job reports it).
    """
    sweep = Path(sweep_dir).expanduser()
    try:
        jobs = collect_jobs(sweep)
    except ValueError as err:
        raise ConfigError("sweep_dir", str(sweep_dir), f"must be a multirun folder: {err}") from err
    done = [job for job in jobs if job.status == OK]
    known = metric_keys(done)
    if done and metric not in known:
        numbers = [m for m in known if any(_is_number(j.metrics.get(m)) for j in done)]
        raise ConfigError("metric", metric, f"must be one of {', '.join(numbers)}")
    jobs = sort_jobs(jobs, metric, mode)
    out = Path(report_dir).expanduser() if report_dir is not None else sweep
    names: list[str] = []
    if figures:
        from mlplab.viz import figure_to_png

        for stem, fig in sweep_figures(jobs, metric, log_x=log_x, log_y=log_y).items():
            figure_to_png(fig, out / f"{stem}.png")
            names.append(f"{stem}.png")
    keys = swept_keys(jobs)
    rows = summary_rows(jobs, [*common_overrides(jobs), *keys], metric_keys(done, first=metric))
    write_text_atomic(out / "summary.csv", summary_csv(rows))
    write_text_atomic(out / "summary.md", summary_markdown(jobs, sweep, metric, mode, names))
    best = next(
        (job for job in jobs if job.status == OK and math.isfinite(job.value(metric))), None
    )
    result: dict[str, Any] = {f"jobs/{s}": sum(j.status == s for j in jobs) for s in STATUS_ORDER}
    result["jobs/total"] = len(jobs)
    result[f"best/{metric}"] = best.value(metric) if best else None
    result["best/job"] = best.name if best else None
    result["files"] = ["summary.csv", "summary.md", *names]
    result["report_dir"] = str(out)
    return result


def _report_body(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "sweep_dir") or cfg.sweep_dir is None:
        raise ConfigError("sweep_dir", "???", "give the multirun folder: mlplab-report <folder>")
    sweep_dir = common.get(cfg, "sweep_dir")
    if not isinstance(sweep_dir, str | int):
        raise ConfigError("sweep_dir", sweep_dir, "must be a path to a multirun folder")
    metric = common.get(cfg, "metric")
    if not isinstance(metric, str) or not metric:
        raise ConfigError("metric", metric, "must be a metric name such as test/acc")
    mode = common.check_choice(cfg, "mode", ["max", "min"])
    draw = common.check_bool(cfg, "figures")
    log_x = common.get(cfg, "log_x")
    if log_x not in ("auto", True, False):
        raise ConfigError("log_x", log_x, "must be auto, true or false")
    log_y = common.check_bool(cfg, "log_y")
    report_dir = common.get(cfg, "report_dir")
    if report_dir is not None and not isinstance(report_dir, str):
        raise ConfigError("report_dir", report_dir, "must be a folder path or null")
    common.settle_gc()
    result = make_report(str(sweep_dir), report_dir, metric, mode, draw, log_x, log_y)
    print(
        f"mlplab-report: {result['jobs/total']} jobs, {result['jobs/ok']} ok; wrote "
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
