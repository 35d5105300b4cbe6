"""Reliability: reproducible, resumable after a kill, and safe with bad input.

Real processes where the guarantee is about processes (determinism across runs, SIGKILL and
resume, two runs at once); Hydra's compose API and run_task, as the console scripts use them,
for the large tables of bad values and bad checkpoints.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from conftest import BIN, NO_PROGRESS, SMALL_TRAIN, checkpoint_of, read_metrics, run_cli
from mlplab.tasks.common import CONF_DIR, ConfigError, run_task
from mlplab.tasks.eval import _eval_body
from mlplab.tasks.runtime import AtomicCheckpointIO
from mlplab.tasks.train import _train_body, check_run_length

HAS_CUDA = torch.cuda.is_available()
BODIES = {"train": _train_body, "eval": _eval_body}
SMALL = [*SMALL_TRAIN, *NO_PROGRESS]
EVERY = "callbacks.model_checkpoint.save_interval_s=0"  # last.ckpt after every epoch
FINAL = ("test/acc", "test/loss", "train/acc", "train/loss", "global_step", "epochs")


def compose_task(task: str, overrides: list[str], out: Path) -> DictConfig:
    """The task's config as Hydra composes it, with its run folder at ``out``.

    Hydra's runtime config is set as in a real run, so the options chosen per config group
    (``loss=torch_ce``) are known to the task.
    """
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(task, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.log_dir = str(out.parent)
        cfg.paths.output_dir = str(out)
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    return cfg


def run(task: str, out: Path, *overrides: str) -> dict:
    """Run a task body as its console script does (run_task), outputs in ``out``."""
    cfg = compose_task(task, list(overrides), out)
    run_task(cfg, BODIES[task], output_dir=out, overrides=list(overrides), multirun=False)
    return read_metrics(out)


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold bit-identical final weights, optimizer state, loss curve, metrics."""
    ckpt_a, ckpt_b = checkpoint_of(a), checkpoint_of(b)
    assert ckpt_a["state_dict"].keys() == ckpt_b["state_dict"].keys()
    for key, tensor in ckpt_a["state_dict"].items():
        assert torch.equal(tensor, ckpt_b["state_dict"][key]), key
    state_a, state_b = (
        ckpt_a["optimizer_states"][0]["state"],
        ckpt_b["optimizer_states"][0]["state"],
    )
    for index, moments in state_a.items():
        for name, tensor in moments.items():
            assert torch.equal(tensor, state_b[index][name]), (index, name)
    assert ckpt_a["mlplab"]["training_losses"] == ckpt_b["mlplab"]["training_losses"]
    metrics_a, metrics_b = read_metrics(a)["metrics"], read_metrics(b)["metrics"]
    assert {k: metrics_a[k] for k in FINAL} == {k: metrics_b[k] for k in FINAL}


def start_train(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """A real ``mlplab-train`` process, not waited for."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [str(BIN / "mlplab-train"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stdout, stderr


def run_dirs(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "train" / "runs").iterdir())


def no_success_left(out: Path) -> None:
    """A refused run leaves no folder that claims success, and no checkpoint or figure."""
    for record in out.parent.rglob("metrics.json"):
        assert read_metrics(record.parent)["status"] != "ok", record
    assert not list(out.parent.rglob("*.ckpt"))
    assert not list(out.parent.rglob("*.png"))


# --- determinism --------------------------------------------------------------------------------


def test_deterministic_is_the_default() -> None:
    cfg = compose_task("train", [], Path("/nonexistent/run"))
    assert cfg.trainer.deterministic is True
    for trainer in ("cpu", "gpu", "ddp", "ddp_sim"):
        assert compose_task("train", [f"trainer={trainer}"], Path("/x/run")).trainer.deterministic


TWIN = [
    "data.points_per_class=100",
    "data.batch_size=32",
    "trainer.max_epochs=3",
    "grid_size=40",
    "seed=17",
    "~callbacks.rich_progress_bar",
    "~callbacks.model_summary",
]


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_at_once_get_own_folders_and_identical_results(tmp_path) -> None:
    """Two mlplab-train processes, same config and seed, started together into one log folder."""
    log_dir = tmp_path / "logs"
    processes = [start_train(*TWIN, f"paths.log_dir={log_dir}", cwd=tmp_path) for _ in range(2)]
    for process in processes:
        finish(process)
    runs = run_dirs(log_dir)
    assert len(runs) == 2  # the same second, the same log folder: still two run folders
    for run_dir in runs:
        record = read_metrics(run_dir)
        assert record["status"] == "ok" and record["output_dir"] == str(run_dir)
        assert checkpoint_of(run_dir)["global_step"] == 30
        assert (run_dir / "decision_map.png").stat().st_size > 0
        assert len(list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))) >= 1
        assert (run_dir / ".hydra" / "config.yaml").is_file()
    # Determinism: separate processes, bit-identical weights, optimizer state and metrics.
    assert_same_run(*runs)


# --- exact resume after SIGKILL -----------------------------------------------------------------

# Long enough to be killed mid-way: 12 epochs of 20 minibatches.
STEPS_PER_EPOCH = 20
EPOCHS = 12
KILLED = [
    "data.points_per_class=100",
    "data.batch_size=16",
    f"trainer.max_epochs={EPOCHS}",
    "seed=23",
    "logger=none",
    "figures=false",
    "~callbacks.rich_progress_bar",
    "~callbacks.model_summary",
    EVERY,
]


def wait_for_step(log_dir: Path, step: int, process: subprocess.Popen[str]) -> Path:
    """Poll the run's last.ckpt until it holds ``step`` optimizer steps; returns the run dir."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        for ckpt in log_dir.glob("train/runs/*/checkpoints/last.ckpt"):
            # Written by rename: whatever is there is a whole checkpoint, never half of one.
            if torch.load(ckpt, weights_only=True)["global_step"] >= step:
                return ckpt.parents[1]
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint of step {step} within 240 s")


@pytest.mark.slow
@pytest.mark.subprocess
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path) -> None:
    killed_logs, whole_logs = tmp_path / "killed", tmp_path / "whole"
    victim = start_train(*KILLED, f"paths.log_dir={killed_logs}", cwd=tmp_path)
    whole = start_train(*KILLED, f"paths.log_dir={whole_logs}", cwd=tmp_path)
    try:
        run_dir = wait_for_step(killed_logs, 2 * STEPS_PER_EPOCH, victim)  # 2 epochs done
        victim.send_signal(signal.SIGKILL)  # mid-epoch: the next epoch has already started
    finally:
        victim.kill()
        victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()  # it never finished
    killed_at = checkpoint_of(run_dir)["global_step"]
    assert killed_at % STEPS_PER_EPOCH == 0  # whole epochs only
    assert 2 * STEPS_PER_EPOCH <= killed_at < EPOCHS * STEPS_PER_EPOCH

    # The recommended resume: the same overrides, in the run's own folder, from its last.ckpt.
    resumed = run_cli("train", *KILLED, f"hydra.run.dir={run_dir}", "ckpt_path=last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    finish(whole)
    record = read_metrics(run_dir)
    assert record["status"] == "ok" and record["metrics"]["epochs"] == EPOCHS
    assert_same_run(run_dir, run_dirs(whole_logs)[0])


SWEEP = [
    "data.points_per_class=100",
    "data.batch_size=32",
    "model.width=8",
    "logger=none",
    "figures=false",
    "~callbacks.rich_progress_bar",
    "~callbacks.model_summary",
    "hydra/launcher=basic",
]


@pytest.mark.slow
@pytest.mark.subprocess
def test_resume_a_sweep_in_its_own_folder(tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    first = run_cli(
        "train", "-m", *SWEEP, "seed=1,2", "trainer.max_epochs=2", f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    losses = {job: checkpoint_of(sweep_dir / job)["mlplab"]["training_losses"] for job in "01"}
    # Resume the sweep longer, with one job more: jobs 0 and 1 resume, job 2 starts.
    again = run_cli(
        "train", "-m", *SWEEP, "seed=1,2,3", "trainer.max_epochs=3", "ckpt_path=last",
        f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    for job in "012":
        record = read_metrics(sweep_dir / job)
        assert record["status"] == "ok" and record["metrics"]["global_step"] == 30
        log = (sweep_dir / job / "train.log").read_text()
        assert ("resuming from " in log) == (job != "2"), log
    for job in "01":
        resumed = checkpoint_of(sweep_dir / job)["mlplab"]["training_losses"]
        assert resumed[:20] == losses[job] and len(resumed) == 30


# --- checkpoints are written whole or not at all ------------------------------------------------


class Unpicklable:
    def __reduce__(self):
        raise TypeError("this object cannot be saved")


def test_checkpoint_write_is_atomic(tmp_path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot be saved"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before  # the failed save left the old checkpoint whole
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # and no temporary file
    assert torch.load(path, weights_only=True)["epoch"] == 1


# --- bad checkpoints ----------------------------------------------------------------------------


class Marker:
    """Unpickling this creates a file: proof that a load ran code from the checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A small finished training run (width 16, seed 2021)."""
    out = tmp_path_factory.mktemp("good") / "run"
    record = run("train", out, *SMALL, "logger=none", "figures=false")
    assert record["status"] == "ok"
    return out


def make_bad_checkpoint(kind: str, good: Path, folder: Path) -> Path:
    """A checkpoint file that is wrong in one way."""
    data = (good / "checkpoints" / "last.ckpt").read_bytes()
    path = folder / f"{kind}.ckpt"
    checkpoint = torch.load(good / "checkpoints" / "last.ckpt", weights_only=True)
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "flipped_bits":
        # In the middle of the largest record of torch.save's zip archive (a weight tensor).
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            largest = max(archive.infolist(), key=lambda info: info.compress_size)
        damaged = bytearray(data)
        start = largest.header_offset + 30 + len(largest.filename.encode()) + len(largest.extra)
        middle = start + largest.compress_size // 2
        damaged[middle : middle + 8] = bytes(b ^ 0xFF for b in damaged[middle : middle + 8])
        path.write_bytes(bytes(damaged))
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "plain_state_dict":
        torch.save({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}, path)
    elif kind == "other_architecture":
        # Tensors of a width-8 MLP, a record claiming two layers of 16: train (width 16) and
        # eval (the record's architecture) both find tensors that do not fit.
        checkpoint["hyper_parameters"]["built_from"]["model"]["hidden_units"] = [16, 16]
        checkpoint["state_dict"] = {
            k: v[:8] if "Linear_0" in k else v[:, :8] if k.endswith("Output_Linear.weight") else v
            for k, v in checkpoint["state_dict"].items()
        }
        torch.save(checkpoint, path)
    elif kind == "pickled_object":
        checkpoint["extra"] = Marker(folder / "marker")
        torch.save(checkpoint, path)
    else:
        raise ValueError(kind)
    return path


BAD_CHECKPOINTS = {
    "truncated": "not a PyTorch checkpoint (truncated or corrupted)",
    "flipped_bits": "corrupted (archive/",
    "text": "not a PyTorch checkpoint (truncated or corrupted)",
    "plain_state_dict": "not a Lightning checkpoint (no state_dict)",
    "other_architecture": "saved from a different architecture",
    "pickled_object": "refused, it holds a pickled io.open object",
}


def run_from_checkpoint(task: str, out: Path, ckpt_path: Path) -> int:
    """Run ``task`` (a small training run, or an eval) from ``ckpt_path``; its exit status."""
    overrides = [f"ckpt_path={ckpt_path}", "figures=false"]
    if task == "train":
        overrides = [*SMALL, *overrides, "trainer.max_epochs=3", "logger=none"]
    with pytest.raises(SystemExit) as stop:
        run(task, out, *overrides)
    return stop.value.code


@pytest.mark.parametrize("task", ["train", "eval"])
@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_refused_in_one_line(good_run, tmp_path, capsys, task, kind) -> None:
    bad = make_bad_checkpoint(kind, good_run, tmp_path)
    before = bad.read_bytes() if bad.is_file() else None
    good_bytes = (good_run / "checkpoints" / "last.ckpt").read_bytes()
    out = tmp_path / "run"
    assert run_from_checkpoint(task, out, bad) == 1
    (line,) = capsys.readouterr().err.splitlines()
    expected = BAD_CHECKPOINTS[kind]
    if task == "train" and kind == "other_architecture":  # the record is read first
        expected = (
            "trained with model.hidden_units=[16,16] but this run has model.hidden_units=null"
        )
    assert line.startswith(f"mlplab-{task}: error: checkpoint {bad}: {expected}"), line
    record = read_metrics(out)
    assert record["status"] == "failed" and record["error_type"] == "TaskError"
    assert not (out / "checkpoints").exists()  # nothing trained, nothing written
    if before is not None:
        assert bad.read_bytes() == before
    assert (good_run / "checkpoints" / "last.ckpt").read_bytes() == good_bytes
    assert not (tmp_path / "marker").exists()  # the pickled object was never built


NO_FILE_ALLOWED = {
    "eval": "must be the path of a .ckpt file from mlplab-train, e.g. <run>/checkpoints/last.ckpt",
    "train": "must be a path to a .ckpt file, 'last' or null",
}


@pytest.mark.parametrize("task", ["train", "eval"])
@pytest.mark.parametrize("kind", ["missing", "directory", "run folder"])
def test_a_checkpoint_that_is_no_file_is_a_config_error(good_run, tmp_path, capsys, task, kind):
    path = {
        "missing": tmp_path / "missing.ckpt",
        "directory": tmp_path,
        "run folder": good_run,
    }[kind]
    out = tmp_path / "run"
    assert run_from_checkpoint(task, out, path) == 2
    why = {
        "missing": "no such file",
        "directory": "is a folder, not a file",
        "run folder": "is a folder, not a file "
        f"(did you mean {good_run / 'checkpoints' / 'last.ckpt'}?)",
    }[kind]
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"mlplab-{task}: error: ckpt_path='{path}' is invalid: {why}; {NO_FILE_ALLOWED[task]}"
    )
    record = read_metrics(out)
    assert record["status"] == "failed" and record["error_type"] == "ConfigError"
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("task", ["train", "eval"])
def test_a_missing_checkpoint_stops_before_the_trainer(tmp_path, task):
    # A relative path names the folder it was looked for in; no Trainer was built, so Lightning
    # printed nothing (no "GPU available" lines).
    result = run_cli(task, "ckpt_path=nowhere.ckpt", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"mlplab-{task}: error: ckpt_path='nowhere.ckpt' is invalid: no such file "
        f"({tmp_path / 'nowhere.ckpt'}); {NO_FILE_ALLOWED[task]}"
    ]
    assert "GPU available" not in result.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_new_run_of_no_epochs_is_refused_up_front(tmp_path):
    result = run_cli(
        "train", "trainer.max_epochs=0", f"paths.log_dir={tmp_path}", cwd=tmp_path
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "mlplab-train: error: trainer.max_epochs=0 is invalid: must be >= 1, or -1 (no limit on "
        "epochs) with +trainer.max_steps or +trainer.max_time set (a new run, without "
        "ckpt_path, must train)"
    ]
    assert "GPU available" not in result.stdout


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["trainer.max_epochs=1"], False),
        (["trainer.max_epochs=null"], False),  # Lightning's default: 1000 epochs
        (["trainer.max_epochs=-1", "+trainer.max_steps=3"], False),
        (["trainer.max_epochs=-1", "+trainer.max_time=00:00:01:00"], False),
        (["trainer.max_epochs=0"], True),
        (["trainer.max_epochs=0", "+trainer.max_steps=3"], True),  # max_epochs stops it first
        (["trainer.max_epochs=-1"], True),  # would never end
        (["trainer.max_epochs=-1", "+trainer.max_steps=-1"], True),  # Lightning's "no limit"
        (["trainer.max_epochs=-1", "+trainer.max_steps=0"], True),
        (["trainer.max_epochs=-2"], False),  # the Trainer's own check refuses it
        (["trainer.max_epochs=0", "ckpt_path=last"], False),  # a resume: checked after loading
    ],
)
def test_run_length_of_a_new_run(tmp_path, overrides, refused) -> None:
    cfg = compose_task("train", overrides, tmp_path / "run")
    if not refused:
        check_run_length(cfg)
        return
    with pytest.raises(ConfigError) as err:
        check_run_length(cfg)
    assert err.value.key == "trainer.max_epochs"


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("os.system", "refused, its model names 'os.system', which is not a Module class"),
        ("subprocess.Popen", "refused, its model names 'subprocess.Popen', which is not a Module"),
        ("mlplab.nowhere.Net", "its model 'mlplab.nowhere.Net' cannot be imported"),
    ],
)
def test_eval_calls_nothing_but_what_builds_a_network(good_run, tmp_path, capsys, target, why):
    # The record names the callables eval builds from; only module and datamodule classes (or
    # functions annotated to return one) are ever called.
    checkpoint = torch.load(good_run / "checkpoints" / "last.ckpt", weights_only=True)
    marker = tmp_path / "marker"
    checkpoint["hyper_parameters"]["built_from"]["model"] = {
        "_target_": target,
        "_args_": [f"touch {marker}"],
    }
    bad = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(SystemExit) as stop:
        run("eval", tmp_path / "run", f"ckpt_path={bad}", "figures=false")
    assert stop.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mlplab-eval: error: checkpoint {bad}: {why}"), line
    assert not marker.exists()


def test_the_marker_checkpoint_would_run_code_if_loaded_unsafely(good_run, tmp_path) -> None:
    """The bait above is real: an unsafe torch.load creates the marker file."""
    bad = make_bad_checkpoint("pickled_object", good_run, tmp_path)
    torch.load(bad, weights_only=False)
    assert (tmp_path / "marker").exists()


# (override of the resumed run, what the refusal says, the overrides it says to add)
RESUME_CHANGES = [
    ("seed=3", "with seed=2021 but this run has seed=3", "seed=2021"),
    ("data.sigma=0.2", "with data.sigma=0.16 but this run has data.sigma=0.2", "data.sigma=0.16"),
    ("model.activation='Tanh()'", "with model.activation='ReLU()' but this run has "
     "model.activation='Tanh()'", "model.activation='ReLU()'"),
    ("model.width=8", "with model.width=16 but this run has model.width=8", "model.width=16"),
    ("loss=torch_ce", "with loss=custom_ce but this run has loss=torch_ce", "loss=custom_ce"),
    ("optimizer.lr=0.01", "with optimizer.lr=0.001 but this run has optimizer.lr=0.01",
     "optimizer.lr=0.001"),
    ("optimizer=sgd", "with optimizer=adam but this run has optimizer=sgd", "optimizer=adam"),
    ("scheduler=cosine", "with scheduler=none but this run has scheduler=cosine", "scheduler=none"),
    ("data.batch_size=16", "with data.batch_size=32 but this run has data.batch_size=16",
     "data.batch_size=32"),
    ("data.eval_batch_size=10", "with data.eval_batch_size=null but this run has "
     "data.eval_batch_size=10", "data.eval_batch_size=null"),
    ("optimizer.weight_decay=0.1", "with optimizer.weight_decay=0.0 but this run has optimizer."
     "weight_decay=0.1", "optimizer.weight_decay=0.0"),
    ("+trainer.gradient_clip_val=0.5", "without trainer.gradient_clip_val but this run has "
     "trainer.gradient_clip_val=0.5", "~trainer.gradient_clip_val"),
    ("trainer.precision=64-true", "with trainer.precision='32-true' but this run has "
     "trainer.precision='64-true'", "trainer.precision='32-true'"),
    ("+trainer.limit_train_batches=5", "without trainer.limit_train_batches",
     "~trainer.limit_train_batches"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "message", "add"), RESUME_CHANGES)
def test_resume_with_other_settings_is_refused(good_run, tmp_path, capsys, override, message, add):
    # Same shapes, so the tensors would load: only the recorded settings tell the runs apart.
    # The refusal names the override to add, never a class path.
    ckpt = good_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run("train", out, *SMALL, f"ckpt_path={ckpt}", override, "trainer.max_epochs=3")
    assert stop.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mlplab-train: error: checkpoint {ckpt}: trained {message}"), line
    assert line.endswith(f"; resume with the checkpoint's settings: add {add}"), line
    assert "torch.nn" not in line and "mlplab.models" not in line
    assert not (out / "checkpoints").exists()


def test_resume_refusal_lists_every_override_to_add(good_run, tmp_path, capsys) -> None:
    ckpt = good_run / "checkpoints" / "last.ckpt"
    changes = ["loss=torch_ce", "data.batch_size=16", "seed=5", "optimizer.lr=0.01"]
    with pytest.raises(SystemExit):
        run("train", tmp_path / "run", *SMALL, f"ckpt_path={ckpt}", *changes)
    (line,) = capsys.readouterr().err.splitlines()
    added = line.split("; resume with the checkpoint's settings: add ")[1].split()
    # data.seed follows ${seed}: named once, as the key the user sets.
    assert sorted(added) == sorted(
        ["loss=custom_ce", "data.batch_size=32", "seed=2021", "optimizer.lr=0.001"]
    )


def test_resume_with_the_added_overrides_is_accepted(good_run, tmp_path, capsys) -> None:
    ckpt = good_run / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit):
        run("train", tmp_path / "refused", *SMALL, f"ckpt_path={ckpt}", "data.batch_size=16")
    line = capsys.readouterr().err.strip()
    added = line.split(": add ")[1].split()
    record = run(
        "train", tmp_path / "run", *SMALL, f"ckpt_path={ckpt}", "data.batch_size=16", *added,
        "trainer.max_epochs=3", "logger=none", "figures=false",
    )  # fmt: skip
    assert record["status"] == "ok" and record["metrics"]["global_step"] == 30


def test_failed_resume_in_place_keeps_the_checkpoint(good_run, tmp_path, capsys) -> None:
    # A run folder whose last.ckpt was truncated (a full disk, say): resuming it in place fails
    # clearly and leaves the file as it was for inspection.
    folder = tmp_path / "keep"
    (folder / "checkpoints").mkdir(parents=True)
    ckpt = folder / "checkpoints" / "last.ckpt"
    data = (good_run / "checkpoints" / "last.ckpt").read_bytes()[:5000]
    ckpt.write_bytes(data)
    with pytest.raises(SystemExit):
        run("train", folder, *SMALL, "ckpt_path=last", "trainer.max_epochs=3")
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"mlplab-train: error: checkpoint {ckpt}: not a PyTorch checkpoint (truncated or corrupted)"
    )
    assert ckpt.read_bytes() == data
    assert read_metrics(folder)["status"] == "failed"


# --- divergence ---------------------------------------------------------------------------------


def test_nan_loss_stops_the_run_at_once(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(
            "train", out, *SMALL, EVERY, "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=5"
        )
    assert stop.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("mlplab-train: error: train/loss became nan at step ")
    assert line.endswith("training diverged; lower optimizer.lr (now 1000000.0)")
    record = read_metrics(out)
    assert record["status"] == "failed" and "diverged" in record["error"]
    # Stopped in the epoch it diverged in: the last checkpoint (after every epoch, EVERY) is the
    # epoch before.
    step = int(line.split(" at step ")[1].split()[0])
    assert checkpoint_of(out)["global_step"] == 10 * (step // 10)
    assert not (out / "decision_map.png").exists()


def test_a_diverged_epoch_gets_no_progress_line(tmp_path, capsys, caplog) -> None:
    """Off a terminal the progress is one log line per finished epoch (EpochLines); the epoch
    whose end found the loss NaN logged no metrics, so it gets no line, only the error."""
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="mlplab"), pytest.raises(SystemExit):
        run("train", out, *SMALL_TRAIN, "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=5")
    error = capsys.readouterr().err.splitlines()[-1]
    assert "training diverged" in error
    diverged = int(error.split("(epoch ")[1].split(")")[0])  # 0-based, as Lightning counts
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    # One line per epoch before it (1-based, as the lines count), each with its train/loss.
    assert [line.split(" step ")[0] for line in lines] == [
        f"epoch {e}/5" for e in range(1, diverged + 1)
    ]
    assert all("train/loss" in line for line in lines)


# --- bad config values, table-driven ------------------------------------------------------------

# (task, overrides, key named in the message). Train overrides go on top of SMALL.
BAD_VALUES = [
    ("train", ["seed=-1"], "seed"),
    ("train", ["seed=1.5"], "seed"),
    ("train", ["seed=abc"], "seed"),
    ("train", ["seed=4294967296"], "seed"),
    ("train", ["data.num_classes=1"], "data.num_classes"),
    ("train", ["data.sigma=-0.1"], "data.sigma"),
    ("train", ["data.sigma=nan"], "data.sigma"),
    ("train", ["data.points_per_class=0"], "data.points_per_class"),
    ("train", ["data.points_per_class=1"], "data.points_per_class"),
    ("train", ["data.test_fraction=0"], "data.test_fraction"),
    ("train", ["data.val_fraction=1.0"], "data.val_fraction"),
    ("train", ["data.val_fraction=0.001"], "data.val_fraction"),
    ("train", ["data.batch_size=2.5"], "data.batch_size"),
    ("train", ["threads=0"], "threads"),
    ("train", ["data.eval_batch_size=-1"], "data.eval_batch_size"),
    ("train", ["+data.shuffle=false"], "data.shuffle"),
    ("train", ["model.activation='Softmax(dim=1)'"], "model.activation"),
    ("train", ["model.activation='__import__(\"os\")'"], "model.activation"),
    ("train", ["model.activation='ReLU(inplace=[1])'"], "model.activation"),
    ("train", ["data.num_features=3"], "data.num_features"),
    ("train", ["data=rings", "data.noise=-1"], "data.noise"),
    ("train", ["data=rings", "data.num_classes=1"], "data.num_classes"),
    ("train", ["model.depth=-1"], "model.depth"),
    ("train", ["model.width=many"], "model.width"),
    ("train", ["model.hidden_units=[4,0]"], "model.hidden_units"),
    ("train", ["model.hidden_units=wide"], "model.hidden_units"),
    ("train", ["model.param_budget=0"], "model.param_budget"),
    ("train", ["+model.widht=64"], "model.widht"),
    ("train", ["optimizer.lr=-1"], "optimizer.lr"),
    ("train", ["optimizer.lr=fast"], "optimizer.lr"),
    ("train", ["optimizer.weight_decay=-1"], "optimizer.weight_decay"),
    ("train", ["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum"),
    ("train", ["+optimizer.betas=[0.9,1.5]"], "optimizer.betas"),
    ("train", ["+optimizer.nesterov=true"], "optimizer.nesterov"),
    ("train", ["+loss.label_smooth=0.1", "loss=torch_ce"], "loss.label_smooth"),
    ("train", ["trainer.accelerator=tpu"], "trainer.accelerator"),
    ("train", ["trainer.devices=0"], "trainer.devices"),
    ("train", ["trainer.strategy=horovod"], "trainer.strategy"),
    ("train", ["trainer.precision=8"], "trainer.precision"),
    ("train", ["trainer.max_epochs=-2"], "trainer.max_epochs"),
    ("train", ["+trainer.max_steps=-3"], "trainer.max_steps"),
    ("train", ["+trainer.limit_train_batches=1.5"], "trainer.limit_train_batches"),
    ("train", ["threads=many"], "threads"),
    ("train", ["scheduler=one_cycle", "+scheduler.max_lrr=1"], "scheduler.max_lrr"),
    ("train", ["+trainer.max_epoch=3"], "trainer.max_epoch"),
    ("train", ["callbacks.model_checkpoint=5"], "callbacks.model_checkpoint"),
    ("train", ["+callbacks.model_checkpoint.mode=up"], "callbacks.model_checkpoint.mode"),
    (
        "train",
        ["callbacks.model_checkpoint.save_interval_s=-1"],
        "callbacks.model_checkpoint.save_interval_s",
    ),
    ("train", ["grid_size=1"], "grid_size"),
    ("train", ["grid_size=5000"], "grid_size"),
    ("train", ["figures=maybe"], "figures"),
    ("train", ["test=3"], "test"),
    ("train", ["ckpt_path=last"], "ckpt_path"),
    ("train", ["ckpt_path=7"], "ckpt_path"),
    ("eval", [], "ckpt_path"),
    ("eval", ["ckpt_path=''"], "ckpt_path"),
    ("eval", ["ckpt_path=x.ckpt", "grid_size=0"], "grid_size"),
    ("eval", ["ckpt_path=x.ckpt", "figures=3"], "figures"),
    ("eval", ["ckpt_path=x.ckpt", "trainer.devices=-2"], "trainer.devices"),
    ("eval", ["ckpt_path=x.ckpt", "loss=torch_ce", "+loss.foo=1"], "loss.foo"),
    ("eval", ["ckpt_path=nowhere.ckpt"], "ckpt_path"),
    ("train", ["ckpt_path=nowhere.ckpt"], "ckpt_path"),
    ("train", ["trainer.max_epochs=0"], "trainer.max_epochs"),
    ("train", ["trainer.max_epochs=-1"], "trainer.max_epochs"),
    # A validation metric watched in a run without validation (Lightning fails after epoch 1).
    (
        "train",
        [
            "+callbacks.es._target_=pytorch_lightning.callbacks.EarlyStopping",
            "+callbacks.es.monitor=val/loss",
        ],
        "callbacks.es.monitor",
    ),
    (
        "train",
        ["+callbacks.model_checkpoint.monitor=val/acc"],
        "callbacks.model_checkpoint.monitor",
    ),
]
if not HAS_CUDA:
    BAD_VALUES += [
        ("train", ["trainer=gpu"], "trainer.accelerator"),
        ("eval", ["ckpt_path=x.ckpt", "trainer=ddp"], "trainer.accelerator"),
    ]


@pytest.mark.parametrize(
    ("task", "overrides", "key"), BAD_VALUES, ids=[" ".join(o) or t for t, o, _ in BAD_VALUES]
)
def test_bad_value_is_refused_before_work(tmp_path, capsys, task, overrides, key) -> None:
    out = tmp_path / "run"
    base = [*SMALL, "logger=none"] if task == "train" else []
    # x.ckpt stands for a file that exists (the eval refuses a missing one first); not named
    # *.ckpt, which no_success_left would take for a checkpoint the run wrote.
    (tmp_path / "exists").write_bytes(b"")
    overrides = [o.replace("=x.ckpt", f"={tmp_path / 'exists'}") for o in overrides]
    with pytest.raises(SystemExit) as stop:
        run(task, out, *base, *overrides)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mlplab-{task}: error: {key}="), line
    assert " is invalid: " in line
    assert read_metrics(out)["status"] == "failed"
    no_success_left(out)


def test_a_learning_rate_that_is_no_number_says_what_is_allowed(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        run("train", tmp_path / "run", *SMALL, "logger=none", "optimizer.lr=fast")
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "mlplab-train: error: optimizer.lr='fast' is invalid: must be a number >= 0"


def test_the_table_is_large() -> None:
    assert len(BAD_VALUES) + len(OTHER_TASKS_BAD_VALUES) >= 30


# A few of the other tasks' values, through their own bodies (their authors test the rest).
OTHER_TASKS_BAD_VALUES = [
    ("approx", ["target=foo"], "target"),
    ("approx", ["n_points=1"], "n_points"),
    ("approx", ["fit=maybe"], "fit"),
    ("approx", ["seed=4294967296"], "seed"),
    ("approx", ["seed=-1"], "seed"),
    ("lif", ["mode=foo"], "mode"),
    ("lif", ["lif.Cm=0"], "lif.Cm"),
    ("lif", ["dtype=float16"], "dtype"),
    ("report", [], "sweep_dir"),
    ("report", ["sweep_dir=x", "mode=avg"], "mode"),
]


@pytest.mark.parametrize(
    ("task", "overrides", "key"),
    OTHER_TASKS_BAD_VALUES,
    ids=[f"{t} {' '.join(o)}" for t, o, _ in OTHER_TASKS_BAD_VALUES],
)
def test_other_tasks_refuse_bad_values(tmp_path, capsys, task, overrides, key) -> None:
    module = importlib.import_module(f"mlplab.tasks.{task}")
    body = getattr(module, f"_{task}_body")
    out = tmp_path / "run"
    cfg = compose_task(task, overrides, out)
    with pytest.raises(SystemExit) as stop:
        run_task(cfg, body, output_dir=out, overrides=overrides, multirun=False)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"mlplab-{task}: error: {key}="), line
    assert read_metrics(out)["status"] == "failed"


SUBPROCESS_BAD_VALUES = [
    ("train", ["model.width=0"], "model.width=0 is invalid: must be an integer >= 1"),
    ("train", ["model.activation=Foo(1)"], "model.activation='Foo(1)' is invalid: activation"),
    ("train", ["optimizer=adamw"], "optimizer='adamw' is invalid: must be one of adam"),
    ("eval", [], "ckpt_path='???' is invalid: is required"),
    (
        "train",
        ["seed=4294967296"],
        "seed=4294967296 is invalid: must be an integer >= 0 and <= 4294967295",
    ),
    ("approx", ["seed=-1"], "seed=-1 is invalid: must be an integer >= 0 and <= 4294967295"),
]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(("task", "args", "message"), SUBPROCESS_BAD_VALUES)
def test_console_script_refuses_in_one_line(tmp_path, task, args, message) -> None:
    result = run_cli(task, *args, f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"mlplab-{task}: error: {message}"), line
    for record in tmp_path.rglob("metrics.json"):
        assert read_metrics(record.parent)["status"] == "failed"
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_validation_metric_may_be_watched_when_the_run_validates(compose_config) -> None:
    from mlplab.tasks.train import check_monitors

    watch = ["+callbacks.es._target_=pytorch_lightning.callbacks.EarlyStopping"]
    watch += ["+callbacks.es.monitor=val/loss"]
    check_monitors(compose_config("train", [*watch, "data.val_fraction=0.2"]))  # no error
    check_monitors(compose_config("train", ["+callbacks.es.monitor=train/loss", *watch[:1]]))
    with pytest.raises(ConfigError, match=r"callbacks\.es\.monitor='val/loss'.*validation split"):
        check_monitors(compose_config("train", watch))
