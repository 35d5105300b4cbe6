"""The tutorial's cross-entropy exercise, vectorised and numerically stable."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _check_inputs(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C); got shape {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) to match logits {tuple(logits.shape)}; "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices; got dtype {labels.dtype}")
    num_classes = logits.shape[1]
    # One fused reduction instead of separate min/max checks: this runs on every training step.
    if labels.numel() and bool(((labels < 0) | (labels >= num_classes)).any()):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(f"label {bad} is out of range: labels must be in [0, {num_classes - 1}]")


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy ``-x[label] + log(sum_j exp(x[j]))`` over the batch.

    The tutorial's formula with the log-sum-exp shifted by the row maximum, so logits of any
    magnitude stay finite (the tutorial's naive ``log(sum(exp(x)))`` overflows at about 89).

    Args:
        logits: Unnormalised scores of shape (N, C).
        labels: Class indices of shape (N,), in [0, C).

    Returns:
        A scalar tensor, differentiable with respect to ``logits``.
    """
    _check_inputs(logits, labels)
    x_of_labels = logits.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    row_max = logits.amax(dim=1, keepdim=True).detach()
    log_sum_exp = row_max.squeeze(1) + torch.log(torch.exp(logits - row_max).sum(dim=1))
    losses = log_sum_exp - x_of_labels
    return losses.mean()


class CrossEntropy(nn.Module):
    """:func:`cross_entropy` as a module, so the loss is pluggable like ``nn.CrossEntropyLoss``."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return cross_entropy(logits, labels)
