"""A failed job of a grid sweep: FAILED in every record, and the sweep goes on to its summary.

mlplab's grid sweeper (``hydra/sweeper=mlplab_grid``, every task's default) builds the grid of
Hydra's basic sweeper but does not stop at a FAILED job. Real ``mlplab-train -m`` subprocesses
with tiny jobs (debug=fast), outputs in tmp_path; submitit's and SLURM's records of a failed job
are tested in test_sweeps.py and test_slurm.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from conftest import run_cli
from hydra_plugins.mlplab_grid_sweeper.sweeper import batch_size, grid, split_batches

TINY = ["debug=fast", "logger=none", "callbacks=none", "figures=false"]

# A Hydra callback that writes the status of each job's JobReturn beside its metrics.json, as
# Hydra hands it to every callback's on_job_end (in the job's own process, whichever launcher).
JOB_STATUS_CALLBACK = """
from pathlib import Path

from hydra.experimental.callback import Callback


class JobStatus(Callback):
    def on_job_end(self, config, job_return, **kwargs):
        folder = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
        (folder / "job_status.txt").write_text(job_return.status.name)
"""


def multirun(tmp_path: Path, *args: str) -> tuple[object, Path]:
    """``mlplab-train -m <args>`` with the status callback; the result and the sweep folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "status_callback.py").write_text(JOB_STATUS_CALLBACK)
    log_dir = tmp_path / "logs"
    result = run_cli(
        "train",
        "-m",
        *args,
        "+hydra.callbacks.job_status._target_=status_callback.JobStatus",
        f"paths.log_dir={log_dir}",
        cwd=tmp_path,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
    )
    sweeps = sorted((log_dir / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, (sweeps, result.stderr[-3000:])
    return result, sweeps[0]


def job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def hydra_job(job: Path) -> dict:
    """``hydra.job`` as Hydra saved it in the job's folder (num, override_dirname, ...)."""
    return yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]


def task_overrides(job: Path) -> list[str]:
    """The job's overrides as Hydra saved them, but its output root (tmp_path differs)."""
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return [o for o in overrides if not o.startswith("paths.log_dir=")]


# --- the grid (Hydra's override parser, no jobs) ----------------------------------------------


def parse(lines: list[str]):
    return OverridesParser.create().parse_overrides(lines)


def test_grid_is_the_product_with_the_last_key_fastest_and_command_line_keys_in_place():
    # hydra.sweeper.params first, then the command line: its a=... takes the line of params' a.
    jobs = grid(parse(["a=1,2", "b=x,y", "c=0", "a=7,8,9", "+d=range(2)"]))
    assert jobs == [
        [f"a={a}", f"b={b}", "c=0", f"+d={d}"] for a in (7, 8, 9) for b in "xy" for d in (0, 1)
    ]
    assert grid(parse([])) == [[]]  # no override: one job, as Hydra's basic sweeper runs


def test_grid_refuses_an_interval_in_one_line_naming_it():
    with pytest.raises(HydraException) as err:
        grid(parse(["a=1,2", "optimizer.lr=interval(0.1,0.2)"]))
    assert str(err.value) == (
        "optimizer.lr=interval(0.1,0.2) is invalid: the grid sweeper takes lists of values "
        "(a,b), range(...) or choice(...); search intervals with hparams_search=optuna"
    )


@pytest.mark.parametrize(
    ("size", "batches"), [(None, [5]), (-1, [5]), (2, [2, 2, 1]), (5, [5]), (9, [5])]
)
def test_batches_keep_the_job_order(size, batches):
    jobs = [[f"a={i}"] for i in range(5)]
    split = split_batches(jobs, batch_size(size))
    assert [len(b) for b in split] == batches
    assert [job for batch in split for job in batch] == jobs


@pytest.mark.parametrize("size", [0, -2, True, 1.5, "2"])
def test_a_bad_max_batch_size_is_refused_in_one_line(size):
    with pytest.raises(HydraException, match=r"^hydra\.sweeper\.max_batch_size=.* is invalid: "):
        batch_size(size)


# --- real sweeps --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    "launcher",
    [
        # One job per batch: the jobs after the failed one are in later batches, which Hydra's
        # basic sweeper would not have launched.
        ["hydra.sweeper.max_batch_size=1"],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.max_batch_size=2"],
    ],
    ids=["basic", "joblib"],
)
def test_a_failed_job_is_failed_in_hydras_job_return_and_the_sweep_goes_on(tmp_path, launcher):
    result, sweep_dir = multirun(
        tmp_path, *launcher, "optimizer=sgd", "optimizer.lr=0.1,1e30,0.05", *TINY
    )
    assert result.returncode == 1, result.stderr[-3000:]
    jobs = job_dirs(sweep_dir)
    assert [j.name for j in jobs] == ["0", "1", "2"]  # the job after the failure ran too
    records = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert "training diverged" in records[1]["error"] and records[1]["metrics"] == {}
    assert 0.0 <= records[2]["metrics"]["test/acc"] <= 100.0
    # Hydra's JobReturn, as every callback's on_job_end saw it in each job.
    statuses = [(j / "job_status.txt").read_text() for j in jobs]
    assert statuses == ["COMPLETED", "FAILED", "COMPLETED"]
    # The sweep's process: a line for the failed job as it ends, the summary (on_multirun_end),
    # exit status 1.
    assert re.search(
        rf"job #1 \(.*optimizer.lr=1e\+30.*; see {re.escape(str(jobs[1]))}\) failed; the sweep "
        "goes on",
        result.stdout,
    )
    assert f"mlplab: 2 of 3 jobs ok in {sweep_dir}; failed: job 1 (optimizer.lr=1e+30: " in (
        result.stderr
    )
    assert "Traceback" not in result.stderr  # one line per failure


@pytest.mark.slow
@pytest.mark.subprocess
def test_jobs_numbers_and_folders_are_those_of_hydras_basic_sweeper(tmp_path):
    """The same sweep (params in the config, a key of them replaced on the command line, two
    batches) with Hydra's basic sweeper and with mlplab's: the same jobs, folders, job numbers and
    ``override_dirname``."""
    args = [
        "sweep=arch",
        "model.width=4",
        "model.depth=1",
        "model.activation=ReLU,Tanh",
        "seed=1,2",
        "hydra.sweeper.max_batch_size=3",
        *TINY,
    ]
    jobs = {}
    for sweeper in ("basic", "mlplab_grid"):
        result, sweep_dir = multirun(tmp_path / sweeper, f"hydra/sweeper={sweeper}", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        saved = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())["hydra"]
        assert saved["runtime"]["choices"]["hydra/sweeper"] == sweeper
        jobs[sweeper] = [
            (
                job.name,
                hydra_job(job)["num"],
                hydra_job(job)["override_dirname"],
                task_overrides(job),
            )
            for job in job_dirs(sweep_dir)
        ]
    assert jobs["mlplab_grid"] == jobs["basic"]
    assert [(name, num) for name, num, *_ in jobs["basic"]] == [(str(i), i) for i in range(4)]
    # Hydra's grid order: the last key varies fastest.
    settings = [
        (config["model"]["activation"], config["seed"])
        for config in (
            yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
            for job in job_dirs(sweep_dir)
        )
    ]
    assert settings == [("ReLU", 1), ("ReLU", 2), ("Tanh", 1), ("Tanh", 2)]
