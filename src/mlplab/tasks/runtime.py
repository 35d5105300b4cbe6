"""Building Lightning objects from configs, loading checkpoints safely, saving figures.

Shared by the train and eval tasks; everything here takes config nodes or plain objects.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from matplotlib.figure import Figure
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, Checkpoint, ModelSummary, ProgressBar
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torch import Tensor, nn

from mlplab.io import atomic_write
from mlplab.tasks import common
from mlplab.tasks.common import ConfigError, TaskError

# Lightning warnings about choices mlplab makes on purpose: in-memory data in this process (no
# DataLoader workers), no validation split by default, resuming into a new run folder. Each would
# otherwise print on every run.
_EXPECTED_WARNINGS = (
    r".*Total length of `list` across ranks is zero",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r".*does not have many workers",
    # A resume into a new run folder: the new folder is the point.
    r".*The dirpath has changed from",
)


def quiet_expected_warnings() -> None:
    """Silence the Lightning warnings that mlplab's design triggers on every run."""
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that is then renamed: a kill never leaves half a file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        # Serialise in memory, then write once: torch's zip writer makes many small writes,
        # which cost three times the serialisation itself on a file handle.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


# A training step of a network with fewer parameters than this is too small for a second
# intra-op thread to pay off, and extra threads spin against any other busy process on the
# machine (measured with scripts/bench_threads.py; the numbers are in the README).
PARALLEL_MIN_PARAMS = 200_000


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def torch_threads_for(setting: int | str, num_params: int, cores: int | None = None) -> int:
    """Intra-op threads for a run: an integer setting as it is; ``auto`` decides.

    ``auto``: ``OMP_NUM_THREADS`` when it is set (by the user, joblib, the SLURM launcher or the
    multirun thread callback, which share cores between jobs); else one thread for a network
    below :data:`PARALLEL_MIN_PARAMS` parameters and every core this process may use above it.
    """
    if setting != "auto":
        return int(setting)
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) >= 1:
        return int(from_env)
    if num_params < PARALLEL_MIN_PARAMS:
        return 1
    return cores or len(os.sched_getaffinity(0))


def set_torch_threads(setting: int | str, num_params: int) -> int:
    """Set torch's intra-op threads by :func:`torch_threads_for`; returns the number set."""
    threads = torch_threads_for(setting, num_params)
    torch.set_num_threads(threads)
    return threads


def pass_job_to_ranks() -> None:
    """In a multirun job, tell DDP ranks started from here which job they belong to.

    Lightning's DDP launcher starts ranks 1..n-1 by running this process's command line again,
    which in a multirun is the whole sweep; :func:`mlplab.tasks.common.rank_job_argv` reads these
    variables in the rank's console script and runs just this job.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hc = HydraConfig.get()
    os.environ[common.JOB_OVERRIDES_ENV] = json.dumps(list(hc.overrides.task))
    os.environ[common.JOB_DIR_ENV] = str(hc.runtime.output_dir)


@contextlib.contextmanager
def distributed_job() -> Iterator[None]:
    """Leave the process as the job found it: no process group, no launcher variables.

    Lightning's DDP launcher sets ``LOCAL_RANK``, ``MASTER_PORT`` ... in this process's
    environment and keeps its process group until exit. The next job of a multirun in the same
    process would then take itself for a rank started externally and reuse a group whose other
    ranks are gone; so a job restores the environment and destroys the group when it ends.
    """
    environ = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)


def build_logger(cfg: DictConfig | None, key: str = "logger") -> Logger | None:
    """The logger of ``cfg.logger``, or None for ``logger=none``."""
    if not cfg or "_target_" not in cfg:
        return None
    return common.instantiate(cfg, key)


def build_callbacks(cfg: DictConfig | None, key: str = "callbacks") -> list[Callback]:
    """Every callback config (a node with ``_target_``) of ``cfg.callbacks``; null ones are off."""
    if not cfg:
        return []
    if not isinstance(cfg, DictConfig):
        raise ConfigError(key, cfg, "must be a mapping of callback configs or null")
    callbacks = []
    for name, node in cfg.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{key}.{name}", node, "must be a callback config (with _target_)")
        callbacks.append(common.instantiate(node, f"{key}.{name}"))
    return callbacks


def build_trainer(
    cfg: DictConfig, logger: Logger | None, callbacks: list[Callback], key: str = "trainer"
) -> pl.Trainer:
    """The Trainer of ``cfg.trainer``; progress bar, summary, checkpoints follow the callbacks."""
    return common.instantiate(
        cfg,
        key,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        enable_model_summary=any(isinstance(c, ModelSummary) for c in callbacks),
    )


def tensorboard_of(logger: Logger | None) -> Any:
    """The SummaryWriter behind a TensorBoard logger, else None."""
    return logger.experiment if isinstance(logger, TensorBoardLogger) else None


def log_hparams(
    logger: Logger | None, params: dict[str, Any], cfg: DictConfig | None = None
) -> None:
    """Record a finished run's hyper-parameters for TensorBoard's HPARAMS tab (and hparams.yaml).

    The columns are ``params``, joined by a column per key the job overrides
    (:func:`mlplab.tasks.dashboard.override_hparams` of ``cfg``; ``params`` win where both name
    one). The metric columns are every scalar the runs log: TensorBoard finds them itself,
    because no run writes an experiment summary (see :mod:`mlplab.tasks.dashboard`). Other
    loggers get the same columns (``hparams.yaml`` for CSV).
    """
    if logger is None:
        return
    from mlplab.tasks import dashboard

    columns = dashboard.with_overrides(params, cfg)
    logger.log_hyperparams(columns)  # hparams.yaml; no event (default_hp_metric is off)
    if isinstance(logger, TensorBoardLogger):
        summaries = dashboard.hparams_summaries(columns, str(Path(logger.log_dir).absolute()))
        dashboard.write_summaries(logger.log_dir, [(summary, 0) for summary in summaries])


def load_checkpoint(path: Path, check_only: bool = False) -> dict[str, Any] | Path:
    """Load a Lightning checkpoint with ``weights_only=True``, or fail with one clear line.

    Args:
        path: The ``.ckpt`` file.
        check_only: Return the path after checking instead of the loaded dict.

    Raises:
        TaskError: naming the file and what is wrong (missing, truncated, corrupted, not a
            checkpoint, or holding pickled objects other than tensors and plain containers).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskError(f"checkpoint {path}: no such file")
    if not zipfile.is_zipfile(path):  # torch.save's format is a zip archive
        raise TaskError(f"checkpoint {path}: not a PyTorch checkpoint (truncated or corrupted)")
    try:
        # torch.load does not check the CRC32 that torch.save writes for every record, so a
        # flipped bit in a tensor would load as a wrong weight; check them all first.
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (
        zipfile.BadZipFile,
        OSError,
        ValueError,
        EOFError,
        RuntimeError,
        NotImplementedError,
    ) as err:
        raise TaskError(f"checkpoint {path}: unreadable (truncated or corrupted)") from err
    if damaged is not None:
        raise TaskError(f"checkpoint {path}: corrupted ({damaged} fails its CRC check)")
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused is None:
            raise TaskError(f"checkpoint {path}: unreadable (corrupted)") from err
        raise TaskError(
            f"checkpoint {path}: refused, it holds a pickled {refused.group(1)} object; only "
            "tensors and plain data are ever loaded (weights_only=True)"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise TaskError(f"checkpoint {path}: unreadable (truncated or corrupted)") from err
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise TaskError(f"checkpoint {path}: not a Lightning checkpoint (no state_dict)")
    return path if check_only else dict(checkpoint)


def check_state_dict(path: Path, saved: Mapping[str, Tensor], model: nn.Module) -> None:
    """Refuse a checkpoint whose tensors do not fit ``model`` (another architecture)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise TaskError(f"checkpoint {path}: saved from a different architecture ({what})")
    for key, tensor in expected.items():
        if tuple(saved[key].shape) != tuple(tensor.shape):
            raise TaskError(
                f"checkpoint {path}: saved from a different architecture ({key} has shape "
                f"{tuple(saved[key].shape)} in the file, {tuple(tensor.shape)} in this model)"
            )


@torch.no_grad()
def save_decision_map(
    net: nn.Module, X_test: Tensor, y_test: Tensor, grid_size: int, title: str | None = None
) -> Figure:
    """The tutorial's decision map: predictions on a grid_size^2 grid, test points overlaid.

    The grid covers the tutorial's [-2, 2]^2, widened to the next integer when test points lie
    outside it (any 2-D dataset).
    """
    from mlplab.viz import plot_decision_map, sample_grid

    reach = float(X_test.abs().max()) if len(X_test) else 0.0
    x_max = max(2.0, math.ceil(1.05 * reach))
    grid = sample_grid(grid_size, x_max)
    first = next(net.parameters(), None)
    was_training = net.training
    net.eval()
    labels = net(grid if first is None else grid.to(first.dtype)).argmax(dim=1)
    net.train(was_training)
    return plot_decision_map(labels, X_test, y_test, M=grid_size, x_max=x_max, title=title)


def is_plane(X: Tensor) -> bool:
    """True for points of the plane, shape (N, 2): the decision map can be drawn."""
    return X.ndim == 2 and X.shape[1] == 2


def log_figures(figures: dict[str, Figure], output_dir: Path, writer: Any, step: int) -> None:
    """Save each figure as ``<output_dir>/<name>.png`` and log the same PNG to TensorBoard.

    Args:
        figures: Name to figure; logged under the tag ``figures/<name>``.
        output_dir: The run folder.
        writer: The run's ``SummaryWriter`` (:func:`tensorboard_of`), or None for no logging.
        step: The global step the images are logged at.
    """
    from mlplab.tasks.dashboard import write_summaries
    from mlplab.viz import figure_to_png

    pngs = {
        name: figure_to_png(fig, Path(output_dir) / f"{name}.png") for name, fig in figures.items()
    }
    if writer is not None:  # one render: the file's bytes are the TensorBoard image
        summaries = [
            (common.png_summary(f"figures/{name}", png), step) for name, png in pngs.items()
        ]
        write_summaries(writer.get_logdir(), summaries)
