"""mlplab-report on hand-made multirun folders: reading, sorting, tables, figures, bad input."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
from pathlib import Path

import pytest
from matplotlib.collections import QuadMesh

from conftest import run_cli
from mlplab.tasks.common import ConfigError
from mlplab.tasks.report import (
    FAILED,
    OK,
    PENDING,
    RUNNING,
    SKIPPED,
    collect_jobs,
    hydra_quote,
    make_report,
    one_line_summary,
    parse_overrides,
    positional_to_sweep_dir,
    seed_statistics,
    sort_jobs,
    sweep_figures,
    swept_keys,
)

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
WIDTHS, DEPTHS, ACTIVATIONS = [8, 32], [1, 2], ["ReLU()", "Tanh()"]


def accuracy(width: int, depth: int, activation: str) -> float:
    """A made-up but distinct test accuracy per job."""
    return 50.0 + width / 2 + 5 * depth + (3.0 if activation == "Tanh()" else 0.0)


def write_record(job: Path, overrides: list[str], status: str = OK, **extra) -> None:
    job.mkdir(parents=True)
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record = {"task": "train", "status": status, "error": None, "overrides": overrides}
    record.update({"metrics": {}, "wall_time_s": 1.5, **extra})
    (job / "metrics.json").write_text(json.dumps(record))


def write_multirun_yaml(sweep: Path, task_overrides: list[str], params: dict[str, str]) -> None:
    """The keys of Hydra's multirun.yaml that the report reads, as Hydra writes them."""
    lines = [
        "hydra:",
        "  sweep:",
        f"    dir: {sweep}",
        "    subdir: ${hydra.job.num}",
        "  sweeper:",
        f"    _target_: {BASIC}",
        "    max_batch_size: null",
        "    params:",
        *(f"      {k}: {json.dumps(v)}" for k, v in params.items()),
        "  overrides:",
        "    task:",
        *(f"    - {json.dumps(o)}" for o in task_overrides),
        "seed: 2021",
    ]
    (sweep / "multirun.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A 2 x 2 x 2 arch grid plus one bad width, mid-way: 8 ok, 1 failed, 1 running, 1 pending,
    2 with unreadable metrics.json, as `-m sweep=arch model.width=8,32,0 ...` would leave it."""
    sweep = tmp_path / "multiruns" / "2026-01-01_00-00-00_abc"
    sweep.mkdir(parents=True)
    write_multirun_yaml(
        sweep,
        ["model.width=8,32,0", "model.depth=1,2", "debug=fast"],
        {"model.activation": "'ReLU()','Tanh()'"},
    )
    grid = list(itertools.product([8, 32, 0], DEPTHS, ACTIVATIONS))
    for num, (width, depth, activation) in enumerate(grid):
        job = sweep / str(num)
        overrides = [
            f"model.width={width}",
            f"model.depth={depth}",
            f"model.activation='{activation}'",
            "debug=fast",
        ]
        if width and num != 7:
            acc = accuracy(width, depth, activation)
            write_record(job, overrides, metrics={"test/acc": acc, "test/loss": 1.0 / acc})
        elif num == 7:  # finished writing nothing yet: still running
            write_record(job, overrides)
            (job / "metrics.json").unlink()
        elif num == 8:
            error = "model.width=0 is invalid: must be an integer >= 1"
            write_record(job, overrides, status=FAILED, error=error)
        elif num == 9:  # partial: a writer that did not write atomically, cut off
            write_record(job, overrides)
            (job / "metrics.json").write_text('{"task": "train", "status": "o')
        elif num == 10:  # malformed: valid JSON of the wrong shape
            write_record(job, overrides)
            (job / "metrics.json").write_text("[1, 2, 3]")
        # job 11: not started (pending)
    (sweep / ".submitit" / "123").mkdir(parents=True)  # launcher files are not jobs
    return sweep


def test_collect_jobs_reports_every_state_with_its_reason(sweep):
    jobs = {job.name: job for job in collect_jobs(sweep)}
    assert list(jobs) == [str(i) for i in range(12)]
    status = {name: job.status for name, job in jobs.items()}
    assert [status[str(i)] for i in range(7)] == [OK] * 7
    assert (status["7"], status["8"], status["9"], status["10"]) == (
        RUNNING,
        FAILED,
        SKIPPED,
        SKIPPED,
    )
    assert status["11"] == PENDING
    assert jobs["7"].error == "no metrics.json yet (still running, or killed)"
    assert jobs["8"].error == "model.width=0 is invalid: must be an integer >= 1"
    assert jobs["9"].error.startswith("metrics.json is not valid JSON (")
    assert jobs["10"].error == "metrics.json does not hold a JSON object"
    # Overrides come from metrics.json, .hydra/overrides.yaml, or the sweep's own grid.
    assert jobs["0"].overrides == {
        "model.width": 8,
        "model.depth": 1,
        "model.activation": "ReLU()",
        "debug": "fast",
    }
    assert jobs["7"].overrides["model.activation"] == "Tanh()"  # from .hydra/overrides.yaml
    assert jobs["11"].overrides == {  # from multirun.yaml: the last job of the grid
        "model.activation": "Tanh()",
        "model.width": 0,
        "model.depth": 2,
        "debug": "fast",
    }
    assert swept_keys(list(jobs.values())) == ["model.width", "model.depth", "model.activation"]


def test_sort_jobs_best_first_then_failed_then_the_rest(sweep):
    jobs = collect_jobs(sweep)
    by_max = sort_jobs(jobs, "test/acc", "max")
    ok = [job for job in jobs if job.status == OK]
    expected = sorted(ok, key=lambda j: -j.metrics["test/acc"])
    assert [j.name for j in by_max[:7]] == [j.name for j in expected]
    assert [j.name for j in by_max[7:]] == ["8", "7", "11", "9", "10"]
    by_min = sort_jobs(jobs, "test/loss", "min")
    losses = [j.metrics["test/loss"] for j in by_min[:7]]
    assert losses == sorted(losses)
    with pytest.raises(ValueError, match="mode='best' is invalid"):
        sort_jobs(jobs, "test/acc", "best")


def test_one_line_summary_names_each_failure():
    # 8 of 9 ok, as the issue words it.
    from mlplab.tasks.report import Job

    jobs = [Job(str(i), OK, overrides={"model.width": 8 * (i + 1)}) for i in range(9)]
    jobs[3] = Job("3", FAILED, {"model.width": 0}, error="model.width=0 is invalid: must be >= 1")
    assert one_line_summary(jobs, "out/x") == (
        "mlplab: 8 of 9 jobs ok in out/x; failed: 3 (model.width=0: model.width=0 is invalid: "
        "must be >= 1)"
    )


def test_report_files_of_a_sweep_in_progress(sweep):
    result = make_report(sweep)
    assert result["jobs/ok"] == 7 and result["jobs/total"] == 12
    assert result["jobs/failed"] == 1 and result["jobs/skipped"] == 2
    finished = [g for g in itertools.product(WIDTHS, DEPTHS, ACTIVATIONS) if g != (32, 2, "Tanh()")]
    best = max(accuracy(*g) for g in finished)  # job 7, the best setting, is still running
    assert result["best/test/acc"] == best == accuracy(32, 2, "ReLU()")
    rows = list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text())))
    assert [r["job"] for r in rows] == [j.name for j in sort_jobs(collect_jobs(sweep), "test/acc")]
    assert list(rows[0])[:6] == [
        "job",
        "status",
        "debug",
        "model.width",
        "model.depth",
        "model.activation",
    ]
    top = rows[0]
    setting = (top["model.width"], top["model.depth"], top["model.activation"])
    assert setting == ("32", "2", "ReLU()")
    assert float(top["test/acc"]) == best
    assert rows[7]["status"] == FAILED and "must be an integer >= 1" in rows[7]["error"]
    assert rows[10]["error"].startswith("metrics.json is not valid JSON")
    markdown = (sweep / "summary.md").read_text()
    assert "12 jobs: 7 ok, 1 failed, 1 running, 1 pending, 2 skipped." in markdown
    assert "Every job: `debug=fast`" in markdown
    sections = ["## Results", "## Failed", "## Not finished or unreadable", "## Figures"]
    assert [markdown.index(s) for s in sections] == sorted(markdown.index(s) for s in sections)
    assert "| 11 | pending | 0 | 2 | Tanh() | not started yet |" in markdown
    # Atomic writes leave no temporary files behind.
    assert not list(sweep.glob(".*.tmp"))
    for name in result["files"][2:]:
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_average_the_right_jobs(sweep):
    jobs = collect_jobs(sweep)
    figures = sweep_figures(jobs, "test/acc")
    assert set(figures) == {
        "test_acc_vs_model.width",
        "test_acc_vs_model.depth",
        "test_acc_heatmap_ReLU",
        "test_acc_heatmap_Tanh",
    }
    ax = figures["test_acc_vs_model.width"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    # One line per (depth, activation); job 7 (width 32, depth 2, Tanh()) is still running.
    line = lines["model.depth=2, model.activation=Tanh()"]
    assert list(line.get_xdata()) == [8, 32]
    ydata = line.get_ydata()
    assert ydata[0] == accuracy(8, 2, "Tanh()") and math.isnan(ydata[1])
    assert ax.get_xscale() == "linear"  # log_x=auto: widths 8 and 32 span less than a factor 8
    (mesh,) = [
        c for c in figures["test_acc_heatmap_ReLU"].axes[0].collections if isinstance(c, QuadMesh)
    ]
    cells = mesh.get_array().reshape(2, 2)  # rows: depth 1, 2; columns: width 8, 32
    expected = [[accuracy(w, d, "ReLU()") for w in WIDTHS] for d in DEPTHS]
    assert cells.tolist() == expected


def test_seed_statistics_and_log_axes(tmp_path):
    sweep = tmp_path / "seeds"
    values = {}
    for num, (lr, seed) in enumerate(itertools.product([1e-3, 1e-1], [1, 2, 3])):
        values.setdefault(lr, []).append(90.0 - 10 * (lr > 0.01) + seed)
        metrics = {"test/acc": values[lr][-1]}
        write_record(sweep / str(num), [f"optimizer.lr={lr}", f"seed={seed}"], metrics=metrics)
    jobs = collect_jobs(sweep)
    (first, second) = seed_statistics(jobs, "test/acc")
    assert first["optimizer.lr"] == "0.001" and first["seeds"] == 3
    assert first["mean"] == statistics.fmean(values[1e-3]) == 92.0
    assert first["std"] == statistics.stdev(values[1e-3]) == 1.0
    assert (second["min"], second["max"]) == (81.0, 83.0)
    figures = sweep_figures(jobs, "test/acc", log_x="auto", log_y=True)
    assert set(figures) == {"test_acc_vs_optimizer.lr"}  # seeds are averaged, not drawn
    ax = figures["test_acc_vs_optimizer.lr"].axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == [92.0, 82.0]
    make_report(sweep, figures=False)
    assert "## test/acc across seeds" in (sweep / "summary.md").read_text()


def test_make_report_refuses_bad_folders_and_metrics(tmp_path, sweep):
    with pytest.raises(ConfigError, match=r"sweep_dir=.* is invalid: .*no such folder"):
        make_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no job folders"):
        make_report(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"metric='test/accuracy' is invalid: must be one of"):
        make_report(sweep, metric="test/accuracy")
    assert not (sweep / "summary.csv").exists()  # nothing written for a bad request


def test_positional_folder_argument_and_quoting():
    assert positional_to_sweep_dir(["out/m", "metric=val/acc"]) == [
        "sweep_dir='out/m'",
        "metric=val/acc",
    ]
    assert positional_to_sweep_dir(["sweep_dir=out/m"]) == ["sweep_dir=out/m"]
    with pytest.raises(ConfigError, match="give one multirun folder"):
        positional_to_sweep_dir(["a", "b"])
    with pytest.raises(ConfigError, match="not also as sweep_dir="):
        positional_to_sweep_dir(["a", "sweep_dir=b"])
    for path in ["/tmp/a b/c=d", "it's", "x\\", "run(1),2"]:
        assert parse_overrides([f"sweep_dir={hydra_quote(path)}"]) == {"sweep_dir": path}


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_positional_and_key_value_forms_and_errors(tmp_path, sweep):
    log = f"paths.log_dir={tmp_path / 'outputs'}"
    ok = run_cli(
        "report", str(sweep), "metric=test/loss", "mode=min", "figures=false", log, cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    rows = list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text())))
    losses = [float(r["test/loss"]) for r in rows if r["status"] == OK]
    assert losses == sorted(losses)
    out = tmp_path / "elsewhere"
    same = run_cli("report", f"sweep_dir={sweep}", f"report_dir={out}", log, cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert {p.name for p in out.iterdir()} >= {"summary.csv", "summary.md"}
    for args, line in [
        ((str(tmp_path / "nope"),), "sweep_dir="),
        ((str(sweep), "metric=val/acc"), "metric='val/acc' is invalid: must be one of test/acc"),
        ((str(sweep), "mode=best"), "mode='best' is invalid: must be one of max, min"),
        ((), "sweep_dir='???' is invalid: give the multirun folder"),
        ((str(sweep), str(tmp_path)), "give one multirun folder"),
    ]:
        bad = run_cli("report", *args, log, cwd=tmp_path)
        assert bad.returncode == 2, (args, bad.stderr)
        errors = [x for x in bad.stderr.splitlines() if x.startswith("mlplab-report: error: ")]
        assert len(errors) == 1 and line in errors[0], bad.stderr
