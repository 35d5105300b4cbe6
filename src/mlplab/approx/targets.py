"""Target functions for the ReLU approximation, looked up by name in an allowlist.

A config names its target (``target: sin``); the name is looked up in :data:`TARGETS`, never
evaluated, so only these functions can ever run. Each takes and returns a tensor, element-wise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

TargetFunction = Callable[[Tensor], Tensor]


def _square(x: Tensor) -> Tensor:
    return x**2


def _cubic(x: Tensor) -> Tensor:
    return x**3


def _gaussian(x: Tensor) -> Tensor:
    return torch.exp(-(x**2))


def _step(x: Tensor) -> Tensor:
    # Heaviside step with H(0) = 1, in x's dtype so it mixes with the other targets.
    return (x >= 0).to(x.dtype)


# Name -> element-wise function. The tutorial approximates sin; the others show where a
# piecewise-linear interpolant is exact (relu, abs with a kink on a point) or struggles (step).
TARGETS: dict[str, TargetFunction] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "abs": torch.abs,
    "square": _square,
    "cubic": _cubic,
    "gaussian": _gaussian,
    "exp": torch.exp,
    "step": _step,
}


def get_target(name: str) -> TargetFunction:
    """The target function called ``name``.

    Args:
        name: One of the keys of :data:`TARGETS`.

    Returns:
        An element-wise function of a tensor.

    Raises:
        ValueError: For any other name; the message lists the allowed names.
    """
    if not isinstance(name, str) or name not in TARGETS:
        raise ValueError(f"unknown target {name!r}: must be one of {', '.join(sorted(TARGETS))}")
    return TARGETS[name]
