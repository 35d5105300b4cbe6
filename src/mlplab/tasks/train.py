"""mlplab-train: fit the spiral MLP with Lightning, test it, write metrics.json and figures.

Lightning and the task's other heavy modules are imported only once the config checks pass, so a
bad value is refused in about two seconds instead of six.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from mlplab.models.mlp import parse_activation
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError, TaskError

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from mlplab.data.datamodule import SpiralDataModule
    from mlplab.models.classifier import Classifier
    from mlplab.models.mlp import MLP

log = logging.getLogger("mlplab")

# The spiral's points are 2-D.
IN_FEATURES = 2
# Data settings that make a checkpoint's training split what it is: a resume must keep them.
DATA_IDENTITY = (
    "num_classes",
    "sigma",
    "points_per_class",
    "test_fraction",
    "val_fraction",
    "seed",
)


def validate_data_config(cfg: DictConfig) -> None:
    """Check ``cfg.data``, including that every split it implies has samples."""
    num_classes = common.check_int(cfg, "data.num_classes", minimum=2)
    common.check_float(cfg, "data.sigma", low=0.0)
    points = common.check_int(cfg, "data.points_per_class", minimum=1)
    test_fraction = common.check_float(
        cfg, "data.test_fraction", low=0.0, high=1.0, low_open=True, high_open=True
    )
    val_fraction = common.check_float(cfg, "data.val_fraction", low=0.0, high=1.0, high_open=True)
    n_samples = num_classes * points
    n_test = int(test_fraction * n_samples)
    if not 1 <= n_test < n_samples:
        raise ConfigError(
            "data.test_fraction",
            test_fraction,
            f"leaves an empty test or training split of the {n_samples} samples "
            "(data.num_classes x data.points_per_class)",
        )
    n_val = int(val_fraction * (n_samples - n_test))
    if val_fraction > 0 and not 1 <= n_val < n_samples - n_test:
        raise ConfigError(
            "data.val_fraction",
            val_fraction,
            f"leaves an empty validation or training split of {n_samples - n_test} samples",
        )
    common.check_int(cfg, "data.batch_size", minimum=1)
    common.check_int(cfg, "data.eval_batch_size", minimum=1, optional=True)
    common.check_int(cfg, "data.seed", minimum=0)


def validate_model_config(cfg: DictConfig) -> None:
    """Check ``cfg.model``: sizes, the activation spec, and that it fits the data."""
    common.check_with(cfg, "model.activation", parse_activation)
    if common.check_int(cfg, "model.in_features", minimum=1) != IN_FEATURES:
        raise ConfigError(
            "model.in_features", cfg.model.in_features, "must be 2: the spiral's points are 2-D"
        )
    num_classes = cfg.data.num_classes
    if common.check_int(cfg, "model.out_features", minimum=1) != num_classes:
        raise ConfigError(
            "model.out_features",
            cfg.model.out_features,
            f"must equal data.num_classes ({num_classes}): one logit per class",
        )
    common.check_int(cfg, "model.width", minimum=1)
    depth = common.check_int(cfg, "model.depth", minimum=0)
    common.check_int_list(cfg, "model.hidden_units", optional=True)
    if "param_budget" in cfg.model:
        budget = common.check_int(cfg, "model.param_budget", minimum=1, optional=True)
        if budget is not None and depth < 1 and cfg.model.hidden_units is None:
            raise ConfigError("model.depth", depth, "must be >= 1 with a model.param_budget")


def validate_optimizer_config(cfg: DictConfig) -> None:
    """Check ``cfg.optimizer``'s learning rate and the usual regularisation knobs."""
    common.check_float(cfg, "optimizer.lr", low=0.0, low_open=True)
    optimizer = cfg.optimizer
    if "weight_decay" in optimizer:
        common.check_float(cfg, "optimizer.weight_decay", low=0.0)
    if "momentum" in optimizer:
        common.check_float(cfg, "optimizer.momentum", low=0.0, high=1.0, high_open=True)
    if "betas" in optimizer:
        betas = common.get(cfg, "optimizer.betas")
        ok = len(betas) == 2 and all(
            isinstance(b, float | int) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas
        )
        if not ok:
            raise ConfigError("optimizer.betas", betas, "must be two numbers in [0, 1)")


def logged_metrics(cfg: DictConfig) -> list[str]:
    """The epoch-level metrics a run logs (what a checkpoint callback may monitor)."""
    metrics = ["train/loss", "train/acc"]
    if cfg.data.val_fraction > 0:
        metrics += ["val/loss", "val/acc"]
    return metrics


def validate_train_config(cfg: DictConfig) -> None:
    """Check every value the training run uses before anything is built.

    Raises:
        ConfigError: naming the first bad key, its value and what is allowed.
    """
    common.check_int(cfg, "seed", minimum=0)
    validate_data_config(cfg)
    validate_model_config(cfg)
    validate_optimizer_config(cfg)
    common.check_int(cfg, "grid_size", minimum=2, maximum=4000)
    common.check_bool(cfg, "test")
    common.check_bool(cfg, "figures")
    common.check_threads(cfg)
    ckpt = common.get(cfg, "ckpt_path")
    if ckpt is not None and (not isinstance(ckpt, str) or not ckpt.strip()):
        raise ConfigError("ckpt_path", ckpt, "must be a path to a .ckpt file, 'last' or null")
    from mlplab.tasks import runtime

    runtime.validate_trainer_config(cfg)
    runtime.validate_callbacks_config(cfg, logged_metrics(cfg))
    for group in ("data", "model", "loss", "optimizer", "scheduler"):
        runtime.check_arguments(cfg, group)


def build_model(cfg: DictConfig) -> Classifier:
    """The LightningModule: the network of ``cfg.model``; loss, optimizer, scheduler likewise."""
    from mlplab.models.classifier import Classifier

    net = hydra.utils.instantiate(cfg.model)
    loss = hydra.utils.instantiate(cfg.loss)
    optimizer = hydra.utils.instantiate(cfg.optimizer)
    scheduler_cfg = cfg.get("scheduler")
    scheduler = (
        hydra.utils.instantiate(scheduler_cfg)
        if scheduler_cfg and "_target_" in scheduler_cfg
        else None
    )
    return Classifier(net, loss, optimizer, num_classes=cfg.data.num_classes, scheduler=scheduler)


def build_run(cfg: DictConfig) -> tuple[SpiralDataModule, Classifier]:
    """Seed everything from ``cfg.seed``, then build the datamodule and the model.

    The MLP is the first thing drawn from the seeded global RNG, as in the tutorial's
    ``set_seed(2021); net = Net(...)``, so ``seed=2021`` gives the tutorial's initial weights.
    """
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: SpiralDataModule = hydra.utils.instantiate(cfg.data)
    return datamodule, build_model(cfg)


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


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def resume_path(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``cfg.ckpt_path``, with ``last`` meaning this run folder's.

    Lightning's own ``"last"`` silently starts from scratch when it finds no checkpoint, and a
    new run folder never has one; here it must exist, or the run stops with a clear line. In a
    multirun, a job folder without one starts from scratch: that is how a sweep is resumed
    (``hydra.sweep.dir=<multirun folder> ckpt_path=last``), jobs that never started included.
    """
    ckpt_path = cfg.ckpt_path
    if ckpt_path is None:
        return None
    if ckpt_path != "last":
        return Path(ckpt_path).expanduser().absolute()
    callbacks = cfg.get("callbacks") or {}
    dirpath = (callbacks.get("model_checkpoint") or {}).get("dirpath")
    path = Path(dirpath or output_dir / "checkpoints") / "last.ckpt"
    if path.is_file():
        return path
    if in_multirun():
        log.info("ckpt_path=last: no %s yet, this job starts from scratch", path)
        return None
    raise ConfigError(
        "ckpt_path",
        "last",
        f"there is no {path} in this run's folder; resume a run in its own folder with "
        "hydra.run.dir=<run folder> ckpt_path=last, or pass "
        "ckpt_path=<run folder>/checkpoints/last.ckpt",
    )


def _differences(
    checkpoint: dict[str, Any], datamodule: SpiralDataModule, model: Classifier
) -> Iterator[tuple[str, Any, Any]]:
    """(key, value in the checkpoint, value in this run) for each setting a resume must keep."""
    saved_data = checkpoint.get("datamodule_hyper_parameters") or {}
    for key in DATA_IDENTITY:
        if key in saved_data:
            yield f"data.{key}", saved_data[key], datamodule.hparams[key]
    record = checkpoint.get("mlplab") or {}
    saved_net = record.get("net") or {}
    net = model.net.config() if hasattr(model.net, "config") else {}
    for key in ("activation", "hidden_units"):
        if key in saved_net and key in net:
            yield f"model.{key}", saved_net[key], net[key]
    loss = type(model.loss_fn)
    if record.get("loss"):
        yield "loss", record["loss"], f"{loss.__module__}.{loss.__qualname__}"
    states = checkpoint.get("optimizer_states") or []
    if states and states[0].get("param_groups"):
        saved_group = states[0]["param_groups"][0]
        group = model.configure_optimizers().param_groups[0]
        for key in ("lr", "weight_decay", "momentum", "betas"):
            if key in saved_group or key in group:
                saved_value = saved_group.get(key, "absent (another optimizer)")
                value = group.get(key, "absent (another optimizer)")
                yield f"optimizer.{key}", _plain(saved_value), _plain(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_resume(
    path: Path, checkpoint: dict[str, Any], datamodule: SpiralDataModule, model: Classifier
) -> None:
    """Refuse to resume a checkpoint trained with other settings: the result would be no one's run.

    A resume continues the checkpoint's run: its data, network, loss and optimizer (Lightning
    restores the optimizer's own settings, so a new ``optimizer.lr`` would be ignored). What a
    resume may change is how long it runs (``trainer.max_epochs``) and how it is logged.
    """
    for key, saved, now in _differences(checkpoint, datamodule, model):
        if saved != now:
            raise TaskError(
                f"checkpoint {path}: trained with {key}={saved!r} but this run has {key}={now!r}; "
                "resume with the checkpoint's settings"
            )


def train(
    datamodule: SpiralDataModule,
    model: Classifier,
    trainer: pl.Trainer,
    *,
    ckpt_path: str | Path | None = None,
    run_test: bool = True,
) -> dict[str, float]:
    """Fit, optionally test, and measure the tutorial's train/test accuracies.

    Returns:
        Final metrics: ``train/acc`` and ``train/loss`` are the eval-mode pass over the whole
        training split (the tutorial's "Accuracy on the N training samples"), ``test/*`` from
        ``trainer.test``, ``val/*`` from the last validation epoch, and ``fit_time_s``.

    Raises:
        TaskError: when the training loss becomes NaN or infinite.
    """
    from mlplab.models.classifier import DivergedError, evaluate

    started = time.perf_counter()
    ckpt = None if ckpt_path is None else str(ckpt_path)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except DivergedError as err:
        raise TaskError(str(err)) from err
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
    from mlplab.tasks import runtime

    runtime.quiet_expected_warnings()
    datamodule, model = build_run(cfg)
    threads = runtime.set_torch_threads(cfg.threads, runtime.count_parameters(model))
    log.info("torch intra-op threads: %d (threads=%s)", threads, cfg.threads)
    ckpt_path = resume_path(cfg, output_dir)
    if ckpt_path is not None:
        checkpoint = runtime.load_checkpoint(ckpt_path)
        runtime.check_state_dict(ckpt_path, checkpoint["state_dict"], model)
        check_resume(ckpt_path, checkpoint, datamodule, model)
        log.info(
            "resuming from %s (after epoch %d, step %d)",
            ckpt_path,
            checkpoint.get("epoch", -1),
            checkpoint.get("global_step", -1),
        )
    with runtime.distributed_job():
        return _fit_and_record(cfg, output_dir, datamodule, model, ckpt_path)


def _fit_and_record(
    cfg: DictConfig,
    output_dir: Path,
    datamodule: SpiralDataModule,
    model: Classifier,
    ckpt_path: Path | None,
) -> dict[str, float]:
    """Fit and test; on rank 0, print the tutorial's lines and write figures and HPARAMS."""
    from mlplab.tasks import runtime

    logger = runtime.build_logger(cfg.get("logger"))
    callbacks = runtime.build_callbacks(cfg.get("callbacks"))
    trainer = runtime.build_trainer(cfg.trainer, logger, callbacks)
    runtime.pass_job_to_ranks()
    common.settle_gc()
    metrics = train(datamodule, model, trainer, ckpt_path=ckpt_path, run_test=cfg.test)
    if not trainer.is_global_zero:
        return metrics
    if trainer.global_step == 0:
        raise TaskError(
            "training ran no optimizer step; check trainer.max_epochs (a resumed checkpoint may "
            "have reached it already) and trainer.limit_train_batches"
        )
    n_train, n_test = len(datamodule.X_train), len(datamodule.X_test)
    print(f"Accuracy on the {n_train} training samples: {metrics['train/acc']:0.2f}")
    if "test/acc" in metrics:
        print(f"Accuracy on the {n_test} testing samples: {metrics['test/acc']:0.2f}")
    if trainer.fast_dev_run:  # Lightning's smoke test writes nothing; neither does mlplab
        log.info("fast_dev_run: no figures and no HPARAMS entry")
        return metrics
    if cfg.figures:
        _save_figures(cfg, datamodule, model, metrics, output_dir, logger, trainer.global_step)
    final = {k: v for k, v in metrics.items() if k.startswith(("test/", "val/"))}
    runtime.log_hparams(logger, hparams_of(cfg, model.net), final)
    if logger is not None:
        logger.save()
    if not cfg.test and "val/acc" not in metrics:
        log.info("test=false and no validation split: only training metrics are reported")
    return metrics


def _save_figures(
    cfg: DictConfig,
    datamodule: SpiralDataModule,
    model: Classifier,
    metrics: dict[str, float],
    output_dir: Path,
    logger: Any,
    step: int,
) -> None:
    """decision_map.png and training_loss.png in the run folder, and in TensorBoard."""
    from mlplab.tasks.runtime import log_figures, save_decision_map, tensorboard_of
    from mlplab.viz import plot_training_loss

    title = f"test accuracy {metrics['test/acc']:.2f} %" if "test/acc" in metrics else None
    figures = {
        "decision_map": save_decision_map(
            model.net, datamodule.X_test, datamodule.y_test, cfg.grid_size, title=title
        ),
        "training_loss": plot_training_loss(model.training_losses, title="Training loss"),
    }
    log_figures(figures, output_dir, tensorboard_of(logger), step)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    return common.run_task(cfg, _train_body)


def main() -> None:
    """Console script ``mlplab-train``."""
    common.console_main(_hydra_main, "train")


if __name__ == "__main__":
    from mlplab.tasks.cli import run_main

    run_main(main)
