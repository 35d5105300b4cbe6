"""mlplab-eval: re-evaluate a training checkpoint on its test split and redraw the decision map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from mlplab.data.datamodule import SpiralDataModule
from mlplab.models.classifier import SpiralClassifier
from mlplab.models.mlp import MLP
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError, TaskError
from mlplab.tasks.runtime import (
    build_logger,
    build_trainer,
    check_state_dict,
    load_checkpoint,
    log_figures,
    save_decision_map,
    tensorboard_of,
)


def validate_eval_config(cfg: DictConfig) -> Path:
    """Check the eval config; returns the checkpoint path."""
    ckpt = common.get(cfg, "ckpt_path")
    if not isinstance(ckpt, str) or not ckpt:
        raise ConfigError("ckpt_path", ckpt, "must be the path of a .ckpt file from mlplab-train")
    common.check_bool(cfg, "figures")
    common.check_int(cfg, "grid_size", minimum=2, maximum=4000)
    return Path(ckpt)


def classifier_from_checkpoint(
    path: Path, checkpoint: dict[str, Any], loss: torch.nn.Module
) -> tuple[SpiralClassifier, SpiralDataModule]:
    """Rebuild the trained classifier and its datamodule from a checkpoint's plain records."""
    record = checkpoint.get("mlplab")
    data_hparams = checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(record, dict) or not isinstance(record.get("net"), dict) or not data_hparams:
        raise TaskError(f"checkpoint {path}: not written by mlplab-train (no mlplab record)")
    try:
        net = MLP(**record["net"])
        datamodule = SpiralDataModule(**dict(data_hparams))
    except (TypeError, ValueError) as err:
        raise TaskError(f"checkpoint {path}: its mlplab record is invalid ({err})") from err
    model = SpiralClassifier(
        net, loss, torch.optim.Adam, num_classes=datamodule.hparams.num_classes
    )
    model_keys = model.state_dict()
    saved = {k: v for k, v in checkpoint["state_dict"].items() if k in model_keys}
    check_state_dict(path, saved, model)
    model.load_state_dict(saved)
    return model, datamodule


def evaluate_checkpoint(
    model: SpiralClassifier, datamodule: SpiralDataModule, trainer: Any
) -> dict[str, float]:
    """Test ``model`` on the datamodule's test split with Lightning; returns the test metrics."""
    trainer.test(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


def _eval_body(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    path = validate_eval_config(cfg)
    checkpoint = load_checkpoint(path)
    model, datamodule = classifier_from_checkpoint(
        path, checkpoint, hydra.utils.instantiate(cfg.loss)
    )
    logger = build_logger(cfg.get("logger"))
    trainer = build_trainer(cfg.trainer, logger, [])
    metrics = evaluate_checkpoint(model, datamodule, trainer)
    metrics["checkpoint_epoch"] = int(checkpoint.get("epoch", -1))
    metrics["checkpoint_global_step"] = int(checkpoint.get("global_step", -1))
    print(f"Accuracy on the {len(datamodule.X_test)} testing samples: {metrics['test/acc']:0.2f}")
    if cfg.figures:
        decision_map = save_decision_map(
            model.net,
            datamodule.X_test,
            datamodule.y_test,
            cfg.grid_size,
            title=f"{path.name}: test accuracy {metrics['test/acc']:.2f} %",
        )
        log_figures({"decision_map": decision_map}, output_dir, tensorboard_of(logger), 0)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> float | None:
    return common.run_task(cfg, _eval_body)


def main() -> None:
    """Console script ``mlplab-eval``."""
    common.console_main(_hydra_main, "eval")


if __name__ == "__main__":
    main()
