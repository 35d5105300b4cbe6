"""Runs that end truthfully: real signals to real ``mlplab-train`` processes, and their logs.

SIGINT (Ctrl-C) and SIGTERM (what a scheduler sends before a time limit) stop a run with a whole
``last.ckpt``, ``metrics.json`` saying ``interrupted`` and the command that resumes it; running
that command gives the weights of an uninterrupted run, bit for bit. With stdout to a pipe, each
epoch is one log line, in the console and in the run's log.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, read_metrics, run_cli
from mlplab.tasks.runtime import load_checkpoint
from test_reliability import assert_same_run, start_train

# 20 minibatches of 16 per epoch, for long enough to be stopped mid-way; a small network.
STEPS_PER_EPOCH = 20
EPOCHS = 30
LONG = [
    "data.points_per_class=100",
    "data.batch_size=16",
    "model.width=16",
    f"trainer.max_epochs={EPOCHS}",
    "seed=29",
    "logger=none",
    "figures=false",
    # A value Hydra's grammar quotes: the resume command must carry it through a shell.
    "model.activation=LeakyReLU(0.1)",
    # last.ckpt after every epoch, so that a signal can come after the first one within a second.
    "callbacks.model_checkpoint.save_interval_s=0",
]
EVERY_EPOCH = LONG[-1]
EPOCH_LINE = re.compile(
    r"\[mlplab\]\[INFO\] - epoch (\d+)/(\d+) step (\d+): train/loss \d+\.\d{4} train/acc "
    r"\d+\.\d{2} %"
)


def wait_for(predicate, process: subprocess.Popen[str], what: str) -> object:
    """Poll ``predicate()`` until it returns something true; the process must still run."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before {what}"
        found = predicate()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no {what} within 240 s")


def first_checkpoint(log_dir: Path) -> Path | None:
    """The run folder once its last.ckpt holds at least one whole epoch."""
    for ckpt in log_dir.glob("train/runs/*/checkpoints/last.ckpt"):
        # Written by rename: whatever is there is a whole checkpoint.
        if torch.load(ckpt, weights_only=True)["global_step"] >= STEPS_PER_EPOCH:
            return ckpt.parents[1]
    return None


def stop(process: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    process.send_signal(signum)
    try:
        return process.communicate(timeout=120)
    finally:
        process.kill()


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Path:
    """The uninterrupted run of LONG."""
    tmp = tmp_path_factory.mktemp("whole")
    result = run_cli("train", *LONG, f"paths.log_dir={tmp}", cwd=tmp)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp / "train" / "runs").iterdir()
    return run_dir


def resume_line(stderr: str, signame: str) -> str:
    """The resume command of the run's last stderr line (which must say it was interrupted)."""
    last = stderr.strip().splitlines()[-1]
    assert re.match(f"mlplab-train: interrupted by {signame}( at step |; )", last), stderr[-2000:]
    return last.split("; resume with: ", 1)[1]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_saves_records_and_resumes_exactly(tmp_path, whole_run, signum, code) -> None:
    log_dir = tmp_path / "logs"
    victim = start_train(*LONG, f"paths.log_dir={log_dir}", cwd=tmp_path)
    run_dir = wait_for(lambda: first_checkpoint(log_dir), victim, "a first checkpoint")
    _, stderr = stop(victim, signum)
    assert victim.returncode == code, stderr[-2000:]

    command = resume_line(stderr, signal.Signals(signum).name)
    record = read_metrics(run_dir)
    assert record["status"] == "interrupted"
    assert record["error"].startswith(f"interrupted by {signal.Signals(signum).name} at step ")
    assert record["resume"] == command
    words = shlex.split(command)  # a shell's reading of it
    assert words[0] == "mlplab-train"
    assert words[-2:] == [f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    assert "model.activation='LeakyReLU(0.1)'" in words

    # last.ckpt is whole and loads safely; it holds whole epochs only, never the stopped one.
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    saved = checkpoint["global_step"]
    assert saved % STEPS_PER_EPOCH == 0 and saved >= STEPS_PER_EPOCH
    assert record["error"].endswith(f" (last.ckpt holds step {saved}, where a resume goes on)")
    assert record["metrics"]["epochs"] == saved // STEPS_PER_EPOCH
    assert saved <= record["metrics"]["global_step"] < EPOCHS * STEPS_PER_EPOCH
    assert not (run_dir / "decision_map.png").exists()

    # The printed command, run as a shell would, finishes the run: the uninterrupted numbers.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    resumed = subprocess.run(
        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record = read_metrics(run_dir)
    assert record["status"] == "ok" and record["metrics"]["epochs"] == EPOCHS
    assert_same_run(run_dir, whole_run)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_stops_a_sweep_and_its_job_resumes_alone(tmp_path) -> None:
    sweep_dir = tmp_path / "sweep"
    victim = start_train(
        "-m", *LONG[:4], EVERY_EPOCH, "seed=5,6", "logger=none", "figures=false",
        "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path,
    )  # fmt: skip

    def job_checkpoint() -> bool:
        ckpt = sweep_dir / "0" / "checkpoints" / "last.ckpt"
        return ckpt.is_file() and torch.load(ckpt, weights_only=True)["global_step"] > 0

    wait_for(job_checkpoint, victim, "job 0's first checkpoint")
    _, stderr = stop(victim, signal.SIGTERM)
    assert victim.returncode == 143, stderr[-2000:]  # the sweep stops
    assert not (sweep_dir / "1").exists()  # the next job never started
    command = resume_line(stderr, "SIGTERM")
    record = read_metrics(sweep_dir / "0")
    assert record["status"] == "interrupted" and record["resume"] == command
    words = shlex.split(command)
    # The job's own overrides (its seed), as a single run in the job's folder.
    assert "seed=5" in words and "-m" not in words
    assert words[-2:] == [f"hydra.run.dir={sweep_dir / '0'}", "ckpt_path=last"]
    assert not any(w.startswith(("hydra.sweep", "hydra/launcher", "hydra.mode")) for w in words)
    env = {**os.environ, "PYTHONHASHSEED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    resumed = subprocess.run(
        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record = read_metrics(sweep_dir / "0")
    assert record["status"] == "ok" and record["metrics"]["epochs"] == EPOCHS


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_stops_a_stacked_sweep_which_the_printed_command_finishes(
    tmp_path, signum, code
) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep = [*LONG[:3], EVERY_EPOCH, "trainer.max_epochs=300", "seed=5,6", "logger=none"]
    sweep.append("figures=false")
    victim = start_train(
        "-m", *sweep, "hydra/launcher=stacked", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path
    )

    def stack_checkpoint() -> Path | None:
        for ckpt in sweep_dir.glob(".stacked/*/checkpoints/last.ckpt"):
            if torch.load(ckpt, weights_only=True)["global_step"] > 0:
                return ckpt
        return None

    wait_for(stack_checkpoint, victim, "the stack's first checkpoint")
    _, stderr = stop(victim, signum)
    # Lightning's SIGTERMException is a SystemExit with no code: left alone, exit status 0.
    assert victim.returncode == code, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"mlplab-train: sweep interrupted by {name} training "), last
    words = shlex.split(last.split("; resume with: ", 1)[1])
    assert words[0] == "mlplab-train" and "hydra/launcher=stacked" in words and "seed=5,6" in words
    assert words[-2:] == [f"hydra.sweep.dir={sweep_dir}", "ckpt_path=last"]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    resumed = subprocess.run(
        shlex.join(words), shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming the stack" in resumed.stdout + resumed.stderr
    for job in ("0", "1"):
        record = read_metrics(sweep_dir / job)
        assert record["status"] == "ok" and record["metrics"]["epochs"] == 300


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_before_the_first_epoch_ends_is_recorded(tmp_path) -> None:
    # Stopped as early as the run logs anything: no checkpoint yet, so the command runs the
    # same overrides again in the same folder.
    log_dir = tmp_path / "logs"
    victim = start_train(*LONG, f"paths.log_dir={log_dir}", cwd=tmp_path)

    def started() -> Path | None:
        for log in log_dir.glob("train/runs/*/train.log"):
            if "torch intra-op threads" in log.read_text():
                return log.parent
        return None

    run_dir = wait_for(started, victim, "the first log line")
    _, stderr = stop(victim, signal.SIGTERM)
    assert victim.returncode == 143, stderr[-2000:]
    command = resume_line(stderr, "SIGTERM")
    record = read_metrics(run_dir)
    assert record["status"] == "interrupted" and record["resume"] == command
    words = shlex.split(command)
    if (run_dir / "checkpoints" / "last.ckpt").exists():  # the first epoch ended meanwhile
        assert words[-1] == "ckpt_path=last"
    else:
        assert words[-1] == f"hydra.run.dir={run_dir}" and "ckpt_path=last" not in words
        if " at step " in record["error"]:  # stopped in the fit, not before it began
            assert record["error"].endswith(" (no last.ckpt written yet by this fit)")


@pytest.mark.slow
@pytest.mark.subprocess
def test_logs_to_a_pipe_have_one_line_per_epoch_and_no_adverts(tmp_path) -> None:
    result = run_cli(
        "train", "debug=fast", "trainer.max_epochs=3", "data.val_fraction=0.1",
        f"paths.log_dir={tmp_path}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    log = (run_dir / "train.log").read_text()
    for text in (result.stdout, log):
        lines = [m.groups() for m in EPOCH_LINE.finditer(text)]
        assert lines == [("1", "3", "4"), ("2", "3", "8"), ("3", "3", "12")], text
        assert text.count(" val/acc ") == 3 and text.count(" val/loss ") == 3
        for noise in ("Tip", "litlogger", "FLOPs", "━━"):  # adverts, the summary, a bar
            assert noise not in text
    assert "Tip" not in result.stderr and "FLOPs" not in result.stderr
    # The last epoch line has the numbers metrics.json ends with.
    last = EPOCH_LINE.findall(log)[-1]
    assert last == ("3", "3", "12")
    val_acc = float(re.findall(r"val/acc (\d+\.\d+) %", log)[-1])
    assert val_acc == pytest.approx(read_metrics(run_dir)["metrics"]["val/acc"], abs=0.006)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_terminal_keeps_the_rich_bar(tmp_path) -> None:
    """With stdout on a pseudo-terminal, the progress bar and summary are Lightning's rich ones."""
    import pty

    code = (
        "from mlplab.tasks.progress import progress_bar, model_summary\n"
        "print(type(progress_bar()).__name__, type(model_summary()).__name__)\n"
    )
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=child, stderr=subprocess.PIPE, text=True
    )
    os.close(child)
    process.wait(timeout=120)
    output = os.read(main, 1000).decode()
    os.close(main)
    assert output.split() == ["RichProgressBar", "RichModelSummary"]
    piped = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert piped.stdout.split() == ["EpochLines", "ModelSummary"]


def test_the_summary_counts_the_networks_flops(compose_config) -> None:
    """On a terminal the summary has real FLOPs and sizes: no column of zeros."""
    from pytorch_lightning.utilities.model_summary import ModelSummary

    from mlplab.tasks.train import build_model

    model = build_model(compose_config("train", ["model.width=16"]))
    summary = ModelSummary(model, max_depth=2)
    # Multiply-adds of the two layers, 2 FLOPs each: 2 -> 16 -> 4 for one input.
    assert summary.total_flops == 2 * (2 * 16 + 16 * 4)
    assert summary.in_sizes[0] == [1, 2] and summary.out_sizes[0] == [1, 4]


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_outside_lightning_is_recorded_too(tmp_path, capsys, signum, code) -> None:
    """A real signal to this process while a task body runs (here approx's): the same record."""
    from omegaconf import OmegaConf

    from mlplab.tasks.common import run_task

    def body(cfg, output_dir):
        signal.raise_signal(signum)  # delivered at once, in the middle of the body's work
        raise AssertionError("the signal did not stop the body")

    cfg = OmegaConf.create({"task_name": "approx"})
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        run_task(cfg, body, tmp_path, ["target=sin", "seed=3"], multirun=False)
    assert stop.value.code == code
    assert signal.getsignal(signal.SIGTERM) is before  # the task's handler is gone again
    name = signal.Signals(signum).name
    command = f"mlplab-approx target=sin seed=3 hydra.run.dir={tmp_path}"
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"mlplab-approx: interrupted by {name}; resume with: {command}"
    record = read_metrics(tmp_path)
    assert record["status"] == "interrupted" and record["resume"] == command
    assert record["error"] == f"interrupted by {name}"
