"""Tests for the tutorial's cross-entropy exercise (mlplab.models.losses)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlplab.models.losses import CrossEntropy, cross_entropy


def cross_entropy_loss(x, labels):
    """The tutorial's solution to Coding Exercise 2.1, loop and all: the oracle."""
    x_of_labels = torch.zeros(len(labels))
    for i, label in enumerate(labels):
        x_of_labels[i] = x[i, label]
    losses = -x_of_labels + torch.log(torch.sum(torch.exp(x), axis=1))
    avg_loss = losses.mean()
    return avg_loss


@pytest.fixture
def tutorial_example():
    labels = torch.tensor([0, 1])
    x = torch.tensor([[10.0, 1.0, -1.0, -20.0], [10.0, 10.0, 2.0, -10.0]])
    return x, labels


def test_tutorial_example_matches_pytorch_and_printed_value(tutorial_example):
    x, labels = tutorial_example
    ours = cross_entropy(x, labels).item()
    assert abs(ours - F.cross_entropy(x, labels).item()) < 1e-6
    assert abs(ours - nn.CrossEntropyLoss()(x, labels).item()) < 1e-6
    assert abs(ours - 0.34672749) < 1e-6  # "Pytorch CE loss: 0.34672749" in the tutorial
    assert abs(cross_entropy_loss(x, labels).item() - 0.34672737) < 1e-7  # "Our CE loss"


@pytest.mark.parametrize(
    ("N", "C", "scale", "seed"), [(1, 2, 1.0, 0), (32, 4, 3.0, 1), (100, 10, 10.0, 2)]
)
def test_matches_tutorial_oracle_and_pytorch_on_random_batches(N, C, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(N, C, generator=generator)
    labels = torch.randint(0, C, (N,), generator=generator)
    ours = cross_entropy(x, labels)
    assert ours.shape == ()
    torch.testing.assert_close(ours, cross_entropy_loss(x, labels), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours, F.cross_entropy(x, labels), rtol=1e-6, atol=1e-6)


def test_float64_logits_match_pytorch_tightly():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(50, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 6, (50,), generator=generator)
    ours = cross_entropy(x, labels)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, F.cross_entropy(x, labels), rtol=1e-12, atol=1e-12)


def test_gradient_matches_pytorch():
    generator = torch.Generator().manual_seed(4)
    x = (5 * torch.randn(40, 4, generator=generator)).requires_grad_()
    labels = torch.randint(0, 4, (40,), generator=generator)
    (grad_ours,) = torch.autograd.grad(cross_entropy(x, labels), x)
    (grad_ref,) = torch.autograd.grad(F.cross_entropy(x, labels), x)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-7)
    # Closed form: (softmax(x) - onehot(labels)) / N.
    expected = (torch.softmax(x, dim=1) - F.one_hot(labels, 4)) / 40
    torch.testing.assert_close(grad_ours, expected.detach(), rtol=1e-5, atol=1e-7)


def test_huge_logits_stay_finite_where_the_tutorial_overflows():
    x = torch.tensor([[1e4, 0.0, -1e4], [-1e4, 1e4, 5e3], [0.0, 0.0, 1e4]])
    labels = torch.tensor([0, 2, 1])
    assert torch.isinf(cross_entropy_loss(x, labels))
    ours = cross_entropy(x, labels)
    assert torch.isfinite(ours)
    # Exact per-sample losses: 0, 1e4 - 5e3, 1e4 (other terms vanish in float32).
    torch.testing.assert_close(ours, torch.tensor((0.0 + 5e3 + 1e4) / 3))
    torch.testing.assert_close(ours, F.cross_entropy(x, labels))
    x.requires_grad_()
    (grad,) = torch.autograd.grad(cross_entropy(x, labels), x)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, torch.autograd.grad(F.cross_entropy(x, labels), x)[0])


def test_module_equals_function(tutorial_example):
    x, labels = tutorial_example
    loss_fn = CrossEntropy()
    assert isinstance(loss_fn, nn.Module)
    assert torch.equal(loss_fn(x, labels), cross_entropy(x, labels))
    assert list(loss_fn.parameters()) == []


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_integer_label_dtypes_are_accepted(tutorial_example, dtype):
    x, labels = tutorial_example
    torch.testing.assert_close(cross_entropy(x, labels.to(dtype)), cross_entropy(x, labels))


@pytest.mark.parametrize("bad", [-1, 4, 100])
def test_out_of_range_label_names_label_and_range(tutorial_example, bad):
    x, _ = tutorial_example
    with pytest.raises(ValueError, match=rf"label {bad} is out of range.*\[0, 3\]"):
        cross_entropy(x, torch.tensor([0, bad]))


def test_shape_mismatch_is_rejected(tutorial_example):
    x, _ = tutorial_example
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\).*got shape \(3,\)"):
        cross_entropy(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"got shape \(2, 1\)"):
        cross_entropy(x, torch.tensor([[0], [1]]))


def test_float_labels_are_rejected(tutorial_example):
    x, labels = tutorial_example
    with pytest.raises(ValueError, match=r"integer class indices.*float32"):
        cross_entropy(x, labels.float())
    with pytest.raises(ValueError, match=r"integer class indices.*bool"):
        cross_entropy(x, labels.bool())


def test_1d_logits_are_rejected():
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\); got shape \(4,\)"):
        cross_entropy(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0]))
