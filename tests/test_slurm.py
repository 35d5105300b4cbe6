"""Sweeps through a real SLURM cluster: one node on this machine, brought up for these tests.

``scripts/slurm_local.sh up`` starts the cluster (installing SLURM's Debian packages when they
are missing) before the first test of this module and ``down`` stops it at the end of the
session, also when tests fail. Where the cluster cannot be brought up (not root, no apt-get)
the tests are skipped with the reason, unless ``MLPLAB_SLURM=require`` (CI sets it): then they
fail.
``MLPLAB_SLURM=skip`` skips them. Each pytest worker that runs some of these tests has a
cluster of its own, on ports of its own.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BIN, NO_PROGRESS, run_cli
from mlplab.tasks.common import ROOT_DIR

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = ROOT_DIR / "scripts" / "slurm_local.sh"
TINY = ["debug=fast", "logger=none", "callbacks=none", "figures=false"]
# A Lightning callback that sleeps after every training epoch: a run of N epochs lasts at least
# N seconds on any machine, so a time limit falls in the middle of its training.
PACER = """
import time

from pytorch_lightning import Callback


class Pacer(Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)
"""
# A run of 60 epochs of 10 minibatches (400 points, 320 trained on), 1 s apart.
LONG_TRAIN = [
    "data.points_per_class=100",
    "data.batch_size=32",
    "model.width=16",
    "trainer.max_epochs=60",
    "logger=none",
    "figures=false",
    *NO_PROGRESS,
]


def free_port_base(span: int = 4) -> int:
    """The first of ``span`` consecutive free TCP ports on 127.0.0.1 for this pytest worker.

    Worker k of n (xdist) tries 6817 + 10 k, then 10 n further on, so two workers never race
    for the same ports.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    for base in range(6817 + 10 * worker, 16817, 10 * workers):
        sockets = []
        try:
            for port in range(base, base + span):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {span} free ports for pytest worker {worker}")


# Session scope: a pytest worker may run other modules' tests between these; the cluster stays up
# until the worker's session ends.
@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running one-node cluster: the environment that points clients at it (SLURM_CONF)."""
    mode = os.environ.get("MLPLAB_SLURM", "auto")
    if mode == "skip":
        pytest.skip("MLPLAB_SLURM=skip")
    installed = all(shutil.which(d) for d in ("slurmctld", "slurmd", "slurmdbd", "munged"))
    if os.geteuid() != 0 or not (installed or shutil.which("apt-get")):
        reason = "the local SLURM cluster needs root (and apt-get, or SLURM installed)"
        if mode == "require":
            pytest.fail(f"MLPLAB_SLURM=require: {reason}")
        pytest.skip(f"{reason}; MLPLAB_SLURM=require makes this a failure")
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_LOCAL_PORT": str(free_port_base())}
    try:
        up = subprocess.run(
            [str(SCRIPT), "up", str(folder)], env=env, capture_output=True, text=True, timeout=900
        )
        assert up.returncode == 0, f"slurm_local.sh up failed:\n{up.stderr}"
        (line,) = up.stdout.splitlines()
        assert line == f"export SLURM_CONF={folder}/slurm.conf"
        yield {"SLURM_CONF": line.split("=", 1)[1]}
    finally:
        down = subprocess.run(
            [str(SCRIPT), "down", str(folder)], env=env, capture_output=True, text=True, timeout=300
        )
        assert down.returncode == 0, down.stderr


def slurm_cmd(slurm: dict[str, str], *args: str) -> str:
    """Standard output of a SLURM client command against the test cluster."""
    env = {**os.environ, **slurm}
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout


def accounting(slurm: dict[str, str], job_ids: list[str]) -> dict[str, str]:
    """``sacct``'s final state of each job (the allocation, not its steps): ``{"5_0": "FAILED"}``.

    A job's result reaches the sweep before its process has exited: wait for the scheduler to
    record the end of every job.
    """

    def states() -> dict[str, str] | None:
        cmd = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)]
        found = dict(line.split("|") for line in slurm_cmd(slurm, *cmd).splitlines())
        running = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED"} & set(found.values())
        return None if running or len(found) < len(job_ids) else found

    return wait_until("the jobs' end in sacct", states, timeout=60)


def sweep_dir_of(log_dir: Path) -> Path:
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep


def jobs_of(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def slurm_job_id(job: Path) -> str:
    """The SLURM job id of a sweep job (``<array id>_<task>``), as Hydra recorded it."""
    return str(yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def read(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def slurm_sweep(tmp_path: Path, slurm: dict[str, str], *args: str, env: dict | None = None):
    return run_cli(
        "train",
        "-m",
        "hydra/launcher=slurm",
        *args,
        f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
        env={**slurm, **(env or {})},
        timeout=600,
    )


def start(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a console script in the background, its output in files under ``cwd``."""
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **env}
    out = (cwd / f"{len(list(cwd.glob('*.out')))}.out").open("w")
    return subprocess.Popen(
        cmd, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, text=True
    )


def with_pacer(tmp_path: Path, slurm: dict[str, str]) -> dict[str, str]:
    """The environment of a sweep whose jobs can load the Pacer callback."""
    (tmp_path / "pacer.py").write_text(PACER)
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    return {**slurm, "PYTHONPATH": path}


def wait_until(what: str, check, timeout: float, every: float = 1.0):
    """Call ``check()`` until it returns something true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_sweep_runs_as_one_array_with_every_job_completed(tmp_path, slurm):
    result = slurm_sweep(tmp_path, slurm, "model.width=8,16", "seed=1,2", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = sweep_dir_of(tmp_path)
    jobs = jobs_of(sweep_dir)
    assert [read(j)["status"] for j in jobs] == ["ok"] * 4
    assert [read(j)["overrides"][:2] for j in jobs] == [
        ["model.width=8", "seed=1"],
        ["model.width=8", "seed=2"],
        ["model.width=16", "seed=1"],
        ["model.width=16", "seed=2"],
    ]
    ids = [slurm_job_id(j) for j in jobs]
    array_id = ids[0].split("_")[0]
    assert ids == [f"{array_id}_{task}" for task in range(4)]  # tasks 0-3 of one array
    assert accounting(slurm, ids) == dict.fromkeys(ids, "COMPLETED")
    assert f"mlplab: 4 of 4 jobs ok in {sweep_dir}" in result.stdout
    # Lightning saw the SLURM job it ran in (its SLURMEnvironment, detected from SLURM_* vars).
    assert "SLURM auto-requeueing enabled" in (jobs[0] / "train.log").read_text()


def test_failed_job_is_failed_in_slurm_accounting(tmp_path, slurm):
    result = slurm_sweep(tmp_path, slurm, "model.width=8,0", *TINY)
    assert result.returncode == 1, result.stderr[-3000:]
    sweep_dir = sweep_dir_of(tmp_path)
    jobs = jobs_of(sweep_dir)
    assert [read(j)["status"] for j in jobs] == ["ok", "failed"]
    ids = [slurm_job_id(j) for j in jobs]
    assert accounting(slurm, ids) == {ids[0]: "COMPLETED", ids[1]: "FAILED"}
    assert re.search(r"job #1 \(model.width=0 .*\) failed; see ", result.stdout)
    assert (
        f"mlplab: 1 of 2 jobs ok in {sweep_dir}; failed: job 1 (model.width=0: model.width=0 is "
        "invalid: must be an integer >= 1)" in result.stderr
    )


def run_times(slurm: dict[str, str], job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``sacct``'s start and end time of each job (ISO text, second resolution)."""
    cmd = ["sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", ",".join(job_ids)]
    rows = [line.split("|") for line in slurm_cmd(slurm, *cmd).splitlines()]
    return {job: (start, end) for job, start, end in rows}


def test_optuna_runs_two_trials_at_once_as_slurm_jobs_on_one_study(tmp_path, slurm):
    # Two trials asked at a time (n_jobs=2) go to SLURM as one array of 2 tasks, which run side
    # by side on the node's 2 CPUs; every trial is told to the one SQLite study.
    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    search = ["hparams_search=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    fixed = ["model.depth=1", "model.activation=ReLU", f"hydra.sweeper.storage={storage}"]
    result = slurm_sweep(tmp_path, slurm, *search, *fixed, *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = sweep_dir_of(tmp_path)
    jobs = jobs_of(sweep_dir)
    trials = optuna.load_study(study_name="mlp_arch", storage=storage).trials
    assert len(jobs) == len(trials) == 4
    for trial, job in zip(trials, jobs, strict=True):
        assert trial.state == TrialState.COMPLETE
        assert trial.value == pytest.approx(read(job)["metrics"]["val/acc"])
    ids = [slurm_job_id(j) for j in jobs]
    arrays = [job_id.split("_")[0] for job_id in ids]
    assert arrays[0] == arrays[1] != arrays[2] == arrays[3]  # two arrays of two trials
    assert [job_id.split("_")[1] for job_id in ids] == ["0", "1", "0", "1"]
    assert accounting(slurm, ids) == dict.fromkeys(ids, "COMPLETED")
    times = run_times(slurm, ids)
    for first, second in (ids[:2], ids[2:]):
        (start_a, end_a), (start_b, end_b) = times[first], times[second]
        assert max(start_a, start_b) <= min(end_a, end_b), times  # they ran at the same time
    assert f"mlplab: 4 of 4 jobs ok in {sweep_dir}" in result.stdout + result.stderr


def test_cancelled_job_ends_the_sweep_within_a_minute(tmp_path, slurm):
    env = with_pacer(tmp_path, slurm)
    args = [*LONG_TRAIN, "+callbacks.pacer._target_=pacer.Pacer", "+callbacks.pacer.seconds=1"]
    cmd = [str(BIN / "mlplab-train"), "-m", "hydra/launcher=slurm", *args]
    sweep = start([*cmd, f"paths.log_dir={tmp_path}"], tmp_path, env)
    try:
        # Cancel the job once it trains (its first epoch's checkpoint is written).
        checkpoint = wait_until(
            "a checkpoint of the running job",
            lambda: next(tmp_path.glob("train/multiruns/*/0/checkpoints/last.ckpt"), None),
            timeout=240,
        )
        job_id = slurm_job_id(checkpoint.parents[1])
        slurm_cmd(slurm, "scancel", job_id)
        cancelled = time.monotonic()
        sweep.wait(timeout=120)
        took = time.monotonic() - cancelled
    finally:
        sweep.kill()
    output = (tmp_path / "0.out").read_text()
    assert took < 60, output[-3000:]
    assert sweep.returncode == 1, output[-3000:]
    assert accounting(slurm, [job_id]) == {job_id: "CANCELLED by 0"}
    assert re.search(r"job #0 \(.*\) ended without a result \(submitit state CANCELLED", output)
    sweep_dir = sweep_dir_of(tmp_path)
    assert re.search(rf"mlplab: 0 of 1 jobs ok in {re.escape(str(sweep_dir))}; \w+: job 0 ", output)


def test_job_at_its_time_limit_is_requeued_and_ends_with_the_uninterrupted_weights(tmp_path, slurm):
    """SLURM signals the job before its time limit; submitit requeues it; the requeued job goes
    on from its last epoch's checkpoint and ends with the weights of a run never interrupted."""
    env = with_pacer(tmp_path, slurm)
    pacer = ["+callbacks.pacer._target_=pacer.Pacer", "+callbacks.pacer.seconds=1"]
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference = start(
        [str(BIN / "mlplab-train"), *LONG_TRAIN, f"paths.log_dir={reference_dir}"],
        reference_dir,
        {},
    )
    # Submitted with 10 minutes; once the job trains (its first checkpoint is written), its limit
    # is cut to the next whole minute at least 40 s away: SLURM sends submitit's signal 90 s
    # before the limit, that is at its next check (SLURM checks limits every 30 s), mid-training.
    limits = ["hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=90"]
    cmd = [str(BIN / "mlplab-train"), "-m", "hydra/launcher=slurm", *limits, *LONG_TRAIN, *pacer]
    sweep = start([*cmd, f"paths.log_dir={tmp_path}"], tmp_path, env)
    try:
        checkpoint = wait_until(
            "a checkpoint of the running job",
            lambda: next(tmp_path.glob("train/multiruns/*/0/checkpoints/last.ckpt"), None),
            timeout=240,
            every=0.5,
        )
        job_id = slurm_job_id(checkpoint.parents[1])
        used = slurm_cmd(slurm, "squeue", "-h", "-j", job_id, "-o", "%M").strip()
        seconds = sum(int(part) * 60**i for i, part in enumerate(reversed(used.split(":"))))
        limit = math.ceil((seconds + 40) / 60)
        slurm_cmd(slurm, "scontrol", "update", f"JobId={job_id}", f"TimeLimit={limit}")
        # SLURM holds a requeued job for 2 minutes (its BeginTime); release it at once, with a
        # limit that lets it finish, to keep the test short.
        pending = wait_until(
            "the requeued job",
            lambda: slurm_cmd(slurm, "squeue", "-h", "-t", "PD", "-o", "%i %r").split(),
            timeout=120,
        )
        assert pending == [job_id, "BeginTime"], pending
        # slurmd refuses a job credential issued in the same second as its revocation at the
        # requeue ("Killing non-startable batch job: Job credential revoked", seen once in CI
        # when the release came 0.8 s after the requeue): release it a second later.
        time.sleep(2)
        slurm_cmd(slurm, "scontrol", "update", f"JobId={job_id}", "StartTime=now", "TimeLimit=5")
        sweep.wait(timeout=300)
        reference.wait(timeout=300)
    finally:
        sweep.kill()
        reference.kill()
    output = (tmp_path / "0.out").read_text()
    assert sweep.returncode == 0, output[-3000:]
    assert reference.returncode == 0, (reference_dir / "0.out").read_text()[-3000:]
    (job,) = jobs_of(sweep_dir_of(tmp_path))
    job_id = slurm_job_id(job)
    # Accounting: the first run was requeued, the second completed.
    assert accounting(slurm, [job_id]) == {job_id: "COMPLETED"}
    out = slurm_cmd(slurm, "sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id)
    assert [line.split("|")[1] for line in out.splitlines()] == ["REQUEUED", "COMPLETED"]
    log = (job / "train.log").read_text()
    stderr = "".join(p.read_text() for p in (sweep_dir_of(tmp_path) / ".submitit").rglob("*.err"))
    assert "Caught signal SIGUSR2" in stderr and "timed-out" in stderr
    resumed = re.search(r"resuming from (\S+) \(after epoch (\d+), step (\d+)\)", log)
    assert resumed and Path(resumed.group(1)) == job / "checkpoints" / "last.ckpt", log[-3000:]
    assert 1 <= int(resumed.group(2)) < 60  # from a checkpoint written in mid-training
    assert read(job)["status"] == "ok"
    # The same weights, bit for bit, as the run that was never interrupted.
    (run,) = (reference_dir / "train" / "runs").iterdir()
    ours = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    theirs = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == 600
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for name, tensor in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][name], tensor), name
    assert read(job)["metrics"]["test/acc"] == read(run)["metrics"]["test/acc"]


def test_requeued_job_resumes_from_its_own_last_checkpoint(compose_config, tmp_path, monkeypatch):
    """No cluster needed: ``SLURM_RESTART_COUNT`` is what SLURM sets in a requeued job."""
    from mlplab.tasks.train import resume_path

    cfg = compose_config("train", [])
    output_dir = tmp_path / "run"
    last = output_dir / "checkpoints" / "last.ckpt"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_path(cfg, output_dir) is None  # requeued before its first epoch ended
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert resume_path(cfg, output_dir) == last
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a first run never resumes by itself
    assert resume_path(cfg, output_dir) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    cfg.ckpt_path = str(tmp_path / "start.ckpt")  # a run's own ckpt_path wins
    assert resume_path(cfg, output_dir) == tmp_path / "start.ckpt"
