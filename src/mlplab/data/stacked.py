"""Data for stacked members: one copy of each distinct dataset, each member's own batch order.

Member ``m``'s epoch ``e`` visits its training split in the order of a single run with its seed:
``torch.randperm(n_train, generator=torch.Generator().manual_seed(epoch_seed(seed_m, e)))``, cut
into consecutive minibatches (the last one smaller). A batch stacks every member's minibatch of
that step: ``(x [M, batch, features], y [M, batch])``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mlplab.data.datamodule import epoch_seed

SPLITS = ("train", "val", "test")


class StackedEpochOrder(Sampler[Tensor]):
    """Per-step sample indices ``[M, batch]``: each member's (seed, epoch) permutation, cut up.

    Lightning calls :meth:`set_epoch` before every epoch (also after a resume). Members sharing
    a seed share one permutation.
    """

    def __init__(self, num_samples: int, seeds: Sequence[int], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid: it must be >= 1")
        self.num_samples = num_samples
        self.seeds = [int(s) for s in seeds]
        self.batch_size = batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def order(self) -> Tensor:
        """``[M, num_samples]``: every member's permutation of this epoch."""
        perms = {}
        for seed in dict.fromkeys(self.seeds):
            generator = torch.Generator().manual_seed(epoch_seed(seed, self.epoch))
            perms[seed] = torch.randperm(self.num_samples, generator=generator)
        return torch.stack([perms[s] for s in self.seeds])

    def __iter__(self) -> Iterator[Tensor]:
        # A generator: the order is drawn at the first step, after Lightning's set_epoch (on a
        # resume Lightning creates the iterator before it sets the epoch).
        yield from self.order().split(self.batch_size, dim=1)


class StackedTensors(Dataset):
    """Distinct datasets ``X [D, n, ...]``, ``y [D, n]`` and which one each member reads.

    ``dataset[index]`` with ``index [M, batch]`` gathers member ``m``'s samples ``index[m]`` of
    its dataset; with a ``slice`` it takes the same samples of every member's dataset.
    """

    def __init__(self, X: Tensor, y: Tensor, dataset_of_member: Tensor) -> None:
        self.X, self.y = X, y
        self.dataset_of_member = dataset_of_member
        # Row offsets into the flattened datasets, and the features stored feature-major: a
        # step's gather is then one 1-D index_select per feature, about 10x faster on a CPU than
        # gathering [batch, features] rows (advanced indexing or index_select along rows).
        self.offsets = dataset_of_member[:, None] * X.shape[1]
        features = math.prod(X.shape[2:])
        self.X_columns = X.reshape(X.shape[0] * X.shape[1], features).t().contiguous()
        self.y_flat = y.reshape(-1)

    def __len__(self) -> int:
        return self.X.shape[1]

    def __getitem__(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        if isinstance(index, slice):
            return self.X[self.dataset_of_member, index], self.y[self.dataset_of_member, index]
        rows = (index + self.offsets).reshape(-1)
        members, batch = index.shape
        x = self.X_columns.index_select(1, rows).t().contiguous()
        x = x.reshape(members, batch, *self.X.shape[2:])
        return x, self.y_flat.index_select(0, rows).reshape(members, batch)


class StackedDataModule(pl.LightningDataModule):
    """The splits of ``M`` members, each distinct dataset held once, served stacked.

    Args:
        splits: Per member, ``{"X_train", "y_train", "X_val", "y_val", "X_test", "y_test"}``
            tensors (validation may be empty); every member's splits have the same sizes.
        seeds: Per member, the seed of its training order (a single run's data seed).
        batch_size: Training minibatch size.
        eval_batch_size: Minibatch size for validation and test; None: one batch.
        keys: Per member, a key naming its dataset: members with equal keys share one copy.
            None: members whose tensors are the very same objects share one.

    Raises:
        ValueError: members whose splits differ in size.
    """

    def __init__(
        self,
        splits: Sequence[Mapping[str, Tensor]],
        seeds: Sequence[int],
        batch_size: int,
        eval_batch_size: int | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__()
        if len(seeds) != len(splits):
            raise ValueError(f"{len(seeds)} seeds for {len(splits)} members: need one each")
        if keys is None:
            keys = [id(s["X_train"]) for s in splits]
        first_of: dict[Hashable, int] = {}
        for m, key in enumerate(keys):
            first_of.setdefault(key, m)
        distinct = list(first_of.values())
        index = torch.tensor([distinct.index(first_of[k]) for k in keys])
        self.num_members = len(splits)
        self.seeds = list(seeds)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.datasets: dict[str, StackedTensors] = {}
        for split in SPLITS:
            Xs = [splits[m][f"X_{split}"] for m in distinct]
            ys = [splits[m][f"y_{split}"] for m in distinct]
            if len({tuple(x.shape) for x in Xs}) > 1:
                raise ValueError(f"members' {split} splits differ in size: they cannot be stacked")
            self.datasets[split] = StackedTensors(torch.stack(Xs), torch.stack(ys), index)

    @property
    def num_datasets(self) -> int:
        """How many distinct datasets are held (one copy each)."""
        return self.datasets["train"].X.shape[0]

    def train_dataloader(self) -> DataLoader:
        """Stacked minibatches in every member's own (seed, epoch) order."""
        data = self.datasets["train"]
        order = StackedEpochOrder(len(data), self.seeds, self.batch_size)
        return DataLoader(data, sampler=order, batch_size=None)

    def _fixed(self, split: str) -> DataLoader | list:
        data = self.datasets[split]
        n = len(data)
        if n == 0:
            return []
        size = self.eval_batch_size or n
        return DataLoader(
            data, sampler=[slice(i, i + size) for i in range(0, n, size)], batch_size=None
        )

    def val_dataloader(self) -> DataLoader | list:
        """The validation splits in a fixed order; an empty list (no validation) when empty."""
        return self._fixed("val")

    def test_dataloader(self) -> DataLoader | list:
        """The test splits in a fixed order."""
        return self._fixed("test")
