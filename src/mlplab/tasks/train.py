"""mlplab-train: fit a classifier with Lightning, test it, write metrics.json and figures.

The task names no dataset's or network's keys: ``cfg.data`` is any LightningDataModule and
``cfg.model`` any ``nn.Module`` factory, built by Hydra; each constructor checks its own
arguments, and :func:`mlplab.tasks.common.instantiate` turns what it raises into one line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlplab import checks
from mlplab.tasks import common
from mlplab.tasks.common import CONF_DIR, ConfigError, TaskError

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from torch import nn

    from mlplab.models.classifier import Classifier

log = logging.getLogger("mlplab")

# The config groups that build a run: recorded in its checkpoint, kept by a resume.
BUILT_FROM = ("data", "model", "loss", "optimizer", "scheduler")


def check_task_config(cfg: DictConfig) -> None:
    """Check the train task's own keys; the datamodule, network, loss, optimizer and trainer
    check their arguments themselves when they are built.

    Raises:
        ConfigError: naming the key, its value and what is allowed.
    """
    common.check_seed(cfg)
    common.check_int(cfg, "grid_size", minimum=2, maximum=4000)
    common.check_bool(cfg, "test")
    common.check_bool(cfg, "figures")
    common.check_threads(cfg)
    ckpt = common.get(cfg, "ckpt_path")
    allowed = "must be a path to a .ckpt file, 'last' or null"
    if ckpt is not None and (not isinstance(ckpt, str) or not ckpt.strip()):
        raise ConfigError("ckpt_path", ckpt, allowed)
    if ckpt is not None and ckpt != "last":  # `last` is looked up in the run's folder later
        common.check_checkpoint_file("ckpt_path", ckpt, allowed)
    check_run_length(cfg)
    # The optimizer is built inside the fit (Lightning's configure_optimizers), where torch's
    # own check of a string lr fails with a TypeError about '<=': checked here instead.
    lr = OmegaConf.select(cfg, "optimizer.lr", default=None)
    if lr is not None and not (checks.is_number(lr) and lr >= 0):
        raise ConfigError("optimizer.lr", lr, "must be a number >= 0")
    check_monitors(cfg)


def check_run_length(cfg: DictConfig) -> None:
    """Refuse a new run that would take no optimizer step (``trainer.max_epochs=0``).

    Lightning reads ``max_epochs=-1`` as no limit on epochs, which ends only by
    ``trainer.max_steps`` or ``trainer.max_time``; ``null`` is its default (1000 epochs unless
    ``max_steps`` is set). A resumed run (``ckpt_path`` set) is not checked here: where its
    checkpoint stands is known only once it is loaded (Lightning refuses a ``max_epochs`` below
    the checkpoint's epoch; at it, the run takes no step and is tested again, as a resumed
    sweep's finished jobs are). Other values (``-2``, ``"ten"``) are left to the Trainer's own
    check, which refuses them.

    Raises:
        ConfigError: ``trainer.max_epochs=0 is invalid: must be >= 1, or -1 ...``.
    """
    if cfg.get("ckpt_path") is not None:
        return
    max_epochs = _trainer_setting(cfg, "max_epochs")
    # 0 and -1 are values the Trainer takes; only with them does a new run take no step.
    if not checks.is_int(max_epochs) or max_epochs not in (0, -1):
        return
    max_steps = _trainer_setting(cfg, "max_steps")
    bounded = (checks.is_int(max_steps) and max_steps >= 1) or (
        _trainer_setting(cfg, "max_time") is not None
    )
    if max_epochs == -1 and bounded:
        return
    raise ConfigError(
        "trainer.max_epochs",
        max_epochs,
        "must be >= 1, or -1 (no limit on epochs) with +trainer.max_steps or "
        "+trainer.max_time set (a new run, without ckpt_path, must train)",
    )


def _trainer_setting(cfg: DictConfig, name: str) -> Any:
    """``cfg.trainer.<name>``, None when absent or unresolvable (the Trainer then says why)."""
    return OmegaConf.select(cfg, f"trainer.{name}", default=None, throw_on_resolution_failure=False)


def logged_metrics(cfg: DictConfig) -> list[str]:
    """The final metrics a run of ``cfg`` reports (:func:`train`), which a sweep may optimize.

    ``train/loss`` and ``train/acc`` always; ``val/loss`` and ``val/acc`` when the datamodule
    has a validation split (its ``has_validation``, else whether it defines
    ``val_dataloader``) and ``trainer.limit_val_batches`` is not 0; ``test/loss`` and
    ``test/acc`` unless ``test=false`` or ``trainer.limit_test_batches=0``. The datamodule is
    built (its constructor checks its arguments; no data is made).

    Raises:
        ConfigError: a datamodule argument or ``test`` is invalid.
    """
    from pytorch_lightning.utilities.model_helpers import is_overridden

    datamodule = common.instantiate(cfg.get("data"), "data")
    validates = getattr(datamodule, "has_validation", None)
    if validates is None:
        validates = is_overridden("val_dataloader", datamodule)
    names = ["train/loss", "train/acc"]
    if validates and OmegaConf.select(cfg, "trainer.limit_val_batches") != 0:
        names += ["val/loss", "val/acc"]
    if common.check_bool(cfg, "test") and OmegaConf.select(cfg, "trainer.limit_test_batches") != 0:
        names += ["test/loss", "test/acc"]
    return names


def check_monitors(cfg: DictConfig) -> None:
    """Refuse a callback that monitors a validation metric of a run that has no validation.

    ``EarlyStopping`` or a ``ModelCheckpoint`` with ``monitor: val/loss`` would otherwise fail
    after the first epoch, with Lightning's message naming neither the callback's key nor the
    split; without a validation loop no ``val/*`` metric is ever logged.

    Raises:
        ConfigError: naming ``callbacks.<name>.monitor``, its value and the split to add.
    """
    callbacks = cfg.get("callbacks")
    if not isinstance(callbacks, DictConfig):
        return
    watched = [
        (name, node.monitor)
        for name, node in callbacks.items()
        if isinstance(node, DictConfig) and str(node.get("monitor") or "").startswith("val/")
    ]
    if not watched or any(m.startswith("val/") for m in logged_metrics(cfg)):
        return
    name, monitor = watched[0]
    raise ConfigError(
        f"callbacks.{name}.monitor",
        monitor,
        "needs a validation split, which this run has not "
        "(data.val_fraction > 0 for spiral; trainer.limit_val_batches not 0)",
    )


def check_optimized_metric(cfg: DictConfig) -> str:
    """Require ``optimized_metric`` to be a metric a run of ``cfg`` reports.

    A sweeper calls this before its first job (``hydra.sweeper.check_config``): a metric no
    run reports would make every job of the sweep a failed trial.

    Returns:
        The metric's name.

    Raises:
        ConfigError: naming ``optimized_metric``, its value and the metrics of
            :func:`logged_metrics`.
    """
    metric = common.get(cfg, "optimized_metric")
    names = logged_metrics(cfg)
    if metric not in names:
        allowed = f"must be one of {', '.join(names)} (the metrics this run reports)"
        if isinstance(metric, str) and metric.startswith("val/") and "val/acc" not in names:
            allowed += "; val/* needs a validation split (data.val_fraction > 0 for spiral)"
        raise ConfigError("optimized_metric", metric, allowed)
    return metric


# Trainer settings that change the numbers a run computes (not how long it runs or how it is
# logged): a resume must keep them.
RUN_TRAINER_KEYS = (
    "precision",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "limit_train_batches",
    "deterministic",
)


def built_from(cfg: DictConfig) -> dict[str, Any]:
    """What builds the run, as plain values, recorded in its checkpoint.

    Returns:
        For each part (``data``, ``model``, ``loss``, ``optimizer``, ``scheduler``) its config
        (class path and arguments); ``trainer``: the :data:`RUN_TRAINER_KEYS` its config sets;
        ``seed``; ``options``: Hydra's option per part (``loss: custom_ce``), when Hydra runs
        the task, so that a refused resume can name the override to add.
    """
    record: dict[str, Any] = {
        group: None if cfg.get(group) is None else OmegaConf.to_container(cfg[group], resolve=True)
        for group in BUILT_FROM
    }
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    record["trainer"] = {key: trainer[key] for key in RUN_TRAINER_KEYS if key in trainer}
    record["seed"] = cfg.get("seed")
    options = config_choices()
    record["options"] = {group: options[group] for group in BUILT_FROM if group in options}
    return record


def build_model(cfg: DictConfig) -> Classifier:
    """The LightningModule: the network of ``cfg.model``; loss, optimizer, scheduler likewise.

    The optimizer and the scheduler are factories (``_partial_``); each is tried once on a probe
    tensor, so that their own checks refuse a bad value before any training.
    """
    import torch

    from mlplab.models.classifier import Classifier

    net = common.instantiate(cfg.get("model"), "model")
    loss = common.instantiate(cfg.get("loss"), "loss")
    probe = [torch.zeros(1, requires_grad=True)]
    optimizer = common.instantiate(cfg.get("optimizer"), "optimizer", probe=lambda f: f(probe))
    scheduler_cfg = cfg.get("scheduler")
    scheduler = None
    if scheduler_cfg and "_target_" in scheduler_cfg:
        scheduler = common.instantiate(
            scheduler_cfg, "scheduler", probe=lambda f: f(torch.optim.SGD(probe, lr=1.0), 100)
        )
    num_classes = common.get(cfg, "data.num_classes")
    model = Classifier(net, loss, optimizer, num_classes, scheduler, built_from=built_from(cfg))
    # One input of the contract's shape (N, num_features): Lightning's model summary then counts
    # real FLOPs and shows input and output sizes, instead of a column of zeros.
    model.example_input_array = torch.zeros(1, common.get(cfg, "data.num_features"))
    return model


def build_run(cfg: DictConfig) -> tuple[pl.LightningDataModule, Classifier]:
    """Seed everything from ``cfg.seed``, then build the datamodule and the model.

    The network is the first thing drawn from the seeded global RNG, as in the tutorial's
    ``set_seed(2021); net = Net(...)``, so ``seed=2021`` gives the tutorial's initial weights.
    """
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = common.instantiate(cfg.get("data"), "data")
    return datamodule, build_model(cfg)


def hparams_of(
    record: Mapping[str, Any], net: nn.Module, seed: int, options: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The hyper-parameters of TensorBoard's HPARAMS tab and of metrics.json.

    For each part that built the run (``data``, ``model``, ``loss``, ``optimizer``,
    ``scheduler``): its config option (``data: rings``; the class name without one) and its
    arguments (``data/noise``, ``model/width``, ...); ``model/params``, the number of parameters;
    the ``seed``. A network that describes itself with an ``hparams`` mapping (mlplab's MLP: its
    actual widths, whatever gave them) has those entries win over its config's.

    Args:
        record: :func:`built_from` of the run.
        net: The network.
        seed: The run's seed.
        options: Hydra's choice of option per config group (``HydraConfig.runtime.choices``).
    """
    hparams: dict[str, Any] = {}
    for group in BUILT_FROM:
        node = record.get(group) or {}
        target = str(node.get("_target_", "none"))
        hparams[group] = (options or {}).get(group) or target.rsplit(".", 1)[-1]
        arguments = {k: v for k, v in node.items() if not str(k).startswith("_")}
        if group == "model" and isinstance(getattr(net, "hparams", None), Mapping):
            arguments.update(net.hparams)
        for name, value in arguments.items():
            plain = isinstance(value, bool | int | float | str)
            hparams[f"{group}/{name}"] = value if plain else str(value)
    hparams["model/params"] = sum(p.numel() for p in net.parameters())
    hparams["seed"] = int(seed)
    return hparams


def config_choices() -> dict[str, str]:
    """Hydra's choice of option per config group, when Hydra runs this task."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {str(k): str(v) for k, v in HydraConfig.get().runtime.choices.items() if v}


def _task_overrides() -> list[str]:
    """The run's own overrides (Hydra's ``overrides.task``), when Hydra runs this task."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _requeued_checkpoint(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The folder's ``last.ckpt`` when SLURM requeued this job (time limit, preemption), else None.

    ``SLURM_RESTART_COUNT`` is set (> 0) by SLURM in a requeued job only; a first run, or a run
    outside SLURM, starts from scratch.
    """
    if os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0"):
        return None
    path = last_checkpoint(cfg, output_dir)
    if not path.is_file():
        return None
    log.info("requeued job (SLURM_RESTART_COUNT=%s): resuming", os.environ["SLURM_RESTART_COUNT"])
    return path


def last_checkpoint(cfg: DictConfig, output_dir: Path) -> Path:
    """Where the run's ModelCheckpoint keeps ``last.ckpt`` (``callbacks.model_checkpoint``)."""
    callbacks = cfg.get("callbacks") or {}
    dirpath = (callbacks.get("model_checkpoint") or {}).get("dirpath")
    return Path(dirpath or output_dir / "checkpoints") / "last.ckpt"


def resume_command(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> str:
    """The shell command that goes on with a stopped run in its own folder.

    The run's own overrides, ``hydra.run.dir=<its folder>`` and ``ckpt_path=last`` once its
    ``last.ckpt`` exists; before the first epoch has ended, the same command in the same folder
    (from the checkpoint it started from, if any).
    """
    if last_checkpoint(cfg, output_dir).is_file():
        extra, drop = ["ckpt_path=last"], ["ckpt_path"]
        return common.rerun_command("train", output_dir, overrides, extra, drop)
    return common.rerun_command("train", output_dir, overrides)


def resume_path(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``cfg.ckpt_path``, with ``last`` meaning this run folder's.

    Lightning's own ``"last"`` silently starts from scratch when it finds no checkpoint, and a
    new run folder never has one; here it must exist, or the run stops with a clear line. In a
    multirun, a job folder without one starts from scratch: that is how a sweep is resumed
    (``hydra.sweep.dir=<multirun folder> ckpt_path=last``), jobs that never started included.
    A job that SLURM requeued (``SLURM_RESTART_COUNT`` > 0) with ``ckpt_path`` null goes on from
    its folder's ``last.ckpt`` when there is one, as Lightning does with its ``hpc_ckpt``.
    """
    ckpt_path = cfg.ckpt_path
    if ckpt_path is None:
        return _requeued_checkpoint(cfg, output_dir)
    if ckpt_path != "last":
        return Path(ckpt_path).expanduser().absolute()
    path = last_checkpoint(cfg, output_dir)
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


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()
_BARE_VALUE = re.compile(r"[A-Za-z_/][\w/.:-]*")
_INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")


def override_value(value: Any) -> str:
    """``value`` in Hydra's override grammar: ``null``, ``true``, ``'ReLU()'``, ``[8,8]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    text = str(value)
    if _BARE_VALUE.fullmatch(text) and text.lower() not in ("null", "true", "false", "inf", "nan"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def interpolation_sources(cfg: DictConfig) -> dict[str, str]:
    """The keys of the run's parts whose value is another key (``data.seed: ${seed}``).

    Returns:
        ``{"data.seed": "seed", ...}``: a refused resume names the key the user sets, not
        the one that copies it.
    """
    sources: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping):
            for name, value in node.items():
                walk(value, f"{key}.{name}")
        elif isinstance(node, str) and (match := _INTERPOLATION.fullmatch(node)):
            sources[key] = match.group(1)

    for group in BUILT_FROM:
        if isinstance(cfg.get(group), DictConfig):
            walk(OmegaConf.to_container(cfg[group], resolve=False), group)
    return sources


def _differences(saved: Any, now: Any, key: str) -> Iterator[tuple[str, Any, Any]]:
    """(key, value in the checkpoint, value in this run) for each recorded argument that differs;
    values absent on one side are :data:`_ABSENT`."""
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        for name in dict.fromkeys([*saved, *now]):
            yield from _differences(
                saved.get(name, _ABSENT), now.get(name, _ABSENT), f"{key}.{name}"
            )
    elif saved != now:
        yield key, saved, now


def _resume_differences(
    saved: Mapping[str, Any], now: Mapping[str, Any]
) -> Iterator[tuple[str, Any, Any]]:
    """The settings of the checkpoint's run (``saved``) that this run (``now``) changes.

    A part whose Hydra option differs is one difference (``loss``: ``custom_ce`` against
    ``torch_ce``): choosing the option brings its arguments. Keys the checkpoint does not
    record (an older mlplab's) are not compared.
    """
    saved_options, now_options = saved.get("options") or {}, now.get("options") or {}
    for group in BUILT_FROM:
        before, after = saved_options.get(group), now_options.get(group)
        if before is not None and after is not None and before != after:
            yield group, before, after
            continue
        yield from _differences(saved.get(group), now.get(group), group)
    if "trainer" in saved:
        yield from _differences(saved["trainer"], now.get("trainer") or {}, "trainer")
    if saved.get("seed") is not None and saved["seed"] != now.get("seed"):
        yield "seed", saved["seed"], now.get("seed")


def _described(key: str, before: Any, now: Any) -> tuple[str, str]:
    """(what differs, in words; the override that restores the checkpoint's value)."""
    if before is _ABSENT:
        return f"trained without {key} but this run has {key}={override_value(now)}", f"~{key}"
    restore = f"{key}={override_value(before)}"
    if now is _ABSENT:
        return f"trained with {restore} but this run has no {key}", f"+{restore}"
    return f"trained with {restore} but this run has {key}={override_value(now)}", restore


def check_resume(
    path: Path,
    checkpoint: Mapping[str, Any],
    record: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
) -> None:
    """Refuse to resume a checkpoint built from other settings: the result would be no one's run.

    A resume continues the checkpoint's run: its data (batch size included), network, loss,
    optimizer and scheduler, the trainer settings that change the numbers
    (:data:`RUN_TRAINER_KEYS`) and the seed, as :func:`built_from` records them; Lightning
    restores the optimizer's own state, so a new ``optimizer.lr`` would be ignored. What a resume
    may change is how long it runs (``trainer.max_epochs``) and how it is logged.

    Args:
        path: The checkpoint file (for the message).
        checkpoint: Its content; ``hyper_parameters.built_from`` is compared.
        record: :func:`built_from` of this run.
        sources: :func:`interpolation_sources` of this run's config: a difference in
            ``data.seed`` (``${seed}``) is named ``seed``.

    Raises:
        TaskError: naming the first setting that differs with both values, and every override
            to add (``loss=custom_ce data.batch_size=128``) to resume.
    """
    saved = (checkpoint.get("hyper_parameters") or {}).get("built_from")
    if not isinstance(saved, Mapping):
        raise TaskError(
            f"checkpoint {path}: it does not record what built its run (not written by this "
            "mlplab-train); start a new run"
        )
    first, overrides = None, []
    for key, before, now in _resume_differences(saved, record):
        key = (sources or {}).get(key, key)
        words, override = _described(key, before, now)
        first = first or words
        if override not in overrides:
            overrides.append(override)
    if first is not None:
        raise TaskError(
            f"checkpoint {path}: {first}; resume with the checkpoint's settings: add "
            + " ".join(overrides)
        )


def train(
    datamodule: pl.LightningDataModule,
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
    from mlplab.data.datamodule import sequential_loader
    from mlplab.models.classifier import DivergedError, evaluate_batches
    from mlplab.tasks.progress import stopping_signal

    started = time.perf_counter()
    ckpt = None if ckpt_path is None else str(ckpt_path)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except DivergedError as err:
        raise TaskError(str(err)) from err
    except SystemExit as err:  # Lightning's SIGTERMException, or its exit after Ctrl-C
        signum = stopping_signal(err)
        if signum is None:
            raise
        raise _interrupted(trainer, signum) from err
    metrics: dict[str, float] = {"fit_time_s": round(time.perf_counter() - started, 4)}
    metrics.update(
        {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    )
    if run_test:
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        )
    batches = sequential_loader(datamodule.train_dataloader())
    metrics["train/loss"], metrics["train/acc"], _ = evaluate_batches(
        model.net, batches, model.loss_fn
    )
    metrics["global_step"] = trainer.global_step
    metrics["epochs"] = trainer.current_epoch
    return metrics


def _interrupted(trainer: pl.Trainer, signum: int) -> common.Interrupted:
    """The stop by ``signum`` during the fit, saying where the run stopped and resumes from.

    ``last.ckpt`` is written at the end of an epoch (every ``save_interval_s`` seconds, see
    :class:`~mlplab.tasks.checkpointing.ThrottledCheckpoint`); the epochs after it are trained
    again by a resume, as the uninterrupted run trained them (a mid-epoch checkpoint cannot
    resume exactly: the DataLoader does not record its position).
    """
    from mlplab.tasks.checkpointing import ThrottledCheckpoint

    done, step = trainer.current_epoch, trainer.global_step
    where = f"at step {step}, in epoch {done + 1}"
    saved = [c.saved_step for c in trainer.callbacks if isinstance(c, ThrottledCheckpoint)]
    if saved and saved[0] is not None:
        where += f" (last.ckpt holds step {saved[0]}, where a resume goes on)"
    elif saved:
        where += " (no last.ckpt written yet by this fit)"
    return common.Interrupted(signum, where, metrics={"global_step": step, "epochs": done})


def _train_body(cfg: DictConfig, output_dir: Path) -> common.Outcome:
    check_task_config(cfg)
    from mlplab.tasks import runtime

    runtime.quiet_expected_warnings()
    datamodule, model = build_run(cfg)
    threads = runtime.set_torch_threads(cfg.threads, runtime.count_parameters(model))
    log.info("torch intra-op threads: %d (threads=%s)", threads, cfg.threads)
    ckpt_path = resume_path(cfg, output_dir)
    if ckpt_path is not None:
        checkpoint = runtime.load_checkpoint(ckpt_path)
        # The settings first: the override to add says more than two tensor shapes.
        check_resume(ckpt_path, checkpoint, model.hparams.built_from, interpolation_sources(cfg))
        runtime.check_state_dict(ckpt_path, checkpoint["state_dict"], model)
        log.info(
            "resuming from %s (after epoch %d, step %d)",
            ckpt_path,
            checkpoint.get("epoch", -1) + 1,  # 1-based, as the epoch lines count
            checkpoint.get("global_step", -1),
        )
    hparams = hparams_of(model.hparams.built_from, model.net, cfg.seed, config_choices())
    with runtime.distributed_job():
        metrics = _fit_and_record(cfg, output_dir, datamodule, model, ckpt_path, hparams)
    return common.Outcome(metrics, hparams)


def _fit_and_record(
    cfg: DictConfig,
    output_dir: Path,
    datamodule: pl.LightningDataModule,
    model: Classifier,
    ckpt_path: Path | None,
    hparams: dict[str, Any],
) -> dict[str, float]:
    """Fit and test; on rank 0, print the tutorial's lines and write figures and HPARAMS."""
    from mlplab.tasks import runtime

    logger = runtime.build_logger(cfg.get("logger"))
    callbacks = runtime.build_callbacks(cfg.get("callbacks"))
    trainer = runtime.build_trainer(cfg.trainer, logger, callbacks)
    runtime.pass_job_to_ranks()
    common.settle_gc()
    try:
        metrics = train(datamodule, model, trainer, ckpt_path=ckpt_path, run_test=cfg.test)
    except common.Interrupted as stop:
        stop.resume = resume_command(cfg, output_dir, _task_overrides())
        raise
    if not trainer.is_global_zero:
        return metrics
    if trainer.global_step == 0:
        raise TaskError(
            "training ran no optimizer step; check trainer.max_epochs (a resumed checkpoint may "
            "have reached it already) and trainer.limit_train_batches"
        )
    from mlplab.data.datamodule import count_samples

    n_train = count_samples(datamodule.train_dataloader())
    print(f"Accuracy on the {n_train} training samples: {metrics['train/acc']:0.2f}")
    if "test/acc" in metrics:
        n_test = count_samples(datamodule.test_dataloader())
        print(f"Accuracy on the {n_test} testing samples: {metrics['test/acc']:0.2f}")
    if trainer.fast_dev_run:  # Lightning's smoke test writes nothing; neither does mlplab
        log.info("fast_dev_run: no figures and no HPARAMS entry")
        return metrics
    if cfg.figures:
        save_figures(cfg, datamodule, model, metrics, output_dir, logger, trainer.global_step)
    runtime.log_hparams(logger, hparams, cfg)
    if logger is not None:
        logger.save()
    if not cfg.test and "val/acc" not in metrics:
        log.info("test=false and no validation split: only training metrics are reported")
    return metrics


def save_figures(
    cfg: DictConfig,
    datamodule: pl.LightningDataModule,
    model: Classifier,
    metrics: dict[str, float],
    output_dir: Path,
    logger: Any,
    step: int,
) -> None:
    """decision_map.png (2-D inputs only) and training_loss.png: run folder and TensorBoard."""
    from mlplab.data.datamodule import loader_tensors
    from mlplab.tasks.dashboard import settings_title
    from mlplab.tasks.runtime import is_plane, log_figures, save_decision_map, tensorboard_of
    from mlplab.viz import plot_training_loss

    # The settings head each figure, so a sweep's figures tell themselves apart.
    settings = settings_title()
    title = settings
    if "test/acc" in metrics:
        title += f"\ntest accuracy {metrics['test/acc']:.2f} %"
    figures = {}
    X_test, y_test = loader_tensors(datamodule.test_dataloader())
    if is_plane(X_test):
        figures["decision_map"] = save_decision_map(
            model.net, X_test, y_test, cfg.grid_size, title=title
        )
    else:
        log.info("no decision map: the inputs have shape %s, not points of the plane", X_test.shape)
    figures["training_loss"] = plot_training_loss(
        model.training_losses, xlabel="Optimizer step", title=f"Training loss\n{settings}"
    )
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
