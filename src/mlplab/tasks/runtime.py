"""Building Lightning objects from configs, loading checkpoints safely, saving figures.

Shared by the train and eval tasks; everything here takes config nodes or plain objects.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from matplotlib.figure import Figure
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ModelSummary, ProgressBar
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torch import Tensor, nn

from mlplab.tasks.common import TaskError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that is then renamed: a kill never leaves half a file."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


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
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        enable_model_summary=any(isinstance(c, ModelSummary) for c in callbacks),
    )


def tensorboard_of(logger: Logger | None) -> Any:
    """The SummaryWriter behind a TensorBoard logger, else None."""
    return logger.experiment if isinstance(logger, TensorBoardLogger) else None


def load_checkpoint(path: Path, check_only: bool = False) -> dict[str, Any] | Path:
    """Load a Lightning checkpoint with ``weights_only=True``, or fail with one clear line.

    Args:
        path: The ``.ckpt`` file.
        check_only: Return the path after checking instead of the loaded dict.

    Raises:
        TaskError: naming the file and what is wrong (missing, truncated, not a checkpoint, or
            holding objects other than tensors and plain containers).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskError(f"checkpoint {path}: no such file")
    if not zipfile.is_zipfile(path):  # torch.save's format is a zip archive
        raise TaskError(f"checkpoint {path}: not a PyTorch checkpoint (truncated or corrupted)")
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" not in first.lower():
            raise TaskError(f"checkpoint {path}: unreadable (truncated or corrupted)") from err
        raise TaskError(
            f"checkpoint {path}: refused, it holds pickled objects other than tensors and plain "
            "data, which are never loaded (weights_only=True)"
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
    """Save each figure as ``<output_dir>/<name>.png`` and log it to TensorBoard if asked."""
    from mlplab.viz import figure_to_array, figure_to_png

    for name, fig in figures.items():
        figure_to_png(fig, Path(output_dir) / f"{name}.png")
        if writer is not None:
            writer.add_image(f"figures/{name}", figure_to_array(fig), step, dataformats="HWC")
