"""mlplab-train: fit the spiral MLP with Lightning, test it, write metrics.json and figures."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from mlplab.data.datamodule import SpiralDataModule
from mlplab.models.classifier import SpiralClassifier, evaluate
from mlplab.models.mlp import MLP, parse_activation
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError, TaskError
from mlplab.tasks.runtime import (
    build_callbacks,
    build_logger,
    build_trainer,
    check_state_dict,
    load_checkpoint,
    log_figures,
    save_decision_map,
    tensorboard_of,
)

log = logging.getLogger("mlplab")


def validate_train_config(cfg: DictConfig) -> None:
    """Check every value the training run uses before anything is built."""
    common.check_int(cfg, "seed", minimum=0)
    common.check_int(cfg, "data.num_classes", minimum=2)
    common.check_float(cfg, "data.sigma", low=0.0)
    common.check_int(cfg, "data.points_per_class", minimum=1)
    common.check_float(cfg, "data.test_fraction", low=0.0, high=1.0, low_open=True, high_open=True)
    common.check_float(cfg, "data.val_fraction", low=0.0, high=1.0, high_open=True)
    common.check_int(cfg, "data.batch_size", minimum=1)
    common.check_int(cfg, "data.steps_per_block", minimum=1, optional=True)
    common.check_int(cfg, "data.eval_batch_size", minimum=1, optional=True)
    common.check_with(cfg, "model.activation", parse_activation)
    common.check_int(cfg, "model.in_features", minimum=1)
    common.check_int(cfg, "model.width", minimum=1)
    common.check_int(cfg, "model.depth", minimum=0)
    common.check_int_list(cfg, "model.hidden_units", optional=True)
    if "param_budget" in cfg.model:
        common.check_int(cfg, "model.param_budget", minimum=1, optional=True)
    common.check_float(cfg, "optimizer.lr", low=0.0, low_open=True)
    common.check_int(cfg, "trainer.max_epochs", minimum=1)
    common.check_int(cfg, "grid_size", minimum=2, maximum=4000)
    common.check_bool(cfg, "test")
    common.check_bool(cfg, "figures")
    ckpt = common.get(cfg, "ckpt_path")
    if ckpt is not None and not isinstance(ckpt, str):
        raise ConfigError("ckpt_path", ckpt, "must be a path to a .ckpt file, 'last' or null")


def build_model(cfg: DictConfig) -> SpiralClassifier:
    """The LightningModule: the MLP from ``cfg.model``, the loss and optimizer from their groups."""
    net = hydra.utils.instantiate(cfg.model)
    loss = hydra.utils.instantiate(cfg.loss)
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    return SpiralClassifier(net, loss, optimizer, num_classes=cfg.data.num_classes)


def hparams_of(cfg: DictConfig, net: MLP) -> dict[str, Any]:
    """The hyper-parameters shown in TensorBoard's HPARAMS tab."""
    return {
        "model/width": max(net.hidden_units, default=0),
        "model/depth": len(net.hidden_units),
        "model/hidden_units": str(net.hidden_units),
        "model/activation": str(cfg.model.activation),
        "model/params": sum(p.numel() for p in net.parameters()),
        "loss": str(cfg.loss._target_).rsplit(".", 1)[-1],
        "optimizer": str(cfg.optimizer._target_).rsplit(".", 1)[-1],
        "optimizer/lr": float(cfg.optimizer.lr),
        "data/batch_size": int(cfg.data.batch_size),
        "seed": int(cfg.seed),
    }


def train(
    datamodule: SpiralDataModule,
    model: SpiralClassifier,
    trainer: pl.Trainer,
    *,
    ckpt_path: str | None = None,
    run_test: bool = True,
) -> dict[str, float]:
    """Fit, optionally test, and measure the tutorial's train/test accuracies.

    Returns:
        Final metrics: ``train/acc`` and ``train/loss`` are the eval-mode pass over the whole
        training split (the tutorial's "Accuracy on the N training samples"), ``test/*`` from
        ``trainer.test``, ``val/*`` from the last validation epoch, and ``fit_time_s``.
    """
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics: dict[str, float] = {"fit_time_s": round(time.perf_counter() - started, 4)}
    metrics.update(
        {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    )
    if run_test:
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        )
    train_loss, train_acc = evaluate(
        model.net, datamodule.X_train, datamodule.y_train, model.loss_fn
    )
    metrics["train/loss"], metrics["train/acc"] = train_loss, train_acc
    metrics["global_step"] = trainer.global_step
    metrics["epochs"] = trainer.current_epoch
    return metrics


def _train_body(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    validate_train_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: SpiralDataModule = hydra.utils.instantiate(cfg.data)
    model = build_model(cfg)
    ckpt_path = cfg.ckpt_path
    if ckpt_path not in (None, "last"):
        checkpoint = load_checkpoint(Path(ckpt_path))
        check_state_dict(Path(ckpt_path), checkpoint["state_dict"], model)
    logger = build_logger(cfg.get("logger"))
    trainer = build_trainer(cfg.trainer, logger, build_callbacks(cfg.get("callbacks")))
    metrics = train(datamodule, model, trainer, ckpt_path=ckpt_path, run_test=cfg.test)
    if not trainer.is_global_zero:
        return metrics
    n_train, n_test = len(datamodule.X_train), len(datamodule.X_test)
    print(f"Accuracy on the {n_train} training samples: {metrics['train/acc']:0.2f}")
    if "test/acc" in metrics:
        print(f"Accuracy on the {n_test} testing samples: {metrics['test/acc']:0.2f}")
    writer = tensorboard_of(logger)
    if cfg.figures:
        figures = {
            "decision_map": save_decision_map(
                model.net,
                datamodule.X_test,
                datamodule.y_test,
                cfg.grid_size,
                title=f"test accuracy {metrics.get('test/acc', float('nan')):.2f} %",
            ),
        }
        from mlplab.viz import plot_training_loss

        figures["training_loss"] = plot_training_loss(model.training_losses, title="Training loss")
        log_figures(figures, output_dir, writer, trainer.global_step)
    if logger is not None:
        final = {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))}
        logger.log_hyperparams(hparams_of(cfg, model.net), metrics=final or None)
        logger.save()
    if not cfg.test and "val/acc" not in metrics:
        log.info("test=false and no validation split: only training metrics are reported")
    if trainer.current_epoch == 0 and trainer.global_step == 0:
        raise TaskError("training ran no optimizer step; check trainer.max_epochs and limits")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    return common.run_task(cfg, _train_body)


def main() -> None:
    """Console script ``mlplab-train``."""
    common.console_main(_hydra_main, "train")


if __name__ == "__main__":
    main()
