"""Tests for the spiral dataset and its seeded split (mlplab.data.spiral)."""

from __future__ import annotations

import pytest
import torch

from mlplab.data.spiral import make_spiral, shuffle_split
from tutorial import create_spiral_dataset, set_seed, shuffle_and_split_data

SEED = 2021


def tutorial_spiral(K=4, sigma=0.16, N=1000, seed=SEED):
    set_seed(seed=seed)
    return create_spiral_dataset(K, sigma, N)


# --- make_spiral -------------------------------------------------------------------------------


def test_generator_variant_is_bit_identical_to_tutorial():
    ref_X, ref_y = tutorial_spiral()
    X, y = make_spiral(4, 0.16, 1000, generator=torch.Generator().manual_seed(SEED))
    assert X.shape == (4000, 2) and X.dtype == torch.float32
    assert y.shape == (4000,) and y.dtype == torch.int64
    assert torch.equal(X, ref_X)
    assert ref_y.dtype == torch.float32  # the tutorial's labels are floats; ours are class indices
    assert torch.equal(y, ref_y.long())
    assert torch.equal(y.float(), ref_y)


def test_global_rng_variant_is_bit_identical_to_tutorial():
    ref_X, ref_y = tutorial_spiral()
    torch.manual_seed(SEED)
    X, y = make_spiral(4, 0.16, 1000)
    assert torch.equal(X, ref_X)
    assert torch.equal(y, ref_y.long())


def test_defaults_are_the_tutorials_parameters():
    ref_X, _ = tutorial_spiral()
    X, _ = make_spiral(generator=torch.Generator().manual_seed(SEED))
    assert torch.equal(X, ref_X)


@pytest.mark.parametrize(
    ("K", "sigma", "N", "seed"),
    [(2, 0.0, 7, 0), (3, 0.5, 17, 1), (5, 0.16, 33, 2021), (1, 1.0, 1, 5), (4, 2, 100, 123)],
)
def test_other_sizes_match_tutorial(K, sigma, N, seed):
    ref_X, ref_y = tutorial_spiral(K, sigma, N, seed)
    X, y = make_spiral(K, sigma, N, generator=torch.Generator().manual_seed(seed))
    assert X.shape == (K * N, 2) and y.shape == (K * N,)
    assert torch.equal(X, ref_X)
    assert torch.equal(y, ref_y.long())
    assert torch.equal(torch.bincount(y, minlength=K), torch.full((K,), N))


def test_zero_noise_lies_on_the_spiral_arms():
    K, N = 3, 50
    X, y = make_spiral(K, 0.0, N, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0, 1, N)
    for k in range(K):
        angle = 2 * torch.pi / K * (2 * t + k)
        arm = X[y == k]
        torch.testing.assert_close(arm[:, 0], t * torch.sin(angle))
        torch.testing.assert_close(arm[:, 1], t * torch.cos(angle))
    # The radius of every point is t, so the arms start at the origin and end on the unit circle.
    torch.testing.assert_close(X.norm(dim=1), t.repeat(K))


def test_none_generator_uses_and_advances_global_rng():
    torch.manual_seed(7)
    X1, _ = make_spiral(2, 0.3, 20)
    X2, _ = make_spiral(2, 0.3, 20)
    assert not torch.equal(X1, X2)  # the global RNG moved on
    # Exactly 2*K draws of randn(N) are consumed, as in the tutorial.
    torch.manual_seed(7)
    for _ in range(2 * 2):
        torch.randn(20)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    make_spiral(2, 0.3, 20)
    assert torch.equal(torch.rand(3), expected_next)


def test_explicit_generator_leaves_global_rng_alone():
    torch.manual_seed(11)
    state = torch.get_rng_state()
    generator = torch.Generator().manual_seed(3)
    make_spiral(2, 0.3, 20, generator=generator)
    assert torch.equal(torch.get_rng_state(), state)
    # ... and advances the given generator, so two calls give different noise.
    X2, _ = make_spiral(2, 0.3, 20, generator=generator)
    X1, _ = make_spiral(2, 0.3, 20, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(X1, X2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -2}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"points_per_class": 0}, "points_per_class"),
        ({"points_per_class": "10"}, "points_per_class"),
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"sigma": "0.1"}, "sigma"),
        ({"sigma": None}, "sigma"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}=") as info:
        make_spiral(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


# --- shuffle_split -----------------------------------------------------------------------------


def test_split_matches_tutorial():
    X, y = tutorial_spiral()
    ref_X_test, ref_y_test, ref_X_train, ref_y_train = shuffle_and_split_data(X, y, seed=SEED)
    X_train, y_train, X_test, y_test = shuffle_split(X, y, 0.2, SEED)
    assert X_train.shape == (3200, 2) and X_test.shape == (800, 2)
    assert torch.equal(X_train, ref_X_train) and torch.equal(y_train, ref_y_train)
    assert torch.equal(X_test, ref_X_test) and torch.equal(y_test, ref_y_test)


def test_split_of_int_labels_matches_tutorial_and_is_a_partition():
    X, y = make_spiral(3, 0.2, 101, generator=torch.Generator().manual_seed(4))
    ref_X_test, ref_y_test, ref_X_train, ref_y_train = shuffle_and_split_data(X, y, seed=9)
    X_train, y_train, X_test, y_test = shuffle_split(X, y, 0.2, 9)
    assert torch.equal(X_test, ref_X_test) and torch.equal(y_test, ref_y_test)
    assert torch.equal(X_train, ref_X_train) and torch.equal(y_train, ref_y_train)
    assert y_train.dtype == torch.int64
    # Train and test together are the original samples, each exactly once.
    joined = torch.cat([X_test, X_train])
    assert torch.equal(joined[torch.argsort(joined[:, 0])], X[torch.argsort(X[:, 0])])


def test_split_leaves_global_rng_untouched():
    X, y = make_spiral(2, 0.1, 50, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(123)
    torch.rand(5)  # somewhere in the middle of a stream
    state = torch.get_rng_state()
    expected_next = torch.rand(4)
    torch.set_rng_state(state)
    shuffle_split(X, y, 0.2, SEED)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.rand(4), expected_next)


@pytest.mark.parametrize(("fraction", "N"), [(0.2, 4000), (0.2, 101), (0.5, 9), (0.37, 1000)])
def test_test_size_is_int_of_fraction_times_n(fraction, N):
    X, y = torch.arange(2 * N, dtype=torch.float32).reshape(N, 2), torch.arange(N)
    X_train, y_train, X_test, y_test = shuffle_split(X, y, fraction, 1)
    assert len(X_test) == len(y_test) == int(fraction * N)
    assert len(X_train) == len(y_train) == N - int(fraction * N)
    # Rows stay paired with their labels through the shuffle.
    assert torch.equal(X_train[:, 0], 2 * y_train.float())
    assert torch.equal(X_test[:, 0], 2 * y_test.float())


def test_split_depends_on_seed():
    X, y = torch.randn(100, 2), torch.arange(100)
    _, y_train_a, _, _ = shuffle_split(X, y, 0.2, 1)
    _, y_train_b, _, _ = shuffle_split(X, y, 0.2, 1)
    _, y_train_c, _, _ = shuffle_split(X, y, 0.2, 2)
    assert torch.equal(y_train_a, y_train_b)
    assert not torch.equal(y_train_a, y_train_c)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan"), 0.001])
def test_bad_fraction_raises_naming_it(fraction):
    X, y = torch.randn(10, 2), torch.arange(10)
    with pytest.raises(ValueError, match=r"test_fraction=") as info:
        shuffle_split(X, y, fraction, 0)
    assert repr(fraction) in str(info.value)


def test_length_mismatch_raises_naming_x_and_y():
    with pytest.raises(ValueError, match=r"X has 10 samples but y has 9"):
        shuffle_split(torch.randn(10, 2), torch.arange(9), 0.2, 0)
