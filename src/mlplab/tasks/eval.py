"""mlplab-eval: re-evaluate a training checkpoint on its test split and redraw the decision map.

The checkpoint is loaded with ``weights_only=True``: tensors and plain values only. What built
the run, as its ``hyper_parameters`` record it (class paths and arguments of the datamodule, the
network and the loss), is rebuilt with Hydra once every class path in it is checked: it must
name a LightningDataModule or an ``nn.Module``, as a class or as a function annotated to return
one. No other callable named in a file is ever called.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError, TaskError

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from torch import nn

    from mlplab.models.classifier import Classifier

log = logging.getLogger("mlplab")


def validate_eval_config(cfg: DictConfig) -> Path:
    """Check the eval task's own keys; returns the checkpoint path.

    Raises:
        ConfigError: naming the key, its value and what is allowed; a ``ckpt_path`` that names
            no file is refused here, before the trainer is built.
    """
    wanted = "the path of a .ckpt file from mlplab-train, e.g. <run>/checkpoints/last.ckpt"
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path", "???", f"is required: {wanted}")
    ckpt = common.get(cfg, "ckpt_path")
    if not isinstance(ckpt, str) or not ckpt.strip():
        raise ConfigError("ckpt_path", ckpt, f"must be {wanted}")
    common.check_bool(cfg, "figures")
    common.check_int(cfg, "grid_size", minimum=2, maximum=4000)
    return common.check_checkpoint_file("ckpt_path", ckpt, f"must be {wanted}")


def _builds(obj: Any) -> type | None:
    """The class ``obj`` builds: itself for a class, a function's annotated return class."""
    if isinstance(obj, type):
        return obj
    try:
        hint = typing.get_type_hints(obj).get("return")
    except Exception:  # builtins, unresolvable annotations: not a factory we can vouch for
        return None
    return hint if isinstance(hint, type) else None


def _check_targets(path: Path, part: str, node: Any, kind: type) -> None:
    """Refuse a record naming a class path that does not build ``kind`` (or, nested, a module)."""
    from torch import nn

    if isinstance(node, list):
        for item in node:
            _check_targets(path, part, item, nn.Module)
    if not isinstance(node, Mapping):
        return
    if "_target_" in node:
        target = str(node["_target_"])
        try:
            built = _builds(hydra.utils.get_object(target))
        except Exception as err:
            why = f"its {part} {target!r} cannot be imported ({common.one_line(err)})"
            raise TaskError(f"checkpoint {path}: {why}") from err
        if built is None or not issubclass(built, kind):
            raise TaskError(
                f"checkpoint {path}: refused, its {part} names {target!r}, which is not a "
                f"{kind.__name__} class or a function annotated to return one"
            )
    for value in node.values():
        _check_targets(path, part, value, nn.Module)


def rebuild(path: Path, record: Mapping[str, Any], part: str, kind: type) -> Any:
    """The object ``record[part]`` (``_target_`` and arguments) describes, built with Hydra.

    Raises:
        TaskError: when the record is missing, names anything but a ``kind`` class or factory,
            or its constructor fails.
    """
    node = record.get(part)
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise TaskError(f"checkpoint {path}: not written by mlplab-train (no record of its {part})")
    _check_targets(path, part, node, kind)
    try:
        built = hydra.utils.instantiate(dict(node), _convert_="all")
    except Exception as err:
        cause = err.__cause__ or err
        raise TaskError(
            f"checkpoint {path}: its {part} cannot be rebuilt ({common.one_line(cause)})"
        ) from err
    if not isinstance(built, kind):
        raise TaskError(f"checkpoint {path}: its {part} record builds no {kind.__name__}")
    return built


def classifier_from_checkpoint(
    path: Path, checkpoint: Mapping[str, Any], loss: nn.Module | None = None
) -> tuple[Classifier, pl.LightningDataModule]:
    """Rebuild the trained classifier and its datamodule from what the checkpoint records.

    Args:
        path: The checkpoint file (for messages).
        checkpoint: Its content, loaded with ``weights_only=True``.
        loss: The loss for ``test/loss``; None: the one the run was trained with.
    """
    import pytorch_lightning as pl
    import torch
    from torch import nn

    from mlplab.models.classifier import Classifier
    from mlplab.models.losses import CrossEntropy
    from mlplab.tasks.runtime import check_state_dict

    hparams = checkpoint.get("hyper_parameters") or {}
    record = hparams.get("built_from")
    if not isinstance(record, Mapping):
        raise TaskError(f"checkpoint {path}: not written by mlplab-train (no record of its run)")
    datamodule = rebuild(path, record, "data", pl.LightningDataModule)
    net = rebuild(path, record, "model", nn.Module)
    if loss is None and record.get("loss"):
        loss = rebuild(path, record, "loss", nn.Module)
    elif loss is None:
        log.info("checkpoint records no loss: test/loss uses CrossEntropy")
        loss = CrossEntropy()
    num_classes = hparams.get("num_classes") or record["data"].get("num_classes")
    model = Classifier(net, loss, torch.optim.Adam, num_classes, built_from=record)
    model_keys = model.state_dict()
    saved = {k: v for k, v in checkpoint["state_dict"].items() if k in model_keys}
    check_state_dict(path, saved, model)
    model.load_state_dict(saved)
    return model, datamodule


def evaluate_checkpoint(
    model: Classifier, datamodule: pl.LightningDataModule, trainer: Any
) -> dict[str, float]:
    """Test ``model`` on the datamodule's test split with Lightning; returns the test metrics."""
    trainer.test(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


def _eval_body(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    path = validate_eval_config(cfg)
    from mlplab.data.datamodule import count_samples, loader_tensors
    from mlplab.tasks import runtime

    runtime.quiet_expected_warnings()
    loss = None if cfg.get("loss") is None else common.instantiate(cfg.loss, "loss")
    logger = runtime.build_logger(cfg.get("logger"))
    trainer = runtime.build_trainer(cfg.trainer, logger, [])
    checkpoint = runtime.load_checkpoint(path)
    model, datamodule = classifier_from_checkpoint(path, checkpoint, loss)
    common.settle_gc()
    metrics = evaluate_checkpoint(model, datamodule, trainer)
    metrics["checkpoint_epoch"] = int(checkpoint.get("epoch", -1))
    metrics["checkpoint_global_step"] = int(checkpoint.get("global_step", -1))
    n_test = count_samples(datamodule.test_dataloader())
    print(f"Accuracy on the {n_test} testing samples: {metrics['test/acc']:0.2f}")
    if cfg.figures:
        X_test, y_test = loader_tensors(datamodule.test_dataloader())
        if runtime.is_plane(X_test):
            title = f"{path.name}: test accuracy {metrics['test/acc']:.2f} %"
            figure = runtime.save_decision_map(model.net, X_test, y_test, cfg.grid_size, title)
            figures = {"decision_map": figure}
            runtime.log_figures(figures, output_dir, runtime.tensorboard_of(logger), 0)
        else:
            log.info(
                "no decision map: the inputs have shape %s, not points of the plane", X_test.shape
            )
    if logger is not None:
        logger.save()
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> float | None:
    return common.run_task(cfg, _eval_body)


def main() -> None:
    """Console script ``mlplab-eval``."""
    common.console_main(_hydra_main, "eval")


if __name__ == "__main__":
    from mlplab.tasks.cli import run_main

    run_main(main)
