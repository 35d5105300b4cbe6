"""The tutorial's Coding Exercise 1: a 1-D function built as a weighted sum of shifted ReLUs.

For N training points ``(x_i, y_i)`` sorted by x, one ReLU of slope 1 is placed with its kink at
each point but the last (bias ``b_i = -x_i``). Its combination weight is the change of slope
between the linear segment that starts at ``x_i`` and the one before it, so the sum is the
piecewise-linear interpolant of the points. Everything is vectorised over ReLUs and evaluation
points.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_points(name: str, values: Tensor) -> Tensor:
    """Return ``values`` as a 1-D floating tensor, accepting shape (N,) or the tutorial's (N, 1)."""
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"{name} has shape {tuple(values.shape)}: {name} must have shape (N,) or (N, 1)"
        )
    if not values.is_floating_point():
        values = values.to(torch.get_default_dtype())
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values: all values must be finite")
    return values


def _check_training_data(x_train: Tensor, y_train: Tensor) -> tuple[Tensor, Tensor]:
    """Validate the training points and return them as 1-D floating tensors of a common dtype."""
    x_train = _check_points("x_train", torch.as_tensor(x_train))
    y_train = _check_points("y_train", torch.as_tensor(y_train))
    if len(x_train) < 2:
        raise ValueError(
            f"x_train has {len(x_train)} point(s): at least 2 are needed to place a ReLU"
        )
    if len(y_train) != len(x_train):
        raise ValueError(
            f"y_train has {len(y_train)} points but x_train has {len(x_train)}: they must match"
        )
    steps = torch.diff(x_train)
    if (steps == 0).any():
        i = int(torch.nonzero(steps == 0)[0])
        raise ValueError(
            f"x_train has duplicate values (x_train[{i}] == x_train[{i + 1}] == "
            f"{x_train[i].item()!r}): the x values must be distinct"
        )
    if (steps < 0).any():
        i = int(torch.nonzero(steps < 0)[0])
        raise ValueError(
            f"x_train is not sorted (x_train[{i}]={x_train[i].item()!r} > "
            f"x_train[{i + 1}]={x_train[i + 1].item()!r}): it must be strictly increasing"
        )
    dtype = torch.promote_types(x_train.dtype, y_train.dtype)
    return x_train.to(dtype), y_train.to(dtype)


def relu_weights(x_train: Tensor, y_train: Tensor) -> tuple[Tensor, Tensor]:
    """Biases and combination weights of the N-1 ReLUs that interpolate N training points.

    Args:
        x_train: Strictly increasing x values, shape (N,) or (N, 1), N >= 2.
        y_train: Function values at ``x_train``, same number of points.

    Returns:
        ``(biases, combination_weights)``, each of shape (N-1,): ``biases = -x_train[:-1]`` and
        ``combination_weights[i] = slope_i - slope_{i-1}`` with ``slope_{-1} = 0``.

    Raises:
        ValueError: If the points are not a valid strictly increasing set (message names the
            argument).
    """
    return _relu_weights(*_check_training_data(x_train, y_train))


def _relu_weights(x_train: Tensor, y_train: Tensor) -> tuple[Tensor, Tensor]:
    """``relu_weights`` for points that are already validated 1-D tensors."""
    slopes = torch.diff(y_train) / torch.diff(x_train)
    # The first ReLU starts from a flat line (prev_slope = 0 in the tutorial's loop).
    combination_weights = torch.diff(slopes, prepend=slopes.new_zeros(1))
    return -x_train[:-1], combination_weights


def relu_activations(x: Tensor, biases: Tensor) -> Tensor:
    """Activations ``relu(x + b_i)`` of every ReLU at every point, shape (len(biases), len(x))."""
    return torch.relu(x.unsqueeze(0) + biases.unsqueeze(1))


def evaluate_relu_sum(
    x: Tensor, biases: Tensor, weights: Tensor, offset: float | Tensor = 0.0
) -> Tensor:
    """Evaluate ``offset + sum_i weights[i] * relu(x + biases[i])`` on any 1-D grid ``x``.

    Left of the first kink every ReLU is zero, so the sum is the constant ``offset``; right of the
    last training point it continues the last segment's line.

    Args:
        x: Evaluation points, shape (M,).
        biases: ReLU biases, shape (K,).
        weights: Combination weights, shape (K,).
        offset: Added to the sum; ``y_train[0]`` makes the sum pass through the first point.

    Returns:
        The sum at each point, shape (M,).
    """
    return _weighted_sum(relu_activations(x, biases), weights, offset)


def _weighted_sum(relu_acts: Tensor, weights: Tensor, offset: float | Tensor) -> Tensor:
    """Combine ReLU activations (K, M) with weights (K,) into the function values (M,)."""
    return weights @ relu_acts + offset


def approximate_function(
    x_train: Tensor, y_train: Tensor, num_points: int = 1000
) -> tuple[Tensor, Tensor, Tensor]:
    """Approximate a 1-D function by a weighted sum of ReLUs (the tutorial's Coding Exercise 1).

    The tutorial's solution returns ``combination_weights @ relu_acts``, which is 0 at
    ``x_train[0]``; here ``y_train[0]`` is added so the result interpolates the training points
    exactly for any function. For ``y_train[0] == 0`` (the tutorial's ``sin`` on [0, 2*pi]) the
    result is identical to the tutorial's.

    Args:
        x_train: Strictly increasing training inputs, shape (N,) or (N, 1), N >= 2.
        y_train: Training targets, same number of points.
        num_points: Number of evaluation points between ``min(x_train)`` and ``max(x_train)``.

    Returns:
        ``(y_hat, relu_acts, x)``: the approximation on the grid, shape (num_points,); the ReLU
        activations, shape (N-1, num_points); the grid, shape (num_points,).

    Raises:
        ValueError: For unsorted or duplicate ``x_train``, fewer than 2 points, mismatched shapes or
            ``num_points < 2``.
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points={num_points!r} is invalid: it must be an integer >= 2")
    x_train, y_train = _check_training_data(x_train, y_train)
    biases, combination_weights = _relu_weights(x_train, y_train)
    # x_train is sorted, so its ends are the tutorial's min(x_train) and max(x_train).
    x = torch.linspace(x_train[0].item(), x_train[-1].item(), num_points, dtype=x_train.dtype)
    # Activations are computed once and returned, so combine them rather than re-evaluating.
    relu_acts = relu_activations(x, biases)
    y_hat = _weighted_sum(relu_acts, combination_weights, y_train[0])
    return y_hat, relu_acts, x
