"""Tests for the ReLU construction of a 1-D function (mlplab.approx.relu)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlplab.approx.relu import (
    approximate_function,
    evaluate_relu_sum,
    relu_activations,
    relu_weights,
)


def tutorial_approximate_function(x_train, y_train):
    """The tutorial's solution to Coding Exercise 1, loops and all: the oracle."""
    n_relus = x_train.shape[0] - 1
    x = torch.linspace(torch.min(x_train), torch.max(x_train), 1000)
    b = -x_train[:-1]
    relu_acts = torch.zeros((n_relus, x.shape[0]))
    for i_relu in range(n_relus):
        relu_acts[i_relu, :] = torch.relu(x + b[i_relu])
    combination_weights = torch.zeros((n_relus,))
    prev_slope = 0
    for i in range(n_relus):
        delta_x = x_train[i + 1] - x_train[i]
        slope = (y_train[i + 1] - y_train[i]) / delta_x
        combination_weights[i] = slope - prev_slope
        prev_slope = slope
    y_hat = combination_weights @ relu_acts
    return y_hat, relu_acts, x


@pytest.fixture
def tutorial_data():
    N_train = 10
    x_train = torch.linspace(0, 2 * np.pi, N_train).view(-1, 1)
    return x_train, torch.sin(x_train)


def test_matches_tutorial_solution_on_its_example(tutorial_data):
    x_train, y_train = tutorial_data
    y_hat, relu_acts, x = approximate_function(x_train, y_train)
    ref_y_hat, ref_relu_acts, ref_x = tutorial_approximate_function(x_train, y_train)
    assert y_hat.shape == (1000,) and x.shape == (1000,) and relu_acts.shape == (9, 1000)
    assert y_hat.dtype == torch.float32
    torch.testing.assert_close(x, ref_x, rtol=0, atol=0)
    torch.testing.assert_close(relu_acts, ref_relu_acts, rtol=0, atol=0)
    # sin(0) = 0, so adding y_train[0] changes nothing; only summation order may differ.
    torch.testing.assert_close(y_hat, ref_y_hat, rtol=0, atol=1e-6)


def test_weights_match_tutorial_loop(tutorial_data):
    x_train, y_train = tutorial_data
    biases, weights = relu_weights(x_train, y_train)
    slopes = [(y_train[i + 1] - y_train[i]) / (x_train[i + 1] - x_train[i]) for i in range(9)]
    expected = [slopes[0]] + [slopes[i] - slopes[i - 1] for i in range(1, 9)]
    torch.testing.assert_close(biases, -x_train[:-1, 0], rtol=0, atol=0)
    torch.testing.assert_close(weights, torch.cat(expected), rtol=1e-6, atol=1e-6)


def test_flat_and_column_inputs_agree(tutorial_data):
    x_train, y_train = tutorial_data
    column = approximate_function(x_train, y_train, num_points=50)
    flat = approximate_function(x_train[:, 0], y_train[:, 0], num_points=50)
    for a, b in zip(column, flat, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_interpolates_training_points_when_first_value_is_not_zero():
    x_train = torch.linspace(0, 2 * math.pi, 7, dtype=torch.float64)
    y_train = torch.cos(x_train) + 3.0  # y_train[0] = 4: the tutorial's version would be off by 4
    biases, weights = relu_weights(x_train, y_train)
    at_points = evaluate_relu_sum(x_train, biases, weights, y_train[0])
    torch.testing.assert_close(at_points, y_train, rtol=0, atol=1e-12)
    # The grid of approximate_function also starts and ends on training points.
    y_hat, _, x = approximate_function(x_train, y_train, num_points=13)
    torch.testing.assert_close(x[::2], x_train, rtol=0, atol=1e-12)
    torch.testing.assert_close(y_hat[::2], y_train, rtol=0, atol=1e-12)


def test_piecewise_linear_between_points():
    x_train = torch.tensor([-1.0, 0.5, 2.0, 2.5, 4.0], dtype=torch.float64)
    y_train = torch.tensor([2.0, -1.0, 3.0, 0.0, 1.0], dtype=torch.float64)
    biases, weights = relu_weights(x_train, y_train)
    mid = (x_train[:-1] + x_train[1:]) / 2
    quarter = 0.75 * x_train[:-1] + 0.25 * x_train[1:]
    torch.testing.assert_close(
        evaluate_relu_sum(mid, biases, weights, y_train[0]), (y_train[:-1] + y_train[1:]) / 2
    )
    torch.testing.assert_close(
        evaluate_relu_sum(quarter, biases, weights, y_train[0]),
        0.75 * y_train[:-1] + 0.25 * y_train[1:],
    )
    # Same values as numpy's linear interpolation on a fine grid.
    grid = torch.linspace(-1.0, 4.0, 501, dtype=torch.float64)
    expected = np.interp(grid.numpy(), x_train.numpy(), y_train.numpy())
    np.testing.assert_allclose(
        evaluate_relu_sum(grid, biases, weights, y_train[0]).numpy(), expected, atol=1e-12
    )


def test_relu_activations_shape_and_kinks():
    acts = relu_activations(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([-0.5, -1.5]))
    expected = torch.tensor([[0.0, 0.5, 1.5], [0.0, 0.0, 0.5]])
    torch.testing.assert_close(acts, expected)


def test_max_error_on_sine_decays_like_n_to_minus_two():
    Ns = [8, 16, 32, 64, 128, 256]
    grid = torch.linspace(0, 2 * math.pi, 20_001, dtype=torch.float64)
    errors = []
    for N in Ns:
        x_train = torch.linspace(0, 2 * math.pi, N, dtype=torch.float64)
        biases, weights = relu_weights(x_train, torch.sin(x_train))
        y = evaluate_relu_sum(grid, biases, weights, 0.0)
        errors.append((y - torch.sin(grid)).abs().max().item())
    slope = np.polyfit(np.log(Ns), np.log(errors), 1)[0]
    assert -2.2 <= slope <= -1.8, (slope, errors)
    # Linear interpolation bound h^2/8 * max|f''| with max|sin''| = 1.
    h = 2 * math.pi / (Ns[-1] - 1)
    assert errors[-1] <= h**2 / 8 * 1.0001


@pytest.mark.parametrize(
    ("x_train", "y_train", "kwargs", "match"),
    [
        ([0.0, 2.0, 1.0], [0.0, 1.0, 2.0], {}, r"x_train is not sorted"),
        ([0.0, 1.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0], {}, r"x_train has duplicate values"),
        ([1.0], [1.0], {}, r"x_train has 1 point"),
        ([], [], {}, r"x_train has 0 point"),
        ([0.0, 1.0, 2.0], [0.0, 1.0], {}, r"y_train has 2 points but x_train has 3"),
        ([[0.0, 1.0], [2.0, 3.0]], [0.0, 1.0], {}, r"x_train has shape \(2, 2\)"),
        ([0.0, 1.0], [[0.0, 1.0]], {}, r"y_train has shape \(1, 2\)"),
        ([0.0, float("nan")], [0.0, 1.0], {}, r"x_train contains NaN"),
        ([0.0, 1.0], [0.0, float("inf")], {}, r"y_train contains NaN or infinite"),
        ([0.0, 1.0], [0.0, 1.0], {"num_points": 1}, r"num_points=1 is invalid"),
        ([0.0, 1.0], [0.0, 1.0], {"num_points": 2.5}, r"num_points=2.5 is invalid"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(x_train, y_train, kwargs, match):
    with pytest.raises(ValueError, match=match):
        approximate_function(torch.tensor(x_train), torch.tensor(y_train), **kwargs)


def test_error_message_names_bad_values():
    with pytest.raises(ValueError, match=r"x_train\[1\]=2\.0 > x_train\[2\]=1\.0"):
        relu_weights(torch.tensor([0.0, 2.0, 1.0]), torch.zeros(3))
    with pytest.raises(ValueError, match=r"x_train\[1\] == x_train\[2\] == 1\.0"):
        relu_weights(torch.tensor([0.0, 1.0, 1.0]), torch.zeros(3))


def test_integer_inputs_are_promoted_to_float():
    y_hat, _, x = approximate_function(torch.tensor([0, 1, 2]), torch.tensor([1, 3, 2]), 5)
    assert y_hat.is_floating_point() and x.is_floating_point()
    torch.testing.assert_close(y_hat, torch.tensor([1.0, 2.0, 3.0, 2.5, 2.0]))
