"""Learning-rate schedules stepped once per optimizer step, built once the run's length is known.

Each factory takes the optimizer and the run's total number of optimizer steps (Lightning's
``trainer.estimated_stepping_batches``), so a config names a schedule without knowing how long
the run is. :class:`mlplab.models.classifier.Classifier` steps them with ``interval: "step"``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR

SchedulerFactory = Callable[[Optimizer, int], LRScheduler]


def _check_steps(total_steps: int) -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} is invalid: it must be an integer >= 1")
    return total_steps


def cosine_annealing(optimizer: Optimizer, total_steps: int, eta_min: float = 0.0) -> LRScheduler:
    """Cosine decay from the optimizer's lr to ``eta_min`` over ``total_steps`` steps.

    ``lr_t = eta_min + (lr - eta_min) (1 + cos(pi t / total_steps)) / 2`` (Loshchilov & Hutter,
    SGDR, 2017; ``torch.optim.lr_scheduler.CosineAnnealingLR`` without restarts).

    Raises:
        ValueError: for ``total_steps < 1`` or a negative ``eta_min``.
    """
    if eta_min < 0:
        raise ValueError(f"eta_min={eta_min!r} is invalid: it must be >= 0")
    return CosineAnnealingLR(optimizer, T_max=_check_steps(total_steps), eta_min=eta_min)


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    max_lr: float = 0.01,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> LRScheduler:
    """The one-cycle policy (Smith & Topin, 2019): warm up to ``max_lr``, then anneal (cosine).

    Starts at ``max_lr / div_factor``, peaks at ``max_lr`` after ``pct_start`` of the steps and
    ends at ``max_lr / (div_factor * final_div_factor)``; ``torch.optim.lr_scheduler.OneCycleLR``.

    Raises:
        ValueError: naming the argument when a value is out of range.
    """
    if not max_lr > 0:
        raise ValueError(f"max_lr={max_lr!r} is invalid: it must be > 0")
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start={pct_start!r} is invalid: it must be in (0, 1)")
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=_check_steps(total_steps),
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=False,  # Adam has betas, not momentum; keep the schedule about the lr
    )
