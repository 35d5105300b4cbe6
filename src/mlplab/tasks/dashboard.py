"""TensorBoard as mlplab writes it: runs named by the job's settings, kept in the run's (or the
sweep's) folder, and HPARAMS entries that TensorBoard merges across every run it reads.

Layout: ``<run folder>/tensorboard/<settings>`` for a single run, and
``<sweep folder>/tensorboard/<settings>`` for each job of a multirun, where the settings are
Hydra's ``hydra.job.override_dirname`` (``data.sigma=0.1,debug=fast``; ``defaults`` without
overrides). So ``tensorboard --logdir outputs/train`` shows every training run of the task as
``multiruns/<sweep>/tensorboard/<settings>`` or ``runs/<run>/tensorboard/<settings>``, and
``--logdir <sweep folder>/tensorboard`` shows one sweep's runs by their settings alone. Each task
has its own ``outputs/<task>`` root, so one TensorBoard never mixes tasks.

HPARAMS: each run writes only its session start (its hyper-parameters) and end (its status).
No run writes an experiment summary (the ``_hparams_/experiment`` tag): TensorBoard's hparams
plugin takes the first one it finds as the schema of every run, which hid the columns of the
other runs. Without one, the plugin builds the schema itself from all the runs under its logdir:
every hyper-parameter any run records, with its type and the range or set of values seen, and
every scalar any run logs as a metric column (``backend_context._compute_experiment_from_runs``
in tensorboard). That holds for one sweep, several sweeps and single runs alike.

This module imports no Lightning (the LIF task writes TensorBoard without it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The run name of a run without overrides.
DEFAULTS = "defaults"
# Longer settings are cut and given a hash of the whole, so that names stay unique and a folder
# name stays under the 255 bytes of common file systems.
MAX_NAME_CHARS = 120
# A slash in a value (optimized_metric=val/acc) would start a sub-folder: a division slash
# (U+2215) reads the same and keeps the run one folder.
SLASH = "\u2215"

HParamValue = bool | int | float | str


def _hydra_config() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_folder(output_dir: str) -> str:
    """The folder whose ``tensorboard/`` holds the run: ``output_dir`` (the run's folder,
    ``paths.output_dir``), or in a multirun its sweep's folder (``hydra.sweep.dir``: one
    TensorBoard folder per sweep, whose runs are the jobs).

    A resumed run or sweep (``hydra.run.dir=<run>`` / ``hydra.sweep.dir=<sweep>``) gets the same
    folder and name, so its curves go on where they stopped.
    """
    from hydra.types import RunMode

    hc = _hydra_config()
    if hc is not None and hc.mode == RunMode.MULTIRUN:
        return str(hc.sweep.dir)
    return output_dir


def run_settings(checkpoint: str | None = None) -> str:
    """The run's settings as a folder name: :func:`run_name` of Hydra's
    ``hydra.job.override_dirname`` (``data.sigma=0.1,debug=fast``: sorted, without the keys
    listed in ``hydra.job.config.override_dirname.exclude_keys``: output paths, ``ckpt_path``).

    Args:
        checkpoint: The checkpoint an eval evaluates: its :func:`checkpoint_label` leads the
            name (``ckpt_path=<run>,loss=torch_ce``), so that evals of different checkpoints,
            jobs of one sweep included, are different runs. None for a training run, whose
            ``ckpt_path`` is what it resumes from and keeps the run's name.
    """
    hc = _hydra_config()
    settings = str(hc.job.override_dirname) if hc is not None else ""
    if checkpoint:
        settings = ",".join(filter(None, [f"ckpt_path={checkpoint_label(checkpoint)}", settings]))
    return run_name(settings)


def checkpoint_label(ckpt_path: str) -> str:
    """The training run a checkpoint comes from, as an eval's run name says it.

    The run folder is the checkpoint's folder, or the one above when that is ``checkpoints/``
    (where mlplab-train's ModelCheckpoint writes): its name (``<time>_<id>``, unique per run),
    after its sweep's folder name when it is a multirun job's number (``<time>_<id>/3``);
    then the file's name unless it is ``last.ckpt``.

    Args:
        ckpt_path: The checkpoint's path (``~`` expanded; relative to the working directory).

    Returns:
        ``2026-11-30_03-25-37_1a2b``, ``2026-11-30_03-25-37_1a2b/3`` or
        ``2026-11-30_03-25-37_1a2b/epoch=1.ckpt`` (:func:`run_name` turns ``/`` into
        :data:`SLASH`).
    """
    path = Path(ckpt_path).expanduser().absolute()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    label = f"{run.parent.name}/{run.name}" if run.name.isdigit() else run.name
    return label if path.name == "last.ckpt" else f"{label}/{path.name}"


def run_name(override_dirname: str) -> str:
    """The TensorBoard run name of a job whose ``hydra.job.override_dirname`` is given (as its
    ``.hydra/hydra.yaml`` records it): ``defaults`` when empty, ``/`` as :data:`SLASH`; past
    :data:`MAX_NAME_CHARS`, cut and followed by ``~`` and 8 hex digits of a hash of the whole,
    which keeps it unique.
    """
    name = (override_dirname or DEFAULTS).replace("/", SLASH)
    if len(name) > MAX_NAME_CHARS:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME_CHARS - 9]}~{digest}"
    return name


def settings_title(width: int = 48) -> str:
    """The run's settings for a figure title: ``data.sigma=0.1, debug=fast`` (or ``defaults``),
    wrapped into lines of at most ``width`` characters (what fits above the decision map)."""
    import textwrap

    hc = _hydra_config()
    text = str(hc.job.override_dirname) if hc is not None else ""
    return textwrap.fill(text.replace(",", ", "), width) if text else DEFAULTS


def register_resolvers() -> None:
    """``${mlplab_run_folder:<output dir>}`` and ``${mlplab_tb_run:[<checkpoint>]}`` for
    conf/logger/tensorboard.yaml (:func:`run_folder`, :func:`run_settings`)."""
    if not OmegaConf.has_resolver("mlplab_run_folder"):
        OmegaConf.register_new_resolver("mlplab_run_folder", run_folder)
    if not OmegaConf.has_resolver("mlplab_tb_run"):
        OmegaConf.register_new_resolver("mlplab_tb_run", run_settings)


def _plain(value: Any) -> HParamValue:
    return value if isinstance(value, bool | int | float | str) else str(value)


def override_hparams(cfg: DictConfig) -> dict[str, HParamValue]:
    """A hyper-parameter per key the job overrides, named with ``/`` for ``.``.

    ``data.sigma=0.4`` gives ``{"data/sigma": 0.4}`` (the value in ``cfg``, so typed and
    resolved); a config group's option (``debug=fast``) or a value that is not a scalar
    (``model.hidden_units=[8,8]``) gives the override's value as written, a string. The keys
    Hydra leaves out of the run name (output paths, ``ckpt_path``) are left out here too. Empty
    outside a Hydra run.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hc = _hydra_config()
    if hc is None:
        return {}
    excluded = set(hc.job.config.override_dirname.exclude_keys or [])
    columns: dict[str, HParamValue] = {}
    for override in OverridesParser.create().parse_overrides(list(hc.overrides.task)):
        key = override.key_or_group
        if key in excluded:
            continue
        if override.is_delete():
            columns[key.replace(".", "/")] = "deleted"
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if not isinstance(value, bool | int | float | str):
            value = override.get_value_element_as_str()  # as written: [8,8], fast
        columns[key.replace(".", "/")] = value
    return columns


def with_overrides(hparams: dict[str, Any], cfg: DictConfig | None) -> dict[str, Any]:
    """``hparams`` followed by the :func:`override_hparams` of ``cfg`` they do not name."""
    overrides = override_hparams(cfg) if cfg is not None else {}
    return {**hparams, **{k: v for k, v in overrides.items() if k not in hparams}}


def hparams_summaries(hparams: dict[str, Any], group: str) -> list[Any]:
    """The session start (the hyper-parameters) and session end (success) of a finished run.

    Args:
        hparams: Name to value; values other than bool, int, float and str are written as text.
        group: The run's HPARAMS group, unique per run (its folder's absolute path): one row per
            run, even for runs of equal hyper-parameters (TensorBoard averages a group's runs).

    Returns:
        Two ``tensorboard.compat.proto.summary_pb2.Summary`` messages.
    """
    # summary_v2 is what tensorboard.plugins.hparams.api exports (api itself imports TensorFlow).
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

    start = summary_v2.hparams_pb({k: _plain(v) for k, v in hparams.items()}, trial_id=group)
    # tensorboard has no tf-free session_end_pb (summary.session_end_pb needs TensorFlow): the
    # same message, from the plugin's own metadata helper.
    end_info = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_SUCCESS,
        end_time_secs=time.time(),
    )
    end = Summary()
    end.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(
            plugin_data_pb2.HParamsPluginData(session_end_info=end_info)
        ),
        tensor=metadata.NULL_TENSOR,
    )
    return [start, end]


def write_summaries(log_dir: str | Path, summaries: Iterable[tuple[Any, int]]) -> None:
    """Append ``(Summary, step)`` pairs to a run's TensorBoard folder, in an event file of their
    own (TensorBoard reads every event file of a folder as one run)."""
    from torch.utils.tensorboard.writer import FileWriter

    writer = FileWriter(str(log_dir))
    try:
        for summary, step in summaries:
            writer.add_summary(summary, step)
    finally:
        writer.close()
