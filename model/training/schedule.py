"""Learning-rate schedules as pure functions of the step, so a resumed run needs no
scheduler state: the factor at step s is the same whether the run stopped or not."""

from __future__ import annotations

from typing import Sequence


def warmup_step_decay(step: int, total: int, warmup: int, decay_at: Sequence[float],
                      gamma: float, decay_steps: Sequence[int] = ()) -> float:
    """Multiplier of the base lr for optimiser step `step` (0-based) of a `total`-step run.

    Linear warm-up over the first `warmup` steps, (step + 1) / warmup as BasicSR's
    `warmup_iter`; then multiplied by `gamma` once for every milestone the step has reached
    (MultiStepLR): round(f * total) for each fraction f in `decay_at`, and each absolute
    step in `decay_steps` (BasicSR's `milestones`).
    """
    factor = (step + 1) / warmup if warmup and step < warmup else 1.0
    milestones = [round(f * total) for f in decay_at] + list(decay_steps)
    for m in milestones:
        if step >= m:
            factor *= gamma
    return factor


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
