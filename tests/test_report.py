"""mlplab.report and mlplab-report: a real sweep as a DataFrame, tables, figures, bad input."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.text import Text

from conftest import python_output, run_cli
from mlplab.report import (
    FAILED,
    MISSING,
    OK,
    UNREADABLE,
    is_grid,
    load_sweep,
    one_line_summary,
    override_value,
    parse_overrides,
    seed_statistics,
    sort_jobs,
    sweep_figures,
    swept_keys,
)
from mlplab.tasks.common import ConfigError
from mlplab.tasks.report import (
    expected_jobs,
    hydra_quote,
    make_report,
    positional_to_sweep_dir,
)
from mlplab.viz import fitted_slope, plot_heatmaps

WIDTH_ERROR = "model.width=0 is invalid: must be an integer >= 1"
# A 2 x 2 grid of seconds-long jobs; width 0 is refused by the MLP: jobs 0 and 1 fail.
CLI_GRID = ["model.width=0,4", "optimizer.lr=0.01,0.1"]
CLI_TINY = [
    "debug=fast",
    "logger=none",
    "callbacks=none",
    "figures=false",
    "data.points_per_class=50",
]


def write_record(job: Path, overrides: list[str], status: str = OK, **extra) -> None:
    """A job folder as mlplab's run_task leaves it (metrics.json and .hydra/overrides.yaml)."""
    job.mkdir(parents=True)
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record = {"task": "train", "status": status, "error": None, "overrides": overrides}
    record.update({"metrics": {}, "hparams": {"data/num_classes": 4}, "wall_time_s": 1.5})
    record.update(extra)
    (job / "metrics.json").write_text(json.dumps(record))


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return frame.attrs["metrics"]


# --- a real sweep made with the CLI -----------------------------------------------------------


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory) -> Path:
    """``mlplab-train -m model.width=0,4 optimizer.lr=0.01,0.1 debug=fast ...``, as run."""
    root = tmp_path_factory.mktemp("cli_sweep")
    result = run_cli("train", "-m", *CLI_GRID, *CLI_TINY, f"paths.log_dir={root}", cwd=root)
    assert result.returncode == 1, result.stderr[-3000:]  # two jobs failed, the sweep finished
    (sweep,) = (root / "train" / "multiruns").iterdir()
    return sweep


@pytest.fixture
def sweep_copy(cli_sweep, tmp_path) -> Path:
    """A copy of the CLI sweep for a test to change."""
    return Path(shutil.copytree(cli_sweep, tmp_path / cli_sweep.name))


@pytest.mark.slow
@pytest.mark.subprocess
def test_load_sweep_of_a_real_cli_sweep(cli_sweep):
    frame = load_sweep(cli_sweep)
    assert frame["job"].tolist() == ["0", "1", "2", "3"]
    assert frame["status"].tolist() == [FAILED, FAILED, OK, OK]
    assert frame["error"].iloc[:2].tolist() == [WIDTH_ERROR] * 2
    assert frame["error"].iloc[2:].isna().all()
    overrides = ["model.width", "optimizer.lr", "debug", "logger", "callbacks", "figures"]
    overrides += ["data.points_per_class", "paths.log_dir"]
    assert frame.attrs["overrides"] == overrides
    assert list(frame.columns[:10]) == ["job", "status", *overrides]
    # Typed as the job ran them: ints stay ints, floats floats.
    assert str(frame["model.width"].dtype) == "Int64"
    assert frame["model.width"].tolist() == [0, 0, 4, 4]
    assert frame["optimizer.lr"].dtype == np.float64
    assert frame["optimizer.lr"].tolist() == [0.01, 0.1, 0.01, 0.1]
    assert str(frame["figures"].dtype) == "boolean" and not frame["figures"].any()
    assert frame["debug"].tolist() == ["fast"] * 4
    assert frame["data.num_classes"].tolist() == [4] * 4
    assert swept_keys(frame) == ["model.width", "optimizer.lr"]
    # Every metric of each job's metrics.json, as recorded.
    for _, row in frame.iterrows():
        record = json.loads((cli_sweep / row["job"] / "metrics.json").read_text())
        assert row["wall_time_s"] == record["wall_time_s"]
        for name in metric_columns(frame):
            recorded = record["metrics"].get(name)
            assert (pd.isna(row[name]) and recorded is None) or row[name] == recorded, name
        if row["status"] == OK:
            assert set(record["metrics"]) == set(metric_columns(frame))
            assert 0.0 <= row["test/acc"] <= 100.0
    assert frame.loc[:1, "test/acc"].isna().all()  # the failed jobs have no results
    assert one_line_summary(frame, "out") == (
        f"mlplab: 2 of 4 jobs ok in out; failed: job 0 (model.width=0, optimizer.lr=0.01: "
        f"{WIDTH_ERROR}), job 1 (model.width=0, optimizer.lr=0.1: {WIDTH_ERROR})"
    )
    # A figure says which jobs it leaves out, rather than dropping them silently.
    (figure,) = sweep_figures(frame, "test/acc").values()
    texts = " ".join(t.get_text().replace("\n", " ") for t in figure.findobj(Text))
    assert "not shown: failed: jobs 0, 1" in texts


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_report_csv_reads_back_as_the_frame(sweep_copy, tmp_path):
    result = run_cli("report", str(sweep_copy), f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frame = sort_jobs(load_sweep(sweep_copy), "test/acc", "max")
    assert frame["job"].tolist()[2:] == ["0", "1"]  # finished jobs first, best first
    back = pd.read_csv(sweep_copy / "summary.csv", dtype=frame.dtypes.to_dict())
    pd.testing.assert_frame_equal(back, frame.reset_index(drop=True))
    markdown = (sweep_copy / "summary.md").read_text()
    assert "4 jobs: 2 ok, 2 failed." in markdown
    assert "Every job: `debug=fast` `logger=none`" in markdown
    assert "## Results" in markdown and "## Failed or not finished" in markdown
    assert f"| failed   |             0 |           0.1  | {WIDTH_ERROR} |" in markdown


@pytest.mark.slow
@pytest.mark.subprocess
def test_jobs_not_finished_or_not_started(cli_sweep, sweep_copy):
    shutil.rmtree(sweep_copy / "3")  # not started yet
    (sweep_copy / "2" / "metrics.json").unlink()  # still running, or killed
    (sweep_copy / "1" / "metrics.json").write_text('{"task": "train", "status": "o')  # cut off
    # What job 3 will run, from multirun.yaml: exactly what it did run.
    expected = expected_jobs(sweep_copy)
    assert list(expected) == ["0", "1", "2", "3"]
    ran = json.loads((cli_sweep / "3" / "metrics.json").read_text())["overrides"]
    assert expected["3"] == parse_overrides(ran)
    assert (expected["3"]["model.width"], expected["3"]["optimizer.lr"]) == (4, 0.1)
    frame = load_sweep(sweep_copy, expected)
    assert frame["status"].tolist() == [FAILED, UNREADABLE, MISSING, MISSING]
    assert frame["error"].tolist()[1:] == [
        "metrics.json cannot be read: not valid JSON (Unterminated string starting at, line 1)",
        "no metrics.json (still running, or killed)",
        "not started",
    ]
    assert frame["model.width"].tolist() == [0, 0, 4, 4]  # from .hydra/ and multirun.yaml
    assert frame["optimizer.lr"].tolist() == [0.01, 0.1, 0.01, 0.1]
    assert str(frame["model.width"].dtype) == "Int64"
    summary = make_report(sweep_copy, figures=False)
    assert summary["jobs/missing"] == 2 and summary["jobs/unreadable"] == 1
    assert summary["best/test/acc"] is None  # no job finished


def test_the_library_needs_no_hydra():
    code = "import sys, mlplab.report; print(sorted(m for m in sys.modules if 'hydra' in m))"
    assert python_output(code) == "[]"


# --- tables and order on hand-made folders ----------------------------------------------------


@pytest.fixture
def arch(tmp_path: Path) -> Path:
    """A width x depth x activation grid with made-up accuracies, and a failed job."""
    sweep = tmp_path / "arch"
    grid = list(itertools.product([8, 32, 128], [1, 2, 3], ["ReLU()", "Tanh()"]))
    for num, (width, depth, activation) in enumerate(grid):
        overrides = [
            f"model.width={width}",
            f"model.depth={depth}",
            f"model.activation='{activation}'",
            "debug=fast",
        ]
        acc = accuracy(width, depth, activation)
        write_record(sweep / str(num), overrides, metrics={"test/acc": acc, "test/loss": 1 / acc})
    write_record(
        sweep / str(len(grid)),
        ["model.width=0", "model.depth=1", "model.activation='ReLU()'", "debug=fast"],
        status=FAILED,
        error=WIDTH_ERROR,
    )
    return sweep


def accuracy(width: int, depth: int, activation: str) -> float:
    """A made-up but distinct test accuracy per job, in %."""
    return 40.0 + width / 4 + 5 * depth + (3.0 if activation == "Tanh()" else 0.0)


def test_sort_jobs_best_first_then_the_rest(arch):
    frame = load_sweep(arch)
    ranked = sort_jobs(frame, "test/acc", "max")
    accs = ranked["test/acc"].tolist()
    assert accs[:-1] == sorted(accs[:-1], reverse=True) and ranked["status"].iloc[-1] == FAILED
    losses = sort_jobs(frame, "test/loss", "min")["test/loss"].tolist()[:-1]
    assert losses == sorted(losses)
    with pytest.raises(ValueError, match="mode='best' is invalid"):
        sort_jobs(frame, "test/acc", "best")


def test_override_values_are_typed_as_hydra_types_them():
    cases = {
        "8": 8,
        "1e-3": 0.001,
        "0.5": 0.5,
        "'ReLU()'": "ReLU()",
        "LeakyReLU": "LeakyReLU",
        "false": False,
        "null": None,
        "[8,8]": "[8,8]",
        "a: b": "a: b",
    }
    assert {text: override_value(text) for text in cases} == cases


def test_seed_statistics_with_pandas_groupby(tmp_path):
    sweep = tmp_path / "seeds"
    values: dict[float, list[float]] = {}
    for num, (lr, seed) in enumerate(itertools.product([1e-3, 1e-1], [1, 2, 3])):
        values.setdefault(lr, []).append(90.0 - 10 * (lr > 0.01) + seed)
        metrics = {"test/acc": values[lr][-1]}
        write_record(sweep / str(num), [f"optimizer.lr={lr}", f"seed={seed}"], metrics=metrics)
    stats = seed_statistics(load_sweep(sweep), "test/acc")
    assert stats["optimizer.lr"].tolist() == [1e-3, 1e-1]
    assert stats["seeds"].tolist() == [3, 3]
    assert stats["mean"].tolist() == [
        statistics.fmean(values[1e-3]),
        statistics.fmean(values[1e-1]),
    ]
    assert stats["std"].tolist() == [statistics.stdev(values[1e-3])] * 2 == [1.0, 1.0]
    assert (stats["min"].iloc[1], stats["max"].iloc[1]) == (81.0, 83.0)
    figures = sweep_figures(load_sweep(sweep), "test/acc")
    assert set(figures) == {"test_acc_vs_optimizer.lr"}  # seeds are averaged, not drawn
    ax = figures["test_acc_vs_optimizer.lr"].axes[0]
    assert "mean ± std over 3 seeds" in ax.get_title()
    (line,) = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert line.get_ydata().tolist() == [92.0, 82.0]
    (bars,) = ax.containers  # error bars: the standard deviation over seeds
    assert bars.has_yerr
    make_report(sweep, figures=False)
    assert "## test/acc across seeds" in (sweep / "summary.md").read_text()


# --- figures ----------------------------------------------------------------------------------


def test_line_figures_labels_ticks_legend_and_chance(arch):
    figures = sweep_figures(load_sweep(arch), "test/acc")
    assert set(figures) == {
        "test_acc_vs_model.width",
        "test_acc_vs_model.depth",
        "test_acc_heatmap",
    }
    ax = figures["test_acc_vs_model.width"].axes[0]
    assert ax.get_xlabel() == "width (units per hidden layer)"
    assert ax.get_ylabel() == "test accuracy (%)"
    assert ax.get_title().splitlines() == [
        "test accuracy (%) against width (units per hidden layer)",
        "debug=fast",
        "not shown: failed: job 18",  # the figure says what it leaves out
    ]
    # Widths 8..128 span a factor 16: a log axis ticked at the swept values, no minor ticks.
    assert ax.get_xscale() == "log"
    assert ax.get_xticks().tolist() == [8, 32, 128]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "32", "128"]
    assert ax.xaxis.get_minorticklocs().size == 0
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["depth=1, activation=ReLU()", "depth=1, activation=Tanh()"]
    assert legend[-1] == "chance (1/4 = 25 %)"
    (chance,) = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert list(chance.get_ydata()) == [25.0, 25.0]  # 1 / data.num_classes, in %
    line = next(line for line in ax.get_lines() if line.get_label() == legend[1])
    assert line.get_ydata().tolist() == [accuracy(w, 1, "Tanh()") for w in (8, 32, 128)]
    # Depth: a linear axis with integer ticks at 1, 2, 3, never 1.25.
    ax = figures["test_acc_vs_model.depth"].axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "depth (hidden layers)"
    assert ax.get_xticks().tolist() == [1, 2, 3]


def test_heatmap_panels_share_one_colour_scale(arch):
    fig = sweep_figures(load_sweep(arch), "test/acc")["test_acc_heatmap"]
    *panels, colorbar = fig.axes  # one colour bar for all panels, after them
    assert colorbar.get_label() == "<colorbar>"
    assert [ax.get_title() for ax in panels] == ["activation=ReLU()", "activation=Tanh()"]
    meshes = [next(c for c in ax.collections if isinstance(c, QuadMesh)) for ax in panels]
    everything = [
        accuracy(*g) for g in itertools.product([8, 32, 128], [1, 2, 3], ["ReLU()", "Tanh()"])
    ]
    assert meshes[0].norm is meshes[1].norm
    assert meshes[0].get_clim() == meshes[1].get_clim() == (min(everything), max(everything))
    assert colorbar.get_ylabel() == "test accuracy (%)"
    cells = meshes[1].get_array().reshape(3, 3)  # rows: depth 1, 2, 3; columns: width
    expected = [[accuracy(w, d, "Tanh()") for w in (8, 32, 128)] for d in (1, 2, 3)]
    assert cells.tolist() == expected
    for ax in panels:
        assert ax.get_xticks().tolist() == [8, 32, 128] and ax.get_yticks().tolist() == [1, 2, 3]
    assert panels[0].get_ylabel() == "depth (hidden layers)"


def test_log_log_error_against_relus_states_the_fitted_slope(tmp_path):
    sweep = tmp_path / "approx"
    rng = np.random.default_rng(0)
    n_points = [8, 16, 32, 64, 128]
    for num, n in enumerate(n_points):  # errors ~ N^-2 with some noise
        error = 3.0 * (n - 1) ** -2.0 * math.exp(rng.normal(0, 0.1))
        metrics = {"approx/max_error": error, "approx/num_relus": n - 1}
        write_record(sweep / str(num), [f"n_points={n}"], metrics=metrics, hparams={})
    frame = load_sweep(sweep)
    fig = sweep_figures(frame, "approx/max_error")["approx_max_error_vs_approx_num_relus"]
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")  # log_x, log_y auto
    assert ax.get_xlabel() == "number of ReLUs"
    assert ax.get_xticks().tolist() == [n - 1 for n in n_points]
    relus = frame["approx/num_relus"].to_numpy(float)
    errors = frame["approx/max_error"].to_numpy(float)
    slope, intercept = np.polyfit(np.log10(relus), np.log10(errors), 1)
    (fit,) = [line for line in ax.get_lines() if "slope" in line.get_label()]
    assert fit.get_label() == f"fit: slope {slope:.2f}".replace("-", "\u2212")
    x, y = fit.get_xdata(), fit.get_ydata()
    assert x.tolist() == [relus.min(), relus.max()]
    np.testing.assert_allclose(np.diff(np.log10(y)) / np.diff(np.log10(x)), [slope])
    np.testing.assert_allclose(y, 10**intercept * x**slope)
    assert not any(line.get_label().startswith("chance") for line in ax.get_lines())


def test_heatmap_panels_and_slope_refuse_what_they_cannot_draw():
    with pytest.raises(ValueError, match="panels is empty"):
        plot_heatmaps({}, [1, 2], [1, 2], "x", "y")
    with pytest.raises(ValueError, match=r"panels\['b'\] has shape \(1, 2\) but expected"):
        plot_heatmaps({"a": np.ones((2, 2)), "b": np.ones((1, 2))}, [1, 2], [1, 2], "x", "y")
    # NaN cells (failed jobs) are blank and do not stretch the shared colour range.
    fig = plot_heatmaps({"a": [[1.0, np.nan]], "b": [[3.0, 5.0]]}, [1, 2], [1], "x", "y")
    mesh = next(c for c in fig.axes[0].collections if isinstance(c, QuadMesh))
    assert mesh.get_clim() == (1.0, 5.0) and np.ma.getmaskarray(mesh.get_array()).sum() == 1
    assert fitted_slope([1, 2, 4], [1, np.nan, -1]) is None  # one usable point: no line
    slope, intercept = fitted_slope([1, 10, 100], [5, 0.5, 0.05])
    assert (slope, intercept) == pytest.approx((-1.0, math.log10(5)))


# --- bad input --------------------------------------------------------------------------------


def test_make_report_refuses_bad_folders_and_metrics(tmp_path, arch):
    with pytest.raises(ConfigError, match=r"sweep_dir=.* is invalid: .*no such folder"):
        make_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no job folders"):
        make_report(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"metric='test/accuracy' is invalid: must be one of"):
        make_report(arch, metric="test/accuracy")
    assert not (arch / "summary.csv").exists()  # nothing written for a bad request


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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for path in ["/tmp/a b/c=d", "it's", "x\\", "run(1),2"]:
        assert parser.parse_override(f"sweep_dir={hydra_quote(path)}").value() == path


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_key_value_form_and_errors(tmp_path, arch):
    log = f"paths.log_dir={tmp_path / 'outputs'}"
    out = tmp_path / "elsewhere"
    same = run_cli("report", f"sweep_dir={arch}", f"report_dir={out}", "metric=test/loss",
                   "mode=min", log, cwd=tmp_path)  # fmt: skip
    assert same.returncode == 0, same.stderr
    assert {p.name for p in out.iterdir()} >= {"summary.csv", "summary.md", "test_loss_heatmap.png"}
    losses = pd.read_csv(out / "summary.csv")["test/loss"].dropna().tolist()
    assert losses == sorted(losses)
    for args, line in [
        ((str(tmp_path / "nope"),), "sweep_dir="),
        ((str(arch), "metric=val/acc"), "metric='val/acc' is invalid: must be one of test/acc"),
        ((str(arch), "mode=best"), "mode='best' is invalid: must be one of max, min"),
        ((str(arch), "log_y=maybe"), "log_y='maybe' is invalid: must be auto, true or false"),
        ((), "sweep_dir='???' is invalid: give the multirun folder"),
        ((str(arch), str(tmp_path)), "give one multirun folder"),
    ]:
        bad = run_cli("report", *args, log, cwd=tmp_path)
        assert bad.returncode == 2, (args, bad.stderr)
        errors = [x for x in bad.stderr.splitlines() if x.startswith("mlplab-report: error: ")]
        assert len(errors) == 1 and line in errors[0], bad.stderr


def test_a_grid_is_told_from_a_search():
    grid = pd.DataFrame(list(itertools.product([8, 32, 128], [1, 2])), columns=["w", "d"])
    assert is_grid(grid, ["w", "d"])
    # One extra job (a width tried once) leaves it a grid: 7 of 8 combinations are jobs.
    assert is_grid(pd.concat([grid, pd.DataFrame({"w": [0], "d": [1]})]), ["w", "d"])
    # Jobs not started yet (no values) are left aside.
    assert is_grid(pd.concat([grid, pd.DataFrame({"w": [None], "d": [None]})]), ["w", "d"])
    # A search: 4 of the 16 combinations of its values.
    assert not is_grid(pd.DataFrame({"w": [8, 16, 32, 64], "d": [1, 2, 3, 4]}), ["w", "d"])
    # Rates sampled from a range: 13 distinct fractional values; 12 are still a list.
    rates = pd.DataFrame({"lr": np.geomspace(1e-4, 1e-1, 13)})
    assert not is_grid(rates, ["lr"]) and is_grid(rates[:12], ["lr"])
    widths = pd.DataFrame({"w": np.arange(1, 40)})  # many integers: a range(...) sweep
    assert is_grid(widths, ["w"])


def test_the_default_metric_is_the_one_the_sweep_optimised(tmp_path) -> None:
    from mlplab.tasks.report import default_mode, sweep_objective

    study = tmp_path / "study"
    study.mkdir()
    (study / "multirun.yaml").write_text(
        "optimized_metric: val/acc\nhydra:\n  sweeper:\n    direction: maximize\n"
    )
    assert sweep_objective(study) == ("val/acc", "max")
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "multirun.yaml").write_text("optimized_metric: approx/max_error\nhydra: {}\n")
    assert sweep_objective(grid) == ("approx/max_error", None)
    assert sweep_objective(tmp_path / "nothing") == (None, None)
    assert [default_mode(m) for m in ("test/acc", "val/loss", "lif/max_abs_rate_error_hz")] == [
        "max",
        "min",
        "min",
    ]
