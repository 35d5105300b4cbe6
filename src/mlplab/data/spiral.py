"""The tutorial's spiral classification dataset and its seeded shuffle/split."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: {name} must be an integer >= 1")


def make_spiral(
    num_classes: int = 4,
    sigma: float = 0.16,
    points_per_class: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Make the tutorial's K-armed spiral (``create_spiral_dataset``).

    With ``generator`` seeded 2021 (or the global RNG after ``torch.manual_seed(2021)``) the result
    is bit-identical to the tutorial's ``create_spiral_dataset(4, 0.16, 1000)``.

    Args:
        num_classes: Number of spiral arms K.
        sigma: Standard deviation of the Gaussian noise on each coordinate.
        points_per_class: Points per arm N.
        generator: Source of the noise; the global RNG when None.

    Returns:
        ``(X, y)``: X float32 of shape (K*N, 2), y int64 class labels in [0, K).
    """
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("points_per_class", points_per_class)
    is_number = isinstance(sigma, int | float) and not isinstance(sigma, bool)
    if not is_number or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma={sigma!r} is invalid: sigma must be a finite number >= 0")
    K, N = num_classes, points_per_class
    t = torch.linspace(0, 1, N)
    X = torch.zeros(K * N, 2)
    # One randn(N) call per coordinate and class, in the tutorial's order: CPU randn fills
    # in blocks of 16, so one randn(K*2*N) call would not reproduce the tutorial's numbers.
    for k in range(K):
        angle = 2 * math.pi / K * (2 * t + k)
        X[k * N : (k + 1) * N, 0] = t * (
            torch.sin(angle) + sigma * torch.randn(N, generator=generator)
        )
        X[k * N : (k + 1) * N, 1] = t * (
            torch.cos(angle) + sigma * torch.randn(N, generator=generator)
        )
    y = torch.arange(K).repeat_interleave(N)
    return X, y


def shuffle_split(
    X: Tensor, y: Tensor, test_fraction: float = 0.2, seed: int = 2021
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shuffle with the tutorial's permutation and split off the first part as the test set.

    The permutation is ``torch.manual_seed(seed); torch.randperm(N)`` exactly as in the tutorial's
    ``shuffle_and_split_data``, computed in ``fork_rng`` so the caller's global RNG is untouched.

    Args:
        X: Inputs, first dimension N.
        y: Labels, length N.
        test_fraction: Fraction of samples for the test set, in (0, 1); test size is
            ``int(test_fraction * N)``.
        seed: Seed of the permutation.

    Returns:
        ``(X_train, y_train, X_test, y_test)``.
    """
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}: they must match")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} is invalid: it must be in (0, 1)")
    N = len(X)
    test_size = int(test_fraction * N)
    if test_size < 1 or test_size >= N:
        raise ValueError(
            f"test_fraction={test_fraction!r} leaves an empty split for {N} samples: "
            "both the test and the training part need at least one sample"
        )
    # randperm with a seeded torch.Generator differs from the global RNG's, so seed the global
    # RNG as the tutorial does, but inside fork_rng to leave the caller's state as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shuffled_indices = torch.randperm(N)
    X, y = X[shuffled_indices], y[shuffled_indices]
    return X[test_size:], y[test_size:], X[:test_size], y[:test_size]
