"""The one conversion between video frames and model tensors.

Frames are uint8 RGB, [T, H, W, 3] (or one image [H, W, 3]); models see float32 in [-1, 1],
channels first: [3, T, H, W] for clips, [1, 3, H, W] for images. Only torch users import
this module (the curation path stays torch-free).
"""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, C] -> float32 [C, T, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    return t.div_(127.5).sub_(1.0)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, C] -> float32 [1, C, H, W] in [-1, 1]."""
    return to_tensor(image[None])[:, 0][None]


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """The inverse of `to_tensor`: [C, T, H, W] in [-1, 1] -> uint8 [T, H, W, C]."""
    x = ((tensor.detach().cpu().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).numpy()
