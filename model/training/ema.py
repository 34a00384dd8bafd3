"""Exponential moving average of a model's weights (the weights both stages export).

The EMA copy is what downstream stages load: it is smoother than the raw weights of an
adversarially trained auto-encoder. Buffers are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average toward `model`'s trainable parameters; frozen ones (Stage II's
        Stage I model) stay as copied, which they equal."""
        pairs = [(e, p.detach()) for e, p in zip(self.model.parameters(), model.parameters())
                 if p.requires_grad]
        if pairs:
            torch._foreach_lerp_([e for e, _ in pairs], [p for _, p in pairs], 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
