"""mlplab-eval: re-evaluate a training checkpoint on its test split and redraw the decision map.

The checkpoint is loaded with ``weights_only=True``: it is trusted for tensors and plain values
only. The network, the data and the loss are rebuilt from its plain ``mlplab`` record, never from
pickled objects, and the loss is looked up in a fixed table. As in mlplab-train, Lightning is
imported only once the config checks pass.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError, TaskError

if TYPE_CHECKING:
    import torch

    from mlplab.data.datamodule import SpiralDataModule
    from mlplab.models.classifier import Classifier

log = logging.getLogger("mlplab")


def validate_eval_config(cfg: DictConfig) -> Path:
    """Check the eval config; returns the checkpoint path."""
    wanted = "the path of a .ckpt file from mlplab-train, e.g. <run>/checkpoints/last.ckpt"
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path", "???", f"is required: {wanted}")
    ckpt = common.get(cfg, "ckpt_path")
    if not isinstance(ckpt, str) or not ckpt.strip():
        raise ConfigError("ckpt_path", ckpt, f"must be {wanted}")
    common.check_bool(cfg, "figures")
    common.check_int(cfg, "grid_size", minimum=2, maximum=4000)
    from mlplab.tasks import runtime

    runtime.validate_trainer_config(cfg)
    if cfg.get("loss") is not None:
        runtime.check_arguments(cfg, "loss")
    return Path(ckpt).expanduser()


def training_loss(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """The loss the checkpoint was trained with, from a fixed table (else the tutorial's own)."""
    from torch import nn

    from mlplab.models.losses import CrossEntropy

    losses: dict[str, type[nn.Module]] = {
        "mlplab.models.losses.CrossEntropy": CrossEntropy,
        "torch.nn.modules.loss.CrossEntropyLoss": nn.CrossEntropyLoss,
    }
    name = (checkpoint.get("mlplab") or {}).get("loss")
    if name not in losses:
        log.info("checkpoint names no known loss (%r): test/loss uses CrossEntropy", name)
        return CrossEntropy()
    return losses[name]()


def classifier_from_checkpoint(
    path: Path, checkpoint: dict[str, Any], loss: torch.nn.Module
) -> tuple[Classifier, SpiralDataModule]:
    """Rebuild the trained classifier and its datamodule from a checkpoint's plain records."""
    import torch

    from mlplab.data.datamodule import SpiralDataModule
    from mlplab.models.classifier import Classifier
    from mlplab.models.mlp import MLP
    from mlplab.tasks.runtime import check_state_dict

    record = checkpoint.get("mlplab")
    data_hparams = checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(record, dict) or not isinstance(record.get("net"), dict) or not data_hparams:
        raise TaskError(f"checkpoint {path}: not written by mlplab-train (no mlplab record)")
    try:
        net = MLP(**record["net"])
        datamodule = SpiralDataModule(**dict(data_hparams))
    except (TypeError, ValueError, KeyError) as err:
        raise TaskError(f"checkpoint {path}: its mlplab record is invalid ({err})") from err
    model = Classifier(net, loss, torch.optim.Adam, num_classes=datamodule.hparams.num_classes)
    model_keys = model.state_dict()
    saved = {k: v for k, v in checkpoint["state_dict"].items() if k in model_keys}
    check_state_dict(path, saved, model)
    model.load_state_dict(saved)
    return model, datamodule


def evaluate_checkpoint(
    model: Classifier, datamodule: SpiralDataModule, trainer: Any
) -> dict[str, float]:
    """Test ``model`` on the datamodule's test split with Lightning; returns the test metrics."""
    trainer.test(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


def _eval_body(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    path = validate_eval_config(cfg)
    from mlplab.tasks import runtime

    runtime.quiet_expected_warnings()
    checkpoint = runtime.load_checkpoint(path)
    loss = (
        training_loss(checkpoint) if cfg.get("loss") is None else hydra.utils.instantiate(cfg.loss)
    )
    model, datamodule = classifier_from_checkpoint(path, checkpoint, loss)
    logger = runtime.build_logger(cfg.get("logger"))
    trainer = runtime.build_trainer(cfg.trainer, logger, [])
    common.settle_gc()
    metrics = evaluate_checkpoint(model, datamodule, trainer)
    metrics["checkpoint_epoch"] = int(checkpoint.get("epoch", -1))
    metrics["checkpoint_global_step"] = int(checkpoint.get("global_step", -1))
    print(f"Accuracy on the {len(datamodule.X_test)} testing samples: {metrics['test/acc']:0.2f}")
    if cfg.figures:
        decision_map = runtime.save_decision_map(
            model.net,
            datamodule.X_test,
            datamodule.y_test,
            cfg.grid_size,
            title=f"{path.name}: test accuracy {metrics['test/acc']:.2f} %",
        )
        figures = {"decision_map": decision_map}
        runtime.log_figures(figures, output_dir, runtime.tensorboard_of(logger), 0)
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
