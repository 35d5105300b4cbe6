"""What every Hydra task shares: config checks, run records (metrics.json) and failure handling.

This is the only place that knows how a run ends: a task body returns its metrics or raises;
:func:`run_task` writes ``metrics.json`` atomically either way, prints failures as one line, and
exits non-zero (in a multirun the job is recorded as failed and the sweep goes on).
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import os
import secrets
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mlplab.io import atomic_write

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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(
    cfg: DictConfig,
    key: str,
    minimum: int | None = None,
    maximum: int | None = None,
    optional: bool = False,
) -> int | None:
    """Require an integer within [minimum, maximum] (or None when ``optional``)."""
    value = get(cfg, key)
    if value is None and optional:
        return None
    bounds = " and ".join(
        part
        for part in (
            f">= {minimum}" if minimum is not None else "",
            f"<= {maximum}" if maximum is not None else "",
        )
        if part
    )
    allowed = f"must be an integer{' ' + bounds if bounds else ''}{' or null' if optional else ''}"
    if not _is_int(value):
        raise ConfigError(key, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(key, value, allowed)
    return value


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
    if value is None and optional:
        return None
    lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
    hi = "" if high is None else f"{high}" + (")" if high_open else "]")
    if low is not None and high is not None:
        allowed = f"must be a number in {lo}, {hi}"
    elif low is not None:
        allowed = f"must be a number {'>' if low_open else '>='} {low}"
    elif high is not None:
        allowed = f"must be a number {'<' if high_open else '<='} {high}"
    else:
        allowed = "must be a finite number"
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(key, value, allowed)
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(key, value, allowed)
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(key, value, allowed)
    return float(value)


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


def check_int_list(
    cfg: DictConfig, key: str, minimum: int = 1, optional: bool = False
) -> list | None:
    """Require a non-empty list of integers >= minimum (or None when ``optional``)."""
    value = get(cfg, key)
    if value is None and optional:
        return None
    allowed = f"must be a list of integers >= {minimum}{' or null' if optional else ''}"
    if not isinstance(value, ListConfig | list | tuple):
        raise ConfigError(key, value, allowed)
    items = list(value)
    if not all(_is_int(v) and v >= minimum for v in items):
        raise ConfigError(key, value, allowed)
    return items


def check_threads(cfg: DictConfig, key: str = "threads") -> int | str:
    """Require ``auto`` or an integer >= 1 (torch intra-op threads)."""
    value = get(cfg, key)
    if value == "auto" or (_is_int(value) and value >= 1):
        return value
    raise ConfigError(key, value, "must be 'auto' or an integer >= 1 (torch intra-op threads)")


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
        if _is_number(value) and not math.isfinite(value):
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


def run_task(
    cfg: DictConfig,
    body: Callable[[DictConfig, Path], dict[str, Any]],
    output_dir: Path | None = None,
    overrides: Sequence[str] | None = None,
    multirun: bool | None = None,
) -> float | None:
    """Run a task body, write ``metrics.json``, and turn failures into one line and an exit code.

    Args:
        cfg: The composed config (``task_name`` and ``optimized_metric`` are read from it).
        body: ``body(cfg, output_dir) -> metrics``; raises on failure.
        output_dir, overrides, multirun: Taken from Hydra's runtime when not given.

    Returns:
        The value of ``cfg.optimized_metric`` for Hydra sweepers; None for a failed multirun
        job, which Optuna records as a failed trial (a NaN would end its search).
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
        metrics = body(cfg, Path(output_dir))
        record["status"] = "ok"
    except (Exception, KeyboardInterrupt) as err:
        error = err
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
    if error is not None:
        print(f"mlplab-{task_name}: error: {record['error']}", file=sys.stderr, flush=True)
        if isinstance(error, KeyboardInterrupt):
            raise error
        if not multirun:
            raise SystemExit(2 if isinstance(error, ConfigError) else 1)
        return None
    key = cfg.get("optimized_metric")
    value = metrics.get(key) if key else None
    return float(value) if _is_number(value) else None


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Config groups under ``conf_dir`` (outside ``hydra/``) and their options."""
    groups: dict[str, list[str]] = {}
    for folder in sorted(p for p in conf_dir.rglob("*") if p.is_dir()):
        name = folder.relative_to(conf_dir).as_posix()
        if name == "hydra" or name.startswith("hydra/"):
            continue  # Hydra and its plugins add options here that are not files of ours
        groups[name] = sorted(p.stem for p in folder.glob("*.yaml"))
    return groups


def check_group_choices(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Refuse ``group=option`` command-line overrides naming an option that does not exist.

    Hydra would fail too, but with a multi-line report; this gives the one line our users expect.
    Sweep values (``a,b``) are checked one by one; sweep functions (``choice(...)``) are left alone.
    """
    groups = config_groups(conf_dir)
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key.startswith("override "):
            key = key.removeprefix("override ").strip()
        if key not in groups or "(" in value:
            continue
        for option in value.split(","):
            option = option.strip()
            if option in ("null", "") or option in groups[key]:
                continue
            raise ConfigError(key, option, f"must be one of {', '.join(groups[key])} (conf/{key}/)")


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


def _is_sweep_value(value: str) -> bool:
    parts = split_top_level(value)
    name = value.split("(", 1)[0].strip()
    return len(parts) > 1 or name in _HYDRA_FUNCTIONS


def _default_options(primary: DictConfig) -> dict[str, str]:
    """``group -> option`` of the plain entries of a primary config's defaults list."""
    options = {}
    for entry in primary.get("defaults") or []:
        if isinstance(entry, DictConfig):
            for group, option in entry.items():
                if isinstance(option, str):
                    options[str(group)] = option
    return options


def _is_global_package(option_file: Path) -> bool:
    """Whether a group option file starts with ``# @package _global_`` (it may set any key).

    A missing file counts as global: nothing is known about it, so Hydra composes and reports.
    """
    if not option_file.is_file():
        return True
    with option_file.open() as handle:
        return any("@package _global_" in line for line in itertools.islice(handle, 5))


def _has_scalar_key(node: dict[str, Any], key: str) -> bool:
    """Whether ``key`` holds a plain value in ``node``: an override can only replace it."""
    value: Any = node
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return not isinstance(value, dict | list)


def _all_keys_known(config_name: str, overrides: Sequence[str], conf_dir: Path) -> bool:
    """Every override sets a key of the primary config file or of a chosen group option file,
    or picks a config-group option; an option that may change other groups makes it unknown."""
    groups = config_groups(conf_dir)
    primary_node = OmegaConf.load(conf_dir / f"{config_name}.yaml")
    chosen = _default_options(primary_node)
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if key in groups and sep:
            if value and value != "null" and _is_global_package(conf_dir / key / f"{value}.yaml"):
                return False  # e.g. experiment=...: it may re-pick other groups' options
            chosen[key] = value

    # Plain containers, unresolved: interpolations to other groups cannot resolve in one file.
    def plain(node: DictConfig) -> dict[str, Any]:
        return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]

    primary = plain(primary_node)
    options: dict[str, dict[str, Any]] = {}  # group -> its chosen option file, loaded once
    for arg in overrides:
        key, sep, _ = arg.partition("=")
        if not sep or key.startswith(("+", "~")) or "(" in arg:
            return False
        if key in groups:  # its option was checked by check_group_choices
            continue
        if _has_scalar_key(primary, key):
            continue
        group, _, rest = key.partition(".")
        option = chosen.get(group)
        if group not in groups or not option or option == "null" or not rest:
            return False
        if group not in options:
            options[group] = plain(OmegaConf.load(conf_dir / group / f"{option}.yaml"))
        if not _has_scalar_key(options[group], rest):
            return False
    return True


def check_composes(config_name: str, argv: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose ``config_name`` with the command-line overrides, as Hydra is about to.

    Hydra reports a bad override (an unknown key without ``+``, a type clash) in several lines;
    this says it in one. Command lines with flags (``-m``, ``--cfg``) or sweep values are left to
    Hydra, which parses those itself.

    Raises:
        ValueError: Hydra's message, on one line.
    """
    overrides = list(argv)
    if not overrides or any(
        a.startswith("-") or _is_sweep_value(a.partition("=")[2]) for a in overrides
    ):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise ValueError(f"cannot parse {err.override!r}: {' '.join(str(err).split())}") from None
    if _all_keys_known(config_name, overrides, conf_dir):
        return  # nothing Hydra could refuse: skip the extra composition (~0.1 s of start-up)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        cause = f" ({str(err.__cause__).splitlines()[0]})" if err.__cause__ else ""
        where = getattr(err, "override", None)  # parse errors know the override, not the key
        prefix = f"cannot parse {where!r}: " if where else ""
        raise ValueError(prefix + " ".join(str(err).split()) + cause) from None


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


def console_main(hydra_main: Callable[[], Any], task_name: str) -> None:
    """Console-script entry: quote activation specs, check the overrides, then run Hydra."""
    rank_argv = rank_job_argv(sys.argv[1:])
    if rank_argv is not None:
        sys.argv[1:] = rank_argv
        hydra_main()
        return
    sys.argv[1:] = quote_call_values(sys.argv[1:])
    try:
        check_group_choices(sys.argv[1:])
        check_composes(task_name, sys.argv[1:])
    except ValueError as err:
        print(f"mlplab-{task_name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_main()
