"""The same approximation learned by gradient descent: a one-hidden-layer ReLU MLP.

The construction in :mod:`mlplab.approx.relu` writes the weights of N-1 ReLUs down; here an MLP
with the same number of hidden ReLUs finds its own by full-batch Adam on the same N points, so the
two can be compared (the universal approximation theorem says such weights exist; it does not say
gradient descent finds them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mlplab.models.mlp import MLP


def _as_column(name: str, values: Tensor) -> Tensor:
    """``values`` as a float32 column (N, 1), accepting shape (N,) or (N, 1)."""
    values = torch.as_tensor(values)
    if values.ndim == 1:
        values = values.unsqueeze(1)
    if values.ndim != 2 or values.shape[1] != 1:
        raise ValueError(
            f"{name} has shape {tuple(values.shape)}: {name} must have shape (N,) or (N, 1)"
        )
    values = values.to(torch.float32)
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values: all values must be finite")
    return values


def fit_relu_mlp(
    x_train: Tensor, y_train: Tensor, steps: int = 5000, lr: float = 1e-2, seed: int = 2021
) -> tuple[MLP, Tensor]:
    """Fit ``MLP("ReLU()", 1, [N - 1], 1)`` to N points by full-batch Adam on the squared error.

    The initial weights come from ``seed`` through a forked RNG, so the caller's global random
    state is left as it was and the same seed always gives the same network.

    Args:
        x_train: Training inputs, shape (N,) or (N, 1), N >= 2.
        y_train: Training targets, same number of points.
        steps: Optimizer steps (each one sees all N points).
        lr: Adam learning rate.
        seed: Seed of the weight initialisation.

    Returns:
        ``(net, losses)``: the trained network in eval mode (float32) and the mean squared error
        before each step, shape (steps,).

    Raises:
        ValueError: For mismatched or non-finite points, N < 2, steps < 1 or lr <= 0.
    """
    x_train = _as_column("x_train", x_train)
    y_train = _as_column("y_train", y_train)
    n_points = x_train.shape[0]
    if n_points < 2:
        raise ValueError(f"x_train has {n_points} point(s): at least 2 are needed")
    if y_train.shape[0] != n_points:
        raise ValueError(
            f"y_train has {y_train.shape[0]} points but x_train has {n_points}: they must match"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} is invalid: it must be an integer >= 1")
    if not lr > 0 or lr == float("inf"):
        raise ValueError(f"lr={lr!r} is invalid: it must be a finite number > 0")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MLP("ReLU()", 1, [n_points - 1], 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    # Losses stay on the tensor side; one .item() per step would dominate a net this small.
    losses = torch.empty(steps)
    net.train()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(net(x_train), y_train)
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
    return net.eval(), losses


@torch.no_grad()
def evaluate_mlp(net: MLP, x: Tensor) -> Tensor:
    """The network's output on a 1-D grid ``x``, shape (M,), in ``x``'s dtype."""
    return net(torch.as_tensor(x).reshape(-1, 1).to(torch.float32)).reshape(-1).to(x.dtype)
