"""LightningDataModules over generated in-memory tensors (the spiral), as standard DataLoaders."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mlplab.checks import check_int, check_number, invalid
from mlplab.data.spiral import make_spiral, shuffle_split

Batch = tuple[Tensor, Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed mixed from (seed, epoch), so each epoch's order is fixed by the run's seed."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1  # torch.Generator.manual_seed wants a non-negative int64


class TensorPairs(Dataset[Batch]):
    """In-memory ``(X, y)`` pairs that the DataLoader indexes a whole minibatch at a time.

    ``torch.utils.data.DataLoader`` calls ``__getitems__`` with a minibatch's indices when a
    dataset has it, so a minibatch is one tensor gather instead of ``batch_size`` item look-ups
    followed by a collate; pass :func:`keep_batch` as the DataLoader's ``collate_fn``.

    Args:
        X: Inputs, shape ``(n, num_features)``.
        y: Class labels, shape ``(n,)``.
    """

    def __init__(self, X: Tensor, y: Tensor) -> None:
        if len(X) != len(y):
            raise ValueError(f"X and y have {len(X)} and {len(y)} rows: they must match")
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int) -> Batch:
        return self.X[index], self.y[index]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.X[index], self.y[index]


def keep_batch(batch: Batch) -> Batch:
    """``collate_fn`` for :class:`TensorPairs`: the gathered minibatch is already a batch."""
    return batch


class EpochRandomSampler(Sampler[int]):
    """A random permutation per epoch, seeded by (seed, epoch) instead of a running generator.

    Lightning calls :meth:`set_epoch` before every training epoch (also after a resume), so
    epoch e's order is the same whether the run was interrupted or not. Under DDP Lightning wraps
    this sampler in its ``DistributedSamplerWrapper``, which forwards ``set_epoch`` and gives each
    rank its shard.

    Args:
        num_samples: Size of the dataset.
        seed: The run's seed.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def permutation(self) -> Tensor:
        """Epoch ``self.epoch``'s order: ``randperm`` with a generator seeded by (seed, epoch)."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())


def tensor_loader(
    X: Tensor, y: Tensor, batch_size: int, sampler: Sampler[int] | None = None
) -> DataLoader:
    """A standard DataLoader over in-memory tensors, one gather per minibatch, in this process.

    With no ``sampler`` the order is fixed (``shuffle=False``), as for validation and test.
    """
    return DataLoader(
        TensorPairs(X, y),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False if sampler is None else None,
        collate_fn=keep_batch,
    )


def sequential_loader(loader: object, max_batch_size: int = 8192) -> object:
    """The samples of ``loader`` in their stored order, in minibatches of up to ``max_batch_size``.

    For an evaluation pass over a split (the tutorial's accuracy on the training samples): a
    DataLoader over a sized dataset is rebuilt without its sampler and with its own
    ``collate_fn``; any other iterable of ``(x, y)`` batches is returned as it is.
    """
    dataset = getattr(loader, "dataset", None)
    if not isinstance(loader, DataLoader) or not hasattr(dataset, "__len__"):
        return loader
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return loader
    batch_size = max(1, min(len(dataset), max_batch_size))
    return DataLoader(dataset, batch_size=batch_size, collate_fn=loader.collate_fn)


def count_samples(loader: object) -> int:
    """Samples a loader serves: the length of its dataset, else counted batch by batch."""
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return sum(len(y) for _, y in loader)  # type: ignore[attr-defined]


def loader_tensors(loader: object) -> tuple[Tensor, Tensor]:
    """All ``(x, y)`` batches of ``loader`` concatenated: inputs (N, ...) and labels (N,)."""
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    if not xs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys)


class TensorDataModule(pl.LightningDataModule):
    """Generated in-memory ``(X, y)`` tensors, split as the tutorial splits the spiral.

    A subclass makes the data (:meth:`make_data`, from a generator seeded by ``seed``) and
    records its own constructor arguments with ``self.save_hyperparameters()``; this class
    checks the arguments every such dataset shares, shuffles and splits with
    :func:`mlplab.data.spiral.shuffle_split` (``int(test_fraction * N)`` test samples), carves the
    first ``int(val_fraction * n_train)`` training samples off as the validation set when
    ``val_fraction > 0``, and serves standard DataLoaders. The training order of epoch e is a
    permutation seeded by (seed, e) (:class:`EpochRandomSampler`), so a resumed run sees the
    batches an uninterrupted one would. :mod:`mlplab.data.rings` is the pattern to copy.

    Args:
        num_classes: Classes K; labels are 0..K-1.
        num_features: Input size F; points have shape (F,).
        num_samples: Samples :meth:`make_data` returns (for the split sizes).
        test_fraction: Fraction of all samples held out for test, in (0, 1).
        val_fraction: Fraction of the training part held out for validation; 0 disables it.
        batch_size: Training minibatch size.
        seed: Seeds the data, the split and the per-epoch training order.
        eval_batch_size: Minibatch size for validation and test; None evaluates in one batch.

    Raises:
        ValueError: ``name=value is invalid: ...`` for a bad argument, including fractions that
            leave an empty split.
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int,
        num_samples: int,
        test_fraction: float = 0.2,
        val_fraction: float = 0.0,
        batch_size: int = 128,
        seed: int = 2021,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.test_fraction = check_number(
            "test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True
        )
        self.val_fraction = check_number("val_fraction", val_fraction, 0.0, 1.0, high_open=True)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size, 1, optional=True)
        n_test = int(test_fraction * num_samples)
        if not 1 <= n_test < num_samples:
            raise invalid(
                "test_fraction",
                test_fraction,
                f"leaves an empty test or training split of the {num_samples} samples",
            )
        n_train = num_samples - n_test
        if val_fraction > 0 and not 1 <= int(val_fraction * n_train) < n_train:
            raise invalid(
                "val_fraction",
                val_fraction,
                f"leaves an empty validation or training split of {n_train} samples",
            )
        self.X_train = self.y_train = self.X_val = self.y_val = self.X_test = self.y_test = None

    def make_data(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The whole dataset: X of shape (N, num_features), y int64 of shape (N,).

        Draw every random number from ``generator`` (seeded by ``seed``), never the global RNG.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement make_data")

    def prepare_data(self) -> None:
        """Nothing to download: the data is generated in :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        """Generate and split the data (once; later calls are no-ops)."""
        if self.X_train is not None:
            return
        X, y = self.make_data(torch.Generator().manual_seed(self.seed))
        X_train, y_train, self.X_test, self.y_test = shuffle_split(
            X, y, self.test_fraction, self.seed
        )
        n_val = int(self.val_fraction * len(X_train))
        self.X_val, self.y_val = X_train[:n_val], y_train[:n_val]
        self.X_train, self.y_train = X_train[n_val:], y_train[n_val:]

    @property
    def has_validation(self) -> bool:
        """True when a validation split exists (``val_fraction > 0``)."""
        return self.val_fraction > 0

    def _eval_batch_size(self, n: int) -> int:
        return self.eval_batch_size or max(n, 1)

    def train_dataloader(self) -> DataLoader:
        """Training minibatches of ``batch_size`` in the (seed, epoch) order."""
        sampler = EpochRandomSampler(len(self.X_train), self.seed)
        return tensor_loader(self.X_train, self.y_train, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader | list:
        """The validation split; an empty list (no validation loop) when there is none."""
        if not self.has_validation:
            return []
        return tensor_loader(self.X_val, self.y_val, self._eval_batch_size(len(self.X_val)))

    def test_dataloader(self) -> DataLoader:
        """The test split, in its stored order."""
        return tensor_loader(self.X_test, self.y_test, self._eval_batch_size(len(self.X_test)))


def _check_enough_points(points_per_class: int, num_classes: int, test_fraction: float) -> None:
    """Refuse too few points for a test split, naming ``points_per_class`` (what to change).

    The split itself (:class:`TensorDataModule`) can only name ``test_fraction``, which a
    user who asked for one point per arm did not set. A ``test_fraction`` that is not a number
    in (0, 1) is left to that check.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float):
        return
    if not 0 < test_fraction < 1:
        return
    n = num_classes * points_per_class
    if int(test_fraction * n) >= 1:  # and < n, as test_fraction < 1
        return
    # The least p with int(test_fraction * num_classes * p) >= 1; the ceiling may be one off in
    # floating point, hence the search from just below it.
    start = max(points_per_class + 1, math.ceil(1 / (test_fraction * num_classes)) - 1)
    needed = next(p for p in itertools.count(start) if int(test_fraction * num_classes * p) >= 1)
    raise invalid(
        "points_per_class",
        points_per_class,
        f"gives {n} samples ({num_classes} classes), too few for a test split of "
        f"test_fraction={test_fraction:g}: must be >= {needed}",
    )


class SpiralDataModule(TensorDataModule):
    """The tutorial's spiral data (:func:`mlplab.data.spiral.make_spiral`) and its split.

    Data and split are seeded from ``seed`` exactly as the tutorial does, so ``seed=2021`` gives
    the tutorial's ``X_train, y_train, X_test, y_test``; see :class:`TensorDataModule` for the
    split, the validation part and the training order.

    Args:
        num_classes: Spiral arms K (>= 2).
        sigma: Noise standard deviation (>= 0).
        points_per_class: Points per arm N.
        test_fraction: Fraction of all samples held out for test.
        val_fraction: Fraction of the training part held out for validation; 0 disables it.
        batch_size: Training minibatch size.
        seed: Seeds the data, the split and the per-epoch training order.
        eval_batch_size: Minibatch size for validation and test; None evaluates in one batch.
        num_features: Input size; the spiral's points are 2-D, so it must be 2.

    Raises:
        ValueError: ``name=value is invalid: ...`` for a bad argument.
    """

    def __init__(
        self,
        num_classes: int = 4,
        sigma: float = 0.16,
        points_per_class: int = 1000,
        test_fraction: float = 0.2,
        val_fraction: float = 0.0,
        batch_size: int = 128,
        seed: int = 2021,
        eval_batch_size: int | None = None,
        num_features: int = 2,
    ) -> None:
        if num_features != 2:
            raise invalid("num_features", num_features, "must be 2: the spiral's points are 2-D")
        check_number("sigma", sigma, low=0.0)
        check_int("points_per_class", points_per_class, minimum=1)
        check_int("num_classes", num_classes, minimum=2)
        num_samples = num_classes * points_per_class
        _check_enough_points(points_per_class, num_classes, test_fraction)
        super().__init__(
            num_classes, num_features, num_samples, test_fraction, val_fraction, batch_size, seed,
            eval_batch_size,
        )  # fmt: skip
        self.sigma, self.points_per_class = sigma, points_per_class
        self.save_hyperparameters()

    def make_data(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The tutorial's ``create_spiral_dataset(K, sigma, N)``, drawn from ``generator``."""
        return make_spiral(self.num_classes, self.sigma, self.points_per_class, generator)
