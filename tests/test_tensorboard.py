"""TensorBoard tells the truth: HPARAMS read back through a real ``tensorboard`` server.

The server is started on 127.0.0.1 over a task's output folder, as a user would
(``tensorboard --logdir outputs/train``), and its hparams plugin is asked what its HPARAMS tab
shows: the columns (``/data/plugin/hparams/experiment``) and the rows
(``/data/plugin/hparams/session_groups``), with the request messages of
tensorboard/plugins/hparams/api.proto.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, read_metrics, run_cli
from mlplab.tasks import dashboard

# A training job of a second or two; the settings below are what the sweeps vary.
FAST = ["debug=fast", "data.points_per_class=100", "grid_size=40", "callbacks=none"]
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TensorBoard:
    """A running ``tensorboard`` server and the two HPARAMS requests of its frontend."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, route: str, request: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(request).encode()
        req = urllib.request.Request(
            f"{self.url}/data/plugin/hparams/{route}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.load(response)

    def experiment(self) -> dict[str, Any]:
        """The HPARAMS columns: ``hparamInfos`` and ``metricInfos``."""
        return self.post("experiment", {"experimentName": ""})

    def sessions(self) -> dict[str, dict[str, Any]]:
        """The HPARAMS rows by run name: one session per group (each run is its own group)."""
        request = {
            "experimentName": "",
            "allowedStatuses": STATUSES,
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 1000,
        }
        rows = {}
        for group in self.post("session_groups", request).get("sessionGroups", []):
            (session,) = group["sessions"]
            metrics = {m["name"]["tag"]: m["value"] for m in session.get("metricValues", [])}
            rows[session["name"]] = {
                "hparams": group["hparams"],
                "metrics": metrics,
                "status": session.get("status", "STATUS_UNKNOWN"),
            }
        return rows

    def wait_for(self, runs: int, timeout: float = 90.0) -> dict[str, dict[str, Any]]:
        """The rows, once the server has read ``runs`` runs with their HPARAMS entries."""
        deadline = time.monotonic() + timeout
        rows: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                rows = self.sessions()
                if len(rows) >= runs and all(row["metrics"] for row in rows.values()):
                    return rows
            time.sleep(0.3)
        raise AssertionError(f"tensorboard showed {len(rows)} of {runs} runs: {sorted(rows)}")


@contextlib.contextmanager
def tensorboard(logdir: Path) -> Iterator[TensorBoard]:
    """``tensorboard --logdir <logdir>`` on a free port of 127.0.0.1, stopped on exit."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(BIN / "tensorboard"),
            f"--logdir={logdir}",
            "--host=127.0.0.1",
            f"--port={port}",
            # The Python reader, which reads every event file at start-up.
            "--load_fast=false",
            "--reload_interval=1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield TensorBoard(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def columns(experiment: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The hyper-parameter columns by name, and the metric columns' tags."""
    hparams = {info["name"]: info for info in experiment.get("hparamInfos", [])}
    metrics = {info["name"]["tag"] for info in experiment.get("metricInfos", [])}
    return hparams, metrics


def sweep_of(result: subprocess.CompletedProcess[str], task_dir: Path) -> Path:
    """The multirun folder a finished ``-m`` run reported in its summary line."""
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = (line for line in result.stdout.splitlines() if line.startswith("mlplab: "))
    folder = Path(line.split(" in ", 1)[1])
    assert folder.parent == task_dir / "multiruns"
    return folder


# --- the run name, the title line and the override columns, as Hydra composes them -----------


def test_run_names_are_the_job_settings(compose_config) -> None:
    compose_config("train", ["debug=fast", "data.sigma=0.4", "paths.log_dir=/elsewhere"])
    # Sorted like hydra.job.override_dirname; the output folder is not a setting.
    assert dashboard.run_settings() == "data.sigma=0.4,debug=fast"
    assert dashboard.settings_title() == "data.sigma=0.4, debug=fast"
    compose_config("train", [])
    assert dashboard.run_settings() == dashboard.settings_title() == "defaults"
    # Resuming is not a setting either: the resumed run continues its own TensorBoard run.
    compose_config("train", ["ckpt_path=/runs/a/checkpoints/last.ckpt", "seed=3"])
    assert dashboard.run_settings() == "seed=3"
    # A slash in a value keeps the run one folder.
    compose_config("train", ["optimized_metric=val/acc"])
    assert dashboard.run_settings() == "optimized_metric=val\u2215acc"
    assert "/" not in dashboard.run_settings()


@pytest.mark.parametrize(
    ("overrides", "version"),
    [
        (["ckpt_path=/o/train/runs/2026_ab/checkpoints/last.ckpt"], "ckpt_path=2026_ab"),
        # A multirun job's folder is its number: the sweep's folder says whose.
        (
            ["ckpt_path=/o/train/multiruns/2026_cd/3/checkpoints/last.ckpt", "loss=torch_ce"],
            "ckpt_path=2026_cd\u22153,loss=torch_ce",
        ),
        # Another checkpoint of the same run, or one outside a run folder.
        (
            ["ckpt_path='/o/train/runs/2026_ab/checkpoints/epoch=1.ckpt'"],
            "ckpt_path=2026_ab\u2215epoch=1.ckpt",
        ),
        (["ckpt_path=/models/net.ckpt"], "ckpt_path=models\u2215net.ckpt"),
    ],
)  # fmt: skip
def test_eval_runs_are_named_after_their_checkpoint(compose_config, overrides, version) -> None:
    cfg = compose_config("eval", overrides)
    assert cfg.logger.version == version  # as conf/logger/tensorboard.yaml resolves it
    # A training run's ckpt_path is what it resumes: not in its name.
    cfg = compose_config("train", ["ckpt_path=/o/train/runs/2026_ab/checkpoints/last.ckpt"])
    assert cfg.logger.version == "defaults"


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_eval_sweep_over_checkpoints_writes_one_run_per_checkpoint(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = [f"paths.log_dir={tmp_path}"]
    # FAST's callbacks=none would leave no checkpoint.
    small = [*(o for o in FAST if o != "callbacks=none"), "logger=none", "figures=false"]
    trained = sweep_of(
        run_cli("train", "-m", *small, "seed=1,2", *logs, cwd=tmp_path),
        tmp_path / "train",
    )
    ckpts = ",".join(str(trained / job / "checkpoints" / "last.ckpt") for job in ("0", "1"))
    evaluated = sweep_of(
        run_cli("eval", "-m", f"ckpt_path={ckpts}", "figures=false", *logs, cwd=tmp_path),
        tmp_path / "eval",
    )
    for job in ("0", "1"):
        # The checkpoint's run first, then the eval's own overrides as Hydra writes them.
        name = f"ckpt_path={trained.name}{dashboard.SLASH}{job},figures=False"
        run = evaluated / "tensorboard" / name
        (events,) = run.glob("events.out.tfevents.*")
        acc = EventAccumulator(str(events))
        acc.Reload()
        (scalar,) = acc.Scalars("test/acc")
        expected = read_metrics(trained / job)["metrics"]["test/acc"]
        assert scalar.value == pytest.approx(expected, abs=1e-4), job
    assert len(list((evaluated / "tensorboard").iterdir())) == 2


def test_long_settings_are_cut_with_a_hash_that_keeps_them_unique(compose_config) -> None:
    widths = ",".join(["64"] * 40)
    names = []
    for last in (1, 2):
        compose_config("train", [f"model.hidden_units=[{widths},{last}]", "debug=fast"])
        names.append(dashboard.run_settings())
        assert names[-1] == dashboard.run_settings()  # deterministic
    assert all(len(name) == dashboard.MAX_NAME_CHARS for name in names)
    assert names[0][:-9] == names[1][:-9] and names[0] != names[1]
    assert names[0].startswith("debug=fast,model.hidden_units=[64,64,")


def test_every_override_is_a_column_with_its_composed_value(compose_config) -> None:
    cfg = compose_config(
        "train",
        [
            "debug=fast",
            "data.sigma=0.4",
            "trainer.max_epochs=3",
            "model.hidden_units=[8,8]",
            "optimizer=sgd",
            "paths.log_dir=/elsewhere",
        ],
    )
    assert dashboard.override_hparams(cfg) == {
        "debug": "fast",  # an option of a group without a node of its own
        "data/sigma": 0.4,
        "trainer/max_epochs": 3,
        "model/hidden_units": "[8,8]",  # as written
        "optimizer": "sgd",
    }


# --- HPARAMS through a real server -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_hparams_of_two_sweeps_and_a_run_show_every_setting_and_metric(tmp_path) -> None:
    logs = f"paths.log_dir={tmp_path}"
    task_dir = tmp_path / "train"
    # The two cases: a sweep over the validation split, one over the data's noise.
    val_sweep = sweep_of(
        run_cli("train", "-m", *FAST, "data.val_fraction=0,0.1", logs, cwd=tmp_path), task_dir
    )
    sigma_sweep = sweep_of(
        run_cli("train", "-m", *FAST, "data.sigma=0.1,0.4", logs, cwd=tmp_path), task_dir
    )
    single = run_cli("train", *FAST, "model.width=8", logs, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    (run_dir,) = (task_dir / "runs").iterdir()

    with tensorboard(task_dir) as server:  # one TensorBoard over the task's whole folder
        rows = server.wait_for(runs=5)
        hparams, metrics = columns(server.experiment())

    def name(folder: str, *swept: str) -> str:
        # hydra.job.override_dirname: the job's overrides, sorted.
        return f"{folder}/tensorboard/{','.join(sorted([*FAST, *swept]))}"

    assert set(rows) == {
        name(f"multiruns/{val_sweep.name}", "data.val_fraction=0"),
        name(f"multiruns/{val_sweep.name}", "data.val_fraction=0.1"),
        name(f"multiruns/{sigma_sweep.name}", "data.sigma=0.1"),
        name(f"multiruns/{sigma_sweep.name}", "data.sigma=0.4"),
        name(f"runs/{run_dir.name}", "model.width=8"),
    }

    # Columns: the swept keys with every value seen, the overridden option, the data and
    # model arguments; every metric any run logs, the validation ones of a single job included.
    assert hparams["data/val_fraction"]["domainInterval"] == {"minValue": 0.0, "maxValue": 0.1}
    assert hparams["data/sigma"]["domainInterval"] == {"minValue": 0.1, "maxValue": 0.4}
    assert hparams["model/width"]["domainInterval"] == {"minValue": 8.0, "maxValue": 128.0}
    assert hparams["debug"]["domainDiscrete"] == ["fast"]
    assert hparams["data/val_fraction"]["differs"] and hparams["data/sigma"]["differs"]
    assert {"data", "data/points_per_class", "model", "model/depth", "seed"} <= set(hparams)
    assert {"val/loss", "val/acc", "test/loss", "test/acc", "train/loss"} <= metrics

    # Rows: each run's own values, its final metrics (those of its metrics.json) and status.
    assert {row["status"] for row in rows.values()} == {"STATUS_SUCCESS"}
    by_value = {
        (row["hparams"]["data/sigma"], row["hparams"]["data/val_fraction"]): row
        for row in rows.values()
        if row["hparams"]["model/width"] == 128
    }
    assert len(by_value) == 4
    for sigma, job in ((0.1, sigma_sweep / "0"), (0.4, sigma_sweep / "1")):
        record = read_metrics(job)["metrics"]
        assert by_value[(sigma, 0.0)]["metrics"]["test/acc"] == pytest.approx(record["test/acc"])
    record = read_metrics(val_sweep / "1")["metrics"]
    assert by_value[(0.16, 0.1)]["metrics"]["val/acc"] == pytest.approx(record["val/acc"])
    assert "val/acc" not in by_value[(0.16, 0.0)]["metrics"]  # no validation split, no value


@pytest.mark.slow
@pytest.mark.subprocess
def test_approx_and_lif_have_their_own_tensorboard_roots(tmp_path) -> None:
    logs = f"paths.log_dir={tmp_path}"
    approx = run_cli("approx", "-m", "n_points=8,16", logs, cwd=tmp_path)
    approx_sweep = sweep_of(approx, tmp_path / "approx")
    lif = run_cli("lif", "lif.Rm.num=3", "lif.tau_ref.num=3", "lif.I.num=5", logs, cwd=tmp_path)
    assert lif.returncode == 0, lif.stderr[-3000:]
    # Each task's event files are in its own folder: a TensorBoard per task never mixes them.
    roots = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("events.out.tfevents.*")}
    assert roots == {"approx", "lif"}

    with tensorboard(tmp_path / "approx") as server:
        rows = server.wait_for(runs=2)
        hparams, metrics = columns(server.experiment())
    runs = f"multiruns/{approx_sweep.name}/tensorboard"
    assert set(rows) == {f"{runs}/n_points=8", f"{runs}/n_points=16"}
    assert hparams["n_points"]["domainInterval"] == {"minValue": 8.0, "maxValue": 16.0}
    assert {"approx/max_error", "approx/rms_error"} <= metrics
    assert not any(tag.startswith(("lif/", "test/")) for tag in metrics)

    with tensorboard(tmp_path / "lif") as server:
        rows = server.wait_for(runs=1)
        hparams, metrics = columns(server.experiment())
    ((name, row),) = rows.items()
    assert name.endswith("/tensorboard/lif.I.num=5,lif.Rm.num=3,lif.tau_ref.num=3")
    # The task's own hyper-parameters and a column per override.
    assert row["hparams"]["Rm_num"] == row["hparams"]["lif/Rm/num"] == 3
    assert {"lif/max_abs_rate_error_hz", "lif/distance_to_relu_max"} <= metrics
    assert not any(tag.startswith(("approx/", "test/")) for tag in metrics)
