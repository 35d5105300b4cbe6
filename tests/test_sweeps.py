"""Sweeps: real Hydra multiruns (basic, joblib, mlplab's local submitit launcher) in subprocesses.

The Optuna search has its own tests (test_optuna.py), SLURM its own (test_slurm.py).

Every multirun runs tiny jobs (debug=fast: one epoch of 4 minibatches) with outputs in tmp_path.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import warnings
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import BIN, run_cli
from mlplab.models.mlp import count_parameters, parse_activation, width_for_budget
from mlplab.report import load_sweep
from mlplab.tasks.common import CONF_DIR, ROOT_DIR, quote_call_values
from mlplab.tasks.report import expected_jobs, make_report

TINY = ["debug=fast", "logger=none", "callbacks=none", "figures=false"]
ACTIVATIONS = ["ReLU()", "Tanh()", "LeakyReLU(0.1)"]


def only_sweep_dir(log_dir: Path) -> Path:
    sweeps = sorted((log_dir / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def job_dirs(sweep_dir: Path) -> list[Path]:
    # Job folders are numbered; tensorboard/ (a run per job) and .submitit/ are not jobs.
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def read(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def job_config(job: Path) -> dict:
    """The job's composed config as Hydra saved it (safe YAML)."""
    return yaml.safe_load((job / ".hydra" / "config.yaml").read_text())


def job_config_hydra(job: Path) -> dict:
    """The job's Hydra config as Hydra saved it (safe YAML): ``hydra.job.id`` and so on."""
    return yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())


def multirun(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    return run_cli("train", "-m", *args, f"paths.log_dir={tmp_path}", cwd=tmp_path, env=env)


# --- configs (compose API, no training) -------------------------------------------------------


def compose_with_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def sweep_values(text: str) -> list:
    """The values one sweep line hands its jobs: each job's ``key=<value>`` parsed as Hydra does."""
    parser = OverridesParser.create()
    override = parser.parse_override(f"key={text}")
    if not override.is_sweep_override():
        return [override.value()]
    return [parser.parse_override(f"key={v}").value() for v in override.sweep_string_iterator()]


def test_arch_sweep_config_is_a_27_job_grid_of_valid_specs():
    params = compose_with_hydra(["sweep=arch"]).hydra.sweeper.params
    widths = sweep_values(params["model.width"])
    depths = sweep_values(params["model.depth"])
    activations = sweep_values(params["model.activation"])
    assert widths == [8, 32, 128] and depths == [1, 2, 3]
    # The YAML's quoting hands Hydra three strings, each a spec the model parses.
    assert activations == ACTIVATIONS
    assert [type(parse_activation(a)).__name__ for a in activations] == [
        "ReLU",
        "Tanh",
        "LeakyReLU",
    ]
    assert parse_activation(activations[2]).negative_slope == 0.1
    assert compose_with_hydra(["sweep=arch"]).hydra.mode.name == "MULTIRUN"


def test_command_line_activation_specs_are_quoted_for_hydra():
    # The README's form: the shell quotes protect the parentheses, console_main quotes for Hydra.
    (arg,) = quote_call_values(["model.activation=ReLU,Tanh,LeakyReLU(0.1)"])
    assert arg == "model.activation=ReLU,Tanh,'LeakyReLU(0.1)'"
    assert sweep_values(arg.split("=", 1)[1]) == ["ReLU", "Tanh", "LeakyReLU(0.1)"]


def test_launcher_configs_compose_without_schema_warnings():
    # conf/ holds no file named like a plugin's own launcher config (joblib, submitit_local,
    # submitit_slurm, mlplab_submitit_*): Hydra would merge it into the plugin's schema with a
    # deprecation warning.
    ours = {p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")}
    assert ours == {"local", "slurm"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joblib = compose_with_hydra(["hydra/launcher=joblib"]).hydra.launcher
        local = compose_with_hydra(["hydra/launcher=local"]).hydra.launcher
        slurm = compose_with_hydra(["hydra/launcher=slurm", "paths.log_dir=/x"]).hydra.launcher
    assert joblib.n_jobs == -1  # one job per core
    # mlplab's launchers: subclasses of the submitit plugin's, found by Hydra's plugin discovery.
    from hydra_plugins.mlplab_submitit_launcher import launcher

    assert local._target_ == "hydra_plugins.mlplab_submitit_launcher.launcher.LocalLauncher"
    assert slurm._target_ == "hydra_plugins.mlplab_submitit_launcher.launcher.SlurmLauncher"
    plugin = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"
    for ours, theirs in (
        (launcher.LocalLauncher, "LocalLauncher"),
        (launcher.SlurmLauncher, "SlurmLauncher"),
    ):
        assert f"{plugin}.{theirs}" in [f"{c.__module__}.{c.__qualname__}" for c in ours.__mro__]
    for knob in ("partition", "timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb"):
        assert knob in slurm
    assert slurm.array_parallelism == 64 and slurm.cpus_per_task == 1 and slurm.mem_gb == 2
    assert slurm.max_num_timeout == 3 and slurm.signal_delay_s == 120


def test_slurm_launcher_renders_a_valid_sbatch_array():
    """The slurm config's values, through submitit's own sbatch writer (no cluster needed)."""
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    names = SlurmExecutor._equivalence_dict()
    keys = ("partition", "timeout_min", "cpus_per_task", "gpus_per_node", "setup", "nodes")
    keys += ("signal_delay_s", "additional_parameters", "array_parallelism")
    params = {names.get(k, k): v for k, v in launcher.items() if k in keys}
    params["mem"] = f"{launcher['mem_gb']}GB"
    text = _make_sbatch_string(
        command="python job.py", folder="/tmp/sub/%j", map_count=100, **params
    )
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=60",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=2GB",
        "#SBATCH --array=0-99%64",  # 100 jobs, 64 at a time
        "#SBATCH --signal=USR2@120",  # submitit's signal, 2 minutes before the time limit
        "#SBATCH --requeue",
        "export OMP_NUM_THREADS=1",
    ):
        assert line in text, text


def test_torch_threads_callback_acts_in_multiruns_only(monkeypatch):
    import torch
    from hydra.types import RunMode

    from mlplab.tasks.callbacks import TorchThreads

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    try:
        single = OmegaConf.create({"hydra": {"mode": RunMode.RUN}})
        TorchThreads(num_threads=1).on_job_start(single)
        assert torch.get_num_threads() == before
        job = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN}})
        TorchThreads().on_job_start(job)  # null: OMP_NUM_THREADS where the job runs
        assert torch.get_num_threads() == 3
        TorchThreads(num_threads=1).on_job_start(job)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["arch", "depth_budget", "seeds", "optuna"])
def test_sweep_scripts_are_strict_executable_bash(name):
    script = ROOT_DIR / "scripts" / f"sweep_{name}.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    # Each runs its sweep, then reports on exactly that folder, and exits with the sweep's status.
    assert '"hydra.sweep.dir=$SWEEP"' in text and '"$BIN/mlplab-report" "$SWEEP"' in text
    assert text.rstrip().endswith('exit "$status"')


# --- real multiruns ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_arch_grid_with_the_basic_launcher_and_its_report(tmp_path):
    result = multirun(tmp_path, "sweep=arch", "model.width=4,16", "model.depth=1,2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    assert f"mlplab: 12 of 12 jobs ok in {sweep_dir}" in result.stdout
    jobs = job_dirs(sweep_dir)
    assert [j.name for j in jobs] == [str(i) for i in range(12)]
    # Hydra's grid order: the last key varies fastest; command-line keys replace YAML lines.
    grid = list(itertools.product([4, 16], [1, 2], ACTIVATIONS))
    for job, (width, depth, activation) in zip(jobs, grid, strict=True):
        record = read(job)
        assert record["status"] == "ok" and record["output_dir"] == str(job)
        model = job_config(job)["model"]
        assert (model["width"], model["depth"], model["activation"]) == (width, depth, activation)
        assert 0.0 <= record["metrics"]["test/acc"] <= 100.0
        # The TorchThreads callback: OMP_NUM_THREADS threads per job, 1 when it is not set.
        threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
        assert f"torch threads in this job: {threads}\n" in (job / "train.log").read_text()

    # The report of the finished sweep: every row, best test/acc first, figures.
    summary = make_report(sweep_dir)
    assert summary["jobs/ok"] == 12 and summary["jobs/total"] == 12
    accs = {j.name: read(j)["metrics"]["test/acc"] for j in jobs}
    rows = (sweep_dir / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("job,status,")
    order = [row.split(",")[0] for row in rows[1:]]
    assert sorted(accs, key=lambda name: (-accs[name], int(name))) == order
    assert summary["best/test/acc"] == max(accs.values())
    pngs = {"test_acc_vs_model.width.png", "test_acc_vs_model.depth.png", "test_acc_heatmap.png"}
    assert pngs <= set(summary["files"])
    for name in pngs:
        assert (sweep_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in (sweep_dir / "summary.md").read_text()

    # The same folder while "still being written": a job not started, one without metrics.json.
    for path in (jobs[11] / "metrics.json", *jobs[11].rglob("*")):
        path.unlink() if path.is_file() else None
    for path in sorted(jobs[11].rglob("*"), reverse=True):
        path.rmdir()
    jobs[11].rmdir()
    (jobs[10] / "metrics.json").unlink()
    frame = load_sweep(sweep_dir, expected_jobs(sweep_dir)).set_index("job")
    assert frame.loc["10", "status"] == frame.loc["11", "status"] == "missing"
    assert frame.loc["11", "error"] == "not started"
    # Known from multirun.yaml: what job 11 will run.
    assert frame.loc["11", "model.width"] == 16
    assert frame.loc["11", "model.activation"] == "LeakyReLU(0.1)"
    assert make_report(sweep_dir, figures=False)["jobs/ok"] == 10


@pytest.mark.slow
@pytest.mark.subprocess
def test_readme_activation_sweep_with_joblib_fails_loudly_but_finishes(tmp_path):
    # The README's command line: three activations (one with arguments), and a bad width.
    result = multirun(
        tmp_path,
        "hydra/launcher=joblib",
        "model.activation=ReLU,Tanh,LeakyReLU(0.1)",
        "model.width=8,0",
        *TINY,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=-1" in result.stdout + result.stderr
    assert "validated against ConfigStore schema" not in result.stderr
    sweep_dir = only_sweep_dir(tmp_path)
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 6 and len({read(j)["output_dir"] for j in jobs}) == 6
    # joblib gives each of its n_jobs = cores workers OMP_NUM_THREADS = cores // n_jobs = 1.
    if "OMP_NUM_THREADS" not in os.environ:
        for job in jobs:
            assert "torch threads in this job: 1\n" in (job / "train.log").read_text()
    grid = list(itertools.product(["ReLU", "Tanh", "LeakyReLU(0.1)"], [8, 0]))
    for job, (activation, width) in zip(jobs, grid, strict=True):
        record = read(job)
        assert job_config(job)["model"]["activation"] == activation
        if width == 0:
            assert record["status"] == "failed"
            assert record["error"] == "model.width=0 is invalid: must be an integer >= 1"
        else:
            assert record["status"] == "ok", record
    summary = [line for line in result.stderr.splitlines() if line.startswith("mlplab: ")]
    assert summary == [
        f"mlplab: 3 of 6 jobs ok in {sweep_dir}; failed: "
        "job 1 (model.activation=ReLU, model.width=0: model.width=0 is invalid: must be an integer "
        ">= 1), job 3 (model.activation=Tanh, model.width=0: model.width=0 is invalid: must be an "
        "integer >= 1), job 5 (model.activation=LeakyReLU(0.1), model.width=0: model.width=0 is "
        "invalid: must be an integer >= 1)"
    ]

    # mlplab-report with the folder as its only positional argument.
    report = run_cli("report", str(sweep_dir), f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    rows = [line.split(",") for line in (sweep_dir / "summary.csv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    assert [row[header.index("status")] for row in body] == ["ok"] * 3 + ["failed"] * 3
    ok_accs = [float(row[header.index("test/acc")]) for row in body[:3]]
    assert ok_accs == sorted(ok_accs, reverse=True)
    assert [row[0] for row in body[3:]] == ["1", "3", "5"]
    assert all("must be an integer >= 1" in row[-1] for row in body[3:])
    markdown = (sweep_dir / "summary.md").read_text()
    assert "6 jobs: 3 ok, 3 failed" in markdown and "## Failed" in markdown


# A Hydra callback that writes the status of each job's JobReturn beside its metrics.json.
JOB_STATUS_CALLBACK = """
from pathlib import Path

from hydra.experimental.callback import Callback


class JobStatus(Callback):
    def on_job_end(self, config, job_return, **kwargs):
        folder = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
        (folder / "job_status.txt").write_text(job_return.status.name)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_local_launcher_records_a_failed_job_as_failed_everywhere(tmp_path):
    """hydra/launcher=local: a diverged job is failed in metrics.json, in Hydra's JobReturn, in
    submitit's outcome and in its process's exit status; the other jobs run, the summary names it.
    """
    (tmp_path / "status_callback.py").write_text(JOB_STATUS_CALLBACK)
    result = multirun(
        tmp_path,
        "hydra/launcher=local",
        "optimizer=sgd",
        "optimizer.lr=0.1,1e30,0.05",
        "+hydra.callbacks.job_status._target_=status_callback.JobStatus",
        *TINY,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    jobs = job_dirs(sweep_dir)
    records = [read(j) for j in jobs]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert [r["output_dir"] for r in records] == [str(sweep_dir / str(i)) for i in range(3)]
    assert "training diverged" in records[1]["error"] and records[1]["metrics"] == {}
    # Hydra's JobReturn, as a Hydra callback in each job saw it.
    assert [(j / "job_status.txt").read_text() for j in jobs] == [
        "COMPLETED",
        "FAILED",
        "COMPLETED",
    ]
    # submitit's record of each job, read back through its public API: the failed job raised.
    import submitit

    errors = []
    for job in jobs:
        job_id = job_config_hydra(job)["hydra"]["job"]["id"]
        handle = submitit.LocalJob(sweep_dir / ".submitit" / "%j", job_id)
        errors.append(handle.exception())  # None: the job returned its result
        logged = "Submitted job triggered an exception" in (handle.stderr() or "")
        assert logged == (errors[-1] is not None)
    assert [type(e).__name__ for e in errors] == ["NoneType", "FailedJobError", "NoneType"]
    assert "training diverged" in str(errors[1])
    # The sweep's process: one line per failed job, then the summary naming it; exit status 1.
    assert re.search(r"job #1 \(.*optimizer.lr=1e\+30.*\) failed; see .*_log.err", result.stdout)
    assert f"mlplab: 2 of 3 jobs ok in {sweep_dir}; failed: job 1 (optimizer.lr=1e+30: " in (
        result.stderr
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_depth_budget_script_widths_and_tensorboard_hparams(tmp_path):
    """scripts/sweep_depth_budget.sh: widths from the budget, HPARAMS per job, the report."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    env = {**os.environ, "LAUNCHER": "basic", "LOG_DIR": str(tmp_path)}
    script = ROOT_DIR / "scripts" / "sweep_depth_budget.sh"
    # The TensorBoard logger stays: its HPARAMS are checked below.
    args = ["model.depth=1,2,3", "debug=fast", "callbacks=none", "figures=false"]
    result = subprocess.run(
        ["bash", str(script), *args],
        cwd=tmp_path,
        env={**env, "PATH": f"{BIN}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    # The script names its folder <time>_<what><pid>, like Hydra's <time>_<id>.
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_depth_budget\d+", sweep_dir.name)
    records = {j.name: read(j) for j in job_dirs(sweep_dir)}

    # The sweep's TensorBoard runs, named by each job's settings.
    mux = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir / "tensorboard"))
    mux.Reload()
    # Hydra writes the sweep's per-job overrides back from their values: figures=False.
    settings = "callbacks=none,debug=fast,experiment=depth_budget,figures=False,model.depth={}"
    runs = [settings.format(depth) for depth in (1, 2, 3)]
    assert sorted(mux.Runs()) == runs
    content = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    for job, depth, run in zip("012", (1, 2, 3), runs, strict=True):
        tags = content[run]
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        hparams = {
            k: v.number_value if v.HasField("number_value") else v.string_value
            for k, v in start.hparams.items()
        }
        width = width_for_budget(2, 4, depth, 100)
        assert (hparams["model/depth"], hparams["model/width"]) == (depth, width)
        # The smallest width reaching the budget: one unit less falls short of it.
        assert hparams["model/params"] == count_parameters(2, [width] * depth, 4) >= 100
        assert count_parameters(2, [width - 1] * depth, 4) < 100
        # No run names the columns for all (tests/test_tensorboard.py reads them from a server).
        assert metadata.EXPERIMENT_TAG not in tags
        (final,) = mux.Scalars(run, "test/acc")
        assert final.value == pytest.approx(records[job]["metrics"]["test/acc"])
    # By hand, the parameters at width w and depth 1, 2, 3: 7w+4, w^2+8w+4, 2w^2+9w+4.
    assert [width_for_budget(2, 4, d, 100) for d in (1, 2, 3)] == [14, 7, 6]

    # The script's report: accuracy against depth.
    assert (sweep_dir / "test_acc_vs_model.depth.png").stat().st_size > 1000
    assert re.search(
        r"\| +job \| +model.depth \| +test/acc", (sweep_dir / "summary.md").read_text()
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_ddp_sim_trains_two_ranks_on_halves_of_each_epoch(tmp_path):
    result = run_cli(
        "train",
        "trainer=ddp_sim",
        "trainer.max_epochs=20",
        "logger=none",
        "callbacks=none",
        "figures=false",
        f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    record = read(run)
    assert record["status"] == "ok"
    metrics = record["metrics"]
    # Each of the 2 ranks takes half of the 3200 training points: 13 minibatches of <= 128 per
    # epoch instead of 25, so 20 epochs are 260 optimizer steps.
    assert metrics["global_step"] == 20 * 13 and metrics["epochs"] == 20
    assert metrics["test/acc"] > 50.0  # chance is 25 %
