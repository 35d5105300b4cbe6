"""Argument checks for constructors: a bad value is a ``ValueError`` saying what is allowed.

Every message reads ``<argument>=<value> is invalid: <what is allowed>``. That is the fork
contract's convention: a task that built the object from a config turns the message into the
one-line ``<config key>=<value> is invalid: ...`` error (:func:`mlplab.tasks.common.instantiate`).
"""

from __future__ import annotations

import math


def invalid(name: str, value: object, allowed: str) -> ValueError:
    """The ``ValueError`` for argument ``name``: ``name=<repr(value)> is invalid: <allowed>``."""
    return ValueError(f"{name}={value!r} is invalid: {allowed}")


def is_int(value: object) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    optional: bool = False,
) -> int | None:
    """Return ``value`` if it is an integer in [minimum, maximum] (or None when ``optional``).

    Raises:
        ValueError: ``name=value is invalid: must be an integer >= minimum ...``.
    """
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
    if not is_int(value):
        raise invalid(name, value, allowed)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise invalid(name, value, allowed)
    return value


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> float | None:
    """Return ``float(value)`` if it is a finite number in the interval given by low and high.

    Raises:
        ValueError: ``name=value is invalid: must be a number in (low, high] ...``.
    """
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
    if not is_number(value) or not math.isfinite(value):
        raise invalid(name, value, allowed)
    if low is not None and (value < low or (low_open and value == low)):
        raise invalid(name, value, allowed)
    if high is not None and (value > high or (high_open and value == high)):
        raise invalid(name, value, allowed)
    return float(value)
