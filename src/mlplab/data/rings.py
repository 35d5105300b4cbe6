"""Concentric noisy rings, one per class: a second dataset, and the pattern for your own.

A dataset of your own is this module and one YAML file (``conf/data/rings.yaml``), nothing
else: a function that makes the tensors from a seeded generator, and a datamodule that checks
its own arguments, records them (``save_hyperparameters``) and says how to make the data. Its
config names the class (``_target_``) and gives ``num_features`` and ``num_classes``, which the
model config reads (``in_features: ${data.num_features}``). Run it with ``mlplab-train data=rings``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mlplab.checks import check_int, check_number, invalid
from mlplab.data.datamodule import TensorDataModule


def make_rings(
    num_classes: int = 3,
    noise: float = 0.08,
    points_per_class: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """K concentric rings in the plane: class k lies on the circle of radius (k + 1) / K.

    Each point is ``r_k (cos a, sin a) + noise * n`` with the angle ``a`` uniform in [0, 2 pi)
    and ``n`` standard normal in both coordinates, drawn class by class (angles, then noise).

    Args:
        num_classes: Rings K (>= 1); the outermost has radius 1.
        noise: Standard deviation of the Gaussian noise on each coordinate (>= 0).
        points_per_class: Points per ring N (>= 1).
        generator: Source of the randomness; the global RNG when None.

    Returns:
        ``(X, y)``: X float32 of shape (K*N, 2), y int64 class labels in [0, K), class by class.

    Raises:
        ValueError: ``name=value is invalid: ...`` for a bad argument.
    """
    K = check_int("num_classes", num_classes, minimum=1)
    N = check_int("points_per_class", points_per_class, minimum=1)
    sigma = check_number("noise", noise, low=0.0)
    X = torch.empty(K * N, 2)
    for k in range(K):
        angle = 2 * math.pi * torch.rand(N, generator=generator)
        ring = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1) * ((k + 1) / K)
        X[k * N : (k + 1) * N] = ring + sigma * torch.randn(N, 2, generator=generator)
    y = torch.arange(K).repeat_interleave(N)
    return X, y


class RingsDataModule(TensorDataModule):
    """:func:`make_rings` data, seeded and split as the spiral is (:class:`TensorDataModule`).

    Args:
        num_classes: Rings K (>= 2).
        noise: Standard deviation of the noise on each coordinate (>= 0).
        points_per_class: Points per ring N.
        num_features: Input size; the rings are 2-D, so it must be 2.
        test_fraction: Fraction of all samples held out for test.
        val_fraction: Fraction of the training part held out for validation; 0 disables it.
        batch_size: Training minibatch size.
        seed: Seeds the data, the split and the per-epoch training order.
        eval_batch_size: Minibatch size for validation and test; None evaluates in one batch.

    Raises:
        ValueError: ``name=value is invalid: ...`` for a bad argument.
    """

    def __init__(
        self,
        num_classes: int = 3,
        noise: float = 0.08,
        points_per_class: int = 1000,
        num_features: int = 2,
        test_fraction: float = 0.2,
        val_fraction: float = 0.0,
        batch_size: int = 128,
        seed: int = 2021,
        eval_batch_size: int | None = None,
    ) -> None:
        # Check this dataset's own arguments here; the shared ones are checked by the base class.
        if num_features != 2:
            raise invalid("num_features", num_features, "must be 2: the rings are 2-D")
        check_number("noise", noise, low=0.0)
        check_int("points_per_class", points_per_class, minimum=1)
        check_int("num_classes", num_classes, minimum=2)
        num_samples = num_classes * points_per_class
        super().__init__(
            num_classes, num_features, num_samples, test_fraction, val_fraction, batch_size, seed,
            eval_batch_size,
        )  # fmt: skip
        self.noise, self.points_per_class = noise, points_per_class
        # Records every argument above: the checkpoint says what built the run.
        self.save_hyperparameters()

    def make_data(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """All rings, drawn from ``generator`` (seeded by ``seed``)."""
        return make_rings(self.num_classes, self.noise, self.points_per_class, generator)
