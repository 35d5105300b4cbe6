"""Tests for the spiral LightningDataModule and its standard DataLoaders."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import DataLoader

from mlplab.data.datamodule import EpochRandomSampler, SpiralDataModule, TensorPairs, epoch_seed
from tutorial import create_spiral_dataset, set_seed, shuffle_and_split_data

SEED = 2021


@pytest.fixture(scope="module")
def tutorial_split():
    """``X_train, y_train, X_test, y_test`` exactly as the tutorial builds them for seed 2021."""
    set_seed(seed=SEED)
    X, y = create_spiral_dataset(4, 0.16, 1000)
    X_test, y_test, X_train, y_train = shuffle_and_split_data(X, y, seed=SEED)
    return X_train, y_train.long(), X_test, y_test.long()


def make_dm(**kwargs) -> SpiralDataModule:
    dm = SpiralDataModule(**kwargs)
    dm.setup("fit")
    return dm


def epoch_batches(dm: SpiralDataModule, epoch: int | None = None, loader=None):
    """The training minibatches of one epoch, after Lightning's own ``set_epoch`` hook if given."""
    loader = loader or dm.train_dataloader()
    if epoch is not None:
        _set_sampler_epoch(loader, epoch)
    return list(loader)


def epoch_order(dm: SpiralDataModule, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All (x, y) of one epoch in training order."""
    batches = epoch_batches(dm, epoch)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    sampler = EpochRandomSampler(num_samples, seed)
    sampler.set_epoch(epoch)
    return sampler.permutation()


def test_setup_gives_the_tutorial_tensors(tutorial_split):
    X_train, y_train, X_test, y_test = tutorial_split
    dm = make_dm()
    assert torch.equal(dm.X_train, X_train) and torch.equal(dm.y_train, y_train)
    assert torch.equal(dm.X_test, X_test) and torch.equal(dm.y_test, y_test)
    assert dm.y_train.dtype == torch.int64
    assert len(dm.X_val) == 0 and not dm.has_validation
    assert dm.val_dataloader() == []
    # setup() again keeps the same tensors (Lightning calls it once per stage).
    X_before = dm.X_train
    dm.setup("test")
    assert dm.X_train is X_before


def test_setup_leaves_the_global_rng_untouched():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    make_dm(points_per_class=50)
    assert torch.equal(torch.get_rng_state(), state)


def test_val_fraction_carves_the_first_part_of_training(tutorial_split):
    X_train, y_train, X_test, _ = tutorial_split
    dm = make_dm(val_fraction=0.1)
    n_val = int(0.1 * len(X_train))
    assert n_val == 320 and dm.has_validation
    assert torch.equal(dm.X_val, X_train[:n_val]) and torch.equal(dm.y_val, y_train[:n_val])
    assert torch.equal(dm.X_train, X_train[n_val:]) and torch.equal(dm.y_train, y_train[n_val:])
    assert torch.equal(dm.X_test, X_test)
    val_batches = list(dm.val_dataloader())
    assert len(val_batches) == 1
    assert torch.equal(val_batches[0][0], dm.X_val) and torch.equal(val_batches[0][1], dm.y_val)


def test_default_epoch_is_a_standard_dataloader_of_25_minibatches_of_128():
    dm = make_dm()
    loader = dm.train_dataloader()
    assert isinstance(loader, DataLoader) and loader.batch_size == 128
    assert isinstance(loader.sampler, EpochRandomSampler) and loader.num_workers == 0
    assert len(loader) == 25
    batches = epoch_batches(dm)
    assert len(batches) == 25
    for x, y in batches:
        assert x.shape == (128, 2) and y.shape == (128,) and y.dtype == torch.int64


def test_uneven_last_minibatch():
    dm = make_dm(points_per_class=100, batch_size=30)
    # 320 training samples: 10 full minibatches of 30 and one of 20.
    batches = epoch_batches(dm)
    assert len(dm.train_dataloader()) == 11
    assert [len(x) for x, _ in batches] == [30] * 10 + [20]


def test_minibatches_are_gathered_whole_never_item_by_item(monkeypatch):
    def per_item(self, index):
        raise AssertionError("a minibatch was built item by item")

    monkeypatch.setattr(TensorPairs, "__getitem__", per_item)
    dm = make_dm(points_per_class=100, batch_size=32, val_fraction=0.1)
    order = permutation(len(dm.X_train), SEED, 2)
    batches = epoch_batches(dm, 2)
    for i, (x, y) in enumerate(batches):
        index = order[32 * i : 32 * (i + 1)]
        assert torch.equal(x, dm.X_train[index]) and torch.equal(y, dm.y_train[index])
    val = list(dm.val_dataloader())
    assert torch.equal(val[0][0], dm.X_val) and torch.equal(val[0][1], dm.y_val)


@pytest.mark.parametrize("epoch", [0, 1, 7])
def test_every_epoch_is_a_permutation_of_the_training_set(epoch):
    dm = make_dm()
    xs, ys = epoch_order(dm, epoch)
    assert len(xs) == len(dm.X_train)
    order = permutation(len(dm.X_train), SEED, epoch)
    assert torch.equal(torch.sort(order).values, torch.arange(len(dm.X_train)))
    assert torch.equal(xs, dm.X_train[order]) and torch.equal(ys, dm.y_train[order])
    assert torch.equal(torch.bincount(ys, minlength=4), torch.bincount(dm.y_train, minlength=4))
    assert not torch.equal(order, torch.arange(len(order)))  # actually shuffled


def test_epoch_order_is_randperm_seeded_by_seed_and_epoch():
    # The closed form: a generator seeded by epoch_seed(seed, epoch), nothing else.
    expected = torch.randperm(3200, generator=torch.Generator().manual_seed(epoch_seed(SEED, 3)))
    assert torch.equal(permutation(3200, SEED, 3), expected)


def test_epoch_order_depends_only_on_seed_and_epoch():
    dm_a, dm_b = make_dm(), make_dm()
    x_a0, _ = epoch_order(dm_a, 0)
    x_a3, _ = epoch_order(dm_a, 3)
    assert torch.equal(x_a0, epoch_order(dm_b, 0)[0])
    assert torch.equal(x_a3, epoch_order(dm_b, 3)[0])
    assert not torch.equal(x_a0, x_a3)
    # The global RNG plays no part.
    torch.manual_seed(999)
    assert torch.equal(x_a3, epoch_order(dm_b, 3)[0])
    # Different seed, different order.
    assert not torch.equal(permutation(3200, SEED, 3), permutation(3200, SEED + 1, 3))


def test_set_epoch_after_resume_reproduces_the_order():
    # An uninterrupted run: epochs 0, 1, 2 on one loader, set_epoch called by Lightning's hook.
    dm = make_dm(batch_size=640, val_fraction=0.2)
    loader = dm.train_dataloader()
    uninterrupted = [epoch_batches(dm, epoch, loader) for epoch in range(3)]
    # A resumed run: a fresh datamodule and loader that starts at epoch 2.
    resumed = epoch_batches(make_dm(batch_size=640, val_fraction=0.2), 2)
    assert len(resumed) == len(uninterrupted[2]) == 4  # 2,560 samples
    for (xa, ya), (xb, yb) in zip(resumed, uninterrupted[2], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Iterating twice without set_epoch repeats the same epoch (no hidden RNG state).
    again = list(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, uninterrupted[2], strict=True))


@pytest.mark.parametrize("num_samples", [3200, 3199, 7])
def test_lightning_ddp_wrapper_shards_the_epoch_between_two_ranks(num_samples):
    # Under DDP Lightning wraps the sampler in DistributedSamplerWrapper and calls its set_epoch.
    shards = []
    for rank in range(2):
        wrapper = DistributedSamplerWrapper(
            EpochRandomSampler(num_samples, SEED), num_replicas=2, rank=rank, shuffle=False
        )
        wrapper.set_epoch(4)
        shards.append(torch.tensor(list(wrapper)))
    assert len(shards[0]) == len(shards[1]) == -(-num_samples // 2)
    joined = torch.cat(shards)
    assert set(joined.tolist()) == set(range(num_samples))
    if num_samples % 2 == 0:
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
    # With Lightning's shuffle=False for the wrapper, rank r takes every other index of epoch
    # 4's permutation: set_epoch reached the inner sampler.
    order = permutation(num_samples, SEED, 4)
    assert torch.equal(shards[0][: len(order[0::2])], order[0::2])
    assert torch.equal(shards[1][: len(order[1::2])], order[1::2])


@pytest.mark.parametrize("eval_batch_size", [None, 128, 1000, 799])
def test_eval_batches_cover_the_test_set_in_order(eval_batch_size):
    dm = make_dm(eval_batch_size=eval_batch_size)
    batches = list(dm.test_dataloader())
    assert len(batches) == len(dm.test_dataloader())
    size = eval_batch_size or 800  # None evaluates the whole test set in one batch
    expected_sizes = [size] * (800 // size) + ([800 % size] if 800 % size else [])
    assert [len(x) for x, _ in batches] == [len(y) for _, y in batches] == expected_sizes
    assert torch.equal(torch.cat([x for x, _ in batches]), dm.X_test)
    assert torch.equal(torch.cat([y for _, y in batches]), dm.y_test)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -5}, "batch_size"),
        ({"batch_size": 12.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": float("nan")}, "val_fraction"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}=") as info:
        SpiralDataModule(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # int(0.01 * 16) == 0 validation samples
        ({"points_per_class": 5, "val_fraction": 0.01}, r"^val_fraction=0\.01 is invalid: leaves"),
        # int(0.2 * 4) == 0 test samples: the spiral names its own key and the least that works
        (
            {"points_per_class": 1},
            r"^points_per_class=1 is invalid: gives 4 samples \(4 classes\), too few for a test "
            r"split of test_fraction=0\.2: must be >= 2$",
        ),
        # int(0.01 * 4 * 24) == 0, int(0.01 * 4 * 25) == 1
        (
            {"points_per_class": 3, "test_fraction": 0.01},
            r"^points_per_class=3 is invalid: .* must be >= 25$",
        ),
        # the base class still guards the split for any TensorDataModule
        ({"points_per_class": 1, "test_fraction": 1.0}, r"^test_fraction=1\.0 is invalid"),
        ({"num_classes": 1}, r"^num_classes=1 is invalid: must be an integer >= 2$"),
        ({"num_features": 3}, r"^num_features=3 is invalid: must be 2"),
        ({"sigma": -1.0}, r"^sigma=-1\.0 is invalid: must be a number >= 0\.0$"),
    ],
)
def test_the_constructor_refuses_what_setup_could_not_use(kwargs, message):
    # Refused when built, before any work: a task reports it as data.<name>=... is invalid.
    with pytest.raises(ValueError, match=message):
        SpiralDataModule(**kwargs)
