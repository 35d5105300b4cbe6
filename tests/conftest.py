"""Shared test helpers: compose task configs with outputs in a tmp folder, run console scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mlplab.tasks.common import CONF_DIR

BIN = Path(sys.executable).parent
# A training run of seconds: 400 points (320 to train on, 10 minibatches of 32), 2 epochs.
SMALL_TRAIN = [
    "data.points_per_class=100",
    "data.batch_size=32",
    "model.width=16",
    "trainer.max_epochs=2",
    # Step scalars every 5 of the 10 steps per epoch (the default, 25, is more than an epoch).
    "trainer.log_every_n_steps=5",
    "grid_size=40",
]
# The default callbacks without the terminal output (progress bar, model summary).
NO_PROGRESS = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]


@pytest.fixture
def compose_config(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """``compose_config(name, overrides)``: a task config as Hydra composes it, outputs in tmp.

    HydraConfig is set as in a real run, so ``${hydra:...}`` interpolations resolve.
    """

    def _compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides or []), return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path)
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.job.num = 0
            cfg.hydra.job.id = "0"
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def tensorboard_run(folder: Path) -> Path:
    """The TensorBoard run of a single run's folder: ``<run>/tensorboard/<its settings>``."""
    (run,) = (folder / "tensorboard").iterdir()
    return run


def run_cli(
    task: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the console script ``mlplab-<task>`` as a real subprocess, outputs under ``cwd``."""
    cmd = [str(BIN / f"mlplab-{task}"), *args]
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    return subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def python_output(code: str) -> str:
    """Standard output of ``python -c code`` in a fresh interpreter (which must exit 0)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def checkpoint_of(run_dir: Path) -> dict:
    """last.ckpt of a run; its per-step loss curve (a float64 tensor) as a list of floats."""
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["mlplab"]["training_losses"] = checkpoint["mlplab"]["training_losses"].tolist()
    return checkpoint


def read_metrics(run_dir: Path) -> dict:
    """The ``metrics.json`` record of a run folder."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def only_run_dir(log_dir: Path, task: str) -> Path:
    """The single run folder under ``<log_dir>/<task>/runs``."""
    runs = sorted((Path(log_dir) / task / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]
