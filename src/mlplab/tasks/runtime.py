"""Building Lightning objects from configs, loading checkpoints safely, saving figures.

Shared by the train and eval tasks; everything here takes config nodes or plain objects.
"""

from __future__ import annotations

import inspect
import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping
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

# Lightning warnings about choices mlplab makes on purpose: one block of minibatches per epoch,
# its own transfer_batch_to_device, no validation split by default, per-step scalars logged by
# the module itself, resuming into a new run folder. Each would otherwise print on every run.
_EXPECTED_WARNINGS = (
    r".*overridden `transfer_batch_to_device`",
    r".*Total length of `list` across ranks is zero",
    r".*smaller than the logging interval",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r".*does not have many workers",
    # A resume into a new run folder: the new folder is the point.
    r".*The dirpath has changed from",
)
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16")
# Trainer options for automatic optimization; SpiralClassifier steps its optimizer itself.
_MANUAL_OPTIMIZATION_DEFAULTS = {"gradient_clip_val": None, "accumulate_grad_batches": 1}


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
    for name, default in _MANUAL_OPTIMIZATION_DEFAULTS.items():
        value = common.get(cfg, f"{key}.{name}") if name in node else default
        if value != default:
            shown = "null" if default is None else default
            raise ConfigError(
                f"{key}.{name}",
                value,
                f"must be {shown}: SpiralClassifier steps its own optimizer (manual optimization)",
            )
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
    if (callbacks.get("last_checkpoint") or {}).get("every_n_epochs") is not None:
        common.check_int(cfg, "callbacks.last_checkpoint.every_n_epochs", minimum=1)
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


class LastCheckpoint(Checkpoint):
    """Write ``<dirpath>/last.ckpt`` at the end of every ``every_n_epochs`` training epochs.

    Lightning's ModelCheckpoint rewrites its last checkpoint only when it also saves a top-k one;
    this writes last.ckpt on its own, through the trainer's checkpoint IO (atomic with
    :class:`AtomicCheckpointIO`), so a killed run resumes from its last finished epoch. As a
    ``Checkpoint`` it runs after the LightningModule's epoch-end hook, like ModelCheckpoint.

    Args:
        dirpath: Folder of ``last.ckpt``.
        every_n_epochs: Save after every this many epochs (and always when training ends).
    """

    FILE_NAME = "last.ckpt"

    def __init__(self, dirpath: str | os.PathLike, every_n_epochs: int = 1) -> None:
        if not _is_int(every_n_epochs) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r} is invalid: it must be >= 1")
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self._saved_at_step: int | None = None

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.dirpath / self.FILE_NAME

    def _save(self, trainer: pl.Trainer) -> None:
        # weights_only=False: the full state (optimizer, loops), what a resume needs.
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_at_step != trainer.global_step:  # stopped between two saves
            self._save(trainer)


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
