"""LightningDataModule for the tutorial's spiral split, served as standard DataLoaders."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

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


class SpiralDataModule(pl.LightningDataModule):
    """The tutorial's spiral data, split into train (and optional validation) and test parts.

    Data and split are seeded from ``seed`` exactly as the tutorial does, so ``seed=2021`` gives
    the tutorial's ``X_train, y_train, X_test, y_test``. With ``val_fraction > 0`` the first
    ``int(val_fraction * n_train)`` training samples (already shuffled) become the validation set.
    The training order of epoch e is a permutation seeded by (seed, e)
    (:class:`EpochRandomSampler`).

    Args:
        num_classes: Spiral arms K.
        sigma: Noise standard deviation.
        points_per_class: Points per arm N.
        test_fraction: Fraction of all samples held out for test.
        val_fraction: Fraction of the training part held out for validation; 0 disables it.
        batch_size: Training minibatch size.
        seed: Seeds the data, the split and the per-epoch training order.
        eval_batch_size: Minibatch size for validation and test; None evaluates in one batch.
        num_features: Input size; the spiral's points are 2-D, so it must be 2.

    Raises:
        ValueError: naming the argument, its value and what is allowed.
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
        super().__init__()
        if num_features != 2:
            raise ValueError(f"num_features={num_features!r} is invalid: the spiral is 2-D")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction!r} is invalid: it must be in [0, 1)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid: it must be an integer >= 1")
        if eval_batch_size is not None and (
            isinstance(eval_batch_size, bool)
            or not isinstance(eval_batch_size, int)
            or eval_batch_size < 1
        ):
            raise ValueError(
                f"eval_batch_size={eval_batch_size!r} is invalid: it must be None or an "
                "integer >= 1"
            )
        self.save_hyperparameters()
        self.X_train = self.y_train = self.X_val = self.y_val = self.X_test = self.y_test = None

    def prepare_data(self) -> None:
        """Nothing to download: the data is generated in :meth:`setup`."""

    def setup(self, stage: str | None = None) -> None:
        """Generate and split the data (once; later calls are no-ops)."""
        if self.X_train is not None:
            return
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        X, y = make_spiral(hp.num_classes, hp.sigma, hp.points_per_class, generator=generator)
        X_train, y_train, self.X_test, self.y_test = shuffle_split(X, y, hp.test_fraction, hp.seed)
        n_val = int(hp.val_fraction * len(X_train))
        if hp.val_fraction > 0 and (n_val < 1 or n_val >= len(X_train)):
            raise ValueError(
                f"val_fraction={hp.val_fraction!r} leaves an empty split of {len(X_train)} "
                "training samples"
            )
        self.X_val, self.y_val = X_train[:n_val], y_train[:n_val]
        self.X_train, self.y_train = X_train[n_val:], y_train[n_val:]

    @property
    def has_validation(self) -> bool:
        """True when a validation split exists (``val_fraction > 0``)."""
        return self.hparams.val_fraction > 0

    def _eval_batch_size(self, n: int) -> int:
        return self.hparams.eval_batch_size or max(n, 1)

    def train_dataloader(self) -> DataLoader:
        """Training minibatches of ``batch_size`` in the (seed, epoch) order."""
        sampler = EpochRandomSampler(len(self.X_train), self.hparams.seed)
        return tensor_loader(self.X_train, self.y_train, self.hparams.batch_size, sampler)

    def val_dataloader(self) -> DataLoader | list:
        """The validation split; an empty list (no validation loop) when there is none."""
        if not self.has_validation:
            return []
        return tensor_loader(self.X_val, self.y_val, self._eval_batch_size(len(self.X_val)))

    def test_dataloader(self) -> DataLoader:
        """The tutorial's 20 % test split."""
        return tensor_loader(self.X_test, self.y_test, self._eval_batch_size(len(self.X_test)))
