"""The single-run training core as stacked sweeps use it: the one door into it.

Every call the stacked launcher makes into ``tasks/train.py``, ``tasks/runtime.py``,
``tasks/common.py`` and into the single run's LightningModule and datamodule goes through this
module, so a change of the single-run core is re-wired here and nowhere else. Each function
says what it stands for; the stacked code never reads a single-run object's attributes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import Tensor, nn

from mlplab.tasks import common, train
from mlplab.tasks.common import ConfigError, Interrupted, TaskError

__all__ = ["ConfigError", "Interrupted", "SingleRun", "TaskError"]


@dataclass
class SingleRun:
    """What a single run of a job builds before fitting: its datamodule and LightningModule."""

    datamodule: Any
    model: Any

    @property
    def net(self) -> nn.Module:
        """The network."""
        return self.model.net

    @property
    def loss(self) -> nn.Module:
        """The training criterion."""
        return self.model.loss_fn

    @property
    def optimizer(self) -> Callable[..., Any]:
        """The optimizer factory (``functools.partial`` of a torch.optim class)."""
        return self.model.optimizer_factory

    @property
    def record(self) -> dict[str, Any]:
        """What built the run (``train.built_from``), as its checkpoint records it."""
        return self.model.hparams.built_from

    def splits(self) -> dict[str, Tensor]:
        """The job's data split: ``X_train, y_train, X_val, y_val, X_test, y_test``."""
        dm = self.datamodule
        dm.setup("fit")
        return {
            "X_train": dm.X_train,
            "y_train": dm.y_train,
            "X_val": dm.X_val,
            "y_val": dm.y_val,
            "X_test": dm.X_test,
            "y_test": dm.y_test,
        }

    @property
    def order_seed(self) -> int:
        """The seed of the training order, ``epoch_seed(order_seed, epoch)``."""
        return int(self.datamodule.seed)

    @property
    def batch_size(self) -> int:
        """Training minibatch size."""
        return int(self.datamodule.batch_size)

    @property
    def eval_batch_size(self) -> int | None:
        """Validation and test minibatch size (None: one batch)."""
        return self.datamodule.eval_batch_size

    @property
    def num_classes(self) -> int:
        """Classes of the data."""
        return int(self.model.num_classes)


def check_task_config(cfg: DictConfig) -> None:
    """Check the train task's own keys as ``mlplab-train`` does (``ConfigError`` naming the key)."""
    train.check_task_config(cfg)


def build(cfg: DictConfig) -> SingleRun:
    """Seed everything from ``cfg.seed`` and build the datamodule and the model, as a single run.

    Raises:
        ConfigError: the constructor's refusal of a value, as the single run reports it.
    """
    datamodule, model = train.build_run(cfg)
    return SingleRun(datamodule, model)


def stackable_data(run: SingleRun) -> bool:
    """Whether the run's data are in-memory tensors split once (mlplab's TensorDataModule)."""
    from mlplab.data.datamodule import TensorDataModule

    return isinstance(run.datamodule, TensorDataModule)


def own_checkpoint(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The job's own checkpoint to resume from (``ckpt_path``), or None."""
    return train.resume_path(cfg, output_dir)


def check_resume(path: Path, saved_record: Mapping[str, Any], run: SingleRun) -> None:
    """Refuse to resume a member whose saved record (``built_from``) is not this run's.

    Raises:
        TaskError: naming the first setting that differs, as a single run's resume does.
    """
    train.check_resume(path, {"hyper_parameters": {"built_from": saved_record}}, run.record)


def quiet_expected_warnings() -> None:
    """The single run's filter of Lightning warnings it triggers on purpose."""
    from mlplab.tasks import runtime

    runtime.quiet_expected_warnings()


def settle_gc() -> None:
    """Start-up is over: the garbage collector back on (see ``common.settle_gc``)."""
    common.settle_gc()


def instantiate(node: Any, key: str, **kwargs: Any) -> Any:
    """A config node built as the single run builds it (one-line ``ConfigError`` on failure)."""
    return common.instantiate(node, key, **kwargs)


def build_logger(cfg: DictConfig) -> Any:
    """The job's logger (None for ``logger=none``)."""
    from mlplab.tasks import runtime

    return runtime.build_logger(cfg.get("logger"))


def build_trainer(trainer_cfg: DictConfig, logger: Any, callbacks: list[Any]) -> Any:
    """A Trainer as the single run builds it (atomic checkpoint IO included)."""
    from mlplab.tasks import runtime

    return runtime.build_trainer(trainer_cfg, logger, callbacks)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint loaded safely (``weights_only``, CRC checked), or a one-line ``TaskError``."""
    from mlplab.tasks import runtime

    return runtime.load_checkpoint(path)


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write a checkpoint as the single run's Trainer writes it (temporary file, then rename)."""
    from mlplab.tasks import runtime

    runtime.AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically."""
    common.write_json_atomic(path, data)


def run_task(cfg: DictConfig, body: Callable[[DictConfig, Path], Any]) -> float | None:
    """Run a job body inside Hydra's ``run_job``: ``metrics.json``, status, one-line errors."""
    return common.run_task(cfg, body)


def outcome(metrics: dict[str, Any], hparams: dict[str, Any]) -> common.Outcome:
    """A job body's result: its metrics and the hyper-parameters metrics.json records."""
    return common.Outcome(metrics, hparams)


def one_line(err: BaseException) -> str:
    """An error as the single run reports it."""
    return common.one_line(err)


def load_net(run: SingleRun, state: Mapping[str, Tensor]) -> None:
    """Give the single run's network these weights (an MLP state_dict)."""
    run.net.load_state_dict(state)


def test_metrics(trainer: Any, run: SingleRun) -> dict[str, float]:
    """``test/*`` of the run's model on its test split, measured as the single run measures them."""
    trainer.test(run.model, datamodule=run.datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


def train_metrics(run: SingleRun) -> tuple[float, float]:
    """``train/loss``, ``train/acc``: the tutorial's eval-mode pass over the training split."""
    from mlplab.data.datamodule import sequential_loader
    from mlplab.models.classifier import evaluate_batches

    batches = sequential_loader(run.datamodule.train_dataloader())
    loss, acc, _ = evaluate_batches(run.net, batches, run.loss)
    return loss, acc


def hparams(run: SingleRun, seed: int) -> dict[str, Any]:
    """The job's HPARAMS entry and metrics.json ``hparams`` (``train.hparams_of``).

    Inside Hydra's ``run_job`` of the job, so its config-group choices are the job's own.
    """
    return train.hparams_of(run.record, run.net, seed, train.config_choices())


def log_hparams(logger: Any, hparams: dict[str, Any], cfg: DictConfig) -> None:
    """The job's HPARAMS session (start and end) as the single run writes it: ``hparams`` and a
    column per key the job overrides (``cfg``, inside Hydra's ``run_job`` of the job). Its
    metric columns are the scalars the job logs (:func:`log_scalars`)."""
    from mlplab.tasks import runtime

    runtime.log_hparams(logger, hparams, cfg)


def single_run_checkpoint(
    run: SingleRun,
    training_losses: list[float],
    optimizer_state: dict[str, Any],
    shared: Mapping[str, Any],
) -> dict[str, Any]:
    """The checkpoint the single run would have written at the same point of training.

    Lightning's own layout (``Trainer.save_checkpoint``): ``epoch``, ``global_step``,
    ``pytorch-lightning_version`` and ``loops`` from the stacked run's checkpoint (``shared``; a
    stacked run steps once per minibatch like the single run, so its loop counters are the
    single run's), the model's ``state_dict`` and ``on_save_checkpoint`` record, one optimizer
    state, the model's and the datamodule's hyper-parameters (the model's hold ``built_from``,
    what ``mlplab-eval`` and a resume rebuild). Callback states are left out (a resume starts
    the callbacks afresh). ``run``'s network must hold the member's weights already.
    """
    model, dm = run.model, run.datamodule
    model.training_losses = list(training_losses)
    checkpoint: dict[str, Any] = {
        "epoch": shared["epoch"],
        "global_step": shared["global_step"],
        "pytorch-lightning_version": shared["pytorch-lightning_version"],
        "state_dict": model.state_dict(),
        "loops": shared.get("loops", {}),
        "callbacks": {},
        "optimizer_states": [optimizer_state],
        "lr_schedulers": [],
    }
    for obj, prefix in ((model, ""), (dm, "datamodule_")):
        if obj.hparams:
            checkpoint[f"{prefix}hparams_name"] = "kwargs"
            checkpoint[obj.CHECKPOINT_HYPER_PARAMS_KEY] = dict(obj.hparams)
    state = dm.state_dict()
    if state:
        checkpoint[type(dm).__qualname__] = state
    model.on_save_checkpoint(checkpoint)
    return checkpoint


def log_scalars(logger: Any, rows: list[tuple[int, dict[str, float]]]) -> None:
    """Log ``(step, {name: value})`` rows as the single run's logger would log them.

    For TensorBoard, one event per row holding all its values (what ``add_scalar`` writes one
    value at a time, ten times faster for a run's ~600 rows), in the logger's run folder through
    ``dashboard.write_summaries``, as ``runtime.log_hparams`` and ``log_figures`` write; other
    loggers get ``log_metrics``.
    """
    if logger is None:
        return
    from mlplab.tasks import runtime

    writer = runtime.tensorboard_of(logger)
    if writer is None:
        for step, values in rows:
            logger.log_metrics(values, step=step)
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    from mlplab.tasks.dashboard import write_summaries

    summaries = [
        (
            Summary(value=[Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]),
            step,
        )
        for step, values in rows
    ]
    write_summaries(writer.get_logdir(), summaries)


def save_figures(
    cfg: DictConfig,
    run: SingleRun,
    training_losses: list[float],
    metrics: dict[str, float],
    output_dir: Path,
    logger: Any,
    step: int,
) -> None:
    """decision_map.png (2-D inputs) and training_loss.png, drawn by the single run's code."""
    run.model.training_losses = list(training_losses)
    train.save_figures(cfg, run.datamodule, run.model, metrics, output_dir, logger, step)


def print_accuracies(run: SingleRun, metrics: dict[str, float]) -> None:
    """The tutorial's two lines, as ``mlplab-train`` prints them."""
    from mlplab.data.datamodule import count_samples

    dm = run.datamodule
    n_train = count_samples(dm.train_dataloader())
    print(f"Accuracy on the {n_train} training samples: {metrics['train/acc']:0.2f}")
    if "test/acc" in metrics:
        n_test = count_samples(dm.test_dataloader())
        print(f"Accuracy on the {n_test} testing samples: {metrics['test/acc']:0.2f}")


def no_step_error() -> TaskError:
    """The single run's error when a fit made no optimizer step."""
    return TaskError(
        "training ran no optimizer step; check trainer.max_epochs (a resumed checkpoint may "
        "have reached it already) and trainer.limit_train_batches"
    )
