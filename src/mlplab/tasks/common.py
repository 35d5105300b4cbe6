"""What every Hydra task shares: building configured objects, run records, one-line errors.

This is the only place that knows how a run ends: a task body returns its metrics or raises;
:func:`run_task` writes ``metrics.json`` atomically either way, prints failures as one line, and
exits non-zero (a failed multirun job raises once its record is written: every record of the job
says failed, and mlplab's sweepers go on with the other jobs). Errors are
the frameworks' own, shortened: :func:`instantiate` turns a constructor's exception into
``key=value is invalid: ...``, :func:`console_main` turns Hydra's composition errors into one line.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import math
import os
import re
import secrets
import shlex
import signal
import struct
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from mlplab import checks
from mlplab.io import atomic_write
from mlplab.tasks import dashboard

log = logging.getLogger("mlplab")

ROOT_DIR = Path(__file__).resolve().parents[3]
CONF_DIR = ROOT_DIR / "conf"
# Unique per process: two runs started in the same second never share an output folder.
RUN_UID = f"{os.getpid():x}{secrets.token_hex(2)}"

# Resolvers used by conf/paths and conf/hydra. Cached so a config resolves them once.
if not OmegaConf.has_resolver("mlplab_root"):
    OmegaConf.register_new_resolver("mlplab_root", lambda: str(ROOT_DIR), use_cache=True)
if not OmegaConf.has_resolver("mlplab_uid"):
    OmegaConf.register_new_resolver("mlplab_uid", lambda: RUN_UID, use_cache=True)
# conf/logger/tensorboard.yaml's run group and name; not cached, they differ per job.
dashboard.register_resolvers()


# Set by runtime.pass_job_to_ranks in a multirun job; read by rank_job_argv in DDP ranks.
JOB_OVERRIDES_ENV = "MLPLAB_JOB_OVERRIDES"
JOB_DIR_ENV = "MLPLAB_JOB_DIR"
# Hydra flags that take a value, kept when a DDP rank's command line is rebuilt.
_VALUE_FLAGS = ("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name")


class ConfigError(ValueError):
    """A config value is wrong: the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)} is invalid: {allowed}")


class TaskError(RuntimeError):
    """A run cannot go on for a reason outside the config (bad file, diverged loss)."""


class JobFailedError(TaskError):
    """A multirun job failed and was recorded as failed (its one-line error is the message)."""


class Interrupted(BaseException):
    """The run was stopped by a signal: Ctrl-C's SIGINT, or the SIGTERM a scheduler sends.

    A BaseException, as KeyboardInterrupt and Lightning's SIGTERMException are: raised from a
    signal handler anywhere, it must pass the ``except Exception`` of the code it interrupts.

    Args:
        signum: The signal.
        detail: Where the run stopped (``at step 32, in epoch 2 (...)``), for the message.
        resume: The shell command that goes on with the run; None: run the same command again.
        metrics: What the run had reached (``global_step``, ``epochs``), for metrics.json.

    Attributes:
        exit_code: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell
            reports a process that a signal ended.
    """

    def __init__(
        self,
        signum: int,
        detail: str = "",
        resume: str | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        self.signum, self.resume, self.metrics = int(signum), resume, metrics or {}
        self.exit_code = 128 + self.signum
        self.signal_name = signal.Signals(self.signum).name
        super().__init__(f"interrupted by {self.signal_name}{' ' + detail if detail else ''}")


def _show(value: object) -> str:
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value)
    return repr(value)


_MISSING = object()


def get(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s value at dotted ``key``; a missing or unresolvable key is a ConfigError."""
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
    except Exception as err:  # interpolation errors, missing mandatory values
        raise ConfigError(key, "???", f"cannot be resolved ({err})".replace("\n", " ")) from err
    if value is _MISSING:
        raise ConfigError(key, None, "the key is missing from the config")
    return value


def _checked(key: str, value: Any, check: Callable[..., Any], *args: Any) -> Any:
    """``check(key, value, *args)`` from :mod:`mlplab.checks`, its ValueError as a ConfigError."""
    try:
        return check(key, value, *args)
    except ValueError as err:
        allowed = str(err).removeprefix(f"{key}={value!r} is invalid: ")
        raise ConfigError(key, value, allowed) from None


def check_int(
    cfg: DictConfig,
    key: str,
    minimum: int | None = None,
    maximum: int | None = None,
    optional: bool = False,
) -> int | None:
    """Require an integer within [minimum, maximum] (or None when ``optional``)."""
    return _checked(key, get(cfg, key), checks.check_int, minimum, maximum, optional)


# Lightning's seed_everything and numpy take seeds in [0, 2**32 - 1]; outside it Lightning
# fails deep inside the run (or picks a random seed), so a task refuses the value up front.
SEED_MAX = 2**32 - 1


def check_seed(cfg: DictConfig, key: str = "seed") -> int:
    """Require a seed in [0, 2**32 - 1], the range numpy and ``pl.seed_everything`` accept.

    Raises:
        ConfigError: ``seed=<value> is invalid: must be an integer >= 0 and <= 4294967295``.
    """
    return check_int(cfg, key, minimum=0, maximum=SEED_MAX)


def check_float(
    cfg: DictConfig,
    key: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> float | None:
    """Require a finite number in the interval given by low/high (open or closed ends)."""
    value = get(cfg, key)
    return _checked(key, value, checks.check_number, low, high, low_open, high_open, optional)


def check_choice(cfg: DictConfig, key: str, choices: Iterable[str]) -> str:
    """Require one of ``choices``."""
    value = get(cfg, key)
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, value, f"must be one of {', '.join(map(str, choices))}")
    return value


def check_bool(cfg: DictConfig, key: str) -> bool:
    """Require true or false."""
    value = get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(key, value, "must be true or false")
    return value


def check_threads(cfg: DictConfig, key: str = "threads") -> int | str:
    """Require ``auto`` or an integer >= 1 (torch intra-op threads)."""
    value = get(cfg, key)
    if value == "auto" or (checks.is_int(value) and value >= 1):
        return value
    raise ConfigError(key, value, "must be 'auto' or an integer >= 1 (torch intra-op threads)")


def check_checkpoint_file(key: str, value: str, allowed: str) -> Path:
    """Require ``value`` to name an existing checkpoint file, before any work is set up.

    Args:
        key: The config key (``ckpt_path``).
        value: Its value, a path (``~`` expanded; a relative one from the working directory).
        allowed: What the key takes, for the message (``must be the path of a .ckpt file ...``).

    Returns:
        The path, ``~`` expanded.

    Raises:
        ConfigError: ``ckpt_path='x.ckpt' is invalid: no such file (/abs/x.ckpt); <allowed>``;
            for a run folder holding ``checkpoints/last.ckpt``, the message names that file.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    where = "" if str(path) == str(path.absolute()) else f" ({path.absolute()})"
    if not path.is_dir():
        raise ConfigError(key, value, f"no such file{where}; {allowed}")
    last = path / "checkpoints" / "last.ckpt"
    hint = f" (did you mean {last}?)" if last.is_file() else ""
    raise ConfigError(key, value, f"is a folder{where}, not a file{hint}; {allowed}")


def check_with(cfg: DictConfig, key: str, parse: Callable[[Any], Any]) -> Any:
    """Run ``parse`` on the value; its ValueError becomes a ConfigError naming ``key``."""
    value = get(cfg, key)
    try:
        return parse(value)
    except ValueError as err:
        raise ConfigError(key, value, str(err)) from err


def write_json_atomic(path: Path, data: dict[str, Any]) -> Path:
    """Write JSON to a temporary file beside ``path``, then rename: no reader sees half a file."""

    def write(handle: Any) -> None:
        json.dump(data, handle, indent=2, sort_keys=False, default=_json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())  # the run's verdict should survive a crash of the machine

    return atomic_write(path, write, mode="w")


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _finite_or_none(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: non-finite metrics are written as null."""
    clean: dict[str, Any] = {}
    for key, value in metrics.items():
        if checks.is_number(value) and not math.isfinite(value):
            clean[key] = None
        else:
            clean[key] = value
    return clean


def png_summary(tag: str, png: bytes) -> Any:
    """A TensorBoard image summary holding PNG bytes as they are (no decoding, no re-encoding)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk, right after the signature
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def settle_gc() -> None:
    """Start-up is over: freeze the objects it built and turn the garbage collector back on.

    The console scripts (:mod:`mlplab.tasks.cli`) keep the collector off while torch and Lightning
    are imported; a task calls this where its own work begins (before ``trainer.fit``), so later
    collections scan only what the work allocates. A no-op when the collector is on (in-process
    callers, joblib workers).
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def one_line(err: BaseException) -> str:
    """The error as a single line: its message, or its type when it has none."""
    text = " ".join(str(err).split())
    if isinstance(err, ConfigError | TaskError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _hydra_runtime() -> tuple[Path, list[str], bool]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return Path(hc.runtime.output_dir), list(hc.overrides.task), hc.mode == RunMode.MULTIRUN


# Hydra overrides that place a run or a job: a rerun in the run's own folder sets its own.
_PLACING_OVERRIDES = (
    "hydra.run.dir", "hydra.sweep.", "hydra.mode", "hydra.job.num", "hydra.job.id",
    "hydra/launcher", "hydra.launcher.", "hydra/sweeper", "hydra.sweeper.",
)  # fmt: skip


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("~+")


def config_flags(argv: Sequence[str]) -> list[str]:
    """Hydra's config-location flags of a command line (``--config-dir X``, ``-cn name``)."""
    flags: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in _VALUE_FLAGS:
            flags += [token, next(tokens, "")]
        elif token.startswith(tuple(f"{flag}=" for flag in _VALUE_FLAGS if flag.startswith("--"))):
            flags.append(token)
    return flags


def rerun_command(
    task_name: str,
    output_dir: Path,
    overrides: Sequence[str],
    extra: Sequence[str] = (),
    drop: Sequence[str] = (),
) -> str:
    """The shell command that runs this run (or this job of a sweep) again in its own folder.

    Args:
        task_name: ``train`` for the console script ``mlplab-train``.
        output_dir: The run's folder, passed as ``hydra.run.dir``.
        overrides: The run's own overrides (Hydra's ``overrides.task``).
        extra: Overrides to add (``ckpt_path=last``).
        drop: Keys whose overrides are left out (``ckpt_path``: ``extra`` sets it).

    Returns:
        ``mlplab-<task> [config flags] <overrides> <hydra overrides> hydra.run.dir=<folder>
        <extra>``, each word quoted for a POSIX shell.
    """
    hydra_overrides: list[str] = []
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_overrides = [
            o
            for o in HydraConfig.get().overrides.hydra
            if not _override_key(o).startswith(_PLACING_OVERRIDES)
        ]
    kept = [o for o in overrides if _override_key(o) not in drop]
    words = [
        f"mlplab-{task_name}",
        *config_flags(sys.argv[1:]),
        *kept,
        *hydra_overrides,
        f"hydra.run.dir={Path(output_dir).absolute()}",
        *extra,
    ]
    return " ".join(_shell_word(word) for word in words)


def sweep_resume_command(task_name: str, sweep_dir: Path, argv: Sequence[str]) -> str:
    """The shell command that goes on with a stopped sweep in its own multirun folder.

    Args:
        task_name: ``train`` for the console script ``mlplab-train``.
        sweep_dir: The sweep's folder, passed as ``hydra.sweep.dir``.
        argv: The sweep's command-line arguments (``sys.argv[1:]``): flags, sweeps, launcher.

    Returns:
        ``mlplab-<task> <argv without hydra.sweep.dir and ckpt_path> hydra.sweep.dir=<folder>
        ckpt_path=last``, each word quoted for a POSIX shell: finished jobs re-test, stopped
        ones go on from their ``last.ckpt``, jobs that never started begin.
    """
    replaced = ("hydra.sweep.dir", "ckpt_path")
    kept = [a for a in argv if _override_key(a).lstrip("+~") not in replaced]
    words = [
        f"mlplab-{task_name}",
        *kept,
        f"hydra.sweep.dir={Path(sweep_dir).absolute()}",
        "ckpt_path=last",
    ]
    return " ".join(_shell_word(word) for word in words)


def _shell_word(word: str) -> str:
    """``word`` quoted for a POSIX shell; Hydra's own quotes inside double quotes, readably."""
    quoted = shlex.quote(word)
    if quoted != word and "'" in word and not set('"$`\\!') & set(word):
        return f'"{word}"'
    return quoted


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Interrupted` while a task runs, so that its record is written.

    Python's default for SIGTERM ends the process at once, without a record. While Lightning
    fits, its own handler is installed and calls this one after noting the signal; this one then
    leaves the signal to Lightning, which stops at the end of the batch
    (``SIGTERMException``), so the checkpoints stay whole.
    """

    def handler(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is handler:  # not inside Lightning's handler
            raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a joblib worker's thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Outcome(NamedTuple):
    """A task body's result when it records more than metrics: ``hparams`` go to metrics.json."""

    metrics: dict[str, Any]
    hparams: dict[str, Any]


def run_task(
    cfg: DictConfig,
    body: Callable[[DictConfig, Path], dict[str, Any] | Outcome],
    output_dir: Path | None = None,
    overrides: Sequence[str] | None = None,
    multirun: bool | None = None,
) -> float | None:
    """Run a task body, write ``metrics.json``, and turn failures into one line and an exit code.

    Args:
        cfg: The composed config (``task_name`` and ``optimized_metric`` are read from it).
        body: ``body(cfg, output_dir) -> metrics`` (or an :class:`Outcome`, whose hyper-parameters
            are recorded beside the metrics); raises on failure.
        output_dir, overrides, multirun: Taken from Hydra's runtime when not given.

    Returns:
        The value of ``cfg.optimized_metric`` for Hydra sweepers (None when the run did not
        report it).

    Raises:
        SystemExit: outside a multirun, when the body failed (2 for a config error, else 1).
        JobFailedError: a failed multirun job, after its record is written, so that Hydra's
            job return, its callbacks, a submitit job and the scheduler all record it failed.
            mlplab's sweepers (``mlplab_grid``, every task's default, and ``mlplab_optuna``)
            go on with the other jobs; Hydra's own basic sweeper would stop at it.
    """
    if output_dir is None or overrides is None or multirun is None:
        hydra_out, hydra_overrides, hydra_multirun = _hydra_runtime()
        output_dir = hydra_out if output_dir is None else output_dir
        overrides = hydra_overrides if overrides is None else overrides
        multirun = hydra_multirun if multirun is None else multirun
    task_name = str(cfg.get("task_name", "task"))
    started = time.time()
    record: dict[str, Any] = {
        "task": task_name,
        "status": "running",
        "error": None,
        "overrides": list(overrides),
        "output_dir": str(output_dir),
        "metrics": {},
    }
    metrics: dict[str, Any] = {}
    error: BaseException | None = None
    try:
        with sigterm_raises():
            result = body(cfg, Path(output_dir))
        if isinstance(result, Outcome):
            metrics, record["hparams"] = result
        else:
            metrics = result
        record["status"] = "ok"
    except KeyboardInterrupt:  # Ctrl-C outside Lightning's fit: the run starts again
        error = Interrupted(signal.SIGINT)
    except (Interrupted, Exception) as err:
        error = err
    if isinstance(error, Interrupted):
        if error.resume is None:
            error.resume = rerun_command(task_name, Path(output_dir), overrides)
        record["status"] = "interrupted"
        record["error"] = str(error)
        record["resume"] = error.resume
        metrics = error.metrics
    elif error is not None:
        err = error
        record["status"] = "failed"
        record["error"] = one_line(err)
        record["error_type"] = type(err).__name__
        if not isinstance(err, ConfigError | TaskError):
            # The console gets one line; the whole story goes beside metrics.json.
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "traceback.txt").write_text(
                "".join(traceback.format_exception(err))
            )
    record["metrics"] = _finite_or_none(metrics)
    record["wall_time_s"] = round(time.time() - started, 3)
    # Under DDP the other ranks re-run this command into the same folder: rank 0 alone reports.
    if os.environ.get("LOCAL_RANK", "0") != "0" and error is None:
        return None
    write_json_atomic(Path(output_dir) / "metrics.json", record)
    if isinstance(error, Interrupted):
        # One line, the command last: a scheduler's log ends with what to run next. A signal
        # stops a sweep too (the exit status a shell gives a process the signal ended).
        print(
            f"mlplab-{task_name}: {error}; resume with: {error.resume}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(error.exit_code)
    if error is not None:
        print(f"mlplab-{task_name}: error: {record['error']}", file=sys.stderr, flush=True)
        if not multirun:
            raise SystemExit(2 if isinstance(error, ConfigError) else 1)
        # Not chained to the run's error: Hydra keeps this exception in the job's return until
        # the sweep ends, and the run's error holds the frames of its trainer and data.
        del error, err
        raise JobFailedError(record["error"])
    if not multirun:  # a sweep names its folder in its summary line instead
        log.info("run folder: %s", Path(output_dir).absolute())
    key = cfg.get("optimized_metric")
    value = metrics.get(key) if key else None
    return float(value) if checks.is_number(value) else None


# Hydra's override grammar reads Name(...) as a call of one of its own functions; anything else
# written that way is an activation spec meant as a string.
_HYDRA_FUNCTIONS = {
    "choice", "range", "interval", "glob", "sort", "shuffle", "tag", "str", "int", "float",
    "bool", "json_str", "extend_list",
}  # fmt: skip


def split_top_level(value: str) -> list[str]:
    """Split a command-line value on commas outside brackets of any kind and quotes."""
    parts, depth, quote, current = [], 0, "", []
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def quote_call_values(argv: Sequence[str]) -> list[str]:
    """Quote ``Name(args)`` values so Hydra passes activation specs through as strings.

    ``model.activation=LeakyReLU(0.1)`` becomes ``model.activation='LeakyReLU(0.1)'`` and
    ``model.activation=ReLU,LeakyReLU(0.1)`` a sweep over two strings; Hydra's own sweep
    functions (``choice(...)``, ``range(...)``) and quoted values are left as they are.
    """
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-") or "(" not in value:
            quoted.append(arg)
            continue
        parts = []
        for part in split_top_level(value):
            name = part.split("(", 1)[0].strip()
            is_call = "(" in part and name.isidentifier() and name not in _HYDRA_FUNCTIONS
            parts.append(f"'{part}'" if is_call and part[:1] not in "'\"" else part)
        quoted.append(f"{key}={','.join(parts)}")
    return quoted


def rank_job_argv(argv: Sequence[str]) -> list[str] | None:
    """The command line of a DDP rank that Lightning started inside a multirun job, else None.

    Lightning starts rank k of a ``ddp`` run by re-running the command line of rank 0, which in
    a multirun would be the whole sweep. Rank 0's job passes its overrides and folder in the
    environment (``runtime.pass_job_to_ranks``); the rank then runs that one job as a single run
    in the same folder, with Hydra's config flags (``--config-dir`` ...) as they were.
    """
    local_rank = os.environ.get("LOCAL_RANK", "0")
    overrides = os.environ.get(JOB_OVERRIDES_ENV)
    if local_rank == "0" or overrides is None or not ({"-m", "--multirun"} & set(argv)):
        return None
    flags: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token in _VALUE_FLAGS:
            flags += [token, next(tokens, "")]
        elif token.startswith("-") and token not in ("-m", "--multirun"):
            flags.append(token)
    job_dir = os.environ[JOB_DIR_ENV]
    return [
        *flags,
        *json.loads(overrides),
        f'hydra.run.dir="{job_dir}"',
        "hydra.output_subdir=null",
        f"hydra.job.name=ddp_rank_{local_rank}",
    ]


def instantiate(
    node: Any, key: str, probe: Callable[[Any], object] | None = None, **kwargs: Any
) -> Any:
    """Build what the config ``node`` at config key ``key`` describes, with Hydra's ``instantiate``.

    Nested containers reach the constructor as plain dicts and lists (``_convert_="all"``), so
    what it records with ``save_hyperparameters`` loads with ``torch.load(weights_only=True)``.
    Validation is the constructor's own; whatever it raises becomes one :class:`ConfigError`
    naming the argument at fault, found in this order: the argument its message starts with
    (``name=value is invalid: ...``, mlplab's convention), an argument the target does not take,
    the argument without which the object builds (the node is built again, one argument left
    out at a time), else the node itself.

    Args:
        node: A config with ``_target_`` (a DictConfig or a dict).
        key: Its config path, for the messages (``data``, ``callbacks.model_checkpoint``).
        probe: Called with the built object, to exercise a ``_partial_`` factory (an optimizer
            on a probe tensor) so that its arguments are checked before any work.
        kwargs: Passed to the target (objects the config cannot hold: a logger, callbacks).

    Raises:
        ConfigError: ``key.argument=value is invalid: <the constructor's message>``.
    """
    import hydra

    if not isinstance(node, DictConfig | dict) or "_target_" not in node:
        raise ConfigError(key, node, "must be a config whose _target_ names what to build")

    def build(config: Any) -> Any:
        built = hydra.utils.instantiate(config, _convert_="all", **kwargs)
        if probe is not None:
            probe(built)
        return built

    try:
        return build(node)
    except ConfigError:
        raise
    except Exception as err:
        raise _blame(node, key, err, build, kwargs) from err


def _blame(
    node: Any, key: str, err: Exception, build: Callable[[Any], Any], kwargs: dict[str, Any]
) -> ConfigError:
    """The ConfigError for ``err``, raised while building ``node``: see :func:`instantiate`."""
    import hydra
    from hydra.errors import InstantiationException

    cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
    target_name = str(node["_target_"])
    try:
        target = hydra.utils.get_object(target_name)
    except Exception as exc:
        return ConfigError(f"{key}._target_", target_name, f"cannot be imported ({one_line(exc)})")
    try:
        plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    except Exception:
        plain = {}
    names = [str(name) for name in plain if not str(name).startswith("_")]
    text = " ".join(str(cause).split())
    said = re.match(r"(\w+)=.*? is invalid: (.*)", text)
    if said and said.group(1) in names:
        return ConfigError(f"{key}.{said.group(1)}", plain[said.group(1)], said.group(2))
    if isinstance(cause, TypeError | KeyError | AttributeError | IndexError):
        text = f"{type(cause).__name__}: {text}"
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        parameters = {}
    if parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        for name in names:
            if name not in parameters:
                takes = ", ".join(p for p in parameters if p not in ("self", *kwargs))
                allowed = f"is not an argument of {target_name} (it takes {takes})"
                return ConfigError(f"{key}.{name}", plain[name], allowed)
    quiet = logging.root.manager.disable
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.CRITICAL)  # a Trainer logs its devices each time it is built
            try:
                build({k: v for k, v in plain.items() if k != name})
            except Exception:
                continue
            finally:
                logging.disable(quiet)
        return ConfigError(f"{key}.{name}", plain[name], text)
    return ConfigError(key, target_name, text)


def hydra_error_line(err: BaseException) -> str:
    """One line for an error Hydra raised while composing a config or parsing an override.

    An option no searched folder holds names the override, the options there are and the
    absolute config folders searched (from Hydra's own message).
    """
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(err)
    folders = [str(Path(path).absolute()) for path in re.findall(r"path=file://(\S+)", text)]
    where = ", ".join(folders) or "the config search path"
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        if not group:
            return f"cannot find the primary config {option!r} in {where}"
        if err.options:
            allowed = f"must be one of {', '.join(err.options)} (the {group}/ options in {where})"
        else:
            allowed = f"there are no {group}/ options in {where}"
        return str(ConfigError(group, option, allowed))
    if isinstance(err, OverrideParseException):
        return f"cannot parse {err.override!r}: {str(err.message).splitlines()[0]}"
    line = " ".join(text.split())
    if err.__cause__ is not None:
        line += f" ({str(err.__cause__).splitlines()[0]})"
    return line


# "Could not override 'trainer.max_epoch'" (a key the config lacks), "Could not override
# 'optimzer'. No match in the defaults list." (a group it lacks), "Could not delete from config.
# 'sed' does not exist."; Hydra's own "Did you mean to override one of ..." already suggests.
_UNKNOWN_OVERRIDE = re.compile(
    r"Could not override '([^']+)'|Could not delete from config\. '([^']+)' does not exist"
)
# Close enough to suggest: difflib's similarity ratio, 2 * matching characters / both lengths
# (max_epoch/max_epochs 0.95, sed/seed 0.86; min_epochs for max_epoch, 0.74, is not suggested).
_CLOSE = 0.75
# Hydra's flags that take a value (argparse, in hydra/_internal/utils.py's get_args_parser).
_HYDRA_VALUE_FLAGS = (*_VALUE_FLAGS, "-c", "--cfg", "-p", "--package", "--experimental-rerun")


class CommandLine(NamedTuple):
    """What Hydra's command line says about where the config comes from, and its overrides."""

    config_name: str | None
    config_dir: str | None
    config_path: str | None
    overrides: list[str]


def parse_command_line(argv: Sequence[str]) -> CommandLine:
    """Split a task's arguments as Hydra's argparse does: config flags and overrides.

    ``--config-name``/``-cn``, ``--config-dir``/``-cd`` and ``--config-path``/``-cp`` (also as
    ``--flag=value``; the last one given wins, as with argparse); every other word that is not
    a flag or a flag's value is an override.
    """
    flags: list[tuple[str, str]] = []
    overrides: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        name, eq, value = token.partition("=")
        if token.startswith("-") and name in _HYDRA_VALUE_FLAGS:
            flags.append((name, value if eq else next(tokens, "")))
        elif not token.startswith("-"):
            overrides.append(token)

    def last(*names: str) -> str | None:
        return next((value for name, value in reversed(flags) if name in names), None)

    return CommandLine(
        config_name=last("-cn", "--config-name"),
        config_dir=last("-cd", "--config-dir"),
        config_path=last("-cp", "--config-path"),
        overrides=overrides,
    )


def _one_value_each(overrides: Sequence[str], drop: str) -> list[str]:
    """``overrides`` without those of key ``drop``, each sweep (``seed=1,2``) as its first value.

    A sweep that has no first value (Optuna's ``interval(0.1, 1)``) is left out.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    kept: list[str] = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group.split("@")[0] == drop:
            continue
        if not override.is_sweep_override():
            kept.append(str(override.input_line))
            continue
        try:
            first = next(override.sweep_string_iterator())
        except Exception:  # an interval or a glob: no first value to compose
            continue
        kept.append(f"{override.get_key_element()}={first}")
    return kept


def _with_config_dir(overrides: list[str], config_dir: str) -> list[str]:
    """``overrides`` with ``config_dir`` first in ``hydra.searchpath``, as ``--config-dir`` is
    searched before the folders ``hydra.searchpath`` adds."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    paths = [f"file://{Path(config_dir).absolute()}"]
    for override in parsed:
        if override.key_or_group == "hydra.searchpath":
            paths += [str(path) for path in override.value()]  # type: ignore[union-attr]
    others = [str(o.input_line) for o in parsed if o.key_or_group != "hydra.searchpath"]
    quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
    return [*others, f"hydra.searchpath=[{quoted}]"]


def _compose_without(command: CommandLine, task_name: str, key: str) -> DictConfig:
    """The config Hydra composes for ``command`` without the override of ``key``, Hydra's own
    config included (``hydra.runtime.choices`` names every config group of the defaults list).

    Raises:
        ValueError: for ``--config-path``, whose relative form Hydra resolves against the
            calling module (not followed here).
        Exception: whatever Hydra raises composing it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if command.config_path is not None:
        raise ValueError("--config-path is not followed")
    overrides = _one_value_each(command.overrides, key)
    if command.config_dir is not None:
        overrides = _with_config_dir(overrides, command.config_dir)
    GlobalHydra.instance().clear()  # the failed run's; compose needs its own
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(
                command.config_name or task_name, overrides=overrides, return_hydra_config=True
            )
    finally:
        GlobalHydra.instance().clear()


def closest_keys(cfg: DictConfig, key: str, groups: Iterable[str] = ()) -> list[str]:
    """Dotted keys of ``cfg`` close to ``key``, a key ``cfg`` lacks; empty when ``cfg`` has it.

    The first part of ``key`` that ``cfg`` lacks is matched (``difflib.get_close_matches``)
    against the keys of the node above it, the rest of ``key`` kept: ``trainr.max_epochs``
    gives ``trainer.max_epochs``. At the top, ``groups`` (config groups such as ``debug``, which
    the config holds no key for while their option is null) are candidates too.
    """
    import difflib

    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return []
        names = [str(name) for name in node]
        if part in names:
            # An interpolation that cannot resolve here (${hydra:...}) ends the walk.
            node = OmegaConf.select(node, part, throw_on_resolution_failure=False)
            continue
        if depth == 0:
            names += [group for group in groups if group not in names]
        prefix, rest = parts[:depth], parts[depth + 1 :]
        return [
            ".".join([*prefix, match, *rest])
            for match in difflib.get_close_matches(part, names, cutoff=_CLOSE)
        ]
    return []


def did_you_mean(err: BaseException, argv: Sequence[str], task_name: str) -> str | None:
    """``did you mean trainer.max_epochs?`` for an override of a key or group Hydra cannot find.

    The keys come from composing the same config (config name, ``--config-dir``,
    ``hydra.searchpath``, the other overrides) with Hydra's compose API. None when Hydra already
    suggests, nothing is close, or the config cannot be composed without the override.
    """
    text = str(err)
    match = _UNKNOWN_OVERRIDE.search(text)
    if match is None or "Did you mean" in text:
        return None
    key = (match.group(1) or match.group(2)).split("@")[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = _compose_without(parse_command_line(argv), task_name, key)
        groups = [str(group) for group in cfg.hydra.runtime.choices]
        matches = closest_keys(cfg, key, groups)
    except Exception:  # a suggestion is a bonus: Hydra's line alone stands
        return None
    if not matches:
        return None
    listed = matches[0] if len(matches) == 1 else f"{', '.join(matches[:-1])} or {matches[-1]}"
    return f"did you mean {listed}?"


def checkout_note(task_name: str, cwd: Path | None = None) -> str | None:
    """A note when the working directory is inside another mlplab checkout than the one running.

    Configs (``conf/``) and outputs come from the checkout this Python imports mlplab from
    (:data:`ROOT_DIR`), which a virtualenv installed from another checkout makes a different one.
    """
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / f"{task_name}.yaml").is_file() and (folder / "src/mlplab").is_dir():
            if folder == ROOT_DIR:
                return None
            return (
                f"mlplab-{task_name}: note: this runs the mlplab of {ROOT_DIR} (configs from "
                f"{CONF_DIR}, outputs under paths.log_dir, by default {ROOT_DIR / 'outputs'}), "
                f"not of {folder} where you are; "
                f"install that checkout (make install) or set PYTHONPATH={folder / 'src'}"
            )
    return None


def missing_configs_error(task_name: str) -> str | None:
    """The error line when mlplab's ``conf/`` is not beside its ``src/`` (a non-editable install).

    mlplab is a template run from its checkout: configs come from ``<checkout>/conf`` and outputs
    go to ``<checkout>/outputs``. ``pip install <checkout>`` (not editable) copies only the Python
    package into site-packages, where there is no ``conf/`` beside it.
    """
    if (CONF_DIR / f"{task_name}.yaml").is_file():
        return None
    return (
        f"mlplab-{task_name}: error: no config {CONF_DIR / f'{task_name}.yaml'}: mlplab runs from "
        "its checkout (conf/ beside src/); install the checkout editable: make install, or "
        "pip install -e <checkout>"
    )


def console_main(hydra_main: Callable[[], Any], task_name: str) -> None:
    """Console-script entry: quote activation specs, run Hydra, shorten its errors to one line.

    Hydra composes the config (its search path, ``--config-dir``, ``hydra.searchpath``,
    multiruns, all as Hydra documents them). ``HYDRA_FULL_ERROR=1`` makes Hydra raise what
    goes wrong instead of printing it; a composition error then ends here as one line and exit
    status 2 (set ``HYDRA_FULL_ERROR=1`` yourself to see Hydra's whole report).
    """
    rank_argv = rank_job_argv(sys.argv[1:])
    if rank_argv is not None:
        sys.argv[1:] = rank_argv
        hydra_main()
        return
    sys.argv[1:] = quote_call_values(sys.argv[1:])
    missing = missing_configs_error(task_name)
    if missing is not None:
        print(missing, file=sys.stderr, flush=True)
        raise SystemExit(2)
    note = checkout_note(task_name)
    if note is not None:
        print(note, file=sys.stderr, flush=True)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    wants_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as err:
        if wants_full_error:
            raise
        line = hydra_error_line(err)
        suggestion = did_you_mean(err, sys.argv[1:], task_name)
        if suggestion is not None:
            line = f"{line.removesuffix('.')}; {suggestion}"
        print(f"mlplab-{task_name}: error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        if not wants_full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
