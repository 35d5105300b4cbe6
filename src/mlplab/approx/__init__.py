"""Building a 1-D function out of ReLUs (the tutorial's Coding Exercise 1), by hand and learned."""

from mlplab.approx.learned import evaluate_mlp, fit_relu_mlp
from mlplab.approx.relu import (
    approximate_function,
    evaluate_relu_sum,
    relu_activations,
    relu_weights,
)
from mlplab.approx.targets import TARGETS, get_target

__all__ = [
    "TARGETS",
    "approximate_function",
    "evaluate_mlp",
    "evaluate_relu_sum",
    "fit_relu_mlp",
    "get_target",
    "relu_activations",
    "relu_weights",
]
