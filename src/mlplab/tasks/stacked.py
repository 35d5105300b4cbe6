"""Stacked sweeps: a sweep's jobs that differ only in seed and optimizer settings, trained as one.

The stacked launcher (``hydra/launcher=stacked``, in ``hydra_plugins/mlplab_stacked_launcher``)
groups a sweep's ``mlplab-train`` jobs by :func:`stack_key`, trains each group with
:func:`train_group` (one :class:`~mlplab.models.stacked.StackedClassifier`, one Trainer, one
optimizer step per minibatch for all members), then finishes every job with
:func:`finish_member` inside Hydra's own ``run_job``: test, ``metrics.json``, ``last.ckpt`` in the
single-run format, TensorBoard scalars and HPARAMS, figures. Everything that touches the
single-run core goes through :mod:`mlplab.tasks.single_run`.

Within a group, jobs may differ in ``seed`` (data, split, initial weights and batch order, as in a
single run; ``data.seed`` follows it) and in the optimizer's settings (``optimizer.lr``,
``optimizer.weight_decay``, betas, momentum, ...; not its class). Everything else is equal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlplab.tasks import single_run
from mlplab.tasks.single_run import ConfigError, Interrupted, TaskError

log = logging.getLogger("mlplab")

# The optimizer keys members of one stack share (the others, its settings, may differ).
_OPTIMIZER_FIXED = ("_target_", "_partial_")
# Trainer settings a stack of members on one device can honour.
_ONE_DEVICE_PRECISIONS = ("32-true", "32", "64-true", "64")
GROUP_FOLDER = ".stacked"


@dataclass
class Member:
    """One job of the sweep, as the stacked launcher sees it.

    Attributes:
        num: Hydra's job number.
        cfg: The job's task config, resolved (no ``hydra`` node).
        output_dir: The job's folder.
        run: Its datamodule and model, built as its single run builds them
            (:func:`build_member`).
    """

    num: int
    cfg: DictConfig
    output_dir: Path
    run: single_run.SingleRun | None = None

    @property
    def name(self) -> str:
        """Identity within a stack: job number, seed and optimizer settings."""
        optimizer = OmegaConf.to_container(self.cfg.optimizer, resolve=True)
        return json.dumps([self.num, self.cfg.seed, optimizer], sort_keys=True, default=repr)


@dataclass
class MemberResult:
    """What the stacked run leaves for one member's job folder."""

    member: Member
    group_dir: Path
    group_size: int
    error: BaseException | None = None
    net_state: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    failed_step: int | None = None
    shared: dict[str, Any] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    fit_time_s: float = 0.0
    global_step: int = 0
    epochs: int = 0
    tester: list[Any] = field(default_factory=list)  # one test Trainer, shared by the group


# --- which jobs stack ---------------------------------------------------------------------------


def _arguments(target: Any) -> set[str]:
    import inspect

    return set(inspect.signature(target).parameters)


def _target_object(node: Any) -> Any:
    """What ``node._target_`` names (a class or a factory function); None if it names nothing."""
    try:
        return hydra.utils.get_object(str(node._target_))
    except Exception:
        return None


def _target_class(node: Any) -> type | None:
    """The class ``node`` builds: its ``_target_`` class, or the class a factory function is
    annotated to return (``mlplab.tasks.progress.progress_bar -> ProgressBar``); None if unknown.
    """
    import typing

    target = _target_object(node)
    if target is None or isinstance(target, type):
        return target
    try:
        built = typing.get_type_hints(target).get("return")
    except Exception:
        return None
    return built if isinstance(built, type) else None


def why_not_stackable(cfg: DictConfig) -> str | None:
    """Why the job must run alone, judged from its config; None when it may join a stack.

    A job runs alone when it is not ``mlplab-train``, when the train task's own keys are
    invalid (it then fails alone with the single run's message), or when :func:`stack_limits`
    says so. What its datamodule and network are is judged once they are built
    (:func:`build_member`).
    """
    if cfg.get("task_name") != "train":
        return f"task {cfg.get('task_name')!r} is not mlplab-train"
    try:
        single_run.check_task_config(cfg)
    except ConfigError as err:
        return f"its config is invalid ({err})"
    return stack_limits(cfg)


def build_member(member: Member) -> str | None:
    """Build the member's datamodule and model as its single run would; why it must run alone.

    Returns None when the member can be stacked: its data are in-memory tensors (a
    ``TensorDataModule``), its network an mlplab MLP with an element-wise activation, its
    optimizer an element-wise ``torch.optim`` one. A constructor's refusal makes the job run
    alone, where it fails with the single run's message.
    """
    from mlplab.models.mlp import MLP, parse_activation
    from mlplab.models.stacked import optimizer_settings, stackable_activation

    try:
        run = single_run.build(member.cfg)
    except ConfigError as err:
        return f"its config is invalid ({err})"
    if not single_run.stackable_data(run):
        return f"its data ({type(run.datamodule).__name__}) are not in-memory TensorDataModule"
    if type(run.net) is not MLP:  # a subclass may compute something else
        return f"its network ({type(run.net).__name__}) is not an mlplab MLP"
    if not stackable_activation(parse_activation(run.net.activation)):
        return f"activation {run.net.activation} has parameters or randomness"
    try:
        optimizer_settings(run.optimizer)
    except ValueError as err:
        return str(err)
    member.run = run
    return None


def _checkpoint_limits(name: str, node: Any) -> str | None:
    """Why a checkpoint callback cannot be one per member: only the default ``last.ckpt``."""
    if node.get("monitor") is not None:
        return f"callbacks.{name}.monitor={node.monitor}: best checkpoints are kept per run"
    cls = _target_class(node)
    from pytorch_lightning.callbacks import ModelCheckpoint

    every_epoch = (
        cls is not None
        and issubclass(cls, ModelCheckpoint)
        and node.get("filename") == "last"
        and node.get("dirpath")
        and not node.get("save_last")
        and not node.get("every_n_train_steps")
        and node.get("train_time_interval") is None
        and node.get("every_n_epochs") in (None, 1)
    )
    if not every_epoch:
        return f"callbacks.{name} writes other checkpoints than last.ckpt at the end of an epoch"
    return None


def stack_limits(cfg: DictConfig) -> str | None:
    """What of a valid ``mlplab-train`` config a stack cannot do as its single run would."""
    if cfg.ckpt_path not in (None, "last"):
        return f"ckpt_path={cfg.ckpt_path} resumes one run"
    from pytorch_lightning.callbacks import Checkpoint, ModelSummary, ProgressBar

    if not cfg.optimizer.get("_partial_", False):
        return "the optimizer config is not a partial (_partial_: true)"
    if (cfg.get("scheduler") or {}).get("_target_"):
        return f"scheduler {cfg.scheduler._target_} is stepped per run"
    trainer = cfg.trainer
    devices, accelerator = trainer.get("devices", "auto"), trainer.get("accelerator", "auto")
    one_device = devices == 1 or (OmegaConf.is_list(devices) and len(devices) == 1)
    if not (one_device or (devices == "auto" and accelerator == "cpu")):
        return f"trainer.devices={devices}: a stack runs on one device"
    if trainer.get("strategy", "auto") not in ("auto", "single_device"):
        return f"trainer.strategy={trainer.strategy}: a stack runs on one device"
    if str(trainer.get("precision", "32-true")) not in _ONE_DEVICE_PRECISIONS:
        return f"trainer.precision={trainer.precision}: a stack trains at 32 or 64 bits"
    if trainer.get("gradient_clip_val") and trainer.get("gradient_clip_algorithm") != "value":
        return "clipping gradients by norm would mix the members' gradients"
    for name, node in (cfg.get("callbacks") or {}).items():
        if not node or "_target_" not in node:
            continue
        cls = _target_class(node)
        known = cls is not None and issubclass(cls, Checkpoint | ProgressBar | ModelSummary)
        if not known:
            return f"callback {name} ({node._target_}) would see the whole stack, not one run"
        if issubclass(cls, Checkpoint):
            why = _checkpoint_limits(name, node)
            if why is not None:
                return why
    return None


def checkpoint_dir(cfg: DictConfig) -> Path | None:
    """Where the job's ``last.ckpt`` goes; None when its callbacks write no checkpoint."""
    from pytorch_lightning.callbacks import Checkpoint

    for node in (cfg.get("callbacks") or {}).values():
        cls = None if not node or "_target_" not in node else _target_class(node)
        if cls is not None and issubclass(cls, Checkpoint):
            return Path(str(node.dirpath))
    return None


def stack_key(cfg: DictConfig, output_dir: Path) -> str:
    """The job's config without the keys that may differ in a stack and without its own folder
    or its own TensorBoard run name (``logger.version``, the job's settings).

    Jobs with equal keys train as members of one stack.
    """
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    # Each member logs into its own run after the fit, through its own logger config; the
    # stack itself logs nothing, so the run name (unique per job) must not split the stack.
    (data.get("logger") or {}).pop("version", None)
    data.pop("seed", None)
    (data.get("data") or {}).pop("seed", None)
    optimizer = data.get("optimizer") or {}
    data["optimizer"] = {k: v for k, v in optimizer.items() if k in _OPTIMIZER_FIXED}
    text = json.dumps(data, sort_keys=True, default=repr)
    return text.replace(str(output_dir), "<output_dir>")


def group_dir(sweep_dir: Path, members: Sequence[Member]) -> Path:
    """``<sweep>/.stacked/<first job>-<last job>_<n>_<digest>``: the group's own folder."""
    nums = [m.num for m in members]
    digest = hashlib.sha1(json.dumps(nums).encode()).hexdigest()[:8]
    return Path(sweep_dir) / GROUP_FOLDER / f"jobs_{nums[0]}-{nums[-1]}_{len(nums)}_{digest}"


def group_checkpoint(directory: Path) -> Path:
    """The group's ``last.ckpt``, rewritten at the end of an epoch (see ``ThrottledCheckpoint``)."""
    return Path(directory) / "checkpoints" / "last.ckpt"


def own_checkpoint(member: Member) -> Path | None:
    """The member's own ``last.ckpt`` when ``ckpt_path=last`` would resume it alone."""
    if member.cfg.ckpt_path != "last":
        return None
    return single_run.own_checkpoint(member.cfg, member.output_dir)


# --- training a group ---------------------------------------------------------------------------


def _device_type(cfg: DictConfig) -> str:
    """``cpu`` when the job's trainer runs on the CPU, else the accelerator's name."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if accelerator == "gpu" else accelerator


def _optimizer_order(runs: Sequence[single_run.SingleRun]) -> list[int]:
    """Members sorted (stably) by optimizer settings: equal settings share one param group."""
    from mlplab.models.stacked import optimizer_settings

    def key(i: int) -> str:
        _, kwargs = optimizer_settings(runs[i].optimizer)
        return json.dumps(kwargs, sort_keys=True, default=repr)

    return sorted(range(len(runs)), key=key)


def _group_callbacks(cfg: DictConfig, directory: Path, steps_per_epoch: int) -> list[Any]:
    """The jobs' callbacks as the group runs them: the checkpoint writes the group's last.ckpt.

    The progress bar redraws once per epoch: a stack's step takes a few milliseconds, and a
    Rich bar redrawn every step added 2.5 ms to each.
    """
    from pytorch_lightning.callbacks import Checkpoint, ProgressBar

    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if not node or "_target_" not in node:
            continue
        cls = _target_class(node)
        kwargs: dict[str, Any] = {}
        if cls is not None and issubclass(cls, Checkpoint):
            kwargs["dirpath"] = str(group_checkpoint(directory).parent)
        elif (
            cls is not None
            and issubclass(cls, ProgressBar)
            and "refresh_rate" in _arguments(_target_object(node))
        ):
            kwargs["refresh_rate"] = max(int(node.get("refresh_rate") or 1), steps_per_epoch)
        callbacks.append(single_run.instantiate(node, f"callbacks.{name}", **kwargs))
    return callbacks


def train_group(
    members: Sequence[Member],
    directory: Path,
    chunk_size: int | None = None,
) -> list[MemberResult]:
    """Train the members as one stack; return what each member's job folder needs.

    Builds each member as its single run would (seed, data, initial weights), stacks them, and
    fits one Trainer with the members' trainer settings; ``ckpt_path=last`` resumes the group's
    own checkpoint (``<directory>/checkpoints/last.ckpt``). A member that diverges is recorded
    as failed; an error of the whole stack is recorded for every member.

    Raises:
        Interrupted: SIGINT (Ctrl-C) or SIGTERM stopped the fit (Lightning ends it at the end of
            the batch; the group's ``last.ckpt`` holds the last epoch it saved).
    """
    from mlplab.tasks.progress import stopping_signal

    directory = Path(directory)
    results = [MemberResult(m, directory, len(members)) for m in members]
    try:
        _train_group(members, directory, chunk_size, results)
    except SystemExit as stop:  # Lightning's SIGTERMException, or its sys.exit(1) on Ctrl-C
        signum = stopping_signal(stop)
        if signum is None:
            raise
        raise Interrupted(signum, f"training {directory}") from stop
    except Exception as err:  # the stack failed as a whole: every member says so
        log.error("stack %s failed: %s", directory, single_run.one_line(err))
        for result in results:
            result.error = err
    return results


def _train_group(
    members: Sequence[Member],
    directory: Path,
    chunk_size: int | None,
    results: list[MemberResult],
) -> None:
    from mlplab.data.stacked import StackedDataModule
    from mlplab.models.stacked import StackedClassifier, StackMismatchError, default_chunk_size

    single_run.quiet_expected_warnings()
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
    first = members[0].cfg
    runs = [m.run if m.run is not None else single_run.build(m.cfg) for m in members]
    order = _optimizer_order(runs)
    splits = [runs[i].splits() for i in order]
    nets = [runs[i].net for i in order]
    widest = max([*nets[0].hidden_units, nets[0].out_features])
    if chunk_size is None:
        chunk_size = default_chunk_size(runs[0].batch_size, widest, _device_type(first))
    model = StackedClassifier(
        nets,
        runs[0].loss,
        [runs[i].optimizer for i in order],
        runs[0].num_classes,
        chunk_size=chunk_size,
        member_ids=[members[i].name for i in order],
        member_records=[runs[i].record for i in order],
    )
    data = StackedDataModule(
        splits,
        [runs[i].order_seed for i in order],
        runs[0].batch_size,
        runs[0].eval_batch_size,
        keys=[json.dumps(runs[i].record["data"], sort_keys=True, default=repr) for i in order],
    )
    trainer_cfg = OmegaConf.merge(first.trainer, {"default_root_dir": str(directory)})
    callbacks = _group_callbacks(first, directory, len(data.train_dataloader()))
    trainer = single_run.build_trainer(trainer_cfg, None, callbacks)
    ckpt = group_checkpoint(directory)
    resume = first.ckpt_path == "last" and ckpt.is_file()
    if resume:
        checkpoint = single_run.load_checkpoint(ckpt)  # checked and refused in one line if bad
        _check_resume(ckpt, checkpoint, [runs[i] for i in order])
        log.info(
            "resuming the stack from %s (after epoch %d, step %d)",
            ckpt,
            checkpoint.get("epoch", -1) + 1,  # 1-based, as the epoch lines count
            checkpoint.get("global_step", -1),
        )
    single_run.write_json(
        directory / "stack.json",
        {
            "jobs": [members[i].num for i in order],
            "output_dirs": [str(members[i].output_dir) for i in order],
            "seeds": [int(members[i].cfg.seed) for i in order],
            "optimizer": [OmegaConf.to_container(members[i].cfg.optimizer) for i in order],
            "param_groups": len(model.net.block_sizes),
            "distinct_datasets": data.num_datasets,
            "chunk_size": chunk_size,
        },
    )
    log.info(
        "training %d jobs as one stack (%d param groups, %d distinct datasets, chunks of %s)",
        len(members),
        len(model.net.block_sizes),
        data.num_datasets,
        chunk_size,
    )
    single_run.settle_gc()
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt if resume else None, weights_only=True)
    except StackMismatchError as err:  # refused in StackedClassifier.on_load_checkpoint
        raise TaskError(f"checkpoint {ckpt}: {err}") from err
    fit_time = round(time.perf_counter() - started, 4)
    no_step = single_run.no_step_error() if trainer.global_step == 0 else None
    val = model.last_validation()
    for position, i in enumerate(order):
        result = results[i]
        result.fit_time_s = fit_time
        result.global_step = trainer.global_step
        result.epochs = trainer.current_epoch
        result.shared = model.checkpoint_fields
        result.history = model.member_history(position)
        result.tester = results[0].tester
        if no_step is not None:
            result.error = no_step
            continue
        if position in model.failures:
            result.error = TaskError(model.failures[position])
            result.failed_step = model.failed_step[position]
            continue
        result.net_state = model.net.member_state_dict(position)
        result.optimizer_state = model.member_optimizer_state(position, runs[i].net)
        result.val = {k: float(v[position]) for k, v in val.items()}


def _check_resume(
    path: Path, checkpoint: dict[str, Any], runs: Sequence[single_run.SingleRun]
) -> None:
    """Refuse a stack checkpoint whose members were built from other settings, as a single run's
    resume refuses its own (the member records are in the stack's order)."""
    from mlplab.models.stacked import member_records

    saved = member_records(checkpoint)
    if saved is None or len(saved) != len(runs):
        return  # not this stack's: StackedClassifier.on_load_checkpoint says why
    for record, run in zip(saved, runs, strict=True):
        single_run.check_resume(path, record, run)


# --- finishing a member's job folder ------------------------------------------------------------


def finish_member(cfg: DictConfig, result: MemberResult) -> float | None:
    """Hydra task function of one stacked job: write its folder as its single run would."""
    return single_run.run_task(cfg, lambda cfg, output_dir: _member_body(cfg, output_dir, result))


def _member_body(cfg: DictConfig, output_dir: Path, result: MemberResult) -> Any:
    log.info(
        "job %d trained as one of %d members of the stack in %s",
        result.member.num,
        result.group_size,
        result.group_dir,
    )
    run = result.member.run
    if result.error is not None:
        if result.failed_step is not None and run is not None:
            logger = single_run.build_logger(cfg)
            rows = scalar_rows(result.history, _every(cfg), until=result.failed_step)
            single_run.log_scalars(logger, rows)
            _close(logger, "failed")
        raise result.error
    assert run is not None
    single_run.load_net(run, result.net_state)
    logger = single_run.build_logger(cfg)
    metrics: dict[str, Any] = {"fit_time_s": result.fit_time_s, **result.val}
    if cfg.test:
        if not result.tester:
            result.tester.append(single_run.build_trainer(cfg.trainer, None, []))
        metrics.update(single_run.test_metrics(result.tester[0], run))
    metrics["train/loss"], metrics["train/acc"] = single_run.train_metrics(run)
    metrics["global_step"] = result.global_step
    metrics["epochs"] = result.epochs
    single_run.print_accuracies(run, metrics)
    rows = scalar_rows(result.history, _every(cfg))
    test = {k: v for k, v in metrics.items() if k.startswith("test/")}
    if test:
        rows.append((result.global_step, test))
    single_run.log_scalars(logger, rows)
    losses = result.history["step/loss"].tolist()
    ckpt_dir = checkpoint_dir(cfg)
    if ckpt_dir is not None and result.shared:
        checkpoint = single_run.single_run_checkpoint(
            run, losses, result.optimizer_state, result.shared
        )
        single_run.save_checkpoint(checkpoint, ckpt_dir / "last.ckpt")
    if cfg.figures:
        single_run.save_figures(cfg, run, losses, metrics, output_dir, logger, result.global_step)
    hparams = single_run.hparams(run, cfg.seed)
    single_run.log_hparams(logger, hparams, cfg)
    _close(logger, "success")
    return single_run.outcome(metrics, hparams)


def _every(cfg: DictConfig) -> int:
    return max(int(cfg.trainer.get("log_every_n_steps") or 1), 1)


def _close(logger: Any, status: str) -> None:
    if logger is not None:
        logger.save()
        logger.finalize(status)


def scalar_rows(
    history: dict[str, Any], every: int, until: int | None = None
) -> list[tuple[int, dict[str, float]]]:
    """A member's training scalars as ``(step, values)`` rows, as its single run logs them.

    Against optimizer steps: ``train/loss_step`` and ``train/acc_step`` after every
    ``every``-th step (at its 0-based index), ``train/loss``, ``train/acc`` and ``epoch`` at the
    last step of each epoch, ``val/loss`` and ``val/acc`` at each validation; with ``until``,
    nothing after that step.
    """
    last = len(history["step/loss"]) - 1 if until is None else until
    rows: dict[int, dict[str, float]] = {}
    losses, accs = history["step/loss"].tolist(), history["step/acc"].tolist()
    for step in range(every - 1, min(len(losses), last + 1), every):
        rows[step] = {"train/loss_step": losses[step], "train/acc_step": accs[step]}
    epochs = zip(
        history["epoch/last_step"].tolist(),
        history["epoch/train_loss"].tolist(),
        history["epoch/train_acc"].tolist(),
        strict=True,
    )
    for epoch, (step, loss, acc) in enumerate(epochs):
        if step <= last:
            values = {"train/loss": loss, "train/acc": acc, "epoch": float(epoch)}
            rows.setdefault(int(step), {}).update(values)
    validations = zip(
        history["val/last_step"].tolist(),
        history["val/loss"].tolist(),
        history["val/acc"].tolist(),
        strict=True,
    )
    for step, loss, acc in validations:
        if step <= last:
            rows.setdefault(int(step), {}).update({"val/loss": loss, "val/acc": acc})
    return sorted(rows.items())
