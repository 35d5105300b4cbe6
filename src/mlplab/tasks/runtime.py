"""Building Lightning objects from configs, loading checkpoints safely, saving figures.

Shared by the train and eval tasks; everything here takes config nodes or plain objects.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, Checkpoint, ModelSummary, ProgressBar
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.strategies import StrategyRegistry
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
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16")


def quiet_expected_warnings() -> None:
    """Silence the Lightning warnings that mlplab's design triggers on every run."""
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def check_arguments(cfg: DictConfig, key: str) -> None:
    """Refuse keys of the ``_target_`` node at ``key`` that its target does not accept.

    Catches typos such as ``+model.widht=64`` before anything is built, with the key's name.
    """
    node = common.get(cfg, key)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    target_name = str(node._target_)
    try:
        target = hydra.utils.get_object(target_name)
        parameters = inspect.signature(target).parameters
    except (ImportError, AttributeError, ValueError, TypeError) as err:
        raise ConfigError(f"{key}._target_", target_name, "cannot be imported") from err
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for name in node:
        if not str(name).startswith("_") and name not in parameters:
            value = OmegaConf.select(node, str(name), throw_on_resolution_failure=False)
            allowed = ", ".join(p for p in parameters if p not in ("self", "params"))
            raise ConfigError(
                f"{key}.{name}", value, f"is not an argument of {target_name} (it takes {allowed})"
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_devices(cfg: DictConfig, key: str) -> None:
    value = common.get(cfg, key)
    allowed = "must be 'auto', an integer >= 1 (or -1 for all) or a list of device indices"
    if value == "auto" or (_is_int(value) and (value >= 1 or value == -1)):
        return
    items = list(value) if OmegaConf.is_list(value) else None
    if not items or not all(_is_int(i) and i >= 0 for i in items):
        raise ConfigError(key, value, allowed)


def _check_limit(cfg: DictConfig, key: str) -> None:
    value = common.get(cfg, key)
    if value is None:
        return
    if _is_int(value) and value >= 1:
        return
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return
    raise ConfigError(key, value, "must be an integer >= 1 (batches), a fraction in (0, 1] or null")


def validate_trainer_config(cfg: DictConfig, key: str = "trainer") -> None:
    """Check the Trainer values of ``cfg.<key>`` before Lightning sees them."""
    node = common.get(cfg, key)
    if not isinstance(node, DictConfig):
        raise ConfigError(key, node, "must be a trainer config (trainer=cpu, gpu, ddp or ddp_sim)")
    accelerator = common.check_choice(cfg, f"{key}.accelerator", ACCELERATORS)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"{key}.accelerator",
            accelerator,
            "no CUDA GPU is visible on this machine; use trainer=cpu, or trainer=ddp_sim to try "
            "data-parallel training on the CPU",
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}.accelerator", accelerator, "MPS is not available here")
    _check_devices(cfg, f"{key}.devices")
    if "strategy" in node:
        common.check_choice(
            cfg, f"{key}.strategy", ("auto", *StrategyRegistry.available_strategies())
        )
    precision = common.get(cfg, f"{key}.precision") if "precision" in node else "32-true"
    if str(precision) not in PRECISIONS or isinstance(precision, bool | float):
        raise ConfigError(f"{key}.precision", precision, f"must be one of {', '.join(PRECISIONS)}")
    common.check_int(cfg, f"{key}.max_epochs", minimum=1)
    if "max_steps" in node:
        common.check_int(cfg, f"{key}.max_steps", minimum=-1)
    deterministic = common.get(cfg, f"{key}.deterministic")
    if not (isinstance(deterministic, bool) or deterministic == "warn"):
        raise ConfigError(f"{key}.deterministic", deterministic, "must be true, false or 'warn'")
    common.check_int(cfg, f"{key}.log_every_n_steps", minimum=1)
    if "check_val_every_n_epoch" in node:
        common.check_int(cfg, f"{key}.check_val_every_n_epoch", minimum=1, optional=True)
    if "num_sanity_val_steps" in node:
        common.check_int(cfg, f"{key}.num_sanity_val_steps", minimum=-1)
    for limit in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if limit in node:
            _check_limit(cfg, f"{key}.{limit}")
    check_arguments(cfg, key)


def validate_callbacks_config(cfg: DictConfig, logged: Iterable[str]) -> None:
    """Check ``cfg.callbacks``: known arguments, and a checkpoint monitor that will be logged."""
    callbacks = cfg.get("callbacks")
    if not callbacks:
        return
    if not isinstance(callbacks, DictConfig):
        raise ConfigError("callbacks", callbacks, "must be a mapping of callback configs or null")
    for name, node in callbacks.items():
        if node is not None and not isinstance(node, DictConfig):
            raise ConfigError(
                f"callbacks.{name}", node, "must be a callback config (with _target_) or null"
            )
        check_arguments(cfg, f"callbacks.{name}")
    checkpoint = callbacks.get("model_checkpoint")
    if not checkpoint:
        return
    if checkpoint.get("monitor") is not None:
        common.check_choice(cfg, "callbacks.model_checkpoint.monitor", sorted(logged))
    if "mode" in checkpoint:
        common.check_choice(cfg, "callbacks.model_checkpoint.mode", ("min", "max"))
    for name, minimum in (("every_n_epochs", 0), ("save_top_k", -1)):
        if name in checkpoint:
            common.check_int(cfg, f"callbacks.model_checkpoint.{name}", minimum, optional=True)


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


def build_logger(cfg: DictConfig | None) -> Logger | None:
    """The logger of ``cfg.logger``, or None for ``logger=none``."""
    if not cfg or "_target_" not in cfg:
        return None
    return hydra.utils.instantiate(cfg)


def build_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Every callback config (a node with ``_target_``) of ``cfg.callbacks``."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values() if node and "_target_" in node]


def build_trainer(cfg: DictConfig, logger: Logger | None, callbacks: list[Callback]) -> pl.Trainer:
    """The Trainer of ``cfg.trainer``; progress bar, summary, checkpoints follow the callbacks."""
    return hydra.utils.instantiate(
        cfg,
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


def log_hparams(logger: Logger | None, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """Record hyper-parameters with the final metrics for TensorBoard's HPARAMS tab.

    Lightning's ``log_hyperparams(params, metrics)`` would also log each metric again as a scalar
    at step 0, next to the real point at the end of training; here the metrics only name the
    columns of the HPARAMS table (their values are the logged ``test/*`` and ``val/*`` scalars).
    Other loggers get the parameters only (``hparams.yaml`` for CSV).
    """
    if logger is None:
        return
    logger.log_hyperparams(params)  # hparams.yaml; no event (default_hp_metric is off)
    writer = tensorboard_of(logger)
    if writer is None or not metrics:
        return
    from torch.utils.tensorboard.summary import hparams

    file_writer = writer._get_file_writer()
    for summary in hparams(params, metrics):
        file_writer.add_summary(summary)
    writer.flush()


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
    """The tutorial's decision map: predictions on a grid_size^2 grid, test points overlaid."""
    from mlplab.viz import plot_decision_map, sample_grid

    grid = sample_grid(grid_size)
    was_training = net.training
    net.eval()
    labels = net(grid).argmax(dim=1)
    net.train(was_training)
    return plot_decision_map(labels, X_test, y_test, M=grid_size, title=title)


def log_figures(figures: dict[str, Figure], output_dir: Path, writer: Any, step: int) -> None:
    """Save each figure as ``<output_dir>/<name>.png`` and log the same PNG to TensorBoard."""
    from mlplab.viz import figure_to_png

    for name, fig in figures.items():
        png = figure_to_png(fig, Path(output_dir) / f"{name}.png")
        if writer is not None:  # one render: the file's bytes are the TensorBoard image
            writer._get_file_writer().add_summary(common.png_summary(f"figures/{name}", png), step)
